//! What the benchmarks between two linked instances share: a directory
//! for one run's instances, removed when the run ends, and writing many
//! requests through the batch call.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::record::RecordWrite;
use crate::transport::client::AdminClient;

/// A new directory for one run's temporary instances, under `dir` (the
/// system temp dir by default).
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn new(dir: Option<&Path>, bench: &str) -> std::io::Result<RunDir> {
        let base = dir
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir)
            .join(format!(
                "procsync-bench-{bench}-{}-{}",
                std::process::id(),
                crate::ids::now_millis()
            ));
        std::fs::create_dir_all(&base)?;
        Ok(RunDir(base))
    }
}

/// Removed with everything in it when the run ends (its instances
/// stopped first: they are dropped inside the run).
impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates `total` `sc_req_item` records through `client`, `batch` per
/// call, each with the fields `fields(n)` gives; a bar on a terminal.
pub async fn write_requests(
    client: &mut AdminClient,
    total: u64,
    batch: u64,
    fields: impl Fn(u64) -> Vec<(String, String)>,
) -> Result<u64> {
    let bar = crate::progress::items(total, "writing");
    let mut written = 0;
    while written < total {
        let writes: Vec<RecordWrite> = (written..(written + batch).min(total))
            .map(|n| RecordWrite {
                operation: crate::record::Operation::Create,
                table: "sc_req_item".to_string(),
                sys_id: None,
                fields: fields(n).into_iter().collect(),
                journal: Vec::new(),
                attachments: Default::default(),
            })
            .collect();
        written += writes.len() as u64;
        client.write_records(writes).await?;
        bar.set_position(written);
    }
    Ok(written)
}
