//! Named counters (item ids, each remote's outbound sequence, flow context
//! ids). A job takes numbers from its own `Counters` and hands them to the
//! transaction when it ends well (`save`); the writer stores what the
//! transaction's jobs took once, just before the commit (`flush`), instead
//! of every job reading and writing its counter rows. A job that fails
//! hands nothing back, so numbers stay gapless and in commit order.

use std::collections::BTreeMap;

use super::StoreError;
use super::codec::{decode, encode};
use super::tables::COUNTERS;
use super::writer::Txn;
use redb::{ReadableTable, WriteTransaction};

/// One job's counters: read from the transaction (or the store) on first
/// use, handed back by `save`. One at a time per transaction, as when each
/// job held the counters table open: two would hand out the same numbers.
pub(super) struct Counters<'t> {
    txn: &'t WriteTransaction,
    /// The transaction's counters, as its jobs handed them back.
    taken: &'t std::cell::RefCell<BTreeMap<String, u64>>,
    in_use: &'t std::cell::Cell<bool>,
    cache: BTreeMap<String, u64>,
}

impl<'t> Counters<'t> {
    pub(super) fn load(txn: &'t Txn<'_>) -> Result<Counters<'t>, StoreError> {
        if txn.counters_in_use.replace(true) {
            return Err(StoreError::Invalid(
                "two jobs' counters were open at once in one transaction (a bug: please report it)"
                    .into(),
            ));
        }
        Ok(Counters {
            txn,
            taken: &txn.counters,
            in_use: &txn.counters_in_use,
            cache: BTreeMap::new(),
        })
    }

    /// The next value of `name`, starting at 1.
    pub(super) fn next(&mut self, name: &str) -> Result<u64, StoreError> {
        if !self.cache.contains_key(name) {
            let taken = self.taken.borrow().get(name).copied();
            let current = match taken {
                Some(value) => value,
                None => stored(self.txn, name)?,
            };
            self.cache.insert(name.to_string(), current);
        }
        let value = self.cache.get_mut(name).expect("just inserted");
        *value += 1;
        Ok(*value)
    }

    /// Hands the numbers taken to the transaction.
    pub(super) fn save(mut self) {
        let cache = std::mem::take(&mut self.cache);
        self.taken.borrow_mut().extend(cache);
    }
}

impl Drop for Counters<'_> {
    fn drop(&mut self) {
        self.in_use.set(false);
    }
}

/// The stored value of counter `name` (0 before its first use).
fn stored(txn: &WriteTransaction, name: &str) -> Result<u64, StoreError> {
    match txn.open_table(COUNTERS)?.get(name)? {
        Some(value) => decode::<u64>(value.value()),
        None => Ok(0),
    }
}

/// Stores the counters a transaction's jobs took; the writer calls it once,
/// before the commit.
pub(super) fn flush(
    txn: &WriteTransaction,
    taken: BTreeMap<String, u64>,
) -> Result<(), StoreError> {
    if taken.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(COUNTERS)?;
    for (name, value) in &taken {
        table.insert(name.as_str(), encode(value).as_slice())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Counters;
    use crate::store::{Store, StoreError};
    use redb::Durability;

    /// Takes the next number of the test counter, and fails after taking
    /// it when told to.
    fn take(txn: &mut crate::store::writer::Txn<'_>, fail: bool) -> Result<u64, StoreError> {
        let mut counters = Counters::load(txn)?;
        let n = counters.next("test")?;
        if fail {
            return Err(StoreError::Invalid("refused".into()));
        }
        counters.save();
        Ok(n)
    }

    #[tokio::test]
    async fn only_jobs_that_end_well_take_numbers_and_the_numbers_are_stored_once() {
        let (dir, store) = crate::store::test_support::scratch_store("scratch");
        // Queued together, so one transaction: the failed
        // job's number goes to the next job, and the commit stores 2.
        let hold = crate::store::test_support::hold(&store);
        let first = store
            .writer
            .enqueue(Durability::Immediate, |t| take(t, false));
        let failed = store
            .writer
            .enqueue(Durability::Immediate, |t| take(t, true));
        let third = store
            .writer
            .enqueue(Durability::Immediate, |t| take(t, false));
        hold.await.unwrap();
        assert_eq!(first.await.unwrap(), 1);
        assert!(failed.await.is_err());
        assert_eq!(third.await.unwrap(), 2);
        // Two at once in one job would hand out the same numbers: refused.
        let refused = store
            .writer
            .submit(|txn| {
                let _open = Counters::load(txn)?;
                Ok(Counters::load(txn).err().map(|e| e.to_string()))
            })
            .await
            .unwrap();
        assert!(refused.is_some_and(|e| e.contains("at once")));
        store.close();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let next = store.writer.submit(|t| take(t, false)).await.unwrap();
        assert_eq!(next, 3, "the stored counter goes on after a restart");
        store.close();
    }
}
