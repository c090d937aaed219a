-- Healthcare security (医疗保障) on MySQL/MariaDB: the same tables as
-- ../0001_medins.sql, in MySQL's types (see
-- ../../police/mysql/0001_police.sql for the choices).
CREATE TABLE medical_enrolments (
    id_number    VARCHAR(18) NOT NULL PRIMARY KEY,
    scheme       VARCHAR(16) NOT NULL CHECK (scheme IN ('employee', 'resident')),
    enrolled_on  DATE NOT NULL,
    status       VARCHAR(16) NOT NULL CHECK (status IN ('active', 'suspended', 'terminated')),
    status_since DATE NOT NULL,
    -- Contributions paid by medical assistance (困难群众参保资助).
    assisted     BOOLEAN NOT NULL,
    updated_at   DATETIME(6) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- `key` is a reserved word in MySQL.
CREATE TABLE seed_info (
    `key` VARCHAR(64) NOT NULL PRIMARY KEY,
    value VARCHAR(255) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
