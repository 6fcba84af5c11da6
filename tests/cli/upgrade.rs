//! Stored-format compatibility: this binary must open stores written by
//! every earlier format. `tests/fixtures/store-format-N` holds a store made
//! by the binary that wrote format N (an instance with users, definitions,
//! a record with a journal entry and its queue items); never regenerate an
//! existing fixture, add one per new format (formats 3 and 4: `procsync
//! demo --keep`, its hub).

use std::path::Path;

use procsync::queue::QueueStatus;
use procsync::store::{Browse, QueueFilter, Store};

use crate::support::{Instance, Server};

fn copy_fixture(name: &str) -> tempfile::TempDir {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let dir = tempfile::tempdir().unwrap();
    for file in ["procsync.redb", "admin.token", "record.sys_id"] {
        std::fs::copy(source.join(file), dir.path().join(file)).unwrap();
    }
    dir
}

/// The record the fixture was made around (its `record.sys_id`).
fn recorded_sys_id(dir: &tempfile::TempDir) -> String {
    std::fs::read_to_string(dir.path().join("record.sys_id"))
        .unwrap()
        .trim()
        .to_string()
}

/// An instance on a fixture's copy, as the new binary serves it.
fn instance_on(dir: tempfile::TempDir) -> Instance {
    Instance {
        dir,
        fingerprint: String::new(),
        peer_port: crate::support::free_port(),
    }
}

#[test]
fn a_format_1_store_opens_with_everything_in_it() {
    let dir = copy_fixture("store-format-1");
    let sys_id = recorded_sys_id(&dir);
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.instance().unwrap().name, "fixture-format-1");
        let admin = store
            .user_by_token(&token)
            .unwrap()
            .expect("the admin token still works");
        assert_eq!(admin.name, "admin");
        let (record, journal) = store
            .record("incident", &sys_id)
            .unwrap()
            .expect("the record survives");
        assert_eq!(record.fields["short_description"], "Fixture incident");
        assert_eq!(record.domain.as_str(), "global/acme");
        assert_eq!(journal.len(), 1);
        assert_eq!(journal[0].text, "Fixture comment");
        assert_eq!(store.sync_config().unwrap().objects().len(), 8);
        let items = store.outbound_items(&QueueFilter::default()).unwrap();
        assert_eq!(items.len(), 4, "create and comment, to two remotes");
        for item in &items {
            let payload = item.payload.decode().expect("a format-1 payload decodes");
            assert_eq!(payload.capture_metadata.sys_id, sys_id);
        }
        // The format-1 store had no statistics: they are counted on open.
        let (lines, _) = store.queue_stats(procsync::ids::now_millis()).unwrap();
        let ready: u64 = lines.iter().map(|l| l.counts.ready).sum();
        assert_eq!(ready, 4, "{lines:?}");
        assert_eq!(lines.len(), 2, "one line per remote system: {lines:?}");
        // Nor an index by status: the items are indexed on open, and the
        // queue browser pages through them newest first.
        let ready = store
            .browse_outbound(&Browse {
                status: Some(QueueStatus::Ready),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        let newest_first: Vec<u64> = items.iter().rev().map(|i| i.id).collect();
        let browsed: Vec<u64> = ready.items.iter().map(|i| i.id).collect();
        assert_eq!(browsed, newest_first);
        assert_eq!((ready.total, ready.next_before), (4, None));
        // Its items were never sent: each remote may not name the record
        // until the oldest of them goes out, which the correlation names.
        let mut correlations = store.correlations(None).unwrap();
        correlations.sort_by(|a, b| a.remote_system.cmp(&b.remote_system));
        let unsent: Vec<(&str, &str, bool, Option<u64>)> = correlations
            .iter()
            .map(|c| {
                (
                    c.remote_system.as_str(),
                    c.local_correlation_id.as_str(),
                    c.unsent,
                    c.first_item,
                )
            })
            .collect();
        let oldest = |remote: &str| {
            items
                .iter()
                .filter(|i| i.remote_system == remote)
                .map(|i| i.sequence)
                .min()
        };
        let remotes: Vec<&str> = correlations
            .iter()
            .map(|c| c.remote_system.as_str())
            .collect();
        let expected: Vec<(&str, &str, bool, Option<u64>)> = remotes
            .iter()
            .map(|r| (*r, sys_id.as_str(), true, oldest(r)))
            .collect();
        assert_eq!((remotes.len(), unsent), (2, expected));
        store.close();
    }

    // The real upgrade path: the new binary serves the old directory and
    // keeps numbering where the old one stopped.
    let instance = instance_on(dir);
    let _server = instance.serve();
    let out = instance.ok(&["record", "get", "incident", &sys_id]);
    assert!(out.contains("Fixture comment"), "{out}");
    instance.ok(&["record", "update", "incident", &sys_id, "priority=2"]);
    let items: serde_json::Value = serde_json::from_str(
        &instance.ok(&["queue", "outbound", "list", "--remote", "hub", "--json"]),
    )
    .unwrap();
    let sequences: Vec<u64> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, [1, 2, 3]);
    let stats = instance.json(&["stats", "--json"]);
    assert_eq!(stats["outbound"]["ready"], 6, "{stats:#}");
}

/// Format 2 (records, journal entries, queue items and correlations as
/// protobuf messages): the hub of `procsync demo --keep`, after a request
/// went there and back.
#[test]
fn a_format_2_store_opens_with_everything_in_it() {
    let dir = copy_fixture("store-format-2");
    let sys_id = recorded_sys_id(&dir);
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.instance().unwrap().name, "hub");
        assert!(store.user_by_token(&token).unwrap().is_some());
        let (record, journal) = store
            .record("sc_req_item", &sys_id)
            .unwrap()
            .expect("the record survives");
        assert_eq!(record.fields["short_description"], "Install Visio");
        assert_eq!(record.fields["state"], "3");
        let texts: Vec<&str> = journal.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(
            texts,
            ["Needed for the floor plans", "Installed; licence assigned"]
        );
        let inbound = store.inbound_items(&QueueFilter::default()).unwrap();
        assert_eq!(inbound.len(), 1);
        assert_eq!(inbound[0].status, QueueStatus::Processed);
        let context = store
            .flow_context(*inbound[0].flow_contexts.last().unwrap())
            .unwrap()
            .expect("the apply's flow context reads");
        assert_eq!(context.outcome, QueueStatus::Processed);
        assert!(!context.steps.is_empty());
        let payload = inbound[0].payload.decode().expect("the payload decodes");
        assert!(
            payload
                .changed_fields
                .iter()
                .any(|f| f.value == "Install Visio"),
            "{payload:?}"
        );
        let outbound = store.outbound_items(&QueueFilter::default()).unwrap();
        assert_eq!(outbound.len(), 1);
        assert_eq!(outbound[0].status, QueueStatus::Processed);
        assert_eq!(
            outbound[0]
                .payload
                .decode()
                .unwrap()
                .capture_metadata
                .sys_id,
            sys_id
        );
        let correlations = store.correlations(None).unwrap();
        assert_eq!(correlations.len(), 1);
        assert_eq!(correlations[0].local_correlation_id, sys_id);
        assert!(!correlations[0].synced.is_empty());
        // Its index by status named the remote and event in every key: it
        // is rebuilt with numbers on open, and the browser finds the items
        // by status through it.
        let processed = Browse {
            status: Some(QueueStatus::Processed),
            limit: 10,
            ..Default::default()
        };
        let browsed = store.browse_inbound(&processed).unwrap();
        let ids: Vec<u64> = browsed.items.iter().map(|i| i.id).collect();
        assert_eq!((ids, browsed.total), (vec![inbound[0].id], 1));
        let browsed = store.browse_outbound(&processed).unwrap();
        let ids: Vec<u64> = browsed.items.iter().map(|i| i.id).collect();
        assert_eq!((ids, browsed.total), (vec![outbound[0].id], 1));
        let ready = Browse {
            status: Some(QueueStatus::Ready),
            limit: 10,
            ..Default::default()
        };
        assert!(store.browse_inbound(&ready).unwrap().items.is_empty());
        // The sequences received were kept under the sender's fingerprint
        // in every key: they are kept under its number now, and a resend
        // of the edge's sequence is still recognised.
        let edge = store
            .remote_systems_shared()
            .unwrap()
            .iter()
            .find(|r| r.spec.name == "edge")
            .map(|r| procsync::config::sync::normalize_fingerprint(&r.spec.fingerprint).unwrap())
            .expect("the hub pins the edge");
        assert_eq!(store.highest_received(&edge).unwrap(), inbound[0].sequence);
        assert_eq!(store.highest_received("sha256:someone-else").unwrap(), 0);
        store.close();
    }
    let instance = instance_on(dir);
    let _server = instance.serve();
    let out = instance.ok(&["record", "get", "sc_req_item", &sys_id]);
    assert!(out.contains("Installed; licence assigned"), "{out}");
    let item = instance.json(&["queue", "inbound", "show", "1"]);
    assert_eq!(
        item["payload"]["capture_metadata"]["operation"], "create",
        "payloads are shown as JSON: {item:#}"
    );
}

/// Format 3 (flow contexts compressed against a dictionary): the hub of
/// `procsync demo --keep`, after a request went there and back. Its
/// contexts read, in the store and through the CLI.
#[test]
fn a_format_3_store_opens_with_its_flow_contexts() {
    let dir = copy_fixture("store-format-3");
    let sys_id = recorded_sys_id(&dir);
    let context_id = {
        let store = Store::open(dir.path()).unwrap();
        let (record, _) = store
            .record("sc_req_item", &sys_id)
            .unwrap()
            .expect("the record survives");
        assert_eq!(record.fields["short_description"], "Install Visio");
        let inbound = store.inbound_items(&QueueFilter::default()).unwrap();
        assert_eq!(inbound.len(), 1);
        assert!(!inbound[0].flow_contexts.is_empty());
        for &id in &inbound[0].flow_contexts {
            let context = store
                .flow_context(id)
                .unwrap()
                .expect("each of the item's contexts reads");
            assert_eq!(context.outcome, QueueStatus::Processed);
            let write = context
                .steps
                .iter()
                .find(|s| s.name == "write")
                .expect("an apply writes the record");
            assert!(write.detail.contains(&sys_id), "{write:?}");
        }
        let id = inbound[0].flow_contexts[0];
        store.close();
        id
    };
    let instance = instance_on(dir);
    let _server = instance.serve();
    let context = instance.json(&["queue", "context", &context_id.to_string()]);
    assert_eq!(context["queue"], "inbound", "{context:#}");
    assert!(
        context["steps"]
            .as_array()
            .is_some_and(|steps| steps.iter().any(|s| s["name"] == "correlation")),
        "{context:#}"
    );
}

/// The stored record of `sys_id` in a fixture's copy, as raw bytes.
fn stored_record(dir: &tempfile::TempDir, sys_id: &str) -> Vec<u8> {
    use redb::ReadableDatabase;
    let db = redb::Database::open(dir.path().join("procsync.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let records: redb::TableDefinition<(&str, &str), &[u8]> = redb::TableDefinition::new("records");
    let table = txn.open_table(records).unwrap();
    let stored = table.get(("sc_req_item", sys_id)).unwrap().unwrap();
    stored.value().to_vec()
}

/// The demo's request on a fixture's hub reads back whole (key parts and
/// field names included) with its journal and its correlation with the
/// edge's record, in the store and then through the CLI of the instance
/// returned, serving.
fn demo_request_reads_back(
    dir: tempfile::TempDir,
    sys_id: &str,
    edge_sys_id: &str,
) -> (Instance, Server) {
    {
        let store = Store::open(dir.path()).unwrap();
        let (record, journal) = store
            .record("sc_req_item", sys_id)
            .unwrap()
            .expect("the record survives");
        assert_eq!(
            (record.table.as_str(), record.sys_id.as_str()),
            ("sc_req_item", sys_id)
        );
        assert_eq!(record.fields["short_description"], "Install Visio");
        assert_eq!(record.fields["state"], "3");
        assert_eq!(journal.len(), 2);
        let correlations = store.correlations(Some("edge")).unwrap();
        assert_eq!(correlations.len(), 1, "{correlations:?}");
        let correlation = &correlations[0];
        assert_eq!(correlation.table, "sc_req_item");
        assert_eq!(correlation.local_correlation_id, sys_id);
        assert_eq!(correlation.remote_system, "edge");
        assert_eq!(correlation.remote_correlation_id, edge_sys_id);
        assert!(correlation.synced.contains_key("short_description"));
        store.close();
    }
    let instance = instance_on(dir);
    let server = instance.serve();
    let record = instance.json(&["record", "get", "sc_req_item", sys_id, "--json"]);
    assert_eq!(record["table"], "sc_req_item", "{record:#}");
    assert_eq!(record["fields"]["sys_id"], sys_id, "{record:#}");
    assert_eq!(
        record["fields"]["short_description"], "Install Visio",
        "{record:#}"
    );
    let listed = instance.json(&["correlation", "list", "--json"]);
    assert_eq!(listed[0]["table"], "sc_req_item", "{listed:#}");
    assert_eq!(listed[0]["local_correlation_id"], sys_id, "{listed:#}");
    assert_eq!(listed[0]["remote_system"], "edge", "{listed:#}");
    (instance, server)
}

/// Format 4 (a record and a correlation stored without their key's
/// parts): the hub of `procsync demo --keep` once more. Its record and its
/// correlation with the edge read back whole, key parts included, in the
/// store and through the CLI.
#[test]
fn a_format_4_store_opens_with_its_records_and_correlations() {
    let dir = copy_fixture("store-format-4");
    let sys_id = recorded_sys_id(&dir);
    // The fixture holds them so: format byte 4, no sys_id inside.
    let bytes = stored_record(&dir, &sys_id);
    assert_eq!(bytes[0], 4, "the fixture's record is of format 4");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains(&sys_id) && !text.contains("sc_req_item"),
        "{text}"
    );
    demo_request_reads_back(dir, &sys_id, "01a248253bcf000813a362a4f4ec52cc");
}

/// Format 5 (field names as the store's numbers for them, queue items
/// without the key their payload holds): the hub of `procsync demo
/// --keep` once more. Its record holds no field name as text; record,
/// correlation and inbound item read back whole, in the store and through
/// the CLI; a field new to the store is numbered when first written and
/// reads back after a restart.
#[test]
fn a_format_5_store_opens_with_its_field_names() {
    let dir = copy_fixture("store-format-5");
    let sys_id = recorded_sys_id(&dir);
    let bytes = stored_record(&dir, &sys_id);
    assert_eq!(bytes[0], 5, "the fixture's record is of format 5");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    assert!(
        !text.contains("short_description") && text.contains("Install Visio"),
        "{text}"
    );
    let edge_sys_id = "01a24908973b00082b6772635fe61672";
    {
        // Its inbound item leaves the edge's record id to its payload and
        // reads it back from there.
        use redb::{ReadableDatabase, ReadableTable};
        let db = redb::Database::open(dir.path().join("procsync.redb")).unwrap();
        let txn = db.begin_read().unwrap();
        let inbound: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("inbound");
        let table = txn.open_table(inbound).unwrap();
        let (_, stored) = table.first().unwrap().expect("an inbound item");
        let bytes = stored.value();
        assert_eq!(bytes[0], 5, "the fixture's inbound item is of format 5");
        let once = bytes.windows(32).filter(|w| *w == edge_sys_id.as_bytes());
        assert_eq!(once.count(), 1, "the edge's id is in the payload only");
    }
    {
        let store = Store::open(dir.path()).unwrap();
        let inbound = store.inbound_items(&QueueFilter::default()).unwrap();
        assert_eq!(inbound[0].source_table, "sc_req_item");
        assert_eq!(inbound[0].remote_correlation_id, edge_sys_id);
        store.close();
    }
    let (instance, mut server) = demo_request_reads_back(dir, &sys_id, edge_sys_id);
    instance.ok(&["record", "update", "sc_req_item", &sys_id, "u_room=B-204"]);
    instance.ok(&["record", "update", "sc_req_item", &sys_id, "u_room=B-205"]);
    server.stop();
    let bytes = stored_record(&instance.dir, &sys_id);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    assert!(
        !text.contains("u_room") && text.contains("B-205"),
        "the new field is named by number once numbered: {text}"
    );
    let _server = instance.serve();
    let record = instance.json(&["record", "get", "sc_req_item", &sys_id, "--json"]);
    assert_eq!(record["fields"]["u_room"], "B-205", "{record:#}");
    assert_eq!(
        record["fields"]["short_description"], "Install Visio",
        "{record:#}"
    );
}
