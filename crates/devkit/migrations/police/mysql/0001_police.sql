-- Police (公安) register on MySQL/MariaDB: the same tables as ../0001_police.sql,
-- in MySQL's types. VARCHAR keys (MySQL cannot index unbounded TEXT),
-- DATETIME(6) in UTC for TIMESTAMPTZ, BOOLEAN is TINYINT(1), and a binary
-- collation so text compares as on SQLite and PostgreSQL (case-sensitive).
CREATE TABLE regions (
    region_code VARCHAR(6) NOT NULL PRIMARY KEY,
    name        VARCHAR(64) NOT NULL,
    name_zh     VARCHAR(64) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

INSERT INTO regions (region_code, name, name_zh) VALUES
    ('510402', 'East District', '东区'),
    ('510403', 'West District', '西区'),
    ('510411', 'Renhe District', '仁和区'),
    ('510421', 'Miyi County', '米易县'),
    ('510422', 'Yanbian County', '盐边县');

CREATE TABLE households (
    household_no   VARCHAR(32) NOT NULL PRIMARY KEY,
    region_code    VARCHAR(6) NOT NULL,
    address        VARCHAR(255) NOT NULL,
    head_id_number VARCHAR(18) NOT NULL,
    FOREIGN KEY (region_code) REFERENCES regions (region_code)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE residents (
    id_number    VARCHAR(18) NOT NULL PRIMARY KEY,
    name         VARCHAR(64) NOT NULL,
    sex          VARCHAR(1) NOT NULL CHECK (sex IN ('M', 'F')),
    birth_date   DATE NOT NULL,
    household_no VARCHAR(32) NOT NULL,
    alive        BOOLEAN NOT NULL,
    updated_at   DATETIME(6) NOT NULL,
    FOREIGN KEY (household_no) REFERENCES households (household_no)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE INDEX residents_household ON residents (household_no);

CREATE TABLE id_cards (
    card_no     VARCHAR(32) NOT NULL PRIMARY KEY,
    id_number   VARCHAR(18) NOT NULL,
    issued_on   DATE NOT NULL,
    -- NULL: long-term card (长期).
    valid_until DATE,
    -- "expired" is derived from valid_until at query time.
    status      VARCHAR(16) NOT NULL CHECK (status IN ('valid', 'lost', 'cancelled')),
    updated_at  DATETIME(6) NOT NULL,
    FOREIGN KEY (id_number) REFERENCES residents (id_number)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE INDEX id_cards_holder ON id_cards (id_number, issued_on);

-- `key` is a reserved word in MySQL.
CREATE TABLE seed_info (
    `key` VARCHAR(64) NOT NULL PRIMARY KEY,
    value VARCHAR(255) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
