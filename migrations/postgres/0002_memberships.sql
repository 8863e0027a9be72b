-- A member removed and added back is a new membership. Each membership has an id that
-- role changes keep, and each key remembers the membership it was issued under: it works
-- only while that membership lasts, so a removal ends the member's keys for good.
--
-- The default fills the existing rows, one UUID each; new rows get theirs from the
-- store, as in SQLite, so the default goes again.
ALTER TABLE members ADD COLUMN id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid();
ALTER TABLE members ALTER COLUMN id DROP DEFAULT;

-- NULL for a key whose owner was not a member when this migration ran: such a key had
-- stopped working already, and stays stopped even if its owner is added back.
ALTER TABLE api_keys ADD COLUMN membership_id uuid;
UPDATE api_keys k SET membership_id = m.id
FROM members m WHERE m.org_id = k.org_id AND m.user_id = k.created_by;
