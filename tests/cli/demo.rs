//! `procsync demo`: the quick start must work on a fresh machine.

use crate::support::BIN;

#[test]
fn the_demo_runs_the_sample_process_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .arg("demo")
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("edge validated remote system `hub`: outbound Active, inbound Active"),
        "{stdout}"
    );
    assert!(
        stdout.contains("hub:  \"Install Visio\" for Ada Lovelace, state 1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("edge: \"Install Visio\" for Ada Lovelace, state 3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("hub outbound #1 seq 1 to edge: update sc_req_item (Processed)"),
        "{stdout}"
    );
    assert!(stdout.contains("both instances are stopped"), "{stdout}");
    // The temporary instances are gone, and so are their processes.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    let running = String::from_utf8_lossy(&ps.stdout);
    assert!(
        !running
            .lines()
            .any(|l| l.contains("serve") && l.contains(&tmp.path().display().to_string())),
        "{running}"
    );
}
