//! `bench sync --wire`: what a link costs on the wire. The same typical
//! ITSM records (ten short fields, captured whole) go edge to hub twice,
//! once with `link.compress` on and once off, each between fresh
//! instances; the edge's counts of its link to the hub give the bytes as
//! encoded and on the wire (TLS and HTTP/2 framing included).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Runs both passes and prints their figures.
pub async fn run(base: &std::path::Path, records: u64, batch: u64) -> Result<()> {
    let mut figures = Vec::new();
    for compress in [false, true] {
        let dir = base.join(if compress { "compressed" } else { "plain" });
        std::fs::create_dir_all(&dir)?;
        figures.push((compress, pass(&dir, records, batch, compress).await?));
    }
    for (compress, (encoded, wire)) in &figures {
        println!(
            "{records} typical records, compression {}: {:.1} MB encoded, {:.1} MB on the wire ({:.0} bytes per record)",
            if *compress { "on (zstd)" } else { "off" },
            *encoded as f64 / 1e6,
            *wire as f64 / 1e6,
            *wire as f64 / records as f64
        );
    }
    if let [(_, (_, plain)), (_, (_, compressed))] = figures.as_slice() {
        println!(
            "compression saves {:.0} % of the bytes on the wire",
            100.0 - *compressed as f64 * 100.0 / (*plain).max(1) as f64
        );
    }
    Ok(())
}

/// One pass: bytes the edge sent to the hub, as encoded and on the wire.
async fn pass(
    dir: &std::path::Path,
    records: u64,
    batch: u64,
    compress: bool,
) -> Result<(u64, u64)> {
    let mut edge = crate::pair::start(dir, "edge").await?;
    let mut hub = crate::pair::start(dir, "hub").await?;
    for node in [&mut edge, &mut hub] {
        let value = if compress { "true" } else { "false" };
        node.client.set_property("link.compress", value).await?;
    }
    crate::pair::link(&mut edge, &mut hub, r#"fields = ["*"]"#).await?;
    super::write_requests(
        &mut edge.client,
        records,
        batch,
        super::stats::typical_fields,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    while hub.client.stats().await?.inbound.processed < records
        || edge.client.stats().await?.outbound.processed < records
    {
        if Instant::now() > deadline {
            bail!("the records did not all arrive within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let link = edge
        .client
        .list_remote_systems()
        .await?
        .into_iter()
        .find(|r| r.name == "hub")
        .ok_or_else(|| anyhow::anyhow!("the edge has no remote system `hub`"))?;
    Ok((
        link.encoded_bytes_sent + link.encoded_bytes_received,
        link.wire_bytes_sent + link.wire_bytes_received,
    ))
}
