//! What every request handler can reach.

use std::sync::Arc;

use crate::auth::revocation::KeyCache;
use crate::cluster::Cluster;
use crate::files::FileStore;
use crate::metrics::Metrics;
use crate::provider::Provider;
use crate::ratelimit::RateLimiter;
use crate::recorder::Recorder;
use crate::settings::Settings;
use crate::store::Store;

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
    pub files: FileStore,
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

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}
