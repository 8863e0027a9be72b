//! JSON request bodies: size, media type, unknown and server-owned fields, duplicate
//! members, each refused with a problem that names what was wrong.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use serde::de::DeserializeOwned;

use super::fields::{field_label, FieldErrors, Rule};
use crate::error::{ApiError, Code};

/// The largest JSON body, in bytes.
pub const MAX_JSON_BYTES: usize = 1024 * 1024;

/// A request body: which fields it has, so unknown and server-owned ones are named back.
pub trait RequestBody: DeserializeOwned {
    const FIELDS: &'static [&'static str];
    /// Fields that may be sent as `null`; any other field sent as `null` is refused, so a
    /// body never means something other than what the document says.
    const NULLABLE: &'static [&'static str] = &[];
    /// The rule of each field that has one, by name: the handler checks the field with the
    /// same constant, and the OpenAPI document states it (`api::contract`). Ids, enums and
    /// booleans need none: their type says it all.
    const RULES: &'static [(&'static str, Rule)] = &[];
}

/// Fields the server sets itself; a client sending one is told so by name.
const SERVER_OWNED: [&str; 9] = [
    "id",
    "orgId",
    "createdAt",
    "updatedAt",
    "createdBy",
    "lastUsedAt",
    "hint",
    "key",
    "replacedBy",
];

/// A JSON body of at most 1 MiB, refused with the name of any field that does not belong.
pub struct ApiJson<T>(pub T);

/// Reads a JSON body: refused at once when its `Content-Length` is over the limit (before
/// hyper would send `100 Continue`), and refused when it is sent as anything but
/// `application/json`. An empty body needs no type: it is no body.
async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::with_detail(
            Code::PayloadTooLarge,
            format!("JSON bodies are limited to {MAX_JSON_BYTES} bytes (1 MiB)."),
        )
    };
    if declared_length(request.headers()).is_some_and(|n| n > MAX_JSON_BYTES as u64) {
        return Err(too_large());
    }
    let is_json = is_json_type(request.headers().get(header::CONTENT_TYPE));
    let bytes = Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::with_detail(Code::InvalidJson, "The request body could not be read.")
            }
        })?;
    if !is_json && !bytes.trim_ascii().is_empty() {
        return Err(ApiError::new(Code::UnsupportedMediaType));
    }
    Ok(bytes)
}

/// The body's length as its `Content-Length` declares it, so a body over a limit can be
/// refused before it is read (and before hyper sends `100 Continue`).
pub fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// `application/json` in any letter case, whatever its parameters; nothing else, not even
/// a `+json` type.
fn is_json_type(value: Option<&HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Parses a JSON object into `T`, naming every field that does not belong.
fn parse_body<T: RequestBody>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::with_detail(
            Code::InvalidJson,
            format!(
                "The request body is not valid JSON (line {}, column {}).",
                e.line(),
                e.column()
            ),
        )
    })?;
    let Some(object) = value.as_object() else {
        return Err(ApiError::with_detail(
            Code::InvalidJson,
            "The request body must be a JSON object.",
        ));
    };
    if let Some(name) = duplicate_member(bytes) {
        return Err(ApiError::invalid(
            &field_label(&name),
            "is given more than once; send each member once",
        ));
    }
    let mut errors = FieldErrors::default();
    for (name, value) in object {
        if T::FIELDS.contains(&name.as_str()) {
            if value.is_null() && !T::NULLABLE.contains(&name.as_str()) {
                errors.add(name, "must not be null; leave the field out instead");
            }
            continue;
        }
        let field = field_label(name);
        if SERVER_OWNED.contains(&name.as_str()) {
            errors.add(&field, "is set by the server and cannot be sent");
        } else {
            errors.add(&field, "is not a field of this request");
        }
    }
    errors.check()?;
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        // serde's own message may quote the value sent; ours never does.
        ApiError::invalid(&path, "has the wrong type")
    })
}

/// The first member name that appears twice in one object of a JSON document, at any
/// depth. A parser keeps one of the two silently (serde's last, others the first), so a
/// proxy or a log could read another request than the server does: such a body is refused.
fn duplicate_member(bytes: &[u8]) -> Option<String> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::cell::RefCell;

    struct Scan<'a>(&'a RefCell<Option<String>>);

    impl<'de> DeserializeSeed<'de> for Scan<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Scan<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Scan(self.0))?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(name) = map.next_key::<String>()? {
                if !seen.insert(name.clone()) {
                    *self.0.borrow_mut() = Some(name);
                    return Err(serde::de::Error::custom("duplicate member"));
                }
                map.next_value_seed(Scan(self.0))?;
            }
            Ok(())
        }
    }

    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let _ = Scan(&found).deserialize(&mut de);
    found.into_inner()
}

impl<S: Send + Sync, T: RequestBody> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request, state).await?;
        Ok(ApiJson(parse_body(&bytes)?))
    }
}

/// A JSON body that may be left out entirely (or sent as `null`); when sent, it is checked
/// like [`ApiJson`].
pub struct OptionalJson<T>(pub Option<T>);

impl<S: Send + Sync, T: RequestBody> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request, state).await?;
        let text = bytes.trim_ascii();
        if text.is_empty() || text == b"null" {
            return Ok(OptionalJson(None));
        }
        Ok(OptionalJson(Some(parse_body(&bytes)?)))
    }
}
