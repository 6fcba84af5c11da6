//! Purging: deleting Processed and Skipped queue items past their age, and
//! contents no attachment uses any more, a bounded batch per transaction.
//! Ready, Running and Error items are never purged; the record of every
//! (remote system, sequence) ever received (`INBOUND_SEEN_BY_SENDER`) is kept, so a
//! late resend is still recognised.

use redb::{ReadableTable, WriteTransaction};

use super::codec::{decode, encode};
use super::content::ContentInfo;
use super::stats::Tally;
use super::tables::*;
use super::writer::Txn;
use super::{Store, StoreError};
use crate::ids::{Millis, now_millis};
use crate::queue::{InboundItem, OutboundItem, QueueStatus};
use crate::stats::Queue;

/// Items finished before these times go.
#[derive(Clone, Copy, Debug)]
pub struct PurgeBefore {
    pub processed: Millis,
    pub skipped: Millis,
    /// Contents unused (and partial ones untouched) since before this.
    pub contents: Millis,
}

/// What one purge batch deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub outbound: u64,
    pub inbound: u64,
    pub contents: u64,
}

impl Purged {
    pub fn total(&self) -> u64 {
        self.outbound + self.inbound + self.contents
    }
}

/// Items looked at per batch, at most, besides those deleted: old Ready and
/// Error items at the head of a queue are skipped over, not rescanned
/// without end.
const SCAN_FACTOR: usize = 10;

impl Store {
    /// Deletes at most `batch` items of each queue (and unused contents) in
    /// one transaction. Call again while it returns `batch` deletions.
    pub async fn purge(&self, before: PurgeBefore, batch: usize) -> Result<Purged, StoreError> {
        self.writer
            .submit(move |txn| {
                let outbound = purge_outbound(txn, before, batch)?;
                let inbound = purge_inbound(txn, before, batch)?;
                let contents = purge_contents(txn, before.contents, batch)?;
                super::stats::trim_minutes(txn, now_millis())?;
                let purged = Purged {
                    outbound,
                    inbound,
                    contents,
                };
                let mut counters = txn.open_table(COUNTERS)?;
                for (name, n) in [
                    ("purged/outbound", outbound),
                    ("purged/inbound", inbound),
                    ("purged/contents", contents),
                ] {
                    if n == 0 {
                        continue;
                    }
                    let old = match counters.get(name)? {
                        Some(value) => decode::<u64>(value.value())?,
                        None => 0,
                    };
                    counters.insert(name, encode(&(old + n)).as_slice())?;
                }
                Ok(purged)
            })
            .await
    }

    /// Items purged so far, ever: (outbound, inbound, contents).
    pub fn purged_counts(&self) -> Result<Purged, StoreError> {
        let txn = self.db.begin_read()?;
        let counters = txn.open_table(COUNTERS)?;
        let read = |name: &str| -> Result<u64, StoreError> {
            Ok(match counters.get(name)? {
                Some(value) => decode::<u64>(value.value())?,
                None => 0,
            })
        };
        Ok(Purged {
            outbound: read("purged/outbound")?,
            inbound: read("purged/inbound")?,
            contents: read("purged/contents")?,
        })
    }
}

fn expired(status: QueueStatus, finished: Millis, before: PurgeBefore) -> bool {
    match status {
        QueueStatus::Processed => finished < before.processed,
        QueueStatus::Skipped => finished < before.skipped,
        QueueStatus::Ready | QueueStatus::Running | QueueStatus::Error => false,
    }
}

/// The queue rows a purge batch deletes, oldest first. Ids grow with
/// creation time, so the scan stops at the first item created after both
/// cutoffs: nothing later can have finished before them.
fn expired_rows<T: super::codec::Stored>(
    table: &impl ReadableTable<u64, &'static [u8]>,
    before: PurgeBefore,
    batch: usize,
    times: impl Fn(&T) -> (Millis, QueueStatus, Option<Millis>),
) -> Result<Vec<(u64, T)>, StoreError> {
    let newest = before.processed.max(before.skipped);
    let mut doomed = Vec::new();
    for (scanned, row) in table.iter()?.enumerate() {
        if doomed.len() >= batch || scanned >= batch * SCAN_FACTOR {
            break;
        }
        let (id, value) = row?;
        let item: T = decode(value.value())?;
        let (created_on, status, processed_on) = times(&item);
        if created_on >= newest {
            break;
        }
        if expired(status, processed_on.unwrap_or(created_on), before) {
            doomed.push((id.value(), item));
        }
    }
    Ok(doomed)
}

fn purge_outbound(txn: &Txn<'_>, before: PurgeBefore, batch: usize) -> Result<u64, StoreError> {
    let mut table = txn.open_table(OUTBOUND)?;
    let doomed = expired_rows(&table, before, batch, |i: &OutboundItem| {
        (i.created_on, i.status, i.processed_on)
    })?;
    let mut by_remote = txn.open_table(OUTBOUND_BY_REMOTE)?;
    let mut tally = Tally::new(now_millis());
    for (id, item) in &doomed {
        table.remove(*id)?;
        by_remote.remove((item.remote_system.as_str(), item.sequence))?;
        super::context::delete(txn, &item.flow_contexts)?;
        tally.moved(
            Queue::Outbound,
            *id,
            (&item.remote_system, &item.process_event),
            Some(item.status),
            None,
        );
    }
    tally.save(txn)?;
    Ok(doomed.len() as u64)
}

fn purge_inbound(txn: &Txn<'_>, before: PurgeBefore, batch: usize) -> Result<u64, StoreError> {
    let mut table = txn.open_table(INBOUND)?;
    let doomed = expired_rows(&table, before, batch, |i: &InboundItem| {
        (i.created_on, i.status, i.processed_on)
    })?;
    let mut tally = Tally::new(now_millis());
    for (id, item) in &doomed {
        table.remove(*id)?;
        super::context::delete(txn, &item.flow_contexts)?;
        tally.moved(
            Queue::Inbound,
            *id,
            (&item.remote_system, &item.process_event),
            Some(item.status),
            None,
        );
    }
    tally.save(txn)?;
    Ok(doomed.len() as u64)
}

/// Contents no attachment uses (fetched or uploaded, then never attached),
/// and partial ones nobody resumed, once older than `before`.
fn purge_contents(txn: &WriteTransaction, before: Millis, batch: usize) -> Result<u64, StoreError> {
    let contents = txn.open_table(CONTENTS)?;
    let mut doomed = Vec::new();
    for row in contents.iter()? {
        if doomed.len() >= batch {
            break;
        }
        let (_, value) = row?;
        let info: ContentInfo = decode(value.value())?;
        if info.created_on >= before {
            break;
        }
        if info.refs == 0 {
            doomed.push(info);
        }
    }
    drop(contents);
    for info in &doomed {
        super::content::delete_content(txn, info)?;
    }
    Ok(doomed.len() as u64)
}
