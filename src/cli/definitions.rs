//! `procsync apply` of a definitions file.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use super::{Connection, client, read_file};

/// `procsync apply FILE`: the instance validates the file with what it
/// keeps beside it (another domain's objects the file may refer to) and
/// answers every problem with its line.
pub async fn apply(file: &Path, connection: &Connection) -> Result<ExitCode> {
    let text = read_file(file)?;
    let shown = file.display().to_string();
    let report = client(connection)
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
