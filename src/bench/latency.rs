//! `procsync bench sync --rate R --seconds S`: the latency of one change
//! end to end at a steady offered rate. Single writes go to the edge R
//! times a second, each on schedule whether or not the ones before were
//! answered (an open loop, as independent clients write); each one's
//! acknowledgment time is noted by sys_id, and
//! once the hub has applied them all, the hub's inbound items say when
//! each was applied (`processed_on`, stamped in the apply's transaction,
//! in milliseconds). Both clocks are this machine's.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};

use super::{ms, percentile};
use crate::pair::Node;
use crate::record::{Operation, RecordWrite};

/// Wall-clock time in milliseconds, with fractions.
fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

pub async fn run(edge: &mut Node, hub: &mut Node, rate: u64, seconds: u64) -> Result<()> {
    if rate == 0 || seconds == 0 {
        bail!("--rate and --seconds must be at least 1");
    }
    let total = rate * seconds;
    println!("offering {rate} single writes/s on the edge for {seconds} s ({total} records)");
    let started = Instant::now();
    let bar = crate::progress::items(total, "writing");
    let mut behind = Duration::ZERO;
    let mut writes = tokio::task::JoinSet::new();
    for n in 0..total {
        #[allow(clippy::cast_precision_loss, reason = "write numbers far below 2^52")]
        let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        } else {
            behind = behind.max(Instant::now() - due);
        }
        let write = RecordWrite {
            operation: Operation::Create,
            table: "sc_req_item".to_string(),
            sys_id: None,
            fields: [
                ("short_description".to_string(), format!("Latency {n}")),
                ("state".to_string(), "1".to_string()),
            ]
            .into_iter()
            .collect(),
            journal: Vec::new(),
            attachments: Default::default(),
        };
        let mut client = edge.client.clone();
        writes.spawn(async move {
            let results = client.write_records(vec![write]).await?;
            let at = now_ms();
            Ok::<_, anyhow::Error>(results.into_iter().map(move |r| (r.sys_id, at)))
        });
        bar.set_position(n + 1);
    }
    let mut acked: HashMap<String, f64> = HashMap::new();
    while let Some(done) = writes.join_next().await {
        acked.extend(done??);
    }
    drop(bar);
    let offered_for = started.elapsed();
    println!(
        "wrote {total} in {:.1} s (at most {} behind the offered schedule)",
        offered_for.as_secs_f64(),
        ms(behind)
    );

    let deadline = Instant::now() + Duration::from_secs(600);
    while hub.client.stats().await?.inbound.processed < total {
        if Instant::now() > deadline {
            bail!("the hub did not apply every item within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let limit = u32::try_from(total).unwrap_or(u32::MAX);
    let (items, _) = hub.client.list_queue("inbound", "", "", limit, "").await?;
    let mut latencies = Vec::with_capacity(items.len());
    for item in &items {
        let sys_id = item["payload"]["capture_metadata"]["sys_id"]
            .as_str()
            .unwrap_or_default();
        let (Some(acked_at), Some(applied)) = (acked.get(sys_id), item["processed_on_ms"].as_u64())
        else {
            continue;
        };
        #[allow(
            clippy::cast_precision_loss,
            reason = "milliseconds since the epoch are far below 2^52"
        )]
        let gap = (applied as f64 - acked_at).max(0.0);
        latencies.push(Duration::from_secs_f64(gap / 1000.0));
    }
    if latencies.len() as u64 != total {
        bail!(
            "only {} of {total} applied items were matched to their writes",
            latencies.len()
        );
    }
    latencies.sort();
    println!(
        "edge acknowledged -> hub applied, {} items: p50 {}, p99 {}, max {} (the hub stamps the apply in milliseconds)",
        latencies.len(),
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or_default())
    );
    Ok(())
}
