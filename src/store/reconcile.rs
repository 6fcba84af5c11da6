//! Reconciliation in the store: our correlated records of one table as
//! entries to compare (`reconcile_digests`), the compared fields of the
//! few that are listed, staging the items that repair differences
//! (through `staging`, like every outbound item), and each remote system's
//! last reconciliation (`RECONCILES`): requested, running, or its report.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::compact::keyed::{correlation_at, record_at};
use super::staging::{NewItem, Staging};
use super::tables::*;
use super::writer::Txn;
use super::{Store, StoreError};
use crate::capture::Change;
use crate::domain::Domain;
use crate::ids::{Millis, format_time, now_millis};
use crate::queue::{CaptureMetadata, Correlation, Payload};
use crate::reconcile::{
    Column, Compared, Difference, Digests, DigestsBuilder, Entry, JOURNAL_FIELD, SendRecord,
    deleted_digest, journal_digest, pair_key, record_digest, with_journal,
};
use crate::record::{JournalEntry, Operation, Record};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconcileState {
    Requested,
    Running,
    Done,
    Failed,
}

impl ReconcileState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileState::Requested => "requested",
            ReconcileState::Running => "running",
            ReconcileState::Done => "done",
            ReconcileState::Failed => "failed",
        }
    }
}

/// One remote system's last reconciliation: what was asked and what it
/// found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciliation {
    pub remote_system: String,
    /// Only this table of ours, when set.
    pub table: Option<String>,
    /// Send what makes the differences equal.
    pub repair: bool,
    pub state: ReconcileState,
    pub requested_by: String,
    pub requested_on: Millis,
    pub finished_on: Option<Millis>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub tables: Vec<TableReport>,
    /// Bytes of the comparison on the wire, both ways.
    #[serde(default)]
    pub bytes_on_wire: u64,
}

/// Most differences a report lists per table (all are counted).
pub const MOST_LISTED: usize = 1000;

/// What one table pair's comparison found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableReport {
    pub table: String,
    pub peer_table: String,
    /// Correlated records compared on each side.
    pub here: u64,
    pub peer: u64,
    pub missing_here: u64,
    pub missing_there: u64,
    pub differing: u64,
    /// Items the repair queued to settle the differences (ours and the
    /// peer's).
    pub repaired: u64,
    /// Differences no flow can settle (the direction is not synced).
    pub unrepairable: u64,
    /// The differences, at most `MOST_LISTED`.
    pub differences: Vec<Difference>,
}

impl Reconciliation {
    pub fn differences(&self) -> u64 {
        self.tables
            .iter()
            .map(|t| t.missing_here + t.missing_there + t.differing)
            .sum()
    }

    pub fn repaired(&self) -> u64 {
        self.tables.iter().map(|t| t.repaired).sum()
    }

    /// One line for `remote show` and stats.
    pub fn summary(&self) -> String {
        let when = self
            .finished_on
            .map(|t| format!(" at {}", format_time(t)))
            .unwrap_or_default();
        match self.state {
            ReconcileState::Requested | ReconcileState::Running => self.state.as_str().to_string(),
            ReconcileState::Failed => format!(
                "failed{when}: {}",
                self.error.as_deref().unwrap_or("no reason kept")
            ),
            ReconcileState::Done => format!(
                "done{when}: {} records compared, {} differences, {} repaired",
                self.tables.iter().map(|t| t.here.max(t.peer)).sum::<u64>(),
                self.differences(),
                self.repaired()
            ),
        }
    }
}

impl Store {
    /// Our correlated records of `compared.table` with `remote`, over its
    /// fields and journals. A record whose item is still on its way counts as well
    /// (the peer shows it missing or different until the item arrives),
    /// and so does one whose item was skipped.
    pub fn reconcile_digests(
        &self,
        remote: &str,
        compared: &Compared,
    ) -> Result<Digests, StoreError> {
        let Compared {
            table,
            column,
            journal,
            ..
        } = compared;
        let table = table.as_str();
        let txn = self.db.begin_read()?;
        let correlations = txn.open_table(CORRELATIONS)?;
        let records = txn.open_table(RECORDS)?;
        let journals = txn.open_table(JOURNAL)?;
        let mut entries = DigestsBuilder::default();
        for row in correlations.range((table, "", "")..)? {
            let (key, value) = row?;
            let (row_table, sys_id, row_remote) = key.value();
            if row_table != table {
                break;
            }
            if row_remote != remote {
                continue;
            }
            let correlation = correlation_at(
                self.db.names(),
                (row_table, sys_id, row_remote),
                value.value(),
            )?;
            let record = match records.get((table, sys_id))? {
                Some(value) if correlation.active => {
                    Some(record_at(self.db.names(), (table, sys_id), value.value())?)
                }
                _ => None,
            };
            let mut entry = entry_of(&correlation, record.as_ref(), column);
            if !entry.deleted && !journal.is_empty() {
                let ids = journal_ids(&journals, (table, sys_id), journal)?;
                entry.digest = with_journal(entry.digest, journal_digest(ids));
            }
            entries.push(&entry);
        }
        Ok(entries.finish())
    }

    /// The compared fields of `entries` (ours), named by the caller's
    /// names, with the digest of their compared journals.
    pub fn reconcile_fields(
        &self,
        compared: &Compared,
        entries: &mut [Entry],
    ) -> Result<(), StoreError> {
        let Compared {
            table,
            column,
            names,
            journal,
        } = compared;
        let table = table.as_str();
        let txn = self.db.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        let journals = txn.open_table(JOURNAL)?;
        for entry in entries.iter_mut().filter(|e| !e.deleted) {
            if let Some(value) = records.get((table, entry.sys_id.as_str()))? {
                let record = record_at(self.db.names(), (table, &entry.sys_id), value.value())?;
                entry.fields = crate::reconcile::field_digests(column, names, &record.fields);
                if !journal.is_empty() {
                    let ids = journal_ids(&journals, (table, &entry.sys_id), journal)?;
                    entry.fields.push((
                        JOURNAL_FIELD.to_string(),
                        format!("{:032x}", journal_digest(ids)),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Queues for `remote` the items that settle differences: each record
    /// of `table` in `sends` as it is now (a deletion when it is gone), a
    /// create when the remote holds nothing for it. Returns how many items
    /// were queued; a record no capture sends to `remote` queues none.
    pub async fn stage_repairs(
        &self,
        remote: String,
        table: String,
        sends: Vec<SendRecord>,
    ) -> Result<u64, StoreError> {
        self.writer
            .submit(move |txn| stage(txn, &remote, &table, &sends))
            .await
    }

    /// Asks for a reconciliation with `remote` (refused while one runs).
    pub async fn request_reconcile(
        &self,
        remote: String,
        table: Option<String>,
        repair: bool,
        requested_by: String,
    ) -> Result<Reconciliation, StoreError> {
        self.writer
            .submit(move |txn| {
                if let Some(running) = stored(txn, &remote)?.filter(|r| {
                    matches!(r.state, ReconcileState::Requested | ReconcileState::Running)
                }) {
                    return Err(StoreError::Invalid(format!(
                        "a reconciliation with `{remote}` is already {} (asked by {}); wait for it to end",
                        running.state.as_str(),
                        running.requested_by
                    )));
                }
                let asked = Reconciliation {
                    remote_system: remote.clone(),
                    table,
                    repair,
                    state: ReconcileState::Requested,
                    requested_by,
                    requested_on: now_millis(),
                    finished_on: None,
                    error: None,
                    tables: Vec::new(),
                    bytes_on_wire: 0,
                };
                txn.open_table(RECONCILES)?
                    .insert(remote.as_str(), encode(&asked).as_slice())?;
                Ok(asked)
            })
            .await
    }

    /// Saves `reconciliation` as its remote system's last.
    pub async fn save_reconcile(&self, reconciliation: Reconciliation) -> Result<(), StoreError> {
        self.writer
            .submit(move |txn| {
                txn.open_table(RECONCILES)?.insert(
                    reconciliation.remote_system.as_str(),
                    encode(&reconciliation).as_slice(),
                )?;
                Ok(())
            })
            .await
    }

    /// The last reconciliation of each remote system.
    pub fn reconciliations(&self) -> Result<Vec<Reconciliation>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RECONCILES)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(decode(row?.1.value())?);
        }
        Ok(out)
    }
}

/// The ids of `record`'s journal entries in `fields`.
fn journal_ids(
    journals: &impl ReadableTable<(&'static str, &'static str, u64), &'static [u8]>,
    (table, sys_id): (&str, &str),
    fields: &[String],
) -> Result<Vec<String>, StoreError> {
    let mut ids = Vec::new();
    for row in journals.range((table, sys_id, 0u64)..=(table, sys_id, u64::MAX))? {
        let entry: JournalEntry = decode(row?.1.value())?;
        if fields.contains(&entry.field) {
            ids.push(entry.id);
        }
    }
    Ok(ids)
}

fn entry_of(correlation: &Correlation, record: Option<&Record>, column: &Column) -> Entry {
    let key = pair_key(
        correlation.origin_remote,
        &correlation.local_correlation_id,
        &correlation.remote_correlation_id,
    );
    match record {
        Some(record) => Entry {
            key,
            digest: record_digest(column, &record.fields),
            on: record.updated_on,
            deleted: false,
            sys_id: record.sys_id.clone(),
            fields: Vec::new(),
        },
        None => Entry {
            key,
            digest: deleted_digest(),
            on: correlation.deleted_on.unwrap_or(correlation.updated_on),
            deleted: true,
            sys_id: correlation.local_correlation_id.clone(),
            fields: Vec::new(),
        },
    }
}

fn stored(txn: &Txn<'_>, remote: &str) -> Result<Option<Reconciliation>, StoreError> {
    match txn.open_table(RECONCILES)?.get(remote)? {
        Some(value) => Ok(Some(decode(value.value())?)),
        None => Ok(None),
    }
}

fn stage(
    txn: &mut Txn<'_>,
    remote: &str,
    table: &str,
    sends: &[SendRecord],
) -> Result<u64, StoreError> {
    for send in sends.iter().filter(|s| s.create) {
        super::correlations::forget_peer_record(txn, (table, &send.sys_id, remote))?;
    }
    let now = now_millis();
    let capture = txn.capture.clone();
    let mut items = Vec::new();
    {
        let records = txn.open_table(RECORDS)?;
        let journal = txn.open_table(JOURNAL)?;
        for send in sends {
            let Some(value) = records.get((table, send.sys_id.as_str()))? else {
                if let Some(item) = deletion(&capture, remote, table, send) {
                    items.push(item);
                }
                continue;
            };
            let record = record_at(txn.names, (table, &send.sys_id), value.value())?;
            let mut entries = Vec::new();
            let range =
                (table, send.sys_id.as_str(), 0u64)..=(table, send.sys_id.as_str(), u64::MAX);
            for row in journal.range(range)? {
                entries.push(decode::<JournalEntry>(row?.1.value())?);
            }
            // The record as it is, judged as new by the capture rules: what
            // they send of it is what the peer should hold.
            let captured = capture.capture(&Change {
                operation: Operation::Create,
                old: None,
                new: &record,
                new_journal: &entries,
                changed_by: &record.updated_by,
                time: record.updated_on,
                origin_remote: None,
            });
            for mut c in captured.into_iter().filter(|c| c.remote_system == remote) {
                let operation = if send.create {
                    Operation::Create
                } else {
                    // Every field is sent as changed, so the peer takes the
                    // whole record, not only what it thinks changed.
                    c.payload.capture_metadata.operation = Operation::Update;
                    for field in &mut c.payload.changed_fields {
                        field.changed = true;
                    }
                    Operation::Update
                };
                let mut item = NewItem::captured(c, operation, &record, false);
                item.settles = send.settles;
                items.push(item);
            }
        }
    }
    let queued = items.len() as u64;
    let mut staging = Staging::open(txn, now)?;
    for item in items {
        staging.stage(item)?;
    }
    staging.finish(txn)?;
    Ok(queued)
}

/// The deletion item for our record `send.sys_id`, gone here but held by
/// the peer: made by hand, as no capture can judge a record that is gone.
fn deletion(
    capture: &crate::capture::CaptureIndex,
    remote: &str,
    table: &str,
    send: &SendRecord,
) -> Option<NewItem> {
    let (capture_definition, process_event, outbound_flow) = capture.sender_of(table, remote)?;
    let payload = Payload {
        capture_metadata: CaptureMetadata {
            changed_by: "reconcile".to_string(),
            timestamp: format_time(now_millis()),
            operation: Operation::Delete,
            table: table.to_string(),
            sys_id: send.sys_id.clone(),
            process_event: process_event.clone(),
        },
        changed_fields: Vec::new(),
        journal_entries: Vec::new(),
        attachments: Vec::new(),
        removed_attachments: Vec::new(),
        attachment_strategy: None,
    };
    Some(NewItem {
        remote_system: remote.to_string(),
        process_event,
        capture_definition,
        outbound_flow,
        operation: Operation::Delete,
        table: table.to_string(),
        sys_id: send.sys_id.clone(),
        domain: Domain::global(),
        payload: crate::queue::EncodedPayload::of(&payload),
        attachment_hashes: Vec::new(),
        fields: Vec::new(),
        settles: send.settles,
        fresh: false,
    })
}
