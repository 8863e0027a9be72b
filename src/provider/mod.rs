//! Where agents' answers come from, behind one trait: the built-in offline responder (the
//! default, so the server is useful with no network) or a chat-completions server.

mod chat;
mod interface;
mod offline;

pub use chat::ChatCompletions;
pub use interface::{Answer, Attachment, Prompt, Provider, ProviderError, Turn};
pub use offline::OfflineResponder;
