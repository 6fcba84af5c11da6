//! Two linked instances on this machine, for the demo and the benchmark:
//! each a real `serve` child with its own data directory and loopback
//! ports, linked over pinned mutual TLS exactly as an operator would
//! (`link`: users, definitions, external ids, tokens, validation).

use std::path::Path;

use anyhow::{Result, anyhow, bail};

use crate::child::ServeChild;
use crate::link::{RemoteSpec, Side, link_all};
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

pub async fn start(base: &Path, name: &'static str) -> Result<Node> {
    start_with(base, name, None).await
}

/// `start`, with `config` as the server config file's text when given.
pub async fn start_with(base: &Path, name: &'static str, config: Option<&str>) -> Result<Node> {
    let dir = base.join(name);
    let made = crate::instance::init(&dir, name)?;
    let peer_port = crate::link::free_port()?;
    let config_file = match config {
        Some(text) => {
            let file = dir.join("procsync.toml");
            std::fs::write(&file, text)?;
            Some(file)
        }
        None => None,
    };
    let server = ServeChild::start_with(&dir, peer_port, config_file.as_deref()).await?;
    let client = AdminClient::connect(&server.target).await?;
    Ok(Node {
        name,
        peer_port,
        fingerprint: made.info.fingerprint,
        client,
        server,
    })
}

/// The definitions one side of the demo's link applies: software requests
/// captured, sent to and received from each remote; `capture_extra` is
/// added to the capture definition.
fn definitions(remotes: &[RemoteSpec], capture_extra: &str) -> String {
    // Extra lines that name the captured fields replace the default ones.
    let fields = if capture_extra.trim_start().starts_with("fields") {
        ""
    } else {
        r#"fields = ["short_description", "requested_for", "state"]"#
    };
    let mut text = format!(
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
{fields}
journal_fields = ["comments"]
{capture_extra}
"#
    );
    for RemoteSpec {
        name,
        endpoint,
        fingerprint,
        external_id,
    } in remotes
    {
        text.push_str(&format!(
            r#"
[[remote_system]]
name = "{name}"
endpoint = "{endpoint}"
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
"#
        ));
    }
    text
}

/// Each step through the node's admin client.
impl Side for Node {
    type Error = anyhow::Error;

    fn name(&self) -> &str {
        self.name
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.peer_port)
    }

    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    async fn add_user(&mut self, name: &str, role: &str) -> Result<String> {
        let (_, token) = self.client.add_user(name, &[role.to_string()], "").await?;
        Ok(token)
    }

    async fn apply(&mut self, definitions: &str) -> Result<()> {
        self.client.apply_config(definitions, "demo").await?;
        Ok(())
    }

    async fn remote_sys_id(&mut self, remote: &str) -> Result<String> {
        let remotes = self.client.list_remote_systems().await?;
        Ok(remotes
            .into_iter()
            .find(|r| r.name == remote)
            .ok_or_else(|| anyhow!("{} has no remote system `{remote}`", self.name))?
            .sys_id)
    }

    async fn set_token(&mut self, remote: &str, token: &str) -> Result<()> {
        self.client.set_remote_token(remote, token).await?;
        Ok(())
    }

    async fn validate(&mut self, remote: &str) -> Result<()> {
        let (problems, state) = self.client.validate_remote(remote).await?;
        if !problems.is_empty() {
            bail!(
                "validating {remote} on {} failed: {}",
                self.name,
                problems.join("; ")
            );
        }
        println!(
            "  {} validated remote system `{remote}`: outbound {}, inbound {}",
            self.name, state.outbound_state, state.inbound_state
        );
        Ok(())
    }
}

/// Links `edge` and `hub` both ways (`link::link_all`) with fast retries;
/// `capture_extra` is added to the capture definition of `sc_req_item`
/// (e.g. attachment settings). Prints a line per validated side.
pub async fn link(edge: &mut Node, hub: &mut Node, capture_extra: &str) -> Result<()> {
    for node in [&mut *edge, &mut *hub] {
        node.client.set_property("retry.interval", "1").await?;
        node.client.set_property("retry.max_interval", "2").await?;
    }
    link_all(&mut [edge, hub], &[(0, 1)], &|remotes| {
        definitions(remotes, capture_extra)
    })
    .await
}
