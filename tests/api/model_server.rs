//! The chat-completions client against a real HTTP server that speaks the protocol: the
//! one stand-in allowed, since no model can run here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use secrecy::SecretString;
use serde_json::{json, Value};
use siesta::provider::ChatCompletions;
use siesta::Settings;

use crate::helpers::*;

/// A request the model server received: its Authorization header and its body.
pub(crate) type Received = (Option<String>, Value);

/// What the stand-in model server was sent.
#[derive(Clone, Default)]
pub(crate) struct Seen(Arc<Mutex<Vec<Received>>>);

impl Seen {
    pub(crate) fn all(&self) -> Vec<Received> {
        self.0.lock().unwrap().clone()
    }
}

fn chunk(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"content": text}}]})
    )
}

/// Echoes what it was sent, fails, or is slow, depending on the model asked for.
async fn completions(
    State(seen): State<Seen>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    seen.0.lock().unwrap().push((auth, body.clone()));
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages
        .last()
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned();
    let system = messages
        .iter()
        .find(|m| m["role"] == "system")
        .and_then(|m| m["content"].as_str())
        .unwrap_or("none")
        .to_owned();
    match body["model"].as_str().unwrap_or("") {
        "broken-model" => (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response(),
        "drip-model" => (
            [("content-type", "text/event-stream")],
            axum::body::Body::from_stream(drip()),
        )
            .into_response(),
        "slow-model" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK.into_response()
        }
        model => {
            let stall = model == "stall-model";
            let body = async_body(last, system, messages.len(), stall);
            (
                [("content-type", "text/event-stream")],
                axum::body::Body::from_stream(body),
            )
                .into_response()
        }
    }
}

fn async_body(
    last: String,
    system: String,
    count: usize,
    stall: bool,
) -> impl futures_util::Stream<Item = Result<String, std::io::Error>> + Send {
    let role = format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
    );
    let mut parts = vec![
        role,
        chunk("Echo: "),
        chunk(&last),
        chunk(&format!(" | system: {system} | messages: {count}")),
    ];
    if !stall {
        parts.push("data: [DONE]\n\n".to_owned());
    }
    futures_util::stream::unfold(
        (parts.into_iter(), stall),
        |(mut parts, stall)| async move {
            match parts.next() {
                Some(p) => Some((Ok(p), (parts, stall))),
                None if stall => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    None
                }
                None => None,
            }
        },
    )
}

/// A piece every 300 ms for 10 s: each piece in time, the whole answer far too long.
fn drip() -> impl futures_util::Stream<Item = Result<String, std::io::Error>> + Send {
    futures_util::stream::unfold(0u32, |n| async move {
        match n {
            0 => Some((Ok(chunk("Thinking")), 1)),
            33 => Some((Ok("data: [DONE]\n\n".to_owned()), 34)),
            34 => None,
            n => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Some((Ok(chunk(".")), n + 1))
            }
        }
    })
}

/// A stand-in model server on a free port: its base URL (`.../v1`) and what it was sent.
/// `broken-model` fails with 500, `slow-model` takes 30 s to answer, `drip-model` sends a
/// piece every 300 ms for 10 s, `stall-model` stops before its end; any other model
/// answers `Echo: <last message> | system: <instructions> | messages: <count>`.
pub(crate) async fn model_server() -> (String, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), seen)
}

async fn app_with_model() -> (TestApp, Seen) {
    app_with_model_and(Settings::default()).await
}

/// The server with these settings, but a provider timeout of 800 ms, and the test model server.
async fn app_with_model_and(settings: Settings) -> (TestApp, Seen) {
    let (base, seen) = model_server().await;
    let provider = ChatCompletions::new(
        &base,
        Some(SecretString::from("test-upstream-secret")),
        "echo-model".into(),
    )
    .unwrap();
    let settings = Settings {
        provider_timeout: Duration::from_millis(800),
        ..settings
    };
    (
        spawn_app_with_provider(settings, Arc::new(provider)).await,
        seen,
    )
}

async fn agent(app: &TestApp, t: &Tenant, model: Option<&str>) -> String {
    let body = json!({"name": "support-bot", "instructions": "Be brief.", "model": model});
    app.post("/api/v1/Agent", &t.write, t.org_id, body)
        .await
        .ok(201)["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_conversation_goes_to_the_model_server_and_its_answer_comes_back() {
    let (app, seen) = app_with_model().await;
    let t = app.tenant("Acme").await;
    let id = agent(&app, &t, None).await;
    let path = format!("/api/v1/Agent/{id}/response");
    let first = app
        .post(&path, &t.write, t.org_id, json!({"message": "hi"}))
        .await
        .ok(200);
    assert_eq!(
        first["response"],
        "Echo: hi | system: Be brief. | messages: 2"
    );
    let again = json!({"message": "more", "conversationId": first["conversationId"]});
    let second = app.post(&path, &t.write, t.org_id, again).await.ok(200);
    assert_eq!(
        second["response"],
        "Echo: more | system: Be brief. | messages: 4"
    );

    let seen = seen.0.lock().unwrap();
    let (auth, body) = &seen[1];
    assert_eq!(auth.as_deref(), Some("Bearer test-upstream-secret"));
    assert_eq!(body["model"], "echo-model");
    assert_eq!(body["stream"], true);
    let roles: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(body["messages"][2]["content"], first["response"]);
}

#[tokio::test]
async fn an_agents_model_overrides_the_default_and_upstream_failures_are_502_or_504() {
    let (app, seen) = app_with_model().await;
    let t = app.tenant("Acme").await;
    let broken = agent(&app, &t, Some("broken-model")).await;
    let r = app
        .post(
            &format!("/api/v1/Agent/{broken}/response"),
            &t.write,
            t.org_id,
            json!({"message": "hi"}),
        )
        .await;
    let body = r.problem(502, "provider_error");
    assert!(
        !body.to_string().contains("exploded"),
        "nothing of the upstream's body leaks"
    );
    assert_eq!(seen.0.lock().unwrap()[0].1["model"], "broken-model");

    let slow = agent(&app, &t, Some("slow-model")).await;
    let started = std::time::Instant::now();
    let r = app
        .post(
            &format!("/api/v1/Agent/{slow}/response"),
            &t.write,
            t.org_id,
            json!({"message": "hi"}),
        )
        .await;
    r.problem(504, "provider_timeout");
    assert!(started.elapsed() < Duration::from_secs(5), "never a hang");

    let stall = agent(&app, &t, Some("stall-model")).await;
    let r = app
        .post(
            &format!("/api/v1/Agent/{stall}/response"),
            &t.write,
            t.org_id,
            json!({"message": "hi"}),
        )
        .await;
    r.problem(504, "provider_timeout");
}

#[tokio::test]
async fn model_answers_stream_through_as_they_arrive() {
    let (app, _) = app_with_model().await;
    let t = app.tenant("Acme").await;
    let echo = agent(&app, &t, None).await;
    let body = app
        .stream_response(&t, &echo, json!({"message": "stream"}))
        .await
        .text();
    let deltas: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("event: delta"))
        .collect();
    assert_eq!(deltas.len(), 3, "{body}");
    assert!(body.contains("event: done"));
    assert!(body.contains("Echo: "));

    let stalled = agent(&app, &t, Some("stall-model")).await;
    let body = app
        .stream_response(&t, &stalled, json!({"message": "stream"}))
        .await
        .text();
    assert!(body.contains("event: error"), "{body}");
    assert!(body.contains("provider_timeout"), "{body}");
}

/// The contents of the messages the model server was sent in its `n`th request.
fn sent(seen: &Seen, n: usize) -> Vec<String> {
    seen.0.lock().unwrap()[n].1["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_model_gets_the_newest_earlier_messages_that_fit_the_history_budget() {
    let (app, seen) = app_with_model_and(Settings {
        history_chars: 50,
        ..Settings::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    let id = agent(&app, &t, None).await;
    let path = format!("/api/v1/Agent/{id}/response");
    let say = |text: &str, conversation: &Value| {
        app.post(
            &path,
            &t.write,
            t.org_id,
            json!({"message": text, "conversationId": conversation}),
        )
    };
    let first = app
        .post(&path, &t.write, t.org_id, json!({"message": "one"}))
        .await
        .ok(200);
    let conversation = first["conversationId"].clone();
    let a1 = first["response"].as_str().unwrap().to_owned();
    assert_eq!(a1.chars().count(), 43, "{a1}");
    // 3 + 43 characters fit in 50.
    let second = say("ééé", &conversation).await.ok(200);
    assert_eq!(sent(&seen, 1), ["Be brief.", "one", &a1, "ééé"]);
    let a2 = second["response"].as_str().unwrap().to_owned();
    assert_eq!((a2.chars().count(), a2.len()), (43, 46), "{a2}");
    // Newest first: a2 and "ééé" fit (46 characters, though 52 bytes); a1 does not, and
    // the walk stops there, though "one" alone would still fit.
    let third = say("x", &conversation).await.ok(200);
    assert_eq!(sent(&seen, 2), ["Be brief.", "ééé", &a2, "x"]);
    let a3 = third["response"].as_str().unwrap().to_owned();

    // A realtime socket continuing the conversation sends the same budget's worth.
    let continuing = json!({"conversationId": conversation});
    let session = app
        .realtime_session(&id, &t.write, t.org_id, continuing)
        .await;
    let mut ws = open_socket(&session).await;
    let (_, done) = crate::helpers::say(&mut ws, "y").await;
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(sent(&seen, 3), ["Be brief.", "x", &a3, "y"]);

    // The whole conversation is still kept.
    let messages = app.conversation_messages(&t, &conversation).await;
    assert_eq!(messages.len(), 8);
}

/// A server with these settings whose agent's model sends a piece every 300 ms for 10 s,
/// asked for a streamed answer: the server, tenant, agent, the SSE text, and how long it took.
async fn streamed_from_a_dripping_model(
    settings: Settings,
) -> (TestApp, Tenant, String, String, Duration) {
    let (app, _) = app_with_model_and(settings).await;
    let t = app.tenant("Acme").await;
    let id = agent(&app, &t, Some("drip-model")).await;
    let started = std::time::Instant::now();
    let body = app
        .stream_response(&t, &id, json!({"message": "take your time"}))
        .await
        .text();
    let took = started.elapsed();
    (app, t, id, body, took)
}

#[tokio::test]
async fn a_streamed_answer_ends_with_provider_timeout_at_the_stream_timeout() {
    let (app, t, id, body, took) = streamed_from_a_dripping_model(Settings {
        stream_timeout: Duration::from_secs(1),
        ..Settings::default()
    })
    .await;
    assert!(took < Duration::from_secs(3), "{took:?}: {body}");
    assert!(took >= Duration::from_millis(900), "{took:?}: {body}");
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert!(events.len() > 2, "pieces arrived first: {body}");
    assert_eq!(events.last(), Some(&"error"), "{body}");
    assert!(!events.contains(&"done"), "{body}");
    let last = body
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let error: Value = serde_json::from_str(last).unwrap();
    assert_eq!(error["code"], "provider_timeout", "{error}");
    assert_eq!(error["status"], 504, "{error}");

    // The same over a realtime socket, which stays open.
    let session = app
        .realtime_session(&id, &t.write, t.org_id, json!({}))
        .await;
    let mut ws = open_socket(&session).await;
    let started = std::time::Instant::now();
    let (deltas, end) = crate::helpers::say(&mut ws, "take your time").await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(deltas.starts_with("Thinking."), "{deltas}");
    assert_eq!(end["type"], "error", "{end}");
    assert_eq!(end["code"], "provider_timeout", "{end}");
    // Like any answer that failed, nothing of it is stored.
    let c = format!(
        "/api/v1/Conversation/{}",
        session["conversationId"].as_str().unwrap()
    );
    not_found(app.get(&c, &t.read, t.org_id).await);
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        "not json".into(),
    ))
    .await
    .unwrap();
    let frame = ws.next().await.unwrap().unwrap();
    let v: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(v["code"], "validation_error", "{v}");
}

#[tokio::test]
async fn a_long_streamed_answer_outlives_the_header_read_timeout() {
    let (_, _, _, body, took) = streamed_from_a_dripping_model(Settings {
        header_read_timeout: Duration::from_secs(1),
        stream_timeout: Duration::from_millis(2500),
        ..Settings::default()
    })
    .await;
    // The connection delivered its head long ago: pieces keep coming until the stream's
    // own deadline, well past the header-read timeout.
    assert!(took >= Duration::from_secs(2), "{body}");
    let pieces = body.lines().filter(|l| *l == "event: delta").count();
    assert!(pieces >= 6, "{pieces} pieces: {body}");
    assert!(body.contains("provider_timeout"), "{body}");
}
