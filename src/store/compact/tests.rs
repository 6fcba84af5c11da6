//! Format 2 to 5 round trips: every compact value reads back as it was
//! written, and its earlier forms (format 1, JSON; format 2 for flow
//! contexts; formats 2 and 4 for records and correlations) still read.

use super::super::codec::{FORMAT_VERSION, decode, encode, write_json};
use super::super::names::FieldNames;
use super::keyed::{
    correlation_at, correlation_message, encode_correlation, encode_record, record_at,
    record_message,
};
use super::*;
use crate::record::Record;
use bytes::Bytes;

/// Every value survives its format (`format`: 2, or 5 for queue items),
/// and format 1 (JSON) still reads.
fn both_ways<T: Stored + serde::Serialize>(value: &T, format: u8) -> usize {
    let json = serde_json::to_value(value).unwrap();
    let binary = encode(value);
    assert_eq!(binary[0], format);
    let back: T = decode(&binary).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), json);
    let mut old = Vec::new();
    write_json(value, &mut old);
    let back: T = decode(&old).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), json);
    assert!(
        binary.len() < old.len(),
        "{} bytes, {} as JSON",
        binary.len(),
        old.len()
    );
    binary.len()
}

/// Reads a value stored under key `K`.
type ReadKeyed<'a, K, T> = dyn Fn(K, &[u8]) -> Result<T, StoreError> + 'a;

/// A value of format 5 reads back as it was, with its key; `binary`, the
/// value in format 2 (its key's parts inside), and its format 1 still
/// read. Returns the sizes in formats 5 and 2.
fn keyed_ways<T, K: Copy>(
    value: &T,
    key: K,
    write: &dyn Fn(&T) -> Vec<u8>,
    read: &ReadKeyed<'_, K, T>,
    binary: &[u8],
) -> (usize, usize)
where
    T: serde::Serialize,
{
    let json = serde_json::to_value(value).unwrap();
    let keyed = write(value);
    assert_eq!(keyed[0], LEAN);
    assert_eq!(
        serde_json::to_value(read(key, &keyed).unwrap()).unwrap(),
        json
    );
    assert_eq!(
        serde_json::to_value(read(key, binary).unwrap()).unwrap(),
        json
    );
    let mut old = Vec::new();
    write_json(value, &mut old);
    assert_eq!(
        serde_json::to_value(read(key, &old).unwrap()).unwrap(),
        json
    );
    // A newer format is refused with the advice to upgrade.
    let mut newer = keyed.clone();
    newer[0] = FORMAT_VERSION + 1;
    let refused = read(key, &newer).err().expect("a newer format is refused");
    assert!(
        refused.to_string().contains("upgrade procsync"),
        "{refused}"
    );
    (keyed.len(), binary.len())
}

/// `message` as format 2 stored it.
pub(super) fn format_2(message: &impl Message) -> Vec<u8> {
    [&[BINARY][..], &message.encode_to_vec()].concat()
}

/// A correlation's message as format 2 wrote it: its key's parts inside,
/// a hex digest as its 8 bytes.
fn correlation_message_of_2(correlation: &Correlation) -> stored::Correlation {
    let mut message = correlation_message(correlation, &FieldNames::default().view());
    for synced in &mut message.synced {
        if let Some(bits) = synced.digest_bits.take() {
            synced.digest = Bytes::copy_from_slice(&bits.to_be_bytes());
        }
    }
    stored::Correlation {
        remote_system: correlation.remote_system.clone(),
        table: correlation.table.clone(),
        local_correlation_id: correlation.local_correlation_id.clone(),
        ..message
    }
}

pub(super) fn item_json() -> serde_json::Value {
    serde_json::json!({
        "id": 7, "sequence": 3, "remote_system": "hub", "process_event": "pe",
        "capture_definition": "cap", "outbound_flow": "to hub", "operation": "update",
        "table": "incident", "local_correlation_id": "a".repeat(32), "domain": "global/acme",
        "status": "Error", "created_on": 1_796_000_000_000u64,
        "payload": {
            "capture_metadata": {"changed_by": "admin", "timestamp": "2026-12-04 10:00:00",
                "operation": "update", "table": "incident", "sys_id": "a".repeat(32),
                "process_event": "pe"},
            "changed_fields": [{"key": "state", "value": "2", "display_value": "In progress", "changed": true}],
            "journal_entries": []},
        "error": "the peer refused it", "attempts": 2, "next_attempt_on": 1_796_000_001_000u64,
        "attachment_hashes": ["b".repeat(64)], "flow_contexts": [4, 5],
        "bases": [{"field": "state", "digest": "0123456789abcdef"}], "settles": true
    })
}

#[test]
fn queue_items_and_contexts_round_trip() {
    let item: OutboundItem = serde_json::from_value(item_json()).unwrap();
    both_ways(&item, LEAN);
    // A payload of a format-1 item that does not read as one stays text.
    let mut unreadable = item.clone();
    unreadable.payload = EncodedPayload::Json("{\"changed_fields\": 3}".to_string());
    let back: OutboundItem = decode(&encode(&unreadable)).unwrap();
    assert_eq!(back.payload, unreadable.payload);

    let mut inbound = item_json();
    let object = inbound.as_object_mut().unwrap();
    object.remove("capture_definition");
    object.remove("outbound_flow");
    object.insert("source_table".into(), "incident".into());
    object.insert("remote_correlation_id".into(), "c".repeat(32).into());
    let payload = object["payload"].to_string();
    object.insert("payload".into(), payload.into());
    object.insert("waiting".into(), "fetching".into());
    object.insert(
        "attachment_grants".into(),
        serde_json::json!([{"hash": "b".repeat(64), "expires_at": 9, "key": "k".repeat(64)}]),
    );
    object.insert(
        "fetch_retries".into(),
        serde_json::json!({"h": {"attempts": 1, "next_attempt_on": 5, "held": 6, "last_error": "cut"}}),
    );
    object.insert(
        "conflicts".into(),
        serde_json::json!([{"field": "state", "here": "1", "peer": "2", "here_on": 1,
            "peer_on": 2, "rule": "error", "winner": "undecided"}]),
    );
    let inbound: InboundItem = serde_json::from_value(inbound).unwrap();
    assert!(matches!(inbound.payload, EncodedPayload::Binary(_)));
    both_ways(&inbound, LEAN);
    let mut malformed = inbound.clone();
    malformed.payload = EncodedPayload::Json("{not json".to_string());
    let back: InboundItem = decode(&encode(&malformed)).unwrap();
    assert_eq!(back.payload, malformed.payload, "kept as received");

    let context: FlowContext = serde_json::from_value(serde_json::json!({
        "id": 12, "queue": "inbound", "item_id": 7, "flow": "Requests from edge",
        "started_on": 1_796_000_000_000u64, "duration_ms": 3, "outcome": "Processed",
        "steps": [{"name": "payload", "detail": "3 fields, 1 changed", "at_us": 12},
                  {"name": "write", "detail": "created sc_req_item/abc", "at_us": 250}],
        "inputs": {"operation": "create", "changed_fields": {"state": "2"}},
        "outputs": null, "error": "held: a conflict"
    }))
    .unwrap();
    every_format(&context);
}

fn a_record() -> Record {
    serde_json::from_value(serde_json::json!({
        "table": "incident", "sys_id": "a".repeat(32), "created_on": 1, "created_by": "admin",
        "updated_on": 2, "updated_by": "ann", "mod_count": 3, "domain": "global",
        "fields": {"number": "INC0000001", "short_description": "Printer jams", "state": "2"},
        "journal_len": 1,
        "attachments": [{"sys_id": "d".repeat(32), "file_name": "a.pdf", "content_type": "application/pdf",
            "size": 10, "hash": "b".repeat(64), "created_on": 1, "created_by": "admin",
            "origin": {"remote_system": "hub", "sys_id": "e".repeat(32)}}]
    }))
    .unwrap()
}

fn a_correlation() -> Correlation {
    serde_json::from_value(serde_json::json!({
        "remote_system": "hub", "remote_correlation_id": "", "table": "incident",
        "local_correlation_id": "a".repeat(32), "active": true, "created_on": 5, "updated_on": 9,
        "synced": {
            "state": {"digest": "0123456789abcdef", "on": 9},
            "number": {"digest": "fedcba9876543210", "on": 7, "by_peer": true},
            "odd": {"digest": "8 chars!", "on": 9},
            "zero": {"digest": "0000000000000000", "on": 9},
            "other": {"digest": "not hex at all", "on": 9}},
        "unsent": true, "origin_remote": false
    }))
    .unwrap()
}

/// Records and correlations are written in format 5, without their key's
/// parts, and read back whole with their key; formats 2 and 1 still read.
/// (Here the store has numbered no field name: each is stored as text.)
#[test]
fn records_and_correlations_are_stored_without_their_keys() {
    let none = FieldNames::default();
    let record = a_record();
    let key = (record.table.as_str(), record.sys_id.as_str());
    let binary = format_2(&stored::Record {
        table: record.table.clone(),
        sys_id: record.sys_id.clone(),
        ..record_message(&record, &none.view(), &mut Vec::new())
    });
    let (keyed, binary) = keyed_ways(
        &record,
        key,
        &|record| encode_record(&none, record).0,
        &|key, bytes| record_at(&none, key, bytes),
        &binary,
    );
    assert_eq!(
        binary - keyed,
        2 + "incident".len() + 2 + 32,
        "the key's parts"
    );

    let correlation = a_correlation();
    let key = ("incident", &*correlation.local_correlation_id, "hub");
    let binary = format_2(&correlation_message_of_2(&correlation));
    let (keyed, binary) = keyed_ways(
        &correlation,
        key,
        &|correlation| encode_correlation(&none, correlation),
        &|key, bytes| correlation_at(&none, key, bytes),
        &binary,
    );
    // The key's parts, and a byte for each hex digest: its 8 bytes need no
    // length in format 5.
    assert_eq!(binary - keyed, 2 + 3 + 2 + 8 + 2 + 32 + 3);
    // The sender reads only the peer's record of it, in every format.
    let mut answered = correlation.clone();
    answered.remote_correlation_id = "f".repeat(32);
    let id = "f".repeat(32);
    assert_eq!(
        correlation_peer_id(&encode_correlation(&none, &answered)).unwrap(),
        id
    );
    let old = format_2(&correlation_message_of_2(&answered));
    assert_eq!(correlation_peer_id(&old).unwrap(), id);
    let mut old = Vec::new();
    write_json(&answered, &mut old);
    assert_eq!(correlation_peer_id(&old).unwrap(), id);
    assert_eq!(
        correlation_peer_id(&encode_correlation(&none, &correlation)).unwrap(),
        ""
    );
}

/// With the store's numbers for its field names (format 5), a record and
/// a correlation name their fields by number: smaller by the names, read
/// back whole; a name the store has no number for stays text and is
/// reported for the writer to number; a number the store lacks is refused.
#[test]
fn field_names_are_stored_as_the_stores_numbers() {
    let none = FieldNames::default();
    let all = FieldNames::numbered(&[
        "number",
        "short_description",
        "state",
        "odd",
        "other",
        "zero",
    ]);
    let record = a_record();
    let key = (record.table.as_str(), record.sys_id.as_str());
    let (as_text, unnamed) = encode_record(&none, &record);
    assert_eq!(unnamed, ["number", "short_description", "state"]);
    let (numbered, unnamed) = encode_record(&all, &record);
    assert!(unnamed.is_empty(), "{unnamed:?}");
    let names = "number".len() + "short_description".len() + "state".len();
    // A name's tag, length and bytes become a number's tag and number.
    assert_eq!(as_text.len() - numbered.len(), names);
    for (names, bytes) in [(&all, &numbered), (&all, &as_text), (&none, &as_text)] {
        assert_eq!(record_at(names, key, bytes).unwrap(), record);
    }
    let refused = record_at(&none, key, &numbered).unwrap_err().to_string();
    assert!(refused.contains("field name number 1"), "{refused}");
    let some = FieldNames::numbered(&["state"]);
    let (mixed, unnamed) = encode_record(&some, &record);
    assert_eq!(unnamed, ["number", "short_description"]);
    assert_eq!(record_at(&some, key, &mixed).unwrap(), record);

    let correlation = a_correlation();
    let key = ("incident", &*correlation.local_correlation_id, "hub");
    let as_text = encode_correlation(&none, &correlation);
    let numbered = encode_correlation(&all, &correlation);
    let names = "number".len() + "state".len() + "odd".len() + "other".len() + "zero".len();
    // `state` and `zero` (hex digests exchanged at updated_on by this
    // side) are packed in one group: a number and 8 bytes each (18) with
    // the group's 4 bytes, instead of two messages of 13; `number` (by the
    // peer, at 7) in a group of its own, as long as its message was (17).
    assert_eq!(as_text.len() - numbered.len(), names + 2 * 13 - (4 + 18));
    let message = stored::Correlation::decode(&numbered[1..]).unwrap();
    let groups: Vec<_> = message
        .synced_groups
        .iter()
        .map(|g| (g.on, g.by_peer, g.packed.len()))
        .collect();
    assert_eq!(groups, [(Some(7), true, 9), (None, false, 18)]);
    assert_eq!(message.synced.len(), 2, "the text digests stay messages");
    for (names, bytes) in [(&all, &numbered), (&none, &as_text)] {
        assert_eq!(correlation_at(names, key, bytes).unwrap(), correlation);
    }
    let refused = correlation_at(&some, key, &numbered)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("is not in the store's names"), "{refused}");
    // A packed entry cut short is refused, not misread.
    let mut cut = message.clone();
    cut.synced_groups[1].packed.truncate(13);
    let cut = [&[LEAN][..], &cut.encode_to_vec()].concat();
    let refused = correlation_at(&all, key, &cut).unwrap_err().to_string();
    assert!(refused.contains("ends inside its digest"), "{refused}");
}

/// A context is written in format 3 and reads back as it was; its format-2
/// and format-1 forms still read. Returns the sizes in formats 3 and 2.
fn every_format(context: &FlowContext) -> (usize, usize) {
    let json = serde_json::to_value(context).unwrap();
    let packed = encode(context);
    assert_eq!(packed[0], PACKED);
    let back: FlowContext = decode(&packed).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), json);
    let mut binary = vec![BINARY];
    binary.extend(context_message(context).encode_to_vec());
    let mut old = Vec::new();
    write_json(context, &mut old);
    for earlier in [&binary, &old] {
        let back: FlowContext = decode(earlier).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
    }
    (packed.len(), binary.len())
}

/// The context of an apply on arrival of a create of `fields` into
/// `table` by `flow`, as the inbound flows write them.
fn apply_context(flow: &str, table: &str, fields: serde_json::Value) -> FlowContext {
    let local = "01a247a98ec4000cd1799b636695c7f8";
    let remote = "01a247a98df9000cabff9764576316f2";
    let n = fields.as_object().map_or(0, serde_json::Map::len);
    let step = |name: &str, detail: String, at_us: u64| serde_json::json!({"name": name, "detail": detail, "at_us": at_us});
    serde_json::from_value(serde_json::json!({
        "id": 5, "queue": "inbound", "item_id": 5, "flow": flow,
        "started_on": 1_796_498_624_196u64, "duration_ms": 0, "outcome": "Processed",
        "steps": [
            step("payload", format!("{n} fields ({n} changed), 0 journal entries, 0 attachments"), 5),
            step("inbound flow", format!("`{flow}` maps onto table `{table}`"), 8),
            step("correlate", "no record yet: a new one".into(), 17),
            step("map", format!("the Basic template: create of {n} fields"), 25),
            step("write", format!("create {table}/{local} as `edge_runas`"), 104),
            step("correlation", format!("{table}/{local} is `edge`'s {remote}"), 161),
            step("finish", "the item is Processed".into(), 170),
        ],
        "inputs": {"payload_bytes": 166},
        "outputs": {
            "attachments_added": 0, "attachments_removed": 0, "fields": fields,
            "journal_entries": 0, "operation": "create", "sys_id": local, "table": table
        },
        "error": null
    }))
    .unwrap()
}

/// Contexts are stored in a fraction of their format-2 bytes: an apply's
/// of the demo's process (`bench sync`), whose shape the dictionary holds,
/// in a fifth; one of another process in two fifths. A damaged one says
/// so.
#[test]
fn an_applys_context_is_stored_in_a_fraction_of_the_bytes() {
    let demo = apply_context(
        "Receive software requests from edge",
        "sc_req_item",
        serde_json::json!({"requested_for": "", "short_description": "Bench request 9",
                           "state": "1", "sys_domain": "global"}),
    );
    let (packed, binary) = every_format(&demo);
    assert!(
        packed * 5 <= binary,
        "{packed} bytes packed, {binary} in format 2"
    );
    let other = apply_context(
        "Incidents from the plant",
        "incident",
        serde_json::json!({"caller_id": "f.mueller", "category": "hardware",
                           "impact": "2", "priority": "3", "short_description": "Line 4 scanner offline",
                           "location": "Plant Nord", "sys_domain": "global/plants"}),
    );
    let (packed, binary) = every_format(&other);
    assert!(
        packed * 5 <= binary * 2,
        "{packed} bytes packed, {binary} in format 2"
    );
    let stored = encode(&demo);
    let error = decode::<FlowContext>(&stored[..stored.len() / 2])
        .expect_err("half a context does not read");
    assert!(error.to_string().contains("flow context"), "{error}");
}
