//! Initial loads: the records that exist now, queued for one remote system
//! as create items in its normal sequence, batch by batch. The load's
//! place (table, last sys_id) is stored with each batch in the same
//! commit as the batch's items, so a restart resumes it where it stopped
//! and no record is queued twice; live writes commit between batches, so
//! a record's later changes stay after its load item.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::compact::keyed::record_at;
use super::staging::{NewItem, Staging};
use super::tables::*;
use super::writer::Txn;
use super::{Store, StoreError};
use crate::capture::Change;
use crate::condition::Query;
use crate::ids::{Millis, now_millis};
use crate::record::{JournalEntry, Operation, Record, RecordView};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadState {
    Running,
    Done,
    Cancelled,
}

/// One remote system's initial load: what it sends and where it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    pub remote_system: String,
    /// Only this process event's captures, when set.
    pub process_event: Option<String>,
    /// Only records matching this encoded query (empty: all).
    pub query: String,
    pub state: LoadState,
    pub started_by: String,
    pub started_on: Millis,
    pub finished_on: Option<Millis>,
    /// Records in the load's tables when it started.
    pub total: u64,
    /// Records looked at so far, and those queued (matched a capture).
    pub scanned: u64,
    pub queued: u64,
    /// The tables it reads, in order, and where it stands: the table it
    /// reads now and the last record done there.
    pub tables: Vec<String>,
    pub table: usize,
    pub after: String,
}

impl Load {
    /// One line for `remote show` and stats.
    pub fn summary(&self) -> String {
        let state = match self.state {
            LoadState::Running => "running",
            LoadState::Done => "done",
            LoadState::Cancelled => "cancelled",
        };
        format!(
            "{state}: {} of {} records looked at, {} queued",
            self.scanned, self.total, self.queued
        )
    }
}

impl Store {
    /// Starts the initial load of `remote` (refused while one runs).
    pub async fn start_load(
        &self,
        remote: String,
        process_event: Option<String>,
        query: String,
        started_by: String,
    ) -> Result<Load, StoreError> {
        self.writer
            .submit(move |txn| {
                if let Some(running) = stored(txn, &remote)?.filter(|l| l.state == LoadState::Running) {
                    return Err(StoreError::Invalid(format!(
                        "a load to `{remote}` is already running ({}); wait for it, or cancel it with `procsync remote load {remote} --cancel`",
                        running.summary()
                    )));
                }
                let tables = txn.capture.tables_sent_to(&remote, process_event.as_deref());
                if tables.is_empty() {
                    return Err(StoreError::Invalid(format!(
                        "no capture definition sends records to `{remote}`{}: there is nothing to load",
                        process_event
                            .as_ref()
                            .map(|e| format!(" for process event `{e}`"))
                            .unwrap_or_default()
                    )));
                }
                let records = txn.open_table(RECORDS)?;
                let mut total = 0u64;
                for table in &tables {
                    total += records.range((table.as_str(), "")..)?.map_while(|row| {
                        row.ok().filter(|(k, _)| k.value().0 == table.as_str())
                    }).count() as u64;
                }
                drop(records);
                let load = Load {
                    remote_system: remote.clone(),
                    process_event,
                    query,
                    state: LoadState::Running,
                    started_by,
                    started_on: now_millis(),
                    finished_on: None,
                    total,
                    scanned: 0,
                    queued: 0,
                    tables,
                    table: 0,
                    after: String::new(),
                };
                txn.open_table(LOADS)?
                    .insert(remote.as_str(), encode(&load).as_slice())?;
                Ok(load)
            })
            .await
    }

    /// Cancels the running load of `remote`; the items it queued stay.
    pub async fn cancel_load(&self, remote: String) -> Result<Load, StoreError> {
        self.writer
            .submit(move |txn| {
                let Some(mut load) =
                    stored(txn, &remote)?.filter(|l| l.state == LoadState::Running)
                else {
                    return Err(StoreError::Invalid(format!(
                        "no load to `{remote}` is running, so there is nothing to cancel"
                    )));
                };
                load.state = LoadState::Cancelled;
                load.finished_on = Some(now_millis());
                txn.open_table(LOADS)?
                    .insert(remote.as_str(), encode(&load).as_slice())?;
                Ok(load)
            })
            .await
    }

    /// The last load of each remote system.
    pub fn loads(&self) -> Result<Vec<Load>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOADS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(decode(row?.1.value())?);
        }
        Ok(out)
    }

    /// Queues the next batch (at most `batch` records) of `remote`'s
    /// running load, with its new place, in one commit; `None` when no
    /// load of it runs.
    pub async fn load_step(
        &self,
        remote: String,
        batch: usize,
    ) -> Result<Option<Load>, StoreError> {
        self.writer
            .submit(move |txn| step(txn, &remote, batch))
            .await
    }
}

fn stored(txn: &Txn<'_>, remote: &str) -> Result<Option<Load>, StoreError> {
    match txn.open_table(LOADS)?.get(remote)? {
        Some(value) => Ok(Some(decode(value.value())?)),
        None => Ok(None),
    }
}

fn step(txn: &mut Txn<'_>, remote: &str, batch: usize) -> Result<Option<Load>, StoreError> {
    let Some(mut load) = stored(txn, remote)?.filter(|l| l.state == LoadState::Running) else {
        return Ok(None);
    };
    // Checked when the load started; a query that stopped parsing loads
    // nothing rather than everything.
    let query = Query::parse(&load.query).ok();
    let picked = pick(txn, &mut load, query.as_ref(), batch)?;
    let now = now_millis();
    let capture = txn.capture.clone();
    let mut staging = Staging::open(txn, now)?;
    for (record, journal) in &picked {
        let captured = capture.capture(&Change {
            operation: Operation::Create,
            old: None,
            new: record,
            new_journal: journal,
            changed_by: &record.updated_by,
            time: now,
            origin_remote: None,
        });
        for c in captured.into_iter().filter(|c| {
            c.remote_system == remote
                && load
                    .process_event
                    .as_ref()
                    .is_none_or(|e| *e == c.process_event)
        }) {
            load.queued += 1;
            staging.stage(NewItem::captured(c, Operation::Create, record, false))?;
        }
    }
    if load.table >= load.tables.len() {
        load.state = LoadState::Done;
        load.finished_on = Some(now);
    }
    staging.finish(txn)?;
    txn.open_table(LOADS)?
        .insert(remote, encode(&load).as_slice())?;
    Ok(Some(load))
}

/// The next records of the load that match its query (at most `batch`,
/// looking at most at 20 × `batch`), each with its journal entries; moves
/// the load's place past them.
fn pick(
    txn: &Txn<'_>,
    load: &mut Load,
    query: Option<&Query>,
    batch: usize,
) -> Result<Vec<(Record, Vec<JournalEntry>)>, StoreError> {
    let mut picked: Vec<(Record, Vec<JournalEntry>)> = Vec::new();
    let records = txn.open_table(RECORDS)?;
    let journal = txn.open_table(JOURNAL)?;
    // Records that match no capture cost a look each: bounded too.
    let most_looked_at = batch.saturating_mul(20);
    let mut looked_at = 0usize;
    while picked.len() < batch && looked_at < most_looked_at && load.table < load.tables.len() {
        let table = load.tables[load.table].clone();
        let mut ended = true;
        for row in records.range((table.as_str(), load.after.as_str())..)? {
            let (key, value) = row?;
            let (row_table, sys_id) = key.value();
            if row_table != table {
                break;
            }
            if sys_id == load.after {
                continue;
            }
            if picked.len() >= batch || looked_at >= most_looked_at {
                ended = false;
                break;
            }
            looked_at += 1;
            load.after = sys_id.to_string();
            load.scanned += 1;
            let record = record_at(txn.names, (row_table, sys_id), value.value())?;
            if query
                .as_ref()
                .is_none_or(|q| !q.matches(&RecordView::new(&record), None))
            {
                continue;
            }
            let mut entries = Vec::new();
            for entry in journal.range((row_table, sys_id, 0u64)..=(row_table, sys_id, u64::MAX))? {
                entries.push(decode::<JournalEntry>(entry?.1.value())?);
            }
            picked.push((record, entries));
        }
        if ended {
            load.table += 1;
            load.after = String::new();
        }
    }
    Ok(picked)
}
