-- Healthcare security (医疗保障): basic medical insurance enrolment, one
-- row per insured person — employee (职工医保) or urban and rural resident
-- (城乡居民医保) scheme; active, suspended (contributions stopped) or
-- terminated (death, moved away). Portable DDL: SQLite and PostgreSQL.
CREATE TABLE medical_enrolments (
    id_number    TEXT PRIMARY KEY,
    scheme       TEXT NOT NULL CHECK (scheme IN ('employee', 'resident')),
    enrolled_on  DATE NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'terminated')),
    status_since DATE NOT NULL,
    -- Contributions paid by medical assistance (困难群众参保资助).
    assisted     BOOLEAN NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE seed_info (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
