-- Entry encoding: 3 for entries written since citizens can check their
-- history; 0 for earlier rows, whose version follows from their content.
ALTER TABLE audit_entries ADD COLUMN encoding INTEGER NOT NULL DEFAULT 0;

-- The subject map at the node's latest checkpoint (tongban_audit::map):
-- its internal nodes (subtrees holding two leaves or more), each with both
-- children; a child that is a single leaf names its key.
CREATE TABLE audit_map_nodes (
    node       TEXT NOT NULL,
    path       BYTEA NOT NULL,
    left_hash  BYTEA NOT NULL,
    left_leaf  BYTEA,
    right_hash BYTEA NOT NULL,
    right_leaf BYTEA,
    PRIMARY KEY (node, path)
);

-- Its leaves: per subject key, the count of the subject's entries and the
-- head of the chain over them, as of the latest checkpoint.
CREATE TABLE audit_map_leaves (
    node       TEXT    NOT NULL,
    subject    BYTEA    NOT NULL,
    count      BIGINT NOT NULL,
    head       BYTEA    NOT NULL,
    PRIMARY KEY (node, subject)
);

-- Per subject, the chain state after its last pruned entry, so retained
-- entries still chain on to the map's head after pruning.
CREATE TABLE audit_map_pruned (
    node             TEXT    NOT NULL,
    subject          BYTEA    NOT NULL,
    count            BIGINT NOT NULL,
    head_before_last BYTEA    NOT NULL,
    last_idx         BIGINT NOT NULL,
    last_leaf        BYTEA    NOT NULL,
    PRIMARY KEY (node, subject)
);

-- Sealed accesses an administrator disclosed before their date (the act
-- itself is an audit entry).
CREATE TABLE audit_unsealed (
    node     TEXT    NOT NULL,
    idx      BIGINT NOT NULL,
    time_us  BIGINT NOT NULL,
    PRIMARY KEY (node, idx)
);
