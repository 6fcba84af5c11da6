//! Test support: instances in temp dirs, real `procsync serve` processes on
//! loopback port 0, the CLI run as a real process, and deadline waits.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use procsync::transport::client::{AdminClient, Target};

pub const BIN: &str = env!("CARGO_BIN_EXE_procsync");

/// Waits until `condition` holds, failing the test after `deadline`.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Like `wait_until`, but on timeout the failure shows what the instances
/// logged and queued.
pub fn wait_for(
    instances: &[&Instance],
    what: &str,
    deadline: Duration,
    mut condition: impl FnMut() -> bool,
) {
    let start = Instant::now();
    while !condition() {
        if start.elapsed() > deadline {
            let mut report = String::new();
            for instance in instances {
                report.push_str(&format!(
                    "\n--- {} ---\n{}",
                    instance.path().display(),
                    instance.logs()
                ));
                for queue in ["outbound", "inbound"] {
                    let out = instance.cli(&["queue", queue, "list"]);
                    report.push_str(&String::from_utf8_lossy(&out.stdout));
                }
                let out = instance.cli(&["remote", "list", "--json"]);
                report.push_str(&String::from_utf8_lossy(&out.stdout));
            }
            panic!("timed out after {deadline:?} waiting for {what}{report}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the CLI against `instance` with `token` instead of its admin's.
pub fn as_user(instance: &Instance, token: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("PROCSYNC_DATA", instance.path())
        .env("PROCSYNC_TOKEN", token)
        .output()
        .unwrap()
}

/// The stdout of `procsync ARGS` that ran as `out`, failing the test (with
/// its stderr) when it did not succeed.
pub fn succeeded(args: &[&str], out: &Output) -> String {
    assert!(
        out.status.success(),
        "`procsync {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// An instance's data directory (removed with the value).
pub struct Instance {
    pub dir: tempfile::TempDir,
    pub fingerprint: String,
    /// The peer port, fixed for the instance's life so peers find it again
    /// after a restart.
    pub peer_port: u16,
}

/// A loopback port free right now (`procsync::link::free_port`: from below
/// the kernel's ephemeral range, a stretch per test process, never handed
/// out twice).
pub fn free_port() -> u16 {
    procsync::link::free_port().unwrap()
}

impl Instance {
    pub fn init(name: &str) -> Instance {
        Instance::init_in(name, tempfile::tempdir().unwrap())
    }

    /// `init` in `dir`, a directory of the test's choosing.
    pub fn init_in(name: &str, dir: tempfile::TempDir) -> Instance {
        let out = Command::new(BIN)
            .args(["init", "--name", name, "--data"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let fingerprint = stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("fingerprint:"))
            .expect("init prints the fingerprint")
            .trim()
            .to_string();
        Instance {
            dir,
            fingerprint,
            peer_port: free_port(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Wipes the data directory (`rm -rf`) and runs `procsync init` there
    /// again under `name`: the same place and ports, a new identity.
    pub fn reinit(&mut self, name: &str) {
        std::fs::remove_dir_all(self.path()).unwrap();
        std::fs::create_dir(self.path()).unwrap();
        let out = Command::new(BIN)
            .args(["init", "--name", name, "--data"])
            .arg(self.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.fingerprint = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .find_map(|l| l.trim().strip_prefix("fingerprint:"))
            .expect("init prints the fingerprint")
            .trim()
            .to_string();
    }

    /// Starts `procsync serve` and waits until its admin API answers.
    pub fn serve(&self) -> Server {
        self.serve_with(&[])
    }

    pub fn serve_with(&self, extra: &[&str]) -> Server {
        let log =
            std::fs::File::create(self.path().join(format!("serve-{}.log", now_nanos()))).unwrap();
        let child = procsync::link::serve_command(Path::new(BIN), self.path(), self.peer_port, log)
            .args(extra)
            .spawn()
            .unwrap();
        let mut server = Server { child: Some(child) };
        wait_until("the server to listen", Duration::from_secs(30), || {
            if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("serve exited early with {status}: {}", self.logs());
            }
            procsync::link::is_listening(self.path())
        });
        server
    }

    /// Everything the instance's servers logged.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                out.push_str(&std::fs::read_to_string(path).unwrap_or_default());
            }
        }
        out
    }

    /// Runs the CLI against this instance.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("PROCSYNC_DATA", self.path())
            .env_remove("PROCSYNC_TOKEN")
            .output()
            .unwrap()
    }

    /// Runs the CLI and returns stdout, failing the test on an error.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(args, &self.cli(args))
    }

    /// Adds a user with these roles (comma-separated), in `domain` when
    /// given; returns its API token.
    pub fn add_user(&self, name: &str, roles: &str, domain: Option<&str>) -> String {
        let mut args = vec!["user", "add", name, "--roles", roles];
        if let Some(domain) = domain {
            args.extend(["--domain", domain]);
        }
        self.ok(&args).trim().to_string()
    }

    /// Runs the CLI expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "`procsync {}` should have failed but printed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.path().join("admin.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn target(&self, token: &str) -> Target {
        Target {
            address: std::fs::read_to_string(self.path().join("admin.addr"))
                .unwrap()
                .trim()
                .to_string(),
            token: token.to_string(),
            tls_cert_pem: None,
        }
    }

    pub async fn client(&self) -> AdminClient {
        AdminClient::connect(&self.target(&self.token()))
            .await
            .unwrap()
    }

    /// Writes a file into the instance directory and returns its path.
    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

/// A running `procsync serve`; SIGTERM and wait on drop.
pub struct Server {
    child: Option<Child>,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "serve did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A definitions file with one capture on `incident` sent to `hub` and
/// `other`, in domain `global/acme`.
pub const DEFINITIONS: &str = r#"
[[definition]]
name = "Incidents"
domain = "global/acme"

[[process_event]]
name = "incident_sync"
definition = "Incidents"

[[capture]]
name = "Capture incidents"
process_event = "incident_sync"
table = "incident"
filter = "priority<=2^ORurgency=1"
fields = ["short_description", "state", "priority"]
journal_fields = ["comments"]

[[remote_system]]
name = "hub"
endpoint = "https://127.0.0.1:7481"
fingerprint = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
inbound_api_user = "api_user"
run_as = "runas_user"

[[remote_system]]
name = "other"
endpoint = "https://127.0.0.1:7482"
fingerprint = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
inbound_api_user = "api_user"
run_as = "runas_user"

[[outbound_flow]]
name = "Incidents to hub"
process_event = "incident_sync"
remote_system = "hub"

[[outbound_flow]]
name = "Incidents to other"
process_event = "incident_sync"
remote_system = "other"

[[inbound_flow]]
name = "Incidents from hub"
process_event = "incident_sync"
remote_system = "hub"
table = "incident"
"#;

/// Adds the users DEFINITIONS needs and applies it.
pub fn apply_definitions(instance: &Instance) {
    apply_with_users(instance, DEFINITIONS);
}

/// A remote system `hub` that nobody answers for, for definitions that
/// only queue (its users are the ones `apply_with_users` adds).
pub const UNREACHED_HUB: &str = r#"
[[remote_system]]
name = "hub"
endpoint = "https://127.0.0.1:9"
fingerprint = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
inbound_api_user = "api_user"
run_as = "runas_user"
"#;

/// Adds `api_user` (process_sync_api) and `runas_user`
/// (process_sync_run_as) and applies `definitions`; returns the file.
pub fn apply_with_users(instance: &Instance, definitions: &str) -> PathBuf {
    instance.ok(&["user", "add", "api_user", "--roles", "process_sync_api"]);
    instance.ok(&[
        "user",
        "add",
        "runas_user",
        "--roles",
        "process_sync_run_as",
    ]);
    let file = instance.file("defs.toml", definitions);
    instance.ok(&["apply", file.to_str().unwrap()]);
    file
}

impl Instance {
    /// The peer API endpoint of the running server.
    pub fn peer_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.peer_port)
    }

    /// Fast retries for tests: 1 s, capped at 2 s.
    pub fn fast_retries(&self) {
        self.ok(&["property", "set", "retry.interval", "1"]);
        self.ok(&["property", "set", "retry.max_interval", "2"]);
        self.ok(&["property", "set", "heartbeat.interval", "1"]);
    }

    /// Runs the CLI with a JSON answer.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }
}

/// What one side of a sync pair knows about the other.
pub struct Peer<'a> {
    pub name: &'a str,
    pub instance: &'a Instance,
}

pub use procsync::link::RemoteSpec;

/// Extra lines for the blocks `definitions` writes.
#[derive(Clone, Copy, Default)]
pub struct Extras<'a> {
    /// Appended to the `[[capture]]` block.
    pub capture: &'a str,
    /// Appended to each `[[inbound_flow]]` block.
    pub inbound: &'a str,
}

/// Definitions for one instance: capture `sc_req_item` for every remote,
/// and an inbound flow from each into `sc_req_item`.
pub fn definitions(remotes: &[RemoteSpec]) -> String {
    definitions_with(remotes, Extras::default())
}

/// `definitions` with extra lines in its blocks.
pub fn definitions_with(remotes: &[RemoteSpec], extras: Extras<'_>) -> String {
    let mut text = String::from(
        r#"
[[definition]]
name = "Software requests"

[[process_event]]
name = "software_request"
definition = "Software requests"

[[capture]]
name = "Capture requests"
process_event = "software_request"
table = "sc_req_item"
fields = ["short_description", "state", "priority"]
journal_fields = ["comments"]
"#,
    );
    text.push_str(extras.capture);
    text.push('\n');
    for remote in remotes {
        let RemoteSpec {
            name,
            endpoint,
            fingerprint,
            external_id,
        } = remote;
        text.push_str(&format!(
            r#"
[[remote_system]]
name = "{name}"
endpoint = "{endpoint}"
fingerprint = "{fingerprint}"
external_id = "{external_id}"
inbound_api_user = "{name}_api"
run_as = "{name}_runas"

[[outbound_flow]]
name = "Requests to {name}"
process_event = "software_request"
remote_system = "{name}"

[[inbound_flow]]
name = "Requests from {name}"
process_event = "software_request"
remote_system = "{name}"
table = "sc_req_item"
{inbound}
"#,
            inbound = extras.inbound
        ));
    }
    text
}

/// Definitions for one side of one pair.
pub fn sync_definitions(
    remote: &str,
    endpoint: &str,
    fingerprint: &str,
    external_id: &str,
) -> String {
    definitions(&[RemoteSpec {
        name: remote.to_string(),
        endpoint: endpoint.to_string(),
        fingerprint: fingerprint.to_string(),
        external_id: external_id.to_string(),
    }])
}

/// Links two running instances both ways.
pub fn link(a: Peer<'_>, b: Peer<'_>) {
    link_all(&[a, b], &[(0, 1)]);
}

/// Links running `edge` and `hub` both ways, each calling the other by
/// that name.
pub fn link_edge_hub(edge: &Instance, hub: &Instance) {
    link(
        Peer {
            name: "edge",
            instance: edge,
        },
        Peer {
            name: "hub",
            instance: hub,
        },
    );
}

/// Links running instances along `edges` (pairs of indexes into `peers`),
/// both ways: users, definitions, external ids, tokens and validation. Each
/// instance calls its peers by their names.
pub fn link_all(peers: &[Peer<'_>], edges: &[(usize, usize)]) {
    link_all_with(peers, edges, Extras::default());
}

/// `link_all` with extra lines in the definitions.
pub fn link_all_with(peers: &[Peer<'_>], edges: &[(usize, usize)], extras: Extras<'_>) {
    let mut sides: Vec<Peer<'_>> = peers
        .iter()
        .map(|p| Peer {
            name: p.name,
            instance: p.instance,
        })
        .collect();
    let mut sides: Vec<&mut Peer<'_>> = sides.iter_mut().collect();
    let definitions = |remotes: &[RemoteSpec]| definitions_with(remotes, extras);
    let linking = procsync::link::link_all(&mut sides, edges, &definitions);
    let linked: Result<(), std::convert::Infallible> =
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(linking);
    linked.unwrap();
}

/// Each linking step through the command line; a failing step fails the
/// test with the command's error.
impl procsync::link::Side for Peer<'_> {
    type Error = std::convert::Infallible;

    fn name(&self) -> &str {
        self.name
    }

    fn endpoint(&self) -> String {
        self.instance.peer_endpoint()
    }

    fn fingerprint(&self) -> &str {
        &self.instance.fingerprint
    }

    async fn add_user(&mut self, name: &str, role: &str) -> Result<String, Self::Error> {
        let token = self.instance.ok(&["user", "add", name, "--roles", role]);
        Ok(token.trim().to_string())
    }

    async fn apply(&mut self, definitions: &str) -> Result<(), Self::Error> {
        let file = self.instance.file("sync.toml", definitions);
        self.instance.ok(&["apply", file.to_str().unwrap()]);
        Ok(())
    }

    async fn remote_sys_id(&mut self, remote: &str) -> Result<String, Self::Error> {
        let remotes = self.instance.json(&["remote", "list", "--json"]);
        let record = remotes
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == remote)
            .unwrap_or_else(|| panic!("{} has no remote system `{remote}`", self.name));
        Ok(record["sys_id"].as_str().unwrap().to_string())
    }

    async fn set_token(&mut self, remote: &str, token: &str) -> Result<(), Self::Error> {
        self.instance.ok(&["remote", "token", remote, token]);
        Ok(())
    }

    async fn validate(&mut self, remote: &str) -> Result<(), Self::Error> {
        self.instance.ok(&["remote", "validate", remote]);
        Ok(())
    }
}

/// Borrows `sender`'s identity and its token for `receiver_name` (read
/// from its store, so `sender` must not be running) to act as it towards
/// `receiver`: a hand-made peer that can send what procsync never would.
pub fn impersonate(
    sender: &Instance,
    receiver_name: &str,
    receiver: &Instance,
) -> procsync::transport::protocol::PeerTarget {
    let store = procsync::store::Store::open(sender.path()).unwrap();
    let info = store.instance().unwrap();
    let token = store.remote_secret(receiver_name).unwrap().unwrap();
    store.close();
    procsync::transport::protocol::PeerTarget {
        endpoint: receiver.peer_endpoint(),
        fingerprint: receiver.fingerprint.clone(),
        token,
        cert_pem: info.cert_pem,
        key_pem: info.key_pem,
        link: Default::default(),
    }
}

/// An item of process event `software_request` creating an `sc_req_item`.
pub fn crafted_item(
    sequence: u64,
    payload: &str,
    grants: Vec<procsync::attachment::Grant>,
) -> procsync::transport::protocol::WireItem {
    procsync::transport::protocol::WireItem {
        sequence,
        process_event: "software_request".into(),
        operation: procsync::record::Operation::Create,
        table: "sc_req_item".into(),
        local_correlation_id: format!("{sequence:032x}"),
        remote_correlation_id: String::new(),
        domain: "global".into(),
        payload: procsync::queue::EncodedPayload::Json(payload.into()),
        created_on: "2026-11-27 12:00:00".into(),
        attachment_grants: grants,
        bases: Vec::new(),
        changed_on: 0,
        settles: false,
    }
}

/// Sends `items` on one sync stream and returns the acknowledged
/// sequences, in the order the acks came.
pub fn send_items(
    target: &procsync::transport::protocol::PeerTarget,
    items: Vec<procsync::transport::protocol::WireItem>,
) -> Vec<u64> {
    use procsync::transport::protocol::{SendItem, SyncEvent};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = procsync::transport::peer::PeerClient::connect(target)
            .await
            .unwrap();
        let (sender, mut events) = client.sync().await.unwrap();
        let n_items = items.len();
        for item in items {
            sender.send(SendItem::Item(Box::new(item))).await.unwrap();
        }
        let mut acks = Vec::new();
        while acks.len() < n_items {
            match tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .unwrap()
            {
                Some(SyncEvent::Ack(sequence)) => acks.push(sequence),
                Some(SyncEvent::Pong(_)) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        acks
    })
}

/// Two running instances, `edge` and `hub`, linked both ways with `extras`
/// in their definitions; the servers stop when dropped.
pub fn linked_pair(extras: Extras<'_>) -> (Instance, Instance, Server, Server) {
    let edge = Instance::init("edge");
    let hub = Instance::init("hub");
    let edge_server = edge.serve();
    let hub_server = hub.serve();
    link_all_with(
        &[
            Peer {
                name: "edge",
                instance: &edge,
            },
            Peer {
                name: "hub",
                instance: &hub,
            },
        ],
        &[(0, 1)],
        extras,
    );
    (edge, hub, edge_server, hub_server)
}

/// Makes `edge` send incidents to `hub` as process event `incident_sync`,
/// which the hub has no inbound flow for.
pub fn send_unknown_event(edge: &Instance) {
    let current = edge.ok(&["export"]);
    let extra = format!(
        "{current}\n[[process_event]]\nname = \"incident_sync\"\ndefinition = \"Software requests\"\n\n[[capture]]\nname = \"Capture incidents\"\nprocess_event = \"incident_sync\"\ntable = \"incident\"\nfields = [\"*\"]\n\n[[outbound_flow]]\nname = \"Incidents to hub\"\nprocess_event = \"incident_sync\"\nremote_system = \"hub\"\n"
    );
    let file = edge.file("extra.toml", &extra);
    edge.ok(&["apply", file.to_str().unwrap()]);
}

/// The sys_id of `instance`'s `sc_req_item` record with this
/// short_description, if it holds one.
pub fn sys_id_of(instance: &Instance, description: &str) -> Option<String> {
    let found = instance.json(&[
        "record",
        "list",
        "sc_req_item",
        "--query",
        &format!("short_description={description}"),
        "--json",
    ]);
    found
        .as_array()?
        .first()
        .map(|r| r["fields"]["sys_id"].as_str().unwrap().to_string())
}

/// `instance`'s `/metrics` page, read with its admin token.
pub fn metrics(instance: &Instance) -> String {
    let auth = format!("Bearer {}", instance.token());
    http(
        &instance.admin_address(),
        "GET",
        "/metrics",
        &[("Authorization", &auth)],
        None,
    )
    .body
}

/// Points `instance`'s remote system at `old_endpoint` to `endpoint`
/// (a proxy, say) through its definitions.
pub fn point_at(instance: &Instance, old_endpoint: &str, endpoint: &str) {
    let current = instance.ok(&["export"]);
    assert!(current.contains(old_endpoint), "{current}");
    let file = instance.file("repoint.toml", &current.replace(old_endpoint, endpoint));
    instance.ok(&["apply", file.to_str().unwrap()]);
}

/// No item Ready or Running on any of `instances`, in either queue.
pub fn queues_settled(instances: &[&Instance]) -> bool {
    instances.iter().all(|i| {
        ["outbound", "inbound"].iter().all(|q| {
            queue_items(i, q)
                .iter()
                .all(|item| item["status"] != "Ready" && item["status"] != "Running")
        })
    })
}

/// Every item of `queue` ("outbound" or "inbound"), up to 1,000.
pub fn queue_items(instance: &Instance, queue: &str) -> Vec<serde_json::Value> {
    instance
        .json(&["queue", queue, "list", "--json", "--limit", "1000"])
        .as_array()
        .unwrap()
        .clone()
}

/// Each item's status in `queue`, sorted.
pub fn statuses(instance: &Instance, queue: &str) -> Vec<String> {
    let mut out: Vec<String> = queue_items(instance, queue)
        .iter()
        .map(|i| i["status"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

/// Three requests the hub processes, and two items of an event it does not
/// know: both Error there.
pub fn three_processed_two_errors(edge: &Instance, hub: &Instance) {
    for n in 0..3 {
        edge.ok(&[
            "record",
            "create",
            "sc_req_item",
            &format!("short_description=r{n}"),
        ]);
    }
    send_unknown_event(edge);
    edge.ok(&["record", "create", "incident", "short_description=a"]);
    edge.ok(&["record", "create", "incident", "short_description=b"]);
    wait_for(
        &[edge, hub],
        "3 Processed and 2 Error items at the hub",
        Duration::from_secs(30),
        || statuses(hub, "inbound") == ["Error", "Error", "Processed", "Processed", "Processed"],
    );
}

/// An HTTP answer: status code, headers (names lowercase) and body.
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`):
/// enough for the admin port's plain HTTP and for chromedriver.
pub fn http(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpAnswer {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address)
        .unwrap_or_else(|e| panic!("cannot connect to {address}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        request.push_str("Content-Type: application/json\r\n");
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    // Read by Content-Length (or chunks): chromedriver does not close
    // the connection after its answer even when asked to.
    let mut raw = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let mut read = |raw: &mut Vec<u8>| -> bool {
        let n = stream
            .read(&mut buffer)
            .unwrap_or_else(|e| panic!("{method} {path} on {address}: no answer: {e}"));
        raw.extend_from_slice(&buffer[..n]);
        n > 0
    };
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        assert!(
            read(&mut raw),
            "{method} {path}: the connection closed before the head"
        );
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let value = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let body_start = head_end + 4;
    let body = if let Some(length) = value("content-length") {
        let length: usize = length.parse().unwrap();
        while raw.len() < body_start + length {
            assert!(read(&mut raw), "{method} {path}: the body was cut short");
        }
        String::from_utf8_lossy(&raw[body_start..body_start + length]).to_string()
    } else if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        while !raw[body_start..].ends_with(b"0\r\n\r\n") {
            assert!(read(&mut raw), "{method} {path}: the chunks were cut short");
        }
        dechunk(&String::from_utf8_lossy(&raw[body_start..]))
    } else {
        while read(&mut raw) {}
        String::from_utf8_lossy(&raw[body_start..]).to_string()
    };
    HttpAnswer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    out
}

impl Instance {
    /// The admin API's address (`host:port`) while it serves.
    pub fn admin_address(&self) -> String {
        std::fs::read_to_string(self.path().join("admin.addr"))
            .unwrap()
            .trim()
            .to_string()
    }
}

/// Lets the hub receive `incident_sync`, so a retried item is processed.
pub fn accept_incidents(hub: &Instance) {
    let current = hub.ok(&["export"]);
    let extra = format!(
        "{current}\n[[process_event]]\nname = \"incident_sync\"\ndefinition = \"Software requests\"\n\n[[inbound_flow]]\nname = \"Incidents from edge\"\nprocess_event = \"incident_sync\"\nremote_system = \"edge\"\ntable = \"incident\"\n"
    );
    let file = hub.file("accept.toml", &extra);
    hub.ok(&["apply", file.to_str().unwrap()]);
}

/// An HTTP server answering 200 to every POST: returns its address and the
/// bodies it receives, in order.
pub fn webhook_receiver() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (bodies, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                        let _ = bodies.send(body.to_string());
                        break;
                    }
                }
            }
        }
    });
    (address, received)
}

/// `instance`'s definitions with capture `name`'s `active` set to `active`.
pub fn capture_active(instance: &Instance, name: &str, active: bool) {
    let named = format!("name = \"{name}\"");
    let text: String = instance
        .ok(&["export"])
        .lines()
        .filter(|line| !line.starts_with("active = "))
        .map(|line| {
            if line == named {
                format!("{line}\nactive = {active}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    let file = instance.file("capture.toml", &text);
    instance.ok(&["apply", file.to_str().unwrap()]);
}
