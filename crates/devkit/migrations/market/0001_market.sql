-- Market regulation (市场监督管理局) register: enterprises and the abnormal
-- operations list (经营异常名录). Portable DDL: runs on SQLite and PostgreSQL
-- (and on MySQL/MariaDB: no DDL beyond standard types and constraints).
CREATE TABLE enterprises (
    credit_code                    VARCHAR(18) PRIMARY KEY,
    name                           VARCHAR(200) NOT NULL,
    status                         VARCHAR(20) NOT NULL
        CHECK (status IN ('in-operation', 'revoked', 'cancelled')),
    -- The registered legal representative (a person of the police register).
    legal_representative_id_number VARCHAR(18) NOT NULL,
    legal_representative_name      VARCHAR(64) NOT NULL,
    established_on                 DATE NOT NULL,
    registered_capital_yuan        BIGINT NOT NULL,
    updated_at                     TIMESTAMP WITH TIME ZONE NOT NULL
);

CREATE INDEX enterprises_legal_representative ON enterprises (legal_representative_id_number);

CREATE TABLE abnormal_listings (
    listing_no  VARCHAR(32) PRIMARY KEY,
    credit_code VARCHAR(18) NOT NULL REFERENCES enterprises (credit_code),
    listed_on   DATE NOT NULL,
    reason      VARCHAR(200) NOT NULL,
    -- NULL while the enterprise is on the list.
    removed_on  DATE,
    updated_at  TIMESTAMP WITH TIME ZONE NOT NULL
);

CREATE INDEX abnormal_listings_enterprise ON abnormal_listings (credit_code, listed_on);

CREATE TABLE seed_info (
    key   VARCHAR(64) PRIMARY KEY,
    value VARCHAR(200) NOT NULL
);
