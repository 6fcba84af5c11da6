//! Peer sync between real `serve` processes over pinned mutual TLS.

use std::time::Duration;

use serde_json::Value;

use crate::support::{
    Extras, Instance, Peer, crafted_item, impersonate, link, linked_pair, send_items,
    send_unknown_event, wait_for, wait_until,
};

fn records(instance: &Instance, query: &str) -> Vec<Value> {
    instance
        .json(&["record", "list", "sc_req_item", "--query", query, "--json"])
        .as_array()
        .unwrap()
        .clone()
}

fn items(instance: &Instance, queue: &str) -> Vec<Value> {
    crate::support::queue_items(instance, queue)
}

#[test]
fn a_change_travels_to_the_hub_and_the_answer_comes_back_without_echo() {
    let (edge, hub, _edge_server, _hub_server) = linked_pair(Extras::default());
    let remotes = edge.json(&["remote", "list", "--json"]);
    assert_eq!(remotes[0]["outbound_state"], "Active");
    assert_eq!(remotes[0]["inbound_state"], "Active");

    let sys_id = edge
        .ok(&[
            "record",
            "create",
            "sc_req_item",
            "short_description=Need Visio",
            "state=1",
            "priority=2",
        ])
        .trim()
        .to_string();
    edge.ok(&[
        "journal",
        "add",
        "sc_req_item",
        &sys_id,
        "comments",
        "For the new hire",
    ]);
    wait_for(
        &[&edge, &hub],
        "the request to reach the hub",
        Duration::from_secs(30),
        || records(&hub, "short_description=Need Visio").len() == 1,
    );
    let arrived = &records(&hub, "short_description=Need Visio")[0];
    assert_eq!(arrived["fields"]["state"], "1");
    assert_eq!(arrived["fields"]["priority"], "2");
    assert_eq!(
        arrived["fields"]["sys_created_by"], "edge_runas",
        "inbound flows run as the run-as user"
    );
    let hub_id = arrived["fields"]["sys_id"].as_str().unwrap().to_string();
    wait_until(
        "the comment to reach the hub",
        Duration::from_secs(30),
        || {
            let record = hub.json(&["record", "get", "sc_req_item", &hub_id, "--json"]);
            record["journal"].as_array().unwrap().len() == 1
        },
    );
    let hub_journal =
        hub.json(&["record", "get", "sc_req_item", &hub_id, "--json"])["journal"][0].clone();
    let edge_journal =
        edge.json(&["record", "get", "sc_req_item", &sys_id, "--json"])["journal"][0].clone();
    assert_eq!(
        hub_journal["author"], "admin",
        "the original author travels"
    );
    assert_eq!(
        hub_journal["time"], edge_journal["time"],
        "and the original time"
    );
    assert_eq!(hub_journal["id"], edge_journal["id"], "and the entry id");
    assert_eq!(hub_journal["text"], "For the new hire");

    // The edge's items are Processed once the hub acknowledged them.
    wait_until(
        "the edge's items to be Processed",
        Duration::from_secs(30),
        || {
            items(&edge, "outbound")
                .iter()
                .all(|i| i["status"] == "Processed")
        },
    );
    let inbound = items(&hub, "inbound");
    assert_eq!(inbound.len(), 2);
    assert!(
        inbound.iter().all(|i| i["status"] == "Processed"),
        "{inbound:?}"
    );
    assert_eq!(inbound[0]["sequence"], 1);
    assert_eq!(inbound[0]["operation"], "create");
    assert_eq!(inbound[0]["remote_correlation_id"], sys_id.as_str());
    assert_eq!(inbound[0]["local_correlation_id"], hub_id.as_str());
    let correlations = hub.json(&["correlation", "list", "--json"]);
    assert_eq!(correlations[0]["local_correlation_id"], hub_id.as_str());
    assert_eq!(correlations[0]["remote_correlation_id"], sys_id.as_str());
    assert_eq!(correlations[0]["state"], "Active");
    // Applying the edge's change queued nothing back to the edge.
    assert!(
        items(&hub, "outbound").is_empty(),
        "echo: {:?}",
        items(&hub, "outbound")
    );

    // The hub fulfils the request; the state comes back to the same record.
    hub.ok(&["record", "update", "sc_req_item", &hub_id, "state=3"]);
    wait_until(
        "the new state to reach the edge",
        Duration::from_secs(30),
        || {
            edge.json(&["record", "get", "sc_req_item", &sys_id, "--json"])["fields"]["state"]
                == "3"
        },
    );
    assert_eq!(
        records(&edge, "").len(),
        1,
        "the update correlated to the original record"
    );
    let edge_correlations = edge.json(&["correlation", "list", "--json"]);
    assert_eq!(
        edge_correlations[0]["remote_correlation_id"],
        hub_id.as_str()
    );
    // No echo: the edge did not send the hub's change back.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        items(&edge, "outbound").len(),
        2,
        "{:?}",
        items(&edge, "outbound")
    );
    let health = edge.json(&["remote", "show", "hub", "--json"]);
    assert_eq!(health["health"], "Up", "{health}");
}

#[test]
fn a_wrong_fingerprint_or_token_is_refused() {
    let (edge, hub, _edge_server, _hub_server) = linked_pair(Extras::default());

    // The edge pins a different certificate for the hub.
    let other = Instance::init("impostor");
    let text =
        crate::support::sync_definitions("hub", &hub.peer_endpoint(), &other.fingerprint, "");
    let file = edge.file("wrong.toml", &text);
    edge.ok(&["apply", file.to_str().unwrap()]);
    let err = edge.fails(&["remote", "validate", "hub"]);
    assert!(err.contains("pins") || err.contains("certificate"), "{err}");
    let remotes = edge.json(&["remote", "list", "--json"]);
    assert_eq!(remotes[0]["outbound_state"], "Disabled");

    // A wrong token: the hub refuses and says why.
    // The right pin but records that do not point at each other.
    let text = crate::support::sync_definitions(
        "hub",
        &hub.peer_endpoint(),
        &hub.fingerprint,
        "0123456789abcdef0123456789abcdef",
    );
    let file = edge.file("wrong-external-id.toml", &text);
    edge.ok(&["apply", file.to_str().unwrap()]);
    let err = edge.fails(&["remote", "validate", "hub"]);
    assert!(
        err.contains("external_id `0123456789abcdef0123456789abcdef` is not the sys_id"),
        "{err}"
    );

    let text = crate::support::sync_definitions("hub", &hub.peer_endpoint(), &hub.fingerprint, "");
    let file = edge.file("right.toml", &text);
    edge.ok(&["apply", file.to_str().unwrap()]);
    edge.ok(&["remote", "token", "hub", "pst_wrong"]);
    let err = edge.fails(&["remote", "validate", "hub"]);
    assert!(err.contains("token"), "{err}");
    assert!(hub.logs().contains("Refused a peer call"), "{}", hub.logs());
}

fn all_processed(instance: &Instance, queue: &str) -> bool {
    let items = items(instance, queue);
    !items.is_empty() && items.iter().all(|i| i["status"] == "Processed")
}

#[test]
fn a_peer_down_for_a_while_gets_everything_in_order_exactly_once() {
    let (edge, hub, _edge_server, mut hub_server) = linked_pair(Extras::default());
    edge.fast_retries();

    hub_server.stop();
    let mut ids = Vec::new();
    for n in 0..10 {
        let id = edge
            .ok(&[
                "record",
                "create",
                "sc_req_item",
                &format!("short_description=req {n}"),
                "state=1",
            ])
            .trim()
            .to_string();
        edge.ok(&["record", "update", "sc_req_item", &id, "state=2"]);
        edge.ok(&[
            "record",
            "update",
            "sc_req_item",
            &id,
            &format!("state={}", 10 + n),
        ]);
        ids.push(id);
    }
    wait_for(
        &[&edge],
        "the edge to notice the hub is down",
        Duration::from_secs(30),
        || {
            // The first failure may be the stream the hub closed as it
            // stopped; the retries after it cannot connect.
            let remote = edge.json(&["remote", "show", "hub", "--json"]);
            remote["health"] == "Down"
                && remote["attempts"].as_u64().unwrap_or(0) >= 1
                && remote["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("connect"))
        },
    );
    assert!(
        items(&edge, "outbound")
            .iter()
            .all(|i| i["status"] == "Ready")
    );
    let remote = edge.json(&["remote", "show", "hub", "--json"]);
    assert!(
        remote["last_error"].as_str().unwrap().contains("connect"),
        "{remote}"
    );
    assert_eq!(
        remote["next_attempt_on"].as_str().unwrap().len(),
        19,
        "{remote}"
    );

    let _hub_server = hub.serve();
    wait_for(
        &[&edge, &hub],
        "everything to be delivered",
        Duration::from_secs(60),
        || {
            all_processed(&edge, "outbound")
                && items(&hub, "inbound").len() == 30
                && all_processed(&hub, "inbound")
        },
    );
    let inbound = items(&hub, "inbound");
    let sequences: Vec<u64> = inbound
        .iter()
        .map(|i| i["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sequences,
        (1..=30).collect::<Vec<_>>(),
        "in order, exactly once"
    );
    for (n, id) in ids.iter().enumerate() {
        let found = records(&hub, &format!("short_description=req {n}"));
        assert_eq!(found.len(), 1, "one hub record for {id}");
        assert_eq!(
            found[0]["fields"]["state"],
            format!("{}", 10 + n),
            "the last update won"
        );
    }
    let remote = edge.json(&["remote", "show", "hub", "--json"]);
    assert_eq!(remote["outbound_state"], "Active");
    assert_eq!(remote["attempts"], 0);
}

#[test]
fn exhausted_retries_put_the_remote_in_error_run_its_subflow_and_it_recovers_by_itself() {
    let (edge, hub, _edge_server, mut hub_server) = linked_pair(Extras::default());
    edge.fast_retries();
    edge.ok(&["property", "set", "retry.times", "2"]);

    // The hub's error subflow: a log event, a webhook, a command.
    let (webhook, bodies) = crate::support::webhook_receiver();
    let marker = edge.path().join("subflow.env");
    let subflow = format!(
        "error_subflow = [{{ action = \"log\" }}, {{ action = \"webhook\", url = \"http://{webhook}/alerts\" }}, {{ action = \"command\", command = \"/bin/sh\", args = [\"-c\", \"env | grep ^PROCSYNC_ > {}\"] }}]\n",
        marker.display()
    );
    let exported = edge.ok(&["export"]);
    assert!(exported.contains("run_as = \"hub_runas\"\n"), "{exported}");
    let with_subflow = exported.replace(
        "run_as = \"hub_runas\"\n",
        &format!("run_as = \"hub_runas\"\n{subflow}"),
    );
    let file = edge.file("subflow.toml", &with_subflow);
    let out = edge.ok(&["apply", file.to_str().unwrap()]);
    assert!(out.contains("changed remote_system `hub`"), "{out}");
    assert_eq!(
        edge.json(&["remote", "show", "hub", "--json"])["outbound_state"],
        "Active"
    );

    hub_server.stop();
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=while down",
        "state=1",
    ]);
    wait_for(
        &[&edge],
        "the outbound state to become Error",
        Duration::from_secs(60),
        || edge.json(&["remote", "show", "hub", "--json"])["outbound_state"] == "Error",
    );
    assert!(
        edge.logs().contains("Retries are exhausted"),
        "{}",
        edge.logs()
    );
    assert!(
        edge.logs().contains("Error subflow: hub needs attention"),
        "{}",
        edge.logs()
    );
    let body: Value =
        serde_json::from_str(&bodies.recv_timeout(Duration::from_secs(30)).unwrap()).unwrap();
    assert_eq!(body["kind"], "remote_system_error");
    assert_eq!(body["remote_system"], "hub");
    assert_eq!(body["instance"], "edge");
    assert_eq!(body["attempts"], 3);
    assert!(
        body["error"].as_str().unwrap().contains("connect"),
        "{body}"
    );
    wait_until("the command step to run", Duration::from_secs(30), || {
        std::fs::read_to_string(&marker).is_ok_and(|env| env.contains("PROCSYNC_TIME"))
    });
    let env = std::fs::read_to_string(&marker).unwrap();
    assert!(
        env.contains("PROCSYNC_REMOTE_SYSTEM=hub") && env.contains("PROCSYNC_ATTEMPTS=3"),
        "{env}"
    );
    let queued = items(&edge, "outbound");
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0]["status"], "Ready", "items stay queued");

    let _hub_server = hub.serve();
    wait_for(
        &[&edge, &hub],
        "recovery and delivery",
        Duration::from_secs(60),
        || {
            all_processed(&edge, "outbound")
                && records(&hub, "short_description=while down").len() == 1
        },
    );
    let remote = edge.json(&["remote", "show", "hub", "--json"]);
    assert_eq!(remote["outbound_state"], "Active", "{remote}");
}

/// Writes on the edge until `stop`: each record is created, then updated
/// twice; reconnects after the edge restarts.
fn edge_writer(
    edge_dir: std::path::PathBuf,
    token: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    use procsync::record::{Operation, RecordWrite};
    use procsync::transport::client::{AdminClient, Target};
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(address) = std::fs::read_to_string(edge_dir.join("admin.addr")) else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let target = Target {
                    address: address.trim().to_string(),
                    token: token.clone(),
                    tls_cert_pem: None,
                };
                let Ok(mut client) = AdminClient::connect(&target).await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let write = |operation, sys_id: Option<String>, state: &str| RecordWrite {
                        attachments: Default::default(),
                        operation,
                        table: "sc_req_item".to_string(),
                        sys_id,
                        fields: [
                            ("short_description".to_string(), format!("kill test {n}")),
                            ("state".to_string(), state.to_string()),
                        ]
                        .into_iter()
                        .collect(),
                        journal: Vec::new(),
                    };
                    let Ok(created) = client
                        .write_records(vec![write(Operation::Create, None, "1")])
                        .await
                    else {
                        break;
                    };
                    let id = created[0].sys_id.clone();
                    if client
                        .write_records(vec![write(Operation::Update, Some(id.clone()), "2")])
                        .await
                        .is_err()
                    {
                        break;
                    }
                    if client
                        .write_records(vec![write(Operation::Update, Some(id), "3")])
                        .await
                        .is_err()
                    {
                        break;
                    }
                    n += 1;
                }
            }
            n
        })
    })
}

#[test]
fn sigkill_of_sender_and_receiver_mid_stream_delivers_every_change_exactly_once_in_order() {
    let (edge, hub, mut edge_server, mut hub_server) = linked_pair(Extras::default());
    edge.fast_retries();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = edge_writer(edge.path().to_path_buf(), edge.token(), stop.clone());
    for round in 0..6 {
        let before = items(&hub, "inbound").len();
        wait_for(
            &[&edge, &hub],
            "items to be flowing",
            Duration::from_secs(60),
            || items(&hub, "inbound").len() >= before + 20,
        );
        if round % 2 == 0 {
            edge_server.kill9();
            edge_server = edge.serve();
        } else {
            hub_server.kill9();
            hub_server = hub.serve();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let completed = writer.join().unwrap();
    assert!(completed >= 20, "only {completed} records were written");

    wait_for(
        &[&edge, &hub],
        "everything to be delivered",
        Duration::from_secs(90),
        || {
            all_processed(&edge, "outbound")
                && items(&hub, "inbound").len() == items(&edge, "outbound").len()
                && all_processed(&hub, "inbound")
        },
    );
    let outbound = items(&edge, "outbound");
    let inbound = items(&hub, "inbound");
    let mut sequences: Vec<u64> = inbound
        .iter()
        .map(|i| i["sequence"].as_u64().unwrap())
        .collect();
    sequences.sort();
    assert_eq!(
        sequences,
        (1..=outbound.len() as u64).collect::<Vec<_>>(),
        "every item exactly once"
    );
    // Per record: the hub holds exactly one correlated record whose state
    // is the edge's. (A create that committed just before a kill was never
    // acknowledged, so the writer made another record with the same
    // description: records are told apart by correlation, not by text.)
    let edge_records = records(&edge, "");
    let hub_records = records(&hub, "");
    assert_eq!(edge_records.len(), hub_records.len());
    let correlations = hub.json(&["correlation", "list", "--json"]);
    let correlations = correlations.as_array().unwrap();
    for record in &edge_records {
        let edge_id = record["fields"]["sys_id"].as_str().unwrap();
        let links: Vec<&Value> = correlations
            .iter()
            .filter(|c| c["remote_correlation_id"] == edge_id)
            .collect();
        assert_eq!(
            links.len(),
            1,
            "edge record {edge_id} must be correlated once at the hub"
        );
        let hub_id = links[0]["local_correlation_id"].as_str().unwrap();
        let copy = hub_records
            .iter()
            .find(|r| r["fields"]["sys_id"] == hub_id)
            .expect("the correlated record exists");
        assert_eq!(
            copy["fields"]["state"], record["fields"]["state"],
            "{edge_id}: per-record order kept"
        );
        assert_eq!(
            copy["fields"]["short_description"],
            record["fields"]["short_description"]
        );
    }
    // Items of one record arrived in the order they were made.
    let mut last: std::collections::HashMap<String, u64> = Default::default();
    for item in &inbound {
        let record = item["remote_correlation_id"].as_str().unwrap().to_string();
        let sequence = item["sequence"].as_u64().unwrap();
        let previous = last.insert(record, sequence).unwrap_or(0);
        assert!(
            previous < sequence,
            "an item overtook an earlier one of its record"
        );
    }
}

#[test]
fn a_chain_passes_changes_along_and_never_echoes() {
    let a = Instance::init("a");
    let b = Instance::init("b");
    let c = Instance::init("c");
    let _servers = [a.serve(), b.serve(), c.serve()];
    crate::support::link_all(
        &[
            Peer {
                name: "a",
                instance: &a,
            },
            Peer {
                name: "b",
                instance: &b,
            },
            Peer {
                name: "c",
                instance: &c,
            },
        ],
        &[(0, 1), (1, 2)],
    );
    let a_id = a
        .ok(&[
            "record",
            "create",
            "sc_req_item",
            "short_description=chain",
            "state=1",
        ])
        .trim()
        .to_string();
    wait_for(
        &[&a, &b, &c],
        "the change to reach c through b",
        Duration::from_secs(30),
        || records(&c, "short_description=chain").len() == 1,
    );
    // b sent it on to c but not back to a.
    let b_out = items(&b, "outbound");
    assert_eq!(b_out.len(), 1, "{b_out:?}");
    assert_eq!(b_out[0]["remote_system"], "c");

    // c changes it; the change reaches a through b, and goes back nowhere.
    let c_id = records(&c, "")[0]["fields"]["sys_id"]
        .as_str()
        .unwrap()
        .to_string();
    c.ok(&["record", "update", "sc_req_item", &c_id, "state=7"]);
    wait_for(
        &[&a, &b, &c],
        "the change to come back to a",
        Duration::from_secs(30),
        || a.json(&["record", "get", "sc_req_item", &a_id, "--json"])["fields"]["state"] == "7",
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(records(&a, "").len(), 1);
    assert_eq!(records(&b, "").len(), 1);
    assert_eq!(records(&c, "").len(), 1);
    let b_out = items(&b, "outbound");
    assert_eq!(b_out.len(), 2, "{b_out:?}");
    assert_eq!(b_out[1]["remote_system"], "a");
    assert_eq!(
        items(&a, "outbound").len(),
        1,
        "a does not echo c's change back to b"
    );
    assert_eq!(items(&c, "outbound").len(), 1, "c sent only its own change");
}

#[test]
fn both_sides_create_and_update_at_once() {
    let (edge, hub, _edge_server, _hub_server) = linked_pair(Extras::default());
    for n in 0..5 {
        edge.ok(&[
            "record",
            "create",
            "sc_req_item",
            &format!("short_description=from edge {n}"),
        ]);
        hub.ok(&[
            "record",
            "create",
            "sc_req_item",
            &format!("short_description=from hub {n}"),
        ]);
    }
    wait_for(
        &[&edge, &hub],
        "both sides to hold all ten",
        Duration::from_secs(30),
        || records(&edge, "").len() == 10 && records(&hub, "").len() == 10,
    );
    wait_for(
        &[&edge, &hub],
        "all queues to drain",
        Duration::from_secs(30),
        || {
            all_processed(&edge, "outbound")
                && all_processed(&hub, "outbound")
                && all_processed(&edge, "inbound")
                && all_processed(&hub, "inbound")
        },
    );
    assert_eq!(items(&edge, "outbound").len(), 5, "no echo");
    assert_eq!(items(&hub, "outbound").len(), 5, "no echo");
}

#[test]
fn an_inbound_error_holds_back_only_its_record_and_waits_for_the_operator() {
    let edge = Instance::init("edge");
    let hub = Instance::init("hub");
    let _edge_server = edge.serve();
    let config = hub.file("server.toml", "[limits]\nmax_record_bytes = 600\n");
    let _hub_server = hub.serve_with(&["--config", config.to_str().unwrap()]);
    link(
        Peer {
            name: "edge",
            instance: &edge,
        },
        Peer {
            name: "hub",
            instance: &hub,
        },
    );

    // The hub's inbound flow runs a command when an item goes to Error.
    let marker = hub.path().join("on_error.env");
    let exported = hub.ok(&["export"]);
    let (head, tail) = exported.rsplit_once("table = \"sc_req_item\"\n").unwrap();
    let with_on_error = format!(
        "{head}table = \"sc_req_item\"\non_error = [{{ action = \"command\", command = \"/bin/sh\", args = [\"-c\", \"env | grep ^PROCSYNC_ >> {}\"] }}]\n{tail}",
        marker.display()
    );
    let file = hub.file("on_error.toml", &with_on_error);
    let out = hub.ok(&["apply", file.to_str().unwrap()]);
    assert!(
        out.contains("changed inbound_flow `Requests from edge`"),
        "{out}"
    );

    let big = format!("short_description={}", "x".repeat(800));
    let big_id = edge
        .ok(&["record", "create", "sc_req_item", &big])
        .trim()
        .to_string();
    edge.ok(&["record", "update", "sc_req_item", &big_id, "state=2"]);
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=small one",
    ]);
    wait_for(
        &[&edge, &hub],
        "the small record to arrive past the failing one",
        Duration::from_secs(30),
        || records(&hub, "short_description=small one").len() == 1,
    );
    let inbound = items(&hub, "inbound");
    assert_eq!(inbound.len(), 3);
    assert_eq!(inbound[0]["status"], "Error");
    let error = inbound[0]["error"].as_str().unwrap();
    assert!(error.contains("over the limit of 600 bytes"), "{error}");
    assert_eq!(
        inbound[1]["status"], "Ready",
        "the same record's next item waits"
    );
    assert_eq!(inbound[2]["status"], "Processed", "other records flow on");
    let errors = hub.json(&["queue", "inbound", "list", "--status", "error", "--json"]);
    assert_eq!(errors.as_array().unwrap().len(), 1);
    let shown = hub.json(&["queue", "inbound", "show", "1"]);
    assert_eq!(shown["error"], error);
    wait_until(
        "the flow's on_error step to run",
        Duration::from_secs(30),
        || std::fs::read_to_string(&marker).is_ok_and(|env| env.contains("PROCSYNC_TIME")),
    );
    let env = std::fs::read_to_string(&marker).unwrap();
    assert!(
        env.contains("PROCSYNC_EVENT=inbound_item_error") && env.contains("PROCSYNC_ITEM=1"),
        "{env}"
    );

    // Retry runs it once more; it fails again and does not loop.
    let out = hub.ok(&["queue", "inbound", "retry", "1"]);
    assert!(out.contains("is Ready"), "{out}");
    wait_for(
        &[&hub],
        "the retried item to fail again",
        Duration::from_secs(30),
        || hub.json(&["queue", "inbound", "show", "1"])["status"] == "Error",
    );
    let err = hub.fails(&["queue", "inbound", "retry", "3"]);
    assert!(err.contains("only Error items can be retried"), "{err}");

    // Skipping it lets the record's next item through; that one carries the
    // same oversized snapshot (it creates the record the skipped item did
    // not), so it fails too, and is skipped as well.
    hub.ok(&["queue", "inbound", "skip", "1"]);
    wait_for(
        &[&hub],
        "the held item to be tried",
        Duration::from_secs(30),
        || hub.json(&["queue", "inbound", "show", "2"])["status"] == "Error",
    );
    assert_eq!(
        hub.json(&["queue", "inbound", "show", "1"])["status"],
        "Skipped"
    );
    hub.ok(&["queue", "inbound", "skip", "2"]);
    // Fixed at the source, the record arrives.
    edge.ok(&[
        "record",
        "update",
        "sc_req_item",
        &big_id,
        "short_description=now small",
    ]);
    wait_for(
        &[&edge, &hub],
        "the fixed record to arrive",
        Duration::from_secs(30),
        || records(&hub, "short_description=now small").len() == 1,
    );
    let arrived = &records(&hub, "short_description=now small")[0];
    assert_eq!(arrived["fields"]["state"], "2");
    assert_eq!(
        hub.json(&["queue", "inbound", "show", "4"])["status"],
        "Processed"
    );
}

#[test]
fn an_unknown_process_event_is_queued_in_error_not_dropped() {
    let (edge, hub, _edge_server, _hub_server) = linked_pair(Extras::default());
    // The edge starts sending an event the hub has never heard of.
    send_unknown_event(&edge);
    edge.ok(&["record", "create", "incident", "short_description=printer"]);
    wait_for(
        &[&edge, &hub],
        "the item to be queued at the hub",
        Duration::from_secs(30),
        || items(&hub, "inbound").len() == 1,
    );
    let item = &items(&hub, "inbound")[0];
    assert_eq!(item["status"], "Error");
    assert!(
        item["error"]
            .as_str()
            .unwrap()
            .contains("unknown process event `incident_sync`"),
        "{item}"
    );
    // The sender's item is Processed: the hub has it, durably.
    wait_for(
        &[&edge],
        "the edge's item to be acknowledged",
        Duration::from_secs(30),
        || all_processed(&edge, "outbound"),
    );
    // Validation now names the problem.
    let err = edge.fails(&["remote", "validate", "hub"]);
    assert!(
        err.contains("process event `incident_sync` does not exist on `hub`"),
        "{err}"
    );
}

#[test]
fn inbound_flows_map_fields_and_run_sandboxed_scripts() {
    let (edge, hub, _edge_server, _hub_server) = linked_pair(Extras::default());
    let exported = hub.ok(&["export"]);
    let (head, tail) = exported.rsplit_once("table = \"sc_req_item\"\n").unwrap();
    let flow = r#"table = "sc_req_item"
map = [
    { to = "u_summary", from = "short_description" },
    { to = "state", from = "state" },
    { to = "u_source", constant = "edge office" },
]
journal_map = [{ from = "comments", to = "work_notes" }]
script = """
if payload.fields.state == "9" { skip("state 9 stays at the edge") }
if payload.fields.state == "8" { throw "state 8 needs a person" }
fields.u_note = "raised by " + payload.metadata.changed_by;
"""
"#;
    let file = hub.file("flow.toml", &format!("{head}{flow}{tail}"));
    hub.ok(&["apply", file.to_str().unwrap()]);
    let exported = hub.ok(&["export"]);
    assert!(
        exported.contains("u_summary") && exported.contains("raised by"),
        "{exported}"
    );

    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=mapped",
        "state=1",
    ]);
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=skipped",
        "state=9",
    ]);
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=refused",
        "state=8",
    ]);
    wait_for(
        &[&edge, &hub],
        "three items to be handled",
        Duration::from_secs(30),
        || {
            let items = items(&hub, "inbound");
            items.len() == 3 && items.iter().all(|i| i["status"] != "Ready")
        },
    );
    let inbound = items(&hub, "inbound");
    assert_eq!(inbound[0]["status"], "Processed");
    assert_eq!(inbound[1]["status"], "Skipped");
    assert!(
        inbound[1]["error"]
            .as_str()
            .unwrap()
            .contains("state 9 stays at the edge")
    );
    assert_eq!(inbound[2]["status"], "Error");
    assert!(
        inbound[2]["error"]
            .as_str()
            .unwrap()
            .contains("state 8 needs a person")
    );
    let hub_records = records(&hub, "");
    assert_eq!(hub_records.len(), 1);
    let fields = &hub_records[0]["fields"];
    assert_eq!(fields["u_summary"], "mapped");
    assert_eq!(fields["state"], "1");
    assert_eq!(fields["u_source"], "edge office");
    assert_eq!(fields["u_note"], "raised by admin");
    // Comments arrive as work notes, with their author.
    let edge_id = records(&edge, "short_description=mapped")[0]["fields"]["sys_id"]
        .as_str()
        .unwrap()
        .to_string();
    edge.ok(&[
        "journal",
        "add",
        "sc_req_item",
        &edge_id,
        "comments",
        "please hurry",
    ]);
    let hub_id = hub_records[0]["fields"]["sys_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(
        &[&edge, &hub],
        "the comment as a work note",
        Duration::from_secs(30),
        || {
            let journal =
                hub.json(&["record", "get", "sc_req_item", &hub_id, "--json"])["journal"].clone();
            journal.as_array().unwrap().iter().any(|j| {
                j["field"] == "work_notes" && j["text"] == "please hurry" && j["author"] == "admin"
            })
        },
    );
    assert!(
        fields.get("short_description").is_none(),
        "only mapped fields arrive"
    );

    // A script that does not compile is refused at validate time, with its line.
    let bad =
        format!("{head}table = \"sc_req_item\"\nscript = \"\"\"\nfields.x = \n\"\"\"\n{tail}");
    let file = hub.file("bad.toml", &bad);
    let err = hub.fails(&["config", "validate", file.to_str().unwrap()]);
    assert!(err.contains("script does not compile"), "{err}");
}

#[test]
fn the_peer_refusing_our_certificate_and_disabling_are_reported() {
    let (edge, hub, _edge_server, _hub_server) = linked_pair(Extras::default());

    // Disable: both states go to Disabled and the dispatcher stops.
    let out = edge.ok(&["remote", "disable", "hub"]);
    assert!(out.contains("outbound Disabled, inbound Disabled"), "{out}");
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=held while disabled",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(items(&edge, "outbound")[0]["status"], "Ready");
    assert!(records(&hub, "").is_empty());
    edge.ok(&["remote", "validate", "hub"]);
    wait_for(
        &[&edge, &hub],
        "delivery after validating again",
        Duration::from_secs(30),
        || records(&hub, "").len() == 1,
    );

    // The hub now pins some other certificate for the edge: the hub refuses
    // the edge, logs why, and the edge's validation says so.
    let other = Instance::init("impostor");
    let exported = hub.ok(&["export"]);
    let wrong = exported.replace(&edge.fingerprint, &other.fingerprint);
    let file = hub.file("wrong-pin.toml", &wrong);
    hub.ok(&["apply", file.to_str().unwrap()]);
    let err = edge.fails(&["remote", "validate", "hub"]);
    assert!(
        err.contains("must pin") && err.contains(&edge.fingerprint),
        "{err}"
    );
    wait_until(
        "the hub to log the refusal",
        Duration::from_secs(10),
        || {
            hub.logs()
                .contains("Refused a peer connection: its certificate matches no remote system")
        },
    );
}

#[test]
fn a_revoked_token_stays_in_error_until_validated_again() {
    let (edge, hub, _edge_server, _hub_server) = linked_pair(Extras::default());
    edge.fast_retries();

    // The hub rotates the edge's token; the edge still sends the old one.
    let new_token = hub.ok(&["user", "token", "edge_api"]).trim().to_string();
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=after rotation",
    ]);
    wait_for(
        &[&edge, &hub],
        "the edge to be refused",
        Duration::from_secs(30),
        || edge.json(&["remote", "show", "hub", "--json"])["outbound_state"] == "Error",
    );
    let remote = edge.json(&["remote", "show", "hub", "--json"]);
    assert!(
        remote["last_error"].as_str().unwrap().contains("token"),
        "{remote}"
    );
    // Credentials do not fix themselves: it stays in Error, the item queued.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        edge.json(&["remote", "show", "hub", "--json"])["outbound_state"],
        "Error"
    );
    assert_eq!(items(&edge, "outbound")[0]["status"], "Ready");

    edge.ok(&["remote", "token", "hub", &new_token]);
    edge.ok(&["remote", "validate", "hub"]);
    wait_for(
        &[&edge, &hub],
        "delivery after validation",
        Duration::from_secs(30),
        || records(&hub, "short_description=after rotation").len() == 1,
    );
}

#[test]
fn a_stuck_peer_is_detected_by_heartbeats_and_recovers() {
    let (edge, hub, _edge_server, hub_server) = linked_pair(Extras::default());
    edge.fast_retries();
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=before",
    ]);
    wait_for(
        &[&edge, &hub],
        "the first delivery",
        Duration::from_secs(30),
        || records(&hub, "").len() == 1,
    );
    // Freeze the hub: its socket stays open but nothing answers.
    let pid = hub_server.pid().to_string();
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    edge.ok(&["property", "set", "heartbeat.slow_ms", "300"]);
    wait_for(
        &[&edge],
        "the edge to see the hub Slow",
        Duration::from_secs(30),
        || edge.json(&["remote", "show", "hub", "--json"])["health"] == "Slow",
    );
    wait_for(
        &[&edge],
        "the edge to see the hub Down",
        Duration::from_secs(30),
        || {
            let remote = edge.json(&["remote", "show", "hub", "--json"]);
            remote["health"] == "Down"
                && remote["last_error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("heartbeat")
        },
    );
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=while stuck",
    ]);
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();
    wait_for(
        &[&edge, &hub],
        "delivery after the hub thaws",
        Duration::from_secs(60),
        || records(&hub, "short_description=while stuck").len() == 1,
    );
    wait_for(
        &[&edge],
        "the edge to see the hub Up",
        Duration::from_secs(30),
        || edge.json(&["remote", "show", "hub", "--json"])["health"] == "Up",
    );
}

/// A hand-made peer: the edge's own identity, driven directly, to send
/// what a well-behaved procsync never would.
#[test]
fn malformed_payloads_and_replayed_sequences_are_handled_at_the_receiver() {
    let (edge, hub, mut edge_server, _hub_server) = linked_pair(Extras::default());
    // Stop the real edge and borrow its identity and token.
    edge_server.stop();
    let target = impersonate(&edge, "hub", &hub);
    let good = r#"{"capture_metadata":{"changed_by":"x","timestamp":"2026-11-27 12:00:00","operation":"create","table":"sc_req_item","sys_id":"a","process_event":"software_request"},"changed_fields":[{"key":"short_description","value":"crafted","display_value":"crafted","changed":true}],"journal_entries":[]}"#;
    let acks = send_items(
        &target,
        vec![
            crafted_item(1, "{this is not json", Vec::new()),
            crafted_item(2, good, Vec::new()),
            crafted_item(2, good, Vec::new()),
            crafted_item(1, good, Vec::new()),
        ],
    );
    assert_eq!(
        acks,
        [1, 2, 2, 1],
        "duplicates are acknowledged too, so the sender stops resending"
    );
    wait_for(
        &[&hub],
        "the crafted record",
        Duration::from_secs(30),
        || records(&hub, "short_description=crafted").len() == 1,
    );
    let inbound = items(&hub, "inbound");
    assert_eq!(
        inbound.len(),
        2,
        "each sequence is queued once, ever: {inbound:?}"
    );
    assert_eq!(inbound[0]["status"], "Error");
    assert!(
        inbound[0]["error"]
            .as_str()
            .unwrap()
            .contains("malformed payload"),
        "{}",
        inbound[0]
    );
    assert_eq!(inbound[1]["status"], "Processed");

    // Payloads in their binary form (protocol 2): garbage is refused with
    // the reason and kept; a good one is applied and shown as JSON.
    let mut garbage = crafted_item(3, "", Vec::new());
    garbage.payload = procsync::queue::EncodedPayload::Binary(vec![0xff, 0x07, 0x01].into());
    let mut binary = crafted_item(4, "", Vec::new());
    binary.payload = procsync::queue::EncodedPayload::from_text(good.replace("crafted", "binary"));
    assert!(matches!(
        binary.payload,
        procsync::queue::EncodedPayload::Binary(_)
    ));
    assert_eq!(send_items(&target, vec![garbage, binary]), [3, 4]);
    wait_for(
        &[&hub],
        "the record from the binary payload",
        Duration::from_secs(30),
        || records(&hub, "short_description=binary").len() == 1,
    );
    let inbound = items(&hub, "inbound");
    let by_sequence = |sequence: u64| {
        inbound
            .iter()
            .find(|i| i["sequence"] == sequence)
            .unwrap_or_else(|| panic!("no item {sequence}: {inbound:?}"))
    };
    let refused = by_sequence(3);
    assert_eq!(refused["status"], "Error");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("malformed payload: the payload is not a valid Payload message"),
        "{refused}"
    );
    let shown = hub.json(&[
        "queue",
        "inbound",
        "show",
        &by_sequence(4)["id"].to_string(),
    ]);
    assert_eq!(shown["status"], "Processed");
    assert_eq!(
        shown["payload"]["changed_fields"][0]["value"], "binary",
        "{shown}"
    );
    // The hub is still up and serving.
    hub.ok(&["record", "list", "sc_req_item"]);
}
