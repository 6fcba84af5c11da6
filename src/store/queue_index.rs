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
//! item; a browse that admits them walks the queue itself.

use std::collections::BinaryHeap;

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::codec::decode;
use super::open::Open;
use super::tables::*;
use super::writer::Txn;
use super::{Store, StoreError};
use crate::domain::Domain;
use crate::queue::{ALL_STATUSES, InboundItem, OutboundItem, QueueStatus};
use crate::stats::Queue;

/// META key saying the index holds every item of both queues (but the
/// Processed ones).
pub(super) const INDEXED_MARK: &str = "queue_by_status_v2";

/// Items a browse page looks at, at most, for items the caller may not see
/// (another domain's) or that the filter does not admit (when it walks the
/// queue: Processed, or no status); the page then ends short with a token
/// to go on from there.
const SCAN_LIMIT: usize = 20_000;

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
    let mut moves = moves
        .into_iter()
        .map(|m| Move {
            from: m.from.filter(|s| indexed(*s)),
            to: m.to.filter(|s| indexed(*s)),
            ..m
        })
        .filter(|m| m.from.is_some() || m.to.is_some())
        .peekable();
    if moves.peek().is_none() {
        return Ok(());
    }
    let mut streams = Streams::new(txn.queue_streams()?);
    let mut index = txn.queue_by_status()?;
    for m in moves {
        let stream = streams.number(m.remote, m.event)?;
        let key = |status| (queue_code(m.queue), code(status), stream, m.id);
        if let Some(from) = m.from {
            index.remove(key(from))?;
        }
        if let Some(to) = m.to {
            index.insert(key(to), ())?;
        }
    }
    Ok(())
}

/// Removes the index entries of Processed items, which a store written
/// before they went unindexed has (one range per queue). Run once on open.
pub(super) fn unindex_processed(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut index = txn.open_table(QUEUE_BY_STATUS)?;
    let processed = code(QueueStatus::Processed);
    let mut removed = 0u64;
    for queue in [Queue::Outbound, Queue::Inbound] {
        let q = queue_code(queue);
        index.retain_in(
            (q, processed, 0, 0)..=(q, processed, u32::MAX, u64::MAX),
            |_, _| {
                removed += 1;
                false
            },
        )?;
    }
    if removed > 0 {
        tracing::info!(target: "store", entries = removed, "Dropped the status index's entries of Processed items (once, for a store from an earlier version).");
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
            .insert((queue_code(queue), code(status), stream, id), ())
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

/// The numbers of `remote`'s streams (one per process event).
fn streams_of(
    streams: &impl ReadableTable<(&'static str, &'static str), u32>,
    remote: &str,
) -> Result<Vec<u32>, StoreError> {
    let mut numbers = Vec::new();
    for row in streams.range((remote, "")..)? {
        let (key, stream) = row?;
        if key.value().0 != remote {
            break;
        }
        numbers.push(stream.value());
    }
    Ok(numbers)
}

/// Ids of `remote`'s items in `status` in `queue`, oldest first: its
/// streams' part of the index, without reading the items of other
/// statuses (after a million were processed, a stream break that puts the
/// few Running ones back reads only those).
pub(super) fn ids_of_remote(
    txn: &WriteTransaction,
    queue: Queue,
    status: QueueStatus,
    remote: &str,
) -> Result<Vec<u64>, StoreError> {
    let index = txn.open_table(QUEUE_BY_STATUS)?;
    let (q, status) = (queue_code(queue), code(status));
    let mut ids = Vec::new();
    for stream in streams_of(&txn.open_table(QUEUE_STREAMS)?, remote)? {
        for row in index.range(part(q, status, stream, 0))? {
            ids.push(row?.0.value().3);
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
    let (q, status) = (queue_code(queue), code(status));
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
    for stream in streams_of(&txn.open_table(QUEUE_STREAMS)?, remote)? {
        for status in statuses.iter().map(|s| code(*s)) {
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

/// What the queue browser asks for: items of one queue, optionally only
/// those with a status, a remote system, a process event, in a domain
/// subtree; newest first, older than the item `before`, at most `limit`.
#[derive(Clone, Debug, Default)]
pub struct Browse {
    pub status: Option<QueueStatus>,
    pub remote_system: Option<String>,
    pub process_event: Option<String>,
    pub domain: Option<Domain>,
    pub before: Option<u64>,
    pub limit: usize,
}

impl Browse {
    /// The status asked for when the index holds its items: else the
    /// browse walks the queue and checks each item.
    fn indexed_status(&self) -> Option<QueueStatus> {
        self.status.filter(|s| indexed(*s))
    }

    fn admits(&self, item: &impl Listed) -> bool {
        let (domain, status, remote, event) = item.listed();
        self.status.is_none_or(|s| s == status)
            && self.remote_system.as_deref().is_none_or(|r| r == remote)
            && self.process_event.as_deref().is_none_or(|e| e == event)
            && self.domain.as_ref().is_none_or(|d| domain.is_within(d))
    }
}

/// What a browse filters a queue item by: its domain, status, remote
/// system and process event.
trait Listed: super::codec::Stored {
    fn listed(&self) -> (&Domain, QueueStatus, &str, &str);
}

impl Listed for OutboundItem {
    fn listed(&self) -> (&Domain, QueueStatus, &str, &str) {
        (
            &self.domain,
            self.status,
            &self.remote_system,
            &self.process_event,
        )
    }
}

impl Listed for InboundItem {
    fn listed(&self) -> (&Domain, QueueStatus, &str, &str) {
        (
            &self.domain,
            self.status,
            &self.remote_system,
            &self.process_event,
        )
    }
}

/// One page of a browse: the items, the token of the next (older) page
/// when there is one, and how many items of the whole instance match the
/// status, remote and event asked for (from the counters).
#[derive(Debug)]
pub struct Browsed<T> {
    pub items: Vec<T>,
    pub next_before: Option<u64>,
    pub total: u64,
}

/// The (remote system, process event) pairs of `queue` that `browse`
/// admits, and how many items they hold in the statuses it admits.
fn matching_keys(
    txn: &ReadTransaction,
    queue: Queue,
    browse: &Browse,
) -> Result<(Vec<(String, String)>, u64), StoreError> {
    let mut keys = Vec::new();
    let mut total = 0;
    for row in txn.open_table(QUEUE_STATS)?.iter()? {
        let (key, value) = row?;
        let (q, remote, event) = key.value();
        let admitted = q == queue.as_str()
            && browse.remote_system.as_deref().is_none_or(|r| r == remote)
            && browse.process_event.as_deref().is_none_or(|e| e == event);
        if !admitted {
            continue;
        }
        let counters: crate::stats::QueueCounters = decode(value.value())?;
        total += match browse.status {
            Some(status) => counters.counts.get(status),
            None => ALL_STATUSES.iter().map(|&s| counters.counts.get(s)).sum(),
        };
        keys.push((remote.to_string(), event.to_string()));
    }
    Ok((keys, total))
}

/// Calls `visit` with the ids `browse` may admit, newest first, until it
/// returns false. For a status the index holds, one backwards range of the
/// index per (remote, event) admitted, merged by id; else (no status, or
/// Processed) the queue itself backwards, every item a candidate.
fn newest_ids(
    txn: &ReadTransaction,
    queue: Queue,
    browse: &Browse,
    keys: &[(String, String)],
    mut visit: impl FnMut(u64) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let before = browse.before.unwrap_or(u64::MAX);
    let Some(status) = browse.indexed_status() else {
        for row in txn.open_table(queue_table(queue))?.range(..before)?.rev() {
            if !visit(row?.0.value())? {
                break;
            }
        }
        return Ok(());
    };
    let index = txn.open_table(QUEUE_BY_STATUS)?;
    let streams = txn.open_table(QUEUE_STREAMS)?;
    let q = queue_code(queue);
    let s = code(status);
    let mut ranges = Vec::with_capacity(keys.len());
    for (remote, event) in keys {
        // A pair counted but never indexed has no items.
        let Some(stream) = streams.get((remote.as_str(), event.as_str()))? else {
            continue;
        };
        let stream = stream.value();
        ranges.push(
            index
                .range((q, s, stream, 0u64)..(q, s, stream, before))?
                .rev(),
        );
    }
    let mut heads = BinaryHeap::with_capacity(ranges.len());
    for (i, range) in ranges.iter_mut().enumerate() {
        if let Some(row) = range.next() {
            heads.push((row?.0.value().3, i));
        }
    }
    while let Some((id, i)) = heads.pop() {
        if !visit(id)? {
            break;
        }
        if let Some(row) = ranges[i].next() {
            heads.push((row?.0.value().3, i));
        }
    }
    Ok(())
}

fn queue_table(queue: Queue) -> redb::TableDefinition<'static, u64, &'static [u8]> {
    match queue {
        Queue::Outbound => OUTBOUND,
        Queue::Inbound => INBOUND,
    }
}

impl Store {
    /// A page of the outbound queue, newest first, from the index.
    pub fn browse_outbound(&self, browse: &Browse) -> Result<Browsed<OutboundItem>, StoreError> {
        self.browse(Queue::Outbound, browse)
    }

    /// A page of the inbound queue, newest first, from the index.
    pub fn browse_inbound(&self, browse: &Browse) -> Result<Browsed<InboundItem>, StoreError> {
        self.browse(Queue::Inbound, browse)
    }

    fn browse<T: Listed>(&self, queue: Queue, browse: &Browse) -> Result<Browsed<T>, StoreError> {
        let txn = self.db.begin_read()?;
        let (keys, total) = matching_keys(&txn, queue, browse)?;
        let table = txn.open_table(queue_table(queue))?;
        let limit = browse.limit.max(1);
        let mut items = Vec::new();
        let (mut scanned, mut last, mut more) = (0, None, false);
        newest_ids(&txn, queue, browse, &keys, |id| {
            if items.len() == limit || scanned == SCAN_LIMIT {
                more = true;
                return Ok(false);
            }
            scanned += 1;
            last = Some(id);
            if let Some(value) = table.get(id)? {
                let item: T = decode(value.value())?;
                if browse.admits(&item) {
                    items.push(item);
                }
            }
            Ok(true)
        })?;
        Ok(Browsed {
            items,
            next_before: if more { last } else { None },
            total,
        })
    }
}

#[cfg(test)]
mod tests {
    use redb::ReadableTable;

    use super::*;

    fn entries(store: &Store) -> Vec<(u8, u8, u32, u64)> {
        let txn = store.db.begin_read().unwrap();
        let index = txn.open_table(QUEUE_BY_STATUS).unwrap();
        let rows = index.iter().unwrap();
        rows.map(|row| row.unwrap().0.value()).collect()
    }

    #[test]
    fn a_store_of_an_older_binary_drops_its_processed_entries_once() {
        let (dir, store) = crate::store::test_support::scratch_store("edge");
        let (ready, processed, error) = (
            code(QueueStatus::Ready),
            code(QueueStatus::Processed),
            code(QueueStatus::Error),
        );
        let kept = vec![(0, ready, 1, 7), (1, error, 2, 5)];
        let txn = store.db.begin_write().unwrap();
        {
            let mut index = txn.open_table(QUEUE_BY_STATUS).unwrap();
            for key in kept
                .iter()
                .chain(&[(0, processed, 1, 6), (1, processed, 2, 4)])
            {
                index.insert(key, ()).unwrap();
            }
            let mut meta = txn.open_table(META).unwrap();
            meta.remove("processed_unindexed_v1").unwrap();
        }
        txn.commit().unwrap();
        assert_eq!(entries(&store).len(), 4);
        store.close();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(entries(&store), kept);
        store.close();
    }

    #[test]
    fn a_status_is_kept_as_its_place_among_all_statuses() {
        for (place, &status) in super::ALL_STATUSES.iter().enumerate() {
            assert_eq!(usize::from(super::code(status)), place, "{status:?}");
        }
    }
}
