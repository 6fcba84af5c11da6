//! The tables most writer jobs touch, kept open from one job to the next
//! while the jobs in a group commit share them (inbound applies, record
//! writes). Opening a redb table looks its name up and closing it stores
//! its root again: an inbound apply opened fourteen, and opening and
//! closing them took about a fifth of the hub's writer thread. A job that
//! does not share (every other kind) opens its own as before, and the
//! kept ones are closed before it runs, so it may open them directly.

use std::cell::{RefCell, RefMut};

use redb::{Key, Table, Value};

use super::StoreError;
use super::tables::*;
use super::writer::Txn;

/// A table as a job holds it: kept for the next job, or its own.
pub(super) enum Open<'g, 't, K: Key + 'static, V: Value + 'static> {
    Kept(RefMut<'g, Table<'t, K, V>>),
    Own(Table<'t, K, V>),
}

impl<'t, K: Key + 'static, V: Value + 'static> std::ops::Deref for Open<'_, 't, K, V> {
    type Target = Table<'t, K, V>;

    fn deref(&self) -> &Table<'t, K, V> {
        match self {
            Open::Kept(table) => table,
            Open::Own(table) => table,
        }
    }
}

impl<'t, K: Key + 'static, V: Value + 'static> std::ops::DerefMut for Open<'_, 't, K, V> {
    fn deref_mut(&mut self) -> &mut Table<'t, K, V> {
        match self {
            Open::Kept(table) => table,
            Open::Own(table) => table,
        }
    }
}

/// Declares the kept tables: a slot each, and `Txn`'s accessor for each.
macro_rules! kept {
    ($($field:ident: $table:ident: $key:ty => $value:ty;)*) => {
        /// The tables kept open for the jobs that share them.
        #[derive(Default)]
        pub(super) struct OpenTables<'t> {
            $($field: RefCell<Option<Table<'t, $key, $value>>>,)*
        }

        impl OpenTables<'_> {
            /// Closes every kept table (between jobs: none is borrowed).
            pub(super) fn close_all(&self) {
                $(self.$field.borrow_mut().take();)*
            }
        }

        impl<'t> Txn<'t> {
            $(
                #[doc = concat!("The `", stringify!($table), "` table: kept open when the job shares tables.")]
                pub(super) fn $field(&self) -> Result<Open<'_, 't, $key, $value>, StoreError> {
                    if !self.shares_tables() {
                        return Ok(Open::Own(self.write_txn().open_table($table)?));
                    }
                    let mut slot = self.open_tables().$field.try_borrow_mut().map_err(|_| {
                        StoreError::Invalid(concat!(
                            "the table `", stringify!($table),
                            "` was opened twice at once in one job (a bug: please report it)"
                        ).into())
                    })?;
                    if slot.is_none() {
                        *slot = Some(self.write_txn().open_table($table)?);
                    }
                    Ok(Open::Kept(RefMut::map(slot, |slot| {
                        slot.as_mut().expect("opened just above")
                    })))
                }
            )*
        }
    };
}

kept! {
    records: RECORDS: (&'static str, &'static str) => &'static [u8];
    journal: JOURNAL: (&'static str, &'static str, u64) => &'static [u8];
    inbound: INBOUND: u64 => &'static [u8];
    outbound: OUTBOUND: u64 => &'static [u8];
    correlations: CORRELATIONS: (&'static str, &'static str, &'static str) => &'static [u8];
    correlations_by_remote: CORRELATIONS_BY_REMOTE: (&'static str, &'static str) => (&'static str, &'static str);
    flow_contexts: FLOW_CONTEXTS: u64 => &'static [u8];
    queue_by_status: QUEUE_BY_STATUS: (u8, u8, u32, u64) => ();
    queue_streams: QUEUE_STREAMS: (&'static str, &'static str) => u32;
}

#[cfg(test)]
mod tests {
    use crate::store::tables::RECORDS;

    use redb::{Durability, ReadableTable};

    #[tokio::test]
    async fn jobs_that_share_keep_their_tables_and_the_others_open_them_themselves() {
        let (_dir, store) = crate::store::test_support::scratch_store("scratch");
        let key = ("scratch", "1");
        // Queued together, so one transaction: the first
        // job keeps `records` open, the second opens it itself (redb
        // refuses a table open twice), the third finds it kept again.
        let hold = crate::store::test_support::hold(&store);
        let first = store.writer.enqueue_sharing(move |txn| {
            txn.records()?.insert(key, b"written".as_slice())?;
            Ok(())
        });
        let own = store.writer.enqueue(Durability::Immediate, move |txn| {
            let records = txn.open_table(RECORDS)?;
            Ok(records.get(key)?.is_some())
        });
        let third = store.writer.enqueue_sharing(move |txn| {
            let records = txn.records()?;
            let twice = txn.records().err().map(|e| e.to_string());
            Ok((records.get(key)?.is_some(), twice))
        });
        hold.await.unwrap();
        first.await.unwrap();
        assert!(
            own.await.unwrap(),
            "the job opening its own table sees the write"
        );
        let (seen, twice) = third.await.unwrap();
        assert!(seen);
        assert!(
            twice.is_some_and(|e| e.contains("opened twice")),
            "a table borrowed twice in one job is an error, not a panic"
        );
        store.close();
    }
}
