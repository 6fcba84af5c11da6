//! Runtime properties: stored values over their defaults, and the typed
//! readings the workers use (retry policy, heartbeat).

use redb::ReadableTable;

use super::codec::{decode, encode};
use super::tables::*;
use super::{Store, StoreError};
use crate::property::{self, RetryPolicy};

impl Store {
    /// A property's value, or its default.
    pub fn property(&self, name: &str) -> Result<String, StoreError> {
        let def = property::find(name).map_err(StoreError::Invalid)?;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PROPERTIES)?;
        match table.get(name)? {
            Some(value) => decode(value.value()),
            None => Ok(def.default.to_string()),
        }
    }

    /// The values set for one remote system (`NAME@REMOTE`), by name.
    pub fn per_remote_properties(&self) -> Result<Vec<(String, String)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PROPERTIES)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (name, value) = row?;
            if name.value().contains('@') {
                out.push((name.value().to_string(), decode(value.value())?));
            }
        }
        Ok(out)
    }

    /// Property `name` for `remote`: its own value (`NAME@REMOTE`), else
    /// its group's (`NAME@GROUP`) when it joined or is a member of one,
    /// else the instance's.
    pub fn remote_property(&self, name: &str, remote: &str) -> Result<String, StoreError> {
        let txn = self.db.begin_read()?;
        let object: Option<super::StoredSyncObject> = {
            let objects = txn.open_table(SYNC_OBJECTS)?;
            let row = objects.get(("remote_system", remote))?;
            row.map(|v| decode(v.value())).transpose()?
        };
        let group = object
            .and_then(|o| o.enrolled)
            .map(|e| e.group().to_string());
        let table = txn.open_table(PROPERTIES)?;
        for owner in std::iter::once(remote).chain(group.as_deref()) {
            if let Some(value) = table.get(format!("{name}@{owner}").as_str())? {
                return decode(value.value());
            }
        }
        drop(table);
        self.property(name)
    }

    /// The most bytes per second this instance sends `remote`
    /// (`link.max_bytes_per_s`; 0: no limit).
    pub fn sending_rate(&self, remote: &str) -> Result<u64, StoreError> {
        let value = self.remote_property("link.max_bytes_per_s", remote)?;
        value.parse().map_err(|_| {
            StoreError::Corrupt(format!(
                "property link.max_bytes_per_s is `{value}`, not a number"
            ))
        })
    }

    /// Alert thresholds `names` for each of `remotes`, in that order: each
    /// remote's own value (`NAME@REMOTE`) when set, else the instance's.
    /// Two reads for all.
    pub fn thresholds(
        &self,
        names: &[&str],
        remotes: &[&str],
    ) -> Result<Vec<Vec<u64>>, StoreError> {
        let number = |name: &str, text: &str| {
            text.parse::<u64>()
                .map_err(|_| StoreError::Corrupt(format!("property {name} is not a number")))
        };
        let instance = names
            .iter()
            .map(|name| self.number(name))
            .collect::<Result<Vec<_>, _>>()?;
        let own: std::collections::HashMap<String, String> =
            self.per_remote_properties()?.into_iter().collect();
        remotes
            .iter()
            .map(|remote| {
                names
                    .iter()
                    .zip(&instance)
                    .map(|(name, default)| {
                        if own.is_empty() {
                            return Ok(*default);
                        }
                        let key = format!("{name}@{remote}");
                        own.get(&key)
                            .map_or(Ok(*default), |text| number(&key, text))
                    })
                    .collect()
            })
            .collect()
    }

    pub fn number(&self, name: &str) -> Result<u64, StoreError> {
        self.property(name)?
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("property {name} is not a number")))
    }

    /// A flag property's value.
    pub fn flag(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.property(name)? == "true")
    }

    pub fn retry_policy(&self) -> Result<RetryPolicy, StoreError> {
        Ok(RetryPolicy {
            times: u32::try_from(self.number("retry.times")?).unwrap_or(u32::MAX),
            interval: std::time::Duration::from_secs(self.number("retry.interval")?),
            max_interval: std::time::Duration::from_secs(self.number("retry.max_interval")?),
        })
    }

    pub fn heartbeat(&self) -> Result<(std::time::Duration, std::time::Duration), StoreError> {
        Ok((
            std::time::Duration::from_secs(self.number("heartbeat.interval")?),
            std::time::Duration::from_millis(self.number("heartbeat.slow_ms")?),
        ))
    }

    pub async fn set_property(&self, name: String, value: String) -> Result<String, StoreError> {
        let value = property::check(&name, &value).map_err(StoreError::Invalid)?;
        self.writer
            .submit(move |txn| {
                txn.open_table(PROPERTIES)?
                    .insert(name.as_str(), encode(&value).as_slice())?;
                Ok(value)
            })
            .await
    }
}
