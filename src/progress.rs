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

/// A bar over a phase that runs for `length`, moved by the clock (a task
/// that ends when the bar is dropped).
pub fn timed(length: Duration, message: &str) -> Bar {
    let shown = bar(
        length.as_secs().max(1),
        message,
        "{msg:>10} [{bar:30}] {pos}/{len} s",
    );
    let clock = shown.0.clone();
    let started = std::time::Instant::now();
    tokio::spawn(async move {
        while !clock.is_finished() {
            clock.set_position(started.elapsed().as_secs());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    shown
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

/// A spinner with the time spent, for work of unknown length; hidden
/// unless standard error is a terminal.
pub fn spinner(message: &str) -> Bar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        bar.set_style(style);
    }
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    Bar(bar)
}

/// A bar that never shows (until replaced).
pub fn hidden() -> Bar {
    Bar(ProgressBar::hidden())
}

/// The bar of an upload (`attachment add`, the attachment benchmark):
/// hashing, then uploading.
pub struct UploadBar(std::sync::Mutex<Bar>);

impl Default for UploadBar {
    fn default() -> UploadBar {
        UploadBar(std::sync::Mutex::new(hidden()))
    }
}

impl crate::transport::upload::UploadWatch for UploadBar {
    fn hashing(&self, size: u64) {
        *self.bar() = bytes(size, "hashing");
    }

    fn advanced(&self, bytes: u64) {
        self.bar().inc(bytes);
    }

    fn sending(&self, from: u64, size: u64) {
        let mut bar = self.bar();
        *bar = hidden();
        if from > 0 {
            eprintln!("resuming the upload at byte {from} of {size}");
        }
        *bar = bytes(size, "uploading");
        bar.set_position(from);
    }
}

impl UploadBar {
    fn bar(&self) -> std::sync::MutexGuard<'_, Bar> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Clears the bar: the upload ended (or failed).
    pub fn done(&self) {
        *self.bar() = hidden();
    }
}
