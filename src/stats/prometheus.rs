//! The stats in the Prometheus text exposition format (version 0.0.4), for
//! `/metrics`: queue depth by status, processed/skipped/error counters, the
//! processing-time histogram, remote system states and health, purges.

use std::fmt::Write;

use super::{PROCESSING_BUCKETS_MS, QueueStats, Stats};

/// A counter family: name, help, and its value in one stats line.
type Counter = (&'static str, &'static str, fn(&QueueStats) -> u64);

/// Escapes a label value: backslash, double quote and newline.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn queue_labels(line: &QueueStats) -> String {
    format!(
        "queue=\"{}\",remote_system=\"{}\",process_event=\"{}\"",
        line.queue.as_str(),
        label(&line.remote_system),
        label(&line.process_event)
    )
}

/// Renders `stats` as one scrape.
#[allow(
    clippy::too_many_lines,
    reason = "one short block per metric family, in the order /metrics shows them"
)]
pub fn render(stats: &Stats) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "procsync_queue_items",
        "gauge",
        "Items in a queue now, by status.",
    );
    for line in &stats.queues {
        for &status in crate::queue::ALL_STATUSES {
            let _ = writeln!(
                out,
                "procsync_queue_items{{{},status=\"{}\"}} {}",
                queue_labels(line),
                status.as_str(),
                line.counts.get(status)
            );
        }
    }
    let counters: [Counter; 3] = [
        (
            "procsync_queue_processed_total",
            "Items that reached Processed.",
            |l| l.processed_total,
        ),
        (
            "procsync_queue_skipped_total",
            "Items that were skipped (by the operator or a flow script).",
            |l| l.skipped_total,
        ),
        (
            "procsync_queue_errors_total",
            "Times an item went into Error.",
            |l| l.errors_total,
        ),
    ];
    for (name, help, value) in counters {
        family(&mut out, name, "counter", help);
        for line in &stats.queues {
            let _ = writeln!(out, "{name}{{{}}} {}", queue_labels(line), value(line));
        }
    }
    family(
        &mut out,
        "procsync_processing_seconds",
        "histogram",
        "Processing time of Processed items: sent to acknowledged (outbound), the inbound flow's run (inbound).",
    );
    for line in &stats.queues {
        let labels = queue_labels(line);
        let mut cumulative = 0;
        for (i, bound) in PROCESSING_BUCKETS_MS.iter().enumerate() {
            cumulative += line.processing_buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "procsync_processing_seconds_bucket{{{labels},le=\"{}\"}} {cumulative}",
                *bound as f64 / 1000.0
            );
        }
        let _ = writeln!(
            out,
            "procsync_processing_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
            line.processing_count
        );
        let _ = writeln!(
            out,
            "procsync_processing_seconds_sum{{{labels}}} {}",
            line.processing_ms_sum as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "procsync_processing_seconds_count{{{labels}}} {}",
            line.processing_count
        );
    }
    family(
        &mut out,
        "procsync_queue_last_processed_timestamp_seconds",
        "gauge",
        "When the last item was processed (Unix time).",
    );
    for line in &stats.queues {
        if let Some(ms) = line.last_processed_ms {
            let _ = writeln!(
                out,
                "procsync_queue_last_processed_timestamp_seconds{{{}}} {}",
                queue_labels(line),
                ms as f64 / 1000.0
            );
        }
    }
    family(
        &mut out,
        "procsync_remote_health",
        "gauge",
        "1 for a remote system's current connection health (Up, Slow or Down), 0 for the others.",
    );
    for remote in &stats.remote_systems {
        for health in ["Up", "Slow", "Down"] {
            let _ = writeln!(
                out,
                "procsync_remote_health{{remote_system=\"{}\",health=\"{health}\"}} {}",
                label(&remote.name),
                u8::from(remote.health == health)
            );
        }
    }
    family(
        &mut out,
        "procsync_remote_state",
        "gauge",
        "1 for a remote system's current outbound and inbound state.",
    );
    for remote in &stats.remote_systems {
        for (direction, state) in [
            ("outbound", &remote.outbound_state),
            ("inbound", &remote.inbound_state),
        ] {
            let _ = writeln!(
                out,
                "procsync_remote_state{{remote_system=\"{}\",direction=\"{direction}\",state=\"{}\"}} 1",
                label(&remote.name),
                label(state)
            );
        }
    }
    family(
        &mut out,
        "procsync_remote_round_trip_seconds",
        "gauge",
        "The last heartbeat's round trip to a remote system.",
    );
    for remote in &stats.remote_systems {
        if let Some(ms) = remote.round_trip_ms {
            let _ = writeln!(
                out,
                "procsync_remote_round_trip_seconds{{remote_system=\"{}\"}} {}",
                label(&remote.name),
                ms as f64 / 1000.0
            );
        }
    }
    family(
        &mut out,
        "procsync_outbound_oldest_waiting_seconds",
        "gauge",
        "Age of a remote system's oldest outbound item not yet acknowledged (Ready or Running); 0 when none waits.",
    );
    for remote in &stats.remote_systems {
        let _ = writeln!(
            out,
            "procsync_outbound_oldest_waiting_seconds{{remote_system=\"{}\"}} {}",
            label(&remote.name),
            remote.oldest_waiting_s.unwrap_or(0)
        );
    }
    family(
        &mut out,
        "procsync_alerts_active",
        "gauge",
        "Alert thresholds a remote system is over now.",
    );
    for remote in &stats.remote_systems {
        let _ = writeln!(
            out,
            "procsync_alerts_active{{remote_system=\"{}\"}} {}",
            label(&remote.name),
            remote.alerts.len()
        );
    }
    family(
        &mut out,
        "procsync_conflicts_total",
        "counter",
        "Conflicts met applying a remote system's changes: fields both sides changed since the last exchange, settled by the inbound flow's rule.",
    );
    for remote in &stats.remote_systems {
        let _ = writeln!(
            out,
            "procsync_conflicts_total{{remote_system=\"{}\"}} {}",
            label(&remote.name),
            remote.conflicts
        );
    }
    let reconciled: Vec<(&str, crate::stats::Reconciled)> = stats
        .remote_systems
        .iter()
        .filter_map(|r| r.reconciled.map(|found| (r.name.as_str(), found)))
        .collect();
    for (name, kind, help, value) in [
        (
            "procsync_reconcile_last_finished_seconds",
            "gauge",
            "When the last reconciliation with a remote system ended, seconds since the Unix epoch.",
            (|r: &crate::stats::Reconciled| r.finished_s) as fn(&crate::stats::Reconciled) -> u64,
        ),
        (
            "procsync_reconcile_last_differences",
            "gauge",
            "Records the last reconciliation with a remote system found missing on either side or different.",
            |r| r.differences,
        ),
        (
            "procsync_reconcile_last_repaired",
            "gauge",
            "Items the last reconciliation with a remote system sent to settle its differences.",
            |r| r.repaired,
        ),
        (
            "procsync_reconcile_last_failed",
            "gauge",
            "1 when the last reconciliation with a remote system failed.",
            |r| u64::from(r.failed),
        ),
    ] {
        if reconciled.is_empty() {
            break;
        }
        family(&mut out, name, kind, help);
        for (remote, found) in &reconciled {
            let _ = writeln!(
                out,
                "{name}{{remote_system=\"{}\"}} {}",
                label(remote),
                value(found)
            );
        }
    }
    family(
        &mut out,
        "procsync_purged_total",
        "counter",
        "Queue items and unused contents deleted by the purge.",
    );
    for (kind, n) in [
        ("outbound", stats.purged.outbound),
        ("inbound", stats.purged.inbound),
        ("contents", stats.purged.contents),
    ] {
        let _ = writeln!(out, "procsync_purged_total{{kind=\"{kind}\"}} {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
