//! tongban's administrators' web console.
//!
//! Server-rendered HTML over HTTP/1.1 (axum and tower-http on hyper, maud
//! templates), meant for loopback or a management network: Argon2 password
//! sign-in, sessions with idle and absolute expiry,
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
//! [`ConsoleServer::bind`]; or mount [`Console::router`] in another axum
//! server (it carries every middleware but the connection limits), or feed
//! requests to [`Console::handle`].
//!
//! # Layers
//!
//! Each module uses only those in the layers below it, never one above:
//!
//! 1. `server`: the console's connection limits; serves
//!    [`Console::router`] with `tongban_trust::http`.
//! 2. `app`: the axum router and its middleware (security headers, `Host`
//!    allow-list, deadline, body limit); [`Console::handle`].
//! 3. `routes`: the handlers, and the extractors that check the session
//!    and the CSRF token before a handler runs.
//! 4. `views`: maud templates. They take what was read and return HTML;
//!    they never see a request, the store or the log.
//! 5. `state` ([`Console`]) over the model: `backend` (store, log, keys;
//!    recording an act), `auth` (passwords, sessions, throttle), `filter`,
//!    `overview` (traffic numbers), `verify_job`, `config`, `text`,
//!    `time`, `url`. The model knows nothing of HTTP or HTML.

mod app;
pub mod auth;
mod backend;
pub mod config;
mod filter;
mod overview;
mod routes;
mod server;
mod state;
pub mod text;
mod time;
mod url;
mod verify_job;
mod views;

#[cfg(test)]
mod tests;

pub use app::{ConsoleRequest, ConsoleResponse};
pub use auth::{hash_password, verify_password};
pub use backend::{ConsoleBackend, ConsoleError};
pub use config::{ConsoleSettings, DEFAULT_CONSOLE_ADDR, SettingsError};
pub use server::ConsoleServer;
pub use state::Console;
