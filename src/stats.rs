//! Queue statistics: the counters the store keeps per (queue, remote
//! system, process event), and the figures `procsync stats`, `/metrics` and
//! the dashboard derive from them. Pure values and arithmetic; the store
//! keeps the counters current in the same transactions that change items.

pub mod prometheus;

use serde::{Deserialize, Serialize};

use crate::ids::{Millis, format_time};
use crate::queue::QueueStatus;

/// Upper bounds (milliseconds) of the processing-time histogram's buckets;
/// one more bucket holds everything slower.
pub const PROCESSING_BUCKETS_MS: &[u64] = &[
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
];

/// Minutes of per-minute history kept: a day, plus a margin the purge
/// trims.
pub const MINUTES_KEPT: u64 = 24 * 60;

/// The two queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Queue {
    Outbound,
    Inbound,
}

impl Queue {
    pub fn as_str(self) -> &'static str {
        match self {
            Queue::Outbound => "outbound",
            Queue::Inbound => "inbound",
        }
    }

    pub fn parse(text: &str) -> Option<Queue> {
        match text {
            "outbound" => Some(Queue::Outbound),
            "inbound" => Some(Queue::Inbound),
            _ => None,
        }
    }
}

/// Items in a queue by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    pub ready: u64,
    pub running: u64,
    pub processed: u64,
    pub error: u64,
    pub skipped: u64,
}

impl StatusCounts {
    pub fn get(&self, status: QueueStatus) -> u64 {
        match status {
            QueueStatus::Ready => self.ready,
            QueueStatus::Running => self.running,
            QueueStatus::Processed => self.processed,
            QueueStatus::Error => self.error,
            QueueStatus::Skipped => self.skipped,
        }
    }

    pub fn get_mut(&mut self, status: QueueStatus) -> &mut u64 {
        match status {
            QueueStatus::Ready => &mut self.ready,
            QueueStatus::Running => &mut self.running,
            QueueStatus::Processed => &mut self.processed,
            QueueStatus::Error => &mut self.error,
            QueueStatus::Skipped => &mut self.skipped,
        }
    }

    pub fn add(&mut self, other: &StatusCounts) {
        for &status in crate::queue::ALL_STATUSES {
            *self.get_mut(status) += other.get(status);
        }
    }

    pub fn total(&self) -> u64 {
        crate::queue::ALL_STATUSES
            .iter()
            .map(|&s| self.get(s))
            .sum()
    }
}

/// What the store keeps for one (queue, remote system, process event).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueCounters {
    /// Items there now, by status.
    pub counts: StatusCounts,
    /// Items that ever reached Processed, Skipped, or went into Error
    /// (each time it did).
    pub processed_total: u64,
    pub skipped_total: u64,
    pub errors_total: u64,
    /// Processing times of Processed items: sum, count and histogram
    /// (one count per `PROCESSING_BUCKETS_MS` bucket, plus one slower).
    pub processing_ms_sum: u64,
    pub processing_count: u64,
    #[serde(default)]
    pub processing_buckets: Vec<u64>,
    pub last_processed_on: Option<Millis>,
    /// Creation to Processed of the item processed last.
    pub last_time_in_queue_ms: Option<u64>,
}

impl QueueCounters {
    /// Counts one processing time into the sum and the histogram.
    pub fn observe(&mut self, processing_ms: u64) {
        self.processing_ms_sum += processing_ms;
        self.processing_count += 1;
        if self.processing_buckets.len() != PROCESSING_BUCKETS_MS.len() + 1 {
            self.processing_buckets
                .resize(PROCESSING_BUCKETS_MS.len() + 1, 0);
        }
        let bucket = PROCESSING_BUCKETS_MS
            .iter()
            .position(|&bound| processing_ms <= bound)
            .unwrap_or(PROCESSING_BUCKETS_MS.len());
        self.processing_buckets[bucket] += 1;
    }
}

/// Processed items and errors in one minute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteCounts {
    pub processed: u64,
    pub errors: u64,
}

/// One line of `procsync stats`: one queue, remote system and process
/// event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueStats {
    pub queue: Queue,
    pub remote_system: String,
    pub process_event: String,
    pub counts: StatusCounts,
    /// Items that reached Processed in the current minute and the one
    /// before, the last 60 and the last 1,440 whole minutes (plus the
    /// current one).
    pub processed_last_minute: u64,
    pub processed_last_hour: u64,
    pub processed_last_day: u64,
    pub errors_last_day: u64,
    /// Errors among the items finished in the last day (0 to 1).
    pub error_rate: f64,
    pub average_processing_ms: f64,
    pub latest_time_in_queue_ms: Option<u64>,
    pub last_processed_on: Option<String>,
    /// The same, in milliseconds since the epoch.
    pub last_processed_ms: Option<Millis>,
    pub processed_total: u64,
    pub skipped_total: u64,
    pub errors_total: u64,
    pub processing_ms_sum: u64,
    pub processing_count: u64,
    /// Per `PROCESSING_BUCKETS_MS` bucket (not cumulative), plus slower.
    pub processing_buckets: Vec<u64>,
}

impl QueueStats {
    /// Figures for one key from its counters and its minutes of the last
    /// day (`(minute, counts)`), `now_minute` being the current minute.
    pub fn derive(
        queue: Queue,
        remote_system: String,
        process_event: String,
        counters: &QueueCounters,
        minutes: &[(u64, MinuteCounts)],
        now_minute: u64,
    ) -> QueueStats {
        let since = |n: u64| {
            minutes
                .iter()
                .filter(|(minute, _)| *minute + n >= now_minute)
                .fold(MinuteCounts::default(), |acc, (_, c)| MinuteCounts {
                    processed: acc.processed + c.processed,
                    errors: acc.errors + c.errors,
                })
        };
        let day = since(MINUTES_KEPT);
        let finished = day.processed + day.errors;
        let mut buckets = counters.processing_buckets.clone();
        buckets.resize(PROCESSING_BUCKETS_MS.len() + 1, 0);
        QueueStats {
            queue,
            remote_system,
            process_event,
            counts: counters.counts,
            processed_last_minute: since(1).processed,
            processed_last_hour: since(60).processed,
            processed_last_day: day.processed,
            errors_last_day: day.errors,
            error_rate: if finished == 0 {
                0.0
            } else {
                day.errors as f64 / finished as f64
            },
            average_processing_ms: if counters.processing_count == 0 {
                0.0
            } else {
                counters.processing_ms_sum as f64 / counters.processing_count as f64
            },
            latest_time_in_queue_ms: counters.last_time_in_queue_ms,
            last_processed_on: counters.last_processed_on.map(format_time),
            last_processed_ms: counters.last_processed_on,
            processed_total: counters.processed_total,
            skipped_total: counters.skipped_total,
            errors_total: counters.errors_total,
            processing_ms_sum: counters.processing_ms_sum,
            processing_count: counters.processing_count,
            processing_buckets: buckets,
        }
    }
}

/// Which counters: (queue, remote system, process event).
pub type StatsKey = (Queue, String, String);

/// One queue's processed items and errors in one minute.
pub type QueueMinute = (u64, Queue, MinuteCounts);

/// One minute of the last day's chart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinutePoint {
    /// Minutes since the Unix epoch (UTC).
    pub minute: u64,
    pub outbound_processed: u64,
    pub inbound_processed: u64,
    pub errors: u64,
}

/// A remote system's states and connection health.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoteStats {
    pub name: String,
    pub outbound_state: String,
    pub inbound_state: String,
    /// Up, Slow or Down.
    pub health: String,
    pub round_trip_ms: Option<u64>,
    pub last_error: Option<String>,
    /// Age in seconds of the oldest outbound item not yet acknowledged.
    #[serde(default)]
    pub oldest_waiting_s: Option<u64>,
    /// The alert thresholds it is over now, each as a sentence.
    #[serde(default)]
    pub alerts: Vec<String>,
    /// Conflicts met applying its changes, over the store's life.
    #[serde(default)]
    pub conflicts: u64,
    /// Its last initial load in one line, if one ran.
    #[serde(default)]
    pub load: Option<String>,
    /// Its last reconciliation in one line, if one ran.
    #[serde(default)]
    pub reconcile: Option<String>,
    /// The figures of its last finished reconciliation.
    #[serde(default)]
    pub reconciled: Option<Reconciled>,
}

/// What a remote system's last finished reconciliation found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciled {
    /// When it ended, seconds since the Unix epoch.
    pub finished_s: u64,
    pub differences: u64,
    /// Items sent to settle them.
    pub repaired: u64,
    pub failed: bool,
}

/// Items deleted by the purge since the store was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgedStats {
    pub outbound: u64,
    pub inbound: u64,
    pub contents: u64,
}

/// Everything `procsync stats` shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub instance: String,
    pub generated_on: String,
    /// The minute `generated_on` falls in, since the epoch: the chart's
    /// right edge.
    pub now_minute: u64,
    /// Totals by status per queue.
    pub outbound: StatusCounts,
    pub inbound: StatusCounts,
    pub queues: Vec<QueueStats>,
    pub remote_systems: Vec<RemoteStats>,
    /// Minutes of the last day with anything processed or failed, oldest
    /// first (missing minutes had nothing).
    pub per_minute: Vec<MinutePoint>,
    pub purged: PurgedStats,
}

impl Stats {
    /// Puts the report together: totals per queue, the chart's minutes.
    pub fn assemble(
        instance: String,
        now: Millis,
        queues: Vec<QueueStats>,
        chart: Vec<QueueMinute>,
        remote_systems: Vec<RemoteStats>,
        purged: PurgedStats,
    ) -> Stats {
        let mut outbound = StatusCounts::default();
        let mut inbound = StatusCounts::default();
        for line in &queues {
            match line.queue {
                Queue::Outbound => outbound.add(&line.counts),
                Queue::Inbound => inbound.add(&line.counts),
            }
        }
        let mut per_minute: Vec<MinutePoint> = Vec::new();
        for (minute, queue, counts) in chart {
            if per_minute.last().is_none_or(|p| p.minute != minute) {
                per_minute.push(MinutePoint {
                    minute,
                    ..Default::default()
                });
            }
            let point = per_minute.last_mut().expect("just pushed");
            match queue {
                Queue::Outbound => point.outbound_processed += counts.processed,
                Queue::Inbound => point.inbound_processed += counts.processed,
            }
            point.errors += counts.errors;
        }
        Stats {
            instance,
            generated_on: format_time(now),
            now_minute: minute_of(now),
            outbound,
            inbound,
            queues,
            remote_systems,
            per_minute,
            purged,
        }
    }
}

/// The current minute since the Unix epoch.
pub fn minute_of(millis: Millis) -> u64 {
    millis / 60_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processing_times_fall_into_their_buckets() {
        let mut counters = QueueCounters::default();
        for ms in [0, 5, 6, 100, 60_000, 60_001] {
            counters.observe(ms);
        }
        let b = &counters.processing_buckets;
        assert_eq!(b.len(), PROCESSING_BUCKETS_MS.len() + 1);
        assert_eq!(b[0], 2, "0 and 5 are ≤ 5");
        assert_eq!(b[1], 1, "6 is ≤ 10");
        assert_eq!(b[4], 1, "100 is ≤ 100");
        assert_eq!(b[PROCESSING_BUCKETS_MS.len() - 1], 1);
        assert_eq!(b[PROCESSING_BUCKETS_MS.len()], 1, "slower than all");
        assert_eq!(counters.processing_count, 6);
    }

    #[test]
    fn recent_figures_come_from_the_minutes() {
        let counters = QueueCounters {
            processing_ms_sum: 30,
            processing_count: 3,
            ..Default::default()
        };
        let now = 1_000_000;
        let minute = |m, processed, errors| (m, MinuteCounts { processed, errors });
        let minutes = [
            minute(now - 2000, 50, 50), // older than a day: ignored
            minute(now - 1000, 5, 1),
            minute(now - 30, 3, 0),
            minute(now - 1, 2, 0),
            minute(now, 1, 1),
        ];
        let s = QueueStats::derive(
            Queue::Inbound,
            "hub".into(),
            "incident".into(),
            &counters,
            &minutes,
            now,
        );
        assert_eq!(s.processed_last_minute, 3);
        assert_eq!(s.processed_last_hour, 6);
        assert_eq!(s.processed_last_day, 11);
        assert_eq!(s.errors_last_day, 2);
        assert!((s.error_rate - 2.0 / 13.0).abs() < 1e-9);
        assert!((s.average_processing_ms - 10.0).abs() < 1e-9);
    }
}
