//! Request bodies and parameters mean exactly what the OpenAPI document says: `null` only
//! where the document allows it, text that may not be empty may not be blank either, whole
//! numbers however JSON writes them, and typed parameters refused when sent empty.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_field_sent_as_null_is_refused_unless_null_has_a_meaning() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let r = app
        .post(
            "/api/v1/Agent",
            &t.write,
            t.org_id,
            json!({"name": "Triage", "description": null}),
        )
        .await
        .problem(400, "validation_error");
    assert_eq!(
        r["errors"]["description"][0],
        "must not be null; leave the field out instead"
    );

    // An agent's model: null goes back to the server's default.
    let agent = app
        .created(
            &t,
            "/api/v1/Agent",
            json!({"name": "Triage", "model": "small-1"}),
        )
        .await;
    assert_eq!(agent["model"], "small-1");
    let path = format!("/api/v1/Agent/{}", agent["id"].as_str().unwrap());
    let kept = app
        .put(&path, &t.write, t.org_id, json!({"name": "Renamed"}))
        .await
        .ok(200);
    assert_eq!(kept["model"], "small-1", "a field left out keeps its value");
    let cleared = app
        .put(&path, &t.write, t.org_id, json!({"model": null}))
        .await
        .ok(200);
    assert_eq!(cleared["model"], serde_json::Value::Null);
    assert_eq!(cleared["name"], "Renamed");
}

#[tokio::test]
async fn names_are_not_blank_and_are_kept_without_surrounding_spaces() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    for path in [
        "/api/v1/Agent",
        "/api/v1/TaskWorkspace",
        "/api/v1/DataSourceCollection",
    ] {
        let r = app
            .post(path, &t.admin, t.org_id, json!({"name": " \t "}))
            .await
            .problem(400, "validation_error");
        assert_eq!(r["errors"]["name"][0], "must not be blank", "{path}");
        let made = app
            .post(path, &t.admin, t.org_id, json!({"name": "  Support  "}))
            .await
            .ok(201);
        assert_eq!(made["name"], "Support", "{path}");
    }
    let r = app
        .post(
            "/api/v1/Agent",
            &t.write,
            t.org_id,
            json!({"name": "Bell\u{7}"}),
        )
        .await
        .problem(400, "validation_error");
    assert_eq!(
        r["errors"]["name"][0],
        "must not contain control characters"
    );
}

#[tokio::test]
async fn a_rate_limit_is_a_whole_number_however_json_writes_it() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let key = app
        .post(
            "/api/v1/ApiKey",
            &t.admin,
            t.org_id,
            json!({"name": "crm-prod-sync", "rateLimit": 600.0}),
        )
        .await
        .ok(201);
    assert_eq!(key["rateLimit"], 600);
    for bad in [json!(600.5), json!(0), json!(1_000_000_001), json!("600")] {
        let r = app
            .post(
                "/api/v1/ApiKey",
                &t.admin,
                t.org_id,
                json!({"name": "crm-prod-other", "rateLimit": bad}),
            )
            .await
            .problem(400, "validation_error");
        assert!(r["errors"]["rateLimit"].is_array(), "{bad}: {r}");
    }
}

#[tokio::test]
async fn durations_follow_one_grammar_with_no_spaces_or_leading_zeros() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    for bad in ["0", "0d", "05m", " 30d", "1000000s", "1.5h"] {
        let r = app
            .post(
                "/api/v1/ApiKey",
                &t.admin,
                t.org_id,
                json!({"name": "crm-prod-sync", "expiresIn": bad}),
            )
            .await
            .problem(400, "validation_error");
        assert!(r["errors"]["expiresIn"].is_array(), "{bad}: {r}");
    }
    let key = app
        .post(
            "/api/v1/ApiKey",
            &t.admin,
            t.org_id,
            json!({"name": "crm-prod-sync", "expiresIn": "999999s"}),
        )
        .await
        .ok(201);
    // A rotation body of `null` is no body: the default grace period.
    let rotate = format!("/api/v1/ApiKey/{}/rotate", key["id"].as_str().unwrap());
    let org = t.org_id.to_string();
    app.call(
        reqwest::Method::POST,
        &rotate,
        Some(&t.admin),
        Some(&org),
        Some(serde_json::Value::Null),
    )
    .await
    .ok(200);
}

#[tokio::test]
async fn typed_parameters_sent_empty_or_out_of_range_are_refused() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    for (path, name) in [
        ("/api/v1/Task?WorkspaceId=", "WorkspaceId"),
        ("/api/v1/Task?Status=", "Status"),
        ("/api/v1/AuditLog?From=", "From"),
        ("/api/v1/AuditLog?To=", "To"),
        ("/api/v1/Agent?Offset=1000000001", "Offset"),
        ("/api/v1/Agent?Offset=%201", "Offset"),
        ("/api/v1/Agent?Search=a%00b", "Search"),
        ("/api/v1/Agent?Search=a%0Ab", "Search"),
        ("/api/v1/Agent?Search=a%09b", "Search"),
        ("/api/v1/Agent?Search=a%0Db", "Search"),
        (
            "/api/v1/Task?WorkspaceId=0190a1b2c3d4e5f60718293a4b5c6d7e",
            "WorkspaceId",
        ),
    ] {
        let key = if path.contains("AuditLog") {
            &t.admin
        } else {
            &t.read
        };
        let r = app
            .get(path, key, t.org_id)
            .await
            .problem(400, "validation_error");
        assert!(r["errors"][name].is_array(), "{path}: {r}");
    }
    app.get("/api/v1/Agent?Offset=1000000000", &t.read, t.org_id)
        .await
        .ok(200);
}

#[tokio::test]
async fn ids_in_a_body_are_written_as_the_api_writes_them() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let ws = app
        .created(&t, "/api/v1/TaskWorkspace", json!({"name": "Support"}))
        .await;
    let id: uuid::Uuid = ws["id"].as_str().unwrap().parse().unwrap();
    for other in [
        id.simple().to_string(),
        id.braced().to_string(),
        id.urn().to_string(),
    ] {
        let r = app
            .post(
                "/api/v1/Task",
                &t.write,
                t.org_id,
                json!({"title": "Call back", "workspaceId": other}),
            )
            .await
            .problem(400, "validation_error");
        assert!(r["errors"]["workspaceId"].is_array(), "{other}: {r}");
    }
    app.created(
        &t,
        "/api/v1/Task",
        json!({"title": "Call back", "workspaceId": id.to_string().to_uppercase()}),
    )
    .await;
}

/// A POST with a raw body and the credential headers.
async fn post_raw(
    app: &TestApp,
    t: &Tenant,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> Reply {
    let mut req = app
        .client
        .post(app.url(path))
        .header("X-Api-Key", &t.admin)
        .header("X-Org-Id", t.org_id.to_string())
        .body(body.to_owned());
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    Reply::from(req.send().await.unwrap()).await
}

#[tokio::test]
async fn a_json_member_given_twice_is_refused_by_name_at_any_depth() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let json = Some("application/json");
    // Last-wins would have made an admin key out of a read one.
    let r = post_raw(
        &app,
        &t,
        "/api/v1/ApiKey",
        json,
        r#"{"name":"crm-prod-sync","scope":"read","scope":"admin"}"#,
    )
    .await;
    let body = r.problem(400, "validation_error");
    assert!(body["errors"]["scope"][0]
        .as_str()
        .unwrap()
        .contains("more than once"));
    let keys = app.get("/api/v1/ApiKey", &t.admin, t.org_id).await.ok(200);
    assert_eq!(keys["total"], 3, "no key was created");
    // Inside a nested object too, and for a name the request does not even know.
    let r = post_raw(
        &app,
        &t,
        "/api/v1/Agent",
        json,
        r#"{"name":"a","extra":{"x":1,"x":2}}"#,
    )
    .await;
    assert!(r.problem(400, "validation_error")["errors"]["x"].is_array());
    let r = post_raw(
        &app,
        &t,
        "/api/v1/Agent",
        json,
        r#"{"name":"a","extra":[1,{"y":1,"y":2}]}"#,
    )
    .await;
    assert!(r.problem(400, "validation_error")["errors"]["y"].is_array());
}

#[tokio::test]
async fn a_query_parameter_given_twice_is_refused_by_name_in_any_case() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    for path in [
        "/api/v1/Agent?Limit=5&limit=500",
        "/api/v1/Agent?Limit=5&Limit=5",
        "/api/v1/Agent?Limit=5&Search=a&LIMIT=7",
    ] {
        let body = app
            .get(path, &t.read, t.org_id)
            .await
            .problem(400, "validation_error");
        assert!(body["errors"]["Limit"][0]
            .as_str()
            .unwrap()
            .contains("more than once"));
    }
    // On an operation that takes no parameters as well, once the caller is known.
    let body = app
        .get("/api/v1/Me?x=1&X=2", &t.read, t.org_id)
        .await
        .problem(400, "validation_error");
    assert!(body["errors"]["x"].is_array());
    app.call(reqwest::Method::GET, "/api/v1/Me?x=1&x=2", None, None, None)
        .await
        .problem(401, "missing_api_key");
    app.get("/api/v1/Agent?Limit=5&Offset=0", &t.read, t.org_id)
        .await
        .ok(200);
}

#[tokio::test]
async fn a_json_body_needs_the_json_media_type() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let body = r#"{"name":"triage"}"#;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/merge-patch+json"),
        Some("application/jsonx"),
    ] {
        let r = post_raw(&app, &t, "/api/v1/Agent", content_type, body).await;
        r.problem(415, "unsupported_media_type");
    }
    for content_type in [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
    ] {
        post_raw(&app, &t, "/api/v1/Agent", Some(content_type), body)
            .await
            .ok(201);
    }
    let agents = app.get("/api/v1/Agent", &t.read, t.org_id).await.ok(200);
    assert_eq!(agents["total"], 3, "only the JSON ones were created");
    // A body that may be left out needs no type when it is.
    let key = app
        .post(
            "/api/v1/ApiKey",
            &t.admin,
            t.org_id,
            json!({"name": "crm-prod-sync"}),
        )
        .await
        .ok(201);
    let rotate = format!("/api/v1/ApiKey/{}/rotate", key["id"].as_str().unwrap());
    post_raw(&app, &t, &rotate, None, "").await.ok(200);
    let successor = app
        .get("/api/v1/ApiKey?Search=crm", &t.admin, t.org_id)
        .await
        .ok(200);
    let id = successor["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["replacedBy"].is_null())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotate = format!("/api/v1/ApiKey/{id}/rotate");
    post_raw(&app, &t, &rotate, Some("text/plain"), r#"{"grace":"0s"}"#)
        .await
        .problem(415, "unsupported_media_type");
}

#[tokio::test]
async fn bidirectional_controls_are_refused_in_names_and_text() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    for bidi in ['\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}'] {
        let name = format!("crm{bidi}-prod-sync");
        for (path, body, field) in [
            ("/api/v1/Agent", json!({"name": name}), "name"),
            (
                "/api/v1/Agent",
                json!({"name": "a", "instructions": format!("be kind {bidi}")}),
                "instructions",
            ),
            ("/api/v1/ApiKey", json!({"name": name}), "name"),
            ("/api/v1/TaskWorkspace", json!({"name": name}), "name"),
        ] {
            let r = app.post(path, &t.admin, t.org_id, body).await;
            let problem = r.problem(400, "validation_error");
            assert!(
                problem["errors"][field][0]
                    .as_str()
                    .unwrap()
                    .contains("bidirectional"),
                "{path} {field}: {problem}"
            );
        }
        let search = format!("/api/v1/Agent?Search=a{bidi}");
        app.get(&search, &t.read, t.org_id)
            .await
            .problem(400, "validation_error");
    }
}

#[tokio::test]
async fn a_json_body_of_exactly_1_mib_is_read_and_one_byte_more_is_413_however_it_is_sent() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let body_of = |len: usize| {
        let head = r#"{"name":"a","description":""#;
        let tail = r#""}"#;
        format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()))
    };
    let mib = 1024 * 1024;
    // Read, and refused for what it says (a description over its length), not its size.
    let r = post_raw(
        &app,
        &t,
        "/api/v1/Agent",
        Some("application/json"),
        &body_of(mib),
    )
    .await;
    assert!(r.problem(400, "validation_error")["errors"]["description"].is_array());
    let r = post_raw(
        &app,
        &t,
        "/api/v1/Agent",
        Some("application/json"),
        &body_of(mib + 1),
    )
    .await;
    r.problem(413, "payload_too_large");
    // Without a Content-Length (chunked), the limit holds all the same.
    let chunks: Vec<Result<String, std::io::Error>> = vec![
        Ok(body_of(mib + 1)[..mib].to_owned()),
        Ok("x\"}".to_owned()),
    ];
    let r = app
        .client
        .post(app.url("/api/v1/Agent"))
        .header("X-Api-Key", &t.admin)
        .header("X-Org-Id", t.org_id.to_string())
        .header("Content-Type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    Reply::from(r).await.problem(413, "payload_too_large");
}
