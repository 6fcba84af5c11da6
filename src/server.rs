//! `procsync serve`: opens the instance, serves the admin API and tears down
//! in a fixed order on SIGTERM/SIGINT: stop accepting and finish in-flight
//! calls, stop the store writer (finishing queued writes), close the store.
//! The services it runs are here too: the admin gRPC service (`admin`), the
//! peer gRPC service (`peer`), plain HTTP on the admin port (`http`), and
//! the one mapping of errors to gRPC statuses (`status`).

pub mod admin;
pub mod http;
pub mod peer;
pub mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::api::Api;
use crate::config::server::ServerConfig;
use crate::inbound::{PeerGate, Processor};
use crate::instance::{ADMIN_ADDR_FILE, PEER_ADDR_FILE};
use crate::outbound::{Outbound, Supervisor};
use crate::runtime::SyncRuntime;
use crate::store::RecordWriteLimits;
use crate::store::{Store, StoreError};
use crate::worker::{EXIT_DEADLINE, Workers};
use admin::AdminTls;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
    #[error(
        "cannot listen on {address}: {reason}; is another process using that port? (set admin.listen in the server config)"
    )]
    Bind { address: SocketAddr, reason: String },
    #[error("the admin API failed: {0}")]
    Transport(String),
}

/// A running instance: its admin address, for callers that bound port 0.
pub struct Running {
    pub admin_address: SocketAddr,
}

/// Runs the instance in `data_dir` until `shutdown` completes. `started`
/// is called once the admin API is listening.
#[allow(
    clippy::too_many_lines,
    reason = "start-up and the fixed shutdown order read best as one sequence"
)]
pub async fn run(
    data_dir: PathBuf,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
    started: impl FnOnce(&Running),
) -> Result<(), ServeError> {
    config.check().map_err(ServeError::Config)?;
    let dir = data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await
        .map_err(|e| ServeError::Transport(e.to_string()))??;
    let store = Arc::new(store);
    let instance = store.instance()?;

    let listener = admin::bind(config.admin.listen).map_err(|e| ServeError::Bind {
        address: config.admin.listen,
        reason: e.to_string(),
    })?;
    let admin_address = listener.address;
    // Both listeners are bound before the admin address file is written:
    // whoever reads it finds an instance that is not about to fail to bind.
    let peer_listener = peer::bind(config.peer.listen)
        .await
        .map_err(|e| ServeError::Bind {
            address: config.peer.listen,
            reason: e.to_string(),
        })?;
    let addr_file = data_dir.join(ADMIN_ADDR_FILE);
    write_address(&addr_file, admin_address)?;

    let tls = config.admin.tls.then(|| AdminTls {
        cert_pem: instance.cert_pem.clone(),
        key_pem: instance.key_pem.clone(),
    });
    tracing::info!(
        target: "server",
        instance = %instance.name,
        sys_id = %instance.sys_id,
        admin = %admin_address,
        tls = config.admin.tls,
        fingerprint = %instance.fingerprint,
        data_dir = %data_dir.display(),
        "procsync is serving."
    );
    started(&Running { admin_address });

    // Peer sync: the peer listener, and the workers (the outbound
    // supervisor and its dispatchers, the inbound processor and its
    // fetches, the scheduler), all stopped by the runner's one signal.
    let sync = SyncRuntime::default();
    sync.refresh_allowed(&store)?;
    let workers = Workers::new();
    let peer_address = peer_listener.address;
    write_address(&data_dir.join(PEER_ADDR_FILE), peer_address)?;
    tracing::info!(target: "server", peer = %peer_address, "The peer API listens (mutual TLS, pinned certificates).");
    let limits = RecordWriteLimits {
        max_record_bytes: config.limits.max_record_bytes,
    };
    let gate = PeerGate::new(store.clone(), sync.clone(), limits.clone());
    workers.spawn(
        crate::inbound::PullSupervisor::new(store.clone(), gate.clone(), workers.clone()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let api = Api::new(store.clone(), config.limits.clone(), sync.clone())
        .with_peer_endpoint(config.peer.endpoint(peer_address));
    // A peer we never dial that removed its link to us says so down the
    // stream we pull from; our side goes too.
    {
        let (api, left, mut stop) = (api.clone(), sync.peers_left.clone(), workers.stop_signal());
        tokio::spawn(async move {
            loop {
                let told = tokio::select! {
                    told = left.next() => told,
                    () = crate::worker::stopped(&mut stop) => return,
                };
                for remote in told {
                    if let Err(e) = api.peer_left(remote.clone()).await {
                        tracing::warn!(target: "transport", remote_system = %remote, error = %e, "A peer said it removed its link to this instance, but ours could not be removed; remove it with `procsync remote remove`.");
                    }
                }
            }
        });
    }
    let peer_task = {
        let api = api.clone();
        let peer_tls = peer::PeerTls {
            cert_pem: instance.cert_pem.clone(),
            key_pem: instance.key_pem.clone(),
            allowed: sync.allowed.clone(),
            max_peers: config.peer.max_peers,
        };
        let stopped = workers.stop_signal();
        tokio::spawn(async move { peer::serve(gate, api, peer_listener, peer_tls, stopped).await })
    };
    let outbound = Outbound {
        store: store.clone(),
        health: sync.health.clone(),
        wake: sync.wake_outbound.clone(),
        stop: workers.stop_signal(),
        reverse: sync.reverse.clone(),
        wire: sync.wire.clone(),
        bandwidth: sync.bandwidth.clone(),
    };
    workers.spawn(
        Supervisor::new(outbound, workers.clone()),
        sync.wake_outbound.clone(),
    );
    workers.spawn(
        crate::outbound::load::Loader::new(store.clone(), sync.wake_outbound.clone()),
        sync.wake_load.clone(),
    );
    workers.spawn(
        crate::outbound::reconcile::Reconciler::new(
            store.clone(),
            sync.wake_outbound.clone(),
            sync.reverse.clone(),
            workers.stop_signal(),
        ),
        sync.wake_reconcile.clone(),
    );
    workers.spawn(
        crate::scheduler::Scheduler::new(store.clone()),
        Arc::new(tokio::sync::Notify::new()),
    );
    workers.spawn(
        Processor::new(store.clone(), limits, &sync, workers.clone()),
        sync.wake_inbound.clone(),
    );
    workers.spawn(
        crate::alert::Alerts::new(store.clone(), sync.health.clone()),
        Arc::new(tokio::sync::Notify::new()),
    );

    // A damaged store ends the instance as a shutdown does, then `serve`
    // fails with the reason (the packaged unit restarts it; alerting sees it).
    let (damaged_tx, damaged_rx) = tokio::sync::oneshot::channel::<String>();
    let watched = store.clone();
    let damage_watch = tokio::spawn(async move {
        let why = watched.damaged().await;
        let _ = damaged_tx.send(why);
    });
    let damaged = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let seen = damaged.clone();
    let shutdown = async move {
        tokio::select! {
            _ = shutdown => {}
            why = damaged_rx => if let Ok(why) = why {
                tracing::error!(target: "server", error = %why, "The store is damaged: restore the data directory from a backup. Shutting down.");
                *seen.lock().expect("damage lock") = Some(why);
            },
        }
    };
    let served = admin::serve(
        api,
        listener,
        tls,
        config.limits.max_message_bytes,
        shutdown,
    )
    .await;
    damage_watch.abort();
    tracing::info!(target: "server", "Stopped accepting admin calls; in-flight calls are finished.");
    let (late, peer_stopped) = tokio::join!(
        workers.stop(EXIT_DEADLINE),
        tokio::time::timeout(EXIT_DEADLINE, peer_task)
    );
    if peer_stopped.is_err() {
        tracing::warn!(target: "server", deadline_s = EXIT_DEADLINE.as_secs(), "The peer API did not finish its calls within the exit deadline; they are cut off and the peers retry them.");
    } else {
        tracing::info!(target: "server", "Stopped accepting peer calls.");
    }
    if late.is_empty() {
        tracing::info!(target: "server", "The outbound dispatchers, the inbound processor and the scheduler stopped.");
    }
    let _ = std::fs::remove_file(data_dir.join(PEER_ADDR_FILE));
    let _ = std::fs::remove_file(&addr_file);
    let closing = store.clone();
    let _ = tokio::task::spawn_blocking(move || closing.close()).await;
    tracing::info!(target: "server", "The store writer finished its queued writes and stopped; the store is closed.");
    drop(store);
    if let Some(why) = damaged.lock().expect("damage lock").take() {
        return Err(ServeError::Store(StoreError::Corrupt(why)));
    }
    served.map_err(|e| ServeError::Transport(e.to_string()))
}

/// Writes an address file whole then renames it, so a reader never sees
/// half an address.
fn write_address(path: &std::path::Path, address: SocketAddr) -> Result<(), StoreError> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, format!("{address}\n"))
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|e| StoreError::file("write", path, &e))
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(target: "server", error = %e, "Cannot listen for SIGTERM; stop procsync with SIGINT.");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(target: "server", "SIGTERM received; shutting down."),
        _ = tokio::signal::ctrl_c() => tracing::info!(target: "server", "SIGINT received; shutting down."),
    }
}
