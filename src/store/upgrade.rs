//! Bringing a store up to this binary on open: every table created (so read
//! transactions never meet a missing one), data kept the old way moved,
//! the queues counted once, the attachment secret made.

use redb::ReadableTable;

use super::StoreError;
use super::codec::{decode, encode};
use super::compact::keyed::{correlation_at, encode_correlation};
use super::tables::*;
use crate::queue::{Correlation, OutboundItem, QueueStatus};

/// Brings a store up to this binary: creates every table it lacks (a new
/// store, or one made by an older binary: read transactions never meet a
/// missing table), moves data kept the old way, counts the queues once and
/// makes the attachment secret.
pub(super) fn upgrade(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    super::tables::create_all(txn)?;
    once(txn, "inbound_seen_by_peer_v1", move_seen_by_name)?;
    once(txn, "inbound_seen_by_sender_v1", number_senders)?;
    once(txn, super::stats::COUNTED_MARK, super::stats::count_queues)?;
    once(
        txn,
        super::queue_index::INDEXED_MARK,
        super::queue_index::index_queues,
    )?;
    once(
        txn,
        "processed_unindexed_v1",
        super::queue_index::unindex_processed,
    )?;
    once(
        txn,
        "running_with_ready_v1",
        super::queue_index::keep_running_with_ready,
    )?;
    once(txn, "correlation_first_items_v1", name_first_items)?;
    let mut meta = txn.open_table(META)?;
    // From here on values of the newest format may be written: an older
    // binary then refuses the store as a whole.
    let format: u8 = match meta.get("format")? {
        Some(value) => super::codec::decode(value.value())?,
        None => 0,
    };
    if format < super::codec::FORMAT_VERSION {
        meta.insert("format", encode(&super::codec::FORMAT_VERSION).as_slice())?;
    }
    if meta.get("attachment_secret")?.is_none() {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| {
            StoreError::Storage(format!("no randomness for the attachment secret: {e}"))
        })?;
        meta.insert("attachment_secret", encode(&secret.to_vec()).as_slice())?;
    }
    Ok(())
}

/// Runs `step` unless the store's META says (under `mark`) it ran, and
/// then says so: each step of an upgrade runs once per store.
fn once(
    txn: &redb::WriteTransaction,
    mark: &str,
    step: fn(&redb::WriteTransaction) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    if txn.open_table(META)?.get(mark)?.is_some() {
        return Ok(());
    }
    step(txn)?;
    txn.open_table(META)?
        .insert(mark, encode(&true).as_slice())?;
    Ok(())
}

/// Moves the sequences seen under a remote system's name (stores before
/// `INBOUND_SEEN_BY_PEER`, itself moved on by `number_senders`) under the fingerprint it pins now; a name with
/// no remote system any more keeps its rows under `name:NAME`, which no
/// caller presents.
fn move_seen_by_name(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let pins: std::collections::HashMap<String, String> =
        super::sync_objects::read_sync_objects(&txn.open_table(SYNC_OBJECTS)?)?
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
    Ok(())
}

/// Moves the sequences seen under each sender's fingerprint
/// (`INBOUND_SEEN_BY_PEER`) under the fingerprint's number
/// (`INBOUND_SEEN_BY_SENDER`), then deletes the old table.
fn number_senders(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut moved = 0u64;
    {
        let old = txn.open_table(INBOUND_SEEN_BY_PEER)?;
        let mut senders = txn.open_table(SENDERS)?;
        let mut new = txn.open_table(INBOUND_SEEN_BY_SENDER)?;
        let mut last: Option<(String, u32)> = None;
        for row in old.iter()? {
            let (key, id) = row?;
            let (sender, sequence) = key.value();
            let number = match &last {
                Some((known, number)) if known == sender => *number,
                _ => {
                    let number = super::inbound::sender_number(&mut senders, sender)?;
                    last = Some((sender.to_string(), number));
                    number
                }
            };
            new.insert((number, sequence), id.value())?;
            moved += 1;
        }
    }
    txn.delete_table(INBOUND_SEEN_BY_PEER)?;
    if moved > 0 {
        tracing::info!(target: "store", sequences = moved, "Numbered the senders of the sequences received (once, for a store from an earlier version).");
    }
    Ok(())
}

/// Names in each correlation an older binary left unsent the capture's
/// item whose sending makes it sent (`Correlation::first_item`): the
/// oldest item for the record that never left. One with no such item was
/// sent (older binaries noted that only at send). A never-sent item whose
/// record has no correlation (captured before captures kept them) gets
/// one, unsent, as sending it would have made. Item by item, so a large
/// backlog is not held in memory.
fn name_first_items(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    // The store's names as this step meets them (none yet in a store this
    // old; the step writes names as text).
    let names = super::names::FieldNames::read(&txn.open_table(FIELD_NAMES)?)?;
    let index = txn.open_table(QUEUE_BY_STATUS)?;
    let outbound = txn.open_table(OUTBOUND)?;
    let mut correlations = txn.open_table(CORRELATIONS)?;
    // Every first_item seen here was set by this pass: the mark is written
    // before this binary stages anything.
    for status in [QueueStatus::Ready, QueueStatus::Error, QueueStatus::Skipped] {
        let code = super::queue_index::slot(status);
        for row in index.range((0, code, 0, 0)..=(0, code, u32::MAX, u64::MAX))? {
            let (_, _, _, id) = row?.0.value();
            let Some(value) = outbound.get(id)? else {
                continue;
            };
            let item: OutboundItem = decode(value.value())?;
            if item.ever_sent() {
                continue;
            }
            let key = (
                item.table.as_str(),
                item.local_correlation_id.as_str(),
                item.remote_system.as_str(),
            );
            let stored: Option<Correlation> = match correlations.get(key)? {
                Some(value) => Some(correlation_at(&names, key, value.value())?),
                None => None,
            };
            let correlation = match stored {
                None => Correlation {
                    active: item.operation != crate::record::Operation::Delete,
                    ..super::correlations::made_by_capture(key, item.sequence, item.created_on)
                },
                Some(mut correlation) if correlation.unsent => {
                    if correlation
                        .first_item
                        .is_none_or(|first| first > item.sequence)
                    {
                        correlation.first_item = Some(item.sequence);
                    }
                    correlation
                }
                Some(_) => continue,
            };
            correlations.insert(key, encode_correlation(&names, &correlation).as_slice())?;
        }
    }
    let mut sent = Vec::new();
    for row in correlations.iter()? {
        let (key, value) = row?;
        let correlation = correlation_at(&names, key.value(), value.value())?;
        if correlation.unsent && correlation.first_item.is_none() {
            let (table, sys_id, remote) = key.value();
            sent.push((
                (table.to_string(), sys_id.to_string(), remote.to_string()),
                correlation,
            ));
        }
    }
    for ((table, sys_id, remote), mut correlation) in sent {
        correlation.unsent = false;
        correlations.insert(
            (table.as_str(), sys_id.as_str(), remote.as_str()),
            encode_correlation(&names, &correlation).as_slice(),
        )?;
    }
    Ok(())
}
