//! How the server behaves, with every default in one place: `siesta serve`'s flags take
//! theirs from [`Settings::default`].

use std::time::Duration;

use axum::http::HeaderValue;

use crate::{clock, recorder};

/// How the server behaves; read from flags and `SIESTA_*` variables by [`cli`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Requests per minute for keys without a rate limit of their own.
    pub rate_limit: u32,
    /// Failed authentications per minute a client address may make.
    pub auth_failure_limit: u32,
    /// Origins whose browser pages may call the API.
    pub cors_origins: Vec<HeaderValue>,
    pub request_timeout: Duration,
    pub header_read_timeout: Duration,
    /// How often the server looks for key changes made by other processes.
    pub change_poll: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// How long records of reads may wait in memory before they are written.
    pub record_flush: Duration,
    /// How long a model provider may take to start answering, and between two pieces.
    pub provider_timeout: Duration,
    /// Where uploaded files are kept.
    pub data_dir: std::path::PathBuf,
    /// Largest file upload, in bytes.
    pub max_file_bytes: u64,
    /// How long an uploaded file lives.
    pub file_ttl: Duration,
    /// How often expired files are removed.
    pub sweep_every: Duration,
    /// How long a realtime session's one-time secret can be used to connect.
    pub realtime_secret_ttl: Duration,
    /// A Redis shared by several replicas, for rate limits and key-change announcements.
    pub redis_url: Option<secrecy::SecretString>,
    /// Load balancers and proxies whose `X-Forwarded-For` names the client; a request from
    /// anywhere else is the client itself.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The longest a verified key stays cached, whatever else happens: the bound on how
    /// stale a replica can be if every announcement of a change were lost.
    pub key_cache_ttl: Duration,
    /// The scheme, host and port the server's absolute URLs start with (`websocketUrl`,
    /// console links); `None`: `http://` and the bound address.
    pub public_url: Option<String>,
    /// Open connections at most; beyond it a connection is answered 503 and closed.
    /// `None`: 90 % of the process's open-file limit.
    pub max_connections: Option<usize>,
    /// How often an HTTP/2 connection is pinged, and how long a ping may go unanswered.
    pub http2_keep_alive: Duration,
    /// How long an HTTP/2 connection may stay open with no stream.
    pub http2_idle_timeout: Duration,
    /// How long a write to a client may make no progress (a client that stopped reading)
    /// before the connection is closed.
    pub write_stall_timeout: Duration,
    /// The longest a streamed answer may last.
    pub stream_timeout: Duration,
    /// Characters (Unicode scalar values) of earlier messages sent to a model with a new one.
    pub history_chars: usize,
    /// Messages a conversation may hold, both roles counted.
    pub max_conversation_messages: u32,
    /// How long a realtime socket may go without a frame from its client before it is closed.
    pub realtime_idle: Duration,
    /// Where every time-dependent decision reads the time: the system clock, or one a test
    /// moves.
    pub clock: clock::Clock,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rate_limit: 600,
            auth_failure_limit: 120,
            cors_origins: Vec::new(),
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            change_poll: Duration::from_millis(250),
            drain_timeout: Duration::from_secs(30),
            record_flush: recorder::FLUSH_EVERY,
            provider_timeout: Duration::from_secs(25),
            data_dir: std::path::PathBuf::from("siesta-data"),
            max_file_bytes: 25 * 1024 * 1024,
            file_ttl: Duration::from_secs(24 * 3600),
            sweep_every: Duration::from_secs(60),
            realtime_secret_ttl: Duration::from_secs(60),
            redis_url: None,
            trusted_proxies: Vec::new(),
            key_cache_ttl: Duration::from_secs(30),
            public_url: None,
            max_connections: None,
            http2_keep_alive: Duration::from_secs(20),
            http2_idle_timeout: Duration::from_secs(300),
            write_stall_timeout: Duration::from_secs(30),
            stream_timeout: Duration::from_secs(300),
            history_chars: 100_000,
            max_conversation_messages: 1_000,
            realtime_idle: Duration::from_secs(300),
            clock: clock::Clock::system(),
        }
    }
}
