//! A full disk heals: writes are refused with a clear error while the disk
//! is full, nothing acknowledged is lost, and once space is freed the store
//! reopens by itself, on the writing and on the receiving side. Each
//! instance lives on its own small tmpfs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{Instance, Peer, http, link, wait_for};

/// A tmpfs of `mib` MiB, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` when this process may not mount (not root, no sudo).
    fn mount(mib: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let size = format!("size={mib}m");
        let mounted = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
                .arg(dir.path())
                .output()
                .is_ok_and(|out| out.status.success())
        };
        (mounted("mount", &[]) || mounted("sudo", &["-n", "mount"])).then_some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the disk is full, to the last page (in
    /// steps of 1 MiB, then 4 KiB, then single bytes); returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        for size in [1 << 20, 4096, 1] {
            let chunk = vec![0u8; size];
            while file.write_all(&chunk).is_ok() {}
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let path = self.path().to_path_buf();
        for program in [vec!["umount", "-l"], vec!["sudo", "-n", "umount", "-l"]] {
            let ok = Command::new(program[0])
                .args(&program[1..])
                .arg(&path)
                .output()
                .is_ok_and(|out| out.status.success());
            if ok {
                break;
            }
        }
    }
}

fn healthz(instance: &Instance) -> u16 {
    http(&instance.admin_address(), "GET", "/healthz", &[], None).status
}

/// Records matching `query`; `usize::MAX` while the store refuses reads
/// too (redb refuses a handle after a disk error until it is reopened).
fn count(instance: &Instance, query: &str) -> usize {
    let out = instance.cli(&[
        "record",
        "list",
        "sc_req_item",
        "--query",
        query,
        "--json",
        "--limit",
        "1000",
    ]);
    if !out.status.success() {
        let error = String::from_utf8_lossy(&out.stderr);
        assert!(error.contains("disk"), "{error}");
        return usize::MAX;
    }
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .len()
}
#[test]
fn a_full_disk_refuses_writes_clearly_and_heals_by_itself_on_either_side() {
    let (Some(edge_disk), Some(hub_disk)) = (SmallDisk::mount(48), SmallDisk::mount(48)) else {
        eprintln!("skipped: mounting a tmpfs needs root or passwordless sudo");
        return;
    };
    let edge = Instance::init_in("edge", tempfile::tempdir_in(edge_disk.path()).unwrap());
    let hub = Instance::init_in("hub", tempfile::tempdir_in(hub_disk.path()).unwrap());
    let _edge_server = edge.serve();
    let _hub_server = hub.serve();
    link(
        Peer {
            name: "edge",
            instance: &edge,
        },
        Peer {
            name: "hub",
            instance: &hub,
        },
    );
    edge.fast_retries();
    let big = "x".repeat(100_000);
    let create = |instance: &Instance, text: &str| {
        instance.cli(&[
            "record",
            "create",
            "sc_req_item",
            &format!("short_description={text}"),
            &format!("work_notes_draft={big}"),
        ])
    };
    for i in 0..3 {
        assert!(create(&edge, &format!("before {i}")).status.success());
    }

    // The writing side's disk fills.
    let filler = edge_disk.fill();
    let refused = (0..50)
        .map(|i| create(&edge, &format!("while full {i}")))
        .find(|out| !out.status.success())
        .expect("a write on a full disk fails");
    let error = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(
        error.contains("the disk holding the store is full"),
        "{error}"
    );
    std::fs::remove_file(filler).unwrap();
    wait_for(
        &[&edge],
        "the edge to write again",
        Duration::from_secs(30),
        || create(&edge, "after the edge's disk").status.success(),
    );
    assert_eq!(healthz(&edge), 200);
    assert!(
        edge.logs()
            .contains("the store was reopened and writes resume")
    );
    // Every write that was acknowledged is there, once.
    // The edge writes again, so it reads again: every write it
    // acknowledged is there, once.
    let acknowledged_on_edge = count(&edge, "");
    assert!((4..usize::MAX).contains(&acknowledged_on_edge));
    assert_eq!(count(&edge, "short_descriptionSTARTSWITHbefore"), 3);
    wait_for(
        &[&edge, &hub],
        "the edge's records on the hub",
        Duration::from_secs(60),
        || count(&hub, "") == acknowledged_on_edge,
    );

    // The receiving side's disk fills. The edge writes until it sees so
    // (a few writes may still fit in pages the hub's store file holds
    // free).
    let filler = hub_disk.fill();
    let mut sent = 0;
    // The peer says its disk is full, or (after its store met the full
    // disk) that it cannot write to it until it heals.
    let sees_full = || {
        let shown = edge.json(&["remote", "show", "hub", "--json"]);
        let error = shown["last_error"].as_str().unwrap_or("");
        error.contains("the peer's disk is full")
            || error.contains("the peer cannot write to its disk")
    };
    while sent < 200 && !sees_full() {
        assert!(
            create(&edge, &format!("to a full hub {sent}"))
                .status
                .success(),
            "the edge's disk is fine"
        );
        sent += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for(
        &[&edge, &hub],
        "the edge to see the hub's full disk",
        Duration::from_secs(60),
        sees_full,
    );
    std::fs::remove_file(filler).unwrap();
    wait_for(
        &[&edge, &hub],
        "every record on the hub, once",
        Duration::from_secs(60),
        || {
            count(&hub, "short_descriptionSTARTSWITHto a full hub") == sent
                && count(&hub, "") == acknowledged_on_edge + sent
        },
    );
    assert_eq!(healthz(&hub), 200);
    let inbound = crate::support::queue_items(&hub, "inbound");
    assert_eq!(
        inbound.len(),
        acknowledged_on_edge + sent,
        "nothing queued twice"
    );
    assert!(inbound.iter().all(|i| i["status"] == "Processed"));
}
