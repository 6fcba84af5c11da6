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
//! (in every format the key's parts are taken from the key). Format 5 also
//! stores a correlation's hex digests as the 8-byte numbers they write.

use bytes::Bytes;
use prost::Message;

use super::super::StoreError;
use super::super::codec::{BINARY, JSON, KEYED, LEAN, envelope, read_json, unexpected};
use super::super::names::{FieldNames, Known};
use super::domain_of;
use crate::attachment::{Attachment, AttachmentOrigin};
use crate::queue::{Correlation, Synced};
use crate::record::Record;
use crate::stored;

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
    let mut out = Vec::new();
    super::write_message(LEAN, message, &mut out);
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
        (BINARY | KEYED | LEAN, body) => {
            of(M::decode(body).map_err(|e| corrupt(e.to_string()))?, names).map_err(corrupt)
        }
        (other, _) => Err(unexpected(other)),
    }
}

/// A record's message without its key's parts (`table`, `sys_id`: left
/// empty, so not written), each field named by its number in `names`, as
/// format 5 stores it; the names without a number are named by their text
/// and added to `unnamed`.
pub(super) fn record_message(
    record: &Record,
    names: &Known,
    unnamed: &mut Vec<String>,
) -> stored::Record {
    stored::Record {
        table: String::new(),
        sys_id: String::new(),
        created_on: record.created_on,
        created_by: record.created_by.clone(),
        updated_on: record.updated_on,
        updated_by: (record.updated_by != record.created_by).then(|| record.updated_by.clone()),
        mod_count: record.mod_count,
        domain: record.domain.to_string(),
        fields: record
            .fields
            .iter()
            .map(|(name, value)| match names.number(name) {
                Some(name_id) => stored::Field {
                    name: String::new(),
                    value: value.clone(),
                    name_id,
                },
                None => {
                    unnamed.push(name.clone());
                    stored::Field {
                        name: name.clone(),
                        value: value.clone(),
                        name_id: 0,
                    }
                }
            })
            .collect(),
        journal_len: record.journal_len,
        attachments: record
            .attachments
            .iter()
            .map(|a| stored::Attachment {
                sys_id: a.sys_id.clone(),
                file_name: a.file_name.clone(),
                content_type: a.content_type.clone(),
                size: a.size,
                hash: a.hash.clone(),
                created_on: a.created_on,
                created_by: a.created_by.clone(),
                origin_remote_system: a.origin.as_ref().map(|o| o.remote_system.clone()),
                origin_sys_id: a.origin.as_ref().map(|o| o.sys_id.clone()),
            })
            .collect(),
    }
}

/// A field's name: its number's in `names`, or its text.
fn name_of(text: String, number: u32, names: &Known) -> Result<String, String> {
    match number {
        0 => Ok(text),
        number => names.name(number).map(str::to_string),
    }
}

pub(super) fn record_of(message: stored::Record, names: &Known) -> Result<Record, String> {
    Ok(Record {
        updated_by: message
            .updated_by
            .unwrap_or_else(|| message.created_by.clone()),
        table: message.table,
        sys_id: message.sys_id,
        created_on: message.created_on,
        created_by: message.created_by,
        updated_on: message.updated_on,
        mod_count: message.mod_count,
        domain: domain_of(message.domain)?,
        fields: message
            .fields
            .into_iter()
            .map(|f| Ok((name_of(f.name, f.name_id, names)?, f.value)))
            .collect::<Result<_, String>>()?,
        journal_len: message.journal_len,
        attachments: message
            .attachments
            .into_iter()
            .map(|a| Attachment {
                origin: match (a.origin_remote_system, a.origin_sys_id) {
                    (Some(remote_system), Some(sys_id)) => Some(AttachmentOrigin {
                        remote_system,
                        sys_id,
                    }),
                    _ => None,
                },
                sys_id: a.sys_id,
                file_name: a.file_name,
                content_type: a.content_type,
                size: a.size,
                hash: a.hash,
                created_on: a.created_on,
                created_by: a.created_by,
            })
            .collect(),
    })
}

/// A digest of 16 lowercase hex digits as the number they write (format
/// 5 stores it so, in 8 bytes and without an allocation); `None` for any
/// other text, which is stored as itself.
fn digest_number(digest: &str) -> Option<u64> {
    let lower_hex = digest.len() == 16
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    lower_hex.then(|| u64::from_str_radix(digest, 16).ok())?
}

/// A digest that is not a number (`digest_number`) as its text; one of 8
/// bytes gets a marker byte before it, apart from the 8-byte binary
/// digests formats 2 and 4 wrote.
fn digest_bytes(digest: &str) -> Bytes {
    let mut text = digest.as_bytes().to_vec();
    if text.len() == 8 {
        text.insert(0, 0);
    }
    Bytes::from(text)
}

fn digest_text(bits: Option<u64>, bytes: &[u8]) -> String {
    if let Some(bits) = bits {
        return crate::ids::hex(&bits.to_be_bytes());
    }
    match bytes.len() {
        8 => crate::ids::hex(bytes),
        9 if bytes[0] == 0 => String::from_utf8_lossy(&bytes[1..]).into_owned(),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// A correlation's message without its key's parts (`remote_system`,
/// `table`, `local_correlation_id`: left empty, so not written), each field
/// named by its number in `names` where it has one, as format 5 stores it.
pub(super) fn correlation_message(correlation: &Correlation, names: &Known) -> stored::Correlation {
    // (on, by_peer) → packed fields; a change's fields share one.
    let mut groups: Vec<((u64, bool), Vec<u8>)> = Vec::new();
    let mut message = stored::Correlation {
        remote_system: String::new(),
        remote_correlation_id: correlation.remote_correlation_id.clone(),
        table: String::new(),
        local_correlation_id: String::new(),
        active: correlation.active,
        created_on: correlation.created_on,
        updated_on: (correlation.updated_on != correlation.created_on)
            .then_some(correlation.updated_on),
        synced: correlation
            .synced
            .iter()
            .filter_map(|(field, synced)| {
                let field_id = names.number(field).unwrap_or(0);
                let digest_bits = digest_number(&synced.digest);
                if let Some(bits) = digest_bits.filter(|_| field_id != 0) {
                    let group = (synced.on, synced.by_peer);
                    let place = match groups.iter().position(|(g, _)| *g == group) {
                        Some(place) => place,
                        None => {
                            groups.push((group, Vec::new()));
                            groups.len() - 1
                        }
                    };
                    let packed = &mut groups[place].1;
                    prost::encoding::encode_varint(u64::from(field_id), packed);
                    packed.extend_from_slice(&bits.to_be_bytes());
                    return None;
                }
                Some(stored::Synced {
                    field: if field_id == 0 {
                        field.clone()
                    } else {
                        String::new()
                    },
                    digest: if digest_bits.is_some() {
                        Bytes::new()
                    } else {
                        digest_bytes(&synced.digest)
                    },
                    digest_bits,
                    on: (synced.on != correlation.updated_on).then_some(synced.on),
                    by_peer: synced.by_peer,
                    field_id,
                })
            })
            .collect(),
        synced_groups: Vec::new(),
        deleted_on: correlation.deleted_on,
        unsent: correlation.unsent,
        first_item: correlation.first_item,
        origin: match correlation.origin_remote {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        },
    };
    message.synced_groups = groups
        .into_iter()
        .map(|((on, by_peer), packed)| stored::SyncedGroup {
            on: (on != correlation.updated_on).then_some(on),
            by_peer,
            packed: Bytes::from(packed),
        })
        .collect();
    message
}

/// A group of packed synced fields (`SyncedGroup`), added to `synced`.
fn unpack_synced(
    group: &stored::SyncedGroup,
    (updated_on, names): (u64, &Known),
    synced: &mut std::collections::BTreeMap<String, Synced>,
) -> Result<(), String> {
    let mut packed = &group.packed[..];
    while !packed.is_empty() {
        let number = prost::encoding::decode_varint(&mut packed).map_err(|e| e.to_string())?;
        let number = u32::try_from(number).map_err(|_| format!("field name number {number}"))?;
        let Some((digest, rest)) = packed.split_first_chunk::<8>() else {
            return Err("a packed synced field ends inside its digest".to_string());
        };
        packed = rest;
        synced.insert(
            names.name(number)?.to_string(),
            Synced {
                digest: crate::ids::hex(digest),
                on: group.on.unwrap_or(updated_on),
                by_peer: group.by_peer,
            },
        );
    }
    Ok(())
}

pub(super) fn correlation_of(
    message: stored::Correlation,
    names: &Known,
) -> Result<Correlation, String> {
    let updated_on = message.updated_on.unwrap_or(message.created_on);
    let mut synced = message
        .synced
        .into_iter()
        .map(|s| {
            Ok((
                name_of(s.field, s.field_id, names)?,
                Synced {
                    digest: digest_text(s.digest_bits, &s.digest),
                    on: s.on.unwrap_or(updated_on),
                    by_peer: s.by_peer,
                },
            ))
        })
        .collect::<Result<_, String>>()?;
    for group in &message.synced_groups {
        unpack_synced(group, (updated_on, names), &mut synced)?;
    }
    Ok(Correlation {
        remote_system: message.remote_system,
        remote_correlation_id: message.remote_correlation_id,
        table: message.table,
        local_correlation_id: message.local_correlation_id,
        active: message.active,
        created_on: message.created_on,
        updated_on,
        synced,
        deleted_on: message.deleted_on,
        unsent: message.unsent,
        first_item: message.first_item,
        origin_remote: match message.origin {
            0 => None,
            1 => Some(false),
            2 => Some(true),
            other => return Err(format!("correlation origin number {other} is unknown")),
        },
    })
}
