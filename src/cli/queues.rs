//! `procsync queue …` and `correlation list`: paged queue listings, one
//! item, retry and skip.

use std::process::ExitCode;

use anyhow::Result;

use super::{AdminClient, Connection, QueueAction, QueueCommand, client, print_table};

pub async fn run(command: QueueCommand, connection: &Connection) -> Result<ExitCode> {
    let mut client = client(connection).await?;
    let (queue, action) = match command {
        QueueCommand::Outbound { command } => ("outbound", command),
        QueueCommand::Inbound { command } => ("inbound", command),
        QueueCommand::Context { id } => {
            let context = client.flow_context(id).await?;
            println!("{}", serde_json::to_string_pretty(&context)?);
            return Ok(ExitCode::SUCCESS);
        }
    };
    match action {
        QueueAction::List {
            status,
            remote,
            limit,
            page,
            json,
        } => {
            let (items, next) = client
                .list_queue(queue, &status, &remote, limit, &page)
                .await?;
            if !next.is_empty() {
                eprintln!(
                    "more items follow: add --page {next} for the next {}",
                    if limit == 0 { 100 } else { limit }
                );
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
                return Ok(ExitCode::SUCCESS);
            }
            let text = |item: &serde_json::Value, key: &str| match &item[key] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            let (table_key, record_key) = if queue == "outbound" {
                ("table", "local_correlation_id")
            } else {
                ("source_table", "remote_correlation_id")
            };
            let rows = items
                .iter()
                .map(|i| {
                    vec![
                        text(i, "id"),
                        text(i, "sequence"),
                        text(i, "status"),
                        text(i, "remote_system"),
                        text(i, "process_event"),
                        text(i, "operation"),
                        format!("{}/{}", text(i, table_key), text(i, record_key)),
                        text(i, "domain"),
                        match i["waiting"].as_str() {
                            Some(reason) => format!("waiting: {reason}"),
                            None => text(i, "error"),
                        },
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID", "SEQ", "STATUS", "REMOTE", "EVENT", "OP", "RECORD", "DOMAIN", "ERROR",
                ],
                rows,
            );
        }
        QueueAction::Show { id } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&client.queue_item(queue, id).await?)?
            );
        }
        QueueAction::Retry { id } => moved(&mut client, queue, id, "retry").await?,
        QueueAction::Resolve { id, take } => {
            let item = client
                .set_queue_item_status(queue, id, &format!("take_{take}"))
                .await?;
            println!(
                "{queue} item {id} is {}: settled with the {} values, which go back to `{}` when an outbound flow sends it this process event",
                item["status"].as_str().unwrap_or("?"),
                if take == "peer" { "peer's" } else { "local" },
                item["remote_system"].as_str().unwrap_or("?")
            );
        }
        QueueAction::Skip { id } => moved(&mut client, queue, id, "skip").await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `procsync correlation list`.
pub async fn correlations(remote: String, json: bool, connection: &Connection) -> Result<ExitCode> {
    let correlations = client(connection).await?.list_correlations(&remote).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&correlations)?);
    } else {
        let rows = correlations
            .iter()
            .map(|c| {
                vec![
                    c.remote_system.clone(),
                    format!("{}/{}", c.table, c.local_correlation_id),
                    c.remote_correlation_id.clone(),
                    c.state.clone(),
                    c.updated_on.clone(),
                ]
            })
            .collect();
        print_table(
            &[
                "REMOTE",
                "LOCAL RECORD",
                "REMOTE RECORD",
                "STATE",
                "UPDATED",
            ],
            rows,
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// An operator's retry or skip of one item, and the status it ends in.
async fn moved(client: &mut AdminClient, queue: &str, id: u64, action: &str) -> Result<()> {
    let item = client.set_queue_item_status(queue, id, action).await?;
    println!(
        "{queue} item {id} is {}",
        item["status"].as_str().unwrap_or("?")
    );
    Ok(())
}
