//! Progress bars on long commands: drawn on a terminal (a pseudo-terminal
//! made with `script`), absent when standard error is a pipe.

use std::process::Command;

use crate::support::{BIN, Instance};

/// Runs `procsync ARGS` on `instance` under a pseudo-terminal; returns
/// what the terminal showed.
fn on_terminal(instance: &Instance, args: &[&str]) -> String {
    let command = std::iter::once(BIN)
        .chain(args.iter().copied())
        .map(|word| format!("'{word}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("PROCSYNC_DATA", instance.path())
        .env("COLUMNS", "120")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn uploads_saves_and_imports_show_a_bar_on_a_terminal_and_nothing_in_a_pipe() {
    let instance = Instance::init("progress");
    let _server = instance.serve();
    let sys_id = instance
        .ok(&["record", "create", "incident", "short_description=big"])
        .trim()
        .to_string();
    let file = instance.path().join("big.bin");
    let bytes: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&file, &bytes).unwrap();
    let file = file.to_str().unwrap();

    let add = |name| {
        [
            "attachment",
            "add",
            "incident",
            &sys_id,
            file,
            "--name",
            name,
        ]
    };
    let shown = on_terminal(&instance, &add("one.bin"));
    assert!(shown.contains("hashing ["), "{shown}");
    assert!(shown.contains("uploading ["), "{shown}");
    assert!(shown.contains("8.00 MiB"), "the size, readable: {shown}");
    assert!(shown.contains("attached one.bin"), "{shown}");

    // Through a pipe: the command's own lines only.
    let out = instance.cli(&add("two.bin"));
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("attached two.bin"), "{stderr}");
    assert!(
        !stderr.contains('\r') && !stderr.contains('\u{1b}'),
        "{stderr:?}"
    );

    let saved = instance.path().join("back.bin");
    let shown = on_terminal(
        &instance,
        &[
            "attachment",
            "get",
            "incident",
            &sys_id,
            "one.bin",
            "-o",
            saved.to_str().unwrap(),
        ],
    );
    assert!(shown.contains("saving ["), "{shown}");
    assert_eq!(std::fs::read(&saved).unwrap(), bytes);

    let lines: String = (0..2000)
        .map(|n| format!("{{\"short_description\": \"imported {n}\"}}\n"))
        .collect();
    let import = instance.file("import.jsonl", &lines);
    let import = import.to_str().unwrap();
    let shown = on_terminal(
        &instance,
        &["record", "import", "incident", import, "--batch", "100"],
    );
    assert!(shown.contains("importing ["), "{shown}");
    assert!(
        shown.contains("imported 2000 record(s) into incident"),
        "{shown}"
    );
    let out = instance.cli(&["record", "import", "incident", import]);
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
