//! Agents: list, search, create, read, update and delete.

use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::call::Call;
use crate::api::named::{DESCRIPTION, NAME};
use crate::audit::audited;
use crate::auth::{Guard, Policy};
use crate::error::Result;
use crate::http::PathId;
use crate::http::{ApiJson, FieldErrors, List, Paging, Params, RequestBody, Rule, TextRule};
use crate::state::AppState;
use crate::store::Agent;

/// Up to 32,000 characters.
pub(crate) const INSTRUCTIONS: TextRule = TextRule::text(32_000);
/// 1 to 200 characters, not blank.
pub(crate) const MODEL: TextRule = TextRule::not_blank(200);

/// An agent to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewAgent {
    /// 1 to 100 characters, not blank.
    #[schema(required = true, nullable = false, example = "Support triage")]
    pub name: Option<String>,
    /// Up to 2,000 characters.
    #[schema(nullable = false)]
    pub description: Option<String>,
    /// The system prompt the agent answers with; up to 32,000 characters.
    #[schema(nullable = false)]
    pub instructions: Option<String>,
    /// The model to use instead of the server's default; left out or `null` for the default.
    pub model: Option<String>,
}

impl RequestBody for NewAgent {
    const FIELDS: &'static [&'static str] = AgentUpdate::FIELDS;
    const NULLABLE: &'static [&'static str] = AgentUpdate::NULLABLE;
    const RULES: &'static [(&'static str, Rule)] = AgentUpdate::RULES;
}

/// Changes to an agent: fields left out keep their value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentUpdate {
    /// 1 to 100 characters, not blank.
    #[schema(nullable = false, example = "Support triage")]
    pub name: Option<String>,
    /// Up to 2,000 characters.
    #[schema(nullable = false)]
    pub description: Option<String>,
    /// The system prompt the agent answers with; up to 32,000 characters.
    #[schema(nullable = false)]
    pub instructions: Option<String>,
    /// The model to use instead of the server's default; `null` to go back to the default.
    #[serde(default, deserialize_with = "crate::http::present")]
    #[schema(value_type = Option<String>)]
    pub model: Option<Option<String>>,
}

impl RequestBody for AgentUpdate {
    const FIELDS: &'static [&'static str] = &["name", "description", "instructions", "model"];
    const NULLABLE: &'static [&'static str] = &["model"];
    const RULES: &'static [(&'static str, Rule)] = &[
        ("name", Rule::Text(NAME)),
        ("description", Rule::Text(DESCRIPTION)),
        ("instructions", Rule::Text(INSTRUCTIONS)),
        ("model", Rule::Text(MODEL)),
    ];
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
        errors.text("name", self.name.as_deref(), NAME);
        errors.text("description", self.description.as_deref(), DESCRIPTION);
        errors.text("instructions", self.instructions.as_deref(), INSTRUCTIONS);
        let model = self.model.as_ref().and_then(Option::as_deref);
        errors.text("model", model, MODEL);
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
    get, path = "/api/v1/Agent",
    params(
        ("Search" = Option<String>, Query, description = "Case-insensitive text in the name or description"),
        Paging,
    ),
    responses((status = 200, body = List<Agent>)),
)]
async fn list_agents(Call(state, caller): Call, params: Params) -> Result<Json<List<Agent>>> {
    let (page, search) = params.page_and_search(Some("Search"))?;
    let listed = state.store.list_agents(caller.org_id, search, page).await?;
    Ok(Json(List::new(listed, page)))
}

/// Create an agent.
#[utoipa::path(post, path = "/api/v1/Agent", request_body = NewAgent, responses((status = 201, body = Agent)))]
async fn create_agent(
    Call(state, caller): Call,
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
#[utoipa::path(get, path = "/api/v1/Agent/{agentId}", responses((status = 200, body = Agent)))]
async fn get_agent(Call(state, caller): Call, PathId(id): PathId) -> Result<Json<Agent>> {
    Ok(Json(state.store.get_agent(caller.org_id, id).await?))
}

/// Update an agent. Fields left out keep their current value.
#[utoipa::path(put, path = "/api/v1/Agent/{agentId}", request_body = AgentUpdate, responses((status = 200, body = Agent)))]
async fn update_agent(
    Call(state, caller): Call,
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
#[utoipa::path(delete, path = "/api/v1/Agent/{agentId}", responses((status = 204)))]
async fn delete_agent(Call(state, caller): Call, PathId(id): PathId) -> Result<Response> {
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
