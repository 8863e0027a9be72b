//! Integration tests: the real server over HTTP on port 0, a fresh database each: SQLite, or
//! PostgreSQL (`SIESTA_TEST_BACKEND=postgres`) on the server `SIESTA_TEST_POSTGRES_URL` names.

mod abuse;
mod agents;
mod api_keys;
mod audit_log;
mod authentication;
mod bodies;
mod connections;
mod conversations;
mod docs;
mod environment;
mod files;
mod helpers;
mod key_lifecycle;
mod layout;
mod limits;
mod membership;
mod model_server;
mod openapi;
mod outage;
mod passwords;
mod postgres;
mod process;
mod rate_limits;
mod realtime;
mod replicas;
mod scopes;
mod sources;
mod tasks;
mod wire;
