//! The command line: parses arguments (`args`), reads files, talks to the
//! running daemon through the admin client and prints tables (or JSON with
//! `--json`), one file per family of commands. No business rules live here.

mod args;
pub mod attachment;
mod definitions;
mod enrol;
mod local;
mod properties;
mod queues;
mod records;
mod remotes;
pub mod stats;
mod users;

pub use args::*;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::instance::{ADMIN_ADDR_FILE, ADMIN_TOKEN_FILE};
use crate::transport::client::{AdminClient, Target};

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

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Store reads run on the blocking pool. Tokio's default of 512 threads
    // let a hub with a thousand peers start hundreds of them, each keeping
    // an allocator heap: 16 bound the memory, and reads take microseconds.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
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
        Command::Init { data, name } => local::init(&data, &name),
        Command::Serve(args) => local::serve(args).await,
        Command::Config {
            command: ConfigCommand::Validate { file, kind },
        } => local::validate(&file, kind),
        Command::Apply { file, connection } => definitions::apply(&file, &connection).await,
        Command::Export { connection } => {
            print!("{}", client(&connection).await?.export_config().await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Record {
            command,
            connection,
        } => records::run(command, &connection).await,
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
        } => records::add_journal(table, sys_id, field, text, &connection).await,
        Command::User {
            command,
            connection,
        } => users::run(command, &connection).await,
        Command::Queue {
            command,
            connection,
        } => queues::run(command, &connection).await,
        Command::Remote {
            command,
            connection,
        } => remotes::run(command, &connection).await,
        Command::Correlation {
            command: CorrelationCommand::List { remote, json },
            connection,
        } => queues::correlations(remote, json, &connection).await,
        Command::Stats { json, connection } => stats::run(json, &connection)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Property {
            command,
            connection,
        } => properties::run(command, &connection).await,
        Command::Demo { keep } => crate::demo::run(keep).await.map(|()| ExitCode::SUCCESS),
        Command::Bench { command } => crate::bench::run(command).await.map(|()| ExitCode::SUCCESS),
        Command::Completions { shell } => local::completions(shell),
        Command::Man { dir } => local::man_page(dir.as_deref()),
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
    if let (None, Some(dir)) = (&connection.addr, &connection.data) {
        if !dir.join(crate::instance::DB_FILE).exists() {
            bail!(
                "{} holds no procsync instance; create one with `procsync init --data {} --name NAME`, or pass the right --data",
                dir.display(),
                dir.display()
            );
        }
        if !dir.join(ADMIN_ADDR_FILE).exists() {
            bail!(
                "the instance in {} is not running (`procsync serve` writes {} while it runs); start it with `procsync serve --data {}`, or pass --addr",
                dir.display(),
                dir.join(ADMIN_ADDR_FILE).display(),
                dir.display()
            );
        }
    }
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
    if let (Some(pem), Some(path)) = (&tls_cert_pem, &connection.tls_cert) {
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            bail!(
                "{} holds no PEM certificate; pass the instance's instance.crt (from its data directory) with --tls-cert",
                path.display()
            );
        }
    }
    Ok(Target {
        address,
        token: token.trim().to_string(),
        tls_cert_pem,
    })
}

async fn client(connection: &Connection) -> Result<AdminClient> {
    Ok(AdminClient::connect(&target(connection)?).await?)
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
