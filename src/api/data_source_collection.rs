//! Data source collections: read with `read`, created with `admin`.

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
use crate::store::DataSourceCollection;
use crate::AppState;

/// A collection to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewDataSourceCollection {
    /// 1 to 100 characters.
    #[schema(example = "Product manuals")]
    pub name: Option<String>,
    /// Up to 2,000 characters.
    pub description: Option<String>,
}

impl RequestBody for NewDataSourceCollection {
    const FIELDS: &'static [&'static str] = &["name", "description"];
}

/// List the organization's data source collections, oldest first.
#[utoipa::path(
    get, path = "/api/v1/DataSourceCollection", tag = "DataSourceCollection",
    params(
        ("Offset" = Option<i64>, Query, description = "Items to skip (default 0)"),
        ("Limit" = Option<i64>, Query, description = "Items per page, 1 to 100 (default 25)"),
    ),
    responses((status = 200, body = List<DataSourceCollection>)),
)]
async fn list_collections(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
) -> Result<Json<List<DataSourceCollection>>> {
    let mut errors = FieldErrors::default();
    let page = params.page(&mut errors);
    errors.check()?;
    let listed = state.store.list_collections(caller.org_id, page).await?;
    Ok(Json(List::new(listed, page)))
}

/// Create a data source collection (admin scope).
#[utoipa::path(
    post, path = "/api/v1/DataSourceCollection", tag = "DataSourceCollection",
    request_body = NewDataSourceCollection,
    responses((status = 201, body = DataSourceCollection)),
)]
async fn create_collection(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<NewDataSourceCollection>,
) -> Result<Response> {
    let mut errors = FieldErrors::default();
    errors.required("name", &input.name);
    let name = input.name.as_deref().map(str::trim);
    errors.text("name", name, 1, 100);
    errors.text("description", input.description.as_deref(), 0, 2_000);
    errors.check()?;
    let now = Timestamp::now();
    let collection = DataSourceCollection {
        id: uuid::Uuid::now_v7(),
        name: name.unwrap_or_default().to_owned(),
        description: input.description.unwrap_or_default(),
        created_at: now,
        updated_at: now,
    };
    let audit = caller.audit("data_source_collection.created", collection.id);
    state
        .store
        .create_collection(caller.org_id, &collection, audit)
        .await?;
    Ok(audited((StatusCode::CREATED, Json(collection))))
}

/// Get one data source collection.
#[utoipa::path(
    get, path = "/api/v1/DataSourceCollection/{collectionId}", tag = "DataSourceCollection",
    params(("collectionId" = uuid::Uuid, Path)),
    responses((status = 200, body = DataSourceCollection)),
)]
async fn get_collection(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> Result<Json<DataSourceCollection>> {
    Ok(Json(state.store.get_collection(caller.org_id, id).await?))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_collections, create_collection))
        .routes(routes!(get_collection))
}
