//! Flow contexts as stored: the steps as messages, the inputs and outputs
//! (any JSON) as their text (format 2), and that message compressed (an
//! LZ4 block) against a dictionary of the words contexts repeat (format
//! 3): an apply's context took 829 bytes, half of what a hub wrote per
//! applied item, and every byte written is a byte the commit's fsync
//! waits for.

use bytes::Bytes;

use super::status_number;
use super::status_of;
use crate::queue::{FlowContext, FlowStep};
use crate::stored;

/// A JSON value as text; null as nothing.
fn json_bytes(value: &serde_json::Value) -> Bytes {
    if value.is_null() {
        Bytes::new()
    } else {
        Bytes::from(serde_json::to_vec(value).expect("JSON values serialize"))
    }
}

fn json_of(bytes: &[u8]) -> Result<serde_json::Value, String> {
    if bytes.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|e| format!("a context's JSON does not read: {e}"))
}

pub(super) fn context_message(context: &FlowContext) -> stored::FlowContext {
    stored::FlowContext {
        id: context.id,
        queue: context.queue.clone(),
        item_id: context.item_id,
        flow: context.flow.clone(),
        started_on: context.started_on,
        duration_ms: context.duration_ms,
        outcome: status_number(context.outcome),
        steps: context
            .steps
            .iter()
            .map(|s| stored::FlowStep {
                name: s.name.clone(),
                detail: s.detail.clone(),
                at_us: s.at_us,
            })
            .collect(),
        inputs_json: json_bytes(&context.inputs),
        outputs_json: json_bytes(&context.outputs),
        error: context.error.clone(),
    }
}

pub(super) fn context_of(message: stored::FlowContext) -> Result<FlowContext, String> {
    Ok(FlowContext {
        id: message.id,
        queue: message.queue,
        item_id: message.item_id,
        flow: message.flow,
        started_on: message.started_on,
        duration_ms: message.duration_ms,
        outcome: status_of(message.outcome)?,
        steps: message
            .steps
            .into_iter()
            .map(|s| FlowStep {
                name: s.name,
                detail: s.detail,
                at_us: s.at_us,
            })
            .collect(),
        inputs: json_of(&message.inputs_json)?,
        outputs: json_of(&message.outputs_json)?,
        error: message.error,
    })
}

/// What contexts repeat: the steps' names and fixed words, the JSON keys
/// of inputs and outputs. A run of a context's text found here is written
/// as a reference of a few bytes instead of itself. Part of format 3:
/// never change it (a new dictionary is a new format).
const DICTIONARY: &[u8] = b"\
\x08\x05\x12\x07inbound\x18\x05\"#Receive software requests from edge(\xc4\x9d\xa6\xbd\xa4\
48\x03BC\x0a\x07payload\x1263 fields (2 changed), 0 journal entries, 0 attachments\x18\x05\
BU\x0a\x0cinbound flow\x12C`Receive software requests from edge` maps onto table `sc_req_i\
tem`\x18\x08B'\x0a\x09correlate\x12\x18no record yet: a new one\x18\x11B/\x0a\x03map\x12&t\
he Basic template: create of 3 fields\x18\x19BN\x0a\x05write\x12Ccreate sc_req_item/000000\
00000000000000000000000000 as `edge_runas`\x18hBk\x0a\x0bcorrelation\x12Ysc_req_item/00000\
000000000000000000000000000 is `edge`'s 00000000000000000000000000000000\x18\xa1\x01B\"\
\x0a\x06finish\x12\x15the item is Processed\x18\xaa\x01J\x15{\"payload_bytes\":166}R\x80\
\x02{\"attachments_added\":0,\"attachments_removed\":0,\"fields\":{\"requested_for\":\"\",\
\"short_description\":\"Bench request 4\",\"state\":\"1\",\"sys_domain\":\"global\"},\"jou\
rnal_entries\":0,\"operation\":\"create\",\"sys_id\":\"00000000000000000000000000000000\",\
\"table\":\"sc_req_item\"}\
inboundoutboundpayloadinbound flowcorrelatemapwritecorrelationfinishreceivecapturequeuesendacknowledge\
 fields ( changed), 0 journal entries, 0 attachments` maps onto table `no record yet: a new one\
our record , matched on the Basic template: create of the Basic template: update of  fields\
create update delete  as `_runas` is `'s the item is Processedthe item is Errorthe item is Skipped\
sequence  from `, checked on arrivalnone receives this process event: nothing to change failed skipped the item\
refused: the named record is not this peer'sconflict\
{\"attachments\":0,\"changed_fields\":{\"journal_entries\":0,\"local_correlation_id\":\"\",\"operation\":\"create\",\
\"operation\":\"update\",\"payload_bytes\":\"remote_correlation_id\":\"\"source_table\":\"\
{\"attachments_added\":0,\"attachments_removed\":0,\"fields\":{\"requested_for\":\"\",\"short_description\":\"\
\"state\":\"1\",\"sys_domain\":\"global\"},\"journal_entries\":0,\"operation\":\"create\",\"sys_id\":\"\
\",\"table\":\"\"conflicts\":\"number\":\"description\":\"priority\":\"category\":\"assigned_to\":\"\
sc_req_itemincidentsys_domainglobal";

/// Appends `message` (a context's format-2 body) in format 3: its length
/// (4 bytes, little-endian), then the LZ4 block, compressed straight into
/// `out` (this runs on the writer's thread).
pub(super) fn pack(message: &[u8], out: &mut Vec<u8>) {
    out.push(super::PACKED);
    let length = u32::try_from(message.len()).expect("a context is far below 4 GiB");
    out.extend_from_slice(&length.to_le_bytes());
    let start = out.len();
    out.resize(
        start + lz4_flex::block::get_maximum_output_size(message.len()),
        0,
    );
    let packed = lz4_flex::block::compress_into_with_dict(message, &mut out[start..], DICTIONARY)
        .expect("room for the largest block was made");
    out.truncate(start + packed);
}

/// A format-3 body back as its format-2 message.
pub(super) fn unpack(body: &[u8]) -> Result<Vec<u8>, crate::store::StoreError> {
    let corrupt = |why: String| {
        crate::store::StoreError::Corrupt(format!("a stored flow context does not unpack: {why}"))
    };
    let (size, block) = body
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("it is shorter than its length".to_string()))?;
    let size = usize::try_from(u32::from_le_bytes(*size)).unwrap_or(usize::MAX);
    if size > MAX_CONTEXT {
        return Err(corrupt(format!("it says it holds {size} bytes")));
    }
    lz4_flex::block::decompress_with_dict(block, size, DICTIONARY)
        .map_err(|e| corrupt(e.to_string()))
}

/// The largest context unpacked: a flow's trace with its inputs and
/// outputs stays far below it.
const MAX_CONTEXT: usize = 64 << 20;
