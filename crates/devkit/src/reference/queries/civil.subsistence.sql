-- Receiving while a case covering the person is open today.
SELECT
    CASE WHEN a.case_no IS NULL THEN FALSE ELSE TRUE END AS receiving,
    a.start_date AS since,
    a.monthly_amount_yuan AS monthly_amount_yuan,
    a.next_review AS next_review,
    a.updated_at AS as_of
FROM (SELECT :id_number AS id_number) s
LEFT JOIN subsistence_allowances a
       ON a.id_number = s.id_number
      AND a.start_date <= :today
      AND (a.end_date IS NULL OR a.end_date >= :today)
