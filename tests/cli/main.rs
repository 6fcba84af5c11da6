//! Integration tests: real `procsync` processes, driven through the CLI and
//! the admin API, checked the way an operator would check them.

#![allow(
    clippy::too_many_lines,
    reason = "a test is one scenario, told from start to end"
)]

mod support;
mod faults;

mod alerts;
mod attachments;
mod bench;
mod browse;
mod browser;
mod capture;
mod conflicts;
mod convergence;
mod damage;
mod dashboard;
mod definitions;
mod demo;
mod disk;
mod durability;
mod enrol;
mod errors;
mod guarantees;
mod instance;
mod links;
mod load;
mod nat;
mod operating;
mod progress;
mod reconcile;
mod records;
mod shell;
mod sync;
mod tidy;
mod upgrade;
mod users;
