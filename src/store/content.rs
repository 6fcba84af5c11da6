//! Stored contents: attachment bytes kept once per blake3 hash, in chunks
//! just under 1 MiB, with a count of the attachments that use each. A
//! content arrives in order, chunk after chunk, so an interrupted upload or
//! transfer resumes after the last committed chunk. Callers verify
//! the bytes (`attachment::Verifier`); this module only keeps them.

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::counters::Counters;
use super::tables::*;
use super::{Store, StoreError};
use crate::attachment::CHUNK_BYTES;
use crate::ids::{Millis, now_millis};

/// One stored content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentInfo {
    pub id: u64,
    pub hash: String,
    pub size: u64,
    /// Bytes durably stored so far; equals `size` once complete.
    pub received: u64,
    pub complete: bool,
    /// Attachments using this content; at zero the content is deleted.
    pub refs: u64,
    pub created_on: Millis,
}

impl ContentInfo {
    pub fn chunk_count(&self) -> u32 {
        crate::attachment::chunk_count(self.size)
    }
}

impl Store {
    /// The content stored (or arriving) under `hash`.
    pub fn content(&self, hash: &str) -> Result<Option<ContentInfo>, StoreError> {
        let txn = self.db.begin_read()?;
        let by_hash = txn.open_table(CONTENT_BY_HASH)?;
        let Some(id) = by_hash.get(hash)?.map(|v| v.value()) else {
            return Ok(None);
        };
        let contents = txn.open_table(CONTENTS)?;
        match contents.get(id)? {
            Some(value) => Ok(Some(decode(value.value())?)),
            None => Err(StoreError::Corrupt(format!(
                "content {hash} is indexed but not stored"
            ))),
        }
    }

    /// Chunk `index` of content `id`.
    pub fn read_chunk(&self, id: u64, index: u32) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let chunks = txn.open_table(CHUNKS)?;
        Ok(chunks.get((id, index))?.map(|v| v.value().to_vec()))
    }

    /// Calls `each` with the stored chunks of content `id` covering its first
    /// `bytes` bytes, in order, from one read transaction.
    pub fn read_stored(
        &self,
        id: u64,
        bytes: u64,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), StoreError> {
        let count = crate::attachment::chunk_count(bytes);
        if count == 0 {
            return Ok(());
        }
        let txn = self.db.begin_read()?;
        let chunks = txn.open_table(CHUNKS)?;
        let mut expected = 0u32;
        for row in chunks.range((id, 0u32)..(id, count))? {
            let (key, value) = row?;
            if key.value().1 != expected {
                return Err(StoreError::Corrupt(format!(
                    "chunk {expected} of content {id} is missing"
                )));
            }
            each(value.value());
            expected += 1;
        }
        if expected != count {
            return Err(StoreError::Corrupt(format!(
                "chunk {expected} of content {id} is missing"
            )));
        }
        Ok(())
    }

    /// The content for `hash`: the stored one, the one still arriving (to
    /// resume), or a new empty one of `size` bytes. A partial content of
    /// another size is started over: the claimed size was wrong before.
    pub async fn begin_content(&self, hash: String, size: u64) -> Result<ContentInfo, StoreError> {
        self.writer
            .submit(move |txn| {
                if let Some(info) = content_in(txn, &hash)? {
                    if info.complete || info.size == size {
                        return Ok(info);
                    }
                    delete_content(txn, &info)?;
                }
                let mut counters = Counters::load(txn)?;
                let id = counters.next("content")?;
                counters.save();
                let info = ContentInfo {
                    id,
                    hash: hash.clone(),
                    size,
                    received: 0,
                    complete: size == 0,
                    refs: 0,
                    created_on: now_millis(),
                };
                txn.open_table(CONTENTS)?
                    .insert(id, encode(&info).as_slice())?;
                txn.open_table(CONTENT_BY_HASH)?.insert(hash.as_str(), id)?;
                Ok(info)
            })
            .await
    }

    /// Stores the next chunks of a partial content, starting at byte
    /// `offset`, which must be where it stands. Returns the bytes stored.
    /// Unless `durable`, the commit may skip its fsync: a crash may then
    /// lose these chunks (and `received` with them), to be sent again.
    /// The write is queued at once, in call order; the returned future
    /// says when it committed.
    pub fn append_chunks<C>(
        &self,
        id: u64,
        offset: u64,
        chunks: Vec<C>,
        durable: bool,
    ) -> impl std::future::Future<Output = Result<u64, StoreError>> + Send + 'static
    where
        C: AsRef<[u8]> + Send + 'static,
    {
        let durability = if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        };
        self.writer.enqueue(durability, move |txn| {
            let mut contents = txn.open_table(CONTENTS)?;
            let mut info: ContentInfo = match contents.get(id)? {
                Some(value) => decode(value.value())?,
                None => return Err(StoreError::ContentNotFound { id }),
            };
            if info.complete {
                return Ok(info.received);
            }
            if offset != info.received {
                return Err(StoreError::ChunkOutOfPlace {
                    hash: info.hash,
                    stored: info.received,
                    offset,
                });
            }
            let mut table = txn.open_table(CHUNKS)?;
            let mut received = info.received;
            for chunk in &chunks {
                let chunk = chunk.as_ref();
                let whole = received % CHUNK_BYTES as u64 == 0
                    && (chunk.len() == CHUNK_BYTES || received + chunk.len() as u64 == info.size);
                if chunk.is_empty() || !whole || received + chunk.len() as u64 > info.size {
                    return Err(StoreError::ChunkDoesNotFit {
                        hash: info.hash,
                        len: chunk.len(),
                        offset: received,
                        size: info.size,
                    });
                }
                let index = crate::attachment::chunk_index(received);
                table.insert((id, index), chunk)?;
                received += chunk.len() as u64;
            }
            info.received = received;
            contents.insert(id, encode(&info).as_slice())?;
            Ok(received)
        })
    }

    /// Marks a fully stored content complete (its bytes verified by the
    /// caller); from now on it can be attached.
    pub async fn complete_content(&self, id: u64) -> Result<ContentInfo, StoreError> {
        self.writer
            .submit(move |txn| {
                let mut contents = txn.open_table(CONTENTS)?;
                let mut info: ContentInfo = match contents.get(id)? {
                    Some(value) => decode(value.value())?,
                    None => return Err(StoreError::ContentNotFound { id }),
                };
                if info.received != info.size {
                    return Err(StoreError::ContentIncomplete {
                        hash: info.hash,
                        received: info.received,
                        size: info.size,
                    });
                }
                info.complete = true;
                contents.insert(id, encode(&info).as_slice())?;
                Ok(info)
            })
            .await
    }

    /// Deletes a partial content whose bytes turned out wrong.
    pub async fn discard_content(&self, id: u64) -> Result<(), StoreError> {
        self.writer
            .submit(move |txn| {
                let info: ContentInfo = match txn.open_table(CONTENTS)?.get(id)? {
                    Some(value) => decode(value.value())?,
                    None => return Ok(()),
                };
                if !info.complete {
                    delete_content(txn, &info)?;
                }
                Ok(())
            })
            .await
    }
}

/// The content stored (or arriving) under `hash`, read in a write
/// transaction.
fn content_in(txn: &WriteTransaction, hash: &str) -> Result<Option<ContentInfo>, StoreError> {
    let Some(id) = txn
        .open_table(CONTENT_BY_HASH)?
        .get(hash)?
        .map(|v| v.value())
    else {
        return Ok(None);
    };
    match txn.open_table(CONTENTS)?.get(id)? {
        Some(value) => Ok(Some(decode(value.value())?)),
        None => Err(StoreError::Corrupt(format!(
            "content {hash} is indexed but not stored"
        ))),
    }
}

/// Why attaching `hash` is impossible right now, if it is.
pub(super) fn missing_content(
    txn: &WriteTransaction,
    hash: &str,
) -> Result<Option<String>, StoreError> {
    Ok(match content_in(txn, hash)? {
        None => Some(format!(
            "no content with hash {hash} is stored; upload it first"
        )),
        Some(info) if !info.complete => Some(format!(
            "content {hash} is still arriving; finish the upload first"
        )),
        Some(_) => None,
    })
}

/// The size of the complete content `hash`, if stored.
pub(super) fn stored_size(txn: &WriteTransaction, hash: &str) -> Result<Option<u64>, StoreError> {
    Ok(content_in(txn, hash)?
        .filter(|info| info.complete)
        .map(|info| info.size))
}

/// One more attachment uses `hash` (checked present by `missing_content`).
pub(super) fn add_ref(txn: &WriteTransaction, hash: &str) -> Result<(), StoreError> {
    update_refs(txn, hash, 1)
}

/// One attachment fewer uses `hash`; the last one deletes the content.
pub(super) fn release_ref(txn: &WriteTransaction, hash: &str) -> Result<(), StoreError> {
    update_refs(txn, hash, -1)
}

fn update_refs(txn: &WriteTransaction, hash: &str, delta: i64) -> Result<(), StoreError> {
    let Some(mut info) = content_in(txn, hash)? else {
        return Ok(());
    };
    info.refs = info.refs.saturating_add_signed(delta);
    if info.refs == 0 && delta < 0 {
        delete_content(txn, &info)
    } else {
        txn.open_table(CONTENTS)?
            .insert(info.id, encode(&info).as_slice())?;
        Ok(())
    }
}

/// Deletes a content: its chunks, its row, and its hash entry when that
/// still points at it.
pub(super) fn delete_content(txn: &WriteTransaction, info: &ContentInfo) -> Result<(), StoreError> {
    let mut chunks = txn.open_table(CHUNKS)?;
    for index in 0..info.chunk_count() {
        chunks.remove((info.id, index))?;
    }
    txn.open_table(CONTENTS)?.remove(info.id)?;
    let mut by_hash = txn.open_table(CONTENT_BY_HASH)?;
    if by_hash.get(info.hash.as_str())?.map(|v| v.value()) == Some(info.id) {
        by_hash.remove(info.hash.as_str())?;
    }
    Ok(())
}

impl Store {
    /// The key attachment grants are made with; never leaves the instance.
    pub fn attachment_secret(&self) -> Result<[u8; 32], StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let value = meta
            .get("attachment_secret")?
            .ok_or_else(|| StoreError::Corrupt("no attachment secret recorded".into()))?;
        let secret: Vec<u8> = decode(value.value())?;
        secret
            .try_into()
            .map_err(|_| StoreError::Corrupt("the attachment secret is not 32 bytes".into()))
    }
}
