//! The audit log's integration tests in one test binary (one link instead
//! of one per file). Each file is a module; filter with its name, e.g.
//! `cargo test -p tongban-audit --test audit tamper::`.

mod common;

mod cosign;
mod crash;
mod log;
mod map;
mod tamper;
mod transparency;
