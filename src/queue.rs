//! Queue items and their statuses: the outbound queue (captured changes
//! staged for one remote system) and the payload a captured change carries.
//! Pure values; the store persists them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::attachment::{AttachmentStrategy, Grant, PayloadAttachment, RemovedAttachment};
use crate::domain::Domain;
use crate::ids::Millis;
use crate::record::Operation;

pub mod payload;
pub use payload::EncodedPayload;

/// The life of a queue item. Ready and Error items are never purged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QueueStatus {
    Ready,
    Running,
    Processed,
    Error,
    Skipped,
}

pub const ALL_STATUSES: &[QueueStatus] = &[
    QueueStatus::Ready,
    QueueStatus::Running,
    QueueStatus::Processed,
    QueueStatus::Error,
    QueueStatus::Skipped,
];

impl QueueStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueStatus::Ready => "Ready",
            QueueStatus::Running => "Running",
            QueueStatus::Processed => "Processed",
            QueueStatus::Error => "Error",
            QueueStatus::Skipped => "Skipped",
        }
    }

    /// Case-insensitive: `error`, `Error` and `ERROR` all work.
    pub fn parse(text: &str) -> Result<QueueStatus, String> {
        ALL_STATUSES
            .iter()
            .copied()
            .find(|status| status.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown status `{text}`; statuses are Ready, Running, Processed, Error, Skipped"
                )
            })
    }
}

/// One captured change, staged for one remote system.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutboundItem {
    /// Instance-wide id, increasing with creation.
    pub id: u64,
    /// Position in this remote system's stream; the peer drops duplicates
    /// by (remote system, sequence).
    pub sequence: u64,
    pub remote_system: String,
    pub process_event: String,
    pub capture_definition: String,
    pub outbound_flow: String,
    pub operation: Operation,
    pub table: String,
    /// The local record's sys_id.
    pub local_correlation_id: String,
    /// The source record's domain.
    pub domain: Domain,
    pub status: QueueStatus,
    pub created_on: Millis,
    /// The `Payload`, encoded once when captured (off the store's writer
    /// thread) and sent as is.
    pub payload: EncodedPayload,
    /// Why the item is in Error, for the operator.
    #[serde(default)]
    pub error: Option<String>,
    /// Retry metadata: attempts made so far and when the next is due.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub next_attempt_on: Option<Millis>,
    /// When the item was last sent (Running); with `processed_on`, the
    /// processing time.
    #[serde(default)]
    pub sent_on: Option<Millis>,
    #[serde(default)]
    pub processed_on: Option<Millis>,
    /// The last failure to deliver it, kept after it is delivered.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Contents the payload lists: each is sent with a fresh key that lets
    /// the peer fetch it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachment_hashes: Vec<String>,
    /// Contexts of its processings, oldest first (`FlowContext` ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flow_contexts: Vec<u64>,
    /// What the fields it changes replace, as last exchanged with the
    /// remote system (the receiver tells a field only we changed from one
    /// both sides changed by them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bases: Vec<FieldBase>,
    /// Set on the item a resolved conflict sends: the receiver applies its
    /// fields as they are.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub settles: bool,
}

impl OutboundItem {
    /// Whether the item ever left for its remote system: marked Running
    /// (which stamps `sent_on`; a retry keeps it) or acknowledged.
    pub fn ever_sent(&self) -> bool {
        self.sent_on.is_some() || self.status == QueueStatus::Processed
    }
}

/// The retry state of one content's fetch for one inbound item.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRetry {
    /// Failed fetches in a row that moved no bytes.
    pub attempts: u32,
    /// When the next fetch is due.
    pub next_attempt_on: Millis,
    /// Bytes of the content held at the last failure: a fetch that moved
    /// bytes since starts the backoff over.
    pub held: u64,
    pub last_error: String,
}

/// What a captured change carries to the peer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    pub capture_metadata: CaptureMetadata,
    /// The included fields: a full snapshot, each saying whether it changed.
    pub changed_fields: Vec<ChangedField>,
    /// Journal entries new with this change.
    pub journal_entries: Vec<PayloadJournalEntry>,
    /// The record's attachments the capture includes (see `strategy`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<PayloadAttachment>,
    /// Attachments removed with this change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_attachments: Vec<RemovedAttachment>,
    /// Set when the capture includes attachments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment_strategy: Option<AttachmentStrategy>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaptureMetadata {
    pub changed_by: String,
    /// `YYYY-MM-DD HH:MM:SS` UTC.
    pub timestamp: String,
    pub operation: Operation,
    pub table: String,
    pub sys_id: String,
    pub process_event: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedField {
    pub key: String,
    pub value: String,
    /// The value as a person reads it. Without reference or choice tables
    /// yet, it equals `value`.
    pub display_value: String,
    pub changed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadJournalEntry {
    pub field: String,
    pub id: String,
    pub author: String,
    /// `YYYY-MM-DD HH:MM:SS` UTC.
    pub time: String,
    pub text: String,
}

/// One item received from a remote system, waiting for (or done with) its
/// inbound flow.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InboundItem {
    pub id: u64,
    /// The sender's sequence for this instance.
    pub sequence: u64,
    pub remote_system: String,
    pub process_event: String,
    pub operation: Operation,
    /// The sender's table.
    pub source_table: String,
    /// The sender's record (its local correlation id).
    pub remote_correlation_id: String,
    /// Our record, once correlated (or when the sender already knew it).
    pub local_correlation_id: String,
    /// The inbound API user's domain.
    pub domain: Domain,
    pub status: QueueStatus,
    pub created_on: Millis,
    /// The payload exactly as received (possibly malformed).
    pub payload: EncodedPayload,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub processed_on: Option<Millis>,
    /// How long the inbound flow took, in milliseconds.
    #[serde(default)]
    pub processing_ms: Option<u64>,
    /// Keys the sender issued for fetching the payload's attachments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachment_grants: Vec<Grant>,
    /// Why a Ready item has not run yet (an attachment fetch that failed
    /// and will be tried again); cleared when it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Contexts of its processings, oldest first (`FlowContext` ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flow_contexts: Vec<u64>,
    /// Where fetching each of its attachments' contents stands after a
    /// failure, by content hash: kept with the item so a restart neither
    /// forgets the attempts nor fetches before the next one is due.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fetch_retries: BTreeMap<String, FetchRetry>,
    /// The sender's last exchanged value of each field it changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bases: Vec<FieldBase>,
    /// When the sender made the change (its clock, milliseconds); 0 from
    /// a sender that does not say.
    #[serde(default)]
    pub changed_on: Millis,
    /// The sender settled a conflict with this item: applied as it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub settles: bool,
    /// The conflicts holding it in Error (the `error` rule), until
    /// `queue inbound resolve` settles them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<FieldConflict>,
}

impl InboundItem {
    /// What a processing of the item started from, as its flow context
    /// shows it. All but the record the item named are in the item for
    /// good, so they are told when the context is read rather than stored
    /// with every apply (`stored_inputs` is what is; contexts stored by
    /// older binaries have them all). A payload that does not parse shows
    /// no fields.
    pub fn context_inputs(&self) -> serde_json::Value {
        let mut inputs = serde_json::json!({
            "operation": self.operation, "source_table": self.source_table,
            "remote_correlation_id": self.remote_correlation_id,
            "local_correlation_id": self.local_correlation_id,
            "payload_bytes": self.payload.len(),
        });
        if let Ok(payload) = self.payload.decode() {
            inputs["changed_fields"] = payload
                .changed_fields
                .into_iter()
                .filter(|f| f.changed)
                .map(|f| (f.key, serde_json::Value::from(f.value)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            inputs["journal_entries"] = payload.journal_entries.len().into();
            inputs["attachments"] = payload.attachments.len().into();
        }
        inputs
    }

    /// The part of `context_inputs` a processing stores: the record the
    /// item names, which its apply replaces with the record it reached.
    pub fn stored_inputs(&self) -> serde_json::Value {
        serde_json::json!({ "local_correlation_id": self.local_correlation_id })
    }
}

/// Links a local record to its counterpart on one remote system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correlation {
    pub remote_system: String,
    /// The peer's record; empty until the peer tells us.
    pub remote_correlation_id: String,
    pub table: String,
    pub local_correlation_id: String,
    pub active: bool,
    pub created_on: Millis,
    pub updated_on: Millis,
    /// What was last exchanged with the remote system for each synced
    /// field (by our field name): sent by a capture or applied from it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub synced: BTreeMap<String, Synced>,
    /// When our record was deleted (by us, captured for the remote, or by
    /// the remote's delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_on: Option<Millis>,
    /// Made by a capture whose item had not been sent: the remote cannot
    /// know the record, so it may not name it until that item (`first_item`)
    /// went out. Cleared when the remote's answer correlates the record.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsent: bool,
    /// The sequence, in the remote's stream, of the capture's item that
    /// made the correlation: while `unsent`, the record counts as sent once
    /// that item was (or was purged). Read where the remote names the
    /// record instead of noting every send in the correlation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_item: Option<u64>,
    /// Whether the pair was made from the peer's record (an item of its
    /// made or matched ours) rather than ours (a capture of ours): the
    /// key reconciliation gives the pair on both sides. `None` for
    /// correlations made before it was noted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_remote: Option<bool>,
}

/// What applying a remote's change leaves as last exchanged in the
/// correlation: these fields, and the deletion (when it deleted).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncUpdate {
    pub fields: BTreeMap<String, Synced>,
    pub deleted_on: Option<Millis>,
}

/// One field as last exchanged: a digest of its value and the time of the
/// change that set it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Synced {
    pub digest: String,
    pub on: Millis,
    /// Set by applying the remote's change (not by a capture of ours): a
    /// field still holding it has not changed here since.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_peer: bool,
}

/// How an inbound flow settles a conflict: a field the incoming change
/// sets that was also changed here since the last exchange, to another
/// value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictRule {
    /// The item waits in Error for a person (`queue inbound resolve`).
    Error,
    /// The later change wins; equal times: the greater value (a deletion
    /// beats an update), so both sides pick the same winner.
    #[default]
    NewestWins,
    PeerWins,
    ThisSideWins,
}

impl ConflictRule {
    pub const ALL: &[ConflictRule] = &[
        ConflictRule::Error,
        ConflictRule::NewestWins,
        ConflictRule::PeerWins,
        ConflictRule::ThisSideWins,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConflictRule::Error => "error",
            ConflictRule::NewestWins => "newest_wins",
            ConflictRule::PeerWins => "peer_wins",
            ConflictRule::ThisSideWins => "this_side_wins",
        }
    }

    pub fn parse(text: &str) -> Option<ConflictRule> {
        Self::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == text.trim())
    }

    pub fn is_default(&self) -> bool {
        *self == ConflictRule::default()
    }

    /// Why this side's rule and the peer's rule for the same process event
    /// would leave the two sides with different values, if they would.
    pub fn disagreement(self, peer: ConflictRule) -> Option<&'static str> {
        use ConflictRule::*;
        match (self, peer) {
            (PeerWins, PeerWins) => Some(
                "both sides take the peer's value, so each takes the other's and they swap; make one side `this_side_wins`, or both `newest_wins`",
            ),
            (ThisSideWins, ThisSideWins) => Some(
                "both sides keep their own value, so neither takes the other's; make one side `peer_wins`, or both `newest_wins`",
            ),
            (Error, Error) => Some(
                "both sides hold conflicts for a person, and each side's choice is sent to the other, so two different choices swap; keep `error` on one side only",
            ),
            (NewestWins, PeerWins | ThisSideWins) | (PeerWins | ThisSideWins, NewestWins) => Some(
                "`newest_wins` on one side and a fixed winner on the other pick different winners whenever the older change is the fixed one; use `newest_wins` on both sides, or `peer_wins` against `this_side_wins`",
            ),
            _ => None,
        }
    }
}

/// Which side's value a conflict settled on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Winner {
    Peer,
    Here,
    /// Held for a person (the `error` rule).
    Undecided,
}

/// One conflict as the item's flow context and error show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldConflict {
    /// Our field, or `(record)` when a change meets a deletion.
    pub field: String,
    /// The value here (`(deleted)` for a deleted record).
    pub here: String,
    /// The value the remote system sent (`(deleted)` for its deletion).
    pub peer: String,
    /// When each side's change was made (0: not known here, a change made
    /// without capture).
    pub here_on: Millis,
    pub peer_on: Millis,
    pub rule: ConflictRule,
    pub winner: Winner,
}

impl FieldConflict {
    /// One line: the field, both values and who won.
    pub fn describe(&self, remote: &str) -> String {
        let winner = match self.winner {
            Winner::Peer => format!("`{remote}`'s value kept"),
            Winner::Here => "this side's value kept".to_string(),
            Winner::Undecided => "held for a person".to_string(),
        };
        format!(
            "`{}`: here {:?}, from `{remote}` {:?} ({}: {winner})",
            self.field,
            self.here,
            self.peer,
            self.rule.as_str()
        )
    }
}

/// The value a change replaces, as its sender last exchanged it with the
/// receiver: the digest of field `field`'s value (`value_digest`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldBase {
    pub field: String,
    pub digest: String,
}

/// The digest both sides compare a field's value by: 16 hex digits of its
/// blake3 hash.
pub fn value_digest(value: &str) -> String {
    blake3::hash(value.as_bytes()).to_hex()[..16].to_string()
}

/// What one processing of a queue item did: the steps run, what went in
/// and came out, the error if any, how long it took. An item keeps the ids
/// of its contexts (one per processing: a retry adds one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowContext {
    pub id: u64,
    /// "outbound" or "inbound".
    pub queue: String,
    pub item_id: u64,
    /// The flow (or capture definition) that ran.
    pub flow: String,
    pub started_on: Millis,
    pub duration_ms: u64,
    /// The status the item ended in.
    pub outcome: QueueStatus,
    pub steps: Vec<FlowStep>,
    pub inputs: serde_json::Value,
    pub outputs: serde_json::Value,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowStep {
    pub name: String,
    pub detail: String,
    /// Microseconds since the processing started.
    pub at_us: u64,
}

/// Collects steps while a processing runs.
pub struct FlowTrace {
    started: std::time::Instant,
    pub started_on: Millis,
    pub flow: String,
    pub steps: Vec<FlowStep>,
    pub inputs: serde_json::Value,
    pub outputs: serde_json::Value,
    /// Set when the processing happened across processes (an outbound
    /// send and its acknowledgment) rather than while this trace ran.
    pub duration_ms: Option<u64>,
}

impl FlowTrace {
    pub fn start(started_on: Millis) -> FlowTrace {
        FlowTrace {
            started: std::time::Instant::now(),
            started_on,
            flow: String::new(),
            steps: Vec::new(),
            inputs: serde_json::Value::Null,
            outputs: serde_json::Value::Null,
            duration_ms: None,
        }
    }

    pub fn step(&mut self, name: &str, detail: impl Into<String>) {
        self.steps.push(FlowStep {
            name: name.to_string(),
            detail: detail.into(),
            at_us: crate::ids::micros(self.started.elapsed()),
        });
    }

    /// The finished context of item `item_id` in `queue`.
    pub fn finish(
        self,
        id: u64,
        queue: &str,
        item_id: u64,
        outcome: QueueStatus,
        error: Option<String>,
    ) -> FlowContext {
        FlowContext {
            id,
            queue: queue.to_string(),
            item_id,
            flow: self.flow,
            started_on: self.started_on,
            duration_ms: self
                .duration_ms
                .unwrap_or_else(|| crate::ids::millis(self.started.elapsed())),
            outcome,
            steps: self.steps,
            inputs: self.inputs,
            outputs: self.outputs,
            error,
        }
    }
}

/// Whether an operator may move a queue item from `from` to `to`: retry
/// (Error → Ready) or skip (Error or Ready → Skipped); the refusal says
/// what is allowed.
pub fn operator_transition(
    from: QueueStatus,
    to: QueueStatus,
    queue: &str,
    id: u64,
) -> Result<(), String> {
    let allowed = match to {
        QueueStatus::Ready => from == QueueStatus::Error,
        QueueStatus::Skipped => matches!(from, QueueStatus::Error | QueueStatus::Ready),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "{queue} item {id} is {}; only Error items can be retried, and only Error or Ready items skipped",
            from.as_str()
        ))
    }
}
