//! Agents: list, search, create, read, update and delete.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::audited;
use crate::auth::Caller;
use crate::auth::{Guard, Policy};
use crate::error::Result;
use crate::http::PathId;
use crate::http::{ApiJson, FieldErrors, List, Params, RequestBody};
use crate::state::AppState;
use crate::store::Agent;

const NAME_MAX: usize = 100;
const DESCRIPTION_MAX: usize = 2_000;
const INSTRUCTIONS_MAX: usize = 32_000;
const MODEL_MAX: usize = 200;

/// An agent to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewAgent {
    /// 1 to 100 characters, not blank.
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 100,
        example = "Support triage"
    )]
    pub name: Option<String>,
    /// Up to 2,000 characters.
    #[schema(nullable = false, max_length = 2000)]
    pub description: Option<String>,
    /// The system prompt the agent answers with; up to 32,000 characters.
    #[schema(nullable = false, max_length = 32000)]
    pub instructions: Option<String>,
    /// The model to use instead of the server's default; left out or `null` for the default.
    #[schema(min_length = 1, max_length = 200)]
    pub model: Option<String>,
}

impl RequestBody for NewAgent {
    const FIELDS: &'static [&'static str] = AgentUpdate::FIELDS;
    const NULLABLE: &'static [&'static str] = AgentUpdate::NULLABLE;
}

/// Changes to an agent: fields left out keep their value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentUpdate {
    /// 1 to 100 characters, not blank.
    #[schema(
        nullable = false,
        min_length = 1,
        max_length = 100,
        example = "Support triage"
    )]
    pub name: Option<String>,
    /// Up to 2,000 characters.
    #[schema(nullable = false, max_length = 2000)]
    pub description: Option<String>,
    /// The system prompt the agent answers with; up to 32,000 characters.
    #[schema(nullable = false, max_length = 32000)]
    pub instructions: Option<String>,
    /// The model to use instead of the server's default; `null` to go back to the default.
    #[serde(default, deserialize_with = "crate::http::present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200)]
    pub model: Option<Option<String>>,
}

impl RequestBody for AgentUpdate {
    const FIELDS: &'static [&'static str] = &["name", "description", "instructions", "model"];
    const NULLABLE: &'static [&'static str] = &["model"];
}

impl From<NewAgent> for AgentUpdate {
    fn from(new: NewAgent) -> Self {
        AgentUpdate {
            name: new.name,
            description: new.description,
            instructions: new.instructions,
            model: Some(new.model),
        }
    }
}

impl AgentUpdate {
    /// Checks every field sent and applies them to `agent`.
    fn apply(self, agent: &mut Agent, creating: bool) -> Result<()> {
        let mut errors = FieldErrors::default();
        if creating {
            errors.required("name", &self.name);
        }
        errors.text("name", self.name.as_deref(), 1, NAME_MAX);
        errors.text(
            "description",
            self.description.as_deref(),
            0,
            DESCRIPTION_MAX,
        );
        errors.text(
            "instructions",
            self.instructions.as_deref(),
            0,
            INSTRUCTIONS_MAX,
        );
        errors.text(
            "model",
            self.model.as_ref().and_then(Option::as_deref),
            1,
            MODEL_MAX,
        );
        errors.check()?;
        if let Some(name) = self.name {
            agent.name = name.trim().to_owned();
        }
        if let Some(d) = self.description {
            agent.description = d;
        }
        if let Some(i) = self.instructions {
            agent.instructions = i;
        }
        if let Some(model) = self.model {
            agent.model = model;
        }
        Ok(())
    }
}

/// List or search the organization's agents, oldest first.
#[utoipa::path(
    get, path = "/api/v1/Agent", tag = "Agent",
    params(
        ("Search" = Option<String>, Query, description = "Case-insensitive text in the name or description"),
        ("Offset" = Option<i64>, Query, minimum = 0, maximum = 1_000_000_000, description = "Items to skip, 0 to 1,000,000,000 (default 0)"),
        ("Limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Items per page, 1 to 100 (default 25)"),
    ),
    responses((status = 200, body = List<Agent>)),
)]
async fn list_agents(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
) -> Result<Json<List<Agent>>> {
    let mut errors = FieldErrors::default();
    let page = params.page(&mut errors);
    let search = params.search("Search", &mut errors);
    errors.check()?;
    let listed = state.store.list_agents(caller.org_id, search, page).await?;
    Ok(Json(List::new(listed, page)))
}

/// Create an agent.
#[utoipa::path(
    post, path = "/api/v1/Agent", tag = "Agent",
    request_body = NewAgent,
    responses((status = 201, body = Agent)),
)]
async fn create_agent(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<NewAgent>,
) -> Result<Response> {
    let now = state.settings.clock.now();
    let mut agent = Agent {
        id: uuid::Uuid::now_v7(),
        name: String::new(),
        description: String::new(),
        instructions: String::new(),
        model: None,
        created_at: now,
        updated_at: now,
    };
    AgentUpdate::from(input).apply(&mut agent, true)?;
    state
        .store
        .create_agent(
            caller.org_id,
            &agent,
            caller.audit("agent.created", agent.id),
        )
        .await?;
    Ok(audited((StatusCode::CREATED, Json(agent))))
}

/// Get one agent.
#[utoipa::path(get, path = "/api/v1/Agent/{agentId}", tag = "Agent",
    params(("agentId" = uuid::Uuid, Path)), responses((status = 200, body = Agent)))]
async fn get_agent(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Json<Agent>> {
    Ok(Json(state.store.get_agent(caller.org_id, id).await?))
}

/// Update an agent. Fields left out keep their current value.
#[utoipa::path(put, path = "/api/v1/Agent/{agentId}", tag = "Agent",
    params(("agentId" = uuid::Uuid, Path)), request_body = AgentUpdate, responses((status = 200, body = Agent)))]
async fn update_agent(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    ApiJson(input): ApiJson<AgentUpdate>,
) -> Result<Response> {
    let mut agent = state.store.get_agent(caller.org_id, id).await?;
    input.apply(&mut agent, false)?;
    agent.updated_at = state.settings.clock.now();
    state
        .store
        .update_agent(
            caller.org_id,
            &agent,
            caller.audit("agent.updated", agent.id),
        )
        .await?;
    Ok(audited(Json(agent)))
}

/// Delete an agent.
#[utoipa::path(delete, path = "/api/v1/Agent/{agentId}", tag = "Agent",
    params(("agentId" = uuid::Uuid, Path)), responses((status = 204)))]
async fn delete_agent(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Response> {
    state
        .store
        .delete_agent(caller.org_id, id, caller.audit("agent.deleted", id))
        .await?;
    Ok(audited(StatusCode::NO_CONTENT))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_agents, create_agent))
        .routes(routes!(get_agent, update_agent, delete_agent))
        .guard(Policy::STANDARD)
}
