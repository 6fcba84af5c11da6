//! The session stepped against a test playing the peer over plain
//! channels: order, acknowledgments, heartbeats, idling and endings.

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
                SendItem::Deliver(_) | SendItem::Left | SendItem::Reconcile(_) => {
                    panic!("only sent around a session")
                }
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
    // Two acks, the pong, then the flush that marks them (queued: the
    // session goes on while it is saved).
    for _ in 0..4 {
        assert_eq!(peer.step().await, None);
    }
    peer.session.settle().await.unwrap();
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
    // Items queued later go out at once: their commit tells the
    // session, however busy it was when it came.
    // (The paused clock runs ahead while the writer's thread works, so a
    // heartbeat may be due too.)
    create_incidents(&store, 1).await;
    loop {
        let event = peer.session.next_event(&peer.out).await;
        let woken = event == SessionEvent::Wake;
        assert!(woken || event == SessionEvent::HeartbeatDue, "{event:?}");
        let handled = peer.session.handle(&peer.out, event, &mut peer.attempts);
        assert_eq!(handled.await, None);
        if woken {
            break;
        }
    }
    assert_eq!(peer.step().await, None);
    assert_eq!(peer.take_sent().0, vec![4]);
}

#[tokio::test(start_paused = true)]
async fn an_idle_session_looks_for_items_only_when_told_or_a_minute_on() {
    let (_dir, store) = linked_store().await;
    create_incidents(&store, 1).await;
    let mut peer = session_with(&store).await;
    assert_eq!(peer.step().await, None);
    assert_eq!(peer.take_sent(), (vec![1], vec![1]));
    peer.answer.send(SyncEvent::Ack(1)).await.unwrap();
    peer.answer.send(SyncEvent::Pong(1)).await.unwrap();
    // The look that finds the queue empty, the ack, the pong and the
    // flush that marks the item, in whichever order they come.
    for _ in 0..3 {
        assert_eq!(peer.step().await, None);
    }
    while !peer.session.acked.is_empty() || peer.session.ping_sent.is_some() {
        assert_eq!(peer.step().await, None);
    }
    peer.session.settle().await.unwrap();
    assert_eq!(peer.statuses(), vec![(1, QueueStatus::Processed)]);
    assert!(!peer.session.look, "the last look found every item");
    // Idle: the next event is the heartbeat (the ping answered, the
    // one after it is 10 s on); no timer makes the session read the
    // store before it. Store calls on the writer's thread let the
    // paused clock run ahead, so the first heartbeat may be due at once.
    let event = peer.session.next_event(&peer.out).await;
    assert_eq!(event, SessionEvent::HeartbeatDue);
    let handled = peer.session.handle(&peer.out, event, &mut peer.attempts);
    assert_eq!(handled.await, None);
    assert!(
        !peer.session.look,
        "a heartbeat soon after a look reads nothing"
    );
    peer.answer.send(SyncEvent::Pong(2)).await.unwrap();
    assert_eq!(peer.step().await, None);
    // A minute after the last look, a heartbeat looks, in case a wake-up
    // went astray.
    tokio::time::advance(Duration::from_secs(60)).await;
    let event = peer.session.next_event(&peer.out).await;
    assert_eq!(event, SessionEvent::HeartbeatDue);
    let handled = peer.session.handle(&peer.out, event, &mut peer.attempts);
    assert_eq!(handled.await, None);
    assert!(peer.session.look, "a minute on, a heartbeat looks once");
    peer.answer.send(SyncEvent::Pong(3)).await.unwrap();
    assert_eq!(peer.step().await, None);
    assert!(!peer.session.look);
    let idle = Instant::now();
    let event = peer.session.next_event(&peer.out).await;
    assert_eq!(event, SessionEvent::HeartbeatDue);
    assert!(
        idle.elapsed() >= Duration::from_secs(9),
        "{:?}",
        idle.elapsed()
    );
    assert_eq!(peer.take_sent(), (vec![], vec![2, 3]));
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

#[tokio::test]
async fn a_broken_stream_puts_back_only_the_running_items_with_why() {
    let (_dir, store) = linked_store().await;
    create_incidents(&store, 4).await;
    let mut items = store.outbound_items(&QueueFilter::default()).unwrap();
    items.sort_by_key(|item| item.sequence);
    let ids: Vec<u64> = items.iter().map(|item| item.id).collect();
    store
        .mark_outbound_running(ids[..3].to_vec())
        .await
        .unwrap();
    store
        .mark_outbound_processed("hub".into(), vec![1])
        .await
        .unwrap();
    // Running items share the index with the Ready ones; a browse tells
    // them apart.
    let browse = |status| {
        let page = store
            .browse_outbound(&crate::store::Browse {
                status: Some(status),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        let mut sequences: Vec<u64> = page.items.iter().map(|i| i.sequence).collect();
        sequences.sort_unstable();
        (sequences, page.total)
    };
    assert_eq!(browse(QueueStatus::Running), (vec![2, 3], 2));
    assert_eq!(browse(QueueStatus::Ready), (vec![4], 1));
    let put_back = store
        .reset_running("hub".into(), Some(("the stream broke".into(), Some(42))))
        .await
        .unwrap();
    assert_eq!(put_back, 2);
    let mut items = store.outbound_items(&QueueFilter::default()).unwrap();
    items.sort_by_key(|item| item.sequence);
    let seen: Vec<(u64, QueueStatus, Option<&str>, Option<u64>)> = items
        .iter()
        .map(|i| {
            (
                i.sequence,
                i.status,
                i.last_error.as_deref(),
                i.next_attempt_on,
            )
        })
        .collect();
    let broke = Some("the stream broke");
    assert_eq!(
        seen,
        [
            (1, QueueStatus::Processed, None, None),
            (2, QueueStatus::Ready, broke, Some(42)),
            (3, QueueStatus::Ready, broke, Some(42)),
            (4, QueueStatus::Ready, None, None),
        ]
    );
    // The counts and the index moved with them.
    let ready = store
        .browse_outbound(&crate::store::Browse {
            status: Some(QueueStatus::Ready),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(ready.total, 3);
}
