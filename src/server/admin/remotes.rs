//! The admin service's remote systems as the wire shows them, and its
//! enrolment calls (`remote invite`, `remote join`, `remote remove`):
//! wire conversions around `api::remotes` and `api::enrol`.

use tonic::{Request, Response, Status};

use super::super::status::status_of;
use super::AdminService;
use crate::config::sync::Enrolled;
use crate::transport::pb::admin as pb;

/// How a remote system was made, as the admin API names it: `member`,
/// `hub`, or empty (from the definitions).
pub(super) fn how(enrolled: Option<&Enrolled>) -> &'static str {
    match enrolled {
        Some(Enrolled::Member { .. }) => "member",
        Some(Enrolled::Hub { .. }) => "hub",
        None => "",
    }
}

/// The remote group of an enrolled remote system.
pub(super) fn group(enrolled: Option<&Enrolled>) -> String {
    match enrolled {
        Some(enrolled) => enrolled.group().to_string(),
        None => String::new(),
    }
}

pub(super) async fn invite(
    service: &AdminService,
    request: Request<pb::InviteRemoteRequest>,
) -> Result<Response<pb::InviteRemoteResponse>, Status> {
    let caller = service.caller(&request).await?;
    let r = request.into_inner();
    let made = service
        .api
        .invite_remote(&caller, r.group, r.name, r.expires_secs, r.endpoint)
        .await
        .map_err(status_of)?;
    Ok(Response::new(pb::InviteRemoteResponse {
        code: made.code,
        invite: made.invite.id,
        group: made.invite.group,
        expires_on: crate::ids::format_time(made.invite.expires_on),
    }))
}

pub(super) async fn join(
    service: &AdminService,
    request: Request<pb::JoinRemoteRequest>,
) -> Result<Response<pb::JoinRemoteResponse>, Status> {
    let caller = service.caller(&request).await?;
    let r = request.into_inner();
    let joined = service
        .api
        .join_remote(&caller, r.code, r.name, r.endpoint)
        .await
        .map_err(status_of)?;
    Ok(Response::new(pb::JoinRemoteResponse {
        remote_system: Some(remote_to_pb(&joined.hub)),
        member: joined.member,
        group: joined.group,
        problems: joined.problems,
        hub_problems: joined.hub_problems,
    }))
}

pub(super) async fn remove(
    service: &AdminService,
    request: Request<pb::RemoteRequest>,
) -> Result<Response<pb::RemoveRemoteResponse>, Status> {
    let caller = service.caller(&request).await?;
    let unlinked = service
        .api
        .remove_remote(&caller, request.into_inner().name)
        .await
        .map_err(status_of)?;
    Ok(Response::new(pb::RemoveRemoteResponse {
        name: unlinked.name,
        peer_removed: unlinked.peer.is_ok(),
        peer_error: unlinked.peer.err().unwrap_or_default(),
    }))
}

pub(super) fn remote_to_pb(remote: &crate::api::RemoteView) -> pb::RemoteSystem {
    let status = &remote.status;
    let health = remote.health.as_ref();
    pb::RemoteSystem {
        sys_id: status.sys_id.clone(),
        name: status.spec.name.clone(),
        endpoint: status.spec.endpoint.clone(),
        fingerprint: status.spec.fingerprint.clone(),
        external_id: status.spec.external_id.clone(),
        outbound_state: status.outbound_state.as_str().to_string(),
        inbound_state: status.inbound_state.as_str().to_string(),
        inbound_api_user: status.spec.inbound_api_user.clone(),
        run_as: status.spec.run_as.clone(),
        health: health
            .map(|h| h.health.as_str())
            .unwrap_or("Down")
            .to_string(),
        last_error: health
            .and_then(|h| h.last_error.clone())
            .unwrap_or_default(),
        attempts: health.map(|h| h.attempts).unwrap_or(0),
        next_attempt_on: health
            .and_then(|h| h.next_attempt_on.clone())
            .unwrap_or_default(),
        has_token: remote.has_token,
        round_trip_ms: health.and_then(|h| h.round_trip_ms).unwrap_or(0),
        attachment_bytes_sent: remote.transfers.bytes_sent,
        attachment_bytes_received: remote.transfers.bytes_received,
        load: remote
            .load
            .as_ref()
            .map(crate::store::Load::summary)
            .unwrap_or_default(),
        reconcile: remote
            .reconcile
            .as_ref()
            .map(crate::store::Reconciliation::summary)
            .unwrap_or_default(),
        enrolled: how(status.enrolled.as_ref()).to_string(),
        group: group(status.enrolled.as_ref()),
        encoded_bytes_sent: remote.wire.encoded_sent,
        encoded_bytes_received: remote.wire.encoded_received,
        wire_bytes_sent: remote.wire.wire_sent,
        wire_bytes_received: remote.wire.wire_received,
    }
}
