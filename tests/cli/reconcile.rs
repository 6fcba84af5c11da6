//! Reconciliation between real `serve` processes: after a hand-made
//! divergence (an item the hub's operator skipped, a field changed on the
//! hub while its capture was off), `remote reconcile` finds exactly those
//! records from either side, `--repair` makes both sides equal by the
//! conflict rule, and bad requests are refused with the reason.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::support::{
    Extras, Instance, capture_active, impersonate, linked_pair, queue_items, queues_settled,
    sys_id_of, wait_for,
};

/// Every record of `sc_req_item` on `instance`: short_description → its
/// fields but the `sys_` ones.
fn by_description(instance: &Instance) -> BTreeMap<String, BTreeMap<String, Value>> {
    instance
        .json(&["record", "list", "sc_req_item", "--json", "--limit", "1000"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let fields: BTreeMap<String, Value> = r["fields"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| !k.starts_with("sys_"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (
                fields["short_description"].as_str().unwrap().to_string(),
                fields,
            )
        })
        .collect()
}

/// `instance`'s definitions without any inbound flow script.
fn drop_scripts(instance: &Instance) {
    let text: String = instance
        .ok(&["export"])
        .lines()
        .filter(|line| !line.starts_with("script = "))
        .map(|line| format!("{line}\n"))
        .collect();
    let file = instance.file("plain.toml", &text);
    instance.ok(&["apply", file.to_str().unwrap()]);
}

fn reconcile(instance: &Instance, remote: &str, extra: &[&str]) -> Value {
    let mut args = vec!["remote", "reconcile", remote, "--json"];
    args.extend_from_slice(extra);
    let found = instance.json(&args);
    assert_eq!(found["state"], "done", "{found}");
    found
}

#[test]
fn reconcile_finds_exactly_the_divergence_and_repair_makes_both_sides_equal() {
    let (edge, hub, edge_server, _hub_server) = linked_pair(Extras {
        capture: "",
        inbound: "script = 'if payload.fields.state == \"8\" { throw \"state 8 needs a person\" }'",
    });
    for n in 0..6 {
        edge.ok(&[
            "record",
            "create",
            "sc_req_item",
            &format!("short_description=request {n}"),
            "state=1",
            "priority=3",
        ]);
    }
    let lost = edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=request lost",
        "state=8",
    ]);
    let lost = lost.trim().to_string();
    wait_for(
        &[&edge, &hub],
        "six records on the hub and the seventh in Error there",
        Duration::from_secs(30),
        || {
            by_description(&hub).len() == 6
                && queue_items(&hub, "inbound")
                    .iter()
                    .any(|i| i["status"] == "Error")
        },
    );
    // The hub's operator skips the item it could not apply.
    let failed = queue_items(&hub, "inbound")
        .into_iter()
        .find(|i| i["status"] == "Error")
        .unwrap();
    hub.ok(&["queue", "inbound", "skip", &failed["id"].to_string()]);

    // On the hub, one field changed while its capture was off: nothing
    // was sent, and the edge never hears of it.
    let hub_copy = sys_id_of(&hub, "request 2").unwrap();
    // And a comment added there the same way, to another record.
    let commented = sys_id_of(&hub, "request 4").unwrap();
    capture_active(&hub, "Capture requests", false);
    hub.ok(&["record", "update", "sc_req_item", &hub_copy, "priority=1"]);
    hub.ok(&[
        "journal",
        "add",
        "sc_req_item",
        &commented,
        "comments",
        "noted at the hub",
    ]);
    capture_active(&hub, "Capture requests", true);
    wait_for(
        &[&edge, &hub],
        "the queues to settle",
        Duration::from_secs(30),
        || queues_settled(&[&edge, &hub]),
    );

    // From the edge: one record missing on the hub, one that differs, in
    // the field that differs; nothing else.
    let found = reconcile(&edge, "hub", &[]);
    let table = &found["tables"][0];
    assert_eq!(table["table"], "sc_req_item", "{found}");
    assert_eq!(table["here"], 7, "{found}");
    assert_eq!(table["peer"], 6, "{found}");
    assert_eq!(table["missing_there"], 1, "{found}");
    assert_eq!(table["missing_here"], 0, "{found}");
    assert_eq!(table["differing"], 2, "{found}");
    let differences = table["differences"].as_array().unwrap();
    assert_eq!(differences.len(), 3, "{found}");
    let missing = differences
        .iter()
        .find(|d| d["kind"] == "missing_there")
        .unwrap();
    assert_eq!(missing["here"], lost.as_str(), "{found}");
    let differs = differences
        .iter()
        .find(|d| d["peer"] == hub_copy.as_str())
        .unwrap();
    assert_eq!(
        differs["kind"]["differs"]["fields"],
        serde_json::json!(["priority"]),
        "{found}"
    );
    let journal = differences
        .iter()
        .find(|d| d["peer"] == commented.as_str())
        .unwrap();
    assert_eq!(
        journal["kind"]["differs"]["fields"],
        serde_json::json!(["(journal)"]),
        "{found}"
    );
    assert_eq!(journal["repair"], "both", "{found}");
    assert_eq!(table["repaired"], 0, "nothing is sent without --repair");
    // The hub sees the same from its side.
    let from_hub = reconcile(&hub, "edge", &[]);
    assert_eq!(from_hub["tables"][0]["missing_here"], 1, "{from_hub}");
    assert_eq!(from_hub["tables"][0]["differing"], 2, "{from_hub}");
    // The result is kept where operators look.
    let shown = edge.ok(&["remote", "show", "hub"]);
    assert!(shown.contains("3 differences, 0 repaired"), "{shown}");
    let stats = edge.json(&["stats", "--json"]);
    assert!(
        stats["remote_systems"][0]["reconcile"]
            .as_str()
            .is_some_and(|r| r.contains("3 differences")),
        "{stats}"
    );
    let text = edge.ok(&["remote", "reconcile", "hub"]);
    assert!(text.contains("MISSING_THERE"), "{text}");
    assert!(
        text.contains(&format!("here {lost} / peer -: missing there")),
        "{text}"
    );

    // The hub's flow is fixed; the repair sends the missing record, and
    // the newer value (the hub's) goes to the edge.
    drop_scripts(&hub);
    let repaired = reconcile(&edge, "hub", &["--repair"]);
    // One item each for the missing record and the changed field, and one
    // each way for the comments, so both end with both sides' entries.
    assert_eq!(repaired["tables"][0]["repaired"], 4, "{repaired}");
    wait_for(
        &[&edge, &hub],
        "both sides to hold the same seven records",
        Duration::from_secs(30),
        || queues_settled(&[&edge, &hub]) && by_description(&hub) == by_description(&edge),
    );
    let on_edge = by_description(&edge);
    assert_eq!(on_edge.len(), 7);
    assert_eq!(
        on_edge["request 2"]["priority"], "1",
        "the newer change won"
    );
    assert_eq!(by_description(&hub)["request lost"]["state"], "8");
    // The comment made at the hub reached the edge, once.
    let edge_copy = sys_id_of(&edge, "request 4").unwrap();
    wait_for(
        &[&edge, &hub],
        "the hub's comment on the edge",
        Duration::from_secs(30),
        || {
            let held = edge.json(&["record", "get", "sc_req_item", &edge_copy, "--json"]);
            held["journal"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|j| j["text"] == "noted at the hub")
                .count()
                == 1
        },
    );
    let again = reconcile(&edge, "hub", &[]);
    assert_eq!(
        again["tables"][0]["differences"],
        serde_json::json!([]),
        "{again}"
    );
    assert!(
        edge.ok(&["remote", "show", "hub"])
            .contains("0 differences"),
        "the last result is the latest"
    );

    // Bad requests: each refused with the reason, nothing queued.
    let queued = queue_items(&edge, "outbound").len();
    let refused = edge.fails(&["remote", "reconcile", "hub", "--table", "incident"]);
    assert!(
        refused.contains("no flow syncs table `incident` with `hub`"),
        "{refused}"
    );
    edge.ok(&["remote", "disable", "hub"]);
    let refused = edge.fails(&["remote", "reconcile", "hub"]);
    assert!(
        refused.contains("not Active") && refused.contains("remote validate hub"),
        "{refused}"
    );
    assert_eq!(queue_items(&edge, "outbound").len(), queued);
    edge.ok(&["remote", "validate", "hub"]);

    // A peer asking about a table none of the hub's flows sync with it,
    // or for a record outside the comparison, is refused; the hub goes on.
    let mut edge_server = edge_server;
    edge_server.stop();
    let target = impersonate(&edge, "hub", &hub);
    let answers = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use procsync::reconcile::{Column, Compared, SendRecord};
        use procsync::transport::protocol::ReconcileAsk;
        let mut client = procsync::transport::peer::PeerClient::connect(&target)
            .await
            .unwrap();
        let mut call = client.reconcile().await.unwrap();
        let stranger = call
            .ask(ReconcileAsk::Open(Compared {
                table: "incident".into(),
                column: Column::All,
                names: vec![],
                journal: vec![],
            }))
            .await
            .unwrap_err()
            .to_string();
        let mut call = client.reconcile().await.unwrap();
        call.ask(ReconcileAsk::Open(Compared {
            table: "sc_req_item".into(),
            column: Column::All,
            names: vec![],
            journal: vec![],
        }))
        .await
        .unwrap();
        let outsider = call
            .ask(ReconcileAsk::Send(vec![SendRecord {
                sys_id: "0".repeat(32),
                create: true,
                settles: true,
            }]))
            .await
            .unwrap_err()
            .to_string();
        (stranger, outsider)
    });
    assert!(
        answers
            .0
            .contains("no flow of this instance syncs table `incident`"),
        "{answers:?}"
    );
    assert!(
        answers
            .1
            .contains("is not one of the correlated records compared here"),
        "{answers:?}"
    );
    assert_eq!(
        hub.json(&["stats", "--json"])["remote_systems"][0]["name"],
        "edge"
    );
}

#[test]
fn a_property_schedules_reconciliations_that_repair_when_told() {
    let (edge, hub, _edge_server, _hub_server) = linked_pair(Extras::default());
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=kept",
        "state=1",
    ]);
    wait_for(
        &[&edge, &hub],
        "the record on the hub",
        Duration::from_secs(30),
        || by_description(&hub).len() == 1 && queues_settled(&[&edge, &hub]),
    );
    // Changed on the hub while its capture is off: only a repair brings
    // the edge along.
    let copy = hub.json(&["record", "list", "sc_req_item", "--json"])[0]["fields"]["sys_id"]
        .as_str()
        .unwrap()
        .to_string();
    capture_active(&hub, "Capture requests", false);
    hub.ok(&["record", "update", "sc_req_item", &copy, "state=3"]);
    capture_active(&hub, "Capture requests", true);
    edge.ok(&["property", "set", "reconcile.repair", "true"]);
    edge.ok(&["property", "set", "reconcile.interval_s", "1"]);
    wait_for(
        &[&edge, &hub],
        "a scheduled reconciliation to bring the edge along",
        Duration::from_secs(30),
        || by_description(&edge)["kept"]["state"] == "3",
    );
    // The scheduled run says so in stats.
    let status = edge.json(&["stats", "--json"]);
    let reconciled = &status["remote_systems"][0]["reconciled"];
    assert!(reconciled["finished_s"].as_u64().unwrap() > 0, "{status}");
    assert!(
        status["remote_systems"][0]["reconcile"]
            .as_str()
            .is_some_and(|r| r.starts_with("done")),
        "{status}"
    );
    let metrics = crate::support::metrics(&edge);
    assert!(
        metrics.contains("procsync_reconcile_last_differences{remote_system=\"hub\"}"),
        "{metrics}"
    );
    // And in the dashboard's remote systems table.
    let browser = crate::browser::Browser::start();
    browser.set_window_size(1280, 1000);
    browser.open(&format!(
        "http://{}/dashboard#token={}",
        edge.admin_address(),
        edge.token()
    ));
    browser.wait_for("#board:not([hidden]) tr[data-remote='hub']");
    crate::support::wait_until(
        "the overview to show the last reconciliation",
        Duration::from_secs(20),
        || {
            let shown = browser.text_of("tr[data-remote='hub'] td.reconcile");
            shown.contains("diff") && shown.contains("fixed")
        },
    );
    let shots = crate::browser::screenshot_dir("reconcile");
    browser.screenshot(&shots.join("overview.png"));
}

#[test]
fn a_difference_the_error_rule_receives_waits_for_an_operator_and_then_both_agree() {
    let (edge, hub, _edge_server, _hub_server) = linked_pair(Extras::default());
    // The hub holds conflicts for a person; the edge takes the hub's word.
    crate::conflicts::set_rule(&hub, "error");
    crate::conflicts::set_rule(&edge, "peer_wins");
    edge.ok(&["remote", "validate", "hub"]);
    hub.ok(&["remote", "validate", "edge"]);
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=disputed",
        "state=1",
    ]);
    wait_for(
        &[&edge, &hub],
        "the record on the hub",
        Duration::from_secs(30),
        || by_description(&hub).len() == 1 && queues_settled(&[&edge, &hub]),
    );
    let copy = hub.json(&["record", "list", "sc_req_item", "--json"])[0]["fields"]["sys_id"]
        .as_str()
        .unwrap()
        .to_string();
    capture_active(&hub, "Capture requests", false);
    hub.ok(&["record", "update", "sc_req_item", &copy, "state=7"]);
    capture_active(&hub, "Capture requests", true);
    // The edge sends its record as an ordinary change; the hub's rule holds
    // it in Error showing both values.
    let repaired = reconcile(&edge, "hub", &["--repair"]);
    assert_eq!(repaired["tables"][0]["repaired"], 1, "{repaired}");
    wait_for(
        &[&edge, &hub],
        "the hub to hold the change",
        Duration::from_secs(30),
        || {
            queue_items(&hub, "inbound")
                .iter()
                .any(|i| i["status"] == "Error")
        },
    );
    let held = queue_items(&hub, "inbound")
        .into_iter()
        .find(|i| i["status"] == "Error")
        .unwrap();
    let error = held["error"].as_str().unwrap();
    assert!(
        error.contains("`state`: here \"7\", from `edge` \"1\"")
            && error.contains("held for a person"),
        "{error}"
    );
    assert_eq!(
        by_description(&hub)["disputed"]["state"],
        "7",
        "nothing applied yet"
    );
    // The operator keeps the hub's value; it is sent on, and both agree.
    hub.ok(&[
        "queue",
        "inbound",
        "resolve",
        &held["id"].to_string(),
        "--take",
        "local",
    ]);
    wait_for(
        &[&edge, &hub],
        "both sides equal",
        Duration::from_secs(30),
        || queues_settled(&[&edge, &hub]) && by_description(&edge) == by_description(&hub),
    );
    assert_eq!(by_description(&edge)["disputed"]["state"], "7");
    let again = reconcile(&edge, "hub", &[]);
    assert_eq!(
        again["tables"][0]["differences"],
        serde_json::json!([]),
        "{again}"
    );
}
