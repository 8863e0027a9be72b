//! Case-insensitive paths: `/API/v1/agent` reaches the route `/api/v1/Agent`.

use axum::extract::Request;
use axum::http::Uri;
use std::sync::Arc;

/// The fixed segments of the API's paths, in the case the routes declare them; a request
/// may use any case.
#[derive(Debug, Clone)]
pub struct PathCase(Arc<[String]>);

impl PathCase {
    /// From the route templates, such as `/api/v1/Agent/{agentId}/response`.
    pub fn from_routes<'a>(templates: impl IntoIterator<Item = &'a str>) -> Self {
        let mut segments: Vec<String> = templates
            .into_iter()
            .flat_map(|t| t.split('/'))
            .filter(|seg| !seg.is_empty() && !seg.starts_with('{'))
            .map(str::to_owned)
            .collect();
        segments.sort();
        segments.dedup();
        PathCase(segments.into())
    }

    fn canonical(&self, seg: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|c| c.eq_ignore_ascii_case(seg))
            .map(String::as_str)
    }

    /// Rewrites `/API/v1/agent/...` to `/api/v1/Agent/...` before routing.
    pub fn normalize(&self, mut request: Request) -> Request {
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
            .map(|seg| match self.canonical(seg) {
                Some(canonical) => {
                    changed |= canonical != seg;
                    canonical
                }
                None => seg,
            })
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_segments_of_the_templates_are_the_names_and_parameters_are_not() {
        let case = PathCase::from_routes(["/api/v1/Agent/{agentId}/response", "/api/v1/Agent"]);
        assert_eq!(&*case.0, ["Agent", "api", "response", "v1"]);
        assert_eq!(case.canonical("AGENT"), Some("Agent"));
        assert_eq!(case.canonical("{AGENTID}"), None);
    }
}
