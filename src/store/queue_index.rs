//! The queue items by status: every item of both queues but the Processed
//! ones under (queue, status, stream, id), kept by the counters' `Tally`
//! in the transaction that moves the item; a stream is a (remote system,
//! process event) by its number in `QUEUE_STREAMS`. The dashboard's queue
//! browser pages through it newest first when it asks for one of those
//! statuses, without reading the items it skips; the Error lists, the
//! inbound processor's held records, the alert checks and the dispatcher's
//! reset of Running items read their parts of it.
//!
//! Processed items have no entries: they are nearly every item, and most
//! never move again. Keeping them cost an edge two of the five index
//! writes of each item's life (and a hub one of three), and 14 bytes per
//! item; a browse that admits them walks the queue itself. Running items
//! are kept with the Ready ones (`slot`): an outbound item is indexed as
//! it is queued and unindexed as it is acknowledged, two writes in all.

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::StoreError;
use super::codec::decode;
use super::open::Open;
use super::tables::*;
use super::writer::Txn;

mod browse;
use crate::queue::{InboundItem, OutboundItem, QueueStatus};
use crate::stats::{Queue, QueueCounters};
pub use browse::{Browse, Browsed};

/// META key saying the index holds every item of both queues (but the
/// Processed ones).
pub(super) const INDEXED_MARK: &str = "queue_by_status_v2";

/// A status as it is kept in the index key: its place in `ALL_STATUSES`.
pub(super) fn code(status: QueueStatus) -> u8 {
    match status {
        QueueStatus::Ready => 0,
        QueueStatus::Running => 1,
        QueueStatus::Processed => 2,
        QueueStatus::Error => 3,
        QueueStatus::Skipped => 4,
    }
}

/// Whether items in `status` have index entries: all but Processed.
pub(super) fn indexed(status: QueueStatus) -> bool {
    status != QueueStatus::Processed
}

/// Where items in `status` are kept in the index: under their `code`, but
/// Running ones with the Ready ones. An item marked Running as it leaves
/// (and put back after a broken stream) keeps its entry: two index writes
/// fewer in the life of each outbound item. Whoever reads that part for
/// one of the two checks each item's status.
pub(super) fn slot(status: QueueStatus) -> u8 {
    match status {
        QueueStatus::Running => code(QueueStatus::Ready),
        other => code(other),
    }
}

/// The part of the index holding `stream`'s items in `status` of queue
/// `q`, from id `from` on.
fn part(q: u8, status: u8, stream: u32, from: u64) -> std::ops::RangeInclusive<IndexKey> {
    (q, status, stream, from)..=(q, status, stream, u64::MAX)
}

type IndexKey = (u8, u8, u32, u64);

/// A queue as it is kept in the index key.
fn queue_code(queue: Queue) -> u8 {
    match queue {
        Queue::Outbound => 0,
        Queue::Inbound => 1,
    }
}

/// The streams (remote system, process event) of one transaction's moves,
/// by number: read from `QUEUE_STREAMS`, numbered there on first use.
struct Streams<'g, 't> {
    table: Open<'g, 't, (&'static str, &'static str), u32>,
    /// The few pairs seen in this call: searched in place.
    known: Vec<(String, String, u32)>,
}

impl<'g, 't> Streams<'g, 't> {
    fn new(table: Open<'g, 't, (&'static str, &'static str), u32>) -> Streams<'g, 't> {
        Streams {
            table,
            known: Vec::new(),
        }
    }

    fn number(&mut self, remote: &str, event: &str) -> Result<u32, StoreError> {
        if let Some((_, _, n)) = self
            .known
            .iter()
            .find(|(r, e, _)| r == remote && e == event)
        {
            return Ok(*n);
        }
        let stored = self.table.get((remote, event))?.map(|n| n.value());
        let n = match stored {
            Some(n) => n,
            None => {
                let n = u32::try_from(self.table.len()? + 1).map_err(|_| {
                    StoreError::Invalid(
                        "more than 4 billion remote systems and process events".into(),
                    )
                })?;
                self.table.insert((remote, event), n)?;
                n
            }
        };
        self.known.push((remote.to_string(), event.to_string(), n));
        Ok(n)
    }
}

/// One item's move from one status to another (`None`: not in the queue).
pub(super) struct Move<'a> {
    pub queue: Queue,
    pub remote: &'a str,
    pub event: &'a str,
    pub id: u64,
    pub from: Option<QueueStatus>,
    pub to: Option<QueueStatus>,
}

/// Moves the items' index entries in `txn` (a move from or to Processed
/// only adds or removes one).
pub(super) fn apply<'a>(
    txn: &Txn<'_>,
    moves: impl IntoIterator<Item = Move<'a>>,
) -> Result<(), StoreError> {
    let place = |status: Option<QueueStatus>| status.filter(|s| indexed(*s)).map(slot);
    let mut moves = moves
        .into_iter()
        .map(|m| (place(m.from), place(m.to), m))
        .filter(|(from, to, _)| from != to)
        .peekable();
    if moves.peek().is_none() {
        return Ok(());
    }
    let mut streams = Streams::new(txn.queue_streams()?);
    let mut index = txn.queue_by_status()?;
    for (from, to, m) in moves {
        let stream = streams.number(m.remote, m.event)?;
        let key = |slot| (queue_code(m.queue), slot, stream, m.id);
        if let Some(from) = from {
            index.remove(key(from))?;
        }
        if let Some(to) = to {
            index.insert(key(to), ())?;
        }
    }
    Ok(())
}

/// Removes the index entries of Processed items, which a store written
/// before they went unindexed has (one range per queue). Run once on open.
pub(super) fn unindex_processed(txn: &WriteTransaction) -> Result<(), StoreError> {
    let removed = take_entries(txn, code(QueueStatus::Processed))?;
    if !removed.is_empty() {
        tracing::info!(target: "store", entries = removed.len(), "Dropped the status index's entries of Processed items (once, for a store from an earlier version).");
    }
    Ok(())
}

/// Removes the entries under status code `status` of both queues, and
/// returns them.
fn take_entries(txn: &WriteTransaction, status: u8) -> Result<Vec<IndexKey>, StoreError> {
    let mut index = txn.open_table(QUEUE_BY_STATUS)?;
    let mut taken = Vec::new();
    for queue in [Queue::Outbound, Queue::Inbound] {
        let q = queue_code(queue);
        index.retain_in(
            (q, status, 0, 0)..=(q, status, u32::MAX, u64::MAX),
            |key, ()| {
                taken.push(key);
                false
            },
        )?;
    }
    Ok(taken)
}

/// Moves the entries of Running items to the Ready ones (`slot`): a store
/// written before kept them apart. Run once on open.
pub(super) fn keep_running_with_ready(txn: &WriteTransaction) -> Result<(), StoreError> {
    let moved = take_entries(txn, code(QueueStatus::Running))?;
    let mut index = txn.open_table(QUEUE_BY_STATUS)?;
    for &(q, _, stream, id) in &moved {
        index.insert((q, slot(QueueStatus::Running), stream, id), ())?;
    }
    if !moved.is_empty() {
        tracing::info!(target: "store", entries = moved.len(), "Moved the status index's entries of Running items to the Ready ones (once, for a store from an earlier version).");
    }
    Ok(())
}

/// Indexes every queued item but the Processed ones, for a store written
/// before the index existed; the former index of Error items alone is
/// dropped. Run once on open (`upgrade::once`, under `INDEXED_MARK`).
pub(super) fn index_queues(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut streams = Streams::new(Open::Own(txn.open_table(QUEUE_STREAMS)?));
    let mut index = txn.open_table(QUEUE_BY_STATUS)?;
    index.retain(|_, _| false)?;
    let mut counted = 0u64;
    let mut add = |queue: Queue, status, remote: &str, event: &str, id| {
        if !indexed(status) {
            return Ok(());
        }
        counted += 1;
        let stream = streams.number(remote, event)?;
        index
            .insert((queue_code(queue), slot(status), stream, id), ())
            .map(drop)
            .map_err(StoreError::from)
    };
    for row in txn.open_table(OUTBOUND)?.iter()? {
        let item: OutboundItem = decode(row?.1.value())?;
        let OutboundItem {
            status,
            remote_system,
            process_event,
            id,
            ..
        } = &item;
        add(Queue::Outbound, *status, remote_system, process_event, *id)?;
    }
    for row in txn.open_table(INBOUND)?.iter()? {
        let item: InboundItem = decode(row?.1.value())?;
        let InboundItem {
            status,
            remote_system,
            process_event,
            id,
            ..
        } = &item;
        add(Queue::Inbound, *status, remote_system, process_event, *id)?;
    }
    txn.delete_table(FORMER_ERROR_ITEMS)?;
    txn.delete_table(FORMER_QUEUE_BY_STATUS)?;
    if counted > 0 {
        tracing::info!(target: "store", items = counted, "Indexed the queued items by status (once, for a store from an earlier version).");
    }
    Ok(())
}

/// Ids of the items in Error in `queue`, oldest first.
pub(super) fn error_ids(txn: &ReadTransaction, queue: Queue) -> Result<Vec<u64>, StoreError> {
    let index = txn.open_table(QUEUE_BY_STATUS)?;
    let error = code(QueueStatus::Error);
    let q = queue_code(queue);
    let mut ids = index
        .range((q, error, 0u32, 0u64)..(q, error + 1, 0u32, 0u64))?
        .map(|row| Ok(row?.0.value().3))
        .collect::<Result<Vec<u64>, StoreError>>()?;
    ids.sort_unstable();
    Ok(ids)
}

/// `remote`'s streams: (process event, number), one per process event.
fn streams_of(
    streams: &impl ReadableTable<(&'static str, &'static str), u32>,
    remote: &str,
) -> Result<Vec<(String, u32)>, StoreError> {
    let mut numbers = Vec::new();
    for row in streams.range((remote, "")..)? {
        let (key, stream) = row?;
        let (of, event) = key.value();
        if of != remote {
            break;
        }
        numbers.push((event.to_string(), stream.value()));
    }
    Ok(numbers)
}

/// Ids of `remote`'s outbound items in Running, oldest first. They are
/// kept with the Ready ones (`slot`): each stream's part is read, item
/// status by item status, only until as many are found as its counters
/// hold Running. With none Running (a session that ended cleanly) nothing
/// is read; with a window in flight, the oldest Ready items and no more.
pub(super) fn running_of_remote(
    txn: &WriteTransaction,
    remote: &str,
) -> Result<Vec<u64>, StoreError> {
    let index = txn.open_table(QUEUE_BY_STATUS)?;
    let outbound = txn.open_table(OUTBOUND)?;
    let counters = txn.open_table(QUEUE_STATS)?;
    let q = queue_code(Queue::Outbound);
    let mut ids = Vec::new();
    for (event, stream) in streams_of(&txn.open_table(QUEUE_STREAMS)?, remote)? {
        let key = (Queue::Outbound.as_str(), remote, event.as_str());
        let mut left = match counters.get(key)? {
            Some(value) => decode::<QueueCounters>(value.value())?
                .counts
                .get(QueueStatus::Running),
            None => 0,
        };
        let mut rows = index.range(part(q, slot(QueueStatus::Running), stream, 0))?;
        while left > 0 {
            let Some(row) = rows.next() else { break };
            let id = row?.0.value().3;
            let Some(value) = outbound.get(id)? else {
                continue;
            };
            if super::compact::state::status(value.value())? == QueueStatus::Running {
                ids.push(id);
                left -= 1;
            }
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Ids of the items in `status` (one the index holds) in `queue` above
/// `after`, oldest first, at most `limit`: the start of each stream's part
/// of the index, merged. The inbound processor's read: it never meets the
/// items applied as they arrived.
pub(super) fn ids_after(
    txn: &ReadTransaction,
    queue: Queue,
    status: QueueStatus,
    after: u64,
    limit: usize,
) -> Result<Vec<u64>, StoreError> {
    debug_assert!(indexed(status), "{status:?} is not indexed");
    let index = txn.open_table(QUEUE_BY_STATUS)?;
    let (q, status) = (queue_code(queue), slot(status));
    let from = after.saturating_add(1);
    let mut ids = Vec::new();
    for row in txn.open_table(QUEUE_STREAMS)?.iter()? {
        let stream = row?.1.value();
        for entry in index.range(part(q, status, stream, from))?.take(limit) {
            ids.push(entry?.0.value().3);
        }
    }
    ids.sort_unstable();
    ids.truncate(limit);
    Ok(ids)
}

/// The id of `remote`'s oldest item in any of `statuses` in `queue`: the
/// first index entry of each of its streams in each status.
pub(super) fn oldest_of_remote(
    txn: &ReadTransaction,
    queue: Queue,
    statuses: &[QueueStatus],
    remote: &str,
) -> Result<Option<u64>, StoreError> {
    let index = txn.open_table(QUEUE_BY_STATUS)?;
    let q = queue_code(queue);
    let mut oldest: Option<u64> = None;
    let mut slots: Vec<u8> = statuses.iter().map(|s| slot(*s)).collect();
    slots.sort_unstable();
    slots.dedup();
    for (_, stream) in streams_of(&txn.open_table(QUEUE_STREAMS)?, remote)? {
        for &status in &slots {
            let first = index
                .range(part(q, status, stream, 0))?
                .next()
                .transpose()?
                .map(|(key, _)| key.value().3);
            oldest = match (oldest, first) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    Ok(oldest)
}

#[cfg(test)]
mod tests {
    use redb::ReadableTable;

    use super::*;
    use crate::queue::ALL_STATUSES;
    use crate::store::Store;

    fn entries(store: &Store) -> Vec<(u8, u8, u32, u64)> {
        let txn = store.db.begin_read().unwrap();
        let index = txn.open_table(QUEUE_BY_STATUS).unwrap();
        let rows = index.iter().unwrap();
        rows.map(|row| row.unwrap().0.value()).collect()
    }

    /// A store of an older binary: its Processed items' entries dropped,
    /// its Running items' moved to the Ready ones, once.
    #[test]
    fn a_store_of_an_older_binary_has_its_index_brought_up_once() {
        let (dir, store) = crate::store::test_support::scratch_store("edge");
        let [ready, running, processed, error] = [
            QueueStatus::Ready,
            QueueStatus::Running,
            QueueStatus::Processed,
            QueueStatus::Error,
        ]
        .map(code);
        let kept = [(0, ready, 1, 7), (1, error, 2, 5)];
        let txn = store.db.begin_write().unwrap();
        {
            let mut index = txn.open_table(QUEUE_BY_STATUS).unwrap();
            let old = [
                (0, processed, 1, 6),
                (1, processed, 2, 4),
                (0, running, 1, 8),
            ];
            for key in kept.iter().chain(&old) {
                index.insert(key, ()).unwrap();
            }
            let mut meta = txn.open_table(META).unwrap();
            meta.remove("processed_unindexed_v1").unwrap();
            meta.remove("running_with_ready_v1").unwrap();
        }
        txn.commit().unwrap();
        assert_eq!(entries(&store).len(), 5);
        store.close();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let expected = vec![(0, ready, 1, 7), (0, ready, 1, 8), (1, error, 2, 5)];
        assert_eq!(entries(&store), expected);
        store.close();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(entries(&store), expected);
        store.close();
    }

    #[test]
    fn a_status_is_kept_as_its_place_among_all_statuses() {
        for (place, &status) in ALL_STATUSES.iter().enumerate() {
            assert_eq!(usize::from(super::code(status)), place, "{status:?}");
        }
    }
}
