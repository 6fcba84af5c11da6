//! The open redb database, shared by readers and the writer thread. redb
//! refuses every use of a handle after an I/O error (a full disk, say), so
//! the writer reopens the file through this handle once a write can
//! succeed again, and the process, its listeners and streams carry on.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::Database;

use super::StoreError;
use super::names::FieldNames;

/// Longest wait for readers to let go of the old handle before reopening.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

pub struct SharedDb {
    /// `None` only while the file is being reopened.
    slot: RwLock<Option<Arc<Database>>>,
    dir: PathBuf,
    /// Set by the writer while the disk refuses writes.
    disk_failed: std::sync::atomic::AtomicBool,
    /// Set once the writer found the store damaged (it panicked inside the
    /// database): the instance must stop and be restored.
    damaged: tokio::sync::watch::Sender<Option<String>>,
    /// The store's field names (`names`), read again whenever the file is.
    names: FieldNames,
}

impl SharedDb {
    pub fn new(db: Database, dir: PathBuf) -> SharedDb {
        SharedDb {
            slot: RwLock::new(Some(Arc::new(db))),
            dir,
            disk_failed: Default::default(),
            damaged: tokio::sync::watch::Sender::new(None),
            names: FieldNames::default(),
        }
    }

    /// The store's field names, for reading and writing records and
    /// correlations.
    pub fn names(&self) -> &FieldNames {
        &self.names
    }

    /// Reads the field names from the file again.
    pub fn reload_names(&self) -> Result<(), StoreError> {
        let txn = self.begin_read()?;
        self.names
            .reload(&txn.open_table(super::tables::FIELD_NAMES)?)
    }

    /// Why the store is damaged, once it is.
    pub fn damaged(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.damaged.subscribe()
    }

    pub fn set_damaged(&self, why: String) {
        self.damaged.send_replace(Some(why));
    }

    /// Whether writes currently fail because the disk failed.
    pub fn disk_failed(&self) -> bool {
        self.disk_failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_disk_failed(&self, failed: bool) {
        self.disk_failed
            .store(failed, std::sync::atomic::Ordering::Relaxed);
    }

    fn current(&self) -> Result<Arc<Database>, StoreError> {
        self.slot
            .read()
            .expect("database slot lock")
            .clone()
            .ok_or(StoreError::Reopening)
    }

    pub fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        use redb::ReadableDatabase;
        Ok(self.current()?.begin_read()?)
    }

    pub fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        Ok(self.current()?.begin_write()?)
    }

    /// Closes the database file and opens it again (a fresh handle, with
    /// redb's own recovery of the last durable commit).
    pub fn reopen(&self) -> Result<(), StoreError> {
        let old = self.slot.write().expect("database slot lock").take();
        if let Some(mut old) = old {
            let started = Instant::now();
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still_shared) if started.elapsed() < RELEASE_WAIT => {
                        old = still_shared;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(still_shared) => {
                        *self.slot.write().expect("database slot lock") = Some(still_shared);
                        return Err(StoreError::Storage(
                            "the store could not be reopened: readers still hold it".to_string(),
                        ));
                    }
                }
            }
        }
        let db = super::open_database(&self.dir, false)?;
        *self.slot.write().expect("database slot lock") = Some(Arc::new(db));
        self.reload_names()
    }
}
