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
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .expect("the server closed the connection");
    // Every byte sent was read, so the close is a clean end of stream, not a reset.
    read.expect("closed cleanly");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "not before the timeout"
    );
    // Nothing is answered but, at most, a 408: the request was never complete.
    let answer = String::from_utf8_lossy(&buf);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408 "),
        "{answer}"
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

/// Sends a request head of `size` bytes that never ends (no blank line) while reading
/// whatever the server answers until it closes: the bytes read before the end.
async fn answer_to_a_head_of(app: &TestApp, size: usize) -> String {
    let (mut rd, mut wr) = TcpStream::connect(app.addr).await.unwrap().into_split();
    let mut head = b"GET /api/v1/Me HTTP/1.1\r\nHost: x\r\nX-Padding: ".to_vec();
    head.resize(size, b'x');
    // The server may stop reading (and close) before all of it is written.
    let writer = tokio::spawn(async move { wr.write_all(&head).await });
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "answered and closed at once, not at a timeout"
    );
    let _ = writer.await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn an_oversized_request_head_is_refused_with_431_before_authentication() {
    let app = spawn_app().await;
    // A head is at most 64 KiB: one that has not ended by then is refused, whatever it
    // would have said, with 431 and not with an authentication error.
    for size in [64 * 1024, 100 * 1024] {
        let answer = answer_to_a_head_of(&app, size).await;
        assert!(
            answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{size} bytes: {answer:?}"
        );
        assert!(
            answer.to_lowercase().contains("\r\nconnection: close\r\n"),
            "{answer:?}"
        );
        assert!(!answer.contains("missing_api_key"), "{answer:?}");
    }
    // The server is unharmed, and a head just under the limit is served as any other.
    let t = app.tenant("Acme").await;
    let r = app
        .client
        .get(app.url("/api/v1/Me"))
        .header("X-Api-Key", &t.read)
        .header("X-Org-Id", t.org_id.to_string())
        .header("X-Padding", "x".repeat(60 * 1024))
        .send()
        .await
        .unwrap();
    Reply::from(r).await.ok(200);
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
