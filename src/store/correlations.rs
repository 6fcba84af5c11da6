//! Correlations: which of our records is which record of each remote
//! system. Noted when a record leaves, learned from the answer, released
//! when a remote turns out to be another instance.

use std::collections::BTreeMap;

use redb::ReadableTable;

use super::codec::decode;
use super::compact::keyed::{correlation_at, encode_correlation};
use super::names::FieldNames;
use super::tables::*;
use super::writer::Txn;
use super::{Store, StoreError};
use crate::ids::{Millis, now_millis};
use crate::queue::{Correlation, FieldBase, OutboundItem, SyncUpdate, Synced};
use crate::record::Operation;

/// Forgets which of `remote`'s records each of our correlated records is:
/// those ids name records of an instance that no longer answers under that
/// name. The correlations stay (we still sent those records), with no peer
/// record yet, so the next change of ours creates the record there and its
/// answer correlates again. Returns how many were released.
pub(super) fn release_correlations(txn: &Txn<'_>, remote: &str) -> Result<usize, StoreError> {
    let by_remote = txn.open_table(CORRELATIONS_BY_REMOTE)?;
    let correlations = txn.open_table(CORRELATIONS)?;
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
    drop((by_remote, correlations));
    for (remote_id, table, local) in &released {
        forget_peer_record(txn, (table, local, remote))?;
        txn.open_table(CORRELATIONS_BY_REMOTE)?
            .remove((remote, remote_id.as_str()))?;
    }
    Ok(released.len())
}

/// Forgets which of `remote`'s records our `table/sys_id` is: the remote
/// holds nothing for it (any more), so the next item creates it there and
/// its answer correlates again. What was exchanged is forgotten with it,
/// and the record is ours to send.
pub(super) fn forget_peer_record(
    txn: &Txn<'_>,
    (table, sys_id, remote): (&str, &str, &str),
) -> Result<(), StoreError> {
    let mut correlations = txn.open_table(CORRELATIONS)?;
    let key = (table, sys_id, remote);
    let stored: Option<Correlation> = match correlations.get(key)? {
        Some(value) => Some(correlation_at(txn.names, key, value.value())?),
        None => None,
    };
    let Some(mut correlation) = stored else {
        return Ok(());
    };
    if !correlation.remote_correlation_id.is_empty() {
        txn.open_table(CORRELATIONS_BY_REMOTE)?
            .remove((remote, correlation.remote_correlation_id.as_str()))?;
    }
    correlation.remote_correlation_id = String::new();
    correlation.synced.clear();
    correlation.deleted_on = None;
    correlation.origin_remote = Some(false);
    correlation.updated_on = now_millis();
    correlations.insert(key, encode_correlation(txn.names, &correlation).as_slice())?;
    Ok(())
}

/// Whether `remote` may know our record of `correlation`: not while the
/// capture's item that made the correlation was never sent. That item is
/// read here, where the remote names a record, instead of being noted in
/// the correlation on every send; a purged item was sent or skipped long
/// ago.
pub(super) fn known_to_remote(
    txn: &Txn<'_>,
    correlation: &Correlation,
) -> Result<bool, StoreError> {
    if !correlation.unsent {
        return Ok(true);
    }
    let Some(sequence) = correlation.first_item else {
        // Left unsent by an older binary and not upgraded: keep the
        // promise rather than guess.
        return Ok(false);
    };
    let by_remote = txn.open_table(OUTBOUND_BY_REMOTE)?;
    let Some(id) = by_remote
        .get((correlation.remote_system.as_str(), sequence))?
        .map(|v| v.value())
    else {
        return Ok(true);
    };
    let item = txn
        .outbound()?
        .get(id)?
        .map(|v| decode::<OutboundItem>(v.value()));
    Ok(item.transpose()?.is_none_or(|item| item.ever_sent()))
}

/// The correlation a capture makes for `(table, sys_id, remote)` with its
/// item `sequence`: ours, no peer record yet, unsent until that item
/// leaves.
pub(super) fn made_by_capture(
    (table, sys_id, remote): (&str, &str, &str),
    sequence: u64,
    now: Millis,
) -> Correlation {
    Correlation {
        remote_system: remote.to_string(),
        remote_correlation_id: String::new(),
        table: table.to_string(),
        local_correlation_id: sys_id.to_string(),
        active: true,
        created_on: now,
        updated_on: now,
        synced: BTreeMap::new(),
        deleted_on: None,
        unsent: true,
        first_item: Some(sequence),
        origin_remote: Some(false),
    }
}

/// One field of a captured payload, as the sync state needs it.
pub(super) struct SentField {
    pub name: String,
    pub digest: String,
    pub changed: bool,
}

type CorrelationsTable<'t> =
    redb::Table<'t, (&'static str, &'static str, &'static str), &'static [u8]>;

/// The correlation stored under `key`, unless its record is `fresh`
/// (created just now under a new sys_id): then it has none to read.
fn stored_unless_fresh(
    (correlations, names): (
        &impl ReadableTable<(&'static str, &'static str, &'static str), &'static [u8]>,
        &FieldNames,
    ),
    key: (&str, &str, &str),
    fresh: bool,
) -> Result<Option<Correlation>, StoreError> {
    if fresh {
        return Ok(None);
    }
    correlations
        .get(key)?
        .map(|value| correlation_at(names, key, value.value()))
        .transpose()
}

/// Notes in the correlation of `(table, sys_id, remote)` what a capture
/// sends: the fields it changes (every field of a record new to the
/// remote) as last exchanged, and the deletion. Returns what the changed
/// fields replace as last exchanged (on a delete, every field's), for the
/// receiver to tell its own changes from ours.
pub(super) fn note_captured(
    (correlations, names): (&mut CorrelationsTable<'_>, &FieldNames),
    (table, sys_id, remote): (&str, &str, &str),
    sequence: u64,
    (operation, fresh): (Operation, bool),
    fields: &[SentField],
    now: Millis,
) -> Result<Vec<FieldBase>, StoreError> {
    let key = (table, sys_id, remote);
    let stored = stored_unless_fresh((&*correlations, names), key, fresh)?;
    let first = stored.is_none() || operation == Operation::Create;
    let mut correlation = stored.unwrap_or_else(|| made_by_capture(key, sequence, now));
    let mut bases = Vec::new();
    for field in fields {
        let wanted = field.changed || operation == Operation::Delete;
        if let Some(synced) = correlation.synced.get(&field.name).filter(|_| wanted) {
            bases.push(FieldBase {
                field: field.name.clone(),
                digest: synced.digest.clone(),
            });
        }
        if operation != Operation::Delete && (field.changed || first) {
            correlation.synced.insert(
                field.name.clone(),
                Synced {
                    digest: field.digest.clone(),
                    on: now,
                    by_peer: false,
                },
            );
        }
    }
    if operation == Operation::Delete {
        correlation.deleted_on = Some(now);
        correlation.active = false;
    } else {
        correlation.deleted_on = None;
        correlation.active = true;
    }
    correlations.insert(key, encode_correlation(names, &correlation).as_slice())?;
    Ok(bases)
}

impl Store {
    pub fn correlations(&self, remote: Option<&str>) -> Result<Vec<Correlation>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CORRELATIONS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            let correlation = correlation_at(self.db.names(), key.value(), value.value())?;
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
/// `remote_id` (both directions of the index). `fresh`: the record was
/// created just now under a new sys_id, so it has no correlation to read.
pub(super) fn correlate_with(
    txn: &Txn<'_>,
    (table, local_id, fresh): (&str, &str, bool),
    (remote, remote_id): (&str, &str),
    active: bool,
    update: SyncUpdate,
) -> Result<(), StoreError> {
    let now = now_millis();
    let mut correlations = txn.correlations()?;
    let key = (table, local_id, remote);
    let previous = stored_unless_fresh((&*correlations, txn.names), key, fresh)?;
    // A pair made here from the peer's record keeps saying so; one we
    // made by sending keeps saying that.
    let (created_on, mut synced, origin_remote) = previous
        .map(|p| (p.created_on, p.synced, p.origin_remote))
        .unwrap_or((now, BTreeMap::new(), Some(true)));
    synced.extend(update.fields);
    let correlation = Correlation {
        remote_system: remote.to_string(),
        remote_correlation_id: remote_id.to_string(),
        table: table.to_string(),
        local_correlation_id: local_id.to_string(),
        active,
        created_on,
        updated_on: now,
        synced,
        deleted_on: update.deleted_on,
        unsent: false,
        first_item: None,
        origin_remote,
    };
    correlations.insert(key, encode_correlation(txn.names, &correlation).as_slice())?;
    drop(correlations);
    txn.correlations_by_remote()?
        .insert((remote, remote_id), (table, local_id))?;
    Ok(())
}
