//! The inbound queue: receiving a peer's batch (dedupe by the sending
//! instance's sequence, forever), reads for the processor and operators,
//! the apply of one item's flow, refusals and operator moves.

use redb::ReadableTable;

use super::codec::{decode, encode};
use super::counters::Counters;
use super::records::{RecordWriteLimits, prepare, write_prepared};
use super::stats::Tally;
use super::tables::*;
use super::writer::Txn;
use super::{Actor, QueueFilter, Store, StoreError};
use crate::domain::Domain;
use crate::flow::FlowOutcome;
use crate::ids::now_millis;
use crate::queue::{Correlation, FlowTrace, InboundItem, QueueStatus, operator_transition};
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
        let value = table
            .get(id)?
            .ok_or_else(|| StoreError::NotFound(format!("inbound item {id}")))?;
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
    item.processing_ms = Some(started.elapsed().as_millis() as u64);
    item.waiting = None;
    trace.step("finish", format!("the item is {}", item.status.as_str()));
    super::context::link_inbound(txn, trace, &mut item)?;
    txn.open_table(INBOUND)?
        .insert(id, encode(&item).as_slice())?;
    super::stats::Tally::count_inbound(txn, &item, Some(QueueStatus::Ready))?;
    Ok(item)
}

/// The flow itself; `Err` only when storage failed.
fn run_flow(
    txn: &mut Txn<'_>,
    item: &InboundItem,
    run_as: &Actor,
    limits: &RecordWriteLimits,
    trace: &mut FlowTrace,
) -> Result<FlowResult, StoreError> {
    trace.flow = item.process_event.clone();
    trace.inputs = serde_json::json!({
        "operation": item.operation, "source_table": item.source_table,
        "remote_correlation_id": item.remote_correlation_id,
        "local_correlation_id": item.local_correlation_id, "payload_bytes": item.payload.len(),
    });
    let payload: crate::queue::Payload = match serde_json::from_str(&item.payload) {
        Ok(payload) => payload,
        Err(e) => {
            trace.step("payload", "does not parse");
            return Ok(FlowResult::Failed(format!("malformed payload: {e}")));
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
    let Some(flow) = txn
        .capture
        .inbound_flow(&item.process_event, &item.remote_system)
        .cloned()
    else {
        trace.step("inbound flow", "none receives this process event");
        return Ok(FlowResult::Failed(format!(
            "no inbound flow receives process event `{}` from remote system `{}`; add one and retry this item",
            item.process_event, item.remote_system
        )));
    };
    trace.flow = flow.name.clone();
    trace.step(
        "inbound flow",
        format!("`{}` maps onto table `{}`", flow.name, flow.table),
    );

    // Correlate: the peer's record we already know, else the record the
    // peer says is ours, but only when that record is correlated with this
    // very remote system (and not with another of its records): a peer
    // reaches our records only through its own correlations.
    let correlated = match correlate(txn, item, &flow.table)? {
        Ok(correlated) => correlated,
        Err(problem) => {
            trace.step("correlate", "refused: the named record is not this peer's");
            return Ok(FlowResult::Failed(problem));
        }
    };

    trace.step(
        "correlate",
        match &correlated {
            Some(sys_id) => format!("our record {}/{sys_id}", flow.table),
            None => "no record yet: a new one".to_string(),
        },
    );

    let mapping = if !flow.script.trim().is_empty() {
        "the Basic template, then the flow's script"
    } else {
        "the Basic template"
    };
    let write =
        match crate::flow::run_inbound(&flow, item.operation, &payload, correlated.as_deref()) {
            FlowOutcome::Write(mut write) => {
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
                write
            }
            FlowOutcome::Nothing => {
                trace.step("map", format!("{mapping}: nothing to change"));
                return Ok(FlowResult::Applied(correlated.unwrap_or_default()));
            }
            FlowOutcome::Skip(reason) => {
                trace.step("map", format!("{mapping} skipped the item"));
                return Ok(FlowResult::Skipped(reason));
            }
            FlowOutcome::Error(problem) => {
                trace.step("map", format!("{mapping} failed"));
                return Ok(FlowResult::Failed(problem));
            }
        };
    // Journal entries the record already holds (by entry id) are not
    // appended again, whatever path they came by.
    let mut write = write;
    if let Some(sys_id) = &correlated {
        if write.journal.iter().any(|j| j.origin.is_some()) {
            let journal = txn.open_table(JOURNAL)?;
            let mut known = std::collections::HashSet::new();
            for row in journal.range(
                (flow.table.as_str(), sys_id.as_str(), 0u64)
                    ..=(flow.table.as_str(), sys_id.as_str(), u64::MAX),
            )? {
                let (_, value) = row?;
                let entry: JournalEntry = decode(value.value())?;
                known.insert(entry.id);
            }
            write
                .journal
                .retain(|j| j.origin.as_ref().is_none_or(|o| !known.contains(&o.id)));
        }
    }
    if write.operation != Operation::Delete
        && (!payload.attachments.is_empty() || !payload.removed_attachments.is_empty())
    {
        match inbound_attachments(txn, item, &payload, &flow.table, correlated.as_deref())? {
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
                return Ok(FlowResult::Failed(problem));
            }
        }
    }
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
        Err(StoreError::Invalid(m) | StoreError::NotFound(m) | StoreError::Conflict(m)) => {
            trace.step("write", "refused");
            return Ok(FlowResult::Failed(format!(
                "inbound flow `{}` (running as `{}`) could not write to `{}`: {m}",
                flow.name, run_as.user, flow.table
            )));
        }
        Err(other) => return Err(other),
    };
    let results = write_prepared(txn, prepared)?;
    let local_id = results[0].sys_id.clone();
    trace.step(
        "write",
        format!(
            "{} {}/{local_id} as `{}`",
            write.operation.as_str(),
            flow.table,
            run_as.user
        ),
    );
    trace.outputs = serde_json::json!({
        "table": flow.table, "sys_id": local_id, "operation": write.operation,
        "fields": write.fields, "journal_entries": write.journal.len(),
        "attachments_added": write.attachments.attach.len(),
        "attachments_removed": write.attachments.detach.len(),
    });

    let now = now_millis();
    let mut correlations = txn.open_table(CORRELATIONS)?;
    let key = (
        flow.table.as_str(),
        local_id.as_str(),
        item.remote_system.as_str(),
    );
    let previous: Option<Correlation> = match correlations.get(key)? {
        Some(value) => Some(decode(value.value())?),
        None => None,
    };
    let correlation = Correlation {
        remote_system: item.remote_system.clone(),
        remote_correlation_id: item.remote_correlation_id.clone(),
        table: flow.table.clone(),
        local_correlation_id: local_id.clone(),
        active: write.operation != Operation::Delete,
        created_on: previous.map(|p| p.created_on).unwrap_or(now),
        updated_on: now,
    };
    correlations.insert(key, encode(&correlation).as_slice())?;
    txn.open_table(CORRELATIONS_BY_REMOTE)?.insert(
        (
            item.remote_system.as_str(),
            item.remote_correlation_id.as_str(),
        ),
        (flow.table.as_str(), local_id.as_str()),
    )?;
    trace.step(
        "correlation",
        format!(
            "{}/{local_id} is `{}`'s {}",
            flow.table, item.remote_system, item.remote_correlation_id
        ),
    );
    Ok(FlowResult::Applied(local_id))
}

/// The local record item `item` is about: the one correlated with the
/// sender's record, else the one the sender names (`local_correlation_id`)
/// when it is correlated with the sender, else none (a new record, also
/// when the named record does not exist here). The
/// inner `Err` refuses an item that names a record the sender has no
/// correlation with (a record of this instance, or of another remote).
fn correlate(
    txn: &Txn<'_>,
    item: &InboundItem,
    table: &str,
) -> Result<Result<Option<String>, String>, StoreError> {
    let remote = item.remote_system.as_str();
    let records = txn.open_table(RECORDS)?;
    let exists =
        |sys_id: &str| -> Result<bool, StoreError> { Ok(records.get((table, sys_id))?.is_some()) };
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
        return Ok(Ok(exists(&sys_id)?.then_some(sys_id)));
    }
    let named = item.local_correlation_id.as_str();
    // Naming no record, or one we do not have (the sender's knowledge of
    // us is older than our store), makes a new record: nothing of ours is
    // reached.
    if named.is_empty() || !exists(named)? {
        return Ok(Ok(None));
    }
    let correlation: Option<Correlation> =
        match txn.open_table(CORRELATIONS)?.get((table, named, remote))? {
            Some(value) => Some(decode(value.value())?),
            None => None,
        };
    match correlation {
        // We sent this record to the sender and it answers about it (the
        // correlation learns the sender's id with this item).
        Some(c)
            if c.remote_correlation_id.is_empty()
                || c.remote_correlation_id == item.remote_correlation_id =>
        {
            Ok(Ok(Some(named.to_string())))
        }
        Some(c) => Ok(Err(format!(
            "the item names record {table}/{named}, which is correlated with `{remote}`'s record {}, not with its record {}; nothing was written (skip this item, or check the sender's correlations)",
            c.remote_correlation_id, item.remote_correlation_id
        ))),
        None => Ok(Err(format!(
            "the item names record {table}/{named}, which is not correlated with remote system `{remote}`: a peer may change only records it sent or was sent; nothing was written (skip this item)"
        ))),
    }
}

/// The attachment changes an inbound item makes to its target record;
/// the inner `Err` refuses the item. Every content to attach must have
/// arrived (the inbound processor fetches them first) with the claimed size.
fn inbound_attachments(
    txn: &mut Txn<'_>,
    item: &InboundItem,
    payload: &crate::queue::Payload,
    table: &str,
    correlated: Option<&str>,
) -> Result<Result<crate::record::AttachmentChanges, String>, StoreError> {
    use crate::attachment::{AttachmentLimits, check_incoming, plan_inbound};
    if let Err(problem) = check_incoming(
        &payload.attachments,
        &payload.removed_attachments,
        &AttachmentLimits::default(),
    ) {
        return Ok(Err(problem));
    }
    let target = match correlated {
        Some(sys_id) => {
            let records = txn.open_table(RECORDS)?;
            match records.get((table, sys_id))? {
                Some(value) => decode::<Record>(value.value())?.attachments,
                None => Vec::new(),
            }
        }
        None => Vec::new(),
    };
    let changes = plan_inbound(
        &payload.attachments,
        &payload.removed_attachments,
        payload.attachment_strategy.unwrap_or_default(),
        correlated.is_none(),
        &target,
        &item.remote_system,
    );
    for attachment in &changes.attach {
        match super::content::stored_size(txn, &attachment.hash)? {
            None => {
                return Ok(Err(format!(
                    "attachment {:?} ({}) has not arrived from `{}`; retry this item",
                    attachment.file_name, attachment.hash, item.remote_system
                )));
            }
            Some(size) if size != attachment.size => {
                return Ok(Err(format!(
                    "attachment {:?} claims {} bytes, but its content ({}) has {size} (its size lies)",
                    attachment.file_name, attachment.size, attachment.hash
                )));
            }
            Some(_) => {}
        }
    }
    Ok(Ok(changes))
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
            for id in super::stats::error_ids(&txn, Queue::Inbound)? {
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

    /// Notes on a Ready inbound item why it has not run yet.
    pub async fn note_inbound_waiting(&self, id: u64, reason: String) -> Result<(), StoreError> {
        self.update_inbound(id, move |item| {
            if item.status == QueueStatus::Ready {
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
                let value = table
                    .get(id)?
                    .map(|v| v.value().to_vec())
                    .ok_or_else(|| StoreError::NotFound(format!("inbound item {id}")))?;
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
                item.error = None;
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

/// Moves the sequences seen under a remote system's name (stores before
/// `INBOUND_SEEN_BY_PEER`) under the fingerprint it pins now; a name with
/// no remote system any more keeps its rows under `name:NAME`, which no
/// caller presents.
pub(super) fn move_seen_by_name(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    const MARK: &str = "inbound_seen_by_peer_v1";
    let mut meta = txn.open_table(META)?;
    if meta.get(MARK)?.is_some() {
        return Ok(());
    }
    let pins: std::collections::HashMap<String, String> =
        super::sync_objects::read_sync_objects(&txn.open_table(SYNC_OBJECTS)?)?
            .into_iter()
            .filter(|o| o.kind == "remote_system")
            .filter_map(|o| {
                let pinned = o.spec.get("fingerprint")?.as_str()?;
                let fingerprint = crate::config::sync::normalize_fingerprint(pinned).ok()?;
                Some((o.name, fingerprint))
            })
            .collect();
    {
        let old = txn.open_table(INBOUND_SEEN)?;
        let mut new = txn.open_table(INBOUND_SEEN_BY_PEER)?;
        for row in old.iter()? {
            let (key, id) = row?;
            let (name, sequence) = key.value();
            let sender = pins
                .get(name)
                .cloned()
                .unwrap_or_else(|| format!("name:{name}"));
            new.insert((sender.as_str(), sequence), id.value())?;
        }
    }
    txn.delete_table(INBOUND_SEEN)?;
    meta.insert(MARK, encode(&true).as_slice())?;
    Ok(())
}
