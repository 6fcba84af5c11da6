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
        let n = usize::try_from(left).map_or(buffer.len(), |left| left.min(buffer.len()));
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
        || match sys_id_of(hub, description) {
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
    let (edge, hub, _e, _h) = linked_pair(Extras {
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
    let table = hub.ok(&["attachment", "list", "sc_req_item", &hub_first]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["SYS_ID", "BYTES", "CREATED", "TYPE", "FILE"],
        "{table}"
    );
    assert!(lines.next().unwrap().ends_with("manual.pdf"), "{table}");
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
fn a_large_file_resumes_after_either_side_is_killed_mid_transfer() {
    let (edge, hub, mut edge_server, mut hub_server) = linked_pair(Extras {
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
    let received = || {
        remote(&hub, "edge")["attachment_bytes_received"]
            .as_u64()
            .unwrap()
    };
    let sent = || {
        remote(&edge, "hub")["attachment_bytes_sent"]
            .as_u64()
            .unwrap()
    };

    // The receiver dies a quarter of the way in ...
    wait_for(
        &[&edge, &hub],
        "a quarter of the file to arrive",
        Duration::from_secs(120),
        || received() > size / 4,
    );
    hub_server.kill9();
    let _hub_server = hub.serve();
    // ... and, a quarter more after its restart, the sender.
    wait_for(
        &[&edge, &hub],
        "the transfer to go on after the restart",
        Duration::from_secs(120),
        || received() > size / 4,
    );
    let sent_before = sent();
    edge_server.kill9();
    let _edge_server = edge.serve();
    let hub_id = wait_for_attachment(&edge, &hub, "big", Duration::from_secs(180));
    let total_sent = sent_before + sent();
    assert!(
        total_sent <= size + size / 10,
        "the transfer resumed instead of starting over: {total_sent} bytes sent for {size}"
    );
    assert_eq!(
        hub.logs()
            .matches("Resuming an attachment transfer")
            .count(),
        2,
        "{}",
        hub.logs()
    );
    assert_eq!(saved_hash(&hub, &hub_id, "image.bin"), hash);
}

/// A create of `sc_req_item` `description` listing `attachment`.
fn payload_with(description: &str, attachment: Value) -> String {
    serde_json::json!({
        "capture_metadata": {
            "changed_by": "mallory",
            "timestamp": "2026-11-27 12:00:00",
            "operation": "create",
            "table": "sc_req_item",
            "sys_id": "f".repeat(32),
            "process_event": "software_request"
        },
        "changed_fields": [{
            "key": "short_description",
            "value": description,
            "display_value": description,
            "changed": true
        }],
        "journal_entries": [],
        "attachments": [attachment],
        "attachment_strategy": "all"
    })
    .to_string()
}

fn listed(name: &str, size: u64, hash: &str) -> Value {
    serde_json::json!({
        "sys_id": "e".repeat(32),
        "file_name": name,
        "content_type": "application/pdf",
        "size": size,
        "hash": hash,
        "added": true
    })
}

#[test]
fn hostile_attachment_metadata_and_keys_are_refused_on_the_inbound_item() {
    let (edge, hub, mut edge_server, _h) = linked_pair(Extras {
        capture: INCLUDE,
        inbound: "max_attachment_mb = 1\nallowed_extensions = [\"pdf\", \"txt\"]",
    });
    // Keys the edge issues from now on expire after 3 seconds.
    edge.ok(&["property", "set", "attachment.key_ttl", "3"]);
    let (file, hash) = make_file(edge.path(), "real.pdf", "real", 5000);
    let real = create(&edge, "real");
    edge.ok(&[
        "attachment",
        "add",
        "sc_req_item",
        &real,
        file.to_str().unwrap(),
    ]);
    let hub_real = wait_for_attachment(&edge, &hub, "real", Duration::from_secs(60));
    // A real key, as the edge sent it with the item.
    let inbound = hub.json(&["queue", "inbound", "list", "--json"]);
    let item_id = inbound
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["status"] == "Processed" && i["operation"] == "update")
        .map(|i| i["id"].as_u64().unwrap())
        .expect("the attachment's item");
    let shown = hub.json(&["queue", "inbound", "show", &item_id.to_string()]);
    let real_grant: procsync::attachment::Grant =
        serde_json::from_value(shown["attachment_grants"][0].clone()).unwrap();
    assert_eq!(real_grant.hash, hash);

    edge_server.stop();
    let target = impersonate(&edge, "hub", &hub);
    let _edge_server = edge.serve();

    let any_hash = "ab".repeat(32);
    let forged = procsync::attachment::Grant {
        hash: any_hash.clone(),
        expires_at: procsync::ids::now_millis() + 3_600_000,
        key: "00".repeat(32),
    };
    // The hub no longer holds the real content once its attachment is
    // gone, so using the real (expired) key means fetching it again.
    wait_until("the real key to expire", Duration::from_secs(10), || {
        procsync::ids::now_millis() > real_grant.expires_at
    });
    hub.ok(&["attachment", "rm", "sc_req_item", &hub_real, "real.pdf"]);
    let cases: Vec<(&str, Value, Vec<procsync::attachment::Grant>, &str)> = vec![
        (
            "escape",
            listed("../../etc/passwd.pdf", 10, &any_hash),
            vec![forged.clone()],
            "path separator",
        ),
        (
            "control",
            listed("bell\u{7}.pdf", 10, &any_hash),
            vec![forged.clone()],
            "control character",
        ),
        (
            "extension",
            listed("tool.exe", 10, &any_hash),
            vec![forged.clone()],
            "allowed extension",
        ),
        (
            "oversize",
            listed("huge.pdf", 2 << 20, &any_hash),
            vec![forged.clone()],
            "max_attachment_mb",
        ),
        (
            "nokey",
            listed("nokey.pdf", 10, &any_hash),
            Vec::new(),
            "without a key",
        ),
        (
            "forged",
            listed("forged.pdf", 10, &any_hash),
            vec![forged.clone()],
            "forged",
        ),
        (
            "expired",
            listed("real.pdf", 5000, &hash),
            vec![real_grant.clone()],
            "expired",
        ),
    ];
    let items = cases
        .iter()
        .enumerate()
        .map(|(i, (description, attachment, grants, _))| {
            crafted_item(
                1_000_000 + i as u64,
                &payload_with(description, attachment.clone()),
                grants.clone(),
            )
        })
        .collect();
    send_items(&target, items);
    wait_for(
        &[&edge, &hub],
        "every crafted item to be refused",
        Duration::from_secs(60),
        || {
            let inbound = hub.json(&["queue", "inbound", "list", "--json", "--status", "Error"]);
            inbound.as_array().unwrap().len() == cases.len()
        },
    );
    let refused = hub.json(&["queue", "inbound", "list", "--json", "--status", "Error"]);
    for (description, _, _, expected) in &cases {
        let item = refused
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["payload"]["changed_fields"][0]["value"] == *description)
            .unwrap_or_else(|| panic!("no item for {description}: {refused}"));
        let error = item["error"].as_str().unwrap();
        assert!(error.contains(expected), "{description}: {error}");
        assert!(
            sys_id_of(&hub, description).is_none(),
            "{description} was applied"
        );
    }

    // A size that lies about content the hub holds is refused too.
    let held = create(&edge, "held");
    edge.ok(&[
        "attachment",
        "add",
        "sc_req_item",
        &held,
        file.to_str().unwrap(),
    ]);
    wait_for_attachment(&edge, &hub, "held", Duration::from_secs(60));
    send_items(
        &target,
        vec![crafted_item(
            2_000_000,
            &payload_with("liar", listed("liar.pdf", 4999, &hash)),
            vec![forged],
        )],
    );
    wait_for(
        &[&edge, &hub],
        "the lying size to be refused",
        Duration::from_secs(60),
        || {
            hub.json(&["queue", "inbound", "list", "--json", "--status", "Error"])
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["error"].as_str().unwrap().contains("size lies"))
        },
    );
    assert!(sys_id_of(&hub, "liar").is_none());
    // Nothing partial stays behind, and the hub still works.
    assert_eq!(
        attachments(&hub, &sys_id_of(&hub, "held").unwrap()).len(),
        1
    );
}

#[test]
fn an_interrupted_upload_resumes_and_a_wrong_one_is_discarded() {
    let edge = Instance::init("edge");
    let _server = edge.serve();
    let chunk = 1_048_512u64;
    let size = 5 * chunk - 100;
    let (file, hash) = make_file(edge.path(), "data.bin", "data", size);
    let bytes = std::fs::read(&file).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = edge.client().await;
        assert_eq!(client.begin_upload(&hash, size).await.unwrap(), (0, false));
        // Two chunks, then the client stops.
        let (pieces, stream) = tokio::sync::mpsc::channel(4);
        for i in 0..2u64 {
            let (from, to) = (
                usize::try_from(i * chunk).unwrap(),
                usize::try_from((i + 1) * chunk).unwrap(),
            );
            let piece = bytes[from..to].to_vec();
            pieces.send((i * chunk, piece.into())).await.unwrap();
        }
        drop(pieces);
        assert!(!client.upload_content(&hash, size, stream).await.unwrap());
        assert_eq!(
            client.begin_upload(&hash, size).await.unwrap(),
            (2 * chunk, false),
            "what arrived is kept"
        );
        // Starting over at 0 is refused: the instance says where to resume.
        let (pieces, stream) = tokio::sync::mpsc::channel(4);
        pieces
            .send((0, bytes[..usize::try_from(chunk).unwrap()].to_vec().into()))
            .await
            .unwrap();
        drop(pieces);
        let error = client
            .upload_content(&hash, size, stream)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("resume the upload there"), "{error}");

        // Bytes that do not hash as claimed are refused and not kept.
        let wrong = "cd".repeat(32);
        let (pieces, stream) = tokio::sync::mpsc::channel(4);
        pieces
            .send((0, bytes[..1000].to_vec().into()))
            .await
            .unwrap();
        drop(pieces);
        let error = client
            .upload_content(&wrong, 1000, stream)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("refused and discarded"), "{error}");
        assert_eq!(client.begin_upload(&wrong, 1000).await.unwrap(), (0, false));
    });
    // The CLI picks the upload up where it stopped.
    let id = create(&edge, "resumed");
    let out = edge.cli(&[
        "attachment",
        "add",
        "sc_req_item",
        &id,
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("resuming the upload at byte {}", 2 * chunk)),
        "{said}"
    );
    assert_eq!(saved_hash(&edge, &id, "data.bin"), hash);
}

#[test]
fn journal_entries_arrive_once_in_order_with_author_and_time() {
    let (edge, hub, _e, mut hub_server) = linked_pair(Extras::default());
    let alice = edge.ok(&["user", "add", "alice", "--roles", "admin"]);
    let bob = edge.ok(&["user", "add", "bob", "--roles", "admin"]);
    let id = create(&edge, "journaled");
    let add = |token: &str, text: &str| {
        edge.ok(&[
            "journal",
            "add",
            "sc_req_item",
            &id,
            "comments",
            text,
            "--token",
            token.trim(),
        ]);
    };
    add(&alice, "one");
    add(&bob, "two");
    hub_server.kill9();
    add(&alice, "three");
    add(&bob, "four");
    let _hub_server = hub.serve();
    add(&alice, "five");
    // A field change afterwards sends no journal entry again.
    edge.ok(&["record", "update", "sc_req_item", &id, "state=2"]);

    let journal = |instance: &Instance, sys_id: &str| -> Vec<Value> {
        instance.json(&["record", "get", "sc_req_item", sys_id, "--json"])["journal"]
            .as_array()
            .unwrap()
            .clone()
    };
    let mut hub_id = String::new();
    wait_for(
        &[&edge, &hub],
        "five entries and the state on the hub",
        Duration::from_secs(60),
        || {
            let Some(found) = sys_id_of(&hub, "journaled") else {
                return false;
            };
            hub_id = found;
            let record = hub.json(&["record", "get", "sc_req_item", &hub_id, "--json"]);
            record["fields"]["state"] == "2" && journal(&hub, &hub_id).len() >= 5
        },
    );
    let on_hub = journal(&hub, &hub_id);
    let on_edge = journal(&edge, &id);
    let texts: Vec<&str> = on_hub.iter().map(|j| j["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        ["one", "two", "three", "four", "five"],
        "once each, in order"
    );
    for (theirs, ours) in on_hub.iter().zip(&on_edge) {
        assert_eq!(theirs["author"], ours["author"]);
        assert_eq!(theirs["time"], ours["time"]);
        assert_eq!(theirs["id"], ours["id"]);
    }
    let authors: Vec<&str> = on_hub
        .iter()
        .map(|j| j["author"].as_str().unwrap())
        .collect();
    assert_eq!(authors, ["alice", "bob", "alice", "bob", "alice"]);
}

/// Sends `hub`, as `edge` (which is down), an item with sequence
/// `sequence` listing attachment `file_name` of content `hash` with a
/// made-up key: its content cannot be fetched while the edge is down.
fn send_unfetchable(
    edge: &Instance,
    hub: &Instance,
    sequence: u64,
    description: &str,
    file_name: &str,
    hash: &str,
) {
    let target = impersonate(edge, "hub", hub);
    let key = procsync::attachment::Grant {
        hash: hash.to_string(),
        expires_at: procsync::ids::now_millis() + 3_600_000,
        key: "00".repeat(32),
    };
    send_items(
        &target,
        vec![crafted_item(
            sequence,
            &payload_with(description, listed(file_name, 10, hash)),
            vec![key],
        )],
    );
}

/// The inbound item the sender numbered `sequence`, as the CLI shows it.
fn inbound_by_sequence(hub: &Instance, sequence: u64) -> Option<Value> {
    hub.json(&["queue", "inbound", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["sequence"] == sequence)
        .cloned()
}

#[test]
fn an_item_waiting_for_an_unreachable_sender_says_why_until_it_runs() {
    let (edge, hub, mut edge_server, _h) = linked_pair(Extras {
        capture: INCLUDE,
        inbound: "",
    });
    // The edge is down: an item listing an attachment arrives (sent by a
    // hand-made peer with the edge's identity), and its content cannot be
    // fetched.
    edge_server.stop();
    send_unfetchable(
        &edge,
        &hub,
        1_000_000,
        "waits",
        "notes.txt",
        &"cd".repeat(32),
    );
    let waiting = |hub: &Instance| inbound_by_sequence(hub, 1_000_000);
    wait_for(
        &[&hub],
        "the item to say why it waits",
        Duration::from_secs(30),
        || waiting(&hub).is_some_and(|i| i["waiting"].is_string()),
    );
    let item = waiting(&hub).unwrap();
    assert_eq!(item["status"], "Ready");
    let reason = item["waiting"].as_str().unwrap();
    assert!(
        reason.contains("\"notes.txt\" could not be fetched from `edge`")
            && reason.contains("trying again at"),
        "{reason}"
    );
    let table = hub.ok(&["queue", "inbound", "list"]);
    assert!(table.contains("waiting: attachment"), "{table}");

    // The edge comes back and refuses the made-up key: the item runs to
    // Error, and no longer says it waits.
    let _edge_server = edge.serve();
    wait_for(
        &[&edge, &hub],
        "the item to end in Error",
        Duration::from_secs(90),
        || waiting(&hub).is_some_and(|i| i["status"] == "Error"),
    );
    let item = waiting(&hub).unwrap();
    assert!(item["waiting"].is_null(), "{item:#}");
    assert!(
        item["error"].as_str().unwrap().contains("notes.txt"),
        "{item:#}"
    );
}

#[test]
fn a_fetch_that_made_progress_before_a_reset_is_not_backed_off_longer() {
    use crate::faults::{Mode, Proxy};
    let (edge, hub, _edge_server, _hub_server) = linked_pair(Extras {
        capture: INCLUDE,
        inbound: "",
    });
    // The hub fetches from the edge through a proxy that resets connections.
    let to_edge = Proxy::start(format!("127.0.0.1:{}", edge.peer_port));
    let current = hub.ok(&["export"]);
    let file = hub.file(
        "repoint.toml",
        &current.replace(&edge.peer_endpoint(), &to_edge.endpoint()),
    );
    hub.ok(&["apply", file.to_str().unwrap()]);
    hub.ok(&["remote", "validate", "edge"]);

    let size: u64 = 128 << 20;
    let (file, hash) = make_file(edge.path(), "big.bin", "resets", size);
    let id = create(&edge, "reset");
    edge.ok(&[
        "attachment",
        "add",
        "sc_req_item",
        &id,
        file.to_str().unwrap(),
    ]);
    std::fs::remove_file(&file).unwrap();
    let received = || {
        remote(&hub, "edge")["attachment_bytes_received"]
            .as_u64()
            .unwrap()
    };
    let failures = || hub.logs().matches("Fetching an attachment failed").count();
    let mut last = 0;
    for reset in 1..=3 {
        wait_for(
            &[&edge, &hub],
            "the fetch to move 8 MiB more",
            Duration::from_secs(120),
            || received() >= last + (8 << 20),
        );
        last = received();
        assert!(
            last < size,
            "the file arrived before reset {reset}: make it larger"
        );
        to_edge.set(Mode::Refuse);
        to_edge.set(Mode::Forward);
        wait_for(
            &[&hub],
            "the fetch failure",
            Duration::from_secs(30),
            || failures() >= reset,
        );
        // Bytes that arrived between the count above and the cut must not
        // count as the next try's progress: the next reset would then come
        // during the backoff, with no fetch to cut.
        last = received();
    }
    let hub_id = wait_for_attachment(&edge, &hub, "reset", Duration::from_secs(180));
    assert_eq!(attachments(&hub, &hub_id)[0]["hash"], hash.as_str());
    let logs = hub.logs();
    let waits: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("Fetching an attachment failed"))
        .filter_map(|l| l.split("retry_in_s=").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap())
        .collect();
    assert!(waits.len() >= 3, "{logs}");
    assert!(
        waits.iter().all(|w| *w == "2"),
        "each try moved bytes, so each reset waits the first interval: {waits:?}"
    );
}

#[test]
fn a_restart_during_a_fetch_backoff_keeps_its_attempts_and_its_time() {
    let (edge, hub, mut edge_server, mut hub_server) = linked_pair(Extras {
        capture: INCLUDE,
        inbound: "",
    });
    // The edge is down for good: every fetch of the listed content fails,
    // and the hub backs off 2, 4, 8, 16 s.
    edge_server.stop();
    let hash = "ef".repeat(32);
    send_unfetchable(&edge, &hub, 2_000_000, "backs off", "report.pdf", &hash);
    let item = |hub: &Instance| inbound_by_sequence(hub, 2_000_000).unwrap_or(Value::Null);
    // "… trying again at TIME UTC (failure N)": the due time and N.
    let due_and_failure = |item: &Value| -> Option<(u64, u64)> {
        let reason = item["waiting"].as_str()?;
        let (_, rest) = reason.split_once("trying again at ")?;
        let (time, rest) = rest.split_once(" UTC (failure ")?;
        let failure = rest.trim_end_matches(')').parse().ok()?;
        Some((procsync::ids::parse_time(time)?, failure))
    };
    wait_for(
        &[&hub],
        "the third failed fetch",
        Duration::from_secs(60),
        || due_and_failure(&item(&hub)).is_some_and(|(_, n)| n == 3),
    );
    let (third_due, _) = due_and_failure(&item(&hub)).unwrap();
    hub_server.kill9();
    let _hub_server = hub.serve();
    // The stored state came back with the item: three failures, not none.
    let kept = item(&hub);
    assert_eq!(kept["fetch_retries"][&hash]["attempts"], 3, "{kept:#}");
    assert_eq!(kept["status"], "Ready");
    wait_for(
        &[&hub],
        "the fourth failed fetch",
        Duration::from_secs(60),
        || due_and_failure(&item(&hub)).is_some_and(|(_, n)| n >= 4),
    );
    let (fourth_due, failure) = due_and_failure(&item(&hub)).unwrap();
    assert_eq!(failure, 4, "the restart reset the attempts");
    // The fourth try waited out the third's backoff: it was made at
    // fourth_due − 16 s, not before third_due.
    assert!(
        fourth_due - 16_000 >= third_due,
        "fetched early after the restart: due {third_due}, tried {}",
        fourth_due - 16_000
    );
}
