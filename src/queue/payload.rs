//! A payload as it is stored and sent: encoded once when the change is
//! captured (the `Payload` message of store format 2), decoded where a
//! flow, a view or a check needs its parts. Text payloads (from a store of
//! format 1, or a sender that sends JSON) are read too, and a malformed
//! one is kept exactly as it came.

use bytes::Bytes;
use prost::Message;
use serde::{Deserialize, Serialize};

use super::{ChangedField, Payload, PayloadJournalEntry};
use crate::attachment::{AttachmentStrategy, PayloadAttachment, RemovedAttachment};
use crate::record::Operation;
use crate::stored;

/// An encoded payload.
#[derive(Clone, Debug, PartialEq)]
pub enum EncodedPayload {
    /// The `Payload` message (store format 2, and the peer protocol).
    Binary(Bytes),
    /// JSON text, as received: possibly malformed.
    Json(String),
}

impl EncodedPayload {
    pub fn of(payload: &Payload) -> EncodedPayload {
        EncodedPayload::Binary(stored_payload(payload).encode_to_vec().into())
    }

    /// The payload, or what is wrong with it, in words.
    pub fn decode(&self) -> Result<Payload, String> {
        match self {
            EncodedPayload::Binary(bytes) => {
                let message = stored::Payload::decode(bytes.as_ref())
                    .map_err(|e| format!("the payload is not a valid Payload message ({e})"))?;
                payload_of(message)
            }
            EncodedPayload::Json(text) => serde_json::from_str(text).map_err(|e| {
                format!(
                    "{e}; the sender must send capture_metadata, changed_fields and journal_entries"
                )
            }),
        }
    }

    /// The payload as users see it: its JSON, or, when it does not
    /// decode, the text as received (a string).
    pub fn to_json(&self) -> serde_json::Value {
        match (self.decode(), self) {
            (Ok(payload), _) => serde_json::to_value(payload).unwrap_or_default(),
            (Err(_), EncodedPayload::Json(text)) => serde_json::Value::from(text.as_str()),
            (Err(_), EncodedPayload::Binary(bytes)) => {
                serde_json::Value::from(format!("({} bytes that do not decode)", bytes.len()))
            }
        }
    }

    /// Bytes as stored.
    pub fn len(&self) -> usize {
        match self {
            EncodedPayload::Binary(bytes) => bytes.len(),
            EncodedPayload::Json(text) => text.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload as a message field holds it: the bytes of a binary
    /// one, or the text of a text one (with empty bytes).
    pub fn parts(&self) -> (Bytes, Option<String>) {
        match self {
            EncodedPayload::Binary(bytes) => (bytes.clone(), None),
            EncodedPayload::Json(text) => (Bytes::new(), Some(text.clone())),
        }
    }

    /// The payload `parts` gave, as it was.
    pub fn from_parts(bytes: Bytes, text: Option<String>) -> EncodedPayload {
        match text {
            Some(text) => EncodedPayload::Json(text),
            None => EncodedPayload::Binary(bytes),
        }
    }

    /// A text payload that reads as one is encoded; a malformed one stays
    /// text.
    pub fn from_text(text: String) -> EncodedPayload {
        match serde_json::from_str::<Payload>(&text) {
            Ok(payload) => EncodedPayload::of(&payload),
            Err(_) => EncodedPayload::Json(text),
        }
    }
}

/// Users and format-1 stores see the payload as JSON: an object (the
/// payload) or, for one that does not decode, the text as received.
impl Serialize for EncodedPayload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

/// Reads format 1: an outbound item's payload object, or an inbound item's
/// payload text.
impl<'de> Deserialize<'de> for EncodedPayload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(match value {
            serde_json::Value::String(text) => EncodedPayload::from_text(text),
            other => match Payload::deserialize(&other) {
                Ok(payload) => EncodedPayload::of(&payload),
                Err(_) => EncodedPayload::Json(other.to_string()),
            },
        })
    }
}

pub fn operation_number(operation: Operation) -> u32 {
    match operation {
        Operation::Create => 1,
        Operation::Update => 2,
        Operation::Delete => 3,
    }
}

pub fn operation_of(number: u32) -> Result<Operation, String> {
    match number {
        1 => Ok(Operation::Create),
        2 => Ok(Operation::Update),
        3 => Ok(Operation::Delete),
        other => Err(format!(
            "operation number {other} is not create, update or delete"
        )),
    }
}

fn stored_payload(payload: &Payload) -> stored::Payload {
    let meta = &payload.capture_metadata;
    stored::Payload {
        changed_by: meta.changed_by.clone(),
        timestamp: meta.timestamp.clone(),
        operation: operation_number(meta.operation),
        table: meta.table.clone(),
        sys_id: meta.sys_id.clone(),
        process_event: meta.process_event.clone(),
        changed_fields: payload
            .changed_fields
            .iter()
            .map(|f| stored::ChangedField {
                key: f.key.clone(),
                value: f.value.clone(),
                display_value: (f.display_value != f.value).then(|| f.display_value.clone()),
                changed: f.changed,
            })
            .collect(),
        journal_entries: payload
            .journal_entries
            .iter()
            .map(|e| stored::PayloadJournalEntry {
                field: e.field.clone(),
                id: e.id.clone(),
                author: e.author.clone(),
                time: e.time.clone(),
                text: e.text.clone(),
            })
            .collect(),
        attachments: payload
            .attachments
            .iter()
            .map(|a| stored::PayloadAttachment {
                sys_id: a.sys_id.clone(),
                file_name: a.file_name.clone(),
                content_type: a.content_type.clone(),
                size: a.size,
                hash: a.hash.clone(),
                added: a.added,
            })
            .collect(),
        removed_attachments: payload
            .removed_attachments
            .iter()
            .map(|a| stored::RemovedAttachment {
                sys_id: a.sys_id.clone(),
                file_name: a.file_name.clone(),
                hash: a.hash.clone(),
            })
            .collect(),
        attachment_strategy: match payload.attachment_strategy {
            None => 0,
            Some(AttachmentStrategy::All) => 1,
            Some(AttachmentStrategy::Deltas) => 2,
        },
    }
}

fn payload_of(message: stored::Payload) -> Result<Payload, String> {
    Ok(Payload {
        capture_metadata: super::CaptureMetadata {
            changed_by: message.changed_by,
            timestamp: message.timestamp,
            operation: operation_of(message.operation)?,
            table: message.table,
            sys_id: message.sys_id,
            process_event: message.process_event,
        },
        changed_fields: message
            .changed_fields
            .into_iter()
            .map(|f| ChangedField {
                display_value: f.display_value.unwrap_or_else(|| f.value.clone()),
                key: f.key,
                value: f.value,
                changed: f.changed,
            })
            .collect(),
        journal_entries: message
            .journal_entries
            .into_iter()
            .map(|e| PayloadJournalEntry {
                field: e.field,
                id: e.id,
                author: e.author,
                time: e.time,
                text: e.text,
            })
            .collect(),
        attachments: message
            .attachments
            .into_iter()
            .map(|a| PayloadAttachment {
                sys_id: a.sys_id,
                file_name: a.file_name,
                content_type: a.content_type,
                size: a.size,
                hash: a.hash,
                added: a.added,
            })
            .collect(),
        removed_attachments: message
            .removed_attachments
            .into_iter()
            .map(|a| RemovedAttachment {
                sys_id: a.sys_id,
                file_name: a.file_name,
                hash: a.hash,
            })
            .collect(),
        attachment_strategy: match message.attachment_strategy {
            0 => None,
            1 => Some(AttachmentStrategy::All),
            2 => Some(AttachmentStrategy::Deltas),
            other => return Err(format!("attachment strategy number {other} is unknown")),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_survives_encoding_and_text_is_read() {
        let payload: Payload = serde_json::from_value(serde_json::json!({
            "capture_metadata": {"changed_by": "admin", "timestamp": "2026-12-04 10:00:00",
                "operation": "update", "table": "incident", "sys_id": "abc", "process_event": "pe"},
            "changed_fields": [
                {"key": "state", "value": "2", "display_value": "2", "changed": true},
                {"key": "caller", "value": "x1", "display_value": "Ann", "changed": false}],
            "journal_entries": [{"field": "comments", "id": "j1", "author": "ann",
                "time": "2026-12-04 10:00:00", "text": "hi"}],
            "attachment_strategy": "deltas"
        }))
        .unwrap();
        let encoded = EncodedPayload::of(&payload);
        assert_eq!(encoded.decode().unwrap(), payload);
        let text = serde_json::to_string(&payload).unwrap();
        assert_eq!(EncodedPayload::from_text(text.clone()), encoded);
        assert!(
            encoded.len() < text.len() / 2,
            "{} vs {}",
            encoded.len(),
            text.len()
        );

        let broken = EncodedPayload::from_text("not json".to_string());
        assert_eq!(broken, EncodedPayload::Json("not json".to_string()));
        assert!(broken.decode().unwrap_err().contains("capture_metadata"));
        assert_eq!(broken.to_json(), serde_json::json!("not json"));
        let garbage = EncodedPayload::Binary(Bytes::from_static(&[0xff, 0xff]));
        assert!(
            garbage
                .decode()
                .unwrap_err()
                .contains("not a valid Payload")
        );
    }
}
