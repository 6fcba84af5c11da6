//! Inbound flows: turning a received payload into a write on a local
//! record. The Basic inbound template correlates (`plan`: the whole apply
//! of one item as a plan over facts the store read), then creates when
//! there is no correlation, updates when there is, and deletes; the field
//! mapping renames, sets constants or copies display values; the sandboxed
//! script step comes last. Pure: no storage, no I/O.

pub mod conflict;
pub mod plan;

use std::collections::BTreeMap;

use crate::config::sync::InboundFlow;
use crate::queue::Payload;
use crate::record::{Operation, RecordWrite};
use crate::script::{self, ScriptOutcome};

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
        attachments: Default::default(),
        operation,
        table: flow.table.clone(),
        sys_id: correlated.map(str::to_string),
        fields,
        journal: payload
            .journal_entries
            .iter()
            .filter(|_| operation != Operation::Delete)
            .map(|entry| crate::record::JournalText {
                field: flow
                    .journal_map
                    .iter()
                    .find(|m| m.from == entry.field)
                    .map(|m| m.to.clone())
                    .unwrap_or_else(|| entry.field.clone()),
                text: entry.text.clone(),
                origin: Some(crate::record::JournalOrigin {
                    id: entry.id.clone(),
                    author: entry.author.clone(),
                    created_on: crate::ids::parse_time(&entry.time).unwrap_or(0),
                }),
            })
            .collect(),
    }))
}

/// What an inbound flow decided for one item.
#[derive(Clone, Debug, PartialEq)]
pub enum FlowOutcome {
    /// Make this write.
    Write(RecordWrite),
    /// Nothing to do (a delete of a record never correlated).
    Nothing,
    /// The script skipped the item, saying why.
    Skip(String),
    /// The item cannot be applied; it goes to Error with this message.
    Error(FlowError),
}

/// Runs an inbound flow: the Basic template's correlation and mapping, then
/// the flow's script, if any (`script::run` says what a script sees).
pub fn run_inbound(
    flow: &InboundFlow,
    operation: Operation,
    payload: &Payload,
    correlated: Option<&str>,
) -> FlowOutcome {
    let write = match basic_inbound(flow, operation, payload, correlated) {
        Ok(Some(write)) => write,
        Ok(None) => return FlowOutcome::Nothing,
        Err(problem) => return FlowOutcome::Error(problem),
    };
    let mut write = write;
    match run_script(flow, payload, &mut write, correlated) {
        Some(stopped) => stopped,
        None => FlowOutcome::Write(write),
    }
}

/// Runs the flow's script, if any, over the mapped `write`; `Some` when it
/// skipped or failed the item.
pub fn run_script(
    flow: &InboundFlow,
    payload: &Payload,
    write: &mut RecordWrite,
    correlated: Option<&str>,
) -> Option<FlowOutcome> {
    if flow.script.trim().is_empty() {
        return None;
    }
    match script::run(
        &flow.script,
        payload,
        write.operation,
        correlated,
        &write.fields,
    ) {
        ScriptOutcome::Fields(fields) => {
            write.fields = fields;
            None
        }
        ScriptOutcome::Skip(reason) => Some(FlowOutcome::Skip(reason)),
        ScriptOutcome::Error(text) => {
            Some(FlowOutcome::Error(format!("flow `{}`: {text}", flow.name)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{CaptureMetadata, ChangedField};

    fn flow(script: &str) -> InboundFlow {
        InboundFlow {
            name: "f".into(),
            process_event: "e".into(),
            remote_system: "r".into(),
            remote_group: String::new(),
            template: "basic".into(),
            table: "incident".into(),
            map: Vec::new(),
            on_error: Vec::new(),
            journal_map: Vec::new(),
            script: script.into(),
            max_attachment_mb: 0,
            allowed_extensions: Vec::new(),
            conflict: Default::default(),
            match_on: Vec::new(),
        }
    }

    fn payload() -> Payload {
        Payload {
            capture_metadata: CaptureMetadata {
                changed_by: "alice".into(),
                timestamp: "2026-11-27 10:00:00".into(),
                operation: Operation::Create,
                table: "incident".into(),
                sys_id: "a".repeat(32),
                process_event: "e".into(),
            },
            changed_fields: vec![
                ChangedField {
                    key: "state".into(),
                    value: "2".into(),
                    display_value: "In progress".into(),
                    changed: true,
                },
                ChangedField {
                    key: "priority".into(),
                    value: "1".into(),
                    display_value: "1 - Critical".into(),
                    changed: false,
                },
            ],
            journal_entries: Vec::new(),
            attachments: Vec::new(),
            removed_attachments: Vec::new(),
            attachment_strategy: None,
        }
    }

    #[test]
    fn scripts_read_the_payload_and_set_fields() {
        let script = r#"
            fields.u_state_label = payload.display.state;
            if payload.fields.priority == "1" { fields.urgency = "1"; }
            fields.remove("state");
        "#;
        let FlowOutcome::Write(write) =
            run_inbound(&flow(script), Operation::Create, &payload(), None)
        else {
            panic!("expected a write");
        };
        assert_eq!(
            write.fields.get("u_state_label").map(String::as_str),
            Some("In progress")
        );
        assert_eq!(write.fields.get("urgency").map(String::as_str), Some("1"));
        assert!(!write.fields.contains_key("state"));
        assert_eq!(write.operation, Operation::Create);
    }

    #[test]
    fn scripts_skip_or_raise_errors() {
        let skip = run_inbound(
            &flow(r#"if correlation == "" { skip("only updates") }"#),
            Operation::Create,
            &payload(),
            None,
        );
        assert_eq!(skip, FlowOutcome::Skip("only updates".into()));
        let FlowOutcome::Error(error) = run_inbound(
            &flow(r#"throw "state 2 is not allowed""#),
            Operation::Create,
            &payload(),
            None,
        ) else {
            panic!("expected an error");
        };
        assert!(error.contains("state 2 is not allowed"), "{error}");
    }

    #[test]
    fn scripts_are_bounded() {
        let FlowOutcome::Error(error) =
            run_inbound(&flow("loop { }"), Operation::Create, &payload(), None)
        else {
            panic!("expected an error");
        };
        assert!(
            error.contains("operations") || error.contains("too long"),
            "{error}"
        );
        // No file access: there is no such function to call.
        let FlowOutcome::Error(error) = run_inbound(
            &flow(r#"let x = open("/etc/passwd");"#),
            Operation::Create,
            &payload(),
            None,
        ) else {
            panic!("expected an error");
        };
        assert!(error.contains("open"), "{error}");
        assert!(
            crate::script::check("fields.x = ")
                .unwrap_err()
                .contains("line 1")
        );
    }
}
