//! The peer gRPC client over pinned mutual TLS: it dials with our
//! certificate, pins the peer's fingerprint, and converts between wire and
//! domain types (the server half, `server::peer`, shares the conversions
//! here). The protocol's nouns are in `transport::protocol`.

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status, Streaming};

use super::cause::{chain, chain_from};
use super::pb::peer as pb;
use super::protocol::{CallError, Hello, HelloAnswer, PeerTarget, SendItem, SyncEvent};
use super::tls;
use crate::attachment::Grant;
use crate::record::Operation;
use crate::store::{Store, StoreError};

/// Largest peer message accepted (an item with its payload, or a chunk).
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

pub fn operation_from_pb(op: i32) -> Option<Operation> {
    match pb::Operation::try_from(op).ok()? {
        pb::Operation::Create => Some(Operation::Create),
        pb::Operation::Update => Some(Operation::Update),
        pb::Operation::Delete => Some(Operation::Delete),
        pb::Operation::Unspecified => None,
    }
}

pub fn operation_to_pb(op: Operation) -> pb::Operation {
    match op {
        Operation::Create => pb::Operation::Create,
        Operation::Update => pb::Operation::Update,
        Operation::Delete => pb::Operation::Delete,
    }
}

pub fn grant_from_pb(grant: pb::AttachmentGrant) -> Grant {
    Grant {
        hash: grant.hash,
        expires_at: grant.expires_at,
        key: grant.key,
    }
}

pub fn grant_to_pb(grant: Grant) -> pb::AttachmentGrant {
    pb::AttachmentGrant {
        hash: grant.hash,
        expires_at: grant.expires_at,
        key: grant.key,
    }
}

/// How to reach `remote`: its endpoint and pin, our token for it, our
/// certificate.
pub async fn target_of(store: Arc<Store>, remote: &str) -> Result<PeerTarget, CallError> {
    let name = remote.to_string();
    let found = tokio::task::spawn_blocking(move || {
        let remote = store.remote_system(&name)?;
        let secret = store.remote_secret(&name)?;
        let instance = store.instance()?;
        let compress = store.remote_property("link.compress", &name)? == "true";
        Ok::<_, StoreError>((remote, secret, instance, compress))
    })
    .await??;
    let (Some(spec), secret, instance, compress) = found else {
        return Err(CallError::RemoteGone {
            remote: remote.to_string(),
        });
    };
    let Some(token) = secret else {
        return Err(CallError::NoToken {
            remote: remote.to_string(),
        });
    };
    Ok(PeerTarget {
        endpoint: spec.spec.endpoint,
        fingerprint: crate::config::sync::normalize_fingerprint(&spec.spec.fingerprint)
            .map_err(CallError::Misconfigured)?,
        token,
        cert_pem: instance.cert_pem,
        key_pem: instance.key_pem,
        link: super::protocol::LinkSettings {
            compress,
            counts: None,
        },
    })
}

/// A connection to one peer.
#[derive(Clone)]
pub struct PeerClient {
    /// Compressed when the link says so (sync streams, calls).
    pub(super) inner: pb::peer_client::PeerClient<Channel>,
    /// Never compressed: attachment chunks are mostly compressed already.
    pub(super) plain: pb::peer_client::PeerClient<Channel>,
    /// Where this connection's bytes are counted.
    pub(super) counts: Arc<super::wire::WireCounts>,
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    pub(super) endpoint: String,
}

/// Longest wait for a connection (TCP and TLS) and for the answer that
/// opens a call (response headers): a peer that accepts and then says
/// nothing counts as a failed attempt instead of a wait without end.
pub const OPEN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// `call` within `OPEN_DEADLINE`, else a transient failure saying that
/// `endpoint` did not answer `what`.
pub(super) async fn within_deadline<T>(
    endpoint: &str,
    what: &'static str,
    call: impl std::future::Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(OPEN_DEADLINE, call).await {
        Ok(result) => result,
        Err(_) => Err(CallError::NoAnswer {
            endpoint: endpoint.to_string(),
            what,
            secs: OPEN_DEADLINE.as_secs(),
        }),
    }
}

/// A failed call to `endpoint` in our terms.
pub(super) fn call_error(endpoint: &str, status: Status) -> CallError {
    use tonic::Code;
    let message = status.message().to_string();
    match status.code() {
        Code::Unauthenticated | Code::PermissionDenied | Code::NotFound | Code::InvalidArgument => {
            CallError::Refused {
                endpoint: endpoint.to_string(),
                message,
            }
        }
        Code::Unavailable | Code::Unknown => {
            // Transport failures carry the TLS cause in the source chain
            // (the status's own Display would add a debug dump of it).
            let source = std::error::Error::source(&status);
            let text = chain_from(message.clone(), source);
            if text.contains("pins") || text.contains("certificate") {
                CallError::Pinning {
                    endpoint: endpoint.to_string(),
                    cause: text,
                }
            } else if text.contains("matches no remote system") {
                CallError::Refused {
                    endpoint: endpoint.to_string(),
                    message: text,
                }
            } else if source.is_some() {
                // The connection failed under the call (the peer's own
                // answers carry no source).
                CallError::CallBroke {
                    endpoint: endpoint.to_string(),
                    cause: text,
                }
            } else {
                CallError::PeerBusy { message: text }
            }
        }
        Code::FailedPrecondition => CallError::NotValidated { message },
        _ => CallError::PeerBusy { message },
    }
}

impl PeerClient {
    pub async fn connect(target: &PeerTarget) -> Result<PeerClient, CallError> {
        let rest = target
            .endpoint
            .strip_prefix("https://")
            .ok_or_else(|| {
                CallError::Misconfigured(format!(
                    "endpoint `{}` must start with https://",
                    target.endpoint
                ))
            })?
            .trim_end_matches('/')
            .to_string();
        let host = rest
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
            .unwrap_or_default();
        let config = Arc::new(
            tls::client_config(&target.cert_pem, &target.key_pem, &target.fingerprint)
                .map_err(CallError::Misconfigured)?,
        );
        let address = rest.clone();
        let counts = target.link.counts.clone().unwrap_or_default();
        let counted = counts.clone();
        let connector = tower::service_fn(move |_uri: tonic::codegen::http::Uri| {
            let config = config.clone();
            let address = address.clone();
            let host = host.clone();
            let counts = counted.clone();
            async move {
                let connect = async {
                    let tcp = TcpStream::connect(&address).await?;
                    tcp.set_nodelay(true)?;
                    let tcp = super::wire::Counted::new(tcp, counts);
                    let tls = tokio_rustls::TlsConnector::from(config)
                        .connect(tls::server_name(&host), tcp)
                        .await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                };
                match tokio::time::timeout(OPEN_DEADLINE, connect).await {
                    Ok(connected) => connected,
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "no TLS handshake within {} s (the address accepts connections but does not answer)",
                            OPEN_DEADLINE.as_secs()
                        ),
                    )),
                }
            }
        });
        let channel = Endpoint::from_shared(format!("http://{rest}"))
            .map_err(|e| CallError::Misconfigured(format!("endpoint `{}`: {e}", target.endpoint)))?
            // Our connector gives up first, with a sentence of its own;
            // this is only the backstop.
            .connect_timeout(OPEN_DEADLINE + std::time::Duration::from_secs(2))
            .http2_keep_alive_interval(std::time::Duration::from_secs(15))
            .keep_alive_timeout(std::time::Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_with_connector(connector)
            .await
            .map_err(|e| {
                let text = chain(&e);
                let endpoint = target.endpoint.clone();
                if text.contains("pins")
                    || text.contains("certificate")
                    || text.contains("Certificate")
                {
                    CallError::Pinning {
                        endpoint,
                        cause: text,
                    }
                } else {
                    CallError::Unreachable {
                        endpoint,
                        cause: text,
                    }
                }
            })?;
        let authorization = format!("Bearer {}", target.token.trim())
            .parse()
            .map_err(|_| CallError::TokenNotSendable)?;
        let plain = pb::peer_client::PeerClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES);
        let inner = if target.link.compress {
            plain
                .clone()
                .send_compressed(CompressionEncoding::Zstd)
                .accept_compressed(CompressionEncoding::Zstd)
        } else {
            plain.clone()
        };
        Ok(PeerClient {
            inner,
            plain,
            authorization,
            endpoint: target.endpoint.clone(),
            counts,
        })
    }

    pub(super) fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request
    }

    pub async fn hello(&mut self, hello: Hello) -> Result<HelloAnswer, CallError> {
        let request = self.request(pb::HelloRequest {
            protocol_version: hello.protocol_version,
            instance_sys_id: hello.instance_sys_id,
            instance_name: hello.instance_name,
            remote_system_sys_id: hello.remote_system_sys_id,
            external_id: hello.external_id,
            process_events: hello.process_events,
            last_sequence: hello.last_sequence,
            conflict_rules: hello
                .conflict_rules
                .into_iter()
                .map(|(process_event, rule)| pb::ConflictRule {
                    process_event,
                    rule,
                })
                .collect(),
        });
        let call = async {
            self.inner
                .hello(request)
                .await
                .map_err(|s| call_error(&self.endpoint, s))
        };
        let answer = within_deadline(&self.endpoint, "Hello", call)
            .await?
            .into_inner();
        Ok(HelloAnswer {
            protocol_version: answer.protocol_version,
            instance_sys_id: answer.instance_sys_id,
            instance_name: answer.instance_name,
            problems: answer.problems,
        })
    }

    /// Streams content `grant.hash` from byte `offset` (a chunk boundary).
    pub async fn fetch(&mut self, grant: Grant, offset: u64) -> Result<FetchStream, CallError> {
        let request = self.request(pb::FetchRequest {
            grant: Some(grant_to_pb(grant)),
            offset,
        });
        let call = async {
            self.plain
                .fetch(request)
                .await
                .map_err(|s| call_error(&self.endpoint, s))
        };
        let inner = within_deadline(&self.endpoint, "the fetch call", call)
            .await?
            .into_inner();
        Ok(FetchStream {
            inner,
            endpoint: self.endpoint.clone(),
            _taken: None,
        })
    }

    /// Opens the sync stream: items and pings go into the returned sender,
    /// acks and pongs come out of the returned receiver.
    pub async fn sync(
        &mut self,
    ) -> Result<
        (
            tokio::sync::mpsc::Sender<SendItem>,
            tokio::sync::mpsc::Receiver<SyncEvent>,
        ),
        CallError,
    > {
        let (items, outgoing) = tokio::sync::mpsc::channel::<SendItem>(4096);
        let up = ReceiverStream::new(outgoing);
        let counts = self.counts.clone();
        let up = tokio_stream::StreamExt::map(up, move |item| {
            let message = super::reverse::send_to_pb(item);
            counts.sent(prost::Message::encoded_len(&message));
            message
        });
        let request = self.request(up);
        let call = async {
            self.inner
                .sync(request)
                .await
                .map_err(|s| call_error(&self.endpoint, s))
        };
        let down = within_deadline(&self.endpoint, "the sync call", call)
            .await?
            .into_inner();
        let received =
            super::reverse::sync_events(down, self.endpoint.clone(), Some(self.counts.clone()));
        Ok((items, received))
    }
}

/// One chunk of a fetched content.
pub struct FetchedChunk {
    pub offset: u64,
    pub data: bytes::Bytes,
    pub chunk_hash: bytes::Bytes,
    /// The peer sent everything it holds (no data with this one).
    pub complete: bool,
}

/// A chunk as it goes on the wire.
pub fn chunk_to_pb(chunk: FetchedChunk) -> pb::ContentChunk {
    pb::ContentChunk {
        offset: chunk.offset,
        data: chunk.data,
        chunk_hash: chunk.chunk_hash,
        complete: chunk.complete,
    }
}

/// A content arriving from a peer: the answer to our `Fetch`, or a
/// `Deliver` call it made for us.
pub struct FetchStream {
    inner: Streaming<pb::ContentChunk>,
    pub(super) endpoint: String,
    /// For a delivery: dropped with the stream, which ends the call.
    _taken: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FetchStream {
    /// The chunks of a `Deliver` call; `taken` is dropped once they are
    /// read (or given up on), so the call can be answered.
    pub fn delivered(
        inner: Streaming<pb::ContentChunk>,
        from: String,
        taken: tokio::sync::oneshot::Sender<()>,
    ) -> FetchStream {
        FetchStream {
            inner,
            endpoint: from,
            _taken: Some(taken),
        }
    }

    /// The next chunk; `None` once the peer sent the last one.
    pub async fn next(&mut self) -> Result<Option<FetchedChunk>, CallError> {
        match self.inner.message().await {
            Ok(Some(chunk)) => Ok(Some(FetchedChunk {
                offset: chunk.offset,
                data: chunk.data,
                chunk_hash: chunk.chunk_hash,
                complete: chunk.complete,
            })),
            Ok(None) => Ok(None),
            Err(status) => Err(call_error(&self.endpoint, status)),
        }
    }
}
