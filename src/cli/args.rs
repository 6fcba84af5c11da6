//! The command line's argument types (clap): the commands, their
//! arguments and how to reach the running instance.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::server::LogFormat;

use super::attachment::AttachmentCommand;
use super::version_line;

#[derive(Parser, Debug)]
#[command(
    name = "procsync",
    version = version_line(),
    about = "Remote Process Sync as one self-contained binary"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the running instance.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// The instance's data directory: the admin address and token are read
    /// from it unless given otherwise.
    #[arg(long, env = "PROCSYNC_DATA", global = true)]
    pub data: Option<PathBuf>,
    /// Admin API address, HOST:PORT.
    #[arg(long, env = "PROCSYNC_ADDR", global = true)]
    pub addr: Option<String>,
    /// API token.
    #[arg(long, env = "PROCSYNC_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the API token.
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// The instance certificate (PEM) when the admin API uses TLS.
    #[arg(long, global = true)]
    pub tls_cert: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new instance in a data directory.
    Init {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// Run the instance.
    Serve(ServeArgs),
    /// Check configuration files offline.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Apply a process sync definitions file (idempotent by name).
    Apply {
        file: PathBuf,
        #[command(flatten)]
        connection: Connection,
    },
    /// Print the instance's process sync definitions as TOML.
    Export {
        #[command(flatten)]
        connection: Connection,
    },
    /// Create, change and read records.
    Record {
        #[command(subcommand)]
        command: RecordCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Attach files to records, list, save and remove them.
    Attachment {
        #[command(subcommand)]
        command: AttachmentCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Append to journal fields (comments, work notes).
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Manage users, roles and tokens.
    User {
        #[command(subcommand)]
        command: UserCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Remote systems (peer instances).
    Remote {
        #[command(subcommand)]
        command: RemoteCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Links between local records and their peers' records.
    Correlation {
        #[command(subcommand)]
        command: CorrelationCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Queue figures: counts by status, throughput, errors, remote health.
    Stats {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Runtime settings (retries, heartbeats).
    Property {
        #[command(subcommand)]
        command: PropertyCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Inspect the queues.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Run two linked instances on this machine through a sample process
    /// (an edge office requests software, the hub fulfils it), narrated.
    Demo {
        /// Keep the instances' data directories afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Measure the instance.
    Bench {
        #[command(subcommand)]
        command: crate::bench::BenchCommand,
    },
    /// Print shell completions to standard output (for example
    /// `procsync completions bash > /etc/bash_completion.d/procsync`).
    Completions {
        /// The shell: bash, zsh, fish (also elvish, powershell).
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to standard output (`procsync man |
    /// man -l -`), or write a page per command into a directory.
    Man {
        /// Write procsync.1 and a page per command (procsync-remote.1,
        /// procsync-remote-validate.1, …) into this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The data directory (overrides `data_dir` of the config file).
    #[arg(long, env = "PROCSYNC_DATA")]
    pub data: Option<PathBuf>,
    /// The server config file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Admin API address (overrides `admin.listen`).
    #[arg(long)]
    pub admin_listen: Option<std::net::SocketAddr>,
    /// Peer API address (overrides `peer.listen`).
    #[arg(long)]
    pub peer_listen: Option<std::net::SocketAddr>,
    /// Log format (overrides `log.format`).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a server config or process sync definitions file.
    Validate {
        file: PathBuf,
        /// Which kind of file; guessed from its contents when absent.
        #[arg(long, value_enum)]
        kind: Option<FileKind>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FileKind {
    Server,
    Sync,
}

#[derive(Subcommand, Debug)]
pub enum RecordCommand {
    /// Create a record; prints its sys_id.
    Create {
        table: String,
        /// Fields as key=value.
        fields: Vec<String>,
        /// Fields as a JSON object (`-` reads stdin).
        #[arg(long)]
        json: Option<String>,
    },
    /// Update fields of a record (an empty value clears a field).
    Update {
        table: String,
        sys_id: String,
        fields: Vec<String>,
        #[arg(long)]
        json: Option<String>,
    },
    Delete {
        table: String,
        sys_id: String,
    },
    Get {
        table: String,
        sys_id: String,
        #[arg(long)]
        json: bool,
    },
    List {
        table: String,
        /// Encoded query, e.g. `state=2^priority<=2`.
        #[arg(long, short, default_value = "")]
        query: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Columns to show (default: sys_id and every field).
        #[arg(long, value_delimiter = ',')]
        fields: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Bulk-load records from a file of JSON objects, one per line, through
    /// the batch write call.
    Import {
        table: String,
        file: PathBuf,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
}

#[derive(Subcommand, Debug)]
pub enum JournalCommand {
    /// Append an entry to a journal field.
    Add {
        table: String,
        sys_id: String,
        field: String,
        text: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user and print its first token.
    Add {
        name: String,
        /// Comma-separated roles.
        #[arg(long, default_value = "")]
        roles: String,
        /// Domain path (default: yours).
        #[arg(long, default_value = "")]
        domain: String,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Issue a new token for a user, replacing the old ones.
    Token { name: String },
    /// Set a user's roles.
    Roles { name: String, roles: Vec<String> },
}

#[derive(Subcommand, Debug)]
pub enum RemoteCommand {
    /// List remote systems with their sys_id (the peer's external_id),
    /// states and connection health (Up / Slow / Down).
    List {
        /// Only the members of this remote group.
        #[arg(long, default_value = "")]
        group: String,
        #[arg(long)]
        json: bool,
    },
    /// Invite an edge into a remote group: prints a one-time join code
    /// (one line) to run `procsync remote join CODE` with on the edge.
    Invite {
        /// The `[[remote_group]]` the edge joins.
        #[arg(long)]
        group: String,
        /// The edge's name here (default: its instance name).
        #[arg(long, default_value = "")]
        name: String,
        /// How long the code stays usable: 30s, 15m, 24h, 7d (at most 30d).
        #[arg(long, default_value = "24h", value_parser = parse_duration_secs)]
        expires: u64,
        /// Where the edge reaches this instance's peer API (default: the
        /// server's `[peer] advertise`, or its listen address).
        #[arg(long, default_value = "")]
        endpoint: String,
        #[arg(long)]
        json: bool,
    },
    /// Join the hub a join code names: both sides set themselves up
    /// (remote systems, users, tokens, the group's flows) and validate.
    Join {
        code: String,
        /// This instance's name for the hub (default: the hub's instance
        /// name).
        #[arg(long, default_value = "")]
        name: String,
        /// Where the hub reaches this instance's peer API (default: the
        /// server's `[peer] advertise`, or its listen address).
        #[arg(long, default_value = "")]
        endpoint: String,
        #[arg(long)]
        json: bool,
    },
    /// Unlink a remote system made by a join, here and at the peer.
    Remove {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// One remote system, with its last error and retry state.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Connect and check both sides; on success outbound and inbound
    /// states become Active.
    Validate { name: String },
    /// Set outbound and inbound state to Disabled.
    Disable { name: String },
    /// Queue the records that exist now and match the capture definitions
    /// of the remote's outbound flows, as create items in its normal
    /// sequence (in batches of `load.batch`; it survives restarts). Shows
    /// progress until it ends; Ctrl-C stops watching, not the load.
    Load {
        name: String,
        /// Only this process event's captures.
        #[arg(long, default_value = "")]
        event: String,
        /// Only records matching this encoded query.
        #[arg(long, default_value = "")]
        query: String,
        /// Cancel the running load (what it queued stays queued).
        #[arg(long)]
        cancel: bool,
        /// Start it and return at once.
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Compare the records this instance and the remote have correlated
    /// (through digests over key ranges: the work grows with the
    /// differences, not the records) and report, per table, the records
    /// missing on either side and those whose synced fields differ. With
    /// --repair, send what makes them equal, settled by the conflict
    /// rules. Waits until it ends; `remote show` keeps the last result.
    Reconcile {
        name: String,
        /// Only this table of ours.
        #[arg(long, default_value = "")]
        table: String,
        /// Also send what makes the differences equal.
        #[arg(long)]
        repair: bool,
        /// Ask for it and return at once.
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Store the token this instance presents to the peer (the token of
    /// the peer's inbound API user); read from stdin when not given.
    Token {
        name: String,
        #[arg(value_name = "TOKEN")]
        secret: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    Outbound {
        #[command(subcommand)]
        command: QueueAction,
    },
    Inbound {
        #[command(subcommand)]
        command: QueueAction,
    },
    /// What one processing of an item did (an id from the item's
    /// `flow_contexts`; `show` includes the latest).
    Context { id: u64 },
}

#[derive(Subcommand, Debug)]
pub enum QueueAction {
    List {
        #[arg(long, default_value = "")]
        status: String,
        #[arg(long, default_value = "")]
        remote: String,
        /// Items to list (fetched in pages; oldest first).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Start after this page token (a previous list printed it).
        #[arg(long, default_value = "")]
        page: String,
        #[arg(long)]
        json: bool,
    },
    /// One item, whole, as JSON.
    Show { id: u64 },
    /// Put an Error item back to Ready.
    Retry { id: u64 },
    /// Mark an Error or Ready item Skipped.
    Skip { id: u64 },
    /// Settle an inbound item its flow's `error` rule holds in conflict:
    /// take the peer's values or keep ours; the settled values are sent on
    /// to the peer.
    Resolve {
        id: u64,
        #[arg(long, value_parser = ["peer", "local"])]
        take: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum CorrelationCommand {
    List {
        #[arg(long, default_value = "")]
        remote: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum PropertyCommand {
    List {
        #[arg(long)]
        json: bool,
    },
    Get {
        name: String,
    },
    Set {
        name: String,
        value: String,
    },
}

/// A duration like `30s`, `15m`, `24h` or `7d`, in seconds.
fn parse_duration_secs(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; say 30s, 15m, 24h or 7d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "`{text}` is not a duration; say 30s, 15m, 24h or 7d"
            ));
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}
