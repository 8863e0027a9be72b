use serde_json::json;
use siesta::key::Scope;
use siesta::store::Role;

use crate::helpers::*;

#[tokio::test]
async fn collections_are_read_with_read_and_created_with_admin() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let body = json!({"name": "Product manuals", "description": "PDFs"});
    for key in [&t.read, &t.write] {
        app.post("/api/v1/DataSourceCollection", key, t.org_id, body.clone())
            .await
            .problem(403, "insufficient_scope");
    }
    let made = app
        .post("/api/v1/DataSourceCollection", &t.admin, t.org_id, body)
        .await
        .ok(201);
    assert_eq!(made["name"], "Product manuals");
    let list = app
        .get("/api/v1/DataSourceCollection", &t.read, t.org_id)
        .await
        .ok(200);
    assert_eq!(list["total"], 1);
    let path = format!(
        "/api/v1/DataSourceCollection/{}",
        made["id"].as_str().unwrap()
    );
    assert_eq!(app.get(&path, &t.read, t.org_id).await.ok(200), made);
    let r = app
        .post(
            "/api/v1/DataSourceCollection",
            &t.admin,
            t.org_id,
            json!({}),
        )
        .await;
    assert!(r.problem(400, "validation_error")["errors"]["name"].is_array());

    let other = app.tenant("Globex").await;
    let theirs = not_found(app.get(&path, &other.read, other.org_id).await);
    let never = format!("/api/v1/DataSourceCollection/{}", uuid::Uuid::now_v7());
    assert_eq!(
        theirs,
        not_found(app.get(&never, &other.read, other.org_id).await)
    );
}

#[tokio::test]
async fn connections_are_shared_or_private_to_their_creator() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let dev = app.create_user("dev@acme.example").await;
    app.add_member(t.org_id, dev, Role::Admin).await;
    let (_, dev_admin) = app
        .issue(t.org_id, dev, "dev-local-admin", Scope::Admin)
        .await;

    for key in [&t.read, &t.write] {
        app.post(
            "/api/v1/Connection",
            key,
            t.org_id,
            json!({"name": "x", "type": "zendesk"}),
        )
        .await
        .problem(403, "insufficient_scope");
    }
    let shared = app
        .post(
            "/api/v1/Connection",
            &t.admin,
            t.org_id,
            json!({"name": "Support desk", "type": "zendesk", "visibility": "shared"}),
        )
        .await
        .ok(201);
    assert_eq!(shared["type"], "zendesk");
    assert_eq!(shared["visibility"], "shared");
    let private = app
        .post(
            "/api/v1/Connection",
            &t.admin,
            t.org_id,
            json!({"name": "My CRM", "type": "salesforce"}),
        )
        .await
        .ok(201);
    assert_eq!(private["visibility"], "private", "private is the default");

    // The owner's keys (any scope) see both; another member sees only the shared one.
    let mine = app
        .get("/api/v1/Connection", &t.read, t.org_id)
        .await
        .ok(200);
    assert_eq!(mine["total"], 2);
    let theirs = app
        .get("/api/v1/Connection", &dev_admin, t.org_id)
        .await
        .ok(200);
    assert_eq!(theirs["total"], 1);
    assert_eq!(theirs["items"][0]["id"], shared["id"]);
    let path = format!("/api/v1/Connection/{}", private["id"].as_str().unwrap());
    app.get(&path, &t.read, t.org_id).await.ok(200);
    app.get(&path, &dev_admin, t.org_id)
        .await
        .problem(404, "not_found");

    let bad = json!({"name": "", "type": "Zen Desk", "visibility": "public"});
    let r = app
        .post("/api/v1/Connection", &t.admin, t.org_id, bad)
        .await
        .problem(400, "validation_error");
    for field in ["name", "type", "visibility"] {
        assert!(r["errors"][field].is_array(), "{field}: {r}");
    }
    let other = app.tenant("Globex").await;
    let shared_path = format!("/api/v1/Connection/{}", shared["id"].as_str().unwrap());
    app.get(&shared_path, &other.admin, other.org_id)
        .await
        .problem(404, "not_found");
}
