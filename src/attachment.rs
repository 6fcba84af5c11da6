//! Attachments: the files records hold, what a payload says about them, the
//! keys that let one peer fetch another's content, and the checks a received
//! file must pass. Pure values and functions: content bytes live in the
//! store (`store::content`, written as they arrive by `store::sink`),
//! transfers in `inbound` and `transport`.

use serde::{Deserialize, Serialize};

use crate::ids::{Millis, hex};

/// Content is stored and sent in chunks of this many bytes (the last one
/// shorter). Just under 1 MiB: redb stores a value of exactly 2^k bytes in
/// a page twice that size (measured: disk use doubles, writes halve).
pub const CHUNK_BYTES: usize = (1 << 20) - 64;

/// The index of the chunk that holds byte `offset` of a content.
#[allow(
    clippy::cast_possible_truncation,
    reason = "2^32 chunks of just under 1 MiB is 4 PiB, far past any content the limits allow"
)]
pub fn chunk_index(offset: u64) -> u32 {
    (offset / CHUNK_BYTES as u64) as u32
}

/// How many chunks a content of `size` bytes has.
#[allow(
    clippy::cast_possible_truncation,
    reason = "2^32 chunks of just under 1 MiB is 4 PiB, far past any content the limits allow"
)]
pub fn chunk_count(size: u64) -> u32 {
    size.div_ceil(CHUNK_BYTES as u64) as u32
}

/// Longest file name accepted, in bytes.
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// What a capture lists about a record's attachments on each sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentStrategy {
    /// Every sync lists every attachment; the receiver fetches whatever
    /// the target record lacks (one removed there comes back).
    #[default]
    All,
    /// A sync lists every attachment but the receiver fetches only those
    /// new with the change, or all on the record's first sync.
    Deltas,
}

/// One file a record holds. Several attachments may share one stored
/// content (same hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub sys_id: String,
    pub file_name: String,
    pub content_type: String,
    pub size: u64,
    /// blake3 of the content, 64 lowercase hex digits.
    pub hash: String,
    pub created_on: Millis,
    pub created_by: String,
    /// Set when the attachment arrived from a peer: its attachment there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<AttachmentOrigin>,
}

/// Where a synced attachment came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentOrigin {
    pub remote_system: String,
    /// The attachment's sys_id at the origin.
    pub sys_id: String,
}

/// An attachment as a payload describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadAttachment {
    pub sys_id: String,
    pub file_name: String,
    pub content_type: String,
    pub size: u64,
    pub hash: String,
    /// New with this change (otherwise listed because the strategy is
    /// `all`, or for the record's first sync).
    #[serde(default)]
    pub added: bool,
}

/// An attachment removed at the origin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedAttachment {
    pub sys_id: String,
    pub file_name: String,
    pub hash: String,
}

impl From<&Attachment> for PayloadAttachment {
    fn from(attachment: &Attachment) -> PayloadAttachment {
        PayloadAttachment {
            sys_id: attachment.sys_id.clone(),
            file_name: attachment.file_name.clone(),
            content_type: attachment.content_type.clone(),
            size: attachment.size,
            hash: attachment.hash.clone(),
            added: false,
        }
    }
}

/// Whether `hash` looks like a blake3 hash as we write it.
pub fn is_hash(hash: &str) -> bool {
    hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Refuses file names that could escape a directory or confuse a terminal
/// or a log: path separators, `.` and `..`, control characters, empty or
/// overlong names.
pub fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the file name is empty".to_string());
    }
    if name.len() > MAX_FILE_NAME_BYTES {
        return Err(format!(
            "the file name is {} bytes, over the limit of {MAX_FILE_NAME_BYTES}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("`{name}` is not a file name"));
    }
    if name.contains(['/', '\\']) {
        return Err(format!(
            "file name {name:?} contains a path separator; only a bare file name is accepted"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "file name {name:?} contains a control character; only printable characters are accepted"
        ));
    }
    Ok(())
}

/// The lowercase extension of `name` (after the last dot), if any.
pub fn extension(name: &str) -> Option<String> {
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then(|| ext.to_ascii_lowercase())
}

/// Limits on the attachments a capture sends or an inbound flow accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttachmentLimits {
    /// 0 means no limit.
    pub max_mb: u64,
    /// Lowercase, without dots; empty allows every extension.
    pub allowed_extensions: Vec<String>,
}

impl AttachmentLimits {
    pub fn new(max_mb: u64, allowed_extensions: &[String]) -> AttachmentLimits {
        AttachmentLimits {
            max_mb,
            allowed_extensions: allowed_extensions
                .iter()
                .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Why an attachment of this name and size is not allowed, if it is not.
    pub fn refusal(&self, file_name: &str, size: u64) -> Option<String> {
        if self.max_mb > 0 && size > self.max_mb * 1024 * 1024 {
            return Some(format!(
                "{file_name:?} is {size} bytes, over the limit of {} MiB (max_attachment_mb)",
                self.max_mb
            ));
        }
        if !self.allowed_extensions.is_empty() {
            let allowed =
                extension(file_name).is_some_and(|ext| self.allowed_extensions.contains(&ext));
            if !allowed {
                return Some(format!(
                    "{file_name:?} does not have an allowed extension (allowed_extensions: {})",
                    self.allowed_extensions.join(", ")
                ));
            }
        }
        None
    }
}

/// The listed attachments a receiver wants: every one, except under
/// `deltas` on a record already synced, where only those new with the
/// change.
pub fn wanted(
    listed: &[PayloadAttachment],
    strategy: AttachmentStrategy,
    first_sync: bool,
) -> impl Iterator<Item = &PayloadAttachment> {
    listed
        .iter()
        .filter(move |a| strategy == AttachmentStrategy::All || first_sync || a.added)
}

/// Checks what a payload says about its attachments before anything is
/// fetched; the first problem refuses the whole item.
pub fn check_incoming(
    listed: &[PayloadAttachment],
    removed: &[RemovedAttachment],
    limits: &AttachmentLimits,
) -> Result<(), String> {
    for attachment in listed {
        let name = &attachment.file_name;
        check_file_name(name).map_err(|e| format!("attachment refused: {e}"))?;
        if !is_hash(&attachment.hash) {
            return Err(format!(
                "attachment {name:?} refused: `{}` is not a blake3 hash",
                attachment.hash
            ));
        }
        if let Some(problem) = limits.refusal(name, attachment.size) {
            return Err(format!("attachment refused: {problem}"));
        }
    }
    for attachment in removed {
        if !is_hash(&attachment.hash) {
            return Err(format!(
                "removed attachment {:?}: `{}` is not a blake3 hash",
                attachment.file_name, attachment.hash
            ));
        }
    }
    Ok(())
}

/// Attachments a write adds (their content already stored) and removes
/// (by attachment sys_id).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttachmentChanges {
    pub attach: Vec<Attachment>,
    pub detach: Vec<String>,
}

impl AttachmentChanges {
    pub fn is_empty(&self) -> bool {
        self.attach.is_empty() && self.detach.is_empty()
    }
}

/// What an inbound item does to the target record's attachments (`target`
/// is empty for a new record): attach each wanted one the record lacks (by
/// hash and file name), detach those removed at the origin.
pub fn plan_inbound(
    listed: &[PayloadAttachment],
    removed: &[RemovedAttachment],
    strategy: AttachmentStrategy,
    first_sync: bool,
    target: &[Attachment],
    remote_system: &str,
) -> AttachmentChanges {
    let mut changes = AttachmentChanges::default();
    for attachment in wanted(listed, strategy, first_sync) {
        let held = target
            .iter()
            .chain(changes.attach.iter())
            .any(|t| t.hash == attachment.hash && t.file_name == attachment.file_name);
        if held {
            continue;
        }
        changes.attach.push(Attachment {
            sys_id: String::new(),
            file_name: attachment.file_name.clone(),
            content_type: attachment.content_type.clone(),
            size: attachment.size,
            hash: attachment.hash.clone(),
            created_on: 0,
            created_by: String::new(),
            origin: Some(AttachmentOrigin {
                remote_system: remote_system.to_string(),
                sys_id: attachment.sys_id.clone(),
            }),
        });
    }
    for gone in removed {
        let from_origin = |t: &&Attachment| {
            t.origin
                .as_ref()
                .is_some_and(|o| o.remote_system == remote_system && o.sys_id == gone.sys_id)
        };
        let same_file = |t: &&Attachment| t.hash == gone.hash && t.file_name == gone.file_name;
        let found = target
            .iter()
            .find(from_origin)
            .or_else(|| target.iter().find(same_file));
        if let Some(found) = found {
            if !changes.detach.contains(&found.sys_id) {
                changes.detach.push(found.sys_id.clone());
            }
        }
    }
    changes
}

/// A key that lets one remote system fetch one content for a while:
/// blake3 keyed with the instance's attachment secret over the remote
/// system, the hash and the expiry. Only the instance that holds the secret
/// can make or check one; a peer cannot change any bound part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub hash: String,
    pub expires_at: Millis,
    /// 64 hex digits.
    pub key: String,
}

/// Why a grant was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error(
        "the attachment key is not valid for this content and remote system (forged or altered)"
    )]
    Forged,
    #[error(
        "the attachment key expired at {0}; change the record at the origin (or re-add the attachment) to send a fresh key"
    )]
    Expired(String),
}

fn grant_mac(secret: &[u8; 32], remote_system: &str, hash: &str, expires_at: Millis) -> String {
    let mut mac = blake3::Hasher::new_keyed(secret);
    // Length-prefixed parts: no two different triples hash the same input.
    for part in [remote_system.as_bytes(), hash.as_bytes()] {
        mac.update(&(part.len() as u64).to_le_bytes());
        mac.update(part);
    }
    mac.update(&expires_at.to_le_bytes());
    hex(mac.finalize().as_bytes())
}

impl Grant {
    pub fn issue(secret: &[u8; 32], remote_system: &str, hash: &str, expires_at: Millis) -> Grant {
        Grant {
            hash: hash.to_string(),
            expires_at,
            key: grant_mac(secret, remote_system, hash, expires_at),
        }
    }

    /// Checks that this grant was issued by the holder of `secret` to
    /// `remote_system` and has not expired at `now`.
    pub fn verify(
        &self,
        secret: &[u8; 32],
        remote_system: &str,
        now: Millis,
    ) -> Result<(), GrantError> {
        let expected = grant_mac(secret, remote_system, &self.hash, self.expires_at);
        // Both sides are fixed-length hex of a MAC; compare without an
        // early exit anyway.
        let same = expected.len() == self.key.len()
            && expected
                .bytes()
                .zip(self.key.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(GrantError::Forged);
        }
        if now >= self.expires_at {
            return Err(GrantError::Expired(crate::ids::format_time(
                self.expires_at,
            )));
        }
        Ok(())
    }
}

/// Checks a content arriving in chunks against what it claims to be: every
/// chunk against its own hash, the running size against the claimed size,
/// and, at the end, the whole against the claimed hash.
pub struct Verifier {
    hasher: blake3::Hasher,
    received: u64,
    size: u64,
    hash: String,
}

impl Verifier {
    /// Starts checking a content of `size` bytes and blake3 `hash`.
    pub fn new(size: u64, hash: &str) -> Verifier {
        Verifier {
            hasher: blake3::Hasher::new(),
            received: 0,
            size,
            hash: hash.to_string(),
        }
    }

    /// Bytes accepted so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Accepts bytes already verified earlier (stored before a restart).
    pub fn resume(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.received += data.len() as u64;
    }

    /// Accepts the next chunk: at `offset`, with blake3 `chunk_hash`.
    pub fn push(&mut self, offset: u64, data: &[u8], chunk_hash: &[u8]) -> Result<(), String> {
        if offset != self.received {
            return Err(format!(
                "a chunk arrived for offset {offset}, but {} bytes were received so far",
                self.received
            ));
        }
        if data.is_empty() || data.len() > CHUNK_BYTES {
            return Err(format!(
                "a chunk of {} bytes arrived; chunks hold 1 to {CHUNK_BYTES} bytes",
                data.len()
            ));
        }
        if blake3::hash(data).as_bytes().as_slice() != chunk_hash {
            return Err(format!(
                "the chunk at offset {offset} does not match its hash (corrupted in transit)"
            ));
        }
        let received = self.received + data.len() as u64;
        if received > self.size {
            return Err(format!(
                "more bytes arrived than the {} the attachment claims (its size lies)",
                self.size
            ));
        }
        self.hasher.update(data);
        self.received = received;
        Ok(())
    }

    /// Checks the whole once every byte is in.
    pub fn finish(&self) -> Result<(), String> {
        if self.received != self.size {
            return Err(format!(
                "the content ended after {} bytes, but the attachment claims {} (its size lies)",
                self.received, self.size
            ));
        }
        let actual = hex(self.hasher.finalize().as_bytes());
        if actual != self.hash {
            return Err(format!(
                "the content's blake3 hash is {actual}, not the {} the attachment claims",
                self.hash
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_that_could_escape_or_confuse_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "a/b",
            "a\\b",
            "a\nb",
            "bell\u{7}",
        ] {
            assert!(check_file_name(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(check_file_name(&"x".repeat(256)).is_err());
        for good in ["report.pdf", "ünïcode ✓.txt", ".profile", "no-extension"] {
            check_file_name(good).unwrap();
        }
    }

    #[test]
    fn limits_check_size_and_extension() {
        let limits = AttachmentLimits::new(1, &[".PDF".to_string(), "txt".to_string()]);
        assert_eq!(limits.refusal("a.pdf", 1024 * 1024), None);
        assert_eq!(limits.refusal("a.TXT", 5), None);
        assert!(
            limits
                .refusal("a.pdf", 1024 * 1024 + 1)
                .unwrap()
                .contains("max_attachment_mb")
        );
        assert!(limits.refusal("a.exe", 5).unwrap().contains("allowed"));
        assert!(limits.refusal("pdf", 5).is_some(), "no extension at all");
        assert_eq!(AttachmentLimits::default().refusal("a.exe", u64::MAX), None);
    }

    fn listed(name: &str, hash_byte: &str, added: bool) -> PayloadAttachment {
        PayloadAttachment {
            sys_id: format!("origin-{name}"),
            file_name: name.to_string(),
            content_type: "text/plain".to_string(),
            size: 3,
            hash: hash_byte.repeat(64),
            added,
        }
    }

    #[test]
    fn inbound_plans_attach_what_is_missing_and_detach_what_was_removed() {
        let list = [listed("a.txt", "a", false), listed("b.txt", "b", true)];
        let all = plan_inbound(&list, &[], AttachmentStrategy::All, false, &[], "edge");
        assert_eq!(all.attach.len(), 2);
        let deltas = plan_inbound(&list, &[], AttachmentStrategy::Deltas, false, &[], "edge");
        assert_eq!(deltas.attach.len(), 1);
        assert_eq!(deltas.attach[0].file_name, "b.txt");
        let first = plan_inbound(&list, &[], AttachmentStrategy::Deltas, true, &[], "edge");
        assert_eq!(first.attach.len(), 2, "a first sync takes everything");

        let mut held = all.attach.clone();
        held[0].sys_id = "local-a".to_string();
        held[1].sys_id = "local-b".to_string();
        let again = plan_inbound(&list, &[], AttachmentStrategy::All, false, &held, "edge");
        assert!(again.is_empty(), "same hash and name: nothing to do");

        let removed = [RemovedAttachment {
            sys_id: "origin-b.txt".to_string(),
            file_name: "b.txt".to_string(),
            hash: "b".repeat(64),
        }];
        let gone = plan_inbound(&[], &removed, AttachmentStrategy::All, false, &held, "edge");
        assert_eq!(gone.detach, ["local-b"]);
        let elsewhere = plan_inbound(&[], &removed, AttachmentStrategy::All, false, &held, "hub");
        assert_eq!(elsewhere.detach, ["local-b"], "falls back to hash and name");
    }

    #[test]
    fn incoming_metadata_is_checked_before_anything_is_fetched() {
        let limits = AttachmentLimits::new(1, &["txt".to_string()]);
        check_incoming(&[listed("a.txt", "a", true)], &[], &limits).unwrap();
        let mut evil = listed("../../x.txt", "a", true);
        assert!(
            check_incoming(&[evil.clone()], &[], &limits)
                .unwrap_err()
                .contains("path separator")
        );
        evil.file_name = "x.exe".to_string();
        assert!(
            check_incoming(&[evil.clone()], &[], &limits)
                .unwrap_err()
                .contains("allowed extension")
        );
        evil.file_name = "x.txt".to_string();
        evil.size = 2 * 1024 * 1024;
        assert!(
            check_incoming(&[evil.clone()], &[], &limits)
                .unwrap_err()
                .contains("max_attachment_mb")
        );
        evil.size = 3;
        evil.hash = "not a hash".to_string();
        assert!(check_incoming(&[evil], &[], &limits).is_err());
    }

    #[test]
    fn grants_are_bound_to_remote_hash_and_time() {
        let secret = [7u8; 32];
        let hash = "ab".repeat(32);
        let grant = Grant::issue(&secret, "hub", &hash, 1_000);
        grant.verify(&secret, "hub", 999).unwrap();
        assert_eq!(
            grant.verify(&secret, "hub", 1_000),
            Err(GrantError::Expired(crate::ids::format_time(1_000)))
        );
        assert_eq!(grant.verify(&secret, "edge", 0), Err(GrantError::Forged));
        assert_eq!(grant.verify(&[8u8; 32], "hub", 0), Err(GrantError::Forged));
        let mut longer = grant.clone();
        longer.expires_at = 2_000;
        assert_eq!(longer.verify(&secret, "hub", 0), Err(GrantError::Forged));
        let mut other = grant.clone();
        other.hash = "cd".repeat(32);
        assert_eq!(other.verify(&secret, "hub", 0), Err(GrantError::Forged));
    }

    #[test]
    fn the_verifier_refuses_corrupt_chunks_lying_sizes_and_wrong_hashes() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let hash = hex(blake3::hash(&data).as_bytes());
        let chunk_hash = |d: &[u8]| blake3::hash(d).as_bytes().to_vec();

        let mut ok = Verifier::new(3000, &hash);
        ok.push(0, &data[..1000], &chunk_hash(&data[..1000]))
            .unwrap();
        ok.push(1000, &data[1000..], &chunk_hash(&data[1000..]))
            .unwrap();
        ok.finish().unwrap();

        let mut resumed = Verifier::new(3000, &hash);
        resumed.resume(&data[..1000]);
        resumed
            .push(1000, &data[1000..], &chunk_hash(&data[1000..]))
            .unwrap();
        resumed.finish().unwrap();

        let mut corrupt = Verifier::new(3000, &hash);
        let mut bad = data[..1000].to_vec();
        bad[10] ^= 1;
        assert!(
            corrupt
                .push(0, &bad, &chunk_hash(&data[..1000]))
                .unwrap_err()
                .contains("corrupted")
        );
        assert!(
            corrupt
                .push(5, &data[..10], &chunk_hash(&data[..10]))
                .unwrap_err()
                .contains("offset 5")
        );

        let mut too_small = Verifier::new(2000, &hash);
        too_small
            .push(0, &data[..1000], &chunk_hash(&data[..1000]))
            .unwrap();
        assert!(
            too_small
                .push(1000, &data[1000..], &chunk_hash(&data[1000..]))
                .unwrap_err()
                .contains("size lies")
        );

        let mut too_big = Verifier::new(4000, &hash);
        too_big.push(0, &data, &chunk_hash(&data)).unwrap();
        assert!(too_big.finish().unwrap_err().contains("size lies"));

        let other = hex(blake3::hash(b"something else").as_bytes());
        let mut wrong = Verifier::new(3000, &other);
        wrong.push(0, &data, &chunk_hash(&data)).unwrap();
        assert!(wrong.finish().unwrap_err().contains("blake3"));
    }
}
