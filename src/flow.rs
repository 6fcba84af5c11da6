//! Inbound flows: turning a received payload into a write on a local
//! record. The Basic inbound template correlates (`plan`: the whole apply
//! of one item as a plan over facts the store read), then creates when
//! there is no correlation, updates when there is, and deletes; the field
//! mapping renames, sets constants or copies display values; the sandboxed
//! script step comes last. Pure: no storage, no I/O.

pub mod plan;

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

/// Most operations a flow script may run per item.
const SCRIPT_MAX_OPERATIONS: u64 = 200_000;
/// Longest a flow script may run per item.
const SCRIPT_MAX_TIME: std::time::Duration = std::time::Duration::from_millis(100);
/// What `skip()` throws, to tell a skip from an error.
const SKIP_MARKER: &str = "procsync:skip:";

/// A sandboxed script engine: Rhai has no file or network access, and
/// these limits bound memory, depth, operations and time.
fn engine() -> rhai::Engine {
    let mut engine = rhai::Engine::new();
    engine
        .set_max_operations(SCRIPT_MAX_OPERATIONS)
        .set_max_expr_depths(64, 32)
        .set_max_call_levels(32)
        .set_max_string_size(1024 * 1024)
        .set_max_array_size(10_000)
        .set_max_map_size(10_000);
    engine.on_print(|text| tracing::info!(target: "flow", "script: {text}"));
    engine.on_debug(|text, _, _| tracing::debug!(target: "flow", "script: {text}"));
    engine.register_fn(
        "skip",
        |reason: &str| -> Result<(), Box<rhai::EvalAltResult>> {
            Err(format!("{SKIP_MARKER}{reason}").into())
        },
    );
    engine
}

/// Compiles a flow script, naming the line of a syntax error.
pub fn check_script(script: &str) -> Result<(), String> {
    engine()
        .compile(script)
        .map(|_| ())
        .map_err(|e| format!("script does not compile: {e}"))
}

/// Runs an inbound flow: the Basic template's correlation and mapping, then
/// the flow's script, if any. The script sees `payload` (fields, display
/// values, changed flags, journal entries, capture metadata), `operation`,
/// `correlation` (our record's sys_id, or "") and `fields` (what the mapping
/// will write, which it may change); it may call `skip("why")` or `throw`.
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
    if flow.script.trim().is_empty() {
        return FlowOutcome::Write(write);
    }
    let mut engine = engine();
    let started = std::time::Instant::now();
    engine.on_progress(move |_| {
        (started.elapsed() > SCRIPT_MAX_TIME)
            .then(|| rhai::Dynamic::from("the script ran too long"))
    });
    let ast = match engine.compile(&flow.script) {
        Ok(ast) => ast,
        Err(e) => {
            return FlowOutcome::Error(format!(
                "flow `{}`: script does not compile: {e}",
                flow.name
            ));
        }
    };
    let mut scope = rhai::Scope::new();
    scope.push("payload", payload_map(payload));
    scope.push("operation", write.operation.as_str().to_string());
    scope.push("correlation", correlated.unwrap_or("").to_string());
    let fields: rhai::Map = write
        .fields
        .iter()
        .map(|(k, v)| (k.as_str().into(), rhai::Dynamic::from(v.clone())))
        .collect();
    scope.push("fields", fields);
    if let Err(error) = engine.run_ast_with_scope(&mut scope, &ast) {
        let text = match &*error {
            rhai::EvalAltResult::ErrorRuntime(value, _) => value.to_string(),
            other => other.to_string(),
        };
        if let Some(reason) = text.strip_prefix(SKIP_MARKER) {
            return FlowOutcome::Skip(reason.to_string());
        }
        let text = text.replace(SKIP_MARKER, "");
        return FlowOutcome::Error(format!("flow `{}`: script: {text}", flow.name));
    }
    let Some(fields) = scope.get_value::<rhai::Map>("fields") else {
        return FlowOutcome::Error(format!(
            "flow `{}`: script: `fields` must stay a map",
            flow.name
        ));
    };
    let mut write = write;
    write.fields = fields
        .into_iter()
        .map(|(k, v)| {
            let text = if v.is_unit() {
                String::new()
            } else {
                v.to_string()
            };
            (k.to_string(), text)
        })
        .collect();
    FlowOutcome::Write(write)
}

fn payload_map(payload: &Payload) -> rhai::Map {
    let mut values = rhai::Map::new();
    let mut display = rhai::Map::new();
    let mut changed = rhai::Map::new();
    for field in &payload.changed_fields {
        values.insert(field.key.as_str().into(), field.value.clone().into());
        display.insert(
            field.key.as_str().into(),
            field.display_value.clone().into(),
        );
        changed.insert(field.key.as_str().into(), field.changed.into());
    }
    let journal: rhai::Array = payload
        .journal_entries
        .iter()
        .map(|entry| {
            let mut map = rhai::Map::new();
            map.insert("field".into(), entry.field.clone().into());
            map.insert("author".into(), entry.author.clone().into());
            map.insert("time".into(), entry.time.clone().into());
            map.insert("text".into(), entry.text.clone().into());
            map.into()
        })
        .collect();
    let meta = &payload.capture_metadata;
    let mut metadata = rhai::Map::new();
    metadata.insert("changed_by".into(), meta.changed_by.clone().into());
    metadata.insert("timestamp".into(), meta.timestamp.clone().into());
    metadata.insert("table".into(), meta.table.clone().into());
    metadata.insert("sys_id".into(), meta.sys_id.clone().into());
    let mut map = rhai::Map::new();
    map.insert("fields".into(), values.into());
    map.insert("display".into(), display.into());
    map.insert("changed".into(), changed.into());
    map.insert("journal".into(), journal.into());
    map.insert("metadata".into(), metadata.into());
    map
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
            template: "basic".into(),
            table: "incident".into(),
            map: Vec::new(),
            on_error: Vec::new(),
            journal_map: Vec::new(),
            script: script.into(),
            max_attachment_mb: 0,
            allowed_extensions: Vec::new(),
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
        assert!(check_script("fields.x = ").unwrap_err().contains("line 1"));
    }
}
