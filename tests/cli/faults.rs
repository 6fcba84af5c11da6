//! Faulty networks and peers for tests: a peer that accepts connections
//! and calls but never answers, and a TCP proxy that forwards, refuses
//! (nothing listens) or blackholes (accepts and forwards nothing).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::support::Instance;

/// A peer listening on `instance`'s peer port with its identity (read from
/// its store, so it must not be running): TLS and HTTP/2 complete, calls
/// are accepted, and no response ever starts. Stops when dropped.
pub struct HungPeer {
    runtime: tokio::runtime::Runtime,
}

impl HungPeer {
    pub fn start(instance: &Instance, caller_fingerprint: &str) -> HungPeer {
        let store = procsync::store::Store::open(instance.path()).unwrap();
        let info = store.instance().unwrap();
        store.close();
        let allowed = procsync::transport::tls::AllowedPeers::default();
        allowed.replace([caller_fingerprint.to_string()]);
        let config =
            procsync::transport::tls::server_config(&info.cert_pem, &info.key_pem, allowed)
                .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let address = format!("127.0.0.1:{}", instance.peer_port);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(address))
            .unwrap();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut connection) = h2::server::handshake(tls).await else {
                        return;
                    };
                    // Keep every call open, unanswered.
                    let mut held = Vec::new();
                    while let Some(Ok(call)) = connection.accept().await {
                        held.push(call);
                    }
                });
            }
        });
        HungPeer { runtime }
    }

    pub fn stop(self) {
        self.runtime.shutdown_background();
    }
}

/// What a `Proxy` does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Forward = 0,
    /// Nothing listens: connections are refused.
    Refuse = 1,
    /// Connections are accepted and read, and nothing is forwarded.
    Blackhole = 2,
}

/// A TCP proxy from its own port to `target`; the mode applies to new
/// connections, and leaving Forward cuts the open ones.
pub struct Proxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    _runtime: tokio::runtime::Runtime,
}

impl Proxy {
    pub fn start(target: String) -> Proxy {
        let port = crate::support::free_port();
        let mode = Arc::new(AtomicU8::new(Mode::Forward as u8));
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (loop_mode, loop_generation) = (mode.clone(), generation.clone());
        runtime.spawn(async move {
            let mut listener = None;
            loop {
                let current = loop_mode.load(Ordering::SeqCst);
                if current == Mode::Refuse as u8 {
                    listener = None;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
                if listener.is_none() {
                    match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                        Ok(bound) => listener = Some(bound),
                        Err(_) => {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                }
                let accepted = tokio::time::timeout(
                    std::time::Duration::from_millis(50),
                    listener.as_ref().unwrap().accept(),
                )
                .await;
                let Ok(Ok((mut inbound, _))) = accepted else {
                    continue;
                };
                let (mode, generation) = (loop_mode.clone(), loop_generation.clone());
                let target = target.clone();
                tokio::spawn(async move {
                    let born = generation.load(Ordering::SeqCst);
                    if mode.load(Ordering::SeqCst) == Mode::Refuse as u8 {
                        return;
                    }
                    if mode.load(Ordering::SeqCst) == Mode::Blackhole as u8 {
                        let mut sink = [0u8; 4096];
                        use tokio::io::AsyncReadExt;
                        while matches!(inbound.read(&mut sink).await, Ok(n) if n > 0) {}
                        return;
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let cut = async {
                        while generation.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = copy => {}
                        _ = cut => {}
                    }
                });
            }
        });
        Proxy {
            port,
            mode,
            generation,
            _runtime: runtime,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
        if mode != Mode::Forward {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }
}
