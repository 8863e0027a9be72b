//! Connections to outside systems: read with `read`, created with `admin`. A private
//! connection is visible only to the keys of the member who created it.

use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::call::Call;
use crate::api::named::NAME;
use crate::audit::audited;
use crate::auth::{Guard, Policy};
use crate::error::Result;
use crate::http::PathId;
use crate::http::{ApiJson, FieldErrors, List, Paging, Params, RequestBody, Rule};
use crate::state::AppState;
use crate::store::{Connection, Visibility};

/// A connection to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewConnection {
    /// 1 to 100 characters, not blank.
    #[schema(required = true, nullable = false, example = "Support desk")]
    pub name: Option<String>,
    /// The kind of system: 1 to 50 lowercase letters, digits, `_` or `-`, e.g. `zendesk`.
    #[serde(rename = "type")]
    #[schema(required = true, nullable = false, example = "zendesk")]
    pub kind: Option<String>,
    /// `private` when left out.
    #[schema(value_type = Visibility, required = false)]
    pub visibility: Option<String>,
}

impl RequestBody for NewConnection {
    const FIELDS: &'static [&'static str] = &["name", "type", "visibility"];
    const RULES: &'static [(&'static str, Rule)] = &[
        ("name", Rule::Text(NAME)),
        (
            "type",
            Rule::Grammar {
                pattern: KIND_PATTERN,
                max: KIND_MAX,
            },
        ),
    ];
}

/// The longest connection type.
pub(crate) const KIND_MAX: usize = 50;
/// A connection type as [`valid_kind`] reads it.
const KIND_PATTERN: &str = "^[a-z0-9_-]{1,50}$";

fn valid_kind(kind: &str) -> bool {
    (1..=KIND_MAX).contains(&kind.len())
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// List the connections this key can see, oldest first.
#[utoipa::path(get, path = "/api/v1/Connection", params(Paging), responses((status = 200, body = List<Connection>)))]
async fn list_connections(
    Call(state, caller): Call,
    params: Params,
) -> Result<Json<List<Connection>>> {
    let page = params.only_page()?;
    let member = caller.key().created_by;
    let listed = state
        .store
        .list_connections(caller.org_id, member, page)
        .await?;
    Ok(Json(List::new(listed, page)))
}

/// Create a connection (admin scope).
#[utoipa::path(
    post, path = "/api/v1/Connection",
    request_body = NewConnection,
    responses((status = 201, body = Connection)),
)]
async fn create_connection(
    Call(state, caller): Call,
    ApiJson(input): ApiJson<NewConnection>,
) -> Result<Response> {
    let mut errors = FieldErrors::default();
    errors.required("name", &input.name);
    errors.required("type", &input.kind);
    let name = input.name.as_deref();
    errors.text("name", name, NAME);
    if input.kind.as_deref().is_some_and(|k| !valid_kind(k)) {
        errors.add("type", "must be 1 to 50 lowercase letters, digits, _ or -");
    }
    let visibility = match input.visibility.as_deref() {
        None => Visibility::Private,
        Some(v) => Visibility::parse(v).unwrap_or_else(|| {
            errors.add("visibility", "must be private or shared");
            Visibility::Private
        }),
    };
    errors.check()?;
    let now = state.settings.clock.now();
    let connection = Connection {
        id: uuid::Uuid::now_v7(),
        name: name.unwrap_or_default().trim().to_owned(),
        kind: input.kind.unwrap_or_default(),
        visibility,
        created_by: caller.key().created_by,
        created_at: now,
        updated_at: now,
    };
    let audit = caller.audit("connection.created", connection.id);
    state
        .store
        .create_connection(caller.org_id, &connection, audit)
        .await?;
    Ok(audited((StatusCode::CREATED, Json(connection))))
}

/// Get one connection.
#[utoipa::path(get, path = "/api/v1/Connection/{connectionId}", responses((status = 200, body = Connection)))]
async fn get_connection(Call(state, caller): Call, PathId(id): PathId) -> Result<Json<Connection>> {
    let member = caller.key().created_by;
    Ok(Json(
        state
            .store
            .get_connection(caller.org_id, member, id)
            .await?,
    ))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_connections, create_connection))
        .routes(routes!(get_connection))
        .guard(Policy::ADMIN_CHANGES)
}
