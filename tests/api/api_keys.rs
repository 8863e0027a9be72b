use std::time::Duration;

use serde_json::{json, Value};
use siesta::clock::Timestamp;

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
    let last_key = last["key"].as_str().unwrap().to_owned();
    app.get("/api/v1/Me", &last_key, t.org_id).await.ok(200);
    for bad in ["forever", "00s", "05m", "-1h"] {
        let r = app
            .post(&path, &t.admin, t.org_id, json!({"grace": bad}))
            .await;
        r.problem(400, "validation_error");
    }
    // Zero as people type it, with a unit: each ends the key it rotates at once.
    let mut current = (last["id"].as_str().unwrap().to_owned(), last_key);
    for zero in ["0s", "0m", "0h", "0d"] {
        let path = format!("/api/v1/ApiKey/{}/rotate", current.0);
        let next = app
            .post(&path, &t.admin, t.org_id, json!({"grace": zero}))
            .await
            .ok(200);
        app.get("/api/v1/Me", &current.1, t.org_id)
            .await
            .problem(401, "expired_api_key");
        current = (
            next["id"].as_str().unwrap().to_owned(),
            next["key"].as_str().unwrap().to_owned(),
        );
    }
    app.get("/api/v1/Me", &current.1, t.org_id).await.ok(200);
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
    let theirs = not_found(app.get(&path, &b.admin, b.org_id).await);
    assert_eq!(theirs, not_found(app.get(&never, &b.admin, b.org_id).await));
    app.get(&path, &a.read, a.org_id)
        .await
        .problem(403, "insufficient_scope");
    app.get("/api/v1/Me", &key, a.org_id).await.ok(200);
    let one = app.get(&path, &a.admin, a.org_id).await.ok(200);
    assert_eq!(one["id"], made["id"]);
    assert_eq!(one["name"], "crm-prod-sync");
    assert!(one.get("key").is_none(), "never the value: {one}");

    let r = app.delete(&path, &a.admin, a.org_id).await;
    assert_eq!(r.status, 204);
    not_found(app.get(&path, &a.admin, a.org_id).await);
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

/// The organization's key with this id, as the admin key gets it, after checking that the
/// list shows the same.
async fn listed_key(app: &TestApp, t: &Tenant, name: &str, id: &Value) -> Value {
    let path = format!("/api/v1/ApiKey?Search={name}&Limit=100");
    let listed = app.get(&path, &t.admin, t.org_id).await.ok(200);
    let item = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == *id)
        .unwrap_or_else(|| panic!("{id} is listed: {listed}"))
        .clone();
    let path = format!("/api/v1/ApiKey/{}", id.as_str().unwrap());
    let one = app.get(&path, &t.admin, t.org_id).await.ok(200);
    // A use may be recorded in between.
    let settled = |mut v: Value| {
        v.as_object_mut().unwrap().remove("lastUsedAt");
        v
    };
    assert_eq!(settled(one.clone()), settled(item));
    one
}

/// A time the server wrote, in milliseconds since the epoch.
#[track_caller]
fn millis(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("a time, got {v}"));
    Timestamp::parse(s)
        .unwrap_or_else(|| panic!("RFC 3339: {s}"))
        .millis()
}

#[tokio::test]
async fn a_rotation_without_a_body_keeps_the_old_key_for_exactly_24_hours() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    for (name, body) in [("crm-prod-sync", None), ("erp-prod-sync", Some(json!({})))] {
        let made = app
            .post("/api/v1/ApiKey", &t.admin, t.org_id, json!({"name": name}))
            .await
            .ok(201);
        let path = format!("/api/v1/ApiKey/{}/rotate", made["id"].as_str().unwrap());
        let rotated = match body {
            None => {
                app.rotate_with_default_grace(&t, made["id"].as_str().unwrap())
                    .await
            }
            Some(b) => app.post(&path, &t.admin, t.org_id, b).await,
        };
        let successor = rotated.ok(200);
        // The successor is created at the moment of the rotation, and the old key's grace
        // ends 24 hours after that moment, to the millisecond.
        let old = listed_key(&app, &t, name, &made["id"]).await;
        assert_eq!(old["replacedBy"], successor["id"]);
        let grace = millis(&old["graceEndsAt"]) - millis(&successor["createdAt"]);
        assert_eq!(grace, 24 * 3600 * 1000, "{name}: {old}");
        assert!(old["expiresAt"].is_null(), "a grace period, not a lifetime");
        let new = listed_key(&app, &t, name, &successor["id"]).await;
        assert!(new["graceEndsAt"].is_null() && new["replacedBy"].is_null());
    }
}

#[tokio::test]
async fn last_used_at_is_null_until_a_key_is_used_then_the_time_of_that_use() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let made = app
        .post(
            "/api/v1/ApiKey",
            &t.admin,
            t.org_id,
            json!({"name": "crm-prod-sync"}),
        )
        .await
        .ok(201);
    assert!(made["lastUsedAt"].is_null(), "{made}");
    let never = listed_key(&app, &t, "crm-prod-sync", &made["id"]).await;
    assert!(never["lastUsedAt"].is_null(), "never used: {never}");

    let key = made["key"].as_str().unwrap();
    app.get("/api/v1/Me", key, t.org_id).await.ok(200);
    // The first use in a minute is written within a second (buffered, not a write per
    // request); the deadline here is generous.
    let last_used =
        || async { listed_key(&app, &t, "crm-prod-sync", &made["id"]).await["lastUsedAt"].clone() };
    let recorded = eventually(Duration::from_secs(5), || async {
        !last_used().await.is_null()
    })
    .await;
    assert!(recorded.is_some(), "lastUsedAt is shown after a use");
    let shown = last_used().await;
    let after = app
        .post(
            "/api/v1/ApiKey",
            &t.admin,
            t.org_id,
            json!({"name": "clock-prod-probe"}),
        )
        .await
        .ok(201);
    // Kept to the minute: no earlier than the start of the minute the key was created in
    // (the use came after), no later than a moment after the use, both by the server's clock.
    let used = millis(&shown);
    let created = millis(&made["createdAt"]);
    assert!(created - created % 60_000 <= used, "{shown} after {made}");
    assert!(
        used <= millis(&after["createdAt"]),
        "{shown} before {after}"
    );
}
