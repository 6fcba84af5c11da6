//! Library errors as sentences an operator reads: a cause chain without
//! repeats or documentation links, and the usual connection failures
//! (refused, timed out, reset, unknown host, TLS where none is spoken, a
//! certificate that does not match) recognised from the chain's types.

use std::error::Error;

/// `error` followed by each cause's own sentence.
pub fn chain(error: &dyn Error) -> String {
    chain_from(error.to_string(), error.source())
}

/// `text` followed by each cause's own sentence (not repeated when one
/// already holds the next).
pub fn chain_from(mut text: String, mut source: Option<&dyn Error>) -> String {
    while let Some(cause) = source {
        let cause_text = without_doc_links(&cause.to_string());
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `text` without the documentation links some libraries append to their
/// messages (rustls: "…close_notify: https://docs.rs/…"): an operator reads
/// what failed, not where a library explains it.
fn without_doc_links(text: &str) -> String {
    text.split(": ")
        .filter(|part| !part.starts_with("https://docs.rs/"))
        .collect::<Vec<_>>()
        .join(": ")
}

/// A connection failure the chain names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connection {
    /// Nothing listens there.
    Refused,
    TimedOut,
    /// The other side cut the connection.
    Reset,
    /// The host name does not resolve.
    UnknownHost,
    /// We spoke TLS; the other side did not.
    NotTls,
    /// The other side's certificate is not the one we trust, and how.
    WrongCertificate(String),
    /// Another TLS failure.
    Tls(String),
}

/// The connection failure somewhere in `error`'s chain, if it is one.
pub fn connection(error: &(dyn Error + 'static)) -> Option<Connection> {
    let mut source = Some(error);
    while let Some(cause) = source {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return Some(of_tls(tls));
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                return Some(of_tls(tls));
            }
            use std::io::ErrorKind;
            match io.kind() {
                ErrorKind::ConnectionRefused => return Some(Connection::Refused),
                ErrorKind::TimedOut => return Some(Connection::TimedOut),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
                    return Some(Connection::Reset);
                }
                _ => {}
            }
        }
        let text = cause.to_string();
        if text.starts_with("dns error") || text.contains("failed to lookup address") {
            return Some(Connection::UnknownHost);
        }
        if text.contains("timed out") {
            return Some(Connection::TimedOut);
        }
        source = cause.source();
    }
    None
}

fn of_tls(error: &rustls::Error) -> Connection {
    match error {
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            Connection::NotTls
        }
        rustls::Error::InvalidCertificate(how) => {
            use rustls::CertificateError as Why;
            let why = match how {
                Why::UnknownIssuer | Why::BadSignature => {
                    "it is not the certificate given, nor signed by it".to_string()
                }
                Why::NotValidForName => "it is not made out for this host name".to_string(),
                Why::Expired => "it has expired".to_string(),
                Why::NotValidYet => "it is not valid yet".to_string(),
                _ => without_doc_links(&error.to_string()),
            };
            Connection::WrongCertificate(why)
        }
        other => Connection::Tls(without_doc_links(&other.to_string())),
    }
}
