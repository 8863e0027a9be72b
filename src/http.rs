//! The pieces every route shares: request ids, logging, metrics, credentials in URLs,
//! case-insensitive paths and parameters, JSON bodies, and serving with graceful shutdown.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::clock::Timestamp;
use crate::error::{ApiError, Code, REQUEST_ID};
use crate::key::looks_like_key;
use crate::store::Page;
use crate::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
pub const MAX_JSON_BYTES: usize = 1024 * 1024;

/// Query parameter names that would carry a key; matched in any case.
const CREDENTIAL_PARAMS: [&str; 4] = ["api_key", "apikey", "x-api-key", "x_api_key"];

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

fn is_credential_param(name: &str) -> bool {
    CREDENTIAL_PARAMS
        .iter()
        .any(|c| c.eq_ignore_ascii_case(name))
}

/// Parameters that carry a secret legitimately (a realtime session's one-time secret): kept
/// out of the logs, but not refused.
fn is_secret_param(name: &str) -> bool {
    is_credential_param(name) || name.eq_ignore_ascii_case("clientSecret")
}

/// Whether text holds a key as sent, or once percent-decoded up to three times: a key sent
/// as `sai%255Flive%255F...` is still a key (and [`looks_like_key`] ignores letter case).
fn holds_key(text: &str) -> bool {
    let mut current = std::borrow::Cow::Borrowed(text);
    for _ in 0..=DECODE_ROUNDS {
        if looks_like_key(&current) {
            return true;
        }
        if !current.contains('%') {
            return false;
        }
        let next = percent_encoding::percent_decode_str(&current)
            .decode_utf8_lossy()
            .into_owned();
        if next == *current {
            return false;
        }
        current = std::borrow::Cow::Owned(next);
    }
    false
}

/// How many layers of percent-encoding are looked through for a key.
const DECODE_ROUNDS: usize = 3;

/// True when the URL carries a credential: a parameter named like one, or any part of the
/// path or query shaped like a key, whatever it is called.
fn has_credentials(uri: &Uri) -> bool {
    if holds_key(uri.path()) {
        return true;
    }
    uri.query().is_some_and(|q| {
        holds_key(q)
            || form_urlencoded::parse(q.as_bytes())
                .any(|(k, v)| is_credential_param(&k) || holds_key(&k) || holds_key(&v))
    })
}

/// The path and query as logs may show them: anything that could be a credential redacted.
pub fn loggable_uri(uri: &Uri) -> String {
    let path = if holds_key(uri.path()) {
        uri.path()
            .split('/')
            .map(|seg| if holds_key(seg) { "[REDACTED]" } else { seg })
            .collect::<Vec<_>>()
            .join("/")
    } else {
        uri.path().to_owned()
    };
    let Some(query) = uri.query() else {
        return path;
    };
    let pairs = form_urlencoded::parse(query.as_bytes());
    let secret = |k: &str, v: &str| is_secret_param(k) || holds_key(k) || holds_key(v);
    if !holds_key(query) && !pairs.clone().any(|(k, v)| secret(&k, &v)) {
        return format!("{path}?{query}");
    }
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if secret(&k, &v) {
            let name = if holds_key(&k) { "[REDACTED]" } else { &k };
            out.append_pair(name, "[REDACTED]");
        } else {
            out.append_pair(&k, &v);
        }
    }
    format!("{path}?{}", out.finish())
}

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

/// The bidirectional controls U+202A–U+202E and U+2066–U+2069: they make text display in
/// another order than it is stored ("Trojan Source"), so a name could pass for another.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

pub const BIDI_MESSAGE: &str =
    "must not contain bidirectional control characters (U+202A to U+202E, U+2066 to U+2069)";

/// Validation messages collected by field, answered together as one `validation_error`.
#[derive(Debug, Default)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_default()
            .push(message.into());
    }

    /// Checks the length of a text field that was sent (in characters), that it holds no
    /// control characters other than line breaks and tabs, and, when it may not be empty,
    /// that it is not blank either.
    pub fn text(&mut self, field: &str, value: Option<&str>, min: usize, max: usize) {
        let Some(v) = value else { return };
        let n = v.chars().count();
        if n < min || n > max {
            self.add(field, format!("must be {min} to {max} characters long"));
        } else if min > 0 && v.trim().is_empty() {
            self.add(field, "must not be blank");
        }
        if v.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
        {
            self.add(field, "must not contain control characters");
        }
        if v.chars().any(is_bidi_control) {
            self.add(field, BIDI_MESSAGE);
        }
    }

    /// A field that must be sent.
    pub fn required<T>(&mut self, field: &str, value: &Option<T>) {
        if value.is_none() {
            self.add(field, "is required");
        }
    }

    pub fn check(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self.0.keys().map(String::as_str).collect();
        let mut e = ApiError::with_detail(
            Code::ValidationError,
            format!("Not valid: {}.", names.join(", ")),
        );
        e.errors = self.0;
        Err(e)
    }
}

/// A request body: which fields it has, so unknown and server-owned ones are named back.
pub trait RequestBody: DeserializeOwned {
    const FIELDS: &'static [&'static str];
    /// Fields that may be sent as `null`; any other field sent as `null` is refused, so a
    /// body never means something other than what the document says.
    const NULLABLE: &'static [&'static str] = &[];
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

/// A field name the client sent, as an error may name it back: never a key, never long.
pub fn field_label(name: &str) -> String {
    if looks_like_key(name) {
        "[redacted]".to_owned()
    } else {
        name.chars().take(64).collect()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sai_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn credentials_are_found_under_any_name_and_anywhere_in_the_url() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert!(has_credentials(&uri("/api/v1/Me?API_KEY=x")));
        assert!(has_credentials(&uri(&format!("/api/v1/Me?token={KEY}"))));
        assert!(has_credentials(&uri(&format!("/api/v1/Agent/{KEY}"))));
        let encoded = KEY.replace('_', "%5F");
        assert!(has_credentials(&uri(&format!("/api/v1/Agent/{encoded}"))));
        assert!(has_credentials(&uri(&format!(
            "/api/v1/Me?token={encoded}"
        ))));
        let twice = KEY.replace('_', "%255F");
        let thrice = KEY.replace('_', "%25255F");
        assert!(has_credentials(&uri(&format!("/api/v1/Agent/{twice}"))));
        assert!(has_credentials(&uri(&format!("/api/v1/Me?q={thrice}"))));
        assert!(has_credentials(&uri(&format!(
            "/api/v1/Me?q={}",
            KEY.to_uppercase()
        ))));
        assert!(!has_credentials(&uri("/api/v1/Agent?Search=sai&Limit=5")));
        // Only the two prefixes make a key's shape; words that end like one do not.
        assert!(!has_credentials(&uri("/api/v1/Agent?Search=go_live_today")));
        assert!(!has_credentials(&uri("/api/v1/Agent?Search=unit_test_run")));
    }

    #[test]
    fn logged_urls_never_hold_a_key() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        for u in [
            format!("/api/v1/Me?apiKey={KEY}"),
            format!("/api/v1/Me?token={KEY}&Limit=5"),
            format!("/api/v1/Agent/{KEY}/response"),
            format!("/api/v1/Me?{KEY}=1"),
            format!("/api/v1/Agent/{}/response", KEY.replace('_', "%5f")),
        ] {
            let logged = loggable_uri(&uri(&u));
            assert!(!logged.contains(&KEY[9..]), "{logged}");
            assert!(logged.contains("REDACTED"), "{logged}");
        }
        assert_eq!(
            loggable_uri(&uri("/api/v1/Agent?Limit=5")),
            "/api/v1/Agent?Limit=5"
        );
    }

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
