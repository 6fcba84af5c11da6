//! What each side syncs with the other (`Description`: the tables its
//! captures send, with their fields, and the tables its inbound flows
//! write, with their mapping and conflict rule), and the table pairs two
//! descriptions make, with the fields compared on each side. Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::sync::SyncConfig;
use crate::queue::ConflictRule;

/// What one side syncs with the other, per process event: the tables its
/// captures send (with their fields; `*` for all) and the tables its
/// inbound flows write (with their mapping: (peer's field, our field);
/// `None` when every field keeps its name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    pub sends: Vec<Sends>,
    pub receives: Vec<Receives>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sends {
    pub process_event: String,
    pub table: String,
    pub fields: Vec<String>,
    /// The journal fields sent with each change.
    #[serde(default)]
    pub journal_fields: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receives {
    pub process_event: String,
    pub table: String,
    pub rule: ConflictRule,
    pub map: Option<Vec<(String, String)>>,
    /// Journal fields renamed on the way in: (peer's field, our field).
    #[serde(default)]
    pub journal_map: Vec<(String, String)>,
}

impl Description {
    /// What `config` syncs with `remote`.
    pub fn of(config: &SyncConfig, remote: &str) -> Description {
        let mut sends = Vec::new();
        for flow in config
            .outbound_flows
            .iter()
            .filter(|f| f.remote_system == remote)
        {
            for capture in config
                .captures
                .iter()
                .filter(|c| c.active && c.process_event == flow.process_event)
            {
                sends.push(Sends {
                    process_event: flow.process_event.clone(),
                    table: capture.table.clone(),
                    fields: capture.fields.clone(),
                    journal_fields: capture.journal_fields.clone(),
                });
            }
        }
        let receives = config
            .inbound_flows
            .iter()
            .filter(|f| f.remote_system == remote)
            .map(|flow| Receives {
                process_event: flow.process_event.clone(),
                table: flow.table.clone(),
                rule: flow.conflict,
                // Constants and display values are not the peer's values:
                // they cannot be compared.
                map: (!flow.map.is_empty()).then(|| {
                    flow.map
                        .iter()
                        .filter(|m| m.constant.is_none() && !m.display_value)
                        .filter_map(|m| m.from.clone().map(|from| (from, m.to.clone())))
                        .collect()
                }),
                journal_map: flow
                    .journal_map
                    .iter()
                    .map(|m| (m.from.clone(), m.to.clone()))
                    .collect(),
            })
            .collect();
        Description { sends, receives }
    }

    /// Whether records of our `table` are synced with the peer at all.
    pub fn syncs_table(&self, table: &str) -> bool {
        self.sends.iter().any(|s| s.table == table)
            || self.receives.iter().any(|r| r.table == table)
    }
}

/// The fields compared for a table pair: every user field under its own
/// name, or these pairs of (our field, the peer's field).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Columns {
    All,
    Pairs(Vec<(String, String)>),
}

impl Columns {
    /// One side's field names: ours (`here`) or the peer's.
    pub fn side(&self, here: bool) -> Column {
        match self {
            Columns::All => Column::All,
            Columns::Pairs(pairs) => Column::Names(
                pairs
                    .iter()
                    .map(|(ours, theirs)| if here { ours.clone() } else { theirs.clone() })
                    .collect(),
            ),
        }
    }
}

/// One side's compared fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Column {
    All,
    Names(Vec<String>),
}

/// A table of ours and the peer's table whose records correlate, what is
/// compared, who sends which way and by what rule each side takes
/// changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TablePair {
    pub here: String,
    pub peer: String,
    pub columns: Columns,
    /// We send this table's records to the peer (its rule for them).
    pub to_peer: Option<ConflictRule>,
    /// The peer sends us its records (our rule for them).
    pub from_peer: Option<ConflictRule>,
    /// Journal fields whose entries travel both ways, as (ours, the
    /// peer's): both sides should hold the same entries there.
    pub journals: Vec<(String, String)>,
}

/// What one side reads to compare a table pair: its table, its compared
/// fields (`column`), the caller's names for them (to name the fields
/// that differ alike on both sides) and its journal fields compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compared {
    pub table: String,
    pub column: Column,
    pub names: Vec<String>,
    pub journal: Vec<String>,
}

impl TablePair {
    /// What we, the caller, compare (`here`), or what the peer does.
    pub fn compared(&self, here: bool) -> Compared {
        let names = match self.columns.side(true) {
            Column::All => Vec::new(),
            Column::Names(names) => names,
        };
        Compared {
            table: if here { &self.here } else { &self.peer }.clone(),
            column: self.columns.side(here),
            names,
            journal: self
                .journals
                .iter()
                .map(|(ours, theirs)| if here { ours } else { theirs }.clone())
                .collect(),
        }
    }
}

/// The table pairs two descriptions make, sorted by our table.
pub fn table_pairs(here: &Description, peer: &Description) -> Vec<TablePair> {
    let mut pairs: BTreeMap<(String, String), TablePair> = BTreeMap::new();
    // Journal fields each way, by table pair, as (ours, the peer's).
    type JournalSets = BTreeMap<(String, String), BTreeSet<(String, String)>>;
    let (mut out, mut back): (JournalSets, JournalSets) = Default::default();
    let mut add = |here_table: &str, peer_table: &str, columns: Columns, to_peer, from_peer| {
        let pair = pairs
            .entry((here_table.to_string(), peer_table.to_string()))
            .or_insert_with(|| TablePair {
                here: here_table.to_string(),
                peer: peer_table.to_string(),
                columns: Columns::Pairs(Vec::new()),
                to_peer: None,
                from_peer: None,
                journals: Vec::new(),
            });
        pair.columns = merge(&pair.columns, columns);
        pair.to_peer = pair.to_peer.or(to_peer);
        pair.from_peer = pair.from_peer.or(from_peer);
    };
    for sends in &here.sends {
        for receives in peer
            .receives
            .iter()
            .filter(|r| r.process_event == sends.process_event)
        {
            let columns = columns_of(&sends.fields, receives.map.as_deref(), false);
            out.entry((sends.table.clone(), receives.table.clone()))
                .or_default()
                .extend(
                    sends
                        .journal_fields
                        .iter()
                        .map(|f| (f.clone(), renamed(f, &receives.journal_map))),
                );
            add(
                &sends.table,
                &receives.table,
                columns,
                Some(receives.rule),
                None,
            );
        }
    }
    for sends in &peer.sends {
        for receives in here
            .receives
            .iter()
            .filter(|r| r.process_event == sends.process_event)
        {
            let columns = columns_of(&sends.fields, receives.map.as_deref(), true);
            back.entry((receives.table.clone(), sends.table.clone()))
                .or_default()
                .extend(
                    sends
                        .journal_fields
                        .iter()
                        .map(|f| (renamed(f, &receives.journal_map), f.clone())),
                );
            add(
                &receives.table,
                &sends.table,
                columns,
                None,
                Some(receives.rule),
            );
        }
    }
    for (key, pair) in &mut pairs {
        if let (Some(out), Some(back)) = (out.get(key), back.get(key)) {
            pair.journals = out.intersection(back).cloned().collect();
        }
    }
    pairs.into_values().collect()
}

/// A journal field's name after an inbound flow's journal mapping.
fn renamed(field: &str, map: &[(String, String)]) -> String {
    map.iter()
        .find(|(from, _)| from == field)
        .map_or_else(|| field.to_string(), |(_, to)| to.clone())
}

/// The fields one direction carries, as (our field, the peer's field);
/// `receiver_here` says which side the mapping's `to` is on.
fn columns_of(sent: &[String], map: Option<&[(String, String)]>, receiver_here: bool) -> Columns {
    let all = sent.iter().any(|f| f == "*");
    let pairs: Vec<(String, String)> = match map {
        None if all => return Columns::All,
        None => sent.iter().map(|f| (f.clone(), f.clone())).collect(),
        Some(map) => map
            .iter()
            .filter(|(from, _)| all || sent.contains(from))
            .map(|(from, to)| {
                if receiver_here {
                    (to.clone(), from.clone())
                } else {
                    (from.clone(), to.clone())
                }
            })
            .collect(),
    };
    Columns::Pairs(pairs)
}

fn merge(a: &Columns, b: Columns) -> Columns {
    match (a, b) {
        (Columns::All, _) | (_, Columns::All) => Columns::All,
        (Columns::Pairs(a), Columns::Pairs(b)) => {
            let mut pairs = a.clone();
            pairs.extend(b);
            pairs.sort();
            pairs.dedup();
            Columns::Pairs(pairs)
        }
    }
}
