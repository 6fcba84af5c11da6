//! Periodic work of a running instance, in one small loop: applying the
//! `sync.debug` property to the log filter (checked every second, so a
//! change takes effect without a restart) and purging old queue items and
//! unused contents every `purge.interval` seconds, a bounded batch per
//! transaction. Retries and heartbeats live with the dispatchers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ids::now_millis;
use crate::store::{PurgeBefore, Purged, Store, StoreError};
use crate::worker::{Step, Worker};

/// What one tick did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    pub purged: Purged,
}

pub struct Scheduler {
    store: Arc<Store>,
    sync_debug: bool,
    /// When the last purge run started; `None` before the first.
    last_purge: Option<Instant>,
}

impl Scheduler {
    pub fn new(store: Arc<Store>) -> Scheduler {
        Scheduler {
            store,
            sync_debug: false,
            last_purge: None,
        }
    }

    /// One pass: the debug switch, then a purge run if one is due.
    pub async fn tick(&mut self) -> Result<Tick, StoreError> {
        let store = self.store.clone();
        let (debug, interval, processed_age, skipped_age, batch) =
            tokio::task::spawn_blocking(move || {
                Ok::<_, StoreError>((
                    store.flag("sync.debug")?,
                    store.number("purge.interval")?,
                    store.number("purge.processed_age")?,
                    store.number("purge.skipped_age")?,
                    store.number("purge.batch")?,
                ))
            })
            .await
            .map_err(StoreError::from)??;
        if debug != self.sync_debug {
            self.sync_debug = debug;
            crate::logging::set_sync_debug(debug);
        }
        let mut tick = Tick::default();
        // Measured from the last run, so a shorter interval set at runtime
        // applies at once.
        let now = Instant::now();
        let due = self
            .last_purge
            .is_none_or(|last| now.duration_since(last) >= Duration::from_secs(interval));
        if !due {
            return Ok(tick);
        }
        self.last_purge = Some(now);
        let millis = now_millis();
        let before = PurgeBefore {
            processed: millis.saturating_sub(processed_age * 1000),
            skipped: millis.saturating_sub(skipped_age * 1000),
            contents: millis.saturating_sub(processed_age.max(skipped_age) * 1000),
        };
        let batch = usize::try_from(batch).unwrap_or(usize::MAX);
        loop {
            let purged = self.store.purge(before, batch).await?;
            tick.purged.outbound += purged.outbound;
            tick.purged.inbound += purged.inbound;
            tick.purged.contents += purged.contents;
            let full = [purged.outbound, purged.inbound, purged.contents]
                .iter()
                .any(|n| usize::try_from(*n).unwrap_or(usize::MAX) >= batch);
            if !full {
                break;
            }
        }
        if tick.purged.total() > 0 {
            tracing::info!(target: "purge", outbound = tick.purged.outbound, inbound = tick.purged.inbound, contents = tick.purged.contents, "Purged old queue items.");
        }
        Ok(tick)
    }
}

/// How often the scheduler ticks.
const TICK_EVERY: Duration = Duration::from_secs(1);

impl Worker for Scheduler {
    type Output = ();

    fn name(&self) -> String {
        "scheduler".to_string()
    }

    async fn step(&mut self) -> Step<()> {
        if let Err(e) = self.tick().await {
            tracing::error!(target: "purge", error = %e, "The scheduler could not read or write the store.");
        }
        Step::Idle(Some(tokio::time::Instant::now() + TICK_EVERY))
    }
}
