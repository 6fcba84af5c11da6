//! `procsync bench sync`: captured changes end to end between two linked
//! instances on this machine. Writes records on the edge in batches and
//! times until the hub has applied every item (its inbound flow ran, the
//! record exists) and the edge has every acknowledgment, using the queue
//! counters of each side; with each process's CPU time and peak memory.
//! With `--rate`, offers single writes at a steady rate instead and
//! prints the latency from each write's acknowledgment on the edge to its
//! apply on the hub; with `--backlog`, a peer coming back to a full queue
//! (`backlog`).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;

use super::{cpu_seconds, machine};

#[derive(Args, Debug, Clone)]
pub struct SyncBench {
    /// Records to create on the edge (each one outbound item).
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Records per batch call.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: u64,
    /// Offer this many single writes per second (for `--seconds`) instead
    /// of batches, and print the latency from each acknowledged write on
    /// the edge to its apply on the hub.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Queue the records while the hub is down instead, restart the edge
    /// on that backlog, then bring the hub back and time the drain.
    #[arg(long, conflicts_with = "rate")]
    pub backlog: bool,
    /// Instead, send the records twice (typical ten-field ones), with
    /// compression off and on, and print the bytes on the wire.
    #[arg(long, conflicts_with_all = ["rate", "backlog"])]
    pub wire: bool,
    /// Compress the link (`link.compress true` on both).
    #[arg(long)]
    pub compress: bool,
    /// How long to offer `--rate` for.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Where to make the temporary instances (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

pub async fn run(args: SyncBench) -> Result<()> {
    let base = super::RunDir::new(args.dir.as_deref(), "sync")?;
    phases(&base.0, &args).await
}

async fn phases(base: &std::path::Path, args: &SyncBench) -> Result<()> {
    println!(
        "procsync bench sync: {} (release build: {})",
        machine(),
        !cfg!(debug_assertions)
    );
    if args.wire {
        return super::wire::run(base, args.records, args.batch_size).await;
    }
    let mut edge = crate::pair::start(base, "edge").await?;
    let mut hub = crate::pair::start(base, "hub").await?;
    if args.compress {
        for node in [&mut edge, &mut hub] {
            node.client.set_property("link.compress", "true").await?;
        }
    }
    crate::pair::link(&mut edge, &mut hub, "").await?;
    if let Some(rate) = args.rate {
        return super::latency::run(&mut edge, &mut hub, rate, args.seconds).await;
    }
    if args.backlog {
        return super::backlog::run(edge, hub, args.records, args.batch_size).await;
    }
    let cpu_before = (
        cpu_seconds(edge.server.pid()),
        cpu_seconds(hub.server.pid()),
    );
    let started = Instant::now();
    let written = super::write_requests(&mut edge.client, args.records, args.batch_size, |n| {
        vec![
            (
                "short_description".to_string(),
                format!("Bench request {n}"),
            ),
            ("state".to_string(), "1".to_string()),
        ]
    })
    .await?;
    let write_time = started.elapsed();
    println!(
        "wrote {written} records on the edge in {:.1} s ({:.0} records/s, each queuing one item)",
        write_time.as_secs_f64(),
        written as f64 / write_time.as_secs_f64()
    );
    let deadline = started + Duration::from_secs(1800);
    let (mut applied_at, mut acknowledged_at) = (None, None);
    let bar = crate::progress::items(written, "applying");
    while applied_at.is_none() || acknowledged_at.is_none() {
        if Instant::now() > deadline {
            bail!("the items did not all arrive within 30 minutes");
        }
        if applied_at.is_none() {
            let applied = hub.client.stats().await?.inbound.processed;
            bar.set_position(applied.min(written));
            if applied >= written {
                applied_at = Some(started.elapsed());
            }
        }
        if acknowledged_at.is_none() && edge.client.stats().await?.outbound.processed >= written {
            acknowledged_at = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(bar);
    let (applied, acknowledged) = (applied_at.unwrap(), acknowledged_at.unwrap());
    let cpu = (
        cpu_seconds(edge.server.pid()) - cpu_before.0,
        cpu_seconds(hub.server.pid()) - cpu_before.1,
    );
    println!(
        "all {written} applied on the hub {:.1} s after the first write: {:.0} items/s end to end",
        applied.as_secs_f64(),
        written as f64 / applied.as_secs_f64()
    );
    println!(
        "all acknowledged on the edge after {:.1} s",
        acknowledged.as_secs_f64()
    );
    println!(
        "CPU: edge {:.1} s, hub {:.1} s ({:.0} µs and {:.0} µs per item)",
        cpu.0,
        cpu.1,
        cpu.0 * 1e6 / written as f64,
        cpu.1 * 1e6 / written as f64
    );
    println!(
        "peak resident memory: edge {:.0} MiB, hub {:.0} MiB",
        super::peak_rss_mib(edge.server.pid()).unwrap_or(f64::NAN),
        super::peak_rss_mib(hub.server.pid()).unwrap_or(f64::NAN)
    );
    // Both stopped, what each store holds per item: the bytes each commit
    // wrote, in the end.
    drop((edge, hub));
    for side in ["edge", "hub"] {
        let (total, tables) = super::stats::pages_per_item(&base.join(side), written)?;
        println!("{side}'s store: {total} bytes of pages per item; by table: {tables}");
    }
    Ok(())
}
