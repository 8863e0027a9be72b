//! What task workspaces and data source collections share: a name and a description, each
//! kind in its own catalog. Their modules keep their own routes and documentation.

use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::audit::audited;
use crate::auth::Caller;
use crate::error::Result;
use crate::http::{ApiJson, FieldErrors, List, Params, RequestBody, Rule, TextRule};
use crate::state::AppState;
use crate::store::{Catalog, Named};

/// The name of an agent, a connection, a workspace or a collection: 1 to 100 characters,
/// not blank, kept without the white space around it.
pub(crate) const NAME: TextRule = TextRule::not_blank(100);
/// The description of an agent, a workspace or a collection: up to 2,000 characters.
pub(crate) const DESCRIPTION: TextRule = TextRule::text(2_000);

/// An object to create: a name and a description.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewNamed {
    /// 1 to 100 characters, not blank.
    #[schema(required = true, nullable = false, example = "Support escalations")]
    pub name: Option<String>,
    /// Up to 2,000 characters.
    #[schema(nullable = false)]
    pub description: Option<String>,
}

impl RequestBody for NewNamed {
    const FIELDS: &'static [&'static str] = &["name", "description"];
    const RULES: &'static [(&'static str, Rule)] = &[
        ("name", Rule::Text(NAME)),
        ("description", Rule::Text(DESCRIPTION)),
    ];
}

pub async fn list(
    state: &AppState,
    caller: &Caller,
    params: &Params,
    catalog: Catalog,
) -> Result<Json<List<Named>>> {
    let page = params.only_page()?;
    let listed = state.store.list_named(catalog, caller.org_id, page).await?;
    Ok(Json(List::new(listed, page)))
}

/// Validates and stores a new object; `action` names it in the audit log.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    ApiJson(input): ApiJson<NewNamed>,
    catalog: Catalog,
    action: &str,
) -> Result<Response> {
    let mut errors = FieldErrors::default();
    errors.required("name", &input.name);
    errors.text("name", input.name.as_deref(), NAME);
    errors.text("description", input.description.as_deref(), DESCRIPTION);
    errors.check()?;
    let now = state.settings.clock.now();
    let object = Named {
        id: uuid::Uuid::now_v7(),
        name: input.name.as_deref().unwrap_or_default().trim().to_owned(),
        description: input.description.unwrap_or_default(),
        created_at: now,
        updated_at: now,
    };
    state
        .store
        .create_named(
            catalog,
            caller.org_id,
            &object,
            caller.audit(action, object.id),
        )
        .await?;
    Ok(audited((StatusCode::CREATED, Json(object))))
}

pub async fn get(
    state: &AppState,
    caller: &Caller,
    id: uuid::Uuid,
    catalog: Catalog,
) -> Result<Json<Named>> {
    Ok(Json(
        state.store.get_named(catalog, caller.org_id, id).await?,
    ))
}
