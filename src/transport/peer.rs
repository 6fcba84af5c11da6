//! The peer gRPC service and client over pinned mutual TLS. The server side
//! terminates TLS itself (rustls, client certificates verified against the
//! remote systems' fingerprints) and hands the caller's certificate and
//! token to `inbound::PeerGate`; the client side dials with our
//! certificate and the peer's pinned fingerprint. Conversions between wire
//! and domain types live here and nowhere else.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use super::pb::peer as pb;
use super::pb::peer::peer_server::{Peer, PeerServer};
use super::tls;
use crate::attachment::{CHUNK_BYTES, Grant};
use crate::identity::fingerprint_of_der;
use crate::inbound::{Caller, Hello, HelloAnswer, PeerError, PeerGate};
use crate::outbound::{SendItem, SyncEvent};
use crate::record::Operation;
use crate::store::ReceivedItem;

/// Most items taken from a stream into one durable commit.
const MAX_ITEMS_PER_COMMIT: usize = 256;

fn status_of(error: PeerError) -> Status {
    match error {
        PeerError::Unauthenticated(m) => Status::unauthenticated(m),
        PeerError::PermissionDenied(m) => Status::permission_denied(m),
        PeerError::NotActive(m) => Status::failed_precondition(m),
        PeerError::Unavailable(m) => Status::unavailable(m),
        PeerError::NotFound(m) => Status::not_found(m),
    }
}

fn operation_from_pb(op: i32) -> Option<Operation> {
    match pb::Operation::try_from(op).ok()? {
        pb::Operation::Create => Some(Operation::Create),
        pb::Operation::Update => Some(Operation::Update),
        pb::Operation::Delete => Some(Operation::Delete),
        pb::Operation::Unspecified => None,
    }
}

fn operation_to_pb(op: Operation) -> pb::Operation {
    match op {
        Operation::Create => pb::Operation::Create,
        Operation::Update => pb::Operation::Update,
        Operation::Delete => pb::Operation::Delete,
    }
}

fn grant_from_pb(grant: pb::AttachmentGrant) -> Grant {
    Grant {
        hash: grant.hash,
        expires_at: grant.expires_at,
        key: grant.key,
    }
}

fn grant_to_pb(grant: Grant) -> pb::AttachmentGrant {
    pb::AttachmentGrant {
        hash: grant.hash,
        expires_at: grant.expires_at,
        key: grant.key,
    }
}

/// The caller's certificate fingerprint and bearer token.
fn credentials<T>(request: &Request<T>) -> (Option<String>, Option<String>) {
    let fingerprint = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs())
        .and_then(|certs| certs.first().map(|cert| fingerprint_of_der(cert)));
    let token = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(super::bearer_token);
    (fingerprint, token)
}

struct PeerService {
    gate: PeerGate,
    /// Set when the instance shuts down: open streams end so the listener
    /// can close.
    stopped: tokio::sync::watch::Receiver<bool>,
}

type ContentStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ContentChunk, Status>> + Send>>;

type SyncDownStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::SyncDown, Status>> + Send>>;

impl PeerService {
    /// The remote system the request's certificate and token identify.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let (fingerprint, token) = credentials(request);
        self.gate
            .identify(fingerprint, token)
            .await
            .map_err(status_of)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn hello(
        &self,
        request: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloResponse>, Status> {
        let caller = self.caller(&request).await?;
        let req = request.into_inner();
        let answer = self
            .gate
            .hello(
                &caller,
                Hello {
                    protocol_version: req.protocol_version,
                    instance_sys_id: req.instance_sys_id,
                    instance_name: req.instance_name,
                    remote_system_sys_id: req.remote_system_sys_id,
                    external_id: req.external_id,
                    process_events: req.process_events,
                    last_sequence: req.last_sequence,
                },
            )
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::HelloResponse {
            protocol_version: answer.protocol_version,
            instance_sys_id: answer.instance_sys_id,
            instance_name: answer.instance_name,
            problems: answer.problems,
        }))
    }

    type FetchStream = ContentStream;

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let grant = request.grant.map(grant_from_pb).ok_or_else(|| {
            Status::invalid_argument("a fetch needs the attachment key sent with the item")
        })?;
        let content = self
            .gate
            .open_content(&caller, &grant)
            .await
            .map_err(status_of)?;
        let chunk_bytes = CHUNK_BYTES as u64;
        if request.offset % chunk_bytes != 0 || request.offset > content.size {
            return Err(Status::invalid_argument(format!(
                "offset {} is not a chunk boundary (multiples of {CHUNK_BYTES}) within the {} bytes of the content",
                request.offset, content.size
            )));
        }
        // Two chunks in flight: the next is read while one is sent, and
        // memory stays at a few MiB whatever the file size.
        let (chunks, stream) = tokio::sync::mpsc::channel(2);
        let gate = self.gate.clone();
        let mut stopped = self.stopped.clone();
        tokio::spawn(async move {
            let first = (request.offset / chunk_bytes) as u32;
            for index in first..content.chunk_count() {
                let read = tokio::select! {
                    read = gate.read_chunk(content.id, index) => read,
                    _ = stopped.changed() => return,
                };
                let message = match read {
                    Ok(data) => {
                        let chunk_hash = blake3::hash(&data).as_bytes().to_vec();
                        gate.count_sent(&caller.name, data.len() as u64);
                        Ok(pb::ContentChunk {
                            offset: index as u64 * chunk_bytes,
                            data: data.into(),
                            chunk_hash: chunk_hash.into(),
                            complete: false,
                        })
                    }
                    Err(error) => Err(status_of(error)),
                };
                let failed = message.is_err();
                if chunks.send(message).await.is_err() || failed {
                    return;
                }
            }
            let complete = pb::ContentChunk {
                offset: content.size,
                data: Default::default(),
                chunk_hash: Default::default(),
                complete: true,
            };
            let _ = chunks.send(Ok(complete)).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }

    type SyncStream = SyncDownStream;

    async fn sync(
        &self,
        request: Request<Streaming<pb::SyncUp>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let caller = self.caller(&request).await?;
        self.gate.check_inbound_active(&caller).map_err(status_of)?;
        let mut incoming = request.into_inner();
        let (replies, answers) = tokio::sync::mpsc::channel::<Result<pb::SyncDown, Status>>(1024);
        let gate = self.gate.clone();
        let mut stopped = self.stopped.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = incoming.message() => next,
                    _ = stopped.changed() => break,
                };
                let first = match next {
                    Ok(Some(message)) => message,
                    Ok(None) => break,
                    Err(status) => {
                        if let Some(refusal) = refusal_of(&caller.name, &status) {
                            let _ = replies.send(Err(refusal)).await;
                        } else {
                            tracing::debug!(target: "transport", remote_system = %caller.name, error = %status, "A peer stream ended.");
                        }
                        break;
                    }
                };
                let mut batch = Vec::new();
                let mut broken = None;
                let mut pending = Some(first);
                while let Some(message) = pending.take() {
                    match message.message {
                        Some(pb::sync_up::Message::Item(item)) => batch.push(ReceivedItem {
                            sequence: item.sequence,
                            process_event: item.process_event,
                            operation: operation_from_pb(item.operation),
                            source_table: item.table,
                            remote_correlation_id: item.local_correlation_id,
                            local_correlation_id: item.remote_correlation_id,
                            payload: item.payload_json,
                            attachment_grants: item
                                .attachment_grants
                                .into_iter()
                                .map(grant_from_pb)
                                .collect(),
                        }),
                        Some(pb::sync_up::Message::Ping(ping)) => {
                            let pong = pb::SyncDown {
                                message: Some(pb::sync_down::Message::Pong(pb::Pong {
                                    nonce: ping.nonce,
                                })),
                            };
                            if replies.send(Ok(pong)).await.is_err() {
                                return;
                            }
                        }
                        None => {}
                    }
                    if batch.len() >= MAX_ITEMS_PER_COMMIT {
                        break;
                    }
                    // Take whatever else has already arrived into the same
                    // commit, without waiting for more.
                    tokio::select! {
                        biased;
                        next = incoming.message() => match next {
                            Ok(Some(message)) => pending = Some(message),
                            Ok(None) => {}
                            Err(status) => broken = Some(status),
                        },
                        _ = std::future::ready(()) => {}
                    }
                }
                // What arrived before a broken message is queued and
                // acknowledged; then the stream ends, with the reason when
                // the peer can act on it.
                let refusal = broken
                    .as_ref()
                    .and_then(|status| refusal_of(&caller.name, status));
                if batch.is_empty() {
                    if let Some(refusal) = refusal {
                        let _ = replies.send(Err(refusal)).await;
                    }
                    if broken.is_some() {
                        return;
                    }
                    continue;
                }
                match gate.receive(&caller, batch).await {
                    Ok(acks) => {
                        for sequence in acks {
                            let ack = pb::SyncDown {
                                message: Some(pb::sync_down::Message::Ack(pb::Ack { sequence })),
                            };
                            if replies.send(Ok(ack)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(error) => {
                        let _ = replies.send(Err(status_of(error))).await;
                        return;
                    }
                }
                if broken.is_some() {
                    if let Some(refusal) = refusal {
                        let _ = replies.send(Err(refusal)).await;
                    }
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(answers))))
    }
}

/// Largest peer message accepted (an item with its payload, or a chunk).
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The answer to a peer whose message could not be read, when it can act
/// on it: a message over the limit is refused with RESOURCE_EXHAUSTED
/// naming the limit, and logged.
fn refusal_of(remote: &str, status: &Status) -> Option<Status> {
    let too_large = matches!(
        status.code(),
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
    ) || status.message().contains("too large");
    if !too_large {
        return None;
    }
    let text = format!(
        "a message from `{remote}` is larger than this instance accepts ({} MiB): it was not queued; make the record or its payload smaller at the sender",
        MAX_PEER_MESSAGE_BYTES / (1024 * 1024)
    );
    tracing::warn!(target: "transport", remote_system = %remote, limit_bytes = MAX_PEER_MESSAGE_BYTES, detail = %status.message(), "Refused an oversized peer message; the stream ends.");
    Some(Status::resource_exhausted(text))
}

/// A bound peer listener, not yet serving.
pub struct PeerListener {
    listener: tokio::net::TcpListener,
    pub address: SocketAddr,
}

pub async fn bind(address: SocketAddr) -> std::io::Result<PeerListener> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let address = listener.local_addr()?;
    Ok(PeerListener { listener, address })
}

/// Serves the peer API with pinned mutual TLS until `shutdown` completes.
pub async fn serve(
    gate: PeerGate,
    listener: PeerListener,
    cert_pem: &str,
    key_pem: &str,
    allowed: tls::AllowedPeers,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let shutdown = {
        let mut stopped = stopped.clone();
        async move {
            while !*stopped.borrow() {
                if stopped.changed().await.is_err() {
                    return;
                }
            }
        }
    };
    let config = tls::server_config(cert_pem, key_pem, allowed)?;
    let (incoming, accept_loop) = tls::accept_tls(
        tokio_stream::wrappers::TcpListenerStream::new(listener.listener),
        config,
        "peer",
    );
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(15)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .add_service(
            PeerServer::new(PeerService { gate, stopped })
                .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| e.to_string());
    accept_loop.abort();
    result
}

/// How to reach one peer.
#[derive(Clone, Debug)]
pub struct PeerTarget {
    /// `https://host:port` from the remote system.
    pub endpoint: String,
    pub fingerprint: String,
    pub token: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A connection to one peer.
#[derive(Clone)]
pub struct PeerClient {
    inner: pb::peer_client::PeerClient<Channel>,
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    endpoint: String,
}

/// Longest wait for a connection (TCP and TLS) and for the answer that
/// opens a call (response headers): a peer that accepts and then says
/// nothing counts as a failed attempt instead of a wait without end.
pub const OPEN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// `call` within `OPEN_DEADLINE`, else a transient failure saying that
/// `endpoint` did not answer `what`.
async fn within_deadline<T>(
    endpoint: &str,
    what: &str,
    call: impl std::future::Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(OPEN_DEADLINE, call).await {
        Ok(result) => result,
        Err(_) => Err(CallError::Transient(format!(
            "{endpoint} accepted the connection but did not answer {what} within {} s; the peer is stuck or something between us holds the traffic",
            OPEN_DEADLINE.as_secs()
        ))),
    }
}

/// Why talking to a peer failed, split the way retries need it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Worth retrying: unreachable, timed out, not active yet, unavailable.
    #[error("{0}")]
    Transient(String),
    /// Needs the operator: pinning, credentials, roles.
    #[error("{0}")]
    Permanent(String),
}

fn chain(error: &dyn std::error::Error) -> String {
    chain_from(error.to_string(), error.source())
}

/// `text` followed by each cause's own sentence (not repeated when one
/// already holds the next).
fn chain_from(mut text: String, mut source: Option<&dyn std::error::Error>) -> String {
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn call_error(status: Status) -> CallError {
    use tonic::Code;
    let message = status.message().to_string();
    match status.code() {
        Code::Unauthenticated | Code::PermissionDenied | Code::NotFound | Code::InvalidArgument => {
            CallError::Permanent(message)
        }
        Code::Unavailable | Code::Unknown => {
            // Transport failures carry the TLS cause in the source chain
            // (the status's own Display would add a debug dump of it).
            let text = chain_from(message.clone(), std::error::Error::source(&status));
            if text.contains("pins")
                || text.contains("matches no remote system")
                || text.contains("certificate")
            {
                CallError::Permanent(text)
            } else {
                CallError::Transient(text)
            }
        }
        _ => CallError::Transient(message),
    }
}

impl PeerClient {
    pub async fn connect(target: &PeerTarget) -> Result<PeerClient, CallError> {
        let rest = target
            .endpoint
            .strip_prefix("https://")
            .ok_or_else(|| {
                CallError::Permanent(format!(
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
                .map_err(CallError::Permanent)?,
        );
        let address = rest.clone();
        let connector = tower::service_fn(move |_uri: tonic::codegen::http::Uri| {
            let config = config.clone();
            let address = address.clone();
            let host = host.clone();
            async move {
                let connect = async {
                    let tcp = TcpStream::connect(&address).await?;
                    tcp.set_nodelay(true)?;
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
            .map_err(|e| CallError::Permanent(format!("endpoint `{}`: {e}", target.endpoint)))?
            .connect_timeout(OPEN_DEADLINE)
            .http2_keep_alive_interval(std::time::Duration::from_secs(15))
            .keep_alive_timeout(std::time::Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_with_connector(connector)
            .await
            .map_err(|e| {
                let text = chain(&e);
                if text.contains("pins") || text.contains("CertificateUnknown") || text.contains("BadCertificate") || text.contains("certificate") {
                    CallError::Permanent(format!(
                        "TLS with {} failed: {text}; check that each side pins the other's fingerprint",
                        target.endpoint
                    ))
                } else {
                    CallError::Transient(format!("cannot connect to {}: {text}", target.endpoint))
                }
            })?;
        let authorization = format!("Bearer {}", target.token.trim())
            .parse()
            .map_err(|_| {
                CallError::Permanent(
                    "the remote system's token holds characters that cannot be sent".into(),
                )
            })?;
        Ok(PeerClient {
            inner: pb::peer_client::PeerClient::new(channel)
                .max_decoding_message_size(64 * 1024 * 1024),
            authorization,
            endpoint: target.endpoint.clone(),
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
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
        });
        let call = async { self.inner.hello(request).await.map_err(call_error) };
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
        let call = async { self.inner.fetch(request).await.map_err(call_error) };
        let inner = within_deadline(&self.endpoint, "the fetch call", call)
            .await?
            .into_inner();
        Ok(FetchStream { inner })
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
        let up = tokio_stream::StreamExt::map(up, |item| match item {
            SendItem::Item(item) => pb::SyncUp {
                message: Some(pb::sync_up::Message::Item(pb::Item {
                    sequence: item.sequence,
                    process_event: item.process_event,
                    operation: operation_to_pb(item.operation) as i32,
                    table: item.table,
                    local_correlation_id: item.local_correlation_id,
                    remote_correlation_id: item.remote_correlation_id,
                    domain: item.domain,
                    payload_json: item.payload_json,
                    created_on: item.created_on,
                    attachment_grants: item
                        .attachment_grants
                        .into_iter()
                        .map(grant_to_pb)
                        .collect(),
                })),
            },
            SendItem::Ping(nonce) => pb::SyncUp {
                message: Some(pb::sync_up::Message::Ping(pb::Ping { nonce })),
            },
        });
        let request = self.request(up);
        let call = async { self.inner.sync(request).await.map_err(call_error) };
        let mut down = within_deadline(&self.endpoint, "the sync call", call)
            .await?
            .into_inner();
        let (events, received) = tokio::sync::mpsc::channel::<SyncEvent>(4096);
        tokio::spawn(async move {
            loop {
                let event = match down.message().await {
                    Ok(Some(pb::SyncDown {
                        message: Some(pb::sync_down::Message::Ack(ack)),
                    })) => SyncEvent::Ack(ack.sequence),
                    Ok(Some(pb::SyncDown {
                        message: Some(pb::sync_down::Message::Pong(pong)),
                    })) => SyncEvent::Pong(pong.nonce),
                    Ok(Some(_)) => continue,
                    Ok(None) => {
                        SyncEvent::Closed(CallError::Transient("the peer closed the stream".into()))
                    }
                    Err(status) => SyncEvent::Closed(call_error(status)),
                };
                let closed = matches!(event, SyncEvent::Closed(_));
                if events.send(event).await.is_err() || closed {
                    return;
                }
            }
        });
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

/// A content arriving from a peer.
pub struct FetchStream {
    inner: Streaming<pb::ContentChunk>,
}

impl FetchStream {
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
            Err(status) => Err(call_error(status)),
        }
    }
}
