//! What operators and load balancers ask the process: is it up, is it ready, its metrics.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::state::AppState;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok"
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    database: &'static str,
    /// Only with a shared Redis: `ok`, or `unreachable` while rate limits are per replica.
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<&'static str>,
}

/// `GET /readyz`: the database answers (503 if not). A Redis that does not answer leaves
/// the replica serving, with per-replica rate limits: `degraded`, still 200, so a load
/// balancer keeps sending it traffic.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let redis = state
        .cluster
        .as_ref()
        .map(|c| if c.is_up() { "ok" } else { "unreachable" });
    match state.store.ping().await {
        Ok(()) => Json(Readiness {
            status: if redis == Some("unreachable") {
                "degraded"
            } else {
                "ready"
            },
            database: "ok",
            redis,
        })
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            let body = Readiness {
                status: "unavailable",
                database: "unreachable",
                redis,
            };
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    (
        [(header::CONTENT_TYPE, content_type)],
        state.metrics.render(),
    )
        .into_response()
}
