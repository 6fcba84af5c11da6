//! The sending side of peer sync: one dispatcher per remote system streams
//! its Ready outbound items in sequence order over one long-lived stream,
//! many in flight, and marks them Processed only when the peer acknowledges
//! a durable commit. Failures retry on timers with capped exponential
//! backoff and jitter; exhausted retries put the remote's outbound state in
//! Error and run its error handling, while probing goes on; credential and
//! pinning failures wait for `procsync remote validate`. Heartbeats tell Up
//! from Slow from Down.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ids::{format_time, now_millis};
use crate::runtime::{Health, HealthBoard, RemoteHealth};
use crate::store::{RemoteState, Store, StoreError};
use crate::transport::peer::PeerClient;
use crate::transport::protocol::{CallError, PeerTarget, SendItem, SyncEvent, WireItem};

/// Items in flight on one stream at most.
const WINDOW: usize = 1024;
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
}

/// Shows a retry state on a remote's health entry.
fn show_retry(health: &mut RemoteHealth, retry: &crate::property::RetryState) {
    health.attempts = retry.attempts;
    health.last_error = retry.last_error.clone();
    health.next_attempt_on = retry.next_attempt_on.map(format_time);
}

/// How one session ended.
#[derive(Debug, PartialEq)]
enum SessionEnd {
    /// The remote is no longer Active (disabled, removed, or in Error).
    NotActive,
    Failed(CallError),
    Stopped,
}

impl Outbound {
    /// Keeps one dispatcher per remote system running until stop.
    pub async fn run(self) {
        let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut stop = self.stop.clone();
        loop {
            if *stop.borrow() {
                break;
            }
            let store = self.store.clone();
            let names: BTreeSet<String> =
                match tokio::task::spawn_blocking(move || store.remote_systems()).await {
                    Ok(Ok(remotes)) => remotes.into_iter().map(|r| r.spec.name).collect(),
                    _ => BTreeSet::new(),
                };
            running.retain(|name, task| {
                let keep = names.contains(name) && !task.is_finished();
                if !keep {
                    task.abort();
                }
                keep
            });
            for name in names {
                if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(name) {
                    let dispatcher = self.clone();
                    let task_name = slot.key().clone();
                    slot.insert(tokio::spawn(
                        async move { dispatcher.dispatch(task_name).await },
                    ));
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = stop.changed() => {}
            }
        }
        for (_, task) in running {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// The dispatcher of one remote system. Its retry state lives in the
    /// store, so after a restart a remote in Error from passing failures is
    /// probed on, on the schedule it had.
    #[allow(
        clippy::too_many_lines,
        reason = "the dispatcher's retry loop; becomes a worker with a closed event enum (issue 12 point 4)"
    )]
    async fn dispatch(self, remote: String) {
        let mut stop = self.stop.clone();
        let mut retry = {
            let store = self.store.clone();
            let name = remote.clone();
            tokio::task::spawn_blocking(move || store.remote_retry(&name))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        };
        let mut attempts = retry.attempts;
        self.health.update(&remote, |h| show_retry(h, &retry));
        // A schedule carried over from before a restart is kept (at most
        // one capped interval away); probing may cut it short.
        let mut probe = true;
        let mut resume_at = retry.next_attempt_on.map(|at| {
            let wait = Duration::from_millis(at.saturating_sub(now_millis()));
            tokio::time::Instant::now() + wait.min(self.policy().max_interval)
        });
        loop {
            if *stop.borrow() {
                return;
            }
            let state = self.remote_state(&remote).await;
            let Some((outbound_state, _)) = state else {
                return;
            };
            let probing = outbound_state == RemoteState::Error && !retry.refused;
            if outbound_state != RemoteState::Active && !probing {
                // Disabled, or refused by the peer: waiting for the operator.
                self.health.update(&remote, |h| h.health = Health::Down);
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
                if retry.refused
                    && self.remote_state(&remote).await.map(|s| s.0) == Some(RemoteState::Active)
                {
                    // Validated: whatever refused us is settled.
                    retry = Default::default();
                    attempts = 0;
                    self.record_retry(&remote, &retry).await;
                }
                continue;
            }
            if let Some(until) = resume_at.take() {
                self.wait_for_retry(&remote, until, probe, &mut stop).await;
                if *stop.borrow() {
                    return;
                }
            }
            let mut connected = false;
            let end = self.session(&remote, &mut attempts, &mut connected).await;
            if attempts == 0 && retry != Default::default() {
                // The peer answered during the session.
                retry = Default::default();
            }
            match end {
                SessionEnd::Stopped => return,
                SessionEnd::NotActive => continue,
                SessionEnd::Failed(refusal) if refusal.is_permanent() => {
                    let reason = format!(
                        "{refusal}; nothing is sent until `procsync remote validate {remote}` succeeds"
                    );
                    tracing::error!(target: "outbound_queue", remote_system = %remote, error = %reason, "The peer refused us; the remote system's outbound state is now Error until `procsync remote validate`.");
                    // In-flight items go back to Ready and wait for the operator.
                    let _ = self
                        .store
                        .reset_running(remote.clone(), Some((reason.clone(), None)))
                        .await;
                    let _ = self
                        .store
                        .set_remote_states(remote.clone(), Some(RemoteState::Error), None)
                        .await;
                    retry = crate::property::RetryState {
                        attempts,
                        last_error: Some(reason.clone()),
                        next_attempt_on: None,
                        refused: true,
                    };
                    self.record_retry(&remote, &retry).await;
                    self.run_error_handling(&remote, &reason, attempts).await;
                    attempts = 0;
                }
                SessionEnd::Failed(error) => {
                    attempts += 1;
                    let policy = self.policy();
                    let delay = policy.delay(attempts, jitter_seed(&remote, attempts));
                    let next = now_millis() + crate::ids::millis(delay);
                    let reason = format!("{error}; retrying at {}", format_time(next));
                    // Items that were in flight carry the failure and the
                    // next attempt's time until they go again.
                    let _ = self
                        .store
                        .reset_running(remote.clone(), Some((reason.clone(), Some(next))))
                        .await;
                    retry = crate::property::RetryState {
                        attempts,
                        last_error: Some(reason.clone()),
                        next_attempt_on: Some(next),
                        refused: false,
                    };
                    self.record_retry(&remote, &retry).await;
                    if attempts == policy.times + 1 {
                        tracing::error!(target: "outbound_queue", remote_system = %remote, attempts, error = %reason, "Retries are exhausted; the remote system's outbound state is now Error. Items stay queued and the peer is still probed.");
                        let _ = self
                            .store
                            .set_remote_states(remote.clone(), Some(RemoteState::Error), None)
                            .await;
                        self.run_error_handling(&remote, &reason, attempts).await;
                    } else {
                        tracing::warn!(target: "outbound_queue", remote_system = %remote, attempts, retry_in_ms = crate::ids::millis(delay), error = %reason, "Sending to the peer failed; retrying on a timer.");
                    }
                    resume_at = Some(tokio::time::Instant::now() + delay);
                    // So a healed link (or a finished validation) is used
                    // within seconds (`CallError::worth_probing`).
                    probe = !connected || error.worth_probing();
                }
            }
        }
    }

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

    /// Waits until `until`, the next attempt's time, or less: when the peer
    /// calls us, or when a probe (a connection and TLS handshake, at
    /// `PROBE_FIRST` doubling up to `PROBE_MAX`) finds it reachable again,
    /// the attempt is made at once. Probes count no attempt, so a long backoff never leaves a
    /// healed link idle for long.
    async fn wait_for_retry(
        &self,
        remote: &str,
        until: tokio::time::Instant,
        probe_it: bool,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) {
        let mut probes = 1;
        let mut next_probe = tokio::time::Instant::now() + PROBE_FIRST;
        loop {
            // A call from the peer may have come while this dispatcher was
            // busy recording the failure (its wake-up was then missed).
            if self.health.take_retry_now(remote) {
                tracing::info!(target: "outbound_queue", remote_system = %remote, "The peer called us; retrying now.");
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(next_probe), if probe_it => {
                    probes += 1;
                    next_probe = tokio::time::Instant::now()
                        + crate::property::backoff(PROBE_FIRST, PROBE_MAX, probes);
                    let try_it = async {
                        match self.target(remote).await {
                            Ok(target) => PeerClient::connect(&target).await.is_ok(),
                            Err(_) => false,
                        }
                    };
                    let reachable = tokio::select! {
                        reachable = try_it => reachable,
                        _ = stop.changed() => return,
                    };
                    if reachable {
                        tracing::info!(target: "outbound_queue", remote_system = %remote, "The peer is reachable again; retrying now.");
                        return;
                    }
                }
                _ = stop.changed() => return,
            }
        }
    }

    async fn remote_state(&self, remote: &str) -> Option<(RemoteState, RemoteState)> {
        let store = self.store.clone();
        let remotes = tokio::task::spawn_blocking(move || store.remote_systems())
            .await
            .ok()?
            .ok()?;
        remotes
            .into_iter()
            .find(|r| r.spec.name == remote)
            .map(|r| (r.outbound_state, r.inbound_state))
    }

    async fn target(&self, remote: &str) -> Result<PeerTarget, CallError> {
        crate::transport::peer::target_of(self.store.clone(), remote).await
    }

    /// One stream's life: connect, send, collect acks, until it fails.
    /// `connected` says whether the peer was reached at all.
    #[allow(
        clippy::too_many_lines,
        reason = "one stream's event loop; becomes a worker with a closed event enum (issue 12 point 4)"
    )]
    async fn session(&self, remote: &str, attempts: &mut u32, connected: &mut bool) -> SessionEnd {
        let mut stop = self.stop.clone();
        let open = async {
            let target = self.target(remote).await?;
            let mut client = PeerClient::connect(&target).await?;
            *connected = true;
            client.sync().await
        };
        let (items, mut events) = tokio::select! {
            opened = open => match opened {
                Ok(stream) => stream,
                Err(e) => return SessionEnd::Failed(e),
            },
            _ = stop.changed() => return SessionEnd::Stopped,
        };
        // Items left Running by an earlier session or process go again; the
        // peer drops the ones it already has.
        if let Err(e) = self.store.reset_running(remote.to_string(), None).await {
            return SessionEnd::Failed(CallError::Store(e));
        }
        let (mut interval, mut slow) = self
            .store
            .heartbeat()
            .unwrap_or((Duration::from_secs(10), Duration::from_secs(1)));
        let mut heartbeat = tokio::time::interval(interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ping_sent: Option<(u64, Instant)> = None;
        let mut nonce = 0u64;
        let mut in_flight: BTreeSet<u64> = BTreeSet::new();
        let mut acked: Vec<u64> = Vec::new();
        let mut cursor = 0u64;
        let mut confirmed = false;
        // The last ack, or the time the window went from empty to busy: a
        // peer that answers pings but acknowledges nothing is stuck too.
        let mut progress = Instant::now();
        self.health.update(remote, |h| h.health = Health::Up);
        loop {
            if self.health.is_disabled(remote) {
                let _ = self.flush_acks(remote, &mut acked).await;
                return SessionEnd::NotActive;
            }
            // Refill the window once half of it is acknowledged: marking
            // items Running is a durable commit, so refilling one slot per
            // ack would cost a commit per item.
            if in_flight.len() <= WINDOW / 2 {
                match self
                    .next_items(remote, cursor, WINDOW - in_flight.len())
                    .await
                {
                    Ok(batch) if !batch.is_empty() => {
                        let ids: Vec<u64> = batch.iter().map(|(id, _)| *id).collect();
                        if let Err(e) = self.store.mark_outbound_running(ids).await {
                            return SessionEnd::Failed(CallError::Store(e));
                        }
                        for (_, item) in batch {
                            cursor = cursor.max(item.sequence);
                            if in_flight.is_empty() {
                                progress = Instant::now();
                            }
                            in_flight.insert(item.sequence);
                            if items.send(SendItem::Item(item)).await.is_err() {
                                return SessionEnd::Failed(CallError::StreamGone {
                                    remote: remote.to_string(),
                                    how: "closed",
                                });
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return SessionEnd::Failed(CallError::Store(e)),
                }
            }
            let flush = tokio::time::sleep(Duration::from_millis(if acked.is_empty() {
                200
            } else {
                5
            }));
            tokio::select! {
                event = events.recv() => match event {
                    Some(SyncEvent::Ack(sequence)) => {
                        progress = Instant::now();
                        in_flight.remove(&sequence);
                        acked.push(sequence);
                        if !confirmed {
                            confirmed = true;
                            self.on_confirmed(remote, attempts).await;
                        }
                        if acked.len() >= ACK_BATCH {
                            if let Err(e) = self.flush_acks(remote, &mut acked).await {
                                return SessionEnd::Failed(CallError::Store(e));
                            }
                        }
                    }
                    Some(SyncEvent::Pong(n)) => {
                        if let Some((sent_nonce, sent_at)) = ping_sent.take() {
                            if sent_nonce == n {
                                let round_trip = sent_at.elapsed();
                                let health = if round_trip > slow { Health::Slow } else { Health::Up };
                                self.health.update(remote, |h| {
                                    h.health = health;
                                    h.round_trip_ms = Some(crate::ids::millis(round_trip));
                                });
                            }
                        }
                        if !confirmed {
                            confirmed = true;
                            self.on_confirmed(remote, attempts).await;
                        }
                    }
                    Some(SyncEvent::Closed(error)) => {
                        let _ = self.flush_acks(remote, &mut acked).await;
                        return SessionEnd::Failed(error);
                    }
                    None => {
                        let _ = self.flush_acks(remote, &mut acked).await;
                        return SessionEnd::Failed(CallError::StreamGone { remote: remote.to_string(), how: "ended" });
                    }
                },
                _ = heartbeat.tick() => {
                    let ack_deadline = ACK_DEADLINE.max(interval * 3);
                    if !in_flight.is_empty() && progress.elapsed() > ack_deadline {
                        let _ = self.flush_acks(remote, &mut acked).await;
                        return SessionEnd::Failed(CallError::Unacknowledged {
                            items: in_flight.len(),
                            secs: progress.elapsed().as_secs(),
                        });
                    }
                    if let Some((_, sent_at)) = ping_sent {
                        if sent_at.elapsed() > interval * 3 {
                            let _ = self.flush_acks(remote, &mut acked).await;
                            return SessionEnd::Failed(CallError::NoHeartbeat {
                                secs: sent_at.elapsed().as_secs(),
                            });
                        }
                        if sent_at.elapsed() > slow {
                            self.health.update(remote, |h| h.health = Health::Slow);
                        }
                    } else {
                        nonce += 1;
                        ping_sent = Some((nonce, Instant::now()));
                        if items.send(SendItem::Ping(nonce)).await.is_err() {
                            return SessionEnd::Failed(CallError::StreamGone { remote: remote.to_string(), how: "closed" });
                        }
                    }
                    match self.remote_state(remote).await {
                        Some((RemoteState::Active, _)) => {}
                        Some((RemoteState::Error, _)) if *attempts > 0 => {}
                        _ => {
                            let _ = self.flush_acks(remote, &mut acked).await;
                            return SessionEnd::NotActive;
                        }
                    }
                    // Heartbeat properties apply without a restart.
                    if let Ok((new_interval, new_slow)) = self.store.heartbeat() {
                        slow = new_slow;
                        if new_interval != interval {
                            interval = new_interval;
                            heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                            heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        }
                    }
                }
                _ = self.wake.notified() => {}
                _ = flush => {
                    if let Err(e) = self.flush_acks(remote, &mut acked).await {
                        return SessionEnd::Failed(CallError::Store(e));
                    }
                }
                _ = stop.changed() => {
                    let _ = self.flush_acks(remote, &mut acked).await;
                    return SessionEnd::Stopped;
                }
            }
        }
    }

    /// The peer answered: retries are over, and a remote in Error from
    /// transient failures is Active again.
    async fn on_confirmed(&self, remote: &str, attempts: &mut u32) {
        if *attempts > 0 {
            tracing::info!(target: "outbound_queue", remote_system = %remote, attempts = *attempts, "The peer answers again.");
        }
        let in_error = matches!(
            self.remote_state(remote).await,
            Some((RemoteState::Error, _))
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

    async fn flush_acks(&self, remote: &str, acked: &mut Vec<u64>) -> Result<(), StoreError> {
        if acked.is_empty() {
            return Ok(());
        }
        let sequences = std::mem::take(acked);
        self.store
            .mark_outbound_processed(remote.to_string(), sequences)
            .await
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
                        payload_json: item.payload.get().to_string(),
                        created_on: format_time(item.created_on),
                        attachment_grants,
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
        let (mut steps, instance) = match found {
            Ok(Ok(found)) => found,
            _ => (Vec::new(), String::new()),
        };
        if steps.is_empty() {
            steps.push(crate::subflow::Step::Log);
        }
        let event = crate::subflow::ErrorEvent {
            kind: "remote_system_error".to_string(),
            instance,
            remote_system: remote.to_string(),
            error: reason.to_string(),
            attempts,
            item_id: None,
            time: format_time(now_millis()),
        };
        crate::subflow::run(&steps, &event).await;
    }
}

fn jitter_seed(remote: &str, attempt: u32) -> u64 {
    let hash = blake3::hash(format!("{remote}/{attempt}/{}", now_millis()).as_bytes());
    u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
}
