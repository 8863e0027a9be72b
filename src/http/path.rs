//! Case-insensitive paths: `/API/v1/agent` reaches the route `/api/v1/Agent`.

use axum::extract::Request;
use axum::http::Uri;

/// Resource path segments, in the case the API documents; a request may use any case.
const PATH_SEGMENTS: [&str; 15] = [
    "api",
    "v1",
    "Me",
    "Agent",
    "Conversation",
    "File",
    "Task",
    "TaskWorkspace",
    "DataSourceCollection",
    "Connection",
    "AuditLog",
    "ApiKey",
    "response",
    "realtime-session",
    "rotate",
];

/// Rewrites `/API/v1/agent/...` to `/api/v1/Agent/...` before routing.
pub fn normalize_path(mut request: Request) -> Request {
    let path = request.uri().path();
    if !path
        .get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("/api/v1/"))
    {
        return request;
    }
    let mut changed = false;
    let normalized: Vec<&str> = path
        .split('/')
        .map(
            |seg| match PATH_SEGMENTS.iter().find(|c| c.eq_ignore_ascii_case(seg)) {
                Some(canonical) => {
                    changed |= *canonical != seg;
                    *canonical
                }
                None => seg,
            },
        )
        .collect();
    if !changed {
        return request;
    }
    let mut path_and_query = normalized.join("/");
    if let Some(q) = request.uri().query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let mut parts = request.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}
