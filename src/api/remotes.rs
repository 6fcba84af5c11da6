//! Remote system calls: listing them with their health and transfers,
//! validating a link (the `Hello` exchange), disabling, storing the token
//! presented to a peer.

use super::{Api, ApiError, Caller};
use crate::runtime::{RemoteHealth, TransferCounts};
use crate::store::{RemoteState, RemoteSystemStatus, StoreError};
use crate::transport::protocol::Retry;
use crate::user::Permission;

/// A remote system as the admin API shows it.
#[derive(Clone, Debug)]
pub struct RemoteView {
    pub status: RemoteSystemStatus,
    pub health: Option<RemoteHealth>,
    pub has_token: bool,
    pub transfers: TransferCounts,
    /// Its last initial load.
    pub load: Option<crate::store::Load>,
    /// Its last reconciliation.
    pub reconcile: Option<crate::store::Reconciliation>,
    /// Bytes on the links this instance opened to it, before and after
    /// compression.
    pub wire: crate::transport::wire::WireBytes,
}

impl Api {
    /// The remote systems (of `group` only, when not empty).
    pub async fn list_remote_systems(
        &self,
        caller: &Caller,
        group: &str,
    ) -> Result<Vec<RemoteView>, ApiError> {
        caller.require(Permission::ReadSync)?;
        let mut views = self.remote_views().await?;
        if !group.is_empty() {
            views.retain(|v| {
                v.status
                    .enrolled
                    .as_ref()
                    .is_some_and(|e| e.group() == group)
            });
        }
        Ok(views)
    }

    pub(super) async fn remote_views(&self) -> Result<Vec<RemoteView>, ApiError> {
        let (rows, loads, reconciliations) = self
            .blocking(|store| {
                let tokens = store.remotes_with_token()?;
                let out = store
                    .remote_systems()?
                    .into_iter()
                    .map(|status| {
                        let has_token = tokens.contains(&status.spec.name);
                        (status, has_token)
                    })
                    .collect::<Vec<_>>();
                Ok((out, store.loads()?, store.reconciliations()?))
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(status, has_token)| RemoteView {
                health: self.sync.health.get(&status.spec.name),
                wire: self.sync.wire.counts(&status.spec.name).snapshot(),
                transfers: self.sync.transfers.get(&status.spec.name),
                load: loads
                    .iter()
                    .find(|l| l.remote_system == status.spec.name)
                    .cloned(),
                reconcile: reconciliations
                    .iter()
                    .find(|r| r.remote_system == status.spec.name)
                    .cloned(),
                status,
                has_token,
            })
            .collect())
    }

    pub(super) async fn remote_view(&self, name: &str) -> Result<RemoteView, ApiError> {
        self.remote_views()
            .await?
            .into_iter()
            .find(|r| r.status.spec.name == name)
            .ok_or_else(|| {
                ApiError::Store(StoreError::RemoteNotFound {
                    name: name.to_string(),
                })
            })
    }

    /// Connects to the peer and checks, both ways, that the two remote
    /// system records point at each other, that the credentials and pins
    /// work, and that our outbound process events exist there. On success
    /// both states become Active. Returns every problem found.
    pub async fn validate_remote(
        &self,
        caller: &Caller,
        name: String,
    ) -> Result<(Vec<String>, RemoteView), ApiError> {
        caller.require(Permission::WriteSync)?;
        self.validate(name).await
    }

    /// `validate_remote` for this instance itself (a join).
    pub(super) async fn validate(
        &self,
        name: String,
    ) -> Result<(Vec<String>, RemoteView), ApiError> {
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
        if remote.status.spec.dial == crate::config::sync::Dial::Never {
            // We never dial it: its own `remote validate` (a Hello to us)
            // checked the link from its side; here only what we hold.
            if secret.is_none() {
                problems.push(format!(
                    "no token to present to `{name}`; store it with `procsync remote token {name}`"
                ));
            }
            if remote.status.spec.external_id.is_empty() {
                problems.push(format!("remote system `{name}` has no external_id: set it to the sys_id of the peer's remote system for this instance"));
            }
            return self.validated(name, problems).await;
        }
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
            link: self.link_of(&name).await,
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
            conflict_rules: config
                .inbound_flows
                .iter()
                .filter(|f| f.remote_system == name)
                .map(|f| (f.process_event.clone(), f.conflict.as_str().to_string()))
                .collect(),
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
            Err((e, true)) if !e.is_permanent() && e.retry() != Retry::NotReady => problems.push(format!(
                "the peer broke the call off ({e}); if its log says it refused a certificate, its remote system for this instance must pin {}",
                instance.fingerprint
            )),
            Err((e, _)) => problems.push(e.to_string()),
        }
        self.validated(name, problems).await
    }

    /// How this instance's connections to `name` are made and counted.
    pub(super) async fn link_of(&self, name: &str) -> crate::transport::protocol::LinkSettings {
        let remote = name.to_string();
        let compress = self
            .blocking(move |store| store.remote_property("link.compress", &remote))
            .await
            .is_ok_and(|value| value == "true");
        crate::transport::protocol::LinkSettings {
            compress,
            counts: Some(self.sync.wire.counts(name)),
        }
    }

    /// Makes `name` Active both ways when `problems` is empty.
    async fn validated(
        &self,
        name: String,
        problems: Vec<String>,
    ) -> Result<(Vec<String>, RemoteView), ApiError> {
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

    /// Starts (`start`), cancels (`cancel`) or reads (`status`) the
    /// initial load of remote system `name`: the records that exist now
    /// and match the capture definitions of its outbound flows (of
    /// `process_event` only, and matching `query`, when given).
    pub async fn remote_load(
        &self,
        caller: &Caller,
        name: String,
        action: String,
        process_event: String,
        query: String,
    ) -> Result<Option<crate::store::Load>, ApiError> {
        let user = caller.require(Permission::WriteSync)?.clone();
        let remote = self.remote_view(&name).await?;
        match action.as_str() {
            "status" => Ok(remote.load),
            "cancel" => {
                let load = self.store.cancel_load(name.clone()).await?;
                tracing::info!(target: "load", remote_system = %name, user = %user.name, "An initial load was cancelled.");
                Ok(Some(load))
            }
            "start" => {
                if remote.status.outbound_state != crate::store::RemoteState::Active {
                    return Err(ApiError::Store(StoreError::Invalid(format!(
                        "remote system `{name}` is {} outbound, not Active, so a load would wait unsent; run `procsync remote validate {name}` first",
                        remote.status.outbound_state.as_str()
                    ))));
                }
                if let Err(e) = crate::condition::Query::parse(&query) {
                    return Err(ApiError::Store(StoreError::Invalid(format!(
                        "the load's query does not parse: {e}"
                    ))));
                }
                let event = (!process_event.is_empty()).then_some(process_event);
                if let Some(event) = &event {
                    let config = self.blocking(|store| store.sync_config()).await?;
                    if !config
                        .outbound_flows
                        .iter()
                        .any(|f| f.remote_system == name && &f.process_event == event)
                    {
                        return Err(ApiError::Store(StoreError::Invalid(format!(
                            "no outbound flow sends process event `{event}` to `{name}`; `procsync export` shows the flows"
                        ))));
                    }
                }
                let load = self
                    .store
                    .start_load(name.clone(), event, query, user.name.clone())
                    .await?;
                self.sync.wake_load.notify_one();
                tracing::info!(target: "load", remote_system = %name, user = %user.name, records = load.total, "An initial load started.");
                Ok(Some(load))
            }
            other => Err(ApiError::UnknownAction {
                name: other.to_string(),
            }),
        }
    }

    /// Asks for (`start`) or reads (`status`) a reconciliation with
    /// remote system `name`: its correlated records of `table` (of every
    /// synced table when empty) compared with the peer's, and with
    /// `repair` the differences settled.
    pub async fn remote_reconcile(
        &self,
        caller: &Caller,
        name: String,
        action: String,
        table: String,
        repair: bool,
    ) -> Result<Option<crate::store::Reconciliation>, ApiError> {
        let user = caller.require(Permission::WriteSync)?.clone();
        let remote = self.remote_view(&name).await?;
        match action.as_str() {
            "status" => Ok(remote.reconcile),
            "start" => {
                for (direction, state) in [
                    ("outbound", remote.status.outbound_state),
                    ("inbound", remote.status.inbound_state),
                ] {
                    if state != RemoteState::Active {
                        return Err(ApiError::Store(StoreError::Invalid(format!(
                            "remote system `{name}` is {} {direction}, not Active, so the two sides cannot be compared; run `procsync remote validate {name}` first",
                            state.as_str()
                        ))));
                    }
                }
                let table = (!table.is_empty()).then_some(table);
                if let Some(table) = &table {
                    let config = self.blocking(|store| store.sync_config()).await?;
                    if !crate::reconcile::Description::of(&config, &name).syncs_table(table) {
                        return Err(ApiError::Store(StoreError::Invalid(format!(
                            "no flow syncs table `{table}` with `{name}`; `procsync export` shows the captures and inbound flows"
                        ))));
                    }
                }
                let asked = self
                    .store
                    .request_reconcile(name.clone(), table, repair, user.name.clone())
                    .await?;
                self.sync.wake_reconcile.notify_one();
                tracing::info!(target: "reconcile", remote_system = %name, user = %user.name, repair, "A reconciliation was asked for.");
                Ok(Some(asked))
            }
            other => Err(ApiError::UnknownAction {
                name: other.to_string(),
            }),
        }
    }

    pub async fn disable_remote(
        &self,
        caller: &Caller,
        name: String,
    ) -> Result<RemoteView, ApiError> {
        caller.require(Permission::WriteSync)?;
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
        caller: &Caller,
        name: String,
        secret: String,
    ) -> Result<RemoteView, ApiError> {
        caller.require(Permission::WriteSync)?;
        let secret = secret.trim().to_string();
        if secret.is_empty() || !secret.is_ascii() {
            return Err(ApiError::EmptyToken);
        }
        self.store.set_remote_secret(name.clone(), secret).await?;
        self.remote_view(&name).await
    }
}
