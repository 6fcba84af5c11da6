//! Correlations: which of our records is which record of each remote
//! system. Noted when a record leaves, learned from the answer, released
//! when a remote turns out to be another instance.

use redb::ReadableTable;

use super::codec::{decode, encode};
use super::tables::*;
use super::{Store, StoreError};
use crate::ids::now_millis;
use crate::queue::{Correlation, OutboundItem};
use crate::record::Operation;

/// Forgets which of `remote`'s records each of our correlated records is:
/// those ids name records of an instance that no longer answers under that
/// name. The correlations stay (we still sent those records), with no peer
/// record yet, so the next change of ours creates the record there and its
/// answer correlates again. Returns how many were released.
pub(super) fn release_correlations(
    txn: &redb::WriteTransaction,
    remote: &str,
) -> Result<usize, StoreError> {
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

/// Notes that `item`'s record went to its remote system: a correlation
/// with no peer record yet, unless one exists.
pub(super) fn note_sent(
    correlations: &mut redb::Table<'_, (&'static str, &'static str, &'static str), &'static [u8]>,
    item: &OutboundItem,
    now: u64,
) -> Result<(), StoreError> {
    let key = (
        item.table.as_str(),
        item.local_correlation_id.as_str(),
        item.remote_system.as_str(),
    );
    if correlations.get(key)?.is_none() {
        let correlation = Correlation {
            remote_system: item.remote_system.clone(),
            remote_correlation_id: String::new(),
            table: item.table.clone(),
            local_correlation_id: item.local_correlation_id.clone(),
            active: item.operation != Operation::Delete,
            created_on: now,
            updated_on: now,
        };
        correlations.insert(key, encode(&correlation).as_slice())?;
    }
    Ok(())
}

impl Store {
    pub fn correlations(&self, remote: Option<&str>) -> Result<Vec<Correlation>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CORRELATIONS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, value) = row?;
            let correlation: Correlation = decode(value.value())?;
            if remote.is_none_or(|r| r == correlation.remote_system) {
                out.push(correlation);
            }
        }
        Ok(out)
    }

    /// Whether we already hold a record for the peer's record `remote_id`.
    pub fn is_correlated(&self, remote: &str, remote_id: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_read()?;
        let by_remote = txn.open_table(CORRELATIONS_BY_REMOTE)?;
        Ok(by_remote.get((remote, remote_id))?.is_some())
    }
}

/// Correlates our record `table/local_id` with `remote`'s record
/// `remote_id` (both directions of the index).
pub(super) fn correlate_with(
    txn: &redb::WriteTransaction,
    table: &str,
    local_id: &str,
    remote: &str,
    remote_id: &str,
    active: bool,
) -> Result<(), StoreError> {
    let now = now_millis();
    let mut correlations = txn.open_table(CORRELATIONS)?;
    let key = (table, local_id, remote);
    let previous: Option<Correlation> = match correlations.get(key)? {
        Some(value) => Some(decode(value.value())?),
        None => None,
    };
    let correlation = Correlation {
        remote_system: remote.to_string(),
        remote_correlation_id: remote_id.to_string(),
        table: table.to_string(),
        local_correlation_id: local_id.to_string(),
        active,
        created_on: previous.map(|p| p.created_on).unwrap_or(now),
        updated_on: now,
    };
    correlations.insert(key, encode(&correlation).as_slice())?;
    txn.open_table(CORRELATIONS_BY_REMOTE)?
        .insert((remote, remote_id), (table, local_id))?;
    Ok(())
}
