//! Alert thresholds: crossing one runs the remote system's error subflow
//! once with the figures (a real webhook receives it), clearing it runs it
//! again; `procsync stats` and `/metrics` show what is over.

use std::time::Duration;

use crate::support::{Instance, apply_with_users, http, wait_for, webhook_receiver};

/// The next webhook body, as JSON, within `deadline`.
fn next_alert(bodies: &std::sync::mpsc::Receiver<String>, deadline: Duration) -> serde_json::Value {
    let body = bodies
        .recv_timeout(deadline)
        .expect("the webhook was called in time");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn crossing_and_clearing_an_alert_threshold_run_the_error_subflow_once_each() {
    let (webhook, bodies) = webhook_receiver();
    let edge = Instance::init("edge");
    let _server = edge.serve();
    // A hub nobody answers for: items for it wait.
    let definitions = format!(
        r#"
[[definition]]
name = "Incidents"

[[process_event]]
name = "incident_sync"
definition = "Incidents"

[[capture]]
name = "Capture incidents"
process_event = "incident_sync"
table = "incident"
fields = ["short_description"]

[[remote_system]]
name = "hub"
endpoint = "https://127.0.0.1:9"
fingerprint = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
inbound_api_user = "api_user"
run_as = "runas_user"
error_subflow = [{{ action = "webhook", url = "http://{webhook}/alerts" }}]

[[outbound_flow]]
name = "Incidents to hub"
process_event = "incident_sync"
remote_system = "hub"
"#
    );
    apply_with_users(&edge, &definitions);
    // The backlog threshold for `hub` alone; the age one for every remote.
    edge.ok(&["property", "set", "alert.backlog@hub", "3"]);
    edge.ok(&["property", "set", "alert.oldest_s", "3600"]);
    let refused = edge.fails(&["property", "set", "alert.window_s@hub", "60"]);
    assert!(
        refused.contains("has no value per remote system"),
        "{refused}"
    );

    let mut ids = Vec::new();
    for n in 0..3 {
        let sys_id = edge.ok(&[
            "record",
            "create",
            "incident",
            &format!("short_description=n{n}"),
        ]);
        ids.push(sys_id.trim().to_string());
    }
    let alert = next_alert(&bodies, Duration::from_secs(20));
    assert_eq!(alert["kind"], "alert");
    assert_eq!(alert["remote_system"], "hub");
    assert_eq!(
        alert["error"],
        "outbound backlog of 3 item(s) for `hub` is at or over the alert threshold of 3 (alert.backlog)"
    );
    // Once: the next checks see it still over and say nothing.
    assert!(bodies.recv_timeout(Duration::from_secs(5)).is_err());

    let stats = edge.ok(&["stats"]);
    assert!(stats.contains("OVER AN ALERT THRESHOLD:"), "{stats}");
    assert!(
        stats.contains("  ! outbound backlog of 3 item(s) for `hub` is at or over the alert threshold of 3 (alert.backlog)"),
        "{stats}"
    );
    let json = edge.json(&["stats", "--json"]);
    let hub = &json["remote_systems"][0];
    assert_eq!(hub["alerts"].as_array().unwrap().len(), 1);
    assert!(hub["oldest_waiting_s"].as_u64().is_some());
    let scrape = http(
        &edge.admin_address(),
        "GET",
        "/metrics",
        &[("Authorization", &format!("Bearer {}", edge.token()))],
        None,
    );
    assert!(
        scrape
            .body
            .contains("procsync_alerts_active{remote_system=\"hub\"} 1"),
        "{}",
        scrape.body
    );
    assert!(
        scrape
            .body
            .contains("procsync_outbound_oldest_waiting_seconds{remote_system=\"hub\"} "),
        "{}",
        scrape.body
    );

    // The age threshold lowered for `hub`: its oldest item is over it.
    edge.ok(&["property", "set", "alert.oldest_s@hub", "1"]);
    let alert = next_alert(&bodies, Duration::from_secs(20));
    assert_eq!(alert["kind"], "alert");
    let text = alert["error"].as_str().unwrap();
    assert!(
        text.starts_with("oldest unacknowledged outbound item of "),
        "{text}"
    );
    assert!(
        text.ends_with("for `hub` is at or over the alert threshold of 1 (alert.oldest_s)"),
        "{text}"
    );

    // The operator skips the items: both clear, once each.
    let items = crate::support::queue_items(&edge, "outbound");
    for item in &items {
        edge.ok(&["queue", "outbound", "skip", &item["id"].to_string()]);
    }
    let mut cleared: Vec<String> = (0..2)
        .map(|_| next_alert(&bodies, Duration::from_secs(20)))
        .map(|alert| {
            assert_eq!(alert["kind"], "alert_cleared");
            alert["error"].as_str().unwrap().to_string()
        })
        .collect();
    cleared.sort();
    assert_eq!(
        cleared[1],
        "outbound backlog of 0 item(s) for `hub` is back under the alert threshold of 3 (alert.backlog)"
    );
    assert!(
        cleared[0]
            .starts_with("oldest unacknowledged outbound item of 0 s for `hub` is back under"),
        "{}",
        cleared[0]
    );
    wait_for(
        &[&edge],
        "stats without alerts",
        Duration::from_secs(10),
        || !edge.ok(&["stats"]).contains("OVER AN ALERT THRESHOLD"),
    );
    assert!(
        bodies.recv_timeout(Duration::from_secs(3)).is_err(),
        "nothing more"
    );
}

#[test]
fn a_remote_down_past_its_threshold_is_raised_with_the_default_log_and_clears_when_it_returns() {
    let (edge, hub, _edge_server, mut hub_server) = crate::support::linked_pair(Default::default());
    edge.fast_retries();
    edge.ok(&["property", "set", "alert.down_s@hub", "2"]);
    hub_server.stop();
    // No error subflow steps: the alert is an ERROR log event. The alert
    // and the subflow's log step are two lines, written one after the
    // other: wait for both.
    wait_for(
        &[&edge],
        "the Down alert and the subflow's line in the log",
        Duration::from_secs(30),
        || {
            let logs = edge.logs();
            logs.contains("for `hub` is at or over the alert threshold of 2 (alert.down_s)")
                && logs.lines().any(|l| {
                    l.contains("Error subflow: hub needs attention") && l.contains("alert.down_s")
                })
        },
    );
    let logs = edge.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("Error subflow: hub needs attention") && l.contains("alert.down_s"))
        .expect("the subflow's log step names the alert");
    assert!(line.contains("kind=alert"), "{line}");
    let stats = edge.ok(&["stats"]);
    assert!(stats.contains("  ! Down for "), "{stats}");

    let _hub_server = hub.serve();
    wait_for(
        &[&edge, &hub],
        "the Down alert to clear",
        Duration::from_secs(30),
        || {
            edge.logs()
                .contains("for `hub` is back under the alert threshold of 2 (alert.down_s)")
        },
    );
    assert!(!edge.ok(&["stats"]).contains("OVER AN ALERT THRESHOLD"));
}
