//! Logging for `serve`: `tracing` events to stderr as text or JSON, filtered
//! by `RUST_LOG` or the server config's level, with debug logging for the
//! sync components switchable while running (property `sync.debug`). The
//! only place that installs a subscriber.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// The targets `sync.debug` turns to debug level.
pub const SYNC_TARGETS: &[&str] = &[
    "outbound_queue",
    "inbound_queue",
    "transport",
    "attachments",
];

struct Switch {
    base: String,
    handle: reload::Handle<EnvFilter, Registry>,
}

static SWITCH: OnceLock<Switch> = OnceLock::new();

fn filter(base: &str, sync_debug: bool) -> EnvFilter {
    let mut directives = base.to_string();
    if sync_debug {
        for target in SYNC_TARGETS {
            directives.push_str(&format!(",{target}=debug"));
        }
    }
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the subscriber: `level` (or `RUST_LOG` when set) as the base
/// filter, JSON lines when `json`.
pub fn init(level: &str, json: bool) {
    let base = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string());
    let (filter, handle) = reload::Layer::new(filter(&base, false));
    let output = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed()
    };
    if tracing_subscriber::registry()
        .with(output.with_filter(filter))
        .try_init()
        .is_ok()
    {
        let _ = SWITCH.set(Switch { base, handle });
    }
}

/// Turns debug logging of `SYNC_TARGETS` on or off (no-op before `init`).
pub fn set_sync_debug(on: bool) {
    if let Some(switch) = SWITCH.get() {
        if switch.handle.reload(filter(&switch.base, on)).is_ok() {
            tracing::info!(target: "server", sync_debug = on, "Debug logging for the sync components is now {}.", if on { "on" } else { "off" });
        }
    }
}
