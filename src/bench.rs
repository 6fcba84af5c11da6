//! `procsync bench`: measures a real `procsync serve` process through the
//! admin API and prints figures. It starts its own instance in a temporary
//! directory, with capture configured, and removes it afterwards. Never a
//! test: tests stay fast and deterministic.

mod backlog;
mod fleet;
mod latency;
mod load;
mod run;
mod stats;
mod sync;
mod wire;

use run::{RunDir, write_requests};

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
    /// One attachment end to end over mutual TLS: upload into an edge
    /// instance, transfer to a hub instance, read back; with each
    /// instance's peak resident memory and a plain file copy to compare.
    Attachment(AttachmentBench),
    /// `procsync stats` with a million queued items: fills the outbound
    /// queue, then times the stats call, a `/metrics` scrape and the CLI.
    Stats(stats::StatsBench),
    /// Captured changes end to end between two linked instances: records
    /// written on an edge until the hub applied every item.
    Sync(sync::SyncBench),
    /// The initial load of records made before the link, edge to hub,
    /// then a reconciliation that finds records changed on the hub with
    /// its capture off.
    Load(load::LoadBench),
    /// One hub and many simulated edges enrolled through invite and join:
    /// memory per edge, idle CPU, answer times and items/s when all write.
    Fleet(fleet::FleetBench),
}

#[derive(Args, Debug, Clone)]
pub struct AttachmentBench {
    /// File size in MiB.
    #[arg(long, default_value_t = 1024)]
    pub size_mb: u64,
    /// Where to make the temporary instances and file (default: the
    /// system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
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

pub(crate) const BENCH_CONFIG: &str = r#"
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
        BenchCommand::Attachment(args) => attachment_bench(args).await,
        BenchCommand::Stats(args) => stats::run(args).await,
        BenchCommand::Sync(args) => sync::run(args).await,
        BenchCommand::Load(args) => load::run(args).await,
        BenchCommand::Fleet(args) => fleet::run(args).await,
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
    let server = ServeChild::start(&dir, 0).await?;
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

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a rank between 0 and the sample count, clamped into it"
)]
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

/// A benchmark instance with `BENCH_CONFIG` applied: every captured
/// incident queues one outbound item for `hub`, which never answers.
async fn configured_server(base: &Path) -> Result<(BenchServer, Target)> {
    configured_server_with(base, BENCH_CONFIG).await
}

/// `configured_server` with definitions of its own.
async fn configured_server_with(base: &Path, config: &str) -> Result<(BenchServer, Target)> {
    let (server, target) = start_server(base).await?;
    let mut admin = AdminClient::connect(&target).await?;
    admin
        .add_user("bench_api", &["process_sync_api".to_string()], "")
        .await?;
    admin
        .add_user("bench_runas", &["process_sync_run_as".to_string()], "")
        .await?;
    admin.apply_config(config, "bench").await?;
    Ok((server, target))
}

#[allow(
    clippy::too_many_lines,
    reason = "the write benchmark's three phases read best in order, start to end"
)]
async fn write_bench(args: WriteBench) -> Result<()> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let (server, target) = configured_server(&base).await?;
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
    let bar = crate::progress::timed(phase, "single");
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
    drop(bar);
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
    let bar = crate::progress::timed(phase, "batches");
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
    drop(bar);
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
    let bar = crate::progress::timed(phase, "latency");
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut n = 9_000_000_000u64;
    while start.elapsed() < phase {
        let scheduled = ticker.tick().await;
        let mut client = clients[usize::try_from(n).unwrap_or(0) % connections].clone();
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
    drop(bar);
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

/// Resident memory of process `pid` now, in MiB (VmRSS).
fn rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmRSS:")
}

/// Peak resident memory of process `pid` so far, in MiB (VmHWM).
fn peak_rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmHWM:")
}

/// A memory figure of `/proc/PID/status` (given in kB), in MiB.
fn status_mib(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// CPU time process `pid` has used so far (user + system), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line, in clock ticks.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(f64::NAN);
    ticks / 100.0
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

async fn attachment_bench(args: AttachmentBench) -> Result<()> {
    let base = RunDir::new(args.dir.as_deref(), "attachment")?;
    attachment_phases(&base.0, args.size_mb << 20).await
}

#[allow(
    clippy::too_many_lines,
    reason = "the attachment benchmark's phases read best in order, start to end"
)]
async fn attachment_phases(base: &Path, size: u64) -> Result<()> {
    use std::io::Write;
    println!(
        "Writing a {} MiB file of pseudo-random bytes ...",
        size >> 20
    );
    let file = base.join("payload.bin");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        let mut stream = blake3::Hasher::new().update(b"bench").finalize_xof();
        let mut buffer = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = usize::try_from(left).map_or(buffer.len(), |left| left.min(buffer.len()));
            stream.fill(&mut buffer[..n]);
            out.write_all(&buffer[..n])?;
            left -= n as u64;
        }
        out.into_inner()?.sync_all()?;
    }
    // The machine's own figure to compare with: a file copy made durable.
    let copy = base.join("copy.bin");
    let started = Instant::now();
    std::fs::copy(&file, &copy)?;
    std::fs::File::open(&copy)?.sync_all()?;
    let copy_time = started.elapsed();
    std::fs::remove_file(&copy)?;

    let mut edge = crate::pair::start(base, "edge").await?;
    let mut hub = crate::pair::start(base, "hub").await?;
    crate::pair::link(&mut edge, &mut hub, "include_attachments = true").await?;
    let created = edge
        .client
        .write_records(vec![RecordWrite {
            operation: Operation::Create,
            table: "sc_req_item".to_string(),
            sys_id: None,
            fields: [("short_description".to_string(), "bench".to_string())].into(),
            journal: Vec::new(),
            attachments: Default::default(),
        }])
        .await?;
    let record = created[0].sys_id.clone();

    let started = Instant::now();
    let upload_bar = std::sync::Arc::new(crate::progress::UploadBar::default());
    let uploaded =
        crate::transport::upload::upload_file(&mut edge.client, &file, upload_bar.clone()).await;
    upload_bar.done();
    let (hash, _) = uploaded?;
    let upload_time = started.elapsed();
    std::fs::remove_file(&file)?;

    let cpu_before = (
        cpu_seconds(edge.server.pid()),
        cpu_seconds(hub.server.pid()),
    );
    let started = Instant::now();
    edge.client
        .add_attachment(
            "sc_req_item",
            &record,
            "payload.bin",
            "application/octet-stream",
            &hash,
        )
        .await?;
    let deadline = started + Duration::from_secs(600);
    let hub_record = loop {
        let found = hub.client.list_records("sc_req_item", "", 10).await?;
        if let Some(r) = found.into_iter().next() {
            let id = r.fields["sys_id"].clone();
            if !hub
                .client
                .list_attachments("sc_req_item", &id)
                .await?
                .is_empty()
            {
                break id;
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("the attachment did not reach the hub within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let transfer_time = started.elapsed();
    let transfer_cpu = (
        cpu_seconds(edge.server.pid()) - cpu_before.0,
        cpu_seconds(hub.server.pid()) - cpu_before.1,
    );

    let started = Instant::now();
    let (head, mut bytes) = hub
        .client
        .get_attachment("sc_req_item", &hub_record, "payload.bin")
        .await?;
    let mut hasher = blake3::Hasher::new();
    while let Some(data) = bytes.next().await? {
        hasher.update(&data);
    }
    let read_time = started.elapsed();
    let matches = hasher.finalize().to_hex().as_str() == hash && head.hash == hash;

    let edge_rss = peak_rss_mib(edge.server.pid()).unwrap_or(f64::NAN);
    let hub_rss = peak_rss_mib(hub.server.pid()).unwrap_or(f64::NAN);
    println!(
        "\nOne {} MiB attachment (chunks of 1,048,512 bytes, blake3-checked):",
        size >> 20
    );
    println!(
        "  file copy + fsync (this disk)        {:>7.0} MB/s",
        mb_per_s(size, copy_time)
    );
    println!(
        "  upload into edge (admin API)         {:>7.0} MB/s  ({:.1} s)",
        mb_per_s(size, upload_time),
        upload_time.as_secs_f64()
    );
    println!(
        "  edge -> hub over mTLS, until visible {:>7.0} MB/s  ({:.1} s)",
        mb_per_s(size, transfer_time),
        transfer_time.as_secs_f64()
    );
    println!(
        "    CPU during the transfer: edge {:.1} s, hub {:.1} s (2 cores: {:.1} s available)",
        transfer_cpu.0,
        transfer_cpu.1,
        2.0 * transfer_time.as_secs_f64()
    );
    println!(
        "  read back from hub (admin API)       {:>7.0} MB/s  ({:.1} s), hash {}",
        mb_per_s(size, read_time),
        read_time.as_secs_f64(),
        if matches { "matches" } else { "DOES NOT MATCH" }
    );
    println!("  peak resident memory: edge {edge_rss:.0} MiB, hub {hub_rss:.0} MiB");
    // With RUST_LOG=attachments=info the hub says where its time went.
    let hub_log = std::fs::read_to_string(hub.server.dir.join("serve.log")).unwrap_or_default();
    for line in hub_log.lines().filter(|l| l.contains("matches its hash")) {
        println!("  hub: {}", line.trim());
    }
    if !matches {
        anyhow::bail!("the attachment read back from the hub does not match");
    }
    Ok(())
}
