use crate::helpers::*;

async fn page(app: &TestApp, path: &str) -> (u16, String, String, String) {
    let r = app.client.get(app.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    let header = |n: &str| {
        r.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (ct, csp) = (header("content-type"), header("content-security-policy"));
    (status, ct, csp, r.text().await.unwrap())
}

#[tokio::test]
async fn the_reference_is_served_from_this_server_only_with_both_credential_inputs() {
    let app = spawn_app().await;
    let (status, ct, csp, html) = page(&app, "/docs").await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/html"));
    assert!(
        csp.contains("default-src 'none'")
            && csp.contains("script-src 'self'")
            && csp.contains("connect-src 'self'")
    );
    assert!(html.contains(r#"<label for="api-key">X-Api-Key</label>"#));
    assert!(html.contains(r#"<input id="api-key" type="password""#));
    assert!(html.contains(r#"<label for="org-id">X-Org-Id</label>"#));
    assert!(html.contains("Clear credentials"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing loaded from elsewhere"
    );
    let (status, ct, _, js) = page(&app, "/docs/app.js").await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/javascript"));
    assert!(
        js.contains("sessionStorage")
            && !js.contains("localStorage")
            && !js.contains("document.cookie")
    );
    assert!(js.contains("$SIESTA_API_KEY") && js.contains("$SIESTA_ORG_ID"));
}

#[tokio::test]
async fn the_guides_and_the_error_pages_problem_types_point_to_exist() {
    let app = spawn_app().await;
    for guide in ["getting-started", "authentication", "errors", "clients"] {
        let (status, _, csp, html) = page(&app, &format!("/docs/guides/{guide}")).await;
        assert_eq!(status, 200, "{guide}");
        assert!(!csp.is_empty() && html.contains("<h2>"));
    }
    let (status, _, _, html) = page(&app, "/docs/errors").await;
    assert_eq!(status, 200);
    for code in [
        "invalid_api_key",
        "org_access_denied",
        "rate_limited",
        "credentials_in_url",
        "provider_timeout",
    ] {
        assert!(html.contains(&format!(r#"id="{code}""#)), "{code}");
    }
    assert_eq!(page(&app, "/docs/guides/nope").await.0, 404);
}
