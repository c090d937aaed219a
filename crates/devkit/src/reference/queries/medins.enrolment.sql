-- The person's current enrolment: active or suspended. A terminated one
-- (death, moved away) or none at all answers "not enrolled".
SELECT
    CASE WHEN e.id_number IS NULL THEN FALSE ELSE TRUE END AS enrolled,
    COALESCE(e.scheme, 'none') AS scheme,
    COALESCE(e.status, 'none') AS status,
    e.enrolled_on AS since,
    COALESCE(e.assisted, FALSE) AS assisted,
    e.updated_at AS as_of
FROM (SELECT :id_number AS id_number) s
LEFT JOIN medical_enrolments e
       ON e.id_number = s.id_number
      AND e.status IN ('active', 'suspended')
      AND e.enrolled_on <= :today
