//! The admin API in domain terms: authenticate the caller's token, check its
//! roles and domain, and call the store. Transport-neutral: the gRPC service
//! in `transport` only converts types and maps `ApiError` to a status.

mod attachments;
mod views;

pub use attachments::UploadState;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::condition::Query;
use crate::config::server::Limits;
use crate::config::sync::SyncConfig;
use crate::domain::Domain;
use crate::ids::new_token;
use crate::queue::{OutboundItem, QueueStatus};
use crate::record::{JournalEntry, Record, RecordView, RecordWrite, WriteResult, check_name};
use crate::runtime::{RemoteHealth, SyncRuntime, TransferCounts};
use crate::store::{
    Actor, ApplyReport, QueueFilter, RecordWriteLimits, RemoteState, RemoteSystemStatus, Store,
    StoreError,
};
use crate::user::{Permission, Role, User, check_user_name};

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The admin API of one instance.
#[derive(Clone)]
pub struct Api {
    store: Arc<Store>,
    limits: Limits,
    /// Users by token hash, so a call does not read the store to
    /// authenticate. Every user change goes through this API and clears it.
    users_by_token: Arc<RwLock<TokenCache>>,
    sync: SyncRuntime,
}

#[derive(Default)]
struct TokenCache {
    /// Bumped by every user change; a lookup that started under an older
    /// generation may have read the old user and is not cached.
    generation: u64,
    users: HashMap<[u8; 32], User>,
}

/// A remote system as the admin API shows it.
#[derive(Clone, Debug)]
pub struct RemoteView {
    pub status: RemoteSystemStatus,
    pub health: Option<RemoteHealth>,
    pub has_token: bool,
    pub transfers: TransferCounts,
}

/// Most tokens kept in the authentication cache before it starts over.
const MAX_CACHED_TOKENS: usize = 10_000;

/// Default number of records or queue items a list returns.
pub const DEFAULT_LIST_LIMIT: usize = 100;

impl Api {
    pub fn new(store: Arc<Store>, limits: Limits, sync: SyncRuntime) -> Api {
        Api {
            store,
            limits,
            users_by_token: Arc::default(),
            sync,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| {
                // A read panics only inside the database, on a damaged page.
                ApiError::Store(if e.is_panic() {
                    StoreError::Corrupt("a read failed inside the database".to_string())
                } else {
                    StoreError::Storage(format!("a read was cancelled: {e}"))
                })
            })?
            .map_err(ApiError::from)
    }

    /// The user a bearer token belongs to.
    pub async fn authenticate(&self, token: Option<String>) -> Result<User, ApiError> {
        let Some(token) = token.filter(|t| !t.trim().is_empty()) else {
            return Err(ApiError::Unauthenticated(
                "no API token: send `authorization: Bearer TOKEN` (the CLI reads --token, PROCSYNC_TOKEN or DATA_DIR/admin.token)".to_string(),
            ));
        };
        let hash = crate::ids::token_hash(&token);
        let generation = {
            let cache = self.users_by_token.read().expect("token cache lock");
            if let Some(user) = cache.users.get(&hash) {
                return Ok(user.clone());
            }
            cache.generation
        };
        let user = self
            .blocking(move |store| store.user_by_token(&token))
            .await?;
        if let Some(user) = &user {
            let mut cache = self.users_by_token.write().expect("token cache lock");
            if cache.generation == generation {
                if cache.users.len() >= MAX_CACHED_TOKENS {
                    cache.users.clear();
                }
                cache.users.insert(hash, user.clone());
            }
        }
        user.ok_or_else(|| {
            ApiError::Unauthenticated(
                "the API token is not valid: it is unknown or was replaced; ask an admin for a new one (`procsync user token NAME`)".to_string(),
            )
        })
    }

    async fn authorize(
        &self,
        token: Option<String>,
        permission: Permission,
    ) -> Result<User, ApiError> {
        let user = self.authenticate(token).await?;
        if user.may(permission) {
            return Ok(user);
        }
        let roles: Vec<&str> = permission
            .allowed_roles()
            .iter()
            .map(|r| r.as_str())
            .collect();
        Err(ApiError::PermissionDenied(format!(
            "user `{}` may not {}: it needs one of the roles {}",
            user.name,
            permission.describe(),
            roles.join(", ")
        )))
    }

    /// Forgets cached authentications after any user change.
    fn forget_tokens(&self) {
        let mut cache = self.users_by_token.write().expect("token cache lock");
        cache.generation += 1;
        cache.users.clear();
    }

    fn actor(user: &User) -> Actor {
        Actor {
            user: user.name.clone(),
            domain: user.domain.clone(),
        }
    }

    pub async fn write_records(
        &self,
        token: Option<String>,
        writes: Vec<RecordWrite>,
    ) -> Result<Vec<WriteResult>, ApiError> {
        let user = self.authorize(token, Permission::Records).await?;
        if writes.is_empty() {
            return Err(ApiError::Invalid("no writes in the request".to_string()));
        }
        if writes.len() > self.limits.max_batch_records {
            return Err(ApiError::Invalid(format!(
                "{} writes in one call, over the limit of {} (limits.max_batch_records); split the batch",
                writes.len(),
                self.limits.max_batch_records
            )));
        }
        let limits = RecordWriteLimits {
            max_record_bytes: self.limits.max_record_bytes,
        };
        let results = self
            .store
            .write_records(Self::actor(&user), writes, limits)
            .await?;
        if results.iter().any(|r| r.queued > 0) {
            self.sync.wake_outbound.notify_waiters();
        }
        Ok(results)
    }

    pub async fn get_record(
        &self,
        token: Option<String>,
        table: String,
        sys_id: String,
    ) -> Result<(Record, Vec<JournalEntry>), ApiError> {
        let user = self.authorize(token, Permission::Records).await?;
        check_name("table", &table).map_err(ApiError::Invalid)?;
        let shown = format!("record {table}/{sys_id}");
        let found = self
            .blocking(move |store| store.record(&table, &sys_id))
            .await?;
        found
            .filter(|(record, _)| record.domain.is_within(&user.domain))
            .ok_or(ApiError::Store(StoreError::NotFound(shown)))
    }

    pub async fn list_records(
        &self,
        token: Option<String>,
        table: String,
        query: String,
        limit: usize,
    ) -> Result<Vec<Record>, ApiError> {
        let user = self.authorize(token, Permission::Records).await?;
        check_name("table", &table).map_err(ApiError::Invalid)?;
        let query =
            Query::parse(&query).map_err(|e| ApiError::Invalid(format!("query `{query}`: {e}")))?;
        let limit = match limit {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(self.limits.max_list_records),
        };
        self.blocking(move |store| {
            store.records(&table, limit, &|record| {
                record.domain.is_within(&user.domain)
                    && query.matches(&RecordView::new(record), None)
            })
        })
        .await
    }

    pub async fn add_user(
        &self,
        token: Option<String>,
        name: String,
        roles: Vec<String>,
        domain: String,
    ) -> Result<(User, String), ApiError> {
        let admin = self.authorize(token, Permission::ManageUsers).await?;
        check_user_name(&name).map_err(ApiError::Invalid)?;
        let roles = parse_roles(&roles)?;
        let domain = if domain.trim().is_empty() {
            admin.domain.clone()
        } else {
            Domain::parse(&domain).map_err(ApiError::Invalid)?
        };
        if !domain.is_within(&admin.domain) {
            return Err(ApiError::PermissionDenied(format!(
                "domain `{domain}` is outside your domain `{}`",
                admin.domain
            )));
        }
        let token = new_token();
        let user = User {
            sys_id: crate::ids::new_sys_id(),
            name,
            roles,
            domain,
            created_on: crate::ids::now_millis(),
            token_hashes: Vec::new(),
        };
        let user = self.store.add_user(user, token.clone()).await;
        self.forget_tokens();
        Ok((user?, token))
    }

    pub async fn list_users(&self, token: Option<String>) -> Result<Vec<User>, ApiError> {
        let admin = self.authorize(token, Permission::ManageUsers).await?;
        let users = self.blocking(|store| store.users()).await?;
        Ok(users
            .into_iter()
            .filter(|u| u.domain.is_within(&admin.domain))
            .collect())
    }

    async fn user_in_scope(&self, admin: &User, name: &str) -> Result<User, ApiError> {
        let wanted = name.to_string();
        let users = self.blocking(|store| store.users()).await?;
        users
            .into_iter()
            .find(|u| u.name == wanted && u.domain.is_within(&admin.domain))
            .ok_or_else(|| ApiError::Store(StoreError::NotFound(format!("user `{wanted}`"))))
    }

    /// Issues a new token for `name`, replacing its old ones.
    pub async fn issue_token(
        &self,
        token: Option<String>,
        name: String,
    ) -> Result<String, ApiError> {
        let admin = self.authorize(token, Permission::ManageUsers).await?;
        self.user_in_scope(&admin, &name).await?;
        let token = new_token();
        let replaced = self.store.replace_token(name, token.clone()).await;
        self.forget_tokens();
        replaced?;
        Ok(token)
    }

    pub async fn set_roles(
        &self,
        token: Option<String>,
        name: String,
        roles: Vec<String>,
    ) -> Result<User, ApiError> {
        let admin = self.authorize(token, Permission::ManageUsers).await?;
        let roles = parse_roles(&roles)?;
        self.user_in_scope(&admin, &name).await?;
        if name == admin.name && !roles.contains(&Role::Admin) {
            return Err(ApiError::Invalid(
                "you cannot remove the admin role from yourself; ask another admin".to_string(),
            ));
        }
        let user = self.store.set_roles(name, roles).await;
        self.forget_tokens();
        Ok(user?)
    }

    pub async fn apply_config(
        &self,
        token: Option<String>,
        text: String,
        file_name: String,
    ) -> Result<ApplyReport, ApiError> {
        let user = self.authorize(token, Permission::WriteSync).await?;
        let file_name = if file_name.is_empty() {
            "(request)".to_string()
        } else {
            file_name
        };
        // An admin of a domain manages that subtree only: the objects
        // outside it stay as they are, and the file may refer to them.
        let stored = self.blocking(|store| store.sync_config()).await?;
        let (_, kept) = stored.split_by_domain(&user.domain);
        let config = SyncConfig::parse_for_domain(&file_name, &text, &user.domain, &kept)
            .map_err(|e| ApiError::Invalid(e.to_string()))?;
        let report = self
            .store
            .apply_config(config, user.domain.clone(), kept)
            .await?;
        let store = self.store.clone();
        let sync = self.sync.clone();
        self.blocking(move |_| sync.refresh_allowed(&store)).await?;
        self.sync.wake_outbound.notify_waiters();
        self.sync.wake_inbound.notify_one();
        Ok(report)
    }

    pub async fn export_config(&self, token: Option<String>) -> Result<String, ApiError> {
        let user = self.authorize(token, Permission::ReadSync).await?;
        let config = self.blocking(|store| store.sync_config()).await?;
        Ok(config.split_by_domain(&user.domain).0.to_toml())
    }

    pub async fn list_remote_systems(
        &self,
        token: Option<String>,
    ) -> Result<Vec<RemoteView>, ApiError> {
        self.authorize(token, Permission::ReadSync).await?;
        self.remote_views().await
    }

    async fn remote_views(&self) -> Result<Vec<RemoteView>, ApiError> {
        let rows = self
            .blocking(|store| {
                let mut out = Vec::new();
                for status in store.remote_systems()? {
                    let has_token = store.remote_secret(&status.spec.name)?.is_some();
                    out.push((status, has_token));
                }
                Ok(out)
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(status, has_token)| RemoteView {
                health: self.sync.health.get(&status.spec.name),
                transfers: self.sync.transfers.get(&status.spec.name),
                status,
                has_token,
            })
            .collect())
    }

    async fn remote_view(&self, name: &str) -> Result<RemoteView, ApiError> {
        self.remote_views()
            .await?
            .into_iter()
            .find(|r| r.status.spec.name == name)
            .ok_or_else(|| ApiError::Store(StoreError::NotFound(format!("remote system `{name}`"))))
    }

    /// Connects to the peer and checks, both ways, that the two remote
    /// system records point at each other, that the credentials and pins
    /// work, and that our outbound process events exist there. On success
    /// both states become Active. Returns every problem found.
    pub async fn validate_remote(
        &self,
        token: Option<String>,
        name: String,
    ) -> Result<(Vec<String>, RemoteView), ApiError> {
        self.authorize(token, Permission::WriteSync).await?;
        let remote = self.remote_view(&name).await?;
        let lookup = name.clone();
        let (instance, config, secret, last_sequence) = self
            .blocking(move |store| {
                Ok((
                    store.instance()?,
                    store.sync_config()?,
                    store.remote_secret(&lookup)?,
                    store.last_outbound_sequence(&lookup)?,
                ))
            })
            .await?;
        let mut problems = Vec::new();
        let Some(secret) = secret else {
            problems.push(format!(
                "no token to present to `{name}`: create the peer's inbound API user there (`procsync user add … --roles process_sync_api`) and store its token here with `procsync remote token {name}`"
            ));
            return Ok((problems, remote));
        };
        let fingerprint =
            match crate::config::sync::normalize_fingerprint(&remote.status.spec.fingerprint) {
                Ok(f) => f,
                Err(e) => return Ok((vec![e], remote)),
            };
        let target = crate::transport::protocol::PeerTarget {
            endpoint: remote.status.spec.endpoint.clone(),
            fingerprint,
            token: secret,
            cert_pem: instance.cert_pem.clone(),
            key_pem: instance.key_pem.clone(),
        };
        let process_events: Vec<String> = config
            .outbound_flows
            .iter()
            .filter(|f| f.remote_system == name)
            .map(|f| f.process_event.clone())
            .collect();
        let hello = crate::transport::protocol::Hello {
            protocol_version: crate::transport::protocol::PROTOCOL_VERSION,
            instance_sys_id: instance.sys_id.clone(),
            instance_name: instance.name.clone(),
            remote_system_sys_id: remote.status.sys_id.clone(),
            external_id: remote.status.spec.external_id.clone(),
            process_events,
            last_sequence: Some(last_sequence),
        };
        if remote.status.spec.external_id.is_empty() {
            problems.push(format!(
                "remote system `{name}` has no external_id: set it to the sys_id of the peer's remote system for this instance (`procsync remote list` there)"
            ));
        }
        let answer = match crate::transport::peer::PeerClient::connect(&target).await {
            Ok(mut client) => client.hello(hello).await.map_err(|e| (e, true)),
            Err(e) => Err((e, false)),
        };
        match answer {
            Ok(answer) => {
                if answer.protocol_version != crate::transport::protocol::PROTOCOL_VERSION {
                    problems.push(format!(
                        "the peer speaks protocol version {}, this instance {}; run the same procsync version on both",
                        answer.protocol_version,
                        crate::transport::protocol::PROTOCOL_VERSION
                    ));
                }
                problems.extend(answer.problems);
            }
            // With TLS 1.3 a peer that refuses our certificate does so after
            // the handshake: the call just breaks off.
            Err((
                crate::transport::protocol::CallError::Transient(text)
                | crate::transport::protocol::CallError::Lost(text),
                true,
            )) => problems.push(format!(
                "the peer broke the call off ({text}); if its log says it refused a certificate, its remote system for this instance must pin {}",
                instance.fingerprint
            )),
            Err((e, _)) => problems.push(e.to_string()),
        }
        if problems.is_empty() {
            self.store
                .set_remote_states(
                    name.clone(),
                    Some(RemoteState::Active),
                    Some(RemoteState::Active),
                )
                .await?;
            self.sync.refresh(&self.store).await?;
            self.sync.wake_outbound.notify_waiters();
            tracing::info!(target: "transport", remote_system = %name, "Remote system validated; outbound and inbound states are Active.");
        } else {
            tracing::warn!(target: "transport", remote_system = %name, problems = problems.len(), "Remote system validation found problems.");
        }
        Ok((problems, self.remote_view(&name).await?))
    }

    pub async fn disable_remote(
        &self,
        token: Option<String>,
        name: String,
    ) -> Result<RemoteView, ApiError> {
        self.authorize(token, Permission::WriteSync).await?;
        self.store
            .set_remote_states(
                name.clone(),
                Some(RemoteState::Disabled),
                Some(RemoteState::Disabled),
            )
            .await?;
        self.sync.refresh(&self.store).await?;
        self.sync.wake_outbound.notify_waiters();
        self.remote_view(&name).await
    }

    pub async fn set_remote_token(
        &self,
        token: Option<String>,
        name: String,
        secret: String,
    ) -> Result<RemoteView, ApiError> {
        self.authorize(token, Permission::WriteSync).await?;
        let secret = secret.trim().to_string();
        if secret.is_empty() || !secret.is_ascii() {
            return Err(ApiError::Invalid("the token is empty or not ASCII; pass the token the peer's `procsync user add` printed".into()));
        }
        self.store.set_remote_secret(name.clone(), secret).await?;
        self.remote_view(&name).await
    }

    /// One page of the inbound queue, oldest first.
    pub async fn list_inbound(
        &self,
        token: Option<String>,
        status: String,
        remote_system: String,
        page: Page,
    ) -> Result<Listed<crate::queue::InboundItem>, ApiError> {
        let user = self.authorize(token, Permission::ReadSync).await?;
        let filter = self.queue_filter(&user, &status, remote_system, &page)?;
        let items = self
            .blocking(move |store| store.inbound_items(&filter))
            .await?;
        Ok(self.cut_page(items, page.limit, |i| i.id, |i| self.inbound_view(i)))
    }

    /// An outbound item as operators read it (`views`).
    pub fn outbound_view(&self, item: &OutboundItem) -> serde_json::Value {
        let remote = self.sync.health.get(&item.remote_system);
        views::outbound_view(item, remote.as_ref(), crate::ids::now_millis())
    }

    /// An inbound item as operators read it (`views`).
    pub fn inbound_view(&self, item: &crate::queue::InboundItem) -> serde_json::Value {
        views::inbound_view(item, crate::ids::now_millis())
    }

    /// One queue item as JSON.
    pub async fn queue_item(
        &self,
        token: Option<String>,
        queue: String,
        id: u64,
    ) -> Result<serde_json::Value, ApiError> {
        let user = self.authorize(token, Permission::ReadSync).await?;
        let found = match queue.as_str() {
            "inbound" => self
                .blocking(move |store| store.inbound_item(id))
                .await?
                .filter(|i| i.domain.is_within(&user.domain))
                .map(|i| self.inbound_view(&i)),
            "outbound" => self
                .blocking(move |store| store.outbound_item(id))
                .await?
                .filter(|i| i.domain.is_within(&user.domain))
                .map(|i| self.outbound_view(&i)),
            other => {
                return Err(ApiError::Invalid(format!(
                    "unknown queue `{other}`; say inbound or outbound"
                )));
            }
        };
        let mut found = found
            .ok_or_else(|| ApiError::Store(StoreError::NotFound(format!("{queue} item {id}"))))?;
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
        token: Option<String>,
        id: u64,
    ) -> Result<crate::queue::FlowContext, ApiError> {
        self.authorize(token.clone(), Permission::ReadSync).await?;
        let context = self
            .blocking(move |store| store.flow_context(id))
            .await?
            .ok_or_else(|| ApiError::Store(StoreError::NotFound(format!("flow context {id}"))))?;
        self.queue_item(token, context.queue.clone(), context.item_id)
            .await?;
        Ok(context)
    }

    /// retry: Error → Ready; skip: → Skipped.
    pub async fn set_queue_item_status(
        &self,
        token: Option<String>,
        queue: String,
        id: u64,
        action: String,
    ) -> Result<serde_json::Value, ApiError> {
        let user = self.authorize(token.clone(), Permission::WriteSync).await?;
        let status = match action.as_str() {
            "retry" => QueueStatus::Ready,
            "skip" => QueueStatus::Skipped,
            other => {
                return Err(ApiError::Invalid(format!(
                    "unknown action `{other}`; say retry or skip"
                )));
            }
        };
        // Scope check: the item must be visible to the caller.
        self.queue_item(token, queue.clone(), id).await?;
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

    pub async fn list_correlations(
        &self,
        token: Option<String>,
        remote_system: String,
    ) -> Result<Vec<crate::queue::Correlation>, ApiError> {
        self.authorize(token, Permission::ReadSync).await?;
        self.blocking(move |store| {
            store.correlations((!remote_system.is_empty()).then_some(remote_system.as_str()))
        })
        .await
    }

    /// Every property: (name, value, default, description).
    pub async fn list_properties(
        &self,
        token: Option<String>,
    ) -> Result<Vec<(String, String, String, String)>, ApiError> {
        self.authorize(token, Permission::ReadSync).await?;
        self.blocking(|store| {
            crate::property::PROPERTIES
                .iter()
                .map(|p| {
                    Ok((
                        p.name.to_string(),
                        store.property(p.name)?,
                        p.default.to_string(),
                        p.description.to_string(),
                    ))
                })
                .collect()
        })
        .await
    }

    pub async fn set_property(
        &self,
        token: Option<String>,
        name: String,
        value: String,
    ) -> Result<(String, String, String, String), ApiError> {
        let user = self
            .authorize(token.clone(), Permission::ManageInstance)
            .await?;
        if !user.domain.is_global() {
            return Err(ApiError::PermissionDenied(format!(
                "properties are instance-wide settings, which only an admin of domain `global` may change; `{}` is an admin of `{}`",
                user.name, user.domain
            )));
        }
        self.store.set_property(name.clone(), value).await?;
        self.sync.wake_outbound.notify_waiters();
        self.list_properties(token)
            .await?
            .into_iter()
            .find(|p| p.0 == name)
            .ok_or_else(|| ApiError::Invalid(format!("unknown property `{name}`")))
    }

    /// Queue figures from the store's counters, with each remote system's
    /// states and connection health. Counts cover the whole instance, not
    /// only the caller's domain.
    pub async fn stats(&self, token: Option<String>) -> Result<crate::stats::Stats, ApiError> {
        self.authorize(token, Permission::ReadSync).await?;
        let now = crate::ids::now_millis();
        let (queues, chart, purged, instance) = self
            .blocking(move |store| {
                let (queues, chart) = store.queue_stats(now)?;
                Ok((
                    queues,
                    chart,
                    store.purged_counts()?,
                    store.instance()?.name,
                ))
            })
            .await?;
        let remote_systems = self
            .remote_views()
            .await?
            .into_iter()
            .map(|remote| crate::stats::RemoteStats {
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
        token: Option<String>,
        status: String,
        remote_system: String,
        page: Page,
    ) -> Result<Listed<OutboundItem>, ApiError> {
        let user = self.authorize(token, Permission::ReadSync).await?;
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
            text => text.parse::<u64>().map_err(|_| {
                ApiError::Invalid(format!(
                    "page token `{text}` is not one this instance gave out; list from the first page (no page token)"
                ))
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

    fn page_size(&self, asked: usize) -> usize {
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

fn parse_roles(roles: &[String]) -> Result<Vec<Role>, ApiError> {
    let mut out = Vec::new();
    for role in roles
        .iter()
        .flat_map(|r| r.split(','))
        .filter(|r| !r.trim().is_empty())
    {
        let role = Role::parse(role).map_err(ApiError::Invalid)?;
        if !out.contains(&role) {
            out.push(role);
        }
    }
    out.sort();
    Ok(out)
}
