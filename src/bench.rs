//! `procsync bench`: measures a real `procsync serve` process through the
//! admin API and prints figures. It starts its own instance in a temporary
//! directory, with capture configured, and removes it afterwards. Never a
//! test: tests stay fast and deterministic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::child::ServeChild;
use crate::record::{Operation, RecordWrite};
use crate::transport::client::{AdminClient, Target};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Record writes with capture: concurrent single writes, batch writes,
    /// and latency at a fixed offered rate.
    Write(WriteBench),
}

#[derive(Args, Debug, Clone)]
pub struct WriteBench {
    /// Concurrent clients for the single-write phase.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Records per batch call.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Concurrent clients for the batch phase.
    #[arg(long, default_value_t = 2)]
    pub batch_clients: usize,
    /// Offered single writes per second for the latency phase.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Where to make the temporary instance (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

const BENCH_CONFIG: &str = r#"
[[definition]]
name = "bench"
[[process_event]]
name = "bench_event"
definition = "bench"
[[capture]]
name = "bench capture"
process_event = "bench_event"
table = "incident"
filter = "priority<=3"
fields = ["short_description", "state", "priority"]
journal_fields = ["comments"]
[[remote_system]]
name = "hub"
endpoint = "https://127.0.0.1:9"
fingerprint = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
inbound_api_user = "bench_api"
run_as = "bench_runas"
[[outbound_flow]]
name = "to hub"
process_event = "bench_event"
remote_system = "hub"
"#;

pub async fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Write(args) => write_bench(args).await,
    }
}

/// A `serve` child on a temporary instance, removed afterwards.
struct BenchServer {
    server: Option<ServeChild>,
    dir: PathBuf,
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        drop(self.server.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start_server(base: &Path) -> Result<(BenchServer, Target)> {
    let dir = base.join(format!(
        "procsync-bench-{}-{}",
        std::process::id(),
        crate::ids::now_millis()
    ));
    crate::instance::init(&dir, "bench")?;
    let server = ServeChild::start(&dir, "127.0.0.1:0").await?;
    let target = server.target.clone();
    Ok((
        BenchServer {
            server: Some(server),
            dir,
        },
        target,
    ))
}

fn incident(n: u64) -> RecordWrite {
    let mut fields = BTreeMap::new();
    fields.insert(
        "short_description".to_string(),
        format!("Benchmark incident {n}"),
    );
    fields.insert("state".to_string(), "1".to_string());
    fields.insert("priority".to_string(), (n % 4 + 1).to_string());
    fields.insert("category".to_string(), "software".to_string());
    RecordWrite {
        attachments: Default::default(),
        operation: Operation::Create,
        table: "incident".to_string(),
        sys_id: None,
        fields,
        journal: Vec::new(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * p / 100.0).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    format!("{cores} cores, {model}")
}

async fn write_bench(args: WriteBench) -> Result<()> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let (server, target) = start_server(&base).await?;
    let mut admin = AdminClient::connect(&target).await?;
    admin
        .add_user("bench_api", &["process_sync_api".to_string()], "")
        .await?;
    admin
        .add_user("bench_runas", &["process_sync_run_as".to_string()], "")
        .await?;
    admin.apply_config(BENCH_CONFIG, "bench").await?;
    let phase = Duration::from_secs(args.seconds);
    println!(
        "procsync bench write: {} (release build: {})",
        machine(),
        !cfg!(debug_assertions)
    );
    println!(
        "instance: {} (capture on `incident`, 1 outbound flow)",
        server.dir.display()
    );

    // Phase 1: concurrent single-record writes.
    let connections = 4;
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(AdminClient::connect(&target).await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let mut client = clients[i % connections].clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut queued = 0u64;
            let mut n = i as u64 * 1_000_000_000;
            while start.elapsed() < phase {
                let sent = Instant::now();
                let results = client.write_records(vec![incident(n)]).await?;
                latencies.push(sent.elapsed());
                queued += u64::from(results[0].queued);
                n += 1;
            }
            Ok::<_, anyhow::Error>((latencies, queued))
        }));
    }
    let mut latencies = Vec::new();
    let mut queued = 0;
    for task in tasks {
        let (l, q) = task.await??;
        latencies.extend(l);
        queued += q;
    }
    let elapsed = start.elapsed();
    latencies.sort();
    println!(
        "single writes, {} clients: {:.0} records/s ({} records, {} outbound items queued), p50 {}, p99 {}",
        args.clients,
        latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies.len(),
        queued,
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
    );

    // Phase 2: batch writes.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.batch_clients {
        let mut client = clients[i % connections].clone();
        let batch_size = args.batch_size;
        tasks.push(tokio::spawn(async move {
            let mut records = 0u64;
            let mut latencies = Vec::new();
            let mut n = 5_000_000_000 + i as u64 * 1_000_000_000;
            while start.elapsed() < phase {
                let batch: Vec<RecordWrite> =
                    (0..batch_size).map(|k| incident(n + k as u64)).collect();
                n += batch_size as u64;
                let sent = Instant::now();
                records += client.write_records(batch).await?.len() as u64;
                latencies.push(sent.elapsed());
            }
            Ok::<_, anyhow::Error>((records, latencies))
        }));
    }
    let mut records = 0;
    let mut latencies = Vec::new();
    for task in tasks {
        let (r, l) = task.await??;
        records += r;
        latencies.extend(l);
    }
    let elapsed = start.elapsed();
    latencies.sort();
    println!(
        "batch writes, {} clients x {} records per call: {:.0} records/s ({} records), p50 {} per call",
        args.batch_clients,
        args.batch_size,
        records as f64 / elapsed.as_secs_f64(),
        records,
        ms(percentile(&latencies, 50.0)),
    );

    // Phase 3: latency at a fixed offered rate (open loop: a slow answer does
    // not slow the offered load).
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut n = 9_000_000_000u64;
    while start.elapsed() < phase {
        let scheduled = ticker.tick().await;
        let mut client = clients[(n as usize) % connections].clone();
        n += 1;
        tasks.push(tokio::spawn(async move {
            client.write_records(vec![incident(n)]).await?;
            Ok::<_, anyhow::Error>(scheduled.elapsed())
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.push(task.await??);
    }
    let elapsed = start.elapsed();
    latencies.sort();
    println!(
        "offered {} writes/s for {} s: achieved {:.0} writes/s, p50 {}, p99 {}, max {}",
        args.rate,
        args.seconds,
        latencies.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    drop(server);
    Ok(())
}
