-- Times are milliseconds since the Unix epoch; ids are UUIDs as lowercase text.

CREATE TABLE organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    created_at INTEGER NOT NULL
);

CREATE TABLE members (
    org_id TEXT NOT NULL REFERENCES organizations (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, user_id)
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    environment TEXT NOT NULL CHECK (environment IN ('live', 'test')),
    scope TEXT NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    -- SHA-256 of the key. The key itself is never stored.
    digest BLOB NOT NULL UNIQUE,
    hint TEXT NOT NULL,
    created_by TEXT NOT NULL REFERENCES users (id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    rate_limit INTEGER,
    last_used_at INTEGER,
    replaced_by TEXT,
    grace_ends_at INTEGER,
    deleted_at INTEGER
);
CREATE INDEX api_keys_by_org ON api_keys (org_id, created_at, id);

CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    instructions TEXT NOT NULL,
    model TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX agents_by_org ON agents (org_id, created_at, id);

CREATE TABLE audit_log (
    -- The row id orders records and keeps inserts cheap; `id` is the public identifier.
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    org_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    key_id TEXT,
    key_name TEXT,
    method TEXT,
    path TEXT,
    status INTEGER,
    request_id TEXT,
    target_id TEXT
);
CREATE INDEX audit_log_by_org ON audit_log (org_id, at);

-- Bumped by every change that can invalidate a verified key (delete, rotation, member
-- removal), whichever process makes it; running servers watch it to drop their cache.
CREATE TABLE change_counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT INTO change_counter (id, generation) VALUES (1, 0);
