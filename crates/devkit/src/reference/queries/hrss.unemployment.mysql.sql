-- Eligible iff at least 12 insured months, separated, registered unemployed
-- (and not drawing a pension). The reason says which condition decided.
-- MySQL/MariaDB: CONCAT, as `||` is OR there by default and there is no
-- CAST(... AS TEXT).
SELECT
    CASE WHEN u.id_number IS NULL OR p.id_number IS NOT NULL THEN FALSE
         WHEN u.insured_months >= 12 AND u.separation_date IS NOT NULL AND u.registered_unemployed
         THEN TRUE
         ELSE FALSE END AS eligible,
    CASE WHEN p.id_number IS NOT NULL
         THEN 'Not eligible: retired and drawing a basic pension.'
         WHEN u.id_number IS NULL
         THEN 'Not eligible: no unemployment-insurance contributions on record.'
         WHEN u.insured_months < 12
         THEN CONCAT('Not eligible: ', u.insured_months, ' insured months, at least 12 are required.')
         WHEN u.separation_date IS NULL
         THEN 'Not eligible: still employed, no separation on record.'
         WHEN NOT u.registered_unemployed
         THEN 'Not eligible: separated but not registered as unemployed with a public employment service.'
         ELSE CONCAT('Eligible: ', u.insured_months, ' insured months, separated and registered as unemployed.')
         END AS reason,
    COALESCE(u.insured_months, 0) AS insured_months,
    u.separation_date AS separation_date,
    COALESCE(u.registered_unemployed, FALSE) AS registered_unemployed,
    u.updated_at AS as_of
FROM (SELECT :id_number AS id_number) s
LEFT JOIN unemployment_insurance u ON u.id_number = s.id_number
LEFT JOIN pensions p ON p.id_number = s.id_number
