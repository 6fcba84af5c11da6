//! The admin port's plain HTTP: `/healthz`, `/metrics` scraped and parsed
//! as Prometheus text, and the dashboard driven in headless Chromium.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::browser::Browser;
use crate::support::{
    Extras, Instance, accept_incidents, http, linked_pair, queue_items, statuses,
    three_processed_two_errors, wait_for, wait_until,
};

/// One sample of a scrape: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the Prometheus text format strictly enough to catch a malformed
/// line: every sample belongs to a family declared with HELP and TYPE.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut declared: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            declared.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.strip_suffix('}').expect("labels close")),
            None => (series, ""),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| declared.get(*f).is_some_and(|k| k == "histogram"))
            .unwrap_or(name);
        assert!(declared.contains_key(family), "undeclared family: {line}");
        let mut parsed = BTreeMap::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next().expect("label value closes") {
                    (_, '\\') => value.push(chars.next().unwrap().1),
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            parsed.insert(key.to_string(), value);
            rest = after[end + 1..].trim_start_matches(',');
        }
        samples.push((name.to_string(), parsed, value));
    }
    samples
}

fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no {name} {labels:?}"))
        .2
}

fn bearer(instance: &Instance) -> String {
    format!("Bearer {}", instance.token())
}

#[test]
fn metrics_and_health_are_served_over_http_beside_grpc() {
    let (edge, hub, _e, _h) = linked_pair(Extras::default());
    three_processed_two_errors(&edge, &hub);
    let address = hub.admin_address();

    let health = http(&address, "GET", "/healthz", &[], None);
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(health.json()["instance"], "hub");

    let refused = http(&address, "GET", "/metrics", &[], None);
    assert_eq!(refused.status, 401);
    assert!(refused.json()["error"].as_str().unwrap().contains("token"));
    let wrong = http(
        &address,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer nope")],
        None,
    );
    assert_eq!(wrong.status, 401);

    let auth = bearer(&hub);
    let scrape = http(
        &address,
        "GET",
        "/metrics",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(scrape.status, 200);
    assert!(
        scrape
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let samples = parse_metrics(&scrape.body);
    let stats = hub.json(&["stats", "--json"]);
    let requests = [
        ("queue", "inbound"),
        ("remote_system", "edge"),
        ("process_event", "software_request"),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut labels = requests.to_vec();
        labels.push(extra);
        labels
    };
    assert_eq!(
        sample(
            &samples,
            "procsync_queue_items",
            &with(("status", "Processed"))
        ),
        3.0
    );
    assert_eq!(
        sample(&samples, "procsync_queue_processed_total", &requests),
        3.0
    );
    assert_eq!(
        sample(&samples, "procsync_processing_seconds_count", &requests),
        3.0
    );
    assert_eq!(
        sample(
            &samples,
            "procsync_processing_seconds_bucket",
            &with(("le", "+Inf"))
        ),
        3.0
    );
    let unknown = [("queue", "inbound"), ("process_event", "incident_sync")];
    let mut labels = unknown.to_vec();
    labels.push(("status", "Error"));
    assert_eq!(sample(&samples, "procsync_queue_items", &labels), 2.0);
    assert_eq!(
        sample(&samples, "procsync_queue_errors_total", &unknown),
        2.0
    );
    // Every queue-depth sample agrees with `procsync stats`.
    let errors_in_stats = stats["inbound"]["error"].as_f64().unwrap();
    let errors_in_scrape: f64 = samples
        .iter()
        .filter(|(n, l, _)| {
            n == "procsync_queue_items" && l["queue"] == "inbound" && l["status"] == "Error"
        })
        .map(|(_, _, v)| v)
        .sum();
    assert_eq!(errors_in_scrape, errors_in_stats);
    assert_eq!(
        sample(
            &samples,
            "procsync_remote_state",
            &[("remote_system", "edge"), ("direction", "inbound")]
        ),
        1.0
    );
    let healths: f64 = ["Up", "Slow", "Down"]
        .iter()
        .map(|h| {
            sample(
                &samples,
                "procsync_remote_health",
                &[("remote_system", "edge"), ("health", h)],
            )
        })
        .sum();
    assert_eq!(healths, 1.0, "exactly one health is current");

    // gRPC still works on the same port (the CLI uses it), and an unknown
    // path says where to look.
    hub.ok(&["property", "list"]);
    let missing = http(&address, "GET", "/nowhere", &[], None);
    assert_eq!(missing.status, 404);
    assert!(
        missing.json()["error"]
            .as_str()
            .unwrap()
            .contains("/dashboard")
    );
    let bad_id = http(
        &address,
        "POST",
        "/api/queue/inbound/abc/retry",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(bad_id.status, 400, "{}", bad_id.body);
}

#[test]
fn the_dashboard_shows_the_stats_and_an_operator_retries_an_error_item_in_a_browser() {
    let (edge, hub, _e, _h) = linked_pair(Extras::default());
    three_processed_two_errors(&edge, &hub);
    let browser = Browser::start();
    let url = format!("http://{}/dashboard", hub.admin_address());

    // Without a token the page asks for one; a wrong one is refused.
    browser.open(&url);
    let input = browser.wait_for("#login:not([hidden]) #token");
    browser.type_into(&input, "not-a-token");
    browser.click_on("#login-button");
    wait_until(
        "the wrong token to be refused",
        Duration::from_secs(20),
        || browser.text_of("#message").contains("not valid"),
    );
    let input = browser.wait_for("#login:not([hidden]) #token");
    browser.type_into(&input, &hub.token());
    browser.click_on("#login-button");
    browser.wait_for("#board:not([hidden]) #count-inbound-error");

    // The numbers on the page are `procsync stats --json`'s.
    let stats = hub.json(&["stats", "--json"]);
    for queue in ["outbound", "inbound"] {
        for status in ["ready", "running", "processed", "error", "skipped"] {
            assert_eq!(
                browser.text_of(&format!("#count-{queue}-{status}")),
                stats[queue][status].to_string(),
                "{queue} {status}"
            );
        }
    }
    let row_text = browser.text_of("#remotes tr[data-remote='edge']");
    assert!(row_text.contains("Active"), "{row_text}");
    let health = stats["remote_systems"][0]["health"].as_str().unwrap();
    assert!(row_text.contains(health), "{row_text} vs {health}");
    let chart_total: u64 = browser
        .script("return document.getElementById('chart').dataset.total")
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let per_minute: u64 = stats["per_minute"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["inbound_processed"].as_u64().unwrap() + m["outbound_processed"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(chart_total, per_minute);
    assert_eq!(chart_total, 3, "three requests processed in the last day");

    // The error list holds both Error items; fix the cause, then Retry one.
    let errors: Vec<Value> = queue_items(&hub, "inbound")
        .into_iter()
        .filter(|i| i["status"] == "Error")
        .collect();
    assert_eq!(errors.len(), 2);
    for item in &errors {
        let row = browser.text_of(&format!(
            "#errors tr[data-queue='inbound'][data-id='{}']",
            item["id"]
        ));
        assert!(row.contains("unknown process event"), "{row}");
    }
    accept_incidents(&hub);
    let id = errors[0]["id"].to_string();
    browser.click_on(&format!("#errors tr[data-id='{id}'] button.retry"));
    wait_for(
        &[&hub],
        "the retried item to be processed",
        Duration::from_secs(30),
        || hub.json(&["queue", "inbound", "show", &id])["status"] == "Processed",
    );
    wait_until(
        "the page to drop the item from its error list",
        Duration::from_secs(20),
        || {
            browser
                .find(&format!("#errors tr[data-id='{id}']"))
                .is_none()
        },
    );
    wait_until(
        "the page to count 4 processed",
        Duration::from_secs(20),
        || browser.text_of("#count-inbound-processed") == "4",
    );
    assert_eq!(browser.text_of("#count-inbound-error"), "1");

    // Skip the other one: it leaves the list and counts as Skipped.
    let other = errors[1]["id"].to_string();
    browser.click_on(&format!("#errors tr[data-id='{other}'] button.skip"));
    wait_until(
        "the page to count 1 skipped",
        Duration::from_secs(20),
        || browser.text_of("#count-inbound-skipped") == "1",
    );
    assert_eq!(browser.text_of("#count-inbound-error"), "0");
    assert!(browser.text_of("#errors").contains("No items in Error"));
    assert_eq!(
        hub.json(&["queue", "inbound", "show", &other])["status"],
        "Skipped"
    );
    assert_eq!(
        statuses(&hub, "inbound"),
        [
            "Processed",
            "Processed",
            "Processed",
            "Processed",
            "Skipped"
        ]
    );
    // The retried item made its record.
    let local = hub.json(&["queue", "inbound", "show", &id])["local_correlation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let record = hub.json(&["record", "get", "incident", &local, "--json"]);
    let description = record["fields"]["short_description"].as_str().unwrap();
    assert!(["a", "b"].contains(&description), "{record:#}");
}

#[test]
fn the_dashboard_pages_a_hubs_many_remote_systems_and_finds_one_by_name() {
    let hub = Instance::init("hub");
    let _server = hub.serve();
    let mut definitions = String::new();
    for n in 1..=30 {
        definitions.push_str(&format!(
            "[[remote_system]]\nname = \"store-{n:02}\"\nendpoint = \"https://127.0.0.1:{}\"\nfingerprint = \"sha256:{}\"\ninbound_api_user = \"api_user\"\nrun_as = \"runas_user\"\n\n",
            20_000 + n,
            format!("{n:02}").repeat(32)
        ));
    }
    crate::support::apply_with_users(&hub, &definitions);
    let browser = Browser::start();
    browser.open(&format!(
        "http://{}/dashboard#token={}",
        hub.admin_address(),
        hub.token()
    ));
    browser.wait_for("#board:not([hidden]) #remotes tr[data-remote='store-01']");
    let rows = || {
        browser
            .script("return document.querySelectorAll('#remotes tr[data-remote]').length")
            .as_u64()
            .unwrap()
    };
    assert_eq!(rows(), 25, "one page of 25");
    assert_eq!(browser.text_of("#remotes-page"), "1–25 of 30");
    let summary = browser.text_of("#remotes-summary");
    assert!(summary.starts_with("30 remote systems: "), "{summary}");
    browser.click_on("#remotes-next");
    browser.wait_for("#remotes tr[data-remote='store-30']");
    assert_eq!(rows(), 5);
    assert_eq!(browser.text_of("#remotes-page"), "26–30 of 30");
    // A refresh keeps the page.
    let refreshed = browser.script("return document.body.dataset.refreshed");
    wait_until("the next refresh", Duration::from_secs(20), || {
        browser.script("return document.body.dataset.refreshed") != refreshed
    });
    assert_eq!(browser.text_of("#remotes-page"), "26–30 of 30");
    let filter = browser.wait_for("#remotes-filter");
    browser.type_into(&filter, "store-07");
    browser.wait_for("#remotes tr[data-remote='store-07']");
    assert_eq!(rows(), 1);
    assert_eq!(browser.text_of("#remotes-page"), "1–1 of 1");
}
