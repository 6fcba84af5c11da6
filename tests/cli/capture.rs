//! Capture into the outbound queue, checked through `queue outbound list`.

use serde_json::Value;

use crate::support::{Instance, apply_definitions};

fn items(instance: &Instance, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["queue", "outbound", "list", "--json", "--limit", "1000"];
    all.extend_from_slice(args);
    serde_json::from_str::<Value>(&instance.ok(&all))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn field<'a>(item: &'a Value, key: &str) -> &'a Value {
    item["payload"]["changed_fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == key)
        .unwrap_or_else(|| panic!("no field {key} in {item}"))
}

#[test]
fn matching_changes_queue_one_item_per_outbound_flow() {
    let instance = Instance::init("edge-1");
    let _server = instance.serve();
    apply_definitions(&instance);
    let acme = instance
        .ok(&[
            "user",
            "add",
            "agent",
            "--roles",
            "process_sync",
            "--domain",
            "global/acme",
        ])
        .trim()
        .to_string();
    let as_agent = |args: &[&str]| {
        let out = std::process::Command::new(crate::support::BIN)
            .args(args)
            .env("PROCSYNC_DATA", instance.path())
            .env("PROCSYNC_TOKEN", &acme)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };

    // Outside the definition's domain (global/acme): not captured.
    instance.ok(&[
        "record",
        "create",
        "incident",
        "priority=1",
        "short_description=HQ",
    ]);
    assert!(items(&instance, &[]).is_empty());

    // In the domain but not matching the filter: not captured.
    let low = as_agent(&["record", "create", "incident", "priority=4", "urgency=3"]);
    assert!(items(&instance, &[]).is_empty());

    // Matching: one item per outbound flow, each remote numbering its own stream.
    let sys_id = as_agent(&[
        "record",
        "create",
        "incident",
        "priority=1",
        "short_description=Email down",
        "impact=2",
    ]);
    let queued = items(&instance, &[]);
    assert_eq!(queued.len(), 2);
    for (item, remote) in queued.iter().zip(["hub", "other"]) {
        assert_eq!(item["remote_system"], remote);
        assert_eq!(item["sequence"], 1);
        assert_eq!(item["status"], "Ready");
        assert_eq!(item["operation"], "create");
        assert_eq!(item["process_event"], "incident_sync");
        assert_eq!(item["local_correlation_id"], sys_id.as_str());
        assert_eq!(item["domain"], "global/acme");
        assert_eq!(item["payload"]["capture_metadata"]["changed_by"], "agent");
        assert_eq!(
            item["payload"]["capture_metadata"]["timestamp"]
                .as_str()
                .unwrap()
                .len(),
            19
        );
    }
    let first = &queued[0];
    let keys: Vec<&str> = first["payload"]["changed_fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["short_description", "state", "priority"],
        "only the included fields, in order"
    );
    assert_eq!(field(first, "short_description")["value"], "Email down");
    assert_eq!(
        field(first, "short_description")["display_value"],
        "Email down"
    );
    assert_eq!(field(first, "short_description")["changed"], true);
    assert_eq!(field(first, "state")["changed"], false);

    // Updating a field that is not included: nothing.
    as_agent(&["record", "update", "incident", &sys_id, "impact=1"]);
    assert_eq!(items(&instance, &[]).len(), 2);

    // Updating an included field: a snapshot saying what changed.
    as_agent(&["record", "update", "incident", &sys_id, "state=2"]);
    let hub = items(&instance, &["--remote", "hub"]);
    assert_eq!(hub.len(), 2);
    let update = &hub[1];
    assert_eq!(update["sequence"], 2);
    assert_eq!(update["operation"], "update");
    assert_eq!(field(update, "state")["value"], "2");
    assert_eq!(field(update, "state")["changed"], true);
    assert_eq!(field(update, "short_description")["value"], "Email down");
    assert_eq!(field(update, "short_description")["changed"], false);

    // A new comment is a change; a work note (not included) is not.
    as_agent(&[
        "journal",
        "add",
        "incident",
        &sys_id,
        "work_notes",
        "internal",
    ]);
    assert_eq!(items(&instance, &["--remote", "hub"]).len(), 2);
    as_agent(&[
        "journal",
        "add",
        "incident",
        &sys_id,
        "comments",
        "We are on it",
    ]);
    let hub = items(&instance, &["--remote", "hub"]);
    assert_eq!(hub.len(), 3);
    let entries = hub[2]["payload"]["journal_entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["field"], "comments");
    assert_eq!(entries[0]["text"], "We are on it");
    assert_eq!(entries[0]["author"], "agent");

    // The filter's ^OR: urgency=1 matches although priority is low.
    as_agent(&["record", "update", "incident", &low, "urgency=1", "state=5"]);
    assert_eq!(items(&instance, &["--remote", "hub"]).len(), 4);

    // Delete is captured with the last snapshot.
    as_agent(&["record", "delete", "incident", &sys_id]);
    let hub = items(&instance, &["--remote", "hub"]);
    assert_eq!(hub.len(), 5);
    assert_eq!(hub[4]["operation"], "delete");
    assert_eq!(hub[4]["sequence"], 5);
    assert_eq!(field(&hub[4], "state")["value"], "2");

    // Filters by status and remote; the table view.
    assert_eq!(items(&instance, &["--status", "ready"]).len(), 10);
    assert!(items(&instance, &["--status", "error"]).is_empty());
    let err = instance.fails(&["queue", "outbound", "list", "--status", "lost"]);
    assert!(err.contains("unknown status `lost`"), "{err}");
    let table = instance.ok(&["queue", "outbound", "list", "--remote", "other"]);
    assert!(
        table.starts_with("ID") && table.lines().count() == 6,
        "{table}"
    );

    // Inactive definitions capture nothing.
    let inactive = crate::support::DEFINITIONS.replace(
        "name = \"Capture incidents\"\n",
        "name = \"Capture incidents\"\nactive = false\n",
    );
    let file = instance.file("inactive.toml", &inactive);
    instance.ok(&["apply", file.to_str().unwrap()]);
    as_agent(&["record", "create", "incident", "priority=1"]);
    assert_eq!(items(&instance, &[]).len(), 10);
}

#[test]
fn operators_can_show_and_skip_outbound_items() {
    let instance = Instance::init("edge-1");
    let _server = instance.serve();
    apply_definitions(&instance);
    instance.ok(&[
        "record",
        "create",
        "incident",
        "priority=1",
        "sys_domain=global/acme",
    ]);
    let shown: Value =
        serde_json::from_str(&instance.ok(&["queue", "outbound", "show", "1"])).unwrap();
    assert_eq!(shown["status"], "Ready");
    assert_eq!(shown["remote_system"], "hub");
    assert!(shown["payload"]["changed_fields"].is_array());
    let err = instance.fails(&["queue", "outbound", "retry", "1"]);
    assert!(err.contains("only Error items can be retried"), "{err}");
    let out = instance.ok(&["queue", "outbound", "skip", "1"]);
    assert!(out.contains("outbound item 1 is Skipped"), "{out}");
    assert_eq!(items(&instance, &["--status", "skipped"]).len(), 1);
    let err = instance.fails(&["queue", "outbound", "show", "99"]);
    assert!(err.contains("outbound item 99 not found"), "{err}");
}

#[test]
fn a_change_operator_on_a_field_not_sent_still_decides_when_to_send() {
    let instance = Instance::init("edge-1");
    let _server = instance.serve();
    let definitions = r#"
[[definition]]
name = "Requests"

[[process_event]]
name = "approved"
definition = "Requests"

[[capture]]
name = "When approved"
process_event = "approved"
table = "sc_req_item"
filter = "stateCHANGESTO2"
fields = ["short_description"]

[[outbound_flow]]
name = "Approved to hub"
process_event = "approved"
remote_system = "hub"
"#;
    let definitions = format!("{definitions}{}", crate::support::UNREACHED_HUB);
    let file = crate::support::apply_with_users(&instance, &definitions);
    let validated = instance.ok(&["config", "validate", file.to_str().unwrap()]);
    assert!(validated.contains("valid"), "{validated}");
    let sys_id = instance
        .ok(&[
            "record",
            "create",
            "sc_req_item",
            "short_description=Laptop",
            "state=1",
        ])
        .trim()
        .to_string();
    assert!(
        items(&instance, &[]).is_empty(),
        "state did not change to 2"
    );
    instance.ok(&["record", "update", "sc_req_item", &sys_id, "state=3"]);
    assert!(
        items(&instance, &[]).is_empty(),
        "state changed, but not to 2"
    );
    instance.ok(&["record", "update", "sc_req_item", &sys_id, "state=2"]);
    let queued = items(&instance, &[]);
    assert_eq!(queued.len(), 1, "state became 2: {queued:?}");
    let sent = field(&queued[0], "short_description");
    assert_eq!(sent["value"], "Laptop");
    assert_eq!(sent["changed"], false);
    assert!(
        queued[0]["payload"]["changed_fields"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["key"] != "state"),
        "fields decides what is sent"
    );
    // Another update while state stays 2 queues nothing.
    instance.ok(&["record", "update", "sc_req_item", &sys_id, "priority=1"]);
    assert_eq!(items(&instance, &[]).len(), 1);
}
