//! Alerts: thresholds an operator sets as properties (`alert.backlog`,
//! `alert.oldest_s`, `alert.errors` over `alert.window_s`, `alert.down_s`,
//! each also per remote system as `NAME@REMOTE`), checked every few seconds
//! for each remote system by a worker. Crossing one runs the remote
//! system's error subflow once with the figures (kind `alert`); falling back
//! under it runs it again (kind `alert_cleared`). What is over, and the age
//! of the oldest item not yet acknowledged, show on the health board, so
//! `procsync stats`, `/metrics` and the dashboard see them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::ids::now_millis;
use crate::runtime::{Health, HealthBoard};
use crate::store::{RemoteState, Store, StoreError};
use crate::worker::{Step, Worker};

/// How often the thresholds are checked.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The thresholds, by what they watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Watch {
    Backlog,
    Oldest,
    Errors,
    Down,
}

impl Watch {
    const ALL: [Watch; 4] = [Watch::Backlog, Watch::Oldest, Watch::Errors, Watch::Down];

    fn property(self) -> &'static str {
        match self {
            Watch::Backlog => "alert.backlog",
            Watch::Oldest => "alert.oldest_s",
            Watch::Errors => "alert.errors",
            Watch::Down => "alert.down_s",
        }
    }

    /// The figure in words: "outbound backlog of 12 items".
    fn figure(self, value: u64, window_s: u64) -> String {
        match self {
            Watch::Backlog => format!("outbound backlog of {value} item(s)"),
            Watch::Oldest => format!("oldest unacknowledged outbound item of {value} s"),
            Watch::Errors => format!("{value} item(s) in Error within {window_s} s"),
            Watch::Down => format!("Down for {value} s"),
        }
    }
}

/// What one remote system's figures are now.
#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    backlog: u64,
    oldest_s: Option<u64>,
    errors: u64,
    down_s: Option<u64>,
}

impl Figures {
    fn of(&self, watch: Watch) -> u64 {
        match watch {
            Watch::Backlog => self.backlog,
            Watch::Oldest => self.oldest_s.unwrap_or(0),
            Watch::Errors => self.errors,
            Watch::Down => self.down_s.unwrap_or(0),
        }
    }
}

pub struct Alerts {
    store: Arc<Store>,
    health: HealthBoard,
    /// When each remote system was first seen Down (milliseconds).
    down_since: HashMap<String, u64>,
    /// The thresholds each remote system is over now.
    active: HashSet<(String, Watch)>,
}

impl Alerts {
    pub fn new(store: Arc<Store>, health: HealthBoard) -> Alerts {
        Alerts {
            store,
            health,
            down_since: HashMap::new(),
            active: HashSet::new(),
        }
    }

    /// One check of every remote system.
    async fn check(&mut self) -> Result<(), StoreError> {
        let store = self.store.clone();
        let now = now_millis();
        // Every remote's figures in one trip off the async threads.
        let (remotes, thresholds, waiting, window_s, counted, instance) =
            tokio::task::spawn_blocking(move || {
                let window_s = store.number("alert.window_s")?;
                let since = crate::stats::minute_of(now.saturating_sub(window_s * 1000));
                let remotes = store.remote_systems_shared()?;
                let names: Vec<&str> = remotes.iter().map(|r| r.spec.name.as_str()).collect();
                let watched = Watch::ALL.map(Watch::property);
                let thresholds = store.thresholds(&watched, &names)?;
                // Each remote's oldest waiting item, from the status index.
                let waiting = store.oldest_waiting(&names)?;
                Ok::<_, StoreError>((
                    remotes,
                    thresholds,
                    waiting,
                    window_s,
                    store.alert_figures(since)?,
                    store.instance()?.name,
                ))
            })
            .await
            .map_err(StoreError::from)??;
        let each = remotes.iter().zip(thresholds).zip(waiting);
        for ((remote, thresholds), waiting) in each {
            let oldest_s = waiting.map(|created_on| now.saturating_sub(created_on) / 1000);
            let name = remote.spec.name.clone();
            let (backlog, errors) = counted.get(&name).copied().unwrap_or_default();
            let watched = remote.outbound_state != RemoteState::Disabled;
            let is_down = self
                .health
                .get(&name)
                .is_none_or(|h| h.health == Health::Down);
            let down_s = if watched && is_down {
                let since = *self.down_since.entry(name.clone()).or_insert(now);
                Some(now.saturating_sub(since) / 1000)
            } else {
                self.down_since.remove(&name);
                None
            };
            let figures = Figures {
                backlog,
                oldest_s,
                errors,
                down_s,
            };
            let over = self.compare(remote, &thresholds, &figures, window_s, &instance);
            self.health.update(&name, |h| {
                h.oldest_waiting_s = figures.oldest_s;
                h.alerts = over;
            });
        }
        Ok(())
    }

    /// Compares one remote's figures with its thresholds: raises each
    /// alert crossed and clears each one back under (its error subflow
    /// runs either way); returns the texts of those over now.
    fn compare(
        &mut self,
        remote: &crate::store::RemoteSystemStatus,
        thresholds: &[u64],
        figures: &Figures,
        window_s: u64,
        instance: &str,
    ) -> Vec<String> {
        let name = &remote.spec.name;
        let mut over = Vec::new();
        for (watch, threshold) in Watch::ALL.into_iter().zip(thresholds.iter().copied()) {
            let value = figures.of(watch);
            let is_over = threshold > 0 && value >= threshold;
            let key = (name.clone(), watch);
            let was_over = self.active.contains(&key);
            // Most remotes are under every threshold and were before:
            // nothing to say.
            if !is_over && !was_over {
                continue;
            }
            let text = format!(
                "{} for `{name}` {} the alert threshold of {threshold} ({})",
                watch.figure(value, window_s),
                if is_over {
                    "is at or over"
                } else {
                    "is back under"
                },
                watch.property()
            );
            if is_over {
                over.push(text.clone());
            }
            if is_over && !was_over {
                tracing::warn!(target: "alerts", remote_system = %name, alert = %text, "An alert threshold was crossed; the remote system's error subflow runs.");
                self.active.insert(key);
                raise(&remote.spec.error_subflow, "alert", instance, name, &text);
            } else if was_over && !is_over {
                tracing::info!(target: "alerts", remote_system = %name, alert = %text, "An alert cleared; the remote system's error subflow runs again.");
                self.active.remove(&key);
                raise(
                    &remote.spec.error_subflow,
                    "alert_cleared",
                    instance,
                    name,
                    &text,
                );
            }
        }
        over
    }
}

/// Runs the error subflow for an alert on its own task: a slow webhook
/// does not hold up the checks.
fn raise(steps: &[crate::subflow::Step], kind: &str, instance: &str, remote: &str, text: &str) {
    let (steps, kind, instance, remote, text) = (
        steps.to_vec(),
        kind.to_string(),
        instance.to_string(),
        remote.to_string(),
        text.to_string(),
    );
    tokio::spawn(async move {
        crate::subflow::run_for_remote(&steps, &kind, &instance, &remote, &text, 0).await;
    });
}

impl Worker for Alerts {
    type Output = ();

    fn name(&self) -> String {
        "alert checks".to_string()
    }

    async fn step(&mut self) -> Step<()> {
        if let Err(e) = self.check().await {
            tracing::error!(target: "alerts", error = %e, "The alert checks could not read the store; they try again in a few seconds.");
        }
        Step::Idle(Some(tokio::time::Instant::now() + CHECK_EVERY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Domain;
    use crate::store::ReceivedItem;
    use crate::testing::{create_incidents, linked_store};

    #[tokio::test]
    async fn errors_backlog_and_age_are_measured_per_remote_against_its_thresholds() {
        let (_dir, store) = linked_store().await;
        create_incidents(&store, 2).await;
        // An item from `hub` that cannot even be read goes to Error.
        let broken = ReceivedItem {
            sequence: 1,
            process_event: "incident_sync".to_string(),
            operation: None,
            source_table: "incident".to_string(),
            remote_correlation_id: "r1".to_string(),
            local_correlation_id: String::new(),
            payload: crate::queue::EncodedPayload::Json("not json".to_string()),
            attachment_grants: Vec::new(),
            bases: Vec::new(),
            changed_on: 0,
            settles: false,
        };
        store
            .receive(
                "hub".to_string(),
                "sha256:hub".to_string(),
                Domain::global(),
                vec![broken],
            )
            .await
            .unwrap();
        for (name, value) in [("alert.errors", "1"), ("alert.backlog@hub", "2")] {
            store
                .set_property(name.to_string(), value.to_string())
                .await
                .unwrap();
        }
        let health = HealthBoard::default();
        let mut alerts = Alerts::new(store.clone(), health.clone());
        alerts.check().await.unwrap();
        let seen = health.get("hub").unwrap();
        assert_eq!(
            seen.alerts,
            vec![
                "outbound backlog of 2 item(s) for `hub` is at or over the alert threshold of 2 (alert.backlog)".to_string(),
                "1 item(s) in Error within 300 s for `hub` is at or over the alert threshold of 1 (alert.errors)".to_string(),
            ]
        );
        assert_eq!(seen.oldest_waiting_s, Some(0), "created just now");
        // Above the threshold for another remote system's own value.
        store
            .set_property("alert.backlog@hub".to_string(), "3".to_string())
            .await
            .unwrap();
        alerts.check().await.unwrap();
        assert_eq!(health.get("hub").unwrap().alerts.len(), 1);
        // Sent and not yet acknowledged, the items still wait; once
        // acknowledged, nothing does.
        let ids: Vec<u64> = store
            .outbound_items(&crate::store::QueueFilter::default())
            .unwrap()
            .iter()
            .map(|item| item.id)
            .collect();
        store.mark_outbound_running(ids).await.unwrap();
        alerts.check().await.unwrap();
        assert_eq!(health.get("hub").unwrap().oldest_waiting_s, Some(0));
        store
            .mark_outbound_processed("hub".into(), vec![1, 2])
            .await
            .unwrap();
        alerts.check().await.unwrap();
        assert_eq!(health.get("hub").unwrap().oldest_waiting_s, None);
    }
}
