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

/// The records of `incident` whose short description is `text`.
fn incidents_saying(store: &Store, text: &str) -> usize {
    let incidents = store
        .records("incident", 100, &|_| true)
        .expect("the records read");
    incidents
        .iter()
        .filter(|r| r.fields.get("short_description").map(String::as_str) == Some(text))
        .count()
}

#[tokio::test(start_paused = true)]
async fn items_are_applied_as_they_arrive_only_while_nothing_of_their_remote_waits() {
    let (_dir, store) = linked_store().await;
    create_incidents(&store, 2).await;
    let received = as_received(&store);
    let receive = |items: Vec<ReceivedItem>, run_as: &str, max_record_bytes| {
        let apply = crate::store::ApplyAs {
            run_as: run_as.to_string(),
            limits: RecordWriteLimits { max_record_bytes },
        };
        let store = store.clone();
        async move {
            let hub = ("hub".to_string(), "sha256:hub".to_string());
            let chain = crate::store::Chain::default();
            store
                .receive_applying(hub, Domain::global(), items, apply, &chain)
                .await
                .expect("the items are queued")
        }
    };

    // Its write would be refused (the record is over the limit): nothing
    // of it is written, and it stays Ready for the processor.
    receive(vec![received[0].clone()], "runas_user", 10).await;
    assert_eq!(inbound_statuses(&store), [QueueStatus::Ready]);
    assert_eq!(incidents_saying(&store, "incident 0"), 1, "only our own");
    // The next could be applied, but waits behind it.
    receive(vec![received[1].clone()], "runas_user", 1 << 20).await;
    assert_eq!(inbound_statuses(&store), [QueueStatus::Ready; 2]);
    assert_eq!(incidents_saying(&store, "incident 1"), 1);

    // The processor runs both, as always.
    let workers = Workers::new();
    let sync = crate::runtime::SyncRuntime::default();
    let limits = RecordWriteLimits {
        max_record_bytes: 1 << 20,
    };
    let mut processor = Processor::new(store.clone(), limits, &sync, workers.clone());
    assert_eq!(processor.step().await, Step::Busy);
    assert_eq!(inbound_statuses(&store), [QueueStatus::Processed; 2]);

    // Nothing waits now: the next is applied in the transaction that
    // queues it, with its context, and the processor finds nothing.
    create_incidents(&store, 1).await;
    receive(as_received(&store), "runas_user", 1 << 20).await;
    assert_eq!(inbound_statuses(&store), [QueueStatus::Processed; 3]);
    assert_eq!(
        incidents_saying(&store, "incident 0"),
        4,
        "two of ours, two copies"
    );
    let item = store
        .inbound_items(&QueueFilter::default())
        .unwrap()
        .pop()
        .unwrap();
    let context = store
        .flow_context(*item.flow_contexts.last().expect("a context"))
        .unwrap()
        .expect("the context reads");
    assert_eq!(context.outcome, QueueStatus::Processed);
    assert!(
        context.steps.iter().any(|s| s.name == "write"),
        "{context:?}"
    );
    let (stats, _) = store.queue_stats(crate::ids::now_millis()).unwrap();
    let inbound = stats
        .iter()
        .find(|s| s.queue.as_str() == "inbound")
        .expect("the inbound queue's figures");
    assert_eq!((inbound.counts.ready, inbound.counts.processed), (0, 3));
    let now = tokio::time::Instant::now();
    assert_eq!(processor.step().await, Step::Idle(Some(now + IDLE_PASS)));

    // A run-as user who is not there applies nothing: Ready, and the
    // processor says why.
    create_incidents(&store, 1).await;
    receive(as_received(&store), "nobody", 1 << 20).await;
    let statuses = inbound_statuses(&store);
    assert_eq!(statuses.last(), Some(&QueueStatus::Ready), "{statuses:?}");
    assert!(workers.stop(crate::worker::EXIT_DEADLINE).await.is_empty());
}
