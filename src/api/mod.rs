//! The External API and the server's own endpoints, assembled into one router.
//!
//! Routes are declared with utoipa-axum, so the router and the OpenAPI document come from
//! the same list.

mod agent;
mod api_key;
mod audit_log;
mod connection;
mod contract;
mod conversation;
mod ctx;
mod data_source_collection;
mod docs;
mod file;
mod me;
mod named;
mod probes;
mod realtime;
mod task;
mod task_workspace;

use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{middleware, Router};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::openapi::security::{ApiKey as ApiKeyScheme, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::auth::{authenticate, unknown_path};
use crate::context::context;
use crate::error::{ApiError, Problem};
use crate::http::{PathCase, MAX_JSON_BYTES};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "Siesta External API", description = "Work with one organization's agents, tasks, files and audit data."),
    modifiers(&SecurityAddon),
    components(schemas(Problem)),
    tags(
        (name = "Agent", description = "Agents, and talking to them over HTTP or a realtime session."),
        (name = "ApiKey", description = "The organization's API keys (admin): list, create, rotate, delete. Values are shown once."),
        (name = "AuditLog", description = "What happened in the organization, newest first, as JSON pages or one CSV file (admin)."),
        (name = "Connection", description = "Connections to outside systems; a private one is seen only by its creator's keys."),
        (name = "Conversation", description = "The transcripts of conversations with agents."),
        (name = "DataSourceCollection", description = "Data source collections: read with `read`, created with `admin`."),
        (name = "File", description = "Temporary files, given to agents as context, gone once they expire."),
        (name = "Me", description = "The key that makes the request."),
        (name = "Task", description = "Tasks, each in one of the organization's workspaces."),
        (name = "TaskWorkspace", description = "The places an organization's tasks live."),
    ),
    security(("ApiKey" = [], "OrgId" = [])),
)]
struct ApiDoc;

struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "ApiKey",
            SecurityScheme::ApiKey(ApiKeyScheme::Header(ApiKeyValue::with_description(
                "X-Api-Key",
                "Your integration's API key (sai_live_… or sai_test_…).",
            ))),
        );
        components.add_security_scheme(
            "OrgId",
            SecurityScheme::ApiKey(ApiKeyScheme::Header(ApiKeyValue::with_description(
                "X-Org-Id",
                "The id of the organization the key belongs to.",
            ))),
        );
    }
}

/// The External API's routes and its OpenAPI document.
fn api(settings: &crate::settings::Settings) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let mut doc = ApiDoc::openapi();
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

async fn auth_gate(
    state: State<AppState>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let path = request.uri().path();
    if path == "/api/v1" || path.starts_with("/api/v1/") {
        authenticate(state, request, next).await
    } else {
        next.run(request).await
    }
}

fn cors(state: &AppState) -> CorsLayer {
    let origins: Vec<HeaderValue> = state.settings.cors_origins.clone();
    // A predicate is shared by reference; a list would be copied for every request.
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origins.contains(origin)
        }))
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers(
            [
                "x-api-key",
                "x-org-id",
                "x-request-id",
                "content-type",
                "accept",
            ]
            .map(HeaderName::from_static),
        )
        .expose_headers(
            [
                "x-request-id",
                "ratelimit",
                "ratelimit-policy",
                "retry-after",
            ]
            .map(HeaderName::from_static),
        )
        .max_age(std::time::Duration::from_secs(600))
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
        .layer(cors(&state))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            state.settings.request_timeout,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), auth_gate))
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
