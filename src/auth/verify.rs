//! Rows 1 to 8 of the contract's table, before routing: the key, its expiry, the
//! organization and the key owner's membership, with the per-address limit on failures.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::caller::{rate_limit, Caller, VerifiedKey};
use super::policy::{too_many, Gate, Unrecorded};
use crate::audit::Audited;
use crate::error::{ApiError, Code};
use crate::key::{ApiKey, KeyDigest};
use crate::ratelimit::{Bucket, Quota};
use crate::state::AppState;
use crate::store::{KeyGrant, StoreResult};

pub const API_KEY_HEADER: &str = "x-api-key";
pub const ORG_ID_HEADER: &str = "x-org-id";

/// The client's address: the connection's peer, or, when the peer is a trusted proxy, the
/// nearest address in `X-Forwarded-For` that is not a trusted proxy. Addresses to the left
/// of that one were written by the client itself and are never believed.
fn client_ip(request: &Request, trusted: &[ipnet::IpNet]) -> IpAddr {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = forwarded_ip(hop) else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// One entry of `X-Forwarded-For`: an address, perhaps with a port.
fn forwarded_ip(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// A credential header as sent: absent (or blank), unreadable as text, or a value.
enum Presented<'a> {
    Missing,
    Unreadable,
    Value(&'a str),
}

/// A header sent twice is unreadable: a proxy that reads the other copy would see another
/// request than the server does.
fn read_header<'a>(headers: &'a HeaderMap, name: &str) -> Presented<'a> {
    let mut values = headers.get_all(name).iter();
    if values.next().is_some() && values.next().is_some() {
        return Presented::Unreadable;
    }
    match headers.get(name).map(|v| v.to_str().map(str::trim)) {
        None => Presented::Missing,
        Some(Ok("")) => Presented::Missing,
        Some(Ok(v)) => Presented::Value(v),
        // Not text: a byte past ASCII, never white space.
        Some(Err(_)) => Presented::Unreadable,
    }
}

/// Rows 1 to 8 of the contract's table for an `/api/v1` path, known or not, before
/// routing. The route's [`Policy`] then checks scope and rate limit.
async fn rows_one_to_eight(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if request.method() == Method::OPTIONS {
        return next.run(request).await;
    }
    let ip = client_ip(&request, &state.settings.trusted_proxies);
    let caller = match check(&state, request.headers(), ip).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    request.extensions_mut().insert(Gate {
        caller: caller.clone(),
        state: state.clone(),
    });
    let response = next.run(request).await;
    finish(&state, caller, &method, path, response)
}

/// Middleware for the whole application: authenticates every `/api/v1` path, known or not.
pub async fn authenticate(state: State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/api/v1" || path.starts_with("/api/v1/") {
        rows_one_to_eight(state, request, next).await
    } else {
        next.run(request).await
    }
}

/// Records an authenticated request in the audit log, unless its handler already wrote the
/// record with the change it made, and attaches the caller for the request log line.
fn finish(
    state: &AppState,
    caller: Caller,
    method: &Method,
    path: String,
    mut response: Response,
) -> Response {
    let recorded = response.extensions().get::<Audited>().is_some()
        || response.extensions().get::<Unrecorded>().is_some();
    if !recorded {
        let record = caller.actor().record(caller.org_id, "request");
        let status = response.status().as_u16();
        let request_id = crate::error::REQUEST_ID.try_with(Clone::clone).ok();
        state
            .recorder
            .audit(record.answered(method.as_str(), path, status, request_id));
    }
    response.extensions_mut().insert(caller);
    response
}

/// Rows 1 to 8 of the contract's table, the scope that row 10 checks, and the per-address
/// limit on failures before them.
async fn check(state: &AppState, headers: &HeaderMap, ip: IpAddr) -> Result<Caller, ApiError> {
    let presented = read_header(headers, API_KEY_HEADER);
    let parsed = match presented {
        Presented::Value(v) => Some(ApiKey::parse(v)),
        Presented::Unreadable => Some(Err(crate::key::MalformedKey)),
        Presented::Missing => None,
    };
    let digest = match &parsed {
        Some(Ok(key)) => Some(key.digest()),
        _ => None,
    };
    // Whatever the announcements and the counter say, no key is believed for longer than
    // the cache lifetime without being read again.
    let now = state.settings.clock.instant();
    let cached = digest
        .as_ref()
        .and_then(|d| state.keys.get(d))
        .filter(|k| k.fresh(now, state.settings.key_cache_ttl));
    let failures = Quota::per_minute(state.settings.auth_failure_limit);
    let known = cached.is_some()
        || digest
            .as_ref()
            .is_some_and(|d| state.keys.verified_before(d));
    if !known {
        if let Some(d) = state.limiter.peek(Bucket::address(ip), failures).await {
            state.metrics.rate_limited("address");
            return Err(too_many("failed-auth", &d));
        }
    }
    let result = verify(state, headers, presented, parsed, digest, cached).await;
    if let Err(e) = &result {
        state.metrics.auth_failure(e.code);
        if e.code != Code::ServiceUnavailable && e.code != Code::InternalError {
            state.limiter.check(Bucket::address(ip), failures).await;
        }
    }
    result
}

async fn verify(
    state: &AppState,
    headers: &HeaderMap,
    presented: Presented<'_>,
    parsed: Option<Result<ApiKey, crate::key::MalformedKey>>,
    digest: Option<KeyDigest>,
    cached: Option<Arc<VerifiedKey>>,
) -> Result<Caller, ApiError> {
    if matches!(presented, Presented::Missing) {
        return Err(ApiError::new(Code::MissingApiKey));
    }
    let (Some(Ok(_)), Some(digest)) = (parsed, digest) else {
        return Err(ApiError::new(Code::InvalidApiKey));
    };
    let verified = match cached {
        Some(v) => v,
        None => load(state, &digest)
            .await?
            .ok_or_else(|| ApiError::new(Code::InvalidApiKey))?,
    };
    if !verified.digest.matches(&digest) {
        return Err(ApiError::new(Code::InvalidApiKey));
    }
    if let Some(end) = verified.key.ends_at() {
        if state.settings.clock.now() >= end {
            return Err(ApiError::new(Code::ExpiredApiKey));
        }
    }
    let org_id = match read_header(headers, ORG_ID_HEADER) {
        Presented::Missing => return Err(ApiError::new(Code::MissingOrgId)),
        Presented::Unreadable => return Err(ApiError::new(Code::InvalidOrgId)),
        Presented::Value(org) => {
            crate::http::parse_id(org).ok_or_else(|| ApiError::new(Code::InvalidOrgId))?
        }
    };
    if org_id != verified.key.org_id {
        return Err(ApiError::new(Code::OrgAccessDenied));
    }
    let Some(role) = verified.owner_role else {
        return Err(ApiError::new(Code::KeyOwnerNotMember));
    };
    let rate_limit = rate_limit(&verified.key, &state.settings);
    Ok(Caller {
        org_id,
        scope: role.cap(verified.key.scope),
        verified,
        rate_limit,
    })
}

async fn load(state: &AppState, digest: &KeyDigest) -> Result<Option<Arc<VerifiedKey>>, ApiError> {
    let epoch = state.keys.epoch();
    state.metrics.key_lookup();
    let grant: StoreResult<Option<KeyGrant>> = state.store.find_grant(digest).await;
    let Some(grant) = grant? else { return Ok(None) };
    let verified = Arc::new(VerifiedKey::new(grant, state.settings.clock.instant()));
    state.keys.insert(epoch, Arc::clone(&verified));
    Ok(Some(verified))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn credential_headers_are_read_once_trimmed_and_never_twice() {
        let mut h = HeaderMap::new();
        assert!(matches!(read_header(&h, "x-api-key"), Presented::Missing));
        h.insert("x-api-key", HeaderValue::from_static(" \t "));
        assert!(matches!(read_header(&h, "x-api-key"), Presented::Missing));
        h.insert("x-api-key", HeaderValue::from_static(" sai_live_x "));
        assert!(matches!(
            read_header(&h, "x-api-key"),
            Presented::Value("sai_live_x")
        ));
        h.insert("x-api-key", HeaderValue::from_bytes(b"sai_\xe9").unwrap());
        assert!(matches!(
            read_header(&h, "x-api-key"),
            Presented::Unreadable
        ));
        h.insert("x-api-key", HeaderValue::from_static("a"));
        h.append("x-api-key", HeaderValue::from_static("a"));
        assert!(matches!(
            read_header(&h, "x-api-key"),
            Presented::Unreadable
        ));
    }
}
