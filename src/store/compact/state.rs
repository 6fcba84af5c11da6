//! An outbound item's state as a send or an acknowledgment changes it
//! (status, attempts, times, whether it has an error), read from its stored
//! message and written back into it without decoding the rest: the payload
//! and the names, most of the item, are copied as they are. The message is
//! walked by its wire format (keys, numbers, lengths); the fields it
//! changes are written again in field order, so the result is the message
//! prost would have written.

use std::ops::Range;

use super::{status_number, status_of};
use crate::ids::Millis;
use crate::queue::{OutboundItem, QueueStatus};
use crate::store::StoreError;
use crate::store::codec::{BINARY, LEAN, decode, encode};

// Field numbers of `OutboundItem` in store.proto.
const REMOTE_SYSTEM: u32 = 3;
const PROCESS_EVENT: u32 = 4;
const STATUS: u32 = 11;
const CREATED_ON: u32 = 12;
const ERROR: u32 = 14;
const ATTEMPTS: u32 = 15;
const NEXT_ATTEMPT_ON: u32 = 16;
const SENT_ON: u32 = 17;
const PROCESSED_ON: u32 = 18;
const ROOM: u32 = 31;

/// The fields written again, in field order.
const CHANGED: [u32; 6] = [
    STATUS,
    ERROR,
    ATTEMPTS,
    NEXT_ATTEMPT_ON,
    SENT_ON,
    PROCESSED_ON,
];

/// The room a new item is written with (`room`, field `ROOM`): what its
/// send (attempts, sent_on: 2 + 8 bytes) and its acknowledgment
/// (processed_on: 8) add.
pub(super) const ROOM_BYTES: [u8; 18] = [0; 18];

/// Wire types of the protobuf encoding.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LENGTH: u8 = 2;
const FIXED32: u8 = 5;

/// The changing part of a stored outbound item, and what the counters need
/// to count its move.
pub(in crate::store) struct OutboundState<'a> {
    pub remote_system: &'a str,
    pub process_event: &'a str,
    pub created_on: Millis,
    pub status: QueueStatus,
    pub attempts: u32,
    pub next_attempt_on: Option<Millis>,
    pub sent_on: Option<Millis>,
    pub processed_on: Option<Millis>,
    /// The error field as stored (key and text), kept as it is unless
    /// cleared.
    error: Option<&'a [u8]>,
    /// The item's format byte, written again as it was.
    format: u8,
    body: &'a [u8],
}

/// Whether a stored item is a message this walks: formats 2 and 5.
fn walkable(value: &[u8]) -> bool {
    matches!(value.first(), Some(&(BINARY | LEAN)))
}

/// A stored outbound item as a message: an item of format 1 is written as
/// this binary writes items first, so that its state can be read.
pub(in crate::store) fn binary(value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    if walkable(&value) {
        Ok(value)
    } else {
        Ok(encode(&decode::<OutboundItem>(&value)?))
    }
}

/// Changes the state of stored outbound item `id` of `table` by `change`,
/// reached once (`get_mut`, one walk down the tree) and written back in
/// place when the new value fits where the old one was. `change` returns
/// false to leave the item as it was. A missing item is left alone.
pub(in crate::store) fn rewrite(
    table: &mut redb::Table<u64, &'static [u8]>,
    id: u64,
    change: impl FnOnce(&mut OutboundState<'_>) -> bool,
) -> Result<(), StoreError> {
    let Some(mut stored) = table.get_mut(id)? else {
        return Ok(());
    };
    let changed = {
        let value = stored.value();
        let converted;
        let value = if walkable(value) {
            value
        } else {
            converted = binary(value.to_vec())?;
            converted.as_slice()
        };
        let mut state = OutboundState::read(value)?;
        if !change(&mut state) {
            return Ok(());
        }
        state.write()
    };
    stored.insert(changed.as_slice())?;
    Ok(())
}

/// The status of a stored outbound item, of any format.
pub(in crate::store) fn status(value: &[u8]) -> Result<QueueStatus, StoreError> {
    if walkable(value) {
        Ok(OutboundState::read(value)?.status)
    } else {
        Ok(decode::<OutboundItem>(value)?.status)
    }
}

impl<'a> OutboundState<'a> {
    /// The state of an item stored in format 2 or 5 (see `binary`).
    pub fn read(value: &'a [u8]) -> Result<OutboundState<'a>, StoreError> {
        let corrupt =
            |e: String| StoreError::Corrupt(format!("stored queue item does not read: {e}"));
        let Some((&format @ (BINARY | LEAN), body)) = value.split_first() else {
            return Err(corrupt("it is not in format 2 or 5".to_string()));
        };
        let mut state = OutboundState {
            format,
            remote_system: "",
            process_event: "",
            created_on: 0,
            // Always stored (its number is never 0); checked below.
            status: QueueStatus::Ready,
            attempts: 0,
            next_attempt_on: None,
            sent_on: None,
            processed_on: None,
            error: None,
            body,
        };
        let mut has_status = false;
        let mut at = 0;
        while at < body.len() {
            let field = next_field(body, &mut at).map_err(corrupt)?;
            let text = || {
                std::str::from_utf8(&body[field.content.clone()])
                    .map_err(|_| corrupt(format!("field {} is not UTF-8", field.number)))
            };
            match field.number {
                REMOTE_SYSTEM => state.remote_system = text()?,
                PROCESS_EVENT => state.process_event = text()?,
                CREATED_ON => state.created_on = field.value,
                STATUS => {
                    let number = u32::try_from(field.value).unwrap_or(u32::MAX);
                    state.status = status_of(number).map_err(corrupt)?;
                    has_status = true;
                }
                ERROR => state.error = Some(&body[field.whole]),
                ATTEMPTS => state.attempts = u32::try_from(field.value).unwrap_or(u32::MAX),
                NEXT_ATTEMPT_ON => state.next_attempt_on = Some(field.value),
                SENT_ON => state.sent_on = Some(field.value),
                PROCESSED_ON => state.processed_on = Some(field.value),
                _ => {}
            }
        }
        if !has_status {
            return Err(corrupt("it has no status".to_string()));
        }
        Ok(state)
    }

    /// Removes the item's error.
    pub fn clear_error(&mut self) {
        self.error = None;
    }

    /// The stored item with this state: every other field as it was.
    /// An item written with room (`ROOM`) keeps its size while the room
    /// lasts: what the change adds is taken from the room.
    pub fn write(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 32);
        out.push(self.format);
        let mut pending = CHANGED.iter().peekable();
        let mut had_room = false;
        let mut at = 0;
        while at < self.body.len() {
            let field = next_field(self.body, &mut at).expect("`read` walked these fields");
            if field.number == ROOM {
                had_room = true;
                continue;
            }
            if CHANGED.contains(&field.number) {
                continue;
            }
            while let Some(&number) = pending.next_if(|&&n| n < field.number) {
                self.put(number, &mut out);
            }
            out.extend_from_slice(&self.body[field.whole]);
        }
        for &number in pending {
            self.put(number, &mut out);
        }
        if had_room {
            // The room's key (two bytes) and length (one), then its zeros:
            // the last field, as prost writes it.
            let was = 1 + self.body.len();
            if let Some(left) = was.checked_sub(out.len() + 3).filter(|&n| n < 0x80) {
                put_varint(u64::from(ROOM << 3 | u32::from(LENGTH)), &mut out);
                out.push(u8::try_from(left).expect("below 0x80"));
                out.resize(was, 0);
            }
        }
        out
    }

    /// Writes field `number` of the changed ones, as prost would: a plain
    /// number only when it is not 0, an optional one when it is set.
    fn put(&self, number: u32, out: &mut Vec<u8>) {
        let optional = |value: Option<Millis>, out: &mut Vec<u8>| {
            if let Some(value) = value {
                put_varint(u64::from(number << 3 | u32::from(VARINT)), out);
                put_varint(value, out);
            }
        };
        match number {
            STATUS => optional(Some(u64::from(status_number(self.status))), out),
            ERROR => out.extend_from_slice(self.error.unwrap_or_default()),
            ATTEMPTS => optional(Some(u64::from(self.attempts)).filter(|&n| n != 0), out),
            NEXT_ATTEMPT_ON => optional(self.next_attempt_on, out),
            SENT_ON => optional(self.sent_on, out),
            PROCESSED_ON => optional(self.processed_on, out),
            _ => unreachable!("only the changed fields are put"),
        }
    }
}

/// One field of a message: its number, its bytes with the key, and its
/// value (a number, or the range of its length-delimited content).
pub(super) struct Field {
    pub number: u32,
    whole: Range<usize>,
    value: u64,
    pub content: Range<usize>,
}

/// The field at `*at` of `body`; moves `*at` past it.
pub(super) fn next_field(body: &[u8], at: &mut usize) -> Result<Field, String> {
    let start = *at;
    let key = varint(body, at)?;
    let number = u32::try_from(key >> 3).map_err(|_| "a field number is too large".to_string())?;
    let mut value = 0;
    let mut content = *at..*at;
    match u8::try_from(key & 7).expect("three bits") {
        VARINT => value = varint(body, at)?,
        LENGTH => {
            let length = usize::try_from(varint(body, at)?).unwrap_or(usize::MAX);
            let end = at.checked_add(length).filter(|&end| end <= body.len());
            let end = end.ok_or_else(|| format!("field {number} runs past the end"))?;
            content = *at..end;
            *at = end;
        }
        FIXED64 => *at += 8,
        FIXED32 => *at += 4,
        other => return Err(format!("field {number} has wire type {other}")),
    }
    if *at > body.len() {
        return Err(format!("field {number} runs past the end"));
    }
    Ok(Field {
        number,
        whole: start..*at,
        value,
        content,
    })
}

fn varint(body: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0;
    for shift in (0..64).step_by(7) {
        let byte = *body.get(*at).ok_or("the message ends inside a number")?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err("a number runs past ten bytes".to_string())
}

fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push(u8::try_from(value & 0x7f).expect("seven bits") | 0x80);
        value >>= 7;
    }
    out.push(u8::try_from(value).expect("below 0x80"));
}
