//! Task workspaces: the places an organization's tasks live.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::api::{audited, PathId};
use crate::auth::Caller;
use crate::clock::Timestamp;
use crate::error::Result;
use crate::http::{ApiJson, FieldErrors, List, Params, RequestBody};
use crate::store::TaskWorkspace;
use crate::AppState;

/// A workspace to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewTaskWorkspace {
    /// 1 to 100 characters.
    #[schema(example = "Support escalations")]
    pub name: Option<String>,
    /// Up to 2,000 characters.
    pub description: Option<String>,
}

impl RequestBody for NewTaskWorkspace {
    const FIELDS: &'static [&'static str] = &["name", "description"];
}

/// List the organization's task workspaces, oldest first.
#[utoipa::path(
    get, path = "/api/v1/TaskWorkspace", tag = "TaskWorkspace",
    params(
        ("Offset" = Option<i64>, Query, description = "Items to skip (default 0)"),
        ("Limit" = Option<i64>, Query, description = "Items per page, 1 to 100 (default 25)"),
    ),
    responses((status = 200, body = List<TaskWorkspace>)),
)]
async fn list_workspaces(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
) -> Result<Json<List<TaskWorkspace>>> {
    let mut errors = FieldErrors::default();
    let page = params.page(&mut errors);
    errors.check()?;
    let listed = state.store.list_workspaces(caller.org_id, page).await?;
    Ok(Json(List::new(listed, page)))
}

/// Create a task workspace.
#[utoipa::path(
    post, path = "/api/v1/TaskWorkspace", tag = "TaskWorkspace",
    request_body = NewTaskWorkspace,
    responses((status = 201, body = TaskWorkspace)),
)]
async fn create_workspace(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<NewTaskWorkspace>,
) -> Result<Response> {
    let mut errors = FieldErrors::default();
    errors.required("name", &input.name);
    let name = input.name.as_deref().map(str::trim);
    errors.text("name", name, 1, 100);
    errors.text("description", input.description.as_deref(), 0, 2_000);
    errors.check()?;
    let now = Timestamp::now();
    let ws = TaskWorkspace {
        id: uuid::Uuid::now_v7(),
        name: name.unwrap_or_default().to_owned(),
        description: input.description.unwrap_or_default(),
        created_at: now,
        updated_at: now,
    };
    let audit = caller.audit("task_workspace.created", ws.id);
    state
        .store
        .create_workspace(caller.org_id, &ws, audit)
        .await?;
    Ok(audited((StatusCode::CREATED, Json(ws))))
}

/// Get one task workspace.
#[utoipa::path(
    get, path = "/api/v1/TaskWorkspace/{workspaceId}", tag = "TaskWorkspace",
    params(("workspaceId" = uuid::Uuid, Path)),
    responses((status = 200, body = TaskWorkspace)),
)]
async fn get_workspace(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Json<TaskWorkspace>> {
    Ok(Json(state.store.get_workspace(caller.org_id, id).await?))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_workspaces, create_workspace))
        .routes(routes!(get_workspace))
}
