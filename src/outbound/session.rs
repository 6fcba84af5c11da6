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
    /// Time to mark acknowledged items Processed, and to look for items
    /// whose wake-up was missed.
    FlushDue,
    /// New items were queued, or a remote's state changed.
    Wake,
    /// The instance is stopping.
    Stop,
}

/// Acknowledgments collected before a flush, at most.
const FLUSH_SOON: Duration = Duration::from_millis(5);
/// How often an idle session looks for items anyway.
const FLUSH_IDLE: Duration = Duration::from_millis(1000);

pub struct Session {
    remote: String,
    items: mpsc::Sender<SendItem>,
    events: mpsc::Receiver<SyncEvent>,
    stop: watch::Receiver<bool>,
    interval: Duration,
    slow: Duration,
    heartbeat: tokio::time::Interval,
    ping_sent: Option<(u64, Instant)>,
    nonce: u64,
    in_flight: BTreeSet<u64>,
    acked: Vec<u64>,
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
            interval,
            slow,
            heartbeat: every(interval, now),
            ping_sent: None,
            nonce: 0,
            in_flight: BTreeSet::new(),
            acked: Vec::new(),
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
        if self.in_flight.len() > WINDOW / 2 {
            return Ok(());
        }
        let mut batch = out
            .next_items(&self.remote, self.cursor, WINDOW - self.in_flight.len())
            .await
            .map_err(|e| SessionEnd::Failed(CallError::Store(e)))?;
        if batch.is_empty() {
            return Ok(());
        }
        // Under a bandwidth limit (read as items wait, so a change counts
        // at once), only what the allowance takes now goes; the idle flush
        // looks again soon (`FLUSH_IDLE`).
        let rate = out.sending_rate(&self.remote).await;
        let allowed = batch
            .iter()
            .take_while(|(_, item)| {
                out.bandwidth
                    .take(&self.remote, rate, item.wire_size())
                    .is_ok()
            })
            .count();
        batch.truncate(allowed);
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
        let flush = tokio::time::sleep(if self.acked.is_empty() {
            FLUSH_IDLE
        } else {
            FLUSH_SOON
        });
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
            SessionEvent::HeartbeatDue => self.heartbeat(out, *attempts).await,
            SessionEvent::Wake => None,
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

    /// Marks the acknowledged items Processed.
    async fn flush(&mut self, out: &Outbound) -> Result<(), SessionEnd> {
        out.flush_acks(&self.remote, &mut self.acked)
            .await
            .map_err(|e| SessionEnd::Failed(CallError::Store(e)))
    }

    /// Ends the session, keeping what was acknowledged.
    async fn end(&mut self, out: &Outbound, end: SessionEnd) -> SessionEnd {
        let _ = out.flush_acks(&self.remote, &mut self.acked).await;
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
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::queue::QueueStatus;
    use crate::store::{QueueFilter, Store};
    use crate::testing::{create_incidents, linked_store};

    /// A session with `hub` over plain channels: the test is the peer.
    struct Peer {
        out: Outbound,
        session: Session,
        attempts: u32,
        /// What the session sent.
        sent: mpsc::Receiver<SendItem>,
        /// What the peer answers.
        answer: mpsc::Sender<SyncEvent>,
        _stop: watch::Sender<bool>,
    }

    async fn session_with(store: &Arc<Store>) -> Peer {
        let (stop_tx, stop) = watch::channel(false);
        let out = Outbound {
            reverse: Default::default(),
            wire: Default::default(),
            bandwidth: Default::default(),
            store: store.clone(),
            health: crate::runtime::HealthBoard::default(),
            wake: Arc::new(tokio::sync::Notify::new()),
            stop,
        };
        let (items, sent) = mpsc::channel(4096);
        let (answer, events) = mpsc::channel(64);
        let session = Session::start(&out, "hub", items, events)
            .await
            .expect("the session starts");
        Peer {
            out,
            session,
            attempts: 0,
            sent,
            answer,
            _stop: stop_tx,
        }
    }

    impl Peer {
        async fn step(&mut self) -> Option<SessionEnd> {
            self.session.step(&self.out, &mut self.attempts).await
        }

        /// Steps until the session ends, at most `steps` times.
        async fn run_out(&mut self, steps: usize) -> SessionEnd {
            for _ in 0..steps {
                if let Some(end) = self.step().await {
                    return end;
                }
            }
            panic!("the session did not end within {steps} steps");
        }

        fn take_sent(&mut self) -> (Vec<u64>, Vec<u64>) {
            let (mut items, mut pings) = (Vec::new(), Vec::new());
            while let Ok(sent) = self.sent.try_recv() {
                match sent {
                    SendItem::Item(item) => items.push(item.sequence),
                    SendItem::Ping(nonce) => pings.push(nonce),
                }
            }
            (items, pings)
        }

        fn statuses(&self) -> Vec<(u64, QueueStatus)> {
            let mut items = self
                .out
                .store
                .outbound_items(&QueueFilter::default())
                .expect("the queue reads");
            items.sort_by_key(|item| item.sequence);
            items
                .into_iter()
                .map(|item| (item.sequence, item.status))
                .collect()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_sends_in_order_and_marks_what_the_peer_acknowledges() {
        let (_dir, store) = linked_store().await;
        create_incidents(&store, 3).await;
        let mut peer = session_with(&store).await;
        // The first step fills the window; the first heartbeat is due at once.
        assert_eq!(peer.step().await, None);
        assert_eq!(peer.take_sent(), (vec![1, 2, 3], vec![1]));
        assert!(
            peer.statuses()
                .iter()
                .all(|(_, status)| *status == QueueStatus::Running)
        );
        for sequence in [1, 2] {
            peer.answer.send(SyncEvent::Ack(sequence)).await.unwrap();
        }
        peer.answer.send(SyncEvent::Pong(1)).await.unwrap();
        // Two acks, the pong, then the flush that marks them.
        for _ in 0..4 {
            assert_eq!(peer.step().await, None);
        }
        assert_eq!(
            peer.statuses(),
            vec![
                (1, QueueStatus::Processed),
                (2, QueueStatus::Processed),
                (3, QueueStatus::Running)
            ]
        );
        let health = peer.out.health.get("hub").expect("hub's health");
        assert_eq!(health.health, crate::runtime::Health::Up);
        assert!(health.round_trip_ms.is_some());
        // Items queued later go out on a wake-up (or the next flush).
        create_incidents(&store, 1).await;
        peer.out.wake.notify_waiters();
        assert_eq!(peer.step().await, None);
        assert_eq!(peer.step().await, None);
        assert_eq!(peer.take_sent().0, vec![4]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_answering_pings_ends_the_session() {
        let (_dir, store) = linked_store().await;
        create_incidents(&store, 1).await;
        let mut peer = session_with(&store).await;
        assert_eq!(peer.step().await, None);
        peer.answer.send(SyncEvent::Ack(1)).await.unwrap();
        peer.answer.send(SyncEvent::Pong(1)).await.unwrap();
        let started = Instant::now();
        let end = peer.run_out(10_000).await;
        let SessionEnd::Failed(CallError::NoHeartbeat { secs }) = end else {
            panic!("expected a missed heartbeat, got {end:?}");
        };
        // Three heartbeat intervals (10 s each) without a pong.
        assert!(secs > 30, "{secs}");
        assert!(started.elapsed() > Duration::from_secs(30));
        assert_eq!(peer.take_sent().1, vec![1, 2], "one more ping, unanswered");
        assert_eq!(peer.statuses(), vec![(1, QueueStatus::Processed)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_answers_pings_but_acknowledges_nothing_ends_the_session() {
        let (_dir, store) = linked_store().await;
        create_incidents(&store, 2).await;
        let mut peer = session_with(&store).await;
        let mut pongs = 0;
        let end = loop {
            if let Some(end) = peer.step().await {
                break end;
            }
            for nonce in peer.take_sent().1 {
                peer.answer.send(SyncEvent::Pong(nonce)).await.unwrap();
                pongs += 1;
            }
        };
        let SessionEnd::Failed(CallError::Unacknowledged { items, secs }) = end else {
            panic!("expected items left unacknowledged, got {end:?}");
        };
        assert_eq!(items, 2);
        // The ack deadline: 30 s, or three heartbeat intervals.
        assert!(secs > 30, "{secs}");
        assert!(pongs >= 3, "the peer answered every ping");
    }

    #[tokio::test(start_paused = true)]
    async fn closing_stopping_or_disabling_ends_the_session_keeping_the_acks() {
        let (_dir, store) = linked_store().await;
        create_incidents(&store, 2).await;

        let mut peer = session_with(&store).await;
        assert_eq!(peer.step().await, None);
        peer.answer.send(SyncEvent::Ack(1)).await.unwrap();
        let closed = || CallError::ClosedByPeer {
            endpoint: "https://127.0.0.1:9".to_string(),
        };
        peer.answer.send(SyncEvent::Closed(closed())).await.unwrap();
        assert_eq!(peer.step().await, None, "the ack");
        assert_eq!(peer.step().await, Some(SessionEnd::Failed(closed())));
        assert_eq!(peer.statuses()[0], (1, QueueStatus::Processed));

        let mut peer = session_with(&store).await;
        assert_eq!(peer.step().await, None);
        assert_eq!(peer.take_sent().0, vec![2], "what was Running goes again");
        peer._stop.send(true).unwrap();
        assert_eq!(peer.step().await, Some(SessionEnd::Stopped));

        let mut peer = session_with(&store).await;
        peer.out.health.set_disabled(["hub".to_string()]);
        assert_eq!(peer.step().await, Some(SessionEnd::NotActive));
    }
}
