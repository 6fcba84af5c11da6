//! At most `max_peers` distinct peers (client certificates) connected to
//! the peer listener at once: a connection from one more is closed right
//! after its handshake, with one log line per burst of refusals. A peer
//! already connected may open more connections (its streams, fetches).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The peers connected now, by certificate fingerprint, with how many
/// connections each holds.
#[derive(Clone, Debug)]
pub struct PeerSlots {
    max: usize,
    held: Arc<Mutex<Held>>,
}

#[derive(Debug, Default)]
struct Held {
    connections: HashMap<String, usize>,
    /// Refusals since the last one logged.
    refused: u64,
}

impl PeerSlots {
    pub fn new(max: usize) -> PeerSlots {
        PeerSlots {
            max,
            held: Arc::default(),
        }
    }

    /// Takes a slot for `fingerprint`'s connection, unless that would make
    /// one peer more than `max`.
    fn take(&self, fingerprint: &str) -> bool {
        let mut held = self.held.lock().expect("peer slots lock");
        let peers = held.connections.len();
        if let Some(count) = held.connections.get_mut(fingerprint) {
            *count += 1;
            return true;
        }
        if peers >= self.max {
            held.refused += 1;
            if held.refused == 1 || held.refused.is_power_of_two() {
                tracing::warn!(target: "transport", %fingerprint, max_peers = self.max, refused = held.refused, "Refused a peer connection: this instance has as many peers connected as `max_peers` allows. Raise [peer] max_peers if it should take more.");
            }
            return false;
        }
        held.connections.insert(fingerprint.to_string(), 1);
        true
    }

    fn give_back(&self, fingerprint: &str) {
        let mut held = self.held.lock().expect("peer slots lock");
        if let Some(count) = held.connections.get_mut(fingerprint) {
            *count -= 1;
            if *count == 0 {
                held.connections.remove(fingerprint);
            }
        }
    }
}

/// A peer's TCP connection that gives its slot back when it closes, and
/// is closed when the peer says nothing in time after its handshake.
pub struct Slotted {
    inner: TcpStream,
    slot: Option<(PeerSlots, String)>,
    /// Until the peer's first byte after the handshake: when it must come.
    silence: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Slotted {
    pub fn new(inner: TcpStream) -> Slotted {
        Slotted {
            inner,
            slot: None,
            silence: None,
        }
    }

    /// From now on, the peer must send something within `deadline`.
    pub fn expect_speech(&mut self, deadline: std::time::Duration) {
        self.silence = Some(Box::pin(tokio::time::sleep(deadline)));
    }

    /// Takes a slot for the peer with `fingerprint`; `false` when refused.
    pub fn occupy(&mut self, slots: &PeerSlots, fingerprint: String) -> bool {
        if !slots.take(&fingerprint) {
            return false;
        }
        self.slot = Some((slots.clone(), fingerprint));
        true
    }
}

impl Drop for Slotted {
    fn drop(&mut self) {
        if let Some((slots, fingerprint)) = self.slot.take() {
            slots.give_back(&fingerprint);
        }
    }
}

impl Connected for Slotted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Slotted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.silence.is_some() {
            if buf.filled().len() > before {
                self.silence = None;
            } else if polled.is_pending()
                && self
                    .silence
                    .as_mut()
                    .is_some_and(|s| s.as_mut().poll(cx).is_ready())
            {
                self.silence = None;
                let peer = self
                    .inner
                    .peer_addr()
                    .map_or_else(|_| "an unknown address".to_string(), |a| a.to_string());
                tracing::warn!(target: "transport", %peer, "Closed a peer connection that said nothing after its TLS handshake.");
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the peer said nothing after its handshake",
                )));
            }
        }
        polled
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
