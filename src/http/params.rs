//! Query parameters: read in any letter case, each name once, and the page of a list.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::Uri;
use serde::Serialize;
use utoipa::ToSchema;

use super::fields::{field_label, is_bidi_control, FieldErrors, BIDI_MESSAGE};
use crate::clock::Timestamp;
use crate::error::ApiError;
use crate::store::Page;

/// Query parameters with their names folded to lower case.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        Ok(Params(
            form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
                .collect(),
        ))
    }
}

impl Params {
    /// The value of a parameter, by its documented name in any case.
    pub fn get(&self, name: &str) -> Option<&str> {
        let lower = name.to_ascii_lowercase();
        self.0
            .iter()
            .find(|(k, _)| *k == lower)
            .map(|(_, v)| v.as_str())
    }

    /// A non-empty text parameter.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|s| !s.is_empty())
    }

    /// A non-empty text parameter to search or filter by: any text but control characters.
    pub fn search(&self, name: &str, errors: &mut FieldErrors) -> Option<&str> {
        let v = self.text(name)?;
        if v.chars().any(char::is_control) {
            errors.add(name, "must not contain control characters");
            return None;
        }
        if v.chars().any(is_bidi_control) {
            errors.add(name, BIDI_MESSAGE);
            return None;
        }
        Some(v)
    }

    /// `Offset` (default 0, at least 0) and `Limit` (default 25, 1 to 100).
    pub fn page(&self, errors: &mut FieldErrors) -> Page {
        let mut number =
            |name: &str, default: i64, min: i64, max: i64, msg: &str| match self.get(name) {
                None => default,
                Some(v) => match v.parse::<i64>() {
                    Ok(n) if (min..=max).contains(&n) => n,
                    _ => {
                        errors.add(name, msg);
                        default
                    }
                },
            };
        let offset = number(
            "Offset",
            0,
            0,
            MAX_OFFSET,
            "must be a whole number from 0 to 1000000000",
        );
        let limit = number("Limit", 25, 1, 100, "must be a whole number from 1 to 100");
        Page { offset, limit }
    }

    /// An RFC 3339 time such as `2026-11-28T09:30:00Z`.
    pub fn time(&self, name: &str, errors: &mut FieldErrors) -> Option<Timestamp> {
        let v = self.get(name)?;
        let t = Timestamp::parse(v);
        if t.is_none() {
            errors.add(
                name,
                "must be an RFC 3339 time, such as 2026-11-28T09:30:00Z",
            );
        }
        t
    }
}

/// The deepest a list can be paged; far beyond any list a client reads page by page.
pub const MAX_OFFSET: i64 = 1_000_000_000;

/// The first query parameter given twice, names compared in any letter case, by the name
/// as it was first sent.
pub fn duplicate_param(query: Option<&str>) -> Option<String> {
    let query = query?;
    // Names borrow from the query unless they were percent-encoded.
    let mut seen: Vec<std::borrow::Cow<'_, str>> = Vec::new();
    for (name, _) in form_urlencoded::parse(query.as_bytes()) {
        if let Some(first) = seen.iter().find(|s| s.eq_ignore_ascii_case(&name)) {
            return Some(field_label(first));
        }
        seen.push(name);
    }
    None
}

/// A query that names a parameter twice, refused with that name.
pub fn refuse_duplicate_params(uri: &Uri) -> Result<(), ApiError> {
    match duplicate_param(uri.query()) {
        Some(name) => Err(ApiError::invalid(
            &name,
            "is given more than once; send each parameter once",
        )),
        None => Ok(()),
    }
}

/// A page of a list, as every list endpoint answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
    /// Number of all matching items, across pages.
    pub total: i64,
    pub offset: i64,
    pub limit: i64,
}

impl<T> List<T> {
    pub fn new(listed: crate::store::Listed<T>, page: Page) -> Self {
        List {
            items: listed.items,
            total: listed.total,
            offset: page.offset,
            limit: page.limit,
        }
    }
}
