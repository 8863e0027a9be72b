//! The one error type of the HTTP layer and its `application/problem+json` body (RFC 9457).

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

tokio::task_local! {
    /// The id of the request being served, for error bodies built anywhere below.
    pub static REQUEST_ID: String;
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Every refusal the API can answer with, by its stable `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    MissingApiKey,
    InvalidApiKey,
    ExpiredApiKey,
    MissingOrgId,
    InvalidOrgId,
    OrgAccessDenied,
    KeyOwnerNotMember,
    InsufficientScope,
    RateLimited,
    NotFound,
    ValidationError,
    InvalidJson,
    CredentialsInUrl,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    ProviderError,
    ProviderTimeout,
    InternalError,
    ServiceUnavailable,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::MissingApiKey => "missing_api_key",
            Code::InvalidApiKey => "invalid_api_key",
            Code::ExpiredApiKey => "expired_api_key",
            Code::MissingOrgId => "missing_org_id",
            Code::InvalidOrgId => "invalid_org_id",
            Code::OrgAccessDenied => "org_access_denied",
            Code::KeyOwnerNotMember => "key_owner_not_member",
            Code::InsufficientScope => "insufficient_scope",
            Code::RateLimited => "rate_limited",
            Code::NotFound => "not_found",
            Code::ValidationError => "validation_error",
            Code::InvalidJson => "invalid_json",
            Code::CredentialsInUrl => "credentials_in_url",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::Conflict => "conflict",
            Code::PayloadTooLarge => "payload_too_large",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::ProviderError => "provider_error",
            Code::ProviderTimeout => "provider_timeout",
            Code::InternalError => "internal_error",
            Code::ServiceUnavailable => "service_unavailable",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Code::MissingApiKey
            | Code::InvalidApiKey
            | Code::ExpiredApiKey
            | Code::MissingOrgId => StatusCode::UNAUTHORIZED,
            Code::InvalidOrgId
            | Code::OrgAccessDenied
            | Code::KeyOwnerNotMember
            | Code::InsufficientScope => StatusCode::FORBIDDEN,
            Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::ValidationError | Code::InvalidJson | Code::CredentialsInUrl => {
                StatusCode::BAD_REQUEST
            }
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::Conflict => StatusCode::CONFLICT,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::ProviderError => StatusCode::BAD_GATEWAY,
            Code::ProviderTimeout => StatusCode::GATEWAY_TIMEOUT,
            Code::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Code::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Code::MissingApiKey => "API key missing",
            Code::InvalidApiKey => "API key not valid",
            Code::ExpiredApiKey => "API key expired",
            Code::MissingOrgId => "Organization id missing",
            Code::InvalidOrgId => "Organization id not valid",
            Code::OrgAccessDenied => "Organization not accessible with this key",
            Code::KeyOwnerNotMember => "Key owner is no longer a member",
            Code::InsufficientScope => "Scope too narrow",
            Code::RateLimited => "Too many requests",
            Code::NotFound => "Not found",
            Code::ValidationError => "Request not valid",
            Code::InvalidJson => "Body is not valid JSON",
            Code::CredentialsInUrl => "Credentials in the URL",
            Code::MethodNotAllowed => "Method not allowed",
            Code::Conflict => "Conflict",
            Code::PayloadTooLarge => "Payload too large",
            Code::UnsupportedMediaType => "Unsupported media type",
            Code::ProviderError => "Model provider failed",
            Code::ProviderTimeout => "Model provider timed out",
            Code::InternalError => "Internal error",
            Code::ServiceUnavailable => "Service unavailable",
        }
    }

    /// What an integrator reads first, unless the error carries a more precise detail.
    fn default_detail(self) -> &'static str {
        match self {
            Code::MissingApiKey => "Send your integration's API key in the X-Api-Key header.",
            Code::InvalidApiKey => "The X-Api-Key header does not hold a key this server accepts: it is mistyped, truncated, deleted or was never issued. Check the value stored in your backend's secret.",
            Code::ExpiredApiKey => "This API key has expired or was rotated and its grace period has ended. Use the key that replaced it, or create a new one.",
            Code::MissingOrgId => "Send the id of the organization you are working with in the X-Org-Id header.",
            Code::InvalidOrgId => "The X-Org-Id header must be an organization id (a UUID such as 0192f0c1-7b1e-7cc0-9b6a-3f5e2c1d4a10).",
            Code::OrgAccessDenied => "This API key belongs to a different organization than the one named in X-Org-Id. Send the organization id that goes with this key.",
            Code::KeyOwnerNotMember => "The member who created this API key has been removed from the organization since, so the key no longer works, even if they were added back. Create a new key as a current member.",
            Code::InsufficientScope => "This API key's scope does not allow this operation.",
            Code::RateLimited => "Too many requests. Wait for the number of seconds in the Retry-After header, then try again.",
            Code::NotFound => "The resource does not exist, or is not visible to this organization.",
            Code::ValidationError => "The request is not valid; see errors for each field.",
            Code::InvalidJson => "The request body is not valid JSON.",
            Code::CredentialsInUrl => "Credentials are accepted only in the X-Api-Key and X-Org-Id headers, never in the URL. Remove them from the query string, and treat the key as exposed: rotate it.",
            Code::MethodNotAllowed => "This method is not allowed on this resource; see the Allow header.",
            Code::Conflict => "The request conflicts with the current state of the resource.",
            Code::PayloadTooLarge => "The request body is too large.",
            Code::UnsupportedMediaType => "A JSON body needs the header Content-Type: application/json.",
            Code::ProviderError => "The server could not complete the request: the model provider answered with an error. Try again; quote the requestId if it persists.",
            Code::ProviderTimeout => "The server could not complete the request: the model provider did not answer in time. Try again; quote the requestId if it persists.",
            Code::InternalError => "The server could not complete the request. Quote the requestId if you report it.",
            Code::ServiceUnavailable => "The server could not complete the request right now. Try again shortly, and quote the requestId if it persists.",
        }
    }
}

/// An error answered to the client, built from a [`Code`].
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub detail: Option<String>,
    pub errors: BTreeMap<String, Vec<String>>,
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(code: Code) -> Self {
        ApiError {
            code,
            detail: None,
            errors: BTreeMap::new(),
            headers: Vec::new(),
        }
    }

    pub fn with_detail(code: Code, detail: impl Into<String>) -> Self {
        ApiError {
            detail: Some(detail.into()),
            ..Self::new(code)
        }
    }

    pub fn not_found() -> Self {
        Self::new(Code::NotFound)
    }

    /// A validation error naming one field or parameter.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(Code::ValidationError);
        e.errors.insert(field.to_owned(), vec![message.into()]);
        e
    }

    pub fn header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(Code::InternalError)
    }
}

/// The problem document, as served and as documented.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// A reference to the documentation of this kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable, machine-readable reason, such as `invalid_api_key`.
    pub code: String,
    /// The X-Request-Id of this request.
    pub request_id: String,
    /// For validation errors: the messages for each field or parameter.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, Vec<String>>,
}

pub const PROBLEM_JSON: &str = "application/problem+json";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let detail = self
            .detail
            .unwrap_or_else(|| self.code.default_detail().to_owned());
        let problem = Problem {
            kind: format!("/docs/errors#{}", self.code.as_str()),
            title: self.code.title().to_owned(),
            status: status.as_u16(),
            detail,
            code: self.code.as_str().to_owned(),
            request_id: REQUEST_ID.try_with(Clone::clone).unwrap_or_default(),
            errors: self.errors,
        };
        let body = serde_json::to_vec(&problem).expect("a problem always serializes");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response.extensions_mut().insert(self.code);
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::not_found(),
            StoreError::Conflict(detail) => ApiError::with_detail(Code::Conflict, detail),
            StoreError::Invalid { field, message } => ApiError::invalid(field, message),
            StoreError::Unavailable(e) => {
                tracing::error!(error = %e, "database unavailable");
                ApiError::new(Code::ServiceUnavailable)
            }
            StoreError::Internal(e) => ApiError::internal("database error", e),
        }
    }
}
