//! Stores formats 4 and 5: a record and a correlation are stored without
//! what their key already says, and (format 5) with each field name as the
//! store's number for it (`names`). A record's key is (table, sys_id) and a
//! correlation's (table, our sys_id, remote system); format 2 repeated
//! them in the value, 44 of a typical record's 180 bytes and 49 of its
//! correlation's 250, on both sides of every change; the field names took
//! about 100 bytes more in each. A value of format 4 or 5 is read only
//! together with its key and the store's names (`record_at`,
//! `correlation_at`): these types have no `Stored` reading without them,
//! so no reader can forget either. Values of formats 1, 2 and 4 still read
//! (in every format the key's parts are taken from the key).

use prost::Message;

use super::super::StoreError;
use super::super::codec::{BINARY, JSON, KEYED, NAMED, envelope, read_json, unexpected};
use super::super::names::{FieldNames, Known};
use super::{correlation_message, correlation_of, record_message, record_of};
use crate::queue::Correlation;
use crate::record::Record;

/// The key of a record: (table, sys_id).
pub type RecordKey<'a> = (&'a str, &'a str);
/// The key of a correlation: (table, our sys_id, remote system).
pub type CorrelationKey<'a> = (&'a str, &'a str, &'a str);

/// `record` as stored under its key (format 5), and the names of its fields
/// the store has no number for yet (stored as text: the writer numbers
/// them when it stores the record).
pub fn encode_record(names: &FieldNames, record: &Record) -> (Vec<u8>, Vec<String>) {
    let mut unnamed = Vec::new();
    let message = record_message(record, &names.view(), &mut unnamed);
    (named(&message), unnamed)
}

/// The record stored under `(table, sys_id)` as `bytes`.
pub fn record_at(
    names: &FieldNames,
    (table, sys_id): RecordKey<'_>,
    bytes: &[u8],
) -> Result<Record, StoreError> {
    let mut record = read(bytes, &names.view(), record_of)?;
    table.clone_into(&mut record.table);
    sys_id.clone_into(&mut record.sys_id);
    Ok(record)
}

/// `correlation` as stored under its key (format 5); a field the store has
/// no number for is named by its text.
pub fn encode_correlation(names: &FieldNames, correlation: &Correlation) -> Vec<u8> {
    named(&correlation_message(correlation, &names.view()))
}

/// The correlation stored under `(table, sys_id, remote)` as `bytes`.
pub fn correlation_at(
    names: &FieldNames,
    (table, sys_id, remote): CorrelationKey<'_>,
    bytes: &[u8],
) -> Result<Correlation, StoreError> {
    let mut correlation = read(bytes, &names.view(), correlation_of)?;
    table.clone_into(&mut correlation.table);
    sys_id.clone_into(&mut correlation.local_correlation_id);
    remote.clone_into(&mut correlation.remote_system);
    Ok(correlation)
}

fn named(message: &impl Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + message.encoded_len());
    out.push(NAMED);
    message.encode(&mut out).expect("a Vec grows to fit");
    out
}

/// A value of any format that stores `T` as message `M` (its key parts
/// empty in formats 4 and 5, filled in by the caller).
fn read<T, M>(
    bytes: &[u8],
    names: &Known,
    of: fn(M, &Known) -> Result<T, String>,
) -> Result<T, StoreError>
where
    T: serde::de::DeserializeOwned,
    M: Message + Default,
{
    let corrupt = |e: String| StoreError::Corrupt(format!("stored value does not decode: {e}"));
    match envelope(bytes)? {
        (JSON, body) => read_json(body),
        (BINARY | KEYED | NAMED, body) => {
            of(M::decode(body).map_err(|e| corrupt(e.to_string()))?, names).map_err(corrupt)
        }
        (other, _) => Err(unexpected(other)),
    }
}
