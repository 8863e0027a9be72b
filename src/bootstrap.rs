//! The first start of a server on an empty database.

use uuid::Uuid;

use crate::clock::Timestamp;
use crate::key::{ApiKey, Environment, Scope};
use crate::store::{Bootstrap, NewKey, Organization, Store, StoreResult, User};

pub const DEFAULT_ORG: &str = "Default";
pub const OWNER_EMAIL: &str = "admin@localhost";
pub const KEY_NAME: &str = "siesta-local-admin";

/// What the first start created: shown once on stdout, never logged.
pub struct FirstStart {
    pub org_id: Uuid,
    pub key: ApiKey,
}

/// Creates the organization "Default", its owner and an admin key, if the database has no
/// organization yet. Several replicas starting together create it once.
pub async fn first_start(store: &dyn Store) -> StoreResult<Option<FirstStart>> {
    let now = Timestamp::now();
    let key = ApiKey::generate(Environment::Live);
    let user = User {
        id: Uuid::now_v7(),
        email: OWNER_EMAIL.to_owned(),
        created_at: now,
    };
    let boot = Bootstrap {
        org: Organization {
            id: Uuid::now_v7(),
            name: DEFAULT_ORG.to_owned(),
            created_at: now,
        },
        key: NewKey {
            id: Uuid::now_v7(),
            name: KEY_NAME.to_owned(),
            environment: Environment::Live,
            scope: Scope::Admin,
            digest: key.digest(),
            hint: key.hint(),
            created_by: user.id,
            created_at: now,
            expires_at: None,
            rate_limit: None,
        },
        user,
    };
    let org_id = boot.org.id;
    Ok(store
        .bootstrap(&boot)
        .await?
        .then_some(FirstStart { org_id, key }))
}

/// The block printed under the `listening on` line after a first start.
pub fn announcement(first: &FirstStart, public_url: &str) -> String {
    let key = first.key.reveal();
    let org = first.org_id;
    [
        String::new(),
        format!("First start: the database was empty, so siesta created the organization \"{DEFAULT_ORG}\","),
        format!("its owner {OWNER_EMAIL} and an admin API key. The key is shown this once and never"),
        "again: store it in your secret manager now.".to_owned(),
        String::new(),
        format!("  X-Org-Id:  {org}"),
        format!("  X-Api-Key: {key}"),
        String::new(),
        "Your first request:".to_owned(),
        String::new(),
        format!("  curl -H 'X-Api-Key: {key}' -H 'X-Org-Id: {org}' {public_url}/api/v1/Me"),
        String::new(),
    ]
    .join("\n")
}
