//! Staging outbound items inside a write transaction: each gets the next
//! item id and the next sequence of its remote system, notes in the
//! record's correlation what it sends (and says what that replaces), and
//! is counted. Captures, settled conflicts and initial loads all stage
//! their items here.

use crate::queue::EncodedPayload;

use super::open::Open;
use super::writer::Txn;

use super::StoreError;
use super::codec::encode;
use super::correlations::{SentField, note_captured};
use super::counters::Counters;
use super::stats::Tally;
use super::tables::*;
use crate::capture::Captured;
use crate::domain::Domain;
use crate::ids::Millis;
use crate::queue::{OutboundItem, Payload, QueueStatus, value_digest};
use crate::record::{Operation, Record};

/// One outbound item to stage.
pub(super) struct NewItem {
    pub remote_system: String,
    pub process_event: String,
    pub capture_definition: String,
    pub outbound_flow: String,
    pub operation: Operation,
    pub table: String,
    pub sys_id: String,
    pub domain: Domain,
    pub payload: EncodedPayload,
    pub attachment_hashes: Vec<String>,
    /// The payload's fields, for the correlation's sync state.
    pub fields: Vec<SentField>,
    /// Settles a conflict: the receiver applies it as it is.
    pub settles: bool,
    /// Its record was created just now under a new sys_id, so it has no
    /// correlation yet to read.
    pub fresh: bool,
}

impl NewItem {
    /// The item a capture makes for `record`'s change by `operation`
    /// (`fresh`: a create under a sys_id made for it).
    pub(super) fn captured(
        c: Captured,
        operation: Operation,
        record: &Record,
        fresh: bool,
    ) -> NewItem {
        NewItem {
            fields: sent_fields(&c.payload),
            attachment_hashes: c
                .payload
                .attachments
                .iter()
                .map(|a| a.hash.clone())
                .collect(),
            payload: EncodedPayload::of(&c.payload),
            remote_system: c.remote_system,
            process_event: c.process_event,
            capture_definition: c.capture_definition,
            outbound_flow: c.outbound_flow,
            operation,
            table: record.table.clone(),
            sys_id: record.sys_id.clone(),
            domain: record.domain.clone(),
            settles: false,
            fresh,
        }
    }
}

/// A payload's fields as the correlation's sync state notes them.
pub(super) fn sent_fields(payload: &Payload) -> Vec<SentField> {
    payload
        .changed_fields
        .iter()
        .map(|f| SentField {
            name: f.key.clone(),
            digest: value_digest(&f.value),
            changed: f.changed,
        })
        .collect()
}

/// Staging in one transaction. Its tables are opened by the first item
/// staged: most writes on a hub capture nothing (the sender is never sent
/// its own change back), and opening four tables for nothing cost about 4 %
/// of the hub's writer thread.
pub(super) struct Staging<'t, 'a> {
    txn: &'t Txn<'a>,
    tables: Option<StagingTables<'t, 'a>>,
    tally: Tally,
    now: Millis,
    /// Items staged so far.
    staged: usize,
}

/// The tables staging writes, open once something is staged.
struct StagingTables<'t, 'a> {
    outbound: Open<'t, 'a, u64, &'static [u8]>,
    by_remote: redb::Table<'t, (&'static str, u64), u64>,
    correlations: Open<'t, 'a, (&'static str, &'static str, &'static str), &'static [u8]>,
    counters: Counters<'t>,
}

impl<'t, 'a> StagingTables<'t, 'a> {
    fn open(txn: &'t Txn<'a>) -> Result<StagingTables<'t, 'a>, StoreError> {
        Ok(StagingTables {
            outbound: txn.outbound()?,
            by_remote: txn.open_table(OUTBOUND_BY_REMOTE)?,
            correlations: txn.correlations()?,
            counters: Counters::load(txn)?,
        })
    }
}

impl<'t, 'a> Staging<'t, 'a> {
    pub(super) fn open(txn: &'t Txn<'a>, now: Millis) -> Result<Staging<'t, 'a>, StoreError> {
        Ok(Staging {
            txn,
            tables: None,
            tally: Tally::new(now),
            now,
            staged: 0,
        })
    }

    /// Stages `item` as Ready, created now.
    pub(super) fn stage(&mut self, item: NewItem) -> Result<(), StoreError> {
        let tables = match &mut self.tables {
            Some(tables) => tables,
            None => self.tables.insert(StagingTables::open(self.txn)?),
        };
        let id = tables.counters.next("outbound_item")?;
        let sequence = tables
            .counters
            .next(&format!("outbound_seq/{}", item.remote_system))?;
        let bases = note_captured(
            (&mut tables.correlations, self.txn.names),
            (&item.table, &item.sys_id, &item.remote_system),
            sequence,
            (item.operation, item.fresh),
            &item.fields,
            self.now,
        )?;
        let staged = OutboundItem {
            id,
            sequence,
            remote_system: item.remote_system,
            process_event: item.process_event,
            capture_definition: item.capture_definition,
            outbound_flow: item.outbound_flow,
            operation: item.operation,
            table: item.table,
            local_correlation_id: item.sys_id,
            domain: item.domain,
            status: QueueStatus::Ready,
            created_on: self.now,
            payload: item.payload,
            error: None,
            attempts: 0,
            next_attempt_on: None,
            sent_on: None,
            processed_on: None,
            last_error: None,
            attachment_hashes: item.attachment_hashes,
            flow_contexts: Vec::new(),
            bases,
            settles: item.settles,
        };
        tables.outbound.insert(id, encode(&staged).as_slice())?;
        tables
            .by_remote
            .insert((staged.remote_system.as_str(), sequence), id)?;
        self.tally.outbound(&staged, None);
        self.staged += 1;
        Ok(())
    }

    /// Saves the counters and the tally; the commit will wake the
    /// sessions if items were staged.
    pub(super) fn finish(self, txn: &Txn<'_>) -> Result<(), StoreError> {
        let Staging {
            tables,
            tally,
            staged,
            ..
        } = self;
        if staged > 0 {
            txn.made_ready.set(true);
        }
        if let Some(tables) = tables {
            tables.counters.save();
        }
        tally.save(txn)
    }
}
