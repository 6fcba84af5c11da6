//! Queue calls: paged lists of both queues, one item with its flow
//! contexts, the operator's retry and skip, correlations and the stats.

use super::{Api, ApiError, Caller, DEFAULT_LIST_LIMIT};
use crate::queue::{OutboundItem, QueueStatus};
use crate::store::{QueueFilter, StoreError};
use crate::user::{Permission, User};

/// One page of a queue: the items, each as operators read it (JSON text,
/// `views`), and the next page's token (empty when this is the last).
pub struct Listed<T> {
    pub items: Vec<T>,
    pub json: Vec<String>,
    pub next_page_token: String,
}

/// Which page of a queue list: at most `limit` items (0: the default)
/// after the item `token` names (empty: from the start).
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub limit: usize,
    pub token: String,
}

impl Api {
    /// One page of the inbound queue, oldest first.
    pub async fn list_inbound(
        &self,
        caller: &Caller,
        status: String,
        remote_system: String,
        page: Page,
    ) -> Result<Listed<crate::queue::InboundItem>, ApiError> {
        let user = caller.require(Permission::ReadSync)?.clone();
        let filter = self.queue_filter(&user, &status, remote_system, &page)?;
        let items = self
            .blocking(move |store| store.inbound_items(&filter))
            .await?;
        Ok(self.cut_page(items, page.limit, |i| i.id, |i| self.inbound_view(i)))
    }

    /// An outbound item as operators read it (`views`).
    pub fn outbound_view(&self, item: &OutboundItem) -> serde_json::Value {
        let remote = self.sync.health.get(&item.remote_system);
        super::views::outbound_view(item, remote.as_ref(), crate::ids::now_millis())
    }

    /// An inbound item as operators read it (`views`).
    pub fn inbound_view(&self, item: &crate::queue::InboundItem) -> serde_json::Value {
        super::views::inbound_view(item, crate::ids::now_millis())
    }

    /// One queue item as JSON.
    pub async fn queue_item(
        &self,
        caller: &Caller,
        queue: String,
        id: u64,
    ) -> Result<serde_json::Value, ApiError> {
        let user = caller.require(Permission::ReadSync)?.clone();
        let (found, queue) = match queue.as_str() {
            "inbound" => (
                self.blocking(move |store| store.inbound_item(id))
                    .await?
                    .filter(|i| i.domain.is_within(&user.domain))
                    .map(|i| self.inbound_view(&i)),
                "inbound",
            ),
            "outbound" => (
                self.blocking(move |store| store.outbound_item(id))
                    .await?
                    .filter(|i| i.domain.is_within(&user.domain))
                    .map(|i| {
                        let mut view = self.outbound_view(&i);
                        if let Some(context) = crate::store::acknowledged_context(&i) {
                            view["flow_context"] =
                                serde_json::to_value(context).expect("contexts serialize");
                        }
                        view
                    }),
                "outbound",
            ),
            other => {
                return Err(ApiError::UnknownQueue {
                    name: other.to_string(),
                });
            }
        };
        let mut found = found.ok_or(ApiError::Store(StoreError::ItemNotFound { queue, id }))?;
        // The latest processing's context comes with the item; earlier ones
        // by id (`flow_contexts`).
        if let Some(latest) = found["flow_contexts"]
            .as_array()
            .and_then(|ids| ids.last())
            .and_then(|id| id.as_u64())
        {
            if let Some(context) = self
                .blocking(move |store| store.flow_context(latest))
                .await?
            {
                found["flow_context"] = serde_json::to_value(context).expect("contexts serialize");
            }
        }
        Ok(found)
    }

    /// One flow context, if the caller may see its queue item.
    pub async fn flow_context(
        &self,
        caller: &Caller,
        id: u64,
    ) -> Result<crate::queue::FlowContext, ApiError> {
        caller.require(Permission::ReadSync)?;
        let context = self
            .blocking(move |store| store.flow_context(id))
            .await?
            .ok_or(ApiError::Store(StoreError::ContextNotFound { id }))?;
        self.queue_item(caller, context.queue.clone(), context.item_id)
            .await?;
        Ok(context)
    }

    /// retry: Error → Ready; skip: → Skipped.
    pub async fn set_queue_item_status(
        &self,
        caller: &Caller,
        queue: String,
        id: u64,
        action: String,
    ) -> Result<serde_json::Value, ApiError> {
        let user = caller.require(Permission::WriteSync)?.clone();
        if let Some(take) = action.strip_prefix("take_") {
            let take = match (queue.as_str(), take) {
                ("inbound", "peer") => crate::queue::Winner::Peer,
                ("inbound", "local") => crate::queue::Winner::Here,
                _ => {
                    return Err(ApiError::UnknownAction { name: action });
                }
            };
            self.queue_item(caller, queue.clone(), id).await?;
            let item = self.resolve_inbound(id, take).await?;
            tracing::info!(target: "queue", queue = %queue, id, action = %action, user = %user.name, "An operator settled a conflict.");
            return Ok(serde_json::to_value(item).expect("items serialize"));
        }
        let status = match action.as_str() {
            "retry" => QueueStatus::Ready,
            "skip" => QueueStatus::Skipped,
            other => {
                return Err(ApiError::UnknownAction {
                    name: other.to_string(),
                });
            }
        };
        // Scope check: the item must be visible to the caller.
        self.queue_item(caller, queue.clone(), id).await?;
        let value = match queue.as_str() {
            "inbound" => {
                let item = self.store.set_inbound_status(id, status).await?;
                self.sync
                    .rescan_inbound
                    .store(true, std::sync::atomic::Ordering::Release);
                self.sync.wake_inbound.notify_one();
                serde_json::to_value(item).expect("items serialize")
            }
            _ => {
                let item = self.store.set_outbound_status(id, status).await?;
                self.sync.wake_outbound.notify_waiters();
                serde_json::to_value(item).expect("items serialize")
            }
        };
        tracing::info!(target: "queue", queue = %queue, id, action = %action, user = %user.name, "An operator changed a queue item.");
        Ok(value)
    }

    /// Settles a conflicting inbound item as its remote's run-as user,
    /// sending the settled values on.
    async fn resolve_inbound(
        &self,
        id: u64,
        take: crate::queue::Winner,
    ) -> Result<crate::queue::InboundItem, ApiError> {
        let (item, remotes, users) = self
            .blocking(move |store| {
                let item = store.inbound_item(id)?.ok_or(StoreError::ItemNotFound {
                    queue: "inbound",
                    id,
                })?;
                Ok((item, store.remote_systems()?, store.users()?))
            })
            .await?;
        let remote = item.remote_system.clone();
        let run_as = remotes
            .iter()
            .find(|r| r.spec.name == remote)
            .and_then(|r| r.run_as_user(|name| users.iter().find(|u| u.name == name)))
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "remote system `{remote}` has no run-as user that may write records, so its items cannot be applied; set its run_as and resolve again"
                ))
            })?;
        let limits = crate::store::RecordWriteLimits {
            max_record_bytes: self.limits.max_record_bytes,
        };
        let item = self
            .store
            .resolve_inbound(id, take, Self::actor(run_as), limits)
            .await?;
        self.sync
            .rescan_inbound
            .store(true, std::sync::atomic::Ordering::Release);
        self.sync.wake_inbound.notify_one();
        self.sync.wake_outbound.notify_waiters();
        Ok(item)
    }

    pub async fn list_correlations(
        &self,
        caller: &Caller,
        remote_system: String,
    ) -> Result<Vec<crate::queue::Correlation>, ApiError> {
        caller.require(Permission::ReadSync)?;
        self.blocking(move |store| {
            store.correlations((!remote_system.is_empty()).then_some(remote_system.as_str()))
        })
        .await
    }

    /// Queue figures from the store's counters, with each remote system's
    /// states and connection health. Counts cover the whole instance, not
    /// only the caller's domain.
    pub async fn stats(&self, caller: &Caller) -> Result<crate::stats::Stats, ApiError> {
        caller.require(Permission::ReadSync)?;
        let now = crate::ids::now_millis();
        let (queues, chart, purged, instance, conflicts) = self
            .blocking(move |store| {
                let (queues, chart) = store.queue_stats(now)?;
                Ok((
                    queues,
                    chart,
                    store.purged_counts()?,
                    store.instance()?.name,
                    store.conflicts_by_remote()?,
                ))
            })
            .await?;
        let remote_systems = self
            .remote_views()
            .await?
            .into_iter()
            .map(|remote| crate::stats::RemoteStats {
                load: remote.load.as_ref().map(crate::store::Load::summary),
                reconcile: remote
                    .reconcile
                    .as_ref()
                    .map(crate::store::Reconciliation::summary),
                reconciled: remote.reconcile.as_ref().and_then(|r| {
                    Some(crate::stats::Reconciled {
                        finished_s: r.finished_on? / 1000,
                        differences: r.differences(),
                        repaired: r.repaired(),
                        failed: r.state == crate::store::ReconcileState::Failed,
                    })
                }),
                conflicts: conflicts
                    .get(&remote.status.spec.name)
                    .copied()
                    .unwrap_or(0),
                name: remote.status.spec.name.clone(),
                outbound_state: remote.status.outbound_state.as_str().to_string(),
                inbound_state: remote.status.inbound_state.as_str().to_string(),
                health: remote
                    .health
                    .as_ref()
                    .map(|h| h.health.as_str())
                    .unwrap_or("Down")
                    .to_string(),
                round_trip_ms: remote.health.as_ref().and_then(|h| h.round_trip_ms),
                oldest_waiting_s: remote.health.as_ref().and_then(|h| h.oldest_waiting_s),
                alerts: remote
                    .health
                    .as_ref()
                    .map(|h| h.alerts.clone())
                    .unwrap_or_default(),
                last_error: remote.health.and_then(|h| h.last_error),
            })
            .collect();
        Ok(crate::stats::Stats::assemble(
            instance,
            now,
            queues,
            chart,
            remote_systems,
            crate::stats::PurgedStats {
                outbound: purged.outbound,
                inbound: purged.inbound,
                contents: purged.contents,
            },
        ))
    }

    /// One page of the outbound queue, oldest first.
    pub async fn list_outbound(
        &self,
        caller: &Caller,
        status: String,
        remote_system: String,
        page: Page,
    ) -> Result<Listed<OutboundItem>, ApiError> {
        let user = caller.require(Permission::ReadSync)?.clone();
        let filter = self.queue_filter(&user, &status, remote_system, &page)?;
        let items = self
            .blocking(move |store| store.outbound_items(&filter))
            .await?;
        Ok(self.cut_page(items, page.limit, |i| i.id, |i| self.outbound_view(i)))
    }

    /// The filter of a queue list: status by name, remote by name, the
    /// caller's domain subtree, after the page token's item, at most the
    /// page size (the default for 0, at most `limits.max_list_records`).
    fn queue_filter(
        &self,
        user: &User,
        status: &str,
        remote_system: String,
        page: &Page,
    ) -> Result<QueueFilter, ApiError> {
        let status = if status.trim().is_empty() {
            None
        } else {
            Some(QueueStatus::parse(status).map_err(ApiError::Invalid)?)
        };
        let after = match page.token.trim() {
            "" => 0,
            text => text.parse::<u64>().map_err(|_| ApiError::BadPageToken {
                token: text.to_string(),
            })?,
        };
        Ok(QueueFilter {
            status,
            remote_system: (!remote_system.is_empty()).then_some(remote_system),
            domain: Some(user.domain.clone()),
            limit: self.page_size(page.limit),
            after,
        })
    }

    pub(super) fn page_size(&self, asked: usize) -> usize {
        match asked {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(self.limits.max_list_records),
        }
    }

    /// A full page ends with a token naming its last item; a page is also
    /// cut short before its JSON outgrows a quarter of the admin message
    /// limit (a response carries the items twice: typed and as JSON). Each
    /// item's view is rendered once, here, and kept for the answer.
    fn cut_page<T>(
        &self,
        mut items: Vec<T>,
        asked: usize,
        id: impl Fn(&T) -> u64,
        view: impl Fn(&T) -> serde_json::Value,
    ) -> Listed<T> {
        let budget = self.limits.max_message_bytes / 4;
        let mut bytes = 0;
        let mut json = Vec::with_capacity(items.len());
        for item in &items {
            let text = view(item).to_string();
            bytes += text.len();
            if bytes > budget && !json.is_empty() {
                break;
            }
            json.push(text);
        }
        let cut = json.len() < items.len();
        items.truncate(json.len());
        let full = items.len() >= self.page_size(asked);
        let next_page_token = match items.last() {
            Some(last) if cut || full => id(last).to_string(),
            _ => String::new(),
        };
        Listed {
            items,
            json,
            next_page_token,
        }
    }
}
