//! API keys over HTTP, for admin keys: list and search, create, get, rotate, delete.
//!
//! The same rules as the command line, through the same [`lifecycle`] functions; a change
//! here drops this server's verified keys at once, and other servers' within a second.

use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::call::Call;
use crate::audit::audited;
use crate::auth::revocation;
use crate::auth::Caller;
use crate::auth::{Guard, Policy};
use crate::duration::{
    HumanDuration, DURATION_MAX, DURATION_PATTERN, MAX_RATE_LIMIT, POSITIVE_DURATION_PATTERN,
};
use crate::error::Result;
use crate::http::PathId;
use crate::http::{
    ApiJson, Chars, FieldErrors, List, OptionalJson, Paging, Params, RequestBody, Rule, TextRule,
};
use crate::key::{Environment, Scope};
use crate::lifecycle::{self, Actor, IssuedKey, KeySpec, DEFAULT_GRACE};
use crate::state::AppState;
use crate::store::{KeyFilter, KeyRecord, Listed};

/// A key to create. It is owned by the member who owns the calling key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewApiKey {
    /// 1 to 100 printable characters, not starting or ending with a space, unique among the
    /// organization's live keys. Suggested pattern: `<system>-<environment>-<purpose>`.
    #[schema(required = true, nullable = false, example = "crm-prod-sync")]
    pub name: Option<String>,
    /// `read` when left out. At most what the owner's role allows: `write` for a `member`
    /// (400 naming `scope` beyond it).
    #[schema(value_type = Scope, required = false)]
    pub scope: Option<String>,
    /// `live` when left out.
    #[schema(value_type = Environment, required = false)]
    pub environment: Option<String>,
    /// Lifetime such as `30d` or `12h`: a whole number from 1 to 999999 and a unit (`s`,
    /// `m`, `h` or `d`). Without it the key does not expire.
    #[schema(nullable = false, example = "90d")]
    pub expires_in: Option<String>,
    /// Requests per minute; without it the server default applies.
    #[schema(value_type = u32, required = false)]
    pub rate_limit: Option<serde_json::Number>,
}

impl RequestBody for NewApiKey {
    const FIELDS: &'static [&'static str] =
        &["name", "scope", "environment", "expiresIn", "rateLimit"];
    const RULES: &'static [(&'static str, Rule)] = &[
        ("name", Rule::Text(KEY_NAME)),
        (
            "expiresIn",
            Rule::Grammar {
                pattern: POSITIVE_DURATION_PATTERN,
                max: DURATION_MAX,
            },
        ),
        (
            "rateLimit",
            Rule::Whole {
                min: 1,
                max: MAX_RATE_LIMIT as i64,
            },
        ),
    ];
}

/// A key's name, as [`lifecycle::check_name`] checks it for the API and the command line.
const KEY_NAME: TextRule = TextRule {
    min: 1,
    max: lifecycle::NAME_MAX,
    chars: Chars::Name,
};

impl NewApiKey {
    fn into_spec(self) -> Result<KeySpec> {
        let mut errors = FieldErrors::default();
        let name = self.name.unwrap_or_default();
        if let Err(message) = lifecycle::check_name(&name) {
            errors.add("name", message);
        }
        let scope = match self.scope.as_deref() {
            None => Scope::Read,
            Some(s) => Scope::parse(s).unwrap_or_else(|| {
                errors.add("scope", "must be read, write or admin");
                Scope::Read
            }),
        };
        let environment = match self.environment.as_deref() {
            None => Environment::Live,
            Some(s) => Environment::parse(s).unwrap_or_else(|| {
                errors.add("environment", "must be live or test");
                Environment::Live
            }),
        };
        let expires_in =
            self.expires_in
                .as_deref()
                .and_then(|s| match s.parse::<HumanDuration>() {
                    Ok(d) if !d.0.is_zero() => Some(d.0),
                    _ => {
                        errors.add(
                            "expiresIn",
                            "must be a duration such as 30d, 12h or 15m, longer than 0",
                        );
                        None
                    }
                });
        // A JSON number: `600` and `600.0` are the same whole number.
        let rate_limit = self.rate_limit.and_then(|n| {
            let whole = n
                .as_f64()
                .filter(|f| f.fract() == 0.0 && (1.0..=f64::from(MAX_RATE_LIMIT)).contains(f));
            if whole.is_none() {
                errors.add(
                    "rateLimit",
                    "must be a whole number of requests per minute from 1 to 1000000000",
                );
            }
            whole.map(|f| f as u32)
        });
        errors.check()?;
        Ok(KeySpec {
            name,
            environment,
            scope,
            expires_in,
            rate_limit,
        })
    }
}

/// How long the replaced key keeps working.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// A duration such as `24h` (the default when left out): a whole number from 1 to 999999
    /// and a unit (`s`, `m`, `h` or `d`), or `0` to end the old key at once.
    #[schema(nullable = false, example = "24h")]
    pub grace: Option<String>,
}

impl RequestBody for Rotation {
    const FIELDS: &'static [&'static str] = &["grace"];
    const RULES: &'static [(&'static str, Rule)] = &[(
        "grace",
        Rule::Grammar {
            pattern: DURATION_PATTERN,
            max: DURATION_MAX,
        },
    )];
}

fn actor(caller: &Caller) -> Actor {
    Actor::Key {
        id: caller.key().id,
        name: caller.key().name.clone(),
    }
}

/// List or search the organization's keys, oldest first. Values are never shown.
#[utoipa::path(
    get, path = "/api/v1/ApiKey",
    params(
        ("Search" = Option<String>, Query, description = "Case-insensitive text in the key's name"),
        Paging,
    ),
    responses((status = 200, body = List<KeyRecord>)),
)]
async fn list_keys(Call(state, caller): Call, params: Params) -> Result<Json<List<KeyRecord>>> {
    let (page, search) = params.page_and_search(Some("Search"))?;
    let filter = KeyFilter {
        search: search.map(str::to_owned),
        ..KeyFilter::default()
    };
    let keys = state.store.list_keys(caller.org_id, &filter).await?;
    let total = keys.len() as i64;
    let items = keys
        .into_iter()
        .skip(page.offset as usize)
        .take(page.limit as usize)
        .collect();
    Ok(Json(List::new(Listed { items, total }, page)))
}

/// Create a key. Its value is in this response only: store it now.
#[utoipa::path(post, path = "/api/v1/ApiKey", request_body = NewApiKey, responses((status = 201, body = IssuedKey)))]
async fn create_key(
    Call(state, caller): Call,
    ApiJson(input): ApiJson<NewApiKey>,
) -> Result<Response> {
    let spec = input.into_spec()?;
    let owner = caller.key().created_by;
    let now = state.settings.clock.now();
    let (record, key) = lifecycle::create(
        &*state.store,
        caller.org_id,
        owner,
        &spec,
        &actor(&caller),
        now,
    )
    .await?;
    Ok(audited((
        StatusCode::CREATED,
        Json(IssuedKey::new(record, &key)),
    )))
}

/// Rotate a key: the successor (same name, scope, environment, owner and limit) is in this
/// response only; the old key keeps working for the grace period.
#[utoipa::path(
    post, path = "/api/v1/ApiKey/{keyId}/rotate",
    request_body(content = Option<Rotation>, description = "Optional; the grace period defaults to 24h"),
    responses((status = 200, body = IssuedKey)),
)]
async fn rotate_key(
    Call(state, caller): Call,
    PathId(id): PathId,
    OptionalJson(body): OptionalJson<Rotation>,
) -> Result<Response> {
    let grace = match body.and_then(|b| b.grace) {
        None => DEFAULT_GRACE,
        Some(g) => g.parse::<HumanDuration>().map(|d| d.0).map_err(|_| {
            crate::error::ApiError::invalid("grace", "must be a duration such as 24h, 30m or 0s")
        })?,
    };
    let now = state.settings.clock.now();
    let (record, key) = lifecycle::rotate(
        &*state.store,
        caller.org_id,
        id,
        grace,
        &actor(&caller),
        now,
    )
    .await?;
    revocation::keys_changed(&*state.keys, state.cluster.as_deref()).await;
    Ok(audited(Json(IssuedKey::new(record, &key))))
}

/// Get one key of the organization: its record, never its value. A deleted key, or another
/// organization's, is not found.
#[utoipa::path(get, path = "/api/v1/ApiKey/{keyId}", responses((status = 200, body = KeyRecord)))]
async fn get_key(Call(state, caller): Call, PathId(id): PathId) -> Result<Json<KeyRecord>> {
    Ok(Json(state.store.get_key(caller.org_id, id).await?))
}

/// Delete a key; it stops working at once.
#[utoipa::path(delete, path = "/api/v1/ApiKey/{keyId}", responses((status = 204)))]
async fn delete_key(Call(state, caller): Call, PathId(id): PathId) -> Result<Response> {
    lifecycle::delete(&*state.store, caller.org_id, id, &actor(&caller)).await?;
    revocation::keys_changed(&*state.keys, state.cluster.as_deref()).await;
    Ok(audited(StatusCode::NO_CONTENT))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(rotate_key))
        .routes(routes!(get_key, delete_key))
        .guard(Policy::ADMIN)
}
