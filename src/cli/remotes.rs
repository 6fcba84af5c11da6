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
        RemoteCommand::Show { name, json } => {
            let remote = client
                .list_remote_systems()
                .await?
                .into_iter()
                .find(|r| r.name == name)
                .ok_or_else(|| {
                    anyhow!("no remote system `{name}`; `procsync remote list` shows them")
                })?;
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
        }
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
