//! procsync: Remote Process Sync as one self-contained binary.
//!
//! Modules in reading order; each owns one noun of the domain.

/// Identifiers, tokens and timestamps.
pub mod ids;
/// Domain paths and the subtree rule.
pub mod domain;
/// Encoded-query filters: parsing, rendering, evaluation.
pub mod condition;
/// Records, journal entries and record writes.
pub mod record;
/// Users, roles and permissions.
pub mod user;
/// Queue items, statuses and captured payloads.
pub mod queue;
/// Server config and process sync definitions files.
pub mod config;
/// Which capture definitions fire for a change, and what they carry.
pub mod capture;
/// The redb store: the only module that touches the database.
pub mod store;
/// The instance's TLS identity.
pub mod identity;
/// Creating an instance (`init`).
pub mod instance;
/// The admin API in domain terms: authentication, roles, domains.
pub mod api;
/// gRPC: generated types, the admin service and its client.
pub mod transport;
/// `serve`: running an instance and shutting it down.
pub mod server;
/// The benchmark command.
pub mod bench;
/// The command line.
pub mod cli;
