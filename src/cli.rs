//! The command line: parses arguments, reads files, talks to the running
//! daemon through the admin client and prints tables (or JSON with
//! `--json`). No business rules live here.

pub mod attachment;
pub mod stats;

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::ConfigError;
use crate::config::server::{LogFormat, ServerConfig};
use crate::config::sync::SyncConfig;
use crate::instance::{ADMIN_ADDR_FILE, ADMIN_TOKEN_FILE, CERT_FILE};
use crate::record::{JournalText, Operation, RecordWrite};
use crate::transport::client::{AdminClient, RecordData, Target};

/// Default data directory of a packaged install.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/procsync";

/// `procsync --version`: version, commit, build date, peer protocol.
pub fn version_line() -> &'static str {
    static LINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LINE.get_or_init(|| {
        format!(
            "{} (commit {}, built {}, peer protocol {})",
            env!("CARGO_PKG_VERSION"),
            env!("PROCSYNC_GIT_COMMIT"),
            env!("PROCSYNC_BUILD_DATE"),
            crate::transport::protocol::PROTOCOL_VERSION
        )
    })
}

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
        command: attachment::AttachmentCommand,
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

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Init { data, name } => init(&data, &name),
        Command::Serve(args) => serve(args).await,
        Command::Config {
            command: ConfigCommand::Validate { file, kind },
        } => validate(&file, kind),
        Command::Apply { file, connection } => {
            let text = read_file(&file)?;
            let shown = file.display().to_string();
            // The instance validates the file with what it keeps beside it
            // (another domain's objects the file may refer to) and answers
            // every problem with its line.
            let report = client(&connection)
                .await?
                .apply_config(&text, &shown)
                .await?;
            for (verb, names) in [
                ("created", &report.created),
                ("changed", &report.changed),
                ("removed", &report.removed),
            ] {
                for name in names {
                    println!("{verb} {name}");
                }
            }
            if report.created.is_empty() && report.changed.is_empty() && report.removed.is_empty() {
                println!("unchanged: the instance already matches {shown}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { connection } => {
            print!("{}", client(&connection).await?.export_config().await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Record {
            command,
            connection,
        } => record(command, &connection).await,
        Command::Attachment {
            command,
            connection,
        } => {
            attachment::run(command, &connection).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Journal {
            command:
                JournalCommand::Add {
                    table,
                    sys_id,
                    field,
                    text,
                },
            connection,
        } => {
            let results = client(&connection)
                .await?
                .write_records(vec![RecordWrite {
                    attachments: Default::default(),
                    operation: Operation::Update,
                    table: table.clone(),
                    sys_id: Some(sys_id),
                    fields: BTreeMap::new(),
                    journal: vec![JournalText {
                        field,
                        text,
                        origin: None,
                    }],
                }])
                .await?;
            let result = &results[0];
            println!("{}", result.sys_id);
            eprintln!(
                "added a journal entry to {table}/{}; {} outbound item(s) queued",
                result.sys_id, result.queued
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::User {
            command,
            connection,
        } => user(command, &connection).await,
        Command::Queue {
            command,
            connection,
        } => queue(command, &connection).await,
        Command::Remote {
            command,
            connection,
        } => remote(command, &connection).await,
        Command::Correlation {
            command: CorrelationCommand::List { remote, json },
            connection,
        } => {
            let correlations = client(&connection)
                .await?
                .list_correlations(&remote)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&correlations)?);
            } else {
                let rows = correlations
                    .iter()
                    .map(|c| {
                        vec![
                            c.remote_system.clone(),
                            format!("{}/{}", c.table, c.local_correlation_id),
                            c.remote_correlation_id.clone(),
                            c.state.clone(),
                            c.updated_on.clone(),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "REMOTE",
                        "LOCAL RECORD",
                        "REMOTE RECORD",
                        "STATE",
                        "UPDATED",
                    ],
                    rows,
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats { json, connection } => stats::run(json, &connection)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Property {
            command,
            connection,
        } => property(command, &connection).await,
        Command::Demo { keep } => crate::demo::run(keep).await.map(|()| ExitCode::SUCCESS),
        Command::Bench { command } => crate::bench::run(command).await.map(|()| ExitCode::SUCCESS),
    }
}

async fn property(command: PropertyCommand, connection: &Connection) -> Result<ExitCode> {
    let mut client = client(connection).await?;
    match command {
        PropertyCommand::List { json } => {
            let properties = client.list_properties().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&properties)?);
            } else {
                let rows = properties
                    .iter()
                    .map(|p| {
                        vec![
                            p.name.clone(),
                            p.value.clone(),
                            p.default_value.clone(),
                            p.description.clone(),
                        ]
                    })
                    .collect();
                print_table(&["NAME", "VALUE", "DEFAULT", "DESCRIPTION"], rows);
            }
        }
        PropertyCommand::Get { name } => {
            let property = client
                .list_properties()
                .await?
                .into_iter()
                .find(|p| p.name == name)
                .ok_or_else(|| {
                    anyhow!("unknown property `{name}`; `procsync property list` shows them")
                })?;
            println!("{}", property.value);
        }
        PropertyCommand::Set { name, value } => {
            let property = client.set_property(&name, &value).await?;
            println!("{} = {}", property.name, property.value);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn queue(command: QueueCommand, connection: &Connection) -> Result<ExitCode> {
    let mut client = client(connection).await?;
    let (queue, action) = match command {
        QueueCommand::Outbound { command } => ("outbound", command),
        QueueCommand::Inbound { command } => ("inbound", command),
        QueueCommand::Context { id } => {
            let context = client.flow_context(id).await?;
            println!("{}", serde_json::to_string_pretty(&context)?);
            return Ok(ExitCode::SUCCESS);
        }
    };
    match action {
        QueueAction::List {
            status,
            remote,
            limit,
            page,
            json,
        } => {
            let (items, next) = client
                .list_queue(queue, &status, &remote, limit, &page)
                .await?;
            if !next.is_empty() {
                eprintln!(
                    "more items follow: add --page {next} for the next {}",
                    if limit == 0 { 100 } else { limit }
                );
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
                return Ok(ExitCode::SUCCESS);
            }
            let text = |item: &serde_json::Value, key: &str| match &item[key] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            let (table_key, record_key) = if queue == "outbound" {
                ("table", "local_correlation_id")
            } else {
                ("source_table", "remote_correlation_id")
            };
            let rows = items
                .iter()
                .map(|i| {
                    vec![
                        text(i, "id"),
                        text(i, "sequence"),
                        text(i, "status"),
                        text(i, "remote_system"),
                        text(i, "process_event"),
                        text(i, "operation"),
                        format!("{}/{}", text(i, table_key), text(i, record_key)),
                        text(i, "domain"),
                        match i["waiting"].as_str() {
                            Some(reason) => format!("waiting: {reason}"),
                            None => text(i, "error"),
                        },
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID", "SEQ", "STATUS", "REMOTE", "EVENT", "OP", "RECORD", "DOMAIN", "ERROR",
                ],
                rows,
            );
        }
        QueueAction::Show { id } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&client.queue_item(queue, id).await?)?
            );
        }
        QueueAction::Retry { id } => {
            let item = client.set_queue_item_status(queue, id, "retry").await?;
            println!(
                "{queue} item {id} is {}",
                item["status"].as_str().unwrap_or("?")
            );
        }
        QueueAction::Skip { id } => {
            let item = client.set_queue_item_status(queue, id, "skip").await?;
            println!(
                "{queue} item {id} is {}",
                item["status"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn remote(command: RemoteCommand, connection: &Connection) -> Result<ExitCode> {
    let mut client = client(connection).await?;
    match command {
        RemoteCommand::List { json } => {
            let remotes = client.list_remote_systems().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&remotes)?);
            } else {
                let rows = remotes
                    .iter()
                    .map(|r| {
                        vec![
                            r.name.clone(),
                            r.sys_id.clone(),
                            r.endpoint.clone(),
                            r.outbound_state.clone(),
                            r.inbound_state.clone(),
                            r.health.clone(),
                            r.external_id.clone(),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "NAME",
                        "SYS_ID",
                        "ENDPOINT",
                        "OUTBOUND",
                        "INBOUND",
                        "HEALTH",
                        "EXTERNAL_ID",
                    ],
                    rows,
                );
            }
        }
        RemoteCommand::Show { name, json } => {
            let remote = client
                .list_remote_systems()
                .await?
                .into_iter()
                .find(|r| r.name == name)
                .ok_or_else(|| {
                    anyhow!("no remote system `{name}`; `procsync remote list` shows them")
                })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&remote)?);
            } else {
                let value = serde_json::to_value(&remote)?;
                for (key, value) in value.as_object().into_iter().flatten() {
                    let shown = value
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| value.to_string());
                    println!("{key:18} {shown}");
                }
            }
        }
        RemoteCommand::Validate { name } => {
            let (problems, remote) = client.validate_remote(&name).await?;
            if !problems.is_empty() {
                eprintln!(
                    "remote system `{name}` is not valid ({} problem(s)):",
                    problems.len()
                );
                for problem in &problems {
                    eprintln!("  - {problem}");
                }
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "remote system `{name}` is valid: outbound {}, inbound {}",
                remote.outbound_state, remote.inbound_state
            );
        }
        RemoteCommand::Disable { name } => {
            let remote = client.disable_remote(&name).await?;
            println!(
                "remote system `{name}`: outbound {}, inbound {}",
                remote.outbound_state, remote.inbound_state
            );
        }
        RemoteCommand::Token { name, secret } => {
            let token = match secret {
                Some(token) => token,
                None => {
                    let mut buf = String::new();
                    std::io::stdin().read_to_string(&mut buf)?;
                    buf
                }
            };
            client.set_remote_token(&name, &token).await?;
            println!(
                "stored the token sent to `{name}`; run `procsync remote validate {name}` next"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn init(data: &Path, name: &str) -> Result<ExitCode> {
    let made = crate::instance::init(data, name)?;
    println!(
        "Created instance `{}` in {}",
        made.info.name,
        data.display()
    );
    println!("  sys_id:      {}", made.info.sys_id);
    println!("  fingerprint: {}", made.info.fingerprint);
    println!("  certificate: {}", data.join(CERT_FILE).display());
    println!("  admin token: {} (mode 0600)", made.token_file.display());
    println!(
        "Peers pin the fingerprint in their remote_system definition. Start with: procsync serve --data {}",
        data.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => {
            let text = read_file(path)?;
            ServerConfig::parse(&path.display().to_string(), &text).map_err(|e| anyhow!("{e}"))?
        }
        None => ServerConfig::default(),
    };
    if let Some(listen) = args.admin_listen {
        config.admin.listen = listen;
    }
    if let Some(listen) = args.peer_listen {
        config.peer.listen = listen;
    }
    if let Some(format) = args.log_format {
        config.log.format = format;
    }
    let data = args
        .data
        .or_else(|| config.data_dir.clone())
        .ok_or_else(|| {
            anyhow!("no data directory: pass --data DIR or set data_dir in the server config")
        })?;
    init_tracing(&config);
    crate::server::run(data, config, crate::server::shutdown_signal(), |_| {}).await?;
    Ok(ExitCode::SUCCESS)
}

fn init_tracing(config: &ServerConfig) {
    crate::logging::init(&config.log.level, config.log.format == LogFormat::Json);
}

fn validate(file: &Path, kind: Option<FileKind>) -> Result<ExitCode> {
    let text = read_file(file)?;
    let shown = file.display().to_string();
    let kind = kind.unwrap_or_else(|| guess_kind(&text));
    let result: Result<String, ConfigError> = match kind {
        FileKind::Server => {
            ServerConfig::parse(&shown, &text).map(|_| "a valid server config".to_string())
        }
        FileKind::Sync => SyncConfig::parse(&shown, &text).map(|c| {
            format!(
                "valid process sync definitions ({} objects)",
                c.objects().len()
            )
        }),
    };
    match result {
        Ok(what) => {
            println!("{shown}: {what}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "{shown}: {} problem(s) found; nothing was applied",
                e.problems.len()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A file with any `[[kind]]` of the definitions is a definitions file.
fn guess_kind(text: &str) -> FileKind {
    let is_sync = text.lines().any(|line| {
        let line = line.trim();
        crate::config::sync::KINDS
            .iter()
            .any(|kind| line.starts_with(&format!("[[{kind}]]")))
    });
    if is_sync {
        FileKind::Sync
    } else {
        FileKind::Server
    }
}

fn read_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Finds the address, token and TLS certificate to use.
pub fn target(connection: &Connection) -> Result<Target> {
    let data = connection.data.clone().or_else(|| {
        Path::new(DEFAULT_DATA_DIR)
            .exists()
            .then(|| PathBuf::from(DEFAULT_DATA_DIR))
    });
    let address = match (&connection.addr, &data) {
        (Some(addr), _) => addr.clone(),
        (None, Some(dir)) if dir.join(ADMIN_ADDR_FILE).exists() => {
            read_file(&dir.join(ADMIN_ADDR_FILE))?.trim().to_string()
        }
        _ => crate::config::server::DEFAULT_ADMIN_LISTEN.to_string(),
    };
    let token = if let Some(token) = &connection.token {
        token.clone()
    } else if let Some(file) = &connection.token_file {
        read_file(file)?
    } else if let Some(dir) = &data {
        read_file(&dir.join(ADMIN_TOKEN_FILE))
            .context("no token given (--token, PROCSYNC_TOKEN or --token-file)")?
    } else {
        bail!(
            "no API token: pass --token, set PROCSYNC_TOKEN, or --data DIR to use DIR/admin.token"
        );
    };
    let tls_cert_pem = connection.tls_cert.as_deref().map(read_file).transpose()?;
    Ok(Target {
        address,
        token: token.trim().to_string(),
        tls_cert_pem,
    })
}

async fn client(connection: &Connection) -> Result<AdminClient> {
    Ok(AdminClient::connect(&target(connection)?).await?)
}

/// Parses `key=value` arguments and a `--json` object into fields.
fn parse_fields(pairs: &[String], json: Option<&str>) -> Result<BTreeMap<String, String>> {
    let mut fields = BTreeMap::new();
    if let Some(json) = json {
        let text = if json == "-" {
            let mut buf = String::new();
            std::io::stdin().read_to_string(&mut buf)?;
            buf
        } else {
            json.to_string()
        };
        fields.extend(json_fields(&text)?);
    }
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("`{pair}` is not key=value"))?;
        fields.insert(key.trim().to_string(), value.to_string());
    }
    Ok(fields)
}

/// A JSON object of scalar values as record fields.
pub fn json_fields(text: &str) -> Result<BTreeMap<String, String>> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        anyhow!(
            "malformed JSON at line {}, column {}: {e}; pass an object like {{\"state\": \"2\"}}",
            e.line(),
            e.column()
        )
    })?;
    let serde_json::Value::Object(object) = value else {
        bail!("the JSON must be an object of fields, like {{\"state\": \"2\"}}");
    };
    object
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => String::new(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => bail!("field `{key}` holds a list or object; record fields are text, numbers or booleans"),
            };
            Ok((key, text))
        })
        .collect()
}

async fn record(command: RecordCommand, connection: &Connection) -> Result<ExitCode> {
    let mut client = client(connection).await?;
    match command {
        RecordCommand::Create {
            table,
            fields,
            json,
        } => {
            let fields = parse_fields(&fields, json.as_deref())?;
            write_one(&mut client, Operation::Create, table, None, fields).await?;
        }
        RecordCommand::Update {
            table,
            sys_id,
            fields,
            json,
        } => {
            let fields = parse_fields(&fields, json.as_deref())?;
            write_one(&mut client, Operation::Update, table, Some(sys_id), fields).await?;
        }
        RecordCommand::Delete { table, sys_id } => {
            write_one(
                &mut client,
                Operation::Delete,
                table,
                Some(sys_id),
                BTreeMap::new(),
            )
            .await?;
        }
        RecordCommand::Get {
            table,
            sys_id,
            json,
        } => {
            let record = client.get_record(&table, &sys_id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&record)?);
            } else {
                print_record(&record);
            }
        }
        RecordCommand::List {
            table,
            query,
            limit,
            fields,
            json,
        } => {
            let records = client.list_records(&table, &query, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                let columns: Vec<String> = if fields.is_empty() {
                    let mut names: Vec<String> = records
                        .iter()
                        .flat_map(|r| r.fields.keys().cloned())
                        .filter(|k| !k.starts_with("sys_"))
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    names.insert(0, "sys_id".to_string());
                    names
                } else {
                    fields
                };
                let rows = records
                    .iter()
                    .map(|r| {
                        columns
                            .iter()
                            .map(|c| r.fields.get(c).cloned().unwrap_or_default())
                            .collect()
                    })
                    .collect();
                let headers: Vec<&str> = columns.iter().map(String::as_str).collect();
                print_table(&headers, rows);
            }
        }
        RecordCommand::Import { table, file, batch } => {
            let reader = std::io::BufReader::new(
                std::fs::File::open(&file)
                    .with_context(|| format!("cannot open {}", file.display()))?,
            );
            let mut pending = Vec::new();
            let mut total = 0usize;
            for (i, line) in reader.lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let fields =
                    json_fields(&line).with_context(|| format!("{}:{}", file.display(), i + 1))?;
                pending.push(RecordWrite {
                    attachments: Default::default(),
                    operation: Operation::Create,
                    table: table.clone(),
                    sys_id: None,
                    fields,
                    journal: Vec::new(),
                });
                if pending.len() >= batch.max(1) {
                    total += client
                        .write_records(std::mem::take(&mut pending))
                        .await?
                        .len();
                }
            }
            if !pending.is_empty() {
                total += client.write_records(pending).await?.len();
            }
            println!("imported {total} record(s) into {table}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes one record; prints its sys_id on stdout and what happened on
/// stderr, so scripts can capture the id.
async fn write_one(
    client: &mut AdminClient,
    operation: Operation,
    table: String,
    sys_id: Option<String>,
    fields: BTreeMap<String, String>,
) -> Result<()> {
    let results = client
        .write_records(vec![RecordWrite {
            attachments: Default::default(),
            operation,
            table: table.clone(),
            sys_id,
            fields,
            journal: Vec::new(),
        }])
        .await?;
    let result = &results[0];
    println!("{}", result.sys_id);
    let verb = match operation {
        Operation::Create => "created",
        Operation::Update => "updated",
        Operation::Delete => "deleted",
    };
    eprintln!(
        "{verb} {table}/{} (mod count {}); {} outbound item(s) queued",
        result.sys_id, result.mod_count, result.queued
    );
    Ok(())
}

fn print_record(record: &RecordData) {
    let width = record.fields.keys().map(String::len).max().unwrap_or(0);
    for (key, value) in &record.fields {
        println!("{key:width$}  {value}");
    }
    for entry in &record.journal {
        println!(
            "[{}] {} {} ({}): {}",
            entry.field, entry.time, entry.author, entry.id, entry.text
        );
    }
}

async fn user(command: UserCommand, connection: &Connection) -> Result<ExitCode> {
    let mut client = client(connection).await?;
    match command {
        UserCommand::Add {
            name,
            roles,
            domain,
        } => {
            let roles: Vec<String> = roles
                .split(',')
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .collect();
            let (user, token) = client.add_user(&name, &roles, &domain).await?;
            println!("{token}");
            eprintln!(
                "added user `{}` (roles: {}; domain: {}); the token above is shown once",
                user.name,
                user.roles.join(","),
                user.domain
            );
        }
        UserCommand::List { json } => {
            let users = client.list_users().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                let rows = users
                    .iter()
                    .map(|u| vec![u.name.clone(), u.roles.join(","), u.domain.clone()])
                    .collect();
                print_table(&["NAME", "ROLES", "DOMAIN"], rows);
            }
        }
        UserCommand::Token { name } => {
            let token = client.issue_token(&name).await?;
            println!("{token}");
            eprintln!("issued a new token for `{name}`; its previous tokens no longer work");
        }
        UserCommand::Roles { name, roles } => {
            let user = client.set_roles(&name, &roles).await?;
            println!("{} {}", user.name, user.roles.join(","));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints rows under headers, columns padded to their widest cell.
pub fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:width$}  ", width = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}
