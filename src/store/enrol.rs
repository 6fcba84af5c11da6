//! Enrolment: a hub's one-time invitations to join a remote group, and the
//! writer jobs that make (or unmake) both sides of a link in one
//! transaction each: the member on the hub (`enrol_member`), the hub on
//! the edge (`join_hub`), and `remove_enrolled` on either side. What each
//! makes is instance data beside the definitions file: a remote system
//! marked `enrolled`, its two users and their tokens, the token presented
//! to the peer.

use std::sync::Arc;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::sync_objects::{definitions_of, read_sync_objects, sync_config_of};
use super::tables::*;
use super::writer::Txn;
use super::{RemoteState, Store, StoreError, StoredSyncObject};
use crate::config::sync::{Enrolled, RemoteSystem, SyncConfig};
use crate::domain::Domain;
use crate::ids::{Millis, format_time, hex, new_sys_id, new_token, now_millis, token_hash};
use crate::user::{Role, User, check_user_name};

/// A one-time invitation to join a group, as the hub keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Invite {
    pub id: String,
    pub group: String,
    /// The member's name on the hub; empty: the joiner's instance name.
    pub member: String,
    /// blake3 of the code's secret, hex.
    pub secret_hash: String,
    pub created_on: Millis,
    pub created_by: String,
    pub expires_on: Millis,
    pub used: Option<InviteUse>,
}

/// Who used an invitation, and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InviteUse {
    pub fingerprint: String,
    pub member: String,
    pub on: Millis,
}

/// What a joining edge presents to the hub.
#[derive(Clone, Debug)]
pub struct JoinAsk {
    pub invite: String,
    pub secret: String,
    /// The certificate the edge connected with (seen by TLS).
    pub fingerprint: String,
    pub instance_name: String,
    /// The edge's remote system record for the hub.
    pub remote_system_sys_id: String,
    /// Where the hub reaches the edge.
    pub endpoint: String,
    /// The token the hub presents to the edge.
    pub token: String,
}

/// What the hub answers a join it took.
#[derive(Clone, Debug)]
pub struct JoinGrant {
    pub member: String,
    pub group: String,
    /// The hub's remote system record for the edge.
    pub remote_system_sys_id: String,
    /// The token the edge presents to the hub.
    pub token: String,
    /// The group's member definitions, flows naming no remote system.
    pub template: SyncConfig,
    /// Whether the hub dials the member.
    pub dials: bool,
}

/// The hub as the joining edge records it.
#[derive(Clone, Debug)]
pub struct HubLink {
    pub remote: RemoteSystem,
    pub group: String,
    /// Made before the join: the hub names it as its external id.
    pub sys_id: String,
    /// The token the hub presents here (for `remote.inbound_api_user`).
    pub token_here: String,
    /// The token this instance presents to the hub.
    pub token_there: String,
    /// The group's member definitions, naming the hub.
    pub template: SyncConfig,
}

/// What `remove_enrolled` took away.
#[derive(Clone, Debug)]
pub struct Removed {
    pub remote: RemoteSystem,
    /// The token this instance presented to the peer, to tell it.
    pub token: Option<String>,
}

/// The user names a link makes for peer `name`: the one it calls as and
/// the one its changes are applied as.
pub fn link_users(name: &str) -> (String, String) {
    (format!("{name}_api"), format!("{name}_runas"))
}

/// The refusal of a join, in words for the joining operator.
fn refused(reason: String) -> StoreError {
    StoreError::JoinRefused(reason)
}

fn read_invite(txn: &Txn<'_>, id: &str) -> Result<Option<Invite>, StoreError> {
    let table = txn.open_table(INVITES)?;
    let found = table.get(id)?;
    found.map(|v| decode(v.value())).transpose()
}

fn write_invite(txn: &Txn<'_>, invite: &Invite) -> Result<(), StoreError> {
    txn.open_table(INVITES)?
        .insert(invite.id.as_str(), encode(invite).as_slice())?;
    Ok(())
}

/// Checks that `name` is free for a new link: no remote system or group
/// has it, and its two users do not exist.
fn name_is_free(txn: &Txn<'_>, name: &str, side: &str) -> Result<(), StoreError> {
    let (api, run_as) = link_users(name);
    for user in [&api, &run_as] {
        check_user_name(user).map_err(|e| {
            StoreError::Invalid(format!("`{name}` cannot name a remote system: {e}"))
        })?;
    }
    let objects = txn.open_table(SYNC_OBJECTS)?;
    if objects.get(("remote_system", name))?.is_some()
        || objects.get(("remote_group", name))?.is_some()
    {
        return Err(StoreError::Invalid(format!(
            "a remote system or group named `{name}` already exists on the {side}; choose another name"
        )));
    }
    let users = txn.open_table(USERS)?;
    for user in [&api, &run_as] {
        if users.get(user.as_str())?.is_some() {
            return Err(StoreError::Invalid(format!(
                "user `{user}` already exists on the {side}, so a link named `{name}` cannot make it; choose another name"
            )));
        }
    }
    Ok(())
}

/// Makes the two users of a link and stores the token the peer presents.
fn add_link_users(
    txn: &mut Txn<'_>,
    name: &str,
    domain: &Domain,
    token: &str,
) -> Result<(String, String), StoreError> {
    let (api, run_as) = link_users(name);
    let user = |name: &str, role: Role| User {
        sys_id: new_sys_id(),
        name: name.to_string(),
        roles: vec![role],
        domain: domain.clone(),
        created_on: now_millis(),
        token_hashes: Vec::new(),
    };
    super::users::add_user(txn, user(&api, Role::ProcessSyncApi), token)?;
    // The run-as user is never called as: its token is random and unsaid.
    super::users::add_user(txn, user(&run_as, Role::ProcessSyncRunAs), &new_token())?;
    Ok((api, run_as))
}

fn insert_remote(
    txn: &Txn<'_>,
    sys_id: String,
    remote: &RemoteSystem,
    enrolled: Enrolled,
    token_there: &str,
) -> Result<(), StoreError> {
    let now = now_millis();
    let object = StoredSyncObject {
        sys_id,
        kind: "remote_system".to_string(),
        name: remote.name.clone(),
        spec: serde_json::to_value(remote).expect("remote systems serialize"),
        outbound_state: Some(RemoteState::Disabled),
        inbound_state: Some(RemoteState::Disabled),
        enrolled: Some(enrolled),
        created_on: now,
        updated_on: now,
    };
    txn.open_table(SYNC_OBJECTS)?.insert(
        ("remote_system", remote.name.as_str()),
        encode(&object).as_slice(),
    )?;
    txn.open_table(REMOTE_SECRETS)?.insert(
        remote.name.as_str(),
        encode(&token_there.to_string()).as_slice(),
    )?;
    Ok(())
}

/// Rebuilds the capture rules from the definitions as they run now.
fn rebuild_capture(txn: &mut Txn<'_>) -> Result<(), StoreError> {
    let objects = read_sync_objects(&txn.open_table(SYNC_OBJECTS)?)?;
    let config = sync_config_of(&objects)?;
    txn.capture = Arc::new(crate::capture::CaptureIndex::build(&config));
    super::match_index::follow(txn, txn.names, &txn.capture.matched())?;
    Ok(())
}

/// The invitation `ask` names in `invites`, when its secret matches.
fn matching_invite(
    invites: &impl ReadableTable<&'static str, &'static [u8]>,
    ask: &JoinAsk,
) -> Result<Invite, StoreError> {
    let found = invites.get(ask.invite.as_str())?;
    let invite: Option<Invite> = found.map(|v| decode(v.value())).transpose()?;
    match invite {
        Some(invite) if invite.secret_hash == hex(&token_hash(&ask.secret)) => Ok(invite),
        _ => Err(refused("the join code is not one this hub issued (mistyped, forged or revoked); ask the hub's operator for a new one (`procsync remote invite`)".to_string())),
    }
}

/// The invitation `ask` names, when its secret matches and it is unused.
fn usable_invite(txn: &Txn<'_>, ask: &JoinAsk) -> Result<Invite, StoreError> {
    let invite = matching_invite(&txn.open_table(INVITES)?, ask)?;
    if let Some(used) = &invite.used {
        let by = if used.fingerprint == ask.fingerprint {
            "this instance".to_string()
        } else {
            format!("another instance ({})", used.fingerprint)
        };
        return Err(refused(format!(
            "the join code was already used by {by} at {}, as `{}`; a code works once: ask for a new one",
            format_time(used.on),
            used.member
        )));
    }
    Ok(invite)
}

/// The hub's side of a join: checks the invitation and makes the member.
fn enrol_member(txn: &mut Txn<'_>, ask: JoinAsk) -> Result<JoinGrant, StoreError> {
    let mut invite = usable_invite(txn, &ask)?;
    let now = now_millis();
    if now >= invite.expires_on {
        return Err(refused(format!(
            "the join code expired at {}; ask for a new one",
            format_time(invite.expires_on)
        )));
    }
    let objects = read_sync_objects(&txn.open_table(SYNC_OBJECTS)?)?;
    let definitions = definitions_of(&objects)?;
    let Some(group) = definitions
        .remote_groups
        .iter()
        .find(|g| g.name == invite.group)
        .cloned()
    else {
        return Err(refused(format!(
            "group `{}` no longer exists on the hub; ask for a new code",
            invite.group
        )));
    };
    if let Some(pinned) = sync_config_of(&objects)?.remote_systems.iter().find(|r| {
        crate::config::sync::normalize_fingerprint(&r.fingerprint).ok()
            == Some(ask.fingerprint.clone())
    }) {
        return Err(refused(format!(
            "this instance's certificate ({}) is already linked to the hub as remote system `{}`",
            ask.fingerprint, pinned.name
        )));
    }
    if group.dial.is_always() || !ask.endpoint.is_empty() {
        if let Err(e) = crate::config::sync::check_endpoint(&ask.endpoint) {
            return Err(refused(format!(
                "the hub dials the members of group `{}`, so it needs the joining instance's address: {e}; join with --endpoint https://HOST:PORT",
                group.name
            )));
        }
    }
    let member = if invite.member.is_empty() {
        ask.instance_name.clone()
    } else {
        invite.member.clone()
    };
    name_is_free(txn, &member, "hub").map_err(|e| {
        refused(format!(
            "{e} (the hub names a member after its instance unless the invite says `--name`)"
        ))
    })?;
    let token = new_token();
    let (inbound_api_user, run_as) = add_link_users(txn, &member, &group.domain, &token)?;
    let remote = RemoteSystem {
        name: member.clone(),
        description: format!("joined group {} at {}", group.name, format_time(now)),
        external_id: ask.remote_system_sys_id.clone(),
        endpoint: ask.endpoint.clone(),
        fingerprint: ask.fingerprint.clone(),
        inbound_api_user,
        run_as,
        domain: group.domain.clone(),
        error_subflow: Vec::new(),
        dial: group.dial,
        pull: false,
    };
    let sys_id = new_sys_id();
    let enrolled = Enrolled::Member {
        group: group.name.clone(),
    };
    insert_remote(txn, sys_id.clone(), &remote, enrolled, &ask.token)?;
    invite.used = Some(InviteUse {
        fingerprint: ask.fingerprint,
        member: member.clone(),
        on: now,
    });
    write_invite(txn, &invite)?;
    rebuild_capture(txn)?;
    Ok(JoinGrant {
        member,
        group: group.name,
        remote_system_sys_id: sys_id,
        token,
        template: group.member,
        dials: group.dial.is_always(),
    })
}

/// Removes enrolled remote system `name` with its users and secrets; on
/// an edge, its flows to and from the hub go too.
fn remove_enrolled(txn: &mut Txn<'_>, name: &str) -> Result<Removed, StoreError> {
    let object: StoredSyncObject = {
        let table = txn.open_table(SYNC_OBJECTS)?;
        let value = table.get(("remote_system", name))?;
        match value {
            Some(v) => decode(v.value())?,
            None => {
                return Err(StoreError::RemoteNotFound {
                    name: name.to_string(),
                });
            }
        }
    };
    let Some(enrolled) = object.enrolled.clone() else {
        return Err(StoreError::Invalid(format!(
            "remote system `{name}` comes from the definitions file, not from a join; remove it there and `procsync apply`"
        )));
    };
    let remote: RemoteSystem = serde_json::from_value(object.spec.clone())
        .map_err(|e| StoreError::Corrupt(format!("remote system `{name}` does not decode: {e}")))?;
    if matches!(enrolled, Enrolled::Hub { .. }) {
        let objects = read_sync_objects(&txn.open_table(SYNC_OBJECTS)?)?;
        let mut definitions = definitions_of(&objects)?;
        definitions
            .outbound_flows
            .retain(|f| f.remote_system != name);
        definitions
            .inbound_flows
            .retain(|f| f.remote_system != name);
        super::sync_objects::apply_config(txn, definitions)?;
    }
    txn.open_table(SYNC_OBJECTS)?
        .remove(("remote_system", name))?;
    let token: Option<String> = {
        let mut secrets = txn.open_table(REMOTE_SECRETS)?;
        let old = secrets.remove(name)?;
        old.map(|v| decode(v.value())).transpose()?
    };
    txn.open_table(REMOTE_RETRY)?.remove(name)?;
    for user in [&remote.inbound_api_user, &remote.run_as] {
        match super::users::remove_user(txn, user) {
            Ok(_) | Err(StoreError::UserNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    rebuild_capture(txn)?;
    Ok(Removed { remote, token })
}

impl Store {
    /// Keeps a new invitation to `group` (checked to exist) and returns it
    /// with its secret, which is kept only as a hash.
    pub async fn create_invite(
        &self,
        group: String,
        member: String,
        expires_on: Millis,
        by: String,
    ) -> Result<(Invite, String), StoreError> {
        self.writer
            .submit(move |txn| {
                let objects = read_sync_objects(&txn.open_table(SYNC_OBJECTS)?)?;
                let definitions = definitions_of(&objects)?;
                if !definitions.remote_groups.iter().any(|g| g.name == group) {
                    let known: Vec<&str> =
                        definitions.remote_groups.iter().map(|g| g.name.as_str()).collect();
                    return Err(StoreError::Invalid(if known.is_empty() {
                        format!("there is no remote group `{group}`: define one with [[remote_group]] in the definitions and `procsync apply` them")
                    } else {
                        format!("there is no remote group `{group}`; the groups are: {}", known.join(", "))
                    }));
                }
                if !member.is_empty() {
                    name_is_free(txn, &member, "hub")?;
                }
                let secret = new_token();
                let invite = Invite {
                    id: new_sys_id(),
                    group,
                    member,
                    secret_hash: hex(&token_hash(&secret)),
                    created_on: now_millis(),
                    created_by: by,
                    expires_on,
                    used: None,
                };
                write_invite(txn, &invite)?;
                Ok((invite, secret))
            })
            .await
    }

    /// Every invitation, oldest first.
    pub fn invites(&self) -> Result<Vec<Invite>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INVITES)?;
        let mut out: Vec<Invite> = Vec::new();
        for row in table.iter()? {
            let (_, value) = row?;
            out.push(decode(value.value())?);
        }
        out.sort_by_key(|i| i.created_on);
        Ok(out)
    }

    /// Takes a join on the hub: the invitation used, the member made.
    pub async fn enrol_member(&self, ask: JoinAsk) -> Result<JoinGrant, StoreError> {
        // A wrong secret is refused from a read: a flood of guesses never
        // reaches the writer, which every other write waits on. The job
        // checks again, in its transaction.
        self.secret_matches(&ask)?;
        let made = self.writer.submit(move |txn| enrol_member(txn, ask)).await;
        // A refused join wrote nothing (a flood of them must not make every
        // dispatcher read the remote systems again).
        if !matches!(made, Err(StoreError::JoinRefused(_))) {
            self.forget_remotes();
        }
        made
    }

    fn secret_matches(&self, ask: &JoinAsk) -> Result<(), StoreError> {
        let txn = self.db.begin_read()?;
        matching_invite(&txn.open_table(INVITES)?, ask).map(drop)
    }

    /// Undoes a join the edge could not finish: the member goes and the
    /// invitation is unused again. Only the certificate that used it may.
    pub async fn abandon_member(
        &self,
        invite: String,
        secret: String,
        fingerprint: String,
    ) -> Result<(), StoreError> {
        let undone = self
            .writer
            .submit(move |txn| {
                let mut found = read_invite(txn, &invite)?
                    .filter(|i| i.secret_hash == hex(&token_hash(&secret)))
                    .ok_or_else(|| refused("no such join code".to_string()))?;
                let Some(used) = found.used.clone().filter(|u| u.fingerprint == fingerprint) else {
                    return Err(refused(
                        "this join code was not used by this instance".to_string(),
                    ));
                };
                remove_enrolled(txn, &used.member)?;
                found.used = None;
                write_invite(txn, &found)
            })
            .await;
        if !matches!(undone, Err(StoreError::JoinRefused(_))) {
            self.forget_remotes();
        }
        undone
    }

    /// Checks, before asking the hub, that a link named `name` can be made
    /// here.
    pub async fn check_link_name(&self, name: String) -> Result<(), StoreError> {
        self.writer
            .submit(move |txn| name_is_free(txn, &name, "joining instance"))
            .await
    }

    /// Makes the edge's side of a join in one transaction: the hub's
    /// remote system and users, the tokens, and the group's member
    /// definitions added to this instance's.
    pub async fn join_hub(&self, link: HubLink) -> Result<(), StoreError> {
        let joined = self
            .writer
            .submit(move |txn| {
                name_is_free(txn, &link.remote.name, "joining instance")?;
                let objects = read_sync_objects(&txn.open_table(SYNC_OBJECTS)?)?;
                let merged = definitions_of(&objects)?
                    .merged_with(&link.template)
                    .map_err(StoreError::Invalid)?;
                let enrolled = Enrolled::Hub { group: link.group };
                let mut remotes = super::sync_objects::enrolled_remotes(&objects)?;
                remotes.push((link.remote.clone(), enrolled.clone()));
                merged.clone().with_enrolled(remotes).check().map_err(|e| {
                    StoreError::Invalid(format!(
                        "the group's definitions do not fit this instance's: {e}"
                    ))
                })?;
                // Every check is above: from here on nothing is refused.
                super::sync_objects::apply_config(txn, merged)?;
                add_link_users(
                    txn,
                    &link.remote.name,
                    &link.remote.domain,
                    &link.token_here,
                )?;
                insert_remote(txn, link.sys_id, &link.remote, enrolled, &link.token_there)?;
                rebuild_capture(txn)
            })
            .await;
        self.forget_remotes();
        joined
    }

    /// Unlinks enrolled remote system `name` on this side.
    pub async fn remove_enrolled(&self, name: String) -> Result<Removed, StoreError> {
        let removed = self
            .writer
            .submit(move |txn| remove_enrolled(txn, &name))
            .await;
        self.forget_remotes();
        removed
    }
}
