-- The policy version that decided each act. Rows written before it existed
-- keep '' and so keep their canonical encoding v1 (entry.rs): they verify as before.
ALTER TABLE audit_entries ADD COLUMN policy_version TEXT NOT NULL DEFAULT '';
