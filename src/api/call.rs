//! A call to the External API: what every `/api/v1` handler works with, the server's state
//! and the caller.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// One call: the state and the caller a guarded route's handler takes in one argument,
/// `Call(state, caller): Call`.
pub struct Call(pub AppState, pub Caller);

impl FromRequestParts<AppState> for Call {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        Ok(Call(state.clone(), caller))
    }
}
