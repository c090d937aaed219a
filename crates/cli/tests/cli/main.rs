//! The tests that run the real `tongban` binary, in one test binary (one
//! link instead of one per file). Each file is a module; filter with its
//! name, e.g. `cargo test -p tongban-cli --test cli lifecycle::`.

mod common;

mod audit_admin;
mod audit_cli;
mod audit_crash;
mod audit_entries;
mod audit_postgres;
mod audit_watch;
mod bench;
mod console;
mod demo;
mod lifecycle;
mod matters;
mod policy_tools;
mod transparency;
