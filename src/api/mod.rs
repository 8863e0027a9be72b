//! The External API and the server's own endpoints, assembled into one router.
//!
//! Routes are declared with utoipa-axum, so the router and the OpenAPI document come from
//! the same list.

mod agent;
mod api_key;
mod audit_log;
mod call;
mod connection;
mod contract;
mod conversation;
mod data_source_collection;
mod docs;
mod file;
mod me;
mod named;
mod probes;
mod realtime;
mod task;
mod task_workspace;

use axum::http::{header, HeaderName, StatusCode};
use axum::response::IntoResponse;
use axum::{middleware, Router};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::{authenticate, unknown_path};
use crate::context::{context, cors};
use crate::error::ApiError;
use crate::http::{PathCase, MAX_JSON_BYTES};
use crate::state::AppState;

/// The External API's routes and its OpenAPI document.
fn api(settings: &crate::settings::Settings) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let mut doc = contract::base();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let (router, mut doc) = OpenApiRouter::with_openapi(doc)
        .merge(me::router())
        .merge(agent::router())
        .merge(api_key::router())
        .merge(audit_log::router())
        .merge(task::router())
        .merge(connection::router())
        .merge(conversation::router())
        .merge(realtime::router())
        .merge(file::router(settings.max_file_bytes))
        .merge(data_source_collection::router())
        .merge(task_workspace::router())
        .split_for_parts();
    contract::complete(&mut doc, settings);
    (router, doc)
}

/// The whole application: API, documents, health, metrics, and the shared middleware; and
/// the case of the API's path segments, which the routes declare.
pub fn app(state: AppState) -> (Router, PathCase) {
    let (api, doc) = api(&state.settings);
    let case = PathCase::from_routes(doc.paths.paths.keys().map(String::as_str));
    let doc = axum::body::Bytes::from(contract::to_json(&doc));
    let layers = ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([
            HeaderName::from_static("x-api-key"),
            header::AUTHORIZATION,
            header::COOKIE,
        ]))
        .layer(middleware::from_fn_with_state(state.clone(), context))
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                // The panic itself is reported by the panic hook; the client learns nothing of it.
                ApiError::new(crate::error::Code::InternalError).into_response()
            },
        ))
        .layer(cors(&state.settings))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            state.settings.request_timeout,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_JSON_BYTES));
    let app = api
        .route("/healthz", axum::routing::get(probes::healthz))
        .route("/readyz", axum::routing::get(probes::readyz))
        .route("/metrics", axum::routing::get(probes::metrics))
        .route(
            "/realtime/{session_id}",
            axum::routing::get(realtime::connect),
        )
        .merge(docs::router())
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], doc) }
            }),
        )
        .fallback(unknown_path)
        .layer(layers)
        .with_state(state);
    (app, case)
}
