//! Fetching an attachment content from the peer that sent an item, into
//! the store through a `ContentSink`: resumed after the chunks already
//! stored (whichever side restarted), every chunk and the whole checked.

use std::sync::Arc;

use tokio::sync::{Notify, watch};

use crate::attachment::Grant;
use crate::config::sync::Dial;
use crate::runtime::{ReverseStreams, SyncRuntime, TransferBoard};
use crate::store::sink::{ContentSink, SinkError};
use crate::store::{Store, StoreError};
use crate::transport::peer::{FetchStream, PeerClient};
use crate::transport::protocol::CallError;
use crate::worker::{Step, Worker, stopped};

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

/// Fetches one content into the store, complete and verified, as a
/// worker: the first step opens the store's sink and the peer's stream
/// (resuming after what is stored), each next step stores one chunk, and
/// the last checks the whole. Its outcome: `Ok` once the content is held,
/// or why not (`CallError::retry` says whether to try again). Stopped
/// mid-way, it keeps the chunks that arrived for the next start to resume.
pub struct Fetch {
    store: Arc<Store>,
    transfers: TransferBoard,
    /// Where a peer we never dial is asked to deliver instead.
    reverse: ReverseStreams,
    wanted: Wanted,
    stop: watch::Receiver<bool>,
    /// Told when the outcome is known (the inbound processor).
    done: Arc<Notify>,
    /// Where the outcome goes before `done` is told.
    outcomes: Outcomes,
    started: std::time::Instant,
    receiving: Option<(ContentSink, FetchStream)>,
}

/// Outcomes of finished fetches, by hash, for the processor to collect.
pub type Outcomes = Arc<std::sync::Mutex<Vec<(String, Result<(), CallError>)>>>;

impl Fetch {
    pub fn new(
        store: Arc<Store>,
        sync: &SyncRuntime,
        wanted: Wanted,
        workers: &crate::worker::Workers,
        outcomes: Outcomes,
    ) -> Fetch {
        Fetch {
            store,
            transfers: sync.transfers.clone(),
            reverse: sync.reverse.clone(),
            done: sync.wake_inbound.clone(),
            wanted,
            stop: workers.stop_signal(),
            outcomes,
            started: std::time::Instant::now(),
            receiving: None,
        }
    }

    /// Opens the sink and the stream; `None` when the content is already
    /// held. A peer we never dial is asked over the stream it opened to
    /// deliver the chunks instead (`Deliver`).
    async fn open(
        store: &Arc<Store>,
        reverse: &ReverseStreams,
        wanted: &Wanted,
    ) -> Result<Option<(ContentSink, FetchStream)>, CallError> {
        let Some(sink) = ContentSink::open(store.clone(), &wanted.hash, wanted.size)
            .await
            .map_err(store_failure)?
        else {
            return Ok(None);
        };
        let start = sink.received();
        if start > 0 {
            tracing::info!(target: "attachments", hash = %wanted.hash, resumed_at = start, size = wanted.size, "Resuming an attachment transfer.");
        }
        let remote = &wanted.remote_system;
        let found = store
            .remote_system_async(remote)
            .await
            .map_err(CallError::Store)?;
        let never_dialled = found.is_some_and(|r| r.spec.dial == Dial::Never);
        let stream = if never_dialled {
            reverse
                .ask_delivery(remote, wanted.grant.clone(), start)
                .await?
        } else {
            let target = crate::transport::peer::target_of(store.clone(), remote).await?;
            let mut client = PeerClient::connect(&target).await?;
            client.fetch(wanted.grant.clone(), start).await?
        };
        Ok(Some((sink, stream)))
    }

    /// Takes the next chunk: `Ok(true)` once the peer says the content is
    /// complete and the whole is checked.
    async fn receive(&mut self) -> Result<bool, CallError> {
        let Some((sink, stream)) = &mut self.receiving else {
            return Ok(true);
        };
        let next = tokio::select! {
            next = stream.next() => next,
            () = stopped(&mut self.stop) => Ok(None),
        };
        match next {
            Ok(Some(chunk)) if chunk.complete => {}
            Ok(Some(chunk)) => {
                let n_bytes = chunk.data.len() as u64;
                sink.push(chunk.offset, chunk.data, &chunk.chunk_hash)
                    .await
                    .map_err(sink_failure)?;
                self.transfers.add(&self.wanted.remote_system, 0, n_bytes);
                return Ok(false);
            }
            // Ended early (or stopped): keep what arrived.
            Ok(None) => {
                let (sink, _) = self.receiving.take().expect("receiving");
                let stored = sink.pause().await.map_err(store_failure)?;
                return Err(CallError::Interrupted {
                    stored,
                    size: self.wanted.size,
                });
            }
            Err(e) => {
                let (sink, _) = self.receiving.take().expect("receiving");
                let _ = sink.pause().await;
                return Err(e);
            }
        }
        let (sink, _) = self.receiving.take().expect("receiving");
        let store_wait_ms = crate::ids::millis(sink.store_wait());
        sink.finish().await.map_err(sink_failure)?;
        let elapsed_ms = crate::ids::millis(self.started.elapsed());
        tracing::info!(target: "attachments", hash = %self.wanted.hash, size = self.wanted.size, remote_system = %self.wanted.remote_system, elapsed_ms, store_wait_ms, "An attachment content arrived and matches its hash.");
        Ok(true)
    }

    fn done(&self, outcome: Result<(), CallError>) -> Step<()> {
        self.outcomes
            .lock()
            .expect("fetch outcomes")
            .push((self.wanted.hash.clone(), outcome));
        self.done.notify_one();
        Step::Done(())
    }
}

impl Worker for Fetch {
    type Output = ();

    fn name(&self) -> String {
        format!(
            "attachment fetch of {} from `{}`",
            self.wanted.hash, self.wanted.remote_system
        )
    }

    async fn step(&mut self) -> Step<()> {
        if self.receiving.is_none() {
            if *self.stop.borrow() {
                return Step::Done(());
            }
            match Fetch::open(&self.store, &self.reverse, &self.wanted).await {
                Ok(None) => return self.done(Ok(())),
                Ok(Some(receiving)) => self.receiving = Some(receiving),
                Err(e) => return self.done(Err(e)),
            }
            return Step::Busy;
        }
        match self.receive().await {
            Ok(false) => Step::Busy,
            Ok(true) => self.done(Ok(())),
            Err(e) => self.done(Err(e)),
        }
    }
}
