//! The reconciliation call on the wire: converting its asks and answers
//! to and from protobuf (both the client here and `server::peer` use
//! these), and the client's side of the call (`ReconcileCall`: one ask,
//! one answer, each within a deadline, counting the bytes both ways).

use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::pb::peer as pb;
use super::peer::{PeerClient, call_error, within_deadline};
use super::protocol::{CallError, ReconcileAnswer, ReconcileAsk};
use crate::reconcile::{Column, Compared, Description, Entry, KeyRange, SendRecord, Summary};

/// Longest wait for one answer: the callee reads its correlated records
/// of a table when a comparison opens (about a million per few seconds).
pub const ANSWER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

fn key_bytes(key: u128) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(&key.to_be_bytes())
}

fn key_from(bytes: &[u8]) -> Result<u128, String> {
    let bytes: [u8; 16] = bytes
        .try_into()
        .map_err(|_| format!("a key or digest must be 16 bytes, not {}", bytes.len()))?;
    Ok(u128::from_be_bytes(bytes))
}

fn range_to_pb(range: KeyRange) -> pb::KeyRange {
    pb::KeyRange {
        first: key_bytes(range.first),
        last: key_bytes(range.last),
    }
}

fn range_from_pb(range: &pb::KeyRange) -> Result<KeyRange, String> {
    let range = KeyRange {
        first: key_from(&range.first)?,
        last: key_from(&range.last)?,
    };
    if range.first > range.last {
        return Err("a key range ends before it starts".to_string());
    }
    Ok(range)
}

fn description_to_pb(description: &Description) -> pb::ReconcileDescription {
    pb::ReconcileDescription {
        description_json: serde_json::to_string(description).expect("descriptions serialize"),
    }
}

fn description_from_pb(description: &pb::ReconcileDescription) -> Result<Description, String> {
    serde_json::from_str(&description.description_json)
        .map_err(|e| format!("the flows' description does not parse: {e}"))
}

pub fn ask_to_pb(ask: ReconcileAsk) -> pb::ReconcileUp {
    use pb::reconcile_up::Message as M;
    let message = match ask {
        ReconcileAsk::Describe(d) => M::Describe(description_to_pb(&d)),
        ReconcileAsk::Open(compared) => {
            let (all_fields, fields) = match compared.column {
                Column::All => (true, Vec::new()),
                Column::Names(names) => (false, names),
            };
            M::Open(pb::ReconcileOpen {
                table: compared.table,
                all_fields,
                fields,
                caller_fields: compared.names,
                journal_fields: compared.journal,
            })
        }
        ReconcileAsk::Summarize(ranges) => M::Summarize(pb::ReconcileRanges {
            ranges: ranges.into_iter().map(range_to_pb).collect(),
        }),
        ReconcileAsk::List(ranges) => M::List(pb::ReconcileRanges {
            ranges: ranges.into_iter().map(range_to_pb).collect(),
        }),
        ReconcileAsk::Send(records) => M::Send(pb::ReconcileSend {
            records: records
                .into_iter()
                .map(|r| pb::SendRecord {
                    sys_id: r.sys_id,
                    create: r.create,
                    settles: r.settles,
                })
                .collect(),
        }),
    };
    pb::ReconcileUp {
        message: Some(message),
    }
}

/// The ask in a message from the caller, or what is wrong with it.
pub fn ask_from_pb(up: pb::ReconcileUp) -> Result<ReconcileAsk, String> {
    use pb::reconcile_up::Message as M;
    let ranges = |r: &pb::ReconcileRanges| {
        r.ranges
            .iter()
            .map(range_from_pb)
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match up.message {
        None => return Err("the message asks nothing".to_string()),
        Some(M::Describe(d)) => ReconcileAsk::Describe(description_from_pb(&d)?),
        Some(M::Open(open)) => {
            if !open.all_fields && open.fields.len() != open.caller_fields.len() {
                return Err(format!(
                    "the comparison names {} fields here and {} on the caller",
                    open.fields.len(),
                    open.caller_fields.len()
                ));
            }
            ReconcileAsk::Open(Compared {
                table: open.table,
                column: if open.all_fields {
                    Column::All
                } else {
                    Column::Names(open.fields)
                },
                names: open.caller_fields,
                journal: open.journal_fields,
            })
        }
        Some(M::Summarize(r)) => ReconcileAsk::Summarize(ranges(&r)?),
        Some(M::List(r)) => ReconcileAsk::List(ranges(&r)?),
        Some(M::Send(s)) => ReconcileAsk::Send(
            s.records
                .into_iter()
                .map(|r| SendRecord {
                    sys_id: r.sys_id,
                    create: r.create,
                    settles: r.settles,
                })
                .collect(),
        ),
    })
}

pub fn answer_to_pb(answer: ReconcileAnswer) -> pb::ReconcileDown {
    use pb::reconcile_down::Message as M;
    let message = match answer {
        ReconcileAnswer::Description(d) => M::Description(description_to_pb(&d)),
        ReconcileAnswer::Opened { count, bounds } => M::Opened(pb::ReconcileOpened {
            count,
            bounds: bounds.map(range_to_pb),
        }),
        ReconcileAnswer::Summaries(summaries) => M::Summaries(pb::ReconcileSummaries {
            summaries: summaries
                .into_iter()
                .map(|s| pb::RangeSummary {
                    count: s.count,
                    digest: key_bytes(s.digest),
                })
                .collect(),
        }),
        ReconcileAnswer::Entries(entries) => M::Entries(pb::ReconcileEntries {
            entries: entries
                .into_iter()
                .map(|e| pb::ReconcileEntry {
                    key: key_bytes(e.key),
                    digest: key_bytes(e.digest),
                    on_ms: e.on,
                    deleted: e.deleted,
                    sys_id: e.sys_id,
                    fields: e
                        .fields
                        .into_iter()
                        .map(|(field, digest)| pb::FieldBase { field, digest })
                        .collect(),
                })
                .collect(),
        }),
        ReconcileAnswer::Sent(queued) => M::Sent(pb::ReconcileSent { queued }),
    };
    pb::ReconcileDown {
        message: Some(message),
    }
}

fn answer_from_pb(down: pb::ReconcileDown) -> Result<ReconcileAnswer, String> {
    use pb::reconcile_down::Message as M;
    Ok(match down.message {
        None => return Err("the peer's answer is empty".to_string()),
        Some(M::Description(d)) => ReconcileAnswer::Description(description_from_pb(&d)?),
        Some(M::Opened(o)) => ReconcileAnswer::Opened {
            count: o.count,
            bounds: o.bounds.as_ref().map(range_from_pb).transpose()?,
        },
        Some(M::Summaries(s)) => ReconcileAnswer::Summaries(
            s.summaries
                .iter()
                .map(|s| {
                    Ok(Summary {
                        count: s.count,
                        digest: key_from(&s.digest)?,
                    })
                })
                .collect::<Result<_, String>>()?,
        ),
        Some(M::Entries(e)) => ReconcileAnswer::Entries(
            e.entries
                .into_iter()
                .map(|e| {
                    Ok(Entry {
                        key: key_from(&e.key)?,
                        digest: key_from(&e.digest)?,
                        on: e.on_ms,
                        deleted: e.deleted,
                        sys_id: e.sys_id,
                        fields: e.fields.into_iter().map(|f| (f.field, f.digest)).collect(),
                    })
                })
                .collect::<Result<_, String>>()?,
        ),
        Some(M::Sent(s)) => ReconcileAnswer::Sent(s.queued),
        Some(M::Refused(_)) => return Err("the peer refused the question".to_string()),
    })
}

/// The questions arriving on a reconciliation call (`Err`: one that does
/// not read, and what is wrong with it); ends with the call.
pub fn asks_of(incoming: Streaming<pb::ReconcileUp>, remote: String) -> Asks {
    Box::pin(tokio_stream::StreamExt::map_while(
        incoming,
        move |up| match up {
            Ok(up) => Some(ask_from_pb(up)),
            Err(status) => {
                tracing::debug!(target: "reconcile", remote_system = %remote, error = %status, "A peer's reconciliation call ended.");
                None
            }
        },
    ))
}

/// The questions of one reconciliation call, read.
pub type Asks =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<ReconcileAsk, String>> + Send>>;

/// A refusal sent up a `ReconcileBack` call, which carries no status.
pub fn refused_to_pb(reason: String) -> pb::ReconcileDown {
    pb::ReconcileDown {
        message: Some(pb::reconcile_down::Message::Refused(pb::ReconcileRefused {
            reason,
        })),
    }
}

/// The caller's side of an open reconciliation call.
pub struct ReconcileCall {
    up: tokio::sync::mpsc::Sender<pb::ReconcileUp>,
    down: Streaming<pb::ReconcileDown>,
    endpoint: String,
    /// Bytes of the messages both ways so far.
    pub bytes: u64,
}

impl ReconcileCall {
    /// The asking side of a `ReconcileBack` call the peer opened: asks go
    /// to `up` (the call's answer stream), answers come on `down`.
    pub fn answered_by(
        up: tokio::sync::mpsc::Sender<pb::ReconcileUp>,
        down: Streaming<pb::ReconcileDown>,
        endpoint: String,
    ) -> ReconcileCall {
        ReconcileCall {
            up,
            down,
            endpoint,
            bytes: 0,
        }
    }

    /// Sends `ask` and waits for its answer.
    pub async fn ask(&mut self, ask: ReconcileAsk) -> Result<ReconcileAnswer, CallError> {
        self.send(ask).await?;
        self.answer().await
    }

    /// Sends `ask` without waiting: its answer is the next `answer`.
    pub async fn send(&mut self, ask: ReconcileAsk) -> Result<(), CallError> {
        let up = ask_to_pb(ask);
        self.bytes += up.encoded_len() as u64;
        self.up.send(up).await.map_err(|_| CallError::ClosedByPeer {
            endpoint: self.endpoint.clone(),
        })
    }

    /// The answer to the oldest ask not answered yet.
    pub async fn answer(&mut self) -> Result<ReconcileAnswer, CallError> {
        let answer = tokio::time::timeout(ANSWER_DEADLINE, self.down.message()).await;
        let down = match answer {
            Err(_) => {
                return Err(CallError::NoAnswer {
                    endpoint: self.endpoint.clone(),
                    what: "a reconciliation question",
                    secs: ANSWER_DEADLINE.as_secs(),
                });
            }
            Ok(Err(status)) => return Err(call_error(&self.endpoint, status)),
            Ok(Ok(None)) => {
                return Err(CallError::ClosedByPeer {
                    endpoint: self.endpoint.clone(),
                });
            }
            Ok(Ok(Some(down))) => down,
        };
        self.bytes += down.encoded_len() as u64;
        if let Some(pb::reconcile_down::Message::Refused(refused)) = down.message {
            return Err(CallError::Refused {
                endpoint: self.endpoint.clone(),
                message: refused.reason,
            });
        }
        answer_from_pb(down).map_err(|problem| CallError::BadContent {
            problem: format!("{}: {problem}", self.endpoint),
        })
    }
}

impl PeerClient {
    /// Opens a reconciliation call.
    pub async fn reconcile(&mut self) -> Result<ReconcileCall, CallError> {
        let (up, outgoing) = tokio::sync::mpsc::channel::<pb::ReconcileUp>(4);
        let request = self.request(ReceiverStream::new(outgoing));
        let call = async {
            self.inner
                .reconcile(request)
                .await
                .map_err(|s| call_error(&self.endpoint, s))
        };
        let down = within_deadline(&self.endpoint, "the reconcile call", call)
            .await?
            .into_inner();
        Ok(ReconcileCall {
            up,
            down,
            endpoint: self.endpoint.clone(),
            bytes: 0,
        })
    }
}
