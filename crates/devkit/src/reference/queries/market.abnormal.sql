-- Whether the enterprise is on the abnormal operations list now: its open
-- listing, if any (an enterprise the register does not hold is NOT_FOUND).
SELECT
    CASE WHEN l.listing_no IS NULL THEN FALSE ELSE TRUE END AS listed,
    l.listed_on AS listed_on,
    l.reason AS reason,
    CASE WHEN l.updated_at IS NULL THEN e.updated_at ELSE l.updated_at END AS as_of
FROM enterprises e
LEFT JOIN abnormal_listings l
    ON l.credit_code = e.credit_code AND l.removed_on IS NULL
WHERE e.credit_code = :credit_code
