//! The sending side of peer sync: one dispatcher per remote system streams
//! its Ready outbound items in sequence order over one long-lived stream,
//! many in flight, and marks them Processed only when the peer acknowledges
//! a durable commit. Failures retry on timers with capped exponential
//! backoff and jitter; exhausted retries put the remote's outbound state in
//! Error and run its error handling, while probing goes on; credential and
//! pinning failures wait for `procsync remote validate`. Heartbeats tell Up
//! from Slow from Down.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::ids::{format_time, now_millis};
use crate::record::Operation;
use crate::store::{RemoteState, Store};
use crate::transport::peer::{CallError, PeerClient, PeerTarget};

/// Items in flight on one stream at most.
const WINDOW: usize = 1024;
/// Acknowledged items marked Processed together.
const ACK_BATCH: usize = 256;

/// What the dispatcher sends.
#[derive(Clone, Debug)]
pub enum SendItem {
    Item(WireItem),
    Ping(u64),
}

/// One outbound item as it goes on the wire.
#[derive(Clone, Debug)]
pub struct WireItem {
    pub sequence: u64,
    pub process_event: String,
    pub operation: Operation,
    pub table: String,
    pub local_correlation_id: String,
    pub remote_correlation_id: String,
    pub domain: String,
    pub payload_json: String,
    pub created_on: String,
    /// Keys for the peer to fetch the payload's attachments with.
    pub attachment_grants: Vec<crate::attachment::Grant>,
}

/// What comes back on a stream.
#[derive(Clone, Debug)]
pub enum SyncEvent {
    Ack(u64),
    Pong(u64),
    Closed(CallError),
}

/// Connection health as `procsync remote list` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Health {
    Up,
    Slow,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "Up",
            Health::Slow => "Slow",
            Health::Down => "Down",
        }
    }
}

/// What each dispatcher last saw, shared with the admin API.
#[derive(Clone, Debug, Serialize)]
pub struct RemoteHealth {
    pub health: Health,
    pub round_trip_ms: Option<u64>,
    pub last_error: Option<String>,
    pub attempts: u32,
    pub next_attempt_on: Option<String>,
}

#[derive(Clone, Default)]
pub struct HealthBoard(
    Arc<Mutex<HashMap<String, RemoteHealth>>>,
    Arc<Mutex<BTreeSet<String>>>,
    /// Remote systems that are Disabled: dispatchers stop sending to them
    /// at once, before their next look at the store.
    Arc<Mutex<BTreeSet<String>>>,
);

impl HealthBoard {
    /// Records which remote systems are Disabled, from the store's view.
    pub fn set_disabled(&self, disabled: impl IntoIterator<Item = String>) {
        *self.2.lock().expect("disabled lock") = disabled.into_iter().collect();
    }

    fn is_disabled(&self, remote: &str) -> bool {
        self.2.lock().expect("disabled lock").contains(remote)
    }

    /// The peer just called us: it is alive, so a dispatcher waiting out a
    /// backoff for it should try again now.
    pub fn peer_seen(&self, remote: &str) {
        self.1
            .lock()
            .expect("retry lock")
            .insert(remote.to_string());
    }

    fn take_retry_now(&self, remote: &str) -> bool {
        self.1.lock().expect("retry lock").remove(remote)
    }

    pub fn get(&self, remote: &str) -> Option<RemoteHealth> {
        self.0.lock().expect("health lock").get(remote).cloned()
    }

    fn update(&self, remote: &str, change: impl FnOnce(&mut RemoteHealth)) {
        let mut board = self.0.lock().expect("health lock");
        let entry = board.entry(remote.to_string()).or_insert(RemoteHealth {
            health: Health::Down,
            round_trip_ms: None,
            last_error: None,
            attempts: 0,
            next_attempt_on: None,
        });
        change(entry);
    }
}

/// Shared by every dispatcher.
#[derive(Clone)]
pub struct Outbound {
    pub store: Arc<Store>,
    pub health: HealthBoard,
    /// Woken when items are queued or a remote's state changes.
    pub wake: Arc<tokio::sync::Notify>,
    pub stop: tokio::sync::watch::Receiver<bool>,
}

/// How one session ended.
#[derive(Debug, PartialEq, Eq)]
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

    /// The dispatcher of one remote system.
    async fn dispatch(self, remote: String) {
        let mut attempts: u32 = 0;
        let mut stop = self.stop.clone();
        loop {
            if *stop.borrow() {
                return;
            }
            let state = self.remote_state(&remote).await;
            let Some((outbound_state, _)) = state else {
                return;
            };
            if outbound_state != RemoteState::Active
                && !(outbound_state == RemoteState::Error && attempts > 0)
            {
                // Disabled, or in Error waiting for the operator.
                self.health.update(&remote, |h| h.health = Health::Down);
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let end = self.session(&remote, &mut attempts).await;
            match end {
                SessionEnd::Stopped => return,
                SessionEnd::NotActive => continue,
                SessionEnd::Failed(CallError::Permanent(reason)) => {
                    tracing::error!(target: "outbound_queue", remote_system = %remote, error = %reason, "The peer refused us; the remote system's outbound state is now Error until `procsync remote validate`.");
                    self.health.update(&remote, |h| {
                        h.health = Health::Down;
                        h.last_error = Some(reason.clone());
                    });
                    // In-flight items go back to Ready and wait for the operator.
                    let _ = self
                        .store
                        .reset_running(remote.clone(), Some((reason.clone(), None)))
                        .await;
                    let _ = self
                        .store
                        .set_remote_states(remote.clone(), Some(RemoteState::Error), None)
                        .await;
                    self.run_error_handling(&remote, &reason, attempts).await;
                    attempts = 0;
                }
                SessionEnd::Failed(CallError::Transient(reason)) => {
                    attempts += 1;
                    let policy = match self.store.retry_policy() {
                        Ok(policy) => policy,
                        Err(_) => crate::property::RetryPolicy {
                            times: 3,
                            interval: Duration::from_secs(60),
                            max_interval: Duration::from_secs(900),
                        },
                    };
                    let delay = policy.delay(attempts, jitter_seed(&remote, attempts));
                    let next = now_millis() + delay.as_millis() as u64;
                    // Items that were in flight carry the failure and the
                    // next attempt's time until they go again.
                    let _ = self
                        .store
                        .reset_running(remote.clone(), Some((reason.clone(), Some(next))))
                        .await;
                    self.health.update(&remote, |h| {
                        h.health = Health::Down;
                        h.last_error = Some(reason.clone());
                        h.attempts = attempts;
                        h.next_attempt_on = Some(format_time(next));
                    });
                    if attempts == policy.times + 1 {
                        tracing::error!(target: "outbound_queue", remote_system = %remote, attempts, error = %reason, "Retries are exhausted; the remote system's outbound state is now Error. Items stay queued and the peer is still probed.");
                        let _ = self
                            .store
                            .set_remote_states(remote.clone(), Some(RemoteState::Error), None)
                            .await;
                        self.run_error_handling(&remote, &reason, attempts).await;
                    } else {
                        tracing::warn!(target: "outbound_queue", remote_system = %remote, attempts, retry_in_ms = delay.as_millis() as u64, error = %reason, "Sending to the peer failed; retrying on a timer.");
                    }
                    let until = tokio::time::Instant::now() + delay;
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep_until(until) => break,
                            _ = self.wake.notified() => {
                                if self.health.take_retry_now(&remote) {
                                    tracing::info!(target: "outbound_queue", remote_system = %remote, "The peer called us; retrying now.");
                                    break;
                                }
                            }
                            _ = stop.changed() => break,
                        }
                    }
                }
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
        peer_target(self.store.clone(), remote).await
    }

    /// One stream's life: connect, send, collect acks, until it fails.
    async fn session(&self, remote: &str, attempts: &mut u32) -> SessionEnd {
        let target = match self.target(remote).await {
            Ok(target) => target,
            Err(e) => return SessionEnd::Failed(e),
        };
        let mut client = match PeerClient::connect(&target).await {
            Ok(client) => client,
            Err(e) => return SessionEnd::Failed(e),
        };
        let (items, mut events) = match client.sync().await {
            Ok(stream) => stream,
            Err(e) => return SessionEnd::Failed(e),
        };
        // Items left Running by an earlier session or process go again; the
        // peer drops the ones it already has.
        if let Err(e) = self.store.reset_running(remote.to_string(), None).await {
            return SessionEnd::Failed(CallError::Transient(e.to_string()));
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
        let mut stop = self.stop.clone();
        let mut confirmed = false;
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
                            return SessionEnd::Failed(CallError::Transient(e.to_string()));
                        }
                        for (_, item) in batch {
                            cursor = cursor.max(item.sequence);
                            in_flight.insert(item.sequence);
                            if items.send(SendItem::Item(item)).await.is_err() {
                                return SessionEnd::Failed(CallError::Transient(
                                    "the stream closed".into(),
                                ));
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return SessionEnd::Failed(CallError::Transient(e)),
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
                        in_flight.remove(&sequence);
                        acked.push(sequence);
                        if !confirmed {
                            confirmed = true;
                            self.on_confirmed(remote, attempts).await;
                        }
                        if acked.len() >= ACK_BATCH {
                            if let Err(e) = self.flush_acks(remote, &mut acked).await {
                                return SessionEnd::Failed(CallError::Transient(e));
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
                                    h.round_trip_ms = Some(round_trip.as_millis() as u64);
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
                        return SessionEnd::Failed(CallError::Transient("the stream ended".into()));
                    }
                },
                _ = heartbeat.tick() => {
                    if let Some((_, sent_at)) = ping_sent {
                        if sent_at.elapsed() > interval * 3 {
                            let _ = self.flush_acks(remote, &mut acked).await;
                            return SessionEnd::Failed(CallError::Transient(format!(
                                "no heartbeat answer for {} s: the peer is down or stuck", sent_at.elapsed().as_secs()
                            )));
                        }
                        if sent_at.elapsed() > slow {
                            self.health.update(remote, |h| h.health = Health::Slow);
                        }
                    } else {
                        nonce += 1;
                        ping_sent = Some((nonce, Instant::now()));
                        if items.send(SendItem::Ping(nonce)).await.is_err() {
                            return SessionEnd::Failed(CallError::Transient("the stream closed".into()));
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
                        return SessionEnd::Failed(CallError::Transient(e));
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
        if let Some((RemoteState::Error, _)) = self.remote_state(remote).await {
            let _ = self
                .store
                .set_remote_states(remote.to_string(), Some(RemoteState::Active), None)
                .await;
            tracing::info!(target: "outbound_queue", remote_system = %remote, "The remote system's outbound state is Active again.");
        }
        *attempts = 0;
        self.health.update(remote, |h| {
            h.attempts = 0;
            h.last_error = None;
            h.next_attempt_on = None;
        });
    }

    async fn flush_acks(&self, remote: &str, acked: &mut Vec<u64>) -> Result<(), String> {
        if acked.is_empty() {
            return Ok(());
        }
        let sequences = std::mem::take(acked);
        self.store
            .mark_outbound_processed(remote.to_string(), sequences)
            .await
            .map_err(|e| e.to_string())
    }

    async fn next_items(
        &self,
        remote: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, WireItem)>, String> {
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
            Ok::<_, crate::store::StoreError>(out)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
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

/// How to reach `remote`: its endpoint and pin, our token for it, our
/// certificate.
pub async fn peer_target(store: Arc<Store>, remote: &str) -> Result<PeerTarget, CallError> {
    let name = remote.to_string();
    let found = tokio::task::spawn_blocking(move || {
        let remote = store
            .remote_systems()?
            .into_iter()
            .find(|r| r.spec.name == name);
        let secret = store.remote_secret(&name)?;
        let instance = store.instance()?;
        Ok::<_, crate::store::StoreError>((remote, secret, instance))
    })
    .await
    .map_err(|e| CallError::Transient(e.to_string()))?
    .map_err(|e| CallError::Transient(e.to_string()))?;
    let (Some(spec), secret, instance) = found else {
        return Err(CallError::Permanent(format!(
            "remote system `{remote}` no longer exists"
        )));
    };
    let Some(token) = secret else {
        return Err(CallError::Permanent(format!(
            "no token to present to `{remote}`; set it with `procsync remote token {remote}`"
        )));
    };
    Ok(PeerTarget {
        endpoint: spec.spec.endpoint,
        fingerprint: crate::config::sync::normalize_fingerprint(&spec.spec.fingerprint)
            .map_err(CallError::Permanent)?,
        token,
        cert_pem: instance.cert_pem,
        key_pem: instance.key_pem,
    })
}
