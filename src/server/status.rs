//! The one place errors become gRPC statuses, for the admin and the peer
//! services alike: each error type says its kind of failure
//! (`failure::Classified`), and the kind picks the code.

use tonic::Status;

use crate::failure::{Classified, Failure};

/// Any of the instance's errors as a gRPC status carrying its text.
pub fn status_of<E: Classified>(error: E) -> Status {
    let text = error.to_string();
    match error.failure() {
        Failure::Invalid => Status::invalid_argument(text),
        Failure::NotFound => Status::not_found(text),
        Failure::Conflict => Status::already_exists(text),
        Failure::Unauthenticated => Status::unauthenticated(text),
        Failure::PermissionDenied => Status::permission_denied(text),
        Failure::NotReady => Status::failed_precondition(text),
        Failure::Unavailable => Status::unavailable(text),
        Failure::Internal => Status::internal(text),
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::status_of;
    use crate::api::ApiError;
    use crate::inbound::PeerError;
    use crate::store::StoreError;

    #[test]
    fn each_kind_of_failure_has_its_code_and_keeps_its_text() {
        let missing = StoreError::RecordNotFound {
            table: "incident".into(),
            sys_id: "abc".into(),
        };
        let status = status_of(missing.clone());
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "record incident/abc not found");
        // A failed write of a batch is the kind of its cause, and names its
        // place in the batch.
        let in_batch = StoreError::InBatch {
            position: 2,
            count: 3,
            source: Box::new(StoreError::UserExists { name: "ann".into() }),
        };
        assert!(!in_batch.aborts_batch());
        let status = status_of(ApiError::Store(in_batch));
        assert_eq!(status.code(), Code::AlreadyExists);
        assert!(
            status
                .message()
                .starts_with("write 2 of 3: user `ann` already exists;"),
            "{}",
            status.message()
        );
        assert!(!missing.aborts_batch());
        assert!(StoreError::Storage("the page is torn".into()).aborts_batch());
        assert_eq!(status_of(ApiError::BadToken).code(), Code::Unauthenticated);
        assert_eq!(
            status_of(ApiError::MissingRole {
                user: "bob".into(),
                action: "write records",
                roles: vec!["admin", "itil"],
            })
            .message(),
            "user `bob` may not write records: it needs one of the roles admin, itil"
        );
        assert_eq!(
            status_of(PeerError::InboundNotActive {
                remote: "edge".into(),
                state: "Disabled",
            })
            .code(),
            Code::FailedPrecondition
        );
        assert_eq!(
            status_of(PeerError::from(StoreError::DiskFull)).code(),
            Code::Unavailable
        );
        assert_eq!(status_of(StoreError::DiskFull).code(), Code::Unavailable);
    }
}
