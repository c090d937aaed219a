SELECT
    h.region_code AS region_code,
    g.name_zh AS district,
    h.address AS registered_address,
    CASE WHEN h.head_id_number = r.id_number THEN TRUE ELSE FALSE END AS household_head,
    r.updated_at AS as_of
FROM residents r
JOIN households h ON h.household_no = r.household_no
JOIN regions g ON g.region_code = h.region_code
WHERE r.id_number = :id_number
