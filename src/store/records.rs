//! Records and their journals: reads, and the record-write job that
//! validates, captures and writes a batch of changes together with their
//! outbound queue items (preparing off the writer thread when it can).

use crate::failure::Classified;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use redb::ReadableTable;

use super::codec::{decode, encode};
use super::compact::keyed::{encode_record, record_at};
use super::names::FieldNames;
use super::staging::{NewItem, Staging};
use super::tables::*;
use super::writer::Txn;
use super::{Actor, Store, StoreError};
use crate::capture::{CaptureIndex, Captured, Change};
use crate::domain::Domain;
use crate::ids::{is_sys_id, new_sys_id, now_millis};
use crate::record::{JournalEntry, Operation, Record, RecordWrite, WriteResult, check_name};

/// Limits applied to record writes.
#[derive(Clone, Debug)]
pub struct RecordWriteLimits {
    pub max_record_bytes: usize,
}

/// Record writes validated, captured and encoded, ready to be written.
/// Preparing happens off the writer thread against a read snapshot; the
/// writer then only checks that the snapshot still holds (the records read
/// are unchanged and the capture rules are the same) and writes bytes. When
/// it does not hold, the writer prepares again inside its transaction.
pub struct PreparedWrites {
    capture: Arc<CaptureIndex>,
    writes: Vec<PreparedWrite>,
}

struct PreparedWrite {
    table: String,
    sys_id: String,
    /// What the store held for this record when it was read: `Some(None)`
    /// absent, `Some(Some(bytes))` those bytes. `None` when nothing was read
    /// from the store (a fresh sys_id, or a record an earlier write of the
    /// same request already changed).
    expected: Option<Option<Vec<u8>>>,
    /// The record's new stored form; `None` deletes it.
    record: Option<Vec<u8>>,
    /// Its field names the store had no number for (`names`).
    unnamed: Vec<String>,
    /// New journal entries: (position, stored form).
    journal: Vec<(u64, Vec<u8>)>,
    /// Contents newly used by the record's attachments, and released.
    attached: Vec<String>,
    released: Vec<String>,
    items: Vec<NewItem>,
    /// The values of the fields inbound flows match on, before and after.
    matched: Vec<(String, Option<String>, Option<String>)>,
    result: WriteResult,
    unchanged: bool,
}

type RecordsTable = (&'static str, &'static str);

/// Validates, plans, captures and encodes `writes` against the records in
/// `records`. All or nothing: the first invalid write rejects the request.
pub fn prepare<T>(
    (records, names): (&T, &FieldNames),
    actor: &Actor,
    writes: &[RecordWrite],
    limits: &RecordWriteLimits,
    capture: &Arc<CaptureIndex>,
    origin_remote: Option<&str>,
) -> Result<PreparedWrites, StoreError>
where
    T: ReadableTable<RecordsTable, &'static [u8]>,
{
    let now = now_millis();
    let n_writes = writes.len();
    let mut overlay: HashMap<(String, String), Option<Record>> = HashMap::new();
    let mut prepared = Vec::with_capacity(n_writes);
    let context = Context {
        now,
        names,
        limits,
        capture,
        origin_remote,
    };
    for (i, write) in writes.iter().enumerate() {
        let plan = plan_write(records, &mut overlay, actor, write, context).map_err(|e| {
            if n_writes == 1 {
                return e;
            }
            if !e.failure().is_input() {
                return e;
            }
            StoreError::InBatch {
                position: i + 1,
                count: n_writes,
                source: Box::new(e),
            }
        })?;
        prepared.push(plan);
    }
    Ok(PreparedWrites {
        capture: capture.clone(),
        writes: prepared,
    })
}

/// Writes prepared record writes in the writer's transaction, preparing
/// them again first when their snapshot no longer holds.
pub fn write_records(
    txn: &mut Txn<'_>,
    actor: &Actor,
    writes: Vec<RecordWrite>,
    limits: &RecordWriteLimits,
    prepared: Option<PreparedWrites>,
) -> Result<Vec<WriteResult>, StoreError> {
    // A named fault point for tests, in debug builds only: a write to this
    // table panics on the writer thread, as redb does on a damaged page.
    #[cfg(debug_assertions)]
    if let Ok(table) = std::env::var("PROCSYNC_FAULT_PANIC_ON_TABLE") {
        if writes.iter().any(|w| w.table == table) {
            panic!("fault injected: a write to table `{table}`");
        }
    }
    let prepared = {
        let records = txn.records()?;
        match prepared {
            Some(prepared)
                if Arc::ptr_eq(&prepared.capture, &txn.capture)
                    && still_holds(&*records, &prepared)? =>
            {
                prepared
            }
            _ => prepare(
                (&*records, txn.names),
                actor,
                &writes,
                limits,
                &txn.capture,
                None,
            )?,
        }
    };
    write_prepared(txn, prepared)
}

/// Writes prepared record writes: records, journal entries, outbound items.
pub(super) fn write_prepared(
    txn: &mut Txn<'_>,
    prepared: PreparedWrites,
) -> Result<Vec<WriteResult>, StoreError> {
    let mut records = txn.records()?;
    let mut journal = txn.journal()?;
    // Only tables an inbound flow matches on keep the index of values.
    let mut by_value = if prepared.writes.iter().any(|w| !w.matched.is_empty()) {
        Some(txn.open_table(RECORDS_BY_VALUE)?)
    } else {
        None
    };
    let mut staging = Staging::open(txn, now_millis())?;
    // Before writing anything: every content to attach must be stored.
    for hash in prepared.writes.iter().flat_map(|w| &w.attached) {
        if let Some(problem) = super::content::missing_content(txn, hash)? {
            return Err(StoreError::Invalid(problem));
        }
    }
    let mut results = Vec::with_capacity(prepared.writes.len());
    for write in prepared.writes {
        if write.unchanged {
            results.push(write.result);
            continue;
        }
        for hash in &write.attached {
            super::content::add_ref(txn, hash)?;
        }
        for hash in &write.released {
            super::content::release_ref(txn, hash)?;
        }
        let key = (write.table.as_str(), write.sys_id.as_str());
        match &write.record {
            None => {
                records.remove(key)?;
                let positions: Vec<u64> = journal
                    .range((key.0, key.1, 0u64)..=(key.0, key.1, u64::MAX))?
                    .map(|row| row.map(|(k, _)| k.value().2))
                    .collect::<Result<_, _>>()?;
                for position in positions {
                    journal.remove((key.0, key.1, position))?;
                }
            }
            Some(bytes) => {
                records.insert(key, bytes.as_slice())?;
                txn.name_fields(&write.unnamed)?;
                for (position, entry) in &write.journal {
                    journal.insert((key.0, key.1, *position), entry.as_slice())?;
                }
            }
        }
        if let Some(by_value) = by_value.as_mut() {
            super::match_index::note(by_value, key, &write.matched)?;
        }
        for item in write.items {
            staging.stage(item)?;
        }
        results.push(write.result);
    }
    drop((records, journal, by_value));
    staging.finish(txn)?;
    Ok(results)
}

/// Whether every record the preparation read is still stored as it was.
fn still_holds<T>(records: &T, prepared: &PreparedWrites) -> Result<bool, StoreError>
where
    T: ReadableTable<RecordsTable, &'static [u8]>,
{
    for write in &prepared.writes {
        let Some(expected) = &write.expected else {
            continue;
        };
        let current = records.get((write.table.as_str(), write.sys_id.as_str()))?;
        let same = match (expected, &current) {
            (None, None) => true,
            (Some(bytes), Some(stored)) => bytes.as_slice() == stored.value(),
            _ => false,
        };
        if !same {
            return Ok(false);
        }
    }
    Ok(true)
}

fn invalid(message: impl Into<String>) -> StoreError {
    StoreError::Invalid(message.into())
}

/// What planning a write needs besides the write itself.
#[derive(Clone, Copy)]
struct Context<'a> {
    now: u64,
    names: &'a FieldNames,
    limits: &'a RecordWriteLimits,
    capture: &'a CaptureIndex,
    /// The remote system whose inbound flow makes this write, if any: the
    /// change is not captured back to it.
    origin_remote: Option<&'a str>,
}

#[allow(
    clippy::too_many_lines,
    reason = "validation, overlay, journal and capture in one transaction; the next function to cut"
)]
fn plan_write<T>(
    records: &T,
    overlay: &mut HashMap<(String, String), Option<Record>>,
    actor: &Actor,
    write: &RecordWrite,
    context: Context<'_>,
) -> Result<PreparedWrite, StoreError>
where
    T: ReadableTable<RecordsTable, &'static [u8]>,
{
    let Context {
        now,
        names,
        limits,
        capture,
        origin_remote,
    } = context;
    check_name("table", &write.table).map_err(invalid)?;
    let mut new_domain = None;
    let mut fields = BTreeMap::new();
    for (name, value) in &write.fields {
        if name == "sys_domain" {
            let domain = Domain::parse(value).map_err(invalid)?;
            if !domain.is_within(&actor.domain) {
                return Err(invalid(format!(
                    "sys_domain `{domain}` is outside your domain `{}`; you may only write records in your domain's subtree",
                    actor.domain
                )));
            }
            new_domain = Some(domain);
            continue;
        }
        if name == "sys_id" {
            continue;
        }
        if name.starts_with("sys_") {
            return Err(invalid(format!(
                "field `{name}` is maintained by the instance and cannot be written"
            )));
        }
        check_name("field", name).map_err(invalid)?;
        fields.insert(name.clone(), value.clone());
    }
    for entry in &write.journal {
        check_name("journal field", &entry.field).map_err(invalid)?;
        if entry.text.trim().is_empty() {
            return Err(invalid(format!(
                "journal entry for `{}` is empty; write some text",
                entry.field
            )));
        }
        if entry.text.len() > limits.max_record_bytes {
            return Err(invalid(format!(
                "journal entry for `{}` is {} bytes, over the limit of {} (limits.max_record_bytes)",
                entry.field,
                entry.text.len(),
                limits.max_record_bytes
            )));
        }
    }

    // Reads through the request's overlay first; remembers what the store
    // held for records read from it.
    let mut expected = None;
    let mut lookup = |sys_id: &str| -> Result<Option<Record>, StoreError> {
        if let Some(known) = overlay.get(&(write.table.clone(), sys_id.to_string())) {
            return Ok(known.clone());
        }
        match records.get((write.table.as_str(), sys_id))? {
            Some(value) => {
                let bytes = value.value().to_vec();
                let record = record_at(names, (&write.table, sys_id), &bytes)?;
                expected = Some(Some(bytes));
                Ok(Some(record))
            }
            None => {
                expected = Some(None);
                Ok(None)
            }
        }
    };
    let not_found = |sys_id: &str| StoreError::RecordNotFound {
        table: write.table.clone(),
        sys_id: sys_id.to_string(),
    };

    let (old, mut record) = match write.operation {
        Operation::Create => {
            let sys_id = match &write.sys_id {
                Some(id) if !id.is_empty() => {
                    if !is_sys_id(id) {
                        return Err(invalid(format!(
                            "sys_id `{id}` is not 32 lowercase hex digits"
                        )));
                    }
                    if lookup(id)?.is_some() {
                        return Err(StoreError::RecordExists {
                            table: write.table.clone(),
                            sys_id: id.clone(),
                        });
                    }
                    id.clone()
                }
                _ => new_sys_id(),
            };
            fields.retain(|_, value| !value.is_empty());
            let record = Record {
                table: write.table.clone(),
                sys_id,
                created_on: now,
                created_by: actor.user.clone(),
                updated_on: now,
                updated_by: actor.user.clone(),
                mod_count: 0,
                domain: new_domain.unwrap_or_else(|| actor.domain.clone()),
                fields,
                journal_len: 0,
                attachments: Vec::new(),
            };
            (None, record)
        }
        Operation::Update | Operation::Delete => {
            let sys_id = write
                .sys_id
                .clone()
                .filter(|id| !id.is_empty())
                .ok_or_else(|| {
                    invalid(format!(
                        "{} needs the record's sys_id",
                        write.operation.as_str()
                    ))
                })?;
            let old = lookup(&sys_id)?
                .filter(|r| r.domain.is_within(&actor.domain))
                .ok_or_else(|| not_found(&sys_id))?;
            let mut record = old.clone();
            if write.operation == Operation::Update {
                for (name, value) in fields {
                    if value.is_empty() {
                        record.fields.remove(&name);
                    } else {
                        record.fields.insert(name, value);
                    }
                }
                if let Some(domain) = new_domain {
                    record.domain = domain;
                }
            }
            (Some(old), record)
        }
    };

    if write.operation == Operation::Delete && !write.journal.is_empty() {
        return Err(invalid("a delete cannot add journal entries"));
    }
    let (attached, released) = plan_attachments(&mut record, write, actor, now)?;
    let size = record.approximate_size();
    if size > limits.max_record_bytes {
        return Err(invalid(format!(
            "record is about {size} bytes, over the limit of {} bytes (limits.max_record_bytes in the server config)",
            limits.max_record_bytes
        )));
    }

    let journal: Vec<(u64, JournalEntry)> = write
        .journal
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            (
                record.journal_len + i as u64,
                match &entry.origin {
                    // A synced entry keeps who wrote it, and when.
                    Some(origin) => JournalEntry {
                        id: origin.id.clone(),
                        field: entry.field.clone(),
                        author: origin.author.clone(),
                        created_on: origin.created_on,
                        text: entry.text.clone(),
                    },
                    None => JournalEntry {
                        id: new_sys_id(),
                        field: entry.field.clone(),
                        author: actor.user.clone(),
                        created_on: now,
                        text: entry.text.clone(),
                    },
                },
            )
        })
        .collect();

    let unchanged = write.operation == Operation::Update
        && journal.is_empty()
        && old.as_ref().is_some_and(|old| {
            old.fields == record.fields
                && old.domain == record.domain
                && old.attachments == record.attachments
        });
    if write.operation == Operation::Update && !unchanged {
        record.mod_count += 1;
        record.updated_on = now;
        record.updated_by = actor.user.clone();
    }
    record.journal_len += journal.len() as u64;

    let fresh = write.creates_fresh();
    let captured: Vec<Captured> = if unchanged {
        Vec::new()
    } else {
        let entries: Vec<JournalEntry> = journal.iter().map(|(_, e)| e.clone()).collect();
        capture.capture(&Change {
            operation: write.operation,
            old: old.as_ref(),
            new: &record,
            new_journal: &entries,
            changed_by: &actor.user,
            time: now,
            origin_remote,
        })
    };
    let items = captured
        .into_iter()
        .map(|c| NewItem::captured(c, write.operation, &record, fresh))
        .collect::<Vec<_>>();
    let deleted = write.operation == Operation::Delete;
    let result = WriteResult {
        sys_id: record.sys_id.clone(),
        mod_count: record.mod_count,
        queued: u32::try_from(items.len()).unwrap_or(u32::MAX),
    };
    let matched = super::match_index::changes(
        capture.matched_fields(&record.table),
        old.as_ref(),
        (!deleted).then_some(&record),
    );
    let (stored, unnamed) = if deleted {
        (None, Vec::new())
    } else {
        let (bytes, unnamed) = encode_record(names, &record);
        (Some(bytes), unnamed)
    };
    let prepared = PreparedWrite {
        matched,
        table: record.table.clone(),
        sys_id: record.sys_id.clone(),
        expected,
        record: stored,
        unnamed,
        journal: journal
            .iter()
            .map(|(position, entry)| (*position, encode(entry)))
            .collect(),
        attached,
        released,
        items,
        result,
        unchanged,
    };
    overlay.insert(
        (record.table.clone(), record.sys_id.clone()),
        (!deleted).then_some(record),
    );
    Ok(prepared)
}

/// Applies a write's attachment changes to `record`; returns the contents
/// newly used and those released. A delete releases every attachment.
fn plan_attachments(
    record: &mut Record,
    write: &RecordWrite,
    actor: &Actor,
    now: u64,
) -> Result<(Vec<String>, Vec<String>), StoreError> {
    if write.operation == Operation::Delete {
        if !write.attachments.is_empty() {
            return Err(invalid("a delete cannot add or remove attachments"));
        }
        let released = record.attachments.iter().map(|a| a.hash.clone()).collect();
        return Ok((Vec::new(), released));
    }
    let mut released = Vec::new();
    for sys_id in &write.attachments.detach {
        let Some(position) = record.attachments.iter().position(|a| a.sys_id == *sys_id) else {
            return Err(StoreError::AttachmentNotFound {
                table: record.table.clone(),
                sys_id: record.sys_id.clone(),
                attachment: sys_id.clone(),
            });
        };
        released.push(record.attachments.remove(position).hash);
    }
    let mut attached = Vec::new();
    for attachment in &write.attachments.attach {
        crate::attachment::check_file_name(&attachment.file_name).map_err(invalid)?;
        if !crate::attachment::is_hash(&attachment.hash) {
            return Err(invalid(format!(
                "`{}` is not a blake3 hash (64 lowercase hex digits)",
                attachment.hash
            )));
        }
        let mut attachment = attachment.clone();
        if attachment.sys_id.is_empty() {
            attachment.sys_id = new_sys_id();
        } else if record
            .attachments
            .iter()
            .any(|a| a.sys_id == attachment.sys_id)
        {
            return Err(StoreError::AttachmentExists {
                table: record.table.clone(),
                sys_id: record.sys_id.clone(),
                attachment: attachment.sys_id,
            });
        }
        if attachment.created_by.is_empty() {
            attachment.created_by = actor.user.clone();
            attachment.created_on = now;
        }
        if attachment.content_type.is_empty() {
            attachment.content_type = "application/octet-stream".to_string();
        }
        attached.push(attachment.hash.clone());
        record.attachments.push(attachment);
    }
    Ok((attached, released))
}

impl Store {
    /// A record and its journal, when it exists.
    pub fn record(
        &self,
        table: &str,
        sys_id: &str,
    ) -> Result<Option<(Record, Vec<JournalEntry>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        let Some(value) = records.get((table, sys_id))? else {
            return Ok(None);
        };
        let record = record_at(self.db.names(), (table, sys_id), value.value())?;
        let journal = txn.open_table(JOURNAL)?;
        let mut entries = Vec::new();
        for row in journal.range((table, sys_id, 0u64)..=(table, sys_id, u64::MAX))? {
            let (_, value) = row?;
            entries.push(decode(value.value())?);
        }
        Ok(Some((record, entries)))
    }

    /// Records of `table` for which `keep` holds, in sys_id order, at most
    /// `limit`.
    pub fn records(
        &self,
        table: &str,
        limit: usize,
        keep: &dyn Fn(&Record) -> bool,
    ) -> Result<Vec<Record>, StoreError> {
        let txn = self.db.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        let mut out = Vec::new();
        for row in records.range((table, "")..)? {
            let (key, value) = row?;
            let (row_table, sys_id) = key.value();
            if row_table != table {
                break;
            }
            let record = record_at(self.db.names(), (row_table, sys_id), value.value())?;
            if keep(&record) {
                out.push(record);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Creates, updates and deletes records in one durable transaction, with
    /// capture. All or nothing: one invalid write rejects the whole call.
    pub async fn write_records(
        &self,
        actor: Actor,
        writes: Vec<RecordWrite>,
        limits: RecordWriteLimits,
    ) -> Result<Vec<WriteResult>, StoreError> {
        // Validate, capture and encode against a read snapshot, so the single
        // writer thread only checks and writes. Small requests do this on
        // the calling task (a few microseconds of CPU on cached pages; a
        // thread hop would cost more); batches go to a blocking thread.
        const INLINE_WRITES: usize = 4;
        let db = self.db.clone();
        let capture = self.writer.capture();
        let prepare = move |actor: Actor, writes: Vec<RecordWrite>, limits: RecordWriteLimits| {
            let prepared = (|| {
                let txn = db.begin_read()?;
                let records = txn.open_table(RECORDS)?;
                prepare(
                    (&records, db.names()),
                    &actor,
                    &writes,
                    &limits,
                    &capture,
                    None,
                )
            })();
            (actor, writes, limits, prepared)
        };
        let (actor, writes, limits, prepared) = if writes.len() <= INLINE_WRITES {
            prepare(actor, writes, limits)
        } else {
            tokio::task::spawn_blocking(move || prepare(actor, writes, limits))
                .await
                .map_err(StoreError::from)?
        };
        let prepared = prepared?;
        self.writer
            .enqueue_sharing(move |txn| write_records(txn, &actor, writes, &limits, Some(prepared)))
            .await
    }
}
