//! The inbound queue: receiving a peer's batch (dedupe by the sending
//! instance's sequence, forever), reads for the processor and operators,
//! refusals and operator moves. The apply of one item is in `apply`.

use redb::{ReadableTable, ReadableTableMetadata};

use super::codec::{decode, encode};
use super::counters::Counters;
use super::stats::Tally;
use super::tables::*;
use super::writer::{Chain, Txn};
use super::{QueueFilter, Store, StoreError};
use crate::domain::Domain;
use crate::ids::{Millis, now_millis};
use crate::queue::{FetchRetry, FlowTrace, InboundItem, QueueStatus, operator_transition};
use crate::record::Operation;
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
    pub payload: crate::queue::EncodedPayload,
    pub attachment_grants: Vec<crate::attachment::Grant>,
    pub bases: Vec<crate::queue::FieldBase>,
    pub changed_on: crate::ids::Millis,
    pub settles: bool,
}

/// The number of the sending instance with certificate `fingerprint` in
/// `INBOUND_SEEN_BY_SENDER`'s keys, given on first use.
pub(super) fn sender_number(
    senders: &mut redb::Table<'_, &'static str, u32>,
    fingerprint: &str,
) -> Result<u32, StoreError> {
    if let Some(number) = senders.get(fingerprint)? {
        return Ok(number.value());
    }
    let number = u32::try_from(senders.len()? + 1)
        .map_err(|_| StoreError::Invalid("more than 4 billion sending instances".into()))?;
    senders.insert(fingerprint, number)?;
    Ok(number)
}

/// Who applies the items of a batch as it is received (the remote's
/// run-as user, by name), and under which limits: see
/// `Store::receive_applying`.
#[derive(Clone, Debug)]
pub struct ApplyAs {
    pub run_as: String,
    pub limits: super::RecordWriteLimits,
}

/// The actor `apply` names, when that user exists and may write records
/// (else the processor holds the items and says why).
fn applier(txn: &Txn<'_>, apply: &ApplyAs) -> Result<Option<super::Actor>, StoreError> {
    let user = super::users::read_user(&txn.open_table(USERS)?, &apply.run_as)?;
    Ok(user
        .filter(|u| u.may(crate::user::Permission::Records))
        .map(|u| super::Actor {
            user: u.name,
            domain: u.domain,
        }))
}

/// Queues items received from `remote`; see `Store::receive` and
/// `Store::receive_applying`.
pub fn receive(
    txn: &mut Txn<'_>,
    remote: &str,
    sender: &str,
    domain: &Domain,
    items: Vec<super::ReceivedItem>,
    apply: Option<&ApplyAs>,
) -> Result<Received, StoreError> {
    let now = now_millis();
    let own = txn.write_txn();
    let sender = sender_number(&mut own.open_table(SENDERS)?, sender)?;
    let mut seen = own.open_table(INBOUND_SEEN_BY_SENDER)?;
    let mut queued = Vec::with_capacity(items.len());
    let mut tally = super::stats::Tally::new(now);
    let mut acks = Vec::with_capacity(items.len());
    let mut applied = Vec::new();
    // Items are applied as they arrive only while nothing of the remote
    // waits before them (Ready: not applied yet, or Error: holding its
    // record's later items); the first that is not applied leaves the
    // rest of the batch Ready, in order, for the processor.
    let applier = match apply {
        Some(apply) if super::stats::inbound_waiting(txn, remote)? == 0 => {
            applier(txn, apply)?.map(|actor| (actor, &apply.limits))
        }
        _ => None,
    };
    let mut applying = applier.is_some();
    for received in items {
        acks.push(received.sequence);
        if seen.get((sender, received.sequence))?.is_some() {
            continue;
        }
        let id = next_counter(txn, "inbound_item")?;
        let (problem, plain) = check_on_arrival(txn, remote, &received);
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
            bases: received.bases,
            changed_on: received.changed_on,
            settles: received.settles,
            conflicts: Vec::new(),
        };
        if item.error.is_some() {
            note_refused(txn, &mut item, now)?;
        }
        // An item with a payload to apply has no problem: it is Ready.
        if applying {
            applying = match (&applier, plain) {
                (Some((run_as, limits)), Some(payload)) => {
                    super::apply::apply_on_arrival(txn, &mut item, payload, run_as, limits)?
                }
                _ => false,
            };
            if applying {
                applied.push((id, item.operation, item.local_correlation_id.clone()));
            }
        }
        seen.insert((sender, received.sequence), id)?;
        tally.inbound(&item, None);
        queued.push(item);
    }
    // Stored after the applies: the queue is one of the tables a sharing
    // job keeps open, and an apply must not find it held.
    let mut inbound = txn.inbound()?;
    for item in queued {
        inbound.insert(item.id, encode(&item).as_slice())?;
    }
    drop(inbound);
    tally.save(txn)?;
    Ok((acks, applied))
}

/// What is wrong with an item as it arrives (it is queued in Error), and
/// its payload when it lists no attachments: only such an item may be
/// applied as it arrives (attachments are fetched first, by the
/// processor), and its flow needs the payload decoded only once.
fn check_on_arrival(
    txn: &Txn<'_>,
    remote: &str,
    received: &super::ReceivedItem,
) -> (Option<String>, Option<crate::queue::Payload>) {
    if received.operation.is_none() {
        let problem = "the item has no valid operation (create, update or delete)";
        return (Some(problem.to_string()), None);
    }
    match received.payload.decode() {
        Err(e) => (Some(format!("malformed payload: {e}")), None),
        Ok(_)
            if txn
                .capture
                .inbound_flow(&received.process_event, remote)
                .is_none() =>
        {
            let problem = format!(
                "unknown process event `{}` from remote system `{remote}`: no inbound flow receives it; add an inbound_flow for it and retry this item",
                received.process_event
            );
            (Some(problem), None)
        }
        Ok(payload) => {
            let plain = payload.attachments.is_empty() && payload.removed_attachments.is_empty();
            (None, plain.then_some(payload))
        }
    }
}

/// Logs an item queued in Error on arrival and stores the context that
/// says why.
fn note_refused(txn: &Txn<'_>, item: &mut InboundItem, now: Millis) -> Result<(), StoreError> {
    let remote = &item.remote_system;
    let error = item.error.clone();
    tracing::warn!(target: "inbound_queue", remote_system = %remote, sequence = item.sequence, id = item.id, error = error.as_deref().unwrap_or(""), "An inbound item was queued in Error.");
    let mut trace = FlowTrace::start(now);
    trace.flow = item.process_event.clone();
    trace.inputs = item.stored_inputs();
    trace.step(
        "receive",
        format!(
            "sequence {} from `{remote}`, checked on arrival",
            item.sequence
        ),
    );
    let context = next_counter(txn, super::context::COUNTER)?;
    super::context::save_as(
        txn,
        context,
        trace,
        "inbound",
        item.id,
        QueueStatus::Error,
        error,
    )?;
    item.flow_contexts.push(context);
    Ok(())
}

/// The sequences to acknowledge, and the items applied as they arrived
/// (id, operation, our record).
type Received = (Vec<u64>, Vec<(u64, Operation, String)>);

/// The next value of counter `name`, taken and handed back at once (an
/// apply in between takes its own).
fn next_counter(txn: &Txn<'_>, name: &str) -> Result<u64, StoreError> {
    let mut counters = Counters::load(txn)?;
    let next = counters.next(name)?;
    counters.save();
    Ok(next)
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
    /// after id `after`: found through the status index, so the items
    /// applied as they arrived are never read.
    pub fn ready_inbound(&self, after: u64, limit: usize) -> Result<Vec<InboundItem>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INBOUND)?;
        let ids =
            super::queue_index::ids_after(&txn, Queue::Inbound, QueueStatus::Ready, after, limit)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(value) = table.get(id)? {
                out.push(decode(value.value())?);
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
            trace.inputs = item.stored_inputs();
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
            .submit(move |txn| receive(txn, &remote, &sender, &domain, items, None))
            .await
            .map(|(acks, _)| acks)
    }

    /// `receive`, applying each item in the same transaction as it is
    /// queued, as `apply` says, while nothing of `remote` waits before it
    /// (no Ready or Error inbound item) and it carries no attachments: the
    /// item is written once, Processed, instead of Ready and then again.
    /// The first item not applied so (its flow would skip, refuse or hold
    /// it; nothing of it is written) and every later one stay Ready for the
    /// processor, which runs them as it would have.
    ///
    /// Queued now, in call order, as a job of `chain` (a stream's batches:
    /// a batch is saved only if the ones before it were); the future is of
    /// its commit, so a stream may queue its next batch before this one is
    /// durable.
    pub fn receive_applying(
        &self,
        (remote, sender): (String, String),
        domain: Domain,
        items: Vec<ReceivedItem>,
        apply: ApplyAs,
        chain: &Chain,
    ) -> impl std::future::Future<Output = Result<Vec<u64>, StoreError>> + Send + 'static {
        let committed = self.writer.enqueue_chained(chain, move |txn| {
            receive(txn, &remote, &sender, &domain, items, Some(&apply))
        });
        async move {
            let (acks, applied) = committed.await?;
            for (id, operation, local) in applied {
                tracing::debug!(target: "inbound_queue", id, operation = operation.as_str(), %local, "Applied an inbound item.");
            }
            Ok(acks)
        }
    }

    /// The highest sequence ever received from the instance with
    /// certificate `sender`; 0 when none.
    pub fn highest_received(&self, sender: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let Some(sender) = txn.open_table(SENDERS)?.get(sender)?.map(|n| n.value()) else {
            return Ok(0);
        };
        let seen = txn.open_table(INBOUND_SEEN_BY_SENDER)?;
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
            .enqueue_sharing(move |txn| super::apply::apply_inbound(txn, id, &run_as, &limits))
    }
}
