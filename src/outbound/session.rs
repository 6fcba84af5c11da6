//! One stream's life with a peer, stepped: keep the window of in-flight
//! items full, and take the next event (`SessionEvent`) and handle it, in
//! one place, until the session ends (`SessionEnd`). Built from the two
//! channels of a sync stream, so a test can be the peer.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{ACK_BATCH, ACK_DEADLINE, Outbound, SessionEnd, WINDOW};
use crate::runtime::Health;
use crate::store::RemoteState;
use crate::transport::protocol::{CallError, SendItem, SyncEvent};
use crate::worker::stopped;

/// Everything that can happen to a session.
#[derive(Debug, PartialEq)]
pub enum SessionEvent {
    /// The peer committed the item with this sequence.
    Ack(u64),
    /// The peer answered the heartbeat with this nonce.
    Pong(u64),
    /// The stream ended, and why.
    Closed(CallError),
    /// Time to ping, check progress and re-read the remote's state.
    HeartbeatDue,
    /// Time to mark acknowledged items Processed, or to look again for
    /// items a bandwidth limit held back.
    FlushDue,
    /// Items were made Ready, or a remote's state changed.
    Wake,
    /// The instance is stopping.
    Stop,
}

/// Acknowledgments collected before a flush, at most.
const FLUSH_SOON: Duration = Duration::from_millis(5);
/// How soon a session held back by a bandwidth limit looks again.
const LIMITED_RETRY: Duration = Duration::from_millis(1000);

/// How long an idle session goes without reading the queue: its heartbeat
/// looks once this long after the last look, should a wake-up ever go
/// astray.
const IDLE_LOOK: Duration = Duration::from_secs(60);

pub struct Session {
    remote: String,
    items: mpsc::Sender<SendItem>,
    events: mpsc::Receiver<SyncEvent>,
    stop: watch::Receiver<bool>,
    /// Changes when a commit made outbound items Ready (`Store::ready_items`).
    ready: watch::Receiver<u64>,
    /// Whether Ready items may wait that were not sent: set at the start,
    /// by a wake, a heartbeat `IDLE_LOOK` after the last look (should a
    /// wake-up ever go astray), a batch the window cut short, or a
    /// bandwidth limit; cleared by a look that found them all. An idle
    /// session reads nothing from the store.
    look: bool,
    /// When the session last read the queue.
    looked: Instant,
    /// Whether the bandwidth limit held items back at the last look.
    limited: bool,
    interval: Duration,
    slow: Duration,
    heartbeat: tokio::time::Interval,
    ping_sent: Option<(u64, Instant)>,
    nonce: u64,
    in_flight: BTreeSet<u64>,
    acked: Vec<u64>,
    /// The last marking of acknowledged items, queued and not yet known
    /// to be saved: the session goes on sending meanwhile.
    marking: Option<super::Marking>,
    /// The highest sequence sent.
    cursor: u64,
    /// Whether the peer has answered at all (an ack or a pong).
    confirmed: bool,
    /// The last ack, or the time the window went from empty to busy: a
    /// peer that answers pings but acknowledges nothing is stuck too.
    progress: Instant,
    /// Who the remote was when the stream opened (`HealthBoard::identity`).
    identity: String,
}

fn every(interval: Duration, first: Instant) -> tokio::time::Interval {
    let mut heartbeat = tokio::time::interval_at(first, interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat
}

impl Session {
    /// A session on an opened stream: items left Running by an earlier
    /// session or process go again (the peer drops the ones it has).
    pub async fn start(
        out: &Outbound,
        remote: &str,
        items: mpsc::Sender<SendItem>,
        events: mpsc::Receiver<SyncEvent>,
    ) -> Result<Session, CallError> {
        out.store
            .reset_running(remote.to_string(), None)
            .await
            .map_err(CallError::Store)?;
        let (interval, slow) = out
            .store
            .heartbeat()
            .unwrap_or((Duration::from_secs(10), Duration::from_secs(1)));
        out.health.update(remote, |h| h.health = Health::Up);
        let now = Instant::now();
        Ok(Session {
            identity: out.health.identity(remote),
            remote: remote.to_string(),
            items,
            events,
            stop: out.stop.clone(),
            ready: out.store.ready_items(),
            look: true,
            looked: now,
            limited: false,
            interval,
            slow,
            heartbeat: every(interval, now),
            ping_sent: None,
            nonce: 0,
            in_flight: BTreeSet::new(),
            acked: Vec::new(),
            marking: None,
            cursor: 0,
            confirmed: false,
            progress: now,
        })
    }

    /// Fills the window, waits for the next event and handles it; says
    /// how the session ended when it did.
    pub async fn step(&mut self, out: &Outbound, attempts: &mut u32) -> Option<SessionEnd> {
        if out.health.is_disabled(&self.remote)
            || out.health.identity(&self.remote) != self.identity
        {
            return Some(self.end(out, SessionEnd::NotActive).await);
        }
        if let Err(end) = self.refill(out).await {
            return Some(end);
        }
        let event = self.next_event(out).await;
        self.handle(out, event, attempts).await
    }

    /// Refills the window once half of it is acknowledged: marking items
    /// Running is a durable commit, so refilling one slot per ack would
    /// cost a commit per item.
    async fn refill(&mut self, out: &Outbound) -> Result<(), SessionEnd> {
        // Marked seen before reading, so a commit during the read counts.
        if self.ready.has_changed().unwrap_or(false) {
            self.ready.borrow_and_update();
            self.look = true;
        }
        if !self.look || self.in_flight.len() > WINDOW / 2 {
            return Ok(());
        }
        let asked = WINDOW - self.in_flight.len();
        let mut batch = out
            .next_items(&self.remote, self.cursor, asked)
            .await
            .map_err(|e| SessionEnd::Failed(CallError::Store(e)))?;
        self.looked = Instant::now();
        // A full batch: the window, not the queue, was the limit.
        self.look = batch.len() == asked;
        self.limited = false;
        if batch.is_empty() {
            return Ok(());
        }
        // Under a bandwidth limit (read as items wait, so a change counts
        // at once), only what the allowance takes now goes; the rest is
        // looked at again shortly (`LIMITED_RETRY`).
        let rate = out.sending_rate(&self.remote).await;
        let allowed = batch
            .iter()
            .take_while(|(_, item)| {
                out.bandwidth
                    .take(&self.remote, rate, item.wire_size())
                    .is_ok()
            })
            .count();
        if allowed < batch.len() {
            batch.truncate(allowed);
            self.look = true;
            self.limited = true;
        }
        if batch.is_empty() {
            return Ok(());
        }
        let ids: Vec<u64> = batch.iter().map(|(id, _)| *id).collect();
        out.store
            .mark_outbound_running(ids)
            .await
            .map_err(|e| SessionEnd::Failed(CallError::Store(e)))?;
        for (_, item) in batch {
            self.cursor = self.cursor.max(item.sequence);
            if self.in_flight.is_empty() {
                self.progress = Instant::now();
            }
            self.in_flight.insert(item.sequence);
            if self
                .items
                .send(SendItem::Item(Box::new(item)))
                .await
                .is_err()
            {
                return Err(self.gone("closed"));
            }
        }
        Ok(())
    }

    /// The next thing that happens.
    pub async fn next_event(&mut self, out: &Outbound) -> SessionEvent {
        if *self.stop.borrow() {
            return SessionEvent::Stop;
        }
        let flush = async {
            if !self.acked.is_empty() {
                tokio::time::sleep(FLUSH_SOON).await;
            } else if self.limited {
                tokio::time::sleep(LIMITED_RETRY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            event = self.events.recv() => match event {
                Some(SyncEvent::Ack(sequence)) => SessionEvent::Ack(sequence),
                Some(SyncEvent::Pong(nonce)) => SessionEvent::Pong(nonce),
                Some(SyncEvent::Closed(error)) => SessionEvent::Closed(error),
                None => SessionEvent::Closed(CallError::StreamGone {
                    remote: self.remote.clone(),
                    how: "ended",
                }),
            },
            _ = self.heartbeat.tick() => SessionEvent::HeartbeatDue,
            () = out.wake.notified() => SessionEvent::Wake,
            Ok(()) = self.ready.changed() => SessionEvent::Wake,
            () = flush => SessionEvent::FlushDue,
            () = stopped(&mut self.stop) => SessionEvent::Stop,
        }
    }

    /// Handles one event; says how the session ended when it did.
    pub async fn handle(
        &mut self,
        out: &Outbound,
        event: SessionEvent,
        attempts: &mut u32,
    ) -> Option<SessionEnd> {
        match event {
            SessionEvent::Ack(sequence) => {
                self.progress = Instant::now();
                self.in_flight.remove(&sequence);
                self.acked.push(sequence);
                self.confirm(out, attempts).await;
                if self.acked.len() >= ACK_BATCH {
                    return self.flush(out).await.err();
                }
                None
            }
            SessionEvent::Pong(nonce) => {
                if let Some((sent_nonce, sent_at)) = self.ping_sent.take() {
                    if sent_nonce == nonce {
                        let round_trip = sent_at.elapsed();
                        let health = if round_trip > self.slow {
                            Health::Slow
                        } else {
                            Health::Up
                        };
                        out.health.update(&self.remote, |h| {
                            h.health = health;
                            h.round_trip_ms = Some(crate::ids::millis(round_trip));
                        });
                    }
                }
                self.confirm(out, attempts).await;
                None
            }
            SessionEvent::Closed(error) => Some(self.end(out, SessionEnd::Failed(error)).await),
            SessionEvent::HeartbeatDue => {
                self.look |= self.looked.elapsed() >= IDLE_LOOK;
                self.heartbeat(out, *attempts).await
            }
            SessionEvent::Wake => {
                self.look = true;
                None
            }
            SessionEvent::FlushDue => self.flush(out).await.err(),
            SessionEvent::Stop => Some(self.end(out, SessionEnd::Stopped).await),
        }
    }

    /// A heartbeat: fails a peer that acknowledges nothing or stopped
    /// answering pings, pings, and follows the remote's state and the
    /// heartbeat properties (which apply without a restart).
    async fn heartbeat(&mut self, out: &Outbound, attempts: u32) -> Option<SessionEnd> {
        let ack_deadline = ACK_DEADLINE.max(self.interval * 3);
        if !self.in_flight.is_empty() && self.progress.elapsed() > ack_deadline {
            let failure = CallError::Unacknowledged {
                items: self.in_flight.len(),
                secs: self.progress.elapsed().as_secs(),
            };
            return Some(self.end(out, SessionEnd::Failed(failure)).await);
        }
        if let Some((_, sent_at)) = self.ping_sent {
            if sent_at.elapsed() > self.interval * 3 {
                let failure = CallError::NoHeartbeat {
                    secs: sent_at.elapsed().as_secs(),
                };
                return Some(self.end(out, SessionEnd::Failed(failure)).await);
            }
            if sent_at.elapsed() > self.slow {
                out.health.update(&self.remote, |h| h.health = Health::Slow);
            }
        } else {
            self.nonce += 1;
            self.ping_sent = Some((self.nonce, Instant::now()));
            if self.items.send(SendItem::Ping(self.nonce)).await.is_err() {
                return Some(self.gone("closed"));
            }
        }
        match out.remote(&self.remote).await.map(|r| r.outbound_state) {
            Some(RemoteState::Active) => {}
            Some(RemoteState::Error) if attempts > 0 => {}
            _ => return Some(self.end(out, SessionEnd::NotActive).await),
        }
        if let Ok((interval, slow)) = out.store.heartbeat() {
            self.slow = slow;
            if interval != self.interval {
                self.interval = interval;
                self.heartbeat = every(interval, Instant::now() + interval);
            }
        }
        None
    }

    /// The peer answered for the first time in this session.
    async fn confirm(&mut self, out: &Outbound, attempts: &mut u32) {
        if !self.confirmed {
            self.confirmed = true;
            out.on_confirmed(&self.remote, attempts).await;
        }
    }

    /// Queues the marking of the acknowledged items Processed, without
    /// waiting for its commit (the session sends on meanwhile); one at a
    /// time: the one before is waited for first, and its failure ends the
    /// session.
    async fn flush(&mut self, out: &Outbound) -> Result<(), SessionEnd> {
        self.settle().await?;
        self.marking = out.flush_acks(&self.remote, &mut self.acked);
        Ok(())
    }

    /// Waits until the last marking is saved.
    pub async fn settle(&mut self) -> Result<(), SessionEnd> {
        match self.marking.take() {
            Some(marking) => marking
                .await
                .map_err(|e| SessionEnd::Failed(CallError::Store(e))),
            None => Ok(()),
        }
    }

    /// Ends the session, keeping what was acknowledged.
    async fn end(&mut self, out: &Outbound, end: SessionEnd) -> SessionEnd {
        let _ = self.flush(out).await;
        let _ = self.settle().await;
        end
    }

    fn gone(&self, how: &'static str) -> SessionEnd {
        SessionEnd::Failed(CallError::StreamGone {
            remote: self.remote.clone(),
            how,
        })
    }
}

#[cfg(test)]
mod tests;
