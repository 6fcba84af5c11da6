//! What kind of failure an error is. Each error type of the instance says
//! its kind, and that one answer decides how a call is refused over gRPC
//! and HTTP (`server::status`), whether a writer batch must abort, and
//! whether an inbound flow's write was refused or the store failed.

/// The kinds of failure a caller can tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The request itself is wrong; sending it again changes nothing.
    Invalid,
    /// What the request names does not exist (or is not the caller's to see).
    NotFound,
    /// The request clashes with what is stored: it already exists, or
    /// something changed meanwhile.
    Conflict,
    /// The caller did not say who it is, or said it wrongly.
    Unauthenticated,
    /// The caller is known but may not do this.
    PermissionDenied,
    /// The request is fine but this side is not in a state to take it
    /// (an inactive remote system, say); the message says what to run.
    NotReady,
    /// The instance cannot take it right now (disk full, shutting down);
    /// the same request later may well work.
    Unavailable,
    /// Something broke inside the instance.
    Internal,
}

impl Failure {
    /// Whether the failure is the request's own (invalid, missing or
    /// clashing input), found before anything was written.
    pub fn is_input(self) -> bool {
        matches!(
            self,
            Failure::Invalid | Failure::NotFound | Failure::Conflict
        )
    }
}

/// An error that knows its kind of failure; its text (`Display`) says what
/// failed and what to do next.
pub trait Classified: std::fmt::Display {
    fn failure(&self) -> Failure;
}
