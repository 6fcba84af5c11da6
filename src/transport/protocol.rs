//! The peer protocol's nouns, as both sides and every layer above the
//! transport use them: the version, what a caller says in `Hello` and what
//! it hears back, an item as it goes on the wire, what comes back on a
//! stream, how to reach a peer and why a call failed. Plain values; the
//! wire encoding is in `transport::peer` and `server::peer`.

use crate::attachment::Grant;
use crate::record::Operation;

/// The peer protocol version this binary speaks.
pub const PROTOCOL_VERSION: u32 = 1;

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
    pub attachment_grants: Vec<Grant>,
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
}

/// Why talking to a peer failed, split the way retries need it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The connection could not be made, or it broke: the peer or the path
    /// to it is down. Worth retrying as soon as the peer can be reached
    /// again (the dispatcher probes for that while it waits).
    #[error("{0}")]
    Lost(String),
    /// The peer answered that it does not take our calls yet: its inbound
    /// state for us is not Active (it has not validated us, or disabled
    /// us). Retried as often as a lost connection (its operator's
    /// `remote validate` is likely under way), counting attempts as usual.
    #[error("{0}")]
    NotReady(String),
    /// Worth retrying after a wait: the peer answered that it cannot take
    /// the call now (its disk is full, say), or it accepted the connection
    /// and then did not answer in time.
    #[error("{0}")]
    Transient(String),
    /// Needs the operator: pinning, credentials, roles.
    #[error("{0}")]
    Permanent(String),
}

impl CallError {
    /// Whether the peer is worth probing while a retry waits: it could not
    /// be reached, its connection broke, or it has not validated us yet, so
    /// it may answer again any moment. A peer that answered with another
    /// failure waits out its backoff (probing would only repeat it).
    pub fn worth_probing(&self) -> bool {
        matches!(self, CallError::Lost(_) | CallError::NotReady(_))
    }
}
