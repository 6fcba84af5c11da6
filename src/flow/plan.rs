//! The inbound apply as a plan: from an inbound item, its payload and the
//! facts the store read in its transaction (the sender's correlations, the
//! records they reach, the journal ids and attachments those hold, the
//! contents that arrived), what the store is to write. Pure: no storage,
//! no I/O; the store reads the facts and writes the plan.

use std::collections::{BTreeMap, BTreeSet};

use super::conflict::{self, Here, Incoming};
use super::{FlowOutcome, basic_inbound, run_script};
use crate::attachment::{Attachment, AttachmentLimits, check_incoming, plan_inbound};
use crate::config::sync::InboundFlow;
use crate::queue::{
    ConflictRule, FieldConflict, FlowTrace, InboundItem, Payload, SyncUpdate, Synced, Winner,
};
use crate::record::{Operation, RecordWrite};

/// An item whose payload parsed and whose inbound flow is known: what the
/// store needs to know to read the facts.
pub struct Understood {
    pub payload: Payload,
    pub flow: InboundFlow,
    /// How a conflict is settled: the flow's rule, or the operator's
    /// choice when `queue inbound resolve` runs the item again.
    pub rule: ConflictRule,
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

    /// The values the item carries for the flow's `match_on` fields (ours),
    /// when it has them; `Err` names the first it lacks.
    pub fn match_values(&self) -> Result<Vec<(String, String)>, String> {
        let sent: BTreeMap<String, String> = self
            .payload
            .changed_fields
            .iter()
            .map(|f| (f.key.clone(), f.value.clone()))
            .collect();
        let sources = conflict::sources(&self.flow, &sent);
        let mut out = Vec::new();
        for field in &self.flow.match_on {
            let value = sources
                .iter()
                .find(|(to, _)| to == field)
                .and_then(|(_, from)| sent.get(*from).cloned());
            match value {
                Some(value) => out.push((field.clone(), value)),
                None => {
                    return Err(format!(
                        "inbound flow `{}` matches records on `{field}`, which the payload does not carry; add it to the sender's capture fields (or remove it from match_on) and retry this item",
                        self.flow.name
                    ));
                }
            }
        }
        Ok(out)
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
    /// What the known record's correlation says was last exchanged.
    pub synced: BTreeMap<String, Synced>,
    /// When the known record was deleted here, if the correlation says.
    pub deleted_on: Option<u64>,
    /// Our record not yet correlated with the sender that holds the same
    /// values of the flow's `match_on` fields, when the item reaches no
    /// record otherwise.
    pub matched: Option<String>,
}

/// A record as the plan needs to see it.
#[derive(Clone, Debug, Default)]
pub struct HeldRecord {
    /// Read only when the payload lists or removes attachments.
    pub attachments: Vec<Attachment>,
    /// Ids of the journal entries it holds (read only when the payload
    /// carries journal entries).
    pub journal_ids: BTreeSet<String>,
    /// Its fields (read only when the item says what its fields replace).
    pub fields: BTreeMap<String, String>,
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
    /// The flow's rule is `error` and the item conflicts with changes made
    /// here: nothing is written and it waits in Error for a person.
    Hold(String),
}

/// The plan with what it settled: the conflicts it met and what the
/// correlation is to say was last exchanged once the write is made.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub plan: InboundPlan,
    pub conflicts: Vec<FieldConflict>,
    pub sync: SyncUpdate,
}

impl From<InboundPlan> for Planned {
    fn from(plan: InboundPlan) -> Planned {
        Planned {
            plan,
            conflicts: Vec::new(),
            sync: SyncUpdate::default(),
        }
    }
}

/// Parses the payload and finds the flow; `Err` says why the item fails
/// (its plan is `InboundPlan::Fail`). Notes both steps in `trace`.
pub fn understand(
    item: &InboundItem,
    flow: Option<&InboundFlow>,
    trace: &mut FlowTrace,
) -> Result<Understood, String> {
    match item.payload.decode() {
        Ok(payload) => understand_decoded(item, payload, flow, trace),
        Err(e) => {
            begin(item, trace);
            trace.step("payload", "does not parse");
            Err(format!("malformed payload: {e}"))
        }
    }
}

/// The inputs and flow a trace starts with.
fn begin(item: &InboundItem, trace: &mut FlowTrace) {
    // The rest of the inputs is told from the item when the context is
    // read (`InboundItem::context_inputs`).
    trace.inputs = item.stored_inputs();
    trace.flow = item.process_event.clone();
}

/// `understand` with the item's payload already decoded (by the check
/// on arrival).
pub fn understand_decoded(
    item: &InboundItem,
    payload: Payload,
    flow: Option<&InboundFlow>,
    trace: &mut FlowTrace,
) -> Result<Understood, String> {
    begin(item, trace);
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
    let rule = flow.conflict;
    Ok(Understood {
        payload,
        flow,
        rule,
    })
}

/// Correlates, maps (Basic template), settles conflicts with changes
/// made here, runs the script, drops journal entries the record already
/// holds and plans the attachments: the write the store is to make, or
/// why there is none, with what it settled.
pub fn plan(
    item: &InboundItem,
    understood: &Understood,
    facts: &InboundFacts,
    trace: &mut FlowTrace,
) -> Planned {
    let Understood {
        payload,
        flow,
        rule,
    } = understood;
    let correlated = match correlated(item, understood, facts, trace) {
        Ok(correlated) => correlated,
        Err(problem) => return InboundPlan::Fail(problem).into(),
    };
    let bases = conflict::bases_of(item);
    let incoming = conflict::incoming(item, *rule, &bases);
    let mut conflicts = match against_deletion(item, facts, &incoming, trace) {
        Ok(conflicts) => conflicts,
        Err(planned) => return *planned,
    };
    let mapping = if flow.script.trim().is_empty() {
        "the Basic template"
    } else {
        "the Basic template, then the flow's script"
    };
    let mut write = match basic_inbound(flow, item.operation, payload, correlated.as_deref()) {
        Ok(Some(write)) => write,
        Ok(None) => {
            trace.step("map", format!("{mapping}: nothing to change"));
            return InboundPlan::Nothing(correlated.unwrap_or_default()).into();
        }
        Err(problem) => {
            trace.step("map", format!("{mapping} failed"));
            return InboundPlan::Fail(problem).into();
        }
    };
    if let (Some((sys_id, false)), Operation::Create) = (&facts.known, write.operation) {
        // The record comes back under its own sys_id, so every
        // correlation with it still holds.
        write.sys_id = Some(sys_id.clone());
    }
    if let (Some(sys_id), false) = (&correlated, item.settles) {
        let found = against_ours(understood, facts, sys_id, &mut write, &incoming);
        if !found.is_empty() {
            note_conflicts(trace, item, &found);
            let undecided = found.iter().any(|c| c.winner == Winner::Undecided);
            let kept = write.operation == Operation::Delete && found[0].winner == Winner::Here;
            conflicts.extend(found);
            if undecided {
                return held(item, conflicts);
            }
            if kept {
                return settled(InboundPlan::Nothing(sys_id.clone()), conflicts);
            }
        }
    }
    if let Some(outcome) = run_script(flow, payload, &mut write, correlated.as_deref()) {
        return match outcome {
            FlowOutcome::Skip(reason) => {
                trace.step("map", format!("{mapping} skipped the item"));
                settled(InboundPlan::Skip(reason), conflicts)
            }
            FlowOutcome::Error(problem) => {
                trace.step("map", format!("{mapping} failed"));
                settled(InboundPlan::Fail(problem), conflicts)
            }
            FlowOutcome::Write(_) | FlowOutcome::Nothing => {
                unreachable!("a script only stops an item by skipping or failing it")
            }
        };
    }
    trace.step(
        "map",
        format!(
            "{mapping}: {} of {} fields",
            write.operation.as_str(),
            write.fields.len()
        ),
    );
    let sync = conflict::exchanged(&write, incoming.changed_on);
    if write.operation == Operation::Create {
        write
            .fields
            .insert("sys_domain".to_string(), item.domain.to_string());
    }
    if let Err(problem) =
        journal_and_attachments(item, payload, facts, &correlated, &mut write, trace)
    {
        return settled(InboundPlan::Fail(problem), conflicts);
    }
    Planned {
        plan: InboundPlan::Write(write),
        conflicts,
        sync,
    }
}

/// Drops journal entries the record already holds and plans the
/// attachments; `Err` refuses the item.
fn journal_and_attachments(
    item: &InboundItem,
    payload: &Payload,
    facts: &InboundFacts,
    correlated: &Option<String>,
    write: &mut RecordWrite,
    trace: &mut FlowTrace,
) -> Result<(), String> {
    let held_record = correlated.as_ref().and_then(|id| facts.records.get(id));
    // Journal entries the record already holds (by entry id) are not
    // appended again, whatever path they came by.
    if let Some(held_record) = held_record {
        write.journal.retain(|j| {
            j.origin
                .as_ref()
                .is_none_or(|o| !held_record.journal_ids.contains(&o.id))
        });
    }
    if write.operation == Operation::Delete
        || (payload.attachments.is_empty() && payload.removed_attachments.is_empty())
    {
        return Ok(());
    }
    match attachments(item, payload, facts, held_record, correlated.is_none()) {
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
            Ok(())
        }
        Err(problem) => {
            trace.step("attachments", "refused");
            Err(problem)
        }
    }
}

/// A change of our record deleted here meets the deletion by the rule;
/// `Err` ends the plan (the deletion stays, or the item is held).
fn against_deletion(
    item: &InboundItem,
    facts: &InboundFacts,
    incoming: &Incoming<'_>,
    trace: &mut FlowTrace,
) -> Result<Vec<FieldConflict>, Box<Planned>> {
    if !matches!(facts.known, Some((_, false)))
        || item.operation == Operation::Delete
        || item.settles
    {
        return Ok(Vec::new());
    }
    let deleted_on = facts.deleted_on.unwrap_or(0);
    let found = conflict::settle_deleted_here(item.operation, deleted_on, incoming);
    let winner = found.winner;
    let conflicts = vec![found];
    note_conflicts(trace, item, &conflicts);
    match winner {
        Winner::Here => Err(Box::new(settled(
            InboundPlan::Nothing(String::new()),
            conflicts,
        ))),
        Winner::Undecided => Err(Box::new(held(item, conflicts))),
        Winner::Peer => Ok(conflicts),
    }
}

/// The conflicts of an update or delete of our record `sys_id` with
/// changes made here; the fields the peer loses leave `write`.
fn against_ours(
    understood: &Understood,
    facts: &InboundFacts,
    sys_id: &str,
    write: &mut RecordWrite,
    incoming: &Incoming<'_>,
) -> Vec<FieldConflict> {
    let none = BTreeMap::new();
    let here = Here {
        fields: facts.records.get(sys_id).map_or(&none, |h| &h.fields),
        synced: &facts.synced,
    };
    if write.operation == Operation::Delete {
        let snapshot = understood
            .payload
            .changed_fields
            .iter()
            .map(|f| (f.key.clone(), f.value.clone()))
            .collect();
        conflict::settle_delete(&understood.flow, &snapshot, incoming, &here)
            .into_iter()
            .collect()
    } else {
        conflict::settle_update(&understood.flow, write, incoming, &here)
    }
}

/// The record the item is about (see `correlate`, then the flow's
/// `match_on`), noted in the trace; `Err` fails the item.
fn correlated(
    item: &InboundItem,
    understood: &Understood,
    facts: &InboundFacts,
    trace: &mut FlowTrace,
) -> Result<Option<String>, String> {
    let flow = &understood.flow;
    let correlated = match correlate(item, &flow.table, facts) {
        Ok(correlated) => correlated,
        Err(problem) => {
            trace.step("correlate", "refused: the named record is not this peer's");
            return Err(problem);
        }
    };
    if let Some(problem) = unmatchable(item, understood, facts, correlated.as_deref()) {
        trace.step("correlate", "refused: a match_on field is missing");
        return Err(problem);
    }
    trace.step(
        "correlate",
        match &correlated {
            Some(sys_id) if facts.matched.as_ref() == Some(sys_id) => {
                format!(
                    "our record {}/{sys_id}, matched on {:?}",
                    flow.table, flow.match_on
                )
            }
            Some(sys_id) => format!("our record {}/{sys_id}", flow.table),
            None if facts.known.is_some() => "our record was deleted here".to_string(),
            None => "no record yet: a new one".to_string(),
        },
    );
    Ok(correlated)
}

/// Why an item that reaches no record cannot be matched by the flow's
/// `match_on` fields (the payload lacks one), if it cannot.
fn unmatchable(
    item: &InboundItem,
    understood: &Understood,
    facts: &InboundFacts,
    correlated: Option<&str>,
) -> Option<String> {
    let looks = correlated.is_none()
        && facts.known.is_none()
        && !understood.flow.match_on.is_empty()
        && item.operation != Operation::Delete;
    if looks {
        understood.match_values().err()
    } else {
        None
    }
}

fn settled(plan: InboundPlan, conflicts: Vec<FieldConflict>) -> Planned {
    Planned {
        plan,
        conflicts,
        sync: SyncUpdate::default(),
    }
}

/// The `error` rule's plan: the item waits, saying what conflicts.
fn held(item: &InboundItem, conflicts: Vec<FieldConflict>) -> Planned {
    let fields: Vec<String> = conflicts
        .iter()
        .map(|c| c.describe(&item.remote_system))
        .collect();
    let problem = format!(
        "conflict with changes made here since the last exchange with `{}`: {}; nothing was written: settle it with `procsync queue inbound resolve {} --take peer` or `--take local`",
        item.remote_system,
        fields.join("; "),
        item.id
    );
    settled(InboundPlan::Hold(problem), conflicts)
}

/// Notes each conflict in the trace: a step and the outputs.
fn note_conflicts(trace: &mut FlowTrace, item: &InboundItem, conflicts: &[FieldConflict]) {
    for conflict in conflicts {
        trace.step("conflict", conflict.describe(&item.remote_system));
    }
    trace.outputs["conflicts"] = serde_json::to_value(conflicts).unwrap_or_default();
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
        // A copy we already hold, found by the flow's match_on fields.
        return Ok(facts.matched.clone());
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
mod tests;
