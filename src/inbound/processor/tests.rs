//! The processor stepped on a store linked to `hub`: items applied in
//! a pass, then idle.

use super::*;
use crate::domain::Domain;
use crate::queue::QueueStatus;
use crate::store::{QueueFilter, ReceivedItem};
use crate::testing::{create_incidents, linked_store};

/// The items this store queued for `hub`, as if `hub` had sent them.
fn as_received(store: &Store) -> Vec<ReceivedItem> {
    store
        .outbound_items(&QueueFilter::default())
        .expect("the outbound queue reads")
        .into_iter()
        .map(|item| ReceivedItem {
            sequence: item.sequence,
            process_event: item.process_event,
            operation: Some(item.operation),
            source_table: item.table,
            remote_correlation_id: item.local_correlation_id,
            local_correlation_id: String::new(),
            payload: item.payload,
            attachment_grants: Vec::new(),
            bases: item.bases,
            changed_on: item.created_on,
            settles: item.settles,
        })
        .collect()
}

fn inbound_statuses(store: &Store) -> Vec<QueueStatus> {
    store
        .inbound_items(&QueueFilter::default())
        .expect("the inbound queue reads")
        .into_iter()
        .map(|item| item.status)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_processor_applies_what_is_ready_then_idles_until_woken_or_stopped() {
    let (_dir, store) = linked_store().await;
    create_incidents(&store, 3).await;
    let received = as_received(&store);
    store
        .receive(
            "hub".to_string(),
            "sha256:hub".to_string(),
            Domain::global(),
            received,
        )
        .await
        .expect("the items are queued");
    let workers = Workers::new();
    let sync = crate::runtime::SyncRuntime::default();
    let limits = RecordWriteLimits {
        max_record_bytes: 1 << 20,
    };
    let mut processor = Processor::new(store.clone(), limits, &sync, workers.clone());

    assert_eq!(processor.step().await, Step::Busy, "three items applied");
    assert_eq!(inbound_statuses(&store), vec![QueueStatus::Processed; 3]);
    let incidents = store
        .records("incident", 100, &|_| true)
        .expect("the records read");
    let applied = incidents
        .iter()
        .filter(|r| r.fields.get("short_description").map(String::as_str) == Some("incident 2"))
        .count();
    assert_eq!(applied, 2, "the original and its copy from `hub`");

    // The next pass's read started while the first pass committed and
    // found nothing: items received since are read again and applied.
    create_incidents(&store, 2).await;
    store
        .receive(
            "hub".to_string(),
            "sha256:hub".to_string(),
            Domain::global(),
            as_received(&store),
        )
        .await
        .expect("the new items are queued, the resent ones dropped");
    assert_eq!(processor.step().await, Step::Busy, "two more applied");
    assert_eq!(inbound_statuses(&store), vec![QueueStatus::Processed; 5]);

    let now = tokio::time::Instant::now();
    assert_eq!(processor.step().await, Step::Idle(Some(now + IDLE_PASS)));
    assert!(workers.stop(crate::worker::EXIT_DEADLINE).await.is_empty());
    assert_eq!(processor.step().await, Step::Done(()));
}
