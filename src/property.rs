//! Runtime properties (`procsync property list|get|set`): names, defaults,
//! ranges and parsing. Values live in the store; this module only knows
//! what they mean.

use std::time::Duration;

/// A property this version knows.
pub struct PropertyDef {
    pub name: &'static str,
    pub default: &'static str,
    pub description: &'static str,
    /// Inclusive range of the integer value (unused for flags).
    pub range: (u64, u64),
    pub kind: Kind,
}

/// What values a property takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A whole number within `range`.
    Number,
    /// `true` or `false`.
    Flag,
}

pub const PROPERTIES: &[PropertyDef] = &[
    PropertyDef {
        name: "retry.times",
        default: "3",
        description: "Connection attempts retried before a remote system's outbound state becomes Error",
        range: (0, 1000),
        kind: Kind::Number,
    },
    PropertyDef {
        name: "retry.interval",
        default: "60",
        description: "Seconds before the first retry; doubled per attempt, with jitter",
        range: (1, 86_400),
        kind: Kind::Number,
    },
    PropertyDef {
        name: "retry.max_interval",
        default: "900",
        description: "Cap on the seconds between retries (and between probes of a remote in Error)",
        range: (1, 86_400),
        kind: Kind::Number,
    },
    PropertyDef {
        name: "heartbeat.interval",
        default: "10",
        description: "Seconds between application heartbeats on a peer stream",
        range: (1, 3600),
        kind: Kind::Number,
    },
    PropertyDef {
        name: "heartbeat.slow_ms",
        default: "1000",
        description: "Heartbeat round trip, in milliseconds, above which a peer shows as Slow",
        range: (1, 600_000),
        kind: Kind::Number,
    },
    PropertyDef {
        name: "attachment.key_ttl",
        default: "604800",
        description: "Seconds a peer may use the key sent with an item to fetch its attachments",
        range: (1, 30 * 86_400),
        kind: Kind::Number,
    },
    PropertyDef {
        name: "attachment.max_mb",
        default: "4096",
        description: "Largest attachment, in MiB, this instance accepts from a peer or a client (0: no limit)",
        range: (0, 1 << 20),
        kind: Kind::Number,
    },
    PropertyDef {
        name: "sync.debug",
        default: "false",
        description: "Debug logging for the sync components (outbound_queue, inbound_queue, transport, attachments), switched within seconds without a restart",
        range: (0, 1),
        kind: Kind::Flag,
    },
    PropertyDef {
        name: "purge.processed_age",
        default: "604800",
        description: "Seconds after which Processed queue items are deleted (Ready and Error items never are)",
        range: (1, 10 * 365 * 86_400),
        kind: Kind::Number,
    },
    PropertyDef {
        name: "purge.skipped_age",
        default: "604800",
        description: "Seconds after which Skipped queue items are deleted",
        range: (1, 10 * 365 * 86_400),
        kind: Kind::Number,
    },
    PropertyDef {
        name: "purge.interval",
        default: "300",
        description: "Seconds between purge runs",
        range: (1, 86_400),
        kind: Kind::Number,
    },
    PropertyDef {
        name: "purge.batch",
        default: "1000",
        description: "Most items deleted per transaction while purging (a run continues batch by batch)",
        range: (1, 100_000),
        kind: Kind::Number,
    },
    PropertyDef {
        name: "load.batch",
        default: "500",
        description: "Most records an initial load (`remote load`) queues per transaction; live writes flow between batches",
        range: (1, 100_000),
        kind: Kind::Number,
    },
    PropertyDef {
        name: "reconcile.interval_s",
        default: "0",
        description: "Seconds between scheduled reconciliations with each Active remote system (`remote reconcile`; 0: only when asked)",
        range: (0, 31_536_000),
        kind: Kind::Number,
    },
    PropertyDef {
        name: "reconcile.repair",
        default: "false",
        description: "Whether scheduled reconciliations also send what makes the differences equal (as `remote reconcile --repair`)",
        range: (0, 1),
        kind: Kind::Flag,
    },
    PropertyDef {
        name: "alert.backlog",
        default: "0",
        description: "Alert when a remote system's outbound items waiting to be sent or acknowledged reach this many (0: off; `alert.backlog@NAME` for one remote system)",
        range: (0, u64::MAX),
        kind: Kind::Number,
    },
    PropertyDef {
        name: "alert.oldest_s",
        default: "0",
        description: "Alert when a remote system's oldest outbound item not yet acknowledged is this many seconds old (0: off; `@NAME` for one remote system)",
        range: (0, 10 * 365 * 86_400),
        kind: Kind::Number,
    },
    PropertyDef {
        name: "alert.errors",
        default: "0",
        description: "Alert when this many of a remote system's items (outbound or inbound) went to Error within `alert.window_s` (0: off; `@NAME` for one remote system)",
        range: (0, u64::MAX),
        kind: Kind::Number,
    },
    PropertyDef {
        name: "alert.window_s",
        default: "300",
        description: "The window, in seconds, that `alert.errors` counts over (whole minutes, rounded up)",
        range: (60, 86_400),
        kind: Kind::Number,
    },
    PropertyDef {
        name: "link.compress",
        default: "false",
        description: "Compress the streams this instance opens to a peer (zstd, negotiated with the peer; about 20 % fewer bytes for typical records at several times the CPU per item, so for metered links; `@NAME` for one remote system or group)",
        range: (0, 0),
        kind: Kind::Flag,
    },
    PropertyDef {
        name: "link.max_bytes_per_s",
        default: "0",
        description: "Most bytes per second this instance sends a peer, items and attachments alike, counted before compression (0: no limit; `@NAME` for one remote system or group)",
        range: (0, u64::MAX),
        kind: Kind::Number,
    },
    PropertyDef {
        name: "alert.down_s",
        default: "0",
        description: "Alert when a remote system has been Down for this many seconds (0: off; `@NAME` for one remote system)",
        range: (0, 10 * 365 * 86_400),
        kind: Kind::Number,
    },
];

/// Properties a remote system (or a remote group, for its members) may
/// have its own value of, as `NAME@REMOTE` (or `NAME@GROUP`).
pub const PER_REMOTE: &[&str] = &[
    "alert.backlog",
    "alert.oldest_s",
    "alert.errors",
    "alert.down_s",
    "link.compress",
    "link.max_bytes_per_s",
];

pub fn find(name: &str) -> Result<&'static PropertyDef, String> {
    if let Some((base, remote)) = name.split_once('@') {
        if !PER_REMOTE.contains(&base) {
            return Err(format!(
                "property `{base}` has no value per remote system; only {} do (as NAME@REMOTE)",
                PER_REMOTE.join(", ")
            ));
        }
        if remote.trim().is_empty() {
            return Err(format!("`{name}` names no remote system after the @"));
        }
        return find(base);
    }
    PROPERTIES.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = PROPERTIES.iter().map(|p| p.name).collect();
        format!("unknown property `{name}`; known: {}", names.join(", "))
    })
}

/// Checks a value against its property's range; returns it normalised.
pub fn check(name: &str, value: &str) -> Result<String, String> {
    let def = find(name)?;
    if def.kind == Kind::Flag {
        return match value.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok("true".to_string()),
            "false" | "no" | "off" | "0" => Ok("false".to_string()),
            _ => Err(format!("property {name} is true or false, not `{value}`")),
        };
    }
    let number: u64 = value
        .trim()
        .parse()
        .map_err(|_| format!("property {name} takes a whole number, not `{value}`"))?;
    if number < def.range.0 || number > def.range.1 {
        return Err(format!(
            "property {name} must be between {} and {}, not {number}",
            def.range.0, def.range.1
        ));
    }
    Ok(number.to_string())
}

/// Where a remote system's sending retries stand, kept in the store so a
/// restart resumes the schedule instead of forgetting it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetryState {
    /// Failed attempts since the peer last answered.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When the next attempt is due (milliseconds since the epoch).
    pub next_attempt_on: Option<u64>,
    /// The peer refused us (credentials, pins): nothing is tried until
    /// `procsync remote validate` succeeds.
    pub refused: bool,
}

/// The retry policy from the properties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub times: u32,
    pub interval: Duration,
    pub max_interval: Duration,
}

impl RetryPolicy {
    /// Delay before attempt `attempt` (1-based): interval × 2^(attempt−1),
    /// capped, with up to ±20 % jitter so many edges do not retry in step.
    pub fn delay(&self, attempt: u32, jitter_seed: u64) -> Duration {
        let base = backoff(self.interval, self.max_interval, attempt);
        let jitter = (jitter_seed % 401) as f64 / 1000.0 - 0.2;
        base.mul_f64(1.0 + jitter).min(self.max_interval)
    }
}

/// The one backoff every retry follows: `first` before attempt 1, doubled
/// per attempt after it, capped at `max`. Sending to a peer uses it with the
/// `retry.*` properties (and jitter), attachment fetches and probes of an
/// unreachable peer with their own named constants.
pub fn backoff(first: Duration, max: Duration, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    first.saturating_mul(1 << exponent).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_range_checked() {
        assert_eq!(check("retry.times", " 5 ").unwrap(), "5");
        assert!(
            check("retry.times", "-1")
                .unwrap_err()
                .contains("whole number")
        );
        assert!(
            check("retry.interval", "0")
                .unwrap_err()
                .contains("between 1 and 86400")
        );
        assert_eq!(check("sync.debug", "ON").unwrap(), "true");
        assert_eq!(check("sync.debug", "false").unwrap(), "false");
        assert!(
            check("sync.debug", "2")
                .unwrap_err()
                .contains("true or false")
        );
        assert!(
            check("retry.tims", "1")
                .unwrap_err()
                .contains("unknown property")
        );
    }

    #[test]
    fn one_backoff_for_every_retry() {
        let (first, max) = (Duration::from_secs(2), Duration::from_secs(60));
        let waits: Vec<u64> = (1..=7).map(|n| backoff(first, max, n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(first, max, 0), first);
        assert_eq!(backoff(first, max, u32::MAX), max);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy {
            times: 3,
            interval: Duration::from_secs(60),
            max_interval: Duration::from_secs(300),
        };
        let no_jitter = 200; // maps to 0 %
        assert_eq!(policy.delay(1, no_jitter), Duration::from_secs(60));
        assert_eq!(policy.delay(2, no_jitter), Duration::from_secs(120));
        assert_eq!(policy.delay(3, no_jitter), Duration::from_secs(240));
        assert_eq!(policy.delay(4, no_jitter), Duration::from_secs(300));
        let jittered = policy.delay(1, 0);
        assert_eq!(jittered, Duration::from_secs(48));
    }
}
