//! Queue items in format 5: the key left to the payload, the state
//! rewritten in the stored bytes, the room a new item carries.

use super::super::codec::{decode, encode, write_json};
use super::tests::{format_2, item_json};
use super::*;
use bytes::Bytes;

/// A value as JSON, to compare.
fn json(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap()
}

/// How often `part` is in `bytes`.
fn count(bytes: &[u8], part: &str) -> usize {
    bytes
        .windows(part.len())
        .filter(|w| *w == part.as_bytes())
        .count()
}

/// A queue item (format 5) leaves its table and record id to its payload
/// when the payload holds the same, and reads them back from it; an item
/// whose payload names another record keeps its own; format 2 still reads.
#[test]
fn an_item_leaves_its_key_to_its_payload() {
    let item: OutboundItem = serde_json::from_value(item_json()).unwrap();
    let sys_id = "a".repeat(32);
    let lean = encode(&item);
    assert_eq!(
        count(&lean, &sys_id),
        1,
        "the sys_id is in the payload only"
    );
    assert_eq!(count(&lean, "incident"), 1);
    let back: OutboundItem = decode(&lean).unwrap();
    assert_eq!(
        (back.table.as_str(), back.local_correlation_id.as_str()),
        ("incident", sys_id.as_str())
    );
    let mut whole = outbound_message(&item);
    whole.table = item.table.clone();
    whole.local_correlation_id = item.local_correlation_id.clone();
    whole.key_in_payload = false;
    let format_2 = format_2(&whole);
    // The key's table and sys_id, less the flag (field 25: two bytes of
    // key, one of value).
    assert_eq!(format_2.len() - lean.len(), 2 + 8 + 2 + 32 - 3);
    assert_eq!(
        json(&decode::<OutboundItem>(&format_2).unwrap()),
        json(&back)
    );

    let mut other = item.clone();
    other.local_correlation_id = "e".repeat(32);
    let kept = encode(&other);
    assert_eq!(count(&kept, &"e".repeat(32)), 1);
    assert_eq!(
        decode::<OutboundItem>(&kept).unwrap().local_correlation_id,
        other.local_correlation_id
    );

    let mut inbound: InboundItem = serde_json::from_value(serde_json::json!({
        "id": 8, "sequence": 4, "remote_system": "edge", "process_event": "pe",
        "operation": "update", "source_table": "incident", "remote_correlation_id": sys_id,
        "local_correlation_id": "d".repeat(32), "domain": "global", "status": "Ready",
        "created_on": 1, "payload": item_json()["payload"].clone()
    }))
    .unwrap();
    let lean = encode(&inbound);
    assert_eq!(count(&lean, &sys_id), 1);
    assert_eq!(json(&decode::<InboundItem>(&lean).unwrap()), json(&inbound));
    inbound.source_table = "problem".to_string();
    let kept = encode(&inbound);
    assert_eq!(count(&kept, "problem"), 1);
    assert_eq!(json(&decode::<InboundItem>(&kept).unwrap()), json(&inbound));
    // A damaged payload of an item that leaves its key to it is refused.
    let mut damaged = outbound_message(&item);
    damaged.payload = Bytes::from_static(&[0x22, 0x40, b'x']);
    let refused = decode::<OutboundItem>(&[&[LEAN][..], &damaged.encode_to_vec()].concat())
        .unwrap_err()
        .to_string();
    assert!(refused.contains("does not read"), "{refused}");
}

/// A rewritten item of the size it was (`size`: it had room left), less
/// its room: its last field, which prost never writes for an item sent.
fn without_room(rewritten: &[u8], size: usize) -> Vec<u8> {
    assert_eq!(rewritten.len(), size, "the item kept its size");
    // The room's key (field 31, two bytes), its length, its zeros.
    let room = (0..rewritten.len() - 2)
        .rev()
        .find(|&at| {
            rewritten[at..at + 2] == [0xfa, 0x01]
                && usize::from(rewritten[at + 2]) == rewritten.len() - at - 3
        })
        .expect("the room is last");
    assert!(rewritten[room + 3..].iter().all(|&b| b == 0));
    rewritten[..room].to_vec()
}

/// A new item is written with room for what its send and its
/// acknowledgment add: it keeps its size through both (so redb replaces
/// it in place), and the room is never read.
#[test]
fn a_new_item_keeps_its_size_through_its_send_and_acknowledgment() {
    use super::state::rewrite;
    use redb::ReadableDatabase;
    let mut item: OutboundItem = serde_json::from_value(item_json()).unwrap();
    (item.status, item.attempts, item.next_attempt_on) = (QueueStatus::Ready, 0, None);
    (item.error, item.last_error) = (None, None);
    let new = encode(&item);
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join("room.redb")).unwrap();
    let definition: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("outbound");
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(definition).unwrap();
        table.insert(7, new.as_slice()).unwrap();
        rewrite(&mut table, 7, |state| {
            state.status = QueueStatus::Running;
            state.attempts = 1;
            state.sent_on = Some(1_796_000_002_000);
            true
        })
        .unwrap();
        rewrite(&mut table, 7, |state| {
            state.status = QueueStatus::Processed;
            state.processed_on = Some(1_796_000_003_000);
            true
        })
        .unwrap();
    }
    txn.commit().unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(definition).unwrap();
    let done = table.get(7).unwrap().unwrap().value().to_vec();
    assert_eq!(done.len(), new.len(), "the room took both changes");
    let mut expected = item.clone();
    expected.status = QueueStatus::Processed;
    expected.attempts = 1;
    expected.sent_on = Some(1_796_000_002_000);
    expected.processed_on = Some(1_796_000_003_000);
    assert_eq!(without_room(&done, new.len()), encode(&expected));
    assert_eq!(
        json(&decode::<OutboundItem>(&done).unwrap()),
        json(&expected)
    );
}

/// A send and an acknowledgment rewrite an item's state in its stored
/// bytes: the result is what encoding the changed item whole gives, and a
/// format-1 item is written as format 2 first.
#[test]
fn an_items_state_is_rewritten_without_decoding_the_rest() {
    use super::state::{OutboundState, binary};
    let mut item: OutboundItem = serde_json::from_value(item_json()).unwrap();
    item.status = QueueStatus::Ready;
    item.last_error = Some("the stream broke".to_string());
    let mut old = Vec::new();
    write_json(&item, &mut old);
    for stored in [encode(&item), binary(old).unwrap()] {
        let mut state = OutboundState::read(&stored).unwrap();
        assert_eq!(
            (state.remote_system, state.process_event, state.created_on),
            ("hub", "pe", item.created_on)
        );
        assert_eq!((state.status, state.attempts), (QueueStatus::Ready, 2));
        assert_eq!(state.next_attempt_on, Some(1_796_000_001_000));
        state.status = QueueStatus::Running;
        state.attempts += 1;
        state.sent_on = Some(1_796_000_002_000);
        state.next_attempt_on = None;
        let sent = state.write();
        let mut expected = item.clone();
        expected.status = QueueStatus::Running;
        expected.attempts = 3;
        expected.sent_on = Some(1_796_000_002_000);
        expected.next_attempt_on = None;
        assert_eq!(without_room(&sent, stored.len()), encode(&expected));

        let mut state = OutboundState::read(&sent).unwrap();
        state.status = QueueStatus::Processed;
        state.processed_on = Some(1_796_000_003_000);
        state.clear_error();
        expected.status = QueueStatus::Processed;
        expected.processed_on = Some(1_796_000_003_000);
        expected.error = None;
        let acknowledged = state.write();
        assert_eq!(without_room(&acknowledged, stored.len()), encode(&expected));
        assert_eq!(
            serde_json::to_value(decode::<OutboundItem>(&acknowledged).unwrap()).unwrap(),
            serde_json::to_value(&expected).unwrap()
        );
    }
    // A cut-off value is refused with what is wrong, not misread.
    let stored = encode(&item);
    let error = OutboundState::read(&stored[..stored.len() / 2])
        .err()
        .unwrap();
    assert!(error.to_string().contains("runs past the end"), "{error}");
}
