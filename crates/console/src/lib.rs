//! tongban's administrators' web console.
//!
//! Server-rendered HTML over HTTP/1.1, meant for loopback or a management
//! network: Argon2 password sign-in, sessions with idle and absolute expiry,
//! CSRF tokens on every form, strict security headers (no inline script),
//! every asset embedded. Pages: overview (charts), search, entry detail with
//! its inclusion proof, subject report (printable), integrity (checkpoints and
//! a background "verify now"). Every administrator's act is appended to the
//! audit log as an `AdminAction` before the page is answered.
//!
//! The exchange serves it when configured (see `tongban_exchange::console`):
//!
//! ```toml
//! [console]
//! listen = "127.0.0.1:9465"      # the default; keep it on loopback or a management network
//! allowed_hosts = ["console.example:9465"]  # Host values answered; others get 421
//!                                # (default: the bound ip:port and localhost:port)
//! secure_cookie = false          # true behind a TLS-terminating proxy
//! session_idle_secs = 1800       # 30 min idle ...
//! session_max_secs = 28800       # ... 8 h absolute
//! verifier_keys = ["other-nodes.pub"]  # checkpoint keys of further nodes sharing the store
//!
//! [console.users]                # `tongban console hash-password --user alice`
//! alice = "$argon2id$v=19$m=19456,t=2,p=1$..."
//! ```
//!
//! Embedding it elsewhere: build a [`ConsoleBackend`] (store, pseudonymiser,
//! the node's `AuditLog`, pinned keys), then [`Console::new`] and
//! [`ConsoleServer::bind`], or feed requests to [`Console::handle`].

mod app;
pub mod auth;
pub mod config;
pub mod html;
mod overview;
mod pages;
mod server;
pub mod text;
mod verify_job;

pub use app::{Console, ConsoleBackend, ConsoleError, ConsoleRequest, ConsoleResponse};
pub use auth::{hash_password, verify_password};
pub use config::{ConsoleSettings, DEFAULT_CONSOLE_ADDR};
pub use html::escape_html;
pub use server::ConsoleServer;
