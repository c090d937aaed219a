//! tongban's tamper-evident, durable audit log.
//!
//! Entries are hashed into a per-node RFC 6962 Merkle tree, committed in
//! batches by one writer task per node, and covered by Ed25519-signed C2SP
//! checkpoints. Administrators search, export, prove and verify; old entries
//! are pruned while checkpoints and subtree hashes stay. No gRPC here.

pub mod entry;
pub mod merkle;
pub mod note;
pub mod store;

pub use entry::{AuditEntry, EntryKind, SubjectPseudonymizer, released_fields_hash};
pub use merkle::Hash;
pub use note::{Checkpoint, Keyring, LogSigner, VerifierKey, origin_for_node};
pub use store::{AuditStore, LoggedEntry, PostgresStore, SqliteStore, StoreError};
