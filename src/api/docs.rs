//! `/docs`: the interactive reference and the guides, served from the binary. Nothing is
//! loaded from outside this server, and the Content-Security-Policy says so to the browser.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

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
    page(HTML, &REFERENCE)
}

async fn script() -> Response {
    page("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    page("text/css; charset=utf-8", STYLE)
}

/// Every page's frame: head, navigation, then what the page adds.
const LAYOUT: &str = include_str!("../../docs-ui/layout.html");
/// The reference's credentials panel, then `<!-- main -->`, then its main element.
const REFERENCE_PARTS: &str = include_str!("../../docs-ui/reference.html");

fn lay_out(title: &str, head: &str, header: &str, main: &str) -> String {
    LAYOUT
        .replace("{{title}}", title)
        .replace("{{head}}", head)
        .replace("{{header}}", header)
        .replace("{{main}}", main)
}

static REFERENCE: LazyLock<String> = LazyLock::new(|| {
    let (panel, main) = REFERENCE_PARTS
        .split_once("<!-- main -->\n")
        .expect("reference.html marks where its main element starts");
    let script = "<script src=\"/docs/app.js\" defer></script>\n";
    lay_out("Reference", script, panel, main)
});

/// Each guide's content, with the title its page shows.
const GUIDES: [(&str, &str, &str); 4] = [
    (
        "getting-started",
        "Getting started",
        include_str!("../../docs-ui/guides/getting-started.html"),
    ),
    (
        "authentication",
        "Authentication",
        include_str!("../../docs-ui/guides/authentication.html"),
    ),
    (
        "errors",
        "Paging and errors",
        include_str!("../../docs-ui/guides/errors.html"),
    ),
    (
        "clients",
        "Typed clients",
        include_str!("../../docs-ui/guides/clients.html"),
    ),
];

/// The guide pages, laid out once.
static PAGES: LazyLock<Vec<(&'static str, String)>> = LazyLock::new(|| {
    GUIDES
        .iter()
        .map(|(name, title, content)| {
            let main = format!("<main><article class=\"guide\">\n{content}</article></main>");
            (*name, lay_out(title, "", "", &main))
        })
        .collect()
});

fn guide_page(name: &str) -> Option<&'static str> {
    PAGES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, page)| page.as_str())
}

async fn guide(Path(name): Path<String>) -> Response {
    match guide_page(&name) {
        Some(text) => page(HTML, text),
        None => ApiError::not_found().into_response(),
    }
}

/// Where the `type` of every problem document points.
async fn errors() -> Response {
    page(HTML, guide_page("errors").expect("the errors guide exists"))
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
