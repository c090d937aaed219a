-- Human resources and social security (人社): unemployment insurance,
-- pensions with qualification certifications, and pension-insurance
-- contribution spells. Portable DDL: runs on SQLite and PostgreSQL.
CREATE TABLE unemployment_insurance (
    id_number             TEXT PRIMARY KEY,
    insured_months        INTEGER NOT NULL,
    separation_date       DATE,
    registered_unemployed BOOLEAN NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL
);

CREATE TABLE pensions (
    id_number  TEXT PRIMARY KEY,
    retired_on DATE NOT NULL,
    receiving  BOOLEAN NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- Pension qualification (proof of life) certifications, 养老金资格认证.
CREATE TABLE qualification_certifications (
    id_number    TEXT NOT NULL,
    certified_on DATE NOT NULL,
    channel      TEXT NOT NULL,
    PRIMARY KEY (id_number, certified_on)
);

-- A spell of pension-insurance contributions with one employer.
CREATE TABLE contribution_spells (
    id_number   TEXT NOT NULL,
    employer    TEXT NOT NULL,
    first_month TEXT NOT NULL,
    last_month  TEXT NOT NULL,
    months      INTEGER NOT NULL,
    ongoing     BOOLEAN NOT NULL,
    posted_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (id_number, first_month)
);

CREATE TABLE seed_info (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
