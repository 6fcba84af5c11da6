//! The peer gRPC service over pinned mutual TLS. It terminates TLS itself
//! (rustls, client certificates verified against the remote systems'
//! fingerprints), hands the caller's certificate and token to
//! `inbound::PeerGate`, and converts the wire messages to domain types
//! (the conversions both halves share are in `transport::peer`).

mod sync;
mod window;

use std::net::SocketAddr;
use std::pin::Pin;

use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status, Streaming};

use super::status::status_of;
use crate::api::ApiError;
use crate::config::sync::Dial;
use crate::identity::fingerprint_of_der;
use crate::inbound::{Caller, PeerGate};
use crate::store::StoreError;
use crate::transport::enrol::{JoinRequest, step_from_pb};
use crate::transport::pb::peer as pb;
use crate::transport::pb::peer::peer_server::{Peer, PeerServer};
use crate::transport::peer::{FetchStream, MAX_PEER_MESSAGE_BYTES, chunk_to_pb, grant_from_pb};
use crate::transport::protocol::{Hello, PROTOCOL_VERSION, SendItem};
use crate::transport::reconcile::{self as reconcile_wire, ReconcileCall};
use crate::transport::reverse::{DELIVERY_HEADER, RECONCILE_HEADER, send_to_pb, sync_events};
use crate::transport::{bearer_token, tls};
use window::{Burst, Window};

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
        .and_then(bearer_token);
    (fingerprint, token)
}

struct PeerService {
    gate: PeerGate,
    /// Joins and leaves change both users and definitions: the admin
    /// API's work, done for the peer.
    api: crate::api::Api,
    /// Joins taken in the current second, so a flood is turned away.
    joins: std::sync::Arc<std::sync::Mutex<Window>>,
    hellos: std::sync::Arc<std::sync::Mutex<Window>>,
    /// Joins read and refused (a forged code, say), for the log.
    refusals: std::sync::Arc<std::sync::Mutex<Burst>>,
    /// Set when the instance shuts down: open streams end so the listener
    /// can close.
    stopped: tokio::sync::watch::Receiver<bool>,
}

type ContentStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ContentChunk, Status>> + Send>>;

type ReconcileDownStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ReconcileDown, Status>> + Send>>;

type ReconcileUpStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ReconcileUp, Status>> + Send>>;

/// Most joins (each step counts) taken in one second, from all callers.
const MOST_JOINS_PER_SECOND: u32 = 50;

/// Most hellos taken in one second from one caller: `remote validate`
/// sends one.
const MOST_HELLOS_PER_SECOND: u32 = 5;

/// How long a refused join, or a hello or join past the allowance, waits
/// for its answer: a caller that waits for answers (as any client does)
/// then floods at a few calls a second, not thousands, and costs the hub
/// a sleeping task each.
const REFUSAL_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

type SyncUpStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::SyncUp, Status>> + Send>>;

type SyncDownStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::SyncDown, Status>> + Send>>;

/// The id of the request (sent down a `Pull` stream) that a call back
/// answers, from its `header`.
fn request_answered<T>(request: &Request<T>, header: &str, what: &str) -> Result<u64, Status> {
    request
        .metadata()
        .get(header)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "{what} names the request it answers in the {header} header"
            ))
        })
}

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

#[allow(
    clippy::too_many_lines,
    reason = "the peer service's calls, each a short conversion around the gate"
)]
#[tonic::async_trait]
impl Peer for PeerService {
    async fn hello(
        &self,
        request: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloResponse>, Status> {
        let caller = self.caller(&request).await?;
        let admitted = self
            .hellos
            .lock()
            .expect("hello window lock")
            .admit(&caller.name);
        if let Err(refused) = admitted {
            if refused.log() {
                tracing::warn!(target: "transport", remote_system = %caller.name, refused = refused.count, most_per_second = MOST_HELLOS_PER_SECOND, "Turned hellos away from a peer: it sent more in a second than a validation needs.");
            }
            tokio::time::sleep(REFUSAL_PAUSE).await;
            return Err(Status::resource_exhausted(format!(
                "more than {MOST_HELLOS_PER_SECOND} hellos came from `{}` in one second; validate once, then wait a second before trying again",
                caller.name
            )));
        }
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
                    conflict_rules: req
                        .conflict_rules
                        .into_iter()
                        .map(|r| (r.process_event, r.rule))
                        .collect(),
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

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let admitted = self.joins.lock().expect("join window lock").admit("");
        if let Err(refused) = admitted {
            if refused.log() {
                tracing::warn!(target: "transport", refused = refused.count, most_per_second = MOST_JOINS_PER_SECOND, "Turned joins away: more came at once than the hub takes in a second.");
            }
            tokio::time::sleep(REFUSAL_PAUSE).await;
            return Err(Status::resource_exhausted(
                "the hub is taking too many joins at once; try again in a few seconds",
            ));
        }
        let (fingerprint, _) = credentials(&request);
        let req = request.into_inner();
        let step = step_from_pb(req.step)
            .ok_or_else(|| Status::invalid_argument("a join must say its step"))?;
        if req.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "the joining instance speaks protocol version {}, this hub {PROTOCOL_VERSION}; run the same procsync version on both",
                req.protocol_version
            )));
        }
        let answer = self
            .api
            .take_join(
                fingerprint,
                step,
                JoinRequest {
                    invite: req.invite,
                    secret: req.secret,
                    fingerprint: req.fingerprint,
                    instance_sys_id: req.instance_sys_id,
                    instance_name: req.instance_name,
                    remote_system_sys_id: req.remote_system_sys_id,
                    endpoint: req.endpoint,
                    token: req.token,
                },
            )
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                if let ApiError::Store(StoreError::JoinRefused(reason)) = &e {
                    if let Some(run) = self.refusals.lock().expect("refusals lock").log() {
                        tracing::warn!(target: "transport", %reason, refused_in_a_row = run, "Refused a join.");
                    }
                    // Guessing secrets goes at a second a try.
                    tokio::time::sleep(REFUSAL_PAUSE).await;
                }
                return Err(status_of(e));
            }
        };
        Ok(Response::new(pb::JoinResponse {
            protocol_version: answer.protocol_version,
            member: answer.member,
            group: answer.group,
            remote_system_sys_id: answer.remote_system_sys_id,
            token: answer.token,
            instance_sys_id: answer.instance_sys_id,
            instance_name: answer.instance_name,
            definitions_json: answer.definitions_json,
            problems: answer.problems,
            dials: answer.dials,
        }))
    }

    async fn leave(
        &self,
        request: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveResponse>, Status> {
        let caller = self.caller(&request).await?;
        self.api.peer_left(caller.name).await.map_err(status_of)?;
        Ok(Response::new(pb::LeaveResponse {}))
    }

    /// A peer we never dial delivers a content we asked it for on its
    /// `Pull` stream; the fetch waiting for it reads the chunks, and the
    /// call is answered once that fetch is done with them.
    async fn deliver(
        &self,
        request: Request<Streaming<pb::ContentChunk>>,
    ) -> Result<Response<pb::DeliverResponse>, Status> {
        let caller = self.caller(&request).await?;
        let id = request_answered(&request, DELIVERY_HEADER, "a delivery")?;
        let (taken, done) = tokio::sync::oneshot::channel::<()>();
        let from = format!("`{}` delivering", caller.name);
        let stream = FetchStream::delivered(request.into_inner(), from, taken);
        if !self.gate.delivered(&caller, id, stream) {
            return Err(Status::not_found(format!(
                "no attachment transfer here waits for delivery {id} (it gave up or finished); it asks again"
            )));
        }
        // Closed (never sent) once the fetch drops the stream.
        let _ = done.await;
        Ok(Response::new(pb::DeliverResponse {}))
    }

    type PullStream = SyncUpStream;

    /// A peer we never dial opens this for our items to it; its
    /// dispatcher takes the stream's two ends.
    async fn pull(
        &self,
        request: Request<Streaming<pb::SyncDown>>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let caller = self.caller(&request).await?;
        if caller.remote.spec.dial != Dial::Never {
            return Err(Status::failed_precondition(format!(
                "this instance dials `{}` itself; only a peer it never dials (dial = \"never\") pulls its items",
                caller.name
            )));
        }
        let events = sync_events(
            request.into_inner(),
            format!("the stream `{}` opened", caller.name),
            None,
        );
        let (items, outgoing) = tokio::sync::mpsc::channel::<SendItem>(4096);
        self.gate.offer_stream(&caller, (items, events));
        tracing::debug!(target: "transport", remote_system = %caller.name, "A peer opened a stream for our items to it.");
        // The stream ends when the dispatcher lets go of it, or at shutdown.
        let (down, answers) = tokio::sync::mpsc::channel::<Result<pb::SyncUp, Status>>(64);
        let mut stopped = self.stopped.clone();
        tokio::spawn(async move {
            let mut outgoing = outgoing;
            loop {
                let item = tokio::select! {
                    item = outgoing.recv() => item,
                    _ = stopped.changed() => None,
                };
                let Some(item) = item else { return };
                if down.send(Ok(send_to_pb(item))).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(answers))))
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
        let chunks = self
            .gate
            .content_chunks(&caller.name, &grant, request.offset, self.stopped.clone())
            .await
            .map_err(status_of)?;
        let stream = tokio_stream::StreamExt::map(ReceiverStream::new(chunks), |chunk| {
            chunk.map(chunk_to_pb).map_err(status_of)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type SyncStream = SyncDownStream;

    async fn sync(
        &self,
        request: Request<Streaming<pb::SyncUp>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let caller = self.caller(&request).await?;
        self.gate.check_inbound_active(&caller).map_err(status_of)?;
        let (replies, answers) = tokio::sync::mpsc::channel::<Result<pb::SyncDown, Status>>(1024);
        tokio::spawn(sync::serve(
            self.gate.clone(),
            caller,
            request.into_inner(),
            replies,
            self.stopped.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(answers))))
    }

    type ReconcileStream = ReconcileDownStream;

    async fn reconcile(
        &self,
        request: Request<Streaming<pb::ReconcileUp>>,
    ) -> Result<Response<Self::ReconcileStream>, Status> {
        let caller = self.caller(&request).await?;
        let asks = reconcile_wire::asks_of(request.into_inner(), caller.name.clone());
        let responder = self.gate.reconcile(caller).await.map_err(status_of)?;
        let (replies, answers) = tokio::sync::mpsc::channel(2);
        tokio::spawn(responder.serve(asks, replies, self.stopped.clone()));
        let answers = tokio_stream::StreamExt::map(ReceiverStream::new(answers), |reply| {
            reply.map(reconcile_wire::answer_to_pb).map_err(status_of)
        });
        Ok(Response::new(Box::pin(answers)))
    }

    type ReconcileBackStream = ReconcileUpStream;

    /// A peer we never dial opens this when our reconciler asks it to on
    /// its `Pull` stream; the reconciler asks its questions over it.
    async fn reconcile_back(
        &self,
        request: Request<Streaming<pb::ReconcileDown>>,
    ) -> Result<Response<Self::ReconcileBackStream>, Status> {
        let caller = self.caller(&request).await?;
        let id = request_answered(&request, RECONCILE_HEADER, "a reconciliation call back")?;
        let (asks, outgoing) = tokio::sync::mpsc::channel(4);
        let endpoint = format!("`{}` answering", caller.name);
        let call = ReconcileCall::answered_by(asks, request.into_inner(), endpoint);
        if !self.gate.reconcile_opened(&caller, id, call) {
            return Err(Status::not_found(format!(
                "no reconciliation here waits for call {id} (it gave up or finished); it asks again"
            )));
        }
        // Ends when the reconciler drops the call.
        let asks = tokio_stream::StreamExt::map(ReceiverStream::new(outgoing), Ok);
        Ok(Response::new(Box::pin(asks)))
    }
}

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

/// The peer listener's TLS: our certificate and key, the fingerprints it
/// accepts, and how many peers may be connected at once.
pub struct PeerTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub allowed: tls::AllowedPeers,
    pub max_peers: usize,
}

/// Serves the peer API with pinned mutual TLS until `shutdown` completes.
pub async fn serve(
    gate: PeerGate,
    api: crate::api::Api,
    listener: PeerListener,
    peer_tls: PeerTls,
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
    let config = tls::server_config(&peer_tls.cert_pem, &peer_tls.key_pem, peer_tls.allowed)?;
    let (incoming, accept_loop) = tls::accept_tls(
        tokio_stream::wrappers::TcpListenerStream::new(listener.listener),
        config,
        "peer",
        Some(tls::PeerSlots::new(peer_tls.max_peers)),
    );
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(15)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .add_service(
            PeerServer::new(PeerService {
                gate,
                api,
                joins: std::sync::Arc::new(std::sync::Mutex::new(Window::new(
                    MOST_JOINS_PER_SECOND,
                ))),
                refusals: Default::default(),
                hellos: std::sync::Arc::new(std::sync::Mutex::new(Window::new(
                    MOST_HELLOS_PER_SECOND,
                ))),
                stopped,
            })
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            // Compressed both ways when the caller asks (the caller's
            // `link.compress` decides).
            .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
            .send_compressed(tonic::codec::CompressionEncoding::Zstd),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| e.to_string());
    accept_loop.abort();
    result
}
