-- No registration on record means unmarried; a marriage whose spouse has a
-- registered death means widowed.
SELECT
    CASE WHEN m.kind IS NULL THEN 'unmarried'
         WHEN m.kind = 'divorce' THEN 'divorced'
         WHEN d.date_of_death IS NOT NULL THEN 'widowed'
         ELSE 'married' END AS marital_status,
    CASE WHEN d.date_of_death IS NOT NULL THEN d.date_of_death
         ELSE m.registered_on END AS status_since
FROM (SELECT :id_number AS id_number) s
LEFT JOIN marriage_registrations m
       ON m.id_number = s.id_number
      AND m.registered_on = (SELECT MAX(x.registered_on) FROM marriage_registrations x
                             WHERE x.id_number = s.id_number)
LEFT JOIN death_registrations d
       ON m.kind = 'marriage' AND d.id_number = m.spouse_id_number
