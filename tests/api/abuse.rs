use std::time::{Duration, Instant};

use siesta::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

fn short_timeouts() -> Settings {
    Settings {
        header_read_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        ..Settings::default()
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let app = spawn_app_with(short_timeouts()).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server closed the connection");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "not before the timeout"
    );
}

/// Sends a raw request head (and whatever follows it) and reads the first answer, which
/// must come within 5 s.
async fn first_answer(app: &TestApp, request: &str) -> String {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("answered in time")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn a_client_that_stalls_its_body_gets_an_answer_when_the_request_times_out() {
    let app = spawn_app_with(short_timeouts()).await;
    let t = app.tenant("Acme").await;
    let head = format!(
        "POST /api/v1/Agent HTTP/1.1\r\nHost: x\r\nX-Api-Key: {}\r\nX-Org-Id: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":",
        t.write, t.org_id
    );
    let answer = first_answer(&app, &head).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("service_unavailable"), "{answer}");
}

#[tokio::test]
async fn an_oversized_request_head_is_refused_before_authentication() {
    let app = spawn_app().await;
    let big = "x".repeat(100 * 1024);
    let r = app
        .client
        .get(app.url("/api/v1/Me"))
        .header("X-Padding", big)
        .send()
        .await;
    match r {
        Ok(r) => assert_eq!(r.status(), 431),
        Err(e) => assert!(e.is_request() || e.is_connect() || e.is_body(), "{e}"),
    }
    // The server is unharmed.
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_json_body_declared_too_large_is_refused_before_100_continue() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let head = format!(
        "POST /api/v1/Agent HTTP/1.1\r\nHost: x\r\nX-Api-Key: {}\r\nX-Org-Id: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000000000\r\n\
         Expect: 100-continue\r\n\r\n",
        t.write, t.org_id
    );
    let answer = first_answer(&app, &head).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
}

/// A realtime session asked for with a forged `Host` and forwarding headers: the URL it
/// hands out.
async fn websocket_url_asked_as(app: &TestApp, host: &str) -> (String, String) {
    let t = app.tenant("Acme").await;
    let agent = app
        .created(&t, "/api/v1/Agent", serde_json::json!({"name": "a"}))
        .await;
    let path = format!(
        "/api/v1/Agent/{}/realtime-session",
        agent["id"].as_str().unwrap()
    );
    let r = app
        .client
        .post(app.url(&path))
        .header("X-Api-Key", &t.write)
        .header("X-Org-Id", t.org_id.to_string())
        .header("Host", host)
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", host)
        .send()
        .await
        .unwrap();
    let session = Reply::from(r).await.ok(201);
    (
        session["websocketUrl"].as_str().unwrap().to_owned(),
        session["sessionId"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn absolute_urls_come_from_the_public_url_never_from_host_or_forwarding_headers() {
    let app = spawn_app().await;
    let (url, id) = websocket_url_asked_as(&app, "evil.example").await;
    assert_eq!(url, format!("ws://{}/realtime/{id}", app.addr));

    // With --public-url, that is the address handed out, whatever the request says.
    let app = spawn_app_with(Settings {
        public_url: Some("https://api.example.com/".into()),
        ..Settings::default()
    })
    .await;
    let (url, id) = websocket_url_asked_as(&app, "evil.example").await;
    assert_eq!(url, format!("wss://api.example.com/realtime/{id}"));
}

#[tokio::test]
async fn an_upload_declared_too_large_is_refused_before_100_continue() {
    let app = spawn_app_with(Settings {
        max_file_bytes: 1024,
        ..Settings::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    let head = format!(
        "POST /api/v1/File HTTP/1.1\r\nHost: x\r\nX-Api-Key: {}\r\nX-Org-Id: {}\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000000000\r\n\
         Expect: 100-continue\r\n\r\n",
        t.write, t.org_id
    );
    let answer = first_answer(&app, &head).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
}
