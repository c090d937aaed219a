-- Market regulation (市场监督管理局) on MySQL/MariaDB: the same tables as
-- ../0001_market.sql, in MySQL's types (see
-- ../../police/mysql/0001_police.sql for the choices).
CREATE TABLE enterprises (
    credit_code                    VARCHAR(18) NOT NULL PRIMARY KEY,
    name                           VARCHAR(200) NOT NULL,
    status                         VARCHAR(20) NOT NULL
        CHECK (status IN ('in-operation', 'revoked', 'cancelled')),
    -- The registered legal representative (a person of the police register).
    legal_representative_id_number VARCHAR(18) NOT NULL,
    legal_representative_name      VARCHAR(64) NOT NULL,
    established_on                 DATE NOT NULL,
    registered_capital_yuan        BIGINT NOT NULL,
    updated_at                     DATETIME(6) NOT NULL,
    INDEX enterprises_legal_representative (legal_representative_id_number)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE abnormal_listings (
    listing_no  VARCHAR(32) NOT NULL PRIMARY KEY,
    credit_code VARCHAR(18) NOT NULL,
    listed_on   DATE NOT NULL,
    reason      VARCHAR(200) NOT NULL,
    -- NULL while the enterprise is on the list.
    removed_on  DATE,
    updated_at  DATETIME(6) NOT NULL,
    INDEX abnormal_listings_enterprise (credit_code, listed_on),
    FOREIGN KEY (credit_code) REFERENCES enterprises (credit_code)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- `key` is a reserved word in MySQL.
CREATE TABLE seed_info (
    `key` VARCHAR(64) NOT NULL PRIMARY KEY,
    value VARCHAR(255) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
