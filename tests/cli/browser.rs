//! A headless Chromium driven over the W3C WebDriver protocol through
//! `chromedriver` (Debian packages `chromium` and `chromium-driver`;
//! `.ci/run` installs them). Just what the dashboard test needs: open a
//! page, find elements, type, click, read text.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{free_port, http, wait_until};

/// The key W3C WebDriver uses for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    _profile: tempfile::TempDir,
    address: String,
    session: String,
}

fn find_program(candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| p.to_string())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub fn start() -> Browser {
        let driver_path = find_program(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])
            .expect("chromedriver is missing: install the Debian packages chromium and chromium-driver (.ci/run does)");
        let chromium = find_program(&["/usr/bin/chromium", "/usr/lib/chromium/chromium"])
            .expect("chromium is missing: install the Debian package chromium (.ci/run does)");
        let port = free_port();
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let address = format!("127.0.0.1:{port}");
        wait_until("chromedriver to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(&address).is_ok()
        });
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let answer = http(
            &address,
            "POST",
            "/session",
            &[],
            Some(&capabilities.to_string()),
        );
        let value = answer.json();
        let session = value["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {value}"))
            .to_string();
        Browser {
            driver,
            _profile: profile,
            address,
            session,
        }
    }

    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_command(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A WebDriver command; `Err` carries the driver's error.
    fn try_command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Value> {
        let path = format!("/session/{}{path}", self.session);
        let body = body.map(|b| b.to_string());
        let answer = http(&self.address, method, &path, &[], body.as_deref());
        let value = answer.json();
        if answer.status == 200 {
            Ok(value["value"].clone())
        } else {
            Err(value["value"].clone())
        }
    }

    pub fn open(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })));
    }

    /// The first element matching `css`, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        let found = self.command(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        );
        found.as_array()?.first()?[ELEMENT]
            .as_str()
            .map(str::to_string)
    }

    /// Waits for an element matching `css` and returns it.
    pub fn wait_for(&self, css: &str) -> String {
        let mut found = None;
        wait_until(
            &format!("`{css}` on the page"),
            Duration::from_secs(20),
            || {
                found = self.find(css);
                found.is_some()
            },
        );
        found.unwrap()
    }

    /// The text of the element matching `css`, waiting for it to exist.
    /// Read in one script run: the page re-renders its tables every few
    /// seconds, so an element found in one call may be gone in the next.
    pub fn text_of(&self, css: &str) -> String {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.innerText : null;",
            Value::from(css)
        );
        let mut text = None;
        wait_until(
            &format!("`{css}` on the page"),
            Duration::from_secs(20),
            || {
                text = self.script(&script).as_str().map(str::to_string);
                text.is_some()
            },
        );
        text.unwrap()
    }

    /// Clicks the element matching `css`, finding it again if the page
    /// re-rendered it between finding and clicking.
    pub fn click_on(&self, css: &str) {
        let mut clicked = false;
        wait_until(
            &format!("a click on `{css}`"),
            Duration::from_secs(20),
            || {
                let Some(element) = self.find(css) else {
                    return false;
                };
                match self.try_command(
                    "POST",
                    &format!("/element/{element}/click"),
                    Some(json!({})),
                ) {
                    Ok(_) => clicked = true,
                    Err(e) if e["error"] == "stale element reference" => {}
                    Err(e) => panic!("clicking `{css}`: {e}"),
                }
                clicked
            },
        );
    }

    pub fn type_into(&self, element: &str, text: &str) {
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Sets the window's outer size in pixels.
    pub fn set_window_size(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// Saves what the window shows, from the top of the page, as a PNG at
    /// `path`.
    pub fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        self.script("window.scrollTo(0, 0); return true;");
        let encoded = self.command("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("a screenshot is base64 text"))
            .expect("a screenshot decodes");
        assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        eprintln!("screenshot: {}", path.display());
    }

    /// Runs a script in the page and returns its value.
    pub fn script(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = std::panic::catch_unwind(|| http(&self.address, "DELETE", &path, &[], None));
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where a test's screenshots go: `screenshots/TEST` under the directory
/// Cargo gives integration tests for their output (`target/tmp`), emptied
/// first.
pub fn screenshot_dir(test: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("screenshots")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("making {}: {e}", dir.display()));
    dir
}
