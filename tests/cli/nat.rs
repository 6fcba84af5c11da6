//! An edge behind NAT (`dial = "never"` on its group): the hub holds no
//! address for it and never dials it, yet items and attachments travel
//! both ways over the connections the edge opens, and a killed edge gets
//! every item the hub queued meanwhile, once and in order. The hub
//! reconciles with it too: the edge calls back to answer.

use std::time::Duration;

use serde_json::Value;

use crate::enrol::{HUB_DEFINITIONS, incidents, invite, remotes, start_edge, start_hub_with};
use crate::support::{Instance, capture_active, wait_for};

fn sys_id(instance: &Instance, query: &str) -> String {
    let found = incidents(instance, query);
    assert_eq!(found.len(), 1, "{query}: {found:?}");
    found[0]["fields"]["sys_id"].as_str().unwrap().to_string()
}

fn attachments(instance: &Instance, sys_id: &str) -> Vec<Value> {
    instance
        .json(&["attachment", "list", "incident", sys_id, "--json"])
        .as_array()
        .unwrap()
        .clone()
}

/// A file of `size` bytes in `instance`'s directory; its path and blake3
/// hash.
fn file_of(instance: &Instance, name: &str, size: usize) -> (String, String) {
    let mut bytes = vec![0u8; size];
    blake3::Hasher::new()
        .update(name.as_bytes())
        .finalize_xof()
        .fill(&mut bytes);
    let path = instance.path().join(name);
    std::fs::write(&path, &bytes).unwrap();
    (
        path.to_str().unwrap().to_string(),
        blake3::hash(&bytes).to_hex().to_string(),
    )
}

/// Saves an attachment through the CLI; the saved file's hash.
fn saved_hash(instance: &Instance, sys_id: &str, name: &str) -> String {
    let saved = instance.path().join(format!("saved-{name}"));
    instance.ok(&[
        "attachment",
        "get",
        "incident",
        sys_id,
        name,
        "-o",
        saved.to_str().unwrap(),
        "--force",
    ]);
    let hash = blake3::hash(&std::fs::read(&saved).unwrap());
    std::fs::remove_file(saved).unwrap();
    hash.to_hex().to_string()
}

#[test]
fn a_hub_that_never_dials_its_edges_sends_over_the_streams_they_open() {
    let definitions = HUB_DEFINITIONS
        .replace(
            "description = \"every shop\"\n",
            "description = \"every shop\"\ndial = \"never\"\n",
        )
        .replace(
            "fields = [\"short_description\", \"state\"]\n",
            "fields = [\"short_description\", \"state\"]\ninclude_attachments = true\n",
        );
    let (hub, _hub_server) = start_hub_with(&definitions);
    let (edge, mut edge_server) = start_edge("store-9");
    let code = invite(&hub, &[]);
    let joined = edge.ok(&["remote", "join", &code]);
    assert!(
        joined.contains("outbound Active, inbound Active"),
        "{joined}"
    );
    // The hub holds no address of the edge at all: it cannot dial it.
    let member = remotes(&hub)[0].clone();
    assert_eq!(member["endpoint"], "", "{member}");
    assert_eq!(member["outbound_state"], "Active");
    let exported = hub.ok(&["export"]);
    assert!(exported.contains("dial = \"never\""), "{exported}");

    edge.ok(&[
        "record",
        "create",
        "incident",
        "short_description=Freezer alarm",
        "state=1",
    ]);
    hub.ok(&[
        "record",
        "create",
        "incident",
        "short_description=New opening hours",
        "state=2",
    ]);
    wait_for(
        &[&edge, &hub],
        "both incidents on both sides",
        Duration::from_secs(30),
        || {
            incidents(&hub, "short_description=Freezer alarm").len() == 1
                && incidents(&edge, "short_description=New opening hours").len() == 1
        },
    );
    wait_for(
        &[&edge, &hub],
        "the hub to see the edge Up",
        Duration::from_secs(30),
        || remotes(&hub)[0]["health"] == "Up",
    );

    // Attachments both ways. The hub cannot fetch the edge's: it asks over
    // the stream the edge opened, and the edge delivers the bytes.
    let on_edge = sys_id(&edge, "short_description=Freezer alarm");
    let (plan, plan_hash) = file_of(&edge, "floorplan.pdf", 2_600_000);
    edge.ok(&["attachment", "add", "incident", &on_edge, &plan]);
    let on_hub = sys_id(&hub, "short_description=Freezer alarm");
    wait_for(
        &[&edge, &hub],
        "the edge's attachment on the hub",
        Duration::from_secs(60),
        || !attachments(&hub, &on_hub).is_empty(),
    );
    let arrived = &attachments(&hub, &on_hub)[0];
    assert_eq!(arrived["file_name"], "floorplan.pdf", "{arrived}");
    assert_eq!(arrived["hash"], plan_hash.as_str(), "{arrived}");
    assert_eq!(saved_hash(&hub, &on_hub, "floorplan.pdf"), plan_hash);
    let hub_notice = sys_id(&hub, "short_description=New opening hours");
    let (rota, rota_hash) = file_of(&hub, "rota.pdf", 700_000);
    hub.ok(&["attachment", "add", "incident", &hub_notice, &rota]);
    let edge_notice = sys_id(&edge, "short_description=New opening hours");
    wait_for(
        &[&edge, &hub],
        "the hub's attachment on the edge",
        Duration::from_secs(60),
        || !attachments(&edge, &edge_notice).is_empty(),
    );
    assert_eq!(saved_hash(&edge, &edge_notice, "rota.pdf"), rota_hash);

    // The edge goes away; the hub's items wait, and when the edge comes
    // back they arrive in order over the stream it opens again.
    edge_server.kill9();
    for n in 0..20 {
        hub.ok(&[
            "record",
            "create",
            "incident",
            &format!("short_description=Notice {n:02}"),
            "state=1",
        ]);
    }
    wait_for(
        &[&hub],
        "the hub to see the edge Down",
        Duration::from_secs(30),
        || remotes(&hub)[0]["health"] == "Down",
    );
    let mut edge_server = edge.serve();
    wait_for(
        &[&edge, &hub],
        "the 20 notices on the edge",
        Duration::from_secs(60),
        || incidents(&edge, "short_descriptionSTARTSWITHNotice").len() == 20,
    );
    let inbound = crate::support::queue_items(&edge, "inbound");
    let mut notices: Vec<(u64, String)> = inbound
        .iter()
        .filter(|i| i["payload"].to_string().contains("Notice"))
        .map(|i| {
            (
                i["sequence"].as_u64().unwrap(),
                i["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    notices.sort();
    assert_eq!(notices.len(), 20, "each notice arrived once");
    assert!(
        notices.iter().all(|(_, status)| status == "Processed"),
        "{notices:?}"
    );
    assert!(
        notices.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "in sequence: {notices:?}"
    );
    wait_for(
        &[&hub],
        "every hub item acknowledged",
        Duration::from_secs(30),
        || {
            crate::support::statuses(&hub, "outbound")
                .iter()
                .all(|s| s == "Processed")
        },
    );

    // The hub compares its records with the edge it never dials: the edge
    // calls back to answer. All 22 incidents match.
    let compared = hub.json(&["remote", "reconcile", "store-9", "--json"]);
    assert_eq!(compared["state"], "done", "{compared}");
    let table = &compared["tables"][0];
    assert_eq!((&table["here"], &table["peer"]), (&22.into(), &22.into()));
    assert_eq!(table["differences"], serde_json::json!([]), "{compared}");
    // A change the edge never heard of (the hub's capture was off) is
    // found, and the repair sends it down the edge's stream.
    let changed = sys_id(&hub, "short_description=Notice 05");
    capture_active(&hub, "Incidents out", false);
    hub.ok(&["record", "update", "incident", &changed, "state=6"]);
    capture_active(&hub, "Incidents out", true);
    let repaired = hub.json(&["remote", "reconcile", "store-9", "--repair", "--json"]);
    assert_eq!(repaired["state"], "done", "{repaired}");
    assert_eq!(repaired["tables"][0]["differing"], 1, "{repaired}");
    assert_eq!(repaired["tables"][0]["repaired"], 1, "{repaired}");
    wait_for(
        &[&edge, &hub],
        "the repaired state on the edge",
        Duration::from_secs(30),
        || incidents(&edge, "short_description=Notice 05")[0]["fields"]["state"] == "6",
    );
    // Asked while the edge is away, it fails with the reason.
    edge_server.stop();
    wait_for(
        &[&hub],
        "the hub to see the edge Down",
        Duration::from_secs(30),
        || remotes(&hub)[0]["health"] == "Down",
    );
    let failed = hub.fails(&["remote", "reconcile", "store-9"]);
    assert!(
        failed.contains(
            "reconciliation with `store-9` failed: the stream to `store-9` is not open (it dials us and we never dial it): compare again once it connects"
        ),
        "{failed}"
    );
    let _edge_server = edge.serve();

    // Removed on the hub, the edge it never dials hears it down the stream
    // the edge opened, and removes its side too.
    let removed = hub.ok(&["remote", "remove", "store-9"]);
    assert!(
        removed.contains("removed `store-9` here and at the peer"),
        "{removed}"
    );
    wait_for(
        &[&edge, &hub],
        "the edge to remove its link to the hub",
        Duration::from_secs(30),
        || remotes(&edge).is_empty(),
    );
    assert!(remotes(&hub).is_empty());
    let flows = edge.ok(&["export"]);
    assert!(!flows.contains("remote_system = \"hub\""), "{flows}");
}
