-- Civil affairs (民政) on MySQL/MariaDB: the same tables as ../0001_civil.sql,
-- in MySQL's types (see ../../police/mysql/0001_police.sql for the choices).
CREATE TABLE marriage_registrations (
    reg_no           VARCHAR(32) NOT NULL PRIMARY KEY,
    id_number        VARCHAR(18) NOT NULL,
    kind             VARCHAR(16) NOT NULL CHECK (kind IN ('marriage', 'divorce')),
    registered_on    DATE NOT NULL,
    spouse_id_number VARCHAR(18)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE INDEX marriage_person ON marriage_registrations (id_number, registered_on);

CREATE TABLE death_registrations (
    id_number     VARCHAR(18) NOT NULL PRIMARY KEY,
    date_of_death DATE NOT NULL,
    registered_at DATETIME(6) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per household member covered by an allowance case.
CREATE TABLE subsistence_allowances (
    case_no             VARCHAR(64) NOT NULL,
    id_number           VARCHAR(18) NOT NULL,
    start_date          DATE NOT NULL,
    end_date            DATE,
    monthly_amount_yuan INTEGER NOT NULL,
    next_review         DATE,
    updated_at          DATETIME(6) NOT NULL,
    PRIMARY KEY (case_no, id_number)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE INDEX subsistence_person ON subsistence_allowances (id_number);

-- `key` is a reserved word in MySQL.
CREATE TABLE seed_info (
    `key` VARCHAR(64) NOT NULL PRIMARY KEY,
    value VARCHAR(255) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
