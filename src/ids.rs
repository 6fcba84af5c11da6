//! Identifiers and timestamps: 32-hex `sys_id`s, API tokens, and the
//! `YYYY-MM-DD HH:MM:SS` UTC times records show. Never touches storage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as stored in every row.
pub type Millis = u64;

/// Current wall-clock time in milliseconds since the Unix epoch.
pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

/// A duration in whole milliseconds (saturating: no duration here comes
/// near the 584 million years that fill a `u64`).
pub fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A duration in whole microseconds (saturating).
pub fn micros(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A new `sys_id`: 32 lowercase hex digits. The first 12 hold the creation
/// time in milliseconds and the next 4 a process-wide counter, so ids made
/// one after another sort one after another (redb inserts sequential keys
/// ~7x faster than random ones). The last 16 mix a per-process random seed
/// with the full counter: unique within the process, unpredictable across
/// instances, and no system call per id (sys_ids are not secrets; tokens
/// draw fresh randomness every time).
pub fn new_sys_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let mut bytes = [0u8; 8];
        fill_random(&mut bytes);
        u64::from_le_bytes(bytes)
    });
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Big-endian bytes as hex: the digits in the order they sort (a hub
    // makes one per applied item; `format!` took 1 % of its writer).
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&now_millis().to_be_bytes()[2..]);
    bytes[6..8].copy_from_slice(&count.to_be_bytes()[6..]);
    bytes[8..].copy_from_slice(&mix64(seed.wrapping_add(count)).to_be_bytes());
    hex(&bytes)
}

/// SplitMix64's finaliser: a bijection on u64, so distinct counters give
/// distinct outputs.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether `text` is a well-formed `sys_id` (32 lowercase hex digits).
pub fn is_sys_id(text: &str) -> bool {
    text.len() == 32
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A new API token: `pst_` followed by 64 hex digits (256 random bits).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes);
    format!("pst_{}", hex(&bytes))
}

/// The stored form of a token. Tokens carry 256 random bits, so a fast
/// cryptographic hash is enough: there is nothing to brute-force.
pub fn token_hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.trim().as_bytes()).as_bytes()
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

/// The bytes `hex` wrote (either case); `None` for text that is not hex
/// of whole bytes.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn fill_random(buf: &mut [u8]) {
    // The OS random source failing is not something the process can recover
    // from: every id and token would be guessable.
    getrandom::fill(buf).expect("the operating system's random source failed");
}

/// Formats epoch milliseconds as `YYYY-MM-DD HH:MM:SS` in UTC, the way
/// ServiceNow shows `sys_created_on`.
pub fn format_time(millis: Millis) -> String {
    let secs = millis / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parses `YYYY-MM-DD HH:MM:SS` (UTC) back to epoch milliseconds.
pub fn parse_time(text: &str) -> Option<Millis> {
    let (date, time) = text.trim().split_once(' ')?;
    let mut date = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let mut time = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (time.next()??, time.next()??, time.next()??);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm, the inverse of below).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    u64::try_from(seconds).ok().map(|s| s * 1000)
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's well-known algorithm).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the day (1..=31) and month (1..=12) the algorithm yields are small and positive"
)]
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sys_ids_are_well_formed_and_increasing() {
        let before = now_millis();
        let a = new_sys_id();
        let b = new_sys_id();
        // The first 12 digits are the time it was made, in milliseconds.
        let made = u64::from_str_radix(&a[..12], 16).unwrap();
        assert!(
            (before..=now_millis()).contains(&made),
            "{a} made at {made}"
        );
        assert!(is_sys_id(&a), "{a}");
        assert!(is_sys_id(&b), "{b}");
        assert_ne!(a, b);
        assert!(a[..16] < b[..16] || a[..12] < b[..12]);
    }

    #[test]
    fn times_format_like_servicenow() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(1_795_910_226_000), "2026-11-28 23:57:06");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn times_parse_back() {
        for millis in [0, 951_782_400_000, 1_795_910_226_000] {
            assert_eq!(parse_time(&format_time(millis)), Some(millis));
        }
        assert_eq!(parse_time("2026-13-01 00:00:00"), None);
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn tokens_hash_stably() {
        let token = new_token();
        assert!(token.starts_with("pst_") && token.len() == 68);
        assert_eq!(token_hash(&token), token_hash(&format!("{token}\n")));
    }
}
