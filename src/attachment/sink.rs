//! Writing a content that arrives in chunks (an admin upload, a fetch from
//! a peer) into the store: each chunk checked as it comes, chunks committed
//! a batch at a time with one batch being written while the next arrives,
//! the whole checked against the claimed size and hash before the content
//! is marked complete. Bytes that fail a check are discarded, never kept.
//! A sink opened on a partly stored content resumes after its last stored
//! chunk. Memory stays at two batches whatever the file size.

use std::sync::Arc;

use super::Verifier;
use crate::store::{ContentInfo, Store, StoreError};

/// Chunks written per commit: ~8 MiB, enough to keep the pipe full without
/// stalling it on one long fsync (STACK.md pitfall 7).
const CHUNKS_PER_COMMIT: usize = 8;

/// Why a content could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The bytes are not what was claimed; nothing of them is kept.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A content being stored.
pub struct ContentSink {
    store: Arc<Store>,
    content: ContentInfo,
    verifier: Verifier,
    batch: Vec<bytes::Bytes>,
    batch_offset: u64,
    writing: Option<tokio::task::JoinHandle<Result<u64, StoreError>>>,
}

impl ContentSink {
    /// Opens the content `hash` of `size` bytes: `Ok(None)` when it is
    /// already stored complete, else a sink that continues where the stored
    /// bytes end (see `received`).
    pub async fn open(
        store: Arc<Store>,
        hash: &str,
        size: u64,
    ) -> Result<Option<ContentSink>, StoreError> {
        let content = store.begin_content(hash.to_string(), size).await?;
        if content.complete {
            return Ok(None);
        }
        // Chunks stored earlier were checked then; hash them again so the
        // whole can be checked at the end.
        let reader = store.clone();
        let (id, received) = (content.id, content.received);
        let hash_owned = hash.to_string();
        let verifier = tokio::task::spawn_blocking(move || {
            let mut verifier = Verifier::new(size, &hash_owned);
            reader.read_stored(id, received, |data| verifier.resume(data))?;
            Ok::<_, StoreError>(verifier)
        })
        .await
        .map_err(|e| StoreError::Storage(e.to_string()))??;
        Ok(Some(ContentSink {
            store,
            batch_offset: content.received,
            content,
            verifier,
            batch: Vec::with_capacity(CHUNKS_PER_COMMIT),
            writing: None,
        }))
    }

    /// Bytes stored or accepted so far: where the next chunk starts.
    pub fn received(&self) -> u64 {
        self.verifier.received()
    }

    /// Accepts the chunk at `offset`, whose blake3 is `chunk_hash`.
    pub async fn push(
        &mut self,
        offset: u64,
        data: bytes::Bytes,
        chunk_hash: &[u8],
    ) -> Result<(), SinkError> {
        if let Err(problem) = self.verifier.push(offset, &data, chunk_hash) {
            self.discard().await;
            return Err(SinkError::Refused(problem));
        }
        self.batch.push(data);
        if self.batch.len() >= CHUNKS_PER_COMMIT {
            self.wait_for_write().await?;
            let chunks = std::mem::replace(&mut self.batch, Vec::with_capacity(CHUNKS_PER_COMMIT));
            let (store, id, offset) = (self.store.clone(), self.content.id, self.batch_offset);
            self.writing = Some(tokio::spawn(async move {
                store.append_chunks(id, offset, chunks).await
            }));
            self.batch_offset = self.verifier.received();
        }
        Ok(())
    }

    /// Stores what arrived so far, to be resumed later; returns the bytes
    /// stored.
    pub async fn pause(mut self) -> Result<u64, StoreError> {
        self.wait_for_write().await?;
        if !self.batch.is_empty() {
            let chunks = std::mem::take(&mut self.batch);
            self.store
                .append_chunks(self.content.id, self.batch_offset, chunks)
                .await?;
        }
        Ok(self.verifier.received())
    }

    /// Stores what is left, checks the whole and marks it complete.
    pub async fn finish(mut self) -> Result<ContentInfo, SinkError> {
        self.wait_for_write().await?;
        if !self.batch.is_empty() {
            let chunks = std::mem::take(&mut self.batch);
            self.store
                .append_chunks(self.content.id, self.batch_offset, chunks)
                .await?;
        }
        if let Err(problem) = self.verifier.finish() {
            self.discard().await;
            return Err(SinkError::Refused(problem));
        }
        Ok(self.store.complete_content(self.content.id).await?)
    }

    async fn wait_for_write(&mut self) -> Result<(), StoreError> {
        if let Some(write) = self.writing.take() {
            write
                .await
                .map_err(|e| StoreError::Storage(e.to_string()))??;
        }
        Ok(())
    }

    async fn discard(&mut self) {
        let _ = self.wait_for_write().await;
        if let Err(e) = self.store.discard_content(self.content.id).await {
            tracing::warn!(target: "attachments", hash = %self.content.hash, error = %e, "Could not discard a refused content; it stays partial and is started over next time.");
        }
    }
}
