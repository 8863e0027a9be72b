//! Who is calling: a key read from the database, and the caller a request acts as once its
//! key has passed the contract's checks.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use uuid::Uuid;

use crate::audit::Actor;
use crate::clock::Timestamp;
use crate::error::ApiError;
use crate::key::{KeyDigest, Scope};
use crate::settings::Settings;
use crate::store::{AuditRecord, KeyGrant, KeyRecord, Role};

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
    pub(super) fn fresh(&self, now: Instant, lifetime: Duration) -> bool {
        now.saturating_duration_since(self.verified_at) < lifetime
    }

    /// True the first time it is called in a minute: that use is the one to record.
    pub(super) fn first_use_this_minute(&self, now: Timestamp) -> bool {
        let minute = now.minute();
        self.last_used_minute.fetch_max(minute, Ordering::AcqRel) < minute
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

    /// The calling key, as the audit log names it.
    pub fn actor(&self) -> Actor {
        Actor::Key {
            id: self.verified.key.id,
            name: self.verified.key.name.clone(),
        }
    }

    /// An audit entry for an event this caller caused.
    pub fn audit(&self, action: &str, target: impl ToString) -> AuditRecord {
        self.actor().record(self.org_id, action).target(target)
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

/// Requests a minute a key may make, whether over HTTP or a realtime socket: its own limit,
/// or the server's default.
pub fn rate_limit(key: &KeyRecord, settings: &Settings) -> u32 {
    key.rate_limit.unwrap_or(settings.rate_limit)
}

/// A key as the cache holds it, for the tests of this module and its neighbours.
#[cfg(test)]
pub(crate) fn sample(name: &str) -> Arc<VerifiedKey> {
    use crate::key::{ApiKey, Environment};
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_key_is_fresh_for_its_lifetime_and_not_a_moment_longer() {
        let key = sample("a");
        let at = key.verified_at;
        let life = Duration::from_secs(30);
        assert!(key.fresh(at, life));
        assert!(key.fresh(at + Duration::from_millis(29_999), life));
        assert!(!key.fresh(at + life, life));
    }

    #[test]
    fn a_use_is_recorded_the_first_time_in_each_minute() {
        let key = sample("a");
        let t = |ms| Timestamp(ms);
        assert!(key.first_use_this_minute(t(120_000)));
        assert!(!key.first_use_this_minute(t(179_999)));
        assert!(key.first_use_this_minute(t(180_000)));
        assert!(
            !key.first_use_this_minute(t(120_000)),
            "time never goes back"
        );
    }
}
