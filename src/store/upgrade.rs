//! Bringing a store up to this binary on open: every table created (so read
//! transactions never meet a missing one), data kept the old way moved,
//! the queues counted once, the attachment secret made.

use redb::ReadableTable;

use super::StoreError;
use super::codec::encode;
use super::tables::*;

/// Brings a store up to this binary: creates every table it lacks (a new
/// store, or one made by an older binary: read transactions never meet a
/// missing table), moves data kept the old way, counts the queues once and
/// makes the attachment secret.
pub(super) fn upgrade(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    super::tables::create_all(txn)?;
    move_seen_by_name(txn)?;
    super::stats::count_if_needed(txn)?;
    super::queue_index::build_if_needed(txn)?;
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
    meta.insert(MARK, encode(&true).as_slice())?;
    Ok(())
}
