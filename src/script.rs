//! The flow script engine: Rhai, sandboxed and bounded. Used by `config`
//! to check a definition's script and by `flow` to run it on an item.
//! Pure: no storage, no I/O (Rhai has no file or network functions).

use std::collections::BTreeMap;

use crate::queue::Payload;
use crate::record::Operation;

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

/// Compiles a flow script, naming the line of a syntax error.
pub fn check(script: &str) -> Result<(), String> {
    engine()
        .compile(script)
        .map(|_| ())
        .map_err(|e| format!("script does not compile: {e}"))
}

/// What one run of a script decided.
#[derive(Clone, Debug, PartialEq)]
pub enum ScriptOutcome {
    /// Write these fields (the mapping's, as the script left them).
    Fields(BTreeMap<String, String>),
    /// The script called `skip(reason)`.
    Skip(String),
    /// The script failed; the text says how ("script: ...").
    Error(String),
}

/// Runs `script` on one item. It sees `payload` (fields, display values,
/// changed flags, journal entries, capture metadata), `operation`,
/// `correlation` (our record's sys_id, or "") and `fields` (what the
/// mapping will write, which it may change); it may call `skip("why")` or
/// `throw`.
pub fn run(
    script: &str,
    payload: &Payload,
    operation: Operation,
    correlation: Option<&str>,
    fields: &BTreeMap<String, String>,
) -> ScriptOutcome {
    let mut engine = engine();
    let started = std::time::Instant::now();
    engine.on_progress(move |_| {
        (started.elapsed() > SCRIPT_MAX_TIME)
            .then(|| rhai::Dynamic::from("the script ran too long"))
    });
    let ast = match engine.compile(script) {
        Ok(ast) => ast,
        Err(e) => return ScriptOutcome::Error(format!("script does not compile: {e}")),
    };
    let mut scope = rhai::Scope::new();
    scope.push("payload", payload_map(payload));
    scope.push("operation", operation.as_str().to_string());
    scope.push("correlation", correlation.unwrap_or("").to_string());
    let fields: rhai::Map = fields
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
            return ScriptOutcome::Skip(reason.to_string());
        }
        let text = text.replace(SKIP_MARKER, "");
        return ScriptOutcome::Error(format!("script: {text}"));
    }
    let Some(fields) = scope.get_value::<rhai::Map>("fields") else {
        return ScriptOutcome::Error("script: `fields` must stay a map".to_string());
    };
    ScriptOutcome::Fields(
        fields
            .into_iter()
            .map(|(k, v)| {
                let text = if v.is_unit() {
                    String::new()
                } else {
                    v.to_string()
                };
                (k.to_string(), text)
            })
            .collect(),
    )
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
