-- Civil affairs (民政): marriage register, death registration and the
-- subsistence allowance (低保). Portable DDL: runs on SQLite and PostgreSQL.
CREATE TABLE marriage_registrations (
    reg_no           TEXT PRIMARY KEY,
    id_number        TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('marriage', 'divorce')),
    registered_on    DATE NOT NULL,
    spouse_id_number TEXT
);

CREATE INDEX marriage_person ON marriage_registrations (id_number, registered_on);

CREATE TABLE death_registrations (
    id_number     TEXT PRIMARY KEY,
    date_of_death DATE NOT NULL,
    registered_at TIMESTAMPTZ NOT NULL
);

-- One row per household member covered by an allowance case.
CREATE TABLE subsistence_allowances (
    case_no             TEXT NOT NULL,
    id_number           TEXT NOT NULL,
    start_date          DATE NOT NULL,
    end_date            DATE,
    monthly_amount_yuan INTEGER NOT NULL,
    next_review         DATE,
    updated_at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (case_no, id_number)
);

CREATE INDEX subsistence_person ON subsistence_allowances (id_number);

CREATE TABLE seed_info (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
