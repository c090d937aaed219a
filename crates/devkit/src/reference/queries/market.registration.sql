-- The register's entry for the enterprise: its status, facts, and whether
-- the presented name and the case's legal representative are the registered ones.
SELECT
    CASE WHEN :name IS NULL THEN NULL
         WHEN e.name = :name THEN TRUE
         ELSE FALSE END AS name_matches,
    e.status AS status,
    CASE WHEN :legal_representative_id_number IS NULL THEN NULL
         WHEN e.legal_representative_id_number = :legal_representative_id_number THEN TRUE
         ELSE FALSE END AS legal_representative_matches,
    e.established_on AS established_on,
    e.registered_capital_yuan AS registered_capital_yuan,
    e.updated_at AS as_of
FROM enterprises e
WHERE e.credit_code = :credit_code
