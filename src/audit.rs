//! The audit log: what an entry says, who caused it, and how a response tells the request
//! log that its entry is already written.
//!
//! Entries are written with the change they report, in the same transaction (the store's
//! `audit` argument), or, for requests that change nothing, in batches by the
//! [`Recorder`](crate::recorder::Recorder). `GET /AuditLog` reads them back
//! (`src/api/audit_log.rs`).

use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::clock::Timestamp;

/// Who caused an event: a key, the command line, or the server itself on its first start.
#[derive(Debug, Clone)]
pub enum Actor {
    Key { id: Uuid, name: String },
    Cli,
    Server,
}

impl Actor {
    /// The `actor` of its entries.
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::Key { .. } => "api_key",
            Actor::Cli => "cli",
            Actor::Server => "server",
        }
    }

    /// An entry for `action` in `org_id`, naming the acting key when there is one.
    pub fn record(&self, org_id: Uuid, action: &str) -> AuditRecord {
        let record = AuditRecord::event(org_id, action, self.kind());
        match self {
            Actor::Key { id, name } => record.key(*id, name),
            Actor::Cli | Actor::Server => record,
        }
    }
}

/// One entry of the audit log.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub id: Uuid,
    #[serde(skip)]
    pub org_id: Uuid,
    pub at: Timestamp,
    /// What happened, such as `api_key.created` or `request`.
    pub action: String,
    /// Who did it: `api_key`, `cli` or `server`.
    pub actor: String,
    /// The key that made the request or that the event is about, by id.
    pub key_id: Option<Uuid>,
    /// That key's name (never its value).
    pub key_name: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub status: Option<u16>,
    pub request_id: Option<String>,
    /// The object the event concerns, such as an agent or key id.
    pub target_id: Option<String>,
}

impl AuditRecord {
    pub fn event(org_id: Uuid, action: &str, actor: &str) -> Self {
        AuditRecord {
            id: Uuid::now_v7(),
            org_id,
            at: Timestamp::now(),
            action: action.to_owned(),
            actor: actor.to_owned(),
            key_id: None,
            key_name: None,
            method: None,
            path: None,
            status: None,
            request_id: None,
            target_id: None,
        }
    }

    pub fn target(mut self, id: impl ToString) -> Self {
        self.target_id = Some(id.to_string());
        self
    }

    pub fn key(mut self, id: Uuid, name: &str) -> Self {
        self.key_id = Some(id);
        self.key_name = Some(name.to_owned());
        self
    }
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub action: Option<String>,
}

/// Where an export of the audit log has got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCursor {
    pub at: i64,
    pub seq: i64,
}

impl AuditRecord {
    /// What a request asked and how it was answered, with the id the client was given.
    pub fn answered(
        mut self,
        method: &str,
        path: String,
        status: u16,
        request_id: Option<String>,
    ) -> Self {
        self.method = Some(method.to_owned());
        self.path = Some(path);
        self.status = Some(status);
        self.request_id = request_id;
        self
    }
}

/// Marks a response whose handler wrote its own audit entry in its transaction.
#[derive(Debug, Clone, Copy)]
pub struct Audited;

/// Marks a response whose audit entry was written with the change it reports.
pub fn audited(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response.extensions_mut().insert(Audited);
    response
}
