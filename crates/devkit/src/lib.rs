//! tongban's development tooling, kept apart from the product so no
//! production crate links it: the exchange, trust, adapter, audit, core,
//! proto and telemetry crates never depend on this one; the `tongban`
//! binary, the benchmark and the tests do.
//!
//! - [`pki`]: a development PKI (a CA plus certificates for every party of
//!   the reference deployment, invented organisations).
//! - [`reference`]: the reference departments (police, civil affairs,
//!   human resources & social security, healthcare security): schemas, SQL, the deterministic
//!   synthetic population and the story residents.
//! - [`local`]: a complete mutual-TLS deployment on 127.0.0.1 (PKI,
//!   reference adapters, policy, one exchange node), for `tongban demo`, the
//!   end-to-end tests and the console's browser test.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tongban_adapter::RunningAdapter;
//! use tongban_devkit::reference;
//! // Migrates, seeds (idempotently) and prepares the police department.
//! let service = reference::service(reference::Dept::Police, "sqlite://police.db?mode=rwc").await?;
//! let running = RunningAdapter::spawn(service, "127.0.0.1:0".parse()?).await?;
//! println!("police adapter on {}", running.addr());
//! # Ok(()) }
//! ```

pub mod local;
pub mod pki;
pub mod reference;
