//! Settling a conflict an inbound flow's `error` rule held: the item runs
//! again with the operator's choice, and the settled values are sent on to
//! the remote system (when a flow sends it this process event) so both
//! sides end equal whatever the peer's own rule chose.

use std::collections::BTreeMap;

use redb::ReadableTable;

use super::apply::{apply_inbound_settling, conflicts_counter, load_inbound};
use super::codec::{decode, encode};
use super::compact::keyed::record_at;
use super::records::RecordWriteLimits;
use super::staging::{NewItem, Staging};
use super::stats::Tally;
use super::tables::*;
use super::writer::Txn;
use super::{Actor, Store, StoreError};
use crate::flow::conflict::RECORD;
use crate::ids::{format_time, now_millis};
use crate::queue::{
    CaptureMetadata, ChangedField, ConflictRule, FieldConflict, InboundItem, Payload, QueueStatus,
    Winner,
};
use crate::record::{Operation, Record};

impl Store {
    /// Settles the conflicts holding inbound item `id` in Error: `take`
    /// Peer applies the remote's values, Here keeps ours; either way the
    /// settled values are queued for the remote in the same commit.
    pub async fn resolve_inbound(
        &self,
        id: u64,
        take: Winner,
        run_as: Actor,
        limits: RecordWriteLimits,
    ) -> Result<InboundItem, StoreError> {
        self.writer
            .submit(move |txn| resolve(txn, id, take, &run_as, &limits))
            .await
    }

    /// Conflicts met in items from each remote system, over the store's
    /// life.
    pub fn conflicts_by_remote(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let txn = self.db.begin_read()?;
        let counters = txn.open_table(COUNTERS)?;
        let prefix = conflicts_counter("");
        let mut out = BTreeMap::new();
        for row in counters.range(prefix.as_str()..)? {
            let (name, value) = row?;
            let Some(remote) = name.value().strip_prefix(prefix.as_str()) else {
                break;
            };
            out.insert(remote.to_string(), decode::<u64>(value.value())?);
        }
        Ok(out)
    }
}

fn resolve(
    txn: &mut Txn<'_>,
    id: u64,
    take: Winner,
    run_as: &Actor,
    limits: &RecordWriteLimits,
) -> Result<InboundItem, StoreError> {
    let mut item = load_inbound(txn, id)?;
    if item.status != QueueStatus::Error || item.conflicts.is_empty() {
        return Err(StoreError::Invalid(format!(
            "inbound item {id} is {} and no conflict holds it: only an item its flow's `error` rule holds can be resolved (retry or skip other items)",
            item.status.as_str()
        )));
    }
    let rule = match take {
        Winner::Peer => ConflictRule::PeerWins,
        _ => ConflictRule::ThisSideWins,
    };
    let conflicts = std::mem::take(&mut item.conflicts);
    item.status = QueueStatus::Ready;
    item.error = None;
    txn.open_table(INBOUND)?
        .insert(id, encode(&item).as_slice())?;
    Tally::count_inbound(txn, &item, Some(QueueStatus::Error))?;
    let applied = apply_inbound_settling(txn, id, run_as, limits, Some(rule))?;
    if applied.status == QueueStatus::Processed {
        send_on(txn, &applied, &conflicts, &run_as.user)?;
    }
    Ok(applied)
}

/// Queues the settled values of `conflicts` for the item's remote system,
/// as an item the receiver applies as it is: the conflicting fields as
/// our record now holds them, the whole record when a change met a
/// deletion, or a delete when the record is gone.
fn send_on(
    txn: &Txn<'_>,
    item: &InboundItem,
    conflicts: &[FieldConflict],
    changed_by: &str,
) -> Result<(), StoreError> {
    let remote = item.remote_system.as_str();
    let Some(flow) = txn.capture.outbound_flow(&item.process_event, remote) else {
        // A one-way process: the remote never takes our values.
        return Ok(());
    };
    let flow = flow.to_string();
    let Some(table) = txn
        .capture
        .inbound_flow(&item.process_event, remote)
        .map(|f| f.table.clone())
    else {
        return Ok(());
    };
    let sys_id = item.local_correlation_id.clone();
    let record: Option<Record> = match txn
        .open_table(RECORDS)?
        .get((table.as_str(), sys_id.as_str()))?
    {
        Some(value) => Some(record_at(txn.names, (&table, &sys_id), value.value())?),
        None => None,
    };
    let whole = conflicts.iter().any(|c| c.field == RECORD);
    let (operation, fields): (Operation, Vec<(String, String)>) = match &record {
        None => (Operation::Delete, Vec::new()),
        Some(record) if whole => (
            Operation::Update,
            record.fields.clone().into_iter().collect(),
        ),
        Some(record) => (
            Operation::Update,
            conflicts
                .iter()
                .map(|c| {
                    let value = record.fields.get(&c.field).cloned().unwrap_or_default();
                    (c.field.clone(), value)
                })
                .collect(),
        ),
    };
    let now = now_millis();
    let payload = settled_payload(item, (&table, &sys_id), operation, &fields, changed_by, now);
    let sent = super::staging::sent_fields(&payload);
    let mut staging = Staging::open(txn, now)?;
    staging.stage(NewItem {
        remote_system: remote.to_string(),
        process_event: item.process_event.clone(),
        capture_definition: "(conflict resolution)".to_string(),
        outbound_flow: flow,
        operation,
        table,
        sys_id,
        domain: record
            .map(|r| r.domain)
            .unwrap_or_else(|| item.domain.clone()),
        payload: crate::queue::EncodedPayload::of(&payload),
        attachment_hashes: Vec::new(),
        fields: sent,
        settles: true,
        fresh: false,
    })?;
    staging.finish(txn)
}

/// The payload of the item that sends settled values: `fields` changed.
fn settled_payload(
    item: &InboundItem,
    (table, sys_id): (&str, &str),
    operation: Operation,
    fields: &[(String, String)],
    changed_by: &str,
    now: crate::ids::Millis,
) -> Payload {
    Payload {
        capture_metadata: CaptureMetadata {
            changed_by: changed_by.to_string(),
            timestamp: format_time(now),
            operation,
            table: table.to_string(),
            sys_id: sys_id.to_string(),
            process_event: item.process_event.clone(),
        },
        changed_fields: fields
            .iter()
            .map(|(key, value)| ChangedField {
                key: key.clone(),
                value: value.clone(),
                display_value: value.clone(),
                changed: true,
            })
            .collect(),
        journal_entries: Vec::new(),
        attachments: Vec::new(),
        removed_attachments: Vec::new(),
        attachment_strategy: None,
    }
}
