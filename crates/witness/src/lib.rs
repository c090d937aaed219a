//! `tongban witness`: a small server another party runs (say, the city's
//! supervision commission) that cosigns tongban's audit-log checkpoints
//! after checking each is consistent with the last one it cosigned
//! (C2SP tlog-witness and tlog-cosignature/v1), and reports split views;
//! plus the exchange side, a [`Collector`] that asks witnesses for
//! cosignatures and stores them beside the node's checkpoints.

pub mod collector;
pub mod request;
pub mod server;
pub mod state;
pub mod witness;

pub use collector::{
    Collector, CollectorConfig, CollectorError, CollectorHandle, CollectorStats, WitnessEndpoint,
};
pub use request::{AddCheckpoint, CheckpointHead, MAX_PROOF_LINES, MAX_REQUEST_BYTES};
pub use server::WitnessServer;
pub use state::{Latest, StateError, WitnessState};
pub use witness::{Witness, WitnessError, WitnessStats};
