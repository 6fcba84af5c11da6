//! `procsync bench load`: the initial load and reconciliation at scale
//! between two linked instances on this machine. Writes records on the
//! edge before the link exists (nothing captures them), links, runs
//! `remote load` and times until the hub has applied every record, with
//! each side's largest resident memory while it loads; then changes some
//! records on the hub with its capture off and times a reconciliation
//! from the edge, with the bytes it put on the wire and what it found.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;

use super::{cpu_seconds, machine, rss_mib};
use crate::record::{Operation, RecordWrite};

#[derive(Args, Debug, Clone)]
pub struct LoadBench {
    /// Records on the edge before the link is made.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Records changed on the hub with its capture off, for the
    /// reconciliation to find.
    #[arg(long, default_value_t = 100)]
    pub differences: u64,
    /// Where to make the temporary instances (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

pub async fn run(args: LoadBench) -> Result<()> {
    let base = super::RunDir::new(args.dir.as_deref(), "load")?;
    phases(&base.0, &args).await
}

async fn phases(base: &std::path::Path, args: &LoadBench) -> Result<()> {
    println!(
        "procsync bench load: {} (release build: {})",
        machine(),
        !cfg!(debug_assertions)
    );
    let mut edge = crate::pair::start(base, "edge").await?;
    let mut hub = crate::pair::start(base, "hub").await?;
    let started = Instant::now();
    let written = super::write_requests(&mut edge.client, args.records, 1000, |n| {
        vec![
            (
                "short_description".to_string(),
                format!("Bench request {n}"),
            ),
            ("requested_for".to_string(), format!("user{}", n % 977)),
            ("state".to_string(), (n % 4).to_string()),
        ]
    })
    .await?;
    println!(
        "wrote {written} records on the edge before linking in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    crate::pair::link(&mut edge, &mut hub, "").await?;
    let cpu_before = (
        cpu_seconds(edge.server.pid()),
        cpu_seconds(hub.server.pid()),
    );
    println!(
        "  resident memory before the load: edge {:.0} MiB, hub {:.0} MiB",
        rss_mib(edge.server.pid()).unwrap_or(0.0),
        rss_mib(hub.server.pid()).unwrap_or(0.0)
    );
    let started = Instant::now();
    edge.client.remote_load("hub", "start", "", "").await?;
    let deadline = started + Duration::from_secs(3600);
    let mut peak = (0.0f64, 0.0f64);
    let bar = crate::progress::items(written, "loading");
    loop {
        if Instant::now() > deadline {
            bail!("the load did not reach the hub within an hour");
        }
        peak.0 = peak.0.max(rss_mib(edge.server.pid()).unwrap_or(0.0));
        peak.1 = peak.1.max(rss_mib(hub.server.pid()).unwrap_or(0.0));
        let applied = hub.client.stats().await?.inbound.processed;
        bar.set_position(applied.min(written));
        if applied >= written {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(bar);
    let loaded = started.elapsed();
    let cpu = (
        cpu_seconds(edge.server.pid()) - cpu_before.0,
        cpu_seconds(hub.server.pid()) - cpu_before.1,
    );
    println!(
        "initial load: all {written} applied on the hub {:.1} s after `remote load`: {:.0} records/s end to end",
        loaded.as_secs_f64(),
        written as f64 / loaded.as_secs_f64()
    );
    println!(
        "  largest resident memory while loading: edge {:.0} MiB, hub {:.0} MiB; CPU: edge {:.1} s, hub {:.1} s",
        peak.0, peak.1, cpu.0, cpu.1
    );
    wait_drained(&mut edge, written).await?;
    reconcile(&mut edge, &mut hub, args.differences).await
}

/// Waits until the edge has every load item acknowledged.
async fn wait_drained(edge: &mut crate::pair::Node, items: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while edge.client.stats().await?.outbound.processed < items {
        if Instant::now() > deadline {
            bail!("the edge's load items were not all acknowledged within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Changes `differences` records on the hub with its capture off, then
/// times a reconciliation from the edge.
async fn reconcile(
    edge: &mut crate::pair::Node,
    hub: &mut crate::pair::Node,
    differences: u64,
) -> Result<()> {
    let definitions = hub.client.export_config().await?;
    let off: String = definitions
        .lines()
        .filter(|line| !line.starts_with("active = "))
        .map(|line| {
            if line == "name = \"Capture software requests\"" {
                format!("{line}\nactive = false\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    hub.client.apply_config(&off, "bench").await?;
    let records = hub
        .client
        .list_records(
            "sc_req_item",
            "",
            u32::try_from(differences).unwrap_or(u32::MAX),
        )
        .await?;
    let changes: Vec<RecordWrite> = records
        .iter()
        .map(|r| RecordWrite {
            operation: Operation::Update,
            table: "sc_req_item".to_string(),
            sys_id: r.fields.get("sys_id").cloned(),
            fields: [("state".to_string(), "9".to_string())].into(),
            journal: Vec::new(),
            attachments: Default::default(),
        })
        .collect();
    let changed = changes.len();
    hub.client.write_records(changes).await?;
    hub.client.apply_config(&definitions, "bench").await?;
    let cpu_before = (
        cpu_seconds(edge.server.pid()),
        cpu_seconds(hub.server.pid()),
    );
    let rss_before = (
        rss_mib(edge.server.pid()).unwrap_or(0.0),
        rss_mib(hub.server.pid()).unwrap_or(0.0),
    );
    let started = Instant::now();
    let mut found = edge
        .client
        .remote_reconcile("hub", "start", "", false)
        .await?;
    let mut peak = rss_before;
    while matches!(found["state"].as_str(), Some("requested" | "running")) {
        peak.0 = peak.0.max(rss_mib(edge.server.pid()).unwrap_or(0.0));
        peak.1 = peak.1.max(rss_mib(hub.server.pid()).unwrap_or(0.0));
        tokio::time::sleep(Duration::from_millis(20)).await;
        found = edge
            .client
            .remote_reconcile("hub", "status", "", false)
            .await?;
    }
    let took = started.elapsed();
    if found["state"] != "done" {
        bail!("the reconciliation failed: {}", found["error"]);
    }
    let table = &found["tables"][0];
    println!(
        "reconcile: {} and {} correlated records compared, {} differences found ({changed} made) in {:.2} s; {:.2} MB on the wire",
        table["here"],
        table["peer"],
        table["differing"].as_u64().unwrap_or(0)
            + table["missing_here"].as_u64().unwrap_or(0)
            + table["missing_there"].as_u64().unwrap_or(0),
        took.as_secs_f64(),
        found["bytes_on_wire"].as_u64().unwrap_or(0) as f64 / 1e6
    );
    println!(
        "  CPU: edge {:.1} s, hub {:.1} s; resident memory before → largest: edge {:.0} → {:.0} MiB, hub {:.0} → {:.0} MiB",
        cpu_seconds(edge.server.pid()) - cpu_before.0,
        cpu_seconds(hub.server.pid()) - cpu_before.1,
        rss_before.0,
        peak.0,
        rss_before.1,
        peak.1
    );
    Ok(())
}
