//! The store: the only module that touches redb. It owns the instance's one
//! database file, declares its tables (`tables`), the stored value format
//! (`codec`) and the single writer thread that batches concurrent writes into
//! one durable transaction (`writer`). Reads run on the caller's thread in a
//! read transaction; callers on the async runtime use `spawn_blocking`.

mod codec;
mod content;
mod context;
mod handle;
mod peer;
mod purge;
mod stats;
mod tables;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableTable};
use serde::{Deserialize, Serialize};

pub use codec::FORMAT_VERSION;
use codec::{decode, encode};
pub use content::ContentInfo;
pub use peer::ReceivedItem;
pub use purge::{PurgeBefore, Purged};
use tables::*;
pub use writer::{ApplyReport, RecordWriteLimits};

use crate::config::sync::SyncConfig;
use crate::domain::Domain;
use crate::ids::{Millis, hex, new_sys_id, now_millis, token_hash};
use crate::queue::{OutboundItem, QueueStatus};
use crate::record::{JournalEntry, Record, RecordWrite, WriteResult};
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
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(
        "the store holds data written by a newer procsync (format {found}; this binary reads up to {supported}); upgrade procsync"
    )]
    NewerFormat { found: u8, supported: u8 },
    #[error("the store is damaged: {0}; restore the data directory from a backup")]
    Corrupt(String),
    #[error("storage failure: {0}; the change was not saved, retry it")]
    Storage(String),
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
    /// Whether the disk failed under the store (full, or an I/O error),
    /// after which redb needs the file reopened.
    pub fn is_disk_failure(&self) -> bool {
        matches!(
            self,
            StoreError::DiskFull | StoreError::Unwritable(_) | StoreError::Reopening
        )
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

/// A stored process sync object with its identity and runtime state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredSyncObject {
    pub sys_id: String,
    pub kind: String,
    pub name: String,
    pub spec: serde_json::Value,
    /// Remote systems only: Disabled until validated.
    #[serde(default)]
    pub outbound_state: Option<RemoteState>,
    #[serde(default)]
    pub inbound_state: Option<RemoteState>,
    pub created_on: Millis,
    pub updated_on: Millis,
}

/// A remote system's outbound or inbound state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteState {
    Disabled,
    Active,
    Error,
}

impl RemoteState {
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteState::Disabled => "Disabled",
            RemoteState::Active => "Active",
            RemoteState::Error => "Error",
        }
    }
}

/// A remote system as configured, with its identity and states.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteSystemStatus {
    pub sys_id: String,
    pub spec: crate::config::sync::RemoteSystem,
    pub outbound_state: RemoteState,
    pub inbound_state: RemoteState,
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

/// An open instance store.
pub struct Store {
    db: Arc<handle::SharedDb>,
    dir: PathBuf,
    writer: writer::Writer,
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
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        // Create the file with mode 0600 first: it will hold the private key.
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| {
                    StoreError::Storage(format!("cannot create {}: {e}", path.display()))
                })?;
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
                encode(&"admin").as_slice(),
            )?;
            // Create every table so read transactions never meet a missing one.
            txn.open_table(RECORDS)?;
            txn.open_table(JOURNAL)?;
            txn.open_table(SYNC_OBJECTS)?;
            txn.open_table(COUNTERS)?;
            txn.open_table(OUTBOUND)?;
            txn.open_table(OUTBOUND_BY_REMOTE)?;
        }
        create_later_tables(&txn)?;
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
        // Tables added after format 1 was first written: create them in
        // stores made by an older binary.
        {
            let txn = db.begin_write()?;
            create_later_tables(&txn)?;
            txn.commit()?;
        }
        let config = read_sync_config(&db)?;
        let writer = writer::Writer::start(db.clone(), &config)?;
        Ok(Store {
            db,
            dir: dir.to_path_buf(),
            writer,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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

    /// The user a token belongs to, if any.
    pub fn user_by_token(&self, token: &str) -> Result<Option<User>, StoreError> {
        let txn = self.db.begin_read()?;
        let tokens = txn.open_table(TOKENS)?;
        let Some(name) = tokens.get(token_hash(token).as_slice())? else {
            return Ok(None);
        };
        let name: String = decode(name.value())?;
        let users = txn.open_table(USERS)?;
        match users.get(name.as_str())? {
            Some(user) => Ok(Some(decode(user.value())?)),
            None => Ok(None),
        }
    }

    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let txn = self.db.begin_read()?;
        let users = txn.open_table(USERS)?;
        let mut out = Vec::new();
        for row in users.iter()? {
            let (_, value) = row?;
            out.push(decode(value.value())?);
        }
        Ok(out)
    }

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
        let record: Record = decode(value.value())?;
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
            if key.value().0 != table {
                break;
            }
            let record: Record = decode(value.value())?;
            if keep(&record) {
                out.push(record);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The process sync objects as stored, in (kind, name) order.
    pub fn sync_objects(&self) -> Result<Vec<StoredSyncObject>, StoreError> {
        let txn = self.db.begin_read()?;
        read_sync_objects(&txn.open_table(SYNC_OBJECTS)?)
    }

    /// Every remote system with its states, by name.
    pub fn remote_systems(&self) -> Result<Vec<RemoteSystemStatus>, StoreError> {
        self.sync_objects()?
            .into_iter()
            .filter(|o| o.kind == "remote_system")
            .map(|o| {
                let spec = serde_json::from_value(o.spec).map_err(|e| {
                    StoreError::Corrupt(format!("remote system `{}` does not decode: {e}", o.name))
                })?;
                Ok(RemoteSystemStatus {
                    sys_id: o.sys_id,
                    spec,
                    outbound_state: o.outbound_state.unwrap_or(RemoteState::Disabled),
                    inbound_state: o.inbound_state.unwrap_or(RemoteState::Disabled),
                })
            })
            .collect()
    }

    pub fn sync_config(&self) -> Result<SyncConfig, StoreError> {
        read_sync_config(&self.db)
    }

    /// Outbound items matching `filter`, oldest first.
    pub fn outbound_items(&self, filter: &QueueFilter) -> Result<Vec<OutboundItem>, StoreError> {
        let txn = self.db.begin_read()?;
        let limit = if filter.limit == 0 {
            usize::MAX
        } else {
            filter.limit
        };
        let mut out = Vec::new();
        let mut keep = |item: OutboundItem| {
            let wanted = item.id > filter.after
                && filter.status.is_none_or(|s| s == item.status)
                && filter
                    .remote_system
                    .as_ref()
                    .is_none_or(|r| *r == item.remote_system)
                && filter
                    .domain
                    .as_ref()
                    .is_none_or(|d| item.domain.is_within(d));
            if wanted {
                out.push(item);
            }
            out.len() < limit
        };
        let outbound = txn.open_table(OUTBOUND)?;
        if filter.status == Some(QueueStatus::Error) {
            for id in stats::error_ids(&txn, crate::stats::Queue::Outbound)? {
                if let Some(value) = outbound.get(id)? {
                    if !keep(decode(value.value())?) {
                        break;
                    }
                }
            }
        } else if let Some(remote) = &filter.remote_system {
            let index = txn.open_table(OUTBOUND_BY_REMOTE)?;
            for row in index.range((remote.as_str(), 0u64)..=(remote.as_str(), u64::MAX))? {
                let (_, id) = row?;
                // Ids grow with sequences: earlier pages are skipped by id
                // without reading their items.
                if id.value() <= filter.after {
                    continue;
                }
                if let Some(value) = outbound.get(id.value())? {
                    if !keep(decode(value.value())?) {
                        break;
                    }
                }
            }
        } else {
            for row in outbound.range(filter.after.saturating_add(1)..)? {
                let (_, value) = row?;
                if !keep(decode(value.value())?) {
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
                writer::prepare(&records, &actor, &writes, &limits, &capture, None)
            })();
            (actor, writes, limits, prepared)
        };
        let (actor, writes, limits, prepared) = if writes.len() <= INLINE_WRITES {
            prepare(actor, writes, limits)
        } else {
            tokio::task::spawn_blocking(move || prepare(actor, writes, limits))
                .await
                .map_err(|e| StoreError::Storage(format!("the write preparation failed: {e}")))?
        };
        let prepared = prepared?;
        self.writer
            .submit(move |txn| writer::write_records(txn, &actor, writes, &limits, Some(prepared)))
            .await
    }

    pub async fn add_user(&self, user: User, token: String) -> Result<User, StoreError> {
        self.writer
            .submit(move |txn| writer::add_user(txn, user, &token))
            .await
    }

    /// Replaces every token of `name` with `token`.
    pub async fn replace_token(&self, name: String, token: String) -> Result<(), StoreError> {
        self.writer
            .submit(move |txn| writer::replace_token(txn, &name, &token))
            .await
    }

    pub async fn set_roles(&self, name: String, roles: Vec<Role>) -> Result<User, StoreError> {
        self.writer
            .submit(move |txn| writer::set_roles(txn, &name, roles))
            .await
    }

    /// Makes the stored process sync objects equal `config`, by name, for
    /// an admin of `domain` who read `kept` as the objects outside it:
    /// refused if those changed meanwhile.
    pub async fn apply_config(
        &self,
        config: SyncConfig,
        domain: crate::domain::Domain,
        kept: SyncConfig,
    ) -> Result<ApplyReport, StoreError> {
        self.writer
            .submit(move |txn| {
                let stored = sync_config_of(&read_sync_objects(&txn.txn.open_table(SYNC_OBJECTS)?)?)?;
                if stored.split_by_domain(&domain).1 != kept {
                    return Err(StoreError::Conflict(
                        "definitions outside your domain changed while this file was checked; apply it again".to_string(),
                    ));
                }
                writer::apply_config(txn, config)
            })
            .await
    }
}

fn create_later_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(REMOTE_SECRETS)?;
    txn.open_table(REMOTE_RETRY)?;
    txn.open_table(INBOUND)?;
    txn.open_table(INBOUND_SEEN_BY_PEER)?;
    move_seen_by_name(txn)?;
    txn.open_table(CORRELATIONS)?;
    txn.open_table(CORRELATIONS_BY_REMOTE)?;
    txn.open_table(PROPERTIES)?;
    txn.open_table(CONTENTS)?;
    txn.open_table(CONTENT_BY_HASH)?;
    txn.open_table(CHUNKS)?;
    txn.open_table(FLOW_CONTEXTS)?;
    txn.open_table(ERROR_ITEMS)?;
    stats::count_if_needed(txn)?;
    let mut meta = txn.open_table(META)?;
    if meta.get("attachment_secret")?.is_none() {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| {
            StoreError::Storage(format!("no randomness for the attachment secret: {e}"))
        })?;
        meta.insert("attachment_secret", encode(&secret.to_vec()).as_slice())?;
    }
    Ok(())
}

/// Moves the sequences seen under a remote system's name (stores before
/// `INBOUND_SEEN_BY_PEER`) under the fingerprint it pins now; a name with
/// no remote system any more keeps its rows under `name:NAME`, which no
/// caller presents.
fn move_seen_by_name(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    const MARK: &str = "inbound_seen_by_peer_v1";
    let mut meta = txn.open_table(META)?;
    if meta.get(MARK)?.is_some() {
        return Ok(());
    }
    let pins: std::collections::HashMap<String, String> =
        read_sync_objects(&txn.open_table(SYNC_OBJECTS)?)?
            .into_iter()
            .filter(|o| o.kind == "remote_system")
            .filter_map(|o| {
                let pinned = o.spec.get("fingerprint")?.as_str()?;
                let fingerprint = crate::config::sync::normalize_fingerprint(pinned).ok()?;
                Some((o.name, fingerprint))
            })
            .collect();
    {
        let old = txn.open_table(INBOUND_SEEN)?;
        let mut new = txn.open_table(INBOUND_SEEN_BY_PEER)?;
        for row in old.iter()? {
            let (key, id) = row?;
            let (name, sequence) = key.value();
            let sender = pins
                .get(name)
                .cloned()
                .unwrap_or_else(|| format!("name:{name}"));
            new.insert((sender.as_str(), sequence), id.value())?;
        }
    }
    txn.delete_table(INBOUND_SEEN)?;
    meta.insert(MARK, encode(&true).as_slice())?;
    Ok(())
}

fn read_sync_objects(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
) -> Result<Vec<StoredSyncObject>, StoreError> {
    let mut out = Vec::new();
    for row in table.iter()? {
        let (_, value) = row?;
        out.push(decode(value.value())?);
    }
    Ok(out)
}

fn sync_config_of(objects: &[StoredSyncObject]) -> Result<SyncConfig, StoreError> {
    SyncConfig::from_objects(objects.iter().map(|o| (o.kind.clone(), o.spec.clone()))).map_err(
        |e| StoreError::Corrupt(format!("a stored process sync object does not decode: {e}")),
    )
}

fn read_sync_config(db: &handle::SharedDb) -> Result<SyncConfig, StoreError> {
    let txn = db.begin_read()?;
    let objects = read_sync_objects(&txn.open_table(SYNC_OBJECTS)?)?;
    sync_config_of(&objects)
}
