//! `procsync stats [--json]`: the queues' figures from the running
//! instance's counters, as tables for a person or JSON for a script.

use anyhow::Result;

use super::{Connection, client, print_table};
use crate::stats::{Stats, StatusCounts};

pub async fn run(json: bool, connection: &Connection) -> Result<()> {
    let stats = client(connection).await?.stats().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print_stats(&stats);
    }
    Ok(())
}

fn counts_cells(counts: &StatusCounts) -> Vec<String> {
    [
        counts.ready,
        counts.running,
        counts.processed,
        counts.error,
        counts.skipped,
    ]
    .iter()
    .map(u64::to_string)
    .collect()
}

fn print_stats(stats: &Stats) {
    println!("{} at {} UTC", stats.instance, stats.generated_on);
    println!();
    let totals = [("outbound", &stats.outbound), ("inbound", &stats.inbound)]
        .into_iter()
        .map(|(queue, counts)| {
            let mut row = vec![queue.to_string()];
            row.extend(counts_cells(counts));
            row
        })
        .collect();
    print_table(
        &["QUEUE", "READY", "RUNNING", "PROCESSED", "ERROR", "SKIPPED"],
        totals,
    );
    println!();
    let lines = stats
        .queues
        .iter()
        .map(|q| {
            let mut row = vec![
                q.queue.as_str().to_string(),
                q.remote_system.clone(),
                q.process_event.clone(),
            ];
            row.extend(counts_cells(&q.counts));
            row.extend([
                format!(
                    "{}/{}/{}",
                    q.processed_last_minute, q.processed_last_hour, q.processed_last_day
                ),
                format!("{:.1}%", q.error_rate * 100.0),
                format!("{:.1}", q.average_processing_ms),
                q.latest_time_in_queue_ms
                    .map(|ms| ms.to_string())
                    .unwrap_or_else(|| "-".into()),
                q.last_processed_on.clone().unwrap_or_else(|| "-".into()),
            ]);
            row
        })
        .collect();
    print_table(
        &[
            "QUEUE",
            "REMOTE",
            "EVENT",
            "READY",
            "RUNNING",
            "PROCESSED",
            "ERROR",
            "SKIPPED",
            "MIN/HOUR/DAY",
            "ERROR RATE",
            "AVG MS",
            "LAST IN QUEUE MS",
            "LAST PROCESSED",
        ],
        lines,
    );
    println!();
    print_remotes(stats);
    println!(
        "purged: {} outbound, {} inbound, {} contents",
        stats.purged.outbound, stats.purged.inbound, stats.purged.contents
    );
}

/// The remote systems' table, then what is over an alert threshold.
fn print_remotes(stats: &Stats) {
    let remotes = stats
        .remote_systems
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.outbound_state.clone(),
                r.inbound_state.clone(),
                r.health.clone(),
                r.round_trip_ms
                    .map(|ms| ms.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.oldest_waiting_s
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                if r.alerts.is_empty() {
                    String::new()
                } else {
                    format!("{} !", r.alerts.len())
                },
                r.conflicts.to_string(),
                r.reconciled
                    .map(|found| {
                        if found.failed {
                            "failed".to_string()
                        } else {
                            format!("{} diff, {} repaired", found.differences, found.repaired)
                        }
                    })
                    .unwrap_or_else(|| "-".into()),
                r.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "REMOTE",
            "OUTBOUND",
            "INBOUND",
            "HEALTH",
            "RTT MS",
            "OLDEST S",
            "ALERTS",
            "CONFLICTS",
            "RECONCILED",
            "LAST ERROR",
        ],
        remotes,
    );
    println!();
    let alerts: Vec<&String> = stats
        .remote_systems
        .iter()
        .flat_map(|r| &r.alerts)
        .collect();
    if !alerts.is_empty() {
        println!("OVER AN ALERT THRESHOLD:");
        for alert in alerts {
            println!("  ! {alert}");
        }
        println!();
    }
}
