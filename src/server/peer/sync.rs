//! A peer's push stream of queue items. A reader takes what has arrived
//! into a batch and queues it for saving while earlier batches are still
//! being saved (up to `IN_FLIGHT` of them); an acknowledger waits for each
//! batch's commit in stream order and acknowledges its sequences. The
//! writer thus finds the next batch waiting when a commit ends, instead of
//! idling while the acknowledgments go out and the next batch is read. A
//! batch is saved only if every earlier one of the stream was
//! (`store::Chain`): the first that is not ends the stream with its reason,
//! and the sender sends from there again.

use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

use super::{refusal_of, status_of};
use crate::inbound::{Caller, PeerGate, Receipt};
use crate::store::{Chain, ReceivedItem};
use crate::transport::pb::peer as pb;
use crate::transport::reverse::received_from_pb;

/// Items taken into one batch at most.
const MAX_ITEMS_PER_COMMIT: usize = 256;

/// Batches queued for saving beyond the one whose commit is awaited.
const IN_FLIGHT: usize = 2;

/// What the acknowledger does next, in stream order.
enum Next {
    /// Waits for a batch's commit and acknowledges its sequences.
    Commit(Receipt),
    /// Ends the stream, with this status when the peer can act on it.
    End(Option<Status>),
}

type Replies = mpsc::Sender<Result<pb::SyncDown, Status>>;

/// Serves one push stream of `caller` until it ends or the instance stops.
pub(super) async fn serve(
    gate: PeerGate,
    caller: Caller,
    mut incoming: Streaming<pb::SyncUp>,
    replies: Replies,
    mut stopped: watch::Receiver<bool>,
) {
    let (next, pending) = mpsc::channel(IN_FLIGHT);
    tokio::spawn(acknowledge(pending, replies.clone()));
    let chain = Chain::default();
    loop {
        let first = tokio::select! {
            first = incoming.message() => first,
            _ = stopped.changed() => break,
        };
        let first = match first {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(status) => {
                let refusal = refusal_of(&caller.name, &status);
                if refusal.is_none() {
                    tracing::debug!(target: "transport", remote_system = %caller.name, error = %status, "A peer stream ended.");
                }
                let _ = next.send(Next::End(refusal)).await;
                break;
            }
        };
        let Some((batch, broken)) = take_batch(first, &mut incoming, &replies).await else {
            return;
        };
        // What arrived before a broken message is queued and acknowledged;
        // then the stream ends, with the reason when the peer can act on it.
        if !batch.is_empty() {
            let step = match gate.receive(&caller, batch, &chain).await {
                Ok(receipt) => Next::Commit(receipt),
                Err(error) => Next::End(Some(status_of(error))),
            };
            let ends = matches!(step, Next::End(_));
            if next.send(step).await.is_err() || ends {
                return;
            }
        }
        if let Some(status) = broken {
            let _ = next
                .send(Next::End(refusal_of(&caller.name, &status)))
                .await;
            return;
        }
    }
}

/// The items of `first` and of whatever else has already arrived, without
/// waiting for more (pings answered on the way), and the error that broke
/// the stream if one did; `None` when the stream's replies are gone.
async fn take_batch(
    first: pb::SyncUp,
    incoming: &mut Streaming<pb::SyncUp>,
    replies: &Replies,
) -> Option<(Vec<ReceivedItem>, Option<Status>)> {
    let mut batch = Vec::new();
    let mut broken = None;
    let mut pending = Some(first);
    while let Some(message) = pending.take() {
        match message.message {
            Some(pb::sync_up::Message::Item(item)) => batch.push(received_from_pb(item)),
            Some(pb::sync_up::Message::Ping(ping)) => {
                let pong = pb::SyncDown {
                    message: Some(pb::sync_down::Message::Pong(pb::Pong { nonce: ping.nonce })),
                };
                replies.send(Ok(pong)).await.ok()?;
            }
            // Only a Pull stream carries it; a sender has no business
            // asking here.
            Some(
                pb::sync_up::Message::Deliver(_)
                | pb::sync_up::Message::Left(_)
                | pb::sync_up::Message::Reconcile(_),
            )
            | None => {}
        }
        if batch.len() >= MAX_ITEMS_PER_COMMIT {
            break;
        }
        tokio::select! {
            biased;
            next = incoming.message() => match next {
                Ok(Some(message)) => pending = Some(message),
                Ok(None) => {}
                Err(status) => broken = Some(status),
            },
            () = std::future::ready(()) => {}
        }
    }
    Some((batch, broken))
}

/// Acknowledges each batch once its commit is durable, in stream order;
/// ends the stream at the first batch not saved, with why.
async fn acknowledge(mut pending: mpsc::Receiver<Next>, replies: Replies) {
    while let Some(next) = pending.recv().await {
        match next {
            Next::Commit(receipt) => match receipt.await {
                Ok(sequences) => {
                    for sequence in sequences {
                        let ack = pb::SyncDown {
                            message: Some(pb::sync_down::Message::Ack(pb::Ack { sequence })),
                        };
                        if replies.send(Ok(ack)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(error) => {
                    let _ = replies.send(Err(status_of(error))).await;
                    return;
                }
            },
            Next::End(status) => {
                if let Some(status) = status {
                    let _ = replies.send(Err(status)).await;
                }
                return;
            }
        }
    }
}
