//! `GET /api/v1/Me`: who the calling key is.

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::auth::Caller;
use crate::auth::{Guard, Policy};
use crate::clock::Timestamp;
use crate::key::{Environment, Scope};
use crate::state::AppState;

/// The key that made the request.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub org_id: Uuid,
    pub org_name: String,
    pub key_id: Uuid,
    /// The key's name, such as `crm-prod-sync`.
    pub name: String,
    /// The scope the key acts with: its own, or less while its owner's role allows less
    /// (a member's keys act with `write` at most).
    pub scope: Scope,
    pub environment: Environment,
    /// Requests per minute this key may make.
    pub rate_limit: u32,
    pub hint: String,
    pub created_by: Uuid,
    pub expires_at: Option<Timestamp>,
}

/// Describe the calling key.
///
/// A read-only request that is safe for checking that credentials work, for example right
/// after rotating a key.
#[utoipa::path(get, path = "/api/v1/Me", responses((status = 200, body = Me)))]
async fn me(caller: Caller) -> Json<Me> {
    let key = caller.key();
    Json(Me {
        org_id: caller.org_id,
        org_name: caller.verified.org_name.clone(),
        key_id: key.id,
        name: key.name.clone(),
        scope: caller.scope,
        environment: key.environment,
        rate_limit: caller.rate_limit,
        hint: key.hint.clone(),
        created_by: key.created_by,
        expires_at: key.ends_at(),
    })
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .guard(Policy::STANDARD)
}
