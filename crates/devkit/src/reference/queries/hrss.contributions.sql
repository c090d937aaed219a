SELECT
    COALESCE(SUM(months), 0) AS total_months,
    MIN(first_month) AS first_month,
    MAX(last_month) AS last_month,
    COALESCE(SUM(CASE WHEN ongoing THEN 1 ELSE 0 END), 0) > 0 AS contributing,
    MAX(posted_at) AS as_of
FROM contribution_spells
WHERE id_number = :id_number
