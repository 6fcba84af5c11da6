//! The running parts of peer sync that the layers above share in one
//! process: which certificates the peer listener accepts, the wake-ups of
//! the dispatchers and the processor, what each dispatcher last saw of its
//! remote (health) and the attachment bytes moved per remote (transfers).
//! In memory only; what must survive a restart is in the store.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::store::{RemoteState, Store, StoreError};
use crate::transport::protocol::{SendItem, SyncEvent};
use crate::transport::tls::AllowedPeers;

/// The running parts of peer sync the admin API talks to.
#[derive(Clone, Default)]
pub struct SyncRuntime {
    /// Certificate fingerprints the peer listener accepts.
    pub allowed: AllowedPeers,
    /// Wakes the outbound dispatchers (new items, state changes).
    pub wake_outbound: Arc<tokio::sync::Notify>,
    /// Wakes the inbound processor (retries, skips).
    pub wake_inbound: Arc<tokio::sync::Notify>,
    /// Tells the inbound processor to look at every item again (an
    /// operator changed one).
    pub rescan_inbound: Arc<std::sync::atomic::AtomicBool>,
    /// Wakes the loader (a load started).
    pub wake_load: Arc<tokio::sync::Notify>,
    /// Wakes the reconciler (a reconciliation was asked for).
    pub wake_reconcile: Arc<tokio::sync::Notify>,
    pub health: HealthBoard,
    pub transfers: TransferBoard,
    /// Streams that peers we never dial opened for our items to them.
    pub reverse: ReverseStreams,
}

/// The two ends of a sync stream: items to send, events coming back.
pub type StreamEnds = (
    tokio::sync::mpsc::Sender<SendItem>,
    tokio::sync::mpsc::Receiver<SyncEvent>,
);

/// Streams a peer opened for the items we send it (`Pull`, for a peer we
/// never dial), each waiting for that remote's dispatcher to take it. A
/// newer stream replaces a waiting older one.
#[derive(Clone, Default)]
pub struct ReverseStreams(Arc<Mutex<HashMap<String, StreamEnds>>>);

impl ReverseStreams {
    pub fn offer(&self, remote: &str, ends: StreamEnds) {
        self.0
            .lock()
            .expect("reverse streams lock")
            .insert(remote.to_string(), ends);
    }

    pub fn take(&self, remote: &str) -> Option<StreamEnds> {
        self.0.lock().expect("reverse streams lock").remove(remote)
    }

    pub fn waiting(&self, remote: &str) -> bool {
        self.0
            .lock()
            .expect("reverse streams lock")
            .contains_key(remote)
    }
}

/// Attachment bytes moved per remote system since this process started.
#[derive(Clone, Default)]
pub struct TransferBoard(Arc<Mutex<HashMap<String, TransferCounts>>>);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TransferCounts {
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl TransferBoard {
    pub fn add(&self, remote: &str, sent: u64, received: u64) {
        let mut board = self.0.lock().expect("transfer lock");
        let counts = board.entry(remote.to_string()).or_default();
        counts.bytes_sent += sent;
        counts.bytes_received += received;
    }

    pub fn get(&self, remote: &str) -> TransferCounts {
        self.0
            .lock()
            .expect("transfer lock")
            .get(remote)
            .copied()
            .unwrap_or_default()
    }
}

impl SyncRuntime {
    /// Accepts exactly the fingerprints the remote systems pin, and tells
    /// the dispatchers which remotes are Disabled.
    pub fn refresh_allowed(&self, store: &Store) -> Result<(), StoreError> {
        let remotes = store.remote_systems()?;
        let fingerprints = remotes
            .iter()
            .filter_map(|r| crate::config::sync::normalize_fingerprint(&r.spec.fingerprint).ok());
        self.allowed.replace(fingerprints);
        let now = crate::ids::now_millis();
        let open_until = store
            .invites()?
            .iter()
            // Used ones too, so that a second use hears why it is refused.
            .filter(|i| i.expires_on > now)
            .map(|i| i.expires_on)
            .max()
            .unwrap_or(0);
        self.allowed.open_enrolment_until(open_until);
        self.health.set_disabled(
            remotes
                .iter()
                .filter(|r| r.outbound_state == RemoteState::Disabled)
                .map(|r| r.spec.name.clone()),
        );
        Ok(())
    }

    /// `refresh_allowed`, off the async runtime.
    pub async fn refresh(&self, store: &Arc<Store>) -> Result<(), StoreError> {
        let (sync, store) = (self.clone(), store.clone());
        tokio::task::spawn_blocking(move || sync.refresh_allowed(&store))
            .await
            .map_err(StoreError::from)?
    }
}

/// Connection health as `procsync remote list` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Health {
    Up,
    Slow,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "Up",
            Health::Slow => "Slow",
            Health::Down => "Down",
        }
    }
}

/// What each dispatcher last saw, shared with the admin API.
#[derive(Clone, Debug, Serialize)]
pub struct RemoteHealth {
    pub health: Health,
    pub round_trip_ms: Option<u64>,
    pub last_error: Option<String>,
    pub attempts: u32,
    pub next_attempt_on: Option<String>,
    /// Age in seconds of the oldest outbound item not yet acknowledged
    /// (from the alert checks; `None` when nothing waits).
    pub oldest_waiting_s: Option<u64>,
    /// The alert thresholds it is over now, each as a sentence.
    pub alerts: Vec<String>,
}

#[derive(Clone, Default)]
pub struct HealthBoard(
    Arc<Mutex<HashMap<String, RemoteHealth>>>,
    Arc<Mutex<BTreeSet<String>>>,
    /// Remote systems that are Disabled: dispatchers stop sending to them
    /// at once, before their next look at the store.
    Arc<Mutex<BTreeSet<String>>>,
);

impl HealthBoard {
    /// Records which remote systems are Disabled, from the store's view.
    pub fn set_disabled(&self, disabled: impl IntoIterator<Item = String>) {
        *self.2.lock().expect("disabled lock") = disabled.into_iter().collect();
    }

    pub fn is_disabled(&self, remote: &str) -> bool {
        self.2.lock().expect("disabled lock").contains(remote)
    }

    /// The peer just called us: it is alive, so a dispatcher waiting out a
    /// backoff for it should try again now.
    pub fn peer_seen(&self, remote: &str) {
        self.1
            .lock()
            .expect("retry lock")
            .insert(remote.to_string());
    }

    pub fn take_retry_now(&self, remote: &str) -> bool {
        self.1.lock().expect("retry lock").remove(remote)
    }

    pub fn get(&self, remote: &str) -> Option<RemoteHealth> {
        self.0.lock().expect("health lock").get(remote).cloned()
    }

    pub fn update(&self, remote: &str, change: impl FnOnce(&mut RemoteHealth)) {
        let mut board = self.0.lock().expect("health lock");
        let entry = board.entry(remote.to_string()).or_insert(RemoteHealth {
            health: Health::Down,
            round_trip_ms: None,
            last_error: None,
            attempts: 0,
            next_attempt_on: None,
            oldest_waiting_s: None,
            alerts: Vec::new(),
        });
        change(entry);
    }
}
