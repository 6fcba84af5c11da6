//! Mutual TLS between peers with pinned certificates: no CA, each side
//! accepts exactly the certificate fingerprints its remote system records
//! name. Builds the rustls configurations (ring provider) for the peer
//! listener and for dialling a peer.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::identity::fingerprint_of_der;

mod slots;
pub use slots::PeerSlots;
use slots::Slotted;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The fingerprints the peer listener accepts, kept current as remote
/// systems are applied; and until when an unknown certificate may connect
/// to join (the last expiry of an open invitation, milliseconds).
#[derive(Clone, Debug, Default)]
pub struct AllowedPeers(Arc<RwLock<HashSet<String>>>, Arc<AtomicU64>);

impl AllowedPeers {
    pub fn replace(&self, fingerprints: impl IntoIterator<Item = String>) {
        *self.0.write().expect("allowed peers lock") = fingerprints.into_iter().collect();
    }

    /// Lets certificates no remote system pins connect until `until_ms`
    /// (0: not at all). Such a connection can only join: every other call
    /// identifies the caller by a pinned certificate.
    pub fn open_enrolment_until(&self, until_ms: u64) {
        self.1.store(until_ms, Ordering::Relaxed);
    }

    fn enrolment_open(&self) -> bool {
        crate::ids::now_millis() < self.1.load(Ordering::Relaxed)
    }

    fn contains(&self, fingerprint: &str) -> bool {
        self.0
            .read()
            .expect("allowed peers lock")
            .contains(fingerprint)
    }
}

fn certificate_chain(cert_pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the instance certificate is not valid PEM: {e}"))
}

fn private_key(key_pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("the instance key is not valid PEM: {e}"))
}

/// The peer listener's TLS: our certificate, client certificates required
/// and accepted only when their fingerprint is allowed.
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
    allowed: AllowedPeers,
) -> Result<rustls::ServerConfig, String> {
    let provider = provider();
    let verifier = Arc::new(PinnedClients {
        allowed,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificate_chain(cert_pem)?, private_key(key_pem)?)
        .map_err(|e| format!("the instance certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The admin listener's TLS (`admin.tls = true`): our certificate, no
/// client certificate (callers bring a token), and both HTTP/2 (gRPC,
/// browsers) and HTTP/1.1 (`/metrics` scrapers, curl) offered.
pub fn admin_server_config(cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certificate_chain(cert_pem)?, private_key(key_pem)?)
        .map_err(|e| format!("the instance certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// TLS connections accepted from `incoming` with `config`, for tonic's
/// `serve_with_incoming`. Each handshake runs on its own task with a
/// deadline, so a slow one never holds others; failures are logged with
/// `what` ("peer", "admin client"). Abort the returned task to stop.
/// With `slots`, at most that many distinct peers are connected at once.
pub fn accept_tls<S>(
    mut incoming: S,
    config: rustls::ServerConfig,
    what: &'static str,
    slots: Option<PeerSlots>,
) -> (
    tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsStream>>,
    tokio::task::JoinHandle<()>,
)
where
    S: tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Unpin + Send + 'static,
{
    use tokio_stream::StreamExt;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (connections, accepted) = tokio::sync::mpsc::channel(64);
    let accept_loop = tokio::spawn(async move {
        while let Some(tcp) = incoming.next().await {
            let tcp = match tcp {
                Ok(tcp) => tcp,
                Err(e) => {
                    tracing::warn!(target: "transport", error = %e, "Accepting a {what} connection failed.");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let remote = tcp
                .peer_addr()
                .map_or_else(|_| "an unknown address".to_string(), |a| a.to_string());
            let acceptor = acceptor.clone();
            let connections = connections.clone();
            let slots = slots.clone();
            tokio::spawn(async move {
                let tcp = Slotted::new(tcp);
                match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(tcp)).await {
                    Ok(Ok(mut stream)) => {
                        if let Some(slots) = &slots {
                            let fingerprint = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|certs| certs.first())
                                .map(|cert| fingerprint_of_der(cert))
                                .unwrap_or_default();
                            if !stream.get_mut().0.occupy(slots, fingerprint) {
                                // Closed after a pause: a caller that waits
                                // for an answer calls about once a second.
                                tokio::time::sleep(REFUSAL_PAUSE).await;
                                return;
                            }
                            stream.get_mut().0.expect_speech(SPEECH_DEADLINE);
                        }
                        let _ = connections.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(target: "transport", %remote, error = %e, "A {what}'s TLS handshake failed.");
                    }
                    Err(_) => {
                        tracing::warn!(target: "transport", %remote, "A {what}'s TLS handshake timed out.");
                    }
                }
            });
        }
    });
    (
        tokio_stream::wrappers::ReceiverStream::new(accepted),
        accept_loop,
    )
}

/// A server-side TLS connection.
pub type TlsStream = tokio_rustls::server::TlsStream<Slotted>;

/// How long a connection beyond `max_peers` is held before it is closed.
const REFUSAL_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a peer may say nothing after its TLS handshake.
pub const SPEECH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a TLS handshake may take.
const HANDSHAKE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// TLS for dialling a peer: our certificate as client certificate, and the
/// peer's accepted only when its fingerprint is `pinned`.
pub fn client_config(
    cert_pem: &str,
    key_pem: &str,
    pinned: &str,
) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let verifier = Arc::new(PinnedServer {
        fingerprint: pinned.to_string(),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certificate_chain(cert_pem)?, private_key(key_pem)?)
        .map_err(|e| format!("the instance certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The name to present in the TLS handshake. Pinning ignores it; it only
/// has to be well formed.
pub fn server_name(host: &str) -> ServerName<'static> {
    ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::try_from("procsync-peer").expect("valid name"))
}

#[derive(Debug)]
struct PinnedServer {
    fingerprint: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = fingerprint_of_der(end_entity);
        if presented == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the peer presented certificate {presented}, but the remote system pins {}; check the fingerprint in the remote_system definition",
                self.fingerprint
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[derive(Debug)]
struct PinnedClients {
    allowed: AllowedPeers,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for PinnedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let presented = fingerprint_of_der(end_entity);
        if self.allowed.contains(&presented) || self.allowed.enrolment_open() {
            Ok(ClientCertVerified::assertion())
        } else {
            tracing::warn!(
                target: "transport",
                fingerprint = %presented,
                "Refused a peer connection: its certificate matches no remote system. Add a remote_system with this fingerprint to accept it."
            );
            Err(rustls::Error::General(format!(
                "certificate {presented} matches no remote system of this instance"
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
