//! The admin client's failures as an operator reads them: the server's
//! answer, or what kept the call from reaching it, with what to do.

use crate::transport::cause::{Connection, chain_from, connection};

/// A failed call, with the server's explanation.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the procsync admin API at {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("{}", describe_call(.0))]
    Call(tonic::Status),
    #[error("{0}")]
    Invalid(String),
}

// Not `#[from]`: the status is the whole story, and as an error source its
// own rendering would repeat the message with internals.
impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        ClientError::Call(status)
    }
}

/// A failed connection in plain words, with what to do about it.
pub(super) fn describe_connection(failure: Option<Connection>, chain: String) -> String {
    match failure {
        Some(Connection::Refused) => "nothing accepts connections there; start `procsync serve`, or check the address (--addr, PROCSYNC_ADDR, or the admin.addr file in the data directory)".to_string(),
        Some(Connection::TimedOut) => "no answer in time; check the address and that a firewall lets the connection through".to_string(),
        Some(Connection::Reset) => "the connection was cut by the other side; if the instance serves its admin API over TLS (admin.tls = true), pass --tls-cert with its instance.crt".to_string(),
        Some(Connection::UnknownHost) => "the host name does not resolve; check --addr or PROCSYNC_ADDR".to_string(),
        Some(Connection::NotTls) => "it does not speak TLS; leave out --tls-cert (the admin API is plain on loopback unless admin.tls = true)".to_string(),
        Some(Connection::WrongCertificate(why)) => format!("its certificate does not match the one given with --tls-cert ({why}); pass that instance's own instance.crt"),
        Some(Connection::Tls(why)) => format!("TLS failed ({why})"),
        None => chain.strip_prefix("transport error: ").unwrap_or(&chain).to_string(),
    }
}

/// A failed call: the server's answer, or what broke the connection.
fn describe_call(status: &tonic::Status) -> String {
    let Some(source) = std::error::Error::source(status) else {
        // The server answered: its message says what and what to do.
        return format!("{}: {}", describe_code(status.code()), status.message());
    };
    let chain = chain_from(status.message().to_string(), Some(source));
    match connection(source) {
        Some(failure) => format!(
            "the call to the admin API failed: {}",
            describe_connection(Some(failure), chain)
        ),
        // A TLS listener spoken to in plain HTTP/2 closes the connection
        // or sends what reads as broken frames, depending on timing.
        None => format!(
            "the admin API broke off the call without an answer ({}); if it serves TLS (admin.tls = true), pass --tls-cert with the instance's instance.crt",
            chain.strip_prefix("transport error: ").unwrap_or(&chain)
        ),
    }
}

fn describe_code(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Unauthenticated => "not authenticated",
        Code::PermissionDenied => "permission denied",
        Code::InvalidArgument => "rejected",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::Unavailable => "unavailable",
        _ => "failed",
    }
}
