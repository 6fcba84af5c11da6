//! The dashboard's working views: the queue browser (filters, pages, newest
//! first), an item with its payload, retry state and flow contexts, Retry
//! from there, and the definitions; driven in headless Chromium at 1280 px
//! with a screenshot of each page, and the same calls over plain HTTP with
//! a token that may not use them.

use std::time::Duration;

use serde_json::Value;

use crate::browser::Browser;
use crate::support::{
    Extras, Instance, Server, accept_incidents, http, linked_pair, queue_items, statuses,
    three_processed_two_errors, wait_for, wait_until,
};

/// Software requests sent besides `three_processed_two_errors`'s.
const MORE_REQUESTS: usize = 12;

/// The hub with 15 Processed software requests and 2 incidents in Error
/// (no inbound flow for them yet) in its inbound queue.
fn hub_with_seventeen_items() -> (Instance, Instance, Server, Server) {
    let (edge, hub, edge_server, hub_server) = linked_pair(Extras::default());
    three_processed_two_errors(&edge, &hub);
    for n in 0..MORE_REQUESTS {
        edge.ok(&[
            "record",
            "create",
            "sc_req_item",
            &format!("short_description=more {n}"),
        ]);
    }
    wait_for(
        &[&edge, &hub],
        "15 software requests processed at the hub",
        Duration::from_secs(60),
        || {
            statuses(&hub, "inbound")
                .iter()
                .filter(|s| *s == "Processed")
                .count()
                == 3 + MORE_REQUESTS
        },
    );
    (edge, hub, edge_server, hub_server)
}

/// The ids the page's queue table shows, top to bottom.
fn shown_ids(browser: &Browser) -> Vec<u64> {
    let ids = browser.script(
        "return [...document.querySelectorAll('#browser-rows tr[data-id]')].map(r => Number(r.dataset.id));",
    );
    ids.as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_u64().unwrap())
        .collect()
}

/// Waits until the queue table shows exactly `expected`.
fn wait_for_rows(browser: &Browser, what: &str, expected: &[u64]) {
    wait_until(
        &format!("{what}: the page to show {expected:?}"),
        Duration::from_secs(20),
        || shown_ids(browser) == expected,
    );
}

/// Only the view `id` is on the screen, and every table of it fits its
/// card, and the page does not scroll sideways.
fn assert_fits(browser: &Browser, id: &str, page: &str) {
    let shown = browser.script(
        "return [...document.querySelectorAll('main')].filter(m => getComputedStyle(m).display !== 'none').map(m => m.id);",
    );
    assert_eq!(
        shown,
        serde_json::json!([id]),
        "{page}: the views on screen"
    );
    let overflow = browser.script(
        "const wide = [...document.querySelectorAll('main:not([hidden]) table')].filter(t => {
           const card = t.closest('section');
           return card && t.offsetParent !== null && t.scrollWidth > card.clientWidth;
         }).map(t => t.closest('section').querySelector('h2')?.innerText);
         if (document.documentElement.scrollWidth > window.innerWidth) wide.push('the page itself');
         return wide;",
    );
    assert_eq!(
        overflow,
        Value::Array(vec![]),
        "{page}: tables wider than their cards at 1280 px"
    );
}

/// Chooses `value` in the select `css` the way a user does (a click on the
/// option).
fn choose(browser: &Browser, css: &str, value: &str) {
    browser.click_on(&format!("{css} option[value='{value}']"));
}

#[test]
fn an_operator_filters_pages_opens_and_retries_queue_items_in_the_browser() {
    let (_edge, hub, _e, _h) = hub_with_seventeen_items();
    let items = queue_items(&hub, "inbound");
    let mut newest_first: Vec<u64> = items.iter().map(|i| i["id"].as_u64().unwrap()).collect();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    let errors: Vec<u64> = newest_first
        .iter()
        .copied()
        .filter(|id| {
            items
                .iter()
                .any(|i| i["id"] == *id && i["status"] == "Error")
        })
        .collect();
    assert_eq!(errors.len(), 2);

    let browser = Browser::start();
    browser.set_window_size(1280, 1000);
    let shots = crate::browser::screenshot_dir("queue_browser");
    browser.open(&format!(
        "http://{}/dashboard#token={}",
        hub.admin_address(),
        hub.token()
    ));
    browser.wait_for("#board:not([hidden]) #count-inbound-error");
    wait_until(
        "the overview to count 2 errors",
        Duration::from_secs(20),
        || browser.text_of("#count-inbound-error") == "2",
    );
    assert_fits(&browser, "board", "the overview");
    browser.screenshot(&shots.join("overview.png"));

    // The inbound queue, newest first, all 17 on the first page.
    browser.click_on("nav a[data-view='queue-inbound']");
    browser.wait_for("#browser:not([hidden]) #browser-rows tr[data-id]");
    wait_for_rows(&browser, "the first page", &newest_first);
    assert_eq!(browser.text_of("#browser-total"), "(17 matching)");
    assert_fits(&browser, "browser", "the queue browser");

    // Ten per page: two pages, there and back.
    choose(&browser, "#filter-limit", "10");
    wait_for_rows(&browser, "ten per page", &newest_first[..10]);
    browser.click_on("#page-older");
    wait_for_rows(&browser, "the older page", &newest_first[10..]);
    assert_eq!(
        browser.script("return document.getElementById('page-older').disabled"),
        true,
        "the oldest page has no older one"
    );
    assert!(browser.text_of("#page-position").starts_with("page 2"));
    browser.screenshot(&shots.join("queue-page-2.png"));
    browser.click_on("#page-newer");
    wait_for_rows(&browser, "back to the newest page", &newest_first[..10]);

    // Filters: Processed software requests from `edge`, then Error only.
    choose(&browser, "#filter-status", "Processed");
    choose(&browser, "#filter-event", "software_request");
    choose(&browser, "#filter-remote", "edge");
    let processed: Vec<u64> = newest_first
        .iter()
        .copied()
        .filter(|id| !errors.contains(id))
        .collect();
    wait_for_rows(&browser, "Processed requests", &processed[..10]);
    assert_eq!(browser.text_of("#browser-total"), "(15 matching)");
    choose(&browser, "#filter-event", "");
    choose(&browser, "#filter-status", "Error");
    wait_for_rows(&browser, "the Error items", &errors);
    assert_eq!(browser.text_of("#browser-total"), "(2 matching)");
    for id in &errors {
        let row = browser.text_of(&format!("#browser-rows tr[data-id='{id}']"));
        assert!(row.contains("unknown process event"), "{row}");
    }
    assert_fits(&browser, "browser", "the filtered queue");
    browser.screenshot(&shots.join("queue-errors.png"));

    // Open one: its payload, its error and the flow context of its run.
    let id = errors[0];
    let shown = hub.json(&["queue", "inbound", "show", &id.to_string()]);
    browser.click_on(&format!("#browser-rows tr[data-id='{id}'] a.open"));
    wait_until(
        "the item view to show the Error item",
        Duration::from_secs(20),
        || {
            browser.script("return document.body.dataset.item || ''")
                == format!("inbound/{id}/Error")
        },
    );
    let payload: Value = serde_json::from_str(&browser.text_of("#item-payload")).unwrap();
    assert_eq!(
        payload, shown["payload"],
        "the page shows the item's payload"
    );
    assert!(
        browser
            .text_of("#item-retry-state")
            .contains("unknown process event")
    );
    let contexts = shown["flow_contexts"].as_array().unwrap().len();
    assert!(contexts >= 1, "{shown:#}");
    assert_eq!(
        browser.text_of("#item-context-count"),
        format!("({contexts})")
    );
    assert!(browser.text_of("#item-contexts").contains("Error"));
    assert_fits(&browser, "item-view", "the item view");
    browser.screenshot(&shots.join("item-error.png"));

    // Fix the cause and retry it from the item view: it is processed.
    accept_incidents(&hub);
    browser.click_on("#item-retry");
    wait_for(
        &[&hub],
        "the retried item to be processed",
        Duration::from_secs(30),
        || hub.json(&["queue", "inbound", "show", &id.to_string()])["status"] == "Processed",
    );
    wait_until(
        "the item view to show it Processed",
        Duration::from_secs(20),
        || {
            browser.script("return document.body.dataset.item || ''")
                == format!("inbound/{id}/Processed")
        },
    );
    assert_eq!(
        browser.text_of("#item-context-count"),
        format!("({})", contexts + 1),
        "the retry's run is one more flow context"
    );
    browser.screenshot(&shots.join("item-retried.png"));

    // Back to the list, filters kept: one Error item left.
    browser.click_on("#item-back");
    wait_for_rows(&browser, "the Error items after the retry", &errors[1..]);

    // The definitions as the hub holds them.
    browser.click_on("nav a[data-view='definitions']");
    let remote =
        browser.text_of("#definitions section[data-kind='remote_system'] tr[data-name='edge']");
    assert!(remote.contains("fingerprint"), "{remote}");
    let flows = browser.text_of("#definitions section[data-kind='inbound_flow']");
    assert!(flows.contains("Incidents from edge"), "{flows}");
    let toml = browser.script("return document.getElementById('definitions-toml').textContent");
    assert_eq!(toml.as_str().unwrap().trim(), hub.ok(&["export"]).trim());
    assert_fits(&browser, "definitions-view", "the definitions");
    browser.screenshot(&shots.join("definitions.png"));
}

#[test]
fn the_working_views_answer_only_a_token_allowed_to_use_them() {
    let (_edge, hub, _e, _h) = hub_with_seventeen_items();
    let address = hub.admin_address();
    let api_token = hub.add_user("reader", "process_sync_api", None);
    let acme_token = hub.add_user("acme_admin", "admin", Some("global/acme"));
    let get = |path: &str, token: Option<&str>| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        http(&address, "GET", path, &headers, None)
    };
    let admin = hub.token();

    for path in [
        "/api/queue/inbound",
        "/api/queue/inbound/1",
        "/api/definitions",
    ] {
        let refused = get(path, None);
        assert_eq!(refused.status, 401, "{path}: {}", refused.body);
        let refused = get(path, Some(&api_token));
        assert_eq!(refused.status, 403, "{path}: {}", refused.body);
        assert!(
            refused.json()["error"].as_str().unwrap().contains("role"),
            "{}",
            refused.body
        );
    }
    let item = queue_items(&hub, "inbound")[0]["id"].to_string();
    let retry = http(
        &address,
        "POST",
        &format!("/api/queue/inbound/{item}/retry"),
        &[("Authorization", &format!("Bearer {api_token}"))],
        None,
    );
    assert_eq!(retry.status, 403, "{}", retry.body);

    // A domain's admin sees none of the global items, and cannot open one.
    let page = get("/api/queue/inbound", Some(&acme_token)).json();
    assert_eq!(page["items"], Value::Array(vec![]), "{page:#}");
    let hidden = get(&format!("/api/queue/inbound/{item}"), Some(&acme_token));
    assert_eq!(hidden.status, 404, "{}", hidden.body);

    // The admin pages through the same items with the page token.
    let first = get("/api/queue/inbound?limit=10", Some(&admin)).json();
    assert_eq!(first["total"], 17);
    assert_eq!(first["items"].as_array().unwrap().len(), 10);
    assert!(
        first["items"][0].get("payload").is_none(),
        "a page leaves the payloads to the item view"
    );
    let token = first["next_page_token"].as_str().unwrap();
    let second = get(
        &format!("/api/queue/inbound?limit=10&before={token}"),
        Some(&admin),
    )
    .json();
    assert_eq!(second["items"].as_array().unwrap().len(), 7);
    assert_eq!(second["next_page_token"], "");

    // Bad input says what was wrong.
    for (path, says) in [
        ("/api/queue/inbound?status=Lost", "unknown status"),
        ("/api/queue/inbound?limit=many", "not a number"),
        ("/api/queue/inbound?colour=red", "unknown query parameter"),
        ("/api/queue/inbound?before=x", "page token"),
        ("/api/queue/sideways", "queue"),
    ] {
        let answer = get(path, Some(&admin));
        assert_eq!(answer.status, 400, "{path}: {}", answer.body);
        let error = answer.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(says), "{path}: {error}");
    }
}
