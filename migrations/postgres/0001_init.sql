-- The PostgreSQL schema: the same tables, columns and constraints as the SQLite migrations,
-- collapsed into one file. Times are milliseconds since the Unix epoch in `bigint`, as in
-- SQLite, so both backends convert them the same way; ids are native `uuid`, digests `bytea`.

CREATE TABLE organizations (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    created_at bigint NOT NULL
);

CREATE TABLE users (
    id uuid PRIMARY KEY,
    email text NOT NULL,
    created_at bigint NOT NULL
);
-- SQLite compares emails with COLLATE NOCASE; here the unique index is on the lower case.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE members (
    org_id uuid NOT NULL REFERENCES organizations (id),
    user_id uuid NOT NULL REFERENCES users (id),
    role text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at bigint NOT NULL,
    PRIMARY KEY (org_id, user_id)
);

CREATE TABLE api_keys (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    name text NOT NULL,
    environment text NOT NULL CHECK (environment IN ('live', 'test')),
    scope text NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    -- SHA-256 of the key. The key itself is never stored.
    digest bytea NOT NULL UNIQUE CHECK (octet_length(digest) = 32),
    hint text NOT NULL,
    created_by uuid NOT NULL REFERENCES users (id),
    created_at bigint NOT NULL,
    expires_at bigint,
    rate_limit bigint,
    last_used_at bigint,
    replaced_by uuid,
    grace_ends_at bigint,
    deleted_at bigint
);
CREATE INDEX api_keys_by_org ON api_keys (org_id, created_at, id);

CREATE TABLE agents (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    name text NOT NULL,
    description text NOT NULL,
    instructions text NOT NULL,
    model text,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);
CREATE INDEX agents_by_org ON agents (org_id, created_at, id);

CREATE TABLE audit_log (
    -- Orders records written in the same millisecond; `id` is the public identifier.
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id uuid NOT NULL,
    org_id uuid NOT NULL,
    at bigint NOT NULL,
    action text NOT NULL,
    actor text NOT NULL,
    key_id uuid,
    key_name text,
    method text,
    path text,
    status bigint,
    request_id text,
    target_id text
);
CREATE INDEX audit_log_by_org ON audit_log (org_id, at, seq);

-- Bumped by every change that can invalidate a verified key (delete, rotation, member
-- removal), whichever process makes it; running servers watch it to drop their cache.
CREATE TABLE change_counter (
    id integer PRIMARY KEY CHECK (id = 1),
    generation bigint NOT NULL
);
INSERT INTO change_counter (id, generation) VALUES (1, 0);

CREATE TABLE task_workspaces (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    name text NOT NULL,
    description text NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);
CREATE INDEX task_workspaces_by_org ON task_workspaces (org_id, created_at, id);

CREATE TABLE tasks (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    workspace_id uuid NOT NULL REFERENCES task_workspaces (id),
    title text NOT NULL,
    description text NOT NULL,
    status text NOT NULL CHECK (status IN ('open', 'in_progress', 'done', 'cancelled')),
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);
CREATE INDEX tasks_by_org ON tasks (org_id, created_at, id);
CREATE INDEX tasks_by_workspace ON tasks (org_id, workspace_id, created_at, id);

CREATE TABLE data_source_collections (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    name text NOT NULL,
    description text NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);
CREATE INDEX data_source_collections_by_org ON data_source_collections (org_id, created_at, id);

CREATE TABLE connections (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    name text NOT NULL,
    type text NOT NULL,
    visibility text NOT NULL CHECK (visibility IN ('private', 'shared')),
    created_by uuid NOT NULL REFERENCES users (id),
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);
CREATE INDEX connections_by_org ON connections (org_id, created_at, id);

CREATE TABLE conversations (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    agent_id uuid NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);
CREATE INDEX conversations_by_org ON conversations (org_id, created_at, id);

CREATE TABLE messages (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    conversation_id uuid NOT NULL REFERENCES conversations (id),
    role text NOT NULL CHECK (role IN ('user', 'assistant')),
    content text NOT NULL,
    created_at bigint NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (org_id, conversation_id, created_at, id);

-- File contents live on disk under the data directory, named by id; this is their metadata.
CREATE TABLE files (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    name text NOT NULL,
    size bigint NOT NULL,
    content_type text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX files_by_expiry ON files (expires_at);

-- One-time sessions a browser uses to talk to an agent without the API key. The secret is
-- stored as its SHA-256 digest only.
CREATE TABLE realtime_sessions (
    id uuid PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES organizations (id),
    agent_id uuid NOT NULL,
    conversation_id uuid NOT NULL,
    continues boolean NOT NULL,
    secret_digest bytea NOT NULL,
    key_id uuid NOT NULL,
    key_name text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    used_at bigint
);

-- SQLite's instr(haystack, needle), so that both backends share their search queries;
-- a one-expression SQL function, which the planner inlines.
CREATE FUNCTION instr(haystack text, needle text) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN strpos(haystack, needle);
