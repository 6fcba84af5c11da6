//! Two linked instances on this machine, for the demo and the benchmark:
//! each a real `serve` child with its own data directory and loopback
//! ports, linked over pinned mutual TLS exactly as an operator would (users,
//! definitions, external ids, tokens, validation).

use std::path::Path;

use anyhow::{Result, anyhow, bail};

use crate::child::ServeChild;
use crate::transport::client::AdminClient;

/// One instance: its `serve` process and a client.
pub struct Node {
    pub name: &'static str,
    pub peer_port: u16,
    pub fingerprint: String,
    pub client: AdminClient,
    /// Last: dropped after the client, stopping the process.
    pub server: ServeChild,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub async fn start(base: &Path, name: &'static str) -> Result<Node> {
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
        server,
    })
}

fn definitions(remote: &Node, external_id: &str, capture_extra: &str) -> String {
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
{capture_extra}

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
async fn prepare(me: &mut Node, other: &Node, capture_extra: &str) -> Result<String> {
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
        .apply_config(&definitions(other, "", capture_extra), "demo")
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

/// Links `edge` and `hub` both ways; `capture_extra` is added to the
/// capture definition of `sc_req_item` (e.g. attachment settings).
/// Prints a line per validated side.
pub async fn link(edge: &mut Node, hub: &mut Node, capture_extra: &str) -> Result<()> {
    let edge_token = prepare(edge, hub, capture_extra).await?;
    let hub_token = prepare(hub, edge, capture_extra).await?;
    let edge_record = remote_sys_id(edge).await?;
    let hub_record = remote_sys_id(hub).await?;
    edge.client
        .apply_config(&definitions(hub, &hub_record, capture_extra), "demo")
        .await?;
    hub.client
        .apply_config(&definitions(edge, &edge_record, capture_extra), "demo")
        .await?;
    edge.client.set_remote_token("hub", &hub_token).await?;
    hub.client.set_remote_token("edge", &edge_token).await?;
    for node in [&mut *edge, &mut *hub] {
        node.client.set_property("retry.interval", "1").await?;
        node.client.set_property("retry.max_interval", "2").await?;
    }
    for (node, remote) in [(&mut *edge, "hub"), (&mut *hub, "edge")] {
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

    Ok(())
}
