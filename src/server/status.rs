//! The one place errors become gRPC statuses, for the admin and the peer
//! services alike.

use tonic::Status;

use crate::api::ApiError;
use crate::inbound::PeerError;
use crate::store::StoreError;

/// An admin API error as a gRPC status.
pub fn status_of(error: ApiError) -> Status {
    match error {
        ApiError::Unauthenticated(m) => Status::unauthenticated(m),
        ApiError::PermissionDenied(m) => Status::permission_denied(m),
        ApiError::Invalid(m) => Status::invalid_argument(m),
        ApiError::Store(e) => match e {
            StoreError::Invalid(m) => Status::invalid_argument(m),
            StoreError::NotFound(_) => Status::not_found(e.to_string()),
            StoreError::Conflict(m) => Status::already_exists(m),
            StoreError::Closed | StoreError::Storage(_) => Status::unavailable(e.to_string()),
            other => Status::internal(other.to_string()),
        },
    }
}

/// A refused peer call as a gRPC status.
pub fn peer_status_of(error: PeerError) -> Status {
    match error {
        PeerError::Unauthenticated(m) => Status::unauthenticated(m),
        PeerError::PermissionDenied(m) => Status::permission_denied(m),
        PeerError::NotActive(m) => Status::failed_precondition(m),
        PeerError::Unavailable(m) => Status::unavailable(m),
        PeerError::NotFound(m) => Status::not_found(m),
    }
}
