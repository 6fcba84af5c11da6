//! `procsync remote …`: listing remote systems with their health,
//! validating, disabling, storing the token presented to a peer.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Result, anyhow};

use super::{Connection, RemoteCommand, client, print_table};

pub async fn run(command: RemoteCommand, connection: &Connection) -> Result<ExitCode> {
    let mut client = client(connection).await?;
    match command {
        RemoteCommand::Invite { .. }
        | RemoteCommand::Join { .. }
        | RemoteCommand::Remove { .. } => {
            return super::enrol::run(command, &mut client).await;
        }
        RemoteCommand::List { group, json } => {
            let remotes = client.list_group(&group).await?;
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
        RemoteCommand::Reconcile {
            name,
            table,
            repair,
            no_wait,
            json,
        } => return reconcile(&mut client, &name, &table, repair, no_wait, json).await,
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

/// `remote reconcile`: asks for the reconciliation, waits for it unless
/// told not to, and prints what it found; fails when it failed.
async fn reconcile(
    client: &mut super::AdminClient,
    name: &str,
    table: &str,
    repair: bool,
    no_wait: bool,
    json: bool,
) -> Result<ExitCode> {
    let mut found = client
        .remote_reconcile(name, "start", table, repair)
        .await?;
    let spinner = (!no_wait && !json).then(|| crate::progress::spinner("comparing"));
    while !no_wait && matches!(found["state"].as_str(), Some("requested" | "running")) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        found = client.remote_reconcile(name, "status", "", false).await?;
    }
    drop(spinner);
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        print_reconcile(name, &found);
    }
    if found["state"] == "failed" {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_reconcile(name: &str, found: &serde_json::Value) {
    let state = found["state"].as_str().unwrap_or("?");
    if state == "failed" {
        eprintln!(
            "reconciliation with `{name}` failed: {}",
            found["error"].as_str().unwrap_or("no reason given")
        );
        return;
    }
    println!("reconciliation with `{name}` {state}");
    let tables = found["tables"].as_array().cloned().unwrap_or_default();
    let columns = [
        "table",
        "peer_table",
        "here",
        "peer",
        "missing_here",
        "missing_there",
        "differing",
        "repaired",
    ];
    let rows = tables
        .iter()
        .map(|t| {
            columns
                .iter()
                .map(|k| {
                    t[*k]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| t[*k].to_string())
                })
                .collect()
        })
        .collect();
    let headers: Vec<String> = columns.iter().map(|k| k.to_uppercase()).collect();
    print_table(
        &headers.iter().map(String::as_str).collect::<Vec<_>>(),
        rows,
    );
    for table in &tables {
        for difference in table["differences"]
            .as_array()
            .into_iter()
            .flatten()
            .take(20)
        {
            let kind = &difference["kind"];
            let what = match kind {
                serde_json::Value::Object(o) if o.contains_key("differs") => format!(
                    "differs in {}",
                    kind["differs"]["fields"]
                        .as_array()
                        .map(|f| f
                            .iter()
                            .filter_map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default()
                ),
                other => other.as_str().unwrap_or("?").replace('_', " "),
            };
            println!(
                "  {}: here {} / peer {}: {what}",
                table["table"].as_str().unwrap_or("?"),
                difference["here"].as_str().unwrap_or("-"),
                difference["peer"].as_str().unwrap_or("-"),
            );
        }
    }
    if found["repair"] == true {
        println!(
            "items queued to settle the differences: {}",
            tables
                .iter()
                .filter_map(|t| t["repaired"].as_u64())
                .sum::<u64>()
        );
    }
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
