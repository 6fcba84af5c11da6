//! Operating a running instance: purging old queue items, and switching
//! debug logging on and off without a restart.

use std::time::Duration;

use serde_json::Value;

use crate::support::{
    Extras, Instance, accept_incidents, linked_pair, statuses, three_processed_two_errors, wait_for,
};

fn items(instance: &Instance, queue: &str) -> Vec<Value> {
    crate::support::queue_items(instance, queue)
}

#[test]
fn old_processed_and_skipped_items_are_purged_and_ready_and_error_items_never_are() {
    let (edge, hub, _e, _h) = linked_pair(Extras::default());
    three_processed_two_errors(&edge, &hub);
    let first_error = items(&hub, "inbound")
        .iter()
        .find(|i| i["status"] == "Error")
        .unwrap()["id"]
        .to_string();
    hub.ok(&["queue", "inbound", "skip", &first_error]);
    wait_for(
        &[&edge],
        "the edge's items to be acknowledged",
        Duration::from_secs(30),
        || statuses(&edge, "outbound").iter().all(|s| s == "Processed"),
    );
    // One item that cannot leave: the hub is disabled on the edge.
    edge.ok(&["remote", "disable", "hub"]);
    edge.ok(&[
        "record",
        "create",
        "sc_req_item",
        "short_description=waiting",
    ]);

    for instance in [&edge, &hub] {
        instance.ok(&["property", "set", "purge.processed_age", "1"]);
        instance.ok(&["property", "set", "purge.skipped_age", "1"]);
        instance.ok(&["property", "set", "purge.interval", "1"]);
        instance.ok(&["property", "set", "purge.batch", "2"]);
    }
    wait_for(
        &[&edge, &hub],
        "the old items to be purged",
        Duration::from_secs(30),
        || statuses(&hub, "inbound") == ["Error"] && statuses(&edge, "outbound") == ["Ready"],
    );
    // Still there a little later: Ready and Error are never purged.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(statuses(&hub, "inbound"), ["Error"]);
    assert_eq!(statuses(&edge, "outbound"), ["Ready"]);
    // The stats count the purged items, and no longer the items themselves.
    let stats = hub.json(&["stats", "--json"]);
    assert_eq!(stats["purged"]["inbound"], 4, "{stats:#}");
    assert_eq!(counted(&stats, "inbound"), scanned(&hub, "inbound"));
    let stats = edge.json(&["stats", "--json"]);
    assert_eq!(stats["purged"]["outbound"], 5, "{stats:#}");
    assert_eq!(counted(&stats, "outbound"), scanned(&edge, "outbound"));
    assert!(
        hub.logs().contains("Purged old queue items"),
        "{}",
        hub.logs()
    );
    // A bad value is refused with the range.
    let err = hub.fails(&["property", "set", "purge.interval", "0"]);
    assert!(err.contains("between 1 and 86400"), "{err}");
}

#[test]
fn sync_debug_turns_debug_logging_on_and_off_without_a_restart() {
    let (edge, hub, _e, _h) = linked_pair(Extras::default());
    let applied = "Applied an inbound item.";
    let arrive = |description: &str| {
        edge.ok(&[
            "record",
            "create",
            "sc_req_item",
            &format!("short_description={description}"),
        ]);
        wait_for(&[&edge, &hub], description, Duration::from_secs(30), || {
            crate::support::sys_id_of(&hub, description).is_some()
        });
    };
    arrive("quiet");
    assert!(!hub.logs().contains(applied), "debug is off by default");

    hub.ok(&["property", "set", "sync.debug", "true"]);
    wait_for(
        &[&hub],
        "debug logging to switch on",
        Duration::from_secs(10),
        || hub.logs().contains("sync components is now on"),
    );
    arrive("loud");
    wait_for(&[&hub], "a debug event", Duration::from_secs(10), || {
        hub.logs().contains(applied)
    });

    hub.ok(&["property", "set", "sync.debug", "off"]);
    wait_for(
        &[&hub],
        "debug logging to switch off",
        Duration::from_secs(10),
        || hub.logs().contains("sync components is now off"),
    );
    let before = hub.logs().matches(applied).count();
    arrive("quiet again");
    assert_eq!(hub.logs().matches(applied).count(), before);
    let err = hub.fails(&["property", "set", "sync.debug", "maybe"]);
    assert!(err.contains("true or false"), "{err}");
}

/// Counts by status in `procsync queue … list`, the long way round.
fn scanned(instance: &Instance, queue: &str) -> std::collections::BTreeMap<String, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for item in items(instance, queue) {
        *counts
            .entry(item["status"].as_str().unwrap().to_lowercase())
            .or_insert(0) += 1;
    }
    counts
}

/// The totals `procsync stats --json` shows for `queue`, without zeros.
fn counted(stats: &Value, queue: &str) -> std::collections::BTreeMap<String, u64> {
    stats[queue]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, n)| n.as_u64().unwrap() > 0)
        .map(|(status, n)| (status.clone(), n.as_u64().unwrap()))
        .collect()
}

fn line<'a>(stats: &'a Value, queue: &str, event: &str) -> &'a Value {
    stats["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["queue"] == queue && l["process_event"] == event)
        .unwrap_or_else(|| panic!("no {queue} line for {event}: {stats:#}"))
}

#[test]
fn stats_count_every_status_change_and_survive_a_restart() {
    let (edge, hub, _e, mut hub_server) = linked_pair(Extras::default());
    three_processed_two_errors(&edge, &hub);
    wait_for(
        &[&edge],
        "the edge's items to be acknowledged",
        Duration::from_secs(30),
        || statuses(&edge, "outbound").iter().all(|s| s == "Processed"),
    );

    let stats = hub.json(&["stats", "--json"]);
    assert_eq!(counted(&stats, "inbound"), scanned(&hub, "inbound"));
    let requests = line(&stats, "inbound", "software_request");
    assert_eq!(requests["remote_system"], "edge");
    assert_eq!(requests["counts"]["processed"], 3);
    assert_eq!(requests["processed_last_minute"], 3);
    assert_eq!(requests["processed_last_day"], 3);
    assert_eq!(requests["error_rate"], 0.0);
    assert!(requests["last_processed_on"].is_string(), "{requests:#}");
    assert!(requests["latest_time_in_queue_ms"].is_u64(), "{requests:#}");
    assert_eq!(requests["processing_count"], 3);
    let unknown = line(&stats, "inbound", "incident_sync");
    assert_eq!(unknown["counts"]["error"], 2);
    assert_eq!(unknown["errors_last_day"], 2);
    assert_eq!(unknown["error_rate"], 1.0);
    let edge_remote = &stats["remote_systems"][0];
    assert_eq!(edge_remote["name"], "edge");
    assert_eq!(edge_remote["outbound_state"], "Active");
    assert_eq!(edge_remote["inbound_state"], "Active");
    let edge_stats = edge.json(&["stats", "--json"]);
    assert_eq!(counted(&edge_stats, "outbound"), scanned(&edge, "outbound"));
    assert_eq!(
        line(&edge_stats, "outbound", "software_request")["processed_total"],
        3
    );
    let minute_total: u64 = edge_stats["per_minute"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["outbound_processed"].as_u64().unwrap())
        .sum();
    assert_eq!(minute_total, 5, "{edge_stats:#}");

    // The operator retries one Error item (it fails again) and skips the
    // other: the counts follow each move.
    let errors: Vec<String> = items(&hub, "inbound")
        .iter()
        .filter(|i| i["status"] == "Error")
        .map(|i| i["id"].to_string())
        .collect();
    hub.ok(&["queue", "inbound", "skip", &errors[0]]);
    hub.ok(&["queue", "inbound", "retry", &errors[1]]);
    wait_for(
        &[&hub],
        "the retried item to fail again",
        Duration::from_secs(30),
        || {
            let stats = hub.json(&["stats", "--json"]);
            line(&stats, "inbound", "incident_sync")["errors_total"] == 3
        },
    );
    let stats = hub.json(&["stats", "--json"]);
    assert_eq!(counted(&stats, "inbound"), scanned(&hub, "inbound"));
    let unknown = line(&stats, "inbound", "incident_sync");
    assert_eq!(unknown["counts"]["error"], 1);
    assert_eq!(unknown["counts"]["skipped"], 1);
    // Listing by Error reads an index kept with the counters: it names
    // exactly the items whose status is Error.
    let listed: Vec<Value> = hub
        .json(&["queue", "inbound", "list", "--status", "error", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].clone())
        .collect();
    let in_error: Vec<Value> = items(&hub, "inbound")
        .iter()
        .filter(|i| i["status"] == "Error")
        .map(|i| i["id"].clone())
        .collect();
    assert_eq!(listed, in_error);
    assert_eq!(listed.len(), 1);
    assert_eq!(unknown["skipped_total"], 1);

    // The human form names the same figures.
    let table = hub.ok(&["stats"]);
    assert!(table.contains("incident_sync"), "{table}");
    assert!(table.contains("HEALTH"), "{table}");

    // The counters are stored: a restart shows the same.
    hub_server.stop();
    let _hub_server = hub.serve();
    let again = hub.json(&["stats", "--json"]);
    assert_eq!(again["queues"], stats["queues"]);
}

fn step_names(context: &Value) -> Vec<String> {
    context["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_processing_records_a_flow_context_the_item_links_to() {
    let (edge, hub, _e, _h) = linked_pair(Extras::default());
    three_processed_two_errors(&edge, &hub);

    // Inbound, applied: the steps, what went in and what came out.
    let processed = items(&hub, "inbound")
        .into_iter()
        .find(|i| i["status"] == "Processed")
        .unwrap();
    let id = processed["id"].to_string();
    let shown = hub.json(&["queue", "inbound", "show", &id]);
    let context = &shown["flow_context"];
    assert_eq!(shown["flow_contexts"].as_array().unwrap().len(), 1);
    assert_eq!(shown["flow_contexts"][0], context["id"]);
    assert_eq!(context["outcome"], "Processed");
    assert_eq!(context["flow"], "Requests from edge");
    assert_eq!(context["item_id"].to_string(), id);
    assert_eq!(
        step_names(context),
        [
            "payload",
            "inbound flow",
            "correlate",
            "map",
            "write",
            "correlation",
            "finish"
        ]
    );
    assert!(
        context["inputs"]["changed_fields"]["short_description"]
            .as_str()
            .unwrap()
            .starts_with('r')
    );
    assert_eq!(context["outputs"]["table"], "sc_req_item");
    assert_eq!(context["outputs"]["sys_id"], shown["local_correlation_id"]);
    assert_eq!(context["outputs"]["operation"], "create");
    assert!(context["error"].is_null());
    assert!(context["duration_ms"].is_u64());

    // Outbound, acknowledged: capture, queue, send, acknowledge.
    wait_for(
        &[&edge],
        "the edge's items to be acknowledged",
        Duration::from_secs(30),
        || statuses(&edge, "outbound").iter().all(|s| s == "Processed"),
    );
    let sent = items(&edge, "outbound")[0]["id"].to_string();
    let shown = edge.json(&["queue", "outbound", "show", &sent]);
    let context = &shown["flow_context"];
    assert_eq!(context["outcome"], "Processed");
    assert_eq!(context["flow"], "Requests to hub");
    assert_eq!(
        step_names(context),
        ["capture", "queue", "send", "acknowledge"]
    );
    assert_eq!(context["inputs"]["table"], "sc_req_item");
    assert!(
        context["inputs"]["changed_fields"]
            .as_array()
            .unwrap()
            .contains(&Value::from("short_description"))
    );
    assert_eq!(context["outputs"]["remote_system"], "hub");
    // Everything in it is in the item: it is told when read, not stored
    // with each acknowledgment.
    assert_eq!(context["id"], 0, "{context}");
    assert!(shown["flow_contexts"].is_null(), "{shown:#}");
    // The dashboard's item view lists it among the item's contexts.
    let full = crate::support::http(
        &edge.admin_address(),
        "GET",
        &format!("/api/queue/outbound/{sent}"),
        &[("Authorization", &format!("Bearer {}", edge.token()))],
        None,
    )
    .json();
    assert_eq!(full["contexts"].as_array().unwrap().len(), 1, "{full:#}");
    assert_eq!(full["contexts"][0]["outcome"], "Processed");

    // Refused on arrival: the context says why; a retry after the fix adds
    // a second context, and the first stays readable by its id.
    let failed = items(&hub, "inbound")
        .into_iter()
        .find(|i| i["status"] == "Error")
        .unwrap();
    let id = failed["id"].to_string();
    let shown = hub.json(&["queue", "inbound", "show", &id]);
    let first = shown["flow_context"].clone();
    assert_eq!(first["outcome"], "Error");
    assert_eq!(step_names(&first), ["receive"]);
    assert!(
        first["error"]
            .as_str()
            .unwrap()
            .contains("unknown process event `incident_sync`")
    );
    accept_incidents(&hub);
    hub.ok(&["queue", "inbound", "retry", &id]);
    wait_for(
        &[&hub],
        "the retried item to be processed",
        Duration::from_secs(30),
        || hub.json(&["queue", "inbound", "show", &id])["status"] == "Processed",
    );
    let shown = hub.json(&["queue", "inbound", "show", &id]);
    assert_eq!(shown["flow_contexts"].as_array().unwrap().len(), 2);
    assert_eq!(shown["flow_context"]["outcome"], "Processed");
    assert_eq!(shown["flow_context"]["flow"], "Incidents from edge");
    let again = hub.json(&["queue", "context", &first["id"].to_string()]);
    assert_eq!(again, first);
    let missing = hub.fails(&["queue", "context", "999999"]);
    assert!(missing.contains("flow context 999999"), "{missing}");
}

#[test]
fn queue_lists_come_in_pages_that_fit_a_message() {
    let instance = Instance::init("edge");
    let config = instance.file(
        "server.toml",
        "[limits]\nmax_list_records = 1000\nmax_message_bytes = 2097152\n",
    );
    let _server = instance.serve_with(&["--config", config.to_str().unwrap()]);
    let definitions = format!(
        "{}{}",
        "[[definition]]\nname = \"D\"\n\n[[process_event]]\nname = \"e\"\ndefinition = \"D\"\n\n[[capture]]\nname = \"C\"\nprocess_event = \"e\"\ntable = \"incident\"\nfields = [\"*\"]\n\n[[outbound_flow]]\nname = \"F\"\nprocess_event = \"e\"\nremote_system = \"hub\"\n",
        crate::support::UNREACHED_HUB
    );
    crate::support::apply_with_users(&instance, &definitions);
    // 2,500 records, each queuing an item of about 3 KB.
    let filler = "z".repeat(3000);
    let lines: String = (0..2500)
        .map(|i| format!("{{\"n\":\"{i}\",\"text\":\"{filler}\"}}\n"))
        .collect();
    let import = instance.file("records.jsonl", &lines);
    instance.ok(&[
        "record",
        "import",
        "incident",
        import.to_str().unwrap(),
        "--batch",
        "200",
    ]);

    // All of them, fetched page by page, each once, oldest first.
    let all = instance.json(&["queue", "outbound", "list", "--json", "--limit", "2500"]);
    let ids: Vec<u64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2500);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "oldest first, no repeats"
    );

    // One page: the server cuts it to fit a quarter of the 2 MiB message
    // limit and says where the next one starts.
    let out = instance.cli(&["queue", "outbound", "list", "--json", "--limit", "1000"]);
    assert!(out.status.success());
    let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let n_first = page.as_array().unwrap().len();
    assert_eq!(n_first, 1000, "the client fetched pages until the limit");
    let token = stderr
        .split("--page ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no next page in: {stderr}"))
        .to_string();
    assert_eq!(token, ids[999].to_string());
    let next = instance.json(&[
        "queue", "outbound", "list", "--json", "--limit", "1000", "--page", &token,
    ]);
    assert_eq!(next[0]["id"].as_u64().unwrap(), ids[1000]);
    // Over the raw API a single page stays under the message size.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (first_page, first_token) = runtime.block_on(async {
        let mut client = instance.client().await;
        let (page, token) = client
            .list_queue_page("outbound", "", "", 1000, "")
            .await
            .unwrap();
        (page.len(), token)
    });
    assert!(
        first_page > 0 && first_page < 1000,
        "cut to fit: {first_page}"
    );
    assert_eq!(first_token, ids[first_page - 1].to_string());
    let bad = instance.fails(&["queue", "outbound", "list", "--page", "not-a-token"]);
    assert!(
        bad.contains("page token `not-a-token` is not one this instance gave out"),
        "{bad}"
    );
}
