//! The sending side of peer sync: one dispatcher per remote system streams
//! its Ready outbound items in sequence order over one long-lived stream,
//! many in flight, and marks them Processed only when the peer acknowledges
//! a durable commit. Failures retry on timers with capped exponential
//! backoff and jitter; exhausted retries put the remote's outbound state in
//! Error and run its error handling, while probing goes on; credential and
//! pinning failures wait for `procsync remote validate`. Heartbeats tell Up
//! from Slow from Down.

mod dispatcher;
pub mod load;
pub mod reconcile;
pub mod session;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::ids::{format_time, now_millis};
use crate::runtime::{Health, HealthBoard, RemoteHealth};
use crate::store::{RemoteState, Store, StoreError};
use crate::transport::protocol::{CallError, PeerTarget, WireItem};
use crate::worker::{Step, Worker, Workers};
use dispatcher::Dispatcher;

/// Items in flight on one stream at most. A refill waits for the commit
/// that marks its items Running, behind whatever else the writer does (an
/// edge's batch writes): half a window per wait must cover the peer's
/// apply rate meanwhile (4,096 sent 9 % more than 1,024 in `bench sync`).
const WINDOW: usize = 4096;

/// The commit of marking acknowledged items Processed.
type Marking = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send>>;
/// Acknowledged items marked Processed together.
const ACK_BATCH: usize = 256;
/// Longest wait for the next acknowledgment while items are in flight (at
/// least three heartbeat intervals); missing it fails the attempt.
const ACK_DEADLINE: Duration = Duration::from_secs(30);

/// First wait before probing a peer that could not be reached (a
/// connection and TLS handshake, counting no attempt); doubled per probe
/// (`property::backoff`) up to `PROBE_MAX`, so a healed link is used within
/// seconds whatever the retry backoff.
const PROBE_FIRST: Duration = Duration::from_secs(1);
const PROBE_MAX: Duration = Duration::from_secs(5);

/// Shared by every dispatcher.
#[derive(Clone)]
pub struct Outbound {
    pub store: Arc<Store>,
    pub health: HealthBoard,
    /// Woken when items are queued or a remote's state changes.
    pub wake: Arc<tokio::sync::Notify>,
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Streams opened by peers this instance never dials.
    pub reverse: crate::runtime::ReverseStreams,
    /// Where each link's bytes are counted.
    pub wire: crate::runtime::WireBoard,
    /// Each peer's sending allowance.
    pub bandwidth: crate::runtime::Bandwidth,
}

/// Shows a retry state on a remote's health entry.
fn show_retry(health: &mut RemoteHealth, retry: &crate::property::RetryState) {
    health.attempts = retry.attempts;
    health.last_error = retry.last_error.clone();
    health.next_attempt_on = retry.next_attempt_on.map(format_time);
}

/// How one session ended.
#[derive(Debug, PartialEq)]
pub enum SessionEnd {
    /// The remote is no longer Active (disabled, removed, or in Error).
    NotActive,
    Failed(CallError),
    Stopped,
}

/// Keeps one dispatcher per remote system running: starts one for each new
/// remote system and stops the ones whose remote system is gone.
pub struct Supervisor {
    out: Outbound,
    workers: Workers,
    running: HashMap<String, tokio::task::JoinHandle<Option<()>>>,
}

/// How often the remote systems are listed again without a wake-up.
const SUPERVISE_EVERY: Duration = Duration::from_secs(2);

impl Supervisor {
    /// Dispatchers are started on `workers`, whose stop signal `out` holds.
    pub fn new(out: Outbound, workers: Workers) -> Supervisor {
        Supervisor {
            out,
            workers,
            running: HashMap::new(),
        }
    }
}

impl Worker for Supervisor {
    type Output = ();

    fn name(&self) -> String {
        "outbound supervisor".to_string()
    }

    async fn step(&mut self) -> Step<()> {
        if self.workers.stopping() {
            return Step::Done(());
        }
        let store = self.out.store.clone();
        let names: BTreeSet<String> =
            match tokio::task::spawn_blocking(move || store.remote_systems()).await {
                Ok(Ok(remotes)) => remotes.into_iter().map(|r| r.spec.name).collect(),
                _ => BTreeSet::new(),
            };
        let out = &self.out;
        self.workers
            .keep_one_per_name(&mut self.running, names, &out.wake, |name| {
                Dispatcher::new(out.clone(), name.to_string())
            });
        Step::Idle(Some(tokio::time::Instant::now() + SUPERVISE_EVERY))
    }
}

impl Outbound {
    /// Where sending to `remote` stands, kept in the store (so a restart
    /// resumes it) and shown on the health board; a failure also shows the
    /// peer Down.
    async fn record_retry(&self, remote: &str, retry: &crate::property::RetryState) {
        self.health.update(remote, |h| {
            show_retry(h, retry);
            if retry.last_error.is_some() {
                h.health = Health::Down;
            }
        });
        let _ = self
            .store
            .set_remote_retry(remote.to_string(), retry.clone())
            .await;
    }

    /// The retry policy now in the properties (the defaults if the store
    /// cannot say).
    fn policy(&self) -> crate::property::RetryPolicy {
        self.store
            .retry_policy()
            .unwrap_or(crate::property::RetryPolicy {
                times: 3,
                interval: Duration::from_secs(60),
                max_interval: Duration::from_secs(900),
            })
    }

    /// `remote` as the store has it now (`None` once it is removed).
    async fn remote(&self, remote: &str) -> Option<crate::store::RemoteSystemStatus> {
        self.store.remote_system_async(remote).await.ok()?
    }

    async fn target(&self, remote: &str) -> Result<PeerTarget, CallError> {
        let mut target = crate::transport::peer::target_of(self.store.clone(), remote).await?;
        target.link.counts = Some(self.wire.counts(remote));
        Ok(target)
    }

    /// The most bytes per second sent to `remote` (0: no limit).
    async fn sending_rate(&self, remote: &str) -> u64 {
        crate::runtime::Bandwidth::rate_of(&self.store, remote).await
    }

    /// The peer answered: retries are over, and a remote in Error from
    /// transient failures is Active again.
    async fn on_confirmed(&self, remote: &str, attempts: &mut u32) {
        if *attempts > 0 {
            tracing::info!(target: "outbound_queue", remote_system = %remote, attempts = *attempts, "The peer answers again.");
        }
        let in_error = matches!(
            self.remote(remote).await,
            Some(r) if r.outbound_state == RemoteState::Error
        );
        if in_error {
            let _ = self
                .store
                .set_remote_states(remote.to_string(), Some(RemoteState::Active), None)
                .await;
            tracing::info!(target: "outbound_queue", remote_system = %remote, "The remote system's outbound state is Active again.");
        }
        if *attempts > 0 || in_error {
            self.record_retry(remote, &Default::default()).await;
        } else {
            self.health
                .update(remote, |h| show_retry(h, &Default::default()));
        }
        *attempts = 0;
    }

    /// Queues the marking of `acked` Processed, if there are any; the
    /// future is of its commit.
    fn flush_acks(&self, remote: &str, acked: &mut Vec<u64>) -> Option<Marking> {
        if acked.is_empty() {
            return None;
        }
        let sequences = std::mem::take(acked);
        Some(Box::pin(
            self.store
                .mark_outbound_processed(remote.to_string(), sequences),
        ))
    }

    async fn next_items(
        &self,
        remote: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, WireItem)>, StoreError> {
        let store = self.store.clone();
        let remote = remote.to_string();
        tokio::task::spawn_blocking(move || {
            let items = store.ready_outbound(&remote, after, limit)?;
            let mut out = Vec::with_capacity(items.len());
            // Keys are made as items leave, so they expire a fixed time
            // after sending, however long an item waited.
            let grant_maker = if items.iter().any(|(i, _)| !i.attachment_hashes.is_empty()) {
                let ttl = store.number("attachment.key_ttl")?;
                Some((
                    store.attachment_secret()?,
                    crate::ids::now_millis() + ttl * 1000,
                ))
            } else {
                None
            };
            for (item, remote_correlation_id) in items {
                let attachment_grants = match &grant_maker {
                    Some((secret, expires_at)) => item
                        .attachment_hashes
                        .iter()
                        .map(|hash| {
                            crate::attachment::Grant::issue(secret, &remote, hash, *expires_at)
                        })
                        .collect(),
                    None => Vec::new(),
                };
                out.push((
                    item.id,
                    WireItem {
                        sequence: item.sequence,
                        process_event: item.process_event,
                        operation: item.operation,
                        table: item.table,
                        local_correlation_id: item.local_correlation_id,
                        remote_correlation_id,
                        domain: item.domain.to_string(),
                        payload: item.payload,
                        created_on: format_time(item.created_on),
                        attachment_grants,
                        bases: item.bases,
                        changed_on: item.created_on,
                        settles: item.settles,
                    },
                ));
            }
            Ok::<_, StoreError>(out)
        })
        .await?
    }

    /// The remote system's error subflow: its configured steps, or a log
    /// event when it has none.
    async fn run_error_handling(&self, remote: &str, reason: &str, attempts: u32) {
        let store = self.store.clone();
        let name = remote.to_string();
        let found = tokio::task::spawn_blocking(move || {
            let steps = store
                .remote_systems()?
                .into_iter()
                .find(|r| r.spec.name == name)
                .map(|r| r.spec.error_subflow)
                .unwrap_or_default();
            Ok::<_, crate::store::StoreError>((steps, store.instance()?.name))
        })
        .await;
        let (steps, instance) = match found {
            Ok(Ok(found)) => found,
            _ => (Vec::new(), String::new()),
        };
        crate::subflow::run_for_remote(
            &steps,
            "remote_system_error",
            &instance,
            remote,
            reason,
            attempts,
        )
        .await;
    }
}

fn jitter_seed(remote: &str, attempt: u32) -> u64 {
    let hash = blake3::hash(format!("{remote}/{attempt}/{}", now_millis()).as_bytes());
    u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
}
