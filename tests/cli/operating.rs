//! Operating a running instance: purging old queue items, and switching
//! debug logging on and off without a restart.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Extras, Instance, linked_pair, send_unknown_event, wait_for};

fn items(instance: &Instance, queue: &str) -> Vec<Value> {
    crate::support::queue_items(instance, queue)
}

fn statuses(instance: &Instance, queue: &str) -> Vec<String> {
    let mut out: Vec<String> = items(instance, queue)
        .iter()
        .map(|i| i["status"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn old_processed_and_skipped_items_are_purged_and_ready_and_error_items_never_are() {
    let (edge, hub, _e, _h) = linked_pair(Extras::default());
    for n in 0..3 {
        edge.ok(&[
            "record",
            "create",
            "sc_req_item",
            &format!("short_description=r{n}"),
        ]);
    }
    // Two items of an event the hub does not know: both Error there.
    send_unknown_event(&edge);
    edge.ok(&["record", "create", "incident", "short_description=a"]);
    edge.ok(&["record", "create", "incident", "short_description=b"]);
    wait_for(
        &[&edge, &hub],
        "3 Processed and 2 Error items at the hub",
        Duration::from_secs(30),
        || statuses(&hub, "inbound") == ["Error", "Error", "Processed", "Processed", "Processed"],
    );
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
            !hub.json(&[
                "record",
                "list",
                "sc_req_item",
                "--query",
                &format!("short_description={description}"),
                "--json",
            ])
            .as_array()
            .unwrap()
            .is_empty()
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
