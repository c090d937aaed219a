//! tongban's administrators' web console.
//!
//! Server-rendered HTML over HTTP/1.1, meant for loopback or a management
//! network: Argon2 password sign-in, sessions with idle and absolute expiry,
//! CSRF tokens on every form, strict security headers (no inline script),
//! every asset embedded. Pages: overview (charts), search, entry detail with
//! its inclusion proof, subject report (printable), integrity (checkpoints and
//! a background "verify now"). Every administrator's act is appended to the
//! audit log as an `AdminAction` before the page is answered.

mod app;
pub mod auth;
pub mod config;
pub mod html;
mod overview;
mod pages;
mod server;
mod verify_job;

pub use app::{Console, ConsoleBackend, ConsoleError, ConsoleRequest, ConsoleResponse};
pub use auth::{hash_password, verify_password};
pub use config::{ConsoleSettings, DEFAULT_CONSOLE_ADDR};
pub use html::escape_html;
pub use server::ConsoleServer;
