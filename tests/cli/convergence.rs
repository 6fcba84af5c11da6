//! Convergence between three real `serve` processes (a hub and two
//! stores), every link through a TCP proxy: every instance changes,
//! comments on and deletes the same correlated records while all links are
//! down, the hub is killed with SIGKILL as the links heal, then changes go
//! on while the proxies refuse, blackhole and cut connections at random
//! and a store is killed too; in the end (with reconciliation repairing
//! the comments a record brought back after a deletion had lost) every
//! instance holds the same records with the same values and comments,
//! none twice, and reconciliation finds no difference.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::faults::{Mode, Proxy};
use crate::support::{
    Extras, Instance, Peer, link_all_with, point_at, queue_items, sys_id_of, wait_for,
};

const NAMES: [&str; 3] = ["hub", "store1", "store2"];
/// The records deleted while apart (by the instance at that index).
const DELETED: [&str; 2] = ["hub-1", "store1-2"];

/// What an instance holds, by short_description: state, priority and the
/// comments' texts in order of time; and how many records carry each
/// short_description.
/// One record as compared: state, priority, comment texts.
type Held = (String, String, Vec<String>);

fn snapshot(instance: &Instance) -> (BTreeMap<String, Held>, usize) {
    let listed = instance.json(&["record", "list", "sc_req_item", "--json", "--limit", "1000"]);
    let listed = listed.as_array().unwrap();
    let mut out = BTreeMap::new();
    for record in listed {
        let fields = &record["fields"];
        let sys_id = fields["sys_id"].as_str().unwrap();
        let full = instance.json(&["record", "get", "sc_req_item", sys_id, "--json"]);
        let mut comments: Vec<String> = full["journal"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["text"].as_str().unwrap_or("").to_string())
            .collect();
        comments.sort();
        out.insert(
            fields["short_description"].as_str().unwrap().to_string(),
            (
                fields["state"].as_str().unwrap_or("").to_string(),
                fields["priority"].as_str().unwrap_or("").to_string(),
                comments,
            ),
        );
    }
    (out, listed.len())
}

fn settled(instances: &[&Instance]) -> bool {
    instances.iter().all(|i| {
        ["outbound", "inbound"].iter().all(|q| {
            queue_items(i, q)
                .iter()
                .all(|item| item["status"] == "Processed" || item["status"] == "Skipped")
        })
    })
}

/// A small deterministic sequence of choices.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % sides
    }
}

#[test]
fn three_instances_changing_the_same_records_while_apart_end_identical() {
    let instances: Vec<Instance> = NAMES.iter().map(|n| Instance::init(n)).collect();
    let mut servers: Vec<_> = instances.iter().map(Instance::serve).collect();
    let peers: Vec<Peer<'_>> = NAMES
        .iter()
        .zip(&instances)
        .map(|(name, instance)| Peer { name, instance })
        .collect();
    link_all_with(&peers, &[(0, 1), (0, 2)], Extras::default());
    for instance in &instances {
        instance.fast_retries();
    }
    let all: Vec<&Instance> = instances.iter().collect();
    // Every link through a proxy: (dialling instance, dialled instance).
    let links = [(0, 1), (0, 2), (1, 0), (2, 0)];
    let proxies: Vec<Proxy> = links
        .iter()
        .map(|&(from, to)| {
            let proxy = Proxy::start(format!("127.0.0.1:{}", instances[to].peer_port));
            point_at(
                &instances[from],
                &instances[to].peer_endpoint(),
                &proxy.endpoint(),
            );
            proxy
        })
        .collect();
    for &(from, to) in &links {
        instances[from].ok(&["remote", "validate", NAMES[to]]);
    }

    // Four records made on each instance reach the other two.
    let mut names = Vec::new();
    for (instance, name) in instances.iter().zip(NAMES) {
        for n in 0..4 {
            let record = format!("{name}-{n}");
            instance.ok(&[
                "record",
                "create",
                "sc_req_item",
                &format!("short_description={record}"),
                "state=1",
                "priority=3",
            ]);
            names.push(record);
        }
    }
    wait_for(
        &all,
        "every record on every instance",
        Duration::from_secs(60),
        || settled(&all) && all.iter().all(|i| snapshot(i).1 == 12),
    );

    // All links down; then each instance works on the same records.
    instances[0].ok(&["remote", "disable", "store1"]);
    instances[0].ok(&["remote", "disable", "store2"]);
    instances[1].ok(&["remote", "disable", "hub"]);
    instances[2].ok(&["remote", "disable", "hub"]);
    let mut dice = Dice(7);
    for round in 0..12 {
        for (i, instance) in instances.iter().enumerate() {
            let record = &names[dice.roll(names.len())];
            let Some(sys_id) = sys_id_of(instance, record) else {
                continue;
            };
            match dice.roll(4) {
                0 => instance.ok(&[
                    "record",
                    "update",
                    "sc_req_item",
                    &sys_id,
                    &format!("state={}-{round}", NAMES[i]),
                ]),
                1 => instance.ok(&[
                    "record",
                    "update",
                    "sc_req_item",
                    &sys_id,
                    &format!("priority={}", dice.roll(5)),
                ]),
                _ => instance.ok(&[
                    "journal",
                    "add",
                    "sc_req_item",
                    &sys_id,
                    "comments",
                    &format!("{} says {round}", NAMES[i]),
                ]),
            };
        }
    }
    // Two deletions, of records the others keep changing.
    for (i, record) in [(1, DELETED[0]), (2, DELETED[1])] {
        let sys_id = sys_id_of(&instances[i], record).unwrap();
        instances[i].ok(&["record", "delete", "sc_req_item", &sys_id]);
        let other = &instances[(i + 1) % 3];
        let theirs = sys_id_of(other, record).unwrap();
        other.ok(&[
            "record",
            "update",
            "sc_req_item",
            &theirs,
            "state=changed after",
        ]);
    }

    // The links heal, and the hub is killed while it relays.
    instances[1].ok(&["remote", "validate", "hub"]);
    instances[2].ok(&["remote", "validate", "hub"]);
    instances[0].ok(&["remote", "validate", "store1"]);
    instances[0].ok(&["remote", "validate", "store2"]);
    std::thread::sleep(Duration::from_millis(150));
    servers[0].kill9();
    servers[0] = instances[0].serve();

    // For a bounded time, creates, changes and comments go on while the
    // proxies refuse, blackhole and cut connections at random, and a store
    // is killed.
    for round in 12..24 {
        for proxy in &proxies {
            proxy.set(match dice.roll(4) {
                0 => Mode::Refuse,
                1 => Mode::Blackhole,
                _ => Mode::Forward,
            });
        }
        for (i, instance) in instances.iter().enumerate() {
            if dice.roll(4) == 0 {
                // A new record, made while links drop.
                let record = format!("{}-new-{round}", NAMES[i]);
                instance.ok(&[
                    "record",
                    "create",
                    "sc_req_item",
                    &format!("short_description={record}"),
                    "state=1",
                    "priority=3",
                ]);
                names.push(record);
                continue;
            }
            let record = &names[dice.roll(names.len())];
            let Some(sys_id) = sys_id_of(instance, record) else {
                continue;
            };
            if dice.roll(2) == 0 {
                instance.ok(&[
                    "record",
                    "update",
                    "sc_req_item",
                    &sys_id,
                    &format!("state={}-{round}", NAMES[i]),
                ]);
            } else {
                instance.ok(&[
                    "journal",
                    "add",
                    "sc_req_item",
                    &sys_id,
                    "comments",
                    &format!("{} says {round}", NAMES[i]),
                ]);
            }
        }
        if round == 18 {
            servers[1].kill9();
            servers[1] = instances[1].serve();
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    for proxy in &proxies {
        proxy.set(Mode::Forward);
    }

    // A record deleted on one side and brought back by another's later
    // change comes back with the fields and the comments sent since, not
    // the comments it held before: once the queues are quiet, the hub's
    // reconciliation with each store (repairing) brings those back too.
    let mut last_repair: Option<std::time::Instant> = None;
    wait_for(
        &all,
        "the three instances to agree",
        Duration::from_secs(120),
        || {
            if !settled(&all) {
                return false;
            }
            let (first, count) = snapshot(&instances[0]);
            let agreed = count == first.len()
                && instances[1..].iter().all(|i| {
                    let (theirs, count) = snapshot(i);
                    count == theirs.len() && theirs == first
                });
            if !agreed && last_repair.is_none_or(|t| t.elapsed() > Duration::from_secs(3)) {
                for store in ["store1", "store2"] {
                    instances[0].ok(&["remote", "reconcile", store, "--repair"]);
                }
                last_repair = Some(std::time::Instant::now());
            }
            agreed
        },
    );
    let (agreed, _) = snapshot(&instances[0]);
    assert!(agreed.len() >= 10, "{agreed:?}");
    // Every comment made anywhere on a surviving record is on every copy, once.
    for (record, (_, _, comments)) in &agreed {
        let mut unique = comments.clone();
        unique.dedup();
        assert_eq!(&unique, comments, "comments of {record} once each");
    }
    // Reconciliation agrees: nothing differs between the hub and either
    // store.
    for store in ["store1", "store2"] {
        let found = instances[0].json(&["remote", "reconcile", store, "--json"]);
        assert_eq!(found["state"], "done", "{found}");
        for table in found["tables"].as_array().unwrap() {
            assert_eq!(table["differences"], serde_json::json!([]), "{found}");
            assert_eq!(table["here"], table["peer"], "{found}");
        }
    }
}
