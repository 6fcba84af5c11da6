//! Fetching an attachment content from the peer that sent an item, into
//! the store through a `ContentSink`: resumed after the chunks already
//! stored (whichever side restarted), every chunk and the whole checked.

use std::sync::Arc;

use crate::attachment::Grant;
use crate::runtime::TransferBoard;
use crate::store::sink::{ContentSink, SinkError};
use crate::store::{Store, StoreError};
use crate::transport::peer::PeerClient;
use crate::transport::protocol::CallError;

/// One content to fetch.
#[derive(Clone, Debug)]
pub struct Wanted {
    pub remote_system: String,
    pub hash: String,
    pub size: u64,
    pub grant: Grant,
}

fn store_failure(error: StoreError) -> CallError {
    match error {
        // Another transfer or upload of the same content is under way.
        StoreError::ChunkOutOfPlace { hash, .. } => CallError::ContentBusy { hash },
        other => CallError::Store(other),
    }
}

fn sink_failure(error: SinkError) -> CallError {
    match error {
        SinkError::Refused(problem) => CallError::BadContent { problem },
        SinkError::Store(e) => store_failure(e),
    }
}

/// Fetches `wanted` into the store, complete and verified, or says why not.
/// `Permanent` means the peer or its data is at fault (key refused, bytes
/// that do not match); `Transient` is worth trying again.
pub async fn fetch(
    store: Arc<Store>,
    transfers: TransferBoard,
    wanted: Wanted,
) -> Result<(), CallError> {
    let Some(mut sink) = ContentSink::open(store.clone(), &wanted.hash, wanted.size)
        .await
        .map_err(store_failure)?
    else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    let start = sink.received();
    if start > 0 {
        tracing::info!(target: "attachments", hash = %wanted.hash, resumed_at = start, size = wanted.size, "Resuming an attachment transfer.");
    }
    let target = crate::transport::peer::target_of(store, &wanted.remote_system).await?;
    let mut client = PeerClient::connect(&target).await?;
    let mut stream = client.fetch(wanted.grant.clone(), start).await?;
    let mut complete = false;
    while let Some(chunk) = stream.next().await? {
        if chunk.complete {
            complete = true;
            break;
        }
        let n_bytes = chunk.data.len() as u64;
        sink.push(chunk.offset, chunk.data, &chunk.chunk_hash)
            .await
            .map_err(sink_failure)?;
        transfers.add(&wanted.remote_system, 0, n_bytes);
    }
    if !complete {
        let stored = sink.pause().await.map_err(store_failure)?;
        return Err(CallError::Interrupted {
            stored,
            size: wanted.size,
        });
    }
    let store_wait_ms = crate::ids::millis(sink.store_wait());
    sink.finish().await.map_err(sink_failure)?;
    let elapsed_ms = crate::ids::millis(started.elapsed());
    tracing::info!(target: "attachments", hash = %wanted.hash, size = wanted.size, remote_system = %wanted.remote_system, elapsed_ms, store_wait_ms, "An attachment content arrived and matches its hash.");
    Ok(())
}
