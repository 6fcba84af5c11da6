//! Uploading a file's content through the admin client: hashed once,
//! resumed after the bytes the instance already holds, read in whole chunks
//! while they stream. Used by `procsync attachment add` and the benchmark.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::client::AdminClient;
use crate::attachment::CHUNK_BYTES;
use crate::ids::hex;

/// Hears how an upload goes (a progress bar, say). Every method does
/// nothing unless given.
pub trait UploadWatch: Send + Sync {
    /// Hashing starts over a file of `size` bytes.
    fn hashing(&self, _size: u64) {}
    /// `bytes` more of the file were read and hashed, or read and sent.
    fn advanced(&self, _bytes: u64) {}
    /// Sending starts at byte `from` of `size` (after the bytes the
    /// instance already holds; `from` > 0 is a resumed upload).
    fn sending(&self, _from: u64, _size: u64) {}
}

/// Hears nothing.
impl UploadWatch for () {}

/// Uploads the content of `file` unless the instance already holds it
/// (then `true`), resuming an interrupted upload; `watch` hears how it
/// goes. Returns its hash.
pub async fn upload_file(
    client: &mut AdminClient,
    file: &Path,
    watch: Arc<dyn UploadWatch>,
) -> Result<(String, bool)> {
    let (hash, size) = hash_file(file, watch.clone()).await?;
    let (received, complete) = client.begin_upload(&hash, size).await?;
    if complete {
        return Ok((hash, true));
    }
    watch.sending(received, size);
    let (pieces, stream) = tokio::sync::mpsc::channel(4);
    let reader = read_pieces(file.to_path_buf(), received, pieces, watch);
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
async fn hash_file(path: &Path, watch: Arc<dyn UploadWatch>) -> Result<(String, u64)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if let Ok(meta) = file.metadata() {
            watch.hashing(meta.len());
        }
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
            watch.advanced(n as u64);
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
    watch: Arc<dyn UploadWatch>,
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
            watch.advanced(filled as u64);
        }
    })
    .await?
}
