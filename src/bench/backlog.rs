//! `procsync bench sync --backlog`: a peer that was down comes back to a
//! full queue. The hub stops; the edge queues N items for it; the edge
//! restarts on that backlog (how soon `/healthz` answers, its memory);
//! then the hub starts again and the backlog drains (items/s from the
//! hub's start until it applied the last one, and each instance's peak
//! resident memory since its start).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::stats::healthz;
use super::{ms, peak_rss_mib, rss_mib};
use crate::child::ServeChild;
use crate::pair::Node;
use crate::transport::client::AdminClient;

pub async fn run(edge: Node, hub: Node, records: u64, batch_size: u64) -> Result<()> {
    let Node {
        client: mut edge_client,
        server: edge_server,
        peer_port: edge_port,
        ..
    } = edge;
    let Node {
        client: hub_client,
        server: hub_server,
        peer_port: hub_port,
        ..
    } = hub;
    let hub_dir = hub_server.dir.clone();
    drop(hub_client);
    drop(hub_server);
    println!("the hub is stopped; queuing {records} items for it on the edge");
    let started = Instant::now();
    super::write_requests(&mut edge_client, records, batch_size, |n| {
        vec![
            ("short_description".to_string(), format!("Backlog {n}")),
            ("state".to_string(), "1".to_string()),
        ]
    })
    .await?;
    let ready = edge_client.stats().await?.outbound.ready;
    println!(
        "queued in {:.1} s: {ready} items Ready for the hub",
        started.elapsed().as_secs_f64()
    );

    // The edge restarts on its backlog.
    let edge_dir = edge_server.dir.clone();
    drop(edge_client);
    drop(edge_server);
    let restarted = Instant::now();
    let edge_server = ServeChild::start(&edge_dir, edge_port).await?;
    let healthy = healthz(&edge_server, restarted).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!(
        "edge restarted on {ready} queued items: /healthz answered 200 {} after the process started; resident memory 5 s later {:.0} MiB",
        ms(healthy),
        rss_mib(edge_server.pid()).unwrap_or(f64::NAN)
    );

    // The hub comes back; the backlog drains.
    let back = Instant::now();
    let hub_server = ServeChild::start(&hub_dir, hub_port).await?;
    let mut hub_client = AdminClient::connect(&hub_server.target).await?;
    let deadline = back + Duration::from_secs(3600);
    let bar = crate::progress::items(ready, "draining");
    let (mut edge_rss, mut hub_rss) = (0.0f64, 0.0f64);
    loop {
        let applied = hub_client.stats().await?.inbound.processed;
        bar.set_position(applied.min(ready));
        edge_rss = edge_rss.max(rss_mib(edge_server.pid()).unwrap_or(0.0));
        hub_rss = hub_rss.max(rss_mib(hub_server.pid()).unwrap_or(0.0));
        if applied >= ready {
            break;
        }
        if Instant::now() > deadline {
            bail!("the backlog did not drain within an hour");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(bar);
    let drained = back.elapsed();
    #[allow(clippy::cast_precision_loss, reason = "item counts far below 2^52")]
    let rate = ready as f64 / drained.as_secs_f64();
    println!(
        "the hub came back: {ready} items applied {:.1} s after it started, {rate:.0} items/s",
        drained.as_secs_f64()
    );
    println!(
        "resident memory while draining: edge up to {edge_rss:.0} MiB (peak since its restart {:.0} MiB), hub up to {hub_rss:.0} MiB (peak {:.0} MiB)",
        peak_rss_mib(edge_server.pid()).unwrap_or(f64::NAN),
        peak_rss_mib(hub_server.pid()).unwrap_or(f64::NAN)
    );
    Ok(())
}
