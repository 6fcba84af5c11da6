//! Field names stored once per store (format 5): a record names each of
//! its fields, and a correlation each field it last exchanged, by a number
//! from `FIELD_NAMES` instead of the name itself. The names of a typical
//! record (ten short fields) were about 100 of its 250 bytes, and again in
//! its correlation, on both sides of every change.
//!
//! The numbers live in the file; this is their copy in memory, read on
//! open and after the file is reopened. Only the writer thread numbers a
//! new name, inside its transaction, and puts it here at once: a reader
//! meets a number only in a committed value, and the name was here before
//! that commit. A commit that fails takes its numbers back out
//! (`forget_since`), so the next name gets the same number again. A value
//! encoded off the writer thread names a field not numbered yet by its
//! text (both forms read); the writer numbers it when it stores the value.

use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard};

use redb::{ReadableTable, ReadableTableMetadata};

use super::StoreError;

/// The store's field names and their numbers.
#[derive(Default)]
pub struct FieldNames(RwLock<Known>);

#[derive(Default)]
pub struct Known {
    numbers: HashMap<String, u32>,
    /// Name number n at n - 1.
    names: Vec<String>,
}

/// How many names were numbered when a transaction began.
#[derive(Clone, Copy)]
pub struct Mark(usize);

impl Known {
    /// The number of `name`, if it has one.
    pub fn number(&self, name: &str) -> Option<u32> {
        self.numbers.get(name).copied()
    }

    /// The name numbered `number`.
    pub fn name(&self, number: u32) -> Result<&str, String> {
        number
            .checked_sub(1)
            .and_then(|place| self.names.get(place as usize))
            .map(String::as_str)
            .ok_or_else(|| format!("field name number {number} is not in the store's names"))
    }
}

impl FieldNames {
    /// The names stored in `table`.
    pub fn read(table: &impl ReadableTable<u32, &'static str>) -> Result<FieldNames, StoreError> {
        let names = FieldNames::default();
        names.reload(table)?;
        Ok(names)
    }

    /// Replaces the names in memory with those stored in `table`.
    pub fn reload(&self, table: &impl ReadableTable<u32, &'static str>) -> Result<(), StoreError> {
        let mut known = Known::default();
        for row in table.iter()? {
            let (number, name) = row?;
            let (number, name) = (number.value(), name.value().to_string());
            if number as usize != known.names.len() + 1 {
                return Err(StoreError::Corrupt(format!(
                    "the store's field names skip from {} to {number}",
                    known.names.len()
                )));
            }
            known.numbers.insert(name.clone(), number);
            known.names.push(name);
        }
        *self.0.write().expect("field names lock") = known;
        Ok(())
    }

    /// The names, for encoding or decoding a value.
    pub fn view(&self) -> RwLockReadGuard<'_, Known> {
        self.0.read().expect("field names lock")
    }

    /// The number of `name`, numbering it in `table` (the writer's
    /// transaction) when it has none yet.
    pub fn number(
        &self,
        table: &mut redb::Table<'_, u32, &'static str>,
        name: &str,
    ) -> Result<u32, StoreError> {
        if let Some(number) = self.view().number(name) {
            return Ok(number);
        }
        let next = table.len()? + 1;
        let number = u32::try_from(next)
            .map_err(|_| StoreError::Invalid("more than 4 billion field names".to_string()))?;
        table.insert(number, name)?;
        let mut known = self.0.write().expect("field names lock");
        known.numbers.insert(name.to_string(), number);
        known.names.push(name.to_string());
        Ok(number)
    }

    /// Names numbered 1, 2, … in this order, as a store would hold them.
    #[cfg(test)]
    pub fn numbered(names: &[&str]) -> FieldNames {
        let known = Known {
            numbers: (1..)
                .zip(names)
                .map(|(n, name)| (name.to_string(), n))
                .collect(),
            names: names.iter().map(|name| name.to_string()).collect(),
        };
        FieldNames(RwLock::new(known))
    }

    /// Where the names stand before a transaction.
    pub fn mark(&self) -> Mark {
        Mark(self.view().names.len())
    }

    /// Takes out the names numbered since `mark`: their transaction was
    /// not committed.
    pub fn forget_since(&self, Mark(kept): Mark) {
        let mut known = self.0.write().expect("field names lock");
        let kept = kept.min(known.names.len());
        for name in known.names.split_off(kept) {
            known.numbers.remove(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tables::FIELD_NAMES;
    use super::*;
    use redb::ReadableDatabase;

    fn store() -> (tempfile::TempDir, redb::Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("names.redb")).unwrap();
        (dir, db)
    }

    #[test]
    fn names_are_numbered_once_and_read_back_after_reopening() {
        let (_dir, db) = store();
        let names = FieldNames::default();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(FIELD_NAMES).unwrap();
            assert_eq!(names.number(&mut table, "state").unwrap(), 1);
            assert_eq!(names.number(&mut table, "priority").unwrap(), 2);
            assert_eq!(names.number(&mut table, "state").unwrap(), 1);
        }
        txn.commit().unwrap();
        let again =
            FieldNames::read(&db.begin_read().unwrap().open_table(FIELD_NAMES).unwrap()).unwrap();
        assert_eq!(again.view().number("priority"), Some(2));
        assert_eq!(again.view().name(1).unwrap(), "state");
        let unknown = again.view().name(3).unwrap_err();
        assert!(unknown.contains("number 3"), "{unknown}");
    }

    #[test]
    fn a_transaction_that_was_not_committed_gives_its_numbers_back() {
        let (_dir, db) = store();
        let names = FieldNames::default();
        let txn = db.begin_write().unwrap();
        names
            .number(&mut txn.open_table(FIELD_NAMES).unwrap(), "state")
            .unwrap();
        txn.commit().unwrap();
        let mark = names.mark();
        let txn = db.begin_write().unwrap();
        names
            .number(&mut txn.open_table(FIELD_NAMES).unwrap(), "impact")
            .unwrap();
        txn.abort().unwrap();
        names.forget_since(mark);
        assert_eq!(names.view().number("impact"), None);
        let txn = db.begin_write().unwrap();
        let number = names
            .number(&mut txn.open_table(FIELD_NAMES).unwrap(), "urgency")
            .unwrap();
        assert_eq!(number, 2, "the number the lost name had is given again");
    }
}
