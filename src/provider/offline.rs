//! The built-in responder: no model, no network. It answers deterministically and says
//! what it was given, so integrations can be built and tested before a model is connected.

use async_trait::async_trait;
use futures_util::stream;

use super::interface::{Answer, Prompt, Provider, ProviderError};
use crate::store::MessageRole;

#[derive(Debug, Default)]
pub struct OfflineResponder;

fn excerpt(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max).collect::<String>())
    }
}

impl OfflineResponder {
    /// The full answer to a prompt; the same prompt always gets the same answer.
    pub fn compose(prompt: &Prompt) -> String {
        let question = prompt
            .history
            .iter()
            .rev()
            .find(|t| t.role == MessageRole::User)
            .map(|t| excerpt(&t.content, 200))
            .unwrap_or_default();
        let earlier = prompt.history.len().saturating_sub(1);
        let mut out = format!(
            "This is siesta's offline responder: no language model is connected, so this answer \
             only reports what agent \"{}\" was given. ",
            prompt.agent_name
        );
        if prompt.instructions.trim().is_empty() {
            out.push_str("The agent has no instructions. ");
        } else {
            out.push_str(&format!(
                "Instructions: \"{}\". ",
                excerpt(&prompt.instructions, 120)
            ));
        }
        out.push_str(&format!(
            "Earlier messages in this conversation: {earlier}. "
        ));
        if prompt.attachments.is_empty() {
            out.push_str("No files attached. ");
        } else {
            let files: Vec<String> = prompt
                .attachments
                .iter()
                .map(|a| match &a.text {
                    Some(text) => format!(
                        "{} ({}, {} characters of text)",
                        a.name,
                        a.content_type,
                        text.chars().count()
                    ),
                    None => format!("{} ({})", a.name, a.content_type),
                })
                .collect();
            out.push_str(&format!("Attached files: {}. ", files.join(", ")));
        }
        out.push_str(&format!("Your message: \"{question}\"."));
        out
    }
}

#[async_trait]
impl Provider for OfflineResponder {
    async fn answer(&self, prompt: Prompt) -> Result<Answer, ProviderError> {
        let text = Self::compose(&prompt);
        // Word by word, spaces kept, so streaming clients see it arrive in pieces.
        let pieces: Vec<Result<String, ProviderError>> = text
            .split_inclusive(' ')
            .map(|w| Ok(w.to_owned()))
            .collect();
        Ok(Box::pin(stream::iter(pieces)))
    }
}
