//! The admin client's enrolment calls: inviting an edge into a group,
//! joining a hub with a join code, removing a joined link, and listing a
//! group's members.

use serde::Serialize;

use super::{AdminClient, ClientError, RemoteSystemData, remote_from_pb};
use crate::transport::pb::admin as pb;

/// An invitation as `remote invite` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct Invited {
    pub code: String,
    pub invite: String,
    pub group: String,
    pub expires_on: String,
}

/// What `remote join` did.
#[derive(Clone, Debug, Serialize)]
pub struct JoinedHub {
    pub remote_system: RemoteSystemData,
    /// The hub's name for this instance.
    pub member: String,
    pub group: String,
    pub problems: Vec<String>,
    pub hub_problems: Vec<String>,
}

/// What `remote remove` did.
#[derive(Clone, Debug, Serialize)]
pub struct Unlinked {
    pub name: String,
    pub peer_removed: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub peer_error: String,
}

impl AdminClient {
    pub async fn invite_remote(
        &mut self,
        group: &str,
        name: &str,
        expires_secs: u64,
        endpoint: &str,
    ) -> Result<Invited, ClientError> {
        let request = self.request(pb::InviteRemoteRequest {
            group: group.to_string(),
            name: name.to_string(),
            expires_secs,
            endpoint: endpoint.to_string(),
        });
        let r = self.inner.invite_remote(request).await?.into_inner();
        Ok(Invited {
            code: r.code,
            invite: r.invite,
            group: r.group,
            expires_on: r.expires_on,
        })
    }

    pub async fn join_remote(
        &mut self,
        code: &str,
        name: &str,
        endpoint: &str,
    ) -> Result<JoinedHub, ClientError> {
        let request = self.request(pb::JoinRemoteRequest {
            code: code.to_string(),
            name: name.to_string(),
            endpoint: endpoint.to_string(),
        });
        let r = self.inner.join_remote(request).await?.into_inner();
        let remote_system = r.remote_system.map(remote_from_pb).ok_or_else(|| {
            ClientError::Invalid("the server answered without the remote system".into())
        })?;
        Ok(JoinedHub {
            remote_system,
            member: r.member,
            group: r.group,
            problems: r.problems,
            hub_problems: r.hub_problems,
        })
    }

    pub async fn remove_remote(&mut self, name: &str) -> Result<Unlinked, ClientError> {
        let request = self.request(pb::RemoteRequest {
            name: name.to_string(),
        });
        let r = self.inner.remove_remote(request).await?.into_inner();
        Ok(Unlinked {
            name: r.name,
            peer_removed: r.peer_removed,
            peer_error: r.peer_error,
        })
    }

    /// The remote systems of `group` (every one when empty).
    pub async fn list_group(&mut self, group: &str) -> Result<Vec<RemoteSystemData>, ClientError> {
        let request = self.request(pb::ListRemoteSystemsRequest {
            group: group.to_string(),
        });
        let response = self.inner.list_remote_systems(request).await?.into_inner();
        Ok(response
            .remote_systems
            .into_iter()
            .map(remote_from_pb)
            .collect())
    }
}
