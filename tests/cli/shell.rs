//! Shell completions and the manual page, generated from the argument
//! definitions: what an operator's shell and `man` make of them.

use std::process::Command;

use crate::support::{BIN, succeeded};

fn generated(args: &[&str]) -> String {
    succeeded(args, &Command::new(BIN).args(args).output().unwrap())
}

/// What bash offers after `words`, the last one being completed.
fn bash_completes(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let current = words.len() - 1;
    let previous = if current > 0 { words[current - 1] } else { "" };
    let program = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={current}; _procsync procsync '{}' '{previous}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words[current],
    );
    let out = Command::new("bash")
        .args(["-c", &program])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_commands_subcommands_and_options() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("procsync.bash");
    std::fs::write(&script, generated(&["completions", "bash"])).unwrap();
    assert_eq!(
        bash_completes(&script, &["procsync", "rem"]),
        vec!["remote"]
    );
    assert_eq!(
        bash_completes(&script, &["procsync", "remote", "val"]),
        vec!["validate"]
    );
    let options = bash_completes(&script, &["procsync", "queue", "outbound", "list", "--st"]);
    assert_eq!(options, vec!["--status"]);
}

#[test]
fn zsh_and_fish_completions_name_the_commands() {
    let zsh = generated(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef procsync"), "{zsh:.200}");
    assert!(zsh.contains("validate"));
    let fish = generated(&["completions", "fish"]);
    assert!(fish.contains("complete -c procsync"), "{fish:.200}");
    assert!(fish.contains("-a \"remote\""), "{fish:.400}");
}

/// A page as `man` shows it (plain text), when the machine has groff.
fn rendered(page: &std::path::Path) -> Option<String> {
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-P", "-cbou"])
        .arg(page)
        .output()
        .ok()?;
    assert!(out.status.success(), "groff failed on {}", page.display());
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_manual_pages_render_with_every_command() {
    let page = generated(&["man"]);
    assert!(page.contains(".TH procsync 1"), "{page:.300}");
    let dir = tempfile::tempdir().unwrap();
    generated(&["man", "--dir", dir.path().to_str().unwrap()]);
    let main = dir.path().join("procsync.1");
    assert_eq!(std::fs::read_to_string(&main).unwrap(), page);
    let validate = dir.path().join("procsync-remote-validate.1");
    assert!(validate.exists(), "a page per command");
    if let Some(text) = rendered(&main) {
        assert!(text.contains("NAME"), "{text:.300}");
        assert!(text.contains("Remote Process Sync"), "{text:.600}");
        assert!(text.contains("procsync-completions(1)"), "{text}");
    }
    if let Some(text) = rendered(&validate) {
        assert!(text.contains("procsync-remote-validate"), "{text:.600}");
    }
}

#[test]
fn an_unknown_shell_is_refused_with_the_choices() {
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let error = String::from_utf8(out.stderr).unwrap();
    assert!(error.contains("invalid value 'tcsh'"), "{error}");
    assert!(error.contains("bash"), "{error}");
}
