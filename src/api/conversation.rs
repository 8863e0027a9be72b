//! Talking to agents: `POST /Agent/{agentId}/response` sends a message and returns (or
//! streams) the answer; `GET /Conversation/{conversationId}` returns the transcript.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::call::Call;
use crate::audit::audited;
use crate::audit::Actor;
use crate::auth::Caller;
use crate::auth::{Guard, Policy};
use crate::clock::Timestamp;
use crate::error::{ApiError, Code, Result, REQUEST_ID};
use crate::http::PathId;
use crate::http::{ApiJson, FieldErrors, RequestBody, Rule, TextRule};
use crate::provider::{Answer, Attachment, Prompt, ProviderError, Turn};
use crate::settings::Settings;
use crate::state::AppState;
use crate::store::{
    ensure_room, Agent, AuditRecord, Conversation, ConversationTail, Exchange, Message,
    MessageRole, StoreError,
};

/// A message to an agent, over HTTP or a realtime socket: 1 to 32,000 characters, not blank.
pub(crate) const MESSAGE: TextRule = TextRule::not_blank(32_000);
/// The most files a message may name.
pub(crate) const FILES_MAX: usize = 10;

/// A message to an agent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewMessage {
    /// 1 to 32,000 characters, not blank.
    #[schema(
        required = true,
        nullable = false,
        example = "Summarise yesterday's tickets"
    )]
    pub message: Option<String>,
    /// Continue this conversation (with the same agent); without it a new one starts.
    #[serde(default, deserialize_with = "crate::http::id_field")]
    #[schema(nullable = false)]
    pub conversation_id: Option<Uuid>,
    /// Up to 10 of the organization's unexpired files, given to the agent as context.
    #[serde(default, deserialize_with = "crate::http::id_list")]
    #[schema(nullable = false)]
    pub file_ids: Option<Vec<Uuid>>,
}

impl RequestBody for NewMessage {
    const FIELDS: &'static [&'static str] = &["message", "conversationId", "fileIds"];
    const RULES: &'static [(&'static str, Rule)] = &[
        ("message", Rule::Text(MESSAGE)),
        ("fileIds", Rule::Items(FILES_MAX)),
    ];
}

/// The agent's answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentResponse {
    pub conversation_id: Uuid,
    /// The id of the answer in the conversation.
    pub message_id: Uuid,
    pub response: String,
    pub created_at: Timestamp,
}

pub(crate) fn provider_failure(e: &ProviderError) -> ApiError {
    tracing::warn!(error = %e, "model provider failed");
    match e {
        ProviderError::Timeout => ApiError::new(Code::ProviderTimeout),
        ProviderError::Upstream(_) => ApiError::new(Code::ProviderError),
    }
}

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// What the conversation so far is, as far as the provider is sent it (the newest earlier
/// messages within `--history-chars`), and whether this message starts it.
pub(crate) struct Thread {
    pub id: Uuid,
    pub starts: bool,
    /// Messages the conversation holds.
    pub held: i64,
    pub history: Vec<Turn>,
}

impl Thread {
    /// A conversation that this message starts.
    pub fn new(id: Uuid) -> Self {
        Thread {
            id,
            starts: true,
            held: 0,
            history: Vec::new(),
        }
    }
}

pub(crate) async fn thread(
    state: &AppState,
    org_id: Uuid,
    agent_id: Uuid,
    id: Option<Uuid>,
) -> Result<Thread> {
    let Some(id) = id else {
        return Ok(Thread::new(Uuid::now_v7()));
    };
    let unknown = || {
        crate::http::missing_reference(
            "conversationId does not name a conversation of this organization with this agent.",
        )
    };
    let budget = state.settings.history_chars;
    let ConversationTail {
        agent_id: owner,
        held,
        recent,
    } = match state.store.conversation_tail(org_id, id, budget).await {
        Err(StoreError::NotFound) => return Err(unknown()),
        other => other?,
    };
    if owner != agent_id {
        return Err(unknown());
    }
    let history = recent
        .into_iter()
        .map(|m| Turn {
            role: m.role,
            content: m.content,
        })
        .collect();
    Ok(Thread {
        id,
        starts: false,
        held,
        history,
    })
}

/// Send a message to an agent and get its answer.
///
/// With `Accept: text/event-stream` the answer streams as server-sent events: `delta`
/// events carry `{"text"}` as it is produced, and a final `done` event carries
/// `{"conversationId", "messageId", "createdAt"}` (or an `error` event a problem document).
/// A streamed answer lasts at most the server's stream timeout (5 minutes by default), then
/// ends with an `error` event `provider_timeout`.
///
/// The agent is given the newest earlier messages of the conversation that fit the server's
/// history budget (100,000 characters by default); the whole conversation stays stored. A
/// conversation holds at most the server's limit of messages (1,000 by default, questions
/// and answers counted): a message that would take it past that with its answer is refused
/// with 409 `conflict`, and nothing of it is stored. Start a new conversation then.
#[utoipa::path(
    post, path = "/api/v1/Agent/{agentId}/response",
    request_body = NewMessage,
    responses(
        (status = 200, description = "The answer, or with `Accept: text/event-stream` the answer as server-sent events", content(
            (AgentResponse = "application/json"),
            (String = "text/event-stream"),
        )),
    ),
)]
async fn respond(
    Call(state, caller): Call,
    PathId(agent_id): PathId,
    headers: HeaderMap,
    ApiJson(input): ApiJson<NewMessage>,
) -> Result<Response> {
    let mut errors = FieldErrors::default();
    errors.required("message", &input.message);
    errors.text("message", input.message.as_deref(), MESSAGE);
    if input.file_ids.as_ref().is_some_and(|f| f.len() > FILES_MAX) {
        errors.add("fileIds", format!("at most {FILES_MAX} files"));
    }
    errors.check()?;
    let org_id = caller.org_id;
    let agent = state.store.get_agent(org_id, agent_id).await?;
    let thread = thread(&state, org_id, agent.id, input.conversation_id).await?;
    let attachments = attachments(&state, org_id, input.file_ids.unwrap_or_default()).await?;

    let speaker = Speaker::of(&caller);
    let (pending, answer) = ask(
        &state,
        speaker,
        &agent,
        thread,
        input.message.unwrap_or_default(),
        attachments,
    )
    .await?;
    if wants_stream(&headers) {
        return Ok(pending.stream(Reading::streamed(answer, &state.settings)));
    }
    let pending_thread = pending.thread_id;
    let text = Reading::whole(answer, &state.settings)
        .collect()
        .await
        .map_err(|e| provider_failure(&e))?;
    let (message_id, created_at) = pending.store(text.clone()).await?;
    Ok(audited(Json(AgentResponse {
        conversation_id: pending_thread,
        message_id,
        response: text,
        created_at,
    })))
}

/// The organization's unexpired files, for the provider: text files with their text, others
/// by name and type. Any other id is not found.
fn unknown_file() -> ApiError {
    crate::http::missing_reference(
        "fileIds names a file that does not exist, has expired, or is not this organization's.",
    )
}

async fn attachments(state: &AppState, org_id: Uuid, ids: Vec<Uuid>) -> Result<Vec<Attachment>> {
    let now = state.settings.clock.now();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let file = match state.store.get_file(org_id, id, now).await {
            Err(StoreError::NotFound) => return Err(unknown_file()),
            other => other?,
        };
        let text = if crate::files::is_text(&file.content_type, &file.name) {
            // Swept between the lookup and the read: as gone as if it had expired first.
            Some(
                state
                    .files
                    .read_text(id)
                    .await
                    .map_err(|_| unknown_file())?,
            )
        } else {
            None
        };
        out.push(Attachment {
            name: file.name,
            content_type: file.content_type,
            text,
        });
    }
    Ok(out)
}

/// Asks the provider to answer `text` in `thread`, within the timeout, unless the
/// conversation is full. The answer is stored with its question through the returned
/// [`Pending`] once it is complete.
pub(crate) async fn ask(
    state: &AppState,
    speaker: Speaker,
    agent: &Agent,
    thread: Thread,
    text: String,
    attachments: Vec<Attachment>,
) -> Result<(Pending, Answer)> {
    // Checked again where the exchange is stored; refused here, the model is not asked.
    ensure_room(thread.held, state.settings.max_conversation_messages)?;
    let question = Message {
        id: Uuid::now_v7(),
        role: MessageRole::User,
        content: text,
        created_at: state.settings.clock.now(),
    };
    let mut history = thread.history;
    history.push(Turn {
        role: MessageRole::User,
        content: question.content.clone(),
    });
    let prompt = Prompt {
        model: agent.model.clone(),
        agent_name: agent.name.clone(),
        instructions: agent.instructions.clone(),
        history,
        attachments,
    };
    let answer = match tokio::time::timeout(
        state.settings.provider_timeout,
        state.provider.answer(prompt),
    )
    .await
    {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Err(provider_failure(&e)),
        Err(_) => return Err(provider_failure(&ProviderError::Timeout)),
    };
    let pending = Pending {
        state: state.clone(),
        speaker,
        agent_id: agent.id,
        thread_id: thread.id,
        starts: thread.starts,
        question,
    };
    Ok((pending, answer))
}

/// An answer being read, a piece at a time: each piece within the provider timeout, and a
/// streamed answer as a whole within the stream timeout, counted from when the provider
/// starts answering. An answer that is not streamed is bounded by the request timeout.
pub(crate) struct Reading {
    answer: Answer,
    per_piece: Duration,
    ends: Option<Instant>,
}

impl Reading {
    pub fn whole(answer: Answer, settings: &Settings) -> Self {
        Reading {
            answer,
            per_piece: settings.provider_timeout,
            ends: None,
        }
    }

    pub fn streamed(answer: Answer, settings: &Settings) -> Self {
        Reading {
            ends: Some(Instant::now() + settings.stream_timeout),
            ..Self::whole(answer, settings)
        }
    }

    /// The next piece, `None` at the end, or why the answer failed (a timeout is
    /// [`ProviderError::Timeout`]).
    pub async fn next(&mut self) -> Option<Result<String, ProviderError>> {
        let piece_due = Instant::now() + self.per_piece;
        let due = self.ends.map_or(piece_due, |end| end.min(piece_due));
        match tokio::time::timeout_at(due, self.answer.next()).await {
            Ok(item) => item,
            Err(_) => {
                if self.ends == Some(due) {
                    tracing::warn!("a streamed answer reached the stream timeout");
                }
                Some(Err(ProviderError::Timeout))
            }
        }
    }

    /// Reads the whole answer.
    async fn collect(mut self) -> Result<String, ProviderError> {
        let mut text = String::new();
        while let Some(piece) = self.next().await {
            text.push_str(&piece?);
        }
        Ok(text)
    }
}

/// The key a conversation is carried on for, as the audit log names it.
#[derive(Debug, Clone)]
pub(crate) struct Speaker {
    pub org_id: Uuid,
    pub key: Actor,
}

impl Speaker {
    pub fn of(caller: &Caller) -> Self {
        Speaker {
            org_id: caller.org_id,
            key: caller.actor(),
        }
    }

    fn audit(&self, action: &str) -> AuditRecord {
        self.key.record(self.org_id, action)
    }
}

/// A question waiting for its answer to be stored with it.
pub(crate) struct Pending {
    pub state: AppState,
    pub speaker: Speaker,
    pub agent_id: Uuid,
    pub thread_id: Uuid,
    pub starts: bool,
    pub question: Message,
}

impl Pending {
    pub async fn store(self, text: String) -> Result<(Uuid, Timestamp)> {
        let answer = Message {
            id: Uuid::now_v7(),
            role: MessageRole::Assistant,
            content: text,
            created_at: self.state.settings.clock.now(),
        };
        let (id, at) = (answer.id, answer.created_at);
        let exchange = Exchange {
            conversation_id: self.thread_id,
            agent_id: self.agent_id,
            starts: self.starts,
            question: self.question,
            answer,
            max_messages: self.state.settings.max_conversation_messages,
        };
        let audit = self
            .speaker
            .audit("conversation.message")
            .target(self.thread_id);
        self.state
            .store
            .record_exchange(self.speaker.org_id, &exchange, audit)
            .await?;
        Ok((id, at))
    }

    /// Streams the answer as server-sent events and stores it once complete. An answer that
    /// fails part-way, a timeout included, ends with an `error` event and is not stored.
    fn stream(self, mut answer: Reading) -> Response {
        let request_id = REQUEST_ID.try_with(Clone::clone).unwrap_or_default();
        let (tx, rx) = mpsc::channel::<Event>(64);
        tokio::spawn(async move {
            let mut text = String::new();
            let failure = loop {
                match answer.next().await {
                    Some(Ok(piece)) => {
                        let event = Event::default()
                            .event("delta")
                            .json_data(serde_json::json!({ "text": &piece }));
                        text.push_str(&piece);
                        if let Ok(event) = event {
                            // A client that went away still gets its transcript stored.
                            let _ = tx.send(event).await;
                        }
                    }
                    Some(Err(e)) => break Some(provider_failure(&e)),
                    None => break None,
                }
            };
            let (state, caller, thread_id) =
                (self.state.clone(), self.speaker.clone(), self.thread_id);
            let done = match failure {
                None => self.store(text).await.map(|(message_id, created_at)| {
                    serde_json::json!({ "conversationId": thread_id, "messageId": message_id, "createdAt": created_at })
                }),
                Some(e) => Err(e),
            };
            let event = match done {
                Ok(body) => Event::default().event("done").json_data(body),
                Err(e) => {
                    let mut record = caller.audit("request");
                    record.status = Some(e.code.status().as_u16());
                    record.request_id = Some(request_id.clone());
                    state.recorder.audit(record);
                    Event::default()
                        .event("error")
                        .json_data(serde_json::json!({
                            "code": e.code.as_str(),
                            "status": e.code.status().as_u16(),
                            "requestId": request_id,
                        }))
                }
            };
            if let Ok(event) = event {
                let _ = tx.send(event).await;
            }
        });
        let events = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
        });
        audited(
            Sse::new(events)
                .keep_alive(KeepAlive::default())
                .into_response(),
        )
    }
}

/// Get a conversation and its messages, oldest first.
#[utoipa::path(get, path = "/api/v1/Conversation/{conversationId}", responses((status = 200, body = Conversation)))]
async fn get_conversation(
    Call(state, caller): Call,
    PathId(id): PathId,
) -> Result<Json<Conversation>> {
    Ok(Json(state.store.get_conversation(caller.org_id, id).await?))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(respond))
        .routes(routes!(get_conversation))
        .guard(Policy::STANDARD)
}
