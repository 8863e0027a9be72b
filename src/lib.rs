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
pub mod password;
pub mod provider;
pub mod ratelimit;
pub mod recorder;
pub mod settings;
pub mod state;
pub mod store;

pub use settings::Settings;
pub use state::{AppState, Shared};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tower::Layer;

use crate::auth::revocation::{self, InMemoryKeyCache};
use crate::cluster::{Cluster, SharedRateLimiter};
use crate::metrics::Metrics;
use crate::provider::{OfflineResponder, Provider};
use crate::ratelimit::{InMemoryRateLimiter, RateLimiter};
use crate::recorder::{Recorder, RecorderTask};
use crate::store::Store;

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
        let state = AppState::new(Shared {
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
        });
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
