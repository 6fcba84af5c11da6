//! The queue browser: a page of one queue, newest first, from the status
//! index for a status it holds, else from the queue itself.

use std::collections::BinaryHeap;

use redb::{ReadTransaction, ReadableTable};

use super::{indexed, queue_code, slot};
use crate::domain::Domain;
use crate::queue::{ALL_STATUSES, InboundItem, OutboundItem, QueueStatus};
use crate::stats::Queue;
use crate::store::codec::decode;
use crate::store::tables::*;
use crate::store::{Store, StoreError};

/// Items a browse page looks at, at most, for items the caller may not see
/// (another domain's) or that the filter does not admit (when it walks the
/// queue: Processed, or no status); the page then ends short with a token
/// to go on from there.
const SCAN_LIMIT: usize = 20_000;

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
trait Listed: crate::store::codec::Stored {
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
    let s = slot(status);
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
