//! Ids as the API writes them, in paths and in bodies.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use uuid::Uuid;

use crate::error::{ApiError, Code};

/// An id as the API writes them: the 36-character hyphenated form, and only that (the
/// document's pattern says so; other spellings of a UUID are refused, not guessed at).
pub fn parse_id(s: &str) -> Option<uuid::Uuid> {
    if s.len() != 36 {
        return None;
    }
    uuid::Uuid::try_parse(s).ok()
}

/// An optional id field of a body, read with [`parse_id`].
pub fn id_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<uuid::Uuid>, D::Error> {
    let text = <Option<String> as serde::Deserialize>::deserialize(d)?;
    text.map(|s| parse_id(&s).ok_or_else(|| serde::de::Error::custom("not an id")))
        .transpose()
}

/// An optional list of ids in a body, each read with [`parse_id`].
pub fn id_list<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<uuid::Uuid>>, D::Error> {
    let texts = <Option<Vec<String>> as serde::Deserialize>::deserialize(d)?;
    texts
        .map(|list| {
            list.iter()
                .map(|s| parse_id(s).ok_or_else(|| serde::de::Error::custom("not an id")))
                .collect()
        })
        .transpose()
}

/// For a field whose `null` means something (go back to the default): `None` when the
/// field is left out, `Some(None)` when it is sent as `null`. Use with `#[serde(default)]`.
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// An id in the path, written as the API writes ids ([`parse_id`]); anything
/// else names nothing, so it is a 404 like a missing object.
pub struct PathId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found())?;
        parse_id(&raw).map(PathId).ok_or_else(ApiError::not_found)
    }
}

/// A 404 for an id in the body rather than the path: the same for an object that does not
/// exist and for another organization's, and naming the field so the caller knows which.
pub fn missing_reference(detail: &'static str) -> ApiError {
    ApiError::with_detail(Code::NotFound, detail)
}
