//! `bench fleet`: one real hub (`serve`) and N edges simulated in this
//! process, each with its own identity and certificate, enrolled through
//! `remote invite` and the peer protocol's `Join`, then speaking the real
//! peer protocol over mutual TLS: a `Pull` stream the hub sends on (its
//! group never dials) and a `Sync` stream for the edge's items. Prints the
//! hub's memory per connected edge, its CPU while the fleet idles, the
//! answer times of `stats`, `/metrics` and the dashboard's data with N
//! remote systems, and the items/s applied when every edge writes at once
//! (twice, then once more beside `bad`'s misbehaving peers).

mod bad;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::sync::mpsc::{Receiver, Sender};

use crate::ids::{new_sys_id, new_token};
use crate::transport::enrol::{JoinCode, JoinRequest, JoinStep, target_of_code};
use crate::transport::peer::PeerClient;
use crate::transport::protocol::{PeerTarget, SendItem, SyncEvent, WireItem};
use crate::transport::reverse::{PullReply, Pulled};

#[derive(Args, Debug, Clone)]
pub struct FleetBench {
    /// Edges to simulate.
    #[arg(long, default_value_t = 1000)]
    pub edges: usize,
    /// Items each edge sends in the writing phase (100: about ten seconds
    /// of writing at 1,000 edges, long enough that the start and the last
    /// stragglers do not set the rate).
    #[arg(long, default_value_t = 100)]
    pub items: u64,
    /// How long to measure the idle fleet's CPU.
    #[arg(long, default_value_t = 20)]
    pub idle_seconds: u64,
    /// Where to make the temporary hub (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

/// The hub's definitions: a group whose members it never dials, and whose
/// readings it takes into table `reading`.
const FLEET_DEFINITIONS: &str = r#"
[[definition]]
name = "Fleet"

[[process_event]]
name = "reading"
definition = "Fleet"

[[remote_group]]
name = "fleet"
dial = "never"

[[remote_group.member.definition]]
name = "Fleet"

[[remote_group.member.process_event]]
name = "reading"
definition = "Fleet"

[[inbound_flow]]
name = "Readings"
process_event = "reading"
remote_group = "fleet"
table = "reading"
"#;

/// One simulated edge: its sync stream's two ends (the pull stream is
/// answered by a task of its own).
struct Edge {
    items: Sender<SendItem>,
    events: Receiver<SyncEvent>,
}

/// An edge enrolled through invite and join, before it opens any stream:
/// what it presents to the hub.
struct Joined {
    name: String,
    target: PeerTarget,
}

pub async fn run(args: FleetBench) -> Result<()> {
    let base = super::RunDir::new(args.dir.as_deref(), "fleet")?;
    println!(
        "procsync bench fleet: {} (release build: {}), {} edges",
        super::machine(),
        !cfg!(debug_assertions),
        args.edges
    );
    // The fleet and the bad peers fill every slot; one more is refused.
    let max_peers = args.edges + bad::PEERS_HELD;
    let config = format!("[peer]\nmax_peers = {max_peers}\n");
    let mut hub = crate::pair::start_with(&base.0, "hub", Some(&config)).await?;
    hub.client
        .apply_config(FLEET_DEFINITIONS, "fleet.toml")
        .await?;
    let endpoint = format!("https://127.0.0.1:{}", hub.peer_port);
    // Enrolled while there is room, it calls again once there is none.
    let beyond = join(&mut hub.client, &endpoint, "bad-beyond").await?;
    let pid = hub.server.pid();
    let rss_before = super::rss_mib(pid).unwrap_or(f64::NAN);

    let started = Instant::now();
    let bar = crate::progress::items(args.edges as u64, "enrolling");
    let mut edges = Vec::with_capacity(args.edges);
    for n in 0..args.edges {
        edges.push(enrol(&mut hub.client, &endpoint, n).await?);
        bar.inc(1);
    }
    drop(bar);
    println!(
        "enrolled {} edges through invite and join in {:.1} s",
        args.edges,
        started.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let up = hub
            .client
            .list_group("fleet")
            .await?
            .iter()
            .filter(|r| r.health == "Up")
            .count();
        if up == args.edges {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {up} of {} edges were Up on the hub after 5 minutes",
                args.edges
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rss_after = super::rss_mib(pid).unwrap_or(f64::NAN);
    println!(
        "hub resident memory: {rss_before:.0} MiB before, {rss_after:.0} MiB with every edge connected: {:.0} KiB per edge",
        (rss_after - rss_before) * 1024.0 / args.edges as f64
    );

    let cpu_before = super::cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let idle_cpu = super::cpu_seconds(pid) - cpu_before;
    println!(
        "hub CPU with {} idle edges heartbeating: {:.1} % of one core over {} s",
        args.edges,
        idle_cpu * 100.0 / args.idle_seconds as f64,
        args.idle_seconds
    );
    // Memory freed after the joins goes back to the system over seconds,
    // not at once (mimalloc's purge delay): the settled figure.
    let rss_idle = super::rss_mib(pid).unwrap_or(f64::NAN);
    println!(
        "hub resident memory after {} s idle: {rss_idle:.0} MiB: {:.0} KiB per edge",
        args.idle_seconds,
        (rss_idle - rss_before) * 1024.0 / args.edges as f64
    );

    answer_times(&mut hub).await?;
    write_all(&mut hub, &mut edges, 1, args.items).await?;
    // Again, so the phase beside the bad peers compares with one that
    // also had the first one's items queued before it.
    answer_times(&mut hub).await?;
    write_all(&mut hub, &mut edges, args.items + 1, args.items).await?;

    // The same again with one bad peer of each kind at the hub.
    let bad = bad::start(&mut hub.client, &endpoint, beyond, max_peers).await?;
    let cpu_before = super::cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let busy_cpu = super::cpu_seconds(pid) - cpu_before;
    println!(
        "hub CPU with {} idle edges and the bad peers at it: {:.1} % of one core over {} s",
        args.edges,
        busy_cpu * 100.0 / args.idle_seconds as f64,
        args.idle_seconds
    );
    answer_times(&mut hub).await?;
    write_all(&mut hub, &mut edges, 2 * args.items + 1, args.items).await?;
    bad.report(&mut hub.client).await
}

/// One edge: joined (`join`), then its pull and sync streams on one
/// connection.
async fn enrol(
    hub: &mut crate::transport::client::AdminClient,
    endpoint: &str,
    n: usize,
) -> Result<Edge> {
    let joined = join(hub, endpoint, &format!("edge-{n:05}")).await?;
    let mut client = PeerClient::connect(&joined.target).await?;
    let (replies, mut pulled) = client.pull().await?;
    tokio::spawn(async move {
        while let Some(next) = pulled.recv().await {
            let reply = match next {
                Pulled::Ping(nonce) => PullReply::Pong(nonce),
                Pulled::Item(item) => PullReply::Ack(item.sequence),
                // The fleet's readings carry no attachments, and its hub
                // compares nothing.
                Pulled::Deliver(_) | Pulled::Reconcile(_) => continue,
                Pulled::Left | Pulled::Closed(_) => return,
            };
            if replies.send(reply).await.is_err() {
                return;
            }
        }
    });
    let (items, events) = client.sync().await?;
    tokio::spawn(heartbeat(items.clone(), n));
    Ok(Edge { items, events })
}

/// A new identity, an invitation, the two join steps.
async fn join(
    hub: &mut crate::transport::client::AdminClient,
    endpoint: &str,
    name: &str,
) -> Result<Joined> {
    let name = name.to_string();
    let identity = crate::identity::generate(&name).map_err(anyhow::Error::msg)?;
    let invited = hub.invite_remote("fleet", &name, 3600, endpoint).await?;
    let code = JoinCode::parse(&invited.code).map_err(anyhow::Error::msg)?;
    let target = target_of_code(&code, identity.cert_pem.clone(), identity.key_pem.clone());
    let request = JoinRequest {
        invite: code.invite.clone(),
        secret: code.secret.clone(),
        fingerprint: identity.fingerprint.clone(),
        instance_sys_id: new_sys_id(),
        instance_name: name.clone(),
        remote_system_sys_id: new_sys_id(),
        endpoint: String::new(),
        token: new_token(),
    };
    let mut joining = PeerClient::connect(&target).await?;
    let answer = join_step(&mut joining, JoinStep::Enrol, &request)
        .await
        .with_context(|| format!("{name} joining"))?;
    join_step(&mut joining, JoinStep::Confirm, &request)
        .await
        .with_context(|| format!("{name} confirming"))?;
    let target = PeerTarget {
        endpoint: code.endpoint.clone(),
        fingerprint: code.fingerprint.clone(),
        token: answer.token,
        cert_pem: identity.cert_pem,
        key_pem: identity.key_pem,
        link: Default::default(),
    };
    Ok(Joined { name, target })
}

/// One join step, again after a moment while the hub takes no more joins
/// this second.
async fn join_step(
    joining: &mut PeerClient,
    step: JoinStep,
    request: &JoinRequest,
) -> Result<crate::transport::enrol::JoinAnswer> {
    loop {
        match joining.join(step, request.clone()).await {
            Ok(answer) => return Ok(answer),
            Err(e) if e.to_string().contains("too many joins") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What a real edge's session does on its sync stream while idle: a ping
/// every heartbeat interval (10 s by default), the fleet's spread over it
/// (the hub answers each with a pong, which `write_all` passes over).
async fn heartbeat(items: Sender<SendItem>, n: usize) {
    const INTERVAL: Duration = Duration::from_secs(10);
    let offset = Duration::from_millis((n as u64 * 7_919) % 10_000);
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + offset, INTERVAL);
    for nonce in 1.. {
        every.tick().await;
        if items.send(SendItem::Ping(nonce)).await.is_err() {
            return;
        }
    }
}

/// `stats`, `/metrics` and the dashboard's data (`/api/stats`), each
/// timed five times: the median.
async fn answer_times(hub: &mut crate::pair::Node) -> Result<()> {
    const TIMES: usize = 5;
    let median = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let mut stats = Vec::new();
    for _ in 0..TIMES {
        let sent = Instant::now();
        hub.client.stats().await?;
        stats.push(sent.elapsed());
    }
    let target = hub.server.target.clone();
    let mut http = Vec::new();
    for path in ["/metrics", "/api/stats"] {
        let (address, token) = (target.address.clone(), target.token.clone());
        let times = tokio::task::spawn_blocking(move || {
            (0..TIMES)
                .map(|_| {
                    let sent = Instant::now();
                    super::stats::get(&address, &token, path).map(|()| sent.elapsed())
                })
                .collect::<Result<Vec<_>>>()
        })
        .await??;
        http.push(median(times));
    }
    println!(
        "answer times with the fleet's remote systems (median of {TIMES}): stats {}, /metrics {}, dashboard data {}",
        super::ms(median(stats)),
        super::ms(http[0]),
        super::ms(http[1])
    );
    Ok(())
}

/// Every edge sends readings `first..first + items` at once; prints the
/// rate they were applied at on the hub.
async fn write_all(
    hub: &mut crate::pair::Node,
    edges: &mut [Edge],
    first: u64,
    items: u64,
) -> Result<()> {
    let total = items * edges.len() as u64;
    let already = hub.client.stats().await?.inbound.processed;
    let started = Instant::now();
    for sequence in first..first + items {
        for (n, edge) in edges.iter_mut().enumerate() {
            edge.items
                .send(SendItem::Item(Box::new(reading(n, sequence))))
                .await
                .map_err(|_| anyhow::anyhow!("edge {n}'s stream closed"))?;
        }
    }
    let deadline = started + Duration::from_secs(600);
    let bar = crate::progress::items(total, "applying");
    loop {
        let applied = hub.client.stats().await?.inbound.processed - already;
        bar.set_position(applied.min(total));
        if applied >= total {
            break;
        }
        if Instant::now() > deadline {
            bail!("{applied} of {total} readings applied after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(bar);
    let took = started.elapsed();
    let mut acked = 0;
    for edge in edges.iter_mut() {
        while let Ok(event) = edge.events.try_recv() {
            if matches!(event, SyncEvent::Ack(_)) {
                acked += 1;
            }
        }
    }
    println!(
        "{} edges writing {items} readings each at once: {total} applied on the hub in {:.1} s, {:.0} items/s ({acked} acknowledged to the edges)",
        edges.len(),
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    );
    Ok(())
}

/// Reading `sequence` of edge `n`: a new record each.
fn reading(n: usize, sequence: u64) -> WireItem {
    let payload = format!(
        r#"{{"capture_metadata":{{"changed_by":"sensor","timestamp":"2026-12-04 12:00:00","operation":"create","table":"reading","sys_id":"x","process_event":"reading"}},"changed_fields":[{{"key":"value","value":"{sequence}","display_value":"{sequence}","changed":true}},{{"key":"edge","value":"{n}","display_value":"{n}","changed":true}}],"journal_entries":[]}}"#
    );
    WireItem {
        sequence,
        process_event: "reading".to_string(),
        operation: crate::record::Operation::Create,
        table: "reading".to_string(),
        local_correlation_id: format!("{n:016x}{sequence:016x}"),
        remote_correlation_id: String::new(),
        domain: "global".to_string(),
        payload: crate::queue::EncodedPayload::Json(payload),
        created_on: "2026-12-04 12:00:00".to_string(),
        attachment_grants: Vec::new(),
        bases: Vec::new(),
        changed_on: 0,
        settles: false,
    }
}
