//! `/docs`: the interactive reference and the guides, served from the binary. Nothing is
//! loaded from outside this server, and the Content-Security-Policy says so to the browser.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::AppState;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const INDEX: &str = include_str!("../../docs-ui/index.html");
const SCRIPT: &str = include_str!("../../docs-ui/app.js");
const STYLE: &str = include_str!("../../docs-ui/app.css");

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

const HTML: &str = "text/html; charset=utf-8";

async fn index() -> Response {
    page(HTML, INDEX)
}

async fn script() -> Response {
    page("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    page("text/css; charset=utf-8", STYLE)
}

fn guide_text(name: &str) -> Option<&'static str> {
    Some(match name {
        "getting-started" => include_str!("../../docs-ui/guides/getting-started.html"),
        "authentication" => include_str!("../../docs-ui/guides/authentication.html"),
        "errors" => include_str!("../../docs-ui/guides/errors.html"),
        "clients" => include_str!("../../docs-ui/guides/clients.html"),
        _ => return None,
    })
}

async fn guide(Path(name): Path<String>) -> Response {
    match guide_text(&name) {
        Some(text) => page(HTML, text),
        None => ApiError::not_found().into_response(),
    }
}

/// Where the `type` of every problem document points.
async fn errors() -> Response {
    page(HTML, guide_text("errors").expect("the errors guide exists"))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/docs", get(index))
        .route("/docs/", get(index))
        .route("/docs/app.js", get(script))
        .route("/docs/app.css", get(style))
        .route("/docs/errors", get(errors))
        .route("/docs/guides/{name}", get(guide))
}
