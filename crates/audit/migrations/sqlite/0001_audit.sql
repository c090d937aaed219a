-- One log per exchange node: rows are keyed by (node, idx), so nodes never share a counter.
CREATE TABLE audit_logs (
    node          TEXT    PRIMARY KEY NOT NULL,
    pruned_before INTEGER NOT NULL DEFAULT 0,
    created_us    INTEGER NOT NULL
);

CREATE TABLE audit_entries (
    node                 TEXT    NOT NULL,
    idx                  INTEGER NOT NULL,
    time_us              INTEGER NOT NULL,
    kind                 TEXT    NOT NULL,
    caller_org           TEXT    NOT NULL,
    caller_unit          TEXT    NOT NULL,
    operator             TEXT    NOT NULL,
    matter               TEXT    NOT NULL,
    case_number          TEXT    NOT NULL,
    evidence_type        TEXT    NOT NULL,
    department           TEXT    NOT NULL,
    subject              TEXT    NOT NULL,
    outcome_code         INTEGER NOT NULL,
    outcome_reason       TEXT    NOT NULL,
    latency_us           INTEGER NOT NULL,
    trace_id             TEXT    NOT NULL,
    released_fields_hash TEXT    NOT NULL,
    detail               TEXT    NOT NULL,
    leaf_hash            BLOB    NOT NULL,
    PRIMARY KEY (node, idx)
) WITHOUT ROWID;

-- Search is newest first; each filter gets an index ending in time.
CREATE INDEX audit_entries_time ON audit_entries (time_us, node, idx);
CREATE INDEX audit_entries_subject ON audit_entries (subject, time_us) WHERE subject <> '';
CREATE INDEX audit_entries_caller ON audit_entries (caller_org, caller_unit, time_us);
CREATE INDEX audit_entries_case ON audit_entries (case_number, time_us) WHERE case_number <> '';
CREATE INDEX audit_entries_matter ON audit_entries (matter, time_us);
CREATE INDEX audit_entries_evidence ON audit_entries (department, evidence_type, time_us);
CREATE INDEX audit_entries_failed ON audit_entries (outcome_code, time_us) WHERE outcome_code <> 0;

-- Perfect-subtree hashes (level >= 1; level 0 only for leaves kept after pruning).
CREATE TABLE audit_tree_nodes (
    node  TEXT    NOT NULL,
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB    NOT NULL,
    PRIMARY KEY (node, level, idx)
) WITHOUT ROWID;

CREATE TABLE audit_checkpoints (
    node      TEXT    NOT NULL,
    tree_size INTEGER NOT NULL,
    root      BLOB    NOT NULL,
    time_us   INTEGER NOT NULL,
    note      TEXT    NOT NULL,
    PRIMARY KEY (node, tree_size)
);
