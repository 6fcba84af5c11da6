//! `procsync demo`: two real instances on this machine (own data
//! directories in a temporary directory, loopback ports), linked over
//! pinned mutual TLS, running a sample process: an edge office raises
//! "User requests software", the hub fulfils it and the state comes back.
//! It narrates each step with the queue states, and leaves nothing running.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};

use crate::child::ServeChild;
use crate::record::{JournalText, Operation, RecordWrite};
use crate::transport::client::{AdminClient, RecordData};

/// One demo instance: its `serve` process and a client.
struct Node {
    name: &'static str,
    peer_port: u16,
    fingerprint: String,
    client: AdminClient,
    /// Last: dropped after the client, stopping the process.
    _server: ServeChild,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start(base: &Path, name: &'static str) -> Result<Node> {
    let dir = base.join(name);
    let made = crate::instance::init(&dir, name)?;
    let peer_port = free_port()?;
    let server = ServeChild::start(&dir, &format!("127.0.0.1:{peer_port}")).await?;
    let client = AdminClient::connect(&server.target).await?;
    Ok(Node {
        name,
        peer_port,
        fingerprint: made.info.fingerprint,
        client,
        _server: server,
    })
}

fn definitions(remote: &Node, external_id: &str) -> String {
    format!(
        r#"
[[definition]]
name = "Software requests"
description = "Edge offices raise software requests; the hub fulfils them."

[[process_event]]
name = "software_request"
definition = "Software requests"

[[capture]]
name = "Capture software requests"
process_event = "software_request"
table = "sc_req_item"
fields = ["short_description", "requested_for", "state"]
journal_fields = ["comments"]

[[remote_system]]
name = "{name}"
endpoint = "https://127.0.0.1:{port}"
fingerprint = "{fingerprint}"
external_id = "{external_id}"
inbound_api_user = "{name}_api"
run_as = "{name}_runas"

[[outbound_flow]]
name = "Send software requests to {name}"
process_event = "software_request"
remote_system = "{name}"

[[inbound_flow]]
name = "Receive software requests from {name}"
process_event = "software_request"
remote_system = "{name}"
table = "sc_req_item"
"#,
        name = remote.name,
        port = remote.peer_port,
        fingerprint = remote.fingerprint,
    )
}

/// Users and definitions on `me` for `other`; returns the token `other`
/// must present to `me`.
async fn prepare(me: &mut Node, other: &Node) -> Result<String> {
    let (_, token) = me
        .client
        .add_user(
            &format!("{}_api", other.name),
            &["process_sync_api".to_string()],
            "",
        )
        .await?;
    me.client
        .add_user(
            &format!("{}_runas", other.name),
            &["process_sync_run_as".to_string()],
            "",
        )
        .await?;
    me.client
        .apply_config(&definitions(other, ""), "demo")
        .await?;
    Ok(token)
}

async fn remote_sys_id(node: &mut Node) -> Result<String> {
    let remotes = node.client.list_remote_systems().await?;
    Ok(remotes
        .first()
        .ok_or_else(|| anyhow!("no remote system"))?
        .sys_id
        .clone())
}

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
    for item in node.client.list_inbound("", "", 100).await? {
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
    let edge_token = prepare(&mut edge, &hub).await?;
    let hub_token = prepare(&mut hub, &edge).await?;
    let edge_record = remote_sys_id(&mut edge).await?;
    let hub_record = remote_sys_id(&mut hub).await?;
    edge.client
        .apply_config(&definitions(&hub, &hub_record), "demo")
        .await?;
    hub.client
        .apply_config(&definitions(&edge, &edge_record), "demo")
        .await?;
    edge.client.set_remote_token("hub", &hub_token).await?;
    hub.client.set_remote_token("edge", &edge_token).await?;
    for node in [&mut edge, &mut hub] {
        node.client.set_property("retry.interval", "1").await?;
        node.client.set_property("retry.max_interval", "2").await?;
    }
    for (node, remote) in [(&mut edge, "hub"), (&mut hub, "edge")] {
        let (problems, state) = node.client.validate_remote(remote).await?;
        if !problems.is_empty() {
            bail!(
                "validating {remote} on {} failed: {}",
                node.name,
                problems.join("; ")
            );
        }
        println!(
            "  {} validated remote system `{remote}`: outbound {}, inbound {}",
            node.name, state.outbound_state, state.inbound_state
        );
    }

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
