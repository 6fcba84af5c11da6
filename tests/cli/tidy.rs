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
        if path.starts_with("src/transport") {
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
        "src/cli.rs",
        1210,
        "argument types and every command; splits into one file per command family",
    ),
    (
        "src/api.rs",
        970,
        "every admin call; splits into one file per family with a Caller",
    ),
    (
        "src/transport/client.rs",
        850,
        "the admin client's calls, one small function each",
    ),
    (
        "src/config/sync.rs",
        830,
        "the definitions file: types, parsing and offline validation with file:line",
    ),
    (
        "src/outbound.rs",
        770,
        "the dispatcher; becomes a worker with a closed event enum",
    ),
    (
        "src/transport/admin.rs",
        770,
        "the admin service's wire conversions, one per call",
    ),
    (
        "src/inbound.rs",
        760,
        "peer gate, processor and fetches; the processor becomes a worker",
    ),
    (
        "src/transport/peer.rs",
        720,
        "the peer service and client; splits into a server and a client half",
    ),
    (
        "src/store/records.rs",
        680,
        "record-write planning (validation, capture, attachments) and its writer job",
    ),
    (
        "src/attachment.rs",
        620,
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
