//! Attachments between real instances: files cross with their hash, once
//! per content, resume after a SIGKILL, follow removals, and hostile
//! metadata is refused on the inbound item.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const INCLUDE: &str = "include_attachments = true";

/// A file of `size` pseudo-random bytes (blake3's output stream of `seed`);
/// returns its path and blake3 hash.
fn make_file(dir: &Path, name: &str, seed: &str, size: u64) -> (PathBuf, String) {
    let path = dir.join(name);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut stream = blake3::Hasher::new().update(seed.as_bytes()).finalize_xof();
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buffer.len() as u64) as usize;
        stream.fill(&mut buffer[..n]);
        hasher.update(&buffer[..n]);
        file.write_all(&buffer[..n]).unwrap();
        left -= n as u64;
    }
    file.flush().unwrap();
    (path, hasher.finalize().to_hex().to_string())
}

fn file_hash(path: &Path) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(std::fs::File::open(path).unwrap())
        .unwrap();
    hasher.finalize().to_hex().to_string()
}

fn pair(extras: Extras<'_>) -> (Instance, Instance, Server, Server) {
    let edge = Instance::init("edge");
    let hub = Instance::init("hub");
    let edge_server = edge.serve();
    let hub_server = hub.serve();
    link_all_with(
        &[
            Peer {
                name: "edge",
                instance: &edge,
            },
            Peer {
                name: "hub",
                instance: &hub,
            },
        ],
        &[(0, 1)],
        extras,
    );
    (edge, hub, edge_server, hub_server)
}

fn create(instance: &Instance, description: &str) -> String {
    instance
        .ok(&[
            "record",
            "create",
            "sc_req_item",
            &format!("short_description={description}"),
        ])
        .trim()
        .to_string()
}

/// The hub's record for the edge's record described so, once it exists.
fn arrived(hub: &Instance, description: &str) -> Option<String> {
    let records = hub.json(&[
        "record",
        "list",
        "sc_req_item",
        "--query",
        &format!("short_description={description}"),
        "--json",
    ]);
    records
        .as_array()?
        .first()
        .map(|r| r["fields"]["sys_id"].as_str().unwrap().to_string())
}

fn attachments(instance: &Instance, sys_id: &str) -> Vec<Value> {
    instance
        .json(&["attachment", "list", "sc_req_item", sys_id, "--json"])
        .as_array()
        .unwrap()
        .clone()
}

fn remote(instance: &Instance, name: &str) -> Value {
    instance
        .json(&["remote", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap()
        .clone()
}

/// Waits until the hub holds the edge's record `description` with at least
/// one attachment; returns the hub's sys_id for it.
fn wait_for_attachment(
    edge: &Instance,
    hub: &Instance,
    description: &str,
    deadline: Duration,
) -> String {
    let mut found = String::new();
    wait_for(
        &[edge, hub],
        &format!("an attachment of `{description}` on the hub"),
        deadline,
        || match arrived(hub, description) {
            Some(id) => {
                found = id;
                !attachments(hub, &found).is_empty()
            }
            None => false,
        },
    );
    found
}

/// Saves an attachment through the CLI and returns the saved file's hash.
fn saved_hash(instance: &Instance, sys_id: &str, which: &str) -> String {
    let saved = instance.path().join(format!("saved-{which}"));
    instance.ok(&[
        "attachment",
        "get",
        "sc_req_item",
        sys_id,
        which,
        "-o",
        saved.to_str().unwrap(),
        "--force",
    ]);
    let hash = file_hash(&saved);
    std::fs::remove_file(saved).unwrap();
    hash
}

#[test]
fn attachments_cross_with_their_hash_once_per_content_and_removals_follow() {
    let (edge, hub, _e, _h) = pair(Extras {
        capture: INCLUDE,
        inbound: "",
    });
    let size = 3 * 1_048_512 + 1234;
    let (file, hash) = make_file(edge.path(), "manual.pdf", "manual", size);
    let file = file.to_str().unwrap();

    let first = create(&edge, "first");
    edge.ok(&["attachment", "add", "sc_req_item", &first, file]);
    let hub_first = wait_for_attachment(&edge, &hub, "first", Duration::from_secs(60));
    let on_hub = &attachments(&hub, &hub_first)[0];
    assert_eq!(on_hub["file_name"], "manual.pdf");
    assert_eq!(on_hub["content_type"], "application/pdf");
    assert_eq!(on_hub["size"], size);
    assert_eq!(on_hub["hash"], hash.as_str());
    assert_eq!(on_hub["origin_remote_system"], "edge");
    assert_eq!(
        saved_hash(&hub, &hub_first, "manual.pdf"),
        hash,
        "the bytes on the hub hash the same"
    );

    // The same content on a second record crosses as metadata only.
    let second = create(&edge, "second");
    edge.ok(&[
        "attachment",
        "add",
        "sc_req_item",
        &second,
        file,
        "--name",
        "copy.pdf",
    ]);
    let hub_second = wait_for_attachment(&edge, &hub, "second", Duration::from_secs(60));
    assert_eq!(attachments(&hub, &hub_second)[0]["file_name"], "copy.pdf");
    assert_eq!(
        remote(&edge, "hub")["attachment_bytes_sent"],
        size,
        "identical content crosses once"
    );
    assert_eq!(remote(&hub, "edge")["attachment_bytes_received"], size);
    // Nothing echoes back: the edge's records keep exactly their one file.
    assert_eq!(attachments(&edge, &first).len(), 1);

    // Removing at the origin removes at the target.
    edge.ok(&["attachment", "rm", "sc_req_item", &first, "manual.pdf"]);
    wait_for(
        &[&edge, &hub],
        "the removal to reach the hub",
        Duration::from_secs(60),
        || attachments(&hub, &hub_first).is_empty(),
    );
    assert_eq!(
        attachments(&hub, &hub_second).len(),
        1,
        "the other record keeps its copy"
    );
    assert_eq!(saved_hash(&hub, &hub_second, "copy.pdf"), hash);
}

#[test]
fn a_large_file_resumes_after_the_receiver_is_killed_mid_transfer() {
    let (edge, hub, _e, mut hub_server) = pair(Extras {
        capture: INCLUDE,
        inbound: "",
    });
    let size: u64 = 256 << 20;
    let (file, hash) = make_file(edge.path(), "image.bin", "image", size);
    let id = create(&edge, "big");
    edge.ok(&[
        "attachment",
        "add",
        "sc_req_item",
        &id,
        file.to_str().unwrap(),
    ]);
    // The local copy is not needed any more: keep the disk small.
    std::fs::remove_file(&file).unwrap();

    wait_for(
        &[&edge, &hub],
        "a quarter of the file to arrive",
        Duration::from_secs(120),
        || {
            remote(&hub, "edge")["attachment_bytes_received"]
                .as_u64()
                .unwrap()
                > size / 4
        },
    );
    hub_server.kill9();
    let _hub_server = hub.serve();
    let hub_id = wait_for_attachment(&edge, &hub, "big", Duration::from_secs(180));
    let sent = remote(&edge, "hub")["attachment_bytes_sent"]
        .as_u64()
        .unwrap();
    assert!(
        sent <= size + size / 10,
        "the transfer resumed instead of starting over: {sent} bytes sent for {size}"
    );
    assert!(
        hub.logs().contains("Resuming an attachment transfer"),
        "{}",
        hub.logs()
    );
    assert_eq!(saved_hash(&hub, &hub_id, "image.bin"), hash);
}
