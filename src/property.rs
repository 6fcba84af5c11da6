//! Runtime properties (`procsync property list|get|set`): names, defaults,
//! ranges and parsing. Values live in the store; this module only knows
//! what they mean.

use std::time::Duration;

/// A property this version knows.
pub struct PropertyDef {
    pub name: &'static str,
    pub default: &'static str,
    pub description: &'static str,
    /// Inclusive range of the integer value.
    pub range: (u64, u64),
}

pub const PROPERTIES: &[PropertyDef] = &[
    PropertyDef {
        name: "retry.times",
        default: "3",
        description: "Connection attempts retried before a remote system's outbound state becomes Error",
        range: (0, 1000),
    },
    PropertyDef {
        name: "retry.interval",
        default: "60",
        description: "Seconds before the first retry; doubled per attempt, with jitter",
        range: (1, 86_400),
    },
    PropertyDef {
        name: "retry.max_interval",
        default: "900",
        description: "Cap on the seconds between retries (and between probes of a remote in Error)",
        range: (1, 86_400),
    },
    PropertyDef {
        name: "heartbeat.interval",
        default: "10",
        description: "Seconds between application heartbeats on a peer stream",
        range: (1, 3600),
    },
    PropertyDef {
        name: "heartbeat.slow_ms",
        default: "1000",
        description: "Heartbeat round trip, in milliseconds, above which a peer shows as Slow",
        range: (1, 600_000),
    },
    PropertyDef {
        name: "attachment.key_ttl",
        default: "604800",
        description: "Seconds a peer may use the key sent with an item to fetch its attachments",
        range: (1, 30 * 86_400),
    },
    PropertyDef {
        name: "attachment.max_mb",
        default: "4096",
        description: "Largest attachment, in MiB, this instance accepts from a peer or a client (0: no limit)",
        range: (0, 1 << 20),
    },
];

pub fn find(name: &str) -> Result<&'static PropertyDef, String> {
    PROPERTIES.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = PROPERTIES.iter().map(|p| p.name).collect();
        format!("unknown property `{name}`; known: {}", names.join(", "))
    })
}

/// Checks a value against its property's range; returns it normalised.
pub fn check(name: &str, value: &str) -> Result<String, String> {
    let def = find(name)?;
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
        let exponent = attempt.saturating_sub(1).min(20);
        let base = self
            .interval
            .saturating_mul(1 << exponent)
            .min(self.max_interval);
        let jitter = (jitter_seed % 401) as f64 / 1000.0 - 0.2;
        base.mul_f64(1.0 + jitter).min(self.max_interval)
    }
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
        assert!(
            check("retry.tims", "1")
                .unwrap_err()
                .contains("unknown property")
        );
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
