-- Police (公安) register: residents, household registration (户籍) and
-- identity cards. Portable DDL: runs on SQLite and PostgreSQL.
CREATE TABLE regions (
    region_code TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    name_zh     TEXT NOT NULL
);

INSERT INTO regions (region_code, name, name_zh) VALUES
    ('510402', 'East District', '东区'),
    ('510403', 'West District', '西区'),
    ('510411', 'Renhe District', '仁和区'),
    ('510421', 'Miyi County', '米易县'),
    ('510422', 'Yanbian County', '盐边县');

CREATE TABLE households (
    household_no   TEXT PRIMARY KEY,
    region_code    TEXT NOT NULL REFERENCES regions (region_code),
    address        TEXT NOT NULL,
    head_id_number TEXT NOT NULL
);

CREATE TABLE residents (
    id_number    TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    sex          TEXT NOT NULL CHECK (sex IN ('M', 'F')),
    birth_date   DATE NOT NULL,
    household_no TEXT NOT NULL REFERENCES households (household_no),
    alive        BOOLEAN NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

CREATE INDEX residents_household ON residents (household_no);

CREATE TABLE id_cards (
    card_no     TEXT PRIMARY KEY,
    id_number   TEXT NOT NULL REFERENCES residents (id_number),
    issued_on   DATE NOT NULL,
    -- NULL: long-term card (长期).
    valid_until DATE,
    -- "expired" is derived from valid_until at query time.
    status      TEXT NOT NULL CHECK (status IN ('valid', 'lost', 'cancelled')),
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX id_cards_holder ON id_cards (id_number, issued_on);

CREATE TABLE seed_info (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
