use std::time::Duration;

use siesta::key::{ApiKey, Environment, Scope};
use siesta::Settings;

use crate::helpers::*;

#[tokio::test]
async fn a_burst_of_n_passes_then_429_with_retry_after_and_ratelimit_headers() {
    let app = spawn_app_on_manual_clock(Settings {
        auth_failure_limit: 3,
        ..Settings::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    let mut s = spec("crm-prod-sync", Scope::Read);
    s.rate_limit = Some(5);
    let (_, key) = app.issue_spec(t.org_id, t.owner, s).await;
    // One request every 12 s, five at once: after n requests the bucket is full again in
    // 12·n s.
    for spent in 1..=5 {
        let r = app.get("/api/v1/Me", &key, t.org_id).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("ratelimit-policy"), Some("\"api-key\";q=5;w=60"));
        assert_eq!(
            r.header("ratelimit"),
            Some(format!("\"api-key\";r={};t={}", 5 - spent, 12 * spent).as_str())
        );
    }
    let r = app.get("/api/v1/Me", &key, t.org_id).await;
    r.problem(429, "rate_limited");
    assert_eq!(r.header("retry-after"), Some("12"));
    assert_eq!(r.header("ratelimit-policy"), Some("\"api-key\";q=5;w=60"));
    assert_eq!(r.header("ratelimit"), Some("\"api-key\";r=0;t=60"));
    // A millisecond short of the retry time is still too early; at it, one request passes.
    app.clock.advance(Duration::from_millis(11_999));
    let r = app.get("/api/v1/Me", &key, t.org_id).await;
    r.problem(429, "rate_limited");
    assert_eq!(r.header("retry-after"), Some("1"));
    app.clock.advance(Duration::from_millis(1));
    let r = app.get("/api/v1/Me", &key, t.org_id).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit"), Some("\"api-key\";r=0;t=60"));
    app.get("/api/v1/Me", &key, t.org_id)
        .await
        .problem(429, "rate_limited");
    // Refusals are not audited (each would be a write); the metric counts them.
    let metrics = app.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "siesta_rate_limited_total{limit=\"key\"} 3"),
        "{metrics}"
    );
    // Other keys are not affected.
    app.get("/api/v1/Me", &t.read, t.org_id).await.ok(200);
    // The address goes over its failure limit: a key the server does not hold is refused.
    for _ in 0..3 {
        let garbage = ApiKey::generate(Environment::Live);
        app.get("/api/v1/Me", garbage.reveal(), t.org_id)
            .await
            .problem(401, "invalid_api_key");
    }
    let garbage = ApiKey::generate(Environment::Live);
    app.get("/api/v1/Me", garbage.reveal(), t.org_id)
        .await
        .problem(429, "rate_limited");
    // Even after a change elsewhere empties the cache, the working key is not locked out:
    // it is answered 200 until it has been looked up again, and after.
    let before = app.key_lookups().await;
    let dev = app.create_user("dev@acme.example").await;
    app.add_member(t.org_id, dev, siesta::store::Role::Member)
        .await;
    let audit = siesta::store::AuditRecord::event(t.org_id, "member.removed", "cli");
    app.store.remove_member(t.org_id, dev, audit).await.unwrap();
    let looked_up_again = eventually(Duration::from_secs(5), || async {
        app.get("/api/v1/Me", &t.read, t.org_id).await.ok(200);
        app.key_lookups().await > before
    })
    .await;
    assert!(looked_up_again.is_some(), "the change emptied the cache");
    app.get("/api/v1/Me", &t.read, t.org_id).await.ok(200);
}

#[tokio::test]
async fn a_client_at_its_steady_rate_is_never_refused_after_a_full_burst() {
    let app = spawn_app_on_manual_clock(Settings::default()).await;
    let t = app.tenant("Acme").await;
    let mut s = spec("crm-prod-steady", Scope::Read);
    s.rate_limit = Some(600); // one every 100 ms, burst 600
    let (_, key) = app.issue_spec(t.org_id, t.owner, s).await;
    for i in 0..600 {
        let r = app.get("/api/v1/Me", &key, t.org_id).await;
        assert_eq!(r.status, 200, "request {i} of the burst");
    }
    app.get("/api/v1/Me", &key, t.org_id)
        .await
        .problem(429, "rate_limited");
    // From empty, a request every 100 ms passes, and one more in between does not.
    for i in 0..15 {
        app.clock.advance(Duration::from_millis(100));
        let r = app.get("/api/v1/Me", &key, t.org_id).await;
        assert_eq!(r.status, 200, "request {i} at the steady rate was refused");
        app.get("/api/v1/Me", &key, t.org_id)
            .await
            .problem(429, "rate_limited");
    }
}

#[tokio::test]
async fn an_address_over_its_failure_limit_is_refused_without_a_lookup_but_verified_keys_go_on() {
    let app = spawn_app_with(Settings {
        auth_failure_limit: 5,
        ..Settings::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    app.get("/api/v1/Me", &t.read, t.org_id).await.ok(200); // now held as verified
    let lookups = || app.key_lookups();
    for _ in 0..5 {
        let garbage = ApiKey::generate(Environment::Live);
        app.get("/api/v1/Me", garbage.reveal(), t.org_id)
            .await
            .problem(401, "invalid_api_key");
    }
    let before = lookups().await;
    let garbage = ApiKey::generate(Environment::Live);
    let r = app.get("/api/v1/Me", garbage.reveal(), t.org_id).await;
    r.problem(429, "rate_limited");
    assert_eq!(lookups().await, before, "refused without a database lookup");
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    app.call(reqwest::Method::GET, "/api/v1/Me", None, None, None)
        .await
        .problem(429, "rate_limited");
    // A key that is not yet verified waits too; the verified one goes on.
    app.get("/api/v1/Me", &t.write, t.org_id)
        .await
        .problem(429, "rate_limited");
    app.get("/api/v1/Me", &t.read, t.org_id).await.ok(200);
    // Even after a change elsewhere empties the cache, the working key is not locked out.
    let dev = app.create_user("dev@acme.example").await;
    app.add_member(t.org_id, dev, siesta::store::Role::Member)
        .await;
    let audit = siesta::store::AuditRecord::event(t.org_id, "member.removed", "cli");
    let before = lookups().await;
    app.store.remove_member(t.org_id, dev, audit).await.unwrap();
    let looked_up_again = eventually(Duration::from_secs(5), || async {
        app.get("/api/v1/Me", &t.read, t.org_id).await.ok(200);
        lookups().await > before
    })
    .await;
    assert!(looked_up_again.is_some(), "the change emptied the cache");
    app.get("/api/v1/Me", &t.read, t.org_id).await.ok(200);
}

/// `n` failed authentications from `client` (as a proxy names it); what the last one got.
async fn failures(app: &TestApp, org: uuid::Uuid, client: &str, n: usize) -> u16 {
    let org = org.to_string();
    let mut last = 0;
    for _ in 0..n {
        let garbage = ApiKey::generate(Environment::Live);
        let r = app
            .client
            .get(app.url("/api/v1/Me"))
            .header("X-Api-Key", garbage.reveal())
            .header("X-Org-Id", &org)
            .header("X-Forwarded-For", format!("198.51.100.9, {client}"))
            .send()
            .await
            .unwrap();
        last = r.status().as_u16();
    }
    last
}

/// A server behind a trusted proxy on loopback, allowing 3 failures a minute, and a tenant.
async fn behind_a_trusted_proxy_with_a_failure_limit_of_3() -> (TestApp, Tenant) {
    let app = spawn_app_with(Settings {
        auth_failure_limit: 3,
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..Settings::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    (app, t)
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_address_has_its_own_failure_limit() {
    let (app, t) = behind_a_trusted_proxy_with_a_failure_limit_of_3().await;
    assert_eq!(failures(&app, t.org_id, "203.0.113.7", 4).await, 429);
    // Another client behind the same proxy is not held back, and the address the client
    // wrote itself (on the left) is not believed.
    assert_eq!(failures(&app, t.org_id, "203.0.113.8:51000", 1).await, 401);
}

#[tokio::test]
async fn without_trusted_proxies_x_forwarded_for_is_ignored() {
    let app = spawn_app_with(Settings {
        auth_failure_limit: 3,
        ..Settings::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    assert_eq!(failures(&app, t.org_id, "203.0.113.7", 4).await, 429);
    assert_eq!(failures(&app, t.org_id, "203.0.113.8", 1).await, 429);
}

#[tokio::test]
async fn ipv6_clients_share_the_failure_limit_of_their_64_and_mapped_ipv4_is_ipv4() {
    let (app, t) = behind_a_trusted_proxy_with_a_failure_limit_of_3().await;
    // Four addresses of one /64, one failure each: the fourth is over the limit.
    for (i, client) in ["2001:db8::1", "2001:db8::2", "2001:db8::ffff:3"]
        .iter()
        .enumerate()
    {
        assert_eq!(
            failures(&app, t.org_id, client, 1).await,
            401,
            "failure {i}"
        );
    }
    assert_eq!(failures(&app, t.org_id, "2001:db8::4", 1).await, 429);
    assert_eq!(failures(&app, t.org_id, "[2001:db8::5]:443", 1).await, 429);
    // The next /64 is another client.
    assert_eq!(failures(&app, t.org_id, "2001:db8:0:1::1", 1).await, 401);
    // An IPv4-mapped address counts as its IPv4 address.
    assert_eq!(failures(&app, t.org_id, "203.0.113.9", 3).await, 401);
    assert_eq!(failures(&app, t.org_id, "::ffff:203.0.113.9", 1).await, 429);
}
