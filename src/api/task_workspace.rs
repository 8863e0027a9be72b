//! Task workspaces: the places an organization's tasks live.

use axum::response::Response;
use axum::Json;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::call::Call;
use crate::api::named::{self, NewNamed};
use crate::auth::{Guard, Policy};
use crate::error::Result;
use crate::http::PathId;
use crate::http::{ApiJson, List, Paging, Params};
use crate::state::AppState;
use crate::store::{Catalog, Named};

/// List the organization's task workspaces, oldest first.
#[utoipa::path(get, path = "/api/v1/TaskWorkspace", params(Paging), responses((status = 200, body = List<Named>)))]
async fn list_workspaces(Call(state, caller): Call, params: Params) -> Result<Json<List<Named>>> {
    named::list(&state, &caller, &params, Catalog::TaskWorkspaces).await
}

/// Create a task workspace.
#[utoipa::path(
    post, path = "/api/v1/TaskWorkspace",
    request_body = NewNamed,
    responses((status = 201, body = Named)),
)]
async fn create_workspace(Call(state, caller): Call, input: ApiJson<NewNamed>) -> Result<Response> {
    named::create(
        &state,
        &caller,
        input,
        Catalog::TaskWorkspaces,
        "task_workspace.created",
    )
    .await
}

/// Get one task workspace.
#[utoipa::path(get, path = "/api/v1/TaskWorkspace/{workspaceId}", responses((status = 200, body = Named)))]
async fn get_workspace(Call(state, caller): Call, PathId(id): PathId) -> Result<Json<Named>> {
    named::get(&state, &caller, id, Catalog::TaskWorkspaces).await
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_workspaces, create_workspace))
        .routes(routes!(get_workspace))
        .guard(Policy::STANDARD)
}
