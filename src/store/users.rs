//! Users and their API tokens (stored as blake3 hashes): reads and the
//! writer jobs that add users, replace tokens and set roles.

use redb::ReadableTable;

use super::codec::{decode, encode};
use super::tables::*;
use super::writer::Txn;
use super::{Store, StoreError};
use crate::ids::{hex, token_hash};
use crate::user::{Role, User};

pub fn add_user(txn: &mut Txn<'_>, mut user: User, token: &str) -> Result<User, StoreError> {
    let mut users = txn.open_table(USERS)?;
    if users.get(user.name.as_str())?.is_some() {
        return Err(StoreError::UserExists { name: user.name });
    }
    let hash = token_hash(token);
    user.token_hashes = vec![hex(&hash)];
    users.insert(user.name.as_str(), encode(&user).as_slice())?;
    txn.open_table(TOKENS)?
        .insert(hash.as_slice(), encode(&user.name).as_slice())?;
    Ok(user)
}

/// Removes user `name` and its tokens.
pub fn remove_user(txn: &mut Txn<'_>, name: &str) -> Result<User, StoreError> {
    let mut users = txn.open_table(USERS)?;
    let user = load_user(&users, name)?;
    users.remove(name)?;
    let mut tokens = txn.open_table(TOKENS)?;
    for old in &user.token_hashes {
        tokens.remove(hex_decode(old)?.as_slice())?;
    }
    Ok(user)
}

fn load_user(
    users: &redb::Table<'_, &'static str, &'static [u8]>,
    name: &str,
) -> Result<User, StoreError> {
    match users.get(name)? {
        Some(value) => decode(value.value()),
        None => Err(StoreError::UserNotFound {
            name: name.to_string(),
        }),
    }
}

pub fn replace_token(txn: &mut Txn<'_>, name: &str, token: &str) -> Result<(), StoreError> {
    let mut users = txn.open_table(USERS)?;
    let mut user = load_user(&users, name)?;
    let mut tokens = txn.open_table(TOKENS)?;
    for old in &user.token_hashes {
        let bytes = hex_decode(old)?;
        tokens.remove(bytes.as_slice())?;
    }
    let hash = token_hash(token);
    tokens.insert(hash.as_slice(), encode(&user.name).as_slice())?;
    user.token_hashes = vec![hex(&hash)];
    users.insert(name, encode(&user).as_slice())?;
    Ok(())
}

fn hex_decode(text: &str) -> Result<Vec<u8>, StoreError> {
    crate::ids::unhex(text)
        .ok_or_else(|| StoreError::Corrupt(format!("token hash `{text}` is not hex")))
}

pub fn set_roles(txn: &mut Txn<'_>, name: &str, roles: Vec<Role>) -> Result<User, StoreError> {
    let mut users = txn.open_table(USERS)?;
    let mut user = load_user(&users, name)?;
    user.roles = roles;
    users.insert(name, encode(&user).as_slice())?;
    Ok(user)
}

/// The user `name` in `users` (the table, read or written).
pub(super) fn read_user(
    users: &impl redb::ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<User>, StoreError> {
    match users.get(name)? {
        Some(user) => Ok(Some(decode(user.value())?)),
        None => Ok(None),
    }
}

impl Store {
    /// The user a token belongs to, if any.
    pub fn user_by_token(&self, token: &str) -> Result<Option<User>, StoreError> {
        let txn = self.db.begin_read()?;
        let tokens = txn.open_table(TOKENS)?;
        let Some(name) = tokens.get(token_hash(token).as_slice())? else {
            return Ok(None);
        };
        let name: String = decode(name.value())?;
        read_user(&txn.open_table(USERS)?, &name)
    }

    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let txn = self.db.begin_read()?;
        let users = txn.open_table(USERS)?;
        let mut out = Vec::new();
        for row in users.iter()? {
            let (_, value) = row?;
            out.push(decode(value.value())?);
        }
        Ok(out)
    }

    pub async fn add_user(&self, user: User, token: String) -> Result<User, StoreError> {
        self.writer
            .submit(move |txn| add_user(txn, user, &token))
            .await
    }

    /// Replaces every token of `name` with `token`.
    pub async fn replace_token(&self, name: String, token: String) -> Result<(), StoreError> {
        self.writer
            .submit(move |txn| replace_token(txn, &name, &token))
            .await
    }

    pub async fn set_roles(&self, name: String, roles: Vec<Role>) -> Result<User, StoreError> {
        self.writer
            .submit(move |txn| set_roles(txn, &name, roles))
            .await
    }
}
