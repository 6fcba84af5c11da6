//! Slow or metered links between real `serve` processes: streams are
//! compressed (zstd, negotiated; `remote show` tells the bytes before and
//! after), and `link.max_bytes_per_s` (per remote system or per group)
//! holds back items and attachment transfers alike.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::enrol::{HUB_DEFINITIONS, incidents, invite, start_edge, start_hub_with};
use crate::support::{Instance, wait_for};

/// The link as `remote show --json` tells it.
fn link(instance: &Instance, remote: &str) -> serde_json::Value {
    instance.json(&["remote", "show", remote, "--json"])
}

/// About 2 KB of text that compresses well, different per record.
fn report(n: usize) -> String {
    format!(
        "short_description=Shelf report {n}: {}",
        "aisle 7 restocked, ".repeat(100)
    )
}

#[test]
fn streams_are_compressed_and_a_group_limit_holds_back_items_and_attachments() {
    let definitions = HUB_DEFINITIONS
        .replace(
            "fields = [\"short_description\", \"state\"]\n\n[[remote_group]]",
            "fields = [\"short_description\", \"state\"]\ninclude_attachments = true\n\n[[remote_group]]",
        );
    let (hub, _hub_server) = start_hub_with(&definitions);
    let (edge, _edge_server) = start_edge("store-5");
    edge.ok(&["property", "set", "link.compress@hub", "true"]);
    edge.ok(&["remote", "join", &invite(&hub, &[])]);

    // Compressed (asked for the hub): the edge's link to the hub carried
    // fewer bytes than the messages it encoded.
    for n in 0..20 {
        edge.ok(&["record", "create", "incident", &report(n), "state=1"]);
    }
    wait_for(
        &[&edge, &hub],
        "the 20 reports on the hub",
        Duration::from_secs(30),
        || incidents(&hub, "short_descriptionSTARTSWITHShelf report").len() == 20,
    );
    let shown = link(&edge, "hub");
    let encoded = shown["encoded_bytes_sent"].as_u64().unwrap();
    let wire = shown["wire_bytes_sent"].as_u64().unwrap();
    assert!(encoded > 40_000, "{shown}");
    assert!(
        wire * 2 < encoded,
        "compressed: {wire} on the wire for {encoded} encoded"
    );
    let human = edge.ok(&["remote", "show", "hub"]);
    assert!(human.contains("wire_bytes_sent"), "{human}");

    // The group's limit: 20,000 bytes a second from the hub to each
    // member. 40 reports of about 2 KB take about 4 s (one second of
    // burst), however fast the link is.
    hub.ok(&["property", "set", "link.max_bytes_per_s@stores", "20000"]);
    let started = Instant::now();
    for n in 100..140 {
        hub.ok(&["record", "create", "incident", &report(n), "state=2"]);
    }
    wait_for(
        &[&edge, &hub],
        "the hub's 40 reports on the edge",
        Duration::from_secs(60),
        || incidents(&edge, "state=2").len() == 40,
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "40 reports of 2 KB at 20 KB/s took {took:?}"
    );

    // Attachments count against the same allowance: 3 MiB at 1 MiB/s
    // takes two seconds or more (a second of burst, then one per MiB).
    hub.ok(&["property", "set", "link.max_bytes_per_s@stores", "1048576"]);
    let path = hub.path().join("planogram.bin");
    let mut file = std::fs::File::create(&path).unwrap();
    let mut stream = blake3::Hasher::new().update(b"planogram").finalize_xof();
    let mut bytes = vec![0u8; 3 << 20];
    stream.fill(&mut bytes);
    file.write_all(&bytes).unwrap();
    drop(file);
    let sys_id = hub
        .ok(&[
            "record",
            "create",
            "incident",
            "short_description=New planogram",
            "state=3",
        ])
        .trim()
        .to_string();
    let started = Instant::now();
    hub.ok(&[
        "attachment",
        "add",
        "incident",
        &sys_id,
        path.to_str().unwrap(),
    ]);
    wait_for(
        &[&edge, &hub],
        "the planogram on the edge",
        Duration::from_secs(60),
        || {
            incidents(&edge, "short_description=New planogram")
                .first()
                .map(|r| r["fields"]["sys_id"].as_str().unwrap().to_string())
                .is_some_and(|id| {
                    let listed = edge.json(&["attachment", "list", "incident", &id, "--json"]);
                    listed.as_array().is_some_and(|a| a.len() == 1)
                })
        },
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1800),
        "3 MiB at 1 MiB/s took {took:?}"
    );

    // Without compression (the default) the wire carries at least what
    // was encoded.
    let (plain_hub, _plain_hub_server) = start_hub_with(HUB_DEFINITIONS);
    let (plain_edge, _plain_edge_server) = start_edge("store-6");
    plain_edge.ok(&["remote", "join", &invite(&plain_hub, &[])]);
    for n in 0..20 {
        plain_edge.ok(&["record", "create", "incident", &report(n), "state=1"]);
    }
    wait_for(
        &[&plain_edge, &plain_hub],
        "the 20 plain reports",
        Duration::from_secs(30),
        || incidents(&plain_hub, "short_descriptionSTARTSWITHShelf report").len() == 20,
    );
    let shown = link(&plain_edge, "hub");
    let encoded = shown["encoded_bytes_sent"].as_u64().unwrap();
    let wire = shown["wire_bytes_sent"].as_u64().unwrap();
    assert!(
        wire >= encoded,
        "not compressed: {wire} on the wire for {encoded} encoded"
    );
}
