//! The stored form of values: one format-version byte, then JSON. A newer
//! binary reads every older version (upgrading in `decode`); an older binary
//! refuses a newer value with a clear error instead of misreading it.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

/// The format version this binary writes.
pub const FORMAT_VERSION: u8 = 1;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(FORMAT_VERSION);
    serde_json::to_writer(&mut out, value).expect("stored types always serialize");
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(StoreError::Corrupt("empty stored value".to_string()));
    };
    match version {
        // Version 1 is the first format; later versions add their upgrade
        // steps here, oldest first.
        1 => serde_json::from_slice(body)
            .map_err(|e| StoreError::Corrupt(format!("stored value does not decode: {e}"))),
        0 => Err(StoreError::Corrupt(
            "stored value has format version 0".to_string(),
        )),
        newer => Err(StoreError::NewerFormat {
            found: newer,
            supported: FORMAT_VERSION,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_version() {
        let bytes = encode(&vec![1u64, 2]);
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<Vec<u64>>(&bytes).unwrap(), vec![1, 2]);
        let mut newer = bytes.clone();
        newer[0] = FORMAT_VERSION + 1;
        let err = decode::<Vec<u64>>(&newer).unwrap_err();
        assert!(err.to_string().contains("upgrade procsync"), "{err}");
    }
}
