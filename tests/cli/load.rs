//! Initial load between real `serve` processes: records that existed
//! before the link was made cross on request, batch by batch, through a
//! SIGKILL of the sender, each once.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Instance, link_edge_hub, queue_items, wait_for};

fn records(instance: &Instance) -> Vec<Value> {
    instance
        .json(&["record", "list", "sc_req_item", "--json", "--limit", "5000"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["fields"].clone())
        .collect()
}

#[test]
fn records_made_before_the_link_cross_on_request_once_through_a_kill() {
    let edge = Instance::init("edge");
    let hub = Instance::init("hub");
    let mut edge_server = edge.serve();
    let _hub_server = hub.serve();
    // Records that exist before any definitions: nothing captures them.
    for n in 0..40 {
        edge.ok(&[
            "record",
            "create",
            "sc_req_item",
            &format!("short_description=old request {n}"),
            &format!("state={}", n % 3),
        ]);
    }
    link_edge_hub(&edge, &hub);
    assert!(queue_items(&edge, "outbound").is_empty());

    // Bad requests: each says what is wrong, and nothing is queued.
    let refused = edge.fails(&["remote", "load", "hub", "--event", "nope"]);
    assert!(
        refused.contains("no outbound flow sends process event `nope` to `hub`"),
        "{refused}"
    );
    let refused = edge.fails(&["remote", "load", "hub", "--query", "state=^^"]);
    assert!(
        refused.contains("the load's query does not parse"),
        "{refused}"
    );
    let refused = edge.fails(&["remote", "load", "hub", "--cancel"]);
    assert!(refused.contains("no load to `hub` is running"), "{refused}");
    edge.ok(&["remote", "disable", "hub"]);
    let refused = edge.fails(&["remote", "load", "hub"]);
    assert!(
        refused.contains("not Active") && refused.contains("remote validate hub"),
        "{refused}"
    );
    edge.ok(&["remote", "validate", "hub"]);
    assert!(queue_items(&edge, "outbound").is_empty());

    // One record per batch, and the edge killed while it loads.
    edge.ok(&["property", "set", "load.batch", "1"]);
    let started = edge.json(&["remote", "load", "hub", "--no-wait", "--json"]);
    assert_eq!(started["state"], "running", "{started}");
    assert_eq!(started["total"], 40);
    let refused = edge.fails(&["remote", "load", "hub"]);
    assert!(refused.contains("already running"), "{refused}");
    // Killed mid-load (each batch is one durable commit): the place was
    // stored with each batch, so the restarted edge goes on from there.
    std::thread::sleep(Duration::from_millis(20));
    edge_server.kill9();
    let _edge_server = edge.serve();
    wait_for(
        &[&edge, &hub],
        "the load to end and every record to reach the hub",
        Duration::from_secs(60),
        || {
            edge.json(&["remote", "show", "hub", "--json"])["load"]
                .as_str()
                .is_some_and(|l| l.starts_with("done"))
                && records(&hub).len() >= 40
                && queue_items(&edge, "outbound")
                    .iter()
                    .all(|i| i["status"] == "Processed")
        },
    );
    // Each record crossed once, with its fields.
    let on_hub = records(&hub);
    assert_eq!(on_hub.len(), 40, "no duplicates");
    let names: BTreeSet<String> = on_hub
        .iter()
        .map(|r| r["short_description"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 40);
    assert!(names.contains("old request 17"));
    assert_eq!(queue_items(&edge, "outbound").len(), 40);
    let shown = edge.ok(&["remote", "show", "hub"]);
    assert!(
        shown.contains("done: 40 of 40 records looked at, 40 queued"),
        "{shown}"
    );
    let stats = edge.json(&["stats", "--json"]);
    assert!(
        stats["remote_systems"][0]["load"]
            .as_str()
            .unwrap()
            .starts_with("done"),
        "{stats}"
    );

    // A load limited by a query sends only those, after the records'
    // earlier items; a later change of a record follows its load item.
    let again = edge.ok(&["remote", "load", "hub", "--query", "state=2"]);
    assert!(
        again.contains("done: 40 of 40 records looked at, 13 queued"),
        "{again}"
    );
    wait_for(
        &[&edge, &hub],
        "the second load to be applied",
        Duration::from_secs(30),
        || {
            queue_items(&edge, "outbound")
                .iter()
                .all(|i| i["status"] == "Processed")
        },
    );
    assert_eq!(
        records(&hub).len(),
        40,
        "a second load updates, never copies"
    );

    // A load the hub stops taking (it refuses the edge's items) goes no
    // further than a few batches ahead of what was acknowledged, so it is
    // still running when cancelled; what it queued stays queued.
    hub.ok(&["remote", "disable", "edge"]);
    let started = edge.json(&["remote", "load", "hub", "--no-wait", "--json"]);
    assert_eq!(started["state"], "running", "{started}");
    let cancelled = edge.json(&["remote", "load", "hub", "--json", "--cancel"]);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let shown = edge.ok(&["remote", "show", "hub"]);
    assert!(shown.contains("cancelled"), "{shown}");
    let queued: u64 = shown
        .lines()
        .find(|l| l.starts_with("load"))
        .and_then(|l| l.split(", ").last())
        .and_then(|l| l.trim_end_matches(" queued").parse().ok())
        .unwrap();
    assert!(queued < 40, "cancelled before the end: {shown}");
    let refused = edge.fails(&["remote", "load", "hub", "--cancel"]);
    assert!(refused.contains("no load to `hub` is running"), "{refused}");
}

/// `instance`'s definitions with `number` captured and, when `matching`,
/// its inbound flow matching records on it.
fn capture_number(instance: &Instance, matching: bool) {
    let exported = instance.ok(&["export"]).replace(
        "    \"priority\",\n]",
        "    \"priority\",\n    \"number\",\n]",
    );
    assert!(exported.contains("\"number\""), "{exported}");
    let (head, tail) = exported.rsplit_once("table = \"sc_req_item\"\n").unwrap();
    let extra = if matching {
        "match_on = [\"number\"]\n"
    } else {
        ""
    };
    let file = instance.file(
        "number.toml",
        &format!("{head}table = \"sc_req_item\"\n{extra}{tail}"),
    );
    instance.ok(&["apply", file.to_str().unwrap()]);
}

#[test]
fn a_load_between_instances_holding_copies_matches_them_on_key_fields() {
    let edge = Instance::init("edge");
    let hub = Instance::init("hub");
    let _edge_server = edge.serve();
    let _hub_server = hub.serve();
    // 1,000 records both sides already hold (same number), 1,000 only
    // the edge.
    let line = |n: u32| {
        format!("{{\"number\": \"RITM{n:05}\", \"short_description\": \"request {n}\"}}\n")
    };
    let both: String = (0..1000).map(line).collect();
    let edge_only: String = (1000..2000).map(line).collect();
    let file = edge.file("records.jsonl", &format!("{both}{edge_only}"));
    edge.ok(&["record", "import", "sc_req_item", file.to_str().unwrap()]);
    let file = hub.file("records.jsonl", &both);
    hub.ok(&["record", "import", "sc_req_item", file.to_str().unwrap()]);
    link_edge_hub(&edge, &hub);
    // The hub matches on a field the edge does not send yet: the item
    // says so and waits, nothing is created.
    capture_number(&hub, true);
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=no number",
    ]);
    wait_for(
        &[&edge, &hub],
        "the item without a number in Error",
        Duration::from_secs(30),
        || {
            queue_items(&hub, "inbound")
                .iter()
                .any(|i| i["status"] == "Error")
        },
    );
    let held = queue_items(&hub, "inbound").remove(0);
    let error = held["error"].as_str().unwrap();
    assert!(
        error.contains("matches records on `number`, which the payload does not carry"),
        "{error}"
    );
    assert_eq!(records(&hub).len(), 1000);
    hub.ok(&["queue", "inbound", "skip", &held["id"].to_string()]);

    capture_number(&edge, false);
    edge.ok(&["remote", "validate", "hub"]);
    hub.ok(&["remote", "validate", "edge"]);
    edge.ok(&["remote", "load", "hub"]);
    wait_for(
        &[&edge, &hub],
        "the load applied on the hub",
        Duration::from_secs(120),
        || hub.json(&["stats", "--json"])["inbound"]["processed"] == 2001,
    );
    // 2,001 records here now (the 1,000 copies matched, 1,001 new), each
    // once, and every one correlated with the edge's.
    let on_hub = records(&hub);
    assert_eq!(on_hub.len(), 2001, "no duplicates");
    let numbers: BTreeSet<&str> = on_hub.iter().filter_map(|r| r["number"].as_str()).collect();
    assert_eq!(numbers.len(), 2000);
    let correlations = hub.json(&["correlation", "list", "--remote", "edge", "--json"]);
    let peers: BTreeSet<&str> = correlations
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["remote_correlation_id"].as_str())
        .filter(|id| !id.is_empty())
        .collect();
    assert_eq!(peers.len(), 2001, "every record is correlated once");
}

#[test]
fn a_load_brings_each_record_with_its_comments_and_attachments_per_the_capture() {
    let edge = Instance::init("edge");
    let hub = Instance::init("hub");
    let _edge_server = edge.serve();
    let _hub_server = hub.serve();
    // A record with a comment and a file, made before any definitions.
    let sys_id = edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=with a manual",
    ]);
    let sys_id = sys_id.trim();
    edge.ok(&[
        "journal",
        "add",
        "sc_req_item",
        sys_id,
        "comments",
        "see the manual",
    ]);
    let bytes: Vec<u8> = (0..300_000u32).map(|n| (n % 251) as u8).collect();
    let file = edge.path().join("manual.pdf");
    std::fs::write(&file, &bytes).unwrap();
    edge.ok(&[
        "attachment",
        "add",
        "sc_req_item",
        sys_id,
        file.to_str().unwrap(),
    ]);
    crate::support::link_all_with(
        &[
            crate::support::Peer {
                name: "edge",
                instance: &edge,
            },
            crate::support::Peer {
                name: "hub",
                instance: &hub,
            },
        ],
        &[(0, 1)],
        crate::support::Extras {
            capture: "include_attachments = true",
            inbound: "",
        },
    );
    edge.ok(&["remote", "load", "hub"]);
    let hub_copy = || {
        hub.json(&["record", "list", "sc_req_item", "--json"])
            .as_array()
            .unwrap()
            .first()
            .map(|r| r["fields"]["sys_id"].as_str().unwrap().to_string())
    };
    wait_for(
        &[&edge, &hub],
        "the record with its file on the hub",
        Duration::from_secs(60),
        || {
            hub_copy().is_some_and(|id| {
                hub.json(&["attachment", "list", "sc_req_item", &id, "--json"])
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            })
        },
    );
    let id = hub_copy().unwrap();
    let held = hub.json(&["record", "get", "sc_req_item", &id, "--json"]);
    let comments: Vec<&str> = held["journal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["field"] == "comments")
        .filter_map(|j| j["text"].as_str())
        .collect();
    assert_eq!(comments, ["see the manual"], "{held}");
    let attached = hub.json(&["attachment", "list", "sc_req_item", &id, "--json"]);
    assert_eq!(attached[0]["file_name"], "manual.pdf", "{attached}");
    assert_eq!(attached[0]["size"], bytes.len(), "{attached}");
    assert_eq!(
        attached[0]["hash"],
        blake3::hash(&bytes).to_hex().as_str(),
        "{attached}"
    );
}
