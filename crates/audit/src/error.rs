//! The audit log's error, shared by the writer (`log`), the read side
//! (`read`) and `verify`, so none of them depends on another for it.

use crate::note::NoteError;
use crate::store::StoreError;

/// Errors of the audit log. Any of them on `append` means: release nothing.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit store unavailable: {0}")]
    Unavailable(String),
    #[error("audit log is shut down")]
    Closed,
    #[error("invalid node id {0:?}: use 1-64 characters of A-Z a-z 0-9 . _ -")]
    BadNode(String),
    #[error("entry is for node {entry:?} but this log is node {log:?}")]
    WrongNode { entry: String, log: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Note(#[from] NoteError),
    #[error("stored log of node {node:?} is inconsistent: {detail}")]
    Inconsistent { node: String, detail: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}
