//! The audit log: what each entry says, and how a response tells the request log that its
//! entry is already written.

use axum::response::{IntoResponse, Response};

/// Marks a response whose handler wrote its own audit entry in its transaction.
#[derive(Debug, Clone, Copy)]
pub struct Audited;

/// Marks a response whose audit entry was written with the change it reports.
pub fn audited(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response.extensions_mut().insert(Audited);
    response
}
