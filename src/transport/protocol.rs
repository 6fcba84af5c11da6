//! The peer protocol's nouns, as both sides and every layer above the
//! transport use them: the version, what a caller says in `Hello` and what
//! it hears back, an item as it goes on the wire, what comes back on a
//! stream, how to reach a peer and why a call failed. Plain values; the
//! wire encoding is in `transport::peer` and `server::peer`.

use crate::attachment::Grant;
use crate::queue::FieldBase;
use crate::record::Operation;
use crate::store::StoreError;

/// The peer protocol version this binary speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// What a caller says about itself in `Hello`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub protocol_version: u32,
    pub instance_sys_id: String,
    pub instance_name: String,
    /// The caller's remote system record for us.
    pub remote_system_sys_id: String,
    /// The caller's external_id: our record for the caller.
    pub external_id: String,
    pub process_events: Vec<String>,
    /// The last sequence the caller gave an item for us, if it says.
    pub last_sequence: Option<u64>,
    /// How the caller's inbound flows from us settle conflicts: (process
    /// event, rule).
    pub conflict_rules: Vec<(String, String)>,
}

/// What the called side answers, with what it finds wrong in the link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloAnswer {
    pub protocol_version: u32,
    pub instance_sys_id: String,
    pub instance_name: String,
    pub problems: Vec<String>,
}

/// What the dispatcher sends.
#[derive(Clone, Debug)]
pub enum SendItem {
    Item(Box<WireItem>),
    Ping(u64),
    /// On a stream the peer opened (`Pull`): asks it to deliver a content
    /// we cannot fetch, since we never dial it (boxed: every slot of a
    /// session's channel is as large as the largest variant).
    Deliver(Box<Delivery>),
    /// On a stream the peer opened (`Pull`): we removed our link to it.
    Left,
    /// On a stream the peer opened (`Pull`): asks it to open a
    /// `ReconcileBack` call, named by this id, and answer our comparison.
    Reconcile(u64),
}

/// A content a peer is asked to deliver: `id` names its `Deliver` call.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: u64,
    pub grant: crate::attachment::Grant,
    pub offset: u64,
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
    pub payload: crate::queue::EncodedPayload,
    pub created_on: String,
    /// Keys for the peer to fetch the payload's attachments with.
    pub attachment_grants: Vec<Grant>,
    pub bases: Vec<FieldBase>,
    /// When the change was made (milliseconds).
    pub changed_on: u64,
    pub settles: bool,
}

impl WireItem {
    /// About how many bytes the item takes encoded, before compression:
    /// its payload and names, and a little for the other fields.
    pub fn wire_size(&self) -> usize {
        64 + self.payload.len()
            + self.process_event.len()
            + self.table.len()
            + self.local_correlation_id.len()
            + self.remote_correlation_id.len()
            + self.domain.len()
            + self.created_on.len()
            + self
                .bases
                .iter()
                .map(|b| b.field.len() + b.digest.len() + 4)
                .sum::<usize>()
            + self
                .attachment_grants
                .iter()
                .map(|g| g.hash.len() + g.key.len() + 16)
                .sum::<usize>()
    }
}

/// What comes back on a stream.
#[derive(Clone, Debug)]
pub enum SyncEvent {
    Ack(u64),
    Pong(u64),
    Closed(CallError),
}

/// How to reach one peer.
#[derive(Clone, Debug)]
pub struct PeerTarget {
    /// `https://host:port` from the remote system.
    pub endpoint: String,
    pub fingerprint: String,
    pub token: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub link: LinkSettings,
}

/// How the connections to one peer are made and counted.
#[derive(Clone, Debug, Default)]
pub struct LinkSettings {
    /// Compress what we send and accept compressed answers (zstd).
    pub compress: bool,
    /// Where the link's bytes are counted.
    pub counts: Option<std::sync::Arc<super::wire::WireCounts>>,
}

/// Why talking to a peer failed. Each failure names what happened with
/// what; `retry()` says how the dispatcher and the fetches retry it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("cannot connect to {endpoint}: {cause}")]
    Unreachable { endpoint: String, cause: String },
    #[error("the call to {endpoint} failed: {cause}")]
    CallBroke { endpoint: String, cause: String },
    #[error("the connection to {endpoint} broke mid-stream ({cause})")]
    StreamBroke { endpoint: String, cause: String },
    #[error("{endpoint} closed the stream (the peer stopped or restarts)")]
    ClosedByPeer { endpoint: String },
    #[error("the stream to `{remote}` {how}")]
    StreamGone { remote: String, how: &'static str },
    #[error("no heartbeat answer for {secs} s: the peer is down or stuck")]
    NoHeartbeat { secs: u64 },
    /// The peer's inbound state for us is not Active; its words.
    #[error("{message}")]
    NotValidated { message: String },
    #[error(
        "{endpoint} accepted the connection but did not answer {what} within {secs} s; the peer is stuck or something between us holds the traffic"
    )]
    NoAnswer {
        endpoint: String,
        what: &'static str,
        secs: u64,
    },
    #[error(
        "{items} items were sent but the peer acknowledged none for {secs} s: it is stuck or cannot commit"
    )]
    Unacknowledged { items: usize, secs: u64 },
    /// The peer answered that it cannot take the call now; its words.
    #[error("{message}")]
    PeerBusy { message: String },
    #[error("the transfer was interrupted after {stored} of {size} bytes; it resumes from there")]
    Interrupted { stored: u64, size: u64 },
    #[error("another transfer or upload of content {hash} is under way; this one tries again")]
    ContentBusy { hash: String },
    #[error("this instance's store failed: {0}")]
    Store(StoreError),
    #[error(
        "TLS with {endpoint} failed: {cause}; check that each side pins the other's fingerprint"
    )]
    Pinning { endpoint: String, cause: String },
    /// The peer refused the call (credentials, roles, what was asked);
    /// `message` is its words.
    #[error("{endpoint} refused the call: {message}")]
    Refused { endpoint: String, message: String },
    /// What the peer sent does not check out (bytes that do not match).
    #[error("{problem}")]
    BadContent { problem: String },
    #[error("remote system `{remote}` no longer exists")]
    RemoteGone { remote: String },
    #[error("no token to present to `{remote}`; set it with `procsync remote token {remote}`")]
    NoToken { remote: String },
    #[error("the remote system's token holds characters that cannot be sent")]
    TokenNotSendable,
    /// This side's settings for the peer are unusable (an endpoint, a
    /// pinned fingerprint); the text says which and how to fix it.
    #[error("{0}")]
    Misconfigured(String),
}

/// How a failed call is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// The connection could not be made, or it broke: the peer or the path
    /// to it is down. Worth retrying as soon as the peer can be reached
    /// again (the dispatcher probes for that while it waits).
    Lost,
    /// The peer answered that it does not take our calls yet: its inbound
    /// state for us is not Active (it has not validated us, or disabled
    /// us). Retried as often as a lost connection (its operator's
    /// `remote validate` is likely under way), counting attempts as usual.
    NotReady,
    /// Worth retrying after a wait: the peer answered that it cannot take
    /// the call now (its disk is full, say), it accepted the connection and
    /// then did not answer in time, or this side's store failed.
    Transient,
    /// Needs the operator: pinning, credentials, roles, settings.
    Permanent,
}

impl CallError {
    pub fn retry(&self) -> Retry {
        use CallError::*;
        match self {
            Unreachable { .. }
            | CallBroke { .. }
            | StreamBroke { .. }
            | ClosedByPeer { .. }
            | StreamGone { .. }
            | NoHeartbeat { .. } => Retry::Lost,
            NotValidated { .. } => Retry::NotReady,
            NoAnswer { .. }
            | Unacknowledged { .. }
            | PeerBusy { .. }
            | Interrupted { .. }
            | ContentBusy { .. }
            | Store(_) => Retry::Transient,
            Pinning { .. }
            | Refused { .. }
            | BadContent { .. }
            | RemoteGone { .. }
            | NoToken { .. }
            | TokenNotSendable
            | Misconfigured(_) => Retry::Permanent,
        }
    }

    /// Whether only the operator can settle it.
    pub fn is_permanent(&self) -> bool {
        self.retry() == Retry::Permanent
    }

    /// Whether the peer is worth probing while a retry waits: it could not
    /// be reached, its connection broke, or it has not validated us yet, so
    /// it may answer again any moment. A peer that answered with another
    /// failure waits out its backoff (probing would only repeat it).
    pub fn worth_probing(&self) -> bool {
        matches!(self.retry(), Retry::Lost | Retry::NotReady)
    }
}

impl From<StoreError> for CallError {
    fn from(e: StoreError) -> Self {
        CallError::Store(e)
    }
}

impl From<tokio::task::JoinError> for CallError {
    fn from(e: tokio::task::JoinError) -> Self {
        CallError::Store(e.into())
    }
}

/// What the caller of a reconciliation asks, one message at a time.
#[derive(Clone, Debug, PartialEq)]
pub enum ReconcileAsk {
    /// What the caller syncs with us; answered by what we sync with it.
    Describe(crate::reconcile::Description),
    /// Start comparing one of our tables (`Compared` says what of it).
    Open(crate::reconcile::Compared),
    Summarize(Vec<crate::reconcile::KeyRange>),
    List(Vec<crate::reconcile::KeyRange>),
    Send(Vec<crate::reconcile::SendRecord>),
}

/// The callee's answer to one `ReconcileAsk`.
#[derive(Clone, Debug, PartialEq)]
pub enum ReconcileAnswer {
    Description(crate::reconcile::Description),
    Opened {
        count: u64,
        bounds: Option<crate::reconcile::KeyRange>,
    },
    Summaries(Vec<crate::reconcile::Summary>),
    Entries(Vec<crate::reconcile::Entry>),
    Sent(u64),
}
