//! The index of records by the values of the fields inbound flows match
//! on (`match_on`, `RECORDS_BY_VALUE`): which (table, field) pairs it
//! holds follows the definitions (`follow`, on open and with every
//! `apply`: a pair newly named is indexed from the table once, one no
//! longer named is dropped), record writes keep it (`note`), and the
//! inbound apply looks records up in it (`candidates`) instead of reading
//! the table.

use std::collections::BTreeSet;

use redb::{ReadableTable, WriteTransaction};

use super::StoreError;
use super::codec::{decode, encode};
use super::compact::keyed::record_at;
use super::tables::*;
use crate::record::Record;

/// The `META` key listing the (table, field) pairs indexed.
const INDEXED: &str = "match_index";

type ByValue<'t> = redb::Table<'t, (&'static str, &'static str, &'static str, &'static str), ()>;

/// Makes the index hold exactly the `wanted` (table, field) pairs.
pub(super) fn follow(
    txn: &WriteTransaction,
    names: &super::names::FieldNames,
    wanted: &[(String, String)],
) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META)?;
    let indexed: BTreeSet<(String, String)> = match meta.get(INDEXED)? {
        Some(value) => decode(value.value())?,
        None => BTreeSet::new(),
    };
    let wanted: BTreeSet<(String, String)> = wanted.iter().cloned().collect();
    if indexed == wanted {
        return Ok(());
    }
    let mut by_value = txn.open_table(RECORDS_BY_VALUE)?;
    for (table, field) in indexed.difference(&wanted) {
        let keys: Vec<(String, String)> = by_value
            .range((table.as_str(), field.as_str(), "", "")..)?
            .map_while(|row| {
                let (key, _) = row.ok()?;
                let (t, f, value, sys_id) = key.value();
                (t == table && f == field).then(|| (value.to_string(), sys_id.to_string()))
            })
            .collect();
        for (value, sys_id) in keys {
            by_value.remove((
                table.as_str(),
                field.as_str(),
                value.as_str(),
                sys_id.as_str(),
            ))?;
        }
    }
    let records = txn.open_table(RECORDS)?;
    for (table, field) in wanted.difference(&indexed) {
        for row in records.range((table.as_str(), "")..)? {
            let (key, value) = row?;
            let (row_table, sys_id) = key.value();
            if row_table != table {
                break;
            }
            let record = record_at(names, (row_table, sys_id), value.value())?;
            if let Some(value) = record.fields.get(field).filter(|v| !v.is_empty()) {
                by_value.insert((table.as_str(), field.as_str(), value.as_str(), sys_id), ())?;
            }
        }
    }
    meta.insert(INDEXED, encode(&wanted).as_slice())?;
    Ok(())
}

/// Keeps the index for one record write: `old` and `new` are the record's
/// values of the indexed `fields` before and after (`None`: absent).
pub(super) fn note(
    by_value: &mut ByValue<'_>,
    (table, sys_id): (&str, &str),
    changes: &[(String, Option<String>, Option<String>)],
) -> Result<(), StoreError> {
    for (field, old, new) in changes {
        if old == new {
            continue;
        }
        if let Some(old) = old {
            by_value.remove((table, field.as_str(), old.as_str(), sys_id))?;
        }
        if let Some(new) = new {
            by_value.insert((table, field.as_str(), new.as_str(), sys_id), ())?;
        }
    }
    Ok(())
}

/// What one write changes in the index: each of `fields`' value before
/// and after.
pub(super) fn changes(
    fields: &[String],
    old: Option<&Record>,
    new: Option<&Record>,
) -> Vec<(String, Option<String>, Option<String>)> {
    let value = |record: Option<&Record>, field: &str| {
        record
            .and_then(|r| r.fields.get(field))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    fields
        .iter()
        .map(|f| (f.clone(), value(old, f), value(new, f)))
        .filter(|(_, old, new)| old != new)
        .collect()
}

/// The records of `table` whose `field` holds `value`, in sys_id order.
pub(super) fn candidates(
    by_value: &impl ReadableTable<(&'static str, &'static str, &'static str, &'static str), ()>,
    (table, field, value): (&str, &str, &str),
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for row in by_value.range((table, field, value, "")..)? {
        let (key, _) = row?;
        let (t, f, v, sys_id) = key.value();
        if t != table || f != field || v != value {
            break;
        }
        out.push(sys_id.to_string());
    }
    Ok(out)
}
