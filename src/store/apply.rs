//! The apply of one inbound item: read the facts its plan needs in the
//! writer's transaction, have the flow plan it (`flow::plan`), and write
//! the plan: the record change (captured for every remote but the
//! sender), the correlation with what was exchanged, the item's status.

use redb::ReadableTable;

use super::codec::{decode, encode};
use super::compact::keyed::{correlation_at, record_at};
use super::counters::Counters;
use super::records::{RecordWriteLimits, prepare, write_prepared};
use super::tables::*;
use super::writer::Txn;
use super::{Actor, StoreError};
use crate::failure::Classified;
use crate::flow::plan::{self, HeldRecord, InboundFacts, InboundPlan, Planned, Understood};
use crate::ids::now_millis;
use crate::queue::{ConflictRule, FieldConflict, FlowTrace, InboundItem, QueueStatus};
use crate::record::{JournalEntry, Operation};

/// Runs the inbound flow of item `id` as `run_as`: correlate, map, write
/// the record (capturing it for every remote but the sender), update the
/// correlation and mark the item Processed, all in this transaction. A
/// problem with the item puts it in Error instead, with nothing else
/// written.
pub fn apply_inbound(
    txn: &mut Txn<'_>,
    id: u64,
    run_as: &Actor,
    limits: &RecordWriteLimits,
) -> Result<InboundItem, StoreError> {
    apply_inbound_settling(txn, id, run_as, limits, None)
}

/// `apply_inbound`, settling conflicts by `rule` instead of the flow's
/// rule when given (an operator's `resolve`).
pub(super) fn apply_inbound_settling(
    txn: &mut Txn<'_>,
    id: u64,
    run_as: &Actor,
    limits: &RecordWriteLimits,
    rule: Option<ConflictRule>,
) -> Result<InboundItem, StoreError> {
    let started = std::time::Instant::now();
    let mut item = load_inbound(txn, id)?;
    if item.status != QueueStatus::Ready {
        return Ok(item);
    }
    let mut trace = FlowTrace::start(now_millis());
    match run_flow(
        txn,
        &item,
        run_as,
        limits,
        Run::Processing(rule),
        &mut trace,
    )? {
        FlowResult::Applied(local_id) => {
            item.status = QueueStatus::Processed;
            item.local_correlation_id = local_id;
            item.error = None;
            item.conflicts.clear();
        }
        FlowResult::Held(problem, conflicts) => {
            item.status = QueueStatus::Error;
            item.error = Some(problem);
            item.conflicts = conflicts;
        }
        FlowResult::Skipped(reason) => {
            item.status = QueueStatus::Skipped;
            item.error = Some(format!("skipped by the flow's script: {reason}"));
        }
        FlowResult::Failed(problem) => {
            item.status = QueueStatus::Error;
            item.error = Some(problem);
        }
        // Not for `Run::Processing`; were it, the item would stay Ready.
        FlowResult::NotApplied => return Ok(item),
    }
    finish(txn, &mut item, started, trace)?;
    txn.inbound()?.insert(id, encode(&item).as_slice())?;
    super::stats::Tally::count_inbound(txn, &item, Some(QueueStatus::Ready))?;
    Ok(item)
}

/// Stamps the end of a processing on `item` and links its context.
fn finish(
    txn: &Txn<'_>,
    item: &mut InboundItem,
    started: std::time::Instant,
    mut trace: FlowTrace,
) -> Result<(), StoreError> {
    item.processed_on = Some(now_millis());
    item.processing_ms = Some(crate::ids::millis(started.elapsed()));
    item.waiting = None;
    trace.step("finish", format!("the item is {}", item.status.as_str()));
    super::context::link_inbound(txn, trace, item)
}

/// Runs the inbound flow of `item`, just received and not yet stored, in
/// the receiving transaction (`inbound::receive`). Returns whether it was
/// applied: then the item is Processed with its context, and the caller
/// stores it. When the flow would not simply apply it (it would fail, skip,
/// hold a conflict or meet a refused write), nothing is written and the
/// item is left as it was, Ready, for the processor to run again and deal
/// with the outcome as always.
pub(super) fn apply_on_arrival(
    txn: &mut Txn<'_>,
    item: &mut InboundItem,
    payload: crate::queue::Payload,
    run_as: &Actor,
    limits: &RecordWriteLimits,
) -> Result<bool, StoreError> {
    let started = std::time::Instant::now();
    let mut trace = FlowTrace::start(now_millis());
    let run = Run::Arrival(Box::new(payload));
    let FlowResult::Applied(local_id) = run_flow(txn, item, run_as, limits, run, &mut trace)?
    else {
        return Ok(false);
    };
    item.status = QueueStatus::Processed;
    item.local_correlation_id = local_id;
    finish(txn, item, started, trace)?;
    Ok(true)
}

/// Which run of a flow `run_flow` makes, and so which outcomes it writes.
enum Run {
    /// The processor's (settling conflicts by this rule instead of the
    /// flow's when given): every outcome is written, the conflicts met
    /// counted.
    Processing(Option<ConflictRule>),
    /// On arrival, with the payload the arrival check decoded: only a
    /// plain apply (no conflict met) is written; anything else writes
    /// nothing and comes back as `FlowResult::NotApplied`.
    Arrival(Box<crate::queue::Payload>),
}

/// Reads the facts of item `item`, has the flow plan its apply and writes
/// the plan; `Err` only when storage failed.
fn run_flow(
    txn: &mut Txn<'_>,
    item: &InboundItem,
    run_as: &Actor,
    limits: &RecordWriteLimits,
    run: Run,
    trace: &mut FlowTrace,
) -> Result<FlowResult, StoreError> {
    let flow = txn
        .capture
        .inbound_flow(&item.process_event, &item.remote_system);
    let (rule, on_arrival, understood) = match run {
        Run::Processing(rule) => (rule, false, plan::understand(item, flow, trace)),
        Run::Arrival(payload) => (
            None,
            true,
            plan::understand_decoded(item, *payload, flow, trace),
        ),
    };
    let mut understood = match understood {
        Ok(understood) => understood,
        Err(problem) => return Ok(FlowResult::Failed(problem)),
    };
    if let Some(rule) = rule {
        understood.rule = rule;
    }
    let facts = read_facts(txn, item, &understood)?;
    let mut planned = plan::plan(item, &understood, &facts, trace);
    if rule.is_some() {
        // Settling a conflict already counted when it held the item.
        planned.conflicts.clear();
    }
    let plain = planned.conflicts.is_empty()
        && matches!(
            planned.plan,
            InboundPlan::Write(_) | InboundPlan::Nothing(_)
        );
    if on_arrival && !plain {
        return Ok(FlowResult::NotApplied);
    }
    write_plan(
        txn,
        item,
        planned,
        understood.table(),
        run_as,
        limits,
        trace,
    )
}

/// What the plan of `item` needs from the store: the sender's correlation
/// in the flow's table, the record the item names and its correlation,
/// those records' attachments and journal ids, the contents that arrived.
fn read_facts(
    txn: &Txn<'_>,
    item: &InboundItem,
    understood: &Understood,
) -> Result<InboundFacts, StoreError> {
    let table = understood.table();
    let remote = item.remote_system.as_str();
    let records = txn.records()?;
    let journal = txn.journal()?;
    let mut facts = InboundFacts::default();
    let hold = |facts: &mut InboundFacts, sys_id: &str| -> Result<bool, StoreError> {
        let Some(value) = records.get((table, sys_id))? else {
            return Ok(false);
        };
        let mut held = HeldRecord::default();
        if understood.needs_attachments() || !item.bases.is_empty() {
            let record = record_at(txn.names, (table, sys_id), value.value())?;
            held.attachments = record.attachments;
            held.fields = record.fields;
        }
        if understood.needs_journal_ids() {
            for row in journal.range((table, sys_id, 0u64)..=(table, sys_id, u64::MAX))? {
                let entry: JournalEntry = decode(row?.1.value())?;
                held.journal_ids.insert(entry.id);
            }
        }
        facts.records.insert(sys_id.to_string(), held);
        Ok(true)
    };
    let known = txn
        .correlations_by_remote()?
        .get((remote, item.remote_correlation_id.as_str()))?
        .map(|v| {
            let (known_table, sys_id) = v.value();
            (known_table.to_string(), sys_id.to_string())
        })
        .filter(|(known_table, _)| known_table == table)
        .map(|(_, sys_id)| sys_id);
    // What was exchanged with the sender about a record (the known one,
    // or the one it names before we learned its id) is read the same way.
    // Returns the sender's id for the record and whether our item for it
    // is still unsent.
    let with_sender = |sys_id: &str, facts: &mut InboundFacts| {
        let correlation = txn
            .correlations()?
            .get((table, sys_id, remote))?
            .map(|value| correlation_at(txn.names, (table, sys_id, remote), value.value()))
            .transpose()?;
        let Some(correlation) = correlation else {
            return Ok::<_, StoreError>(None);
        };
        let unsent = !super::correlations::known_to_remote(txn, &correlation)?;
        facts.synced = correlation.synced;
        facts.deleted_on = correlation.deleted_on;
        Ok(Some((correlation.remote_correlation_id, unsent)))
    };
    if let Some(sys_id) = known {
        let exists = hold(&mut facts, &sys_id)?;
        with_sender(&sys_id, &mut facts)?;
        facts.known = Some((sys_id, exists));
    }
    let named = item.local_correlation_id.as_str();
    if !named.is_empty() && facts.known.is_none() {
        let held = hold(&mut facts, named)?;
        // A correlation whose item was not sent yet gives the sender
        // nothing: it cannot know the record.
        let peer_id = with_sender(named, &mut facts)?
            .filter(|(_, unsent)| !unsent)
            .map(|(peer_id, _)| peer_id);
        if held {
            facts.named = Some(peer_id);
        } else if peer_id.is_some_and(|id| id.is_empty() || id == item.remote_correlation_id) {
            // Our record we sent the sender, deleted here since: the
            // change meets the deletion (see `flow::conflict`).
            facts.known = Some((named.to_string(), false));
        }
    }
    if facts.known.is_none()
        && facts.named.is_none()
        && !understood.flow.match_on.is_empty()
        && item.operation != Operation::Delete
    {
        facts.matched = matching(txn, &records, (remote, table), &understood.match_values())?;
    }
    for hash in understood.content_hashes() {
        if let Some(size) = super::content::stored_size(txn, hash)? {
            facts.contents.insert(hash.to_string(), size);
        }
    }
    Ok(facts)
}

/// Writes what the plan says: the record change (captured for every
/// remote but the sender) and the correlation, or nothing.
fn write_plan(
    txn: &mut Txn<'_>,
    item: &InboundItem,
    planned: Planned,
    table: &str,
    run_as: &Actor,
    limits: &RecordWriteLimits,
    trace: &mut FlowTrace,
) -> Result<FlowResult, StoreError> {
    let Planned {
        plan,
        conflicts,
        sync,
    } = planned;
    if !conflicts.is_empty() {
        let mut counters = Counters::load(txn)?;
        for _ in &conflicts {
            counters.next(&conflicts_counter(&item.remote_system))?;
        }
        counters.save();
    }
    let write = match plan {
        InboundPlan::Write(write) => write,
        InboundPlan::Nothing(local_id) => return Ok(FlowResult::Applied(local_id)),
        InboundPlan::Skip(reason) => return Ok(FlowResult::Skipped(reason)),
        InboundPlan::Fail(problem) => return Ok(FlowResult::Failed(problem)),
        InboundPlan::Hold(problem) => return Ok(FlowResult::Held(problem, conflicts)),
    };
    let prepared = {
        let records = txn.records()?;
        let capture = txn.capture.clone();
        prepare(
            (&*records, txn.names),
            run_as,
            std::slice::from_ref(&write),
            limits,
            &capture,
            Some(&item.remote_system),
        )
    };
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(refused) if refused.failure().is_input() => {
            trace.step("write", "refused");
            return Ok(FlowResult::Failed(format!(
                "inbound flow `{}` (running as `{}`) could not write to `{table}`: {refused}",
                trace.flow, run_as.user
            )));
        }
        Err(other) => return Err(other),
    };
    let results = write_prepared(txn, prepared)?;
    let local_id = results[0].sys_id.clone();
    trace.step(
        "write",
        format!(
            "{} {table}/{local_id} as `{}`",
            write.operation.as_str(),
            run_as.user
        ),
    );
    let conflicts_noted = trace.outputs.get("conflicts").cloned();
    trace.outputs = serde_json::json!({
        "table": table, "sys_id": local_id, "operation": write.operation,
        "fields": write.fields, "journal_entries": write.journal.len(),
        "attachments_added": write.attachments.attach.len(),
        "attachments_removed": write.attachments.detach.len(),
    });
    if let Some(noted) = conflicts_noted {
        trace.outputs["conflicts"] = noted;
    }
    super::correlations::correlate_with(
        txn,
        (table, &local_id, write.creates_fresh()),
        (&item.remote_system, &item.remote_correlation_id),
        write.operation != Operation::Delete,
        sync,
    )?;
    trace.step(
        "correlation",
        format!(
            "{table}/{local_id} is `{}`'s {}",
            item.remote_system, item.remote_correlation_id
        ),
    );
    Ok(FlowResult::Applied(local_id))
}

/// What running an item's flow came to.
enum FlowResult {
    /// Applied to this local record (empty when nothing needed doing).
    Applied(String),
    /// The flow's script skipped the item.
    Skipped(String),
    /// The item is at fault; nothing was written.
    Failed(String),
    /// The item conflicts with changes made here and waits for a person.
    Held(String, Vec<FieldConflict>),
    /// Not applied, and nothing written (`Run::Arrival`).
    NotApplied,
}

/// Our record of `table` holding these `match_on` values and not yet
/// correlated with `remote`, found through the index of matched fields
/// (`match_index`). No values (the payload lacks a field, or a value is
/// empty) match nothing; the plan then fails or creates.
fn matching(
    txn: &Txn<'_>,
    records: &redb::Table<'_, (&'static str, &'static str), &'static [u8]>,
    (remote, table): (&str, &str),
    values: &Result<Vec<(String, String)>, String>,
) -> Result<Option<String>, StoreError> {
    let Ok(values) = values else {
        return Ok(None);
    };
    let Some((first_field, first_value)) = values.first() else {
        return Ok(None);
    };
    if values.iter().any(|(_, v)| v.is_empty()) {
        return Ok(None);
    }
    let by_value = txn.open_table(RECORDS_BY_VALUE)?;
    let candidates = super::match_index::candidates(&by_value, (table, first_field, first_value))?;
    let correlations = txn.correlations()?;
    for sys_id in candidates {
        let Some(value) = records.get((table, sys_id.as_str()))? else {
            continue;
        };
        if values.len() > 1 {
            let record = record_at(txn.names, (table, &sys_id), value.value())?;
            if !values.iter().all(|(f, v)| record.fields.get(f) == Some(v)) {
                continue;
            }
        }
        let taken = match correlations.get((table, sys_id.as_str(), remote))? {
            Some(c) => !super::compact::correlation_peer_id(c.value())?.is_empty(),
            None => false,
        };
        if !taken {
            return Ok(Some(sys_id));
        }
    }
    Ok(None)
}

/// Inbound item `id` as stored.
pub(super) fn load_inbound(txn: &Txn<'_>, id: u64) -> Result<InboundItem, StoreError> {
    let table = txn.inbound()?;
    let value = table.get(id)?.ok_or(StoreError::ItemNotFound {
        queue: "inbound",
        id,
    })?;
    decode(value.value())
}

/// The counter of conflicts met in items from `remote`.
pub(super) fn conflicts_counter(remote: &str) -> String {
    format!("conflicts/{remote}")
}
