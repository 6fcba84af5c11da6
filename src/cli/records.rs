//! `procsync record …` and `journal add`: writes with fields from
//! arguments or JSON, reads, queries and imports.

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};

use super::{Connection, RecordCommand, client, print_table};
use crate::record::{JournalText, Operation, RecordWrite};
use crate::transport::client::{AdminClient, RecordData};

#[allow(
    clippy::too_many_lines,
    reason = "one match arm per record command, each short"
)]
pub async fn run(command: RecordCommand, connection: &Connection) -> Result<ExitCode> {
    let mut client = client(connection).await?;
    match command {
        RecordCommand::Create {
            table,
            fields,
            json,
        } => {
            let fields = parse_fields(&fields, json.as_deref())?;
            write_one(&mut client, Operation::Create, table, None, fields).await?;
        }
        RecordCommand::Update {
            table,
            sys_id,
            fields,
            json,
        } => {
            let fields = parse_fields(&fields, json.as_deref())?;
            write_one(&mut client, Operation::Update, table, Some(sys_id), fields).await?;
        }
        RecordCommand::Delete { table, sys_id } => {
            write_one(
                &mut client,
                Operation::Delete,
                table,
                Some(sys_id),
                BTreeMap::new(),
            )
            .await?;
        }
        RecordCommand::Get {
            table,
            sys_id,
            json,
        } => {
            let record = client.get_record(&table, &sys_id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&record)?);
            } else {
                print_record(&record);
            }
        }
        RecordCommand::List {
            table,
            query,
            limit,
            fields,
            json,
        } => {
            let records = client.list_records(&table, &query, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                let columns: Vec<String> = if fields.is_empty() {
                    let mut names: Vec<String> = records
                        .iter()
                        .flat_map(|r| r.fields.keys().cloned())
                        .filter(|k| !k.starts_with("sys_"))
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    names.insert(0, "sys_id".to_string());
                    names
                } else {
                    fields
                };
                let rows = records
                    .iter()
                    .map(|r| {
                        columns
                            .iter()
                            .map(|c| r.fields.get(c).cloned().unwrap_or_default())
                            .collect()
                    })
                    .collect();
                let headers: Vec<&str> = columns.iter().map(String::as_str).collect();
                print_table(&headers, rows);
            }
        }
        RecordCommand::Import { table, file, batch } => {
            let opened = std::fs::File::open(&file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            let size = opened.metadata().map_or(0, |m| m.len());
            let reader = std::io::BufReader::new(opened);
            let bar = crate::progress::bytes(size, "importing");
            let mut pending = Vec::new();
            let mut total = 0usize;
            for (i, line) in reader.lines().enumerate() {
                let line = line?;
                bar.inc(line.len() as u64 + 1);
                if line.trim().is_empty() {
                    continue;
                }
                let fields =
                    json_fields(&line).with_context(|| format!("{}:{}", file.display(), i + 1))?;
                pending.push(RecordWrite {
                    attachments: Default::default(),
                    operation: Operation::Create,
                    table: table.clone(),
                    sys_id: None,
                    fields,
                    journal: Vec::new(),
                });
                if pending.len() >= batch.max(1) {
                    total += client
                        .write_records(std::mem::take(&mut pending))
                        .await?
                        .len();
                }
            }
            if !pending.is_empty() {
                total += client.write_records(pending).await?.len();
            }
            drop(bar);
            println!("imported {total} record(s) into {table}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes one record; prints its sys_id on stdout and what happened on
/// stderr, so scripts can capture the id.
pub async fn write_one(
    client: &mut AdminClient,
    operation: Operation,
    table: String,
    sys_id: Option<String>,
    fields: BTreeMap<String, String>,
) -> Result<()> {
    let results = client
        .write_records(vec![RecordWrite {
            attachments: Default::default(),
            operation,
            table: table.clone(),
            sys_id,
            fields,
            journal: Vec::new(),
        }])
        .await?;
    let result = &results[0];
    println!("{}", result.sys_id);
    let verb = match operation {
        Operation::Create => "created",
        Operation::Update => "updated",
        Operation::Delete => "deleted",
    };
    eprintln!(
        "{verb} {table}/{} (mod count {}); {} outbound item(s) queued",
        result.sys_id, result.mod_count, result.queued
    );
    Ok(())
}

pub fn print_record(record: &RecordData) {
    let width = record.fields.keys().map(String::len).max().unwrap_or(0);
    for (key, value) in &record.fields {
        println!("{key:width$}  {value}");
    }
    for entry in &record.journal {
        println!(
            "[{}] {} {} ({}): {}",
            entry.field, entry.time, entry.author, entry.id, entry.text
        );
    }
}

/// Parses `key=value` arguments and a `--json` object into fields.
pub fn parse_fields(pairs: &[String], json: Option<&str>) -> Result<BTreeMap<String, String>> {
    let mut fields = BTreeMap::new();
    if let Some(json) = json {
        let text = if json == "-" {
            let mut buf = String::new();
            std::io::stdin().read_to_string(&mut buf)?;
            buf
        } else {
            json.to_string()
        };
        fields.extend(json_fields(&text)?);
    }
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("`{pair}` is not key=value"))?;
        fields.insert(key.trim().to_string(), value.to_string());
    }
    Ok(fields)
}

/// A JSON object of scalar values as record fields.
pub fn json_fields(text: &str) -> Result<BTreeMap<String, String>> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        anyhow!(
            "malformed JSON at line {}, column {}: {e}; pass an object like {{\"state\": \"2\"}}",
            e.line(),
            e.column()
        )
    })?;
    let serde_json::Value::Object(object) = value else {
        bail!("the JSON must be an object of fields, like {{\"state\": \"2\"}}");
    };
    object
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => String::new(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => bail!("field `{key}` holds a list or object; record fields are text, numbers or booleans"),
            };
            Ok((key, text))
        })
        .collect()
}

/// `procsync journal add`: one journal entry as an update of its record.
pub async fn add_journal(
    table: String,
    sys_id: String,
    field: String,
    text: String,
    connection: &Connection,
) -> Result<ExitCode> {
    let results = client(connection)
        .await?
        .write_records(vec![RecordWrite {
            attachments: Default::default(),
            operation: Operation::Update,
            table: table.clone(),
            sys_id: Some(sys_id),
            fields: BTreeMap::new(),
            journal: vec![JournalText {
                field,
                text,
                origin: None,
            }],
        }])
        .await?;
    let result = &results[0];
    println!("{}", result.sys_id);
    eprintln!(
        "added a journal entry to {table}/{}; {} outbound item(s) queued",
        result.sys_id, result.queued
    );
    Ok(ExitCode::SUCCESS)
}
