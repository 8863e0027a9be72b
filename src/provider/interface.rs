//! What every provider takes and gives: the prompt, the streamed answer, its errors.

use std::pin::Pin;

use async_trait::async_trait;
use futures_util::Stream;

use crate::store::MessageRole;

/// One message of the conversation so far.
#[derive(Debug, Clone)]
pub struct Turn {
    pub role: MessageRole,
    pub content: String,
}

/// A file attached to the message: its text when it is text, else its name and type.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub text: Option<String>,
}

/// Everything a provider is given to answer with.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The agent's model, if it names one; else the provider's default.
    pub model: Option<String>,
    pub agent_name: String,
    pub instructions: String,
    /// The conversation, oldest first, ending with the message to answer.
    pub history: Vec<Turn>,
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The provider answered with an error or something that is not an answer.
    #[error("the model provider failed: {0}")]
    Upstream(String),
    /// The provider did not answer in time.
    #[error("the model provider did not answer in time")]
    Timeout,
}

/// The answer as it arrives, a piece of text at a time.
pub type Answer = Pin<Box<dyn Stream<Item = Result<String, ProviderError>> + Send>>;

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Starts answering; the stream yields the text as it is produced.
    async fn answer(&self, prompt: Prompt) -> Result<Answer, ProviderError>;
}
