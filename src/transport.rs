//! The transport: the only module that sees generated protobuf types. It
//! holds the generated code (`pb`), the admin gRPC service (`admin`) and
//! the admin client the CLI and the benchmark use (`client`), converting
//! wire types to domain types at the edge.

pub mod admin;
pub mod client;

/// Generated code for `proto/`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    pub mod admin {
        tonic::include_proto!("procsync.admin.v1");
    }
}

/// The encoded descriptor set of every proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/procsync_descriptor.bin"));

use crate::api::ApiError;
use crate::record::Operation;
use crate::store::StoreError;

/// The one place errors become gRPC statuses.
pub fn status_of(error: ApiError) -> tonic::Status {
    use tonic::Status;
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

impl From<Operation> for pb::admin::Operation {
    fn from(op: Operation) -> Self {
        match op {
            Operation::Create => pb::admin::Operation::Create,
            Operation::Update => pb::admin::Operation::Update,
            Operation::Delete => pb::admin::Operation::Delete,
        }
    }
}

impl TryFrom<pb::admin::Operation> for Operation {
    type Error = String;
    fn try_from(op: pb::admin::Operation) -> Result<Self, Self::Error> {
        match op {
            pb::admin::Operation::Create => Ok(Operation::Create),
            pb::admin::Operation::Update => Ok(Operation::Update),
            pb::admin::Operation::Delete => Ok(Operation::Delete),
            pb::admin::Operation::Unspecified => {
                Err("operation is missing: say create, update or delete".to_string())
            }
        }
    }
}
