//! The outbound queue: reads for the dispatchers and operators, and the
//! jobs that move items as they are sent, acknowledged, reset or settled
//! by an operator.

use redb::ReadableTable;

use super::codec::{decode, encode};
use super::compact::state;
use super::stats::Tally;
use super::tables::*;
use super::{QueueFilter, Store, StoreError};
use crate::ids::now_millis;
use crate::queue::{FlowTrace, OutboundItem, QueueStatus, operator_transition};
use crate::stats::Queue;

impl Store {
    /// Outbound items matching `filter`, oldest first.
    pub fn outbound_items(&self, filter: &QueueFilter) -> Result<Vec<OutboundItem>, StoreError> {
        let txn = self.db.begin_read()?;
        let limit = filter.page_size();
        let mut out = Vec::new();
        let mut keep = |item: OutboundItem| {
            if filter.admits(item.id, item.status, &item.remote_system, &item.domain) {
                out.push(item);
            }
            out.len() < limit
        };
        let outbound = txn.open_table(OUTBOUND)?;
        if filter.status == Some(QueueStatus::Error) {
            for id in super::queue_index::error_ids(&txn, crate::stats::Queue::Outbound)? {
                if let Some(value) = outbound.get(id)? {
                    if !keep(decode(value.value())?) {
                        break;
                    }
                }
            }
        } else if let Some(remote) = &filter.remote_system {
            let index = txn.open_table(OUTBOUND_BY_REMOTE)?;
            for row in index.range((remote.as_str(), 0u64)..=(remote.as_str(), u64::MAX))? {
                let (_, id) = row?;
                // Ids grow with sequences: earlier pages are skipped by id
                // without reading their items.
                if id.value() <= filter.after {
                    continue;
                }
                if let Some(value) = outbound.get(id.value())? {
                    if !keep(decode(value.value())?) {
                        break;
                    }
                }
            }
        } else {
            for row in outbound.range(filter.after.saturating_add(1)..)? {
                let (_, value) = row?;
                if !keep(decode(value.value())?) {
                    break;
                }
            }
        }
        Ok(out)
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
        // No Ready item comes before the oldest one waiting (the status
        // index's first): a session's first look after a million
        // acknowledged items starts there, not at the remote's first item.
        let oldest = super::queue_index::oldest_of_remote(
            &txn,
            Queue::Outbound,
            &[QueueStatus::Ready],
            remote,
        )?;
        let Some(oldest) = oldest else {
            return Ok(out);
        };
        let from = match outbound.get(oldest)? {
            Some(value) => decode::<OutboundItem>(value.value())?.sequence,
            None => 0,
        };
        let from = from.max(after.saturating_add(1));
        for row in index.range((remote, from)..=(remote, u64::MAX))? {
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
                Some(value) => super::compact::correlation_peer_id(value.value())?,
                None => String::new(),
            };
            out.push((item, remote_id));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// For each of `remotes`, when its oldest outbound item not yet
    /// acknowledged (Ready or Running) was created, if it has one: the
    /// first entries of its part of the status index, and that one item
    /// read. One read for all.
    pub fn oldest_waiting(
        &self,
        remotes: &[&str],
    ) -> Result<Vec<Option<crate::ids::Millis>>, StoreError> {
        let txn = self.db.begin_read()?;
        let outbound = txn.open_table(OUTBOUND)?;
        let mut found = Vec::with_capacity(remotes.len());
        for remote in remotes {
            let oldest = super::queue_index::oldest_of_remote(
                &txn,
                Queue::Outbound,
                &[QueueStatus::Ready, QueueStatus::Running],
                remote,
            )?;
            let item = match oldest {
                Some(id) => outbound.get(id)?.map(|v| decode::<OutboundItem>(v.value())),
                None => None,
            };
            found.push(item.transpose()?.map(|item| item.created_on));
        }
        Ok(found)
    }

    pub fn outbound_item(&self, id: u64) -> Result<Option<OutboundItem>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OUTBOUND)?;
        match table.get(id)? {
            Some(value) => Ok(Some(decode(value.value())?)),
            None => Ok(None),
        }
    }

    /// Marks outbound items Running as they leave. That they left is what
    /// lets the peer name their records (`correlations::known_to_remote`):
    /// it may answer about a record before its acknowledgment is even
    /// counted here.
    pub async fn mark_outbound_running(&self, ids: Vec<u64>) -> Result<(), StoreError> {
        self.writer
            .submit(move |txn| {
                let now = now_millis();
                let mut table = txn.open_table(OUTBOUND)?;
                let mut tally = Tally::new(now);
                for id in ids {
                    state::rewrite(&mut table, id, |item| {
                        if item.status != QueueStatus::Ready {
                            return false;
                        }
                        item.status = QueueStatus::Running;
                        item.attempts += 1;
                        item.sent_on = Some(now);
                        item.next_attempt_on = None;
                        tally.outbound_state(id, item, Some(QueueStatus::Ready));
                        true
                    })?;
                }
                tally.save(txn)?;
                Ok(())
            })
            .await
    }

    /// Marks outbound items of `remote` Processed (the peer acknowledged a
    /// durable commit): queued now, in call order; the future is of the
    /// commit, which need not fsync: the mark becomes durable with the next
    /// commit that does. A crash before it leaves the items Running, so
    /// they go again and the peer drops them by sequence (invariant 12);
    /// nothing else depends on the mark that Running did not already give.
    pub fn mark_outbound_processed(
        &self,
        remote: String,
        sequences: Vec<u64>,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        self.writer.enqueue(redb::Durability::None, move |txn| {
            let now = now_millis();
            let index = txn.open_table(OUTBOUND_BY_REMOTE)?;
            let mut outbound = txn.open_table(OUTBOUND)?;
            let mut tally = Tally::new(now);
            for sequence in sequences {
                let Some(id) = index.get((remote.as_str(), sequence))?.map(|v| v.value()) else {
                    continue;
                };
                // Its context (capture, queue, send, acknowledge) is
                // all in the item: told when read
                // (`acknowledged_context`), not stored.
                state::rewrite(&mut outbound, id, |item| {
                    if matches!(item.status, QueueStatus::Processed | QueueStatus::Skipped) {
                        return false;
                    }
                    let from = item.status;
                    item.status = QueueStatus::Processed;
                    item.processed_on = Some(now);
                    item.clear_error();
                    tally.outbound_state(id, item, Some(from));
                    true
                })?;
            }
            tally.save(txn)?;
            Ok(())
        })
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
                let ids = super::queue_index::running_of_remote(txn, &remote)?;
                let mut outbound = txn.open_table(OUTBOUND)?;
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
                tally.save(txn)?;
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
                let mut table = txn.open_table(OUTBOUND)?;
                let value =
                    table
                        .get(id)?
                        .map(|v| v.value().to_vec())
                        .ok_or(StoreError::ItemNotFound {
                            queue: "outbound",
                            id,
                        })?;
                let mut item: OutboundItem = decode(&value)?;
                operator_transition(item.status, status, "outbound", id)
                    .map_err(StoreError::Invalid)?;
                let from = item.status;
                item.status = status;
                if status == QueueStatus::Ready {
                    item.error = None;
                    item.attempts = 0;
                    txn.made_ready.set(true);
                }
                table.insert(id, encode(&item).as_slice())?;
                Tally::count_outbound(txn, &item, Some(from))?;
                Ok(item)
            })
            .await
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
}

/// The context of an acknowledged outbound item's processing: capture,
/// queueing, sending, acknowledgment. Everything in it is in the item, so
/// it is told when an operator reads the item instead of being stored with
/// each acknowledgment (items acknowledged by older binaries have it
/// stored). Its id is 0: it has no row of its own.
pub fn acknowledged_context(item: &OutboundItem) -> Option<crate::queue::FlowContext> {
    (item.status == QueueStatus::Processed)
        .then(|| outbound_trace(item).finish(0, "outbound", item.id, QueueStatus::Processed, None))
}

fn outbound_trace(item: &OutboundItem) -> FlowTrace {
    let sent_on = item.sent_on.unwrap_or(item.created_on);
    let mut trace = FlowTrace::start(sent_on);
    trace.flow = item.outbound_flow.clone();
    let payload = item.payload.decode().ok();
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
        "payload_bytes": item.payload.len(),
        "journal_entries": payload.as_ref().map_or(0, |p| p.journal_entries.len()),
        "attachments": item.attachment_hashes.len(),
    });
    trace
}
