//! The benchmarks run end to end on small counts (their figures are read
//! from release builds; here only that they work and report what they
//! promise): sync in batches, at a steady rate and after a backlog, and
//! the store's bytes per queued item.

use std::process::Command;

use crate::support::BIN;

fn bench(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bench {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn sync_in_batches_and_at_a_rate_reports_throughput_and_latency() {
    let out = bench(&["sync", "--records", "300", "--batch-size", "100"]);
    assert!(out.contains("all 300 applied on the hub"), "{out}");
    assert!(out.contains("µs per item"), "{out}");
    assert!(out.contains("peak resident memory: edge"), "{out}");
    // Each side's store per item, by table: the edge holds the items, the
    // hub what it received and applied.
    for (side, table) in [("edge", "outbound "), ("hub", "inbound ")] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{side}'s store: ")))
            .unwrap_or_else(|| panic!("no store line for the {side}: {out}"));
        let bytes: u64 = line
            .split_whitespace()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no bytes per item in {line}"));
        assert!(bytes > 0, "{line}");
        assert!(line.contains(table), "{line}");
    }

    let out = bench(&["sync", "--rate", "20", "--seconds", "2"]);
    assert!(out.contains("offering 20 single writes/s"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("edge acknowledged -> hub applied, 40 items: p50 "))
        .unwrap_or_else(|| panic!("no latency line: {out}"));
    assert!(line.contains("p99") && line.contains("max"), "{line}");

    let out = bench(&[
        "sync",
        "--backlog",
        "--records",
        "300",
        "--batch-size",
        "100",
    ]);
    assert!(out.contains("queued in"), "{out}");
    assert!(
        out.contains("edge restarted on 300 queued items: /healthz answered 200"),
        "{out}"
    );
    assert!(
        out.contains("the hub came back: 300 items applied"),
        "{out}"
    );
    assert!(out.contains("resident memory while draining"), "{out}");
}

#[test]
fn sync_on_the_wire_reports_bytes_compressed_and_not() {
    let out = bench(&["sync", "--wire", "--records", "300", "--batch-size", "100"]);
    assert!(
        out.contains("300 typical records, compression off:"),
        "{out}"
    );
    assert!(
        out.contains("300 typical records, compression on (zstd):"),
        "{out}"
    );
    assert!(out.contains("compression saves"), "{out}");
}

#[test]
fn a_fleet_of_twenty_simulated_edges_enrols_idles_and_writes() {
    let out = bench(&[
        "fleet",
        "--edges",
        "20",
        "--items",
        "10",
        "--idle-seconds",
        "2",
    ]);
    assert!(
        out.contains("enrolled 20 edges through invite and join"),
        "{out}"
    );
    assert!(out.contains("KiB per edge"), "{out}");
    assert!(
        out.contains("hub CPU with 20 idle edges heartbeating"),
        "{out}"
    );
    assert!(
        out.contains("answer times with the fleet's remote systems"),
        "{out}"
    );
    assert!(
        out.contains("20 edges writing 10 readings each at once: 200 applied on the hub"),
        "{out}"
    );
    assert!(out.contains("(200 acknowledged to the edges)"), "{out}");
    // Again beside one bad peer of each kind, each bounded by the hub.
    assert!(
        out.contains("20 edges writing 10 readings each at once: 200 applied on the hub")
            && out.matches("(200 acknowledged to the edges)").count() == 3,
        "{out}"
    );
    let line = |start: &str| {
        out.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line `{start}`: {out}"))
            .to_string()
    };
    let silent = line("bad peer, silent after its handshake:");
    assert!(silent.contains("closed by the hub after"), "{silent}");
    let hellos = line("bad peer, 4 callers flooding hello");
    assert!(!hellos.contains(" 0 turned away"), "{hellos}");
    assert!(hellos.contains(", 0 failed otherwise"), "{hellos}");
    // Each refusal is answered after a pause: guesses go at about one a
    // second per caller.
    let joins = line("bad peer, 4 callers flooding joins");
    assert!(joins.ends_with(", 0 taken"), "{joins}");
    // The rate in `line`, printed as "(N/s)" right after `after`.
    let rate = |line: &str, after: &str| -> f64 {
        line.split(after)
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no rate: {line}"))
    };
    assert!(rate(&joins, " refused for the secret (") <= 6.0, "{joins}");
    // The fleet and the bad peers fill max_peers: one more is closed, after
    // a pause, every time.
    let beyond = line("bad peer, 4 callers connecting beyond max_peers (26)");
    assert!(beyond.ends_with(", 0 answered"), "{beyond}");
    assert!(!beyond.contains(": 0 connections closed"), "{beyond}");
    assert!(
        rate(&beyond, " closed after the handshake (") <= 6.0,
        "{beyond}"
    );
    let reader = line("bad peer, streams open and never answered:");
    assert!(reader.contains("no heartbeat answer"), "{reader}");
    assert!(reader.contains("shows it Down"), "{reader}");
}

#[test]
fn stats_reports_bytes_per_queued_item() {
    let out = bench(&["stats", "--items", "2000", "--repeat", "2"]);
    let line = out
        .lines()
        .find(|l| l.starts_with("filled: 2000 outbound items"))
        .unwrap_or_else(|| panic!("no fill line: {out}"));
    let bytes: u64 = line
        .split(" bytes per queued item")
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no bytes per item: {line}"));
    // A small store is mostly its first pages: only sanity here.
    assert!(bytes > 100, "{line}");
}
