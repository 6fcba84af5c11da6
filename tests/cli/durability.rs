//! Nothing lost, nothing invented: SIGKILL the real server while clients
//! write, restart it, and compare what was acknowledged with what is stored.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use procsync::record::{Operation, RecordWrite};
use procsync::transport::client::AdminClient;

use crate::support::{Instance, apply_definitions, wait_until};

fn incident(n: usize) -> RecordWrite {
    let mut fields = BTreeMap::new();
    fields.insert("short_description".to_string(), format!("incident {n}"));
    fields.insert("priority".to_string(), "1".to_string());
    fields.insert("sys_domain".to_string(), "global/acme".to_string());
    RecordWrite {
        attachments: Default::default(),
        operation: Operation::Create,
        table: "incident".to_string(),
        sys_id: None,
        fields,
        journal: Vec::new(),
    }
}

#[test]
fn sigkill_during_writes_loses_no_acknowledged_write_and_invents_nothing() {
    let instance = Instance::init("edge-1");
    let mut server = instance.serve();
    apply_definitions(&instance);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let acknowledged: Arc<Mutex<BTreeSet<String>>> = Default::default();

    for round in 0..3 {
        let target = instance.target(&instance.token());
        let acked = acknowledged.clone();
        // Writers run until the server dies under them.
        let writers = runtime.spawn(async move {
            let mut tasks = Vec::new();
            for client_n in 0..8 {
                let target = target.clone();
                let acked = acked.clone();
                tasks.push(tokio::spawn(async move {
                    let Ok(mut client) = AdminClient::connect(&target).await else {
                        return;
                    };
                    for i in 0.. {
                        let n = round * 1_000_000 + client_n * 10_000 + i;
                        match client.write_records(vec![incident(n)]).await {
                            Ok(results) => {
                                acked.lock().unwrap().insert(results[0].sys_id.clone());
                            }
                            Err(_) => return,
                        }
                    }
                }));
            }
            for task in tasks {
                let _ = task.await;
            }
        });
        let before = acknowledged.lock().unwrap().len();
        wait_until("writes to be acknowledged", Duration::from_secs(30), || {
            acknowledged.lock().unwrap().len() >= before + 50 + round * 37
        });
        server.kill9();
        runtime.block_on(writers).unwrap();
        server = instance.serve();
    }

    let acked = acknowledged.lock().unwrap().clone();
    assert!(
        acked.len() >= 150,
        "only {} writes were acknowledged",
        acked.len()
    );
    runtime.block_on(async {
        let mut client: AdminClient = instance.client().await;
        let stored = client.list_records("incident", "", 100_000).await.unwrap();
        let stored_ids: BTreeSet<String> =
            stored.iter().map(|r| r.fields["sys_id"].clone()).collect();
        let missing: Vec<_> = acked.difference(&stored_ids).collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged writes were lost, e.g. {:?}",
            missing.len(),
            missing.first()
        );
        // Writes in flight at the kill may or may not have committed, but at
        // most one per writer per round.
        assert!(
            stored_ids.len() <= acked.len() + 8 * 3,
            "records appeared that nobody wrote"
        );

        for remote in ["hub", "other"] {
            let items = client.list_outbound("", remote, 1_000_000).await.unwrap();
            let mut per_record: BTreeMap<&str, usize> = BTreeMap::new();
            for item in &items {
                *per_record
                    .entry(item.local_correlation_id.as_str())
                    .or_default() += 1;
            }
            for id in &stored_ids {
                assert_eq!(
                    per_record.get(id.as_str()),
                    Some(&1),
                    "record {id} must have exactly one item for {remote}"
                );
            }
            assert_eq!(
                items.len(),
                stored_ids.len(),
                "queue items without a record for {remote}"
            );
            let sequences: Vec<u64> = items.iter().map(|i| i.sequence).collect();
            let expected: Vec<u64> = (1..=items.len() as u64).collect();
            assert_eq!(
                sequences, expected,
                "sequence numbers for {remote} must be gapless and ordered"
            );
        }
    });
}

/// Writes are prepared off the writer thread against a snapshot; when
/// concurrent writes change a record in between, the writer must notice
/// and prepare again. No update may be lost.
#[test]
fn concurrent_updates_of_one_record_lose_nothing() {
    let instance = Instance::init("edge-1");
    let _server = instance.serve();
    apply_definitions(&instance);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (clients, updates) = (16usize, 20usize);
    runtime.block_on(async {
        let mut client = instance.client().await;
        let created = client.write_records(vec![incident(0)]).await.unwrap();
        let sys_id = created[0].sys_id.clone();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let mut client = instance.client().await;
            let sys_id = sys_id.clone();
            tasks.push(tokio::spawn(async move {
                for u in 0..updates {
                    let mut fields = BTreeMap::new();
                    fields.insert(format!("counter_{c}"), u.to_string());
                    fields.insert("state".to_string(), format!("{c}-{u}"));
                    client
                        .write_records(vec![RecordWrite {
                            attachments: Default::default(),
                            operation: Operation::Update,
                            table: "incident".to_string(),
                            sys_id: Some(sys_id.clone()),
                            fields,
                            journal: Vec::new(),
                        }])
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let record = client.get_record("incident", &sys_id).await.unwrap();
        assert_eq!(
            record.fields["sys_mod_count"],
            (clients * updates).to_string()
        );
        for c in 0..clients {
            assert_eq!(
                record.fields[&format!("counter_{c}")],
                (updates - 1).to_string()
            );
        }
        // Every update changed `state` (an included field): one item each.
        let items = client.list_outbound("", "hub", 100_000).await.unwrap();
        assert_eq!(items.len(), 1 + clients * updates);
    });
}
