//! Unit tests of the reconciliation rules: ranges, narrowing, the
//! sender a difference gets, and table pairs through mappings.

use super::*;

/// Every key.
const ALL: KeyRange = KeyRange {
    first: 0,
    last: u128::MAX,
};

fn digests(entries: Vec<Entry>) -> Digests {
    let mut builder = DigestsBuilder::default();
    for entry in &entries {
        builder.push(entry);
    }
    builder.finish()
}

fn entry(key: u128, digest: u128) -> Entry {
    Entry {
        key,
        digest,
        on: 0,
        deleted: false,
        sys_id: key_text(key),
        fields: Vec::new(),
    }
}

#[test]
fn ranges_cover_their_parent_without_gaps() {
    for range in [
        ALL,
        KeyRange { first: 5, last: 9 },
        KeyRange {
            first: 100,
            last: 1_000_003,
        },
    ] {
        let parts = range.split();
        assert!(parts.len() as u128 <= FANOUT);
        assert_eq!(parts[0].first, range.first);
        assert_eq!(parts.last().unwrap().last, range.last);
        for w in parts.windows(2) {
            assert_eq!(w[0].last + 1, w[1].first);
        }
    }
}

#[test]
fn narrowing_finds_exactly_the_differing_entries() {
    let ours: Vec<Entry> = (0..10_000u128).map(|k| entry(k * 7919, k)).collect();
    let mut theirs = ours.clone();
    theirs[17].digest = 999_999;
    theirs.remove(4000);
    theirs.push(entry(3, 1));
    let (ours, theirs) = (digests(ours), digests(theirs));
    // As the reconciler starts: the smallest range holding both sides.
    let (a, b) = (ours.bounds().unwrap(), theirs.bounds().unwrap());
    let mut ranges = vec![KeyRange {
        first: a.first.min(b.first),
        last: a.last.max(b.last),
    }];
    let mut listed = Vec::new();
    let mut asked = 0;
    while !ranges.is_empty() {
        let mut next = Vec::new();
        for range in ranges {
            asked += 1;
            match refine(range, ours.summary(range), theirs.summary(range)) {
                Refine::Same => {}
                Refine::List => listed.push(range),
                Refine::Split(parts) => next.extend(parts),
            }
        }
        ranges = next;
    }
    let pair = TablePair {
        here: "t".into(),
        peer: "t".into(),
        columns: Columns::All,
        to_peer: Some(ConflictRule::NewestWins),
        from_peer: Some(ConflictRule::NewestWins),
        journals: Vec::new(),
    };
    let mut found = Vec::new();
    for range in listed {
        let here = ours.within(range);
        let here: Vec<&Entry> = here.iter().collect();
        found.extend(differences(&pair, &here, &theirs.within(range)));
    }
    let kinds: Vec<(String, Kind)> = found.into_iter().map(|d| (d.key, d.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (key_text(3), Kind::MissingHere),
            (key_text(17 * 7919), Kind::Differs { fields: vec![] }),
            (key_text(4000 * 7919), Kind::MissingThere),
        ]
    );
    assert!(
        asked < 200,
        "asked about {asked} ranges for three differences"
    );
}

#[test]
fn newest_wins_picks_the_same_sender_from_both_sides() {
    let pair = TablePair {
        here: "t".into(),
        peer: "t".into(),
        columns: Columns::All,
        to_peer: Some(ConflictRule::NewestWins),
        from_peer: Some(ConflictRule::NewestWins),
        journals: Vec::new(),
    };
    let mut a = entry(1, 10);
    a.on = 5;
    let mut b = entry(1, 20);
    b.on = 5;
    let kind = Kind::Differs { fields: vec![] };
    assert_eq!(
        repair_of(&pair, &kind, Some(&a), Some(&b)),
        Repair::Peer { settles: true }
    );
    assert_eq!(
        repair_of(&pair, &kind, Some(&b), Some(&a)),
        Repair::Here { settles: true }
    );
}

#[test]
fn mapped_fields_pair_up_both_ways() {
    let edge = Description {
        sends: vec![Sends {
            process_event: "e".into(),
            table: "incident".into(),
            fields: vec!["short_description".into(), "state".into()],
            journal_fields: vec!["comments".into()],
        }],
        receives: vec![],
    };
    let hub = Description {
        sends: vec![],
        receives: vec![Receives {
            process_event: "e".into(),
            table: "ticket".into(),
            rule: ConflictRule::NewestWins,
            map: Some(vec![("short_description".into(), "title".into())]),
            journal_map: vec![("comments".into(), "work_notes".into())],
        }],
    };
    let pairs = table_pairs(&hub, &edge);
    assert_eq!(pairs.len(), 1);
    assert_eq!(pairs[0].here, "ticket");
    assert_eq!(pairs[0].peer, "incident");
    assert_eq!(
        pairs[0].columns,
        Columns::Pairs(vec![("title".into(), "short_description".into())])
    );
    assert!(pairs[0].to_peer.is_none() && pairs[0].from_peer.is_some());
    let back = table_pairs(&edge, &hub);
    assert_eq!(
        back[0].columns,
        Columns::Pairs(vec![("short_description".into(), "title".into())])
    );
}

#[test]
fn journals_compare_only_where_entries_travel_both_ways_and_differ_alone_repair_both() {
    let side = |table: &str, sent: &str, map_from: &str, map_to: &str| Description {
        sends: vec![Sends {
            process_event: "e".into(),
            table: table.into(),
            fields: vec!["state".into()],
            journal_fields: vec![sent.into()],
        }],
        receives: vec![Receives {
            process_event: "e".into(),
            table: table.into(),
            rule: ConflictRule::NewestWins,
            map: None,
            journal_map: vec![(map_from.into(), map_to.into())],
        }],
    };
    // The edge sends comments, which the hub keeps as work notes and sends
    // back as such, into the edge's comments: one journal both ways.
    let edge = side("incident", "comments", "work_notes", "comments");
    let hub = side("ticket", "work_notes", "comments", "work_notes");
    let pairs = table_pairs(&edge, &hub);
    assert_eq!(
        pairs[0].journals,
        vec![("comments".to_string(), "work_notes".to_string())]
    );
    // A journal sent one way only is not compared.
    let one_way = side("ticket", "work_notes", "x", "y");
    assert!(table_pairs(&edge, &one_way)[0].journals.is_empty());
    // Only the journals differ: both sides send.
    let kind = Kind::Differs {
        fields: vec![JOURNAL_FIELD.to_string()],
    };
    assert_eq!(
        repair_of(&pairs[0], &kind, Some(&entry(1, 1)), Some(&entry(1, 2))),
        Repair::Both
    );
}
