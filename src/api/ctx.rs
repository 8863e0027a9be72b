//! What every `/api/v1` handler works with: the server's state and the caller.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The state and the caller a guarded route's handler takes in one argument:
/// `Ctx(state, caller): Ctx`.
pub struct Ctx(pub AppState, pub Caller);

impl FromRequestParts<AppState> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        Ok(Ctx(state.clone(), caller))
    }
}
