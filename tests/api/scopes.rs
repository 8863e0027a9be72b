//! Row 10 for every operation the server documents: the scope each one needs is the one
//! SPEC §9 gives, refused below it and let through at it, whatever the route's file says.

use reqwest::Method;
use serde_json::json;
use siesta::key::Scope;
use uuid::Uuid;

use crate::helpers::*;

/// SPEC §9's scope column: method, path template, the scope the operation needs.
const SPEC: &[(&str, &str, Scope)] = &[
    ("GET", "/api/v1/Me", Scope::Read),
    ("GET", "/api/v1/Agent", Scope::Read),
    ("POST", "/api/v1/Agent", Scope::Write),
    ("GET", "/api/v1/Agent/{agentId}", Scope::Read),
    ("PUT", "/api/v1/Agent/{agentId}", Scope::Write),
    ("DELETE", "/api/v1/Agent/{agentId}", Scope::Write),
    ("POST", "/api/v1/Agent/{agentId}/response", Scope::Write),
    ("GET", "/api/v1/Conversation/{conversationId}", Scope::Read),
    (
        "POST",
        "/api/v1/Agent/{agentId}/realtime-session",
        Scope::Write,
    ),
    ("POST", "/api/v1/File", Scope::Write),
    ("GET", "/api/v1/File/{fileId}", Scope::Read),
    ("GET", "/api/v1/Task", Scope::Read),
    ("POST", "/api/v1/Task", Scope::Write),
    ("GET", "/api/v1/Task/{taskId}", Scope::Read),
    ("PUT", "/api/v1/Task/{taskId}", Scope::Write),
    ("GET", "/api/v1/TaskWorkspace", Scope::Read),
    ("POST", "/api/v1/TaskWorkspace", Scope::Write),
    ("GET", "/api/v1/TaskWorkspace/{workspaceId}", Scope::Read),
    ("GET", "/api/v1/DataSourceCollection", Scope::Read),
    ("POST", "/api/v1/DataSourceCollection", Scope::Admin),
    (
        "GET",
        "/api/v1/DataSourceCollection/{collectionId}",
        Scope::Read,
    ),
    ("GET", "/api/v1/Connection", Scope::Read),
    ("POST", "/api/v1/Connection", Scope::Admin),
    ("GET", "/api/v1/Connection/{connectionId}", Scope::Read),
    ("GET", "/api/v1/AuditLog", Scope::Admin),
    ("GET", "/api/v1/ApiKey", Scope::Admin),
    ("POST", "/api/v1/ApiKey", Scope::Admin),
    ("GET", "/api/v1/ApiKey/{keyId}", Scope::Admin),
    ("PUT", "/api/v1/ApiKey/{keyId}", Scope::Admin),
    ("DELETE", "/api/v1/ApiKey/{keyId}", Scope::Admin),
    ("POST", "/api/v1/ApiKey/{keyId}/rotate", Scope::Admin),
    ("GET", "/api/v1/ApiKey/{keyId}/usage", Scope::Admin),
];

const SCOPES: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

/// A concrete path for a template: each `{parameter}` becomes an id that names nothing.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                Uuid::now_v7().to_string()
            } else {
                seg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn key_of(t: &Tenant, scope: Scope) -> &str {
    match scope {
        Scope::Read => &t.read,
        Scope::Write => &t.write,
        Scope::Admin => &t.admin,
    }
}

/// Asserts that `method path` is refused with `insufficient_scope` below `needed` and passes
/// row 10 at `needed` and above.
async fn needs(app: &TestApp, t: &Tenant, method: Method, path: &str, needed: Scope) {
    let body = (method != Method::GET && method != Method::HEAD).then(|| json!({}));
    for scope in SCOPES {
        let r = app
            .call(
                method.clone(),
                path,
                Some(key_of(t, scope)),
                Some(&t.org_id.to_string()),
                body.clone(),
            )
            .await;
        let refused =
            r.status == 403 && (method == Method::HEAD || r.json()["code"] == "insufficient_scope");
        let expected = scope < needed;
        assert_eq!(
            refused,
            expected,
            "{method} {path} with a {scope:?} key (needs {needed:?}): {} {}",
            r.status,
            String::from_utf8_lossy(&r.bytes)
        );
    }
}

#[tokio::test]
async fn every_documented_operation_needs_the_scope_the_contract_gives() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let doc = app.document().await;
    let mut seen = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            let method = method.to_ascii_uppercase();
            let Some(&(_, _, needed)) = SPEC.iter().find(|(m, p, _)| *m == method && p == template)
            else {
                panic!("{method} {template} is documented but not in SPEC §9's table here");
            };
            let method: Method = method.parse().unwrap();
            needs(&app, &t, method.clone(), &concrete(template), needed).await;
            if method == Method::GET {
                needs(&app, &t, Method::HEAD, &concrete(template), needed).await;
            }
            seen += 1;
        }
    }
    assert!(seen >= 30, "only {seen} operations documented");
}

#[tokio::test]
async fn a_method_a_path_does_not_have_and_a_path_that_names_nothing_pass_the_same_checks() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    // A 405 is a change on its router: `write` on agents, `admin` on keys and data sources.
    for (path, needed) in [
        ("/api/v1/Agent".to_owned(), Scope::Write),
        (format!("/api/v1/Agent/{}", Uuid::now_v7()), Scope::Write),
        ("/api/v1/ApiKey".to_owned(), Scope::Admin),
        ("/api/v1/DataSourceCollection".to_owned(), Scope::Admin),
        ("/api/v1/Me".to_owned(), Scope::Write),
    ] {
        needs(&app, &t, Method::PATCH, &path, needed).await;
        app.call(
            Method::PATCH,
            &path,
            Some(&t.admin),
            Some(&t.org_id.to_string()),
            Some(json!({})),
        )
        .await
        .problem(405, "method_not_allowed");
    }
    // A reading of the audit log's path in another case is still the audit log.
    needs(&app, &t, Method::GET, "/API/V1/auditlog", Scope::Admin).await;
    // A path that names nothing: reads need `read`, changes `write`, then 404.
    needs(&app, &t, Method::GET, "/api/v1/Nothing", Scope::Read).await;
    needs(
        &app,
        &t,
        Method::DELETE,
        "/api/v1/Nothing/at/all",
        Scope::Write,
    )
    .await;
    app.get("/api/v1/Nothing", &t.read, t.org_id)
        .await
        .problem(404, "not_found");
}
