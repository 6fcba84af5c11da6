//! The inbound apply as a plan: from an inbound item, its payload and the
//! facts the store read in its transaction (the sender's correlations, the
//! records they reach, the journal ids and attachments those hold, the
//! contents that arrived), what the store is to write. Pure: no storage,
//! no I/O; the store reads the facts and writes the plan.

use std::collections::{BTreeMap, BTreeSet};

use super::{FlowOutcome, run_inbound};
use crate::attachment::{Attachment, AttachmentLimits, check_incoming, plan_inbound};
use crate::config::sync::InboundFlow;
use crate::queue::{FlowTrace, InboundItem, Payload};
use crate::record::{Operation, RecordWrite};

/// An item whose payload parsed and whose inbound flow is known: what the
/// store needs to know to read the facts.
pub struct Understood {
    pub payload: Payload,
    pub flow: InboundFlow,
}

impl Understood {
    /// The table the flow writes.
    pub fn table(&self) -> &str {
        &self.flow.table
    }

    /// Whether the plan needs the journal ids of the records it may reach.
    pub fn needs_journal_ids(&self) -> bool {
        !self.payload.journal_entries.is_empty()
    }

    /// Whether the plan needs the attachments of the records it may reach.
    pub fn needs_attachments(&self) -> bool {
        !self.payload.attachments.is_empty() || !self.payload.removed_attachments.is_empty()
    }

    /// The contents the payload's attachments name, whose stored sizes the
    /// plan needs.
    pub fn content_hashes(&self) -> impl Iterator<Item = &str> {
        self.payload.attachments.iter().map(|a| a.hash.as_str())
    }
}

/// What the store read for one item, in the transaction that applies it.
#[derive(Clone, Debug, Default)]
pub struct InboundFacts {
    /// Our record correlated with the sender's record (in the flow's
    /// table), if any: its sys_id and whether it still exists.
    pub known: Option<(String, bool)>,
    /// The record the item names (`local_correlation_id`) when it exists
    /// here: `Some(peer id)` of its correlation with the sender (empty:
    /// we sent it and no answer came yet), `None` when it has none.
    pub named: Option<Option<String>>,
    /// The records the item may reach (the known one and the named one), as
    /// held here.
    pub records: BTreeMap<String, HeldRecord>,
    /// Stored sizes of the complete contents the payload names.
    pub contents: BTreeMap<String, u64>,
}

/// A record as the plan needs to see it.
#[derive(Clone, Debug, Default)]
pub struct HeldRecord {
    /// Read only when the payload lists or removes attachments.
    pub attachments: Vec<Attachment>,
    /// Ids of the journal entries it holds (read only when the payload
    /// carries journal entries).
    pub journal_ids: BTreeSet<String>,
}

/// What applying one item comes to.
#[derive(Clone, Debug, PartialEq)]
pub enum InboundPlan {
    /// Write this record change, then correlate the written record with the
    /// sender's record.
    Write(RecordWrite),
    /// Nothing to change; the item is Processed for this record (empty when
    /// none).
    Nothing(String),
    /// The flow's script skipped the item.
    Skip(String),
    /// The item is at fault; nothing is written and it goes to Error.
    Fail(String),
}

/// Parses the payload and finds the flow; `Err` says why the item fails
/// (its plan is `InboundPlan::Fail`). Notes both steps in `trace`.
pub fn understand(
    item: &InboundItem,
    flow: Option<&InboundFlow>,
    trace: &mut FlowTrace,
) -> Result<Understood, String> {
    trace.flow = item.process_event.clone();
    trace.inputs = serde_json::json!({
        "operation": item.operation, "source_table": item.source_table,
        "remote_correlation_id": item.remote_correlation_id,
        "local_correlation_id": item.local_correlation_id, "payload_bytes": item.payload.len(),
    });
    let payload: Payload = match serde_json::from_str(&item.payload) {
        Ok(payload) => payload,
        Err(e) => {
            trace.step("payload", "does not parse");
            return Err(format!("malformed payload: {e}"));
        }
    };
    trace.inputs["changed_fields"] = payload
        .changed_fields
        .iter()
        .filter(|f| f.changed)
        .map(|f| (f.key.clone(), serde_json::Value::from(f.value.clone())))
        .collect::<serde_json::Map<_, _>>()
        .into();
    trace.inputs["journal_entries"] = payload.journal_entries.len().into();
    trace.inputs["attachments"] = payload.attachments.len().into();
    trace.step(
        "payload",
        format!(
            "{} fields ({} changed), {} journal entries, {} attachments",
            payload.changed_fields.len(),
            payload.changed_fields.iter().filter(|f| f.changed).count(),
            payload.journal_entries.len(),
            payload.attachments.len()
        ),
    );
    let Some(flow) = flow.cloned() else {
        trace.step("inbound flow", "none receives this process event");
        return Err(format!(
            "no inbound flow receives process event `{}` from remote system `{}`; add one and retry this item",
            item.process_event, item.remote_system
        ));
    };
    trace.flow = flow.name.clone();
    trace.step(
        "inbound flow",
        format!("`{}` maps onto table `{}`", flow.name, flow.table),
    );
    Ok(Understood { payload, flow })
}

/// Correlates, maps (Basic template, then the script), drops journal
/// entries the record already holds and plans the attachments: the write
/// the store is to make, or why there is none.
pub fn plan(
    item: &InboundItem,
    understood: &Understood,
    facts: &InboundFacts,
    trace: &mut FlowTrace,
) -> InboundPlan {
    let Understood { payload, flow } = understood;
    let correlated = match correlate(item, &flow.table, facts) {
        Ok(correlated) => correlated,
        Err(problem) => {
            trace.step("correlate", "refused: the named record is not this peer's");
            return InboundPlan::Fail(problem);
        }
    };
    trace.step(
        "correlate",
        match &correlated {
            Some(sys_id) => format!("our record {}/{sys_id}", flow.table),
            None => "no record yet: a new one".to_string(),
        },
    );
    let mapping = if flow.script.trim().is_empty() {
        "the Basic template"
    } else {
        "the Basic template, then the flow's script"
    };
    let mut write = match run_inbound(flow, item.operation, payload, correlated.as_deref()) {
        FlowOutcome::Write(write) => write,
        FlowOutcome::Nothing => {
            trace.step("map", format!("{mapping}: nothing to change"));
            return InboundPlan::Nothing(correlated.unwrap_or_default());
        }
        FlowOutcome::Skip(reason) => {
            trace.step("map", format!("{mapping} skipped the item"));
            return InboundPlan::Skip(reason);
        }
        FlowOutcome::Error(problem) => {
            trace.step("map", format!("{mapping} failed"));
            return InboundPlan::Fail(problem);
        }
    };
    trace.step(
        "map",
        format!(
            "{mapping}: {} of {} fields",
            write.operation.as_str(),
            write.fields.len()
        ),
    );
    if write.operation == Operation::Create {
        write
            .fields
            .insert("sys_domain".to_string(), item.domain.to_string());
    }
    let held = correlated.as_ref().and_then(|id| facts.records.get(id));
    // Journal entries the record already holds (by entry id) are not
    // appended again, whatever path they came by.
    if let Some(held) = held {
        write.journal.retain(|j| {
            j.origin
                .as_ref()
                .is_none_or(|o| !held.journal_ids.contains(&o.id))
        });
    }
    if write.operation != Operation::Delete
        && (!payload.attachments.is_empty() || !payload.removed_attachments.is_empty())
    {
        match attachments(item, payload, facts, held, correlated.is_none()) {
            Ok(changes) => {
                trace.step(
                    "attachments",
                    format!(
                        "{} to attach, {} to remove",
                        changes.attach.len(),
                        changes.detach.len()
                    ),
                );
                write.attachments = changes;
            }
            Err(problem) => {
                trace.step("attachments", "refused");
                return InboundPlan::Fail(problem);
            }
        }
    }
    InboundPlan::Write(write)
}

/// The local record the item is about: the one correlated with the
/// sender's record, else the one the sender names when it is correlated
/// with the sender, else none (a new record, also when the named record
/// does not exist here). `Err` refuses an item naming a record the sender
/// has no correlation with (a record of this instance, or of another
/// remote): a peer reaches our records only through its own correlations.
pub fn correlate(
    item: &InboundItem,
    table: &str,
    facts: &InboundFacts,
) -> Result<Option<String>, String> {
    if let Some((sys_id, exists)) = &facts.known {
        return Ok(exists.then(|| sys_id.clone()));
    }
    let named = item.local_correlation_id.as_str();
    // Naming no record, or one we do not have (the sender's knowledge of
    // us is older than our store), makes a new record: nothing of ours is
    // reached.
    let Some(correlation) = facts.named.as_ref().filter(|_| !named.is_empty()) else {
        return Ok(None);
    };
    let remote = item.remote_system.as_str();
    match correlation {
        // We sent this record to the sender and it answers about it (the
        // correlation learns the sender's id with this item).
        Some(peer_id) if peer_id.is_empty() || *peer_id == item.remote_correlation_id => {
            Ok(Some(named.to_string()))
        }
        Some(peer_id) => Err(format!(
            "the item names record {table}/{named}, which is correlated with `{remote}`'s record {peer_id}, not with its record {}; nothing was written (skip this item, or check the sender's correlations)",
            item.remote_correlation_id
        )),
        None => Err(format!(
            "the item names record {table}/{named}, which is not correlated with remote system `{remote}`: a peer may change only records it sent or was sent; nothing was written (skip this item)"
        )),
    }
}

/// The attachment changes the item makes to its target record; `Err`
/// refuses the item. Every content to attach must have arrived (the
/// inbound processor fetches them first) with the claimed size.
fn attachments(
    item: &InboundItem,
    payload: &Payload,
    facts: &InboundFacts,
    held: Option<&HeldRecord>,
    first_sync: bool,
) -> Result<crate::attachment::AttachmentChanges, String> {
    check_incoming(
        &payload.attachments,
        &payload.removed_attachments,
        &AttachmentLimits::default(),
    )?;
    let target = held.map(|h| h.attachments.as_slice()).unwrap_or_default();
    let changes = plan_inbound(
        &payload.attachments,
        &payload.removed_attachments,
        payload.attachment_strategy.unwrap_or_default(),
        first_sync,
        target,
        &item.remote_system,
    );
    for attachment in &changes.attach {
        match facts.contents.get(&attachment.hash) {
            None => {
                return Err(format!(
                    "attachment {:?} ({}) has not arrived from `{}`; retry this item",
                    attachment.file_name, attachment.hash, item.remote_system
                ));
            }
            Some(&size) if size != attachment.size => {
                return Err(format!(
                    "attachment {:?} claims {} bytes, but its content ({}) has {size} (its size lies)",
                    attachment.file_name, attachment.size, attachment.hash
                ));
            }
            Some(_) => {}
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Domain;
    use crate::queue::QueueStatus;

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
            payload: payload.to_string(),
            error: None,
            processed_on: None,
            processing_ms: None,
            attachment_grants: Vec::new(),
            flow_contexts: Vec::new(),
            fetch_retries: Default::default(),
            waiting: None,
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
        plan(item, &understood, facts, &mut trace)
    }

    fn held(journal_ids: &[&str]) -> BTreeMap<String, HeldRecord> {
        let record = HeldRecord {
            attachments: Vec::new(),
            journal_ids: journal_ids.iter().map(|s| s.to_string()).collect(),
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
        broken.payload = payload(serde_json::json!([]), serde_json::json!([])).to_string();
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
            plan(&item, &understood, &InboundFacts::default(), &mut trace),
            InboundPlan::Skip("not ours".into())
        );
    }
}
