//! The receiving side of peer sync: `PeerGate` identifies a calling peer
//! (pinned certificate + inbound API user token with `process_sync_api`),
//! answers `Hello`, and queues received items durably before they are
//! acknowledged; the inbound processor (`processor`) then runs each Ready
//! item's inbound flow in order per correlation. Transport-neutral.

mod processor;
mod pull;
mod reconcile;
mod transfer;

pub use processor::{Processor, Tick};
pub use pull::PullSupervisor;
pub use reconcile::Responder;

use std::sync::Arc;

use crate::attachment::{CHUNK_BYTES, Grant, GrantError};
use crate::failure::{Classified, Failure};
use crate::queue::ConflictRule;
use crate::store::{Chain, ReceivedItem, RemoteState, RemoteSystemStatus, Store, StoreError};
use crate::transport::peer::FetchedChunk;
use crate::transport::protocol::{Hello, HelloAnswer, PROTOCOL_VERSION};
use crate::user::{Role, User};

/// The commit of one received batch: the sequences to acknowledge.
pub type Receipt =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u64>, PeerError>> + Send>>;

/// Why a peer call is refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    #[error("no client certificate was presented")]
    NoCertificate,
    #[error("certificate {fingerprint} matches no remote system of this instance")]
    UnknownCertificate { fingerprint: String },
    #[error(
        "the token presented for remote system `{}` is not valid here; set the inbound API user's token on the caller with `procsync remote token`",
        remotes.join("`, `")
    )]
    UnknownToken { remotes: Vec<String> },
    #[error("user `{user}` is not the inbound API user of the remote system with this certificate")]
    NotInboundUser { user: String },
    #[error("user `{user}` lacks role process_sync_api; add it with `procsync user roles`")]
    LacksSyncRole { user: String },
    #[error(
        "the inbound state of remote system `{remote}` is {state} on this instance; run `procsync remote validate {remote}` here"
    )]
    InboundNotActive { remote: String, state: &'static str },
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error("attachment content {hash} is no longer stored here (removed at the origin)")]
    ContentGone { hash: String },
    #[error("chunk {index} of content {id} is not stored here")]
    ChunkGone { id: u64, index: u32 },
    #[error(
        "the peer's disk is full: it cannot queue items now; they wait at the sender and go again once it has space"
    )]
    DiskFull,
    #[error(
        "the peer cannot write to its disk right now ({0}); items wait at the sender and go again"
    )]
    DiskFailed(StoreError),
    #[error(
        "no flow of this instance syncs table `{table}` with remote system `{remote}`, so it has nothing to compare there; the two sides' definitions name different tables"
    )]
    TableNotSynced { table: String, remote: String },
    #[error("a reconciliation must open a table before asking about its records")]
    NothingOpen,
    #[error("a reconciliation may ask about at most {most} ranges or records at once")]
    TooMuchAsked { most: usize },
    #[error(
        "record `{sys_id}` of `{table}` is not one of the correlated records compared here, so it is not sent"
    )]
    NotCompared { sys_id: String, table: String },
    /// The caller's message does not decode; what is wrong with it.
    #[error("{0}")]
    BadAsk(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for PeerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DiskFull => PeerError::DiskFull,
            e if e.is_disk_failure() => PeerError::DiskFailed(e),
            e => PeerError::Store(e),
        }
    }
}

impl From<tokio::task::JoinError> for PeerError {
    fn from(e: tokio::task::JoinError) -> Self {
        PeerError::Store(e.into())
    }
}

impl Classified for PeerError {
    fn failure(&self) -> Failure {
        match self {
            PeerError::NoCertificate
            | PeerError::UnknownCertificate { .. }
            | PeerError::UnknownToken { .. } => Failure::Unauthenticated,
            PeerError::NotInboundUser { .. }
            | PeerError::LacksSyncRole { .. }
            | PeerError::Grant(_) => Failure::PermissionDenied,
            PeerError::InboundNotActive { .. } => Failure::NotReady,
            PeerError::ContentGone { .. } | PeerError::ChunkGone { .. } => Failure::NotFound,
            PeerError::TableNotSynced { .. }
            | PeerError::NothingOpen
            | PeerError::TooMuchAsked { .. }
            | PeerError::NotCompared { .. }
            | PeerError::BadAsk(_) => Failure::Invalid,
            // Whatever the store says, the peer's call was fine: it may
            // come again.
            PeerError::DiskFull | PeerError::DiskFailed(_) | PeerError::Store(_) => {
                Failure::Unavailable
            }
        }
    }
}

/// An identified caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    pub remote: RemoteSystemStatus,
    pub user: User,
    /// What the caller presented, to check again on every batch: a token
    /// revoked or a remote disabled mid-stream takes effect at once.
    fingerprint: String,
    token: Option<String>,
}

/// Identifies and serves calling peers.
#[derive(Clone)]
pub struct PeerGate {
    store: Arc<Store>,
    sync: crate::runtime::SyncRuntime,
    /// The limits a write by an inbound flow keeps, for the items applied
    /// as they arrive (the processor keeps the same).
    limits: crate::store::RecordWriteLimits,
}

impl PeerGate {
    pub fn new(
        store: Arc<Store>,
        sync: crate::runtime::SyncRuntime,
        limits: crate::store::RecordWriteLimits,
    ) -> PeerGate {
        PeerGate {
            store,
            sync,
            limits,
        }
    }

    /// Queues `caller`'s items durably as a job of `chain`, applying those
    /// that can be as they arrive (`Store::receive_applying`); returns the
    /// future of the commit, which gives the sequences to acknowledge and
    /// wakes the processor for the rest.
    fn queue(&self, caller: &Caller, items: Vec<ReceivedItem>, chain: &Chain) -> Receipt {
        let apply = crate::store::ApplyAs {
            run_as: caller.remote.spec.run_as.clone(),
            limits: self.limits.clone(),
        };
        let committed = self.store.receive_applying(
            (caller.name.clone(), caller.fingerprint.clone()),
            caller.user.domain.clone(),
            items,
            apply,
            chain,
        );
        let wake = self.sync.wake_inbound.clone();
        Box::pin(async move {
            let acks = committed.await?;
            wake.notify_one();
            Ok(acks)
        })
    }

    /// The remote system whose pinned fingerprint the caller's certificate
    /// matches and whose inbound API user owns the token.
    pub async fn identify(
        &self,
        fingerprint: Option<String>,
        token: Option<String>,
    ) -> Result<Caller, PeerError> {
        let caller = self.lookup(fingerprint, token).await?;
        // A peer that can call us is up: our dispatcher for it need not wait
        // out its backoff.
        if self.sync.health.peer_seen(&caller.name) {
            self.sync.wake_outbound.notify_waiters();
        }
        Ok(caller)
    }

    async fn lookup(
        &self,
        fingerprint: Option<String>,
        token: Option<String>,
    ) -> Result<Caller, PeerError> {
        let presented = token.clone();
        let Some(fingerprint) = fingerprint else {
            return Err(PeerError::NoCertificate);
        };
        let store = self.store.clone();
        let (remotes, user) = tokio::task::spawn_blocking(move || {
            let remotes = store.remote_systems_shared()?;
            let user = match token {
                Some(token) => store.user_by_token(&token)?,
                None => None,
            };
            Ok::<_, StoreError>((remotes, user))
        })
        .await??;
        let candidates: Vec<RemoteSystemStatus> = remotes
            .iter()
            .filter(|r| {
                crate::config::sync::normalize_fingerprint(&r.spec.fingerprint)
                    .ok()
                    .as_deref()
                    == Some(fingerprint.as_str())
            })
            .cloned()
            .collect();
        if candidates.is_empty() {
            tracing::warn!(target: "transport", %fingerprint, "Refused a peer call: its certificate matches no remote system.");
            return Err(PeerError::UnknownCertificate { fingerprint });
        }
        let Some(user) = user else {
            let remotes: Vec<String> = candidates.into_iter().map(|r| r.spec.name).collect();
            tracing::warn!(target: "transport", remote_systems = %remotes.join(", "), "Refused a peer call: its token is unknown.");
            return Err(PeerError::UnknownToken { remotes });
        };
        let Some(remote) = candidates
            .into_iter()
            .find(|r| r.spec.inbound_api_user == user.name)
        else {
            tracing::warn!(target: "transport", user = %user.name, "Refused a peer call: the token's user is not the remote system's inbound API user.");
            return Err(PeerError::NotInboundUser { user: user.name });
        };
        if !user.roles.contains(&Role::ProcessSyncApi) {
            tracing::warn!(target: "transport", user = %user.name, "Refused a peer call: the inbound API user lacks process_sync_api.");
            return Err(PeerError::LacksSyncRole { user: user.name });
        }
        Ok(Caller {
            name: remote.spec.name.clone(),
            remote,
            user,
            fingerprint,
            token: presented,
        })
    }

    pub fn check_inbound_active(&self, caller: &Caller) -> Result<(), PeerError> {
        if caller.remote.inbound_state == RemoteState::Active {
            return Ok(());
        }
        Err(PeerError::InboundNotActive {
            remote: caller.name.clone(),
            state: caller.remote.inbound_state.as_str(),
        })
    }

    /// The most bytes per second this instance sends `remote` (0: no limit).
    pub async fn sending_rate(&self, remote: &str) -> u64 {
        crate::runtime::Bandwidth::rate_of(&self.store, remote).await
    }

    /// `remote`, which we pull from, removed its link to us.
    pub fn peer_left(&self, remote: &str) {
        self.sync.peers_left.tell(remote);
    }

    /// Hands the chunks of a caller's `Deliver` call to the fetch that
    /// asked for them; false when none waits.
    pub fn delivered(
        &self,
        caller: &Caller,
        id: u64,
        stream: crate::transport::peer::FetchStream,
    ) -> bool {
        self.sync.reverse.delivered(&caller.name, id, stream)
    }

    /// Hands a caller's `ReconcileBack` call to the reconciler that asked
    /// for it; false when none waits.
    pub fn reconcile_opened(
        &self,
        caller: &Caller,
        id: u64,
        call: crate::transport::reconcile::ReconcileCall,
    ) -> bool {
        self.sync.reverse.reconcile_opened(&caller.name, id, call)
    }

    /// Hands a stream the caller opened for our items to it (`Pull`) to
    /// its dispatcher.
    pub fn offer_stream(&self, caller: &Caller, ends: crate::runtime::StreamEnds) {
        self.sync.reverse.offer(&caller.name, ends);
        self.sync.wake_outbound.notify_waiters();
    }

    /// Checks that both sides agree on who they are.
    pub async fn hello(&self, caller: &Caller, hello: Hello) -> Result<HelloAnswer, PeerError> {
        let store = self.store.clone();
        let sender = caller.fingerprint.clone();
        let (instance, config, received) = tokio::task::spawn_blocking(move || {
            Ok::<_, StoreError>((
                store.instance()?,
                store.sync_config_shared()?,
                store.highest_received(&sender)?,
            ))
        })
        .await??;
        let mut problems = Vec::new();
        if hello.protocol_version != PROTOCOL_VERSION {
            problems.push(format!(
                "protocol version {} is not {PROTOCOL_VERSION}, which `{}` speaks; run the same procsync version on both",
                hello.protocol_version, instance.name
            ));
        }
        if hello.external_id != caller.remote.sys_id {
            problems.push(format!(
                "the caller's external_id `{}` is not the sys_id of `{}`'s remote system for it (`{}`); set external_id = \"{}\" on the caller",
                hello.external_id, instance.name, caller.name, caller.remote.sys_id
            ));
        }
        if caller.remote.spec.external_id != hello.remote_system_sys_id {
            problems.push(format!(
                "`{}`'s remote system `{}` has external_id `{}`, not the caller's record sys_id `{}`; set external_id = \"{}\" there",
                instance.name, caller.name, caller.remote.spec.external_id, hello.remote_system_sys_id, hello.remote_system_sys_id
            ));
        }
        if let Some(last) = hello.last_sequence.filter(|&last| last < received) {
            problems.push(format!(
                "`{}` has already received sequence {received} from `{}`, whose last sequence for it is {last}: `{}`'s store was restored from an older copy (or its remote system for `{0}` was made anew), so its next items would be dropped as duplicates; give it a new identity (a fresh data directory with `procsync init`) and link it again, or restore its latest store",
                instance.name, hello.instance_name, hello.instance_name
            ));
        }
        for event in &hello.process_events {
            if !config.process_events.iter().any(|e| &e.name == event) {
                problems.push(format!(
                    "process event `{event}` does not exist on `{}`",
                    instance.name
                ));
            } else if !config
                .inbound_flows
                .iter()
                .any(|f| &f.process_event == event && f.remote_system == caller.name)
            {
                problems.push(format!(
                    "`{}` has no inbound flow for process event `{event}` from remote system `{}`",
                    instance.name, caller.name
                ));
            }
        }
        for (event, rule) in &hello.conflict_rules {
            let Some(flow) = config
                .inbound_flows
                .iter()
                .find(|f| &f.process_event == event && f.remote_system == caller.name)
            else {
                continue;
            };
            let theirs = ConflictRule::parse(rule);
            if let Some(why) = theirs.and_then(|theirs| flow.conflict.disagreement(theirs)) {
                problems.push(format!(
                    "the conflict rules for process event `{event}` would leave the two sides different: `{}`'s inbound flow `{}` says `{}` and `{}`'s says `{rule}`: {why}",
                    instance.name,
                    flow.name,
                    flow.conflict.as_str(),
                    hello.instance_name
                ));
            }
        }
        Ok(HelloAnswer {
            protocol_version: PROTOCOL_VERSION,
            instance_sys_id: instance.sys_id,
            instance_name: instance.name,
            problems,
        })
    }

    /// The chunks of the content `grant` names, from `offset` on, for
    /// `remote` (a `Fetch` it made, or a `Deliver` it asked for): two at a
    /// time, so memory stays at a few MiB whatever the size, each when the
    /// remote's bandwidth limit lets it go, then one marked complete. An
    /// error ends them; so does `stop`. Refused unless we issued `grant` to
    /// `remote`, it has not expired, the content is stored here complete,
    /// and `offset` is a chunk boundary within it.
    pub async fn content_chunks(
        &self,
        remote: &str,
        grant: &Grant,
        offset: u64,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<FetchedChunk, PeerError>>, PeerError> {
        let store = self.store.clone();
        let hash = grant.hash.clone();
        let (secret, content) = tokio::task::spawn_blocking(move || {
            Ok::<_, StoreError>((store.attachment_secret()?, store.content(&hash)?))
        })
        .await??;
        grant.verify(&secret, remote, crate::ids::now_millis())?;
        let content = match content {
            Some(content) if content.complete => content,
            _ => {
                return Err(PeerError::ContentGone {
                    hash: grant.hash.clone(),
                });
            }
        };
        let chunk_bytes = CHUNK_BYTES as u64;
        if offset % chunk_bytes != 0 || offset > content.size {
            return Err(PeerError::BadAsk(format!(
                "offset {offset} is not a chunk boundary (multiples of {CHUNK_BYTES}) within the {} bytes of the content",
                content.size
            )));
        }
        let (chunks, received) = tokio::sync::mpsc::channel(2);
        let rate = self.sending_rate(remote).await;
        let (store, sync, remote) = (self.store.clone(), self.sync.clone(), remote.to_string());
        tokio::spawn(async move {
            for index in crate::attachment::chunk_index(offset)..content.chunk_count() {
                let store = store.clone();
                let read = tokio::select! {
                    read = tokio::task::spawn_blocking(move || store.read_chunk(content.id, index)) => read,
                    _ = stop.changed() => return,
                };
                let chunk = match read {
                    Ok(Ok(Some(data))) => data,
                    failed => {
                        let error = match failed {
                            Ok(Ok(_)) => PeerError::ChunkGone {
                                id: content.id,
                                index,
                            },
                            Ok(Err(e)) => e.into(),
                            Err(e) => e.into(),
                        };
                        let _ = chunks.send(Err(error)).await;
                        return;
                    }
                };
                tokio::select! {
                    () = sync.bandwidth.wait(&remote, rate, chunk.len()) => {}
                    _ = stop.changed() => return,
                }
                sync.transfers.add(&remote, chunk.len() as u64, 0);
                let next = FetchedChunk {
                    offset: u64::from(index) * chunk_bytes,
                    chunk_hash: blake3::hash(&chunk).as_bytes().to_vec().into(),
                    data: chunk.into(),
                    complete: false,
                };
                if chunks.send(Ok(next)).await.is_err() {
                    return;
                }
            }
            let complete = FetchedChunk {
                offset: content.size,
                data: Default::default(),
                chunk_hash: Default::default(),
                complete: true,
            };
            let _ = chunks.send(Ok(complete)).await;
        });
        Ok(received)
    }

    /// Queues a stream's received items durably, after the stream's earlier
    /// batches (`chain`), once the caller is checked again; returns the
    /// future of their commit (the sequences to acknowledge), so the next
    /// batch can be queued while this one is saved.
    pub async fn receive(
        &self,
        caller: &Caller,
        items: Vec<ReceivedItem>,
        chain: &Chain,
    ) -> Result<Receipt, PeerError> {
        let current = self
            .lookup(Some(caller.fingerprint.clone()), caller.token.clone())
            .await?;
        self.check_inbound_active(&current)?;
        Ok(self.queue(&current, items, chain))
    }
}
