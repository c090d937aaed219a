//! tongban's tamper-evident, durable audit log.
//!
//! Entries are hashed into a per-node RFC 6962 Merkle tree, committed in
//! batches by one writer task per node (group commit; an append returns only
//! after its transaction commits), and covered by Ed25519-signed C2SP
//! checkpoints. Administrators search, export, prove and verify; old entries
//! are pruned while checkpoints and subtree hashes stay. No gRPC here.

pub mod cosign;
pub mod entry;
pub mod error;
pub mod feed;
pub mod log;
pub mod map;
pub mod merkle;
pub mod note;
pub mod read;
pub mod store;
pub mod transparency;
pub mod verify;

pub use cosign::{
    CosignError, Cosigned, WitnessKey, WitnessSigner, has_cosignature, verify_cosignatures,
};
pub use entry::{
    AuditEntry, EntryKind, MAX_ENTRY_BYTES, SUBJECT_PROOF_LEN, SubjectProof, SubjectProofError,
    SubjectPseudonymizer, bounded_clean_text, escape_controls, verify_subject_proof,
};
pub use feed::{Feed, FeedCursor, FeedEvent, FeedOptions, FeedStart};
pub use log::{AuditConfig, AuditError, AuditLog, AuditStats, Receipt};
pub use merkle::Hash;
pub use note::{Checkpoint, Keyring, LogSigner, VerifierKey, origin_for_node};
pub use read::{
    ConsistencyProof, InclusionProof, MIN_RETENTION_DAYS, PageRequest, PruneRecord, PruneReport,
    PruneRequest, SearchPage, SubjectAccess, SubjectReport, consistency_proof, export_jsonl,
    inclusion_proof, root_at, search, subject_report,
};
pub use store::{
    AuditStore, Cursor, LoggedEntry, PostgresStore, SearchFilter, SqliteStore, StoreError,
};
pub use verify::{Finding, Location, Progress, Severity, VerifyOptions, VerifyReport, verify};
