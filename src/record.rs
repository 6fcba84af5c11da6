//! Records, journal entries and record writes: the schemaless rows every table
//! holds, with the `sys_` fields ServiceNow users expect. Pure values; the
//! store persists them and never the other way round.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::attachment::{Attachment, AttachmentChanges};
use crate::condition::Fields;
use crate::domain::Domain;
use crate::ids::{Millis, format_time};

/// The operation a write performs; also the operation of a queue item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }

    pub fn parse(text: &str) -> Option<Operation> {
        match text.to_ascii_lowercase().as_str() {
            "create" | "insert" => Some(Operation::Create),
            "update" => Some(Operation::Update),
            "delete" => Some(Operation::Delete),
            _ => None,
        }
    }
}

/// The names of the system fields every record carries.
pub const SYS_FIELDS: &[&str] = &[
    "sys_id",
    "sys_created_on",
    "sys_created_by",
    "sys_updated_on",
    "sys_updated_by",
    "sys_mod_count",
    "sys_domain",
];

/// One stored record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub table: String,
    pub sys_id: String,
    pub created_on: Millis,
    pub created_by: String,
    pub updated_on: Millis,
    pub updated_by: String,
    pub mod_count: u64,
    pub domain: Domain,
    /// User fields; never holds a `sys_` field.
    pub fields: BTreeMap<String, String>,
    /// Number of journal entries ever written to this record; the next
    /// entry's position.
    pub journal_len: u64,
    /// The files the record holds, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

impl Record {
    /// Every field, the `sys_` ones included, as a client sees them.
    pub fn all_fields(&self) -> BTreeMap<String, String> {
        let mut out = self.fields.clone();
        for name in SYS_FIELDS {
            if let Some(value) = self.sys_field(name) {
                out.insert((*name).to_string(), value);
            }
        }
        out
    }

    fn sys_field(&self, name: &str) -> Option<String> {
        Some(match name {
            "sys_id" => self.sys_id.clone(),
            "sys_created_on" => format_time(self.created_on),
            "sys_created_by" => self.created_by.clone(),
            "sys_updated_on" => format_time(self.updated_on),
            "sys_updated_by" => self.updated_by.clone(),
            "sys_mod_count" => self.mod_count.to_string(),
            "sys_domain" => self.domain.to_string(),
            _ => return None,
        })
    }

    /// Approximate stored size, checked against the record size limit.
    pub fn approximate_size(&self) -> usize {
        self.fields
            .iter()
            .map(|(key, value)| key.len() + value.len() + 8)
            .sum::<usize>()
            + self.table.len()
            + 128
    }
}

/// Evaluation sees the `sys_` fields as well as user fields. `sys_` values
/// are computed only when a filter asks for them, so a filter on
/// `sys_updated_on` works and costs nothing when unused.
pub struct RecordView<'a> {
    record: &'a Record,
}

impl<'a> RecordView<'a> {
    pub fn new(record: &'a Record) -> RecordView<'a> {
        RecordView { record }
    }
}

impl Fields for RecordView<'_> {
    fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        if let Some(value) = self.record.fields.get(name) {
            return Some(Cow::Borrowed(value));
        }
        if name.starts_with("sys_") {
            return self.record.sys_field(name).map(Cow::Owned);
        }
        None
    }
}

/// One append-only journal entry (`comments`, `work_notes`, …).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// 32-hex entry id, unique across instances.
    pub id: String,
    pub field: String,
    pub author: String,
    pub created_on: Millis,
    pub text: String,
}

/// A journal entry to append, as a client sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalText {
    pub field: String,
    pub text: String,
    /// Set when the entry comes from a peer: it keeps its original id,
    /// author and time. Clients never set it.
    #[serde(default)]
    pub origin: Option<JournalOrigin>,
}

/// Where a synced journal entry was first written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalOrigin {
    pub id: String,
    pub author: String,
    pub created_on: Millis,
}

/// A requested change to one record.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordWrite {
    pub operation: Operation,
    pub table: String,
    /// Required for update and delete; optional for create.
    pub sys_id: Option<String>,
    /// Fields to set. `sys_domain` chooses the domain on create; other `sys_`
    /// fields are rejected.
    pub fields: BTreeMap<String, String>,
    pub journal: Vec<JournalText>,
    /// Attachments to add and remove (updates only).
    pub attachments: AttachmentChanges,
}

impl RecordWrite {
    /// A create that names no sys_id: the store makes a new one, so the
    /// record has no correlation yet.
    pub fn creates_fresh(&self) -> bool {
        self.operation == Operation::Create && self.sys_id.as_deref().is_none_or(str::is_empty)
    }
}

/// What one write did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResult {
    pub sys_id: String,
    pub mod_count: u64,
    /// Number of outbound queue items the write created.
    pub queued: u32,
}

/// Checks a table or field name: lowercase letters, digits and `_`, starting
/// with a letter, at most 80 characters (ServiceNow's column-name rules).
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 80
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{kind} name `{name}` is invalid: use lowercase letters, digits and `_`, starting with a letter (at most 80 characters)"
        ))
    }
}
