//! Inbound flows: turning a received payload into a write on a local
//! record. The Basic inbound template correlates (done by the caller),
//! then creates when there is no correlation, updates when there is, and
//! deletes; the field mapping renames, sets constants or copies display
//! values. Pure: no storage, no I/O.

use std::collections::BTreeMap;

use crate::config::sync::InboundFlow;
use crate::queue::Payload;
use crate::record::{Operation, RecordWrite};

/// Why a payload could not be applied.
pub type FlowError = String;

/// The write an inbound flow makes for one item.
pub fn basic_inbound(
    flow: &InboundFlow,
    operation: Operation,
    payload: &Payload,
    correlated: Option<&str>,
) -> Result<Option<RecordWrite>, FlowError> {
    let operation = match (operation, correlated) {
        (Operation::Delete, None) => return Ok(None),
        (Operation::Delete, Some(_)) => Operation::Delete,
        (_, None) => Operation::Create,
        (_, Some(_)) => Operation::Update,
    };
    let mut fields = BTreeMap::new();
    if operation != Operation::Delete {
        // A new record gets the whole snapshot; an update only what changed,
        // so fields the peer did not touch keep their local values.
        let wanted = |changed: bool| operation == Operation::Create || changed;
        if flow.map.is_empty() {
            for field in &payload.changed_fields {
                if wanted(field.changed) {
                    fields.insert(field.key.clone(), field.value.clone());
                }
            }
        } else {
            for map in &flow.map {
                if let Some(constant) = &map.constant {
                    fields.insert(map.to.clone(), constant.clone());
                    continue;
                }
                let Some(from) = &map.from else { continue };
                let Some(field) = payload.changed_fields.iter().find(|f| &f.key == from) else {
                    continue;
                };
                if wanted(field.changed) {
                    let value = if map.display_value {
                        &field.display_value
                    } else {
                        &field.value
                    };
                    fields.insert(map.to.clone(), value.clone());
                }
            }
        }
    }
    Ok(Some(RecordWrite {
        operation,
        table: flow.table.clone(),
        sys_id: correlated.map(str::to_string),
        fields,
        journal: payload
            .journal_entries
            .iter()
            .filter(|_| operation != Operation::Delete)
            .map(|entry| crate::record::JournalText {
                field: entry.field.clone(),
                text: entry.text.clone(),
            })
            .collect(),
    }))
}
