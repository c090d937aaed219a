//! Mutual TLS over real sockets, in one test binary (one link instead of
//! one per file). Each file is a module; filter with its name, e.g.
//! `cargo test -p tongban-trust --test trust mtls::`.

mod idle_sockets;
mod mtls;
