//! A `procsync serve` child process of this very binary on a local
//! instance, for the demo and the benchmark: started, waited for until its
//! admin API listens, and stopped with SIGTERM when dropped.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::instance::{ADMIN_ADDR_FILE, ADMIN_TOKEN_FILE};
use crate::transport::client::Target;

/// A running `serve` child; SIGTERM and wait on drop.
pub struct ServeChild {
    child: Child,
    pub dir: PathBuf,
    /// How to reach its admin API as `admin`.
    pub target: Target,
}

impl ServeChild {
    /// Starts `serve` on the instance in `dir`, its admin API on a free
    /// loopback port and its peer API on `peer_port`, logging to
    /// `dir/serve.log`.
    pub async fn start(dir: &Path, peer_port: u16) -> Result<ServeChild> {
        ServeChild::start_with(dir, peer_port, None).await
    }

    /// `start`, reading the server config file `config` when given.
    pub async fn start_with(
        dir: &Path,
        peer_port: u16,
        config: Option<&Path>,
    ) -> Result<ServeChild> {
        let addr_file = dir.join(ADMIN_ADDR_FILE);
        let log = std::fs::File::create(dir.join("serve.log"))?;
        let mut command =
            crate::link::serve_command(&std::env::current_exe()?, dir, peer_port, log);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let child = command
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_string()),
            )
            .spawn()
            .context("cannot start procsync serve")?;
        let mut started = ServeChild {
            child,
            dir: dir.to_path_buf(),
            target: Target {
                address: String::new(),
                token: String::new(),
                tls_cert_pem: None,
            },
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !crate::link::is_listening(dir) {
            if Instant::now() > deadline || started.child.try_wait()?.is_some() {
                bail!(
                    "procsync serve did not start; see {}",
                    dir.join("serve.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.target.address = std::fs::read_to_string(&addr_file)?.trim().to_string();
        started.target.token = std::fs::read_to_string(dir.join(ADMIN_TOKEN_FILE))?
            .trim()
            .to_string();
        Ok(started)
    }
}

impl ServeChild {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServeChild {
    #[allow(
        unsafe_code,
        reason = "sending SIGTERM to our own child needs libc::kill"
    )]
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: plain libc call with the pid of a child we own.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let _ = self.child.wait();
    }
}
