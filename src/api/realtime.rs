//! Realtime sessions: a browser talks to an agent over a WebSocket without ever holding the
//! API key. A backend creates the session with its key and hands the browser a one-time
//! secret that works once, within 60 seconds.

use axum::extract::ws::{Message as Frame, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::call::Call;
use crate::api::conversation::{ask, provider_failure, thread, Reading, Speaker, Thread, MESSAGE};
use crate::audit::audited;
use crate::audit::Actor;
use crate::auth::rate_limit;
use crate::auth::{Guard, Policy};
use crate::clock::Timestamp;
use crate::error::{ApiError, Code, Result};
use crate::http::PathId;
use crate::http::{OptionalJson, Params, RequestBody};
use crate::key::{push_random_base62, KeyDigest};
use crate::ratelimit::{Bucket, Decision, Quota};
use crate::state::AppState;
use crate::store::{RealtimeSession, StoreError};

/// The largest frame a client may send: a message of 32,000 characters, each written as a
/// six-byte JSON escape, and room for the frame's other members.
const MAX_FRAME_BYTES: usize = 256 * 1024;

/// The random characters of a client secret, after its `rts_` prefix.
const SECRET_RANDOM: usize = 40;
/// A client secret's length: `rts_` and the random characters.
pub(crate) const CLIENT_SECRET_LEN: usize = 4 + SECRET_RANDOM;

/// Why a session, or a socket already open, stops when the key that created it stops working.
const KEY_GONE: &str = "This realtime session has ended: the key that created it no longer works.";

/// Options for a realtime session.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewRealtimeSession {
    /// Continue this conversation (with the same agent); without it a new one starts.
    #[serde(default, deserialize_with = "crate::http::id_field")]
    #[schema(nullable = false)]
    pub conversation_id: Option<Uuid>,
}

impl RequestBody for NewRealtimeSession {
    const FIELDS: &'static [&'static str] = &["conversationId"];
}

/// A session a browser can connect to: open `websocketUrl?clientSecret=<clientSecret>`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RealtimeSessionCreated {
    pub session_id: Uuid,
    /// Works once, until `expiresAt`. Hand it to the browser; it is not an API key.
    pub client_secret: String,
    pub websocket_url: String,
    pub conversation_id: Uuid,
    pub expires_at: Timestamp,
}

/// Create a one-time realtime session with an agent.
///
/// The WebSocket speaks JSON text frames: the client sends `{"type":"message","text":...}`;
/// the server answers with `{"type":"delta","text":...}` frames and a
/// `{"type":"done","messageId":...}` frame (or `{"type":"error","code":...}`). The transcript
/// is kept in the conversation, within the same bounds as `POST /Agent/{agentId}/response`
/// (an `error` frame `conflict` when it is full, `provider_timeout` when an answer runs past
/// the stream timeout). Each message counts against this key's rate limit, like a request;
/// over it the frame is `{"type":"error","code":"rate_limited","retryAfter":<seconds>}` and
/// the socket stays open.
#[utoipa::path(
    post, path = "/api/v1/Agent/{agentId}/realtime-session",
    request_body(content = Option<NewRealtimeSession>, description = "Optional"),
    responses((status = 201, body = RealtimeSessionCreated)),
)]
async fn create_session(
    Call(state, caller): Call,
    PathId(agent_id): PathId,
    OptionalJson(body): OptionalJson<NewRealtimeSession>,
) -> Result<Response> {
    let agent = state.store.get_agent(caller.org_id, agent_id).await?;
    let continues = body.and_then(|b| b.conversation_id);
    let conversation_id = match continues {
        Some(id) => thread(&state, caller.org_id, agent.id, Some(id)).await?.id,
        None => Uuid::now_v7(),
    };
    let mut secret = String::from("rts_");
    push_random_base62(&mut secret, SECRET_RANDOM);
    let secret = SecretString::from(secret);
    let now = state.settings.clock.now();
    let session = RealtimeSession {
        id: Uuid::now_v7(),
        org_id: caller.org_id,
        agent_id: agent.id,
        conversation_id,
        continues: continues.is_some(),
        secret_digest: KeyDigest::of(secret.expose_secret().as_bytes()),
        key_id: caller.key().id,
        key_name: caller.key().name.clone(),
        created_at: now,
        expires_at: now.plus(state.settings.realtime_secret_ttl),
    };
    let audit = caller.audit("realtime_session.created", session.id);
    state.store.create_realtime_session(&session, audit).await?;
    let created = RealtimeSessionCreated {
        session_id: session.id,
        client_secret: secret.expose_secret().to_owned(),
        websocket_url: websocket_url(&state.public_url, session.id),
        conversation_id,
        expires_at: session.expires_at,
    };
    Ok(audited((StatusCode::CREATED, Json(created))))
}

/// The socket's address under the server's public URL; a request's `Host` or forwarding
/// headers never choose where a browser is sent.
fn websocket_url(public_url: &str, id: Uuid) -> String {
    let ws = match public_url.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", public_url.trim_start_matches("http://")),
    };
    format!("{ws}/realtime/{id}")
}

/// `GET /realtime/{sessionId}?clientSecret=...`: the WebSocket itself, outside `/api/v1`,
/// authenticated by the session's one-time secret instead of a key.
pub async fn connect(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    uri: axum::http::Uri,
    params: Params,
    held: Option<axum::Extension<crate::listener::Held>>,
    upgrade: std::result::Result<
        WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return ApiError::with_detail(
            Code::ValidationError,
            "Connect to this address with a WebSocket client.",
        )
        .into_response();
    };
    if let Err(e) = crate::http::refuse_duplicate_params(&uri) {
        return e.into_response();
    }
    let (Some(id), Some(secret)) = (crate::http::parse_id(&raw_id), params.text("clientSecret"))
    else {
        return ApiError::not_found().into_response();
    };
    let digest = KeyDigest::of(secret.as_bytes());
    let session = match state
        .store
        .claim_realtime_session(id, &digest, state.settings.clock.now())
        .await
    {
        Ok(s) => s,
        Err(StoreError::Conflict(_)) => {
            let detail = "This realtime session was used already or has expired; create a new one.";
            return ApiError::with_detail(Code::ExpiredApiKey, detail).into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    match key_quota(&state, &session).await {
        // The socket keeps its connection's place under the connection cap while it is open.
        Ok(Some(quota)) => {
            upgrade
                .max_message_size(MAX_FRAME_BYTES)
                .on_upgrade(move |socket| async move {
                    talk(state, session, socket, quota).await;
                    drop(held);
                })
        }
        Ok(None) => ApiError::with_detail(Code::ExpiredApiKey, KEY_GONE).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A session acts with the authority of the key that created it, so it works only while that
/// key does: not deleted, expired or past its grace, and its creator still a member. Read
/// from the database each time, so a delete on any replica ends the session at once and a
/// changed rate limit applies to the next message. The key's rate limit if it works.
async fn key_quota(state: &AppState, session: &RealtimeSession) -> Result<Option<Quota>> {
    let grant = state
        .store
        .key_grant(session.org_id, session.key_id)
        .await?;
    Ok(grant
        .filter(|g| g.works_at(state.settings.clock.now()))
        .map(|g| Quota::per_minute(rate_limit(&g.key, &state.settings))))
}

async fn send(socket: &mut WebSocket, value: serde_json::Value) -> bool {
    socket
        .send(Frame::Text(value.to_string().into()))
        .await
        .is_ok()
}

fn error_frame(code: Code, detail: &str) -> serde_json::Value {
    json!({"type": "error", "code": code.as_str(), "detail": detail})
}

#[derive(Deserialize)]
struct ClientFrame {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

/// What the client sent: a message to answer (its text checked as an HTTP message's is),
/// or something else.
fn read_message(frame: &str) -> Option<String> {
    let Ok(ClientFrame {
        kind,
        text: Some(text),
    }) = serde_json::from_str::<ClientFrame>(frame)
    else {
        return None;
    };
    let mut errors = crate::http::FieldErrors::default();
    errors.text("text", Some(&text), MESSAGE);
    (kind == "message" && errors.check().is_ok()).then_some(text)
}

fn rate_limited_frame(decision: &Decision) -> serde_json::Value {
    let retry_after = decision.retry_after_secs.max(1);
    json!({
        "type": "error",
        "code": Code::RateLimited.as_str(),
        "retryAfter": retry_after,
        "detail": format!("Too many requests with this session's key: wait {retry_after} s, then send the message again."),
    })
}

/// Serves one socket. Each text frame the client sends is a request of the session's key: it
/// spends the key's rate limit, in the bucket the key's HTTP requests spend. `quota` is the
/// key's limit as read when the socket opened.
async fn talk(state: AppState, session: RealtimeSession, mut socket: WebSocket, mut quota: Quota) {
    let speaker = Speaker {
        org_id: session.org_id,
        key: Actor::Key {
            id: session.key_id,
            name: session.key_name.clone(),
        },
    };
    let mut started = session.continues;
    let mut recorded_minute = i64::MIN;
    loop {
        let frame = match tokio::time::timeout(state.settings.realtime_idle, socket.recv()).await {
            Ok(Some(Ok(frame))) => frame,
            _ => break,
        };
        let text = match frame {
            Frame::Text(t) => t.to_string(),
            Frame::Close(_) => break,
            // Not a message, but a request of the key all the same.
            Frame::Binary(_) => String::new(),
            Frame::Ping(_) | Frame::Pong(_) => continue,
        };
        // Every frame spends the key's limit, at the limit last read; only then is the key
        // read again (is it still working, has its limit changed?), so a flood past the
        // limit costs no database read.
        let decision = state
            .limiter
            .check(Bucket::Key(session.key_id), quota)
            .await;
        if !decision.allowed {
            state.metrics.rate_limited("key");
            if !send(&mut socket, rate_limited_frame(&decision)).await {
                break;
            }
            continue;
        }
        let message = read_message(&text);
        if message.is_some() {
            match key_quota(&state, &session).await {
                Ok(Some(current)) => quota = current,
                Ok(None) => {
                    let _ = send(&mut socket, error_frame(Code::ExpiredApiKey, KEY_GONE)).await;
                    break;
                }
                Err(e) => {
                    let detail = "The answer could not be completed.";
                    if !send(&mut socket, error_frame(e.code, detail)).await {
                        break;
                    }
                    continue;
                }
            }
        }
        let now = state.settings.clock.now();
        if now.minute() > recorded_minute {
            recorded_minute = now.minute();
            state.recorder.key_used(session.org_id, session.key_id, now);
        }
        let Some(message) = message else {
            let detail =
                "Send {\"type\":\"message\",\"text\":\"...\"} with 1 to 32,000 characters, \
                 and no control characters but tab and line breaks.";
            if !send(&mut socket, error_frame(Code::ValidationError, detail)).await {
                break;
            }
            continue;
        };
        match exchange(&state, &speaker, &session, started, message, &mut socket).await {
            Ok(()) => started = true,
            Err(e) => {
                let detail = e
                    .detail
                    .as_deref()
                    .unwrap_or("The answer could not be completed.");
                if !send(&mut socket, error_frame(e.code, detail)).await {
                    break;
                }
            }
        }
    }
    let _ = socket.send(Frame::Close(None)).await;
}

/// One message and its streamed answer, stored in the session's conversation.
async fn exchange(
    state: &AppState,
    speaker: &Speaker,
    session: &RealtimeSession,
    started: bool,
    message: String,
    socket: &mut WebSocket,
) -> Result<()> {
    let agent = state
        .store
        .get_agent(session.org_id, session.agent_id)
        .await?;
    let current = if started {
        thread(
            state,
            session.org_id,
            agent.id,
            Some(session.conversation_id),
        )
        .await?
    } else {
        Thread::new(session.conversation_id)
    };
    let (pending, answer) =
        ask(state, speaker.clone(), &agent, current, message, Vec::new()).await?;
    let mut answer = Reading::streamed(answer, &state.settings);
    let mut text = String::new();
    // As over HTTP, an answer that fails part-way (a timeout included) is not stored.
    while let Some(piece) = answer.next().await {
        let piece = piece.map_err(|e| provider_failure(&e))?;
        let _ = send(socket, json!({"type": "delta", "text": &piece})).await;
        text.push_str(&piece);
    }
    let (message_id, _) = pending.store(text).await?;
    send(
        socket,
        json!({"type": "done", "messageId": message_id, "conversationId": session.conversation_id}),
    )
    .await;
    Ok(())
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_session))
        .guard(Policy::STANDARD)
}
