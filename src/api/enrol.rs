//! Enrolment calls: a hub invites an edge into a group (`remote invite`
//! prints a join code), the edge joins with it (`remote join`: both sides
//! made in one exchange, then validated both ways), and either side
//! unlinks (`remote remove`, telling the other). Also the hub's half of a
//! join, which the peer service hands here.

use super::remotes::RemoteView;
use super::{Api, ApiError, Caller};
use crate::config::sync::{RemoteSystem, SyncConfig};
use crate::ids::{new_sys_id, new_token, now_millis};
use crate::store::{HubLink, Invite, JoinAsk, StoreError};
use crate::transport::enrol::{JoinAnswer, JoinCode, JoinRequest, JoinStep, target_of_code};
use crate::transport::peer::PeerClient;
use crate::transport::protocol::{CallError, PROTOCOL_VERSION, PeerTarget};
use crate::user::Permission;

/// Longest an invitation may stay open.
pub const MOST_INVITE_SECS: u64 = 30 * 24 * 3600;

/// What `remote invite` made: the invitation and the code to give the edge.
#[derive(Clone, Debug)]
pub struct Invitation {
    pub invite: Invite,
    pub code: String,
}

/// What `remote join` did.
#[derive(Clone, Debug)]
pub struct Joined {
    /// This instance's remote system for the hub.
    pub hub: RemoteView,
    /// The hub's name for this instance.
    pub member: String,
    pub group: String,
    /// What this side's validation found (empty: Active).
    pub problems: Vec<String>,
    /// What the hub's validation of its side found.
    pub hub_problems: Vec<String>,
}

/// What `remote remove` did.
#[derive(Clone, Debug)]
pub struct Unlinked {
    pub name: String,
    /// Whether the peer removed its side too, or why it could not be told.
    pub peer: Result<(), String>,
}

/// A join the hub could not take, in the joining operator's words.
fn join_failed(endpoint: &str, e: CallError) -> ApiError {
    ApiError::Invalid(match e {
        CallError::Refused { message, .. } => format!("the hub refused the join: {message}"),
        CallError::Pinning { cause, .. } => format!(
            "the hub at {endpoint} did not present the certificate the join code names ({cause}); check the code and the endpoint"
        ),
        e => format!(
            "cannot join through {endpoint}: {e}; nothing was made on either side (a hub that has no invitation open refuses unknown certificates: if its log says so, ask for a new code)"
        ),
    })
}

impl Api {
    /// Opens an invitation to `group` for `expires_secs` and returns the
    /// code that carries it.
    pub async fn invite_remote(
        &self,
        caller: &Caller,
        group: String,
        member: String,
        expires_secs: u64,
        endpoint: String,
    ) -> Result<Invitation, ApiError> {
        let user = caller.require(Permission::ManageUsers)?.clone();
        if expires_secs == 0 || expires_secs > MOST_INVITE_SECS {
            return Err(ApiError::Invalid(format!(
                "an invitation expires after 1 second to 30 days, not {expires_secs} seconds; say --expires 24h, for example"
            )));
        }
        let endpoint = self.own_endpoint(endpoint)?;
        let definitions = self.blocking(|store| store.definitions()).await?;
        let mut hub_dials = true;
        if let Some(found) = definitions.remote_groups.iter().find(|g| g.name == group) {
            if !found.domain.is_within(&user.domain) {
                return Err(ApiError::OutsideDomain {
                    domain: found.domain.clone(),
                    yours: user.domain.clone(),
                });
            }
            hub_dials = found.dial.is_always();
        }
        let expires_on = now_millis() + expires_secs * 1000;
        let (invite, secret) = self
            .store
            .create_invite(group, member, expires_on, user.name.clone())
            .await?;
        let instance = self.blocking(|store| store.instance()).await?;
        self.sync.refresh(&self.store).await?;
        tracing::info!(target: "transport", group = %invite.group, user = %user.name, expires_on = %crate::ids::format_time(expires_on), "An invitation to join a remote group was made.");
        let code = JoinCode {
            endpoint,
            fingerprint: instance.fingerprint,
            invite: invite.id.clone(),
            secret,
            hub_name: instance.name,
            expires_on,
            hub_dials,
        }
        .encode();
        Ok(Invitation { invite, code })
    }

    /// The endpoint peers reach this instance at: `given`, else the
    /// server's.
    fn own_endpoint(&self, given: String) -> Result<String, ApiError> {
        let endpoint = if given.is_empty() {
            self.peer_endpoint.clone().ok_or_else(|| {
                ApiError::Invalid("this instance's peer API listens on every interface, so it cannot tell which address peers reach it at; say --endpoint https://HOST:PORT, or set `advertise` under [peer] in the server config".to_string())
            })?
        } else {
            given
        };
        crate::config::sync::check_endpoint(&endpoint).map_err(ApiError::Invalid)?;
        Ok(endpoint)
    }

    /// Joins the hub a join code names, as `name` (the hub's instance
    /// name when empty): both sides are made, then validated.
    pub async fn join_remote(
        &self,
        caller: &Caller,
        code: String,
        name: String,
        endpoint: String,
    ) -> Result<Joined, ApiError> {
        let user = caller.require(Permission::ManageUsers)?.clone();
        let code = JoinCode::parse(&code).map_err(ApiError::Invalid)?;
        if now_millis() >= code.expires_on {
            return Err(ApiError::Invalid(format!(
                "the join code expired at {}; ask the hub's operator for a new one",
                crate::ids::format_time(code.expires_on)
            )));
        }
        let name = if name.is_empty() {
            code.hub_name.clone()
        } else {
            name
        };
        // A hub that never dials its members needs no address of ours.
        let endpoint = if code.hub_dials || !endpoint.is_empty() {
            self.own_endpoint(endpoint)?
        } else {
            String::new()
        };
        self.store.check_link_name(name.clone()).await?;
        let instance = self.blocking(|store| store.instance()).await?;
        let target = target_of_code(&code, instance.cert_pem.clone(), instance.key_pem.clone());
        let mut hub = PeerClient::connect(&target)
            .await
            .map_err(|e| join_failed(&code.endpoint, e))?;
        let sys_id = new_sys_id();
        let token_here = new_token();
        let request = JoinRequest {
            invite: code.invite.clone(),
            secret: code.secret.clone(),
            fingerprint: instance.fingerprint.clone(),
            instance_sys_id: instance.sys_id.clone(),
            instance_name: instance.name.clone(),
            remote_system_sys_id: sys_id.clone(),
            endpoint,
            token: token_here.clone(),
        };
        let answer = hub
            .join(JoinStep::Enrol, request.clone())
            .await
            .map_err(|e| join_failed(&code.endpoint, e))?;
        let made = self
            .make_hub_side(&code, &name, &user.domain, sys_id, token_here, &answer)
            .await;
        if let Err(e) = made {
            let undone = match hub.join(JoinStep::Abandon, request.clone()).await {
                Ok(_) => "the hub's side was undone",
                Err(_) => {
                    "the hub's side could not be undone: remove it there with `procsync remote remove`"
                }
            };
            return Err(ApiError::Invalid(format!(
                "the join could not be finished here ({e}); {undone}"
            )));
        }
        tracing::info!(target: "transport", hub = %name, group = %answer.group, member = %answer.member, "Joined a remote group.");
        let (problems, _) = self.validate(name.clone()).await?;
        let hub_problems = match hub.join(JoinStep::Confirm, request).await {
            Ok(confirmed) => confirmed.problems,
            Err(e) => vec![format!("the hub could not validate its side: {e}")],
        };
        Ok(Joined {
            hub: self.remote_view(&name).await?,
            member: answer.member,
            group: answer.group,
            problems,
            hub_problems,
        })
    }

    /// Records the hub from its answer, in one transaction.
    async fn make_hub_side(
        &self,
        code: &JoinCode,
        name: &str,
        domain: &crate::domain::Domain,
        sys_id: String,
        token_here: String,
        answer: &JoinAnswer,
    ) -> Result<(), ApiError> {
        if answer.protocol_version != PROTOCOL_VERSION {
            return Err(ApiError::Invalid(format!(
                "the hub speaks protocol version {}, this instance {PROTOCOL_VERSION}; run the same procsync version on both",
                answer.protocol_version
            )));
        }
        let template: SyncConfig = serde_json::from_str(&answer.definitions_json).map_err(|e| {
            ApiError::Invalid(format!(
                "the group's definitions from the hub do not read: {e}"
            ))
        })?;
        let (inbound_api_user, run_as) = crate::store::link_users(name);
        let link = HubLink {
            remote: RemoteSystem {
                name: name.to_string(),
                description: format!("the hub of group {}", answer.group),
                external_id: answer.remote_system_sys_id.clone(),
                endpoint: code.endpoint.clone(),
                fingerprint: code.fingerprint.clone(),
                inbound_api_user,
                run_as,
                domain: domain.clone(),
                error_subflow: Vec::new(),
                dial: crate::config::sync::Dial::Always,
                pull: !answer.dials,
            },
            group: answer.group.clone(),
            sys_id,
            token_here,
            token_there: answer.token.clone(),
            template: template.for_hub(name),
        };
        self.store.join_hub(link).await?;
        self.after_link_change().await
    }

    /// Unlinks enrolled remote system `name` here, then tells the peer.
    pub async fn remove_remote(&self, caller: &Caller, name: String) -> Result<Unlinked, ApiError> {
        caller.require(Permission::ManageUsers)?;
        // A peer we never dial hears it down the stream it opened, before
        // that stream ends with the removal.
        let looked_up = name.clone();
        let never_dialled = self
            .blocking(move |store| store.remote_system(&looked_up))
            .await?
            .is_some_and(|r| r.spec.dial == crate::config::sync::Dial::Never);
        let told = never_dialled && self.sync.reverse.tell_left(&name).await;
        let removed = self.store.remove_enrolled(name.clone()).await?;
        self.after_link_change().await?;
        tracing::info!(target: "transport", remote_system = %name, "An enrolled remote system was removed.");
        if never_dialled {
            let peer = if told {
                Ok(())
            } else {
                Err("it has no stream open to this instance, which never dials it".to_string())
            };
            return Ok(Unlinked { name, peer });
        }
        let instance = self.blocking(|store| store.instance()).await?;
        let peer = match removed.token {
            None => Err("this instance held no token for it".to_string()),
            Some(token) => {
                let target = PeerTarget {
                    endpoint: removed.remote.endpoint.clone(),
                    fingerprint: crate::config::sync::normalize_fingerprint(
                        &removed.remote.fingerprint,
                    )
                    .unwrap_or_default(),
                    token,
                    cert_pem: instance.cert_pem,
                    key_pem: instance.key_pem,
                    link: Default::default(),
                };
                match PeerClient::connect(&target).await {
                    Ok(mut client) => client.leave().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        Ok(Unlinked { name, peer })
    }

    /// Refreshes what depends on the remote systems and users after a
    /// link was made or unmade.
    async fn after_link_change(&self) -> Result<(), ApiError> {
        self.forget_tokens();
        self.sync.refresh(&self.store).await?;
        self.sync.wake_outbound.notify_waiters();
        self.sync.wake_inbound.notify_one();
        Ok(())
    }

    /// The hub's half of one join step, for a caller that connected with
    /// certificate `fingerprint`.
    pub async fn take_join(
        &self,
        fingerprint: Option<String>,
        step: JoinStep,
        request: JoinRequest,
    ) -> Result<JoinAnswer, ApiError> {
        let Some(fingerprint) = fingerprint else {
            return Err(ApiError::Store(StoreError::JoinRefused(
                "no client certificate was presented".to_string(),
            )));
        };
        let claimed =
            crate::config::sync::normalize_fingerprint(&request.fingerprint).unwrap_or_default();
        if claimed != fingerprint {
            // Logged with the other refusals, a few times per burst, by the
            // peer service.
            return Err(ApiError::Store(StoreError::JoinRefused(format!(
                "the join was presented with certificate {fingerprint}, not {} that it names: a join code is used by the instance that joins, with its own certificate",
                request.fingerprint
            ))));
        }
        let instance = self.blocking(|store| store.instance()).await?;
        let mut answer = JoinAnswer {
            protocol_version: PROTOCOL_VERSION,
            instance_sys_id: instance.sys_id,
            instance_name: instance.name,
            ..JoinAnswer::default()
        };
        match step {
            JoinStep::Enrol => {
                let grant = self
                    .store
                    .enrol_member(JoinAsk {
                        invite: request.invite,
                        secret: request.secret,
                        fingerprint,
                        instance_name: request.instance_name,
                        remote_system_sys_id: request.remote_system_sys_id,
                        endpoint: request.endpoint,
                        token: request.token,
                    })
                    .await?;
                self.after_link_change().await?;
                tracing::info!(target: "transport", member = %grant.member, group = %grant.group, "An instance joined a remote group.");
                answer.member = grant.member;
                answer.group = grant.group;
                answer.remote_system_sys_id = grant.remote_system_sys_id;
                answer.token = grant.token;
                answer.definitions_json =
                    serde_json::to_string(&grant.template).expect("definitions serialize");
                answer.dials = grant.dials;
            }
            JoinStep::Abandon => {
                self.store
                    .abandon_member(request.invite, request.secret, fingerprint)
                    .await?;
                self.after_link_change().await?;
                tracing::warn!(target: "transport", "A join was abandoned by the joining instance; its member was removed and the code may be used again.");
            }
            JoinStep::Confirm => {
                let member = self
                    .member_of_join(&request.invite, &request.secret, &fingerprint)
                    .await?;
                let (problems, _) = self.validate(member.clone()).await?;
                answer.member = member;
                answer.problems = problems;
            }
        }
        Ok(answer)
    }

    /// The member a used invitation made, for the certificate that used it.
    async fn member_of_join(
        &self,
        invite: &str,
        secret: &str,
        fingerprint: &str,
    ) -> Result<String, ApiError> {
        let secret_hash = crate::ids::hex(&crate::ids::token_hash(secret));
        let invites = self.blocking(|store| store.invites()).await?;
        invites
            .into_iter()
            .find(|i| i.id == invite && i.secret_hash == secret_hash)
            .and_then(|i| i.used)
            .filter(|used| used.fingerprint == fingerprint)
            .map(|used| used.member)
            .ok_or_else(|| {
                ApiError::Store(StoreError::JoinRefused(
                    "this instance has not joined with that code".to_string(),
                ))
            })
    }

    /// A peer removed its link to us: its enrolled remote system goes
    /// here too.
    pub async fn peer_left(&self, remote: String) -> Result<(), ApiError> {
        let known = self.blocking(|store| store.enrolled_remotes()).await?;
        if !known.iter().any(|(r, _)| r.name == remote) {
            return Err(ApiError::Invalid(format!(
                "remote system `{remote}` was not made by a join here, so it is removed only by editing the definitions"
            )));
        }
        self.store.remove_enrolled(remote.clone()).await?;
        self.after_link_change().await?;
        tracing::info!(target: "transport", remote_system = %remote, "A peer removed its link to this instance; its remote system was removed here too.");
        Ok(())
    }
}
