-- One-time sessions a browser uses to talk to an agent without the API key. The secret is
-- stored as its SHA-256 digest only.
CREATE TABLE realtime_sessions (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations (id),
    agent_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    continues INTEGER NOT NULL,
    secret_digest BLOB NOT NULL,
    key_id TEXT NOT NULL,
    key_name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);
