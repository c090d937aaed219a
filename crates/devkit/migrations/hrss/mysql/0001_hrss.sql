-- Human resources and social security (人社) on MySQL/MariaDB: the same
-- tables as ../0001_hrss.sql, in MySQL's types (see
-- ../../police/mysql/0001_police.sql for the choices).
CREATE TABLE unemployment_insurance (
    id_number             VARCHAR(18) NOT NULL PRIMARY KEY,
    insured_months        INTEGER NOT NULL,
    separation_date       DATE,
    registered_unemployed BOOLEAN NOT NULL,
    updated_at            DATETIME(6) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE pensions (
    id_number  VARCHAR(18) NOT NULL PRIMARY KEY,
    retired_on DATE NOT NULL,
    receiving  BOOLEAN NOT NULL,
    updated_at DATETIME(6) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Pension qualification (proof of life) certifications, 养老金资格认证.
CREATE TABLE qualification_certifications (
    id_number    VARCHAR(18) NOT NULL,
    certified_on DATE NOT NULL,
    channel      VARCHAR(32) NOT NULL,
    PRIMARY KEY (id_number, certified_on)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- A spell of pension-insurance contributions with one employer.
CREATE TABLE contribution_spells (
    id_number   VARCHAR(18) NOT NULL,
    employer    VARCHAR(255) NOT NULL,
    first_month VARCHAR(7) NOT NULL,
    last_month  VARCHAR(7) NOT NULL,
    months      INTEGER NOT NULL,
    ongoing     BOOLEAN NOT NULL,
    posted_at   DATETIME(6) NOT NULL,
    PRIMARY KEY (id_number, first_month)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- `key` is a reserved word in MySQL.
CREATE TABLE seed_info (
    `key` VARCHAR(64) NOT NULL PRIMARY KEY,
    value VARCHAR(255) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
