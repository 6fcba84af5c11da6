//! A damaged store is not a healthy process: a panic on the store's writer
//! thread, or a store file that fails its page checks, ends `serve`
//! non-zero saying the store is damaged and to restore it from a backup.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{BIN, Instance, wait_until};

/// Waits for `child` to exit, at most `deadline`; its exit status.
fn exit_of(child: &mut std::process::Child, deadline: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            panic!("serve did not exit within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn serve(instance: &Instance, env: &[(&str, &str)]) -> (std::process::Child, std::path::PathBuf) {
    let log = instance.path().join("damaged-serve.txt");
    let child = Command::new(BIN)
        .args([
            "serve",
            "--admin-listen",
            "127.0.0.1:0",
            "--peer-listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(instance.path())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

fn assert_damaged_message(log: &str) {
    assert!(
        log.contains("the store is damaged")
            && log.contains("restore the data directory from a backup"),
        "{log}"
    );
    let last = log
        .lines()
        .rev()
        .find(|l| l.starts_with("error"))
        .unwrap_or_default();
    assert!(
        !last.contains("retry it"),
        "the last word is not to retry: {last}"
    );
}

#[test]
fn a_panic_on_the_store_writer_ends_serve_saying_the_store_is_damaged() {
    let instance = Instance::init("edge");
    let (mut child, log) = serve(&instance, &[("PROCSYNC_FAULT_PANIC_ON_TABLE", "boom")]);
    wait_until("the server to listen", Duration::from_secs(30), || {
        instance.path().join("admin.addr").exists()
    });
    instance.ok(&["record", "create", "incident", "short_description=fine"]);
    let refused = instance.cli(&["record", "create", "boom", "short_description=x"]);
    assert!(!refused.status.success());
    let status = exit_of(&mut child, Duration::from_secs(30));
    assert!(!status.success(), "serve must fail, not idle: {status}");
    assert_damaged_message(&std::fs::read_to_string(log).unwrap());
    // What was acknowledged before is there, served again once restarted.
    let _server = instance.serve();
    let listed = instance.ok(&["record", "list", "incident", "--json"]);
    assert!(
        listed.contains("\"short_description\": \"fine\""),
        "{listed}"
    );
}

#[test]
fn a_store_file_with_a_damaged_page_is_refused_with_the_reason() {
    let instance = Instance::init("edge");
    {
        let _server = instance.serve();
        let big = "y".repeat(20_000);
        for i in 0..100 {
            instance.ok(&[
                "record",
                "create",
                "incident",
                &format!("n={i}"),
                &format!("big={big}"),
            ]);
        }
    }
    let path = instance.path().join("procsync.redb");
    let size = std::fs::metadata(&path).unwrap().len();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut noise = blake3::Hasher::new().update(b"damage").finalize_xof();
        // 64 KiB of noise in the middle, and at a quarter and three quarters
        // so that live pages are surely hit.
        for at in [size / 4, size / 2, size / 4 * 3] {
            let mut bytes = vec![0u8; 64 * 1024];
            noise.fill(&mut bytes);
            file.seek(SeekFrom::Start(at)).unwrap();
            file.write_all(&bytes).unwrap();
        }
        file.sync_all().unwrap();
    }
    let (mut child, log) = serve(&instance, &[]);
    // Refused at start, or at the first write that meets the damage.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        if instance.path().join("admin.addr").exists() {
            i += 1;
            let _ = instance.cli(&["record", "create", "incident", &format!("n=after {i}")]);
            let _ = instance.cli(&["record", "list", "incident", "--limit", "1000"]);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = exit_of(&mut child, Duration::from_secs(30));
    assert!(!status.success(), "{status}");
    assert_damaged_message(&std::fs::read_to_string(log).unwrap());
}
