-- Entry encoding: 3 for entries written since citizens can check their
-- history; 0 for earlier rows, whose version follows from their content.
ALTER TABLE audit_entries ADD COLUMN encoding INTEGER NOT NULL DEFAULT 0;

-- The subject map at the node's latest checkpoint (tongban_audit::map):
-- its internal nodes (subtrees holding two leaves or more), each with both
-- children; a child that is a single leaf names its key.
CREATE TABLE audit_map_nodes (
    node       TEXT NOT NULL,
    path       BLOB NOT NULL,
    left_hash  BLOB NOT NULL,
    left_leaf  BLOB,
    right_hash BLOB NOT NULL,
    right_leaf BLOB,
    PRIMARY KEY (node, path)
) WITHOUT ROWID;

-- Its leaves: per subject key, the count of the subject's entries and the
-- head of the chain over them, as of the latest checkpoint.
CREATE TABLE audit_map_leaves (
    node       TEXT    NOT NULL,
    subject    BLOB    NOT NULL,
    count      INTEGER NOT NULL,
    head       BLOB    NOT NULL,
    PRIMARY KEY (node, subject)
) WITHOUT ROWID;

-- Per subject, the chain state after its last pruned entry, so retained
-- entries still chain on to the map's head after pruning.
CREATE TABLE audit_map_pruned (
    node             TEXT    NOT NULL,
    subject          BLOB    NOT NULL,
    count            INTEGER NOT NULL,
    head_before_last BLOB    NOT NULL,
    last_idx         INTEGER NOT NULL,
    last_leaf        BLOB    NOT NULL,
    PRIMARY KEY (node, subject)
) WITHOUT ROWID;

-- Sealed accesses an administrator disclosed before their date (the act
-- itself is an audit entry).
CREATE TABLE audit_unsealed (
    node     TEXT    NOT NULL,
    idx      INTEGER NOT NULL,
    time_us  INTEGER NOT NULL,
    PRIMARY KEY (node, idx)
) WITHOUT ROWID;
