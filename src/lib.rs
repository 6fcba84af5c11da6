//! procsync: Remote Process Sync as one self-contained binary.
//!
//! Modules in reading order; each owns one noun of the domain.

/// The admin API in domain terms: authentication, roles, domains.
pub mod api;
/// The benchmark command.
pub mod bench;
/// Which capture definitions fire for a change, and what they carry.
pub mod capture;
/// The command line.
pub mod cli;
/// Encoded-query filters: parsing, rendering, evaluation.
pub mod condition;
/// Server config and process sync definitions files.
pub mod config;
/// Domain paths and the subtree rule.
pub mod domain;
/// The instance's TLS identity.
pub mod identity;
/// Identifiers, tokens and timestamps.
pub mod ids;
/// Creating an instance (`init`).
pub mod instance;
/// Queue items, statuses and captured payloads.
pub mod queue;
/// Records, journal entries and record writes.
pub mod record;
/// `serve`: running an instance and shutting it down.
pub mod server;
/// The redb store: the only module that touches the database.
pub mod store;
/// gRPC: generated types, the admin service and its client.
pub mod transport;
/// Users, roles and permissions.
pub mod user;
