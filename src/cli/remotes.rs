//! `procsync remote …`: listing remote systems with their health,
//! validating, disabling, storing the token presented to a peer.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Result, anyhow};

use super::{Connection, RemoteCommand, client, print_table};

pub async fn run(command: RemoteCommand, connection: &Connection) -> Result<ExitCode> {
    let mut client = client(connection).await?;
    match command {
        RemoteCommand::List { json } => {
            let remotes = client.list_remote_systems().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&remotes)?);
            } else {
                let rows = remotes
                    .iter()
                    .map(|r| {
                        vec![
                            r.name.clone(),
                            r.sys_id.clone(),
                            r.endpoint.clone(),
                            r.outbound_state.clone(),
                            r.inbound_state.clone(),
                            r.health.clone(),
                            r.external_id.clone(),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "NAME",
                        "SYS_ID",
                        "ENDPOINT",
                        "OUTBOUND",
                        "INBOUND",
                        "HEALTH",
                        "EXTERNAL_ID",
                    ],
                    rows,
                );
            }
        }
        RemoteCommand::Show { name, json } => show(&mut client, &name, json).await?,
        RemoteCommand::Load {
            name,
            event,
            query,
            cancel,
            no_wait,
            json,
        } => load(&mut client, &name, (&event, &query), cancel, no_wait, json).await?,
        RemoteCommand::Validate { name } => {
            let (problems, remote) = client.validate_remote(&name).await?;
            if !problems.is_empty() {
                eprintln!(
                    "remote system `{name}` is not valid ({} problem(s)):",
                    problems.len()
                );
                for problem in &problems {
                    eprintln!("  - {problem}");
                }
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "remote system `{name}` is valid: outbound {}, inbound {}",
                remote.outbound_state, remote.inbound_state
            );
        }
        RemoteCommand::Disable { name } => {
            let remote = client.disable_remote(&name).await?;
            println!(
                "remote system `{name}`: outbound {}, inbound {}",
                remote.outbound_state, remote.inbound_state
            );
        }
        RemoteCommand::Token { name, secret } => {
            let token = match secret {
                Some(token) => token,
                None => {
                    let mut buf = String::new();
                    std::io::stdin().read_to_string(&mut buf)?;
                    buf
                }
            };
            client.set_remote_token(&name, &token).await?;
            println!(
                "stored the token sent to `{name}`; run `procsync remote validate {name}` next"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows a running load until it ends, with a bar on a terminal (none
/// with `--json`); the load as it ended.
async fn watch_load(
    client: &mut super::AdminClient,
    name: &str,
    mut load: serde_json::Value,
    json: bool,
) -> Result<serde_json::Value> {
    let total = load["total"].as_u64().unwrap_or(0);
    let bar = if json {
        crate::progress::hidden()
    } else {
        crate::progress::items(total, "loading")
    };
    while load["state"] == "running" {
        bar.set_position(load["scanned"].as_u64().unwrap_or(0));
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        load = client.remote_load(name, "status", "", "").await?;
    }
    Ok(load)
}

/// `remote load`: starts (or cancels) the load, follows it unless told
/// not to, and says how it ended.
async fn load(
    client: &mut super::AdminClient,
    name: &str,
    (event, query): (&str, &str),
    cancel: bool,
    no_wait: bool,
    json: bool,
) -> Result<()> {
    let action = if cancel { "cancel" } else { "start" };
    let mut load = client.remote_load(name, action, event, query).await?;
    if !cancel && !no_wait {
        load = watch_load(client, name, load, json).await?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&load)?);
    } else {
        println!(
            "load to `{name}` {}: {} of {} records looked at, {} queued",
            load["state"].as_str().unwrap_or("?"),
            load["scanned"],
            load["total"],
            load["queued"]
        );
    }
    Ok(())
}

/// `remote show`: one remote system, as JSON or a field a line.
async fn show(client: &mut super::AdminClient, name: &str, json: bool) -> Result<()> {
    let remote = client
        .list_remote_systems()
        .await?
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| anyhow!("no remote system `{name}`; `procsync remote list` shows them"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&remote)?);
    } else {
        let value = serde_json::to_value(&remote)?;
        for (key, value) in value.as_object().into_iter().flatten() {
            let shown = value
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            println!("{key:18} {shown}");
        }
    }
    Ok(())
}
