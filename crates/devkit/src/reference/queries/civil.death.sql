SELECT
    CASE WHEN d.id_number IS NULL THEN FALSE ELSE TRUE END AS deceased,
    d.date_of_death AS date_of_death,
    d.registered_at AS as_of
FROM (SELECT :id_number AS id_number) s
LEFT JOIN death_registrations d ON d.id_number = s.id_number
