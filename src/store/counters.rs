//! Named counters (item ids, each remote's outbound sequence, flow context
//! ids): read once per job, written back at its end, so a job's numbers
//! are gapless and in commit order.

use std::collections::BTreeMap;

use super::StoreError;
use super::codec::{decode, encode};
use redb::ReadableTable;

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
