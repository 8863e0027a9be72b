//! Query parameters: read in any letter case, each name once, and the page of a list.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::Uri;
use serde::Serialize;
use utoipa::ToSchema;

use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::Required;
use utoipa::IntoParams;

use super::fields::{field_label, Chars, FieldErrors, TextRule};
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

    /// A non-empty text parameter to search or filter by, checked against [`SEARCH`] as
    /// sent, then read without the spaces around it.
    pub fn search(&self, name: &str, errors: &mut FieldErrors) -> Option<&str> {
        let v = self.get(name)?;
        let wrong = SEARCH.check(v);
        if !wrong.is_empty() {
            for message in wrong {
                errors.add(name, message);
            }
            return None;
        }
        Some(v.trim()).filter(|s| !s.is_empty())
    }

    /// `Offset` and `Limit`, within [`OFFSET`] and [`LIMIT`].
    pub fn page(&self, errors: &mut FieldErrors) -> Page {
        let mut number = |bound: &Bound| match self.get(bound.name) {
            None => bound.default,
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (bound.min..=bound.max).contains(&n) => n,
                _ => {
                    errors.add(
                        bound.name,
                        format!("must be a whole number from {} to {}", bound.min, bound.max),
                    );
                    bound.default
                }
            },
        };
        let offset = number(&OFFSET);
        let limit = number(&LIMIT);
        Page { offset, limit }
    }

    /// A page that is all a list takes: `Offset` and `Limit`, refused with their names.
    pub fn only_page(&self) -> Result<Page, ApiError> {
        self.page_and_search(None).map(|(page, _)| page)
    }

    /// A page, and the text to search for in the parameter named `search`: refused
    /// together, with their names.
    pub fn page_and_search(&self, search: Option<&str>) -> Result<(Page, Option<&str>), ApiError> {
        let mut errors = FieldErrors::default();
        let page = self.page(&mut errors);
        let text = search.and_then(|name| self.search(name, &mut errors));
        errors.check().map(|()| (page, text))
    }

    /// An RFC 3339 time such as `2026-11-28T09:30:00Z`, of at most [`TIME_MAX`] characters.
    pub fn time(&self, name: &str, errors: &mut FieldErrors) -> Option<Timestamp> {
        let v = self.get(name)?;
        let t = Some(v)
            .filter(|v| v.chars().count() <= TIME_MAX)
            .and_then(Timestamp::parse);
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

/// A whole-number query parameter: its name, bounds and default.
pub struct Bound {
    pub name: &'static str,
    pub min: i64,
    pub max: i64,
    pub default: i64,
    /// What it counts, for the document.
    what: &'static str,
}

/// Items to skip.
pub const OFFSET: Bound = Bound {
    name: "Offset",
    min: 0,
    max: MAX_OFFSET,
    default: 0,
    what: "Items to skip",
};

/// Items per page: the most a list answers at once.
pub const LIMIT: Bound = Bound {
    name: "Limit",
    min: 1,
    max: 100,
    default: 25,
    what: "Items per page",
};

/// A text query parameter (`Search`, `Action`): up to 2,000 characters (an agent's
/// description, the longest text a search can match), no control characters at all.
pub const SEARCH: TextRule = TextRule {
    min: 0,
    max: 2_000,
    chars: Chars::Query,
};

/// The longest RFC 3339 time a query parameter may hold: nanoseconds and an offset,
/// `2026-11-28T09:30:00.123456789+01:00`.
pub const TIME_MAX: usize = 35;

/// The paging parameters of every list, `Offset` and `Limit`, documented from [`OFFSET`] and
/// [`LIMIT`]: `params(Paging)` in a route's `#[utoipa::path]`.
pub struct Paging;

impl IntoParams for Paging {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        [OFFSET, LIMIT]
            .iter()
            .map(|bound| {
                let schema = ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(Some(bound.min))
                    .maximum(Some(bound.max));
                ParameterBuilder::new()
                    .name(bound.name)
                    .parameter_in(ParameterIn::Query)
                    .required(Required::False)
                    .description(Some(format!(
                        "{}, {} to {} (default {})",
                        bound.what, bound.min, bound.max, bound.default
                    )))
                    .schema(Some(schema))
                    .build()
            })
            .collect()
    }
}

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
    #[schema(example = 1)]
    pub total: i64,
    /// Items skipped before this page.
    #[schema(example = 0)]
    pub offset: i64,
    /// Items a page holds at most.
    #[schema(example = 25)]
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
