//! Answering a peer's reconciliation: one `Responder` per call says what
//! we sync with the caller, reads our correlated records of the table the
//! caller opens (only one our flows sync with it), answers range summaries
//! and listings from them, and queues for the caller the records it asks
//! us to send (only records of that comparison). Transport-neutral: the
//! same `serve` answers a call whichever side opened it.

use std::sync::Arc;

use super::{Caller, PeerError, PeerGate};
use crate::ids::is_sys_id;
use crate::reconcile::{Compared, Description, Digests, Entry, KeyRange, SendRecord, key_of};
use crate::store::Store;
use crate::transport::protocol::{ReconcileAnswer, ReconcileAsk};

/// Most ranges one ask may name, and most records one send.
pub const MOST_PER_ASK: usize = 65_536;

/// One open comparison.
struct Opened {
    compared: Arc<Compared>,
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

/// How long a reconciliation call may wait for the asker's next question.
const ASK_IDLE: std::time::Duration = std::time::Duration::from_secs(300);

impl Responder {
    /// Answers the questions arriving on `asks`, one reply each, in order,
    /// until the asker ends the call, asks nothing for `ASK_IDLE`, this
    /// instance stops, or a question is refused (the refusal is the last
    /// reply).
    pub async fn serve(
        mut self,
        mut asks: impl tokio_stream::Stream<Item = Result<ReconcileAsk, String>> + Unpin,
        replies: tokio::sync::mpsc::Sender<Result<ReconcileAnswer, PeerError>>,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) {
        let name = self.caller.name.clone();
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(ASK_IDLE, tokio_stream::StreamExt::next(&mut asks)) => next,
                () = crate::worker::stopped(&mut stopped) => break,
            };
            let answer = match next {
                Ok(Some(Ok(ask))) => self.answer(ask).await,
                Ok(Some(Err(problem))) => Err(PeerError::BadAsk(problem)),
                Ok(None) => break,
                Err(_) => {
                    tracing::info!(target: "reconcile", remote_system = %name, secs = ASK_IDLE.as_secs(), "Ended a peer's reconciliation call that asked nothing for too long.");
                    break;
                }
            };
            if let Err(e) = &answer {
                tracing::warn!(target: "reconcile", remote_system = %name, error = %e, "Refused a peer's reconciliation question.");
            }
            let refused = answer.is_err();
            if replies.send(answer).await.is_err() || refused {
                break;
            }
        }
    }

    pub async fn answer(&mut self, ask: ReconcileAsk) -> Result<ReconcileAnswer, PeerError> {
        match ask {
            ReconcileAsk::Describe(_) => Ok(ReconcileAnswer::Description(self.ours.clone())),
            ReconcileAsk::Open(compared) => self.open(compared).await,
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
            ReconcileAsk::Send(records) => self.send(records).await,
        }
    }

    async fn open(&mut self, compared: Compared) -> Result<ReconcileAnswer, PeerError> {
        if !self.ours.syncs_table(&compared.table) {
            return Err(PeerError::TableNotSynced {
                table: compared.table,
                remote: self.caller.name.clone(),
            });
        }
        let (store, remote, compared) = (
            self.store.clone(),
            self.caller.name.clone(),
            Arc::new(compared),
        );
        let read = compared.clone();
        let digests =
            tokio::task::spawn_blocking(move || store.reconcile_digests(&remote, &read)).await??;
        let answer = ReconcileAnswer::Opened {
            count: digests.len() as u64,
            bounds: digests.bounds(),
        };
        self.open = Some(Opened {
            compared,
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
            within_limit(entries.len())?;
        }
        let (store, compared) = (self.store.clone(), opened.compared.clone());
        let entries = tokio::task::spawn_blocking(move || {
            let mut entries = entries;
            store
                .reconcile_fields(&compared, &mut entries)
                .map(|()| entries)
        })
        .await??;
        Ok(ReconcileAnswer::Entries(entries))
    }

    /// Queues for the caller the records it asks for, only records of the
    /// open comparison.
    async fn send(&mut self, records: Vec<SendRecord>) -> Result<ReconcileAnswer, PeerError> {
        let remote = self.caller.name.clone();
        within_limit(records.len())?;
        let opened = self.open.as_mut().ok_or(PeerError::NothingOpen)?;
        let known = opened
            .sys_ids
            .get_or_insert_with(|| opened.digests.sys_ids());
        let compared =
            |sys_id: &str| is_sys_id(sys_id) && known.binary_search(&key_of(sys_id)).is_ok();
        if let Some(stranger) = records.iter().find(|r| !compared(&r.sys_id)) {
            return Err(PeerError::NotCompared {
                sys_id: stranger.sys_id.clone(),
                table: opened.compared.table.clone(),
            });
        }
        let table = opened.compared.table.clone();
        let queued = self
            .store
            .stage_repairs(remote.clone(), table.clone(), records)
            .await?;
        tracing::info!(target: "reconcile", remote_system = %remote, %table, items = queued, "Queued records a peer's reconciliation asked for.");
        Ok(ReconcileAnswer::Sent(queued))
    }

    /// The open comparison, for an ask naming `asked` ranges or records.
    fn opened(&self, asked: usize) -> Result<&Opened, PeerError> {
        within_limit(asked)?;
        self.open.as_ref().ok_or(PeerError::NothingOpen)
    }
}

/// Refuses an ask naming more than `MOST_PER_ASK` ranges or records.
fn within_limit(asked: usize) -> Result<(), PeerError> {
    if asked > MOST_PER_ASK {
        return Err(PeerError::TooMuchAsked { most: MOST_PER_ASK });
    }
    Ok(())
}
