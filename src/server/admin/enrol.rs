//! The admin service's enrolment calls (`remote invite`, `remote join`,
//! `remote remove`): wire conversions around `api::enrol`.

use tonic::{Request, Response, Status};

use super::super::status::status_of;
use super::{AdminService, remote_to_pb};
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
        Some(Enrolled::Member { group } | Enrolled::Hub { group }) => group.clone(),
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
