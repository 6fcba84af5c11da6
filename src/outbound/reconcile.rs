//! The reconciler: runs each requested reconciliation (`remote reconcile`,
//! or one the `reconcile.interval_s` schedule asked for) against the peer.
//! Per table pair both sides summarise key ranges; ranges that differ are
//! split until small enough to list, so the questions and bytes grow with
//! the differences, not the records. With repair, each difference is
//! settled by the side the rules name (`reconcile::repair_of`): our items
//! are staged here, the peer's asked of it. The report is stored as the
//! remote's last reconciliation. A run cut off by a restart runs again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::sync::Dial;
use crate::ids::now_millis;
use crate::reconcile::{
    Description, Difference, Digests, Entry, KeyRange, Kind, Refine, Repair, TablePair, refine,
    table_pairs,
};
use crate::runtime::ReverseStreams;
use crate::store::{ReconcileState, Reconciliation, RemoteState, Store, StoreError, TableReport};
use crate::transport::peer::{PeerClient, target_of};
use crate::transport::protocol::{CallError, ReconcileAnswer, ReconcileAsk};
use crate::transport::reconcile::ReconcileCall;
use crate::worker::{Step, Worker};

/// Most ranges asked about in one question.
const RANGES_PER_ASK: usize = 4096;
/// How soon a changed schedule property is seen.
const PROPERTY_LOOK: Duration = Duration::from_secs(2);
/// Most records asked for in one send.
const SENDS_PER_ASK: usize = 4096;

pub struct Reconciler {
    store: Arc<Store>,
    wake_outbound: Arc<Notify>,
    /// Where a peer we never dial is asked to call back.
    reverse: ReverseStreams,
    /// The runner's stop signal: a comparison under way ends with it (it
    /// runs again at the next start).
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Reconciler {
    pub fn new(
        store: Arc<Store>,
        wake_outbound: Arc<Notify>,
        reverse: ReverseStreams,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Reconciler {
        Reconciler {
            store,
            wake_outbound,
            reverse,
            stop,
        }
    }
}

/// What the worker reads before each step.
struct Board {
    reconciliations: Vec<Reconciliation>,
    interval_s: u64,
    repair: bool,
    active: Vec<String>,
}

fn read_board(store: &Store) -> Result<Board, StoreError> {
    let interval_s = store.number("reconcile.interval_s")?;
    // Which remotes a schedule reaches matters only when one runs.
    let active = if interval_s == 0 {
        Vec::new()
    } else {
        store
            .remote_systems()?
            .into_iter()
            .filter(|r| {
                r.outbound_state == RemoteState::Active && r.inbound_state == RemoteState::Active
            })
            .map(|r| r.spec.name)
            .collect()
    };
    Ok(Board {
        reconciliations: store.reconciliations()?,
        interval_s,
        repair: store.flag("reconcile.repair")?,
        active,
    })
}

impl Worker for Reconciler {
    type Output = ();

    fn name(&self) -> String {
        "reconciler".to_string()
    }

    async fn step(&mut self) -> Step<()> {
        let store = self.store.clone();
        let board = match tokio::task::spawn_blocking(move || read_board(&store)).await {
            Ok(Ok(board)) => board,
            Ok(Err(e)) => {
                tracing::error!(target: "reconcile", error = %e, "The reconciliations could not be read; trying again in 5 s.");
                return Step::Idle(Some(tokio::time::Instant::now() + Duration::from_secs(5)));
            }
            Err(_) => {
                return Step::Idle(Some(tokio::time::Instant::now() + Duration::from_secs(5)));
            }
        };
        // Running: cut off by a restart; it runs again.
        if let Some(asked) = board
            .reconciliations
            .iter()
            .find(|r| matches!(r.state, ReconcileState::Requested | ReconcileState::Running))
        {
            let mut stop = self.stop.clone();
            let remote = asked.remote_system.clone();
            tokio::select! {
                () = self.run(asked.clone()) => return Step::Busy,
                () = crate::worker::stopped(&mut stop) => {
                    tracing::info!(target: "reconcile", remote_system = %remote, "A reconciliation was cut off by the shutdown; it runs again at the next start.");
                    return Step::Idle(None);
                }
            }
        }
        if board.interval_s == 0 {
            // The schedule may be switched on at any time: look again soon.
            return Step::Idle(Some(tokio::time::Instant::now() + PROPERTY_LOOK));
        }
        let interval_ms = board.interval_s.saturating_mul(1000);
        let now = now_millis();
        let mut next_due = now + interval_ms;
        for remote in &board.active {
            let last = board
                .reconciliations
                .iter()
                .find(|r| &r.remote_system == remote)
                .map(|r| r.finished_on.unwrap_or(r.requested_on));
            let due = last.map_or(now, |last| last.saturating_add(interval_ms));
            if due <= now {
                match self
                    .store
                    .request_reconcile(remote.clone(), None, board.repair, "schedule".to_string())
                    .await
                {
                    Ok(_) => return Step::Busy,
                    Err(e) => {
                        tracing::warn!(target: "reconcile", remote_system = %remote, error = %e, "A scheduled reconciliation could not be asked for.");
                    }
                }
            } else {
                next_due = next_due.min(due);
            }
        }
        let wait = Duration::from_millis(next_due.saturating_sub(now).max(1000)).min(PROPERTY_LOOK);
        Step::Idle(Some(tokio::time::Instant::now() + wait))
    }
}

impl Reconciler {
    async fn run(&mut self, mut asked: Reconciliation) {
        let remote = asked.remote_system.clone();
        asked.state = ReconcileState::Running;
        if let Err(e) = self.store.save_reconcile(asked.clone()).await {
            tracing::error!(target: "reconcile", remote_system = %remote, error = %e, "A reconciliation could not be marked running.");
            return;
        }
        tracing::info!(target: "reconcile", remote_system = %remote, repair = asked.repair, "A reconciliation started.");
        let (outcome, bytes) = match self.open_call(&remote).await {
            Ok(mut call) => (
                compare_with(&self.store, &mut call, &asked).await,
                call.bytes,
            ),
            Err(e) => (Err(e.to_string()), 0),
        };
        asked.finished_on = Some(now_millis());
        asked.bytes_on_wire = bytes;
        match outcome {
            Ok(tables) => {
                asked.state = ReconcileState::Done;
                asked.tables = tables;
                asked.error = None;
                tracing::info!(target: "reconcile", remote_system = %remote, differences = asked.differences(), repaired = asked.repaired(), bytes, "A reconciliation finished.");
            }
            Err(problem) => {
                asked.state = ReconcileState::Failed;
                tracing::warn!(target: "reconcile", remote_system = %remote, error = %problem, "A reconciliation failed.");
                asked.error = Some(problem);
            }
        }
        if asked.repaired() > 0 {
            self.wake_outbound.notify_waiters();
        }
        if let Err(e) = self.store.save_reconcile(asked).await {
            tracing::error!(target: "reconcile", remote_system = %remote, error = %e, "A reconciliation's report could not be saved.");
        }
    }
}

impl Reconciler {
    /// A reconciliation call to `remote`: dialled, or, for a peer we never
    /// dial, opened by the peer when asked over the stream it keeps open.
    async fn open_call(&self, remote: &str) -> Result<ReconcileCall, CallError> {
        let never_dialled = self
            .store
            .remote_system_async(remote)
            .await
            .map_err(CallError::Store)?
            .is_some_and(|r| r.spec.dial == Dial::Never);
        if never_dialled {
            return self.reverse.ask_reconcile(remote).await;
        }
        let target = target_of(self.store.clone(), remote).await?;
        PeerClient::connect(&target).await?.reconcile().await
    }
}

/// Compares every table pair (or the asked one) with the peer over `call`.
async fn compare_with(
    store: &Arc<Store>,
    call: &mut ReconcileCall,
    asked: &Reconciliation,
) -> Result<Vec<TableReport>, String> {
    let remote = asked.remote_system.as_str();
    let read = store.clone();
    let config = tokio::task::spawn_blocking(move || read.sync_config())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let ours = Description::of(&config, remote);
    let theirs = match call.ask(ReconcileAsk::Describe(ours.clone())).await {
        Ok(ReconcileAnswer::Description(theirs)) => theirs,
        other => return Err(unexpected(other)),
    };
    let pairs: Vec<TablePair> = table_pairs(&ours, &theirs)
        .into_iter()
        .filter(|p| asked.table.as_ref().is_none_or(|t| *t == p.here))
        .collect();
    if pairs.is_empty() {
        return Err(match &asked.table {
            Some(table) => format!(
                "no flow syncs table `{table}` with `{remote}` in a way both sides know, so there is nothing to compare"
            ),
            None => format!(
                "this instance and `{remote}` sync no table both ways of whose flows match (same process event, a capture on one side and an inbound flow on the other)"
            ),
        });
    }
    let mut reports = Vec::new();
    for pair in &pairs {
        reports.push(compare_table(store, call, remote, pair, asked.repair).await?);
    }
    Ok(reports)
}

fn unexpected(answer: Result<ReconcileAnswer, CallError>) -> String {
    match answer {
        Err(e) => e.to_string(),
        Ok(_) => {
            "the peer answered a different question (is it running the same procsync version?)"
                .to_string()
        }
    }
}

/// Compares one table pair; with `repair`, settles what differs.
async fn compare_table(
    store: &Arc<Store>,
    call: &mut ReconcileCall,
    remote: &str,
    pair: &TablePair,
    repair: bool,
) -> Result<TableReport, String> {
    // The peer reads its side while we read ours.
    call.send(ReconcileAsk::Open(pair.compared(false)))
        .await
        .map_err(|e| e.to_string())?;
    let compared = Arc::new(pair.compared(true));
    let (read, read_remote, read_compared) = (store.clone(), remote.to_string(), compared.clone());
    let ours =
        tokio::task::spawn_blocking(move || read.reconcile_digests(&read_remote, &read_compared))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    let (peer_count, peer_bounds) = match call.answer().await {
        Ok(ReconcileAnswer::Opened { count, bounds }) => (count, bounds),
        other => return Err(unexpected(other)),
    };
    let mut report = TableReport {
        table: pair.here.clone(),
        peer_table: pair.peer.clone(),
        here: ours.len() as u64,
        peer: peer_count,
        ..TableReport::default()
    };
    let start = match (ours.bounds(), peer_bounds) {
        (None, None) => return Ok(report),
        (Some(a), None) | (None, Some(a)) => a,
        (Some(a), Some(b)) => KeyRange {
            first: a.first.min(b.first),
            last: a.last.max(b.last),
        },
    };
    let listed = narrow(call, &ours, start).await?;
    let mut differences = Vec::new();
    for chunk in listed.chunks(RANGES_PER_ASK) {
        let theirs = match call.ask(ReconcileAsk::List(chunk.to_vec())).await {
            Ok(ReconcileAnswer::Entries(entries)) => entries,
            other => return Err(unexpected(other)),
        };
        let mut here: Vec<Entry> = chunk.iter().flat_map(|r| ours.within(*r)).collect();
        let (read, read_compared) = (store.clone(), compared.clone());
        here = tokio::task::spawn_blocking(move || {
            read.reconcile_fields(&read_compared, &mut here)
                .map(|()| here)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let refs: Vec<&Entry> = here.iter().collect();
        differences.extend(crate::reconcile::differences(pair, &refs, &theirs));
    }
    for difference in &differences {
        match difference.kind {
            Kind::MissingHere => report.missing_here += 1,
            Kind::MissingThere => report.missing_there += 1,
            _ => report.differing += 1,
        }
        if difference.repair == Repair::None {
            report.unrepairable += 1;
        }
    }
    if repair {
        report.repaired = settle(store, call, remote, pair, &differences).await?;
    }
    differences.truncate(crate::store::MOST_LISTED);
    report.differences = differences;
    Ok(report)
}

/// The ranges, within `start`, that differ and are small enough to list.
async fn narrow(
    call: &mut ReconcileCall,
    ours: &Digests,
    start: KeyRange,
) -> Result<Vec<KeyRange>, String> {
    let mut pending = vec![start];
    let mut listed = Vec::new();
    while !pending.is_empty() {
        let mut next = Vec::new();
        for chunk in pending.chunks(RANGES_PER_ASK) {
            let theirs = match call.ask(ReconcileAsk::Summarize(chunk.to_vec())).await {
                Ok(ReconcileAnswer::Summaries(summaries)) if summaries.len() == chunk.len() => {
                    summaries
                }
                Ok(ReconcileAnswer::Summaries(_)) => {
                    return Err(
                        "the peer summarised a different number of ranges than asked".to_string(),
                    );
                }
                other => return Err(unexpected(other)),
            };
            for (range, theirs) in chunk.iter().zip(theirs) {
                match refine(*range, ours.summary(*range), theirs) {
                    Refine::Same => {}
                    Refine::List => listed.push(*range),
                    Refine::Split(parts) => next.extend(parts),
                }
            }
        }
        pending = next;
    }
    Ok(listed)
}

/// Sends what settles each difference: our records as staged items, the
/// peer's asked of it. Returns how many differences got an item.
async fn settle(
    store: &Arc<Store>,
    call: &mut ReconcileCall,
    remote: &str,
    pair: &TablePair,
    differences: &[Difference],
) -> Result<u64, String> {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for (here, peer) in differences.iter().map(Difference::sends) {
        ours.extend(here);
        theirs.extend(peer);
    }
    let mut queued = 0;
    if !ours.is_empty() {
        queued += store
            .stage_repairs(remote.to_string(), pair.here.clone(), ours)
            .await
            .map_err(|e| e.to_string())?;
    }
    for chunk in theirs.chunks(SENDS_PER_ASK) {
        match call.ask(ReconcileAsk::Send(chunk.to_vec())).await {
            Ok(ReconcileAnswer::Sent(sent)) => queued += sent,
            other => return Err(unexpected(other)),
        }
    }
    Ok(queued)
}
