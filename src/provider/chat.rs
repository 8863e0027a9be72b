//! A client for OpenAI-compatible chat-completions servers (Ollama, vLLM, llama.cpp's
//! server, hosted services): the conversation and the attached files go up, the answer
//! streams back.

use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use futures_util::{stream, Stream, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use super::interface::{Answer, Prompt, Provider, ProviderError};
use crate::store::MessageRole;

/// Where the model server is and how to call it.
pub struct ChatCompletions {
    client: reqwest::Client,
    endpoint: String,
    api_key: Option<SecretString>,
    model: String,
}

impl std::fmt::Debug for ChatCompletions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatCompletions")
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key.as_ref().map(|_| "[REDACTED]"))
            .field("model", &self.model)
            .finish()
    }
}

impl ChatCompletions {
    /// `base_url` is the API root, e.g. `http://localhost:11434/v1`.
    pub fn new(
        base_url: &str,
        api_key: Option<SecretString>,
        model: String,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let endpoint = format!("{}/chat/completions", base_url.trim_end_matches('/'));
        Ok(ChatCompletions {
            client,
            endpoint,
            api_key,
            model,
        })
    }

    fn body(&self, prompt: &Prompt) -> Value {
        let mut system = prompt.instructions.clone();
        for file in &prompt.attachments {
            system.push_str(&format!(
                "\n\nAttached file {} ({}):",
                file.name, file.content_type
            ));
            match &file.text {
                Some(text) => system.push_str(&format!("\n{text}")),
                None => system.push_str(" (not text; only its name and type are known)"),
            }
        }
        let mut messages = Vec::with_capacity(prompt.history.len() + 1);
        if !system.trim().is_empty() {
            messages.push(json!({"role": "system", "content": system}));
        }
        for turn in &prompt.history {
            let role = match turn.role {
                MessageRole::User => "user",
                MessageRole::Assistant => "assistant",
            };
            messages.push(json!({"role": role, "content": turn.content}));
        }
        let model = prompt.model.clone().unwrap_or_else(|| self.model.clone());
        json!({"model": model, "messages": messages, "stream": true})
    }
}

#[async_trait]
impl Provider for ChatCompletions {
    async fn answer(&self, prompt: Prompt) -> Result<Answer, ProviderError> {
        let mut request = self.client.post(&self.endpoint).json(&self.body(&prompt));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                ProviderError::Timeout
            } else {
                ProviderError::Upstream(format!("request failed: {}", e.without_url()))
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(ProviderError::Upstream(format!("HTTP {status}")));
        }
        Ok(Box::pin(pieces(response.bytes_stream())))
    }
}

/// Reads `data:` lines of the server-sent events and yields each piece of content.
fn pieces(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
) -> impl Stream<Item = Result<String, ProviderError>> + Send {
    struct Read<S> {
        body: S,
        buffer: Vec<u8>,
        done: bool,
    }
    let start = Read {
        body: Box::pin(body),
        buffer: Vec::new(),
        done: false,
    };
    stream::unfold(start, |mut read| async move {
        loop {
            if read.done {
                return None;
            }
            if let Some(end) = read.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = read.buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                match parse_line(line.trim()) {
                    Line::Skip => continue,
                    Line::Done => return None,
                    Line::Piece(p) => return Some((Ok(p), read)),
                    Line::Error(e) => {
                        read.done = true;
                        return Some((Err(e), read));
                    }
                }
            }
            match read.body.next().await {
                Some(Ok(bytes)) => read.buffer.extend_from_slice(&bytes),
                Some(Err(e)) => {
                    read.done = true;
                    let e = ProviderError::Upstream(format!("stream broke: {}", e.without_url()));
                    return Some((Err(e), read));
                }
                None => {
                    // A stream that ends without [DONE] may still hold a last line.
                    read.done = true;
                    let rest = std::mem::take(&mut read.buffer);
                    return match parse_line(String::from_utf8_lossy(&rest).trim()) {
                        Line::Piece(p) => Some((Ok(p), read)),
                        Line::Error(e) => Some((Err(e), read)),
                        Line::Skip | Line::Done => None,
                    };
                }
            }
        }
    })
}

enum Line {
    Skip,
    Done,
    Piece(String),
    Error(ProviderError),
}

fn parse_line(line: &str) -> Line {
    let Some(data) = line.strip_prefix("data:") else {
        return Line::Skip;
    };
    let data = data.trim();
    if data == "[DONE]" {
        return Line::Done;
    }
    let Ok(value) = serde_json::from_str::<Value>(data) else {
        return Line::Error(ProviderError::Upstream(
            "a streamed chunk is not JSON".into(),
        ));
    };
    if value.get("error").is_some() {
        return Line::Error(ProviderError::Upstream(
            "the stream reported an error".into(),
        ));
    }
    match value
        .pointer("/choices/0/delta/content")
        .and_then(Value::as_str)
    {
        // U+0000 cannot be stored (PostgreSQL text refuses it) and means nothing in an
        // answer: it is dropped.
        Some(text) if text.contains('\0') => match text.replace('\0', "") {
            t if t.is_empty() => Line::Skip,
            t => Line::Piece(t),
        },
        Some(text) if !text.is_empty() => Line::Piece(text.to_owned()),
        _ => Line::Skip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_the_stream_are_read_as_pieces() {
        let nul = r#"data: {"choices":[{"delta":{"content":"a\u0000b"}}]}"#;
        assert!(matches!(parse_line(nul), Line::Piece(t) if t == "ab"));
        let piece = r#"data: {"choices":[{"delta":{"content":"Hel"}}]}"#;
        assert!(matches!(parse_line(piece), Line::Piece(p) if p == "Hel"));
        assert!(matches!(parse_line("data: [DONE]"), Line::Done));
        assert!(matches!(parse_line(": keep-alive"), Line::Skip));
        assert!(matches!(
            parse_line(r#"data: {"choices":[{"delta":{"role":"assistant"}}]}"#),
            Line::Skip
        ));
        assert!(matches!(parse_line("data: nope"), Line::Error(_)));
        assert!(matches!(
            parse_line(r#"data: {"error":{"message":"x"}}"#),
            Line::Error(_)
        ));
    }
}
