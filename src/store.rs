//! The store: the only module that touches redb. It owns the instance's one
//! database file, declares its tables (`tables`), the stored value format
//! (`codec`) and the single writer thread that batches concurrent writes into
//! one durable transaction (`writer`, the engine only). Each table family has
//! one file holding its reads and its writer jobs. Reads run on the caller's
//! thread in a read transaction; callers on the async runtime use
//! `spawn_blocking`.

mod codec;
mod compact;
mod handle;
mod tables;
pub use tables::TableSize;
mod writer;
pub use writer::Chain;
#[cfg(test)]
pub(crate) use writer::test_support;
mod open;

mod counters;
mod properties;
mod load;
mod match_index;
mod records;
mod staging;
mod remotes;
mod sync_objects;
mod users;
mod enrol;

mod apply;
mod conflicts;
mod content;
mod context;
mod correlations;
mod inbound;
mod outbound;
mod purge;
mod reconcile;
mod queue_index;
mod names;
mod upgrade;
pub mod sink;
mod stats;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::Database;
use serde::{Deserialize, Serialize};

pub use codec::FORMAT_VERSION;
use codec::{decode, encode};
pub use content::ContentInfo;
pub use enrol::{HubLink, Invite, InviteUse, JoinAsk, JoinGrant, Removed, link_users};
pub use inbound::{ApplyAs, ReceivedItem};
pub use load::{Load, LoadState};
pub use outbound::acknowledged_context;
pub use purge::{PurgeBefore, Purged};
pub use queue_index::{Browse, Browsed};
pub use reconcile::{MOST_LISTED, ReconcileState, Reconciliation, TableReport};
pub use records::RecordWriteLimits;
pub use sync_objects::{ApplyReport, RemoteState, RemoteSystemStatus, StoredSyncObject};
use tables::*;

use crate::domain::Domain;
use crate::failure::{Classified, Failure};
use crate::ids::{Millis, hex, new_sys_id, now_millis, token_hash};
use crate::queue::QueueStatus;
use crate::user::{Role, User};

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "procsync.redb";

/// Store failures, each saying what to do next.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the instance at {path} is already in use by another procsync process; stop that process first (one process per data directory)"
    )]
    InUse { path: String },
    #[error("no instance at {path}; create one with `procsync init --data {path} --name NAME`")]
    NoInstance { path: String },
    #[error(
        "an instance already exists at {path}; procsync init never touches an existing instance (choose another --data directory)"
    )]
    AlreadyExists { path: String },
    /// Input a domain check refused; its text says why and what to do.
    #[error("{0}")]
    Invalid(String),
    #[error("record {table}/{sys_id} not found")]
    RecordNotFound { table: String, sys_id: String },
    #[error("record {table}/{sys_id} already exists; update it instead")]
    RecordExists { table: String, sys_id: String },
    #[error("attachment {attachment} of record {table}/{sys_id} not found")]
    AttachmentNotFound {
        table: String,
        sys_id: String,
        attachment: String,
    },
    #[error("record {table}/{sys_id} already has attachment {attachment}")]
    AttachmentExists {
        table: String,
        sys_id: String,
        attachment: String,
    },
    #[error("user `{name}` not found")]
    UserNotFound { name: String },
    #[error(
        "user `{name}` already exists; use `procsync user roles` or `procsync user token` to change it"
    )]
    UserExists { name: String },
    #[error("remote system `{name}` not found")]
    RemoteNotFound { name: String },
    #[error("{queue} item {id} not found")]
    ItemNotFound { queue: &'static str, id: u64 },
    #[error("flow context {id} not found")]
    ContextNotFound { id: u64 },
    #[error("content {id} not found")]
    ContentNotFound { id: u64 },
    #[error("chunk {index} of content {hash} not found")]
    ChunkNotFound { hash: String, index: u32 },
    #[error(
        "content {hash} has {stored} bytes stored; the next chunk must start there, not at {offset}"
    )]
    ChunkOutOfPlace {
        hash: String,
        stored: u64,
        offset: u64,
    },
    #[error(
        "a chunk of {len} bytes at offset {offset} does not fit content {hash} of {size} bytes (chunks are {chunk} bytes, the last one shorter)",
        chunk = crate::attachment::CHUNK_BYTES
    )]
    ChunkDoesNotFit {
        hash: String,
        len: usize,
        offset: u64,
        size: u64,
    },
    #[error("content {hash} has {received} of {size} bytes; send the rest first")]
    ContentIncomplete {
        hash: String,
        received: u64,
        size: u64,
    },
    #[error("definitions outside your domain changed while this file was checked; apply it again")]
    DefinitionsChanged,
    /// A join the hub refused; the text says why and what to do. Always
    /// returned before the job wrote anything, so it fails that job alone.
    #[error("{0}")]
    JoinRefused(String),
    /// One write of a batch failed; `source` says how.
    #[error("write {position} of {count}: {source}")]
    InBatch {
        position: usize,
        count: usize,
        source: Box<StoreError>,
    },
    #[error(
        "the store holds data written by a newer procsync (format {found}; this binary reads up to {supported}); upgrade procsync"
    )]
    NewerFormat { found: u8, supported: u8 },
    #[error("the store is damaged: {0}; restore the data directory from a backup")]
    Corrupt(String),
    /// A database failure redb reported (not a disk failure: those have
    /// their own variants), in redb's words.
    #[error("storage failure: {0}; the change was not saved, retry it")]
    Storage(String),
    #[error(
        "cannot {action} {path}: {detail}; check the disk and the permissions of that directory"
    )]
    File {
        action: &'static str,
        path: String,
        detail: String,
    },
    #[error(
        "a background task of the store stopped ({detail}); the change was not saved, retry it"
    )]
    TaskFailed { detail: String },
    #[error("the store is shutting down; retry once the instance is back")]
    Closed,
    #[error(
        "the disk holding the store is full: the change was not saved; free space there and procsync carries on by itself (nothing it acknowledged is lost)"
    )]
    DiskFull,
    #[error(
        "the store cannot write after a disk error ({0}): the change was not saved; procsync reopens the store by itself once the disk accepts writes again"
    )]
    Unwritable(String),
    #[error("the store is being reopened after a disk error; retry in a moment")]
    Reopening,
    #[error(
        "cannot open the store {0}; check the data directory's disk and permissions, or restore it from a backup"
    )]
    CannotOpen(String),
}

impl StoreError {
    /// Whether a writer job failing with this error must abort the whole
    /// batch: input errors are found before the job writes anything, so
    /// the other jobs commit; anything else may have written half a change.
    pub fn aborts_batch(&self) -> bool {
        // A refused join is the caller's doing, like bad input: a flood of
        // forged joins must not fail the writes committed beside them.
        !self.failure().is_input() && !matches!(self, StoreError::JoinRefused(_))
    }

    /// A file the store could not `action` ("create", "write").
    pub fn file(action: &'static str, path: &Path, error: &std::io::Error) -> StoreError {
        StoreError::File {
            action,
            path: path.display().to_string(),
            detail: error.to_string(),
        }
    }

    /// Whether the disk failed under the store (full, or an I/O error),
    /// after which redb needs the file reopened.
    pub fn is_disk_failure(&self) -> bool {
        matches!(
            self,
            StoreError::DiskFull | StoreError::Unwritable(_) | StoreError::Reopening
        )
    }
}

impl Classified for StoreError {
    fn failure(&self) -> Failure {
        use StoreError::*;
        match self {
            Invalid(_) | ChunkDoesNotFit { .. } | ContentIncomplete { .. } => Failure::Invalid,
            RecordNotFound { .. }
            | AttachmentNotFound { .. }
            | UserNotFound { .. }
            | RemoteNotFound { .. }
            | ItemNotFound { .. }
            | ContextNotFound { .. }
            | ContentNotFound { .. }
            | ChunkNotFound { .. } => Failure::NotFound,
            RecordExists { .. }
            | AttachmentExists { .. }
            | UserExists { .. }
            | ChunkOutOfPlace { .. }
            | DefinitionsChanged => Failure::Conflict,
            JoinRefused(_) => Failure::PermissionDenied,
            InBatch { source, .. } => source.failure(),
            Closed | Storage(_) | TaskFailed { .. } | DiskFull | Unwritable(_) | Reopening => {
                Failure::Unavailable
            }
            InUse { .. }
            | NoInstance { .. }
            | AlreadyExists { .. }
            | NewerFormat { .. }
            | Corrupt(_)
            | File { .. }
            | CannotOpen(_) => Failure::Internal,
        }
    }
}

impl From<tokio::task::JoinError> for StoreError {
    fn from(e: tokio::task::JoinError) -> Self {
        StoreError::TaskFailed {
            detail: e.to_string(),
        }
    }
}

/// What a caught panic said.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "no detail".to_string())
}

/// A redb storage error in our terms: disk failures get their own variants.
fn storage_error(e: &redb::StorageError) -> StoreError {
    match e {
        redb::StorageError::Io(io)
            if io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28) =>
        {
            StoreError::DiskFull
        }
        redb::StorageError::Io(io) => StoreError::Unwritable(io.to_string()),
        redb::StorageError::PreviousIo => {
            StoreError::Unwritable("an earlier write to the disk failed".to_string())
        }
        redb::StorageError::Corrupted(what) => StoreError::Corrupt(what.clone()),
        other => StoreError::Storage(other.to_string()),
    }
}

macro_rules! storage_errors {
    ($($ty:ident),*) => {$(
        impl From<redb::$ty> for StoreError {
            fn from(e: redb::$ty) -> Self {
                match e {
                    redb::$ty::Storage(storage) => storage_error(&storage),
                    other => StoreError::Storage(other.to_string()),
                }
            }
        }
    )*};
}
storage_errors!(TableError, TransactionError, CommitError);

impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        storage_error(&e)
    }
}

impl From<redb::SetDurabilityError> for StoreError {
    fn from(e: redb::SetDurabilityError) -> Self {
        StoreError::Storage(e.to_string())
    }
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::Io(io) => storage_error(&redb::StorageError::Io(io)),
            redb::Error::PreviousIo => storage_error(&redb::StorageError::PreviousIo),
            other => StoreError::Storage(other.to_string()),
        }
    }
}

/// Who and what this instance is; written once by `init`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub sys_id: String,
    pub name: String,
    pub created_on: Millis,
    /// The instance's self-signed certificate (PEM); peers pin its
    /// fingerprint.
    pub cert_pem: String,
    /// The certificate's private key (PEM). The database file is mode 0600.
    pub key_pem: String,
    /// `sha256:` + hex of the certificate's DER.
    pub fingerprint: String,
}

/// Who is writing: the authenticated user's name and domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub user: String,
    pub domain: Domain,
}

/// Which queue items (outbound or inbound) to list.
#[derive(Clone, Debug, Default)]
pub struct QueueFilter {
    pub status: Option<QueueStatus>,
    pub remote_system: Option<String>,
    /// Only items whose domain lies in this subtree.
    pub domain: Option<Domain>,
    pub limit: usize,
    /// Only items with an id above this one (the page before ended there).
    pub after: u64,
}

impl QueueFilter {
    /// Most items to return: `limit`, or all when it is 0.
    fn page_size(&self) -> usize {
        if self.limit == 0 {
            usize::MAX
        } else {
            self.limit
        }
    }

    /// Whether an item with these properties belongs in the list.
    fn admits(&self, id: u64, status: QueueStatus, remote_system: &str, domain: &Domain) -> bool {
        id > self.after
            && self.status.is_none_or(|s| s == status)
            && self
                .remote_system
                .as_deref()
                .is_none_or(|r| r == remote_system)
            && self.domain.as_ref().is_none_or(|d| domain.is_within(d))
    }
}

/// An open instance store.
pub struct Store {
    db: Arc<handle::SharedDb>,
    dir: PathBuf,
    writer: writer::Writer,
    /// The remote systems as last read, until a job that changes them.
    remotes: sync_objects::RemotesCache,
}

fn db_path(dir: &Path) -> PathBuf {
    dir.join(DB_FILE)
}

/// redb's page cache, read and write together. Small on purpose: the
/// operating system caches the file anyway, the write benchmark measured
/// the same with 4 MiB as with 32 MiB, and every MiB here is resident memory
/// an attachment transfer would otherwise fill with pages it never reads
/// again.
const CACHE_BYTES: usize = 4 << 20;

fn open_database(dir: &Path, create: bool) -> Result<Database, StoreError> {
    let path = db_path(dir);
    let shown = dir.display().to_string();
    // redb caches up to 1 GiB by default; an edge server wants a bounded
    // footprint.
    let mut builder = redb::Builder::new();
    builder.set_cache_size(CACHE_BYTES);
    // redb checks the pages it reads; on a damaged file it can panic (in
    // debug builds, at open) instead of returning `Corrupted`.
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if create {
            builder.create(&path)
        } else {
            builder.open(&path)
        }
    }));
    let result = opened.map_err(|panic| {
        StoreError::Corrupt(format!(
            "{} cannot be read: {}",
            path.display(),
            panic_text(panic.as_ref())
        ))
    })?;
    result.map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path: shown },
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(what)) => {
            StoreError::Corrupt(format!("{}: {what}", path.display()))
        }
        redb::DatabaseError::Storage(storage) => match storage_error(&storage) {
            StoreError::Storage(text) => {
                StoreError::CannotOpen(format!("{}: {text}", path.display()))
            }
            other => other,
        },
        other => StoreError::CannotOpen(format!("{}: {other}", path.display())),
    })
}

impl Store {
    /// Creates a new instance store with its identity and an `admin` user
    /// holding `admin_token`. Refuses when the directory already holds one.
    pub fn create(dir: &Path, info: &InstanceInfo, admin_token: &str) -> Result<(), StoreError> {
        let path = db_path(dir);
        if path.exists() {
            return Err(StoreError::AlreadyExists {
                path: dir.display().to_string(),
            });
        }
        std::fs::create_dir_all(dir).map_err(|e| StoreError::file("create", dir, &e))?;
        // Create the file with mode 0600 first: it will hold the private key.
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| StoreError::file("create", &path, &e))?;
        }
        let db = open_database(dir, true)?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert("instance", encode(info).as_slice())?;
            meta.insert("format", encode(&FORMAT_VERSION).as_slice())?;
            let admin = User {
                sys_id: new_sys_id(),
                name: "admin".to_string(),
                roles: vec![Role::Admin],
                domain: Domain::global(),
                created_on: now_millis(),
                token_hashes: vec![hex(&token_hash(admin_token))],
            };
            txn.open_table(USERS)?
                .insert("admin", encode(&admin).as_slice())?;
            txn.open_table(TOKENS)?.insert(
                token_hash(admin_token).as_slice(),
                encode(&admin.name).as_slice(),
            )?;
        }
        upgrade::upgrade(&txn)?;
        txn.commit()?;
        Ok(())
    }

    /// Opens an existing instance and starts its writer thread.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        if !db_path(dir).exists() {
            return Err(StoreError::NoInstance {
                path: dir.display().to_string(),
            });
        }
        let db = Arc::new(handle::SharedDb::new(
            open_database(dir, false)?,
            dir.to_path_buf(),
        ));
        let store_format: u8 = {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            let value = meta
                .get("format")?
                .ok_or_else(|| StoreError::Corrupt("no format version recorded".into()))?;
            decode(value.value())?
        };
        if store_format > FORMAT_VERSION {
            return Err(StoreError::NewerFormat {
                found: store_format,
                supported: FORMAT_VERSION,
            });
        }
        {
            let txn = db.begin_write()?;
            upgrade::upgrade(&txn)?;
            txn.commit()?;
        }
        db.reload_names()?;
        let config = sync_objects::read_sync_config(&db)?;
        {
            let txn = db.begin_write()?;
            let matched = crate::capture::CaptureIndex::build(&config).matched();
            match_index::follow(&txn, db.names(), &matched)?;
            txn.commit()?;
        }
        let writer = writer::Writer::start(db.clone(), &config)?;
        Ok(Store {
            db,
            dir: dir.to_path_buf(),
            writer,
            remotes: Default::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Changes after each commit that made outbound items Ready (queued
    /// them, or an operator's retry): a session holding it never misses
    /// items made Ready since it last looked.
    pub fn ready_items(&self) -> tokio::sync::watch::Receiver<u64> {
        self.writer.ready_items()
    }

    /// Completes with the reason once the store is found damaged; the
    /// instance must then stop (`serve` exits non-zero).
    pub async fn damaged(&self) -> String {
        let mut damaged = self.db.damaged();
        loop {
            if let Some(why) = damaged.borrow_and_update().clone() {
                return why;
            }
            if damaged.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Why the store cannot write now (its disk failed, or it is damaged),
    /// if it cannot.
    pub fn write_failure(&self) -> Option<String> {
        if let Some(why) = self.db.damaged().borrow().clone() {
            return Some(StoreError::Corrupt(why).to_string());
        }
        self.db.disk_failed().then(|| {
            "the store cannot write: its disk is full or failing; it is reopened by itself as soon as the disk accepts writes again".to_string()
        })
    }

    /// Stops the writer (finishing queued writes) and closes the file.
    pub fn close(&self) {
        self.writer.stop();
    }

    pub fn instance(&self) -> Result<InstanceInfo, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let value = meta
            .get("instance")?
            .ok_or_else(|| StoreError::Corrupt("no instance identity recorded".into()))?;
        decode(value.value())
    }
}
