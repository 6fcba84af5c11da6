//! Store format 2 for the values stored most: records, journal entries,
//! queue items, correlations and flow contexts, each as its protobuf message
//! (`crate::stored`), and still read from format 1 (JSON). Records and
//! correlations have their own forms since (formats 4 and 5, `keyed`),
//! flow contexts theirs (format 3, `context`). Every other value stays
//! JSON (`stored_as_json!` below).

use prost::Message;

use super::StoreError;
use super::codec::{
    BINARY, JSON, KEYED, LEAN, PACKED, Stored, read_json, stored_as_json, unexpected,
};
use crate::attachment::Grant;
use crate::domain::Domain;
use crate::queue::payload::{operation_number, operation_of};
use crate::queue::{
    ALL_STATUSES, ConflictRule, Correlation, EncodedPayload, FetchRetry, FieldBase, FieldConflict,
    FlowContext, InboundItem, OutboundItem, QueueStatus, Winner,
};
use crate::record::JournalEntry;
use crate::stored;
use context::{context_message, context_of};

stored_as_json!(
    crate::store::InstanceInfo,
    crate::user::User,
    crate::property::RetryState,
    crate::stats::QueueCounters,
    crate::stats::MinuteCounts,
    super::content::ContentInfo,
    super::sync_objects::StoredSyncObject,
    super::enrol::Invite,
    super::load::Load,
    super::reconcile::Reconciliation,
    std::collections::BTreeSet<(String, String)>,
);

/// Appends `message` stored in format `format`: the format byte, then the
/// message.
fn write_message(format: u8, message: &impl Message, out: &mut Vec<u8>) {
    out.reserve(1 + message.encoded_len());
    out.push(format);
    message.encode(out).expect("a Vec grows to fit");
}

/// Implements `Stored` for a type with a format-2 message: written as the
/// message under format byte `$format` (2, or 5 for a message that may
/// leave out what another part of it holds), read from either or from
/// format 1.
macro_rules! stored_compact {
    ($($t:ty => $message:ty, $to:ident, $from:ident, $format:ident;)*) => {
        $(impl Stored for $t {
            fn write(&self, out: &mut Vec<u8>) {
                write_message($format, &$to(self), out);
            }
            fn read(version: u8, body: &[u8]) -> Result<Self, StoreError> {
                match version {
                    JSON => read_json(body),
                    v if v == BINARY || v == $format => $from(<$message>::decode(body).map_err(|e| {
                        StoreError::Corrupt(format!("stored value does not decode: {e}"))
                    })?)
                    .map_err(|e| StoreError::Corrupt(format!("stored value does not decode: {e}"))),
                    other => Err(unexpected(other)),
                }
            }
        })*
    };
}

stored_compact! {
    JournalEntry => stored::JournalEntry, journal_message, journal_of, BINARY;
    OutboundItem => stored::OutboundItem, outbound_message, outbound_of, LEAN;
    InboundItem => stored::InboundItem, inbound_message, inbound_of, LEAN;
}

/// Flow contexts: written in format 3 (`context::pack`), read from any.
impl Stored for FlowContext {
    fn write(&self, out: &mut Vec<u8>) {
        context::pack(&context_message(self).encode_to_vec(), out);
    }

    fn read(version: u8, body: &[u8]) -> Result<Self, StoreError> {
        let message = match version {
            JSON => return read_json(body),
            BINARY => stored::FlowContext::decode(body),
            PACKED => stored::FlowContext::decode(context::unpack(body)?.as_slice()),
            other => return Err(unexpected(other)),
        };
        message
            .map_err(|e| e.to_string())
            .and_then(context_of)
            .map_err(|e| StoreError::Corrupt(format!("stored value does not decode: {e}")))
    }
}

fn domain_of(text: String) -> Result<Domain, String> {
    Domain::try_from(text)
}

/// A status in a message: its place in `ALL_STATUSES` (the index's
/// `code`) plus one, so that 0 stays "absent".
pub(super) fn status_number(status: QueueStatus) -> u32 {
    u32::from(super::queue_index::code(status)) + 1
}

pub(super) fn status_of(number: u32) -> Result<QueueStatus, String> {
    number
        .checked_sub(1)
        .and_then(|place| ALL_STATUSES.get(place as usize))
        .copied()
        .ok_or_else(|| format!("status number {number} is unknown"))
}

fn journal_message(entry: &JournalEntry) -> stored::JournalEntry {
    stored::JournalEntry {
        id: entry.id.clone(),
        field: entry.field.clone(),
        author: entry.author.clone(),
        created_on: entry.created_on,
        text: entry.text.clone(),
    }
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "every conversion from a message has the same shape"
)]
fn journal_of(message: stored::JournalEntry) -> Result<JournalEntry, String> {
    Ok(JournalEntry {
        id: message.id,
        field: message.field,
        author: message.author,
        created_on: message.created_on,
        text: message.text,
    })
}

fn bases_message(bases: &[FieldBase]) -> Vec<stored::FieldBase> {
    bases
        .iter()
        .map(|b| stored::FieldBase {
            field: b.field.clone(),
            digest: b.digest.clone(),
        })
        .collect()
}

fn bases_of(bases: Vec<stored::FieldBase>) -> Vec<FieldBase> {
    bases
        .into_iter()
        .map(|b| FieldBase {
            field: b.field,
            digest: b.digest,
        })
        .collect()
}

// Field numbers of `Payload` in store.proto: the record it is of.
const PAYLOAD_TABLE: u32 = 4;
const PAYLOAD_SYS_ID: u32 = 5;

/// The table and record id a binary payload holds, read without decoding
/// the rest (they come before its fields, as prost writes them); `None`
/// when it does not read.
fn payload_key(payload: &[u8]) -> Option<(&str, &str)> {
    let (mut table, mut sys_id) = ("", "");
    let mut at = 0;
    while at < payload.len() {
        let field = state::next_field(payload, &mut at).ok()?;
        let text = || std::str::from_utf8(&payload[field.content.clone()]).ok();
        match field.number {
            PAYLOAD_TABLE => table = text()?,
            PAYLOAD_SYS_ID => sys_id = text()?,
            later if later > PAYLOAD_SYS_ID => break,
            _ => {}
        }
    }
    Some((table, sys_id))
}

/// Whether a queue item of `(table, id)` may leave both to its binary
/// payload (format 5): the payload holds the same.
fn key_in(payload: &[u8], (table, id): (&str, &str)) -> bool {
    !payload.is_empty() && payload_key(payload) == Some((table, id))
}

/// An item's table and record id: its own, or its payload's.
fn item_key(
    in_payload: bool,
    payload: &[u8],
    own: (String, String),
) -> Result<(String, String), String> {
    if !in_payload {
        return Ok(own);
    }
    let (table, id) = payload_key(payload)
        .ok_or_else(|| "the item's payload, which holds its table, does not read".to_string())?;
    Ok((table.to_string(), id.to_string()))
}

/// `text`, or nothing when the payload holds it (`key_in`).
fn unless_in_payload(in_payload: bool, text: &str) -> String {
    if in_payload {
        String::new()
    } else {
        text.to_string()
    }
}

fn outbound_message(item: &OutboundItem) -> stored::OutboundItem {
    let (payload, payload_json) = item.payload.parts();
    let key_in_payload = key_in(&payload, (&item.table, &item.local_correlation_id));
    let never_sent = item.status == QueueStatus::Ready && item.sent_on.is_none();
    stored::OutboundItem {
        id: item.id,
        sequence: item.sequence,
        remote_system: item.remote_system.clone(),
        process_event: item.process_event.clone(),
        capture_definition: item.capture_definition.clone(),
        outbound_flow: item.outbound_flow.clone(),
        operation: operation_number(item.operation),
        table: unless_in_payload(key_in_payload, &item.table),
        local_correlation_id: unless_in_payload(key_in_payload, &item.local_correlation_id),
        domain: item.domain.to_string(),
        status: status_number(item.status),
        created_on: item.created_on,
        payload,
        payload_json,
        error: item.error.clone(),
        attempts: item.attempts,
        next_attempt_on: item.next_attempt_on,
        sent_on: item.sent_on,
        processed_on: item.processed_on,
        last_error: item.last_error.clone(),
        attachment_hashes: item.attachment_hashes.clone(),
        flow_contexts: item.flow_contexts.clone(),
        bases: bases_message(&item.bases),
        settles: item.settles,
        key_in_payload,
        room: if never_sent {
            bytes::Bytes::from_static(&state::ROOM_BYTES)
        } else {
            bytes::Bytes::new()
        },
    }
}

fn outbound_of(message: stored::OutboundItem) -> Result<OutboundItem, String> {
    let (table, local_correlation_id) = item_key(
        message.key_in_payload,
        &message.payload,
        (message.table, message.local_correlation_id),
    )?;
    Ok(OutboundItem {
        id: message.id,
        sequence: message.sequence,
        remote_system: message.remote_system,
        process_event: message.process_event,
        capture_definition: message.capture_definition,
        outbound_flow: message.outbound_flow,
        operation: operation_of(message.operation)?,
        table,
        local_correlation_id,
        domain: domain_of(message.domain)?,
        status: status_of(message.status)?,
        created_on: message.created_on,
        payload: EncodedPayload::from_parts(message.payload, message.payload_json),
        error: message.error,
        attempts: message.attempts,
        next_attempt_on: message.next_attempt_on,
        sent_on: message.sent_on,
        processed_on: message.processed_on,
        last_error: message.last_error,
        attachment_hashes: message.attachment_hashes,
        flow_contexts: message.flow_contexts,
        bases: bases_of(message.bases),
        settles: message.settles,
    })
}

fn rule_number(rule: ConflictRule) -> u32 {
    match rule {
        ConflictRule::Error => 1,
        ConflictRule::NewestWins => 2,
        ConflictRule::PeerWins => 3,
        ConflictRule::ThisSideWins => 4,
    }
}

fn rule_of(number: u32) -> Result<ConflictRule, String> {
    Ok(match number {
        1 => ConflictRule::Error,
        2 => ConflictRule::NewestWins,
        3 => ConflictRule::PeerWins,
        4 => ConflictRule::ThisSideWins,
        other => return Err(format!("conflict rule number {other} is unknown")),
    })
}

fn winner_number(winner: Winner) -> u32 {
    match winner {
        Winner::Peer => 1,
        Winner::Here => 2,
        Winner::Undecided => 3,
    }
}

fn winner_of(number: u32) -> Result<Winner, String> {
    Ok(match number {
        1 => Winner::Peer,
        2 => Winner::Here,
        3 => Winner::Undecided,
        other => return Err(format!("winner number {other} is unknown")),
    })
}

fn inbound_message(item: &InboundItem) -> stored::InboundItem {
    let (payload, payload_json) = item.payload.parts();
    let key_in_payload = key_in(&payload, (&item.source_table, &item.remote_correlation_id));
    stored::InboundItem {
        id: item.id,
        sequence: item.sequence,
        remote_system: item.remote_system.clone(),
        process_event: item.process_event.clone(),
        operation: operation_number(item.operation),
        source_table: unless_in_payload(key_in_payload, &item.source_table),
        remote_correlation_id: unless_in_payload(key_in_payload, &item.remote_correlation_id),
        local_correlation_id: item.local_correlation_id.clone(),
        domain: item.domain.to_string(),
        status: status_number(item.status),
        created_on: item.created_on,
        payload,
        payload_json,
        error: item.error.clone(),
        processed_on: item.processed_on,
        processing_ms: item.processing_ms,
        attachment_grants: item
            .attachment_grants
            .iter()
            .map(|g| stored::Grant {
                hash: g.hash.clone(),
                expires_at: g.expires_at,
                key: g.key.clone(),
            })
            .collect(),
        waiting: item.waiting.clone(),
        flow_contexts: item.flow_contexts.clone(),
        fetch_retries: item
            .fetch_retries
            .iter()
            .map(|(hash, r)| stored::FetchRetry {
                hash: hash.clone(),
                attempts: r.attempts,
                next_attempt_on: r.next_attempt_on,
                held: r.held,
                last_error: r.last_error.clone(),
            })
            .collect(),
        bases: bases_message(&item.bases),
        changed_on: item.changed_on,
        settles: item.settles,
        conflicts: item
            .conflicts
            .iter()
            .map(|c| stored::FieldConflict {
                field: c.field.clone(),
                here: c.here.clone(),
                peer: c.peer.clone(),
                here_on: c.here_on,
                peer_on: c.peer_on,
                rule: rule_number(c.rule),
                winner: winner_number(c.winner),
            })
            .collect(),
        key_in_payload,
    }
}

fn inbound_of(message: stored::InboundItem) -> Result<InboundItem, String> {
    let (source_table, remote_correlation_id) = item_key(
        message.key_in_payload,
        &message.payload,
        (message.source_table, message.remote_correlation_id),
    )?;
    Ok(InboundItem {
        id: message.id,
        sequence: message.sequence,
        remote_system: message.remote_system,
        process_event: message.process_event,
        operation: operation_of(message.operation)?,
        source_table,
        remote_correlation_id,
        local_correlation_id: message.local_correlation_id,
        domain: domain_of(message.domain)?,
        status: status_of(message.status)?,
        created_on: message.created_on,
        payload: EncodedPayload::from_parts(message.payload, message.payload_json),
        error: message.error,
        processed_on: message.processed_on,
        processing_ms: message.processing_ms,
        attachment_grants: message
            .attachment_grants
            .into_iter()
            .map(|g| Grant {
                hash: g.hash,
                expires_at: g.expires_at,
                key: g.key,
            })
            .collect(),
        waiting: message.waiting,
        flow_contexts: message.flow_contexts,
        fetch_retries: message
            .fetch_retries
            .into_iter()
            .map(|r| {
                (
                    r.hash,
                    FetchRetry {
                        attempts: r.attempts,
                        next_attempt_on: r.next_attempt_on,
                        held: r.held,
                        last_error: r.last_error,
                    },
                )
            })
            .collect(),
        bases: bases_of(message.bases),
        changed_on: message.changed_on,
        settles: message.settles,
        conflicts: message
            .conflicts
            .into_iter()
            .map(|c| {
                Ok(FieldConflict {
                    rule: rule_of(c.rule)?,
                    winner: winner_of(c.winner)?,
                    field: c.field,
                    here: c.here,
                    peer: c.peer,
                    here_on: c.here_on,
                    peer_on: c.peer_on,
                })
            })
            .collect::<Result<_, String>>()?,
    })
}

/// The peer's record of a stored correlation (`remote_correlation_id`),
/// without decoding the rest (its sync state is most of it).
pub(super) fn correlation_peer_id(bytes: &[u8]) -> Result<String, StoreError> {
    match super::codec::envelope(bytes)? {
        (BINARY | KEYED | LEAN, body) => stored::CorrelationPeerId::decode(body)
            .map(|m| m.remote_correlation_id)
            .map_err(|e| StoreError::Corrupt(format!("stored value does not decode: {e}"))),
        (JSON, body) => Ok(read_json::<Correlation>(body)?.remote_correlation_id),
        (other, _) => Err(unexpected(other)),
    }
}

mod context;
pub(super) mod keyed;
pub(super) mod state;
#[cfg(test)]
mod item_tests;
#[cfg(test)]
mod tests;
