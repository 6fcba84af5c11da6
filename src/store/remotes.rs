//! What the instance keeps about each remote system at run time: the token
//! it presents there, its outbound and inbound states, and where sending
//! to it stands (the stored retry state).

use redb::ReadableTable;

use super::codec::{decode, encode};
use super::tables::*;
use super::writer::Txn;
use super::{RemoteState, Store, StoreError, StoredSyncObject};
use crate::ids::now_millis;
use crate::property;

impl Store {
    /// The token this instance presents to `remote`.
    pub fn remote_secret(&self, remote: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REMOTE_SECRETS)?;
        match table.get(remote)? {
            Some(value) => Ok(Some(decode(value.value())?)),
            None => Ok(None),
        }
    }

    /// The remote systems this instance holds a token for, in one read.
    pub fn remotes_with_token(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REMOTE_SECRETS)?;
        let mut names = std::collections::HashSet::new();
        for row in table.iter()? {
            names.insert(row?.0.value().to_string());
        }
        Ok(names)
    }

    /// Where sending to `remote` stands; the default while the peer answers.
    pub fn remote_retry(&self, remote: &str) -> Result<property::RetryState, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REMOTE_RETRY)?;
        match table.get(remote)? {
            Some(value) => decode(value.value()),
            None => Ok(property::RetryState::default()),
        }
    }

    /// Records where sending to `remote` stands (the default clears it).
    pub async fn set_remote_retry(
        &self,
        remote: String,
        state: property::RetryState,
    ) -> Result<(), StoreError> {
        self.writer
            .submit(move |txn| {
                let mut table = txn.open_table(REMOTE_RETRY)?;
                if state == property::RetryState::default() {
                    table.remove(remote.as_str())?;
                } else {
                    table.insert(remote.as_str(), encode(&state).as_slice())?;
                }
                Ok(())
            })
            .await
    }

    pub async fn set_remote_secret(&self, remote: String, token: String) -> Result<(), StoreError> {
        self.writer
            .submit(move |txn| {
                find_remote(txn, &remote)?;
                txn.open_table(REMOTE_SECRETS)?
                    .insert(remote.as_str(), encode(&token).as_slice())?;
                Ok(())
            })
            .await
    }

    /// Sets a remote system's outbound and/or inbound state.
    pub async fn set_remote_states(
        &self,
        remote: String,
        outbound: Option<RemoteState>,
        inbound: Option<RemoteState>,
    ) -> Result<(), StoreError> {
        let set = self
            .writer
            .submit(move |txn| {
                let mut object = find_remote(txn, &remote)?;
                if let Some(state) = outbound {
                    object.outbound_state = Some(state);
                }
                if let Some(state) = inbound {
                    object.inbound_state = Some(state);
                }
                object.updated_on = now_millis();
                txn.open_table(SYNC_OBJECTS)?.insert(
                    ("remote_system", remote.as_str()),
                    encode(&object).as_slice(),
                )?;
                Ok(())
            })
            .await;
        self.forget_remotes();
        set
    }
}

fn find_remote(txn: &Txn<'_>, remote: &str) -> Result<StoredSyncObject, StoreError> {
    let table = txn.open_table(SYNC_OBJECTS)?;
    let value =
        table
            .get(("remote_system", remote))?
            .ok_or_else(|| StoreError::RemoteNotFound {
                name: remote.to_string(),
            })?;
    decode(value.value())
}
