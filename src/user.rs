//! Users, roles and what each role may do. Pure values and rules; token
//! storage lives in `store`, authentication of calls in `api`.

use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::ids::Millis;

/// The roles of Remote Process Sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including users, properties and configuration.
    Admin,
    /// Integration administrators: configuration, queues, records.
    ProcessSync,
    /// Peer instances calling in; not allowed on the admin API.
    ProcessSyncApi,
    /// Users inbound flows run as; may read and write records.
    ProcessSyncRunAs,
}

pub const ALL_ROLES: &[Role] = &[
    Role::Admin,
    Role::ProcessSync,
    Role::ProcessSyncApi,
    Role::ProcessSyncRunAs,
];

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ProcessSync => "process_sync",
            Role::ProcessSyncApi => "process_sync_api",
            Role::ProcessSyncRunAs => "process_sync_run_as",
        }
    }

    pub fn parse(text: &str) -> Result<Role, String> {
        ALL_ROLES
            .iter()
            .copied()
            .find(|role| role.as_str() == text.trim())
            .ok_or_else(|| {
                format!(
                    "unknown role `{text}`; roles are: {}",
                    ALL_ROLES
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}

/// A user of this instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub sys_id: String,
    pub name: String,
    pub roles: Vec<Role>,
    pub domain: Domain,
    pub created_on: Millis,
    /// Hex blake3 hashes of the user's live tokens; issuing a new token
    /// replaces them.
    pub token_hashes: Vec<String>,
}

/// A kind of admin call, for the role check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Read and write records and journals.
    Records,
    /// Read configuration and queues.
    ReadSync,
    /// Apply configuration.
    WriteSync,
    /// Manage users and tokens.
    ManageUsers,
    /// Change instance-wide settings (properties).
    ManageInstance,
}

impl Permission {
    pub fn allowed_roles(self) -> &'static [Role] {
        match self {
            Permission::Records => &[Role::Admin, Role::ProcessSync, Role::ProcessSyncRunAs],
            Permission::ReadSync => &[Role::Admin, Role::ProcessSync],
            Permission::WriteSync => &[Role::Admin, Role::ProcessSync],
            Permission::ManageUsers | Permission::ManageInstance => &[Role::Admin],
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Permission::Records => "read and write records",
            Permission::ReadSync => "read process sync configuration and queues",
            Permission::WriteSync => "apply process sync configuration",
            Permission::ManageUsers => "manage users and tokens",
            Permission::ManageInstance => "change instance-wide settings (properties)",
        }
    }
}

impl User {
    pub fn may(&self, permission: Permission) -> bool {
        permission
            .allowed_roles()
            .iter()
            .any(|role| self.roles.contains(role))
    }
}

/// Checks a user name: 1–64 characters of letters, digits, `_`, `.`, `-`, `@`.
pub fn check_user_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "user name `{name}` is invalid: use 1-64 letters, digits, `_`, `.`, `-` or `@`"
        ))
    }
}
