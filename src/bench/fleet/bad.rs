//! `bench fleet`'s misbehaving peers, run beside the fleet while it idles
//! and writes: a connection that never speaks, an enrolled peer flooding
//! `Hello`, a stranger flooding joins with guessed secrets, an enrolled
//! peer that opens its streams and never answers on them, and an enrolled
//! peer calling while the hub holds as many peers as `max_peers` allows.
//! Each should be bounded by the hub (closed, turned away, refused, or its
//! session ended) at no measurable cost to the fleet; `report` prints what
//! the hub did to each.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::{Joined, join};
use crate::transport::client::AdminClient;
use crate::transport::enrol::{JoinCode, JoinRequest, JoinStep, target_of_code};
use crate::transport::peer::PeerClient;
use crate::transport::protocol::{Hello, PROTOCOL_VERSION, PeerTarget};

/// Concurrent callers in each flood.
const FLOODERS: usize = 4;

/// Peers (certificates) the bad peers hold connected at the hub: the hello
/// flooder, each join flooder, the peer that never answers. With the fleet
/// they fill `max_peers`, so the peer beyond it is refused.
pub const PEERS_HELD: usize = 2 + FLOODERS;

/// What the hub answered a flood.
#[derive(Default)]
struct Answers {
    taken: AtomicU64,
    turned_away: AtomicU64,
    refused: AtomicU64,
}

impl Answers {
    fn count(&self, answer: Result<(), String>, turned_away: &str) {
        let counter = match answer {
            Ok(()) => &self.taken,
            Err(e) if e.contains(turned_away) => &self.turned_away,
            Err(_) => &self.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> (u64, u64, u64) {
        (
            self.taken.load(Ordering::Relaxed),
            self.turned_away.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

pub struct BadPeers {
    started: Instant,
    stop: watch::Sender<bool>,
    hellos: Arc<Answers>,
    joins: Arc<Answers>,
    beyond: Arc<Answers>,
    max_peers: usize,
    /// How long the hub took to close the silent connection.
    silent: tokio::task::JoinHandle<Option<Duration>>,
    /// The peer that never answers, and its streams' ends, held unread.
    never_answers: String,
    _held: Vec<Box<dyn std::any::Any + Send>>,
}

/// Starts the five beside the fleet; `beyond` was enrolled before the
/// fleet connected, and the hub holds `max_peers`.
pub async fn start(
    hub: &mut AdminClient,
    endpoint: &str,
    beyond: Joined,
    max_peers: usize,
) -> Result<BadPeers> {
    let (stop, stopping) = watch::channel(false);
    let flooder = join(hub, endpoint, "bad-hellos").await?;
    let hellos = Arc::new(Answers::default());
    for _ in 0..FLOODERS {
        let client = PeerClient::connect(&flooder.target).await?;
        tokio::spawn(flood_hellos(client, hellos.clone(), stopping.clone()));
    }
    let silent = tokio::spawn(silent(flooder));

    let invited = hub
        .invite_remote("fleet", "bad-joins", 3600, endpoint)
        .await?;
    let code = JoinCode::parse(&invited.code).map_err(anyhow::Error::msg)?;
    let joins = Arc::new(Answers::default());
    for _ in 0..FLOODERS {
        let stranger = crate::identity::generate("stranger").map_err(anyhow::Error::msg)?;
        let target = target_of_code(&code, stranger.cert_pem, stranger.key_pem);
        let client = PeerClient::connect(&target).await?;
        let fingerprint = stranger.fingerprint;
        let (code, joins) = (code.clone(), joins.clone());
        tokio::spawn(flood_joins(
            client,
            fingerprint,
            code,
            joins,
            stopping.clone(),
        ));
    }

    let reader = join(hub, endpoint, "bad-reader").await?;
    let mut client = PeerClient::connect(&reader.target).await?;
    let pulled = client.pull().await?;
    let synced = client.sync().await?;

    // Last, with every slot held.
    let refused = Arc::new(Answers::default());
    for _ in 0..FLOODERS {
        let target = beyond.target.clone();
        tokio::spawn(flood_beyond(target, refused.clone(), stopping.clone()));
    }
    Ok(BadPeers {
        started: Instant::now(),
        stop,
        hellos,
        joins,
        beyond: refused,
        max_peers,
        silent,
        never_answers: reader.name,
        _held: vec![Box::new(client), Box::new(pulled), Box::new(synced)],
    })
}

fn bad_hello(name: &str) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        instance_sys_id: String::new(),
        instance_name: name.to_string(),
        remote_system_sys_id: String::new(),
        external_id: String::new(),
        process_events: Vec::new(),
        last_sequence: None,
        conflict_rules: Vec::new(),
    }
}

async fn flood_hellos(mut client: PeerClient, answers: Arc<Answers>, stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let answer = client
            .hello(bad_hello("bad-hellos"))
            .await
            .map(drop)
            .map_err(|e| e.to_string());
        answers.count(answer, "hellos came from");
    }
}

async fn flood_joins(
    mut client: PeerClient,
    fingerprint: String,
    code: JoinCode,
    answers: Arc<Answers>,
    stop: watch::Receiver<bool>,
) {
    for n in 0u64.. {
        if *stop.borrow() {
            return;
        }
        let request = JoinRequest {
            invite: code.invite.clone(),
            secret: format!("guess {n}"),
            fingerprint: fingerprint.clone(),
            instance_name: format!("guess-{n}"),
            remote_system_sys_id: "0".repeat(32),
            token: "t".to_string(),
            ..JoinRequest::default()
        };
        let answer = client
            .join(JoinStep::Enrol, request)
            .await
            .map(drop)
            .map_err(|e| e.to_string());
        answers.count(answer, "too many joins");
    }
}

/// Connects as an enrolled peer, and says hello, again and again: each
/// connection should be closed (the hub holds `max_peers` already).
async fn flood_beyond(target: PeerTarget, answers: Arc<Answers>, stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let answer = async {
            let mut client = PeerClient::connect(&target).await?;
            client.hello(bad_hello("bad-beyond")).await.map(drop)
        };
        // Anything but an answer is the connection refused.
        let counter = match answer.await {
            Ok(()) => &answers.taken,
            Err(_) => &answers.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A mutual-TLS connection that never says a word: how long until the hub
/// closed it (`None`: not within a minute).
async fn silent(peer: Joined) -> Option<Duration> {
    let target = peer.target;
    let config = crate::transport::tls::client_config(
        &target.cert_pem,
        &target.key_pem,
        &target.fingerprint,
    )
    .ok()?;
    let address = target.endpoint.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&address).await.ok()?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(crate::transport::tls::server_name("127.0.0.1"), tcp)
        .await
        .ok()?;
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    let read_all = async { while matches!(tls.read(&mut buffer).await, Ok(n) if n > 0) {} };
    tokio::time::timeout(Duration::from_secs(60), read_all)
        .await
        .ok()?;
    Some(started.elapsed())
}

impl BadPeers {
    /// Stops the floods and prints what the hub did to each bad peer.
    pub async fn report(self, hub: &mut AdminClient) -> Result<()> {
        let _ = self.stop.send(true);
        let seconds = self.started.elapsed().as_secs_f64();
        match self.silent.await.ok().flatten() {
            Some(after) => println!(
                "bad peer, silent after its handshake: closed by the hub after {:.1} s",
                after.as_secs_f64()
            ),
            None => println!("bad peer, silent after its handshake: NOT closed within 60 s"),
        }
        let (taken, turned_away, refused) = self.hellos.get();
        println!(
            "bad peer, {FLOODERS} callers flooding hello for {seconds:.0} s: {taken} answered ({:.1}/s), {turned_away} turned away, {refused} failed otherwise",
            taken as f64 / seconds
        );
        let (taken, turned_away, refused) = self.joins.get();
        println!(
            "bad peer, {FLOODERS} callers flooding joins with guessed secrets for {seconds:.0} s: {turned_away} turned away unread, {refused} refused for the secret ({:.1}/s), {taken} taken",
            refused as f64 / seconds
        );
        let (answered, _, refused) = self.beyond.get();
        println!(
            "bad peer, {FLOODERS} callers connecting beyond max_peers ({}) for {seconds:.0} s: {refused} connections closed after the handshake ({:.1}/s), {answered} answered",
            self.max_peers,
            refused as f64 / seconds
        );
        let deadline = self.started + Duration::from_secs(90);
        loop {
            let remote = hub
                .list_group("fleet")
                .await?
                .into_iter()
                .find(|r| r.name == self.never_answers);
            // Down for its silence (not merely before its session began).
            let seen = remote
                .as_ref()
                .map(|r| format!("{}: {}", r.health, r.last_error))
                .unwrap_or_default();
            let ended = remote.filter(|r| r.health == "Down" && r.last_error.contains("heartbeat"));
            if let Some(remote) = ended {
                println!(
                    "bad peer, streams open and never answered: the hub ended its session after {:.0} s ({}) and shows it Down",
                    self.started.elapsed().as_secs_f64(),
                    remote.last_error
                );
                break;
            }
            if Instant::now() > deadline {
                println!(
                    "bad peer, streams open and never answered: NOT ended by the hub within 90 s (it shows {seen})"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }
}
