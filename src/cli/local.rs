//! The commands that work on this machine without a running instance:
//! `init`, `serve`, `config validate`, and the shell completions and
//! manual page generated from the argument definitions.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, anyhow};

use super::{FileKind, ServeArgs, read_file};
use crate::config::ConfigError;
use crate::config::server::{LogFormat, ServerConfig};
use crate::config::sync::SyncConfig;
use crate::instance::CERT_FILE;

pub fn init(data: &Path, name: &str) -> Result<ExitCode> {
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

pub async fn serve(args: ServeArgs) -> Result<ExitCode> {
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

pub fn init_tracing(config: &ServerConfig) {
    crate::logging::init(&config.log.level, config.log.format == LogFormat::Json);
}

pub fn validate(file: &Path, kind: Option<FileKind>) -> Result<ExitCode> {
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
pub fn guess_kind(text: &str) -> FileKind {
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

/// `procsync completions SHELL`: the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    use clap::CommandFactory;
    let mut command = super::Cli::command();
    // Into memory first: the library panics on a failed write.
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "procsync", &mut out);
    print_generated(&out, "the completions")
}

/// Prints generated text; a reader that went away is a clear error.
fn print_generated(text: &[u8], what: &str) -> Result<ExitCode> {
    std::io::Write::write_all(&mut std::io::stdout(), text)
        .map_err(|e| anyhow!("cannot print {what}: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// `procsync man`: the manual page, in roff; with `dir`, a page per
/// command written there.
pub fn man_page(dir: Option<&Path>) -> Result<ExitCode> {
    use clap::CommandFactory;
    let command = super::Cli::command();
    if let Some(dir) = dir {
        clap_mangen::generate_to(command, dir)
            .map_err(|e| anyhow!("cannot write the manual pages into {}: {e}", dir.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    // As `generate_to` does: `help` is no command with a page of its own.
    let mut command = command.disable_help_subcommand(true);
    command.build();
    let mut out = Vec::new();
    clap_mangen::Man::new(command).render(&mut out)?;
    print_generated(&out, "the manual page")
}
