//! The plan's unit tests: correlation, mapping, journals, attachments and
//! conflicts, each against facts made by hand.

use super::*;
use crate::domain::Domain;
use crate::queue::{QueueStatus, value_digest};

const PEER_ID: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const OURS: &str = "cccccccccccccccccccccccccccccccc";
const HASH: &str = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";

fn flow() -> InboundFlow {
    serde_json::from_value(serde_json::json!({
        "name": "in", "process_event": "e", "remote_system": "edge", "table": "incident",
    }))
    .expect("a flow")
}

fn item(operation: Operation, named: &str, payload: serde_json::Value) -> InboundItem {
    InboundItem {
        id: 1,
        sequence: 1,
        remote_system: "edge".into(),
        process_event: "e".into(),
        operation,
        source_table: "incident".into(),
        remote_correlation_id: PEER_ID.into(),
        local_correlation_id: named.into(),
        domain: Domain::global(),
        status: QueueStatus::Ready,
        created_on: 0,
        payload: crate::queue::EncodedPayload::from_text(payload.to_string()),
        error: None,
        processed_on: None,
        processing_ms: None,
        attachment_grants: Vec::new(),
        flow_contexts: Vec::new(),
        fetch_retries: Default::default(),
        waiting: None,
        bases: Vec::new(),
        changed_on: 0,
        settles: false,
        conflicts: Vec::new(),
    }
}

fn payload(journal: serde_json::Value, attachments: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "capture_metadata": {"changed_by": "alice", "timestamp": "2026-12-02 10:00:00",
            "operation": "update", "table": "incident", "sys_id": PEER_ID, "process_event": "e"},
        "changed_fields": [
            {"key": "state", "value": "2", "display_value": "In progress", "changed": true},
            {"key": "priority", "value": "1", "display_value": "1", "changed": false},
        ],
        "journal_entries": journal,
        "attachments": attachments,
    })
}

/// Understands and plans `item` against `facts`.
fn planned(item: &InboundItem, facts: &InboundFacts) -> InboundPlan {
    let mut trace = FlowTrace::start(0);
    let understood = understand(item, Some(&flow()), &mut trace).expect("understood");
    plan(item, &understood, facts, &mut trace).plan
}

fn held(journal_ids: &[&str]) -> BTreeMap<String, HeldRecord> {
    let record = HeldRecord {
        attachments: Vec::new(),
        journal_ids: journal_ids.iter().map(|s| s.to_string()).collect(),
        fields: BTreeMap::new(),
    };
    BTreeMap::from([(OURS.to_string(), record)])
}

#[test]
fn an_uncorrelated_item_creates_the_whole_record_in_the_items_domain() {
    let item = item(
        Operation::Update,
        "",
        payload(serde_json::json!([]), serde_json::json!([])),
    );
    let InboundPlan::Write(write) = planned(&item, &InboundFacts::default()) else {
        panic!("a write")
    };
    assert_eq!(write.operation, Operation::Create);
    assert_eq!(write.sys_id, None);
    assert_eq!(write.fields["state"], "2");
    assert_eq!(write.fields["priority"], "1");
    assert_eq!(write.fields["sys_domain"], "global");
}

#[test]
fn a_correlated_item_updates_only_the_changed_fields_of_our_record() {
    let item = item(
        Operation::Update,
        "",
        payload(serde_json::json!([]), serde_json::json!([])),
    );
    let facts = InboundFacts {
        known: Some((OURS.into(), true)),
        records: held(&[]),
        ..Default::default()
    };
    let InboundPlan::Write(write) = planned(&item, &facts) else {
        panic!("a write")
    };
    assert_eq!(write.operation, Operation::Update);
    assert_eq!(write.sys_id.as_deref(), Some(OURS));
    assert_eq!(write.fields.keys().collect::<Vec<_>>(), ["state"]);
}

#[test]
fn a_named_record_is_reached_only_through_the_senders_correlation() {
    let item = item(
        Operation::Update,
        OURS,
        payload(serde_json::json!([]), serde_json::json!([])),
    );
    // We sent it and no answer came yet: the item answers about it.
    let sent = InboundFacts {
        named: Some(Some(String::new())),
        ..Default::default()
    };
    assert_eq!(
        correlate(&item, "incident", &sent),
        Ok(Some(OURS.to_string()))
    );
    // Correlated with another of the sender's records, or not with the
    // sender at all: refused, nothing written.
    let other = InboundFacts {
        named: Some(Some("e".repeat(32))),
        ..Default::default()
    };
    let InboundPlan::Fail(problem) = planned(&item, &other) else {
        panic!("refused")
    };
    assert!(problem.contains("not with its record"), "{problem}");
    let foreign = InboundFacts {
        named: Some(None),
        ..Default::default()
    };
    let InboundPlan::Fail(problem) = planned(&item, &foreign) else {
        panic!("refused")
    };
    assert!(
        problem.contains("not correlated with remote system `edge`"),
        "{problem}"
    );
    // A named record we do not hold makes a new one.
    assert_eq!(
        correlate(&item, "incident", &InboundFacts::default()),
        Ok(None)
    );
}

#[test]
fn a_delete_of_a_record_never_correlated_changes_nothing() {
    let item = item(
        Operation::Delete,
        "",
        payload(serde_json::json!([]), serde_json::json!([])),
    );
    assert_eq!(
        planned(&item, &InboundFacts::default()),
        InboundPlan::Nothing(String::new())
    );
}

#[test]
fn journal_entries_the_record_holds_are_not_appended_again() {
    let journal = serde_json::json!([
        {"field": "comments", "id": "j1", "author": "alice", "time": "2026-12-02 09:00:00", "text": "old"},
        {"field": "comments", "id": "j2", "author": "bob", "time": "2026-12-02 09:30:00", "text": "new"},
    ]);
    let item = item(
        Operation::Update,
        "",
        payload(journal, serde_json::json!([])),
    );
    let facts = InboundFacts {
        known: Some((OURS.into(), true)),
        records: held(&["j1"]),
        ..Default::default()
    };
    let InboundPlan::Write(write) = planned(&item, &facts) else {
        panic!("a write")
    };
    let texts: Vec<_> = write.journal.iter().map(|j| j.text.as_str()).collect();
    assert_eq!(texts, ["new"]);
    let origin = write.journal[0].origin.as_ref().expect("origin");
    assert_eq!((origin.id.as_str(), origin.author.as_str()), ("j2", "bob"));
}

#[test]
fn an_attachment_is_attached_only_once_its_content_arrived_with_its_size() {
    let attachments = serde_json::json!([{"sys_id": "a1", "file_name": "log.txt",
        "content_type": "text/plain", "size": 5, "hash": HASH, "added": true}]);
    let item = item(
        Operation::Update,
        "",
        payload(serde_json::json!([]), attachments),
    );
    let InboundPlan::Fail(problem) = planned(&item, &InboundFacts::default()) else {
        panic!("refused")
    };
    assert!(problem.contains("has not arrived from `edge`"), "{problem}");
    let lying = InboundFacts {
        contents: BTreeMap::from([(HASH.to_string(), 6)]),
        ..Default::default()
    };
    let InboundPlan::Fail(problem) = planned(&item, &lying) else {
        panic!("refused")
    };
    assert!(problem.contains("its size lies"), "{problem}");
    let arrived = InboundFacts {
        contents: BTreeMap::from([(HASH.to_string(), 5)]),
        ..Default::default()
    };
    let InboundPlan::Write(write) = planned(&item, &arrived) else {
        panic!("a write")
    };
    assert_eq!(write.attachments.attach.len(), 1);
    assert_eq!(write.attachments.attach[0].file_name, "log.txt");
}

#[test]
fn a_malformed_payload_or_an_unknown_event_fails_the_item() {
    let mut broken = item(Operation::Update, "", serde_json::json!({"nope": 1}));
    let mut trace = FlowTrace::start(0);
    let Err(problem) = understand(&broken, Some(&flow()), &mut trace) else {
        panic!("refused")
    };
    assert!(problem.starts_with("malformed payload"), "{problem}");
    broken.payload = crate::queue::EncodedPayload::from_text(
        payload(serde_json::json!([]), serde_json::json!([])).to_string(),
    );
    let Err(problem) = understand(&broken, None, &mut trace) else {
        panic!("refused")
    };
    assert!(
        problem.contains("no inbound flow receives process event `e`"),
        "{problem}"
    );
}

#[test]
fn a_script_skip_is_the_plan() {
    let item = item(
        Operation::Update,
        "",
        payload(serde_json::json!([]), serde_json::json!([])),
    );
    let mut flow = flow();
    flow.script = r#"if payload.fields.state == "2" { skip("not ours") }"#.into();
    let mut trace = FlowTrace::start(0);
    let understood = understand(&item, Some(&flow), &mut trace).expect("understood");
    assert_eq!(
        plan(&item, &understood, &InboundFacts::default(), &mut trace).plan,
        InboundPlan::Skip("not ours".into())
    );
}

/// Our record holding `state` = `ours`, last exchanged as `synced`, and
/// an update from the peer setting `state` to "2" over `base`.
fn conflicting(
    rule: ConflictRule,
    ours: &str,
    synced: Option<Synced>,
    base: &str,
    peer_on: u64,
) -> Planned {
    let mut item = item(
        Operation::Update,
        "",
        payload(serde_json::json!([]), serde_json::json!([])),
    );
    item.bases = vec![crate::queue::FieldBase {
        field: "state".into(),
        digest: value_digest(base),
    }];
    item.changed_on = peer_on;
    let mut records = held(&[]);
    records.get_mut(OURS).expect("held").fields = BTreeMap::from([
        ("state".to_string(), ours.to_string()),
        ("priority".to_string(), "1".to_string()),
    ]);
    let facts = InboundFacts {
        known: Some((OURS.into(), true)),
        records,
        synced: synced
            .map(|s| BTreeMap::from([("state".to_string(), s)]))
            .unwrap_or_default(),
        ..Default::default()
    };
    let mut trace = FlowTrace::start(0);
    let mut understood = understand(&item, Some(&flow()), &mut trace).expect("understood");
    understood.rule = rule;
    plan(&item, &understood, &facts, &mut trace)
}

fn ours_at(on: u64) -> Option<Synced> {
    Some(Synced {
        digest: value_digest("3"),
        on,
        by_peer: false,
    })
}

#[test]
fn a_field_changed_on_both_sides_is_settled_by_the_rule() {
    // Here "1" became "3" at 200; the peer made it "2" at 100 or 300.
    let older = conflicting(ConflictRule::NewestWins, "3", ours_at(200), "1", 100);
    let InboundPlan::Write(write) = &older.plan else {
        panic!("a write")
    };
    assert!(!write.fields.contains_key("state"), "ours is newer");
    assert_eq!(older.conflicts.len(), 1);
    assert_eq!(older.conflicts[0].winner, Winner::Here);
    assert_eq!(
        (
            older.conflicts[0].here.as_str(),
            older.conflicts[0].peer.as_str()
        ),
        ("3", "2")
    );
    let newer = conflicting(ConflictRule::NewestWins, "3", ours_at(200), "1", 300);
    let InboundPlan::Write(write) = &newer.plan else {
        panic!("a write")
    };
    assert_eq!(write.fields["state"], "2");
    assert_eq!(newer.sync.fields["state"].digest, value_digest("2"));
    assert!(newer.sync.fields["state"].by_peer);
    let peer = conflicting(ConflictRule::PeerWins, "3", ours_at(200), "1", 100);
    assert_eq!(peer.conflicts[0].winner, Winner::Peer);
    let here = conflicting(ConflictRule::ThisSideWins, "3", ours_at(200), "1", 300);
    assert_eq!(here.conflicts[0].winner, Winner::Here);
    let held = conflicting(ConflictRule::Error, "3", ours_at(200), "1", 300);
    let InboundPlan::Hold(problem) = &held.plan else {
        panic!("held")
    };
    assert!(
        problem.contains(r#"`state`: here "3", from `edge` "2""#)
            && problem.contains("queue inbound resolve 1 --take peer"),
        "{problem}"
    );
}

#[test]
fn a_field_only_the_peer_changed_is_no_conflict() {
    // Ours still holds what the peer last knew.
    let untouched = conflicting(ConflictRule::Error, "1", None, "1", 300);
    assert!(untouched.conflicts.is_empty());
    assert!(matches!(untouched.plan, InboundPlan::Write(_)));
    // Ours is what we last took from the peer.
    let taken = Some(Synced {
        digest: value_digest("3"),
        on: 50,
        by_peer: true,
    });
    let taken = conflicting(ConflictRule::Error, "3", taken, "1", 300);
    assert!(taken.conflicts.is_empty(), "{:?}", taken.conflicts);
    // Both sides made the same change.
    let same = conflicting(ConflictRule::Error, "2", ours_at(200), "1", 300);
    assert!(same.conflicts.is_empty());
}

#[test]
fn a_change_meets_a_deletion_by_the_same_rule() {
    let mut update = item(
        Operation::Update,
        "",
        payload(serde_json::json!([]), serde_json::json!([])),
    );
    update.changed_on = 300;
    let deleted = |deleted_on| InboundFacts {
        known: Some((OURS.into(), false)),
        deleted_on: Some(deleted_on),
        ..Default::default()
    };
    let mut trace = FlowTrace::start(0);
    let understood = understand(&update, Some(&flow()), &mut trace).expect("understood");
    // Deleted here before the peer's change: the record comes back.
    let back = plan(&update, &understood, &deleted(200), &mut trace);
    let InboundPlan::Write(write) = &back.plan else {
        panic!("a write")
    };
    assert_eq!(write.operation, Operation::Create);
    assert_eq!(back.conflicts[0].winner, Winner::Peer);
    // Deleted here after it (or at the same moment): it stays deleted.
    for at in [300, 400] {
        let gone = plan(&update, &understood, &deleted(at), &mut trace);
        assert_eq!(gone.plan, InboundPlan::Nothing(String::new()), "at {at}");
    }
}

#[test]
fn a_deletion_of_a_record_changed_here_later_keeps_it() {
    let mut delete = item(
        Operation::Delete,
        "",
        payload(serde_json::json!([]), serde_json::json!([])),
    );
    delete.bases = vec![crate::queue::FieldBase {
        field: "state".into(),
        digest: value_digest("1"),
    }];
    delete.changed_on = 100;
    let mut records = held(&[]);
    records.get_mut(OURS).expect("held").fields =
        BTreeMap::from([("state".to_string(), "3".to_string())]);
    let facts = InboundFacts {
        known: Some((OURS.into(), true)),
        records,
        synced: BTreeMap::from([("state".to_string(), ours_at(200).unwrap())]),
        ..Default::default()
    };
    let mut trace = FlowTrace::start(0);
    let understood = understand(&delete, Some(&flow()), &mut trace).expect("understood");
    let kept = plan(&delete, &understood, &facts, &mut trace);
    assert_eq!(
        kept.plan,
        InboundPlan::Nothing(OURS.to_string()),
        "{kept:?}"
    );
    assert_eq!(kept.conflicts[0].winner, Winner::Here);
}
