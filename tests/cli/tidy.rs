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
