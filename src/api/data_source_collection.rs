//! Data source collections: read with `read`, created with `admin`.

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

/// List the organization's data source collections, oldest first.
#[utoipa::path(
    get, path = "/api/v1/DataSourceCollection",
    params(Paging),
    responses((status = 200, body = List<Named>)),
)]
async fn list_collections(Call(state, caller): Call, params: Params) -> Result<Json<List<Named>>> {
    named::list(&state, &caller, &params, Catalog::DataSourceCollections).await
}

/// Create a data source collection (admin scope).
#[utoipa::path(
    post, path = "/api/v1/DataSourceCollection",
    request_body = NewNamed,
    responses((status = 201, body = Named)),
)]
async fn create_collection(
    Call(state, caller): Call,
    input: ApiJson<NewNamed>,
) -> Result<Response> {
    let action = "data_source_collection.created";
    named::create(
        &state,
        &caller,
        input,
        Catalog::DataSourceCollections,
        action,
    )
    .await
}

/// Get one data source collection.
#[utoipa::path(get, path = "/api/v1/DataSourceCollection/{collectionId}", responses((status = 200, body = Named)))]
async fn get_collection(Call(state, caller): Call, PathId(id): PathId) -> Result<Json<Named>> {
    named::get(&state, &caller, id, Catalog::DataSourceCollections).await
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_collections, create_collection))
        .routes(routes!(get_collection))
        .guard(Policy::ADMIN_CHANGES)
}
