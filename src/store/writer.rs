//! The single writer: one thread owns every write transaction. Requests
//! queue on a channel; the thread takes all that are waiting (up to
//! `MAX_JOBS_PER_COMMIT`), runs them in one redb transaction and commits it
//! durably once (group commit), then answers each request. A job that
//! rejects its input writes nothing; a storage failure aborts the whole
//! transaction and every job in it gets the error. This file is the engine
//! only: the jobs live with their tables (`records`, `inbound`, …).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use tokio::sync::watch;

use redb::{Durability, WriteTransaction};

use super::StoreError;
use super::codec::encode;
use super::handle::SharedDb;
use super::tables::META;
use crate::capture::CaptureIndex;
use crate::config::sync::SyncConfig;
use crate::ids::now_millis;

/// Most requests committed together. A hub's inbound processor queues a
/// pass of up to 1,000 applies at once: at 128 that took eight commits,
/// each with its fsync; at 512 a 200,000-item backlog drained 10-12 %
/// faster (measured back to back), end to end was a little faster and the
/// latency at 1,000 items/s no worse; 1,024 gained nothing more.
const MAX_JOBS_PER_COMMIT: usize = 512;

/// The state a job sees: the open transaction (a `Txn` derefs to it) and
/// the capture rules, which `apply_config` may replace for the jobs after
/// it.
pub struct Txn<'a> {
    txn: &'a WriteTransaction,
    /// The store's field names: a job numbers new ones in this transaction
    /// (`name_fields`).
    pub(super) names: &'a super::names::FieldNames,
    pub capture: Arc<CaptureIndex>,
    /// Set when a job made outbound items Ready (`Staging` sets it): once
    /// the commit is durable, the sessions are told to look.
    pub made_ready: std::cell::Cell<bool>,
    /// The counts of every queue item the jobs moved, written to the
    /// stored counters once, before the commit (`Tally::save`).
    pub(super) tally: std::cell::RefCell<super::stats::Tally>,
    /// The counters the jobs took, stored once before the commit
    /// (`counters::flush`).
    pub(super) counters: std::cell::RefCell<std::collections::BTreeMap<String, u64>>,
    /// Whether a job's `Counters` is open.
    pub(super) counters_in_use: std::cell::Cell<bool>,
    /// The tables kept open for the jobs that share them (`open`).
    open: super::open::OpenTables<'a>,
    /// Whether the running job shares the kept tables.
    shares: std::cell::Cell<bool>,
}

impl<'a> Txn<'a> {
    /// The transaction itself, for tables that outlive one borrow of `self`.
    pub(super) fn write_txn(&self) -> &'a WriteTransaction {
        self.txn
    }

    pub(super) fn open_tables(&self) -> &super::open::OpenTables<'a> {
        &self.open
    }

    /// Whether the running job keeps its tables open for the next one.
    pub(super) fn shares_tables(&self) -> bool {
        self.shares.get()
    }

    /// Numbers the field names `unnamed` (those a value was encoded without
    /// a number for), so the values written after name them by number.
    pub(super) fn name_fields(&self, unnamed: &[String]) -> Result<(), StoreError> {
        if unnamed.is_empty() {
            return Ok(());
        }
        let mut table = self.txn.open_table(super::tables::FIELD_NAMES)?;
        for name in unnamed {
            self.names.number(&mut table, name)?;
        }
        Ok(())
    }
}

impl std::ops::Deref for Txn<'_> {
    type Target = WriteTransaction;

    fn deref(&self) -> &WriteTransaction {
        self.txn
    }
}

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A job's body; see `Job::run`.
type RunJob =
    Box<dyn FnOnce(Result<&mut Txn<'_>, StoreError>) -> (Completion, Option<StoreError>) + Send>;

/// A request, as queued for the writer thread.
struct Job {
    durability: Durability,
    /// Whether it shares the kept tables (`open`).
    shares: bool,
    /// Runs it in the open transaction, or (when no transaction could be
    /// opened) answers with the error. Returns what to do once the
    /// commit's outcome is known, and an error that must abort the
    /// transaction.
    run: RunJob,
}

pub struct Writer {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The committed capture rules, for preparing writes off this thread.
    capture: SharedCapture,
    /// Counts the commits that made outbound items Ready.
    ready: watch::Sender<u64>,
}

type SharedCapture = Arc<RwLock<Arc<CaptureIndex>>>;

/// Jobs that must be saved in the order they were queued or not at all
/// (the batches of one peer stream, queued before the earlier ones are
/// committed): once one is not saved, by its own error or its commit's,
/// every later one is refused without running. Jobs run in queue order
/// and each commit's answers are given before the next transaction
/// begins, so a later job always sees an earlier one's failure.
#[derive(Clone, Default)]
pub struct Chain(Arc<AtomicBool>);

impl Chain {
    fn is_broken(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn break_off(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn refusal() -> StoreError {
        StoreError::Invalid(
            "an earlier batch of this stream was not saved, so this one was not either; the sender sends both again on its next stream".to_string(),
        )
    }
}

impl Writer {
    pub fn start(db: Arc<SharedDb>, config: &SyncConfig) -> Result<Writer, StoreError> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let capture: SharedCapture = Arc::new(RwLock::new(Arc::new(CaptureIndex::build(config))));
        let shared = capture.clone();
        let ready = watch::Sender::new(0);
        let signal = ready.clone();
        let thread = std::thread::Builder::new()
            .name("store-writer".to_string())
            .spawn(move || run(db, receiver, shared, &signal))
            .map_err(|e| StoreError::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            capture,
            ready,
        })
    }

    /// Changes after each commit that made outbound items Ready: a session
    /// holding one never misses items queued since it last looked.
    pub fn ready_items(&self) -> watch::Receiver<u64> {
        self.ready.subscribe()
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
        self.queue(durability, false, None, job)
    }

    /// `enqueue` (durably) for a job that shares the kept tables with the
    /// jobs around it: every table it touches of those in `open` it must
    /// reach through `Txn`'s accessors, never `open_table`.
    pub fn enqueue_sharing<T, F>(
        &self,
        job: F,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.queue(Durability::Immediate, true, None, job)
    }

    /// `enqueue_sharing` for a job of `chain`: it runs only if every
    /// earlier job of the chain was saved.
    pub fn enqueue_chained<T, F>(
        &self,
        chain: &Chain,
        job: F,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.queue(Durability::Immediate, true, Some(chain.clone()), job)
    }

    fn queue<T, F>(
        &self,
        durability: Durability,
        shares: bool,
        chain: Option<Chain>,
        job: F,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let boxed = Box::new(move |txn: Result<&mut Txn<'_>, StoreError>| {
            let txn = match &chain {
                Some(chain) if chain.is_broken() => Err(Chain::refusal()),
                _ => txn,
            };
            match txn.and_then(job) {
                Ok(value) => (
                    Box::new(move |commit: Result<(), StoreError>| {
                        if let (Err(_), Some(chain)) = (&commit, &chain) {
                            chain.break_off();
                        }
                        let _ = reply.send(commit.map(|()| value));
                    }) as Completion,
                    None,
                ),
                Err(error) => {
                    if let Some(chain) = &chain {
                        chain.break_off();
                    }
                    let poison = error.aborts_batch().then(|| error.clone());
                    (
                        Box::new(move |_| {
                            let _ = reply.send(Err(error));
                        }) as Completion,
                        poison,
                    )
                }
            }
        });
        let queued = {
            let sender = self.sender.lock().expect("writer sender lock");
            sender.as_ref().is_some_and(|sender| {
                let job = Job {
                    durability,
                    shares,
                    run: boxed,
                };
                sender.send(job).is_ok()
            })
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

fn run(
    db: Arc<SharedDb>,
    receiver: mpsc::Receiver<Job>,
    shared: SharedCapture,
    ready: &watch::Sender<u64>,
) {
    let mut capture = shared.read().expect("capture lock").clone();
    let mut disk_failed = false;
    // What failed first while the disk refuses writes: redb answers later
    // writes with "an earlier write failed", and the operator (and a peer
    // sending to us) should still read that the disk is full.
    let mut disk_cause: Option<StoreError> = None;
    // Reopening may make redb check the file: at most once per interval.
    let mut last_reopen: Option<std::time::Instant> = None;
    loop {
        if disk_failed && last_reopen.is_none_or(|at| at.elapsed() >= REOPEN_INTERVAL) {
            last_reopen = Some(std::time::Instant::now());
            disk_failed = !reopen_and_check(&db);
            db.set_disk_failed(disk_failed);
            if !disk_failed {
                disk_cause = None;
            }
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
            commit_batch(&db, batch, capture.clone(), disk_cause.as_ref())
        }));
        let Committed {
            completions,
            result,
            new_capture,
            made_ready,
        } = match committed {
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
        let result = match result {
            Err(e) if e.is_disk_failure() => Err(disk_cause.get_or_insert(e).clone()),
            other => other,
        };
        if disk_failed && result.is_ok() {
            // The handle the last failed check left takes writes again: the
            // disk has room before the next check came round. Say so before
            // answering, so nobody reads "disk full" after a write worked.
            disk_failed = false;
            disk_cause = None;
            db.set_disk_failed(false);
            tracing::info!(target: "store", "The disk accepts writes again; the store was reopened and writes resume.");
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
        if made_ready && result.is_ok() {
            ready.send_modify(|commits| *commits = commits.wrapping_add(1));
        }
        for completion in completions {
            completion(result.clone());
        }
    }
    tracing::debug!(target: "store", "The store writer stopped.");
}

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

/// What one batch's transaction came to.
struct Committed {
    /// Each job's answer, to give the commit's outcome.
    completions: Vec<Completion>,
    result: Result<(), StoreError>,
    /// The capture rules, when a job replaced them and the commit worked.
    new_capture: Option<Arc<CaptureIndex>>,
    /// Whether a job made outbound items Ready.
    made_ready: bool,
}

fn commit_batch(
    db: &SharedDb,
    batch: Vec<Job>,
    capture: Arc<CaptureIndex>,
    disk_cause: Option<&StoreError>,
) -> Committed {
    let durability = if batch
        .iter()
        .any(|job| matches!(job.durability, Durability::Immediate))
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
            let error = match disk_cause {
                Some(cause) if error.is_disk_failure() => cause.clone(),
                _ => error,
            };
            let completions = batch
                .into_iter()
                .map(|job| (job.run)(Err(error.clone())).0)
                .collect::<Vec<_>>();
            return Committed {
                completions,
                result: Err(error),
                new_capture: None,
                made_ready: false,
            };
        }
    };
    let mut poisoned = None;
    let mut completions = Vec::with_capacity(batch.len());
    let names = db.names();
    let names_before = names.mark();
    // The job state borrows the transaction (its kept tables too): it ends
    // here, before the commit takes the transaction.
    let (new_capture, made_ready, tally, counters) = {
        let mut ctx = Txn {
            txn: &txn,
            names,
            capture: capture.clone(),
            made_ready: std::cell::Cell::new(false),
            tally: std::cell::RefCell::new(super::stats::Tally::new(now_millis())),
            counters: Default::default(),
            counters_in_use: Default::default(),
            open: Default::default(),
            shares: Default::default(),
        };
        for job in batch {
            // A job that does not share may open any table itself.
            if !job.shares {
                ctx.open.close_all();
            }
            ctx.shares.set(job.shares);
            let (completion, poison) = (job.run)(Ok(&mut ctx));
            completions.push(completion);
            if poisoned.is_none() {
                poisoned = poison;
            }
        }
        let Txn {
            capture,
            made_ready,
            tally,
            counters,
            ..
        } = ctx;
        (capture, made_ready, tally, counters)
    };
    let made_ready = made_ready.get();
    if poisoned.is_none() {
        poisoned = tally
            .into_inner()
            .flush(&txn)
            .and_then(|()| super::counters::flush(&txn, counters.into_inner()))
            .err();
    }
    let result = match poisoned {
        Some(error) => {
            let _ = txn.abort();
            Err(error)
        }
        None => txn.commit().map_err(StoreError::from),
    };
    if result.is_err() {
        names.forget_since(names_before);
    }
    let changed = result.is_ok() && !Arc::ptr_eq(&new_capture, &capture);
    Committed {
        completions,
        result,
        new_capture: changed.then_some(new_capture),
        made_ready,
    }
}

/// For tests that need a real store (the store's own, and `crate::testing`).
#[cfg(test)]
pub(crate) mod test_support {
    use super::super::{InstanceInfo, Store, StoreError};

    /// A new store of instance `name` in a temporary directory (removed
    /// with the guard).
    pub fn scratch_store(name: &str) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let info = InstanceInfo {
            sys_id: crate::ids::new_sys_id(),
            name: name.to_string(),
            created_on: crate::ids::now_millis(),
            cert_pem: String::new(),
            key_pem: String::new(),
            fingerprint: "sha256:test".to_string(),
        };
        Store::create(dir.path(), &info, "admin-token").expect("a new store");
        let store = Store::open(dir.path()).expect("the store opens");
        (dir, store)
    }

    /// Holds the writer for a moment, so the jobs queued while it waits
    /// all go into its next transaction.
    pub fn hold(store: &Store) -> impl std::future::Future<Output = Result<(), StoreError>> {
        store.writer.enqueue(redb::Durability::None, |_| {
            std::thread::sleep(std::time::Duration::from_millis(200));
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
