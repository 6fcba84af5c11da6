//! What the design promises and a hostile or unlucky peer must not break:
//! a peer reaches only the records it is correlated with, a re-created peer
//! is not taken for its old self, a domain admin manages only its domain,
//! and no stream waits forever.

use std::time::Duration;

use serde_json::Value;

use crate::support::{
    Instance, Peer, crafted_item, impersonate, link_all, queue_items, send_items, wait_for,
};

fn payload(short_description: &str, operation: &str) -> String {
    format!(
        r#"{{"capture_metadata":{{"changed_by":"x","timestamp":"2026-11-27 12:00:00","operation":"{operation}","table":"sc_req_item","sys_id":"a","process_event":"software_request"}},"changed_fields":[{{"key":"short_description","value":"{short_description}","display_value":"{short_description}","changed":true}}],"journal_entries":[]}}"#
    )
}

fn record(instance: &Instance, sys_id: &str) -> Value {
    instance.json(&["record", "get", "sc_req_item", sys_id, "--json"])
}

fn inbound_by_sequence(instance: &Instance, remote: &str, sequence: u64) -> Option<Value> {
    queue_items(instance, "inbound")
        .into_iter()
        .find(|i| i["remote_system"] == remote && i["sequence"] == sequence)
}

#[test]
fn a_peer_changes_only_records_it_is_correlated_with() {
    let hub = Instance::init("hub");
    let edge = Instance::init("edge");
    let other = Instance::init("other");
    let _hub_server = hub.serve();
    let mut edge_server = edge.serve();
    let mut other_server = other.serve();
    link_all(
        &[
            Peer {
                name: "hub",
                instance: &hub,
            },
            Peer {
                name: "edge",
                instance: &edge,
            },
            Peer {
                name: "other",
                instance: &other,
            },
        ],
        &[(0, 1), (0, 2)],
    );
    edge_server.stop();
    other_server.stop();

    // A record of the hub's own, and one the hub holds for `other`.
    let local = hub
        .ok(&[
            "record",
            "create",
            "sc_req_item",
            "short_description=hub only",
        ])
        .trim()
        .to_string();
    let as_other = impersonate(&other, "hub", &hub);
    send_items(
        &as_other,
        vec![crafted_item(
            1,
            &payload("from other", "create"),
            Vec::new(),
        )],
    );
    wait_for(
        &[&hub],
        "other's record on the hub",
        Duration::from_secs(30),
        || inbound_by_sequence(&hub, "other", 1).is_some_and(|i| i["status"] == "Processed"),
    );
    let others = inbound_by_sequence(&hub, "other", 1).unwrap()["local_correlation_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Authenticated as `edge`: its own create, then an update naming
    // other's record and a delete naming the hub's own record.
    let as_edge = impersonate(&edge, "hub", &hub);
    let mut update = crafted_item(2, &payload("hijacked", "update"), Vec::new());
    update.operation = procsync::record::Operation::Update;
    update.remote_correlation_id = others.clone();
    let mut delete = crafted_item(3, &payload("gone", "delete"), Vec::new());
    delete.operation = procsync::record::Operation::Delete;
    delete.remote_correlation_id = local.clone();
    let mut create_naming = crafted_item(4, &payload("named create", "create"), Vec::new());
    create_naming.remote_correlation_id = local.clone();
    let acks = send_items(
        &as_edge,
        vec![
            crafted_item(1, &payload("from edge", "create"), Vec::new()),
            update,
            delete,
            create_naming,
        ],
    );
    assert_eq!(acks, [1, 2, 3, 4]);
    wait_for(
        &[&hub],
        "edge's items to run",
        Duration::from_secs(30),
        || {
            (1..=4).all(|s| {
                inbound_by_sequence(&hub, "edge", s).is_some_and(|i| i["status"] != "Ready")
            })
        },
    );
    assert_eq!(
        inbound_by_sequence(&hub, "edge", 1).unwrap()["status"],
        "Processed"
    );
    for (sequence, named) in [(2, &others), (3, &local), (4, &local)] {
        let item = inbound_by_sequence(&hub, "edge", sequence).unwrap();
        assert_eq!(item["status"], "Error", "{item}");
        let error = item["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("names record sc_req_item/{named}"))
                && error.contains("nothing was written"),
            "{error}"
        );
    }
    assert!(
        inbound_by_sequence(&hub, "edge", 2).unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("not correlated with remote system `edge`")
    );
    // Nothing was written: other's record and the hub's own are as they were.
    assert_eq!(
        record(&hub, &others)["fields"]["short_description"],
        "from other"
    );
    assert_eq!(
        record(&hub, &local)["fields"]["short_description"],
        "hub only"
    );
    let named_creates = hub.json(&[
        "record",
        "list",
        "sc_req_item",
        "--query",
        "short_description=named create",
        "--json",
    ]);
    assert_eq!(named_creates.as_array().unwrap().len(), 0);

    // Through its own correlation, the edge's update still applies.
    let mut own = crafted_item(5, &payload("edge updated", "update"), Vec::new());
    own.operation = procsync::record::Operation::Update;
    own.local_correlation_id = format!("{:032x}", 1);
    send_items(&as_edge, vec![own]);
    wait_for(
        &[&hub],
        "edge's own update",
        Duration::from_secs(30),
        || inbound_by_sequence(&hub, "edge", 5).is_some_and(|i| i["status"] == "Processed"),
    );
    let mine = inbound_by_sequence(&hub, "edge", 1).unwrap()["local_correlation_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        record(&hub, &mine)["fields"]["short_description"],
        "edge updated"
    );
}

fn sys_id_of_remote(instance: &Instance, remote: &str) -> String {
    instance
        .json(&["remote", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == remote)
        .unwrap()["sys_id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn hub_records(instance: &Instance, short_description: &str) -> Vec<Value> {
    instance
        .json(&[
            "record",
            "list",
            "sc_req_item",
            "--query",
            &format!("short_description={short_description}"),
            "--json",
        ])
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_wiped_and_relinked_edge_is_a_new_sender_and_its_changes_arrive() {
    let (mut edge, hub, mut edge_server, _hub_server) =
        crate::support::linked_pair(Default::default());
    edge.fast_retries();
    hub.fast_retries();
    for text in ["first life 1", "first life 2", "first life 3"] {
        edge.ok(&[
            "record",
            "create",
            "sc_req_item",
            &format!("short_description={text}"),
        ]);
    }
    let from_hub = hub
        .ok(&[
            "record",
            "create",
            "sc_req_item",
            "short_description=hub says",
        ])
        .trim()
        .to_string();
    wait_for(
        &[&edge, &hub],
        "the first life to sync",
        Duration::from_secs(30),
        || {
            hub_records(&hub, "first life 3").len() == 1
                && hub_records(&edge, "hub says").len() == 1
        },
    );

    // rm -rf, init again under the same name and ports, link again as the
    // README says.
    edge_server.stop();
    edge.reinit("edge");
    let edge_server = edge.serve();
    let _edge_server = edge_server;
    let hub_token = hub.ok(&["user", "token", "edge_api"]).trim().to_string();
    let edge_token = edge
        .ok(&["user", "add", "hub_api", "--roles", "process_sync_api"])
        .trim()
        .to_string();
    edge.ok(&["user", "add", "hub_runas", "--roles", "process_sync_run_as"]);
    let edge_defs = crate::support::sync_definitions(
        "hub",
        &hub.peer_endpoint(),
        &hub.fingerprint,
        &sys_id_of_remote(&hub, "edge"),
    );
    let file = edge.file("sync.toml", &edge_defs);
    edge.ok(&["apply", file.to_str().unwrap()]);
    let hub_defs = crate::support::sync_definitions(
        "edge",
        &edge.peer_endpoint(),
        &edge.fingerprint,
        &sys_id_of_remote(&edge, "hub"),
    );
    let file = hub.file("sync.toml", &hub_defs);
    let applied = hub.ok(&["apply", file.to_str().unwrap()]);
    assert!(
        applied.contains("a new instance")
            && applied.contains("3 correlations with the old one released"),
        "{applied}"
    );
    edge.ok(&["remote", "token", "hub", &hub_token]);
    hub.ok(&["remote", "token", "edge", &edge_token]);
    edge.ok(&["remote", "validate", "hub"]);
    hub.ok(&["remote", "validate", "edge"]);

    // The new edge's sequences 1, 2 are new changes, not duplicates.
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=second life 1",
    ]);
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=second life 2",
    ]);
    wait_for(
        &[&edge, &hub],
        "the second life's records on the hub",
        Duration::from_secs(30),
        || {
            hub_records(&hub, "second life 1").len() == 1
                && hub_records(&hub, "second life 2").len() == 1
        },
    );
    let firsts = queue_items(&hub, "inbound")
        .into_iter()
        .filter(|i| i["remote_system"] == "edge" && i["sequence"] == 1)
        .count();
    assert_eq!(firsts, 2, "sequence 1 of each life is its own inbound item");
    // A change of the hub's to a record the old edge held reaches the new
    // edge as a new record there, and its answer correlates on the hub.
    hub.ok(&[
        "record",
        "update",
        "sc_req_item",
        &from_hub,
        "short_description=hub says again",
    ]);
    wait_for(
        &[&edge, &hub],
        "the hub's record on the new edge",
        Duration::from_secs(30),
        || hub_records(&edge, "hub says again").len() == 1,
    );
    let on_edge = hub_records(&edge, "hub says again")[0]["fields"]["sys_id"]
        .as_str()
        .unwrap()
        .to_string();
    edge.ok(&[
        "record",
        "update",
        "sc_req_item",
        &on_edge,
        "short_description=edge answers",
    ]);
    wait_for(
        &[&edge, &hub],
        "the new edge's answer on the hub",
        Duration::from_secs(30),
        || record(&hub, &from_hub)["fields"]["short_description"] == "edge answers",
    );
    assert!(
        queue_items(&hub, "inbound")
            .iter()
            .all(|i| i["status"] == "Processed")
    );
}

#[test]
fn an_edge_restored_from_an_older_copy_is_refused_at_validate_with_the_reason() {
    let (edge, hub, mut edge_server, _hub_server) = crate::support::linked_pair(Default::default());
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=before the copy",
    ]);
    wait_for(
        &[&edge, &hub],
        "the first record",
        Duration::from_secs(30),
        || hub_records(&hub, "before the copy").len() == 1,
    );
    edge_server.stop();
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(
        edge.path().join("procsync.redb"),
        copy.path().join("procsync.redb"),
    )
    .unwrap();
    let edge_server = edge.serve();
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=after the copy",
    ]);
    wait_for(
        &[&edge, &hub],
        "the second record",
        Duration::from_secs(30),
        || hub_records(&hub, "after the copy").len() == 1,
    );
    drop(edge_server);
    std::fs::copy(
        copy.path().join("procsync.redb"),
        edge.path().join("procsync.redb"),
    )
    .unwrap();
    let _edge_server = edge.serve();
    let refused = edge.fails(&["remote", "validate", "hub"]);
    assert!(
        refused.contains("has already received sequence 2")
            && refused.contains("whose last sequence for it is 1")
            && refused.contains("restored from an older copy"),
        "{refused}"
    );
}

const GLOBAL_DEFINITIONS: &str = r#"
[[definition]]
name = "Global"

[[process_event]]
name = "global_event"
definition = "Global"

[[capture]]
name = "Global capture"
process_event = "global_event"
table = "incident"
fields = ["*"]

[[outbound_flow]]
name = "Global to hub"
process_event = "global_event"
remote_system = "hub"
"#;

/// An acme file: its own definition, event and capture, and a flow to the
/// global remote system `hub`, which it may name but not hold.
const ACME_DEFINITIONS: &str = r#"
[[definition]]
name = "Acme"
domain = "global/acme"

[[process_event]]
name = "acme_event"
definition = "Acme"

[[capture]]
name = "Acme capture"
process_event = "acme_event"
table = "incident"
fields = ["*"]

[[outbound_flow]]
name = "Acme to hub"
process_event = "acme_event"
remote_system = "hub"
"#;

fn output_text(out: &std::process::Output) -> (bool, String) {
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_domain_admin_applies_exports_and_removes_only_its_own_domain() {
    use crate::support::as_user;
    let instance = Instance::init("hub");
    let _server = instance.serve();
    let global = format!("{GLOBAL_DEFINITIONS}{}", crate::support::UNREACHED_HUB);
    crate::support::apply_with_users(&instance, &global);
    let acme_admin = instance.add_user("acme_admin", "admin", Some("global/acme"));

    let acme = instance.file("acme.toml", ACME_DEFINITIONS);
    let (ok, text) = output_text(&as_user(
        &instance,
        &acme_admin,
        &["apply", acme.to_str().unwrap()],
    ));
    assert!(ok, "{text}");
    assert!(
        !text.contains("removed"),
        "nothing outside acme is removed: {text}"
    );
    let everything = instance.ok(&["export"]);
    for name in [
        "Global capture",
        "Global to hub",
        "name = \"hub\"",
        "Acme capture",
        "Acme to hub",
    ] {
        assert!(everything.contains(name), "{name} in {everything}");
    }
    let (ok, exported) = output_text(&as_user(&instance, &acme_admin, &["export"]));
    assert!(ok, "{exported}");
    assert!(
        exported.contains("Acme capture") && exported.contains("Acme to hub"),
        "{exported}"
    );
    assert!(
        !exported.contains("Global") && !exported.contains("name = \"hub\""),
        "a domain admin's export holds only its subtree: {exported}"
    );

    // A file naming a global object is refused, whatever else it holds.
    for (what, extra) in [
        (
            "definition `Global` is in domain `global`",
            "\n[[definition]]\nname = \"Global\"\n",
        ),
        (
            "remote_system `hub` is in domain `global`",
            "\n[[remote_system]]\nname = \"hub\"\nendpoint = \"https://127.0.0.1:9\"\nfingerprint = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\ninbound_api_user = \"api_user\"\nrun_as = \"runas_user\"\n",
        ),
        (
            "process_event `global_event` already exists in a domain outside yours",
            "\n[[process_event]]\nname = \"global_event\"\ndefinition = \"Acme\"\n",
        ),
        (
            "capture `Sneaky` is in domain `global`",
            "\n[[capture]]\nname = \"Sneaky\"\nprocess_event = \"global_event\"\ntable = \"incident\"\nfields = [\"*\"]\n",
        ),
    ] {
        let file = instance.file("bad.toml", &format!("{ACME_DEFINITIONS}{extra}"));
        let (ok, text) = output_text(&as_user(
            &instance,
            &acme_admin,
            &["apply", file.to_str().unwrap()],
        ));
        assert!(!ok && text.contains(what), "expected `{what}`: {text}");
    }
    assert_eq!(
        instance.ok(&["export"]),
        everything,
        "refused files change nothing"
    );

    // An acme file without its capture and flow removes those two only.
    let smaller = instance.file(
        "smaller.toml",
        "[[definition]]\nname = \"Acme\"\ndomain = \"global/acme\"\n\n[[process_event]]\nname = \"acme_event\"\ndefinition = \"Acme\"\n",
    );
    let (ok, text) = output_text(&as_user(
        &instance,
        &acme_admin,
        &["apply", smaller.to_str().unwrap()],
    ));
    assert!(ok, "{text}");
    assert!(
        text.contains("capture `Acme capture`") && text.contains("outbound_flow `Acme to hub`"),
        "{text}"
    );
    let after = instance.ok(&["export"]);
    assert!(
        after.contains("Global capture")
            && after.contains("Global to hub")
            && !after.contains("Acme capture")
    );

    // Instance-wide settings need an admin of `global`.
    let (ok, text) = output_text(&as_user(
        &instance,
        &acme_admin,
        &["property", "set", "purge.processed_age", "3600"],
    ));
    assert!(
        !ok && text.contains("only an admin of domain `global` may change"),
        "{text}"
    );
    let run_as = instance
        .ok(&["user", "add", "flows", "--roles", "process_sync_run_as"])
        .trim()
        .to_string();
    let (ok, text) = output_text(&as_user(
        &instance,
        &run_as,
        &["property", "set", "purge.processed_age", "3600"],
    ));
    assert!(
        !ok && text.contains("may not change instance-wide settings (properties)"),
        "{text}"
    );
    instance.ok(&["property", "set", "purge.processed_age", "3600"]);
}

fn remote_of(instance: &Instance, name: &str) -> Value {
    instance.json(&["remote", "show", name, "--json"])
}

#[test]
fn a_peer_that_never_answers_the_stream_is_a_failed_attempt_and_retried() {
    let (edge, hub, mut edge_server, mut hub_server) =
        crate::support::linked_pair(Default::default());
    edge.fast_retries();
    hub_server.stop();
    let hung = crate::faults::HungPeer::start(&hub, &edge.fingerprint);
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=held up",
    ]);
    wait_for(
        &[&edge],
        "failed attempts against the hung peer",
        Duration::from_secs(90),
        || {
            let remote = remote_of(&edge, "hub");
            remote["attempts"].as_u64().unwrap_or(0) >= 2
                && remote["last_error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("within 10 s")
        },
    );
    let remote = remote_of(&edge, "hub");
    assert_eq!(remote["health"], "Down", "{remote}");
    assert!(remote["next_attempt_on"].is_string(), "{remote}");
    // SIGTERM does not wait for the hung call.
    let started = std::time::Instant::now();
    assert!(edge_server.stop().success());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        started.elapsed()
    );
    hung.stop();
    let _hub_server = hub.serve();
    let _edge_server = edge.serve();
    wait_for(
        &[&edge, &hub],
        "the record after the hub answers",
        Duration::from_secs(90),
        || hub_records(&hub, "held up").len() == 1,
    );
}

#[test]
fn a_remote_in_error_is_probed_after_a_restart_and_recovers_by_itself() {
    let (edge, hub, mut edge_server, mut hub_server) =
        crate::support::linked_pair(Default::default());
    edge.ok(&["property", "set", "retry.times", "1"]);
    edge.ok(&["property", "set", "retry.interval", "1"]);
    edge.ok(&["property", "set", "retry.max_interval", "3"]);
    edge.ok(&["property", "set", "heartbeat.interval", "1"]);
    hub_server.stop();
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=queued while down",
    ]);
    wait_for(
        &[&edge],
        "the remote in outbound Error",
        Duration::from_secs(60),
        || remote_of(&edge, "hub")["outbound_state"] == "Error",
    );
    let before = remote_of(&edge, "hub");
    edge_server.kill9();
    let _edge_server = edge.serve();
    // The retry state survived the restart.
    let after = remote_of(&edge, "hub");
    assert_eq!(after["outbound_state"], "Error");
    assert!(
        after["attempts"].as_u64().unwrap() >= before["attempts"].as_u64().unwrap().min(2),
        "{before} {after}"
    );
    assert!(
        after["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("connect"),
        "{after}"
    );
    let _hub_server = hub.serve();
    wait_for(
        &[&edge, &hub],
        "the item after the hub returns",
        Duration::from_secs(30),
        || hub_records(&hub, "queued while down").len() == 1,
    );
    wait_for(
        &[&edge],
        "the remote Active again",
        Duration::from_secs(30),
        || {
            let remote = remote_of(&edge, "hub");
            remote["outbound_state"] == "Active"
                && remote["attempts"] == 0
                && remote["last_error"].as_str().unwrap_or("").is_empty()
        },
    );
}

/// Points `instance`'s remote system `remote` at `endpoint` (applied, so
/// it needs validating again).
/// A linked pair whose peer connections both go through proxies.
fn pair_through_proxies() -> (
    Instance,
    Instance,
    crate::support::Server,
    crate::support::Server,
    crate::faults::Proxy,
    crate::faults::Proxy,
) {
    use crate::faults::Proxy;
    let (edge, hub, edge_server, hub_server) = crate::support::linked_pair(Default::default());
    let to_hub = Proxy::start(format!("127.0.0.1:{}", hub.peer_port));
    let to_edge = Proxy::start(format!("127.0.0.1:{}", edge.peer_port));
    crate::support::point_at(&edge, &hub.peer_endpoint(), &to_hub.endpoint());
    crate::support::point_at(&hub, &edge.peer_endpoint(), &to_edge.endpoint());
    edge.ok(&["remote", "validate", "hub"]);
    hub.ok(&["remote", "validate", "edge"]);
    // Between the two validations a side may have tried the other before
    // it was Active there (a failed attempt, with the default interval);
    // the tests start from a settled link.
    wait_for(
        &[&edge, &hub],
        "both sides settled, Up with no failed attempt",
        Duration::from_secs(60),
        || {
            [(&edge, "hub"), (&hub, "edge")]
                .iter()
                .all(|(instance, remote)| {
                    let shown = remote_of(instance, remote);
                    shown["health"] == "Up" && shown["attempts"].as_u64() == Some(0)
                })
        },
    );
    (edge, hub, edge_server, hub_server, to_hub, to_edge)
}

#[test]
fn with_default_retry_properties_a_healed_link_resumes_before_its_next_retry() {
    use crate::faults::Mode;
    let (edge, hub, _edge_server, _hub_server, to_hub, to_edge) = pair_through_proxies();
    to_hub.set(Mode::Refuse);
    to_edge.set(Mode::Refuse);
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=from the edge",
    ]);
    hub.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=from the hub",
    ]);
    wait_for(
        &[&edge, &hub],
        "a failed attempt each way",
        Duration::from_secs(30),
        || {
            remote_of(&edge, "hub")["attempts"].as_u64().unwrap_or(0) >= 1
                && remote_of(&hub, "edge")["attempts"].as_u64().unwrap_or(0) >= 1
        },
    );
    to_hub.set(Mode::Blackhole);
    to_edge.set(Mode::Blackhole);
    std::thread::sleep(Duration::from_secs(3));
    to_hub.set(Mode::Forward);
    to_edge.set(Mode::Forward);
    // The next retry is about a minute away (retry.interval 60 ± 20 %);
    // the probe (every 1, 2, 4, then 5 s) finds the healed link first.
    let healed = std::time::Instant::now();
    wait_for(
        &[&edge, &hub],
        "both records across",
        Duration::from_secs(40),
        || {
            hub_records(&hub, "from the edge").len() == 1
                && hub_records(&edge, "from the hub").len() == 1
        },
    );
    assert!(healed.elapsed() < Duration::from_secs(40));
}

#[test]
fn with_default_properties_a_link_that_broke_is_used_again_within_ten_seconds_of_healing() {
    use crate::faults::Mode;
    let (edge, hub, _edge_server, _hub_server, to_hub, to_edge) = pair_through_proxies();
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=before the cut",
    ]);
    wait_for(
        &[&edge, &hub],
        "the first record across",
        Duration::from_secs(30),
        || hub_records(&hub, "before the cut").len() == 1,
    );
    // From now on the hub never reaches the edge, so it cannot prompt the
    // edge by calling: only the edge's own probing can see the link heal.
    to_edge.set(Mode::Refuse);
    // The open stream breaks and the hub is unreachable for 5 seconds.
    to_hub.set(Mode::Refuse);
    let cut = std::time::Instant::now();
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=during the cut",
    ]);
    wait_for(
        &[&edge],
        "the broken stream to count as a failed attempt",
        Duration::from_secs(10),
        || remote_of(&edge, "hub")["attempts"].as_u64().unwrap_or(0) >= 1,
    );
    std::thread::sleep(Duration::from_secs(5).saturating_sub(cut.elapsed()));
    to_hub.set(Mode::Forward);
    let healed = std::time::Instant::now();
    // The next retry is a minute away (retry.interval 60 ± 20 %).
    wait_for(
        &[&edge, &hub],
        "the record written during the cut",
        Duration::from_secs(10),
        || hub_records(&hub, "during the cut").len() == 1,
    );
    assert!(
        healed.elapsed() < Duration::from_secs(10),
        "{:?}",
        healed.elapsed()
    );
}

#[test]
fn links_resume_by_themselves_after_refused_and_blackholed_connections_both_ways() {
    use crate::faults::Mode;
    let (edge, hub, _edge_server, _hub_server, to_hub, to_edge) = pair_through_proxies();
    // Default retry properties but the first interval, so that Error comes
    // within seconds; the probe runs every heartbeat interval (default).
    edge.ok(&["property", "set", "retry.interval", "1"]);
    hub.ok(&["property", "set", "retry.interval", "1"]);

    to_hub.set(Mode::Refuse);
    to_edge.set(Mode::Refuse);
    for i in 0..10 {
        edge.ok(&[
            "record",
            "create",
            "sc_req_item",
            &format!("short_description=edge {i}"),
        ]);
        hub.ok(&[
            "record",
            "create",
            "sc_req_item",
            &format!("short_description=hub {i}"),
        ]);
    }
    wait_for(
        &[&edge, &hub],
        "both sides in outbound Error",
        Duration::from_secs(60),
        || {
            remote_of(&edge, "hub")["outbound_state"] == "Error"
                && remote_of(&hub, "edge")["outbound_state"] == "Error"
        },
    );
    to_hub.set(Mode::Blackhole);
    to_edge.set(Mode::Blackhole);
    let attempts = |instance: &Instance, remote: &str| {
        remote_of(instance, remote)["attempts"]
            .as_u64()
            .unwrap_or(0)
    };
    let (edge_before, hub_before) = (attempts(&edge, "hub"), attempts(&hub, "edge"));
    for i in 10..15 {
        edge.ok(&[
            "record",
            "create",
            "sc_req_item",
            &format!("short_description=edge {i}"),
        ]);
        hub.ok(&[
            "record",
            "create",
            "sc_req_item",
            &format!("short_description=hub {i}"),
        ]);
    }
    wait_for(
        &[&edge, &hub],
        "attempts into the blackhole",
        Duration::from_secs(90),
        || attempts(&edge, "hub") > edge_before && attempts(&hub, "edge") > hub_before,
    );
    let blackholed = remote_of(&edge, "hub");
    assert!(
        blackholed["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("within 10 s"),
        "{blackholed}"
    );

    to_hub.set(Mode::Forward);
    to_edge.set(Mode::Forward);
    let all = |instance: &Instance| {
        instance
            .json(&["record", "list", "sc_req_item", "--json", "--limit", "1000"])
            .as_array()
            .unwrap()
            .len()
    };
    wait_for(
        &[&edge, &hub],
        "both sides to hold all 30 records",
        Duration::from_secs(60),
        || all(&edge) == 30 && all(&hub) == 30,
    );
    for (instance, remote) in [(&edge, "hub"), (&hub, "edge")] {
        wait_for(
            &[instance],
            "the remote Active again",
            Duration::from_secs(30),
            || remote_of(instance, remote)["outbound_state"] == "Active",
        );
        for i in 0..15 {
            let text = format!("{} {i}", if remote == "hub" { "hub" } else { "edge" });
            assert_eq!(hub_records(instance, &text).len(), 1, "{text} once");
        }
    }
}

#[test]
fn a_waiting_item_shows_its_remotes_retry_state_and_list_and_show_agree() {
    let (edge, hub, _edge_server, mut hub_server) = crate::support::linked_pair(Default::default());
    edge.fast_retries();
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=delivered",
    ]);
    wait_for(
        &[&edge, &hub],
        "the first item",
        Duration::from_secs(30),
        || hub_records(&hub, "delivered").len() == 1,
    );
    hub_server.stop();
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=waiting",
    ]);
    wait_for(
        &[&edge],
        "a refused attempt",
        Duration::from_secs(30),
        || {
            remote_of(&edge, "hub")["last_error"]
                .as_str()
                .unwrap_or("")
                .contains("Connection refused")
        },
    );
    let listed = queue_items(&edge, "outbound");
    let waiting = listed
        .iter()
        .find(|i| i["status"] == "Ready")
        .expect("a Ready item");
    let id = waiting["id"].as_u64().unwrap().to_string();
    let shown = edge.json(&["queue", "outbound", "show", &id]);
    assert!(shown["attempts"].as_u64().unwrap() >= 1, "{shown}");
    assert!(
        shown["last_error"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{shown}"
    );
    assert_eq!(
        shown["next_attempt_on"].as_str().unwrap().len(),
        19,
        "{shown}"
    );
    assert!(
        shown["waiting"]
            .as_str()
            .unwrap()
            .contains("remote system `hub` is not answering"),
        "{shown}"
    );
    assert!(
        shown["time_in_queue_ms"].is_u64() && shown["processing_time_ms"].is_null(),
        "{shown}"
    );
    let delivered = &listed.iter().find(|i| i["status"] == "Processed").unwrap();
    assert!(delivered["processing_time_ms"].is_u64(), "{delivered}");

    // The hub's inbound item, listed and shown, in one shape.
    let _hub_server = hub.serve();
    let inbound = queue_items(&hub, "inbound");
    let first = &inbound[0];
    let shown_inbound = hub.json(&["queue", "inbound", "show", &first["id"].to_string()]);
    for (a, b) in [(waiting, &shown), (first, &shown_inbound)] {
        for key in [
            "created_on",
            "payload",
            "time_in_queue_ms",
            "processing_time_ms",
            "status",
        ] {
            assert_eq!(
                std::mem::discriminant(&a[key]),
                std::mem::discriminant(&b[key]),
                "{key}: {} vs {}",
                a[key],
                b[key]
            );
        }
        assert_eq!(a["created_on"].as_str().unwrap().len(), 19, "{a}");
        assert!(a["payload"]["changed_fields"].is_array(), "{a}");
    }
    assert!(first["processing_time_ms"].is_u64(), "{first}");
}

#[test]
fn an_oversized_peer_message_is_refused_naming_the_limit() {
    use procsync::transport::protocol::{SendItem, SyncEvent};
    let (edge, hub, mut edge_server, _hub_server) = crate::support::linked_pair(Default::default());
    edge_server.stop();
    let target = impersonate(&edge, "hub", &hub);
    let huge = "x".repeat(65 * 1024 * 1024);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ended = runtime.block_on(async {
        let mut client = procsync::transport::peer::PeerClient::connect(&target)
            .await
            .unwrap();
        let (sender, mut events) = client.sync().await.unwrap();
        sender
            .send(SendItem::Item(Box::new(crafted_item(
                1,
                &payload("small", "create"),
                Vec::new(),
            ))))
            .await
            .unwrap();
        sender
            .send(SendItem::Item(Box::new(crafted_item(2, &huge, Vec::new()))))
            .await
            .unwrap();
        let mut acks = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(30), events.recv())
                .await
                .unwrap()
            {
                Some(SyncEvent::Ack(sequence)) => acks.push(sequence),
                Some(SyncEvent::Pong(_)) => {}
                Some(SyncEvent::Closed(error)) => return (acks, error.to_string()),
                None => return (acks, "ended without a reason".to_string()),
            }
        }
    });
    assert_eq!(ended.0, [1], "what came before is queued and acknowledged");
    assert!(
        ended
            .1
            .contains("larger than this instance accepts (64 MiB)"),
        "{}",
        ended.1
    );
    assert!(hub.logs().contains("Refused an oversized peer message"));
    assert!(inbound_by_sequence(&hub, "edge", 2).is_none());
    hub.ok(&["record", "list", "sc_req_item"]);
}

/// Whether an operator-facing text reads as a sentence rather than a Rust
/// debug dump of a library error.
fn reads_as_a_sentence(text: &str) -> bool {
    ![
        "Error {",
        "Os {",
        "kind: ",
        "Custom {",
        "source: Some",
        "Kind(",
        "Io(",
    ]
    .iter()
    .any(|dump| text.contains(dump))
}

#[test]
fn transport_failures_read_as_sentences_in_last_error_and_the_log() {
    use crate::faults::Mode;
    let (edge, hub, _edge_server, _hub_server, to_hub, _to_edge) = pair_through_proxies();
    edge.fast_retries();
    let last_error = || {
        remote_of(&edge, "hub")["last_error"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    // Refused: nothing listens.
    to_hub.set(Mode::Refuse);
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=refused",
    ]);
    wait_for(
        &[&edge],
        "a refused connection",
        Duration::from_secs(30),
        || last_error().contains("Connection refused"),
    );
    let refused = last_error();
    assert!(
        refused.contains(&format!("cannot connect to {}", to_hub.endpoint())),
        "{refused}"
    );
    // Reset mid-stream: the link works, then the open stream is cut.
    to_hub.set(Mode::Forward);
    wait_for(
        &[&edge, &hub],
        "the record after the refusals",
        Duration::from_secs(30),
        || hub_records(&hub, "refused").len() == 1,
    );
    to_hub.set(Mode::Refuse);
    to_hub.set(Mode::Forward);
    wait_for(
        &[&edge],
        "the broken stream logged",
        Duration::from_secs(30),
        || edge.logs().contains("broke mid-stream"),
    );
    // Timeout: connections are accepted and nothing answers.
    to_hub.set(Mode::Blackhole);
    edge.ok(&["record", "create", "sc_req_item", "short_description=held"]);
    wait_for(
        &[&edge],
        "a call that timed out",
        Duration::from_secs(60),
        || last_error().contains("within 10 s"),
    );
    let timed_out = last_error();
    to_hub.set(Mode::Forward);
    wait_for(
        &[&edge, &hub],
        "the record after the timeouts",
        Duration::from_secs(60),
        || hub_records(&hub, "held").len() == 1,
    );
    for text in [&refused, &timed_out] {
        assert!(reads_as_a_sentence(text), "{text}");
        assert!(text.contains("; retrying at 20"), "{text}");
    }

    // A wrong pin: the edge pins some other certificate for the hub.
    let definitions = edge.ok(&["export"]);
    let other = Instance::init("impostor");
    let wrong = edge.file(
        "wrong-pin.toml",
        &definitions.replace(&hub.fingerprint, &other.fingerprint),
    );
    edge.ok(&["apply", wrong.to_str().unwrap()]);
    let pinned = edge.fails(&["remote", "validate", "hub"]);
    assert!(
        pinned.contains(&format!("TLS with {} failed", to_hub.endpoint()))
            && pinned.contains("check that each side pins the other's fingerprint"),
        "{pinned}"
    );
    let right = edge.file("right-pin.toml", &definitions);
    edge.ok(&["apply", right.to_str().unwrap()]);
    edge.ok(&["remote", "validate", "hub"]);

    // TLS closed by the peer: the hub pins some other certificate for the
    // edge, so it ends every connection the edge makes after the handshake.
    let hub_definitions = hub.ok(&["export"]);
    let wrong = hub.file(
        "wrong-pin.toml",
        &hub_definitions.replace(&edge.fingerprint, &other.fingerprint),
    );
    hub.ok(&["apply", wrong.to_str().unwrap()]);
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=closed",
    ]);
    wait_for(
        &[&edge, &hub],
        "a connection the peer closed",
        Duration::from_secs(60),
        || !last_error().is_empty(),
    );
    // Whether the edge reads the peer's alert as a pin mismatch (no
    // retry until validated) or as a broken call (retried), the text says
    // with whom and what happens next.
    let closed = last_error();
    assert!(
        closed.contains(&to_hub.endpoint())
            && (closed.contains("; retrying at 20")
                || closed
                    .contains("; nothing is sent until `procsync remote validate hub` succeeds")),
        "{closed}"
    );
    for text in [&pinned, &closed] {
        assert!(reads_as_a_sentence(text), "{text}");
        assert!(!text.contains("docs.rs"), "{text}");
    }
    // Every failure the dispatcher logged on the way (the reset included)
    // reads as a sentence too.
    let logs = edge.logs();
    let failures: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(failures.len() >= 3, "{logs}");
    for line in failures {
        assert!(reads_as_a_sentence(line), "{line}");
        assert!(!line.contains("docs.rs"), "{line}");
    }
    let broke = logs
        .lines()
        .find(|l| l.contains("broke mid-stream"))
        .unwrap();
    assert!(
        broke.contains(&format!("the connection to {}", to_hub.endpoint())),
        "{broke}"
    );
}
