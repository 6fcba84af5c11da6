//! procsync: Remote Process Sync as one self-contained binary.
//!
//! Modules in reading order; each owns one noun of the domain.

/// Identifiers, tokens and timestamps.
pub mod ids;
/// Kinds of failure, shared by every error type.
pub mod failure;
/// Domain paths and the subtree rule.
pub mod domain;
/// Encoded-query filters: parsing, rendering, evaluation.
pub mod condition;
/// The messages of store format 2, generated from `proto/`.
pub mod stored;
/// Records, journal entries and record writes.
pub mod record;
/// Attachments: metadata, fetch keys, checks on received files.
pub mod attachment;
/// Users, roles and permissions.
pub mod user;
/// Queue items, statuses, captured payloads and correlations.
pub mod queue;
/// Runtime properties: names, defaults, ranges.
pub mod property;
/// The sandboxed flow script engine (Rhai).
pub mod script;
/// Server config and process sync definitions files.
pub mod config;
/// Which capture definitions fire for a change, and what they carry.
pub mod capture;
/// Inbound flows: mapping a received payload onto a local write.
pub mod flow;
/// Reconciliation rules: comparing correlated records by range digests.
pub mod reconcile;
/// Error handling steps: log, webhook, command.
pub mod subflow;
/// Queue statistics: counters, recent figures, the stats report.
pub mod stats;
/// The redb store: the only module that touches the database.
pub mod store;
/// The instance's TLS identity.
pub mod identity;
/// Creating an instance (`init`).
pub mod instance;
/// The running parts of peer sync: wake-ups, health and transfer boards.
pub mod runtime;
/// Background work as stepped workers, and the runner that stops them.
pub mod worker;
/// Fixtures for unit tests that need a real store.
#[cfg(test)]
mod testing;
/// The admin API in domain terms: authentication, roles, domains.
pub mod api;
/// Receiving: peer identification, the inbound queue and its processor.
pub mod inbound;
/// Sending: one dispatcher per remote system.
pub mod outbound;
/// gRPC: generated types, the admin and peer services, their clients.
pub mod transport;
/// Alert thresholds checked per remote system, raising its error subflow.
pub mod alert;
/// Periodic work: the debug-logging switch, purging old queue items.
pub mod scheduler;
/// The tracing subscriber, with sync debug logging switchable at runtime.
pub mod logging;
/// `serve`: running an instance and shutting it down.
pub mod server;
/// Progress bars on the terminal for long commands and benchmarks.
pub mod progress;
/// A `serve` child process, for the demo and the benchmark.
pub mod child;
/// Starting local instances and linking them, for every tool that needs
/// linked instances on one machine (demo, benchmarks, tests).
pub mod link;
/// Two linked local instances, for the demo and the benchmark.
pub mod pair;
/// The demo: two instances running a sample process.
pub mod demo;
/// The benchmark command.
pub mod bench;
/// The command line.
pub mod cli;
