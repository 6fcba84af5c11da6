//! `procsync attachment add|list|get|rm`: files in and out of records
//! through the admin API, streamed in chunks so a file of any size never
//! sits in memory. `add` hashes the file first, so content the instance
//! already holds is not sent again and an interrupted upload resumes.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use super::{Connection, client};
use crate::ids::hex;
use crate::transport::upload::upload_file;

#[derive(Subcommand, Debug)]
pub enum AttachmentCommand {
    /// Attach a file to a record (uploading only what the instance lacks).
    Add {
        table: String,
        sys_id: String,
        file: PathBuf,
        /// File name on the record (default: the file's own name).
        #[arg(long)]
        name: Option<String>,
        /// MIME type (default: guessed from the extension).
        #[arg(long)]
        content_type: Option<String>,
    },
    /// List a record's attachments.
    List {
        table: String,
        sys_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Save an attachment (by sys_id or file name) to a file, checking its
    /// hash; `-o -` writes to standard output.
    Get {
        table: String,
        sys_id: String,
        attachment: String,
        /// Where to write (default: the attachment's file name, here).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Remove an attachment (by sys_id or file name) from a record.
    Rm {
        table: String,
        sys_id: String,
        attachment: String,
    },
}

#[allow(
    clippy::too_many_lines,
    reason = "one match arm per attachment command, each short"
)]
pub async fn run(command: AttachmentCommand, connection: &Connection) -> Result<()> {
    match command {
        AttachmentCommand::Add {
            table,
            sys_id,
            file,
            name,
            content_type,
        } => {
            let file_name = match name {
                Some(name) => name,
                None => file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .with_context(|| format!("{} has no file name; pass --name", file.display()))?,
            };
            let content_type =
                content_type.unwrap_or_else(|| guess_content_type(&file_name).to_string());
            let mut client = client(connection).await?;
            let watch = std::sync::Arc::new(crate::progress::UploadBar::default());
            let uploaded = upload_file(&mut client, &file, watch.clone()).await;
            watch.done();
            let (hash, held) = uploaded?;
            let attachment = client
                .add_attachment(&table, &sys_id, &file_name, &content_type, &hash)
                .await?;
            println!("{}", attachment.sys_id);
            eprintln!(
                "attached {} ({} bytes, blake3 {}) to {table}/{sys_id}{}",
                attachment.file_name,
                attachment.size,
                attachment.hash,
                if held {
                    "; the instance already held its content"
                } else {
                    ""
                }
            );
        }
        AttachmentCommand::List {
            table,
            sys_id,
            json,
        } => {
            let attachments = client(connection)
                .await?
                .list_attachments(&table, &sys_id)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&attachments)?);
            } else {
                let rows = attachments
                    .iter()
                    .map(|a| {
                        vec![
                            a.sys_id.clone(),
                            a.size.to_string(),
                            a.created_on.clone(),
                            a.content_type.clone(),
                            a.file_name.clone(),
                        ]
                    })
                    .collect();
                crate::cli::print_table(&["SYS_ID", "BYTES", "CREATED", "TYPE", "FILE"], rows);
            }
        }
        AttachmentCommand::Get {
            table,
            sys_id,
            attachment,
            output,
            force,
        } => {
            let mut client = client(connection).await?;
            let (head, mut bytes) = client.get_attachment(&table, &sys_id, &attachment).await?;
            let output = output.unwrap_or_else(|| PathBuf::from(&head.file_name));
            let to_stdout = output.as_os_str() == "-";
            if !to_stdout && output.exists() && !force {
                bail!("{} exists; pass --force to replace it", output.display());
            }
            // Written beside the target and renamed once the hash matches:
            // a broken download never leaves a wrong file under the name.
            let partial = output.with_extension("procsync-partial");
            let mut sink: Box<dyn Write + Send> = if to_stdout {
                Box::new(std::io::stdout())
            } else {
                Box::new(std::io::BufWriter::new(
                    std::fs::File::create(&partial)
                        .with_context(|| format!("cannot create {}", partial.display()))?,
                ))
            };
            let mut hasher = blake3::Hasher::new();
            let mut written = 0u64;
            let bar = crate::progress::bytes(head.size, "saving");
            while let Some(data) = bytes.next().await? {
                hasher.update(&data);
                sink.write_all(&data)
                    .context("cannot write the attachment")?;
                written += data.len() as u64;
                bar.set_position(written);
            }
            drop(bar);
            sink.flush()?;
            drop(sink);
            let actual = hex(hasher.finalize().as_bytes());
            if written != head.size || actual != head.hash {
                let _ = std::fs::remove_file(&partial);
                bail!(
                    "the download does not match the attachment ({written} of {} bytes, blake3 {actual} instead of {}); nothing was saved, try again",
                    head.size,
                    head.hash
                );
            }
            if !to_stdout {
                std::fs::File::open(&partial)?.sync_all()?;
                std::fs::rename(&partial, &output).with_context(|| {
                    format!(
                        "cannot rename {} to {}",
                        partial.display(),
                        output.display()
                    )
                })?;
                eprintln!(
                    "saved {} ({written} bytes, blake3 verified)",
                    output.display()
                );
            }
        }
        AttachmentCommand::Rm {
            table,
            sys_id,
            attachment,
        } => {
            let removed = client(connection)
                .await?
                .remove_attachment(&table, &sys_id, &attachment)
                .await?;
            println!("{}", removed.sys_id);
            eprintln!("removed {} from {table}/{sys_id}", removed.file_name);
        }
    }
    Ok(())
}

fn guess_content_type(file_name: &str) -> &'static str {
    match crate::attachment::extension(file_name).as_deref() {
        Some("txt" | "log") => "text/plain",
        Some("csv") => "text/csv",
        Some("html" | "htm") => "text/html",
        Some("json") => "application/json",
        Some("xml") => "application/xml",
        Some("pdf") => "application/pdf",
        Some("zip") => "application/zip",
        Some("gz") => "application/gzip",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        _ => "application/octet-stream",
    }
}
