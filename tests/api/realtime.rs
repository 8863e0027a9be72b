use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use siesta::clock::Timestamp;
use siesta::key::Scope;
use siesta::Settings;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::helpers::*;

async fn bot(app: &TestApp, t: &Tenant) -> String {
    let a = app
        .post(
            "/api/v1/Agent",
            &t.write,
            t.org_id,
            json!({"name": "voice-bot", "instructions": "Be quick."}),
        )
        .await;
    a.ok(201)["id"].as_str().unwrap().to_owned()
}

/// A refused socket's status and the `code` of its problem body.
fn refused_with(r: Result<impl Sized, tungstenite::Error>) -> (u16, String) {
    match r {
        Err(tungstenite::Error::Http(response)) => {
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or(b""))
                .expect("a problem document");
            let code = body["code"].as_str().unwrap_or("").to_owned();
            (response.status().as_u16(), code)
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("the connection was accepted"),
    }
}

#[tokio::test]
async fn a_browser_talks_to_an_agent_over_a_websocket_with_a_one_time_secret() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let agent = bot(&app, &t).await;
    let s = app
        .realtime_session(&agent, &t.write, t.org_id, json!({}))
        .await;
    let secret = s["clientSecret"].as_str().unwrap();
    assert!(secret.starts_with("rts_") && !secret.contains(&t.write));
    assert_eq!(
        s["websocketUrl"],
        format!(
            "ws://{}/realtime/{}",
            app.addr,
            s["sessionId"].as_str().unwrap()
        )
    );
    assert!(s["expiresAt"].is_string());

    let mut ws = open_socket(&s).await;
    let (first, done) = say(&mut ws, "Hello there").await;
    assert_eq!(done["type"], "done", "{done}");
    assert!(first.contains("offline responder") && first.contains("Hello there"));
    let (second, done2) = say(&mut ws, "Again").await;
    assert!(
        second.contains("Earlier messages in this conversation: 2"),
        "{second}"
    );
    ws.send(Message::Text("not json".into())).await.unwrap();
    let frame = ws.next().await.unwrap().unwrap();
    let v: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["code"], "validation_error");
    ws.close(None).await.unwrap();

    // The transcript is kept in the conversation.
    let messages = app.conversation_messages(&t, &s["conversationId"]).await;
    let contents: Vec<&str> = messages
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        ["Hello there", first.as_str(), "Again", second.as_str()]
    );
    assert_eq!(messages[3]["id"], done2["messageId"]);

    // The secret works once.
    assert_eq!(
        refused_with(tokio_tungstenite::connect_async(socket_url(&s)).await),
        (401, "expired_api_key".into())
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_without_using_the_session_up_and_secrets_expire() {
    let app = spawn_app_on_manual_clock(Settings::default()).await;
    let t = app.tenant("Acme").await;
    let agent = bot(&app, &t).await;
    let s = app
        .realtime_session(&agent, &t.write, t.org_id, json!({}))
        .await;
    let wrong = format!(
        "{}?clientSecret=rts_wrong",
        s["websocketUrl"].as_str().unwrap()
    );
    assert_eq!(
        refused_with(tokio_tungstenite::connect_async(wrong).await),
        (404, "not_found".into())
    );
    let bare = s["websocketUrl"].as_str().unwrap().to_owned();
    assert_eq!(
        refused_with(tokio_tungstenite::connect_async(bare).await),
        (404, "not_found".into())
    );
    // The secret can be used until a minute after it was made, and not from then on.
    let late = app
        .realtime_session(&agent, &t.write, t.org_id, json!({}))
        .await;
    assert_eq!(
        Timestamp::parse(late["expiresAt"].as_str().unwrap()),
        Some(app.clock.now().plus(Duration::from_secs(60)))
    );
    app.clock.advance(Duration::from_millis(59_999));
    let mut ws = open_socket(&s).await;
    ws.close(None).await.unwrap();
    app.clock.advance(Duration::from_millis(1));
    assert_eq!(
        refused_with(tokio_tungstenite::connect_async(socket_url(&late)).await),
        (401, "expired_api_key".into())
    );
}

#[tokio::test]
async fn sessions_continue_conversations_and_stay_in_their_organization() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let other = app.tenant("Globex").await;
    let agent = bot(&app, &t).await;
    let talk = app
        .post(
            &format!("/api/v1/Agent/{agent}/response"),
            &t.write,
            t.org_id,
            json!({"message": "first"}),
        )
        .await
        .ok(200);
    let s = app
        .realtime_session(
            &agent,
            &t.write,
            t.org_id,
            json!({"conversationId": talk["conversationId"]}),
        )
        .await;
    assert_eq!(s["conversationId"], talk["conversationId"]);
    let mut ws = open_socket(&s).await;
    let (text, _) = say(&mut ws, "second").await;
    assert!(
        text.contains("Earlier messages in this conversation: 2"),
        "{text}"
    );

    let path = format!("/api/v1/Agent/{agent}/realtime-session");
    app.post(&path, &t.read, t.org_id, json!({}))
        .await
        .problem(403, "insufficient_scope");
    app.post(&path, &other.write, other.org_id, json!({}))
        .await
        .problem(404, "not_found");
    let theirs = app
        .created(&other, "/api/v1/Agent", json!({"name": "x"}))
        .await;
    let their_path = format!(
        "/api/v1/Agent/{}/realtime-session",
        theirs["id"].as_str().unwrap()
    );
    app.post(
        &their_path,
        &t.write,
        t.org_id,
        json!({"conversationId": talk["conversationId"]}),
    )
    .await
    .problem(404, "not_found");
}

#[tokio::test]
async fn a_session_ends_when_the_key_that_created_it_is_deleted() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let agent = bot(&app, &t).await;
    let created = app
        .post(
            "/api/v1/ApiKey",
            &t.admin,
            t.org_id,
            json!({"name": "voice-backend", "scope": "write"}),
        )
        .await
        .ok(201);
    let key = created["key"].as_str().unwrap();
    let open = app.realtime_session(&agent, key, t.org_id, json!({})).await;
    let unused = app.realtime_session(&agent, key, t.org_id, json!({})).await;
    let mut ws = open_socket(&open).await;
    let (_, done) = say(&mut ws, "Hello").await;
    assert_eq!(done["type"], "done", "{done}");

    let key_path = format!("/api/v1/ApiKey/{}", created["id"].as_str().unwrap());
    app.delete(&key_path, &t.admin, t.org_id).await.ok(204);

    // The open socket answers no more, says why, and closes.
    ends_because_the_key_stopped(&mut ws).await;
    // A session made before the delete cannot be opened after it.
    assert_eq!(
        refused_with(tokio_tungstenite::connect_async(socket_url(&unused)).await),
        (401, "expired_api_key".into())
    );
    // Only the first message reached the conversation.
    let messages = app.conversation_messages(&t, &open["conversationId"]).await;
    assert_eq!(messages.len(), 2);
}

/// The next message on `ws` is refused because the session's key no longer works, and the
/// socket closes.
async fn ends_because_the_key_stopped(ws: &mut Socket) {
    let (deltas, refused) = say(ws, "Still there?").await;
    assert_eq!(deltas, "");
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], "expired_api_key", "{refused}");
    assert_eq!(
        refused["detail"],
        "This realtime session has ended: the key that created it no longer works."
    );
    let closing = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    assert!(
        matches!(closing, None | Some(Ok(Message::Close(_)))),
        "{closing:?}"
    );
}

/// The socket's key stops working an hour from now: a millisecond before, a message is
/// answered; at the hour, the session ends.
async fn answered_for_an_hour_then_ended(app: &TestApp, ws: &mut Socket) {
    app.clock.advance(Duration::from_millis(3_599_999));
    let (_, done) = say(ws, "Hello").await;
    assert_eq!(done["type"], "done", "{done}");
    app.clock.advance(Duration::from_millis(1));
    ends_because_the_key_stopped(ws).await;
}

#[tokio::test]
async fn a_session_ends_when_its_key_expires_to_the_millisecond() {
    let app = spawn_app_on_manual_clock(Settings::default()).await;
    let t = app.tenant("Acme").await;
    let agent = bot(&app, &t).await;
    let mut s = spec("voice-backend", Scope::Write);
    s.expires_in = Some(Duration::from_secs(3600));
    let (_, key) = app.issue_spec(t.org_id, t.owner, s).await;
    let session = app
        .realtime_session(&agent, &key, t.org_id, json!({}))
        .await;
    let mut ws = open_socket(&session).await;
    answered_for_an_hour_then_ended(&app, &mut ws).await;
}

#[tokio::test]
async fn a_session_ends_when_the_grace_period_of_its_rotated_key_ends() {
    let app = spawn_app_on_manual_clock(Settings::default()).await;
    let t = app.tenant("Acme").await;
    let agent = bot(&app, &t).await;
    let (id, key) = app
        .issue(t.org_id, t.owner, "voice-backend", Scope::Write)
        .await;
    let session = app
        .realtime_session(&agent, &key, t.org_id, json!({}))
        .await;
    let mut ws = open_socket(&session).await;
    app.post(
        &format!("/api/v1/ApiKey/{id}/rotate"),
        &t.admin,
        t.org_id,
        json!({"grace": "1h"}),
    )
    .await
    .ok(200);
    answered_for_an_hour_then_ended(&app, &mut ws).await;
}

#[tokio::test]
async fn a_session_ends_when_the_owner_of_its_key_leaves_the_organization() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let agent = bot(&app, &t).await;
    let dev = app.create_user("dev@acme.example").await;
    app.add_member(t.org_id, dev, siesta::store::Role::Member)
        .await;
    let (_, key) = app
        .issue(t.org_id, dev, "voice-backend", Scope::Write)
        .await;
    let session = app
        .realtime_session(&agent, &key, t.org_id, json!({}))
        .await;
    let mut ws = open_socket(&session).await;
    let (_, done) = say(&mut ws, "Hello").await;
    assert_eq!(done["type"], "done", "{done}");
    let audit = siesta::store::AuditRecord::event(t.org_id, "member.removed", "cli");
    app.store.remove_member(t.org_id, dev, audit).await.unwrap();
    ends_because_the_key_stopped(&mut ws).await;
}

#[tokio::test]
async fn a_socket_that_sends_nothing_for_the_idle_time_is_closed() {
    let app = spawn_app_with(Settings {
        realtime_idle: Duration::from_secs(1),
        ..Settings::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    let agent = bot(&app, &t).await;
    let session = app
        .realtime_session(&agent, &t.write, t.org_id, json!({}))
        .await;
    let mut ws = open_socket(&session).await;
    // Talking keeps it open past the idle time.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (_, done) = say(&mut ws, "Hello").await;
        assert_eq!(done["type"], "done", "{done}");
    }
    let quiet_since = std::time::Instant::now();
    let closing = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("closed by the server");
    assert!(
        matches!(closing, None | Some(Ok(Message::Close(_)))),
        "{closing:?}"
    );
    assert!(quiet_since.elapsed() >= Duration::from_millis(900));
}

/// What a test of a rate-limited socket works with.
struct LimitedSocket {
    app: TestApp,
    t: Tenant,
    /// A key of the limit, with write scope.
    key: String,
    /// The session the key made (its first request).
    session: Value,
    ws: Socket,
}

/// A server, a tenant, and an open realtime socket whose key may make `rate_limit`
/// requests a minute; making the session was the key's first.
async fn limited_socket(rate_limit: u32) -> LimitedSocket {
    let app = spawn_app_on_manual_clock(Settings::default()).await;
    let t = app.tenant("Acme").await;
    let agent = bot(&app, &t).await;
    let mut s = spec("voice-backend", Scope::Write);
    s.rate_limit = Some(rate_limit);
    let (_, key) = app.issue_spec(t.org_id, t.owner, s).await;
    let session = app
        .realtime_session(&agent, &key, t.org_id, json!({}))
        .await;
    let ws = open_socket(&session).await;
    LimitedSocket {
        app,
        t,
        key,
        session,
        ws,
    }
}

#[track_caller]
fn rate_limited(frame: &Value) -> u64 {
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["code"], "rate_limited", "{frame}");
    let retry = frame["retryAfter"]
        .as_u64()
        .expect("retryAfter in whole seconds");
    assert!(retry >= 1, "{frame}");
    retry
}

#[tokio::test]
async fn socket_messages_spend_the_keys_rate_limit_and_the_socket_stays_open() {
    let LimitedSocket {
        app,
        t,
        key,
        session: s,
        mut ws,
    } = limited_socket(3).await;
    // The session's creation was the first of the key's three; two messages take the rest.
    for n in 1..=2 {
        let (_, done) = say(&mut ws, &format!("message {n}")).await;
        assert_eq!(done["type"], "done", "message {n}: {done}");
    }
    for n in 3..=5 {
        let (deltas, refused) = say(&mut ws, &format!("message {n}")).await;
        assert_eq!(deltas, "", "message {n} was not answered");
        assert_eq!(rate_limited(&refused), 20, "one message every 20 s");
    }
    // One bucket for the key, whether it is spent over HTTP or over a socket.
    let r = app.get("/api/v1/Me", &key, t.org_id).await;
    r.problem(429, "rate_limited");
    // Refused messages are not stored.
    let messages = app.conversation_messages(&t, &s["conversationId"]).await;
    assert_eq!(messages.len(), 4);
}

#[tokio::test]
async fn after_retry_after_the_same_socket_is_answered_again() {
    // 60 a minute: a burst of 60, then one a second.
    let LimitedSocket {
        app,
        t,
        key,
        session: _,
        mut ws,
    } = limited_socket(60).await;
    // The key's HTTP requests spend what the socket may send.
    for _ in 0..59 {
        app.get("/api/v1/Me", &key, t.org_id).await.ok(200);
    }
    let mut refused = None;
    for _ in 0..5 {
        let (_, frame) = say(&mut ws, "Hello").await;
        if frame["type"] == "error" {
            refused = Some(frame);
            break;
        }
    }
    let refused = refused.expect("the socket's messages are refused once the burst is spent");
    let retry = rate_limited(&refused);
    assert_eq!(retry, 1, "one a second: {refused}");
    app.clock.advance(Duration::from_millis(999));
    let (_, early) = say(&mut ws, "Hello").await;
    rate_limited(&early);
    app.clock.advance(Duration::from_millis(1));
    let (text, done) = say(&mut ws, "Hello again").await;
    assert_eq!(done["type"], "done", "{done}");
    assert!(text.contains("Hello again"), "{text}");
}

#[tokio::test]
async fn every_frame_spends_the_limit_and_a_message_is_checked_like_an_http_one() {
    let LimitedSocket {
        app,
        t,
        key,
        session: _,
        mut ws,
    } = limited_socket(4).await;
    // A message with a bidirectional control is refused, as it is over HTTP.
    let (deltas, refused) = say(&mut ws, "pay \u{202E}001$").await;
    assert_eq!(deltas, "");
    assert_eq!(refused["code"], "validation_error", "{refused}");
    // A binary frame is no message, but spends the key's limit all the same.
    ws.send(Message::Binary(vec![0u8; 16].into()))
        .await
        .unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(v["code"], "validation_error", "{v}");
    // Creation, the refused message and the binary frame: one of four is left.
    let (_, done) = say(&mut ws, "Hello").await;
    assert_eq!(done["type"], "done", "{done}");
    let (_, over) = say(&mut ws, "Hello again").await;
    rate_limited(&over);
    app.get("/api/v1/Me", &key, t.org_id)
        .await
        .problem(429, "rate_limited");
}
