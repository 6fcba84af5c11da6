//! Flow contexts in the store: written in the same transaction as the
//! processing they describe, read by id, deleted with their item.

use redb::WriteTransaction;

use super::codec::{decode, encode};
use super::tables::*;
use super::writer::Txn;
use super::{Store, StoreError};
use crate::queue::{FlowContext, FlowTrace, InboundItem, QueueStatus};

/// Stores the context of a processing of `queue` item `item_id` under a
/// new id, and returns the id (for the item's `flow_contexts`). Not while
/// the caller's own `Counters` is open: see `save_as`.
pub(super) fn save(
    txn: &Txn<'_>,
    trace: FlowTrace,
    queue: &str,
    item_id: u64,
    outcome: QueueStatus,
    error: Option<String>,
) -> Result<u64, StoreError> {
    let id = {
        let mut counters = super::counters::Counters::load(txn)?;
        let id = counters.next(COUNTER)?;
        counters.save();
        id
    };
    save_as(txn, id, trace, queue, item_id, outcome, error)?;
    Ok(id)
}

/// Saves the context of inbound `item`'s processing (ended in its current
/// status) and links the item to it.
pub(super) fn link_inbound(
    txn: &Txn<'_>,
    trace: FlowTrace,
    item: &mut InboundItem,
) -> Result<(), StoreError> {
    let id = save(
        txn,
        trace,
        "inbound",
        item.id,
        item.status,
        item.error.clone(),
    )?;
    item.flow_contexts.push(id);
    Ok(())
}

/// The counter that numbers flow contexts.
pub(super) const COUNTER: &str = "flow_context";

/// Stores a context under `id`, taken from the `COUNTER` counter.
pub(super) fn save_as(
    txn: &Txn<'_>,
    id: u64,
    trace: FlowTrace,
    queue: &str,
    item_id: u64,
    outcome: QueueStatus,
    error: Option<String>,
) -> Result<(), StoreError> {
    let context = trace.finish(id, queue, item_id, outcome, error);
    txn.flow_contexts()?
        .insert(id, encode(&context).as_slice())?;
    Ok(())
}

/// Deletes the contexts `ids` (of a purged item).
pub(super) fn delete(txn: &WriteTransaction, ids: &[u64]) -> Result<(), StoreError> {
    let mut table = txn.open_table(FLOW_CONTEXTS)?;
    for &id in ids {
        table.remove(id)?;
    }
    Ok(())
}

impl Store {
    /// The context `id`; an inbound item's inputs are told from the item
    /// (`InboundItem::context_inputs`), under what the context stored.
    pub fn flow_context(&self, id: u64) -> Result<Option<FlowContext>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FLOW_CONTEXTS)?;
        let Some(value) = table.get(id)? else {
            return Ok(None);
        };
        let mut context: FlowContext = decode(value.value())?;
        if context.queue == "inbound" {
            let inbound = txn.open_table(INBOUND)?;
            if let Some(value) = inbound.get(context.item_id)? {
                let mut inputs = decode::<InboundItem>(value.value())?.context_inputs();
                if let serde_json::Value::Object(stored) = std::mem::take(&mut context.inputs) {
                    inputs
                        .as_object_mut()
                        .expect("the inputs are an object")
                        .extend(stored);
                }
                context.inputs = inputs;
            }
        }
        Ok(Some(context))
    }
}
