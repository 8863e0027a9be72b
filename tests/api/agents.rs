use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn agents_are_created_read_updated_and_deleted() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let body = json!({"name": "support-bot", "description": "Answers tickets", "instructions": "Be kind.", "model": "small"});
    let created = app
        .post("/api/v1/Agent", &t.write, t.org_id, body)
        .await
        .ok(201);
    assert_eq!(created["name"], "support-bot");
    assert_eq!(created["model"], "small");
    let path = format!("/api/v1/Agent/{}", created["id"].as_str().unwrap());
    assert_eq!(app.get(&path, &t.read, t.org_id).await.ok(200), created);

    let updated = app
        .put(
            &path,
            &t.write,
            t.org_id,
            json!({"description": "Answers tickets fast"}),
        )
        .await
        .ok(200);
    assert_eq!(
        updated["name"], "support-bot",
        "fields left out keep their value"
    );
    assert_eq!(updated["description"], "Answers tickets fast");
    assert_eq!(updated["createdAt"], created["createdAt"]);

    let r = app.delete(&path, &t.write, t.org_id).await;
    assert_eq!(r.status, 204);
    assert!(r.bytes.is_empty());
    app.get(&path, &t.read, t.org_id)
        .await
        .problem(404, "not_found");
    app.delete(&path, &t.write, t.org_id)
        .await
        .problem(404, "not_found");
}

#[tokio::test]
async fn lists_page_oldest_first_and_search_by_name() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    for i in 0..30 {
        let name = if i % 10 == 0 {
            format!("Billing-{i}")
        } else {
            format!("agent-{i}")
        };
        app.created(&t, "/api/v1/Agent", json!({"name": name}))
            .await;
    }
    let first = app.get("/api/v1/Agent", &t.read, t.org_id).await.ok(200);
    assert_eq!(first["total"], 30);
    assert_eq!(first["offset"], 0);
    assert_eq!(first["limit"], 25);
    assert_eq!(first["items"].as_array().unwrap().len(), 25);
    assert_eq!(first["items"][0]["name"], "Billing-0");
    let rest = app
        .get("/api/v1/Agent?Offset=25&Limit=10", &t.read, t.org_id)
        .await
        .ok(200);
    let names: Vec<&str> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["agent-25", "agent-26", "agent-27", "agent-28", "agent-29"]
    );
    assert_eq!(rest["total"], 30);
    // Past the last page: no items, and still the count of all.
    let past = app
        .get("/api/v1/Agent?Offset=40", &t.read, t.org_id)
        .await
        .ok(200);
    assert_eq!(past["items"], json!([]));
    assert_eq!(past["total"], 30);
    let found = app
        .get("/api/v1/Agent?Search=billing", &t.read, t.org_id)
        .await
        .ok(200);
    assert_eq!(found["total"], 3);
    // Another organization sees none of them.
    let other = app.tenant("Globex").await;
    assert_eq!(
        app.get("/api/v1/Agent", &other.read, other.org_id)
            .await
            .ok(200)["total"],
        0
    );
}

#[tokio::test]
async fn bad_paging_parameters_are_validation_errors_naming_them() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    for (query, param) in [
        ("Limit=0", "Limit"),
        ("Limit=101", "Limit"),
        ("limit=ten", "Limit"),
        ("Offset=-1", "Offset"),
        ("offset=1.5", "Offset"),
    ] {
        let body = app
            .get(&format!("/api/v1/Agent?{query}"), &t.read, t.org_id)
            .await
            .problem(400, "validation_error");
        assert!(body["errors"][param].is_array(), "{query}: {body}");
    }
    app.get("/api/v1/Agent?Limit=100", &t.read, t.org_id)
        .await
        .ok(200);
    app.get("/api/v1/Agent?Limit=1", &t.read, t.org_id)
        .await
        .ok(200);
}

#[tokio::test]
async fn bodies_are_validated_by_field() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let post = |body| app.post("/api/v1/Agent", &t.write, t.org_id, body);
    let r = post(json!({"description": "no name"}))
        .await
        .problem(400, "validation_error");
    assert_eq!(r["errors"]["name"][0], "is required");
    let r = post(json!({"name": ""}))
        .await
        .problem(400, "validation_error");
    assert!(r["errors"]["name"].is_array());
    let r = post(json!({"name": "x".repeat(101)}))
        .await
        .problem(400, "validation_error");
    assert!(r["errors"]["name"].is_array());
    let r = post(json!({"name": "ok", "id": "mine", "orgId": "theirs", "colour": "blue"}))
        .await
        .problem(400, "validation_error");
    assert_eq!(
        r["errors"]["id"][0],
        "is set by the server and cannot be sent"
    );
    assert_eq!(
        r["errors"]["orgId"][0],
        "is set by the server and cannot be sent"
    );
    assert_eq!(r["errors"]["colour"][0], "is not a field of this request");
    let r = post(json!({"name": 42}))
        .await
        .problem(400, "validation_error");
    assert!(r["errors"]["name"].is_array());
    let r = post(json!(["not", "an", "object"])).await;
    r.problem(400, "invalid_json");
    let raw = app
        .client
        .post(app.url("/api/v1/Agent"))
        .header("X-Api-Key", &t.write)
        .header("X-Org-Id", t.org_id.to_string())
        .header("Content-Type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    Reply::from(raw).await.problem(400, "invalid_json");
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_payload_too_large() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let big = json!({"name": "big", "instructions": "x".repeat(1024 * 1024)});
    app.post("/api/v1/Agent", &t.write, t.org_id, big)
        .await
        .problem(413, "payload_too_large");
    let fits = json!({"name": "fits", "instructions": "x".repeat(30_000)});
    app.post("/api/v1/Agent", &t.write, t.org_id, fits)
        .await
        .ok(201);
}

#[tokio::test]
async fn mutations_and_reads_are_in_the_audit_log_newest_first() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let agent = app.created(&t, "/api/v1/Agent", json!({"name": "a"})).await;
    app.get("/api/v1/Me", &t.read, t.org_id).await.ok(200);
    let found = eventually(std::time::Duration::from_secs(2), || async {
        let log = app
            .get("/api/v1/AuditLog?Action=request", &t.admin, t.org_id)
            .await
            .ok(200);
        log["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["path"] == "/api/v1/Me")
    })
    .await;
    assert!(
        found.is_some(),
        "the read is recorded within the flush period"
    );
    let created = app
        .get("/api/v1/AuditLog?Action=agent.created", &t.admin, t.org_id)
        .await
        .ok(200);
    assert_eq!(created["total"], 1);
    let record = &created["items"][0];
    assert_eq!(record["targetId"], agent["id"]);
    assert_eq!(record["keyName"], "test-suite-write");
    let all = app
        .get("/api/v1/AuditLog?Limit=100", &t.admin, t.org_id)
        .await
        .ok(200);
    let times: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["at"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");
    app.get("/api/v1/AuditLog?From=yesterday", &t.admin, t.org_id)
        .await
        .problem(400, "validation_error");
    let future = app
        .get(
            "/api/v1/AuditLog?From=2999-01-01T00:00:00Z",
            &t.admin,
            t.org_id,
        )
        .await
        .ok(200);
    assert_eq!(future["total"], 0);
    assert!(
        !all.to_string().contains(&t.write),
        "records name keys, never their values"
    );
}

#[tokio::test]
async fn records_of_reads_still_in_memory_are_written_at_shutdown() {
    let settings = siesta::Settings {
        record_flush: std::time::Duration::from_secs(3600),
        ..siesta::Settings::default()
    };
    let mut app = spawn_app_with(settings).await;
    let t = app.tenant("Acme").await;
    app.get("/api/v1/Me", &t.read, t.org_id).await.ok(200);
    let store = std::sync::Arc::clone(&app.store);
    let filter = siesta::store::AuditFilter {
        action: Some("request".into()),
        ..Default::default()
    };
    let page = siesta::store::Page {
        offset: 0,
        limit: 10,
    };
    let before = store.list_audit(t.org_id, &filter, page).await.unwrap();
    assert_eq!(
        before.total, 0,
        "with an hour's flush period nothing is written yet"
    );
    app.stop().await;
    let after = store.list_audit(t.org_id, &filter, page).await.unwrap();
    assert_eq!(after.total, 1);
    assert_eq!(after.items[0].path.as_deref(), Some("/api/v1/Me"));
}

#[tokio::test]
async fn the_audit_log_exports_every_matching_record_as_csv() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let other = app.tenant("Globex").await;
    let base = siesta::clock::Timestamp::now().millis() - 10_000_000;
    let mut records = Vec::new();
    for (i, org) in (0..2_600).map(|i| (i, if i % 13 == 0 { other.org_id } else { t.org_id })) {
        let mut r =
            siesta::store::AuditRecord::event(org, "test.bulk", "cli").target(format!("item-{i}"));
        r.at = siesta::clock::Timestamp(base + i);
        records.push(r);
    }
    app.store.record_batch(&records, &[]).await.unwrap();
    let mine = records.iter().filter(|r| r.org_id == t.org_id).count();

    let r = app
        .client
        .get(app.url("/api/v1/AuditLog?Action=test.bulk&Limit=5"))
        .header("X-Api-Key", &t.admin)
        .header("X-Org-Id", t.org_id.to_string())
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    let text = r.text().await.unwrap();
    let lines: Vec<&str> = text.trim_end().split("\r\n").collect();
    assert_eq!(
        lines[0],
        "id,at,action,actor,keyId,keyName,method,path,status,requestId,targetId"
    );
    assert_eq!(lines.len() - 1, mine, "every matching record, not one page");
    assert!(
        lines[1].ends_with(",item-2599"),
        "newest first: {}",
        lines[1]
    );
    assert!(lines.last().unwrap().ends_with(",item-1"));
    assert!(
        !text.contains("item-13,") && !text.contains("item-0\r"),
        "another org's records stay out"
    );

    let json = app
        .get(
            "/api/v1/AuditLog?Action=test.bulk&Limit=5",
            &t.admin,
            t.org_id,
        )
        .await
        .ok(200);
    assert_eq!(json["items"].as_array().unwrap().len(), 5);
    assert_eq!(json["total"], mine);
}
