//! The protocol level: a request head that arrives a few bytes at a time, several requests
//! on one HTTP/1.1 connection, and HTTP/2 with prior knowledge over cleartext (h2c).

use std::time::{Duration, Instant};

use axum::http::{Request, Version};
use serde_json::Value;
use siesta::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::helpers::*;

/// A server whose header-read timeout is `timeout`, and a tenant.
async fn app_with_header_timeout(timeout: Duration) -> (TestApp, Tenant) {
    let app = spawn_app_with(Settings {
        header_read_timeout: timeout,
        ..Settings::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    (app, t)
}

/// `GET /api/v1/Me` as an HTTP/1.1 request head, keeping the connection open.
fn me_head(key: &str, org: Uuid) -> String {
    format!("GET /api/v1/Me HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\nX-Org-Id: {org}\r\n\r\n")
}

/// One HTTP/1.1 answer: its status line, its head in lower case, and its body.
struct Answer {
    status_line: String,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// Reads one answer with a `Content-Length` body from `stream`, keeping in `pending` what
/// arrives after it; `None` if the connection ends (or fails) first. At most 5 s.
async fn read_answer(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<Answer> {
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&pending[..end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .expect("a Content-Length")
                    .trim()
                    .parse()
                    .unwrap();
                if pending.len() >= end + 4 + length {
                    let body = pending[end + 4..end + 4 + length].to_vec();
                    pending.drain(..end + 4 + length);
                    let status_line = head.lines().next().unwrap_or("").to_owned();
                    return Some(Answer {
                        status_line,
                        head,
                        body,
                    });
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("an answer or the end of the connection within 5 s")
}

/// Writes `bytes` in `pieces`, `gap` apart, as long as the connection takes them.
async fn trickle(stream: &mut TcpStream, bytes: &[u8], pieces: usize, gap: Duration) {
    for piece in bytes.chunks(bytes.len().div_ceil(pieces)) {
        if stream.write_all(piece).await.is_err() {
            return;
        }
        tokio::time::sleep(gap).await;
    }
}

#[tokio::test]
async fn a_request_head_trickled_in_within_the_header_read_timeout_is_answered() {
    let timeout = Duration::from_secs(3);
    let (app, t) = app_with_header_timeout(timeout).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();
    // Twelve pieces 125 ms apart: the head takes about 1.5 s, half the timeout.
    let head = me_head(&t.read, t.org_id);
    trickle(&mut stream, head.as_bytes(), 12, Duration::from_millis(125)).await;
    let answer = read_answer(&mut stream, &mut Vec::new())
        .await
        .expect("a slow head that ends in time is answered");
    assert!(
        started.elapsed() >= Duration::from_millis(1_300),
        "the head really was slow"
    );
    assert_eq!(answer.status_line, "http/1.1 200 ok");
    assert_eq!(answer.json()["orgId"], t.org_id.to_string());
}

#[tokio::test]
async fn a_request_head_that_keeps_trickling_past_the_header_read_timeout_is_closed() {
    let timeout = Duration::from_secs(1);
    let (app, _) = app_with_header_timeout(timeout).await;
    let (mut rd, mut wr) = TcpStream::connect(app.addr).await.unwrap().into_split();
    let started = Instant::now();
    // A byte every 100 ms, for up to 10 s: the client is never silent for long, but its
    // head never ends. The timeout counts the whole head, not the pauses between bytes.
    let writer = tokio::spawn(async move {
        wr.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        for _ in 0..100 {
            if wr.write_all(b"a").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            // The server closes with bytes of ours unread: an end of stream or a reset.
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let after = started.elapsed();
    writer.abort();
    assert!(
        closed.is_ok(),
        "a head still arriving 5 s after the connection opened was not closed"
    );
    assert!(
        after >= timeout - Duration::from_millis(100),
        "not before the timeout: {after:?}"
    );
    assert!(after < timeout * 3, "soon after the timeout: {after:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408 "),
        "nothing but a 408: {answer}"
    );
}

#[tokio::test]
async fn a_keep_alive_connection_answers_each_request_on_the_same_socket() {
    let timeout = Duration::from_secs(1);
    let (app, t) = app_with_header_timeout(timeout).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let mut pending = Vec::new();
    // Three requests on one socket, each well within the header-read timeout of the answer
    // before it, the last one past the timeout counted from the connection's start.
    let started = Instant::now();
    for i in 0..3 {
        stream
            .write_all(me_head(&t.read, t.org_id).as_bytes())
            .await
            .unwrap();
        let answer = read_answer(&mut stream, &mut pending)
            .await
            .unwrap_or_else(|| panic!("request {i} answered on the same connection"));
        assert_eq!(answer.status_line, "http/1.1 200 ok", "request {i}");
        assert_eq!(answer.json()["orgId"], t.org_id.to_string());
        assert!(
            !answer.head.contains("\r\nconnection: close"),
            "request {i}: {}",
            answer.head
        );
        if i < 2 {
            tokio::time::sleep(timeout * 3 / 5).await;
        }
    }
    assert!(started.elapsed() > timeout);
    assert!(pending.is_empty(), "nothing more was sent");
    // A pipelined pair: both answers, in order, on the same socket.
    let two = format!(
        "{}GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        me_head(&t.read, t.org_id)
    );
    stream.write_all(two.as_bytes()).await.unwrap();
    let first = read_answer(&mut stream, &mut pending).await.unwrap();
    assert_eq!(first.json()["orgId"], t.org_id.to_string());
    let second = read_answer(&mut stream, &mut pending).await.unwrap();
    assert_eq!(second.status_line, "http/1.1 200 ok");
    assert_eq!(second.body, b"ok", "the health answer");
}

/// Sends one request over an HTTP/2 connection and reads the whole answer.
async fn h2_request(
    client: &mut h2::client::SendRequest<axum::body::Bytes>,
    request: Request<()>,
) -> (axum::http::response::Parts, Vec<u8>) {
    let ready = client
        .clone()
        .ready()
        .await
        .expect("the connection takes a stream");
    *client = ready;
    let (response, _) = client.send_request(request, true).expect("sent");
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("answered within 5 s")
        .expect("an answer");
    let (parts, mut body) = response.into_parts();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the body");
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    (parts, bytes)
}

#[tokio::test]
async fn http2_with_prior_knowledge_over_cleartext_is_served_health_and_the_api() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp)
        .await
        .expect("the server accepts the HTTP/2 preface");
    let driver = tokio::spawn(connection);

    let healthz = Request::get(format!("http://{}/healthz", app.addr))
        .body(())
        .unwrap();
    let (parts, _) = h2_request(&mut client, healthz).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.version, Version::HTTP_2);

    // On the same connection, an authenticated request with the two headers.
    let me = Request::get(format!("http://{}/api/v1/Me", app.addr))
        .header("x-api-key", &t.read)
        .header("x-org-id", t.org_id.to_string())
        .body(())
        .unwrap();
    let (parts, body) = h2_request(&mut client, me).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    let me: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(me["orgId"], t.org_id.to_string());
    assert_eq!(me["scope"], "read");
    assert!(parts.headers.contains_key("ratelimit"));

    // And refusals are the same problem documents as over HTTP/1.1.
    let refused = Request::get(format!("http://{}/api/v1/Me", app.addr))
        .header("x-org-id", t.org_id.to_string())
        .body(())
        .unwrap();
    let (parts, body) = h2_request(&mut client, refused).await;
    assert_eq!(parts.status, 401);
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["code"], "missing_api_key");
    drop(client);
    driver.abort();
}
