//! Sync streams in both directions over one side's connection. `Sync`
//! carries the caller's items up; `Pull` carries the callee's items down,
//! for a callee that never dials the caller (an edge behind NAT). The
//! conversions both share, and the client half of `Pull`.

use tokio::sync::mpsc::{Receiver, Sender};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::pb::peer as pb;
use super::peer::{
    PeerClient, call_error, grant_from_pb, grant_to_pb, operation_from_pb, operation_to_pb,
    within_deadline,
};
use super::protocol::{CallError, Delivery, ReconcileAnswer, SendItem, SyncEvent};
use crate::queue::{EncodedPayload, FieldBase};
use crate::store::ReceivedItem;

/// An item or ping as it goes on the wire.
pub fn send_to_pb(item: SendItem) -> pb::SyncUp {
    match item {
        SendItem::Item(item) => {
            let item = *item;
            let (payload, payload_json) = item.payload.parts();
            pb::SyncUp {
                message: Some(pb::sync_up::Message::Item(pb::Item {
                    sequence: item.sequence,
                    process_event: item.process_event,
                    operation: operation_to_pb(item.operation) as i32,
                    table: item.table,
                    local_correlation_id: item.local_correlation_id,
                    remote_correlation_id: item.remote_correlation_id,
                    domain: item.domain,
                    payload_json: payload_json.unwrap_or_default(),
                    payload,
                    created_on: item.created_on,
                    attachment_grants: item
                        .attachment_grants
                        .into_iter()
                        .map(grant_to_pb)
                        .collect(),
                    bases: item
                        .bases
                        .into_iter()
                        .map(|b| pb::FieldBase {
                            field: b.field,
                            digest: b.digest,
                        })
                        .collect(),
                    changed_on_ms: item.changed_on,
                    settles: item.settles,
                })),
            }
        }
        SendItem::Ping(nonce) => pb::SyncUp {
            message: Some(pb::sync_up::Message::Ping(pb::Ping { nonce })),
        },
        SendItem::Left => pb::SyncUp {
            message: Some(pb::sync_up::Message::Left(pb::Left {})),
        },
        SendItem::Reconcile(id) => pb::SyncUp {
            message: Some(pb::sync_up::Message::Reconcile(pb::ReconcileRequest { id })),
        },
        SendItem::Deliver(delivery) => pb::SyncUp {
            message: Some(pb::sync_up::Message::Deliver(pb::DeliverRequest {
                id: delivery.id,
                fetch: Some(pb::FetchRequest {
                    grant: Some(grant_to_pb(delivery.grant)),
                    offset: delivery.offset,
                }),
            })),
        },
    }
}

/// A received wire item as the inbound queue takes it: the sender's
/// record is our remote correlation, and the other way round.
pub fn received_from_pb(item: pb::Item) -> ReceivedItem {
    ReceivedItem {
        sequence: item.sequence,
        process_event: item.process_event,
        operation: operation_from_pb(item.operation),
        source_table: item.table,
        remote_correlation_id: item.local_correlation_id,
        local_correlation_id: item.remote_correlation_id,
        payload: if item.payload.is_empty() {
            EncodedPayload::from_text(item.payload_json)
        } else {
            EncodedPayload::Binary(item.payload)
        },
        attachment_grants: item
            .attachment_grants
            .into_iter()
            .map(grant_from_pb)
            .collect(),
        bases: item
            .bases
            .into_iter()
            .map(|b| FieldBase {
                field: b.field,
                digest: b.digest,
            })
            .collect(),
        changed_on: item.changed_on_ms,
        settles: item.settles,
    }
}

/// The acks and pongs coming back on a stream, as events; the last one
/// says how the stream closed. `endpoint` names the peer in errors.
pub fn sync_events(
    mut down: Streaming<pb::SyncDown>,
    endpoint: String,
    counts: Option<std::sync::Arc<super::wire::WireCounts>>,
) -> Receiver<SyncEvent> {
    let (events, received) = tokio::sync::mpsc::channel::<SyncEvent>(4096);
    tokio::spawn(async move {
        loop {
            let message = down.message().await;
            if let (Ok(Some(message)), Some(counts)) = (&message, &counts) {
                counts.received(prost::Message::encoded_len(message));
            }
            let event = match message {
                Ok(Some(pb::SyncDown {
                    message: Some(pb::sync_down::Message::Ack(ack)),
                })) => SyncEvent::Ack(ack.sequence),
                Ok(Some(pb::SyncDown {
                    message: Some(pb::sync_down::Message::Pong(pong)),
                })) => SyncEvent::Pong(pong.nonce),
                Ok(Some(_)) => continue,
                Ok(None) => SyncEvent::Closed(CallError::ClosedByPeer {
                    endpoint: endpoint.clone(),
                }),
                Err(status) => SyncEvent::Closed(match call_error(&endpoint, status) {
                    CallError::CallBroke { endpoint, cause } => {
                        CallError::StreamBroke { endpoint, cause }
                    }
                    other => other,
                }),
            };
            let closed = matches!(event, SyncEvent::Closed(_));
            if events.send(event).await.is_err() || closed {
                return;
            }
        }
    });
    received
}

/// What comes down a `Pull` stream.
#[derive(Debug)]
pub enum Pulled {
    Item(Box<ReceivedItem>),
    Ping(u64),
    /// The peer asks for a content it cannot fetch from us.
    Deliver(Delivery),
    /// The peer removed its link to us.
    Left,
    /// The peer asks to compare records with us (`ReconcileBack`, this id).
    Reconcile(u64),
    Closed(CallError),
}

/// What the puller answers on it.
#[derive(Clone, Copy, Debug)]
pub enum PullReply {
    /// Durably in our inbound queue.
    Ack(u64),
    Pong(u64),
}

impl PeerClient {
    /// Opens a `Pull` stream: the peer's items for us come down it, and
    /// our acks and pongs go up.
    pub async fn pull(&mut self) -> Result<(Sender<PullReply>, Receiver<Pulled>), CallError> {
        let (replies, outgoing) = tokio::sync::mpsc::channel::<PullReply>(4096);
        let up =
            tokio_stream::StreamExt::map(ReceiverStream::new(outgoing), |reply| pb::SyncDown {
                message: Some(match reply {
                    PullReply::Ack(sequence) => pb::sync_down::Message::Ack(pb::Ack { sequence }),
                    PullReply::Pong(nonce) => pb::sync_down::Message::Pong(pb::Pong { nonce }),
                }),
            });
        let request = self.request(up);
        let call = async {
            self.inner
                .pull(request)
                .await
                .map_err(|s| call_error(&self.endpoint, s))
        };
        let mut down = within_deadline(&self.endpoint, "the pull call", call)
            .await?
            .into_inner();
        let (pulled, received) = tokio::sync::mpsc::channel::<Pulled>(4096);
        let endpoint = self.endpoint.clone();
        let counts = self.counts.clone();
        tokio::spawn(async move {
            loop {
                let message = down.message().await;
                if let Ok(Some(message)) = &message {
                    counts.received(prost::Message::encoded_len(message));
                }
                let next = match message {
                    Ok(Some(pb::SyncUp {
                        message: Some(pb::sync_up::Message::Item(item)),
                    })) => Pulled::Item(Box::new(received_from_pb(item))),
                    Ok(Some(pb::SyncUp {
                        message: Some(pb::sync_up::Message::Ping(ping)),
                    })) => Pulled::Ping(ping.nonce),
                    Ok(Some(pb::SyncUp {
                        message:
                            Some(pb::sync_up::Message::Deliver(pb::DeliverRequest {
                                id,
                                fetch:
                                    Some(pb::FetchRequest {
                                        grant: Some(grant),
                                        offset,
                                    }),
                            })),
                    })) => Pulled::Deliver(Delivery {
                        id,
                        grant: grant_from_pb(grant),
                        offset,
                    }),
                    Ok(Some(pb::SyncUp {
                        message: Some(pb::sync_up::Message::Left(_)),
                    })) => Pulled::Left,
                    Ok(Some(pb::SyncUp {
                        message: Some(pb::sync_up::Message::Reconcile(request)),
                    })) => Pulled::Reconcile(request.id),
                    Ok(Some(_)) => continue,
                    Ok(None) => Pulled::Closed(CallError::ClosedByPeer {
                        endpoint: endpoint.clone(),
                    }),
                    Err(status) => Pulled::Closed(call_error(&endpoint, status)),
                };
                let closed = matches!(next, Pulled::Closed(_));
                if pulled.send(next).await.is_err() || closed {
                    return;
                }
            }
        });
        Ok((replies, received))
    }
}

/// The header naming the request a `Deliver` call answers.
pub const DELIVERY_HEADER: &str = "procsync-delivery";

impl PeerClient {
    /// Delivers a content the peer asked for on our `Pull` stream: streams
    /// `chunks` up a `Deliver` call (never compressed, like a fetch) and
    /// returns once the peer has taken them.
    pub async fn deliver(
        &mut self,
        id: u64,
        chunks: impl tokio_stream::Stream<Item = super::peer::FetchedChunk> + Send + 'static,
    ) -> Result<(), CallError> {
        let up = tokio_stream::StreamExt::map(chunks, super::peer::chunk_to_pb);
        let mut request = self.request(up);
        request
            .metadata_mut()
            .insert(DELIVERY_HEADER, tonic::metadata::MetadataValue::from(id));
        self.plain
            .deliver(request)
            .await
            .map_err(|s| call_error(&self.endpoint, s))?;
        Ok(())
    }

    /// Opens the comparison the peer asked for on our `Pull` stream: its
    /// questions come down the returned stream, and `answers` go up, one
    /// for each, in order (`Err`: a refusal, in words, and the last).
    pub async fn reconcile_back(
        &mut self,
        id: u64,
        answers: impl tokio_stream::Stream<Item = Result<ReconcileAnswer, String>> + Send + 'static,
    ) -> Result<super::reconcile::Asks, CallError> {
        let answers = tokio_stream::StreamExt::map(answers, |answer| match answer {
            Ok(answer) => super::reconcile::answer_to_pb(answer),
            Err(reason) => super::reconcile::refused_to_pb(reason),
        });
        let mut request = self.request(answers);
        request
            .metadata_mut()
            .insert(RECONCILE_HEADER, tonic::metadata::MetadataValue::from(id));
        let call = async {
            self.inner
                .reconcile_back(request)
                .await
                .map_err(|s| call_error(&self.endpoint, s))
        };
        let asks = within_deadline(
            &self.endpoint,
            "the reconciliation the peer asked for",
            call,
        )
        .await?
        .into_inner();
        Ok(super::reconcile::asks_of(asks, self.endpoint.clone()))
    }
}

/// The header naming the request a `ReconcileBack` call answers.
pub const RECONCILE_HEADER: &str = "procsync-reconcile";
