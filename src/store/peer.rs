//! Store operations of peer sync: remote system secrets and states,
//! properties, the outbound queue's send states, the inbound queue and
//! correlations. Reads are `Store` methods; writes are writer jobs.

use redb::ReadableTable;

use super::codec::{decode, encode};
use super::stats::Tally;
use super::tables::*;
use super::writer::Txn;
use super::{QueueFilter, RemoteState, Store, StoreError, StoredSyncObject};
use crate::domain::Domain;
use crate::ids::now_millis;
use crate::property::{self, RetryPolicy};
use crate::queue::{Correlation, FlowTrace, InboundItem, OutboundItem, QueueStatus};
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
    pub payload: String,
    pub attachment_grants: Vec<crate::attachment::Grant>,
}

impl Store {
    /// The token this instance presents to `remote`.
    pub fn remote_secret(&self, remote: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REMOTE_SECRETS)?;
        match table.get(remote)? {
            Some(value) => Ok(Some(decode(value.value())?)),
            None => Ok(None),
        }
    }

    /// Where sending to `remote` stands; the default while the peer answers.
    pub fn remote_retry(&self, remote: &str) -> Result<property::RetryState, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REMOTE_RETRY)?;
        match table.get(remote)? {
            Some(value) => decode(value.value()),
            None => Ok(property::RetryState::default()),
        }
    }

    /// Records where sending to `remote` stands (the default clears it).
    pub async fn set_remote_retry(
        &self,
        remote: String,
        state: property::RetryState,
    ) -> Result<(), StoreError> {
        self.writer
            .submit(move |txn| {
                let mut table = txn.txn.open_table(REMOTE_RETRY)?;
                if state == property::RetryState::default() {
                    table.remove(remote.as_str())?;
                } else {
                    table.insert(remote.as_str(), encode(&state).as_slice())?;
                }
                Ok(())
            })
            .await
    }

    /// The key attachment grants are made with; never leaves the instance.
    pub fn attachment_secret(&self) -> Result<[u8; 32], StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let value = meta
            .get("attachment_secret")?
            .ok_or_else(|| StoreError::Corrupt("no attachment secret recorded".into()))?;
        let secret: Vec<u8> = decode(value.value())?;
        secret
            .try_into()
            .map_err(|_| StoreError::Corrupt("the attachment secret is not 32 bytes".into()))
    }

    /// A property's value, or its default.
    pub fn property(&self, name: &str) -> Result<String, StoreError> {
        let def = property::find(name).map_err(StoreError::Invalid)?;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PROPERTIES)?;
        match table.get(name)? {
            Some(value) => decode(value.value()),
            None => Ok(def.default.to_string()),
        }
    }

    pub fn number(&self, name: &str) -> Result<u64, StoreError> {
        self.property(name)?
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("property {name} is not a number")))
    }

    /// A flag property's value.
    pub fn flag(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.property(name)? == "true")
    }

    pub fn retry_policy(&self) -> Result<RetryPolicy, StoreError> {
        Ok(RetryPolicy {
            times: self.number("retry.times")? as u32,
            interval: std::time::Duration::from_secs(self.number("retry.interval")?),
            max_interval: std::time::Duration::from_secs(self.number("retry.max_interval")?),
        })
    }

    pub fn heartbeat(&self) -> Result<(std::time::Duration, std::time::Duration), StoreError> {
        Ok((
            std::time::Duration::from_secs(self.number("heartbeat.interval")?),
            std::time::Duration::from_millis(self.number("heartbeat.slow_ms")?),
        ))
    }

    /// Ready items for `remote` with a sequence above `after`, in sequence
    /// order, at most `limit`, each with the peer's record for it when
    /// known (empty otherwise), all from one read transaction.
    pub fn ready_outbound(
        &self,
        remote: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(OutboundItem, String)>, StoreError> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(OUTBOUND_BY_REMOTE)?;
        let outbound = txn.open_table(OUTBOUND)?;
        let correlations = txn.open_table(CORRELATIONS)?;
        let mut out = Vec::new();
        for row in index.range((remote, after.saturating_add(1))..=(remote, u64::MAX))? {
            let (_, id) = row?;
            let Some(value) = outbound.get(id.value())? else {
                continue;
            };
            let item: OutboundItem = decode(value.value())?;
            if item.status != QueueStatus::Ready {
                continue;
            }
            let key = (
                item.table.as_str(),
                item.local_correlation_id.as_str(),
                remote,
            );
            let remote_id = match correlations.get(key)? {
                Some(value) => decode::<Correlation>(value.value())?.remote_correlation_id,
                None => String::new(),
            };
            out.push((item, remote_id));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub fn correlations(&self, remote: Option<&str>) -> Result<Vec<Correlation>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CORRELATIONS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, value) = row?;
            let correlation: Correlation = decode(value.value())?;
            if remote.is_none_or(|r| r == correlation.remote_system) {
                out.push(correlation);
            }
        }
        Ok(out)
    }

    pub fn inbound_items(&self, filter: &QueueFilter) -> Result<Vec<InboundItem>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INBOUND)?;
        let limit = if filter.limit == 0 {
            usize::MAX
        } else {
            filter.limit
        };
        let mut out = Vec::new();
        let mut keep = |item: InboundItem| {
            let wanted = item.id > filter.after
                && filter.status.is_none_or(|s| s == item.status)
                && filter
                    .remote_system
                    .as_ref()
                    .is_none_or(|r| *r == item.remote_system)
                && filter
                    .domain
                    .as_ref()
                    .is_none_or(|d| item.domain.is_within(d));
            if wanted {
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

    pub fn outbound_item(&self, id: u64) -> Result<Option<OutboundItem>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OUTBOUND)?;
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

    pub async fn set_remote_secret(&self, remote: String, token: String) -> Result<(), StoreError> {
        self.writer
            .submit(move |txn| {
                find_remote(txn, &remote)?;
                txn.txn
                    .open_table(REMOTE_SECRETS)?
                    .insert(remote.as_str(), encode(&token).as_slice())?;
                Ok(())
            })
            .await
    }

    /// Sets a remote system's outbound and/or inbound state.
    pub async fn set_remote_states(
        &self,
        remote: String,
        outbound: Option<RemoteState>,
        inbound: Option<RemoteState>,
    ) -> Result<(), StoreError> {
        self.writer
            .submit(move |txn| {
                let mut object = find_remote(txn, &remote)?;
                if let Some(state) = outbound {
                    object.outbound_state = Some(state);
                }
                if let Some(state) = inbound {
                    object.inbound_state = Some(state);
                }
                object.updated_on = now_millis();
                txn.txn.open_table(SYNC_OBJECTS)?.insert(
                    ("remote_system", remote.as_str()),
                    encode(&object).as_slice(),
                )?;
                Ok(())
            })
            .await
    }

    pub async fn set_property(&self, name: String, value: String) -> Result<String, StoreError> {
        let value = property::check(&name, &value).map_err(StoreError::Invalid)?;
        self.writer
            .submit(move |txn| {
                txn.txn
                    .open_table(PROPERTIES)?
                    .insert(name.as_str(), encode(&value).as_slice())?;
                Ok(value)
            })
            .await
    }

    /// Marks outbound items Running (being sent).
    /// Marks items Running as they leave, and notes in the same commit that
    /// their records were sent to the remote (a correlation without the
    /// peer's record yet): the peer may answer about a record before its
    /// acknowledgment is even counted here.
    pub async fn mark_outbound_running(&self, ids: Vec<u64>) -> Result<(), StoreError> {
        self.writer
            .submit(move |txn| {
                let now = now_millis();
                let mut table = txn.txn.open_table(OUTBOUND)?;
                let mut correlations = txn.txn.open_table(CORRELATIONS)?;
                let mut tally = Tally::new(now);
                for id in ids {
                    let Some(value) = table.get(id)?.map(|v| v.value().to_vec()) else {
                        continue;
                    };
                    let mut item: OutboundItem = decode(&value)?;
                    if item.status != QueueStatus::Ready {
                        continue;
                    }
                    item.status = QueueStatus::Running;
                    item.attempts += 1;
                    item.sent_on = Some(now);
                    item.next_attempt_on = None;
                    table.insert(id, encode(&item).as_slice())?;
                    tally.outbound(&item, Some(QueueStatus::Ready));
                    note_sent(&mut correlations, &item, now)?;
                }
                tally.save(txn.txn)?;
                Ok(())
            })
            .await
    }

    /// The inbound flow for `process_event` from `remote`, as last applied.
    pub fn inbound_flow(
        &self,
        process_event: &str,
        remote: &str,
    ) -> Option<crate::config::sync::InboundFlow> {
        self.writer
            .capture()
            .inbound_flow(process_event, remote)
            .cloned()
    }

    /// Whether we already hold a record for the peer's record `remote_id`.
    pub fn is_correlated(&self, remote: &str, remote_id: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_read()?;
        let by_remote = txn.open_table(CORRELATIONS_BY_REMOTE)?;
        Ok(by_remote.get((remote, remote_id))?.is_some())
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
                let mut table = txn.txn.open_table(INBOUND)?;
                let value = table
                    .get(id)?
                    .map(|v| v.value().to_vec())
                    .ok_or_else(|| StoreError::NotFound(format!("inbound item {id}")))?;
                let mut item: InboundItem = decode(&value)?;
                let from = item.status;
                if let Some(trace) = change(&mut item)? {
                    super::context::link_inbound(txn.txn, trace, &mut item)?;
                }
                table.insert(id, encode(&item).as_slice())?;
                Tally::count_inbound(txn.txn, &item, Some(from))?;
                Ok(item)
            })
            .await
    }

    /// Marks outbound items of `remote` Processed (the peer acknowledged a
    /// durable commit) and records the correlation from our side.
    pub async fn mark_outbound_processed(
        &self,
        remote: String,
        sequences: Vec<u64>,
    ) -> Result<(), StoreError> {
        self.writer
            .submit(move |txn| {
                let now = now_millis();
                let index = txn.txn.open_table(OUTBOUND_BY_REMOTE)?;
                let mut outbound = txn.txn.open_table(OUTBOUND)?;
                let mut correlations = txn.txn.open_table(CORRELATIONS)?;
                let mut counters = super::writer::Counters::load(txn.txn.open_table(COUNTERS)?);
                let mut tally = Tally::new(now);
                for sequence in sequences {
                    let Some(id) = index.get((remote.as_str(), sequence))?.map(|v| v.value())
                    else {
                        continue;
                    };
                    let Some(value) = outbound.get(id)?.map(|v| v.value().to_vec()) else {
                        continue;
                    };
                    let mut item: OutboundItem = decode(&value)?;
                    if matches!(item.status, QueueStatus::Processed | QueueStatus::Skipped) {
                        continue;
                    }
                    let from = item.status;
                    item.status = QueueStatus::Processed;
                    item.processed_on = Some(now);
                    item.error = None;
                    let context = counters.next(super::context::COUNTER)?;
                    super::context::save_as(
                        txn.txn,
                        context,
                        outbound_trace(&item),
                        "outbound",
                        id,
                        QueueStatus::Processed,
                        None,
                    )?;
                    item.flow_contexts.push(context);
                    outbound.insert(id, encode(&item).as_slice())?;
                    tally.outbound(&item, Some(from));
                    note_sent(&mut correlations, &item, now)?;
                }
                counters.save()?;
                tally.save(txn.txn)?;
                Ok(())
            })
            .await
    }

    /// Puts `remote`'s Running items back to Ready (after a broken stream or
    /// a restart: the peer drops any it already has), noting why and when
    /// the next attempt is due: the retry metadata an operator sees.
    pub async fn reset_running(
        &self,
        remote: String,
        failure: Option<(String, Option<u64>)>,
    ) -> Result<usize, StoreError> {
        self.writer
            .submit(move |txn| {
                let index = txn.txn.open_table(OUTBOUND_BY_REMOTE)?;
                let mut outbound = txn.txn.open_table(OUTBOUND)?;
                let ids: Vec<u64> = index
                    .range((remote.as_str(), 0u64)..=(remote.as_str(), u64::MAX))?
                    .map(|row| row.map(|(_, id)| id.value()))
                    .collect::<Result<_, _>>()?;
                let mut n = 0;
                let mut tally = Tally::new(now_millis());
                for id in ids {
                    let Some(value) = outbound.get(id)?.map(|v| v.value().to_vec()) else {
                        continue;
                    };
                    let mut item: OutboundItem = decode(&value)?;
                    if item.status == QueueStatus::Running {
                        item.status = QueueStatus::Ready;
                        if let Some((error, next_attempt_on)) = &failure {
                            item.last_error = Some(error.clone());
                            item.next_attempt_on = *next_attempt_on;
                        }
                        outbound.insert(id, encode(&item).as_slice())?;
                        tally.outbound(&item, Some(QueueStatus::Running));
                        n += 1;
                    }
                }
                tally.save(txn.txn)?;
                Ok(n)
            })
            .await
    }

    /// The operator's retry (Error → Ready) or skip (→ Skipped) of an
    /// outbound item.
    pub async fn set_outbound_status(
        &self,
        id: u64,
        status: QueueStatus,
    ) -> Result<OutboundItem, StoreError> {
        self.writer
            .submit(move |txn| {
                let mut table = txn.txn.open_table(OUTBOUND)?;
                let value = table
                    .get(id)?
                    .map(|v| v.value().to_vec())
                    .ok_or_else(|| StoreError::NotFound(format!("outbound item {id}")))?;
                let mut item: OutboundItem = decode(&value)?;
                operator_transition(item.status, status, "outbound", id)?;
                let from = item.status;
                item.status = status;
                if status == QueueStatus::Ready {
                    item.error = None;
                    item.attempts = 0;
                }
                table.insert(id, encode(&item).as_slice())?;
                Tally::count_outbound(txn.txn, &item, Some(from))?;
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
            operator_transition(item.status, status, "inbound", id)?;
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
            .submit(move |txn| super::writer::receive(txn, &remote, &sender, &domain, items))
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

    /// The last outbound sequence given to an item for `remote`; 0 when none.
    pub fn last_outbound_sequence(&self, remote: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let counters = txn.open_table(COUNTERS)?;
        match counters.get(format!("outbound_seq/{remote}").as_str())? {
            Some(value) => decode(value.value()),
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
                super::writer::apply_inbound(txn, id, &run_as, &limits)
            })
    }
}

/// Notes that `item`'s record went to its remote system: a correlation
/// with no peer record yet, unless one exists.
fn note_sent(
    correlations: &mut redb::Table<'_, (&'static str, &'static str, &'static str), &'static [u8]>,
    item: &OutboundItem,
    now: u64,
) -> Result<(), StoreError> {
    let key = (
        item.table.as_str(),
        item.local_correlation_id.as_str(),
        item.remote_system.as_str(),
    );
    if correlations.get(key)?.is_none() {
        let correlation = Correlation {
            remote_system: item.remote_system.clone(),
            remote_correlation_id: String::new(),
            table: item.table.clone(),
            local_correlation_id: item.local_correlation_id.clone(),
            active: item.operation != Operation::Delete,
            created_on: now,
            updated_on: now,
        };
        correlations.insert(key, encode(&correlation).as_slice())?;
    }
    Ok(())
}

/// The context of an outbound item's processing, told when the peer
/// acknowledged it: capture, queueing, sending, acknowledgment.
fn outbound_trace(item: &OutboundItem) -> FlowTrace {
    let sent_on = item.sent_on.unwrap_or(item.created_on);
    let mut trace = FlowTrace::start(sent_on);
    trace.flow = item.outbound_flow.clone();
    let payload: Option<crate::queue::Payload> = serde_json::from_str(item.payload.get()).ok();
    let changed: Vec<&str> = payload
        .iter()
        .flat_map(|p| p.changed_fields.iter())
        .filter(|f| f.changed)
        .map(|f| f.key.as_str())
        .collect();
    trace.inputs = serde_json::json!({
        "operation": item.operation, "table": item.table, "sys_id": item.local_correlation_id,
        "process_event": item.process_event, "changed_fields": changed,
    });
    let at = |millis: u64| crate::ids::format_time(millis);
    trace.step(
        "capture",
        format!(
            "`{}` captured the {} of {}/{} at {}",
            item.capture_definition,
            item.operation.as_str(),
            item.table,
            item.local_correlation_id,
            at(item.created_on)
        ),
    );
    trace.step(
        "queue",
        format!(
            "`{}` queued it for `{}` as sequence {}",
            item.outbound_flow, item.remote_system, item.sequence
        ),
    );
    let mut sent = format!("attempt {} at {}", item.attempts.max(1), at(sent_on));
    if let Some(error) = &item.last_error {
        sent.push_str(&format!(" (the one before failed: {error})"));
    }
    trace.step("send", sent);
    let done = item.processed_on.unwrap_or(sent_on);
    trace.duration_ms = Some(done.saturating_sub(sent_on));
    trace.step(
        "acknowledge",
        format!("`{}` committed it at {}", item.remote_system, at(done)),
    );
    trace.outputs = serde_json::json!({
        "remote_system": item.remote_system, "sequence": item.sequence,
        "payload_bytes": item.payload.get().len(),
        "journal_entries": payload.as_ref().map_or(0, |p| p.journal_entries.len()),
        "attachments": item.attachment_hashes.len(),
    });
    trace
}

fn operator_transition(
    from: QueueStatus,
    to: QueueStatus,
    queue: &str,
    id: u64,
) -> Result<(), StoreError> {
    let allowed = match to {
        QueueStatus::Ready => from == QueueStatus::Error,
        QueueStatus::Skipped => matches!(from, QueueStatus::Error | QueueStatus::Ready),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{queue} item {id} is {}; only Error items can be retried, and only Error or Ready items skipped",
            from.as_str()
        )))
    }
}

fn find_remote(txn: &Txn<'_>, remote: &str) -> Result<StoredSyncObject, StoreError> {
    let table = txn.txn.open_table(SYNC_OBJECTS)?;
    let value = table
        .get(("remote_system", remote))?
        .ok_or_else(|| StoreError::NotFound(format!("remote system `{remote}`")))?;
    decode(value.value())
}
