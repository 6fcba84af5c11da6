//! The single writer: one thread owns every write transaction. Requests
//! queue on a channel; the thread takes all that are waiting (up to
//! `MAX_JOBS_PER_COMMIT`), runs them in one redb transaction and commits it
//! durably once (group commit), then answers each request. A job that
//! rejects its input writes nothing; a storage failure aborts the whole
//! transaction and every job in it gets the error.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use redb::{Durability, ReadableTable, WriteTransaction};

use super::handle::SharedDb;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::codec::{decode, encode};
use super::tables::*;
use super::{Actor, RemoteState, StoreError, StoredSyncObject, read_sync_objects};
use crate::capture::{CaptureIndex, Captured, Change};
use crate::config::sync::SyncConfig;
use crate::domain::Domain;
use crate::flow::FlowOutcome;
use crate::ids::{hex, is_sys_id, new_sys_id, now_millis, token_hash};
use crate::queue::{Correlation, FlowTrace, InboundItem, OutboundItem, QueueStatus};
use crate::record::{JournalEntry, Operation, Record, RecordWrite, WriteResult, check_name};
use crate::user::{Role, User};

/// Most requests committed together. Moderate batches keep the pipeline
/// full; huge ones stall it while the fsync runs (measured on the build
/// machine: tens of items per commit kept the pipe fullest).
const MAX_JOBS_PER_COMMIT: usize = 128;

/// The state a job sees: the open transaction and the capture rules.
pub struct Txn<'a> {
    pub txn: &'a WriteTransaction,
    pub capture: Arc<CaptureIndex>,
}

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A request: run it in the open transaction, or (when no transaction could
/// be opened) answer with the error. Returns what to do once the commit's
/// outcome is known, and an error that must abort the transaction.
type Job = (
    Durability,
    Box<dyn FnOnce(Result<&mut Txn<'_>, StoreError>) -> (Completion, Option<StoreError>) + Send>,
);

pub struct Writer {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The committed capture rules, for preparing writes off this thread.
    capture: SharedCapture,
}

type SharedCapture = Arc<RwLock<Arc<CaptureIndex>>>;

impl Writer {
    pub fn start(db: Arc<SharedDb>, config: &SyncConfig) -> Result<Writer, StoreError> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let capture: SharedCapture = Arc::new(RwLock::new(Arc::new(CaptureIndex::build(config))));
        let shared = capture.clone();
        let thread = std::thread::Builder::new()
            .name("store-writer".to_string())
            .spawn(move || run(db, receiver, shared))
            .map_err(|e| StoreError::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            capture,
        })
    }

    /// The capture rules as last committed.
    pub fn capture(&self) -> Arc<CaptureIndex> {
        self.capture.read().expect("capture lock").clone()
    }

    /// Runs `job` in the next group commit and waits for the commit to be
    /// durable.
    pub async fn submit<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.enqueue(Durability::Immediate, job).await
    }

    /// Queues `job` now (jobs run in the order they were queued) and returns
    /// the future of its commit. With `Durability::None` the commit may skip
    /// the fsync (when no other job in it needs one): the write is visible
    /// at once and becomes durable with the next durable commit, or is lost
    /// in a crash before it. Only for work that can be redone (content
    /// chunks).
    pub fn enqueue<T, F>(
        &self,
        durability: Durability,
        job: F,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let boxed =
            Box::new(
                move |txn: Result<&mut Txn<'_>, StoreError>| match txn.and_then(job) {
                    Ok(value) => (
                        Box::new(move |commit: Result<(), StoreError>| {
                            let _ = reply.send(commit.map(|()| value));
                        }) as Completion,
                        None,
                    ),
                    Err(error) => {
                        // Input errors leave the transaction untouched; anything else
                        // may have written half a change, so it aborts the commit.
                        let poison = match &error {
                            StoreError::Invalid(_)
                            | StoreError::NotFound(_)
                            | StoreError::Conflict(_) => None,
                            other => Some(other.clone()),
                        };
                        (
                            Box::new(move |_| {
                                let _ = reply.send(Err(error));
                            }) as Completion,
                            poison,
                        )
                    }
                },
            );
        let queued = {
            let sender = self.sender.lock().expect("writer sender lock");
            sender
                .as_ref()
                .is_some_and(|sender| sender.send((durability, boxed)).is_ok())
        };
        async move {
            if !queued {
                return Err(StoreError::Closed);
            }
            answer.await.map_err(|_| StoreError::Closed)?
        }
    }

    /// Lets queued jobs finish, then stops the thread.
    pub fn stop(&self) {
        self.sender.lock().expect("writer sender lock").take();
        if let Some(thread) = self.thread.lock().expect("writer thread lock").take() {
            let _ = thread.join();
        }
    }
}

/// How often a store whose disk failed tries to write again.
const REOPEN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

fn run(db: Arc<SharedDb>, receiver: mpsc::Receiver<Job>, shared: SharedCapture) {
    let mut capture = shared.read().expect("capture lock").clone();
    let mut disk_failed = false;
    // Reopening may make redb check the file: at most once per interval.
    let mut last_reopen: Option<std::time::Instant> = None;
    loop {
        if disk_failed && last_reopen.is_none_or(|at| at.elapsed() >= REOPEN_INTERVAL) {
            last_reopen = Some(std::time::Instant::now());
            disk_failed = !reopen_and_check(&db);
            db.set_disk_failed(disk_failed);
        }
        let first = if disk_failed {
            match receiver.recv_timeout(REOPEN_INTERVAL) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match receiver.recv() {
                Ok(job) => job,
                Err(_) => break,
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_JOBS_PER_COMMIT {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let n_jobs = batch.len();
        // A panic inside the database means a damaged file (redb checks its
        // pages): nothing of the batch was committed, and the instance must
        // stop rather than refuse every write forever.
        let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            commit_batch(&db, batch, capture.clone())
        }));
        let (completions, result, new_capture) = match committed {
            Ok(outcome) => outcome,
            Err(panic) => {
                let detail = super::panic_text(panic.as_ref());
                let why = format!("a write failed inside the database ({detail})");
                tracing::error!(target: "store", error = %why, n_jobs, "The store is damaged: restore the data directory from a backup. The instance stops; nothing of this batch was saved.");
                db.set_damaged(why);
                break;
            }
        };
        if let Some(new_capture) = new_capture {
            *shared.write().expect("capture lock") = new_capture.clone();
            capture = new_capture;
        }
        if let Err(e) = &result {
            if e.is_disk_failure() {
                if !disk_failed {
                    tracing::error!(target: "store", error = %e, n_jobs, "The disk failed under the store; writes are refused until it accepts them again, then the store is reopened by itself.");
                }
                disk_failed = true;
                db.set_disk_failed(true);
            } else {
                tracing::error!(target: "store", error = %e, n_jobs, "A write transaction failed; its requests were answered with the error and nothing of them was saved.");
            }
        }
        for completion in completions {
            completion(result.clone());
        }
    }
    tracing::debug!(target: "store", "The store writer stopped.");
}

#[allow(
    clippy::type_complexity,
    reason = "a one-off tuple of the batch's outcome, read right at the call site"
)]
/// After a disk failure: reopens the database and makes one small durable
/// commit; true when both worked and the store writes again.
fn reopen_and_check(db: &SharedDb) -> bool {
    let checked = db.reopen().and_then(|()| {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.open_table(META)?
            .insert("last_write_check", encode(&now_millis()).as_slice())?;
        txn.commit()?;
        Ok(())
    });
    match checked {
        Ok(()) => {
            tracing::info!(target: "store", "The disk accepts writes again; the store was reopened and writes resume.");
            true
        }
        Err(e) => {
            tracing::debug!(target: "store", error = %e, "The store still cannot write.");
            // The failed check left the handle refusing everything: a fresh
            // one lets reads go on while writes wait for the disk.
            let _ = db.reopen();
            false
        }
    }
}

fn commit_batch(
    db: &SharedDb,
    batch: Vec<Job>,
    capture: Arc<CaptureIndex>,
) -> (
    Vec<Completion>,
    Result<(), StoreError>,
    Option<Arc<CaptureIndex>>,
) {
    let durability = if batch
        .iter()
        .any(|(d, _)| matches!(d, Durability::Immediate))
    {
        Durability::Immediate
    } else {
        Durability::None
    };
    let opened = db.begin_write().and_then(|mut txn| {
        txn.set_durability(durability)?;
        Ok(txn)
    });
    let txn = match opened {
        Ok(txn) => txn,
        Err(error) => {
            let completions = batch
                .into_iter()
                .map(|(_, job)| job(Err(error.clone())).0)
                .collect::<Vec<_>>();
            return (completions, Err(error), None);
        }
    };
    let mut ctx = Txn {
        txn: &txn,
        capture: capture.clone(),
    };
    let mut poisoned = None;
    let mut completions = Vec::with_capacity(batch.len());
    for (_, job) in batch {
        let (completion, poison) = job(Ok(&mut ctx));
        completions.push(completion);
        if poisoned.is_none() {
            poisoned = poison;
        }
    }
    let new_capture = ctx.capture.clone();
    drop(ctx);
    let result = match poisoned {
        Some(error) => {
            let _ = txn.abort();
            Err(error)
        }
        None => txn.commit().map_err(StoreError::from),
    };
    let changed = result.is_ok() && !Arc::ptr_eq(&new_capture, &capture);
    (completions, result, changed.then_some(new_capture))
}

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
    operation: Operation,
    table: String,
    sys_id: String,
    domain: Domain,
    /// What the store held for this record when it was read: `Some(None)`
    /// absent, `Some(Some(bytes))` those bytes. `None` when nothing was read
    /// from the store (a fresh sys_id, or a record an earlier write of the
    /// same request already changed).
    expected: Option<Option<Vec<u8>>>,
    /// The record's new stored form; `None` deletes it.
    record: Option<Vec<u8>>,
    /// New journal entries: (position, stored form).
    journal: Vec<(u64, Vec<u8>)>,
    /// Contents newly used by the record's attachments, and released.
    attached: Vec<String>,
    released: Vec<String>,
    items: Vec<PreparedItem>,
    result: WriteResult,
    unchanged: bool,
}

struct PreparedItem {
    remote_system: String,
    process_event: String,
    capture_definition: String,
    outbound_flow: String,
    payload: Box<RawValue>,
    attachment_hashes: Vec<String>,
}

type RecordsTable = (&'static str, &'static str);

/// Validates, plans, captures and encodes `writes` against the records in
/// `records`. All or nothing: the first invalid write rejects the request.
pub fn prepare<T>(
    records: &T,
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
        limits,
        capture,
        origin_remote,
    };
    for (i, write) in writes.iter().enumerate() {
        let plan = plan_write(records, &mut overlay, actor, write, context).map_err(|e| {
            if n_writes == 1 {
                return e;
            }
            let prefix = format!("write {} of {n_writes}: ", i + 1);
            match e {
                StoreError::Invalid(m) => StoreError::Invalid(prefix + m.as_str()),
                StoreError::NotFound(m) => StoreError::NotFound(prefix + m.as_str()),
                StoreError::Conflict(m) => StoreError::Conflict(prefix + m.as_str()),
                other => other,
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
        let records = txn.txn.open_table(RECORDS)?;
        match prepared {
            Some(prepared)
                if Arc::ptr_eq(&prepared.capture, &txn.capture)
                    && still_holds(&records, &prepared)? =>
            {
                prepared
            }
            _ => prepare(&records, actor, &writes, limits, &txn.capture, None)?,
        }
    };
    write_prepared(txn, prepared)
}

/// Writes prepared record writes: records, journal entries, outbound items.
pub(super) fn write_prepared(
    txn: &mut Txn<'_>,
    prepared: PreparedWrites,
) -> Result<Vec<WriteResult>, StoreError> {
    let mut records = txn.txn.open_table(RECORDS)?;
    let mut journal = txn.txn.open_table(JOURNAL)?;
    let mut outbound = txn.txn.open_table(OUTBOUND)?;
    let mut by_remote = txn.txn.open_table(OUTBOUND_BY_REMOTE)?;
    let mut counters = Counters::load(txn.txn.open_table(COUNTERS)?);
    let now = now_millis();
    let mut tally = super::stats::Tally::new(now);
    // Before writing anything: every content to attach must be stored.
    for hash in prepared.writes.iter().flat_map(|w| &w.attached) {
        if let Some(problem) = super::content::missing_content(txn.txn, hash)? {
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
            super::content::add_ref(txn.txn, hash)?;
        }
        for hash in &write.released {
            super::content::release_ref(txn.txn, hash)?;
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
                for (position, entry) in &write.journal {
                    journal.insert((key.0, key.1, *position), entry.as_slice())?;
                }
            }
        }
        for item in write.items {
            let id = counters.next("outbound_item")?;
            let sequence = counters.next(&format!("outbound_seq/{}", item.remote_system))?;
            let item = OutboundItem {
                id,
                sequence,
                remote_system: item.remote_system,
                process_event: item.process_event,
                capture_definition: item.capture_definition,
                outbound_flow: item.outbound_flow,
                operation: write.operation,
                table: write.table.clone(),
                local_correlation_id: write.sys_id.clone(),
                domain: write.domain.clone(),
                status: QueueStatus::Ready,
                created_on: now,
                payload: item.payload,
                error: None,
                attempts: 0,
                next_attempt_on: None,
                sent_on: None,
                processed_on: None,
                last_error: None,
                attachment_hashes: item.attachment_hashes,
                flow_contexts: Vec::new(),
            };
            outbound.insert(id, encode(&item).as_slice())?;
            by_remote.insert((item.remote_system.as_str(), sequence), id)?;
            tally.outbound(&item, None);
        }
        results.push(write.result);
    }
    counters.save()?;
    tally.save(txn.txn)?;
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

/// Counters read once per job and written back at its end.
pub(super) struct Counters<'t> {
    table: redb::Table<'t, &'static str, &'static [u8]>,
    cache: BTreeMap<String, u64>,
}

impl<'t> Counters<'t> {
    pub(super) fn load(table: redb::Table<'t, &'static str, &'static [u8]>) -> Counters<'t> {
        Counters {
            table,
            cache: BTreeMap::new(),
        }
    }

    /// The next value of `name`, starting at 1.
    pub(super) fn next(&mut self, name: &str) -> Result<u64, StoreError> {
        if !self.cache.contains_key(name) {
            let stored = match self.table.get(name)? {
                Some(value) => decode::<u64>(value.value())?,
                None => 0,
            };
            self.cache.insert(name.to_string(), stored);
        }
        let value = self.cache.get_mut(name).expect("just inserted");
        *value += 1;
        Ok(*value)
    }

    pub(super) fn save(mut self) -> Result<(), StoreError> {
        for (name, value) in &self.cache {
            self.table.insert(name.as_str(), encode(value).as_slice())?;
        }
        Ok(())
    }
}

fn invalid(message: impl Into<String>) -> StoreError {
    StoreError::Invalid(message.into())
}

/// What planning a write needs besides the write itself.
#[derive(Clone, Copy)]
struct Context<'a> {
    now: u64,
    limits: &'a RecordWriteLimits,
    capture: &'a CaptureIndex,
    /// The remote system whose inbound flow makes this write, if any: the
    /// change is not captured back to it.
    origin_remote: Option<&'a str>,
}

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
                let record = decode(&bytes)?;
                expected = Some(Some(bytes));
                Ok(Some(record))
            }
            None => {
                expected = Some(None);
                Ok(None)
            }
        }
    };
    let not_found = |sys_id: &str| StoreError::NotFound(format!("record {}/{sys_id}", write.table));

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
                        return Err(StoreError::Conflict(format!(
                            "record {}/{id} already exists; update it instead",
                            write.table
                        )));
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
        .map(|c| PreparedItem {
            attachment_hashes: c
                .payload
                .attachments
                .iter()
                .map(|a| a.hash.clone())
                .collect(),
            payload: serde_json::value::to_raw_value(&c.payload)
                .expect("payloads always serialize"),
            remote_system: c.remote_system,
            process_event: c.process_event,
            capture_definition: c.capture_definition,
            outbound_flow: c.outbound_flow,
        })
        .collect::<Vec<_>>();
    let deleted = write.operation == Operation::Delete;
    let result = WriteResult {
        sys_id: record.sys_id.clone(),
        mod_count: record.mod_count,
        queued: items.len() as u32,
    };
    let prepared = PreparedWrite {
        operation: write.operation,
        table: record.table.clone(),
        sys_id: record.sys_id.clone(),
        domain: record.domain.clone(),
        expected,
        record: (!deleted).then(|| encode(&record)),
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
            return Err(StoreError::NotFound(format!(
                "attachment {sys_id} of record {}/{}",
                record.table, record.sys_id
            )));
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
            return Err(StoreError::Conflict(format!(
                "record {}/{} already has attachment {}",
                record.table, record.sys_id, attachment.sys_id
            )));
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

pub fn add_user(txn: &mut Txn<'_>, mut user: User, token: &str) -> Result<User, StoreError> {
    let mut users = txn.txn.open_table(USERS)?;
    if users.get(user.name.as_str())?.is_some() {
        return Err(StoreError::Conflict(format!(
            "user `{}` already exists; use `procsync user roles` or `procsync user token` to change it",
            user.name
        )));
    }
    let hash = token_hash(token);
    user.token_hashes = vec![hex(&hash)];
    users.insert(user.name.as_str(), encode(&user).as_slice())?;
    txn.txn
        .open_table(TOKENS)?
        .insert(hash.as_slice(), encode(&user.name).as_slice())?;
    Ok(user)
}

fn load_user(
    users: &redb::Table<'_, &'static str, &'static [u8]>,
    name: &str,
) -> Result<User, StoreError> {
    match users.get(name)? {
        Some(value) => decode(value.value()),
        None => Err(StoreError::NotFound(format!("user `{name}`"))),
    }
}

pub fn replace_token(txn: &mut Txn<'_>, name: &str, token: &str) -> Result<(), StoreError> {
    let mut users = txn.txn.open_table(USERS)?;
    let mut user = load_user(&users, name)?;
    let mut tokens = txn.txn.open_table(TOKENS)?;
    for old in &user.token_hashes {
        let bytes = hex_decode(old)?;
        tokens.remove(bytes.as_slice())?;
    }
    let hash = token_hash(token);
    tokens.insert(hash.as_slice(), encode(&user.name).as_slice())?;
    user.token_hashes = vec![hex(&hash)];
    users.insert(name, encode(&user).as_slice())?;
    Ok(())
}

fn hex_decode(text: &str) -> Result<Vec<u8>, StoreError> {
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| StoreError::Corrupt(format!("token hash `{text}` is not hex")))
        })
        .collect()
}

pub fn set_roles(txn: &mut Txn<'_>, name: &str, roles: Vec<Role>) -> Result<User, StoreError> {
    let mut users = txn.txn.open_table(USERS)?;
    let mut user = load_user(&users, name)?;
    user.roles = roles;
    users.insert(name, encode(&user).as_slice())?;
    Ok(user)
}

/// What `apply` did, each entry like ``capture `Capture requests` ``.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    pub created: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

/// Fields of a remote system that, when changed, require validating it
/// again: its states go back to Disabled.
const REMOTE_IDENTITY_FIELDS: &[&str] =
    &["endpoint", "fingerprint", "external_id", "inbound_api_user"];

/// Whether a remote system's new spec pins a different certificate than
/// its old one did: a certificate is made once per instance at `init`, so
/// another one is another instance (one re-created under the same name).
fn pins_new_instance(old: &serde_json::Value, new: &serde_json::Value) -> bool {
    let pin = |spec: &serde_json::Value| {
        spec.get("fingerprint")
            .and_then(|f| f.as_str())
            .and_then(|f| crate::config::sync::normalize_fingerprint(f).ok())
    };
    matches!((pin(old), pin(new)), (Some(old), Some(new)) if old != new)
}

/// Forgets which of `remote`'s records each of our correlated records is:
/// those ids name records of an instance that no longer answers under that
/// name. The correlations stay (we still sent those records), with no peer
/// record yet, so the next change of ours creates the record there and its
/// answer correlates again. Returns how many were released.
fn release_correlations(txn: &redb::WriteTransaction, remote: &str) -> Result<usize, StoreError> {
    let mut by_remote = txn.open_table(CORRELATIONS_BY_REMOTE)?;
    let mut correlations = txn.open_table(CORRELATIONS)?;
    let mut released = Vec::new();
    for row in by_remote.range((remote, "")..)? {
        let (key, value) = row?;
        let (name, remote_id) = key.value();
        if name != remote {
            break;
        }
        let (table, local) = value.value();
        released.push((remote_id.to_string(), table.to_string(), local.to_string()));
    }
    let now = now_millis();
    for (remote_id, table, local) in &released {
        by_remote.remove((remote, remote_id.as_str()))?;
        let key = (table.as_str(), local.as_str(), remote);
        let stored: Option<Correlation> = match correlations.get(key)? {
            Some(value) => Some(decode(value.value())?),
            None => None,
        };
        if let Some(mut correlation) = stored {
            correlation.remote_correlation_id = String::new();
            correlation.updated_on = now;
            correlations.insert(key, encode(&correlation).as_slice())?;
        }
    }
    Ok(released.len())
}

pub fn apply_config(txn: &mut Txn<'_>, config: SyncConfig) -> Result<ApplyReport, StoreError> {
    // Users named by remote systems must exist here.
    {
        let users = txn.txn.open_table(USERS)?;
        let mut problems = Vec::new();
        for remote in &config.remote_systems {
            for (key, name, role) in [
                (
                    "inbound_api_user",
                    &remote.inbound_api_user,
                    Role::ProcessSyncApi,
                ),
                ("run_as", &remote.run_as, Role::ProcessSyncRunAs),
            ] {
                match users.get(name.as_str())? {
                    None => problems.push(format!(
                        "remote_system `{}`: {key} `{name}` is not a user of this instance; create it with `procsync user add {name} --roles {}`",
                        remote.name,
                        role.as_str()
                    )),
                    Some(value) => {
                        let user: User = decode(value.value())?;
                        if !user.roles.contains(&role) && !user.roles.contains(&Role::Admin) {
                            problems.push(format!(
                                "remote_system `{}`: {key} `{name}` lacks role {}; add it with `procsync user roles {name} {}`",
                                remote.name,
                                role.as_str(),
                                role.as_str()
                            ));
                        }
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(StoreError::Invalid(problems.join("\n")));
        }
    }

    let mut table = txn.txn.open_table(SYNC_OBJECTS)?;
    let stored: BTreeMap<(String, String), StoredSyncObject> = read_sync_objects(&table)?
        .into_iter()
        .map(|o| ((o.kind.clone(), o.name.clone()), o))
        .collect();
    let now = now_millis();
    let mut report = ApplyReport::default();
    let mut wanted = std::collections::HashSet::new();
    for (kind, name, spec) in config.objects() {
        let label = format!("{kind} `{name}`");
        wanted.insert((kind.to_string(), name.clone()));
        let is_remote = kind == "remote_system";
        let object = match stored.get(&(kind.to_string(), name.clone())) {
            Some(old) if old.spec == spec => continue,
            Some(old) => {
                let identity_changed = is_remote
                    && REMOTE_IDENTITY_FIELDS
                        .iter()
                        .any(|field| old.spec.get(field) != spec.get(field));
                let new_instance = is_remote && pins_new_instance(&old.spec, &spec);
                if new_instance {
                    let released = release_correlations(txn.txn, &name)?;
                    report.changed.push(format!(
                        "{label} (a different certificate: a new instance; {released} correlations with the old one released, its records will be created anew there)"
                    ));
                } else {
                    report.changed.push(label);
                }
                StoredSyncObject {
                    spec,
                    updated_on: now,
                    outbound_state: if identity_changed {
                        Some(RemoteState::Disabled)
                    } else {
                        old.outbound_state
                    },
                    inbound_state: if identity_changed {
                        Some(RemoteState::Disabled)
                    } else {
                        old.inbound_state
                    },
                    ..old.clone()
                }
            }
            None => {
                report.created.push(label);
                StoredSyncObject {
                    sys_id: new_sys_id(),
                    kind: kind.to_string(),
                    name: name.clone(),
                    spec,
                    outbound_state: is_remote.then_some(RemoteState::Disabled),
                    inbound_state: is_remote.then_some(RemoteState::Disabled),
                    created_on: now,
                    updated_on: now,
                }
            }
        };
        table.insert((kind, name.as_str()), encode(&object).as_slice())?;
    }
    for (kind, name) in stored.keys() {
        if !wanted.contains(&(kind.clone(), name.clone())) {
            table.remove((kind.as_str(), name.as_str()))?;
            report.removed.push(format!("{kind} `{name}`"));
        }
    }
    txn.capture = Arc::new(CaptureIndex::build(&config));
    Ok(report)
}

/// Queues items received from `remote`; see `Store::receive`.
pub fn receive(
    txn: &mut Txn<'_>,
    remote: &str,
    sender: &str,
    domain: &Domain,
    items: Vec<super::ReceivedItem>,
) -> Result<Vec<u64>, StoreError> {
    let now = now_millis();
    let mut seen = txn.txn.open_table(INBOUND_SEEN_BY_PEER)?;
    let mut inbound = txn.txn.open_table(INBOUND)?;
    let mut counters = Counters::load(txn.txn.open_table(COUNTERS)?);
    let mut tally = super::stats::Tally::new(now);
    let mut acks = Vec::with_capacity(items.len());
    for received in items {
        acks.push(received.sequence);
        if seen.get((sender, received.sequence))?.is_some() {
            continue;
        }
        let id = counters.next("inbound_item")?;
        let problem = match received.operation {
            None => Some("the item has no valid operation (create, update or delete)".to_string()),
            Some(_) => match serde_json::from_str::<crate::queue::Payload>(&received.payload) {
                Err(e) => Some(format!(
                    "malformed payload: {e}; the sender must send capture_metadata, changed_fields and journal_entries"
                )),
                Ok(_)
                    if txn
                        .capture
                        .inbound_flow(&received.process_event, remote)
                        .is_none() =>
                {
                    Some(format!(
                        "unknown process event `{}` from remote system `{remote}`: no inbound flow receives it; add an inbound_flow for it and retry this item",
                        received.process_event
                    ))
                }
                Ok(_) => None,
            },
        };
        let mut item = InboundItem {
            id,
            sequence: received.sequence,
            remote_system: remote.to_string(),
            process_event: received.process_event,
            operation: received.operation.unwrap_or(Operation::Update),
            source_table: received.source_table,
            remote_correlation_id: received.remote_correlation_id,
            local_correlation_id: received.local_correlation_id,
            domain: domain.clone(),
            status: if problem.is_some() {
                QueueStatus::Error
            } else {
                QueueStatus::Ready
            },
            created_on: now,
            payload: received.payload,
            error: problem,
            processed_on: None,
            processing_ms: None,
            attachment_grants: received.attachment_grants,
            flow_contexts: Vec::new(),
            waiting: None,
        };
        if let Some(error) = &item.error {
            tracing::warn!(target: "inbound_queue", remote_system = remote, sequence = item.sequence, id, error = %error, "An inbound item was queued in Error.");
            let mut trace = FlowTrace::start(now);
            trace.flow = item.process_event.clone();
            trace.inputs = serde_json::json!({
                "operation": item.operation, "source_table": item.source_table,
                "remote_correlation_id": item.remote_correlation_id, "payload_bytes": item.payload.len(),
            });
            trace.step(
                "receive",
                format!(
                    "sequence {} from `{remote}`, checked on arrival",
                    item.sequence
                ),
            );
            let context = counters.next(super::context::COUNTER)?;
            super::context::save_as(
                txn.txn,
                context,
                trace,
                "inbound",
                id,
                QueueStatus::Error,
                item.error.clone(),
            )?;
            item.flow_contexts.push(context);
        }
        inbound.insert(id, encode(&item).as_slice())?;
        seen.insert((sender, received.sequence), id)?;
        tally.inbound(&item, None);
    }
    counters.save()?;
    tally.save(txn.txn)?;
    Ok(acks)
}

/// Runs the inbound flow of item `id` as `run_as`: correlate, map, write
/// the record (capturing it for every remote but the sender), update the
/// correlation and mark the item Processed, all in this transaction. A
/// problem with the item puts it in Error instead, with nothing else
/// written.
pub fn apply_inbound(
    txn: &mut Txn<'_>,
    id: u64,
    run_as: &Actor,
    limits: &RecordWriteLimits,
) -> Result<InboundItem, StoreError> {
    let started = std::time::Instant::now();
    let mut item: InboundItem = {
        let table = txn.txn.open_table(INBOUND)?;
        let value = table
            .get(id)?
            .ok_or_else(|| StoreError::NotFound(format!("inbound item {id}")))?;
        decode(value.value())?
    };
    if item.status != QueueStatus::Ready {
        return Ok(item);
    }
    let mut trace = FlowTrace::start(now_millis());
    match run_flow(txn, &item, run_as, limits, &mut trace)? {
        FlowResult::Applied(local_id) => {
            item.status = QueueStatus::Processed;
            item.local_correlation_id = local_id;
            item.error = None;
        }
        FlowResult::Skipped(reason) => {
            item.status = QueueStatus::Skipped;
            item.error = Some(format!("skipped by the flow's script: {reason}"));
        }
        FlowResult::Failed(problem) => {
            item.status = QueueStatus::Error;
            item.error = Some(problem);
        }
    }
    let now = now_millis();
    item.processed_on = Some(now);
    item.processing_ms = Some(started.elapsed().as_millis() as u64);
    item.waiting = None;
    trace.step("finish", format!("the item is {}", item.status.as_str()));
    super::context::link_inbound(txn.txn, trace, &mut item)?;
    txn.txn
        .open_table(INBOUND)?
        .insert(id, encode(&item).as_slice())?;
    super::stats::Tally::count_inbound(txn.txn, &item, Some(QueueStatus::Ready))?;
    Ok(item)
}

/// The flow itself; `Err` only when storage failed.
fn run_flow(
    txn: &mut Txn<'_>,
    item: &InboundItem,
    run_as: &Actor,
    limits: &RecordWriteLimits,
    trace: &mut FlowTrace,
) -> Result<FlowResult, StoreError> {
    trace.flow = item.process_event.clone();
    trace.inputs = serde_json::json!({
        "operation": item.operation, "source_table": item.source_table,
        "remote_correlation_id": item.remote_correlation_id,
        "local_correlation_id": item.local_correlation_id, "payload_bytes": item.payload.len(),
    });
    let payload: crate::queue::Payload = match serde_json::from_str(&item.payload) {
        Ok(payload) => payload,
        Err(e) => {
            trace.step("payload", "does not parse");
            return Ok(FlowResult::Failed(format!("malformed payload: {e}")));
        }
    };
    trace.inputs["changed_fields"] = payload
        .changed_fields
        .iter()
        .filter(|f| f.changed)
        .map(|f| (f.key.clone(), serde_json::Value::from(f.value.clone())))
        .collect::<serde_json::Map<_, _>>()
        .into();
    trace.inputs["journal_entries"] = payload.journal_entries.len().into();
    trace.inputs["attachments"] = payload.attachments.len().into();
    trace.step(
        "payload",
        format!(
            "{} fields ({} changed), {} journal entries, {} attachments",
            payload.changed_fields.len(),
            payload.changed_fields.iter().filter(|f| f.changed).count(),
            payload.journal_entries.len(),
            payload.attachments.len()
        ),
    );
    let Some(flow) = txn
        .capture
        .inbound_flow(&item.process_event, &item.remote_system)
        .cloned()
    else {
        trace.step("inbound flow", "none receives this process event");
        return Ok(FlowResult::Failed(format!(
            "no inbound flow receives process event `{}` from remote system `{}`; add one and retry this item",
            item.process_event, item.remote_system
        )));
    };
    trace.flow = flow.name.clone();
    trace.step(
        "inbound flow",
        format!("`{}` maps onto table `{}`", flow.name, flow.table),
    );

    // Correlate: the peer's record we already know, else the record the
    // peer says is ours, but only when that record is correlated with this
    // very remote system (and not with another of its records): a peer
    // reaches our records only through its own correlations.
    let correlated = match correlate(txn, item, &flow.table)? {
        Ok(correlated) => correlated,
        Err(problem) => {
            trace.step("correlate", "refused: the named record is not this peer's");
            return Ok(FlowResult::Failed(problem));
        }
    };

    trace.step(
        "correlate",
        match &correlated {
            Some(sys_id) => format!("our record {}/{sys_id}", flow.table),
            None => "no record yet: a new one".to_string(),
        },
    );

    let mapping = if !flow.script.trim().is_empty() {
        "the Basic template, then the flow's script"
    } else {
        "the Basic template"
    };
    let write =
        match crate::flow::run_inbound(&flow, item.operation, &payload, correlated.as_deref()) {
            FlowOutcome::Write(mut write) => {
                trace.step(
                    "map",
                    format!(
                        "{mapping}: {} of {} fields",
                        write.operation.as_str(),
                        write.fields.len()
                    ),
                );
                if write.operation == Operation::Create {
                    write
                        .fields
                        .insert("sys_domain".to_string(), item.domain.to_string());
                }
                write
            }
            FlowOutcome::Nothing => {
                trace.step("map", format!("{mapping}: nothing to change"));
                return Ok(FlowResult::Applied(correlated.unwrap_or_default()));
            }
            FlowOutcome::Skip(reason) => {
                trace.step("map", format!("{mapping} skipped the item"));
                return Ok(FlowResult::Skipped(reason));
            }
            FlowOutcome::Error(problem) => {
                trace.step("map", format!("{mapping} failed"));
                return Ok(FlowResult::Failed(problem));
            }
        };
    // Journal entries the record already holds (by entry id) are not
    // appended again, whatever path they came by.
    let mut write = write;
    if let Some(sys_id) = &correlated {
        if write.journal.iter().any(|j| j.origin.is_some()) {
            let journal = txn.txn.open_table(JOURNAL)?;
            let mut known = std::collections::HashSet::new();
            for row in journal.range(
                (flow.table.as_str(), sys_id.as_str(), 0u64)
                    ..=(flow.table.as_str(), sys_id.as_str(), u64::MAX),
            )? {
                let (_, value) = row?;
                let entry: JournalEntry = decode(value.value())?;
                known.insert(entry.id);
            }
            write
                .journal
                .retain(|j| j.origin.as_ref().is_none_or(|o| !known.contains(&o.id)));
        }
    }
    if write.operation != Operation::Delete
        && (!payload.attachments.is_empty() || !payload.removed_attachments.is_empty())
    {
        match inbound_attachments(txn, item, &payload, &flow.table, correlated.as_deref())? {
            Ok(changes) => {
                trace.step(
                    "attachments",
                    format!(
                        "{} to attach, {} to remove",
                        changes.attach.len(),
                        changes.detach.len()
                    ),
                );
                write.attachments = changes;
            }
            Err(problem) => {
                trace.step("attachments", "refused");
                return Ok(FlowResult::Failed(problem));
            }
        }
    }
    let prepared = {
        let records = txn.txn.open_table(RECORDS)?;
        let capture = txn.capture.clone();
        prepare(
            &records,
            run_as,
            std::slice::from_ref(&write),
            limits,
            &capture,
            Some(&item.remote_system),
        )
    };
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(StoreError::Invalid(m) | StoreError::NotFound(m) | StoreError::Conflict(m)) => {
            trace.step("write", "refused");
            return Ok(FlowResult::Failed(format!(
                "inbound flow `{}` (running as `{}`) could not write to `{}`: {m}",
                flow.name, run_as.user, flow.table
            )));
        }
        Err(other) => return Err(other),
    };
    let results = write_prepared(txn, prepared)?;
    let local_id = results[0].sys_id.clone();
    trace.step(
        "write",
        format!(
            "{} {}/{local_id} as `{}`",
            write.operation.as_str(),
            flow.table,
            run_as.user
        ),
    );
    trace.outputs = serde_json::json!({
        "table": flow.table, "sys_id": local_id, "operation": write.operation,
        "fields": write.fields, "journal_entries": write.journal.len(),
        "attachments_added": write.attachments.attach.len(),
        "attachments_removed": write.attachments.detach.len(),
    });

    let now = now_millis();
    let mut correlations = txn.txn.open_table(CORRELATIONS)?;
    let key = (
        flow.table.as_str(),
        local_id.as_str(),
        item.remote_system.as_str(),
    );
    let previous: Option<Correlation> = match correlations.get(key)? {
        Some(value) => Some(decode(value.value())?),
        None => None,
    };
    let correlation = Correlation {
        remote_system: item.remote_system.clone(),
        remote_correlation_id: item.remote_correlation_id.clone(),
        table: flow.table.clone(),
        local_correlation_id: local_id.clone(),
        active: write.operation != Operation::Delete,
        created_on: previous.map(|p| p.created_on).unwrap_or(now),
        updated_on: now,
    };
    correlations.insert(key, encode(&correlation).as_slice())?;
    txn.txn.open_table(CORRELATIONS_BY_REMOTE)?.insert(
        (
            item.remote_system.as_str(),
            item.remote_correlation_id.as_str(),
        ),
        (flow.table.as_str(), local_id.as_str()),
    )?;
    trace.step(
        "correlation",
        format!(
            "{}/{local_id} is `{}`'s {}",
            flow.table, item.remote_system, item.remote_correlation_id
        ),
    );
    Ok(FlowResult::Applied(local_id))
}

/// The local record item `item` is about: the one correlated with the
/// sender's record, else the one the sender names (`local_correlation_id`)
/// when it is correlated with the sender, else none (a new record, also
/// when the named record does not exist here). The
/// inner `Err` refuses an item that names a record the sender has no
/// correlation with (a record of this instance, or of another remote).
fn correlate(
    txn: &Txn<'_>,
    item: &InboundItem,
    table: &str,
) -> Result<Result<Option<String>, String>, StoreError> {
    let remote = item.remote_system.as_str();
    let records = txn.txn.open_table(RECORDS)?;
    let exists =
        |sys_id: &str| -> Result<bool, StoreError> { Ok(records.get((table, sys_id))?.is_some()) };
    let known = txn
        .txn
        .open_table(CORRELATIONS_BY_REMOTE)?
        .get((remote, item.remote_correlation_id.as_str()))?
        .map(|v| {
            let (known_table, sys_id) = v.value();
            (known_table.to_string(), sys_id.to_string())
        })
        .filter(|(known_table, _)| known_table == table)
        .map(|(_, sys_id)| sys_id);
    if let Some(sys_id) = known {
        return Ok(Ok(exists(&sys_id)?.then_some(sys_id)));
    }
    let named = item.local_correlation_id.as_str();
    // Naming no record, or one we do not have (the sender's knowledge of
    // us is older than our store), makes a new record: nothing of ours is
    // reached.
    if named.is_empty() || !exists(named)? {
        return Ok(Ok(None));
    }
    let correlation: Option<Correlation> = match txn
        .txn
        .open_table(CORRELATIONS)?
        .get((table, named, remote))?
    {
        Some(value) => Some(decode(value.value())?),
        None => None,
    };
    match correlation {
        // We sent this record to the sender and it answers about it (the
        // correlation learns the sender's id with this item).
        Some(c)
            if c.remote_correlation_id.is_empty()
                || c.remote_correlation_id == item.remote_correlation_id =>
        {
            Ok(Ok(Some(named.to_string())))
        }
        Some(c) => Ok(Err(format!(
            "the item names record {table}/{named}, which is correlated with `{remote}`'s record {}, not with its record {}; nothing was written (skip this item, or check the sender's correlations)",
            c.remote_correlation_id, item.remote_correlation_id
        ))),
        None => Ok(Err(format!(
            "the item names record {table}/{named}, which is not correlated with remote system `{remote}`: a peer may change only records it sent or was sent; nothing was written (skip this item)"
        ))),
    }
}

/// The attachment changes an inbound item makes to its target record;
/// the inner `Err` refuses the item. Every content to attach must have
/// arrived (the inbound processor fetches them first) with the claimed size.
fn inbound_attachments(
    txn: &mut Txn<'_>,
    item: &InboundItem,
    payload: &crate::queue::Payload,
    table: &str,
    correlated: Option<&str>,
) -> Result<Result<crate::record::AttachmentChanges, String>, StoreError> {
    use crate::attachment::{AttachmentLimits, check_incoming, plan_inbound};
    if let Err(problem) = check_incoming(
        &payload.attachments,
        &payload.removed_attachments,
        &AttachmentLimits::default(),
    ) {
        return Ok(Err(problem));
    }
    let target = match correlated {
        Some(sys_id) => {
            let records = txn.txn.open_table(RECORDS)?;
            match records.get((table, sys_id))? {
                Some(value) => decode::<Record>(value.value())?.attachments,
                None => Vec::new(),
            }
        }
        None => Vec::new(),
    };
    let changes = plan_inbound(
        &payload.attachments,
        &payload.removed_attachments,
        payload.attachment_strategy.unwrap_or_default(),
        correlated.is_none(),
        &target,
        &item.remote_system,
    );
    for attachment in &changes.attach {
        match super::content::stored_size(txn.txn, &attachment.hash)? {
            None => {
                return Ok(Err(format!(
                    "attachment {:?} ({}) has not arrived from `{}`; retry this item",
                    attachment.file_name, attachment.hash, item.remote_system
                )));
            }
            Some(size) if size != attachment.size => {
                return Ok(Err(format!(
                    "attachment {:?} claims {} bytes, but its content ({}) has {size} (its size lies)",
                    attachment.file_name, attachment.size, attachment.hash
                )));
            }
            Some(_) => {}
        }
    }
    Ok(Ok(changes))
}

/// What running an item's flow came to.
enum FlowResult {
    /// Applied to this local record (empty when nothing needed doing).
    Applied(String),
    /// The flow's script skipped the item.
    Skipped(String),
    /// The item is at fault; nothing was written.
    Failed(String),
}
