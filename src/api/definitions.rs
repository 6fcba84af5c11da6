//! Definition calls: applying and exporting the process sync definitions
//! (scoped to the caller's domain) and the runtime properties.

use super::{Api, ApiError, Caller};
use crate::config::sync::{Enrolled, SyncConfig};
use crate::store::ApplyReport;
use crate::user::Permission;

impl Api {
    pub async fn apply_config(
        &self,
        caller: &Caller,
        text: String,
        file_name: String,
    ) -> Result<ApplyReport, ApiError> {
        let user = caller.require(Permission::WriteSync)?.clone();
        let file_name = if file_name.is_empty() {
            "(request)".to_string()
        } else {
            file_name
        };
        // An admin of a domain manages that subtree only: the objects
        // outside it stay as they are, and the file may refer to them.
        // The hubs this instance joined are not in the file either, but
        // its flows may name them.
        let (stored, enrolled) = self
            .blocking(|store| Ok((store.definitions()?, store.enrolled_remotes()?)))
            .await?;
        let (_, kept) = stored.split_by_domain(&user.domain);
        let mut known = kept.clone();
        known.remote_systems.extend(
            enrolled
                .into_iter()
                .filter(|(_, how)| matches!(how, Enrolled::Hub { .. }))
                .map(|(remote, _)| remote),
        );
        let mut config = SyncConfig::parse_for_domain(&file_name, &text, &user.domain, &known)
            .map_err(|e| ApiError::Invalid(e.to_string()))?;
        config
            .remote_systems
            .retain(|r| !known.remote_systems.contains(r) || kept.remote_systems.contains(r));
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

    pub async fn export_config(&self, caller: &Caller) -> Result<String, ApiError> {
        let user = caller.require(Permission::ReadSync)?.clone();
        let config = self.blocking(|store| store.definitions()).await?;
        Ok(config.split_by_domain(&user.domain).0.to_toml())
    }

    /// Every property: (name, value, default, description), then the
    /// values set for one remote system (`NAME@REMOTE`).
    pub async fn list_properties(
        &self,
        caller: &Caller,
    ) -> Result<Vec<(String, String, String, String)>, ApiError> {
        caller.require(Permission::ReadSync)?;
        self.blocking(|store| {
            let mut rows = crate::property::PROPERTIES
                .iter()
                .map(|p| {
                    Ok((
                        p.name.to_string(),
                        store.property(p.name)?,
                        p.default.to_string(),
                        p.description.to_string(),
                    ))
                })
                .collect::<Result<Vec<_>, crate::store::StoreError>>()?;
            for (name, value) in store.per_remote_properties()? {
                if let Ok(def) = crate::property::find(&name) {
                    let base = def.name;
                    let description = format!(
                        "{} (for one remote system; `{base}` for the others)",
                        def.description
                    );
                    rows.push((name, value, def.default.to_string(), description));
                }
            }
            Ok(rows)
        })
        .await
    }

    pub async fn set_property(
        &self,
        caller: &Caller,
        name: String,
        value: String,
    ) -> Result<(String, String, String, String), ApiError> {
        let user = caller.require(Permission::ManageInstance)?.clone();
        if !user.domain.is_global() {
            return Err(ApiError::NotGlobalAdmin {
                user: user.name,
                domain: user.domain,
            });
        }
        let value = self.store.set_property(name.clone(), value).await?;
        self.sync.wake_outbound.notify_waiters();
        // `NAME@REMOTE` is described by its NAME.
        let def = crate::property::find(&name)
            .map_err(|_| ApiError::UnknownProperty { name: name.clone() })?;
        Ok((
            name,
            value,
            def.default.to_string(),
            def.description.to_string(),
        ))
    }
}
