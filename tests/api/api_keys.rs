use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn admins_create_keys_over_http_that_work_at_once_and_are_shown_once() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let body = json!({"name": "crm-prod-sync", "scope": "write", "environment": "test", "expiresIn": "30d", "rateLimit": 120});
    let created = app
        .post("/api/v1/ApiKey", &t.admin, t.org_id, body)
        .await
        .ok(201);
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sai_test_"));
    assert_eq!(created["scope"], "write");
    assert_eq!(created["rateLimit"], 120);
    assert_eq!(created["createdBy"], t.owner.to_string());
    assert!(created["expiresAt"].is_string());
    let me = app.get("/api/v1/Me", &key, t.org_id).await.ok(200);
    assert_eq!(me["name"], "crm-prod-sync");
    assert_eq!(me["rateLimit"], 120);

    let listed = app
        .get("/api/v1/ApiKey?Search=crm", &t.admin, t.org_id)
        .await
        .ok(200);
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["id"], created["id"]);
    assert!(
        !listed.to_string().contains(&key),
        "lists never show values"
    );
    let all = app
        .get("/api/v1/ApiKey?Limit=2&Offset=1", &t.admin, t.org_id)
        .await
        .ok(200);
    assert_eq!(all["total"], 4);
    assert_eq!(all["items"].as_array().unwrap().len(), 2);

    let dup = json!({"name": "crm-prod-sync"});
    app.post("/api/v1/ApiKey", &t.admin, t.org_id, dup)
        .await
        .problem(409, "conflict");
}

#[tokio::test]
async fn key_bodies_are_validated_by_field() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let bad = json!({"name": "", "scope": "root", "environment": "prod", "expiresIn": "soon", "rateLimit": 0});
    let r = app
        .post("/api/v1/ApiKey", &t.admin, t.org_id, bad)
        .await
        .problem(400, "validation_error");
    for field in ["name", "scope", "environment", "expiresIn", "rateLimit"] {
        assert!(r["errors"][field].is_array(), "{field}: {r}");
    }
    let r = app
        .post(
            "/api/v1/ApiKey",
            &t.admin,
            t.org_id,
            json!({"name": "a-b-c", "key": "mine"}),
        )
        .await
        .problem(400, "validation_error");
    assert_eq!(
        r["errors"]["key"][0],
        "is set by the server and cannot be sent"
    );
}

#[tokio::test]
async fn key_management_needs_admin_scope() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    for key in [&t.read, &t.write] {
        app.get("/api/v1/ApiKey", key, t.org_id)
            .await
            .problem(403, "insufficient_scope");
        app.post("/api/v1/ApiKey", key, t.org_id, json!({"name": "x-y-z"}))
            .await
            .problem(403, "insufficient_scope");
    }
}

#[tokio::test]
async fn rotation_over_http_keeps_the_old_key_for_the_grace_period() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let made = app
        .post(
            "/api/v1/ApiKey",
            &t.admin,
            t.org_id,
            json!({"name": "crm-prod-sync", "scope": "read"}),
        )
        .await
        .ok(201);
    let old = made["key"].as_str().unwrap().to_owned();
    let id = made["id"].as_str().unwrap();
    app.get("/api/v1/Me", &old, t.org_id).await.ok(200);
    // No body: the default grace of 24h.
    let next = app.rotate_with_default_grace(&t, id).await.ok(200);
    assert_eq!(next["name"], "crm-prod-sync");
    assert_eq!(next["scope"], "read");
    let new = next["key"].as_str().unwrap().to_owned();
    app.get("/api/v1/Me", &old, t.org_id).await.ok(200);
    app.get("/api/v1/Me", &new, t.org_id).await.ok(200);
    // Rotating the successor with no grace ends it at once, on this server immediately.
    let path = format!("/api/v1/ApiKey/{}/rotate", next["id"].as_str().unwrap());
    let last = app
        .post(&path, &t.admin, t.org_id, json!({"grace": "0"}))
        .await
        .ok(200);
    app.get("/api/v1/Me", &new, t.org_id)
        .await
        .problem(401, "expired_api_key");
    app.get("/api/v1/Me", last["key"].as_str().unwrap(), t.org_id)
        .await
        .ok(200);
    let r = app
        .post(&path, &t.admin, t.org_id, json!({"grace": "forever"}))
        .await;
    r.problem(400, "validation_error");
}

#[tokio::test]
async fn a_key_deleted_over_http_stops_at_once_and_other_orgs_keys_are_404() {
    let app = spawn_app().await;
    let a = app.tenant("Acme").await;
    let b = app.tenant("Globex").await;
    let made = app
        .post(
            "/api/v1/ApiKey",
            &a.admin,
            a.org_id,
            json!({"name": "crm-prod-sync"}),
        )
        .await
        .ok(201);
    let key = made["key"].as_str().unwrap().to_owned();
    app.get("/api/v1/Me", &key, a.org_id).await.ok(200);
    let path = format!("/api/v1/ApiKey/{}", made["id"].as_str().unwrap());
    // Globex's admin cannot touch Acme's key, and learns nothing from trying.
    let never = format!("/api/v1/ApiKey/{}", uuid::Uuid::now_v7());
    let theirs = not_found(app.delete(&path, &b.admin, b.org_id).await);
    assert_eq!(
        theirs,
        not_found(app.delete(&never, &b.admin, b.org_id).await)
    );
    let theirs = not_found(
        app.post(&format!("{path}/rotate"), &b.admin, b.org_id, json!({}))
            .await,
    );
    assert_eq!(
        theirs,
        not_found(
            app.post(&format!("{never}/rotate"), &b.admin, b.org_id, json!({}))
                .await
        )
    );
    app.get("/api/v1/Me", &key, a.org_id).await.ok(200);

    let r = app.delete(&path, &a.admin, a.org_id).await;
    assert_eq!(r.status, 204);
    app.get("/api/v1/Me", &key, a.org_id)
        .await
        .problem(401, "invalid_api_key");
    app.delete(&path, &a.admin, a.org_id)
        .await
        .problem(404, "not_found");
    let log = app
        .get(
            "/api/v1/AuditLog?Action=api_key.deleted",
            &a.admin,
            a.org_id,
        )
        .await
        .ok(200);
    assert_eq!(log["items"][0]["targetId"], made["id"]);
    assert_eq!(
        log["items"][0]["keyName"], "test-suite-admin",
        "names the key that made the request"
    );
}
