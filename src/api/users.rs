//! User calls: adding users, their tokens and roles, within the admin's
//! domain subtree.

use super::{Api, ApiError, Caller};
use crate::domain::Domain;
use crate::ids::new_token;
use crate::store::StoreError;
use crate::user::{Permission, Role, User, check_user_name};

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

impl Api {
    pub async fn add_user(
        &self,
        caller: &Caller,
        name: String,
        roles: Vec<String>,
        domain: String,
    ) -> Result<(User, String), ApiError> {
        let admin = caller.require(Permission::ManageUsers)?.clone();
        check_user_name(&name).map_err(ApiError::Invalid)?;
        let roles = parse_roles(&roles)?;
        let domain = if domain.trim().is_empty() {
            admin.domain.clone()
        } else {
            Domain::parse(&domain).map_err(ApiError::Invalid)?
        };
        if !domain.is_within(&admin.domain) {
            return Err(ApiError::OutsideDomain {
                domain,
                yours: admin.domain,
            });
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

    pub async fn list_users(&self, caller: &Caller) -> Result<Vec<User>, ApiError> {
        let admin = caller.require(Permission::ManageUsers)?.clone();
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
            .ok_or_else(|| {
                ApiError::Store(StoreError::UserNotFound {
                    name: wanted.to_string(),
                })
            })
    }

    /// Issues a new token for `name`, replacing its old ones.
    pub async fn issue_token(&self, caller: &Caller, name: String) -> Result<String, ApiError> {
        let admin = caller.require(Permission::ManageUsers)?.clone();
        self.user_in_scope(&admin, &name).await?;
        let token = new_token();
        let replaced = self.store.replace_token(name, token.clone()).await;
        self.forget_tokens();
        replaced?;
        Ok(token)
    }

    pub async fn set_roles(
        &self,
        caller: &Caller,
        name: String,
        roles: Vec<String>,
    ) -> Result<User, ApiError> {
        let admin = caller.require(Permission::ManageUsers)?.clone();
        let roles = parse_roles(&roles)?;
        self.user_in_scope(&admin, &name).await?;
        if name == admin.name && !roles.contains(&Role::Admin) {
            return Err(ApiError::OwnAdminRole);
        }
        let user = self.store.set_roles(name, roles).await;
        self.forget_tokens();
        Ok(user?)
    }
}
