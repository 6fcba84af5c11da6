//! The running parts of peer sync that the layers above share in one
//! process: which certificates the peer listener accepts, the wake-ups of
//! the dispatchers and the processor, what each dispatcher last saw of its
//! remote (health) and the attachment bytes moved per remote (transfers).
//! In memory only; what must survive a restart is in the store.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::store::{RemoteState, Store, StoreError};
use crate::transport::peer::FetchStream;
use crate::transport::protocol::{CallError, Delivery, SendItem, SyncEvent};
use crate::transport::reconcile::ReconcileCall;
use crate::transport::tls::AllowedPeers;
use crate::transport::wire::WireCounts;

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
    /// Bytes on the links to each peer, before and after compression.
    pub wire: WireBoard,
    /// Each peer's sending allowance, when `link.max_bytes_per_s` limits it.
    pub bandwidth: Bandwidth,
    /// Peers that removed their link to us, told down a `Pull` stream, for
    /// the API to remove our side.
    pub peers_left: PeersLeft,
}

/// Names of peers that said they removed their link to us, waiting to be
/// unlinked here.
#[derive(Clone, Default)]
pub struct PeersLeft(Arc<Mutex<Vec<String>>>, Arc<tokio::sync::Notify>);

impl PeersLeft {
    pub fn tell(&self, remote: &str) {
        self.0
            .lock()
            .expect("peers left lock")
            .push(remote.to_string());
        self.1.notify_one();
    }

    /// The names told since the last call, once some are.
    pub async fn next(&self) -> Vec<String> {
        loop {
            let told = std::mem::take(&mut *self.0.lock().expect("peers left lock"));
            if !told.is_empty() {
                return told;
            }
            self.1.notified().await;
        }
    }
}

/// The byte counts of the links to each remote system.
#[derive(Clone, Default)]
pub struct WireBoard(Arc<Mutex<HashMap<String, Arc<WireCounts>>>>);

impl WireBoard {
    pub fn counts(&self, remote: &str) -> Arc<WireCounts> {
        self.0
            .lock()
            .expect("wire board lock")
            .entry(remote.to_string())
            .or_default()
            .clone()
    }
}

/// A token bucket per remote system: at most `rate` bytes per second on
/// average, with a second's worth of burst. A send larger than what is
/// left goes once the bucket is not in debt, and leaves it in debt.
#[derive(Clone, Default)]
pub struct Bandwidth(Arc<Mutex<HashMap<String, Bucket>>>);

struct Bucket {
    tokens: f64,
    at: std::time::Instant,
}

impl Bandwidth {
    /// Takes `bytes` for `remote` at `rate` bytes per second (0: no
    /// limit). `Ok` when they may go now; otherwise how long until they
    /// may, with nothing taken.
    pub fn take(&self, remote: &str, rate: u64, bytes: usize) -> Result<(), std::time::Duration> {
        if rate == 0 {
            return Ok(());
        }
        let now = std::time::Instant::now();
        let rate = rate as f64;
        let mut buckets = self.0.lock().expect("bandwidth lock");
        let bucket = buckets.entry(remote.to_string()).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(rate);
        bucket.at = now;
        if bucket.tokens > 0.0 {
            bucket.tokens -= bytes as f64;
            Ok(())
        } else {
            Err(std::time::Duration::from_secs_f64(
                -bucket.tokens / rate + 0.001,
            ))
        }
    }

    /// The most bytes per second this instance sends `remote`
    /// (`link.max_bytes_per_s`; 0, also when the store cannot say: no
    /// limit).
    pub async fn rate_of(store: &Arc<Store>, remote: &str) -> u64 {
        let (store, remote) = (store.clone(), remote.to_string());
        tokio::task::spawn_blocking(move || store.sending_rate(&remote))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0)
    }

    /// `take`, waiting as long as it takes.
    pub async fn wait(&self, remote: &str, rate: u64, bytes: usize) {
        while let Err(wait) = self.take(remote, rate, bytes) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The two ends of a sync stream: items to send, events coming back.
pub type StreamEnds = (
    tokio::sync::mpsc::Sender<SendItem>,
    tokio::sync::mpsc::Receiver<SyncEvent>,
);

/// Streams a peer opened for the items we send it (`Pull`, for a peer we
/// never dial), each waiting for that remote's dispatcher to take it. A
/// newer stream replaces a waiting older one. Over the latest one, what we
/// cannot call such a peer for is asked of it: a content to deliver
/// (`ask_delivery`), a comparison to answer (`ask_reconcile`); the calls
/// it makes in answer find their asker here.
#[derive(Clone, Default)]
pub struct ReverseStreams(Arc<Mutex<Reverse>>);

/// How long a peer we never dial has, once asked, to call back (deliver a
/// content, open a comparison).
const CALL_BACK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Default)]
struct Reverse {
    /// Offered, not yet taken by the dispatcher.
    waiting: HashMap<String, StreamEnds>,
    /// Where to ask each remote: its latest stream, held weakly (the
    /// dispatcher's session owns it, and ends it).
    askers: HashMap<String, tokio::sync::mpsc::WeakSender<SendItem>>,
    /// Requests sent, by remote and id, each for the task awaiting the
    /// peer's call.
    awaited: HashMap<(String, u64), Awaited>,
    next_id: u64,
}

/// Who awaits the call a peer makes in answer to a request.
enum Awaited {
    Delivery(tokio::sync::oneshot::Sender<FetchStream>),
    Reconcile(tokio::sync::oneshot::Sender<ReconcileCall>),
}

impl ReverseStreams {
    pub fn offer(&self, remote: &str, ends: StreamEnds) {
        let mut reverse = self.0.lock().expect("reverse streams lock");
        reverse
            .askers
            .insert(remote.to_string(), ends.0.downgrade());
        reverse.waiting.insert(remote.to_string(), ends);
    }

    pub fn take(&self, remote: &str) -> Option<StreamEnds> {
        self.0
            .lock()
            .expect("reverse streams lock")
            .waiting
            .remove(remote)
    }

    pub fn waiting(&self, remote: &str) -> bool {
        self.0
            .lock()
            .expect("reverse streams lock")
            .waiting
            .contains_key(remote)
    }

    /// Asks `remote`, over the stream it opened, to deliver the content
    /// `grant` names from `offset` on; its `Deliver` call's chunks, once it
    /// makes it (within `CALL_BACK_WAIT`).
    pub async fn ask_delivery(
        &self,
        remote: &str,
        grant: crate::attachment::Grant,
        offset: u64,
    ) -> Result<FetchStream, CallError> {
        let (arrived, arrives) = tokio::sync::oneshot::channel();
        let request = |id| SendItem::Deliver(Box::new(Delivery { id, grant, offset }));
        let id = self
            .ask(
                remote,
                request,
                Awaited::Delivery(arrived),
                "is not open (it dials us and we never dial it): the attachment comes once it connects",
            )
            .await?;
        self.called_back(remote, id, arrives, "our request to deliver an attachment")
            .await
    }

    /// Asks `remote`, over the stream it opened, to answer a comparison;
    /// its `ReconcileBack` call, once it makes it (within `CALL_BACK_WAIT`).
    pub async fn ask_reconcile(&self, remote: &str) -> Result<ReconcileCall, CallError> {
        let (arrived, arrives) = tokio::sync::oneshot::channel();
        let id = self
            .ask(
                remote,
                SendItem::Reconcile,
                Awaited::Reconcile(arrived),
                "is not open (it dials us and we never dial it): compare again once it connects",
            )
            .await?;
        self.called_back(
            remote,
            id,
            arrives,
            "our request to call back for a reconciliation",
        )
        .await
    }

    /// What the peer's call back (`id`) brings, or `NoAnswer` when it does
    /// not come within `CALL_BACK_WAIT` (the request is then dropped).
    async fn called_back<T>(
        &self,
        remote: &str,
        id: u64,
        arrives: tokio::sync::oneshot::Receiver<T>,
        what: &'static str,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(CALL_BACK_WAIT, arrives).await {
            Ok(Ok(arrived)) => Ok(arrived),
            _ => {
                self.forget(remote, id);
                Err(CallError::NoAnswer {
                    endpoint: format!("`{remote}`"),
                    what,
                    secs: CALL_BACK_WAIT.as_secs(),
                })
            }
        }
    }

    async fn ask(
        &self,
        remote: &str,
        request: impl FnOnce(u64) -> SendItem,
        awaited: Awaited,
        not_open: &'static str,
    ) -> Result<u64, CallError> {
        let not_open = || CallError::StreamGone {
            remote: remote.to_string(),
            how: not_open,
        };
        let asker = self.asker(remote).ok_or_else(not_open)?;
        let id = {
            let mut reverse = self.0.lock().expect("reverse streams lock");
            reverse.next_id += 1;
            let id = reverse.next_id;
            reverse.awaited.insert((remote.to_string(), id), awaited);
            id
        };
        if asker.send(request(id)).await.is_err() {
            self.forget(remote, id);
            return Err(not_open());
        }
        Ok(id)
    }

    /// Tells `remote`, over the stream it opened, that we removed our
    /// link to it; false when it has none open.
    pub async fn tell_left(&self, remote: &str) -> bool {
        match self.asker(remote) {
            Some(asker) => asker.send(SendItem::Left).await.is_ok(),
            None => false,
        }
    }

    /// Where to send `remote` a request: its latest stream, while open.
    fn asker(&self, remote: &str) -> Option<tokio::sync::mpsc::Sender<SendItem>> {
        self.0
            .lock()
            .expect("reverse streams lock")
            .askers
            .get(remote)
            .and_then(tokio::sync::mpsc::WeakSender::upgrade)
    }

    /// Drops a request no call answered in time.
    fn forget(&self, remote: &str, id: u64) {
        self.awaited_by(remote, id);
    }

    fn awaited_by(&self, remote: &str, id: u64) -> Option<Awaited> {
        self.0
            .lock()
            .expect("reverse streams lock")
            .awaited
            .remove(&(remote.to_string(), id))
    }

    /// Hands a `Deliver` call's chunks to the fetch that asked for them;
    /// false when none waits (it gave up, or never asked).
    pub fn delivered(&self, remote: &str, id: u64, stream: FetchStream) -> bool {
        match self.awaited_by(remote, id) {
            Some(Awaited::Delivery(fetch)) => fetch.send(stream).is_ok(),
            _ => false,
        }
    }

    /// Hands a `ReconcileBack` call to the reconciler that asked for it;
    /// false when none waits.
    pub fn reconcile_opened(&self, remote: &str, id: u64, call: ReconcileCall) -> bool {
        match self.awaited_by(remote, id) {
            Some(Awaited::Reconcile(reconciler)) => reconciler.send(call).is_ok(),
            _ => false,
        }
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
        self.health.set_identities(remotes.iter().map(|r| {
            let spec = &r.spec;
            let who = format!(
                "{} {} {}",
                spec.endpoint, spec.fingerprint, spec.external_id
            );
            (spec.name.clone(), who)
        }));
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
    /// Who each remote system is (endpoint, pinned fingerprint, external
    /// id): a session opened to another one ends, even if the remote was
    /// Disabled and Active again before it looked.
    Arc<Mutex<HashMap<String, String>>>,
);

impl HealthBoard {
    /// Records which remote systems are Disabled, from the store's view.
    pub fn set_disabled(&self, disabled: impl IntoIterator<Item = String>) {
        *self.2.lock().expect("disabled lock") = disabled.into_iter().collect();
    }

    /// Records who each remote system is, from the store's view.
    pub fn set_identities(&self, identities: impl IntoIterator<Item = (String, String)>) {
        *self.3.lock().expect("identities lock") = identities.into_iter().collect();
    }

    /// Who `remote` is now (empty when unknown).
    pub fn identity(&self, remote: &str) -> String {
        self.3
            .lock()
            .expect("identities lock")
            .get(remote)
            .cloned()
            .unwrap_or_default()
    }

    pub fn is_disabled(&self, remote: &str) -> bool {
        self.2.lock().expect("disabled lock").contains(remote)
    }

    /// The peer just called us: it is alive, so a dispatcher waiting out a
    /// backoff for it should try again now. Says whether one may be
    /// waiting (we do not see it Up), so that waking the dispatchers is
    /// worth it: a peer calling often costs the others nothing.
    pub fn peer_seen(&self, remote: &str) -> bool {
        self.1
            .lock()
            .expect("retry lock")
            .insert(remote.to_string());
        !matches!(
            self.get(remote).map(|h| h.health),
            Some(Health::Up | Health::Slow)
        )
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
