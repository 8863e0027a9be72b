use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use siesta::key::{ApiKey, Environment, Scope};
use siesta::store::Role;
use siesta::Settings;

use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn a_valid_key_with_its_organization_reads_me() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let me = app.get("/api/v1/Me", &t.read, t.org_id).await.ok(200);
    assert_eq!(me["orgId"], t.org_id.to_string());
    assert_eq!(me["orgName"], "Acme");
    assert_eq!(me["name"], "test-suite-read");
    assert_eq!(me["scope"], "read");
    assert_eq!(me["environment"], "live");
    assert_eq!(me["rateLimit"], 600);
    assert!(
        !me.to_string().contains(&t.read),
        "the key itself is never echoed"
    );
    // The key's id is the one the organization's key list gives it.
    let listed = app
        .get("/api/v1/ApiKey?Search=test-suite-read", &t.admin, t.org_id)
        .await
        .ok(200);
    assert_eq!(listed["total"], 1);
    assert_eq!(me["keyId"], listed["items"][0]["id"]);
}

#[tokio::test]
async fn row_1_a_missing_or_empty_key_is_missing_api_key() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let org = t.org_id.to_string();
    app.call(Method::GET, "/api/v1/Me", None, Some(&org), None)
        .await
        .problem(401, "missing_api_key");
    app.call(Method::GET, "/api/v1/Me", Some(""), Some(&org), None)
        .await
        .problem(401, "missing_api_key");
    app.call(Method::GET, "/api/v1/Me", None, None, None)
        .await
        .problem(401, "missing_api_key");
}

#[tokio::test]
async fn row_2_malformed_keys_are_invalid_api_key() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let valid = t.read.clone();
    let mut bad_check = valid.clone();
    let last = bad_check.pop().unwrap();
    bad_check.push(if last == 'A' { 'B' } else { 'A' });
    let cases = [
        "not-a-key".to_owned(),
        valid.replacen("sai_live_", "sai_prod_", 1),
        valid[..valid.len() - 1].to_owned(),
        format!("{valid}x"),
        // A character outside the alphabet, in the body (never in the prefix).
        format!("{}!{}", &valid[..12], &valid[13..]),
        bad_check,
    ];
    for key in cases {
        let body = app
            .get("/api/v1/Me", &key, t.org_id)
            .await
            .problem(401, "invalid_api_key");
        assert!(
            !body.to_string().contains(&key),
            "the presented value is never echoed"
        );
    }
}

#[tokio::test]
async fn row_3_unknown_and_deleted_keys_are_invalid_api_key() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let unknown = ApiKey::generate(Environment::Live);
    app.get("/api/v1/Me", unknown.reveal(), t.org_id)
        .await
        .problem(401, "invalid_api_key");

    let (id, key) = app
        .issue(t.org_id, t.owner, "crm-prod-sync", Scope::Read)
        .await;
    app.get("/api/v1/Me", &key, t.org_id).await.ok(200);
    siesta::lifecycle::delete(&*app.store, t.org_id, id, &siesta::lifecycle::Actor::Cli)
        .await
        .unwrap();
    let lag = app
        .me_answers(Duration::from_secs(1), &key, t.org_id, 401)
        .await;
    assert!(lag.is_some(), "a deleted key stops working within a second");
    app.get("/api/v1/Me", &key, t.org_id)
        .await
        .problem(401, "invalid_api_key");
}

#[tokio::test]
async fn row_4_a_key_past_its_expiry_is_expired_api_key_even_when_cached() {
    // A cache lifetime longer than the key's, so that the cached key meets its expiry.
    let app = spawn_app_on_manual_clock(Settings {
        key_cache_ttl: Duration::from_secs(2 * 3600),
        ..Settings::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    let mut s = spec("crm-prod-short", Scope::Read);
    s.expires_in = Some(Duration::from_secs(3600));
    let (_, key) = app.issue_spec(t.org_id, t.owner, s).await;
    app.hold_as_verified(&key, t.org_id).await;
    let lookups = app.key_lookups().await;
    app.clock.advance(Duration::from_millis(3_599_999));
    app.get("/api/v1/Me", &key, t.org_id).await.ok(200);
    app.clock.advance(Duration::from_millis(1));
    app.get("/api/v1/Me", &key, t.org_id)
        .await
        .problem(401, "expired_api_key");
    assert_eq!(app.key_lookups().await, lookups, "refused from the cache");
}

#[tokio::test]
async fn headers_that_are_not_text_are_malformed_not_missing() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let raw = |name: &'static str, value: &'static [u8], other: (&'static str, String)| {
        app.client
            .get(app.url("/api/v1/Me"))
            .header(
                name,
                reqwest::header::HeaderValue::from_bytes(value).unwrap(),
            )
            .header(other.0, other.1)
            .send()
    };
    let r = raw(
        "X-Api-Key",
        b"sai_live_\xe9\xe9",
        ("X-Org-Id", t.org_id.to_string()),
    )
    .await
    .unwrap();
    Reply::from(r).await.problem(401, "invalid_api_key");
    let r = raw("X-Org-Id", b"\xe9", ("X-Api-Key", t.read.clone()))
        .await
        .unwrap();
    Reply::from(r).await.problem(403, "invalid_org_id");
}

#[tokio::test]
async fn a_credential_header_sent_twice_is_malformed_in_its_row() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let org = t.org_id.to_string();
    let twice = |key: [&str; 2], orgs: [&str; 2]| {
        let mut headers = reqwest::header::HeaderMap::new();
        for k in key.iter().filter(|k| !k.is_empty()) {
            headers.append("X-Api-Key", k.parse().unwrap());
        }
        for o in orgs.iter().filter(|o| !o.is_empty()) {
            headers.append("X-Org-Id", o.parse().unwrap());
        }
        app.client
            .get(app.url("/api/v1/Me"))
            .headers(headers)
            .send()
    };
    // The same key twice, or two keys: row 2, whichever copy a proxy would read.
    for keys in [
        [t.read.as_str(), t.read.as_str()],
        [t.read.as_str(), t.admin.as_str()],
    ] {
        let r = Reply::from(twice(keys, [&org, ""]).await.unwrap()).await;
        let body = r.problem(401, "invalid_api_key");
        assert!(!body.to_string().contains(&t.read[9..]));
    }
    // Two org ids: row 6, after the key has been checked.
    let other = uuid::Uuid::now_v7().to_string();
    for orgs in [[org.as_str(), org.as_str()], [org.as_str(), other.as_str()]] {
        let r = Reply::from(twice([&t.read, ""], orgs).await.unwrap()).await;
        r.problem(403, "invalid_org_id");
    }
    let r = Reply::from(twice(["", ""], [&org, &org]).await.unwrap()).await;
    r.problem(401, "missing_api_key");
}

#[tokio::test]
async fn row_5_a_missing_or_empty_org_id_is_missing_org_id() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    app.call(Method::GET, "/api/v1/Me", Some(&t.read), None, None)
        .await
        .problem(401, "missing_org_id");
    // Empty, or nothing but blanks (which HTTP itself strips): missing, not malformed.
    for blank in ["", " ", "   ", "\t", " \t "] {
        app.call(Method::GET, "/api/v1/Me", Some(&t.read), Some(blank), None)
            .await
            .problem(401, "missing_org_id");
    }
}

#[tokio::test]
async fn row_6_an_org_id_that_is_not_a_uuid_is_invalid_org_id() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    app.call(Method::GET, "/api/v1/Me", Some(&t.read), Some("acme"), None)
        .await
        .problem(403, "invalid_org_id");
    // An org id is read as the API writes ids: hyphenated, in either case, and only so.
    let id = t.org_id;
    for other_spelling in [
        id.simple().to_string(),
        id.braced().to_string(),
        id.urn().to_string(),
    ] {
        app.call(
            Method::GET,
            "/api/v1/Me",
            Some(&t.read),
            Some(&other_spelling),
            None,
        )
        .await
        .problem(403, "invalid_org_id");
    }
    let upper = id.to_string().to_uppercase();
    app.call(Method::GET, "/api/v1/Me", Some(&t.read), Some(&upper), None)
        .await
        .ok(200);
}

#[tokio::test]
async fn row_7_another_org_is_org_access_denied_whether_or_not_it_exists() {
    let app = spawn_app().await;
    let a = app.tenant("Acme").await;
    let b = app.tenant("Globex").await;
    let other = app
        .get("/api/v1/Me", &a.read, b.org_id)
        .await
        .problem(403, "org_access_denied");
    let nowhere = app
        .get("/api/v1/Me", &a.read, uuid::Uuid::now_v7())
        .await
        .problem(403, "org_access_denied");
    assert_eq!(
        other["detail"], nowhere["detail"],
        "nothing tells whether the other org exists"
    );
}

#[tokio::test]
async fn row_8_a_key_whose_creator_left_is_key_owner_not_member() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let dev = app.create_user("dev@acme.example").await;
    app.add_member(t.org_id, dev, Role::Member).await;
    let (_, key) = app.issue(t.org_id, dev, "crm-prod-sync", Scope::Read).await;
    app.get("/api/v1/Me", &key, t.org_id).await.ok(200);
    let audit = siesta::store::AuditRecord::event(t.org_id, "member.removed", "cli");
    app.store.remove_member(t.org_id, dev, audit).await.unwrap();
    let lag = app
        .me_answers(Duration::from_secs(1), &key, t.org_id, 403)
        .await;
    assert!(
        lag.is_some(),
        "member removal reaches the server within a second"
    );
    app.get("/api/v1/Me", &key, t.org_id)
        .await
        .problem(403, "key_owner_not_member");
    app.get("/api/v1/Me", &t.read, t.org_id).await.ok(200);
}

#[tokio::test]
async fn row_9_each_scope_allows_exactly_its_operations() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let body = json!({"name": "support-bot"});
    // read: GET and HEAD only.
    app.get("/api/v1/Agent", &t.read, t.org_id).await.ok(200);
    let head = app
        .call(
            Method::HEAD,
            "/api/v1/Agent",
            Some(&t.read),
            Some(&t.org_id.to_string()),
            None,
        )
        .await;
    assert_eq!(head.status, 200);
    let refused = app
        .post("/api/v1/Agent", &t.read, t.org_id, body.clone())
        .await
        .problem(403, "insufficient_scope");
    assert!(refused["detail"].as_str().unwrap().contains("write"));
    app.get("/api/v1/AuditLog", &t.read, t.org_id)
        .await
        .problem(403, "insufficient_scope");
    // write: changes, but not the audit log.
    let agent = app
        .post("/api/v1/Agent", &t.write, t.org_id, body.clone())
        .await
        .ok(201);
    let path = format!("/api/v1/Agent/{}", agent["id"].as_str().unwrap());
    app.put(&path, &t.read, t.org_id, body.clone())
        .await
        .problem(403, "insufficient_scope");
    app.delete(&path, &t.read, t.org_id)
        .await
        .problem(403, "insufficient_scope");
    app.put(&path, &t.write, t.org_id, body.clone())
        .await
        .ok(200);
    app.get("/api/v1/AuditLog", &t.write, t.org_id)
        .await
        .problem(403, "insufficient_scope");
    // admin: everything.
    app.get("/api/v1/AuditLog", &t.admin, t.org_id)
        .await
        .ok(200);
    app.delete(&path, &t.admin, t.org_id).await.ok(204);
}

#[tokio::test]
async fn the_checks_run_in_the_documented_order() {
    let app = spawn_app_on_manual_clock(Settings {
        auth_failure_limit: 1_000,
        ..Settings::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    let mut s = spec("crm-prod-expired", Scope::Read);
    s.expires_in = Some(Duration::from_millis(1));
    let (_, expired) = app.issue_spec(t.org_id, t.owner, s).await;
    app.clock.advance(Duration::from_millis(1));
    // A bad key wins over a bad org id; expiry wins over a missing org id.
    app.call(
        Method::GET,
        "/api/v1/Me",
        Some("garbage"),
        Some("not-a-uuid"),
        None,
    )
    .await
    .problem(401, "invalid_api_key");
    app.call(Method::GET, "/api/v1/Me", Some(&expired), None, None)
        .await
        .problem(401, "expired_api_key");
    // An org id problem wins over scope; scope wins over a missing resource.
    let other = uuid::Uuid::now_v7();
    app.get("/api/v1/AuditLog", &t.read, other)
        .await
        .problem(403, "org_access_denied");
    let missing = format!("/api/v1/Agent/{}", uuid::Uuid::now_v7());
    app.delete(&missing, &t.read, t.org_id)
        .await
        .problem(403, "insufficient_scope");
    app.delete(&missing, &t.write, t.org_id)
        .await
        .problem(404, "not_found");
}

#[tokio::test]
async fn an_unknown_path_under_the_api_is_authenticated_first_then_not_found() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    app.call(Method::GET, "/api/v1/Nothing", None, None, None)
        .await
        .problem(401, "missing_api_key");
    app.get("/api/v1/Nothing", &t.read, t.org_id)
        .await
        .problem(404, "not_found");
    app.get("/api/v1/Agent/not-a-uuid", &t.read, t.org_id)
        .await
        .problem(404, "not_found");
}

#[tokio::test]
async fn another_orgs_object_is_a_404_identical_to_one_that_never_existed() {
    let app = spawn_app().await;
    let a = app.tenant("Acme").await;
    let b = app.tenant("Globex").await;
    let theirs = app
        .created(&b, "/api/v1/Agent", json!({"name": "globex-bot"}))
        .await;
    let theirs = format!("/api/v1/Agent/{}", theirs["id"].as_str().unwrap());
    let never = format!("/api/v1/Agent/{}", uuid::Uuid::now_v7());
    let strip = |r: Reply| {
        let mut v = r.problem(404, "not_found");
        v.as_object_mut().unwrap().remove("requestId");
        (
            serde_json::to_vec(&v).unwrap(),
            r.bytes.len() - r.header("x-request-id").unwrap().len(),
        )
    };
    let body = json!({"name": "hijack"});
    for (x, y) in [
        (
            app.get(&theirs, &a.admin, a.org_id).await,
            app.get(&never, &a.admin, a.org_id).await,
        ),
        (
            app.put(&theirs, &a.admin, a.org_id, body.clone()).await,
            app.put(&never, &a.admin, a.org_id, body.clone()).await,
        ),
        (
            app.delete(&theirs, &a.admin, a.org_id).await,
            app.delete(&never, &a.admin, a.org_id).await,
        ),
    ] {
        assert_eq!(x.headers.len(), y.headers.len());
        assert_eq!(strip(x), strip(y));
    }
    // And the object is untouched.
    let still = app.get(&theirs, &b.read, b.org_id).await.ok(200);
    assert_eq!(still["name"], "globex-bot");
}

#[tokio::test]
async fn a_key_in_the_query_string_is_refused_in_any_spelling_and_redacted() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    for param in ["api_key", "apiKey", "X-API-KEY", "APIKEY"] {
        let path = format!("/api/v1/Me?{param}={}", t.read);
        let r = app.get(&path, &t.read, t.org_id).await;
        let body = r.problem(400, "credentials_in_url");
        assert!(!body.to_string().contains(&t.read));
    }
    // A key under any other name, or in the path, is refused just the same.
    for path in [
        format!("/api/v1/Me?token={}", t.read),
        format!("/api/v1/Agent/{}", t.read),
        format!("/api/v1/Agent?Search=x&{}=1", t.read),
        format!("/api/v1/Agent/{}", t.read.replace('_', "%5F")),
        // Encoded two and three times, and in other letter case.
        format!("/api/v1/Agent?Search={}", t.read.replace('_', "%255F")),
        format!("/api/v1/Agent/{}", t.read.replace('_', "%255F")),
        format!("/api/v1/Agent?Search={}", t.read.replace('_', "%25255F")),
        format!("/api/v1/Agent?Search={}", t.read.to_uppercase()),
        format!(
            "/api/v1/Agent/{}",
            t.read.to_uppercase().replace('_', "%255f")
        ),
    ] {
        let body = app
            .get(&path, &t.read, t.org_id)
            .await
            .problem(400, "credentials_in_url");
        assert!(!body.to_string().contains(&t.read));
    }
    // A key sent as a request id is not echoed back.
    let r = app
        .client
        .get(app.url("/api/v1/Nope"))
        .header("X-Request-Id", t.read.as_str())
        .send()
        .await
        .unwrap();
    let r = Reply::from(r).await;
    assert!(!r.text().contains(&t.read) && r.header("x-request-id") != Some(t.read.as_str()));
    // Nor is a key's body without its prefix.
    let body_only = &t.read[9..];
    let r = app
        .client
        .get(app.url("/api/v1/Nope"))
        .header("X-Request-Id", body_only)
        .send()
        .await
        .unwrap();
    let r = Reply::from(r).await;
    assert!(!r.text().contains(body_only));
    assert_ne!(r.header("x-request-id"), Some(body_only));
    // Nor is a key sent as a field name.
    let mut body = serde_json::Map::new();
    body.insert(t.write.clone(), json!(1));
    body.insert("name".into(), json!("a"));
    let r = app
        .post("/api/v1/Agent", &t.write, t.org_id, body.into())
        .await;
    r.problem(400, "validation_error");
    assert!(!r.text().contains(&t.write));
    // Even without headers and on paths outside the API.
    let r = app
        .call(
            Method::GET,
            &format!("/healthz?api_key={}", t.read),
            None,
            None,
            None,
        )
        .await;
    r.problem(400, "credentials_in_url");
}

#[tokio::test]
async fn resource_paths_and_parameter_names_match_in_any_case() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    app.created(&t, "/api/v1/agent", json!({"name": "a"})).await;
    app.created(&t, "/API/V1/AGENT", json!({"name": "b"})).await;
    let page = app
        .get("/api/v1/aGeNt?limit=1&OFFSET=1", &t.read, t.org_id)
        .await
        .ok(200);
    assert_eq!(page["items"][0]["name"], "b");
    assert_eq!(page["limit"], 1);
    app.get("/api/v1/me", &t.read, t.org_id).await.ok(200);
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_a_sane_one() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("X-Request-Id", "trace-abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-abc.123");
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("X-Request-Id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(!id.is_empty() && id != "bad id with spaces");
    // 1 to 64 characters of [A-Za-z0-9._:-], with no run of 40 or more base62 characters.
    let run_of_39 = format!("span-{}", "a".repeat(39));
    let run_of_40 = format!("span-{}", "a".repeat(40));
    let long = format!("{}-{}", "a".repeat(30), "b".repeat(34));
    for (sent, kept) in [
        ("0192f0c1-7b1e-7cc0-9b6a-3f5e2c1d4a10", true),
        ("trace:a.b_c-d", true),
        (run_of_39.as_str(), true),
        (run_of_40.as_str(), false),
        (long.as_str(), false),
        (&long[..64], true),
        ("a/b", false),
        ("a+b", false),
    ] {
        let r = app
            .client
            .get(app.url("/healthz"))
            .header("X-Request-Id", sent)
            .send()
            .await
            .unwrap();
        let got = r.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(got == sent, kept, "{sent}");
    }
    let r = app.client.get(app.url("/api/v1/Me")).send().await.unwrap();
    assert!(r.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn preflight_needs_no_key_and_only_listed_origins_are_allowed() {
    let settings = Settings {
        cors_origins: vec!["https://app.example".parse().unwrap()],
        ..Settings::default()
    };
    let app = spawn_app_with(settings).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, app.url("/api/v1/Agent"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "x-api-key, x-org-id, content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert_eq!(allowed.status(), 200);
    let h = allowed.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.split(',').any(|m| m == "POST"), "{methods}");
    let headers = h["access-control-allow-headers"].to_str().unwrap();
    for needed in ["x-api-key", "x-org-id", "content-type"] {
        assert!(headers.split(',').any(|x| x == needed), "{headers}");
    }
    // A page may read the request id and the rate-limit headers of its answers.
    let exposed = app
        .client
        .get(app.url("/readyz"))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    let exposed = exposed.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    for name in [
        "x-request-id",
        "ratelimit",
        "ratelimit-policy",
        "retry-after",
    ] {
        assert!(exposed.split(',').any(|x| x == name), "{exposed}");
    }
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(!refused
        .headers()
        .contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn health_readiness_and_metrics_answer_without_a_key() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready, json!({"status": "ready", "database": "ok"}));
    app.get("/api/v1/Me", &t.read, t.org_id).await.ok(200);
    app.get("/api/v1/Me", "sai_live_nope", t.org_id)
        .await
        .problem(401, "invalid_api_key");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("siesta_http_requests_total{route=\"/api/v1/Me\",status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("siesta_auth_failures_total{code=\"invalid_api_key\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("siesta_http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(!metrics.contains(&t.read));
}

#[tokio::test]
async fn a_method_a_path_does_not_take_is_refused_with_the_methods_it_does() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let org = t.org_id.to_string();
    let r = app
        .call(
            Method::DELETE,
            "/api/v1/Me",
            Some(&t.admin),
            Some(&org),
            None,
        )
        .await;
    r.problem(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET,HEAD"));
    assert!(r.header("ratelimit").is_some(), "an authenticated answer");
    let r = app
        .call(
            Method::PUT,
            "/api/v1/Agent",
            Some(&t.admin),
            Some(&org),
            None,
        )
        .await;
    r.problem(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET,HEAD,POST"));
    // Outside the API, with no key at all.
    let r = app.call(Method::POST, "/healthz", None, None, None).await;
    r.problem(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET,HEAD"));
}

/// A member of the tenant's organization with a `read` key of their own, limited to
/// `rate_limit` requests a minute.
async fn members_read_key(
    app: &TestApp,
    t: &Tenant,
    email: &str,
    rate_limit: u32,
) -> (Uuid, String) {
    let dev = app.create_user(email).await;
    app.add_member(t.org_id, dev, Role::Member).await;
    let mut s = spec(&format!("{}-prod-sync", &email[..3]), Scope::Read);
    s.rate_limit = Some(rate_limit);
    let (_, key) = app.issue_spec(t.org_id, dev, s).await;
    (dev, key)
}

/// Spends a key's whole burst of one request: the next is refused for its rate limit.
async fn spend_the_only_request(app: &TestApp, key: &str, org: Uuid) {
    app.get("/api/v1/Me", key, org).await.ok(200);
    app.get("/api/v1/Me", key, org)
        .await
        .problem(429, "rate_limited");
}

/// Rows 5 to 7 for `key`: no org id, a malformed one, another organization's, one of no
/// organization.
async fn org_rows_come_first(app: &TestApp, key: &str, other: Uuid) {
    let me = "/api/v1/Me";
    app.call(Method::GET, me, Some(key), None, None)
        .await
        .problem(401, "missing_org_id");
    app.call(Method::GET, me, Some(key), Some("acme"), None)
        .await
        .problem(403, "invalid_org_id");
    for org in [other, Uuid::now_v7()] {
        app.get(me, key, org)
            .await
            .problem(403, "org_access_denied");
    }
}

#[tokio::test]
async fn row_8_an_owner_who_left_comes_after_the_org_checks_and_before_scope_rate_and_resource() {
    // Waiting for the removal fails many requests from this address.
    let app = spawn_app_on_manual_clock(Settings {
        auth_failure_limit: 1_000,
        ..Settings::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    let other = app.tenant("Globex").await;
    let (dev, key) = members_read_key(&app, &t, "dev@acme.example", 1).await;
    spend_the_only_request(&app, &key, t.org_id).await;
    // A key of the same owner that is past its expiry as well.
    let mut s = spec("dev-prod-expiring", Scope::Read);
    s.expires_in = Some(Duration::from_secs(3600));
    let (_, expiring) = app.issue_spec(t.org_id, dev, s).await;

    // And one that is neither, to see when the removal has reached the server.
    let (_, witness) = app
        .issue(t.org_id, dev, "dev-prod-witness", Scope::Read)
        .await;
    let audit = siesta::store::AuditRecord::event(t.org_id, "member.removed", "cli");
    app.store.remove_member(t.org_id, dev, audit).await.unwrap();
    let seen = app
        .me_answers(Duration::from_secs(5), &witness, t.org_id, 403)
        .await;
    assert!(seen.is_some(), "the removal reaches the server");

    // Rows 4 to 7 come first: expiry, a missing, malformed or foreign org id.
    app.get("/api/v1/Me", &expiring, t.org_id)
        .await
        .problem(403, "key_owner_not_member");
    app.clock.advance(Duration::from_secs(3600));
    app.get("/api/v1/Me", &expiring, t.org_id)
        .await
        .problem(401, "expired_api_key");
    org_rows_come_first(&app, &key, other.org_id).await;
    let me = "/api/v1/Me";
    // Row 8 itself, over the key's rate limit (row 11) and for a missing resource (row 12).
    app.get(me, &key, t.org_id)
        .await
        .problem(403, "key_owner_not_member");
    let missing = format!("/api/v1/Agent/{}", Uuid::now_v7());
    app.get(&missing, &key, t.org_id)
        .await
        .problem(403, "key_owner_not_member");
    // And before scope (row 10): a read key asked to write, or for the audit log.
    app.post("/api/v1/Agent", &key, t.org_id, json!({"name": "a"}))
        .await
        .problem(403, "key_owner_not_member");
    app.get("/api/v1/AuditLog", &key, t.org_id)
        .await
        .problem(403, "key_owner_not_member");
}

#[tokio::test]
async fn row_11_a_key_over_its_rate_limit_comes_after_the_org_checks_and_scope_and_before_the_resource(
) {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let other = app.tenant("Globex").await;
    let (_, key) = members_read_key(&app, &t, "ops@acme.example", 1).await;
    spend_the_only_request(&app, &key, t.org_id).await;
    // Rows 5 to 7 come first.
    org_rows_come_first(&app, &key, other.org_id).await;
    // Row 10 comes first: an operation the key's scope does not allow.
    app.post("/api/v1/Agent", &key, t.org_id, json!({"name": "a"}))
        .await
        .problem(403, "insufficient_scope");
    app.get("/api/v1/AuditLog", &key, t.org_id)
        .await
        .problem(403, "insufficient_scope");
    app.get("/api/v1/ApiKey", &key, t.org_id)
        .await
        .problem(403, "insufficient_scope");
    // Row 12 comes after: a missing resource, or a path that names nothing, is not looked
    // up for a key over its limit.
    for path in [
        format!("/api/v1/Agent/{}", Uuid::now_v7()),
        format!("/api/v1/Task/{}", Uuid::now_v7()),
        "/api/v1/Nothing".to_owned(),
    ] {
        let r = app.get(&path, &key, t.org_id).await;
        r.problem(429, "rate_limited");
        assert!(r.header("retry-after").is_some(), "{path}");
    }
}

/// The `r` and `t` of a `RateLimit` field of the `api-key` policy.
#[track_caller]
fn rate_limit_field(r: &Reply) -> (u64, u64) {
    let field = r.header("ratelimit").expect("a RateLimit header");
    let params = field
        .strip_prefix("\"api-key\";")
        .unwrap_or_else(|| panic!("the api-key policy: {field}"));
    let mut r_and_t = params.split(';').map(|p| p.split_once('=').unwrap());
    let (rn, rv) = r_and_t.next().unwrap();
    let (tn, tv) = r_and_t.next().unwrap();
    assert_eq!((rn, tn, r_and_t.next()), ("r", "t", None), "{field}");
    (rv.parse().unwrap(), tv.parse().unwrap())
}

#[tokio::test]
async fn the_ratelimit_header_says_requests_left_and_seconds_until_the_burst_is_full() {
    let app = spawn_app_on_manual_clock(Settings::default()).await;
    let t = app.tenant("Acme").await;
    // 3 a minute: a burst of 3, and one more every 20 s. Each request spends 20 s of the
    // bucket, so after k requests made at once it is full again in 20 k seconds.
    let mut s = spec("crm-prod-slow", Scope::Read);
    s.rate_limit = Some(3);
    let (_, key) = app.issue_spec(t.org_id, t.owner, s).await;
    for k in 1..=3u64 {
        let r = app.get("/api/v1/Me", &key, t.org_id).await;
        r.ok(200);
        assert_eq!(r.header("ratelimit-policy"), Some("\"api-key\";q=3;w=60"));
        assert_eq!(rate_limit_field(&r), (3 - k, 20 * k), "request {k}");
    }
    // The fourth is refused: nothing left, full in 60 s, the next one passes in 20 s.
    let refused = app.get("/api/v1/Me", &key, t.org_id).await;
    refused.problem(429, "rate_limited");
    assert_eq!(rate_limit_field(&refused), (0, 60));
    assert_eq!(refused.header("retry-after"), Some("20"));
    // `t` counts whole seconds, rounded up: 500 ms later it is still 60, then 59.
    app.clock.advance(Duration::from_millis(500));
    let r = app.get("/api/v1/Me", &key, t.org_id).await;
    assert_eq!(rate_limit_field(&r), (0, 60));
    assert_eq!(r.header("retry-after"), Some("20"));
    app.clock.advance(Duration::from_millis(500));
    let r = app.get("/api/v1/Me", &key, t.org_id).await;
    assert_eq!(rate_limit_field(&r), (0, 59));
    assert_eq!(r.header("retry-after"), Some("19"));

    // With the server's default of 600 a minute, one request leaves 599, full in 1 s.
    let r = app.get("/api/v1/Me", &t.read, t.org_id).await;
    assert_eq!(r.header("ratelimit-policy"), Some("\"api-key\";q=600;w=60"));
    assert_eq!(r.header("ratelimit"), Some("\"api-key\";r=599;t=1"));
}
