//! Error handling steps: what runs when a remote system's outbound state
//! becomes Error (its `error_subflow`) or an inbound item goes to Error (its
//! inbound flow's `on_error`): write a log event, POST a JSON body to a
//! webhook, or run a command with the details in its environment. Steps
//! never block sync for long: each has a deadline, and a failing step is
//! logged, not retried.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one step may take.
const STEP_DEADLINE: Duration = Duration::from_secs(30);

/// One error handling step, as written in the definitions file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
pub enum Step {
    /// An ERROR log event with the details.
    Log,
    /// POST the details as JSON to an `http://` URL.
    Webhook { url: String },
    /// Run a program (not through a shell) with the details in
    /// `PROCSYNC_*` environment variables.
    Command {
        command: String,
        #[serde(default)]
        args: Vec<String>,
    },
}

/// A step as the log names it: `log`, `webhook http://…`, `command /path`.
impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Log => write!(f, "log"),
            Step::Webhook { url } => write!(f, "webhook {url}"),
            Step::Command { command, .. } => write!(f, "command {command}"),
        }
    }
}

/// What went wrong, as the steps report it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorEvent {
    /// `remote_system_error` or `inbound_item_error`.
    pub kind: String,
    pub instance: String,
    pub remote_system: String,
    pub error: String,
    pub attempts: u32,
    /// The inbound item, for item errors.
    pub item_id: Option<u64>,
    pub time: String,
}

impl Step {
    /// Checks a step offline; the message says what to fix.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Step::Log => Ok(()),
            Step::Webhook { url } => parse_http_url(url).map(|_| ()),
            Step::Command { command, .. } => {
                if command.trim().is_empty() {
                    Err("a command step needs `command`, the program to run".to_string())
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// (host:port, path) of an `http://` URL.
fn parse_http_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("webhook url `{url}` must start with http:// (point it at a local relay for https endpoints)")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("webhook url `{url}` has no host"));
    }
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

/// Runs a remote system's error subflow for `kind` (`remote_system_error`,
/// `alert`, `alert_cleared`): its steps, or a log event when it has none.
pub async fn run_for_remote(
    steps: &[Step],
    kind: &str,
    instance: &str,
    remote: &str,
    error: &str,
    attempts: u32,
) {
    let event = ErrorEvent {
        kind: kind.to_string(),
        instance: instance.to_string(),
        remote_system: remote.to_string(),
        error: error.to_string(),
        attempts,
        item_id: None,
        time: crate::ids::format_time(crate::ids::now_millis()),
    };
    if steps.is_empty() {
        run(&[Step::Log], &event).await;
    } else {
        run(steps, &event).await;
    }
}

/// Runs every step in order.
pub async fn run(steps: &[Step], event: &ErrorEvent) {
    for step in steps {
        let outcome = tokio::time::timeout(STEP_DEADLINE, run_step(step, event)).await;
        let result = outcome.unwrap_or_else(|_| {
            Err(format!(
                "did not finish within {} s",
                STEP_DEADLINE.as_secs()
            ))
        });
        if let Err(problem) = result {
            tracing::error!(target: "subflow", step = %step, remote_system = %event.remote_system, problem = %problem, "An error handling step failed.");
        }
    }
}

async fn run_step(step: &Step, event: &ErrorEvent) -> Result<(), String> {
    match step {
        Step::Log => {
            tracing::error!(
                target: "subflow",
                kind = %event.kind,
                remote_system = %event.remote_system,
                attempts = event.attempts,
                item = event.item_id.map_or_else(String::new, |id| id.to_string()),
                error = %event.error,
                "Error subflow: {} needs attention.",
                event.remote_system
            );
            Ok(())
        }
        Step::Webhook { url } => post_json(url, event).await,
        Step::Command { command, args } => {
            let status = tokio::process::Command::new(command)
                .args(args)
                .env("PROCSYNC_EVENT", &event.kind)
                .env("PROCSYNC_INSTANCE", &event.instance)
                .env("PROCSYNC_REMOTE_SYSTEM", &event.remote_system)
                .env("PROCSYNC_ERROR", &event.error)
                .env("PROCSYNC_ATTEMPTS", event.attempts.to_string())
                .env(
                    "PROCSYNC_ITEM",
                    event.item_id.map(|i| i.to_string()).unwrap_or_default(),
                )
                .env("PROCSYNC_TIME", &event.time)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map_err(|e| format!("cannot run `{command}`: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("`{command}` exited with {status}"))
            }
        }
    }
}

async fn post_json(url: &str, event: &ErrorEvent) -> Result<(), String> {
    let (authority, path) = parse_http_url(url)?;
    let body = serde_json::to_string(event).expect("events serialize");
    let mut stream = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let host = authority.trim_end_matches(":80");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: procsync/{}\r\nConnection: close\r\n\r\n{body}",
        body.len(),
        env!("CARGO_PKG_VERSION")
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send to {url}: {e}"))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    // The status line is all we need.
    while !answer.windows(2).any(|w| w == b"\r\n") && answer.len() < 8192 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("no answer from {url}: {e}"))?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let status_line = String::from_utf8_lossy(&answer);
    let code = status_line.split_whitespace().nth(1).unwrap_or("");
    if code.starts_with('2') {
        Ok(())
    } else {
        Err(format!(
            "{url} answered `{}`",
            status_line.lines().next().unwrap_or("nothing")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert_eq!(
            parse_http_url("http://alerts.local:9000/hook").unwrap(),
            ("alerts.local:9000".to_string(), "/hook".to_string())
        );
        assert_eq!(parse_http_url("http://alerts").unwrap().0, "alerts:80");
        assert!(parse_http_url("https://x").unwrap_err().contains("http://"));
    }

    #[test]
    fn steps_parse_from_toml() {
        #[derive(Deserialize)]
        struct Holder {
            steps: Vec<Step>,
        }
        let parsed: Holder = toml::from_str(
            "steps = [{ action = \"log\" }, { action = \"webhook\", url = \"http://h:1/x\" }, { action = \"command\", command = \"/bin/true\", args = [\"-x\"] }]",
        )
        .unwrap();
        assert_eq!(parsed.steps.len(), 3);
        assert!(toml::from_str::<Holder>("steps = [{ action = \"email\" }]").is_err());
    }
}
