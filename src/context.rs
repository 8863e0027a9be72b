//! The outermost middleware: the request id, the refusal of credentials in URLs, problem
//! bodies for the router's own refusals, and one log line and the metrics of each request.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use axum::http::{HeaderName, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::Caller;
use crate::error::{ApiError, Code, REQUEST_ID};
use crate::http::{has_credentials, loggable_uri};
use crate::settings::Settings;
use crate::state::AppState;

/// The header a request id comes in and goes back out in.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A caller's request id, kept when it is 1 to 64 characters of `[A-Za-z0-9._:-]` with no
/// run of 40 or more base62 characters (a key's body, or anything as secret-looking).
fn sane_request_id(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"._:-".contains(&b);
    let longest_base62_run = s
        .as_bytes()
        .split(|b| !b.is_ascii_alphanumeric())
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    let ok = (1..=64).contains(&s.len()) && s.bytes().all(allowed) && longest_base62_run < 40;
    ok.then(|| s.to_owned())
}

/// Route labels, shared so that labelling a request's metrics allocates nothing.
#[derive(Default)]
struct RouteNames(std::cell::RefCell<Vec<Arc<str>>>);

impl RouteNames {
    fn intern(&self, route: &str) -> Arc<str> {
        let mut names = self.0.borrow_mut();
        if let Some(known) = names.iter().find(|n| &***n == route) {
            return Arc::clone(known);
        }
        let name: Arc<str> = Arc::from(route);
        names.push(Arc::clone(&name));
        name
    }
}

thread_local! {
    static ROUTES: RouteNames = RouteNames::default();
}

/// Outermost middleware: request id, the credentials-in-URL refusal, problem bodies for the
/// router's own refusals, one log line and the metrics of each request.
pub async fn context(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(sane_request_id)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    let method = request.method().clone();
    let uri = loggable_uri(request.uri());
    let route: Arc<str> = match request.extensions().get::<MatchedPath>() {
        Some(p) => ROUTES.with(|cache| cache.intern(p.as_str())),
        None => ROUTES.with(|cache| cache.intern("unmatched")),
    };
    let has_credentials = has_credentials(request.uri());

    let mut response = REQUEST_ID
        .scope(request_id.clone(), async move {
            if has_credentials {
                return ApiError::new(Code::CredentialsInUrl).into_response();
            }
            as_problem(next.run(request).await)
        })
        .await;

    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let caller = response.extensions().get::<Caller>();
    let org_id = caller.map(|c| c.org_id.to_string());
    let key_id = caller.map(|c| c.verified.key.id.to_string());
    tracing::info!(
        target: "siesta::request",
        method = %method,
        path = %uri,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        request_id = %request_id,
        org_id = org_id.as_deref().unwrap_or("-"),
        key_id = key_id.as_deref().unwrap_or("-"),
        "request"
    );
    state.metrics.request(&route, status, elapsed);
    response
}

/// Turns a plain refusal from the router or a tower layer into a problem document. A JSON
/// answer is the handler's own (a problem, or `/readyz` saying what is unreachable) and is
/// kept as it is.
fn as_problem(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            let v = v.as_bytes();
            v.starts_with(b"application/problem+json") || v.starts_with(b"application/json")
        });
    if is_json {
        return response;
    }
    let code = match response.status() {
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => Code::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => Code::PayloadTooLarge,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => Code::ServiceUnavailable,
        StatusCode::INTERNAL_SERVER_ERROR => Code::InternalError,
        _ => return response,
    };
    let (mut parts, _) = response.into_parts();
    let (problem, body) = ApiError::new(code).into_response().into_parts();
    // Keep what the layers inside added (Allow, RateLimit, CORS, the caller for the log).
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(problem.headers);
    // The status line says what the body says (a layer's 408 becomes the problem's 503).
    parts.status = problem.status;
    Response::from_parts(parts, body)
}

/// Which origins' pages may call the API, with what; a preflight needs no key.
pub fn cors(settings: &Settings) -> CorsLayer {
    let origins: Vec<HeaderValue> = settings.cors_origins.clone();
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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sai_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn plain_refusals_become_problems_and_json_answers_are_kept() {
        let plain = |status: StatusCode| {
            let mut r = Response::new(axum::body::Body::empty());
            *r.status_mut() = status;
            as_problem(r)
        };
        let content_type = |r: &Response| r.headers()[header::CONTENT_TYPE].clone();
        for (status, answer) in [
            (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND),
            (
                StatusCode::METHOD_NOT_ALLOWED,
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (StatusCode::REQUEST_TIMEOUT, StatusCode::SERVICE_UNAVAILABLE),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ] {
            let r = plain(status);
            assert_eq!(r.status(), answer);
            assert_eq!(content_type(&r), "application/problem+json");
        }
        let readiness = (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "unavailable"})),
        )
            .into_response();
        let kept = as_problem(readiness);
        assert_eq!(kept.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(content_type(&kept), "application/json");
    }

    #[test]
    fn request_ids_that_look_like_keys_are_not_kept() {
        assert!(sane_request_id(&HeaderValue::from_static("trace-1")).is_some());
        assert!(sane_request_id(&HeaderValue::from_static(KEY)).is_none());
    }
}
