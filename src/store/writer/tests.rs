//! The writer's chains: a job runs only after every earlier one of its
//! chain was saved.

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
