//! The admin API in domain terms: authenticate the caller's token once per
//! call (`Caller`), check its roles and domain, and call the store. One file
//! per family of calls: records, users, definitions and properties, remote
//! systems, queues and stats, attachments; `views` renders queue items as
//! operators read them. Transport-neutral: the gRPC and HTTP services in
//! `server` only convert types and map `ApiError` to a status.

mod attachments;
mod definitions;
mod queues;
mod records;
mod remotes;
mod users;
mod views;

pub use attachments::UploadState;
pub use queues::{Listed, Page};
pub use remotes::RemoteView;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::config::server::Limits;
use crate::runtime::SyncRuntime;
use crate::store::{Actor, Store, StoreError};
use crate::user::{Permission, User};

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

/// Who is calling, authenticated once per call (`Api::caller`); each call
/// asks it for the permission it needs.
#[derive(Clone, Debug)]
pub struct Caller {
    user: User,
}

impl Caller {
    /// The caller's user, when it may do what `permission` allows.
    pub fn require(&self, permission: Permission) -> Result<&User, ApiError> {
        if self.user.may(permission) {
            return Ok(&self.user);
        }
        let roles: Vec<&str> = permission
            .allowed_roles()
            .iter()
            .map(|r| r.as_str())
            .collect();
        Err(ApiError::PermissionDenied(format!(
            "user `{}` may not {}: it needs one of the roles {}",
            self.user.name,
            permission.describe(),
            roles.join(", ")
        )))
    }
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
    async fn authenticate(&self, token: Option<String>) -> Result<User, ApiError> {
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

    /// Who is calling: the user `token` belongs to, authenticated once
    /// for the whole call.
    pub async fn caller(&self, token: Option<String>) -> Result<Caller, ApiError> {
        Ok(Caller {
            user: self.authenticate(token).await?,
        })
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
}
