//! Reconciliation rules: how two instances compare the records they have
//! correlated, without sending them. Each side describes its flows with the
//! other (what it sends, what it receives and how it maps it); from both
//! descriptions each table pair gets the fields both sides hold
//! (`TablePair::columns`). Each correlated record becomes an `Entry`: a key
//! both sides compute alike (the sys_id of the record the pair was made
//! from), a digest of those fields (or of the deletion) and the time of its
//! last change. `Digests` answers for any key range how many entries it
//! holds and one digest over them, so the caller narrows ranges that
//! differ until they are small enough to list (`refine`), and compares the
//! lists (`differences`). Who sends what to make a difference equal
//! follows the conflict rules (`repair_of`). Pure: no storage, no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::Millis;
use crate::queue::ConflictRule;

mod shape;

pub use shape::{Column, Columns, Compared, Description, Receives, Sends, TablePair, table_pairs};

/// A range holding at most this many entries on each side is listed
/// rather than split.
pub const LEAF_ENTRIES: u64 = 32;
/// A range that differs is split into this many.
pub const FANOUT: u128 = 16;

/// The key both sides give a correlated pair of records: the sys_id of the
/// record the pair was made from (ours when our capture made the
/// correlation, the peer's when its item did), as a number.
/// (`Correlation::origin_remote`, its local and remote correlation ids.)
pub fn pair_key(origin_remote: Option<bool>, local: &str, remote: &str) -> u128 {
    let origin = match origin_remote {
        Some(true) => remote,
        Some(false) => local,
        // Made before correlations said where they came from.
        None if remote.is_empty() => local,
        None => std::cmp::min(local, remote),
    };
    key_of(origin)
}

/// A sys_id as a key: its 32 hex digits, or a hash of anything else.
pub fn key_of(sys_id: &str) -> u128 {
    if sys_id.len() == 32
        && let Ok(key) = u128::from_str_radix(sys_id, 16)
    {
        return key;
    }
    first_128(blake3::hash(sys_id.as_bytes()).as_bytes())
}

/// A key as the sys_id-like text reports show.
pub fn key_text(key: u128) -> String {
    format!("{key:032x}")
}

fn first_128(bytes: &[u8; 32]) -> u128 {
    let mut first = [0u8; 16];
    first.copy_from_slice(&bytes[..16]);
    u128::from_be_bytes(first)
}

/// The name a difference in journal entries goes by in a report.
pub const JOURNAL_FIELD: &str = "(journal)";

/// The digest of a record's entries in the compared journal fields: their
/// ids (kept across instances), sorted.
pub fn journal_digest(mut ids: Vec<String>) -> u128 {
    ids.sort_unstable();
    let mut hasher = blake3::Hasher::new();
    for id in &ids {
        hasher.update(&(id.len() as u64).to_le_bytes());
        hasher.update(id.as_bytes());
    }
    first_128(hasher.finalize().as_bytes())
}

/// A record's digest with its journal's.
pub fn with_journal(fields: u128, journal: u128) -> u128 {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(&fields.to_be_bytes());
    bytes[16..].copy_from_slice(&journal.to_be_bytes());
    first_128(blake3::hash(&bytes).as_bytes())
}

/// The digest of a record that is gone (deleted, or never made here).
pub fn deleted_digest() -> u128 {
    first_128(blake3::hash(b"procsync reconcile: deleted").as_bytes())
}

/// The digest of `fields` over `column`: a missing field counts as empty.
pub fn record_digest(column: &Column, fields: &BTreeMap<String, String>) -> u128 {
    let mut hasher = blake3::Hasher::new();
    let mut add = |text: &str| {
        hasher.update(&(text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    };
    match column {
        Column::All => {
            for (name, value) in fields.iter().filter(|(_, v)| !v.is_empty()) {
                add(name);
                add(value);
            }
        }
        Column::Names(names) => {
            for name in names {
                add(fields.get(name).map(String::as_str).unwrap_or(""));
            }
        }
    }
    first_128(hasher.finalize().as_bytes())
}

/// Each compared field's digest, named by the caller's names (`names`,
/// aligned with `column`'s; for `All`, the fields' own names).
pub fn field_digests(
    column: &Column,
    names: &[String],
    fields: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let digest = |v: &str| crate::queue::value_digest(v);
    match column {
        Column::All => fields
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), digest(v)))
            .collect(),
        Column::Names(ours) => ours
            .iter()
            .zip(names)
            .map(|(field, name)| {
                (
                    name.clone(),
                    digest(fields.get(field).map(String::as_str).unwrap_or("")),
                )
            })
            .collect(),
    }
}

/// One correlated record as compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: u128,
    pub digest: u128,
    /// The time of its last change (or of its deletion).
    pub on: Millis,
    pub deleted: bool,
    /// The record's sys_id on the side that holds the entry.
    pub sys_id: String,
    /// Each compared field's digest, only in listed entries.
    pub fields: Vec<(String, String)>,
}

/// A closed range of keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub first: u128,
    pub last: u128,
}

impl KeyRange {
    /// Up to `FANOUT` ranges covering this one.
    pub fn split(self) -> Vec<KeyRange> {
        let span = self.last - self.first;
        let step = (span / FANOUT).max(1);
        let mut out = Vec::new();
        let mut first = self.first;
        loop {
            let last = first.saturating_add(step - 1).min(self.last);
            let last = if out.len() as u128 == FANOUT - 1 {
                self.last
            } else {
                last
            };
            out.push(KeyRange { first, last });
            if last == self.last {
                return out;
            }
            first = last + 1;
        }
    }
}

/// What one side holds in a key range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub count: u64,
    pub digest: u128,
}

/// One entry as a comparison keeps it while it runs: numbers only (a
/// million of them take about 64 MB, with the running digest 80).
#[derive(Clone, Copy, Debug)]
struct Slot {
    key: u128,
    digest: u128,
    sys_id: u128,
    on: Millis,
    deleted: bool,
}

/// One side's entries for a table pair, sorted by key, with the running
/// digest that answers any range at the cost of two searches. Record
/// sys_ids are 32 hex digits (the store makes and checks them so), kept
/// as numbers.
#[derive(Debug, Default)]
pub struct Digests {
    slots: Vec<Slot>,
    /// `prefix[i]`: the digests of the first `i` entries combined.
    prefix: Vec<u128>,
}

/// Collects a side's entries one at a time, keeping only their numbers.
#[derive(Debug, Default)]
pub struct DigestsBuilder {
    slots: Vec<Slot>,
}

impl DigestsBuilder {
    pub fn push(&mut self, e: &Entry) {
        self.slots.push(Slot {
            key: e.key,
            digest: e.digest,
            sys_id: key_of(&e.sys_id),
            on: e.on,
            deleted: e.deleted,
        });
    }

    pub fn finish(self) -> Digests {
        let mut slots = self.slots;
        slots.sort_unstable_by_key(|e| e.key);
        slots.dedup_by_key(|e| e.key);
        slots.shrink_to_fit();
        let mut prefix = Vec::with_capacity(slots.len() + 1);
        let mut running = 0u128;
        prefix.push(running);
        for slot in &slots {
            running ^= mix(slot.key, slot.digest, slot.deleted);
            prefix.push(running);
        }
        Digests { slots, prefix }
    }
}

impl Digests {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The smallest range holding every entry.
    pub fn bounds(&self) -> Option<KeyRange> {
        Some(KeyRange {
            first: self.slots.first()?.key,
            last: self.slots.last()?.key,
        })
    }

    fn positions(&self, range: KeyRange) -> (usize, usize) {
        let start = self.slots.partition_point(|e| e.key < range.first);
        let end = self.slots.partition_point(|e| e.key <= range.last);
        (start, end.max(start))
    }

    pub fn summary(&self, range: KeyRange) -> Summary {
        let (start, end) = self.positions(range);
        Summary {
            count: (end - start) as u64,
            digest: self.prefix[end] ^ self.prefix[start],
        }
    }

    /// The entries in `range` (without their fields' digests).
    pub fn within(&self, range: KeyRange) -> Vec<Entry> {
        let (start, end) = self.positions(range);
        self.slots[start..end]
            .iter()
            .map(|s| Entry {
                key: s.key,
                digest: s.digest,
                on: s.on,
                deleted: s.deleted,
                sys_id: key_text(s.sys_id),
                fields: Vec::new(),
            })
            .collect()
    }

    /// The records compared, by sys_id, sorted.
    pub fn sys_ids(&self) -> Vec<u128> {
        let mut ids: Vec<u128> = self.slots.iter().map(|s| s.sys_id).collect();
        ids.sort_unstable();
        ids
    }
}

fn mix(key: u128, digest: u128, deleted: bool) -> u128 {
    let mut bytes = [0u8; 33];
    bytes[..16].copy_from_slice(&key.to_be_bytes());
    bytes[16..32].copy_from_slice(&digest.to_be_bytes());
    bytes[32] = u8::from(deleted);
    first_128(blake3::hash(&bytes).as_bytes())
}

/// What to do with a range after comparing both sides' summaries.
#[derive(Debug, PartialEq, Eq)]
pub enum Refine {
    Same,
    List,
    Split(Vec<KeyRange>),
}

pub fn refine(range: KeyRange, ours: Summary, theirs: Summary) -> Refine {
    if ours == theirs {
        Refine::Same
    } else if (ours.count <= LEAF_ENTRIES && theirs.count <= LEAF_ENTRIES)
        || range.first == range.last
    {
        Refine::List
    } else {
        Refine::Split(range.split())
    }
}

/// How a correlated pair of records differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// We hold the record; the peer holds nothing for it.
    MissingThere,
    /// The peer holds the record; we hold nothing for it.
    MissingHere,
    /// Deleted on one side only.
    DeletedHere,
    DeletedThere,
    /// Both hold it, with different values in these fields (the peer's
    /// names).
    Differs {
        fields: Vec<String>,
    },
}

/// Which side sends what to settle a difference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Repair {
    /// This side sends its record (or deletion).
    Here { settles: bool },
    /// The peer sends its record (or deletion).
    Peer { settles: bool },
    /// Only journal entries differ: each side sends its record, and each
    /// ends with the entries of both.
    Both,
    /// No flow sends this table in the direction that would settle it.
    None,
}

/// A record one side asks the other to send: as it is now (a deletion
/// when it is gone), as a create when the asking side holds nothing for
/// it, applied as it is when it `settles`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendRecord {
    pub sys_id: String,
    pub create: bool,
    pub settles: bool,
}

/// One difference between the two sides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub key: String,
    pub kind: Kind,
    /// Our record, and the peer's, when held.
    pub here: Option<String>,
    pub peer: Option<String>,
    pub repair: Repair,
}

impl Difference {
    /// What settling this difference sends: our record (to stage here)
    /// and the peer's (to ask of it), each when its side sends.
    pub fn sends(&self) -> (Option<SendRecord>, Option<SendRecord>) {
        let record = |sys_id: &Option<String>, create: bool, settles: bool| {
            sys_id.as_ref().map(|sys_id| SendRecord {
                sys_id: sys_id.clone(),
                create,
                settles,
            })
        };
        match self.repair {
            Repair::Here { settles } => (
                record(&self.here, self.kind == Kind::MissingThere, settles),
                None,
            ),
            Repair::Peer { settles } => (
                None,
                record(&self.peer, self.kind == Kind::MissingHere, settles),
            ),
            Repair::Both => (
                record(&self.here, false, true),
                record(&self.peer, false, true),
            ),
            Repair::None => (None, None),
        }
    }
}

/// The differences between our entries and the peer's in listed ranges.
pub fn differences(pair: &TablePair, ours: &[&Entry], theirs: &[Entry]) -> Vec<Difference> {
    let ours: BTreeMap<u128, &Entry> = ours.iter().map(|e| (e.key, *e)).collect();
    let theirs: BTreeMap<u128, &Entry> = theirs.iter().map(|e| (e.key, e)).collect();
    let mut keys: Vec<u128> = ours.keys().chain(theirs.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let mut out = Vec::new();
    for key in keys {
        let here = ours.get(&key).copied();
        let peer = theirs.get(&key).copied();
        let kind = match (here, peer) {
            (Some(h), Some(p)) if h.digest == p.digest && h.deleted == p.deleted => continue,
            (Some(h), None) if h.deleted => continue,
            (None, Some(p)) if p.deleted => continue,
            (Some(_), None) => Kind::MissingThere,
            (None, Some(_)) => Kind::MissingHere,
            (Some(h), Some(_)) if h.deleted => Kind::DeletedHere,
            (Some(_), Some(p)) if p.deleted => Kind::DeletedThere,
            (Some(h), Some(p)) => Kind::Differs {
                fields: differing_fields(&h.fields, &p.fields),
            },
            (None, None) => continue,
        };
        let repair = repair_of(pair, &kind, here, peer);
        out.push(Difference {
            key: key_text(key),
            kind,
            here: here.map(|e| e.sys_id.clone()),
            peer: peer.map(|e| e.sys_id.clone()),
            repair,
        });
    }
    out
}

fn differing_fields(here: &[(String, String)], peer: &[(String, String)]) -> Vec<String> {
    let here: BTreeMap<&str, &str> = here.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let peer: BTreeMap<&str, &str> = peer.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut names: Vec<&str> = here.keys().chain(peer.keys()).copied().collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter(|n| here.get(n) != peer.get(n))
        .map(str::to_string)
        .collect()
}

/// Who sends to settle a difference. A side that alone sends the table
/// is its source; both sending, the rules decide as they decide a
/// conflict: a side whose rule is `error` receives the other's record as
/// an ordinary change (its rule may hold it for an operator), a fixed rule
/// names the sender, and `newest_wins` picks the later change (equal
/// times: the greater digest), which both sides would pick alike.
pub fn repair_of(
    pair: &TablePair,
    kind: &Kind,
    here: Option<&Entry>,
    peer: Option<&Entry>,
) -> Repair {
    let we_send = pair.to_peer.is_some();
    let they_send = pair.from_peer.is_some();
    match kind {
        Kind::Differs { fields }
            if fields.iter().all(|f| f == JOURNAL_FIELD) && !fields.is_empty() =>
        {
            return if we_send && they_send {
                Repair::Both
            } else if we_send {
                Repair::Here { settles: true }
            } else {
                Repair::Peer { settles: true }
            };
        }
        Kind::MissingThere => {
            return if we_send {
                Repair::Here { settles: true }
            } else {
                Repair::None
            };
        }
        Kind::MissingHere => {
            return if they_send {
                Repair::Peer { settles: true }
            } else {
                Repair::None
            };
        }
        _ => {}
    }
    match (pair.to_peer, pair.from_peer) {
        (None, None) => Repair::None,
        (Some(_), None) => Repair::Here { settles: true },
        (None, Some(_)) => Repair::Peer { settles: true },
        (Some(theirs), Some(ours)) => match (ours, theirs) {
            (ConflictRule::Error, _) => Repair::Peer { settles: false },
            (_, ConflictRule::Error) => Repair::Here { settles: false },
            (ConflictRule::PeerWins, _) => Repair::Peer { settles: true },
            (ConflictRule::ThisSideWins, _) => Repair::Here { settles: true },
            (ConflictRule::NewestWins, _) => {
                let side = |e: Option<&Entry>| e.map(|e| (e.on, e.digest)).unwrap_or((0, 0));
                if side(peer) > side(here) {
                    Repair::Peer { settles: true }
                } else {
                    Repair::Here { settles: true }
                }
            }
        },
    }
}

#[cfg(test)]
mod tests;
