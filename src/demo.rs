//! `procsync demo`: two real instances on this machine (own data
//! directories in a temporary directory, loopback ports), linked over
//! pinned mutual TLS, running a sample process: an edge office raises
//! "User requests software", the hub fulfils it and the state comes back.
//! It narrates each step with the queue states, and leaves nothing running.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::pair::{Node, link, start};
use crate::record::{JournalText, Operation, RecordWrite};
use crate::transport::client::RecordData;

async fn wait<T>(what: &str, mut probe: impl AsyncFnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = probe().await? {
            return Ok(found);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn show_queues(node: &mut Node) -> Result<()> {
    for item in node.client.list_outbound("", "", 100).await? {
        println!(
            "    {} outbound #{} seq {} to {}: {} {} ({})",
            node.name,
            item.id,
            item.sequence,
            item.remote_system,
            item.operation,
            item.table,
            item.status
        );
    }
    for item in node.client.list_queue("inbound", "", "", 100, "").await?.0 {
        println!(
            "    {} inbound  #{} seq {} from {}: {} ({})",
            node.name,
            item["id"],
            item["sequence"],
            item["remote_system"].as_str().unwrap_or(""),
            item["operation"].as_str().unwrap_or(""),
            item["status"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn describe(record: &RecordData) -> String {
    let field = |name: &str| record.fields.get(name).cloned().unwrap_or_default();
    format!(
        "\"{}\" for {}, state {} (sys_id {}, updated by {})",
        field("short_description"),
        field("requested_for"),
        field("state"),
        field("sys_id"),
        field("sys_updated_by")
    )
}

/// Runs the demo; `keep` leaves the data directories for inspection.
pub async fn run(keep: bool) -> Result<()> {
    let started = Instant::now();
    let base = std::env::temp_dir().join(format!(
        "procsync-demo-{}-{}",
        std::process::id(),
        crate::ids::now_millis()
    ));
    std::fs::create_dir_all(&base)?;
    let result = demo(&base).await;
    if keep {
        println!(
            "\nThe instances' data directories are kept in {}",
            base.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&base);
    }
    result?;
    println!(
        "\nDone in {:.1} s; both instances are stopped.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[allow(clippy::too_many_lines, reason = "the demo is one story told in order")]
async fn demo(base: &Path) -> Result<()> {
    println!("Starting two instances in {}:", base.display());
    let mut edge = start(base, "edge").await?;
    let mut hub = start(base, "hub").await?;
    for node in [&edge, &hub] {
        println!(
            "  {:4} peer port {}, certificate {}",
            node.name, node.peer_port, node.fingerprint
        );
    }

    println!("\nLinking them: users, definitions, external ids, tokens, validation.");
    link(&mut edge, &mut hub, "").await?;

    println!("\n1. At the edge office, a user requests software.");
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("short_description".to_string(), "Install Visio".to_string());
    fields.insert("requested_for".to_string(), "Ada Lovelace".to_string());
    fields.insert("state".to_string(), "1".to_string());
    let created = edge
        .client
        .write_records(vec![RecordWrite {
            attachments: Default::default(),
            operation: Operation::Create,
            table: "sc_req_item".to_string(),
            sys_id: None,
            fields,
            journal: vec![JournalText {
                field: "comments".to_string(),
                text: "Needed for the floor plans".to_string(),
                origin: None,
            }],
        }])
        .await?;
    let edge_id = created[0].sys_id.clone();
    println!(
        "   edge: {}",
        describe(&edge.client.get_record("sc_req_item", &edge_id).await?)
    );
    println!("   Captured in the same transaction; the edge's outbound queue:");
    show_queues(&mut edge).await?;

    let arrived = wait("the request to reach the hub", async || {
        let found = hub.client.list_records("sc_req_item", "", 10).await?;
        Ok(found.into_iter().next())
    })
    .await?;
    let hub_id = arrived.fields["sys_id"].clone();
    println!("\n2. The hub received it over mutual TLS and its inbound flow created a record:");
    let record = hub.client.get_record("sc_req_item", &hub_id).await?;
    println!("   hub:  {}", describe(&record));
    for entry in &record.journal {
        println!(
            "         [{}] {}: {}",
            entry.field, entry.author, entry.text
        );
    }
    wait("the edge's items to be acknowledged", async || {
        let items = edge.client.list_outbound("", "", 100).await?;
        Ok(items.iter().all(|i| i.status == "Processed").then_some(()))
    })
    .await?;
    show_queues(&mut edge).await?;
    show_queues(&mut hub).await?;

    println!("\n3. The hub fulfils the request.");
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("state".to_string(), "3".to_string());
    hub.client
        .write_records(vec![RecordWrite {
            attachments: Default::default(),
            operation: Operation::Update,
            table: "sc_req_item".to_string(),
            sys_id: Some(hub_id.clone()),
            fields,
            journal: vec![JournalText {
                field: "comments".to_string(),
                text: "Installed; licence assigned".to_string(),
                origin: None,
            }],
        }])
        .await?;
    println!(
        "   hub:  {}",
        describe(&hub.client.get_record("sc_req_item", &hub_id).await?)
    );

    let back = wait("the state to come back to the edge", async || {
        let record = edge.client.get_record("sc_req_item", &edge_id).await?;
        Ok((record.fields.get("state").map(String::as_str) == Some("3")).then_some(record))
    })
    .await?;
    println!("\n4. The new state came back to the edge's original record:");
    println!("   edge: {}", describe(&back));
    for entry in &back.journal {
        println!(
            "         [{}] {}: {}",
            entry.field, entry.author, entry.text
        );
    }
    wait("the hub's items to be acknowledged", async || {
        let items = hub.client.list_outbound("", "", 100).await?;
        Ok(items.iter().all(|i| i.status == "Processed").then_some(()))
    })
    .await?;
    println!("   Queues at the end (the edge did not echo the hub's change back):");
    show_queues(&mut edge).await?;
    show_queues(&mut hub).await?;
    for correlation in hub.client.list_correlations("").await? {
        println!(
            "   hub correlation: {}/{} <-> edge {} ({})",
            correlation.table,
            correlation.local_correlation_id,
            correlation.remote_correlation_id,
            correlation.state
        );
    }
    Ok(())
}
