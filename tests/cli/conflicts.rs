//! Conflicts between real `serve` processes: both sides change the same
//! fields of the same correlated record while the link is down, then it
//! heals and each inbound flow's rule settles what both changed; both
//! sides end with the same values, and the winner is the rule's.

use std::time::Duration;

use serde_json::Value;

use crate::support::{
    Extras, Instance, Server, linked_pair, queue_items, queues_settled, wait_for,
};

/// Sets the conflict rule of `instance`'s inbound flow (the definitions'
/// last `table = "sc_req_item"` line is the inbound flow's).
pub fn set_rule(instance: &Instance, rule: &str) {
    let exported: String = instance
        .ok(&["export"])
        .lines()
        .filter(|line| !line.starts_with("conflict = "))
        .map(|line| format!("{line}\n"))
        .collect();
    let (head, tail) = exported.rsplit_once("table = \"sc_req_item\"\n").unwrap();
    let text = format!("{head}table = \"sc_req_item\"\nconflict = \"{rule}\"\n{tail}");
    let file = instance.file("rules.toml", &text);
    instance.ok(&["apply", file.to_str().unwrap()]);
}

fn record(instance: &Instance, sys_id: &str) -> Value {
    instance.json(&["record", "get", "sc_req_item", sys_id, "--json"])["fields"].clone()
}

fn records(instance: &Instance) -> Vec<Value> {
    instance
        .json(&["record", "list", "sc_req_item", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["fields"].clone())
        .collect()
}

/// The hub's copy of the edge's record `sys_id`.
fn hub_copy(hub: &Instance, edge_id: &str) -> Option<String> {
    queue_items(hub, "inbound")
        .iter()
        .find(|i| i["remote_correlation_id"] == edge_id && i["status"] == "Processed")
        .and_then(|i| i["local_correlation_id"].as_str().map(str::to_string))
}

/// Two linked instances with these rules (edge's flow from the hub, the
/// hub's flow from the edge), validated, and a record made on the edge
/// that reached the hub: (edge, hub, servers, edge's id, hub's id).
fn pair_with_rules(
    edge_rule: &str,
    hub_rule: &str,
) -> (Instance, Instance, (Server, Server), String, String) {
    let (edge, hub, edge_server, hub_server) = linked_pair(Extras::default());
    set_rule(&edge, edge_rule);
    set_rule(&hub, hub_rule);
    edge.ok(&["remote", "validate", "hub"]);
    hub.ok(&["remote", "validate", "edge"]);
    let edge_id = edge
        .ok(&[
            "record",
            "create",
            "sc_req_item",
            "short_description=printer",
            "state=1",
            "priority=3",
        ])
        .trim()
        .to_string();
    wait_for(
        &[&edge, &hub],
        "the record on the hub",
        Duration::from_secs(30),
        || hub_copy(&hub, &edge_id).is_some() && queues_settled(&[&edge, &hub]),
    );
    let hub_id = hub_copy(&hub, &edge_id).unwrap();
    (edge, hub, (edge_server, hub_server), edge_id, hub_id)
}

/// Takes the link down both ways (each side disables the other).
fn cut(edge: &Instance, hub: &Instance) {
    edge.ok(&["remote", "disable", "hub"]);
    hub.ok(&["remote", "disable", "edge"]);
}

/// Brings the link back and waits until nothing is left to send or apply.
fn heal(edge: &Instance, hub: &Instance) {
    edge.ok(&["remote", "validate", "hub"]);
    hub.ok(&["remote", "validate", "edge"]);
    wait_for(
        &[edge, hub],
        "both queues to settle",
        Duration::from_secs(30),
        || queues_settled(&[edge, hub]),
    );
}

fn update(instance: &Instance, sys_id: &str, field: &str) {
    instance.ok(&["record", "update", "sc_req_item", sys_id, field]);
}

fn fields(record: &Value) -> (String, String) {
    (
        record["state"].as_str().unwrap_or("").to_string(),
        record["priority"].as_str().unwrap_or("").to_string(),
    )
}

fn conflicts(instance: &Instance) -> u64 {
    let stats = instance.json(&["stats", "--json"]);
    stats["remote_systems"][0]["conflicts"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn newest_wins_on_both_sides_keeps_the_later_change_of_each_field() {
    let (edge, hub, _servers, edge_id, hub_id) = pair_with_rules("newest_wins", "newest_wins");
    cut(&edge, &hub);
    // state: the edge first, then the hub; priority: the hub first, then
    // the edge. A third field only the hub changes.
    update(&edge, &edge_id, "state=edge");
    update(&hub, &hub_id, "state=hub");
    update(&hub, &hub_id, "priority=hub");
    update(&edge, &edge_id, "priority=edge");
    update(&hub, &hub_id, "short_description=printer on floor 2");
    heal(&edge, &hub);
    let (at_edge, at_hub) = (record(&edge, &edge_id), record(&hub, &hub_id));
    assert_eq!(fields(&at_edge), ("hub".into(), "edge".into()), "{at_edge}");
    assert_eq!(fields(&at_hub), ("hub".into(), "edge".into()), "{at_hub}");
    assert_eq!(at_edge["short_description"], "printer on floor 2");
    assert_eq!(at_hub["short_description"], "printer on floor 2");
    // Each side met both fields as conflicts, and says so.
    assert!(conflicts(&edge) >= 1 && conflicts(&hub) >= 1);
    let item = queue_items(&hub, "inbound")
        .into_iter()
        .rfind(|i| i["remote_correlation_id"] == edge_id.as_str())
        .unwrap();
    let context = hub.json(&["queue", "context", &item["flow_contexts"][0].to_string()]);
    let noted = context["outputs"]["conflicts"].as_array().unwrap();
    assert_eq!(noted[0]["rule"], "newest_wins", "{context}");
    let metrics = crate::support::metrics(&hub);
    assert!(
        metrics.contains("procsync_conflicts_total{remote_system=\"edge\"}"),
        "{metrics}"
    );
    assert_eq!(records(&edge).len(), 1);
    assert_eq!(records(&hub).len(), 1);
}

#[test]
fn a_fixed_winner_on_one_side_and_its_opposite_on_the_other_agree() {
    let (edge, hub, _servers, edge_id, hub_id) = pair_with_rules("peer_wins", "this_side_wins");
    cut(&edge, &hub);
    // The edge's change is the later one; the hub still wins.
    update(&hub, &hub_id, "state=hub");
    update(&edge, &edge_id, "state=edge");
    heal(&edge, &hub);
    assert_eq!(record(&edge, &edge_id)["state"], "hub");
    assert_eq!(record(&hub, &hub_id)["state"], "hub");
}

#[test]
fn the_error_rule_holds_the_item_until_a_person_takes_a_side() {
    let (edge, hub, _servers, edge_id, hub_id) = pair_with_rules("newest_wins", "error");
    cut(&edge, &hub);
    update(&edge, &edge_id, "state=edge");
    update(&hub, &hub_id, "state=hub");
    heal(&edge, &hub);
    // The edge took the hub's newer value; the hub holds the edge's item.
    assert_eq!(record(&edge, &edge_id)["state"], "hub");
    assert_eq!(record(&hub, &hub_id)["state"], "hub");
    let held = queue_items(&hub, "inbound")
        .into_iter()
        .find(|i| i["status"] == "Error")
        .expect("an item in Error");
    let error = held["error"].as_str().unwrap();
    assert!(
        error.contains(r#"`state`: here "hub", from `edge` "edge""#)
            && error.contains("queue inbound resolve"),
        "{error}"
    );
    let id = held["id"].to_string();
    // A resolve of an item no conflict holds is refused, and changes nothing.
    let processed = queue_items(&hub, "inbound")
        .into_iter()
        .find(|i| i["status"] == "Processed")
        .unwrap()["id"]
        .to_string();
    let refused = hub.fails(&["queue", "inbound", "resolve", &processed, "--take", "peer"]);
    assert!(refused.contains("no conflict holds it"), "{refused}");
    // Taking the edge's side applies it here and sends it back.
    let out = hub.ok(&["queue", "inbound", "resolve", &id, "--take", "peer"]);
    assert!(out.contains("is Processed"), "{out}");
    wait_for(
        &[&edge, &hub],
        "the settled value on both sides",
        Duration::from_secs(30),
        || {
            queues_settled(&[&edge, &hub])
                && record(&edge, &edge_id)["state"] == "edge"
                && record(&hub, &hub_id)["state"] == "edge"
        },
    );
    assert!(conflicts(&hub) >= 1);
}

#[test]
fn a_change_meets_a_deletion_by_the_rule() {
    let (edge, hub, _servers, edge_id, hub_id) = pair_with_rules("newest_wins", "newest_wins");
    cut(&edge, &hub);
    // The edge deletes; the hub changes the record afterwards: the later
    // change wins, so the record lives on both sides.
    edge.ok(&["record", "delete", "sc_req_item", &edge_id]);
    update(&hub, &hub_id, "state=still needed");
    heal(&edge, &hub);
    assert_eq!(record(&hub, &hub_id)["state"], "still needed");
    let back = records(&edge);
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0]["state"], "still needed");
    assert_eq!(back[0]["short_description"], "printer");
}

#[test]
fn rules_that_would_leave_the_sides_different_are_refused_at_validate() {
    let (edge, hub, _edge_server, _hub_server) = linked_pair(Extras::default());
    set_rule(&edge, "peer_wins");
    set_rule(&hub, "peer_wins");
    let refused = edge.fails(&["remote", "validate", "hub"]);
    assert!(
        refused.contains("the conflict rules for process event `software_request`")
            && refused.contains("each takes the other's and they swap"),
        "{refused}"
    );
    set_rule(&hub, "this_side_wins");
    edge.ok(&["remote", "validate", "hub"]);
    // A rule the file does not know is refused when applied, with the
    // rules it knows.
    let exported = hub.ok(&["export"]);
    let bad = exported.replace(
        "conflict = \"this_side_wins\"",
        "conflict = \"loudest_wins\"",
    );
    let file = hub.file("bad.toml", &bad);
    let refused = hub.fails(&["apply", file.to_str().unwrap()]);
    assert!(refused.contains("loudest_wins"), "{refused}");
}

#[test]
fn an_operator_settles_a_held_conflict_in_the_dashboard() {
    use crate::browser::Browser;
    let (edge, hub, _servers, edge_id, hub_id) = pair_with_rules("peer_wins", "error");
    cut(&edge, &hub);
    update(&edge, &edge_id, "state=edge");
    update(&hub, &hub_id, "state=hub");
    heal(&edge, &hub);
    let held = queue_items(&hub, "inbound")
        .into_iter()
        .find(|i| i["status"] == "Error")
        .expect("an item in Error");
    let id = held["id"].to_string();

    let browser = Browser::start();
    browser.set_window_size(1280, 1000);
    let shots = crate::browser::screenshot_dir("conflict");
    browser.open(&format!(
        "http://{}/dashboard#token={}",
        hub.admin_address(),
        hub.token()
    ));
    browser.wait_for("#board:not([hidden]) tr[data-remote='edge']");
    crate::support::wait_until(
        "the overview to count the conflict",
        Duration::from_secs(20),
        || browser.text_of("tr[data-remote='edge'] td.conflicts") == "1",
    );
    browser.script(&format!("location.hash = '#/item/inbound/{id}'; return 1"));
    browser.wait_for("#item-conflict-section:not([hidden]) #item-conflicts tr");
    let shown = browser.text_of("#item-conflicts");
    assert!(
        shown.contains("state") && shown.contains("hub") && shown.contains("edge"),
        "{shown}"
    );
    browser.screenshot(&shots.join("item-conflict.png"));
    // Keep the hub's value (the edge's peer_wins took it already); it is
    // sent on all the same.
    browser.click_on("#item-take-local");
    crate::support::wait_until(
        "the item view to show it Processed",
        Duration::from_secs(20),
        || {
            browser.script("return document.body.dataset.item || ''")
                == format!("inbound/{id}/Processed")
        },
    );
    assert!(
        browser
            .find("#item-conflict-section:not([hidden])")
            .is_none()
    );
    wait_for(
        &[&edge, &hub],
        "both sides to hold the hub's value",
        Duration::from_secs(30),
        || {
            queues_settled(&[&edge, &hub])
                && record(&edge, &edge_id)["state"] == "hub"
                && record(&hub, &hub_id)["state"] == "hub"
        },
    );
}
