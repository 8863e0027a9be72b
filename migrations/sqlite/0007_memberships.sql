-- A member removed and added back is a new membership. Each membership has an id that
-- role changes keep, and each key remembers the membership it was issued under: it works
-- only while that membership lasts, so a removal ends the member's keys for good.
--
-- SQLite adds no NOT NULL column without a constant default, so the table is rebuilt.
CREATE TABLE members_new (
    org_id TEXT NOT NULL REFERENCES organizations (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at INTEGER NOT NULL,
    id TEXT NOT NULL UNIQUE,
    PRIMARY KEY (org_id, user_id)
);
-- A random (version 4) UUID as lowercase text for each existing membership.
INSERT INTO members_new (org_id, user_id, role, created_at, id)
SELECT org_id, user_id, role, created_at,
       lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' ||
             substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (random() & 3), 1) ||
             substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))
FROM members;
DROP TABLE members;
ALTER TABLE members_new RENAME TO members;

-- NULL for a key whose owner was not a member when this migration ran: such a key had
-- stopped working already, and stays stopped even if its owner is added back.
ALTER TABLE api_keys ADD COLUMN membership_id TEXT;
UPDATE api_keys SET membership_id = (
    SELECT m.id FROM members m WHERE m.org_id = api_keys.org_id AND m.user_id = api_keys.created_by
);
