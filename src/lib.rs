//! siesta: a self-hosted server for the Siesta AI External API.
//!
//! `main.rs` parses the command line and calls [`cli::run`]; the server is built by
//! [`api::app`] and served by [`Server`], which tests drive the same way production does.

pub mod api;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod context;
pub mod duration;
pub mod error;
pub mod files;
pub mod http;
pub mod key;
pub mod lifecycle;
pub mod listener;
pub mod metrics;
pub mod provider;
pub mod ratelimit;
pub mod recorder;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use tokio::net::TcpListener;
use tower::Layer;

use crate::auth::revocation::{self, InMemoryKeyCache, KeyCache};
use crate::cluster::{Cluster, SharedRateLimiter};
use crate::metrics::Metrics;
use crate::provider::{OfflineResponder, Provider};
use crate::ratelimit::{InMemoryRateLimiter, RateLimiter};
use crate::recorder::{Recorder, RecorderTask};
use crate::store::Store;

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

/// What every request handler can reach; cloning it is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub store: Arc<dyn Store>,
    pub files: files::FileStore,
    pub provider: Arc<dyn Provider>,
    pub keys: Arc<dyn KeyCache>,
    pub limiter: Arc<dyn RateLimiter>,
    pub recorder: Recorder,
    pub settings: Arc<Settings>,
    pub metrics: Metrics,
    /// The Redis the replicas share, when there is one.
    pub cluster: Option<Arc<Cluster>>,
    /// What every absolute URL the server hands out starts with, without a trailing slash:
    /// `--public-url`, or `http://` and the bound address.
    pub public_url: String,
}

/// A bound, not yet serving server.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    recorder_task: RecorderTask,
}

impl Server {
    /// Binds a server whose agents answer with the offline responder.
    pub async fn bind(
        listen: SocketAddr,
        settings: Settings,
        store: Arc<dyn Store>,
    ) -> std::io::Result<Server> {
        Self::bind_with(listen, settings, store, Arc::new(OfflineResponder)).await
    }

    pub async fn bind_with(
        listen: SocketAddr,
        settings: Settings,
        store: Arc<dyn Store>,
        provider: Arc<dyn Provider>,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(listen).await?;
        let public_url = match &settings.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => default_public_url(listener.local_addr()?),
        };
        let files = files::FileStore::open(&settings.data_dir)?;
        let metrics = Metrics::new();
        let cluster = match &settings.redis_url {
            Some(url) => Some(Cluster::open(url, metrics.clone()).map_err(std::io::Error::other)?),
            None => None,
        };
        let limiter: Arc<dyn RateLimiter> = match &cluster {
            Some(c) => Arc::new(SharedRateLimiter::new(
                Arc::clone(c),
                settings.clock.clone(),
            )),
            None => Arc::new(InMemoryRateLimiter::new(settings.clock.clone())),
        };
        let (recorder, recorder_task) = Recorder::start(Arc::clone(&store), settings.record_flush);
        let state = AppState(Arc::new(Shared {
            store,
            files,
            provider,
            keys: Arc::new(InMemoryKeyCache::new(100_000)),
            limiter,
            recorder,
            settings: Arc::new(settings),
            metrics,
            cluster,
            public_url,
        }));
        Ok(Server {
            listener,
            state,
            recorder_task,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// What every absolute URL this server hands out starts with.
    pub fn public_url(&self) -> &str {
        &self.state.public_url
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests and writes every
    /// buffered record before returning.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server {
            listener,
            state,
            recorder_task,
        } = self;
        let watcher = tokio::spawn(revocation::watch_changes(
            Arc::clone(&state.store),
            Arc::clone(&state.keys),
            state.settings.change_poll,
        ));
        let housekeeping = tokio::spawn(housekeeping(state.clone()));
        let coordinator = state.cluster.clone().map(|cluster| {
            tokio::spawn(revocation::follow_announcements(
                cluster,
                Arc::clone(&state.keys),
            ))
        });
        let sweeper = tokio::spawn(files::sweep(
            Arc::clone(&state.store),
            state.files.clone(),
            state.settings.sweep_every,
            state.settings.clock.clone(),
        ));
        let (app, case) = api::app(state.clone());
        let app =
            tower::util::MapRequestLayer::new(move |request| case.normalize(request)).layer(app);
        let limits = listener::Limits {
            header_read_timeout: state.settings.header_read_timeout,
            max_connections: state
                .settings
                .max_connections
                .unwrap_or_else(listener::default_max_connections),
            http2_keep_alive: state.settings.http2_keep_alive,
            http2_idle_timeout: state.settings.http2_idle_timeout,
            drain: state.settings.drain_timeout,
            write_stall: state.settings.write_stall_timeout,
        };
        listener::serve(listener, app, limits, state.metrics.clone(), shutdown).await;
        watcher.abort();
        housekeeping.abort();
        if let Some(c) = coordinator {
            c.abort();
        }
        sweeper.abort();
        let _ = sweeper.await;
        let _ = watcher.await;
        let _ = housekeeping.await;
        state.recorder.flush().await;
        drop(state);
        recorder_task.finish().await;
        tracing::info!("stopped");
    }
}

/// `http://` and the bound address, with an unspecified address shown as the loopback one
/// a browser on the same machine can open.
fn default_public_url(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => format!("http://127.0.0.1:{}", a.port()),
        SocketAddr::V6(a) if a.ip().is_unspecified() => format!("http://[::1]:{}", a.port()),
        a => format!("http://{a}"),
    }
}

async fn housekeeping(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        state.metrics.upkeep();
        n += 1;
        if n.is_multiple_of(ratelimit::PRUNE_EVERY.as_secs() / 5) {
            state.limiter.prune();
        }
    }
}

/// Takes over SIGTERM and Ctrl-C at once; the future resolves on the first of them. Call it
/// before the server says it is listening, so a signal sent as soon as it is ready shuts it
/// down gracefully instead of killing it.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            let (term, int) = signals;
            tokio::select! {
                _ = wait(term) => {},
                _ = wait(int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down: finishing in-flight requests");
    }
}
