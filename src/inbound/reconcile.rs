//! Answering a peer's reconciliation: one `Responder` per call says what
//! we sync with the caller, reads our correlated records of the table the
//! caller opens (only one our flows sync with it), answers range summaries
//! and listings from them, and queues for the caller the records it asks
//! us to send (only records of that comparison). Transport-neutral.

use std::sync::Arc;

use super::{Caller, PeerError, PeerGate};
use crate::reconcile::{Column, Description, Digests, Entry, KeyRange, key_of};
use crate::store::Store;
use crate::transport::protocol::{ReconcileAnswer, ReconcileAsk};

/// Most ranges one ask may name, and most records one send.
pub const MOST_PER_ASK: usize = 65_536;

/// One open comparison.
struct Opened {
    table: String,
    column: Column,
    names: Vec<String>,
    journal: Vec<String>,
    digests: Digests,
    /// Our records in it (sorted), built at the first send.
    sys_ids: Option<Vec<u128>>,
}

/// Our side of one reconciliation call.
pub struct Responder {
    store: Arc<Store>,
    caller: Caller,
    ours: Description,
    open: Option<Opened>,
}

impl PeerGate {
    /// Starts answering `caller`'s reconciliation: only while its inbound
    /// state is Active.
    pub async fn reconcile(&self, caller: Caller) -> Result<Responder, PeerError> {
        self.check_inbound_active(&caller)?;
        let store = self.store.clone();
        let config = tokio::task::spawn_blocking(move || store.sync_config()).await??;
        Ok(Responder {
            store: self.store.clone(),
            ours: Description::of(&config, &caller.name),
            caller,
            open: None,
        })
    }
}

impl Responder {
    pub async fn answer(&mut self, ask: ReconcileAsk) -> Result<ReconcileAnswer, PeerError> {
        match ask {
            ReconcileAsk::Describe(_) => Ok(ReconcileAnswer::Description(self.ours.clone())),
            ReconcileAsk::Open {
                table,
                column,
                names,
                journal,
            } => self.open(table, column, names, journal).await,
            ReconcileAsk::Summarize(ranges) => {
                let opened = self.opened(ranges.len())?;
                Ok(ReconcileAnswer::Summaries(
                    ranges
                        .into_iter()
                        .map(|r| opened.digests.summary(r))
                        .collect(),
                ))
            }
            ReconcileAsk::List(ranges) => self.list(ranges).await,
            ReconcileAsk::Send(records) => {
                let remote = self.caller.name.clone();
                let opened = self.opened_mut(records.len())?;
                let known = opened
                    .sys_ids
                    .get_or_insert_with(|| opened.digests.sys_ids());
                let compared = |sys_id: &str| {
                    crate::reconcile::is_sys_id(sys_id)
                        && known.binary_search(&key_of(sys_id)).is_ok()
                };
                if let Some(stranger) = records.iter().find(|r| !compared(&r.sys_id)) {
                    return Err(PeerError::NotCompared {
                        sys_id: stranger.sys_id.clone(),
                        table: opened.table.clone(),
                    });
                }
                let table = opened.table.clone();
                let queued = self
                    .store
                    .stage_repairs(remote.clone(), table.clone(), records)
                    .await?;
                tracing::info!(target: "reconcile", remote_system = %remote, %table, items = queued, "Queued records a peer's reconciliation asked for.");
                Ok(ReconcileAnswer::Sent(queued))
            }
        }
    }

    async fn open(
        &mut self,
        table: String,
        column: Column,
        names: Vec<String>,
        journal: Vec<String>,
    ) -> Result<ReconcileAnswer, PeerError> {
        if !self.ours.syncs_table(&table) {
            return Err(PeerError::TableNotSynced {
                table,
                remote: self.caller.name.clone(),
            });
        }
        let store = self.store.clone();
        let (remote, read_table, read_column, read_journal) = (
            self.caller.name.clone(),
            table.clone(),
            column.clone(),
            journal.clone(),
        );
        let digests = tokio::task::spawn_blocking(move || {
            store.reconcile_digests(&remote, &read_table, (&read_column, &read_journal))
        })
        .await??;
        let answer = ReconcileAnswer::Opened {
            count: digests.len() as u64,
            bounds: digests.bounds(),
        };
        self.open = Some(Opened {
            table,
            column,
            names,
            journal,
            digests,
            sys_ids: None,
        });
        Ok(answer)
    }

    async fn list(&mut self, ranges: Vec<KeyRange>) -> Result<ReconcileAnswer, PeerError> {
        let opened = self.opened(ranges.len())?;
        let mut entries: Vec<Entry> = Vec::new();
        for range in ranges {
            entries.extend(opened.digests.within(range));
            if entries.len() > MOST_PER_ASK {
                return Err(PeerError::TooMuchAsked { most: MOST_PER_ASK });
            }
        }
        let store = self.store.clone();
        let (table, column, names, journal) = (
            opened.table.clone(),
            opened.column.clone(),
            opened.names.clone(),
            opened.journal.clone(),
        );
        let entries = tokio::task::spawn_blocking(move || {
            let mut entries = entries;
            store
                .reconcile_fields(&table, &mut entries, (&column, &names, &journal))
                .map(|()| entries)
        })
        .await??;
        Ok(ReconcileAnswer::Entries(entries))
    }

    fn opened(&self, asked: usize) -> Result<&Opened, PeerError> {
        if asked > MOST_PER_ASK {
            return Err(PeerError::TooMuchAsked { most: MOST_PER_ASK });
        }
        self.open.as_ref().ok_or(PeerError::NothingOpen)
    }

    fn opened_mut(&mut self, asked: usize) -> Result<&mut Opened, PeerError> {
        if asked > MOST_PER_ASK {
            return Err(PeerError::TooMuchAsked { most: MOST_PER_ASK });
        }
        self.open.as_mut().ok_or(PeerError::NothingOpen)
    }
}
