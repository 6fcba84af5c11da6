//! `procsync bench stats`: how long the stats take with many queued items.
//! Fills one instance's outbound queue through batch writes (the peer never
//! answers, so every item stays queued), then times the admin `GetStats`
//! call, a `/metrics` scrape, the dashboard's error list, pages of its
//! queue browser and an item view over HTTP, and a whole
//! `procsync stats --json` process; then restarts the instance on its full
//! queue and times until `/healthz` answers.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::{BENCH_CONFIG, configured_server_with, machine, ms, percentile};
use crate::record::RecordWrite;
use crate::transport::client::AdminClient;

#[derive(Args, Debug, Clone)]
pub struct StatsBench {
    /// Outbound items to queue before measuring.
    #[arg(long, default_value_t = 1_000_000)]
    pub items: u64,
    /// Times each measurement is repeated.
    #[arg(long, default_value_t = 50)]
    pub repeat: usize,
    /// Where to make the temporary instance (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

/// Records per batch call while filling.
const FILL_BATCH: u64 = 1000;

pub async fn run(args: StatsBench) -> Result<()> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let config = BENCH_CONFIG.replace(
        r#"fields = ["short_description", "state", "priority"]"#,
        &format!("fields = {TYPICAL_FIELDS:?}"),
    );
    let (mut server, target) = configured_server_with(&base, &config).await?;
    println!(
        "procsync bench stats: {} (release build: {})",
        machine(),
        !cfg!(debug_assertions)
    );

    let started = Instant::now();
    fill(&target, args.items).await?;
    let mut admin = AdminClient::connect(&target).await?;
    let stats = admin.stats().await?;
    let queued = stats.outbound.total();
    report_filled(&server.dir, queued, started.elapsed());
    if queued < args.items {
        bail!("only {queued} items were queued, {} wanted", args.items);
    }

    let report = |what: &str, mut times: Vec<Duration>| {
        times.sort();
        println!(
            "{what}: p50 {}, p99 {}, max {} ({} runs)",
            ms(percentile(&times, 50.0)),
            ms(percentile(&times, 99.0)),
            ms(times.last().copied().unwrap_or_default()),
            times.len()
        );
    };
    let mut times = Vec::new();
    for _ in 0..args.repeat {
        let sent = Instant::now();
        admin.stats().await?;
        times.push(sent.elapsed());
    }
    report("GetStats over gRPC", times);

    // Item ids start at 1, so the middle of the queue is about here.
    let middle = format!(
        "/api/queue/outbound?status=Ready&remote_system=hub&process_event=bench_event&limit=50&before={}",
        queued / 2
    );
    let one_item = format!("/api/queue/outbound/{}", queued / 2);
    for (path, what) in [
        ("/metrics", "/metrics scrape over HTTP"),
        ("/api/errors", "the dashboard's error list (/api/errors)"),
        (
            "/api/queue/outbound?limit=50",
            "queue browser, newest 50, no filter",
        ),
        (
            "/api/queue/outbound?status=Ready&limit=50",
            "queue browser, newest 50 Ready",
        ),
        (
            middle.as_str(),
            "queue browser, 50 Ready for hub and bench_event from the middle",
        ),
        (
            "/api/queue/outbound?status=Error&limit=50",
            "queue browser, Error (none among them)",
        ),
        (one_item.as_str(), "the item view of one item"),
    ] {
        let path = path.to_string();
        let address = target.address.clone();
        let token = target.token.clone();
        let repeat = args.repeat;
        let times = tokio::task::spawn_blocking(move || -> Result<Vec<Duration>> {
            let mut times = Vec::new();
            for _ in 0..repeat {
                let sent = Instant::now();
                get(&address, &token, &path)?;
                times.push(sent.elapsed());
            }
            Ok(times)
        })
        .await??;
        report(what, times);
    }

    let exe = std::env::current_exe()?;
    let mut times = Vec::new();
    for _ in 0..args.repeat.min(20) {
        let sent = Instant::now();
        let out = std::process::Command::new(&exe)
            .args(["stats", "--json", "--data"])
            .arg(&server.dir)
            .output()?;
        if !out.status.success() {
            bail!(
                "procsync stats failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        times.push(sent.elapsed());
    }
    report("procsync stats --json (whole process)", times);
    restart(&mut server, queued).await
}

/// Stops the instance and starts it again on its full queue: how soon
/// `/healthz` answers 200 after the process starts, and its resident
/// memory a few seconds in (its dispatcher keeps trying the peer that
/// never answers).
async fn restart(server: &mut super::BenchServer, queued: u64) -> Result<()> {
    drop(server.server.take());
    report_pages(&server.dir, queued)?;
    let started = Instant::now();
    let child = crate::child::ServeChild::start(&server.dir, 0).await?;
    let pid = child.pid();
    let healthy = healthz(&child, started).await?;
    server.server = Some(child);
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!(
        "restarted on the full queue: /healthz answered 200 {} after the process started; resident memory 5 s later {:.0} MiB (peak {:.0} MiB)",
        ms(healthy),
        super::rss_mib(pid).unwrap_or(0.0),
        super::peak_rss_mib(pid).unwrap_or(0.0)
    );
    Ok(())
}

/// Queues `items` outbound items: two clients, batches of captured
/// incidents (priority ≤ 3).
async fn fill(target: &crate::transport::client::Target, items: u64) -> Result<()> {
    let mut tasks = Vec::new();
    let per_client = items.div_ceil(2);
    for c in 0..2u64 {
        let mut client = AdminClient::connect(target).await?;
        tasks.push(tokio::spawn(async move {
            let mut n = c * per_client;
            let end = (c + 1) * per_client;
            while n < end {
                let batch: Vec<RecordWrite> = (n..(n + FILL_BATCH).min(end)).map(typical).collect();
                n += batch.len() as u64;
                client.write_records(batch).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// The store's size once filled: bytes per queued item.
fn report_filled(dir: &std::path::Path, queued: u64, took: Duration) {
    let store_bytes = store_bytes(dir);
    #[allow(
        clippy::cast_precision_loss,
        reason = "file sizes far below 2^52 bytes"
    )]
    let mib = store_bytes as f64 / (1024.0 * 1024.0);
    println!(
        "filled: {queued} outbound items in {:.1} s; store file {mib:.0} MiB, {} bytes per queued item (each a record of ten short fields captured whole: the record, its item, its correlation and their index entries)",
        took.as_secs_f64(),
        store_bytes / queued.max(1)
    );
}

/// What the tables' pages hold per queued item, read while the instance
/// is stopped: the footprint without the free space the file grew by.
fn report_pages(dir: &std::path::Path, queued: u64) -> Result<()> {
    let (total, tables) = pages_per_item(dir, queued)?;
    println!(
        "pages in use: {total} bytes per queued item (the file is larger: redb grows it by doubling); by table, bytes per item: {tables}"
    );
    Ok(())
}

/// The pages in use of the stopped instance in `dir`, per item of `items`:
/// in all, and by table (what they store in brackets), largest first.
pub(super) fn pages_per_item(dir: &std::path::Path, items: u64) -> Result<(u64, String)> {
    let store = crate::store::Store::open(dir)?;
    let sizes = store.table_sizes();
    store.close();
    let mut sizes = sizes?;
    sizes.sort_by_key(|t| std::cmp::Reverse(t.page_bytes));
    let per_item = |bytes: u64| bytes / items.max(1);
    let total: u64 = sizes.iter().map(|t| t.page_bytes).sum();
    let tables: Vec<String> = sizes
        .iter()
        .filter(|t| per_item(t.page_bytes) > 0)
        .map(|t| {
            format!(
                "{} {} ({} stored)",
                t.name,
                per_item(t.page_bytes),
                per_item(t.stored_bytes)
            )
        })
        .collect();
    Ok((per_item(total), tables.join(", ")))
}

fn store_bytes(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join(crate::store::DB_FILE)).map_or(0, |m| m.len())
}

/// The fields of a typical record: ten short ones, as an ITSM incident
/// has them.
const TYPICAL_FIELDS: [&str; 10] = [
    "number",
    "short_description",
    "state",
    "priority",
    "impact",
    "urgency",
    "category",
    "assignment_group",
    "caller_id",
    "contact_type",
];

/// A typical incident (ten short fields), priority 1 so the capture takes it.
fn typical(n: u64) -> RecordWrite {
    RecordWrite {
        attachments: Default::default(),
        operation: crate::record::Operation::Create,
        table: "incident".to_string(),
        sys_id: None,
        fields: typical_fields(n).into_iter().collect(),
        journal: Vec::new(),
    }
}

/// The ten fields of typical record `n`, as (name, value).
pub(super) fn typical_fields(n: u64) -> Vec<(String, String)> {
    let values = [
        format!("INC{n:07}"),
        format!("Printer on floor {} jams", n % 9),
        "2".to_string(),
        "1".to_string(),
        "2".to_string(),
        "2".to_string(),
        "hardware".to_string(),
        "Service Desk".to_string(),
        format!("user{:04}", n % 5000),
        "phone".to_string(),
    ];
    TYPICAL_FIELDS
        .iter()
        .map(|f| (*f).to_string())
        .zip(values)
        .collect()
}

/// One `GET path` with the token, read whole.
pub(super) fn get(address: &str, token: &str, path: &str) -> Result<()> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(address).with_context(|| format!("connect to {address}"))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    if !answer.starts_with(b"HTTP/1.1 200") {
        bail!(
            "GET {path} failed: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
    }
    Ok(())
}

/// How long after `started` the instance's `/healthz` answered 200.
pub(super) async fn healthz(
    server: &crate::child::ServeChild,
    started: Instant,
) -> Result<Duration> {
    let (address, token) = (server.target.address.clone(), server.target.token.clone());
    tokio::task::spawn_blocking(move || -> Result<Duration> {
        loop {
            if get(&address, &token, "/healthz").is_ok() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("/healthz did not answer 200 within a minute of the restart");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
    .await?
}
