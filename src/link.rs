//! Starting local instances and linking them as an operator would, for
//! every tool that needs linked instances on one machine (the demo, the
//! benchmarks, the integration tests): a free peer port, the `serve`
//! command line, and the linking of instances along given edges, both
//! ways: users, definitions, external ids, tokens, validation. How each
//! step reaches an instance (an admin client, or the command line) is the
//! caller's `Side`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::instance::ADMIN_ADDR_FILE;

/// A loopback port free right now, from below the kernel's ephemeral range
/// (32768–60999 on Linux). Every `bind(0)` (a server's admin listener) and
/// every outgoing connection takes its port from that range, so a port
/// handed out here cannot be taken by another process's listener between
/// now and its use (a peer port chosen with `bind(0)` once was, in CI).
/// Each process has its own stretch of ports, by pid, and hands none out
/// twice.
pub fn free_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    const STRETCH: u16 = 1_000;
    let stretches = u32::from((32_768 - 10_000) / STRETCH);
    let index = u16::try_from(std::process::id() % stretches).unwrap_or(0);
    let first = 10_000 + index * STRETCH;
    for _ in 0..STRETCH {
        let port = first + NEXT.fetch_add(1, Ordering::SeqCst) % STRETCH;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free loopback port in {first}–{}", first + STRETCH - 1),
    ))
}

/// The command that starts `exe serve` on the instance in `dir`: its
/// admin API on a free loopback port (written to `admin.addr` once it
/// listens, see `is_listening`), its peer API on `peer_port`, its log to
/// `log`. The caller adds arguments or environment and spawns it.
pub fn serve_command(exe: &Path, dir: &Path, peer_port: u16, log: std::fs::File) -> Command {
    let _ = std::fs::remove_file(dir.join(ADMIN_ADDR_FILE));
    let mut command = Command::new(exe);
    command
        .args(["serve", "--admin-listen", "127.0.0.1:0", "--peer-listen"])
        .arg(format!("127.0.0.1:{peer_port}"))
        .arg("--data")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(log);
    command
}

/// Whether the `serve` started on `dir` listens on its admin API.
pub fn is_listening(dir: &Path) -> bool {
    dir.join(ADMIN_ADDR_FILE).exists()
}

/// One remote system as a definitions file names it.
#[derive(Clone, Debug)]
pub struct RemoteSpec {
    pub name: String,
    pub endpoint: String,
    pub fingerprint: String,
    /// The sys_id of this side's record on the remote ("" until known).
    pub external_id: String,
}

/// One instance to link, and how each step reaches it.
#[allow(
    async_fn_in_trait,
    reason = "the linking is awaited on the caller's own task, never spawned: no Send bound is needed"
)]
pub trait Side {
    type Error;
    /// The name its peers call it by.
    fn name(&self) -> &str;
    /// Its peer API endpoint, `https://host:port`.
    fn endpoint(&self) -> String;
    fn fingerprint(&self) -> &str;
    /// Adds a user with one role; returns its token.
    async fn add_user(&mut self, name: &str, role: &str) -> Result<String, Self::Error>;
    /// Applies a definitions file.
    async fn apply(&mut self, definitions: &str) -> Result<(), Self::Error>;
    /// The sys_id of its remote system record `remote`.
    async fn remote_sys_id(&mut self, remote: &str) -> Result<String, Self::Error>;
    /// Sets the token it presents to `remote`.
    async fn set_token(&mut self, remote: &str, token: &str) -> Result<(), Self::Error>;
    /// Validates `remote`, failing when validation finds problems.
    async fn validate(&mut self, remote: &str) -> Result<(), Self::Error>;
}

/// Links `sides` along `edges` (pairs of indexes into `sides`), both ways:
/// on each side, for each neighbour, an inbound API user `<name>_api` and a
/// run-as user `<name>_runas`; the definitions `definitions` writes for its
/// neighbours (applied twice: the second time with the external ids the
/// first made known); each side's token for its neighbours; then
/// validation. Each side calls its neighbours by their names.
pub async fn link_all<S: Side>(
    sides: &mut [&mut S],
    edges: &[(usize, usize)],
    definitions: &dyn Fn(&[RemoteSpec]) -> String,
) -> Result<(), S::Error> {
    let neighbours = |i: usize| -> Vec<usize> {
        edges
            .iter()
            .filter_map(|&(a, b)| match (a == i, b == i) {
                (true, _) => Some(b),
                (_, true) => Some(a),
                _ => None,
            })
            .collect()
    };
    let names: Vec<String> = sides.iter().map(|s| s.name().to_string()).collect();
    // tokens[(i, j)]: the token of i's inbound API user for j.
    let mut tokens = HashMap::new();
    for (i, side) in sides.iter_mut().enumerate() {
        for j in neighbours(i) {
            let other = &names[j];
            let token = side
                .add_user(&format!("{other}_api"), "process_sync_api")
                .await?;
            side.add_user(&format!("{other}_runas"), "process_sync_run_as")
                .await?;
            tokens.insert((i, j), token);
        }
    }
    let specs = |sides: &[&mut S], i: usize, external: &dyn Fn(usize) -> String| {
        neighbours(i)
            .into_iter()
            .map(|j| RemoteSpec {
                name: names[j].clone(),
                endpoint: sides[j].endpoint(),
                fingerprint: sides[j].fingerprint().to_string(),
                external_id: external(j),
            })
            .collect::<Vec<_>>()
    };
    for i in 0..sides.len() {
        let text = definitions(&specs(sides, i, &|_| String::new()));
        sides[i].apply(&text).await?;
    }
    // sys_ids[(i, j)]: the sys_id of i's remote system record for j.
    let mut sys_ids = HashMap::new();
    for (i, side) in sides.iter_mut().enumerate() {
        for j in neighbours(i) {
            sys_ids.insert((i, j), side.remote_sys_id(&names[j]).await?);
        }
    }
    for i in 0..sides.len() {
        let text = definitions(&specs(sides, i, &|j| sys_ids[&(j, i)].clone()));
        sides[i].apply(&text).await?;
    }
    for (i, side) in sides.iter_mut().enumerate() {
        for j in neighbours(i) {
            side.set_token(&names[j], &tokens[&(j, i)]).await?;
        }
    }
    for (i, side) in sides.iter_mut().enumerate() {
        for j in neighbours(i) {
            side.validate(&names[j]).await?;
        }
    }
    Ok(())
}
