//! Progress bars for long commands (indicatif), on standard error: shown
//! only when it is a terminal, so a pipe, a log or `--json` output gets
//! nothing but the command's own lines. A bar clears itself when dropped,
//! so an error printed after it starts on a clean line.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar, cleared when dropped.
pub struct Bar(ProgressBar);

impl std::ops::Deref for Bar {
    type Target = ProgressBar;
    fn deref(&self) -> &ProgressBar {
        &self.0
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// A bar over `total` bytes, with rate and time left; hidden unless
/// standard error is a terminal.
pub fn bytes(total: u64, message: &str) -> Bar {
    bar(
        total,
        message,
        "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}, {eta} left",
    )
}

/// A bar over `total` items (records, queue items), with rate and time
/// left; hidden unless standard error is a terminal.
pub fn items(total: u64, message: &str) -> Bar {
    bar(
        total,
        message,
        "{msg:>10} [{bar:30}] {human_pos}/{human_len} {per_sec}, {eta} left",
    )
}

fn bar(total: u64, message: &str, template: &str) -> Bar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    Bar(bar)
}

/// A bar that never shows (until replaced).
pub fn hidden() -> Bar {
    Bar(ProgressBar::hidden())
}
