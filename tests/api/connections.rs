//! Connections that hold a socket without asking for anything: closed within the
//! header-read timeout whatever protocol they might speak, capped in number, and HTTP/2
//! connections pinged and closed when idle.

use std::time::{Duration, Instant};

use serde_json::json;
use siesta::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 frame: a 9-byte header and its payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const SETTINGS: u8 = 0x4;
const HEADERS: u8 = 0x1;
const PING: u8 = 0x6;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// `GET /healthz` as an HPACK block: indexed `:method GET` and `:scheme http`, then
/// `:authority` and `:path` as literals.
fn healthz_headers() -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x41, 0x01, b'x', 0x44, 0x08];
    block.extend_from_slice(b"/healthz");
    block
}

/// Reads one frame: its type, flags and payload; `None` once the connection is closed.
async fn read_frame(stream: &mut TcpStream) -> Option<(u8, u8, Vec<u8>)> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.ok()?;
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], payload))
}

/// Opens an HTTP/2 connection (prior knowledge, no TLS), asks `GET /healthz`, and reads
/// until the answer's headers arrive, acknowledging the server's settings.
async fn http2_request(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    stream
        .write_all(&frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            1,
            &healthz_headers(),
        ))
        .await
        .unwrap();
    loop {
        let (kind, flags, _) = read_frame(&mut stream).await.expect("an answer");
        if kind == SETTINGS && flags == 0 {
            stream.write_all(&frame(SETTINGS, 1, 0, &[])).await.unwrap();
        }
        if kind == HEADERS {
            return stream;
        }
    }
}

/// True when the peer has closed the connection (end of stream or reset) within `within`;
/// anything the server sends before closing (an HTTP/2 GOAWAY) is read and dropped.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut sink))
        .await
        .is_ok()
}

/// A server with this header-read timeout, and a tenant.
async fn app_with_header_timeout(timeout: Duration) -> (TestApp, Tenant) {
    let app = spawn_app_with(Settings {
        header_read_timeout: timeout,
        ..Settings::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    (app, t)
}

#[tokio::test]
async fn connections_that_never_deliver_a_request_head_are_closed_within_the_header_timeout() {
    let timeout = Duration::from_secs(1);
    let (app, t) = app_with_header_timeout(timeout).await;
    let mut half_headers = PREFACE.to_vec();
    half_headers.extend(frame(SETTINGS, 0, 0, &[]));
    // HEADERS without END_HEADERS: the head is never complete.
    half_headers.extend(frame(HEADERS, END_STREAM, 1, &healthz_headers()));
    let openings: Vec<(&str, Vec<u8>)> = vec![
        ("nothing", Vec::new()),
        ("half an HTTP/2 preface", PREFACE[..10].to_vec()),
        ("the whole HTTP/2 preface", PREFACE.to_vec()),
        ("HTTP/2 headers without their end", half_headers),
        (
            "part of an HTTP/1 head",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec(),
        ),
    ];
    let started = Instant::now();
    let mut sockets = Vec::new();
    for (what, bytes) in &openings {
        for _ in 0..20 {
            let mut s = TcpStream::connect(app.addr).await.unwrap();
            if !bytes.is_empty() {
                s.write_all(bytes).await.unwrap();
            }
            sockets.push((*what, s));
        }
    }
    // While they wait, everybody else is served.
    for _ in 0..5 {
        app.get("/api/v1/Me", &t.read, t.org_id).await.ok(200);
    }
    let (_, first) = &mut sockets[0];
    assert!(
        !closed_within(first, timeout - Duration::from_millis(300)).await,
        "a connection is given the header-read timeout before it is closed"
    );
    for (what, socket) in &mut sockets {
        let left = (timeout + Duration::from_secs(1)).saturating_sub(started.elapsed());
        assert!(
            closed_within(socket, left).await,
            "a connection that sent {what} is closed within the header timeout + 1 s"
        );
    }
    app.get("/api/v1/Me", &t.read, t.org_id).await.ok(200);
}

#[tokio::test]
async fn beyond_max_connections_a_connection_is_answered_503_and_closed() {
    let app = spawn_app_with(Settings {
        max_connections: Some(3),
        ..Settings::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    let mut extra = TcpStream::connect(app.addr).await.unwrap();
    extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut answer))
        .await
        .expect("answered and closed at once")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 503"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(
        answer.contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert!(answer.contains("x-request-id: "), "{answer}");
    let body: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["code"], "service_unavailable");
    assert_eq!(body["status"], 503);

    // Once the held connections go, the server is as it was.
    drop(held);
    let back = eventually(Duration::from_secs(5), || async {
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(back.is_some(), "connections are accepted again");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("siesta_connections_refused_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_http2_connection_with_no_open_stream_is_closed_when_idle() {
    let app = spawn_app_with(Settings {
        http2_idle_timeout: Duration::from_secs(1),
        http2_keep_alive: Duration::from_secs(3600),
        ..Settings::default()
    })
    .await;
    let mut stream = http2_request(app.addr).await;
    let answered = Instant::now();
    assert!(!closed_within(&mut stream, Duration::from_millis(700)).await);
    assert!(
        closed_within(&mut stream, Duration::from_secs(2)).await,
        "closed after the idle timeout"
    );
    assert!(answered.elapsed() < Duration::from_millis(2500));
}

#[tokio::test]
async fn an_http2_connection_is_pinged_and_closed_when_the_ping_goes_unanswered() {
    let keep_alive = Duration::from_millis(500);
    let app = spawn_app_with(Settings {
        http2_keep_alive: keep_alive,
        ..Settings::default()
    })
    .await;
    let mut stream = http2_request(app.addr).await;
    let started = Instant::now();
    let pinged = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match read_frame(&mut stream).await {
                Some((PING, 0, _)) => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await;
    assert_eq!(pinged, Ok(true), "a PING arrives");
    assert!(
        closed_within(&mut stream, Duration::from_secs(3)).await,
        "an unanswered ping ends the connection"
    );
    assert!(started.elapsed() >= keep_alive);
}

/// A realtime session for a new agent of the tenant, created over connections that are
/// closed again at once (so none holds a place under the connection cap for long). Each
/// request is retried until its connection is let in.
async fn session_over_brief_connections(app: &TestApp, t: &Tenant) -> serde_json::Value {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let created = |path: String, body: serde_json::Value| {
        let client = client.clone();
        async move {
            for _ in 0..100 {
                let sent = client
                    .post(app.url(&path))
                    .header("X-Api-Key", &t.write)
                    .header("X-Org-Id", t.org_id.to_string())
                    .json(&body)
                    .send()
                    .await;
                if let Ok(r) = sent {
                    if r.status() == 201 {
                        return Reply::from(r).await.json();
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("POST {path} was never let in");
        }
    };
    let agent = created("/api/v1/Agent".into(), json!({"name": "bot"})).await;
    let path = format!(
        "/api/v1/Agent/{}/realtime-session",
        agent["id"].as_str().unwrap()
    );
    created(path, json!({})).await
}

/// The status line of `GET /healthz` on a fresh connection.
async fn healthz_status(app: &TestApp) -> String {
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn an_open_realtime_socket_keeps_its_place_under_the_connection_cap() {
    let app = spawn_app_with(Settings {
        max_connections: Some(1),
        ..Settings::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    let session = session_over_brief_connections(&app, &t).await;
    let mut opened = None;
    for _ in 0..100 {
        // Until the connection that created the session is gone, the cap is reached.
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(socket_url(&session)).await {
            opened = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ws = opened.expect("the socket is let in");
    assert!(healthz_status(&app).await.starts_with("HTTP/1.1 503"));
    let (_, done) = say(&mut ws, "Hello").await;
    assert_eq!(done["type"], "done", "the socket itself is served");
    ws.close(None).await.unwrap();
    drop(ws);
    let freed = eventually(Duration::from_secs(5), || async {
        healthz_status(&app).await.starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(freed.is_some(), "a closed socket gives its place back");
}

#[tokio::test]
async fn connections_in_use_outlive_the_header_timeout() {
    let timeout = Duration::from_secs(1);
    let (app, t) = app_with_header_timeout(timeout).await;
    let session = session_over_brief_connections(&app, &t).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(socket_url(&session))
        .await
        .unwrap();
    tokio::time::sleep(timeout * 2 + Duration::from_millis(500)).await;
    let (_, done) = say(&mut ws, "Still there?").await;
    assert_eq!(
        done["type"], "done",
        "an open socket is not a slow request head"
    );
    // A keep-alive connection serves request after request, each within the timeout.
    for _ in 0..4 {
        app.get("/api/v1/Me", &t.read, t.org_id).await.ok(200);
        tokio::time::sleep(timeout / 2).await;
    }
}
