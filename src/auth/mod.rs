//! Authentication of `/api/v1` requests, in the order the contract gives.
//!
//! The hot path is: checksum, SHA-256, the in-process cache of verified keys, org check,
//! rate limit. A cached key costs no database read, and no request costs a database write:
//! last use and the request's audit entry go to the [`Recorder`](crate::recorder::Recorder).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use uuid::Uuid;

use crate::clock::Timestamp;
use crate::error::{ApiError, Code};
use crate::key::{ApiKey, KeyDigest, Scope};
use crate::ratelimit::{Bucket, Quota};
use crate::store::{AuditRecord, KeyGrant, KeyRecord, Role, StoreResult};
use crate::{AppState, Settings};

mod policy;

use policy::{too_many, Gate, Unrecorded};
pub use policy::{unknown_path, Guard, Policy};

pub const API_KEY_HEADER: &str = "x-api-key";
pub const ORG_ID_HEADER: &str = "x-org-id";

/// A key that was found in the database, with what its checks need.
#[derive(Debug)]
pub struct VerifiedKey {
    pub key: KeyRecord,
    pub digest: KeyDigest,
    pub org_name: String,
    /// As in [`KeyGrant::owner_role`]: `None` once the key's membership has ended.
    pub owner_role: Option<Role>,
    /// The minute of the last use already sent to the database.
    last_used_minute: AtomicI64,
    /// When it was read from the database, on the server's clock.
    verified_at: Instant,
}

impl VerifiedKey {
    pub fn new(grant: KeyGrant, verified_at: Instant) -> Self {
        let minute = grant.key.last_used_at.map_or(i64::MIN, Timestamp::minute);
        VerifiedKey {
            key: grant.key,
            digest: grant.digest,
            org_name: grant.org_name,
            owner_role: grant.owner_role,
            last_used_minute: AtomicI64::new(minute),
            verified_at,
        }
    }

    /// Whether it was read from the database less than `lifetime` before `now`.
    fn fresh(&self, now: Instant, lifetime: Duration) -> bool {
        now.saturating_duration_since(self.verified_at) < lifetime
    }

    /// True the first time it is called in a minute: that use is the one to record.
    fn first_use_this_minute(&self, now: Timestamp) -> bool {
        let minute = now.minute();
        self.last_used_minute.fetch_max(minute, Ordering::AcqRel) < minute
    }
}

/// Keys this server holds as verified, by digest.
#[async_trait]
pub trait KeyCache: Send + Sync + 'static {
    /// The current epoch; an entry read from the database may be stored only if the epoch has
    /// not moved since before the read, so a concurrent invalidation is never undone.
    fn epoch(&self) -> u64;
    fn get(&self, digest: &KeyDigest) -> Option<Arc<VerifiedKey>>;
    fn insert(&self, epoch: u64, key: Arc<VerifiedKey>);
    /// Whether a key with this digest has been verified before, even if the cache has been
    /// emptied since: such keys are exempt from the per-address failure limit.
    fn verified_before(&self, digest: &KeyDigest) -> bool;
    /// Forgets every key: something that could revoke one has changed.
    fn invalidate_all(&self);
}

/// One process's cache. Bounded: past the limit it starts afresh, which only costs lookups.
pub struct InMemoryKeyCache {
    epoch: AtomicU64,
    keys: DashMap<KeyDigest, Arc<VerifiedKey>>,
    /// Survives invalidation, so that a change elsewhere does not lock working keys out of
    /// an address that is being flooded with bad ones.
    seen: DashMap<KeyDigest, ()>,
    capacity: usize,
}

impl InMemoryKeyCache {
    pub fn new(capacity: usize) -> Self {
        InMemoryKeyCache {
            epoch: AtomicU64::new(0),
            keys: DashMap::new(),
            seen: DashMap::new(),
            capacity,
        }
    }
}

impl KeyCache for InMemoryKeyCache {
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn get(&self, digest: &KeyDigest) -> Option<Arc<VerifiedKey>> {
        self.keys.get(digest).map(|k| Arc::clone(&k))
    }

    fn insert(&self, epoch: u64, key: Arc<VerifiedKey>) {
        if self.keys.len() >= self.capacity {
            self.invalidate_all();
            return;
        }
        if self.seen.len() >= self.capacity {
            self.seen.clear();
        }
        self.seen.insert(key.digest, ());
        self.keys.insert(key.digest, key);
        // An invalidation that raced with the read above may have missed this entry.
        if self.epoch() != epoch {
            self.keys.clear();
        }
    }

    fn verified_before(&self, digest: &KeyDigest) -> bool {
        self.seen.contains_key(digest)
    }

    fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.keys.clear();
    }
}

/// Watches the database's change counter, so that a delete, rotation or member removal made
/// by another process (the command line, another replica) empties this cache within a second.
pub async fn watch_changes(state: AppState, every: Duration) {
    let mut seen = state.store.generation().await.ok();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match state.store.generation().await {
            Ok(g) if Some(g) != seen => {
                if seen.is_some() {
                    tracing::debug!(
                        generation = g,
                        "keys or members changed; verified keys dropped"
                    );
                }
                state.keys.invalidate_all();
                seen = Some(g);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not read the change counter"),
        }
    }
}

/// The authenticated caller of an `/api/v1` request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub org_id: Uuid,
    pub verified: Arc<VerifiedKey>,
    pub rate_limit: u32,
    /// What the key may do: its own scope, capped by what its owner's role allows now.
    pub scope: Scope,
}

impl Caller {
    pub fn key(&self) -> &KeyRecord {
        &self.verified.key
    }

    /// An audit entry for an event this caller caused.
    pub fn audit(&self, action: &str, target: impl ToString) -> AuditRecord {
        AuditRecord::event(self.org_id, action, "api_key")
            .key(self.verified.key.id, &self.verified.key.name)
            .target(target)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::internal(
                "route",
                "a handler that needs a caller is outside /api/v1 or on a route without a policy",
            )
        })
    }
}

/// Marks a response whose handler wrote its own audit entry in its transaction.
#[derive(Debug, Clone, Copy)]
pub struct Audited;

/// Marks a response whose audit entry was written with the change it reports.
pub fn audited(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response.extensions_mut().insert(Audited);
    response
}

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

/// Middleware for every `/api/v1` path, including unknown ones: rows 1 to 8 of the
/// contract's table, before routing. The route's [`Policy`] then checks scope and rate limit.
pub async fn authenticate(
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
        let mut record = AuditRecord::event(caller.org_id, "request", "api_key")
            .key(caller.verified.key.id, &caller.verified.key.name);
        record.method = Some(method.as_str().to_owned());
        record.path = Some(path);
        record.status = Some(response.status().as_u16());
        record.request_id = crate::error::REQUEST_ID.try_with(Clone::clone).ok();
        state.recorder.audit(record);
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

/// Requests a minute a key may make, whether over HTTP or a realtime socket: its own limit,
/// or the server's default.
pub fn rate_limit(key: &KeyRecord, settings: &Settings) -> u32 {
    key.rate_limit.unwrap_or(settings.rate_limit)
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
    use crate::key::Environment;
    use axum::http::HeaderValue;

    fn verified(name: &str) -> Arc<VerifiedKey> {
        let key = ApiKey::generate(Environment::Live);
        let grant = KeyGrant {
            key: KeyRecord {
                id: Uuid::now_v7(),
                org_id: Uuid::now_v7(),
                name: name.to_owned(),
                environment: Environment::Live,
                scope: Scope::Read,
                hint: key.hint(),
                created_by: Uuid::now_v7(),
                created_at: Timestamp(0),
                expires_at: None,
                rate_limit: None,
                last_used_at: None,
                replaced_by: None,
                grace_ends_at: None,
            },
            digest: key.digest(),
            org_name: "Acme".into(),
            owner_role: Some(Role::Owner),
        };
        Arc::new(VerifiedKey::new(grant, Instant::now()))
    }

    #[test]
    fn an_entry_read_before_an_invalidation_is_not_kept() {
        let cache = InMemoryKeyCache::new(10);
        let (a, b) = (verified("a"), verified("b"));
        let before = cache.epoch();
        cache.insert(before, Arc::clone(&a));
        assert!(cache.get(&a.digest).is_some());
        cache.invalidate_all();
        assert_eq!(cache.epoch(), before + 1);
        assert!(cache.get(&a.digest).is_none());
        // Read from the database before the invalidation, stored after it: dropped.
        cache.insert(before, Arc::clone(&b));
        assert!(cache.get(&b.digest).is_none());
        cache.insert(cache.epoch(), Arc::clone(&b));
        assert!(cache.get(&b.digest).is_some());
        // Verified once, always exempt from the failure limit; never verified, not.
        assert!(cache.verified_before(&a.digest) && cache.verified_before(&b.digest));
        assert!(!cache.verified_before(&verified("c").digest));
    }

    #[test]
    fn a_full_cache_starts_afresh() {
        let cache = InMemoryKeyCache::new(2);
        let keys = [verified("a"), verified("b"), verified("c")];
        cache.insert(cache.epoch(), Arc::clone(&keys[0]));
        cache.insert(cache.epoch(), Arc::clone(&keys[1]));
        assert!(keys[..2].iter().all(|k| cache.get(&k.digest).is_some()));
        cache.insert(cache.epoch(), Arc::clone(&keys[2]));
        assert!(keys.iter().all(|k| cache.get(&k.digest).is_none()));
        cache.insert(cache.epoch(), Arc::clone(&keys[2]));
        assert!(cache.get(&keys[2].digest).is_some());
    }

    #[test]
    fn a_verified_key_is_fresh_for_its_lifetime_and_not_a_moment_longer() {
        let key = verified("a");
        let at = key.verified_at;
        let life = Duration::from_secs(30);
        assert!(key.fresh(at, life));
        assert!(key.fresh(at + Duration::from_millis(29_999), life));
        assert!(!key.fresh(at + life, life));
    }

    #[test]
    fn a_use_is_recorded_the_first_time_in_each_minute() {
        let key = verified("a");
        let t = |ms| Timestamp(ms);
        assert!(key.first_use_this_minute(t(120_000)));
        assert!(!key.first_use_this_minute(t(179_999)));
        assert!(key.first_use_this_minute(t(180_000)));
        assert!(
            !key.first_use_this_minute(t(120_000)),
            "time never goes back"
        );
    }

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
