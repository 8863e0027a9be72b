//! Prometheus metrics: requests by route and status, latency, auth failures, rate limiting.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use metrics::{Counter, Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::error::Code;

static META: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, None);

type RouteStatus = (Arc<str>, u16);

/// This server's metrics; each server has its own registry, so tests never share one.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    /// Handles by route and status, so that counting a request allocates nothing.
    requests: Arc<DashMap<RouteStatus, (Counter, Histogram)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        let recorder = Arc::new(recorder);
        for (name, help) in [
            (
                "siesta_http_requests_total",
                "HTTP requests answered, by route and status.",
            ),
            (
                "siesta_http_request_duration_seconds",
                "Time to answer HTTP requests, by route.",
            ),
            (
                "siesta_auth_failures_total",
                "Requests refused by authentication, by code.",
            ),
            (
                "siesta_rate_limited_total",
                "Requests refused by a rate limit, by limit.",
            ),
            (
                "siesta_connections_refused_total",
                "Connections answered 503 and closed because the server held --max-connections.",
            ),
            (
                "siesta_redis_errors_total",
                "Redis calls that failed; rate limits were then per replica.",
            ),
        ] {
            recorder.describe_counter(name.into(), None, help.into());
        }
        recorder.describe_gauge(
            "siesta_redis_up".into(),
            None,
            "1 when the Redis the replicas share answers, 0 when rate limits are per replica."
                .into(),
        );
        Metrics {
            recorder,
            handle,
            requests: Arc::default(),
        }
    }

    pub fn request(&self, route: &Arc<str>, status: u16, elapsed: Duration) {
        let known = self
            .requests
            .get(&(Arc::clone(route), status))
            .map(|h| h.clone());
        let (counter, histogram) = known.unwrap_or_else(|| {
            let label = Label::new("route", route.to_string());
            let key = Key::from_parts(
                "siesta_http_requests_total",
                vec![label.clone(), Label::new("status", status.to_string())],
            );
            let counter = self.recorder.register_counter(&key, &META);
            let key = Key::from_parts("siesta_http_request_duration_seconds", vec![label]);
            let histogram = self.recorder.register_histogram(&key, &META);
            self.requests.insert(
                (Arc::clone(route), status),
                (counter.clone(), histogram.clone()),
            );
            (counter, histogram)
        });
        counter.increment(1);
        histogram.record(elapsed.as_secs_f64());
    }

    pub fn auth_failure(&self, code: Code) {
        let key = Key::from_parts(
            "siesta_auth_failures_total",
            vec![Label::new("code", code.as_str())],
        );
        self.recorder.register_counter(&key, &META).increment(1);
    }

    pub fn rate_limited(&self, limit: &'static str) {
        let key = Key::from_parts(
            "siesta_rate_limited_total",
            vec![Label::new("limit", limit)],
        );
        self.recorder.register_counter(&key, &META).increment(1);
    }

    /// A connection turned away at the connection cap.
    pub fn connection_refused(&self) {
        let key = Key::from_name("siesta_connections_refused_total");
        self.recorder.register_counter(&key, &META).increment(1);
    }

    /// Whether the Redis the replicas share answers (1) or not (0).
    pub fn redis_up(&self, up: bool) {
        let key = Key::from_name("siesta_redis_up");
        self.recorder
            .register_gauge(&key, &META)
            .set(if up { 1.0 } else { 0.0 });
    }

    pub fn redis_error(&self) {
        let key = Key::from_name("siesta_redis_errors_total");
        self.recorder.register_counter(&key, &META).increment(1);
    }

    pub fn key_lookup(&self) {
        let key = Key::from_name("siesta_key_lookups_total");
        self.recorder.register_counter(&key, &META).increment(1);
    }

    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Folds recorded histogram samples into their buckets; run now and then.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}
