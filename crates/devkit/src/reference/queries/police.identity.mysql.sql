-- The holder's latest card; "expired" when a valid card's term has passed.
-- MySQL/MariaDB: names compare as bytes, because its collations ignore
-- trailing spaces ('陈晓燕 ' would match '陈晓燕'); SQLite and PostgreSQL
-- compare exactly.
SELECT
    CASE WHEN :name IS NULL THEN NULL
         WHEN CAST(r.name AS BINARY) = CAST(:name AS BINARY) THEN TRUE
         ELSE FALSE END AS name_matches,
    CASE WHEN c.status = 'valid' AND c.valid_until IS NOT NULL AND c.valid_until < :today
         THEN 'expired'
         ELSE c.status END AS card_status,
    c.valid_until AS card_valid_until,
    r.alive AS alive,
    CASE WHEN c.updated_at > r.updated_at THEN c.updated_at ELSE r.updated_at END AS as_of
FROM residents r
JOIN id_cards c ON c.id_number = r.id_number
WHERE r.id_number = :id_number
  AND c.issued_on = (SELECT MAX(x.issued_on) FROM id_cards x WHERE x.id_number = r.id_number)
