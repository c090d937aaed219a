//! The console's integration tests in one test binary (one link instead of
//! one per file). Each file is a module; filter with its name, e.g.
//! `cargo test -p tongban-console --test console wire::`.

mod browser;
mod host;
mod wire;
