//! Queue statistics in the store: a `Tally` collects what one transaction
//! does to queue items and adds it to the counters before the commit, so
//! the counts change exactly when the items do. Reading them never scans a
//! queue. A store written before the counters existed is counted once on
//! open.

use redb::{ReadableTable, WriteTransaction};

use super::codec::{decode, encode};
use super::compact::state::OutboundState;
use super::queue_index::Move;
use super::tables::*;
use super::writer::Txn;
use super::{Store, StoreError};
use crate::ids::Millis;
use crate::queue::{InboundItem, OutboundItem, QueueStatus};
use crate::stats::{
    MINUTES_KEPT, MinuteCounts, Queue, QueueCounters, QueueMinute, QueueStats, StatsKey, minute_of,
};

/// META key saying the counters cover every item in the queues.
pub(super) const COUNTED_MARK: &str = "queue_counters_v1";

/// Changes to one key's counters within a transaction.
#[derive(Default)]
struct Change {
    /// Per status, in `ALL_STATUSES` order.
    counts: [i64; 5],
    processed: u64,
    skipped: u64,
    errors: u64,
    processing_ms: Vec<u64>,
    last_processed_on: Option<Millis>,
    last_time_in_queue_ms: Option<u64>,
}

fn status_index(status: QueueStatus) -> usize {
    crate::queue::ALL_STATUSES
        .iter()
        .position(|&s| s == status)
        .expect("every status is listed")
}

/// The value kept for (queue, remote, event) in a short keyed list, added
/// (default) when missing. Few distinct keys per use: a list searched in
/// place beats hashing (and allocating) a key per item.
fn entry<'a, T: Default>(
    list: &'a mut Vec<(StatsKey, T)>,
    queue: Queue,
    remote: &str,
    event: &str,
) -> &'a mut T {
    let index = place(list, queue, remote, event);
    &mut list[index].1
}

/// Where (queue, remote, event) is in `list`, added (default) when missing.
fn place<T: Default>(
    list: &mut Vec<(StatsKey, T)>,
    queue: Queue,
    remote: &str,
    event: &str,
) -> usize {
    match list
        .iter()
        .position(|((q, r, e), _)| *q == queue && r == remote && e == event)
    {
        Some(index) => index,
        None => {
            list.push(((queue, remote.to_string(), event.to_string()), T::default()));
            list.len() - 1
        }
    }
}

/// The parts of a queue item the counters need.
struct ItemRef<'a> {
    queue: Queue,
    id: u64,
    remote: &'a str,
    event: &'a str,
    status: QueueStatus,
    created_on: Millis,
}

/// What a transaction did to queue items, per (queue, remote system,
/// process event); `save` adds it to the stored counters.
pub(super) struct Tally {
    now: Millis,
    changes: Vec<(StatsKey, Change)>,
    /// Items that moved: (their key's place in `changes`, id, from, to).
    moves: Vec<(usize, u64, Option<QueueStatus>, Option<QueueStatus>)>,
}

impl Tally {
    pub(super) fn new(now: Millis) -> Tally {
        Tally {
            now,
            changes: Vec::new(),
            moves: Vec::new(),
        }
    }

    fn change(&mut self, queue: Queue, remote: &str, event: &str) -> &mut Change {
        entry(&mut self.changes, queue, remote, event)
    }

    /// An item moved from one status to another; `None` is "not in the
    /// queue" (created, or purged).
    pub(super) fn moved(
        &mut self,
        queue: Queue,
        id: u64,
        (remote, event): (&str, &str),
        from: Option<QueueStatus>,
        to: Option<QueueStatus>,
    ) {
        if from == to {
            return;
        }
        let key = place(&mut self.changes, queue, remote, event);
        self.moves.push((key, id, from, to));
        let now = self.now;
        let change = &mut self.changes[key].1;
        if let Some(from) = from {
            change.counts[status_index(from)] -= 1;
        }
        if let Some(to) = to {
            change.counts[status_index(to)] += 1;
            match to {
                QueueStatus::Processed => {
                    change.processed += 1;
                    change.last_processed_on = Some(now);
                }
                QueueStatus::Skipped => change.skipped += 1,
                QueueStatus::Error => change.errors += 1,
                QueueStatus::Ready | QueueStatus::Running => {}
            }
        }
    }

    /// An outbound item's move; processing time is sent to acknowledged.
    pub(super) fn outbound(&mut self, item: &OutboundItem, from: Option<QueueStatus>) {
        let item_ref = ItemRef {
            queue: Queue::Outbound,
            id: item.id,
            remote: &item.remote_system,
            event: &item.process_event,
            status: item.status,
            created_on: item.created_on,
        };
        self.outbound_ref(item_ref, (item.sent_on, item.processed_on), from);
    }

    /// An outbound item's move, read from its stored state.
    pub(super) fn outbound_state(
        &mut self,
        id: u64,
        state: &OutboundState<'_>,
        from: Option<QueueStatus>,
    ) {
        let item_ref = ItemRef {
            queue: Queue::Outbound,
            id,
            remote: state.remote_system,
            event: state.process_event,
            status: state.status,
            created_on: state.created_on,
        };
        self.outbound_ref(item_ref, (state.sent_on, state.processed_on), from);
    }

    fn outbound_ref(
        &mut self,
        item: ItemRef<'_>,
        (sent_on, processed_on): (Option<Millis>, Option<Millis>),
        from: Option<QueueStatus>,
    ) {
        let done = processed_on.unwrap_or(self.now);
        let processing = done.saturating_sub(sent_on.unwrap_or(item.created_on));
        self.item(item, from, done, processing);
    }

    /// An inbound item's move; processing time is its flow's run.
    pub(super) fn inbound(&mut self, item: &InboundItem, from: Option<QueueStatus>) {
        let item_ref = ItemRef {
            queue: Queue::Inbound,
            id: item.id,
            remote: &item.remote_system,
            event: &item.process_event,
            status: item.status,
            created_on: item.created_on,
        };
        let done = item.processed_on.unwrap_or(self.now);
        self.item(item_ref, from, done, item.processing_ms.unwrap_or(0));
    }

    /// Counts one inbound item's move in its own tally, now.
    pub(super) fn count_inbound(
        txn: &Txn<'_>,
        item: &InboundItem,
        from: Option<QueueStatus>,
    ) -> Result<(), StoreError> {
        let mut tally = Tally::new(crate::ids::now_millis());
        tally.inbound(item, from);
        tally.save(txn)
    }

    /// Counts one outbound item's move in its own tally, now.
    pub(super) fn count_outbound(
        txn: &Txn<'_>,
        item: &OutboundItem,
        from: Option<QueueStatus>,
    ) -> Result<(), StoreError> {
        let mut tally = Tally::new(crate::ids::now_millis());
        tally.outbound(item, from);
        tally.save(txn)
    }

    /// A move, with the timing when the item became Processed at `done`.
    fn item(
        &mut self,
        item: ItemRef<'_>,
        from: Option<QueueStatus>,
        done: Millis,
        processing_ms: u64,
    ) {
        self.moved(
            item.queue,
            item.id,
            (item.remote, item.event),
            from,
            Some(item.status),
        );
        if item.status == QueueStatus::Processed && from != Some(QueueStatus::Processed) {
            let change = self.change(item.queue, item.remote, item.event);
            change.processing_ms.push(processing_ms);
            change.last_time_in_queue_ms = Some(done.saturating_sub(item.created_on));
        }
    }

    /// Moves the items in the status index now (a later job in the same
    /// transaction may read it) and adds the counts to the transaction's
    /// own tally, which the writer adds to the stored counters once, just
    /// before the commit (`flush`): one read and write of each counter row
    /// per commit instead of one per job.
    pub(super) fn save(self, txn: &Txn<'_>) -> Result<(), StoreError> {
        let changes = &self.changes;
        super::queue_index::apply(
            txn,
            self.moves.iter().map(|&(key, id, from, to)| {
                let (queue, remote, event) = &changes[key].0;
                Move {
                    queue: *queue,
                    remote,
                    event,
                    id,
                    from,
                    to,
                }
            }),
        )?;
        txn.tally.borrow_mut().merge(self.changes, self.now);
        Ok(())
    }

    /// Adds another tally's counts to this one's, kept at the later time.
    fn merge(&mut self, changes: Vec<(StatsKey, Change)>, now: Millis) {
        self.now = self.now.max(now);
        for ((queue, remote, event), change) in changes {
            let into = entry(&mut self.changes, queue, &remote, &event);
            for (count, added) in into.counts.iter_mut().zip(change.counts) {
                *count += added;
            }
            into.processed += change.processed;
            into.skipped += change.skipped;
            into.errors += change.errors;
            into.processing_ms.extend(change.processing_ms);
            into.last_processed_on = change.last_processed_on.or(into.last_processed_on);
            into.last_time_in_queue_ms =
                change.last_time_in_queue_ms.or(into.last_time_in_queue_ms);
        }
    }

    /// Adds the counts to the stored counters and this minute's history;
    /// the writer calls it once per transaction, before the commit.
    pub(super) fn flush(self, txn: &WriteTransaction) -> Result<(), StoreError> {
        if self.changes.is_empty() {
            return Ok(());
        }
        let mut table = txn.open_table(QUEUE_STATS)?;
        // Most transactions only queue items: no minute to count.
        let mut minutes = None;
        let minute = minute_of(self.now);
        for ((queue, remote, event), change) in self.changes {
            let key = (queue.as_str(), remote.as_str(), event.as_str());
            let mut counters: QueueCounters = match table.get(key)? {
                Some(value) => decode(value.value())?,
                None => QueueCounters::default(),
            };
            for (i, &status) in crate::queue::ALL_STATUSES.iter().enumerate() {
                let count = counters.counts.get_mut(status);
                *count = count.saturating_add_signed(change.counts[i]);
            }
            counters.processed_total += change.processed;
            counters.skipped_total += change.skipped;
            counters.errors_total += change.errors;
            for ms in change.processing_ms {
                counters.observe(ms);
            }
            if change.last_processed_on.is_some() {
                counters.last_processed_on = change.last_processed_on;
            }
            if change.last_time_in_queue_ms.is_some() {
                counters.last_time_in_queue_ms = change.last_time_in_queue_ms;
            }
            table.insert(key, encode(&counters).as_slice())?;
            if change.processed + change.errors > 0 {
                let minutes = match &mut minutes {
                    Some(minutes) => minutes,
                    None => minutes.insert(txn.open_table(QUEUE_MINUTES)?),
                };
                let key = (minute, key.0, key.1, key.2);
                let mut counts: MinuteCounts = match minutes.get(key)? {
                    Some(value) => decode(value.value())?,
                    None => MinuteCounts::default(),
                };
                counts.processed += change.processed;
                counts.errors += change.errors;
                minutes.insert(key, encode(&counts).as_slice())?;
            }
        }
        Ok(())
    }
}

/// How many inbound items of `remote` (any process event) wait, Ready,
/// or hold their records' later items, in Error: the stored counts with
/// what this transaction's jobs did so far.
pub(super) fn inbound_waiting(txn: &Txn<'_>, remote: &str) -> Result<i64, StoreError> {
    let waiting = |counts: &[i64; 5]| {
        counts[status_index(QueueStatus::Ready)] + counts[status_index(QueueStatus::Error)]
    };
    let mut n = 0i64;
    let queue = Queue::Inbound.as_str();
    for row in txn.open_table(QUEUE_STATS)?.range((queue, remote, "")..)? {
        let (key, value) = row?;
        let (q, r, _) = key.value();
        if q != queue || r != remote {
            break;
        }
        let counters: QueueCounters = decode(value.value())?;
        let stored =
            counters.counts.get(QueueStatus::Ready) + counters.counts.get(QueueStatus::Error);
        n += i64::try_from(stored).unwrap_or(i64::MAX);
    }
    for ((q, r, _), change) in &txn.tally.borrow().changes {
        if *q == Queue::Inbound && r == remote {
            n += waiting(&change.counts);
        }
    }
    Ok(n)
}

/// Counts every queued item, for a store written before the counters
/// existed (or whose counters were never completed). Run once on open
/// (`upgrade::once`, under `COUNTED_MARK`).
pub(super) fn count_queues(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut table = txn.open_table(QUEUE_STATS)?;
    table.retain(|_, _| false)?;
    let mut counted: Vec<(StatsKey, QueueCounters)> = Vec::new();
    let mut count = |queue: Queue, remote: &str, event: &str, status: QueueStatus| {
        *entry(&mut counted, queue, remote, event)
            .counts
            .get_mut(status) += 1;
    };
    for row in txn.open_table(OUTBOUND)?.iter()? {
        let (_, value) = row?;
        let item: OutboundItem = decode(value.value())?;
        count(
            Queue::Outbound,
            &item.remote_system,
            &item.process_event,
            item.status,
        );
    }
    for row in txn.open_table(INBOUND)?.iter()? {
        let (_, value) = row?;
        let item: InboundItem = decode(value.value())?;
        count(
            Queue::Inbound,
            &item.remote_system,
            &item.process_event,
            item.status,
        );
    }
    for ((queue, remote, event), counters) in &counted {
        table.insert(
            (queue.as_str(), remote.as_str(), event.as_str()),
            encode(counters).as_slice(),
        )?;
    }
    if !counted.is_empty() {
        tracing::info!(target: "store", keys = counted.len(), "Counted the queued items for the statistics (once, for a store from an earlier version).");
    }
    Ok(())
}

/// Deletes the per-minute history older than a day (and a margin).
pub(super) fn trim_minutes(txn: &WriteTransaction, now: Millis) -> Result<(), StoreError> {
    let keep_from = minute_of(now).saturating_sub(MINUTES_KEPT + 60);
    let mut minutes = txn.open_table(QUEUE_MINUTES)?;
    minutes.retain_in((0u64, "", "", "")..(keep_from, "", "", ""), |_, _| false)?;
    Ok(())
}

impl Store {
    /// Every (queue, remote system, process event)'s figures at `now`, and
    /// the last day's minutes, from the counters alone.
    pub fn queue_stats(
        &self,
        now: Millis,
    ) -> Result<(Vec<QueueStats>, Vec<QueueMinute>), StoreError> {
        let txn = self.db.begin_read()?;
        let now_minute = minute_of(now);
        let from = now_minute.saturating_sub(MINUTES_KEPT);
        // A hub has a key per remote system: looked up by hash, not in a
        // list.
        let mut recent: std::collections::HashMap<StatsKey, Vec<(u64, MinuteCounts)>> =
            std::collections::HashMap::new();
        let mut chart: Vec<QueueMinute> = Vec::new();
        for row in txn.open_table(QUEUE_MINUTES)?.range((from, "", "", "")..)? {
            let (key, value) = row?;
            let (minute, queue, remote, event) = key.value();
            let Some(queue) = Queue::parse(queue) else {
                continue;
            };
            let counts: MinuteCounts = decode(value.value())?;
            match chart.last_mut() {
                Some((m, q, c)) if *m == minute && *q == queue => {
                    c.processed += counts.processed;
                    c.errors += counts.errors;
                }
                _ => chart.push((minute, queue, counts)),
            }
            recent
                .entry((queue, remote.to_string(), event.to_string()))
                .or_default()
                .push((minute, counts));
        }
        let mut out = Vec::new();
        for row in txn.open_table(QUEUE_STATS)?.iter()? {
            let (key, value) = row?;
            let (queue, remote, event) = key.value();
            let Some(queue) = Queue::parse(queue) else {
                continue;
            };
            let counters: QueueCounters = decode(value.value())?;
            let minutes = recent
                .get(&(queue, remote.to_string(), event.to_string()))
                .map_or(&[][..], Vec::as_slice);
            out.push(QueueStats::derive(
                queue,
                remote.to_string(),
                event.to_string(),
                &counters,
                minutes,
                now_minute,
            ));
        }
        Ok((out, chart))
    }

    /// Per remote system: outbound items waiting (Ready or Running) from the
    /// counters, and items of either queue that went to Error in the
    /// minutes from `since_minute` on.
    pub fn alert_figures(
        &self,
        since_minute: u64,
    ) -> Result<std::collections::HashMap<String, (u64, u64)>, StoreError> {
        let txn = self.db.begin_read()?;
        let mut figures: std::collections::HashMap<String, (u64, u64)> = Default::default();
        for row in txn.open_table(QUEUE_STATS)?.iter()? {
            let (key, value) = row?;
            let (queue, remote, _) = key.value();
            if Queue::parse(queue) != Some(Queue::Outbound) {
                continue;
            }
            let counters: QueueCounters = decode(value.value())?;
            let waiting =
                counters.counts.get(QueueStatus::Ready) + counters.counts.get(QueueStatus::Running);
            figures.entry(remote.to_string()).or_default().0 += waiting;
        }
        for row in txn
            .open_table(QUEUE_MINUTES)?
            .range((since_minute, "", "", "")..)?
        {
            let (key, value) = row?;
            let (_, _, remote, _) = key.value();
            let counts: MinuteCounts = decode(value.value())?;
            figures.entry(remote.to_string()).or_default().1 += counts.errors;
        }
        Ok(figures)
    }
}
