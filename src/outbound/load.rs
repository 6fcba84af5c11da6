//! The loader: runs every remote system's running initial load, one batch
//! (`load.batch` records) per remote per step, waking the dispatchers after
//! each so the loaded items flow while the load goes on. A load started
//! before a restart goes on after it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::store::{LoadState, Store};
use crate::worker::{Step, Worker};

/// How many batches a load may queue ahead of what the peer acknowledged.
const LOAD_AHEAD_BATCHES: u64 = 8;
/// How long a load that is far enough ahead waits before looking again.
const WAIT_FOR_DISPATCHER: Duration = Duration::from_millis(20);

pub struct Loader {
    store: Arc<Store>,
    wake_outbound: Arc<Notify>,
}

impl Loader {
    pub fn new(store: Arc<Store>, wake_outbound: Arc<Notify>) -> Loader {
        Loader {
            store,
            wake_outbound,
        }
    }
}

impl Worker for Loader {
    type Output = ();

    fn name(&self) -> String {
        "initial load".to_string()
    }

    async fn step(&mut self) -> Step<()> {
        let store = self.store.clone();
        let read = tokio::task::spawn_blocking(move || {
            Ok::<_, crate::store::StoreError>((
                store.loads()?,
                store.number("load.batch")?,
                store.alert_figures(u64::MAX)?,
            ))
        })
        .await;
        let (loads, batch, figures) = match read {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => {
                tracing::error!(target: "load", error = %e, "The initial loads could not be read; trying again in 5 s.");
                return Step::Idle(Some(tokio::time::Instant::now() + Duration::from_secs(5)));
            }
            Err(_) => {
                return Step::Idle(Some(tokio::time::Instant::now() + Duration::from_secs(5)));
            }
        };
        let running: Vec<String> = loads
            .into_iter()
            .filter(|l| l.state == LoadState::Running)
            .map(|l| l.remote_system)
            .collect();
        if running.is_empty() {
            return Step::Idle(None);
        }
        let batch = usize::try_from(batch).unwrap_or(usize::MAX).max(1);
        // A load queues ahead of the dispatcher by a bounded amount: the
        // queue (and what holding it costs) stays small however big the
        // load, and live writes never wait behind a million load items.
        let ahead = (batch as u64).saturating_mul(LOAD_AHEAD_BATCHES);
        let ready: Vec<String> = running
            .into_iter()
            .filter(|r| figures.get(r).is_none_or(|(w, _)| *w < ahead))
            .collect();
        if ready.is_empty() {
            self.wake_outbound.notify_waiters();
            return Step::Idle(Some(tokio::time::Instant::now() + WAIT_FOR_DISPATCHER));
        }
        for remote in ready {
            match self.store.load_step(remote.clone(), batch).await {
                Ok(Some(load)) if load.state == LoadState::Done => {
                    tracing::info!(target: "load", remote_system = %remote, queued = load.queued, looked_at = load.scanned, "An initial load finished.");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(target: "load", remote_system = %remote, error = %e, "A batch of the initial load could not be queued; it is tried again in 5 s.");
                    return Step::Idle(Some(tokio::time::Instant::now() + Duration::from_secs(5)));
                }
            }
        }
        self.wake_outbound.notify_waiters();
        Step::Busy
    }
}
