//! Store format 4: a record and a correlation are stored without what
//! their key already says. A record's key is (table, sys_id) and a
//! correlation's (table, our sys_id, remote system); format 2 repeated
//! them in the value, 44 of a typical record's 180 bytes and 49 of its
//! correlation's 250, on both sides of every change. A value of format 4
//! is read only together with its key (`record_at`, `correlation_at`):
//! these types have no `Stored` reading without one, so no reader can
//! forget it. Values of formats 1 and 2 still read (in every format the
//! key's parts are taken from the key).

use prost::Message;

use super::super::StoreError;
use super::super::codec::{BINARY, JSON, KEYED, envelope, read_json, unexpected};
use super::{correlation_message, correlation_of, record_message, record_of};
use crate::queue::Correlation;
use crate::record::Record;

/// The key of a record: (table, sys_id).
pub type RecordKey<'a> = (&'a str, &'a str);
/// The key of a correlation: (table, our sys_id, remote system).
pub type CorrelationKey<'a> = (&'a str, &'a str, &'a str);

/// `record` as stored under its key (format 4).
pub fn encode_record(record: &Record) -> Vec<u8> {
    keyed(&record_message(record))
}

/// The record stored under `(table, sys_id)` as `bytes`.
pub fn record_at((table, sys_id): RecordKey<'_>, bytes: &[u8]) -> Result<Record, StoreError> {
    let mut record = read(bytes, record_of)?;
    table.clone_into(&mut record.table);
    sys_id.clone_into(&mut record.sys_id);
    Ok(record)
}

/// `correlation` as stored under its key (format 4).
pub fn encode_correlation(correlation: &Correlation) -> Vec<u8> {
    keyed(&correlation_message(correlation))
}

/// The correlation stored under `(table, sys_id, remote)` as `bytes`.
pub fn correlation_at(
    (table, sys_id, remote): CorrelationKey<'_>,
    bytes: &[u8],
) -> Result<Correlation, StoreError> {
    let mut correlation = read(bytes, correlation_of)?;
    table.clone_into(&mut correlation.table);
    sys_id.clone_into(&mut correlation.local_correlation_id);
    remote.clone_into(&mut correlation.remote_system);
    Ok(correlation)
}

fn keyed(message: &impl Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + message.encoded_len());
    out.push(KEYED);
    message.encode(&mut out).expect("a Vec grows to fit");
    out
}

/// A value of any format that stores `T` as message `M` (its key parts
/// empty in format 4, filled in by the caller).
fn read<T, M>(bytes: &[u8], of: fn(M) -> Result<T, String>) -> Result<T, StoreError>
where
    T: serde::de::DeserializeOwned,
    M: Message + Default,
{
    let corrupt = |e: String| StoreError::Corrupt(format!("stored value does not decode: {e}"));
    match envelope(bytes)? {
        (JSON, body) => read_json(body),
        (BINARY | KEYED, body) => {
            of(M::decode(body).map_err(|e| corrupt(e.to_string()))?).map_err(corrupt)
        }
        (other, _) => Err(unexpected(other)),
    }
}
