//! Conflicts: a field the incoming change sets that was also changed here
//! since the last exchange, to another value, and how the inbound flow's
//! rule settles it. The sender says what each field it changes replaces
//! as it last exchanged it with us (`FieldBase`); a field still holding
//! that value, or the value we last took from the sender, was not changed
//! here. Pure: the plan calls it with the facts the store read.

use std::collections::BTreeMap;

use crate::config::sync::InboundFlow;
use crate::queue::{
    ConflictRule, FieldConflict, InboundItem, SyncUpdate, Synced, Winner, value_digest,
};
use crate::record::{Operation, RecordWrite};

/// What a deleted record shows as its value in a conflict.
pub const DELETED: &str = "(deleted)";
/// The field a conflict between a change and a deletion is about.
pub const RECORD: &str = "(record)";

/// The incoming change as the conflict rules see it.
pub struct Incoming<'a> {
    pub rule: ConflictRule,
    /// When the sender made the change.
    pub changed_on: u64,
    /// The sender's last exchanged digest of each field it changes, by its
    /// field name.
    pub bases: &'a BTreeMap<String, String>,
}

/// Our record as the conflict rules see it.
pub struct Here<'a> {
    pub fields: &'a BTreeMap<String, String>,
    /// What the correlation says was last exchanged, by our field name.
    pub synced: &'a BTreeMap<String, Synced>,
}

/// Who wins a conflict between our change at `here_on` to `here` and the
/// peer's at `peer_on` to `peer`. Both sides run the same comparison with
/// the roles swapped, so `newest_wins` picks one winner on both: the later
/// change, and at equal times the greater value.
pub fn winner(rule: ConflictRule, here: (u64, &str), peer: (u64, &str)) -> Winner {
    match rule {
        ConflictRule::Error => Winner::Undecided,
        ConflictRule::PeerWins => Winner::Peer,
        ConflictRule::ThisSideWins => Winner::Here,
        ConflictRule::NewestWins if peer > here => Winner::Peer,
        ConflictRule::NewestWins => Winner::Here,
    }
}

/// The local fields an item reaches, each with the sender's field it
/// comes from: the flow's mapping (constants excepted), or every field of
/// `fields` (the sender's) under its own name.
pub fn sources<'a>(
    flow: &'a InboundFlow,
    fields: &'a BTreeMap<String, String>,
) -> Vec<(&'a str, &'a str)> {
    if flow.map.is_empty() {
        return fields.keys().map(|k| (k.as_str(), k.as_str())).collect();
    }
    flow.map
        .iter()
        .filter(|m| m.constant.is_none())
        .filter_map(|m| m.from.as_deref().map(|from| (m.to.as_str(), from)))
        .collect()
}

/// When our value `value` of `field` was set here, if it was changed here
/// since the sender's base `base`: `None` when it was not (it still holds
/// the base, or what we last took from the sender); `Some(0)` when it was
/// changed without a capture that says when.
fn changed_here(field: &str, value: &str, base: &str, here: &Here<'_>) -> Option<u64> {
    let digest = value_digest(value);
    if digest == base {
        return None;
    }
    match here.synced.get(field) {
        Some(synced) if synced.digest == digest && synced.by_peer => None,
        Some(synced) if synced.digest == digest => Some(synced.on),
        _ => Some(0),
    }
}

/// Settles the fields of an update of our record: each conflicting field
/// the peer loses is taken out of `write`. Returns the conflicts; the
/// `error` rule leaves `write` whole and the caller holds the item.
pub fn settle_update(
    flow: &InboundFlow,
    write: &mut RecordWrite,
    incoming: &Incoming<'_>,
    here: &Here<'_>,
) -> Vec<FieldConflict> {
    let mut conflicts = Vec::new();
    for (field, source) in sources(flow, &write.fields) {
        let Some(base) = incoming.bases.get(source) else {
            continue;
        };
        let Some(peer) = write.fields.get(field) else {
            continue;
        };
        let ours = here.fields.get(field).map(String::as_str).unwrap_or("");
        if ours == peer {
            continue;
        }
        let Some(here_on) = changed_here(field, ours, base, here) else {
            continue;
        };
        let winner = winner(incoming.rule, (here_on, ours), (incoming.changed_on, peer));
        conflicts.push(FieldConflict {
            field: field.to_string(),
            here: ours.to_string(),
            peer: peer.clone(),
            here_on,
            peer_on: incoming.changed_on,
            rule: incoming.rule,
            winner,
        });
    }
    if incoming.rule != ConflictRule::Error {
        for conflict in conflicts.iter().filter(|c| c.winner == Winner::Here) {
            write.fields.remove(&conflict.field);
        }
    }
    conflicts
}

/// Settles the peer's deletion of our record, which holds changes made
/// here since the last exchange: `None` when it holds none.
pub fn settle_delete(
    flow: &InboundFlow,
    snapshot: &BTreeMap<String, String>,
    incoming: &Incoming<'_>,
    here: &Here<'_>,
) -> Option<FieldConflict> {
    let mut latest: Option<u64> = None;
    for (field, source) in sources(flow, snapshot) {
        let Some(base) = incoming.bases.get(source) else {
            continue;
        };
        let ours = here.fields.get(field).map(String::as_str).unwrap_or("");
        if let Some(on) = changed_here(field, ours, base, here) {
            latest = Some(latest.map_or(on, |l| l.max(on)));
        }
    }
    let here_on = latest?;
    // A deletion wins a tie on both sides: here it is the peer's value.
    let winner = winner(
        incoming.rule,
        (here_on, "changed"),
        (incoming.changed_on, "~deleted"),
    );
    Some(FieldConflict {
        field: RECORD.to_string(),
        here: "changed".to_string(),
        peer: DELETED.to_string(),
        here_on,
        peer_on: incoming.changed_on,
        rule: incoming.rule,
        winner,
    })
}

/// Settles the peer's change of a record deleted here (at `deleted_on`,
/// 0 when not known).
pub fn settle_deleted_here(
    operation: Operation,
    deleted_on: u64,
    incoming: &Incoming<'_>,
) -> FieldConflict {
    // The same order as `settle_delete` on the other side: a deletion wins
    // a tie.
    let winner = winner(
        incoming.rule,
        (deleted_on, "~deleted"),
        (incoming.changed_on, "changed"),
    );
    FieldConflict {
        field: RECORD.to_string(),
        here: DELETED.to_string(),
        peer: operation.as_str().to_string(),
        here_on: deleted_on,
        peer_on: incoming.changed_on,
        rule: incoming.rule,
        winner,
    }
}

/// The sender's bases of the item, by its field name.
pub fn bases_of(item: &InboundItem) -> BTreeMap<String, String> {
    item.bases
        .iter()
        .map(|b| (b.field.clone(), b.digest.clone()))
        .collect()
}

/// The item as the conflict rules see it; a sender that does not say
/// when it made the change made it when it arrived.
pub fn incoming<'a>(
    item: &InboundItem,
    rule: ConflictRule,
    bases: &'a BTreeMap<String, String>,
) -> Incoming<'a> {
    Incoming {
        rule,
        changed_on: if item.changed_on > 0 {
            item.changed_on
        } else {
            item.created_on
        },
        bases,
    }
}

/// What the correlation is to say was last exchanged once `write` (the
/// peer's change made at `on`) is made.
pub fn exchanged(write: &RecordWrite, on: u64) -> SyncUpdate {
    SyncUpdate {
        fields: write
            .fields
            .iter()
            .filter(|(name, _)| !name.starts_with("sys_"))
            .map(|(name, value)| {
                let synced = Synced {
                    digest: value_digest(value),
                    on,
                    by_peer: true,
                };
                (name.clone(), synced)
            })
            .collect(),
        deleted_on: (write.operation == Operation::Delete).then_some(on),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_wins_picks_the_same_change_on_both_sides() {
        for (a, b) in [
            ((5, "a"), (7, "b")),
            ((7, "a"), (5, "b")),
            ((5, "a"), (5, "b")),
        ] {
            let at_a = winner(ConflictRule::NewestWins, a, b);
            let at_b = winner(ConflictRule::NewestWins, b, a);
            let kept_at_a = if at_a == Winner::Here { a } else { b };
            let kept_at_b = if at_b == Winner::Here { b } else { a };
            assert_eq!(kept_at_a, kept_at_b, "{a:?} against {b:?}");
        }
        // A deletion beats a change made at the same moment, on both sides.
        assert_eq!(
            winner(ConflictRule::NewestWins, (5, "changed"), (5, "~deleted")),
            Winner::Peer
        );
        assert_eq!(
            winner(ConflictRule::NewestWins, (5, "~deleted"), (5, "changed")),
            Winner::Here
        );
    }

    #[test]
    fn only_pairs_of_rules_that_agree_are_accepted() {
        use ConflictRule::*;
        let agree = [
            (NewestWins, NewestWins),
            (PeerWins, ThisSideWins),
            (Error, PeerWins),
            (Error, NewestWins),
            (Error, ThisSideWins),
        ];
        for (a, b) in agree {
            assert_eq!(a.disagreement(b), None, "{a:?} {b:?}");
            assert_eq!(b.disagreement(a), None, "{b:?} {a:?}");
        }
        for (a, b) in [
            (PeerWins, PeerWins),
            (ThisSideWins, ThisSideWins),
            (Error, Error),
            (NewestWins, PeerWins),
            (ThisSideWins, NewestWins),
        ] {
            assert!(a.disagreement(b).is_some(), "{a:?} {b:?}");
        }
    }
}
