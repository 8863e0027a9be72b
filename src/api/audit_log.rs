//! `GET /api/v1/AuditLog`: what happened in the organization, newest first.

use axum::extract::State;
use axum::Json;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Caller;
use crate::error::Result;
use crate::http::{FieldErrors, List, Params};
use crate::store::{AuditFilter, AuditRecord};
use crate::AppState;

/// List audit records: key lifecycle events, changes, and every authenticated request.
#[utoipa::path(
    get, path = "/api/v1/AuditLog", tag = "AuditLog",
    params(
        ("From" = Option<String>, Query, description = "Only records at or after this RFC 3339 time"),
        ("To" = Option<String>, Query, description = "Only records before this RFC 3339 time"),
        ("Action" = Option<String>, Query, description = "Only records of this action, such as `api_key.created`"),
        ("Offset" = Option<i64>, Query, description = "Items to skip (default 0)"),
        ("Limit" = Option<i64>, Query, description = "Items per page, 1 to 100 (default 25)"),
    ),
    responses((status = 200, body = List<AuditRecord>)),
)]
async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
) -> Result<Json<List<AuditRecord>>> {
    let mut errors = FieldErrors::default();
    let page = params.page(&mut errors);
    let filter = AuditFilter {
        from: params.time("From", &mut errors),
        to: params.time("To", &mut errors),
        action: params.text("Action").map(str::to_owned),
    };
    errors.check()?;
    let listed = state.store.list_audit(caller.org_id, &filter, page).await?;
    Ok(Json(List::new(listed, page)))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}
