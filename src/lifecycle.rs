//! The key lifecycle, shared by the command line and the API: create, rotate, delete.
//!
//! The plaintext of a new key exists only in the [`ApiKey`] these functions return; what
//! they store is its digest and hint.

use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::clock::Timestamp;
use crate::key::{ApiKey, Environment, Scope};
use crate::store::{AuditRecord, KeyRecord, NewKey, Store, StoreError, StoreResult};

/// Longest key name.
pub const NAME_MAX: usize = 100;
/// Grace period of a rotated key unless told otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// What a new key should be.
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub name: String,
    pub environment: Environment,
    pub scope: Scope,
    pub expires_in: Option<Duration>,
    pub rate_limit: Option<u32>,
}

/// A key with its value: only in the answer to create and rotate, never stored.
#[derive(Serialize, ToSchema)]
pub struct IssuedKey {
    #[serde(flatten)]
    pub record: KeyRecord,
    /// The key itself. This is the only time it is shown; store it in a secret manager.
    #[schema(example = "sai_live_<40 random characters><6-character checksum>")]
    pub key: String,
}

/// Shows the record and never the value, should an issued key ever be logged.
impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("record", &self.record)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

impl IssuedKey {
    pub fn new(record: KeyRecord, key: &ApiKey) -> Self {
        IssuedKey {
            record,
            key: key.reveal().to_owned(),
        }
    }
}

pub use crate::audit::Actor;

/// An entry about the key `subject`. A request names the key that made it; the command
/// line, which has no key, names the subject itself.
fn audit(
    actor: &Actor,
    org_id: Uuid,
    action: &str,
    subject: Uuid,
    subject_name: &str,
) -> AuditRecord {
    let record = actor.record(org_id, action);
    match actor {
        Actor::Key { .. } => record,
        Actor::Cli | Actor::Server => record.key(subject, subject_name),
    }
    .target(subject)
}

/// 1 to 100 printable characters, no leading or trailing space.
pub fn check_name(name: &str) -> Result<(), String> {
    let n = name.chars().count();
    if n == 0 || n > NAME_MAX {
        return Err(format!("must be 1 to {NAME_MAX} characters long"));
    }
    if name.chars().any(char::is_control) {
        return Err("must contain printable characters only".into());
    }
    if name.trim() != name {
        return Err("must not start or end with spaces".into());
    }
    if name.chars().any(crate::http::is_bidi_control) {
        return Err(crate::http::BIDI_MESSAGE.into());
    }
    Ok(())
}

/// Whether a name follows the suggested `<system>-<environment>-<purpose>` pattern.
pub fn follows_naming_pattern(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

fn new_key(spec: &KeySpec, created_by: Uuid, now: Timestamp) -> (NewKey, ApiKey) {
    let key = ApiKey::generate(spec.environment);
    let record = NewKey {
        id: Uuid::now_v7(),
        name: spec.name.clone(),
        environment: spec.environment,
        scope: spec.scope,
        digest: key.digest(),
        hint: key.hint(),
        created_by,
        created_at: now,
        expires_at: spec.expires_in.map(|d| now.plus(d)),
        rate_limit: spec.rate_limit,
    };
    (record, key)
}

/// Creates a key for `user` in `org_id` at `now`; the user must be a member.
pub async fn create(
    store: &dyn Store,
    org_id: Uuid,
    user_id: Uuid,
    spec: &KeySpec,
    actor: &Actor,
    now: Timestamp,
) -> StoreResult<(KeyRecord, ApiKey)> {
    check_name(&spec.name).map_err(|message| StoreError::Invalid {
        field: "name",
        message,
    })?;
    let (record, key) = new_key(spec, user_id, now);
    let audit = audit(actor, org_id, "api_key.created", record.id, &record.name);
    let stored = store.create_key(org_id, &record, audit).await?;
    Ok((stored, key))
}

/// Issues a successor with the same name, scope, environment, owner and limit; the old key
/// keeps working for `grace` from `now`.
pub async fn rotate(
    store: &dyn Store,
    org_id: Uuid,
    key_id: Uuid,
    grace: Duration,
    actor: &Actor,
    now: Timestamp,
) -> StoreResult<(KeyRecord, ApiKey)> {
    let old = store.get_key(org_id, key_id).await?;
    let spec = KeySpec {
        name: old.name.clone(),
        environment: old.environment,
        scope: old.scope,
        // A key that had a lifetime gets the same lifetime again, counted from now.
        expires_in: old
            .expires_at
            .map(|e| Duration::from_millis((e.millis() - old.created_at.millis()).max(0) as u64)),
        rate_limit: old.rate_limit,
    };
    let (successor, key) = new_key(&spec, old.created_by, now);
    let audit = audit(actor, org_id, "api_key.rotated", old.id, &old.name);
    let stored = store
        .rotate_key(org_id, key_id, now.plus(grace), &successor, audit)
        .await?;
    Ok((stored, key))
}

/// Deletes a key; it stops working at once.
pub async fn delete(
    store: &dyn Store,
    org_id: Uuid,
    key_id: Uuid,
    actor: &Actor,
) -> StoreResult<()> {
    let old = store.get_key(org_id, key_id).await?;
    let audit = audit(actor, org_id, "api_key.deleted", old.id, &old.name);
    store.delete_key(org_id, key_id, audit).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_the_pattern_is_recognised() {
        assert!(check_name("crm-prod-sync").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(&"x".repeat(101)).is_err());
        assert!(check_name("tab\there").is_err());
        assert!(check_name(" padded").is_err());
        assert!(follows_naming_pattern("crm-prod-sync"));
        assert!(follows_naming_pattern("billing-test-nightly_export"));
        assert!(!follows_naming_pattern("my key"));
        assert!(!follows_naming_pattern("crm--sync"));
        assert!(!follows_naming_pattern("CRM-prod-sync"));
    }

    #[test]
    fn an_issued_key_shows_its_record_but_never_its_value() {
        let spec = KeySpec {
            name: "crm-prod-sync".into(),
            environment: Environment::Live,
            scope: Scope::Write,
            expires_in: None,
            rate_limit: None,
        };
        let (new, key) = new_key(&spec, Uuid::now_v7(), Timestamp::now());
        let record = KeyRecord {
            id: new.id,
            org_id: Uuid::now_v7(),
            name: new.name,
            environment: new.environment,
            scope: new.scope,
            hint: new.hint,
            created_by: new.created_by,
            created_at: new.created_at,
            expires_at: None,
            rate_limit: None,
            last_used_at: None,
            replaced_by: None,
            grace_ends_at: None,
        };
        let issued = IssuedKey::new(record, &key);
        let shown = format!("{issued:?}");
        assert!(shown.contains("crm-prod-sync"), "{shown}");
        assert!(!shown.contains(&key.reveal()[9..]), "{shown}");
    }
}
