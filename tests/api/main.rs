//! Integration tests: the real server over HTTP on port 0, a fresh SQLite database each.

mod abuse;
mod agents;
mod api_keys;
mod authentication;
mod bodies;
mod conversations;
mod docs;
mod files;
mod helpers;
mod key_lifecycle;
mod model_server;
mod openapi;
mod process;
mod rate_limits;
mod realtime;
mod sources;
mod tasks;
