//! The admin API in domain terms: authenticate the caller's token once per
//! call (`Caller`), check its roles and domain, and call the store. One file
//! per family of calls: records, users, definitions and properties, remote
//! systems, queues and stats, attachments; `views` renders queue items as
//! operators read them. Transport-neutral: the gRPC and HTTP services in
//! `server` only convert types and map `ApiError` to a status.

mod attachments;
mod browse;
mod definitions;
mod enrol;
mod queues;
mod records;
mod remotes;
mod users;
mod views;

pub use attachments::UploadState;
pub use browse::BrowseQuery;
pub use queues::{Listed, Page};
pub use remotes::RemoteView;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::config::server::Limits;
use crate::domain::Domain;
use crate::failure::{Classified, Failure};
use crate::runtime::SyncRuntime;
use crate::store::{Actor, Store, StoreError};
use crate::user::{Permission, User};

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "no API token: send `authorization: Bearer TOKEN` (the CLI reads --token, PROCSYNC_TOKEN or DATA_DIR/admin.token)"
    )]
    NoToken,
    #[error(
        "the API token is not valid: it is unknown or was replaced; ask an admin for a new one (`procsync user token NAME`)"
    )]
    BadToken,
    #[error("user `{user}` may not {action}: it needs one of the roles {}", roles.join(", "))]
    MissingRole {
        user: String,
        action: &'static str,
        roles: Vec<&'static str>,
    },
    #[error("domain `{domain}` is outside your domain `{yours}`")]
    OutsideDomain { domain: Domain, yours: Domain },
    #[error(
        "properties are instance-wide settings, which only an admin of domain `global` may change; `{user}` is an admin of `{domain}`"
    )]
    NotGlobalAdmin { user: String, domain: Domain },
    #[error("unknown queue `{name}`; say inbound or outbound")]
    UnknownQueue { name: String },
    #[error(
        "unknown action `{name}`; say retry or skip (or, for an inbound item held by a conflict, take_peer or take_local)"
    )]
    UnknownAction { name: String },
    #[error("unknown property `{name}`")]
    UnknownProperty { name: String },
    #[error(
        "page token `{token}` is not one this instance gave out; list from the first page (no page token)"
    )]
    BadPageToken { token: String },
    #[error("`{text}` is not a queue item id")]
    NotAnItemId { text: String },
    #[error("`{text}` is not a blake3 hash (64 lowercase hex digits)")]
    NotAHash { text: String },
    #[error("no writes in the request")]
    NoWrites,
    #[error(
        "{count} writes in one call, over the limit of {limit} (limits.max_batch_records); split the batch"
    )]
    TooManyWrites { count: usize, limit: usize },
    #[error("you cannot remove the admin role from yourself; ask another admin")]
    OwnAdminRole,
    #[error(
        "the token is empty or not ASCII; pass the token the peer's `procsync user add` printed"
    )]
    EmptyToken,
    #[error("query `{query}`: {reason}")]
    BadQuery { query: String, reason: String },
    #[error("the upload was refused and discarded: {problem}; upload the file again")]
    UploadRefused { problem: String },
    #[error(
        "the instance holds {held} bytes of this file; resume the upload there, not at {offset}"
    )]
    UploadOffset { held: u64, offset: u64 },
    #[error("content {hash} has {received} of {size} bytes; finish the upload first")]
    UploadUnfinished {
        hash: String,
        received: u64,
        size: u64,
    },
    #[error("no content with hash {hash} is stored; upload it first")]
    NoContent { hash: String },
    #[error(
        "record {table}/{sys_id} has {count} attachments named `{name}`; name one by its sys_id"
    )]
    AmbiguousAttachment {
        table: String,
        sys_id: String,
        name: String,
        count: usize,
    },
    /// Input a domain check refused (a name, a role, a domain, a
    /// definitions file); its text says why.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Classified for ApiError {
    fn failure(&self) -> Failure {
        use ApiError::*;
        match self {
            NoToken | BadToken => Failure::Unauthenticated,
            MissingRole { .. } | OutsideDomain { .. } | NotGlobalAdmin { .. } => {
                Failure::PermissionDenied
            }
            Store(e) => e.failure(),
            UnknownQueue { .. }
            | UnknownAction { .. }
            | UnknownProperty { .. }
            | BadPageToken { .. }
            | NotAnItemId { .. }
            | NotAHash { .. }
            | NoWrites
            | TooManyWrites { .. }
            | OwnAdminRole
            | EmptyToken
            | BadQuery { .. }
            | UploadRefused { .. }
            | UploadOffset { .. }
            | UploadUnfinished { .. }
            | NoContent { .. }
            | AmbiguousAttachment { .. }
            | Invalid(_) => Failure::Invalid,
        }
    }
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
    /// Where peers reach this instance's peer API, when known (join codes
    /// and joins carry it).
    peer_endpoint: Option<String>,
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
        Err(ApiError::MissingRole {
            user: self.user.name.clone(),
            action: permission.describe(),
            roles: permission
                .allowed_roles()
                .iter()
                .map(|r| r.as_str())
                .collect(),
        })
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
            peer_endpoint: None,
        }
    }

    /// The API of an instance whose peers reach it at `endpoint`.
    pub fn with_peer_endpoint(mut self, endpoint: Option<String>) -> Api {
        self.peer_endpoint = endpoint;
        self
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
            return Err(ApiError::NoToken);
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
        user.ok_or(ApiError::BadToken)
    }

    /// Who is calling: the user `token` belongs to, authenticated once
    /// for the whole call.
    pub async fn caller(&self, token: Option<String>) -> Result<Caller, ApiError> {
        Ok(Caller {
            user: self.authenticate(token).await?,
        })
    }

    /// Forgets cached authentications after any user change.
    pub(super) fn forget_tokens(&self) {
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
