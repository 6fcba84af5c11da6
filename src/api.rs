//! The admin API in domain terms: authenticate the caller's token, check its
//! roles and domain, and call the store. Transport-neutral: the gRPC service
//! in `transport` only converts types and maps `ApiError` to a status.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::condition::Query;
use crate::config::server::Limits;
use crate::config::sync::SyncConfig;
use crate::domain::Domain;
use crate::ids::new_token;
use crate::queue::{OutboundItem, QueueStatus};
use crate::record::{JournalEntry, Record, RecordView, RecordWrite, WriteResult, check_name};
use crate::store::{
    Actor, ApplyReport, OutboundFilter, RecordWriteLimits, RemoteSystemStatus, Store, StoreError,
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
}

#[derive(Default)]
struct TokenCache {
    /// Bumped by every user change; a lookup that started under an older
    /// generation may have read the old user and is not cached.
    generation: u64,
    users: HashMap<[u8; 32], User>,
}

/// Most tokens kept in the authentication cache before it starts over.
const MAX_CACHED_TOKENS: usize = 10_000;

/// Default number of records or queue items a list returns.
pub const DEFAULT_LIST_LIMIT: usize = 100;

impl Api {
    pub fn new(store: Arc<Store>, limits: Limits) -> Api {
        Api {
            store,
            limits,
            users_by_token: Arc::default(),
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
            .map_err(|e| ApiError::Store(StoreError::Storage(format!("read task failed: {e}"))))?
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
        Ok(self
            .store
            .write_records(Self::actor(&user), writes, limits)
            .await?)
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
        let config =
            SyncConfig::parse(&file_name, &text).map_err(|e| ApiError::Invalid(e.to_string()))?;
        for definition in &config.definitions {
            if !definition.domain.is_within(&user.domain) {
                return Err(ApiError::PermissionDenied(format!(
                    "definition `{}` is in domain `{}`, outside your domain `{}`",
                    definition.name, definition.domain, user.domain
                )));
            }
        }
        Ok(self.store.apply_config(config).await?)
    }

    pub async fn export_config(&self, token: Option<String>) -> Result<String, ApiError> {
        self.authorize(token, Permission::ReadSync).await?;
        let config = self.blocking(|store| store.sync_config()).await?;
        Ok(config.to_toml())
    }

    pub async fn list_remote_systems(
        &self,
        token: Option<String>,
    ) -> Result<Vec<RemoteSystemStatus>, ApiError> {
        self.authorize(token, Permission::ReadSync).await?;
        self.blocking(|store| store.remote_systems()).await
    }

    pub async fn list_outbound(
        &self,
        token: Option<String>,
        status: String,
        remote_system: String,
        limit: usize,
    ) -> Result<Vec<OutboundItem>, ApiError> {
        let user = self.authorize(token, Permission::ReadSync).await?;
        let status = if status.trim().is_empty() {
            None
        } else {
            Some(QueueStatus::parse(&status).map_err(ApiError::Invalid)?)
        };
        let filter = OutboundFilter {
            status,
            remote_system: (!remote_system.is_empty()).then_some(remote_system),
            domain: Some(user.domain.clone()),
            limit: if limit == 0 {
                DEFAULT_LIST_LIMIT
            } else {
                limit
            },
        };
        self.blocking(move |store| store.outbound_items(&filter))
            .await
    }
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
