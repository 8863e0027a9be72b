//! Tasks: created in one of the organization's workspaces, listed, read and updated.

use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::call::Call;
use crate::audit::audited;
use crate::auth::{Guard, Policy};
use crate::error::{ApiError, Result};
use crate::http::PathId;
use crate::http::{ApiJson, FieldErrors, List, Paging, Params, RequestBody, Rule, TextRule};
use crate::state::AppState;
use crate::store::{StoreError, Task, TaskFilter, TaskStatus};

/// 1 to 200 characters, not blank; kept without the white space around it.
pub(crate) const TITLE: TextRule = TextRule::not_blank(200);
/// Up to 10,000 characters.
pub(crate) const DESCRIPTION: TextRule = TextRule::text(10_000);

/// A task to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTask {
    /// The workspace, one of the organization's own.
    #[serde(default, deserialize_with = "crate::http::id_field")]
    #[schema(required = true, nullable = false)]
    pub workspace_id: Option<Uuid>,
    /// 1 to 200 characters, not blank.
    #[schema(required = true, nullable = false, example = "Call back the customer")]
    pub title: Option<String>,
    /// Up to 10,000 characters.
    #[schema(nullable = false)]
    pub description: Option<String>,
    /// `open` when left out.
    #[schema(value_type = TaskStatus, required = false)]
    pub status: Option<String>,
}

impl RequestBody for NewTask {
    const FIELDS: &'static [&'static str] = TaskUpdate::FIELDS;
    const RULES: &'static [(&'static str, Rule)] = TaskUpdate::RULES;
}

/// Changes to a task: fields left out keep their value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskUpdate {
    /// Moves the task to another of the organization's workspaces.
    #[serde(default, deserialize_with = "crate::http::id_field")]
    #[schema(nullable = false)]
    pub workspace_id: Option<Uuid>,
    /// 1 to 200 characters, not blank.
    #[schema(nullable = false, example = "Call back the customer")]
    pub title: Option<String>,
    /// Up to 10,000 characters.
    #[schema(nullable = false)]
    pub description: Option<String>,
    #[schema(value_type = TaskStatus, required = false)]
    pub status: Option<String>,
}

impl RequestBody for TaskUpdate {
    const FIELDS: &'static [&'static str] = &["workspaceId", "title", "description", "status"];
    const RULES: &'static [(&'static str, Rule)] = &[
        ("title", Rule::Text(TITLE)),
        ("description", Rule::Text(DESCRIPTION)),
    ];
}

impl From<NewTask> for TaskUpdate {
    fn from(new: NewTask) -> Self {
        TaskUpdate {
            workspace_id: new.workspace_id,
            title: new.title,
            description: new.description,
            status: new.status,
        }
    }
}

const STATUS_MESSAGE: &str = "must be open, in_progress, done or cancelled";

impl TaskUpdate {
    /// Validates the input and applies it to `task`.
    fn apply(self, task: &mut Task, creating: bool) -> Result<()> {
        let mut errors = FieldErrors::default();
        if creating {
            errors.required("workspaceId", &self.workspace_id);
            errors.required("title", &self.title);
        }
        errors.text("title", self.title.as_deref(), TITLE);
        errors.text("description", self.description.as_deref(), DESCRIPTION);
        let status = self.status.as_deref().map(|s| {
            TaskStatus::parse(s).unwrap_or_else(|| {
                errors.add("status", STATUS_MESSAGE);
                TaskStatus::Open
            })
        });
        errors.check()?;
        if let Some(w) = self.workspace_id {
            task.workspace_id = w;
        }
        if let Some(t) = self.title {
            task.title = t.trim().to_owned();
        }
        if let Some(d) = self.description {
            task.description = d;
        }
        if let Some(s) = status {
            task.status = s;
        }
        Ok(())
    }
}

/// The store answers "not found" for a task's workspace that is not the organization's own;
/// the answer says which id that was.
fn unknown_workspace(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => crate::http::missing_reference(
            "workspaceId does not name a workspace of this organization.",
        ),
        e => e.into(),
    }
}

/// List the organization's tasks, oldest first, optionally by workspace and status.
#[utoipa::path(
    get, path = "/api/v1/Task",
    params(
        ("WorkspaceId" = Option<Uuid>, Query, description = "Only tasks of this workspace"),
        ("Status" = Option<TaskStatus>, Query, description = "Only tasks with this status"),
        Paging,
    ),
    responses((status = 200, body = List<Task>)),
)]
async fn list_tasks(Call(state, caller): Call, params: Params) -> Result<Json<List<Task>>> {
    let mut errors = FieldErrors::default();
    let page = params.page(&mut errors);
    let workspace_id = params.get("WorkspaceId").and_then(|w| {
        let parsed = crate::http::parse_id(w);
        if parsed.is_none() {
            errors.add("WorkspaceId", "must be a workspace id (a UUID)");
        }
        parsed
    });
    let status = params.get("Status").and_then(|s| {
        let parsed = TaskStatus::parse(s);
        if parsed.is_none() {
            errors.add("Status", STATUS_MESSAGE);
        }
        parsed
    });
    errors.check()?;
    let filter = TaskFilter {
        workspace_id,
        status,
    };
    let listed = state.store.list_tasks(caller.org_id, &filter, page).await?;
    Ok(Json(List::new(listed, page)))
}

/// Create a task in one of the organization's workspaces.
#[utoipa::path(post, path = "/api/v1/Task", request_body = NewTask, responses((status = 201, body = Task)))]
async fn create_task(
    Call(state, caller): Call,
    ApiJson(input): ApiJson<NewTask>,
) -> Result<Response> {
    let now = state.settings.clock.now();
    let mut task = Task {
        id: Uuid::now_v7(),
        workspace_id: Uuid::nil(),
        title: String::new(),
        description: String::new(),
        status: TaskStatus::Open,
        created_at: now,
        updated_at: now,
    };
    TaskUpdate::from(input).apply(&mut task, true)?;
    state
        .store
        .create_task(caller.org_id, &task, caller.audit("task.created", task.id))
        .await
        .map_err(unknown_workspace)?;
    Ok(audited((StatusCode::CREATED, Json(task))))
}

/// Get one task.
#[utoipa::path(get, path = "/api/v1/Task/{taskId}", responses((status = 200, body = Task)))]
async fn get_task(Call(state, caller): Call, PathId(id): PathId) -> Result<Json<Task>> {
    Ok(Json(state.store.get_task(caller.org_id, id).await?))
}

/// Update a task. Fields left out keep their current value.
#[utoipa::path(
    put, path = "/api/v1/Task/{taskId}",
    request_body = TaskUpdate,
    responses((status = 200, body = Task)),
)]
async fn update_task(
    Call(state, caller): Call,
    PathId(id): PathId,
    ApiJson(input): ApiJson<TaskUpdate>,
) -> Result<Response> {
    let mut task = state.store.get_task(caller.org_id, id).await?;
    input.apply(&mut task, false)?;
    task.updated_at = state.settings.clock.now();
    state
        .store
        .update_task(caller.org_id, &task, caller.audit("task.updated", task.id))
        .await
        .map_err(unknown_workspace)?;
    Ok(audited(Json(task)))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tasks, create_task))
        .routes(routes!(get_task, update_task))
        .guard(Policy::STANDARD)
}
