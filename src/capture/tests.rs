//! Unit tests of the capture rules: which definitions fire for a change
//! and what each item carries.

use super::*;
use std::collections::BTreeMap;

fn config() -> SyncConfig {
    SyncConfig::parse(
        "t",
        r#"
[[definition]]
name = "d"
domain = "global/acme"
[[process_event]]
name = "ev"
definition = "d"
[[capture]]
name = "second"
order = 200
process_event = "ev"
table = "incident"
fields = ["state"]
[[capture]]
name = "first"
order = 100
process_event = "ev"
table = "incident"
filter = "priority<=2"
fields = ["state", "short_description"]
journal_fields = ["comments"]
[[remote_system]]
name = "hub"
endpoint = "https://hub:7481"
fingerprint = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
inbound_api_user = "api"
run_as = "runas"
[[remote_system]]
name = "other"
endpoint = "https://other:7481"
fingerprint = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
inbound_api_user = "api"
run_as = "runas"
[[outbound_flow]]
name = "to hub"
process_event = "ev"
remote_system = "hub"
[[outbound_flow]]
name = "to other"
process_event = "ev"
remote_system = "other"
"#,
    )
    .unwrap()
}

fn record(domain: &str, fields: &[(&str, &str)]) -> Record {
    Record {
        table: "incident".into(),
        sys_id: "0".repeat(32),
        created_on: 0,
        created_by: "u".into(),
        updated_on: 0,
        updated_by: "u".into(),
        mod_count: 0,
        domain: Domain::parse(domain).unwrap(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        journal_len: 0,
        attachments: Vec::new(),
    }
}

fn change<'a>(op: Operation, old: Option<&'a Record>, new: &'a Record) -> Change<'a> {
    Change {
        operation: op,
        old,
        new,
        new_journal: &[],
        changed_by: "alice",
        time: 0,
        origin_remote: None,
    }
}

#[test]
fn definitions_run_in_order_once_per_flow() {
    let index = CaptureIndex::build(&config());
    let new = record("global/acme/emea", &[("state", "1"), ("priority", "1")]);
    let items = index.capture(&change(Operation::Create, None, &new));
    let names: Vec<_> = items
        .iter()
        .map(|c| (c.capture_definition.as_str(), c.remote_system.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("first", "hub"),
            ("first", "other"),
            ("second", "hub"),
            ("second", "other")
        ]
    );
    let fields = &items[0].payload.changed_fields;
    assert_eq!(fields[0].key, "state");
    assert!(fields[0].changed);
    assert_eq!(fields[1].key, "short_description");
    assert!(!fields[1].changed, "an unset field did not change");
}

#[test]
fn updates_fire_only_on_included_changes() {
    let index = CaptureIndex::build(&config());
    let old = record(
        "global/acme",
        &[("state", "1"), ("priority", "1"), ("x", "a")],
    );
    let same = record(
        "global/acme",
        &[("state", "1"), ("priority", "1"), ("x", "b")],
    );
    assert!(
        index
            .capture(&change(Operation::Update, Some(&old), &same))
            .is_empty()
    );
    let desc = record(
        "global/acme",
        &[
            ("state", "1"),
            ("priority", "1"),
            ("short_description", "hi"),
        ],
    );
    let items = index.capture(&change(Operation::Update, Some(&old), &desc));
    assert_eq!(items.len(), 2, "only `first` includes short_description");
}

#[test]
fn domains_outside_the_definition_are_not_captured() {
    let index = CaptureIndex::build(&config());
    let new = record("global/other", &[("state", "1"), ("priority", "1")]);
    assert!(
        index
            .capture(&change(Operation::Create, None, &new))
            .is_empty()
    );
}

fn attachment(sys_id: &str, name: &str, size: u64) -> Attachment {
    Attachment {
        sys_id: sys_id.to_string(),
        file_name: name.to_string(),
        content_type: "application/pdf".to_string(),
        size,
        hash: "ab".repeat(32),
        created_on: 0,
        created_by: "alice".to_string(),
        origin: None,
    }
}

fn attachment_config(strategy: &str) -> SyncConfig {
    let text = format!(
        r#"
[[definition]]
name = "d"
[[process_event]]
name = "ev"
definition = "d"
[[capture]]
name = "files"
process_event = "ev"
table = "incident"
fields = ["state"]
include_attachments = true
attachment_strategy = "{strategy}"
max_attachment_mb = 1
allowed_extensions = ["pdf"]
[[capture]]
name = "no files"
process_event = "ev"
table = "incident"
fields = ["state"]
[[remote_system]]
name = "hub"
endpoint = "https://hub:7481"
fingerprint = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
inbound_api_user = "api"
run_as = "runas"
[[outbound_flow]]
name = "to hub"
process_event = "ev"
remote_system = "hub"
"#
    );
    SyncConfig::parse("t", &text).unwrap()
}

#[test]
fn attachment_changes_are_captured_within_the_capture_limits() {
    let index = CaptureIndex::build(&attachment_config("deltas"));
    let old = {
        let mut r = record("global", &[("state", "1")]);
        r.attachments = vec![attachment("a", "old.pdf", 10)];
        r
    };
    let mut new = old.clone();
    new.attachments.push(attachment("b", "new.pdf", 10));
    new.attachments.push(attachment("c", "big.pdf", 2 << 20));
    new.attachments.push(attachment("d", "tool.exe", 10));
    let items = index.capture(&change(Operation::Update, Some(&old), &new));
    assert_eq!(
        items.len(),
        1,
        "only the capture that includes attachments fires"
    );
    let payload = &items[0].payload;
    let listed: Vec<(&str, bool)> = payload
        .attachments
        .iter()
        .map(|a| (a.file_name.as_str(), a.added))
        .collect();
    assert_eq!(listed, [("old.pdf", false), ("new.pdf", true)]);
    assert_eq!(
        payload.attachment_strategy,
        Some(AttachmentStrategy::Deltas)
    );

    // Adding only a file the capture does not send changes nothing.
    let mut exe_only = old.clone();
    exe_only.attachments.push(attachment("d", "tool.exe", 10));
    assert!(
        index
            .capture(&change(Operation::Update, Some(&old), &exe_only))
            .is_empty()
    );

    // A removal is a change too, and says which file went.
    let mut removed = old.clone();
    removed.attachments.clear();
    let items = index.capture(&change(Operation::Update, Some(&removed.clone()), &removed));
    assert!(items.is_empty(), "no change, no item");
    let items = index.capture(&change(Operation::Update, Some(&old), &removed));
    assert_eq!(items[0].payload.removed_attachments.len(), 1);
    assert_eq!(items[0].payload.removed_attachments[0].file_name, "old.pdf");
}

#[test]
fn changes_from_a_remote_are_not_sent_back_to_it() {
    let index = CaptureIndex::build(&config());
    let new = record("global/acme", &[("state", "1"), ("priority", "5")]);
    let mut c = change(Operation::Create, None, &new);
    c.origin_remote = Some("hub");
    let items = index.capture(&c);
    assert!(items.iter().all(|i| i.remote_system == "other"));
    assert_eq!(items.len(), 1);
}
