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
