//! Rows 10 and 11 of the contract's table, after routing: the scope an operation needs,
//! declared on its router, then the key's rate limit.
//!
//! [`authenticate`](super::verify::authenticate) runs rows 1 to 8 before routing and leaves a
//! [`Gate`] on the request. A router declares its [`Policy`] with [`Guard::guard`], which
//! wraps each of its routes, their 405 answers included; [`unknown_path`] does the same for
//! paths that name nothing. Only this step turns a `Gate` into the [`Caller`] that handlers
//! take, so a route that declares no policy cannot serve a request.

use std::future::Future;

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;

use super::caller::Caller;
use crate::error::{ApiError, Code};
use crate::key::Scope;
use crate::ratelimit::{Bucket, Decision, Quota};
use crate::state::AppState;

/// The scope each kind of operation on a router needs: reads are GET and HEAD, every other
/// method is a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    read: Scope,
    change: Scope,
}

impl Policy {
    /// Reads need `read`, changes `write`.
    pub const STANDARD: Policy = Policy {
        read: Scope::Read,
        change: Scope::Write,
    };
    /// Reads need `read`, changes `admin`: shared configuration of the organization.
    pub const ADMIN_CHANGES: Policy = Policy {
        read: Scope::Read,
        change: Scope::Admin,
    };
    /// Everything needs `admin`: key management and the audit log.
    pub const ADMIN: Policy = Policy {
        read: Scope::Admin,
        change: Scope::Admin,
    };

    pub fn needs(self, method: &Method) -> Scope {
        if matches!(*method, Method::GET | Method::HEAD) {
            self.read
        } else {
            self.change
        }
    }
}

/// Declares the policy of every route a router has so far.
pub trait Guard {
    fn guard(self, policy: Policy) -> Self;
}

impl Guard for OpenApiRouter<AppState> {
    fn guard(self, policy: Policy) -> Self {
        self.route_layer(middleware::from_fn(move |request: Request, next: Next| {
            admit(policy, request, |request| next.run(request))
        }))
    }
}

/// What rows 1 to 8 found: the caller, before its scope and rate limit are checked.
#[derive(Clone)]
pub(super) struct Gate {
    pub caller: Caller,
    pub state: AppState,
}

/// Marks a refusal that is counted but not written to the audit log.
#[derive(Debug, Clone, Copy)]
pub(super) struct Unrecorded;

/// The fallback of the whole application. Under `/api/v1` it answers `not_found` only to a
/// caller whose scope and rate limit allow the request: a path that names nothing is a read
/// or a change like any other.
pub async fn unknown_path(request: Request) -> Response {
    admit(Policy::STANDARD, request, |_| async {
        ApiError::not_found().into_response()
    })
    .await
}

/// Rows 10 and 11, then `serve`. Requests that did not pass authentication (preflights,
/// paths outside `/api/v1`) carry no gate and go straight on: their handlers take no
/// [`Caller`].
async fn admit<F>(
    policy: Policy,
    mut request: Request,
    serve: impl FnOnce(Request) -> F,
) -> Response
where
    F: Future<Output = Response>,
{
    let Some(Gate { caller, state }) = request.extensions_mut().remove::<Gate>() else {
        return serve(request).await;
    };
    let needed = policy.needs(request.method());
    if !caller.scope.allows(needed) {
        state.metrics.auth_failure(Code::InsufficientScope);
        return too_narrow(&caller, needed).into_response();
    }
    let decision = state
        .limiter
        .check(
            Bucket::Key(caller.verified.key.id),
            Quota::per_minute(caller.rate_limit),
        )
        .await;
    if !decision.allowed {
        // Not recorded in the audit log: a client hammering past its limit would otherwise
        // turn every refusal into a database write. The metric counts them.
        state.metrics.rate_limited("key");
        let mut response = too_many("api-key", &decision).into_response();
        response.extensions_mut().insert(Unrecorded);
        return response;
    }
    let now = state.settings.clock.now();
    if caller.verified.first_use_this_minute(now) {
        state
            .recorder
            .key_used(caller.org_id, caller.verified.key.id, now);
    }
    let mut response = match crate::http::refuse_duplicate_params(request.uri()) {
        Ok(()) => {
            request.extensions_mut().insert(caller);
            serve(request).await
        }
        Err(e) => e.into_response(),
    };
    response
        .headers_mut()
        .extend(rate_limit_headers("api-key", &decision));
    response
}

fn too_narrow(caller: &Caller, needed: Scope) -> ApiError {
    let detail = if caller.scope == caller.verified.key.scope {
        format!(
            "This operation needs a key with {needed} scope; this key has {} scope.",
            caller.scope
        )
    } else {
        format!(
            "This operation needs a key with {needed} scope; this key acts with {} scope, \
             the most its owner's role allows.",
            caller.scope
        )
    };
    ApiError::with_detail(Code::InsufficientScope, detail)
}

/// `RateLimit-Policy` and `RateLimit` in the shape of draft-ietf-httpapi-ratelimit-headers.
pub(crate) fn rate_limit_headers(policy: &str, d: &Decision) -> [(HeaderName, HeaderValue); 2] {
    let policy_value = format!("\"{policy}\";q={};w=60", d.limit);
    let limit_value = format!("\"{policy}\";r={};t={}", d.remaining, d.reset_secs);
    [
        (
            HeaderName::from_static("ratelimit-policy"),
            HeaderValue::from_str(&policy_value).expect("ASCII"),
        ),
        (
            HeaderName::from_static("ratelimit"),
            HeaderValue::from_str(&limit_value).expect("ASCII"),
        ),
    ]
}

pub(crate) fn too_many(policy: &str, d: &Decision) -> ApiError {
    let mut e = ApiError::new(Code::RateLimited).header(
        header::RETRY_AFTER,
        HeaderValue::from(d.retry_after_secs.max(1)),
    );
    for (name, value) in rate_limit_headers(policy, d) {
        e = e.header(name, value);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_get_and_head_and_everything_else_is_a_change() {
        for policy in [Policy::STANDARD, Policy::ADMIN_CHANGES, Policy::ADMIN] {
            assert_eq!(policy.needs(&Method::GET), policy.read);
            assert_eq!(policy.needs(&Method::HEAD), policy.read);
            for change in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
                assert_eq!(policy.needs(&change), policy.change);
            }
        }
        assert_eq!(Policy::STANDARD.needs(&Method::POST), Scope::Write);
        assert_eq!(Policy::ADMIN_CHANGES.needs(&Method::GET), Scope::Read);
        assert_eq!(Policy::ADMIN_CHANGES.needs(&Method::POST), Scope::Admin);
        assert_eq!(Policy::ADMIN.needs(&Method::GET), Scope::Admin);
    }
}
