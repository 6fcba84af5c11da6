//! Every redb table of an instance, declared once. Values are versioned
//! bytes (see `codec`) except in index tables, whose values are only ids.

use redb::TableDefinition;

/// Declares each table once and lists it in `create_all`, so a table added
/// here is created in every store, new or old, without a second list.
macro_rules! tables {
    ($($(#[$doc:meta])* $name:ident: $key:ty => $value:ty = $text:literal;)*) => {
        $($(#[$doc])* pub const $name: TableDefinition<$key, $value> = TableDefinition::new($text);)*

        /// Opens every table of this binary in `txn`, creating the missing ones.
        pub fn create_all(txn: &redb::WriteTransaction) -> Result<(), redb::TableError> {
            $(txn.open_table($name)?;)*
            Ok(())
        }

        /// Every table's name and page statistics in `txn`.
        pub fn all_stats(
            txn: &redb::ReadTransaction,
        ) -> Result<Vec<(&'static str, redb::TableStats)>, super::StoreError> {
            use redb::ReadableTableMetadata;
            Ok(vec![$(($text, txn.open_table($name)?.stats()?),)*])
        }
    };
}

tables! {
    /// Instance identity and store metadata: `instance` → `InstanceInfo`.
    META: &str => &[u8] = "meta";
    /// Records: (table, sys_id) → `Record`.
    RECORDS: (&str, &str) => &[u8] = "records";
    /// Journal entries: (table, sys_id, position) → `JournalEntry`.
    JOURNAL: (&str, &str, u64) => &[u8] = "journal";
    /// Users: name → `User`.
    USERS: &str => &[u8] = "users";
    /// API tokens: blake3(token) → user name (versioned string).
    TOKENS: &[u8] => &[u8] = "tokens";
    /// Process sync objects: (kind, name) → `StoredSyncObject`.
    SYNC_OBJECTS: (&str, &str) => &[u8] = "sync_objects";
    /// Counters: name → next value (versioned u64). `outbound_item` numbers
    /// outbound items; `outbound_seq/<remote>` numbers each remote's stream.
    COUNTERS: &str => &[u8] = "counters";
    /// The outbound queue: item id → `OutboundItem`. Ids grow with time, so
    /// inserts are sequential.
    OUTBOUND: u64 => &[u8] = "outbound";
    /// Index of the outbound queue in send order: (remote system, sequence) →
    /// item id.
    OUTBOUND_BY_REMOTE: (&str, u64) => u64 = "outbound_by_remote";
    /// Where sending to each remote system stands: remote system name →
    /// `RetryState` (attempts, last error, next attempt, refused). Absent
    /// while the peer answers.
    REMOTE_RETRY: &str => &[u8] = "remote_retry";
    /// Tokens this instance presents to its peers: remote system name → token
    /// (versioned string). Never exported.
    REMOTE_SECRETS: &str => &[u8] = "remote_secrets";
    /// The inbound queue: item id → `InboundItem`.
    INBOUND: u64 => &[u8] = "inbound";
    /// Every (sending instance, sequence) ever received → inbound item id, kept
    /// forever so a resent item is recognised however late it comes. The
    /// sending instance is its certificate fingerprint (`sha256:…`, made at
    /// `init`) by its number in `SENDERS`, not the remote system's name: a
    /// peer re-created under the same name has a new certificate and so a
    /// sequence space of its own. Numbers, not the 71-character
    /// fingerprint in every key: the receiving writer compares keys.
    INBOUND_SEEN_BY_SENDER: (u32, u64) => u64 = "inbound_seen_by_sender";
    /// The number of each sending instance's certificate fingerprint in
    /// `INBOUND_SEEN_BY_SENDER`'s keys, given on first use, never reused.
    SENDERS: &str => u32 = "senders";
    /// Correlations, one per (local record, remote system): (table, sys_id,
    /// remote system) → `Correlation`.
    CORRELATIONS: (&str, &str, &str) => &[u8] = "correlations";
    /// Initial loads, one per remote system (the last one): name → `Load`.
    LOADS: &str => &[u8] = "loads";
    /// Records by the values of the fields inbound flows match on
    /// (`match_on`): (table, field, value, sys_id) → (). Kept with every
    /// record write; the fields indexed are listed under `match_index` in
    /// `META` and follow the definitions (`store/match_index.rs`).
    RECORDS_BY_VALUE: (&str, &str, &str, &str) => () = "records_by_value";
    /// Reconciliations, one per remote system (the last one): name →
    /// `Reconciliation`.
    RECONCILES: &str => &[u8] = "reconciles";
    /// Index of correlations by the peer's record: (remote system, remote
    /// sys_id) → (table, local sys_id).
    CORRELATIONS_BY_REMOTE: (&str, &str) => (&str, &str) = "correlations_by_remote";
    /// Runtime properties: name → value (versioned string).
    PROPERTIES: &str => &[u8] = "properties";
    /// Stored contents (attachment bytes, once per hash): content id →
    /// `ContentInfo`. Ids grow, so chunk inserts are sequential.
    CONTENTS: u64 => &[u8] = "contents";
    /// Contents by blake3 hash (hex) → content id, complete or still arriving.
    CONTENT_BY_HASH: &str => u64 = "content_by_hash";
    /// Content bytes: (content id, chunk index) → at most
    /// `attachment::CHUNK_BYTES` bytes (raw, not versioned: bytes are bytes).
    CHUNKS: (u64, u32) => &[u8] = "chunks";
    /// Queue statistics: (queue, remote system, process event) →
    /// `stats::QueueCounters`, changed in the same transaction as the items.
    QUEUE_STATS: (&str, &str, &str) => &[u8] = "queue_stats";
    /// Per-minute history of the last day: (minute since the epoch, queue,
    /// remote system, process event) → `stats::MinuteCounts`. Minute first,
    /// so a day is one range and the purge trims old minutes from the front.
    QUEUE_MINUTES: (u64, &str, &str, &str) => &[u8] = "queue_minutes";
    /// Flow contexts: what each processing of a queue item did, by id
    /// (numbered by the `flow_context` counter) → `queue::FlowContext`. Items
    /// list theirs; the purge deletes them with the item.
    FLOW_CONTEXTS: u64 => &[u8] = "flow_contexts";
    /// Every queue item but the Processed ones by status: (queue: 0
    /// outbound, 1 inbound; status as its place in `queue::ALL_STATUSES`;
    /// the number of its remote system and process event in
    /// `QUEUE_STREAMS`; item id), kept by the queue counters' `Tally` with
    /// every status change (`queue_index`). The queue browser, the Error
    /// lists and the inbound processor's held records read it instead of
    /// scanning a queue. Fixed-width keys: the
    /// names repeated in every entry cost the writer a fifth of its time
    /// on an edge in string compares, and 40 bytes per entry.
    QUEUE_BY_STATUS: (u8, u8, u32, u64) => () = "queue_by_status_v2";
    /// The number of each (remote system, process event) in
    /// `QUEUE_BY_STATUS`'s keys, given on first use.
    QUEUE_STREAMS: (&str, &str) => u32 = "queue_streams";
    /// Invitations to join a remote group (`remote invite`): invite id →
    /// `enrol::Invite` (the secret only as its blake3 hash).
    INVITES: &str => &[u8] = "invites";
    /// The field names records and correlations use, each stored once:
    /// number → name, numbered from 1 on first use (`names`). A stored
    /// record or correlation of format 5 names its fields by number.
    FIELD_NAMES: u32 => &str = "field_names";
}

/// The first `INBOUND_SEEN_BY_SENDER`, keyed by remote system name: moved
/// under each remote's pinned fingerprint once on open, then deleted; not
/// in `create_all`.
pub const INBOUND_SEEN: TableDefinition<(&str, u64), u64> = TableDefinition::new("inbound_seen");

/// The second `INBOUND_SEEN_BY_SENDER`, with the sender's fingerprint in
/// every key: moved under the fingerprint's number once on open, then
/// deleted; not in `create_all`.
pub const INBOUND_SEEN_BY_PEER: TableDefinition<(&str, u64), u64> =
    TableDefinition::new("inbound_seen_by_peer");

/// The former `QUEUE_BY_STATUS`, with the names in every key: rebuilt as
/// the new one once on open, then deleted; not in `create_all`.
pub const FORMER_QUEUE_BY_STATUS: TableDefinition<(&str, u8, &str, &str, u64), ()> =
    TableDefinition::new("queue_by_status");

/// The former index of the items in Error alone, (queue, item id): its
/// entries are in `QUEUE_BY_STATUS`; deleted on open, not in `create_all`.
pub const FORMER_ERROR_ITEMS: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("error_items");

/// One table's share of the store file: the bytes of its pages, and of
/// what is stored in them (keys and values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSize {
    pub name: &'static str,
    pub page_bytes: u64,
    pub stored_bytes: u64,
}

impl super::Store {
    /// Every table's pages, largest first: the store's footprint without
    /// the free space redb's file grows by (it doubles).
    pub fn table_sizes(&self) -> Result<Vec<TableSize>, super::StoreError> {
        let txn = self.db.begin_read()?;
        let mut sizes: Vec<TableSize> = all_stats(&txn)?
            .into_iter()
            .map(|(name, stats)| TableSize {
                name,
                page_bytes: stats.stored_bytes()
                    + stats.metadata_bytes()
                    + stats.fragmented_bytes(),
                stored_bytes: stats.stored_bytes(),
            })
            .collect();
        sizes.sort_by_key(|t| std::cmp::Reverse(t.page_bytes));
        Ok(sizes)
    }
}
