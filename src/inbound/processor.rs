//! The inbound processor: runs each Ready item's inbound flow, oldest
//! first and in order per record, after checking its attachments and
//! fetching the contents it lacks (`transfer`, with a retry state kept on
//! the item); an item in Error holds back later items of its record only.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::transfer;
use crate::attachment::{AttachmentLimits, check_incoming, wanted};
use crate::queue::{FetchRetry, InboundItem};
use crate::store::{Actor, RecordWriteLimits, Store, StoreError};
use crate::transport::protocol::CallError;
use crate::worker::{Step, Worker, Workers};

/// What one pass of the inbound processor did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    pub processed: usize,
    pub errors: usize,
    pub held: usize,
}

/// Runs inbound flows for Ready items, oldest first. An item in Error holds
/// back later items of the same record (same remote system and remote
/// correlation id); other records flow on.
pub struct Processor {
    store: Arc<Store>,
    limits: RecordWriteLimits,
    /// Items up to this id are known not to be Ready: scans start after it.
    cursor: u64,
    /// The next pass's read, started while this pass's applies commit:
    /// the items after this id.
    ahead: Option<(u64, tokio::task::JoinHandle<Result<PassRead, StoreError>>)>,
    /// Records with an item in Error; `None` until read from the store.
    blocked: Option<HashSet<(String, String)>>,
    /// Set by operator actions (retry, skip): rescan from the start.
    rescan: Arc<std::sync::atomic::AtomicBool>,
    /// Contents being fetched, by hash, and how the finished ones ended
    /// (`outcomes` as the fetches leave them, `fetched` once collected).
    fetching: HashMap<String, tokio::task::JoinHandle<Option<()>>>,
    outcomes: transfer::Outcomes,
    fetched: HashMap<String, Result<(), CallError>>,
    /// Runs the fetches; its stop signal ends the processor.
    workers: Workers,
    /// Contents whose fetch failed transiently, by hash: the latest retry
    /// state of any item (each item also keeps its own, in the store).
    fetch_backoff: HashMap<String, FetchRetry>,
    /// Where fetches count their bytes, ask a peer we never dial to
    /// deliver, and wake the processor when done.
    sync: crate::runtime::SyncRuntime,
}

/// What a pass reads: the Ready items, the remote systems and the users.
type PassRead = (
    Vec<InboundItem>,
    Arc<Vec<crate::store::RemoteSystemStatus>>,
    Vec<crate::user::User>,
);

/// See `Processor::attachment_facts`.
type AttachmentFacts = (
    Option<crate::config::sync::InboundFlow>,
    u64,
    bool,
    HashMap<String, Option<crate::store::ContentInfo>>,
);

/// Contents fetched at once; more wait their turn.
const MAX_FETCHES: usize = 2;

/// Wait after a content's first failed fetch; doubled per failure that
/// moved no bytes (`property::backoff`), up to `FETCH_RETRY_MAX`.
const FETCH_RETRY_FIRST: Duration = Duration::from_secs(2);
const FETCH_RETRY_MAX: Duration = Duration::from_secs(60);

/// Whether an item's attachments let its flow run.
enum AttachmentsReady {
    Go,
    /// A content is on its way (or waiting to be retried).
    Wait,
    Refuse(String),
}

/// Most items taken into one pass.
const ITEMS_PER_PASS: usize = 1000;

/// One item's apply, already queued to the store's writer.
type ApplyFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<crate::queue::InboundItem, StoreError>> + Send>,
>;

impl Processor {
    /// Fetches run on `workers`, and the processor stops with them.
    pub fn new(
        store: Arc<Store>,
        limits: RecordWriteLimits,
        sync: &crate::runtime::SyncRuntime,
        workers: Workers,
    ) -> Processor {
        Processor {
            store,
            limits,
            cursor: 0,
            ahead: None,
            blocked: None,
            rescan: sync.rescan_inbound.clone(),
            fetching: HashMap::new(),
            outcomes: transfer::Outcomes::default(),
            fetched: HashMap::new(),
            workers,
            fetch_backoff: HashMap::new(),
            sync: sync.clone(),
        }
    }

    /// Checks an item's attachments and gets the contents it needs:
    /// refuses bad metadata before fetching anything, starts fetches (at
    /// most `MAX_FETCHES` at once), and says Go once every content is here.
    async fn attachments_ready(
        &mut self,
        item: &InboundItem,
    ) -> Result<AttachmentsReady, StoreError> {
        let Ok(payload) = item.payload.decode() else {
            // The flow reports a malformed payload.
            return Ok(AttachmentsReady::Go);
        };
        if item.operation == crate::record::Operation::Delete
            || (payload.attachments.is_empty() && payload.removed_attachments.is_empty())
        {
            return Ok(AttachmentsReady::Go);
        }
        let hashes: Vec<String> = payload.attachments.iter().map(|a| a.hash.clone()).collect();
        let (flow, global_max_mb, correlated, contents) =
            self.attachment_facts(item, hashes).await?;
        let Some(flow) = flow else {
            return Ok(AttachmentsReady::Go);
        };
        let max_mb = match (flow.max_attachment_mb, global_max_mb) {
            (0, global) => global,
            (own, 0) => own,
            (own, global) => own.min(global),
        };
        let limits = AttachmentLimits::new(max_mb, &flow.allowed_extensions);
        if let Err(problem) =
            check_incoming(&payload.attachments, &payload.removed_attachments, &limits)
        {
            return Ok(AttachmentsReady::Refuse(problem));
        }
        let strategy = payload.attachment_strategy.unwrap_or_default();
        let mut ready = AttachmentsReady::Go;
        for attachment in wanted(&payload.attachments, strategy, !correlated) {
            let hash = &attachment.hash;
            match contents.get(hash).and_then(Option::as_ref) {
                Some(content) if content.complete => {
                    self.fetched.remove(hash);
                    if content.size != attachment.size {
                        return Ok(AttachmentsReady::Refuse(format!(
                            "attachment {:?} claims {} bytes, but its content ({hash}) has {} (its size lies)",
                            attachment.file_name, attachment.size, content.size
                        )));
                    }
                    continue;
                }
                _ => {}
            }
            if self.fetching.contains_key(hash) {
                ready = AttachmentsReady::Wait;
                continue;
            }
            match self.fetched.remove(hash) {
                Some(Err(problem)) if problem.is_permanent() => {
                    return Ok(AttachmentsReady::Refuse(format!(
                        "attachment {:?} could not be fetched from `{}`: {problem}",
                        attachment.file_name, item.remote_system
                    )));
                }
                Some(Err(error)) => {
                    let held = contents
                        .get(hash)
                        .and_then(Option::as_ref)
                        .map_or(0, |c| c.received);
                    self.note_fetch_failure(item, attachment, &error, held)
                        .await?;
                    ready = AttachmentsReady::Wait;
                    continue;
                }
                // Done, but gone again (removed meanwhile): fetch anew.
                Some(Ok(())) | None => {}
            }
            if self
                .fetch_retry(item, hash)
                .is_some_and(|retry| retry.next_attempt_on > crate::ids::now_millis())
            {
                ready = AttachmentsReady::Wait;
                continue;
            }
            let Some(grant) = item.attachment_grants.iter().find(|g| g.hash == *hash) else {
                return Ok(AttachmentsReady::Refuse(format!(
                    "attachment {:?} came without a key to fetch it; the sender must send one",
                    attachment.file_name
                )));
            };
            ready = AttachmentsReady::Wait;
            if self.fetching.len() >= MAX_FETCHES {
                continue;
            }
            self.start_fetch(item, attachment, grant.clone());
        }
        Ok(ready)
    }

    /// What the store holds for an item's attachments: its inbound flow,
    /// the instance's size limit, whether its record is correlated, and
    /// each content (by hash) as far as it arrived.
    async fn attachment_facts(
        &self,
        item: &InboundItem,
        hashes: Vec<String>,
    ) -> Result<AttachmentFacts, StoreError> {
        let store = self.store.clone();
        let (event, remote, remote_id) = (
            item.process_event.clone(),
            item.remote_system.clone(),
            item.remote_correlation_id.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let contents = hashes
                .iter()
                .map(|hash| Ok((hash.clone(), store.content(hash)?)))
                .collect::<Result<HashMap<_, _>, StoreError>>()?;
            Ok::<_, StoreError>((
                store.inbound_flow(&event, &remote),
                store.number("attachment.max_mb")?,
                store.is_correlated(&remote, &remote_id)?,
                contents,
            ))
        })
        .await
        .map_err(StoreError::from)?
    }

    /// Keeps a transient fetch failure on the item (its error info and the
    /// retry state, so a restart neither resets the attempts nor fires
    /// early) and backs the content off. A failure that moved no bytes
    /// past `held` counts one more attempt.
    async fn note_fetch_failure(
        &mut self,
        item: &InboundItem,
        attachment: &crate::attachment::PayloadAttachment,
        error: &CallError,
        held: u64,
    ) -> Result<(), StoreError> {
        let problem = error.to_string();
        let hash = &attachment.hash;
        let failures = match self.fetch_retry(item, hash) {
            Some(before) if held <= before.held => before.attempts + 1,
            _ => 1,
        };
        let wait = crate::property::backoff(FETCH_RETRY_FIRST, FETCH_RETRY_MAX, failures);
        tracing::warn!(target: "attachments", id = item.id, remote_system = %item.remote_system, file_name = %attachment.file_name, error = %problem, retry_in_s = wait.as_secs(), "Fetching an attachment failed; it will be tried again.");
        let retry = FetchRetry {
            attempts: failures,
            next_attempt_on: crate::ids::now_millis() + crate::ids::millis(wait),
            held,
            last_error: problem.clone(),
        };
        let again = crate::ids::format_time(retry.next_attempt_on);
        self.store
            .note_fetch_failure(
                item.id,
                hash.clone(),
                retry.clone(),
                format!(
                    "attachment {:?} could not be fetched from `{}` ({problem}); trying again at {again} UTC (failure {failures})",
                    attachment.file_name, item.remote_system
                ),
            )
            .await?;
        self.fetch_backoff.insert(hash.clone(), retry);
        Ok(())
    }

    /// Starts fetching one content, as a worker on the processor's runner.
    fn start_fetch(
        &mut self,
        item: &InboundItem,
        attachment: &crate::attachment::PayloadAttachment,
        grant: crate::attachment::Grant,
    ) {
        let wanted = transfer::Wanted {
            remote_system: item.remote_system.clone(),
            hash: attachment.hash.clone(),
            size: attachment.size,
            grant,
        };
        tracing::debug!(target: "attachments", id = item.id, file_name = %attachment.file_name, size = attachment.size, "Fetching an attachment.");
        let fetch = transfer::Fetch::new(
            self.store.clone(),
            &self.sync,
            wanted,
            &self.workers,
            self.outcomes.clone(),
        );
        let task = self
            .workers
            .spawn(fetch, Arc::new(tokio::sync::Notify::new()));
        self.fetching.insert(attachment.hash.clone(), task);
    }

    /// The latest retry state of fetching `hash`: this process's, or the
    /// one `item` kept in the store (after a restart, the only one).
    fn fetch_retry(&self, item: &InboundItem, hash: &str) -> Option<FetchRetry> {
        [self.fetch_backoff.get(hash), item.fetch_retries.get(hash)]
            .into_iter()
            .flatten()
            .max_by_key(|retry| retry.next_attempt_on)
            .cloned()
    }

    /// Collects the outcome of fetches that ended. One cut off by a stop
    /// leaves none: its content is fetched again (resumed) later.
    fn reap_fetches(&mut self) {
        let outcomes = std::mem::take(&mut *self.outcomes.lock().expect("fetch outcomes"));
        for (hash, result) in outcomes {
            if result.is_ok() {
                self.fetch_backoff.remove(&hash);
            }
            self.fetching.remove(&hash);
            self.fetched.insert(hash, result);
        }
        self.fetching.retain(|_, task| !task.is_finished());
    }

    /// Reads the Ready items after `after`, at most a pass of them, and
    /// who applies them.
    fn start_read(&self, after: u64) -> tokio::task::JoinHandle<Result<PassRead, StoreError>> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let items = store.ready_inbound(after, ITEMS_PER_PASS)?;
            // Who applies them, read only when there is something to apply.
            if items.is_empty() {
                return Ok((items, Default::default(), Vec::new()));
            }
            Ok((items, store.remote_systems_shared()?, store.users()?))
        })
    }

    async fn read_pass(&self) -> Result<PassRead, StoreError> {
        self.start_read(self.cursor)
            .await
            .map_err(StoreError::from)?
    }

    /// One pass over the Ready items.
    pub async fn tick(&mut self) -> Result<Tick, StoreError> {
        let rescan = self.rescan.swap(false, std::sync::atomic::Ordering::AcqRel);
        if rescan || self.blocked.is_none() {
            let store = self.store.clone();
            let blocked = tokio::task::spawn_blocking(move || store.blocked_correlations())
                .await
                .map_err(StoreError::from)??;
            self.blocked = Some(blocked);
            self.cursor = 0;
        }
        let (items, remotes, users) = match self.ahead.take() {
            Some((after, read)) if after == self.cursor => {
                let read = read.await.map_err(StoreError::from)??;
                // Nothing yet then: items that came since are read now.
                if read.0.is_empty() {
                    self.read_pass().await?
                } else {
                    read
                }
            }
            _ => self.read_pass().await?,
        };
        self.reap_fetches();
        let remote_named: HashMap<&str, &crate::store::RemoteSystemStatus> =
            remotes.iter().map(|r| (r.spec.name.as_str(), r)).collect();
        let user_named: HashMap<&str, &crate::user::User> =
            users.iter().map(|u| (u.name.as_str(), u)).collect();
        let mut blocked = self.blocked.take().unwrap_or_default();
        let mut tick = Tick::default();
        let mut held_now: HashSet<(String, String)> = HashSet::new();
        let mut started: HashSet<(String, String)> = HashSet::new();
        let mut applying: Vec<((String, String), ApplyFuture)> = Vec::new();
        let mut first_held: Option<u64> = None;
        let mut last_seen = self.cursor;
        for item in items {
            last_seen = last_seen.max(item.id);
            let key = (
                item.remote_system.clone(),
                item.remote_correlation_id.clone(),
            );
            // A record's items run in order, each after the one before it
            // has committed (and only if that one did not go to Error).
            if started.contains(&key) {
                for (key, apply) in applying.drain(..) {
                    self.settle(apply.await?, key, &mut blocked, &mut tick)
                        .await;
                }
                started.clear();
            }
            if blocked.contains(&key) || held_now.contains(&key) {
                tick.held += 1;
                first_held.get_or_insert(item.id);
                continue;
            }
            let run_as = remote_named
                .get(item.remote_system.as_str())
                .and_then(|r| r.run_as_user(|name| user_named.get(name).copied()));
            let actor = match run_as {
                Some(user) => Actor {
                    user: user.name.clone(),
                    domain: user.domain.clone(),
                },
                _ => {
                    // Without a usable run-as user nothing of this remote
                    // can be applied; leave the items Ready and say why.
                    tracing::error!(target: "inbound_queue", remote_system = %item.remote_system, "The remote system's run-as user is missing or lacks a role that may write records; inbound items wait.");
                    held_now.insert(key);
                    tick.held += 1;
                    first_held.get_or_insert(item.id);
                    continue;
                }
            };
            match self.attachments_ready(&item).await? {
                AttachmentsReady::Go => {
                    started.insert(key.clone());
                    let apply = self
                        .store
                        .queue_apply_inbound(item.id, actor, self.limits.clone());
                    applying.push((key, Box::pin(apply)));
                }
                AttachmentsReady::Wait => {
                    held_now.insert(key);
                    tick.held += 1;
                    first_held.get_or_insert(item.id);
                }
                AttachmentsReady::Refuse(problem) => {
                    let refused = self.store.refuse_inbound(item.id, problem).await?;
                    self.settle(refused, key, &mut blocked, &mut tick).await;
                }
            }
        }
        // While they commit, the next pass reads what follows them (not
        // when an item held the cursor back).
        if first_held.is_none() && last_seen > self.cursor {
            self.ahead = Some((last_seen, self.start_read(last_seen)));
        }
        // The applies of different records went to the writer together, so
        // its group commit makes them one durable transaction.
        for (key, apply) in applying {
            self.settle(apply.await?, key, &mut blocked, &mut tick)
                .await;
        }
        // Held items are looked at again; everything before them is done.
        self.cursor = match first_held {
            Some(id) => id - 1,
            None => last_seen,
        };
        self.blocked = Some(blocked);
        Ok(tick)
    }

    /// Counts an item that ran (or was refused) and, when it went to
    /// Error, holds its record's later items and runs the error steps.
    async fn settle(
        &self,
        applied: crate::queue::InboundItem,
        key: (String, String),
        blocked: &mut HashSet<(String, String)>,
        tick: &mut Tick,
    ) {
        match applied.status {
            crate::queue::QueueStatus::Error => {
                tracing::warn!(target: "inbound_queue", id = applied.id, remote_system = %applied.remote_system, error = applied.error.as_deref().unwrap_or(""), "An inbound item went to Error; later items of its record wait for retry or skip.");
                blocked.insert(key);
                tick.errors += 1;
                self.on_error(&applied).await;
            }
            _ => {
                tracing::debug!(target: "inbound_queue", id = applied.id, operation = applied.operation.as_str(), local = %applied.local_correlation_id, "Applied an inbound item.");
                tick.processed += 1;
            }
        }
    }

    /// The inbound flow's `on_error` steps for an item that went to Error.
    async fn on_error(&self, item: &crate::queue::InboundItem) {
        let store = self.store.clone();
        let (event, remote) = (item.process_event.clone(), item.remote_system.clone());
        let found = tokio::task::spawn_blocking(move || {
            let config = store.sync_config()?;
            let steps = config
                .inbound_flows
                .into_iter()
                .find(|f| f.process_event == event && f.remote_system == remote)
                .map(|f| f.on_error)
                .unwrap_or_default();
            Ok::<_, StoreError>((steps, store.instance()?.name))
        })
        .await;
        let Ok(Ok((steps, instance))) = found else {
            return;
        };
        if steps.is_empty() {
            return;
        }
        let event = crate::subflow::ErrorEvent {
            kind: "inbound_item_error".to_string(),
            instance,
            remote_system: item.remote_system.clone(),
            error: item.error.clone().unwrap_or_default(),
            attempts: 1,
            item_id: Some(item.id),
            time: crate::ids::format_time(crate::ids::now_millis()),
        };
        crate::subflow::run(&steps, &event).await;
    }
}

/// How long the processor idles without a wake-up.
const IDLE_PASS: Duration = Duration::from_secs(1);

impl Worker for Processor {
    type Output = ();

    fn name(&self) -> String {
        "inbound processor".to_string()
    }

    /// One pass; busy while passes find work, else idle until woken (new
    /// items, a finished fetch, an operator's retry) or a second passes.
    async fn step(&mut self) -> Step<()> {
        if self.workers.stopping() {
            return Step::Done(());
        }
        match self.tick().await {
            Ok(tick) if tick.processed + tick.errors > 0 => Step::Busy,
            Ok(_) => Step::Idle(Some(tokio::time::Instant::now() + IDLE_PASS)),
            Err(e) => {
                tracing::error!(target: "inbound_queue", error = %e, "The inbound processor could not read or write the store.");
                Step::Idle(Some(tokio::time::Instant::now() + IDLE_PASS))
            }
        }
    }
}

#[cfg(test)]
mod tests;
