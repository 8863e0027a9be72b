use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn tasks_live_in_workspaces_and_are_listed_by_workspace_and_status() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let support = app
        .created(&t, "/api/v1/TaskWorkspace", json!({"name": "Support"}))
        .await;
    let sales = app
        .created(
            &t,
            "/api/v1/TaskWorkspace",
            json!({"name": "Sales", "description": "Leads"}),
        )
        .await;
    let ws = app
        .get("/api/v1/TaskWorkspace", &t.read, t.org_id)
        .await
        .ok(200);
    assert_eq!(ws["total"], 2);
    assert_eq!(ws["items"][0]["name"], "Support");
    let path = format!("/api/v1/TaskWorkspace/{}", sales["id"].as_str().unwrap());
    assert_eq!(
        app.get(&path, &t.read, t.org_id).await.ok(200)["description"],
        "Leads"
    );

    let task = app
        .created(
            &t,
            "/api/v1/Task",
            json!({"workspaceId": support["id"], "title": "Call back"}),
        )
        .await;
    assert_eq!(task["status"], "open", "open is the default");
    assert_eq!(task["workspaceId"], support["id"]);
    app.created(
        &t,
        "/api/v1/Task",
        json!({"workspaceId": sales["id"], "title": "Demo", "status": "in_progress"}),
    )
    .await;
    let path = format!("/api/v1/Task/{}", task["id"].as_str().unwrap());
    let done = app
        .put(&path, &t.write, t.org_id, json!({"status": "done"}))
        .await
        .ok(200);
    assert_eq!(done["status"], "done");
    assert_eq!(
        done["title"], "Call back",
        "fields left out keep their value"
    );
    assert_eq!(
        app.get(&path, &t.read, t.org_id).await.ok(200)["status"],
        "done"
    );

    let q = format!(
        "/api/v1/Task?WorkspaceId={}",
        support["id"].as_str().unwrap()
    );
    let by_ws = app.get(&q, &t.read, t.org_id).await.ok(200);
    assert_eq!(by_ws["total"], 1);
    assert_eq!(by_ws["items"][0]["title"], "Call back");
    let by_status = app
        .get("/api/v1/task?status=in_progress", &t.read, t.org_id)
        .await
        .ok(200);
    assert_eq!(by_status["total"], 1);
    assert_eq!(by_status["items"][0]["title"], "Demo");
    assert_eq!(
        app.get("/api/v1/Task", &t.read, t.org_id).await.ok(200)["total"],
        2
    );
}

#[tokio::test]
async fn task_input_is_validated_by_field() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let ws = app
        .created(&t, "/api/v1/TaskWorkspace", json!({"name": "Support"}))
        .await;
    let r = app
        .post("/api/v1/Task", &t.write, t.org_id, json!({}))
        .await
        .problem(400, "validation_error");
    assert!(
        r["errors"]["workspaceId"].is_array() && r["errors"]["title"].is_array(),
        "{r}"
    );
    let r = app
        .post(
            "/api/v1/Task",
            &t.write,
            t.org_id,
            json!({"workspaceId": ws["id"], "title": "x", "status": "blocked"}),
        )
        .await
        .problem(400, "validation_error");
    assert!(r["errors"]["status"].is_array());
    let r = app
        .post(
            "/api/v1/Task",
            &t.write,
            t.org_id,
            json!({"workspaceId": "nope", "title": "x"}),
        )
        .await;
    r.problem(400, "validation_error");
    app.post(
        "/api/v1/TaskWorkspace",
        &t.write,
        t.org_id,
        json!({"name": ""}),
    )
    .await
    .problem(400, "validation_error");
    for q in ["Status=blocked", "WorkspaceId=nope", "Limit=0"] {
        app.get(&format!("/api/v1/Task?{q}"), &t.read, t.org_id)
            .await
            .problem(400, "validation_error");
    }
    app.post(
        "/api/v1/Task",
        &t.read,
        t.org_id,
        json!({"workspaceId": ws["id"], "title": "x"}),
    )
    .await
    .problem(403, "insufficient_scope");
    app.post(
        "/api/v1/TaskWorkspace",
        &t.read,
        t.org_id,
        json!({"name": "x"}),
    )
    .await
    .problem(403, "insufficient_scope");
    let path = format!("/api/v1/Task/{}", uuid::Uuid::now_v7());
    app.put(&path, &t.read, t.org_id, json!({"title": "x"}))
        .await
        .problem(403, "insufficient_scope");
}

#[tokio::test]
async fn tasks_and_workspaces_of_another_org_are_not_found() {
    let app = spawn_app().await;
    let a = app.tenant("Acme").await;
    let b = app.tenant("Globex").await;
    let theirs_ws = app
        .created(&b, "/api/v1/TaskWorkspace", json!({"name": "Globex"}))
        .await;
    let theirs_task = app
        .created(
            &b,
            "/api/v1/Task",
            json!({"workspaceId": theirs_ws["id"], "title": "secret"}),
        )
        .await;
    let mine_ws = app
        .created(&a, "/api/v1/TaskWorkspace", json!({"name": "Acme"}))
        .await;
    let mine_task = app
        .created(
            &a,
            "/api/v1/Task",
            json!({"workspaceId": mine_ws["id"], "title": "mine"}),
        )
        .await;
    let never = uuid::Uuid::now_v7().to_string();
    // Reading another org's task or workspace.
    for kind in ["Task", "TaskWorkspace"] {
        let id = if kind == "Task" {
            &theirs_task["id"]
        } else {
            &theirs_ws["id"]
        };
        let theirs = not_found(
            app.get(
                &format!("/api/v1/{kind}/{}", id.as_str().unwrap()),
                &a.read,
                a.org_id,
            )
            .await,
        );
        assert_eq!(
            theirs,
            not_found(
                app.get(&format!("/api/v1/{kind}/{never}"), &a.read, a.org_id)
                    .await
            )
        );
    }
    // Creating a task in, or moving one to, another org's workspace.
    let into_theirs = json!({"workspaceId": theirs_ws["id"], "title": "sneaky"});
    let into_none = json!({"workspaceId": never, "title": "sneaky"});
    let theirs = not_found(
        app.post("/api/v1/Task", &a.write, a.org_id, into_theirs)
            .await,
    );
    assert_eq!(
        theirs,
        not_found(
            app.post("/api/v1/Task", &a.write, a.org_id, into_none)
                .await
        )
    );
    let path = format!("/api/v1/Task/{}", mine_task["id"].as_str().unwrap());
    not_found(
        app.put(
            &path,
            &a.write,
            a.org_id,
            json!({"workspaceId": theirs_ws["id"]}),
        )
        .await,
    );
    // Updating another org's task.
    let path = format!("/api/v1/Task/{}", theirs_task["id"].as_str().unwrap());
    not_found(
        app.put(&path, &a.write, a.org_id, json!({"title": "hijacked"}))
            .await,
    );
    assert_eq!(
        app.get(&path, &b.read, b.org_id).await.ok(200)["title"],
        "secret"
    );
    let filtered = format!(
        "/api/v1/Task?WorkspaceId={}",
        theirs_ws["id"].as_str().unwrap()
    );
    assert_eq!(
        app.get(&filtered, &a.read, a.org_id).await.ok(200)["total"],
        0
    );
}
