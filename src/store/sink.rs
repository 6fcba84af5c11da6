//! Writing a content that arrives in chunks (an admin upload, a fetch from
//! a peer) into the store: each chunk checked as it comes and handed to the
//! store's writer at once (a few in flight, committed together), the
//! whole checked against the claimed size and hash before the content is
//! marked complete. Bytes that fail a check are discarded, never kept.
//! A sink opened on a partly stored content resumes after its last stored
//! chunk. Memory stays at a few chunks whatever the file size.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{ContentInfo, Store, StoreError};
use crate::attachment::Verifier;

/// Chunks handed to the store and not yet committed, at most. The store's
/// writer commits whatever is queued together, so writing overlaps with
/// receiving; this bound (with the transaction being built) is the memory a
/// transfer takes, whatever the file size.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Every this many chunks a commit is durable (fsync'd); those between may
/// skip the fsync and become durable with the next one. A crash loses at
/// most this many chunks (~8 MiB), which the resumed transfer sends again.
const CHUNKS_PER_FSYNC: u32 = 8;

type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, StoreError>> + Send>>;

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
    /// Chunk writes queued to the store, oldest first.
    in_flight: VecDeque<Pending>,
    /// Time spent waiting for the store (the rest is waiting for bytes).
    store_wait: std::time::Duration,
    /// Chunks written since the last durable commit.
    unsynced: u32,
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
        .map_err(StoreError::from)??;
        Ok(Some(ContentSink {
            store,
            content,
            verifier,
            in_flight: VecDeque::with_capacity(CHUNKS_IN_FLIGHT),
            store_wait: std::time::Duration::ZERO,
            unsynced: 0,
        }))
    }

    /// Time spent waiting for the store so far.
    pub fn store_wait(&self) -> std::time::Duration {
        self.store_wait
    }

    /// Bytes accepted so far: where the next chunk starts.
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
        while self.in_flight.len() >= CHUNKS_IN_FLIGHT {
            self.wait_oldest().await?;
        }
        self.unsynced += 1;
        let durable = self.unsynced >= CHUNKS_PER_FSYNC;
        if durable {
            self.unsynced = 0;
        }
        let write = self
            .store
            .append_chunks(self.content.id, offset, vec![data], durable);
        self.in_flight.push_back(Box::pin(write));
        Ok(())
    }

    /// Makes what arrived so far durable, to be resumed later; returns the
    /// bytes stored.
    pub async fn pause(mut self) -> Result<u64, StoreError> {
        self.wait_all().await?;
        let no_chunks: Vec<bytes::Bytes> = Vec::new();
        self.store
            .append_chunks(self.content.id, self.verifier.received(), no_chunks, true)
            .await
    }

    /// Checks the whole once every chunk is in and marks it complete
    /// (durably, with every chunk before it).
    pub async fn finish(mut self) -> Result<ContentInfo, SinkError> {
        self.wait_all().await?;
        if let Err(problem) = self.verifier.finish() {
            self.discard().await;
            return Err(SinkError::Refused(problem));
        }
        Ok(self.store.complete_content(self.content.id).await?)
    }

    async fn wait_oldest(&mut self) -> Result<(), StoreError> {
        if let Some(write) = self.in_flight.pop_front() {
            let started = std::time::Instant::now();
            let written = write.await;
            self.store_wait += started.elapsed();
            written?;
        }
        Ok(())
    }

    async fn wait_all(&mut self) -> Result<(), StoreError> {
        while !self.in_flight.is_empty() {
            self.wait_oldest().await?;
        }
        Ok(())
    }

    async fn discard(&mut self) {
        while let Some(write) = self.in_flight.pop_front() {
            let _ = write.await;
        }
        if let Err(e) = self.store.discard_content(self.content.id).await {
            tracing::warn!(target: "attachments", hash = %self.content.hash, error = %e, "Could not discard a refused content; it stays partial and is started over next time.");
        }
    }
}
