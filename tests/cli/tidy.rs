//! Tidy checks that keep the architecture's invariants true as the code
//! grows (see ARCHITECTURE.md).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources(under: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join(under), &mut files);
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path.strip_prefix(root).unwrap().display().to_string(), text)
        })
        .collect()
}

/// Lines of code that use a crate path, ignoring comments.
fn uses(text: &str, needles: &[&str]) -> Vec<String> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .filter(|line| needles.iter().any(|needle| line.contains(needle)))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_file_says_what_it_owns() {
    for (path, text) in sources("src").into_iter().chain(sources("tests")) {
        assert!(
            text.starts_with("//!"),
            "{path} must open with a //! comment saying what it owns"
        );
    }
}

#[test]
fn only_the_store_touches_redb() {
    for (path, text) in sources("src") {
        if path.starts_with("src/store") {
            continue;
        }
        let found = uses(&text, &["redb::", "use redb"]);
        assert!(found.is_empty(), "{path} uses redb: {found:?}");
    }
}

#[test]
fn only_the_transport_sees_wire_types() {
    for (path, text) in sources("src") {
        // The transport owns the generated types and the clients; the
        // services that answer calls are in `server` (admin, peer, http,
        // status).
        if path.starts_with("src/transport") || path.starts_with("src/server/") {
            continue;
        }
        // Store format 2 is protobuf messages too (`stored`), converted
        // only where the payload and the stored values are made.
        if [
            "src/stored.rs",
            "src/queue/payload.rs",
            "src/store/compact.rs",
            "src/store/compact/keyed.rs",
        ]
        .contains(&path.as_str())
        {
            continue;
        }
        let found = uses(&text, &["tonic::", "use tonic", "prost::", "pb::"]);
        assert!(
            found.is_empty(),
            "{path} uses gRPC or protobuf types: {found:?}"
        );
    }
}

/// Longest a source file may be: past it a file usually holds more than one
/// job.
const MAX_FILE_LINES: usize = 600;

/// Files allowed past `MAX_FILE_LINES`, each with its reason and the most
/// lines it may have now, so an exception cannot grow unnoticed. To add or
/// raise one on purpose, change this list and say why; better, split the
/// file.
const LONG_FILES: &[(&str, usize, &str)] = &[
    (
        "src/transport/client.rs",
        880,
        "the admin client's calls, one small function each",
    ),
    (
        "src/config/sync.rs",
        850,
        "the definitions file: types, parsing and offline validation with file:line",
    ),
    (
        "src/server/admin.rs",
        850,
        "the admin service's wire conversions, one per call",
    ),
    (
        "src/store/records.rs",
        720,
        "record-write planning (validation, capture, attachments, sync state) and its writer job",
    ),
    (
        "src/attachment.rs",
        650,
        "attachment nouns, grants and the chunk verifier, with their unit tests",
    ),
];

#[test]
fn source_files_stay_readable() {
    let mut problems = Vec::new();
    for (path, text) in sources("src") {
        let lines = text.lines().count();
        let allowed = LONG_FILES
            .iter()
            .find(|(long, _, _)| *long == path)
            .map_or(MAX_FILE_LINES, |(_, most, _)| *most);
        if lines > allowed {
            problems.push(format!(
                "{path} has {lines} lines, over its limit of {allowed}: split it by job, or (on purpose) list it in LONG_FILES in tests/cli/tidy.rs with the reason"
            ));
        }
    }
    for (long, _, _) in LONG_FILES {
        if !Path::new(env!("CARGO_MANIFEST_DIR")).join(long).exists() {
            problems.push(format!(
                "{long} is listed in LONG_FILES but does not exist: remove it from the list"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every import from one top-level module of the crate to another: a
/// module may use only the modules listed for it (its children count as
/// the module). The list has no circle, so the layers in ARCHITECTURE.md
/// hold: to add an edge on purpose, add it here, and if it points up a
/// layer (the test then reports a circle) move the shared noun down
/// instead.
const MODULE_EDGES: &[(&str, &[&str])] = &[
    (
        "api",
        &[
            "attachment",
            "condition",
            "config",
            "domain",
            "failure",
            "ids",
            "property",
            "queue",
            "reconcile",
            "record",
            "runtime",
            "stats",
            "store",
            "testing",
            "transport",
            "user",
        ],
    ),
    (
        "alert",
        &[
            "domain", "ids", "queue", "runtime", "stats", "store", "subflow", "testing", "worker",
        ],
    ),
    ("attachment", &["ids"]),
    (
        "bench",
        &[
            "child",
            "identity",
            "ids",
            "instance",
            "pair",
            "progress",
            "queue",
            "record",
            "store",
            "transport",
        ],
    ),
    (
        "capture",
        &[
            "attachment",
            "condition",
            "config",
            "domain",
            "ids",
            "queue",
            "record",
        ],
    ),
    ("child", &["instance", "link", "transport"]),
    (
        "cli",
        &[
            "attachment",
            "bench",
            "config",
            "demo",
            "ids",
            "instance",
            "logging",
            "progress",
            "record",
            "server",
            "stats",
            "transport",
        ],
    ),
    (
        "config",
        &[
            "attachment",
            "condition",
            "domain",
            "ids",
            "queue",
            "record",
            "script",
            "subflow",
            "user",
        ],
    ),
    ("demo", &["ids", "pair", "record", "transport"]),
    (
        "flow",
        &[
            "attachment",
            "config",
            "domain",
            "ids",
            "queue",
            "record",
            "script",
        ],
    ),
    ("identity", &["config", "ids"]),
    (
        "inbound",
        &[
            "attachment",
            "config",
            "domain",
            "failure",
            "ids",
            "property",
            "queue",
            "reconcile",
            "record",
            "runtime",
            "store",
            "subflow",
            "testing",
            "transport",
            "user",
            "worker",
        ],
    ),
    ("instance", &["identity", "ids", "store"]),
    (
        "outbound",
        &[
            "attachment",
            "config",
            "ids",
            "property",
            "queue",
            "reconcile",
            "runtime",
            "store",
            "subflow",
            "testing",
            "transport",
            "worker",
        ],
    ),
    ("link", &["instance"]),
    ("pair", &["child", "instance", "link", "transport"]),
    ("progress", &["transport"]),
    (
        "queue",
        &["attachment", "domain", "ids", "record", "stored"],
    ),
    ("reconcile", &["config", "ids", "queue"]),
    ("record", &["attachment", "condition", "domain", "ids"]),
    (
        "runtime",
        &["attachment", "config", "ids", "store", "transport"],
    ),
    ("scheduler", &["ids", "logging", "store", "worker"]),
    ("script", &["queue", "record"]),
    (
        "server",
        &[
            "alert",
            "api",
            "attachment",
            "config",
            "failure",
            "identity",
            "ids",
            "inbound",
            "instance",
            "outbound",
            "queue",
            "record",
            "runtime",
            "scheduler",
            "stats",
            "store",
            "transport",
            "user",
            "worker",
        ],
    ),
    ("stats", &["ids", "queue"]),
    ("subflow", &["ids"]),
    (
        "store",
        &[
            "attachment",
            "capture",
            "condition",
            "config",
            "domain",
            "failure",
            "flow",
            "ids",
            "property",
            "queue",
            "reconcile",
            "record",
            "stats",
            "stored",
            "user",
        ],
    ),
    (
        "transport",
        &[
            "attachment",
            "config",
            "identity",
            "ids",
            "queue",
            "reconcile",
            "record",
            "stats",
            "store",
        ],
    ),
    (
        "testing",
        &["config", "domain", "ids", "record", "store", "user"],
    ),
    ("user", &["domain", "ids"]),
    ("worker", &[]),
];

/// The top-level module a source file belongs to (`src/store/inbound.rs`
/// is `store`), or `None` for the crate root and the binary.
fn module_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("src/")?;
    let first = rest.split('/').next()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// The top-level modules a file's code names through `crate::`, including
/// grouped imports (`use crate::{a::X, b};`), ignoring line comments.
fn imported_modules(text: &str) -> std::collections::BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = std::collections::BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let preceded_by_path = code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        if preceded_by_path {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' | ',' if depth == 1 => {
                        found.insert(ident(&group[start..i]));
                        start = i + 1;
                        if c == '}' {
                            break;
                        }
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|name| !name.is_empty() && name != "self" && name != "super");
    found
}

#[test]
fn modules_import_only_down_their_layers() {
    use std::collections::{BTreeMap, BTreeSet};
    let mut actual: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (path, text) in sources("src") {
        let Some(module) = module_of(&path) else {
            continue;
        };
        for used in imported_modules(&text) {
            if used == module {
                continue;
            }
            let allowed = MODULE_EDGES
                .iter()
                .any(|(from, to)| *from == module && to.contains(&used.as_str()));
            if !allowed {
                problems.push(format!(
                    "{path} uses crate::{used}, a new import {module} -> {used}: if it goes down a layer (see ARCHITECTURE.md), add it to MODULE_EDGES in tests/cli/tidy.rs; if it goes up, move what both need down instead"
                ));
            }
            actual.entry(module.clone()).or_default().insert(used);
        }
    }
    for (from, to) in MODULE_EDGES {
        for used in *to {
            if !actual.get(*from).is_some_and(|uses| uses.contains(*used)) {
                problems.push(format!(
                    "MODULE_EDGES lists {from} -> {used}, but no file of {from} uses it any more: remove it from the list"
                ));
            }
        }
    }
    // The allowed edges themselves must have no circle.
    let graph: BTreeMap<&str, &[&str]> = MODULE_EDGES.iter().copied().collect();
    fn visit<'a>(
        node: &'a str,
        graph: &BTreeMap<&'a str, &'a [&'a str]>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        circles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node);
            circles.push(circle.join(" -> "));
            return;
        }
        if !done.insert(node) {
            return;
        }
        path.push(node);
        for next in graph.get(node).copied().unwrap_or_default() {
            visit(next, graph, path, done, circles);
        }
        path.pop();
    }
    let mut circles = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done, &mut circles);
    }
    for circle in circles {
        problems.push(format!(
            "the modules import each other in a circle: {circle}; move the noun they share into a lower module"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
