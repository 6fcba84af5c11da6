//! What a link to one peer costs on the wire: the sync messages' bytes as
//! encoded (before compression) and the bytes that crossed the socket
//! (after compression, with TLS and HTTP/2 framing), counted on the
//! connections this side dials. `Counted` wraps a connection to count it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Byte counts of the links to one peer since this process started.
#[derive(Debug, Default)]
pub struct WireCounts {
    /// Sync messages sent and received, as encoded, before compression.
    pub encoded_sent: AtomicU64,
    pub encoded_received: AtomicU64,
    /// Bytes written to and read from the socket.
    pub wire_sent: AtomicU64,
    pub wire_received: AtomicU64,
}

/// A snapshot of `WireCounts`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WireBytes {
    pub encoded_sent: u64,
    pub encoded_received: u64,
    pub wire_sent: u64,
    pub wire_received: u64,
}

impl WireCounts {
    pub fn sent(&self, encoded: usize) {
        self.encoded_sent
            .fetch_add(encoded as u64, Ordering::Relaxed);
    }

    pub fn received(&self, encoded: usize) {
        self.encoded_received
            .fetch_add(encoded as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> WireBytes {
        WireBytes {
            encoded_sent: self.encoded_sent.load(Ordering::Relaxed),
            encoded_received: self.encoded_received.load(Ordering::Relaxed),
            wire_sent: self.wire_sent.load(Ordering::Relaxed),
            wire_received: self.wire_received.load(Ordering::Relaxed),
        }
    }
}

/// A connection whose bytes in and out are counted.
pub struct Counted<S> {
    inner: S,
    counts: Arc<WireCounts>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, counts: Arc<WireCounts>) -> Counted<S> {
        Counted { inner, counts }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.counts
            .wire_received
            .fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = &polled {
            self.counts
                .wire_sent
                .fetch_add(*written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
