//! The dispatcher of one remote system, as a worker. Each step does one
//! thing in its state: read the retry state the store keeps, decide from
//! the remote's states, back off (probing the peer), open a stream, or
//! take one event of the session. A failure is recorded in the store (so
//! a restart resumes the schedule) before the next state is chosen.

use std::time::Duration;

use tokio::time::Instant;

use super::session::Session;
use super::{Outbound, PROBE_FIRST, PROBE_MAX, SessionEnd, jitter_seed, show_retry};
use crate::ids::{format_time, now_millis};
use crate::property::RetryState;
use crate::runtime::Health;
use crate::store::RemoteState;
use crate::transport::peer::PeerClient;
use crate::worker::{Step, Worker, stopped};

/// How long a remote that waits for the operator (disabled, refused) is
/// left before its state is read again, unless a wake-up comes first.
const OPERATOR_POLL: Duration = Duration::from_secs(1);

pub struct Dispatcher {
    out: Outbound,
    remote: String,
    retry: RetryState,
    attempts: u32,
    /// When the next attempt is due after a failure.
    resume_at: Option<Instant>,
    /// Whether to probe the peer while backing off.
    probe: bool,
    /// The peer dials us (`dial = "never"`): streams come from it.
    waits_for_peer: bool,
    state: State,
}

enum State {
    /// Reading the retry state kept in the store.
    Starting,
    /// Reading the remote's states to choose what comes next.
    Deciding,
    /// Waiting for the next attempt, probing the peer.
    BackingOff(Backoff),
    /// Opening a stream to the peer.
    Connecting,
    Sending(Box<Session>),
}

struct Backoff {
    until: Instant,
    probe: bool,
    probes: u32,
    next_probe: Instant,
}

impl Dispatcher {
    pub fn new(out: Outbound, remote: String) -> Dispatcher {
        Dispatcher {
            out,
            remote,
            retry: RetryState::default(),
            attempts: 0,
            resume_at: None,
            probe: true,
            waits_for_peer: false,
            state: State::Starting,
        }
    }

    /// Its retry state lives in the store, so after a restart a remote in
    /// Error from passing failures is probed on, on the schedule it had;
    /// the schedule is kept (at most one capped interval away).
    async fn start(&mut self) -> State {
        let store = self.out.store.clone();
        let name = self.remote.clone();
        self.retry = tokio::task::spawn_blocking(move || store.remote_retry(&name))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        self.attempts = self.retry.attempts;
        let retry = self.retry.clone();
        self.out
            .health
            .update(&self.remote, |h| show_retry(h, &retry));
        let max = self.out.policy().max_interval;
        self.resume_at = self.retry.next_attempt_on.map(|at| {
            let wait = Duration::from_millis(at.saturating_sub(now_millis()));
            Instant::now() + wait.min(max)
        });
        State::Deciding
    }

    async fn decide(&mut self) -> Step<()> {
        let Some(remote) = self.out.remote(&self.remote).await else {
            // Removed from the definitions.
            return Step::Done(());
        };
        let outbound_state = remote.outbound_state;
        self.waits_for_peer = remote.spec.dial == crate::config::sync::Dial::Never;
        if self.retry.refused && outbound_state == RemoteState::Active {
            // Validated: whatever refused us is settled.
            self.retry = RetryState::default();
            self.attempts = 0;
            self.out.record_retry(&self.remote, &self.retry).await;
        }
        let probing = outbound_state == RemoteState::Error && !self.retry.refused;
        if outbound_state != RemoteState::Active && !probing {
            // Disabled, or refused by the peer: waiting for the operator.
            self.out
                .health
                .update(&self.remote, |h| h.health = Health::Down);
            self.state = State::Deciding;
            return Step::Idle(Some(Instant::now() + OPERATOR_POLL));
        }
        self.state = match self.resume_at.take() {
            Some(until) => State::BackingOff(Backoff {
                until,
                probe: self.probe,
                probes: 1,
                next_probe: Instant::now() + PROBE_FIRST,
            }),
            None => State::Connecting,
        };
        Step::Busy
    }

    /// Waits until the next attempt's time, or less: when the peer calls
    /// us, or when a probe (a connection and TLS handshake, counting no
    /// attempt, at `PROBE_FIRST` doubling up to `PROBE_MAX`) finds it
    /// reachable again, the attempt is made at once. So a long backoff
    /// never leaves a healed link idle for long.
    async fn back_off(&mut self, mut wait: Backoff) -> Step<()> {
        // A call from the peer may have come while this dispatcher was
        // busy recording the failure (its wake-up was then missed).
        if self.out.health.take_retry_now(&self.remote) {
            tracing::info!(target: "outbound_queue", remote_system = %self.remote, "The peer called us; retrying now.");
            self.state = State::Connecting;
            return Step::Busy;
        }
        let now = Instant::now();
        if now >= wait.until {
            self.state = State::Connecting;
            return Step::Busy;
        }
        if wait.probe && now >= wait.next_probe {
            wait.probes += 1;
            wait.next_probe = now + crate::property::backoff(PROBE_FIRST, PROBE_MAX, wait.probes);
            let waits_for_peer = self.waits_for_peer;
            let try_it = async {
                if waits_for_peer {
                    return self.out.reverse.waiting(&self.remote);
                }
                match self.out.target(&self.remote).await {
                    Ok(target) => PeerClient::connect(&target).await.is_ok(),
                    Err(_) => false,
                }
            };
            let mut stop = self.out.stop.clone();
            let reachable = tokio::select! {
                reachable = try_it => reachable,
                () = stopped(&mut stop) => return Step::Done(()),
            };
            if reachable {
                tracing::info!(target: "outbound_queue", remote_system = %self.remote, "The peer is reachable again; retrying now.");
                self.state = State::Connecting;
                return Step::Busy;
            }
        }
        let next = if wait.probe {
            wait.until.min(wait.next_probe)
        } else {
            wait.until
        };
        self.state = State::BackingOff(wait);
        Step::Idle(Some(next))
    }

    /// Takes the stream the peer opened for our items, if one waits;
    /// otherwise waits for one (woken when it comes).
    async fn take_stream(&mut self) -> Step<()> {
        let Some((items, events)) = self.out.reverse.take(&self.remote) else {
            self.out
                .health
                .update(&self.remote, |h| h.health = Health::Down);
            self.state = State::Deciding;
            return Step::Idle(Some(Instant::now() + OPERATOR_POLL));
        };
        match Session::start(&self.out, &self.remote, items, events).await {
            Ok(session) => {
                self.state = State::Sending(Box::new(session));
                Step::Busy
            }
            Err(e) => self.ended(SessionEnd::Failed(e), true).await,
        }
    }

    async fn connect(&mut self) -> Step<()> {
        if self.waits_for_peer {
            return self.take_stream().await;
        }
        let mut connected = false;
        let open = async {
            let target = self.out.target(&self.remote).await?;
            let mut client = PeerClient::connect(&target).await?;
            connected = true;
            client.sync().await
        };
        let mut stop = self.out.stop.clone();
        let opened = tokio::select! {
            opened = open => opened,
            () = stopped(&mut stop) => return Step::Done(()),
        };
        let started = match opened {
            Ok((items, events)) => Session::start(&self.out, &self.remote, items, events).await,
            Err(e) => Err(e),
        };
        match started {
            Ok(session) => {
                self.state = State::Sending(Box::new(session));
                Step::Busy
            }
            Err(e) => self.ended(SessionEnd::Failed(e), connected).await,
        }
    }

    /// Records how a session (or its opening) ended and chooses what comes
    /// next. `connected` says whether the peer was reached at all.
    async fn ended(&mut self, end: SessionEnd, connected: bool) -> Step<()> {
        if self.attempts == 0 && self.retry != RetryState::default() {
            // The peer answered during the session.
            self.retry = RetryState::default();
        }
        self.state = State::Deciding;
        match end {
            SessionEnd::Stopped => return Step::Done(()),
            SessionEnd::NotActive => {}
            SessionEnd::Failed(refusal) if refusal.is_permanent() => {
                let remote = &self.remote;
                let reason = format!(
                    "{refusal}; nothing is sent until `procsync remote validate {remote}` succeeds"
                );
                tracing::error!(target: "outbound_queue", remote_system = %remote, error = %reason, "The peer refused us; the remote system's outbound state is now Error until `procsync remote validate`.");
                let store = &self.out.store;
                // In-flight items go back to Ready and wait for the operator.
                let _ = store
                    .reset_running(remote.clone(), Some((reason.clone(), None)))
                    .await;
                let _ = store
                    .set_remote_states(remote.clone(), Some(RemoteState::Error), None)
                    .await;
                self.retry = RetryState {
                    attempts: self.attempts,
                    last_error: Some(reason.clone()),
                    next_attempt_on: None,
                    refused: true,
                };
                self.out.record_retry(remote, &self.retry).await;
                self.out
                    .run_error_handling(remote, &reason, self.attempts)
                    .await;
                self.attempts = 0;
            }
            SessionEnd::Failed(error) => {
                self.attempts += 1;
                let (remote, attempts) = (&self.remote, self.attempts);
                let policy = self.out.policy();
                let delay = policy.delay(attempts, jitter_seed(remote, attempts));
                let next = now_millis() + crate::ids::millis(delay);
                let reason = format!("{error}; retrying at {}", format_time(next));
                let store = &self.out.store;
                // Items that were in flight carry the failure and the next
                // attempt's time until they go again.
                let _ = store
                    .reset_running(remote.clone(), Some((reason.clone(), Some(next))))
                    .await;
                self.retry = RetryState {
                    attempts,
                    last_error: Some(reason.clone()),
                    next_attempt_on: Some(next),
                    refused: false,
                };
                self.out.record_retry(remote, &self.retry).await;
                if attempts == policy.times + 1 {
                    tracing::error!(target: "outbound_queue", remote_system = %remote, attempts, error = %reason, "Retries are exhausted; the remote system's outbound state is now Error. Items stay queued and the peer is still probed.");
                    let _ = store
                        .set_remote_states(remote.clone(), Some(RemoteState::Error), None)
                        .await;
                    self.out.run_error_handling(remote, &reason, attempts).await;
                } else {
                    tracing::warn!(target: "outbound_queue", remote_system = %remote, attempts, retry_in_ms = crate::ids::millis(delay), error = %reason, "Sending to the peer failed; retrying on a timer.");
                }
                self.resume_at = Some(Instant::now() + delay);
                // So a healed link (or a finished validation) is used
                // within seconds (`CallError::worth_probing`).
                self.probe = !connected || error.worth_probing();
            }
        }
        Step::Busy
    }
}

impl Worker for Dispatcher {
    type Output = ();

    fn name(&self) -> String {
        format!("dispatcher for `{}`", self.remote)
    }

    async fn step(&mut self) -> Step<()> {
        let state = std::mem::replace(&mut self.state, State::Deciding);
        if *self.out.stop.borrow() {
            if let State::Sending(mut session) = state {
                let mut attempts = self.attempts;
                session
                    .handle(&self.out, super::session::SessionEvent::Stop, &mut attempts)
                    .await;
            }
            return Step::Done(());
        }
        match state {
            State::Starting => {
                self.state = self.start().await;
                Step::Busy
            }
            State::Deciding => self.decide().await,
            State::BackingOff(wait) => self.back_off(wait).await,
            State::Connecting => self.connect().await,
            State::Sending(mut session) => {
                match session.step(&self.out, &mut self.attempts).await {
                    None => {
                        self.state = State::Sending(session);
                        Step::Busy
                    }
                    Some(end) => self.ended(end, true).await,
                }
            }
        }
    }
}
