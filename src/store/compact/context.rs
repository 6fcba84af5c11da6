//! Format 2 of flow contexts: the steps as messages, the inputs and
//! outputs (any JSON) as their text.

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
