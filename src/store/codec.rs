//! The stored form of values: one format-version byte, then the body.
//! Format 1 is JSON; format 2 is the compact binary form (protobuf
//! messages of `proto/procsync/store/v1/store.proto`) of the values stored
//! most: records, journal entries, queue items, correlations and flow
//! contexts (`compact`). Format 3 is a format-2 message compressed (an LZ4
//! block) against a dictionary of the words it repeats: flow contexts only,
//! half of what a hub wrote per applied item before
//! (`compact::context`). Format 4 is a format-2 message without the parts
//! of it its key holds: records and correlations, read only with their key
//! (`compact::keyed`). Format 5 is format 4 with field names as numbers
//! from the store's list of names (`names`): records and correlations, read
//! only with the store's names; for queue items, format 2 without the
//! table and record id their payload holds too. Every other value is still written as format 1. A newer
//! binary reads every older format; an older binary refuses a newer value
//! (and a store whose recorded format is newer) with a clear error instead
//! of misreading it.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

/// The newest format this binary writes: the store records it on open.
pub const FORMAT_VERSION: u8 = 5;

/// Format 1: JSON.
pub const JSON: u8 = 1;
/// Format 2: a protobuf message.
pub const BINARY: u8 = 2;
/// Format 3: a protobuf message compressed (flow contexts).
pub const PACKED: u8 = 3;
/// Format 4: a protobuf message without its key's parts (records and
/// correlations).
pub const KEYED: u8 = 4;
/// Format 5: values without what is stored elsewhere. Records and
/// correlations name their fields by the store's numbers for them (and a
/// correlation stores hex digests as numbers); a queue item leaves its
/// table and record id to its payload, which holds them too.
pub const LEAN: u8 = 5;

/// A value the store keeps: how it is written and read back.
pub trait Stored: Sized {
    /// Appends the stored form, format byte first.
    fn write(&self, out: &mut Vec<u8>);
    /// The value from the bytes after the format byte `version`.
    fn read(version: u8, body: &[u8]) -> Result<Self, StoreError>;
}

pub fn encode<T: Stored>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    value.write(&mut out);
    out
}

pub fn decode<T: Stored>(bytes: &[u8]) -> Result<T, StoreError> {
    let (version, body) = envelope(bytes)?;
    T::read(version, body)
}

/// A stored value's format and body, refusing an empty value, format 0
/// and a format newer than this binary's.
pub fn envelope(bytes: &[u8]) -> Result<(u8, &[u8]), StoreError> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(StoreError::Corrupt("empty stored value".to_string()));
    };
    match version {
        0 => Err(StoreError::Corrupt(
            "stored value has format version 0".to_string(),
        )),
        newer if newer > FORMAT_VERSION => Err(StoreError::NewerFormat {
            found: newer,
            supported: FORMAT_VERSION,
        }),
        version => Ok((version, body)),
    }
}

/// Writes `value` as format 1.
pub fn write_json<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    out.push(JSON);
    serde_json::to_writer(out, value).expect("stored types always serialize");
}

/// Reads a format-1 body.
pub fn read_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(body)
        .map_err(|e| StoreError::Corrupt(format!("stored value does not decode: {e}")))
}

/// A value of format 2 where a format-1 value was expected: only the
/// compact types are written so.
pub fn unexpected(version: u8) -> StoreError {
    StoreError::Corrupt(format!(
        "stored value has format {version}, which this kind of value is never written in"
    ))
}

/// Values kept as JSON (format 1) whatever the store's format: small or
/// rarely written.
macro_rules! stored_as_json {
    ($($t:ty),* $(,)?) => {
        $(impl $crate::store::codec::Stored for $t {
            fn write(&self, out: &mut Vec<u8>) {
                $crate::store::codec::write_json(self, out);
            }
            fn read(version: u8, body: &[u8]) -> Result<Self, $crate::store::StoreError> {
                match version {
                    $crate::store::codec::JSON => $crate::store::codec::read_json(body),
                    other => Err($crate::store::codec::unexpected(other)),
                }
            }
        })*
    };
}
pub(crate) use stored_as_json;

stored_as_json!(bool, u8, u64, String, Vec<u8>, Vec<u64>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_version() {
        let bytes = encode(&vec![1u64, 2]);
        assert_eq!(bytes[0], JSON);
        assert_eq!(decode::<Vec<u64>>(&bytes).unwrap(), vec![1, 2]);
        let mut newer = bytes.clone();
        newer[0] = FORMAT_VERSION + 1;
        let err = decode::<Vec<u64>>(&newer).unwrap_err();
        assert!(err.to_string().contains("upgrade procsync"), "{err}");
    }
}
