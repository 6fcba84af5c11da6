//! The writer's chains (a job runs only after every earlier one of its
//! chain was saved) and the field names it numbers.

use super::test_support::{hold, scratch_store};
use super::*;

fn note(key: &'static str) -> impl FnOnce(&mut Txn<'_>) -> Result<(), StoreError> {
    move |txn| {
        txn.open_table(META)?
            .insert(key, encode(&1u64).as_slice())?;
        Ok(())
    }
}

fn noted(store: &super::super::Store, key: &str) -> bool {
    let txn = store.db.begin_read().unwrap();
    txn.open_table(META).unwrap().get(key).unwrap().is_some()
}

/// A job of a chain runs only if every earlier one was saved: not after
/// one that failed by itself, nor after one whose commit failed.
#[tokio::test]
async fn a_chain_saves_a_job_only_after_every_earlier_one() {
    let (_dir, store) = scratch_store("hub");
    let refused = |error: StoreError| error.to_string();
    let writer = &store.writer;

    let chain = Chain::default();
    let held = hold(&store);
    let first = writer.enqueue_chained(&chain, |_| -> Result<(), StoreError> {
        Err(StoreError::Invalid("the batch is malformed".into()))
    });
    let second = writer.enqueue_chained(&chain, note("second"));
    let apart = writer.enqueue_chained(&Chain::default(), note("apart"));
    held.await.unwrap();
    assert_eq!(refused(first.await.unwrap_err()), "the batch is malformed");
    let second = refused(second.await.unwrap_err());
    assert!(
        second.contains("an earlier batch of this stream was not saved"),
        "{second}"
    );
    apart.await.unwrap();
    let later = writer.enqueue_chained(&chain, note("later"));
    assert!(later.await.is_err(), "a broken chain stays broken");
    assert!(!noted(&store, "second") && !noted(&store, "later") && noted(&store, "apart"));

    // Its own job worked, but the commit it was in did not.
    let chain = Chain::default();
    let held = hold(&store);
    let saved_alone = writer.enqueue_chained(&chain, note("in a failed commit"));
    let poison = writer.enqueue(Durability::Immediate, |_| -> Result<(), StoreError> {
        Err(StoreError::Storage("the disk went away".into()))
    });
    // The two queued while the writer held (or with the hold, should the
    // writer not have taken it yet) share one commit; how the hold's own
    // commit ended depends on which, and is not what this checks.
    let _ = held.await;
    assert!(saved_alone.await.is_err() && poison.await.is_err());
    let next = writer.enqueue_chained(&chain, note("after the failed commit"));
    let next = refused(next.await.unwrap_err());
    assert!(next.contains("was not saved"), "{next}");
    assert!(!noted(&store, "in a failed commit") && !noted(&store, "after the failed commit"));
    store.close();
}

fn create(fields: &[(&str, &str)]) -> crate::record::RecordWrite {
    crate::record::RecordWrite {
        operation: crate::record::Operation::Create,
        table: "incident".to_string(),
        sys_id: None,
        fields: fields
            .iter()
            .map(|(name, value)| ((*name).to_string(), (*value).to_string()))
            .collect(),
        journal: Vec::new(),
        attachments: Default::default(),
    }
}

/// A record's field names are numbered by the commit that first stores
/// them: the record after it names them by number and reads back, after a
/// reopen too. Numbers given in a commit that failed are given again.
#[tokio::test]
async fn field_names_are_numbered_once_and_not_by_a_failed_commit() {
    let (dir, store) = scratch_store("hub");
    let actor = super::super::Actor {
        user: "admin".to_string(),
        domain: crate::domain::Domain::global(),
    };
    let limits = super::super::RecordWriteLimits {
        max_record_bytes: 1 << 20,
    };
    let held = hold(&store);
    let lost = store.writer.enqueue(Durability::Immediate, |txn| {
        txn.name_fields(&["impact".to_string()])
    });
    let poison = store
        .writer
        .enqueue(Durability::Immediate, |_| -> Result<(), StoreError> {
            Err(StoreError::Storage("the disk went away".into()))
        });
    let _ = held.await;
    assert!(lost.await.is_err() && poison.await.is_err());
    assert_eq!(store.db.names().view().number("impact"), None);

    let stored_bytes = |store: &super::super::Store, sys_id: &str| {
        let txn = store.db.begin_read().unwrap();
        let table = txn.open_table(super::super::tables::RECORDS).unwrap();
        table
            .get(("incident", sys_id))
            .unwrap()
            .unwrap()
            .value()
            .to_vec()
    };
    let first = store
        .write_records(
            actor.clone(),
            vec![create(&[("urgency", "1"), ("impact", "2")])],
            limits.clone(),
        )
        .await
        .unwrap();
    // The first record names them as text; the commit numbers them.
    let text = String::from_utf8_lossy(&stored_bytes(&store, &first[0].sys_id)).into_owned();
    assert!(
        text.contains("urgency") && text.contains("impact"),
        "{text}"
    );
    let numbers = {
        let names = store.db.names().view();
        (names.number("impact"), names.number("urgency"))
    };
    assert_eq!(numbers, (Some(1), Some(2)));
    let second = store
        .write_records(
            actor,
            vec![create(&[("urgency", "3"), ("impact", "4")])],
            limits,
        )
        .await
        .unwrap();
    let bytes = stored_bytes(&store, &second[0].sys_id);
    assert_eq!(bytes[0], super::super::codec::LEAN);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    assert!(
        !text.contains("urgency") && !text.contains("impact"),
        "{text}"
    );
    store.close();
    drop(store);

    let store = super::super::Store::open(dir.path()).unwrap();
    for (write, urgency) in [(&first, "1"), (&second, "3")] {
        let (record, _) = store.record("incident", &write[0].sys_id).unwrap().unwrap();
        assert_eq!(record.fields["urgency"], urgency);
    }
    store.close();
}
