//! `procsync attachment add|list|get|rm`: files in and out of records
//! through the admin API, streamed in chunks so a file of any size never
//! sits in memory. `add` hashes the file first, so content the instance
//! already holds is not sent again and an interrupted upload resumes.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use super::{Connection, client};
use crate::attachment::CHUNK_BYTES;
use crate::ids::hex;
use crate::transport::client::AdminClient;

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
            let (hash, held) = upload_file(&mut client, &file).await?;
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
            while let Some(data) = bytes.next().await? {
                hasher.update(&data);
                sink.write_all(&data)
                    .context("cannot write the attachment")?;
                written += data.len() as u64;
            }
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

/// Uploads the content of `file` unless the instance already holds it
/// (then `true`), resuming an interrupted upload; returns its hash.
pub async fn upload_file(client: &mut AdminClient, file: &Path) -> Result<(String, bool)> {
    let (hash, size) = hash_file(file).await?;
    let (received, complete) = client.begin_upload(&hash, size).await?;
    if complete {
        return Ok((hash, true));
    }
    if received > 0 {
        eprintln!("resuming the upload at byte {received} of {size}");
    }
    let (pieces, stream) = tokio::sync::mpsc::channel(4);
    let reader = read_pieces(file.to_path_buf(), received, pieces);
    let (read, uploaded) = tokio::join!(reader, client.upload_content(&hash, size, stream));
    read?;
    if !uploaded? {
        bail!(
            "the instance did not finish storing {}; run the command again to resume",
            file.display()
        );
    }
    Ok((hash, false))
}

/// blake3 and size of a file, read once in chunks.
async fn hash_file(path: &Path) -> Result<(String, u64)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut hasher = blake3::Hasher::new();
        let mut buffer = vec![0u8; CHUNK_BYTES];
        let mut size = 0u64;
        loop {
            let n = file
                .read(&mut buffer)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            size += n as u64;
        }
        Ok((hex(hasher.finalize().as_bytes()), size))
    })
    .await?
}

/// Reads the file from `offset` in whole chunks into `pieces`.
async fn read_pieces(
    path: PathBuf,
    offset: u64,
    pieces: tokio::sync::mpsc::Sender<(u64, bytes::Bytes)>,
) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.seek(SeekFrom::Start(offset))?;
        let mut position = offset;
        loop {
            let mut buffer = vec![0u8; CHUNK_BYTES];
            let mut filled = 0;
            while filled < CHUNK_BYTES {
                let n = file.read(&mut buffer[filled..])?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                return Ok(());
            }
            buffer.truncate(filled);
            if pieces.blocking_send((position, buffer.into())).is_err() {
                // The upload ended early; its error says why.
                return Ok(());
            }
            position += filled as u64;
        }
    })
    .await?
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
