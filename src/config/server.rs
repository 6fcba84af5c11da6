//! The server config file (`serve --config FILE`): where the instance keeps
//! its data, where it listens, its limits and its log format. One per
//! machine, owned by the operator; the process sync definitions live apart
//! (see `sync`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Problem, toml_problem};

/// Default admin API address: loopback only.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7480";

/// The whole server config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Directory holding the instance (`procsync.redb`, `admin.token`).
    /// `serve --data DIR` overrides it.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// The admin gRPC API used by local applications and the CLI.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The peer API other instances call, over mutual TLS.
    #[serde(default)]
    pub peer: PeerConfig,
    /// Size limits that protect the instance from oversized input.
    #[serde(default)]
    pub limits: Limits,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address the admin API listens on. A non-loopback address requires
    /// `tls = true`.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Serve the admin API over TLS with the instance's certificate.
    #[serde(default)]
    pub tls: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Address the peer API listens on (always mutual TLS with pinned
    /// certificates).
    #[serde(default = "default_peer_listen")]
    pub listen: SocketAddr,
    /// The endpoint peers reach this instance at (`https://HOST:PORT`),
    /// put in join codes and joins; by default `https://` and the listen
    /// address, when that is one address rather than every interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Most peers (distinct certificates) connected at once; a connection
    /// from one more is closed after its handshake.
    #[serde(default = "default_max_peers")]
    pub max_peers: usize,
}

fn default_max_peers() -> usize {
    10_000
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            listen: default_peer_listen(),
            advertise: None,
            max_peers: default_max_peers(),
        }
    }
}

impl PeerConfig {
    /// The endpoint peers reach this instance at, when it is known:
    /// `advertise`, else the listen address when it is a single one.
    pub fn endpoint(&self, listening: SocketAddr) -> Option<String> {
        self.advertise
            .clone()
            .or_else(|| (!listening.ip().is_unspecified()).then(|| format!("https://{listening}")))
    }
}

/// Default peer API address: every interface, since peers are remote.
pub const DEFAULT_PEER_LISTEN: &str = "0.0.0.0:7481";

fn default_peer_listen() -> SocketAddr {
    DEFAULT_PEER_LISTEN.parse().expect("valid default address")
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest record accepted, in bytes (field names and values together).
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Most records in one batch write call.
    #[serde(default = "default_max_batch_records")]
    pub max_batch_records: usize,
    /// Most records one list call returns.
    #[serde(default = "default_max_list_records")]
    pub max_list_records: usize,
    /// Largest gRPC message accepted by the admin API, in bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log shippers.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter such as `info` or `info,procsync::store=debug`.
    /// The `RUST_LOG` environment variable overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn default_admin_listen() -> SocketAddr {
    DEFAULT_ADMIN_LISTEN.parse().expect("valid default address")
}
fn default_max_record_bytes() -> usize {
    256 * 1024
}
fn default_max_batch_records() -> usize {
    10_000
}
fn default_max_list_records() -> usize {
    10_000
}
fn default_max_message_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_log_level() -> String {
    "info".to_string()
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            tls: false,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record_bytes: default_max_record_bytes(),
            max_batch_records: default_max_batch_records(),
            max_list_records: default_max_list_records(),
            max_message_bytes: default_max_message_bytes(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: default_log_level(),
        }
    }
}

impl ServerConfig {
    /// Parses and checks a server config file's text.
    pub fn parse(file: &str, text: &str) -> Result<ServerConfig, ConfigError> {
        let config: ServerConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_string(),
            problems: vec![toml_problem(text, &e)],
        })?;
        let lines = super::SourceLines::scan(text);
        let mut problems = Vec::new();
        if let Err(message) = config.check() {
            problems.push(Problem {
                line: lines.line("admin", 0, "listen"),
                message,
            });
        }
        for (name, value) in [
            ("limits.max_record_bytes", config.limits.max_record_bytes),
            ("limits.max_batch_records", config.limits.max_batch_records),
            ("limits.max_list_records", config.limits.max_list_records),
            ("limits.max_message_bytes", config.limits.max_message_bytes),
        ] {
            if value == 0 {
                problems.push(Problem {
                    line: None,
                    message: format!("{name} must be greater than 0"),
                });
            }
        }
        // Attachment chunks travel as messages of just under 1 MiB.
        let smallest = 2 * crate::attachment::CHUNK_BYTES;
        if config.limits.max_message_bytes > 0 && config.limits.max_message_bytes < smallest {
            problems.push(Problem {
                line: lines.line("limits", 0, "max_message_bytes"),
                message: format!(
                    "limits.max_message_bytes is {}, below {smallest}: attachment chunks (1,048,512 bytes each) would not fit; raise it to at least 2 MiB",
                    config.limits.max_message_bytes
                ),
            });
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&config.log.level) {
            problems.push(Problem {
                line: None,
                message: format!(
                    "log.level `{}` is not a valid filter: {e}",
                    config.log.level
                ),
            });
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                file: file.to_string(),
                problems,
            })
        }
    }

    /// Rules that hold whichever way the config was made (file or flags).
    pub fn check(&self) -> Result<(), String> {
        if !self.admin.listen.ip().is_loopback() && !self.admin.tls {
            return Err(format!(
                "admin.listen = {} is not a loopback address: the admin API carries tokens, so set `admin.tls = true` to serve it beyond this machine, or listen on 127.0.0.1",
                self.admin.listen
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_config_parses() {
        let text = include_str!("../../packaging/procsync.toml");
        let config = ServerConfig::parse("packaging/procsync.toml", text).unwrap();
        assert_eq!(config.admin.listen.to_string(), DEFAULT_ADMIN_LISTEN);
    }

    #[test]
    fn non_loopback_admin_needs_tls() {
        let err =
            ServerConfig::parse("s.toml", "[admin]\nlisten = \"0.0.0.0:7480\"\n").unwrap_err();
        assert!(err.to_string().contains("admin.tls = true"), "{err}");
        assert!(err.to_string().starts_with("s.toml:2:"), "{err}");
        ServerConfig::parse("s.toml", "[admin]\nlisten = \"0.0.0.0:7480\"\ntls = true\n").unwrap();
    }

    #[test]
    fn messages_too_small_for_attachment_chunks_are_refused() {
        let text = "[limits]\nmax_message_bytes = 1000000\n";
        let err = ServerConfig::parse("s.toml", text).unwrap_err();
        assert!(err.to_string().contains("attachment chunks"), "{err}");
        assert!(err.to_string().starts_with("s.toml:2:"), "{err}");
        ServerConfig::parse("s.toml", "[limits]\nmax_message_bytes = 4194304\n").unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_toml_name_the_line() {
        let err = ServerConfig::parse("s.toml", "[admin]\nlisten = \"127.0.0.1:1\"\nport = 3\n")
            .unwrap_err();
        assert!(err.to_string().starts_with("s.toml:3:"), "{err}");
        assert!(err.to_string().contains("port"), "{err}");
        let err = ServerConfig::parse("s.toml", "[admin\n").unwrap_err();
        assert!(err.to_string().starts_with("s.toml:1:"), "{err}");
    }
}
