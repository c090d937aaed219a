-- Certification is due for a paid pension with no certification in the
-- 12 months up to today.
SELECT
    CASE WHEN p.id_number IS NULL THEN FALSE ELSE TRUE END AS retired,
    COALESCE(p.receiving, FALSE) AS receiving,
    q.last_date AS last_qualification_date,
    CASE WHEN p.id_number IS NULL OR NOT p.receiving THEN FALSE
         WHEN q.last_date IS NULL OR q.last_date <= DATE_SUB(:today, INTERVAL 12 MONTH) THEN TRUE
         ELSE FALSE END AS qualification_due,
    p.updated_at AS as_of
FROM (SELECT :id_number AS id_number) s
LEFT JOIN pensions p ON p.id_number = s.id_number
LEFT JOIN (SELECT id_number, MAX(certified_on) AS last_date
           FROM qualification_certifications GROUP BY id_number) q
       ON q.id_number = s.id_number
