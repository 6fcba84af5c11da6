//! Pulling: for each remote system that never dials this instance (an edge
//! behind NAT joined to a hub whose group says `dial = "never"`; the
//! remote's `pull = true` here), a puller keeps a `Pull` stream open to it
//! and takes the items it streams down exactly as the peer service takes
//! items streamed up: durably into the inbound queue, then acknowledged.
//! The supervisor keeps one puller per such remote, as workers.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{Receiver, Sender};
use tokio::time::Instant;

use super::{Caller, PeerError, PeerGate};
use crate::store::{ReceivedItem, RemoteState, Store, StoreError};
use crate::transport::peer::PeerClient;
use crate::transport::protocol::Delivery;
use crate::transport::reverse::{PullReply, Pulled};
use crate::worker::{Step, Worker, Workers, stopped};

/// Most items taken from a stream into one durable commit.
const MOST_PER_COMMIT: usize = 256;
/// How often the remote systems are listed again without a wake-up.
const SUPERVISE_EVERY: Duration = Duration::from_secs(2);
/// First and longest wait before opening a stream again.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

impl PeerGate {
    /// The remote system `remote` as a caller of ours, for items we pulled
    /// from it (we dialed it, pinning its certificate): its inbound API
    /// user gives the items their domain.
    async fn puller_caller(&self, remote: &str) -> Result<Caller, PeerError> {
        let store = self.store.clone();
        let name = remote.to_string();
        let (found, user) = tokio::task::spawn_blocking(move || {
            let remote = store
                .remote_systems()?
                .into_iter()
                .find(|r| r.spec.name == name);
            let users = store.users()?;
            let user = remote.as_ref().and_then(|r| {
                users
                    .into_iter()
                    .find(|u| u.name == r.spec.inbound_api_user)
            });
            Ok::<_, StoreError>((remote, user))
        })
        .await??;
        let (Some(remote), Some(user)) = (found, user) else {
            return Err(PeerError::Store(StoreError::RemoteNotFound {
                name: remote.to_string(),
            }));
        };
        let fingerprint = crate::config::sync::normalize_fingerprint(&remote.spec.fingerprint)
            .unwrap_or_default();
        Ok(Caller {
            name: remote.spec.name.clone(),
            remote,
            user,
            fingerprint,
            token: None,
        })
    }

    /// Queues items pulled from `remote` durably; returns the sequences to
    /// acknowledge.
    pub async fn receive_pulled(
        &self,
        remote: &str,
        items: Vec<ReceivedItem>,
    ) -> Result<Vec<u64>, PeerError> {
        let caller = self.puller_caller(remote).await?;
        self.check_inbound_active(&caller)?;
        // One batch at a time: a chain of its own.
        self.queue(&caller, items, &crate::store::Chain::default())
            .await
    }
}

/// Keeps one puller per remote system this instance pulls from.
pub struct PullSupervisor {
    store: Arc<Store>,
    gate: PeerGate,
    workers: Workers,
    running: HashMap<String, tokio::task::JoinHandle<Option<()>>>,
}

impl PullSupervisor {
    pub fn new(store: Arc<Store>, gate: PeerGate, workers: Workers) -> PullSupervisor {
        PullSupervisor {
            store,
            gate,
            workers,
            running: HashMap::new(),
        }
    }
}

impl Worker for PullSupervisor {
    type Output = ();

    fn name(&self) -> String {
        "pull supervisor".to_string()
    }

    async fn step(&mut self) -> Step<()> {
        if self.workers.stopping() {
            return Step::Done(());
        }
        let store = self.store.clone();
        let names: BTreeSet<String> =
            match tokio::task::spawn_blocking(move || store.remote_systems()).await {
                Ok(Ok(remotes)) => remotes
                    .into_iter()
                    .filter(|r| r.spec.pull)
                    .map(|r| r.spec.name)
                    .collect(),
                _ => BTreeSet::new(),
            };
        // A puller waits on its stream or its timer, not on wake-ups.
        let wake = Arc::new(tokio::sync::Notify::new());
        let (store, gate, stop) = (&self.store, &self.gate, self.workers.stop_signal());
        self.workers
            .keep_one_per_name(&mut self.running, names, &wake, |name| Puller {
                store: store.clone(),
                gate: gate.clone(),
                remote: name.to_string(),
                stop: stop.clone(),
                attempts: 0,
                stream: None,
            });
        Step::Idle(Some(Instant::now() + SUPERVISE_EVERY))
    }
}

/// Keeps a `Pull` stream open to one remote and queues what comes down.
struct Puller {
    store: Arc<Store>,
    gate: PeerGate,
    remote: String,
    stop: tokio::sync::watch::Receiver<bool>,
    /// Failed openings (or broken streams) in a row.
    attempts: u32,
    stream: Option<(Sender<PullReply>, Receiver<Pulled>)>,
}

impl Puller {
    fn again_later(&mut self, why: &str) -> Step<()> {
        self.stream = None;
        self.attempts += 1;
        let wait = crate::property::backoff(RETRY_FIRST, RETRY_MAX, self.attempts);
        if self.attempts == 1 || self.attempts.is_power_of_two() {
            tracing::warn!(target: "inbound_queue", remote_system = %self.remote, attempts = self.attempts, retry_in_ms = crate::ids::millis(wait), error = %why, "Pulling items from the peer failed; opening the stream again on a timer.");
        }
        Step::Idle(Some(Instant::now() + wait))
    }

    async fn open(&mut self) -> Step<()> {
        let store = self.store.clone();
        let name = self.remote.clone();
        let found = tokio::task::spawn_blocking(move || store.remote_system(&name)).await;
        let active = matches!(found, Ok(Ok(Some(r))) if r.inbound_state == RemoteState::Active);
        if !active {
            // Not validated yet (or disabled): nothing may be taken.
            return Step::Idle(Some(Instant::now() + SUPERVISE_EVERY));
        }
        let open = async {
            let target =
                crate::transport::peer::target_of(self.store.clone(), &self.remote).await?;
            PeerClient::connect(&target).await?.pull().await
        };
        let mut stop = self.stop.clone();
        let opened = tokio::select! {
            opened = open => opened,
            () = stopped(&mut stop) => return Step::Done(()),
        };
        match opened {
            Ok(stream) => {
                tracing::debug!(target: "inbound_queue", remote_system = %self.remote, "A stream for the peer's items to us is open.");
                self.stream = Some(stream);
                Step::Busy
            }
            Err(e) => self.again_later(&e.to_string()),
        }
    }

    async fn take(&mut self) -> Step<()> {
        let Some((replies, pulled)) = self.stream.as_mut() else {
            return self.open().await;
        };
        let mut stop = self.stop.clone();
        let first = tokio::select! {
            next = pulled.recv() => next,
            () = stopped(&mut stop) => return Step::Done(()),
        };
        let mut batch = Vec::new();
        let mut closed = None;
        let mut next = first;
        loop {
            match next {
                Some(Pulled::Item(item)) => batch.push(*item),
                Some(Pulled::Ping(nonce)) => {
                    let _ = replies.send(PullReply::Pong(nonce)).await;
                }
                Some(Pulled::Left) => {
                    tracing::info!(target: "inbound_queue", remote_system = %self.remote, "The peer removed its link to this instance; removing ours.");
                    self.gate.peer_left(&self.remote);
                    self.stream = None;
                    return Step::Idle(Some(Instant::now() + SUPERVISE_EVERY));
                }
                Some(Pulled::Deliver(delivery)) => {
                    deliver(&self.store, &self.gate, &self.remote, &self.stop, delivery);
                }
                Some(Pulled::Reconcile(id)) => {
                    reconcile_back(&self.store, &self.gate, &self.remote, &self.stop, id);
                }
                Some(Pulled::Closed(e)) => closed = Some(e.to_string()),
                None => closed = Some("the stream ended".to_string()),
            }
            if closed.is_some() || batch.len() >= MOST_PER_COMMIT {
                break;
            }
            // Whatever else has arrived goes into the same commit.
            next = match pulled.try_recv() {
                Ok(message) => Some(message),
                Err(_) => break,
            };
        }
        if !batch.is_empty() {
            match self.gate.receive_pulled(&self.remote, batch).await {
                Ok(acks) => {
                    self.attempts = 0;
                    for sequence in acks {
                        if replies.send(PullReply::Ack(sequence)).await.is_err() {
                            break;
                        }
                    }
                }
                // Nothing acknowledged: the peer sends them again.
                Err(e) => return self.again_later(&e.to_string()),
            }
        }
        match closed {
            Some(why) => self.again_later(&why),
            None => Step::Busy,
        }
    }
}

/// Delivers a content `remote` asked for (it never dials us, so it cannot
/// fetch it) on a call of its own, so items keep flowing. A refusal or a
/// failure is logged here; the peer, missing the chunks, asks again later
/// and resumes from what arrived.
fn deliver(
    store: &Arc<Store>,
    gate: &PeerGate,
    remote: &str,
    stop: &tokio::sync::watch::Receiver<bool>,
    delivery: Delivery,
) {
    let (store, gate) = (store.clone(), gate.clone());
    let (remote, stop) = (remote.to_string(), stop.clone());
    tokio::spawn(async move {
        let delivered = async {
            let chunks = gate
                .content_chunks(&remote, &delivery.grant, delivery.offset, stop)
                .await
                .map_err(|e| e.to_string())?;
            // A chunk that cannot be read ends the call short.
            let chunks = tokio_stream::StreamExt::map_while(
                tokio_stream::wrappers::ReceiverStream::new(chunks),
                Result::ok,
            );
            let target = crate::transport::peer::target_of(store, &remote)
                .await
                .map_err(|e| e.to_string())?;
            let mut client = PeerClient::connect(&target)
                .await
                .map_err(|e| e.to_string())?;
            client
                .deliver(delivery.id, chunks)
                .await
                .map_err(|e| e.to_string())
        };
        match delivered.await {
            Ok(()) => {
                tracing::info!(target: "attachments", remote_system = %remote, hash = %delivery.grant.hash, offset = delivery.offset, "Delivered an attachment content the peer asked for.");
            }
            Err(error) => {
                tracing::warn!(target: "attachments", remote_system = %remote, hash = %delivery.grant.hash, error = %error, "Could not deliver an attachment content the peer asked for; it asks again.");
            }
        }
    });
}

/// Answers the comparison `remote` asked for (it never dials us, so it
/// cannot call us to ask) on a call of our own, as if it had called: only
/// while our inbound state for it is Active. A refusal goes up the call as
/// the last answer; the peer's reconciliation reports it.
fn reconcile_back(
    store: &Arc<Store>,
    gate: &PeerGate,
    remote: &str,
    stop: &tokio::sync::watch::Receiver<bool>,
    id: u64,
) {
    let (store, gate) = (store.clone(), gate.clone());
    let (remote, stop) = (remote.to_string(), stop.clone());
    tokio::spawn(async move {
        let (replies, answers) = tokio::sync::mpsc::channel(2);
        let answers = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::ReceiverStream::new(answers),
            |reply: Result<_, PeerError>| reply.map_err(|e| e.to_string()),
        );
        let opened = async {
            let responder = gate.reconcile(gate.puller_caller(&remote).await?).await;
            let target = crate::transport::peer::target_of(store, &remote).await?;
            let asks = PeerClient::connect(&target)
                .await?
                .reconcile_back(id, answers)
                .await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((responder, asks))
        };
        match opened.await {
            Ok((Ok(responder), asks)) => responder.serve(asks, replies, stop).await,
            // Told over the call: the asker reports it.
            Ok((Err(refused), _)) => {
                let _ = replies.send(Err(refused)).await;
            }
            Err(error) => {
                tracing::warn!(target: "reconcile", remote_system = %remote, error = %error, "Could not answer the reconciliation the peer asked for.");
            }
        }
    });
}

impl Worker for Puller {
    type Output = ();

    fn name(&self) -> String {
        format!("puller from `{}`", self.remote)
    }

    async fn step(&mut self) -> Step<()> {
        if *self.stop.borrow() {
            return Step::Done(());
        }
        self.take().await
    }
}
