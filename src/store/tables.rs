//! Every redb table of an instance, declared once. Values are versioned
//! bytes (see `codec`) except in index tables, whose values are only ids.

use redb::TableDefinition;

/// Instance identity and store metadata: `instance` → `InstanceInfo`.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Records: (table, sys_id) → `Record`.
pub const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");

/// Journal entries: (table, sys_id, position) → `JournalEntry`.
pub const JOURNAL: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("journal");

/// Users: name → `User`.
pub const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");

/// API tokens: blake3(token) → user name (versioned string).
pub const TOKENS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tokens");

/// Process sync objects: (kind, name) → `StoredSyncObject`.
pub const SYNC_OBJECTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("sync_objects");

/// Counters: name → next value (versioned u64). `outbound_item` numbers
/// outbound items; `outbound_seq/<remote>` numbers each remote's stream.
pub const COUNTERS: TableDefinition<&str, &[u8]> = TableDefinition::new("counters");

/// The outbound queue: item id → `OutboundItem`. Ids grow with time, so
/// inserts are sequential.
pub const OUTBOUND: TableDefinition<u64, &[u8]> = TableDefinition::new("outbound");

/// Index of the outbound queue in send order: (remote system, sequence) →
/// item id.
pub const OUTBOUND_BY_REMOTE: TableDefinition<(&str, u64), u64> =
    TableDefinition::new("outbound_by_remote");

/// Where sending to each remote system stands: remote system name →
/// `RetryState` (attempts, last error, next attempt, refused). Absent
/// while the peer answers.
pub const REMOTE_RETRY: TableDefinition<&str, &[u8]> = TableDefinition::new("remote_retry");

/// Tokens this instance presents to its peers: remote system name → token
/// (versioned string). Never exported.
pub const REMOTE_SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("remote_secrets");

/// The inbound queue: item id → `InboundItem`.
pub const INBOUND: TableDefinition<u64, &[u8]> = TableDefinition::new("inbound");

/// Every (sending instance, sequence) ever received → inbound item id, kept
/// forever so a resent item is recognised however late it comes. The
/// sending instance is its certificate fingerprint (`sha256:…`, made at
/// `init`), not the remote system's name: a peer re-created under the same
/// name has a new certificate and so a sequence space of its own.
pub const INBOUND_SEEN_BY_PEER: TableDefinition<(&str, u64), u64> =
    TableDefinition::new("inbound_seen_by_peer");

/// The former `INBOUND_SEEN_BY_PEER`, keyed by remote system name: moved
/// under each remote's pinned fingerprint once on open, then deleted.
pub const INBOUND_SEEN: TableDefinition<(&str, u64), u64> = TableDefinition::new("inbound_seen");

/// Correlations, one per (local record, remote system): (table, sys_id,
/// remote system) → `Correlation`.
pub const CORRELATIONS: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("correlations");

/// Index of correlations by the peer's record: (remote system, remote
/// sys_id) → (table, local sys_id).
pub const CORRELATIONS_BY_REMOTE: TableDefinition<(&str, &str), (&str, &str)> =
    TableDefinition::new("correlations_by_remote");

/// Runtime properties: name → value (versioned string).
pub const PROPERTIES: TableDefinition<&str, &[u8]> = TableDefinition::new("properties");

/// Stored contents (attachment bytes, once per hash): content id →
/// `ContentInfo`. Ids grow, so chunk inserts are sequential.
pub const CONTENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("contents");

/// Contents by blake3 hash (hex) → content id, complete or still arriving.
pub const CONTENT_BY_HASH: TableDefinition<&str, u64> = TableDefinition::new("content_by_hash");

/// Content bytes: (content id, chunk index) → at most
/// `attachment::CHUNK_BYTES` bytes (raw, not versioned: bytes are bytes).
pub const CHUNKS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("chunks");

/// Queue statistics: (queue, remote system, process event) →
/// `stats::QueueCounters`, changed in the same transaction as the items.
pub const QUEUE_STATS: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("queue_stats");

/// Per-minute history of the last day: (minute since the epoch, queue,
/// remote system, process event) → `stats::MinuteCounts`. Minute first,
/// so a day is one range and the purge trims old minutes from the front.
pub const QUEUE_MINUTES: TableDefinition<(u64, &str, &str, &str), &[u8]> =
    TableDefinition::new("queue_minutes");

/// Flow contexts: what each processing of a queue item did, by id
/// (numbered by the `flow_context` counter) → `queue::FlowContext`. Items
/// list theirs; the purge deletes them with the item.
pub const FLOW_CONTEXTS: TableDefinition<u64, &[u8]> = TableDefinition::new("flow_contexts");

/// Index of the items in Error: (queue, item id), kept by the queue
/// counters' `Tally` with every status change. The dashboard's error list,
/// `queue … list --status Error` and the inbound processor's held records
/// read it instead of scanning a queue.
pub const ERROR_ITEMS: TableDefinition<(&str, u64), ()> = TableDefinition::new("error_items");
