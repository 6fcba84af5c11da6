//! The inbound queue: receiving a peer's batch (dedupe by the sending
//! instance's sequence, forever), reads for the processor and operators,
//! the apply of one item's flow, refusals and operator moves.

use crate::failure::Classified;
use redb::ReadableTable;

use super::codec::{decode, encode};
use super::counters::Counters;
use super::records::{RecordWriteLimits, prepare, write_prepared};
use super::stats::Tally;
use super::tables::*;
use super::writer::Txn;
use super::{Actor, QueueFilter, Store, StoreError};
use crate::domain::Domain;
use crate::flow::plan::{self, HeldRecord, InboundFacts, InboundPlan, Understood};
use crate::ids::now_millis;
use crate::queue::{
    Correlation, FetchRetry, FlowTrace, InboundItem, QueueStatus, operator_transition,
};
use crate::record::{JournalEntry, Operation, Record};
use crate::stats::Queue;

/// An item as it arrived from a peer, before it is queued.
#[derive(Clone, Debug)]
pub struct ReceivedItem {
    pub sequence: u64,
    pub process_event: String,
    pub operation: Option<Operation>,
    pub source_table: String,
    pub remote_correlation_id: String,
    pub local_correlation_id: String,
    pub payload: String,
    pub attachment_grants: Vec<crate::attachment::Grant>,
}

/// Queues items received from `remote`; see `Store::receive`.
pub fn receive(
    txn: &mut Txn<'_>,
    remote: &str,
    sender: &str,
    domain: &Domain,
    items: Vec<super::ReceivedItem>,
) -> Result<Vec<u64>, StoreError> {
    let now = now_millis();
    let mut seen = txn.open_table(INBOUND_SEEN_BY_PEER)?;
    let mut inbound = txn.open_table(INBOUND)?;
    let mut counters = Counters::load(txn.open_table(COUNTERS)?);
    let mut tally = super::stats::Tally::new(now);
    let mut acks = Vec::with_capacity(items.len());
    for received in items {
        acks.push(received.sequence);
        if seen.get((sender, received.sequence))?.is_some() {
            continue;
        }
        let id = counters.next("inbound_item")?;
        let problem = match received.operation {
            None => Some("the item has no valid operation (create, update or delete)".to_string()),
            Some(_) => match serde_json::from_str::<crate::queue::Payload>(&received.payload) {
                Err(e) => Some(format!(
                    "malformed payload: {e}; the sender must send capture_metadata, changed_fields and journal_entries"
                )),
                Ok(_)
                    if txn
                        .capture
                        .inbound_flow(&received.process_event, remote)
                        .is_none() =>
                {
                    Some(format!(
                        "unknown process event `{}` from remote system `{remote}`: no inbound flow receives it; add an inbound_flow for it and retry this item",
                        received.process_event
                    ))
                }
                Ok(_) => None,
            },
        };
        let mut item = InboundItem {
            id,
            sequence: received.sequence,
            remote_system: remote.to_string(),
            process_event: received.process_event,
            operation: received.operation.unwrap_or(Operation::Update),
            source_table: received.source_table,
            remote_correlation_id: received.remote_correlation_id,
            local_correlation_id: received.local_correlation_id,
            domain: domain.clone(),
            status: if problem.is_some() {
                QueueStatus::Error
            } else {
                QueueStatus::Ready
            },
            created_on: now,
            payload: received.payload,
            error: problem,
            processed_on: None,
            processing_ms: None,
            attachment_grants: received.attachment_grants,
            flow_contexts: Vec::new(),
            fetch_retries: Default::default(),
            waiting: None,
        };
        if let Some(error) = &item.error {
            tracing::warn!(target: "inbound_queue", remote_system = remote, sequence = item.sequence, id, error = %error, "An inbound item was queued in Error.");
            let mut trace = FlowTrace::start(now);
            trace.flow = item.process_event.clone();
            trace.inputs = serde_json::json!({
                "operation": item.operation, "source_table": item.source_table,
                "remote_correlation_id": item.remote_correlation_id, "payload_bytes": item.payload.len(),
            });
            trace.step(
                "receive",
                format!(
                    "sequence {} from `{remote}`, checked on arrival",
                    item.sequence
                ),
            );
            let context = counters.next(super::context::COUNTER)?;
            super::context::save_as(
                txn,
                context,
                trace,
                "inbound",
                id,
                QueueStatus::Error,
                item.error.clone(),
            )?;
            item.flow_contexts.push(context);
        }
        inbound.insert(id, encode(&item).as_slice())?;
        seen.insert((sender, received.sequence), id)?;
        tally.inbound(&item, None);
    }
    counters.save()?;
    tally.save(txn)?;
    Ok(acks)
}

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
    let started = std::time::Instant::now();
    let mut item: InboundItem = {
        let table = txn.open_table(INBOUND)?;
        let value = table.get(id)?.ok_or(StoreError::ItemNotFound {
            queue: "inbound",
            id,
        })?;
        decode(value.value())?
    };
    if item.status != QueueStatus::Ready {
        return Ok(item);
    }
    let mut trace = FlowTrace::start(now_millis());
    match run_flow(txn, &item, run_as, limits, &mut trace)? {
        FlowResult::Applied(local_id) => {
            item.status = QueueStatus::Processed;
            item.local_correlation_id = local_id;
            item.error = None;
        }
        FlowResult::Skipped(reason) => {
            item.status = QueueStatus::Skipped;
            item.error = Some(format!("skipped by the flow's script: {reason}"));
        }
        FlowResult::Failed(problem) => {
            item.status = QueueStatus::Error;
            item.error = Some(problem);
        }
    }
    let now = now_millis();
    item.processed_on = Some(now);
    item.processing_ms = Some(crate::ids::millis(started.elapsed()));
    item.waiting = None;
    trace.step("finish", format!("the item is {}", item.status.as_str()));
    super::context::link_inbound(txn, trace, &mut item)?;
    txn.open_table(INBOUND)?
        .insert(id, encode(&item).as_slice())?;
    super::stats::Tally::count_inbound(txn, &item, Some(QueueStatus::Ready))?;
    Ok(item)
}

/// Reads the facts of item `item`, has the flow plan its apply and writes
/// the plan; `Err` only when storage failed.
fn run_flow(
    txn: &mut Txn<'_>,
    item: &InboundItem,
    run_as: &Actor,
    limits: &RecordWriteLimits,
    trace: &mut FlowTrace,
) -> Result<FlowResult, StoreError> {
    let flow = txn
        .capture
        .inbound_flow(&item.process_event, &item.remote_system);
    let understood = match plan::understand(item, flow, trace) {
        Ok(understood) => understood,
        Err(problem) => return Ok(FlowResult::Failed(problem)),
    };
    let facts = read_facts(txn, item, &understood)?;
    let planned = plan::plan(item, &understood, &facts, trace);
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
    let records = txn.open_table(RECORDS)?;
    let journal = txn.open_table(JOURNAL)?;
    let mut facts = InboundFacts::default();
    let hold = |facts: &mut InboundFacts, sys_id: &str| -> Result<bool, StoreError> {
        let Some(value) = records.get((table, sys_id))? else {
            return Ok(false);
        };
        let mut held = HeldRecord::default();
        if understood.needs_attachments() {
            held.attachments = decode::<Record>(value.value())?.attachments;
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
        .open_table(CORRELATIONS_BY_REMOTE)?
        .get((remote, item.remote_correlation_id.as_str()))?
        .map(|v| {
            let (known_table, sys_id) = v.value();
            (known_table.to_string(), sys_id.to_string())
        })
        .filter(|(known_table, _)| known_table == table)
        .map(|(_, sys_id)| sys_id);
    if let Some(sys_id) = known {
        let exists = hold(&mut facts, &sys_id)?;
        facts.known = Some((sys_id, exists));
    }
    let named = item.local_correlation_id.as_str();
    if !named.is_empty() && hold(&mut facts, named)? {
        let correlation = txn
            .open_table(CORRELATIONS)?
            .get((table, named, remote))?
            .map(|value| decode::<Correlation>(value.value()))
            .transpose()?;
        facts.named = Some(correlation.map(|c| c.remote_correlation_id));
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
    planned: InboundPlan,
    table: &str,
    run_as: &Actor,
    limits: &RecordWriteLimits,
    trace: &mut FlowTrace,
) -> Result<FlowResult, StoreError> {
    let write = match planned {
        InboundPlan::Write(write) => write,
        InboundPlan::Nothing(local_id) => return Ok(FlowResult::Applied(local_id)),
        InboundPlan::Skip(reason) => return Ok(FlowResult::Skipped(reason)),
        InboundPlan::Fail(problem) => return Ok(FlowResult::Failed(problem)),
    };
    let prepared = {
        let records = txn.open_table(RECORDS)?;
        let capture = txn.capture.clone();
        prepare(
            &records,
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
    trace.outputs = serde_json::json!({
        "table": table, "sys_id": local_id, "operation": write.operation,
        "fields": write.fields, "journal_entries": write.journal.len(),
        "attachments_added": write.attachments.attach.len(),
        "attachments_removed": write.attachments.detach.len(),
    });
    super::correlations::correlate_with(
        txn,
        table,
        &local_id,
        &item.remote_system,
        &item.remote_correlation_id,
        write.operation != Operation::Delete,
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
}

impl Store {
    pub fn inbound_items(&self, filter: &QueueFilter) -> Result<Vec<InboundItem>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INBOUND)?;
        let limit = filter.page_size();
        let mut out = Vec::new();
        let mut keep = |item: InboundItem| {
            if filter.admits(item.id, item.status, &item.remote_system, &item.domain) {
                out.push(item);
            }
            out.len() < limit
        };
        // Error items come from their index, the rest from the queue.
        if filter.status == Some(QueueStatus::Error) {
            for id in super::queue_index::error_ids(&txn, Queue::Inbound)? {
                if let Some(value) = table.get(id)? {
                    if !keep(decode(value.value())?) {
                        break;
                    }
                }
            }
        } else {
            for row in table.range(filter.after.saturating_add(1)..)? {
                if !keep(decode(row?.1.value())?) {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub fn inbound_item(&self, id: u64) -> Result<Option<InboundItem>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INBOUND)?;
        match table.get(id)? {
            Some(value) => Ok(Some(decode(value.value())?)),
            None => Ok(None),
        }
    }

    /// Ready inbound items in arrival order, at most `limit`, starting
    /// after id `after`.
    pub fn ready_inbound(&self, after: u64, limit: usize) -> Result<Vec<InboundItem>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INBOUND)?;
        let mut out = Vec::new();
        for row in table.range(after.saturating_add(1)..)? {
            let (_, value) = row?;
            let item: InboundItem = decode(value.value())?;
            if item.status == QueueStatus::Ready {
                out.push(item);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// (remote system, remote correlation id) of every inbound item in
    /// Error: later items of those records wait.
    pub fn blocked_correlations(
        &self,
    ) -> Result<std::collections::HashSet<(String, String)>, StoreError> {
        Ok(self
            .inbound_items(&QueueFilter {
                status: Some(QueueStatus::Error),
                ..Default::default()
            })?
            .into_iter()
            .map(|item| (item.remote_system, item.remote_correlation_id))
            .collect())
    }

    /// Puts a Ready inbound item in Error with `problem`, writing nothing
    /// else: the item's own data refused it before its flow could run.
    pub async fn refuse_inbound(
        &self,
        id: u64,
        problem: String,
    ) -> Result<InboundItem, StoreError> {
        self.update_inbound(id, move |item| {
            if item.status != QueueStatus::Ready {
                return Ok(None);
            }
            let now = now_millis();
            let mut trace = FlowTrace::start(now);
            trace.flow = item.process_event.clone();
            trace.inputs = serde_json::json!({
                "operation": item.operation, "source_table": item.source_table,
                "remote_correlation_id": item.remote_correlation_id,
            });
            trace.step("attachments", "checked before the flow runs: refused");
            item.status = QueueStatus::Error;
            item.error = Some(problem);
            item.processed_on = Some(now);
            item.waiting = None;
            Ok(Some(trace))
        })
        .await
    }

    /// Notes on a Ready inbound item that fetching the content `hash`
    /// failed, with its retry state, and why the item has not run yet.
    pub async fn note_fetch_failure(
        &self,
        id: u64,
        hash: String,
        retry: FetchRetry,
        reason: String,
    ) -> Result<(), StoreError> {
        self.update_inbound(id, move |item| {
            if item.status == QueueStatus::Ready {
                item.fetch_retries.insert(hash, retry);
                item.waiting = Some(reason);
            }
            Ok(None)
        })
        .await
        .map(|_| ())
    }

    /// Loads inbound item `id`, lets `change` edit it (or refuse) and
    /// stores it, in one write, with the context of the processing when
    /// `change` traced one.
    async fn update_inbound(
        &self,
        id: u64,
        change: impl FnOnce(&mut InboundItem) -> Result<Option<FlowTrace>, StoreError> + Send + 'static,
    ) -> Result<InboundItem, StoreError> {
        self.writer
            .submit(move |txn| {
                let mut table = txn.open_table(INBOUND)?;
                let value =
                    table
                        .get(id)?
                        .map(|v| v.value().to_vec())
                        .ok_or(StoreError::ItemNotFound {
                            queue: "inbound",
                            id,
                        })?;
                let mut item: InboundItem = decode(&value)?;
                let from = item.status;
                if let Some(trace) = change(&mut item)? {
                    super::context::link_inbound(txn, trace, &mut item)?;
                }
                table.insert(id, encode(&item).as_slice())?;
                Tally::count_inbound(txn, &item, Some(from))?;
                Ok(item)
            })
            .await
    }

    /// The operator's retry or skip of an inbound item.
    pub async fn set_inbound_status(
        &self,
        id: u64,
        status: QueueStatus,
    ) -> Result<InboundItem, StoreError> {
        self.update_inbound(id, move |item| {
            operator_transition(item.status, status, "inbound", id).map_err(StoreError::Invalid)?;
            item.status = status;
            if status == QueueStatus::Ready {
                // A retry starts over, fetches included.
                item.error = None;
                item.fetch_retries.clear();
            }
            Ok(None)
        })
        .await
    }

    /// Queues items received from `remote`, sent by the instance with
    /// certificate `sender` (duplicates by that instance's sequence are
    /// recognised forever and not queued again) in one durable commit.
    /// Returns the sequences to acknowledge: all of them.
    pub async fn receive(
        &self,
        remote: String,
        sender: String,
        domain: Domain,
        items: Vec<ReceivedItem>,
    ) -> Result<Vec<u64>, StoreError> {
        self.writer
            .submit(move |txn| receive(txn, &remote, &sender, &domain, items))
            .await
    }

    /// The highest sequence ever received from the instance with
    /// certificate `sender`; 0 when none.
    pub fn highest_received(&self, sender: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let seen = txn.open_table(INBOUND_SEEN_BY_PEER)?;
        let last = seen.range((sender, 0)..=(sender, u64::MAX))?.next_back();
        match last {
            Some(row) => Ok(row?.0.value().1),
            None => Ok(0),
        }
    }

    /// Queues the inbound flow of one Ready item, as `run_as`, now (in call
    /// order) and returns the future of its durable commit: applies queued
    /// together share one group commit.
    pub fn queue_apply_inbound(
        &self,
        id: u64,
        run_as: super::Actor,
        limits: super::RecordWriteLimits,
    ) -> impl std::future::Future<Output = Result<InboundItem, StoreError>> + Send + 'static {
        self.writer
            .enqueue(redb::Durability::Immediate, move |txn| {
                apply_inbound(txn, id, &run_as, &limits)
            })
    }
}
