//! What the store keeps and the one interface to it, whatever the database.

use async_trait::async_trait;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::clock::Timestamp;
use crate::key::{Environment, KeyDigest, Scope};

pub use crate::audit::{AuditCursor, AuditFilter, AuditRecord};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// The widest scope a key of a member with this role may act with.
    pub fn max_scope(self) -> Scope {
        match self {
            Role::Owner | Role::Admin => Scope::Admin,
            Role::Member => Scope::Write,
        }
    }

    /// The scope a key of `scope` acts with while its owner has this role.
    pub fn cap(self, scope: Scope) -> Scope {
        scope.min(self.max_scope())
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    pub org_id: Uuid,
    pub user_id: Uuid,
    pub role: Role,
    pub created_at: Timestamp,
}

/// An API key as stored: everything but the key itself.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    pub id: Uuid,
    pub org_id: Uuid,
    #[schema(example = "crm-prod-sync")]
    pub name: String,
    pub environment: Environment,
    /// As created or rotated. The key acts with less while its owner's role allows less
    /// (`GET /api/v1/Me` shows what it acts with).
    pub scope: Scope,
    /// Prefix, first four and last four characters: enough to recognise the key.
    #[schema(example = "sai_live_Ab3x…9fQz")]
    pub hint: String,
    /// The member the key acts for. It works only while the membership it was created
    /// under lasts (a member removed and added back does not bring it back), and acts with
    /// at most the scope their current role allows.
    pub created_by: Uuid,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// Requests per minute; when absent the server default applies.
    #[schema(example = 600)]
    pub rate_limit: Option<u32>,
    pub last_used_at: Option<Timestamp>,
    /// Set once the key has been rotated: the id of its successor.
    pub replaced_by: Option<Uuid>,
    /// For a rotated key: when it stops working.
    pub grace_ends_at: Option<Timestamp>,
}

impl KeyRecord {
    /// The first instant at which the key no longer works, if any.
    pub fn ends_at(&self) -> Option<Timestamp> {
        match (self.expires_at, self.grace_ends_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What authentication needs to know about a key, read in one query.
#[derive(Debug, Clone)]
pub struct KeyGrant {
    pub key: KeyRecord,
    pub digest: KeyDigest,
    pub org_name: String,
    /// The owner's current role, while the membership the key was created under lasts;
    /// `None` once the owner has been removed since, even if added back later.
    pub owner_role: Option<Role>,
}

impl KeyGrant {
    /// Whether the key still carries its creator's authority at `now`: within its expiry
    /// and grace, and its creator a member since before it was created.
    pub fn works_at(&self, now: Timestamp) -> bool {
        self.owner_role.is_some() && self.key.ends_at().is_none_or(|end| now < end)
    }
}

/// A key about to be stored: its digest, never its value.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: Uuid,
    pub name: String,
    pub environment: Environment,
    pub scope: Scope,
    pub digest: KeyDigest,
    pub hint: String,
    pub created_by: Uuid,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub rate_limit: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    pub search: Option<String>,
    /// Only keys whose last use (or creation, if never used) is before this instant.
    pub unused_since: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub id: Uuid,
    #[schema(example = "Support triage")]
    pub name: String,
    #[schema(example = "Sorts incoming tickets.")]
    pub description: String,
    #[schema(example = "Answer briefly.")]
    pub instructions: String,
    /// The model that answers for this agent; when absent the server's default.
    #[schema(example = "llama3.1:8b")]
    pub model: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct AgentFields {
    pub name: String,
    pub description: String,
    pub instructions: String,
    pub model: Option<String>,
}

/// An object that is a name and a description: a task workspace or a data source
/// collection (each kind in its own [`Catalog`]).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Named {
    pub id: Uuid,
    #[schema(example = "Customer support")]
    pub name: String,
    #[schema(example = "The support team's work.")]
    pub description: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Which kind of [`Named`] object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Catalog {
    /// Where an organization's tasks live.
    TaskWorkspaces,
    /// Named groups of data sources that agents can draw on.
    DataSourceCollections,
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Open,
    InProgress,
    Done,
    Cancelled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Open => "open",
            TaskStatus::InProgress => "in_progress",
            TaskStatus::Done => "done",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(TaskStatus::Open),
            "in_progress" => Some(TaskStatus::InProgress),
            "done" => Some(TaskStatus::Done),
            "cancelled" => Some(TaskStatus::Cancelled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: Uuid,
    /// The workspace the task lives in; always one of the organization's own.
    pub workspace_id: Uuid,
    #[schema(example = "Reply to the refund request")]
    pub title: String,
    #[schema(example = "Refund order 1042.")]
    pub description: String,
    pub status: TaskStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub workspace_id: Option<Uuid>,
    pub status: Option<TaskStatus>,
}

/// Who in the organization can use a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Only the member who created it (through any of their keys).
    Private,
    /// Everyone in the organization.
    Shared,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Shared => "shared",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "private" => Some(Visibility::Private),
            "shared" => Some(Visibility::Shared),
            _ => None,
        }
    }
}

/// A connection to an outside system, such as a CRM or a ticket tracker.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    pub id: Uuid,
    pub name: String,
    /// The kind of system, such as `salesforce` or `zendesk`.
    #[serde(rename = "type")]
    pub kind: String,
    pub visibility: Visibility,
    /// The member whose key created the connection; a private connection is theirs alone.
    pub created_by: Uuid,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A temporary file's metadata; its bytes are on disk under the data directory.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredFile {
    pub id: Uuid,
    pub name: String,
    /// Bytes.
    pub size: i64,
    pub content_type: String,
    pub created_at: Timestamp,
    /// After this the file is gone from disk and database.
    pub expires_at: Timestamp,
}

/// A one-time realtime session, as stored: the digest of its secret, never the secret.
#[derive(Debug, Clone)]
pub struct RealtimeSession {
    pub id: Uuid,
    pub org_id: Uuid,
    pub agent_id: Uuid,
    pub conversation_id: Uuid,
    /// True when the session continues an existing conversation.
    pub continues: bool,
    pub secret_digest: KeyDigest,
    /// The key that created the session, for the audit log.
    pub key_id: Uuid,
    pub key_name: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    User,
    Assistant,
}

impl MessageRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(MessageRole::User),
            "assistant" => Some(MessageRole::Assistant),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: Uuid,
    pub role: MessageRole,
    pub content: String,
    pub created_at: Timestamp,
}

/// A conversation with one agent and its messages, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub messages: Vec<Message>,
}

/// What a new message in a conversation is answered with.
#[derive(Debug, Clone)]
pub struct ConversationTail {
    pub agent_id: Uuid,
    /// Messages the conversation holds, both roles counted.
    pub held: i64,
    /// The newest messages whose characters (Unicode scalar values) add up to no more than
    /// the budget asked for, oldest first: walking back from the newest, the first message
    /// that does not fit ends them.
    pub recent: Vec<Message>,
}

/// A message and its answer, stored together.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub conversation_id: Uuid,
    pub agent_id: Uuid,
    /// True when this exchange starts the conversation.
    pub starts: bool,
    pub question: Message,
    pub answer: Message,
    /// The most messages the conversation may hold once this exchange is stored.
    pub max_messages: u32,
}

/// Refuses a question that would take a conversation holding `held` messages past `max`
/// together with its answer.
pub fn ensure_room(held: i64, max: u32) -> StoreResult<()> {
    if held + 2 > i64::from(max) {
        return Err(StoreError::Conflict(format!(
            "This conversation is full: it holds {held} messages and may hold at most {max}, \
             questions and answers counted. Start a new conversation."
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub offset: i64,
    pub limit: i64,
}

/// A page of results and the number of all matches.
#[derive(Debug, Clone)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub total: i64,
}

/// What the first start of a server creates.
pub struct Bootstrap {
    pub org: Organization,
    pub user: User,
    pub key: NewKey,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap query that proves the database answers.
    async fn ping(&self) -> StoreResult<()>;
    /// A counter bumped by every change that can invalidate a verified key, by any process.
    async fn generation(&self) -> StoreResult<i64>;

    /// Creates the first organization, owner and key, unless any organization exists.
    async fn bootstrap(&self, boot: &Bootstrap) -> StoreResult<bool>;

    async fn create_org(&self, org: &Organization) -> StoreResult<()>;
    async fn list_orgs(&self) -> StoreResult<Vec<Organization>>;
    async fn get_org(&self, org_id: Uuid) -> StoreResult<Organization>;

    async fn create_user(&self, user: &User) -> StoreResult<()>;
    /// Finds a user by id or by email.
    async fn find_user(&self, id_or_email: &str) -> StoreResult<User>;
    /// Sets a user's console password, as its PHC string; `NotFound` for no such user.
    async fn set_password(&self, user_id: Uuid, password_hash: &str) -> StoreResult<()>;
    /// A user's console password as stored, `None` while none is set.
    async fn password_hash(&self, user_id: Uuid) -> StoreResult<Option<String>>;

    /// Adds a member, or changes the role of one: a role change keeps the membership, and
    /// with it the member's keys.
    async fn add_member(&self, m: &Membership, audit: AuditRecord) -> StoreResult<()>;
    /// Ends a membership, and every key created under it, for good.
    async fn remove_member(
        &self,
        org_id: Uuid,
        user_id: Uuid,
        audit: AuditRecord,
    ) -> StoreResult<()>;

    /// Stores a key of the member `key.created_by`, whose current role must allow its scope.
    async fn create_key(
        &self,
        org_id: Uuid,
        key: &NewKey,
        audit: AuditRecord,
    ) -> StoreResult<KeyRecord>;
    async fn list_keys(&self, org_id: Uuid, filter: &KeyFilter) -> StoreResult<Vec<KeyRecord>>;
    async fn get_key(&self, org_id: Uuid, key_id: Uuid) -> StoreResult<KeyRecord>;
    /// The organization a key belongs to: only for the command line, which names keys by id.
    async fn key_org(&self, key_id: Uuid) -> StoreResult<Uuid>;
    /// Replaces a key with `successor`, which belongs to the same membership and keeps the
    /// scope as stored; the old one works until `grace_ends_at`.
    async fn rotate_key(
        &self,
        org_id: Uuid,
        key_id: Uuid,
        grace_ends_at: Timestamp,
        successor: &NewKey,
        audit: AuditRecord,
    ) -> StoreResult<KeyRecord>;
    async fn delete_key(&self, org_id: Uuid, key_id: Uuid, audit: AuditRecord) -> StoreResult<()>;
    /// Looks a presented key up by the digest of its value.
    async fn find_grant(&self, digest: &KeyDigest) -> StoreResult<Option<KeyGrant>>;
    /// The same for a key known by its id: whether it still works for what it started.
    async fn key_grant(&self, org_id: Uuid, key_id: Uuid) -> StoreResult<Option<KeyGrant>>;

    async fn list_agents(
        &self,
        org_id: Uuid,
        search: Option<&str>,
        page: Page,
    ) -> StoreResult<Listed<Agent>>;
    async fn create_agent(
        &self,
        org_id: Uuid,
        agent: &Agent,
        audit: AuditRecord,
    ) -> StoreResult<()>;
    async fn get_agent(&self, org_id: Uuid, agent_id: Uuid) -> StoreResult<Agent>;
    async fn update_agent(
        &self,
        org_id: Uuid,
        agent: &Agent,
        audit: AuditRecord,
    ) -> StoreResult<()>;
    async fn delete_agent(
        &self,
        org_id: Uuid,
        agent_id: Uuid,
        audit: AuditRecord,
    ) -> StoreResult<()>;

    async fn list_named(
        &self,
        catalog: Catalog,
        org_id: Uuid,
        page: Page,
    ) -> StoreResult<Listed<Named>>;
    async fn create_named(
        &self,
        catalog: Catalog,
        org_id: Uuid,
        object: &Named,
        audit: AuditRecord,
    ) -> StoreResult<()>;
    async fn get_named(&self, catalog: Catalog, org_id: Uuid, id: Uuid) -> StoreResult<Named>;

    async fn list_tasks(
        &self,
        org_id: Uuid,
        filter: &TaskFilter,
        page: Page,
    ) -> StoreResult<Listed<Task>>;
    /// Creates a task; its workspace must be the organization's own (else not found).
    async fn create_task(&self, org_id: Uuid, task: &Task, audit: AuditRecord) -> StoreResult<()>;
    async fn get_task(&self, org_id: Uuid, task_id: Uuid) -> StoreResult<Task>;
    async fn update_task(&self, org_id: Uuid, task: &Task, audit: AuditRecord) -> StoreResult<()>;

    /// Connections visible to a member's keys: shared ones, and the member's private ones.
    async fn list_connections(
        &self,
        org_id: Uuid,
        member: Uuid,
        page: Page,
    ) -> StoreResult<Listed<Connection>>;
    async fn create_connection(
        &self,
        org_id: Uuid,
        c: &Connection,
        audit: AuditRecord,
    ) -> StoreResult<()>;
    async fn get_connection(&self, org_id: Uuid, member: Uuid, id: Uuid)
        -> StoreResult<Connection>;

    async fn get_conversation(
        &self,
        org_id: Uuid,
        conversation_id: Uuid,
    ) -> StoreResult<Conversation>;
    /// A conversation's agent and its newest messages within `chars` characters, read
    /// without loading the rest: what a provider is sent with a new message.
    async fn conversation_tail(
        &self,
        org_id: Uuid,
        conversation_id: Uuid,
        chars: usize,
    ) -> StoreResult<ConversationTail>;
    /// Stores a message and its answer, starting the conversation if needed; `Conflict` (see
    /// [`ensure_room`]) if that would take it past the exchange's `max_messages`. Exchanges
    /// of one conversation are stored one after the other, so racing ones cannot together
    /// pass the limit.
    async fn record_exchange(
        &self,
        org_id: Uuid,
        exchange: &Exchange,
        audit: AuditRecord,
    ) -> StoreResult<()>;

    async fn create_file(
        &self,
        org_id: Uuid,
        file: &StoredFile,
        audit: AuditRecord,
    ) -> StoreResult<()>;
    /// The file if it belongs to the organization and has not expired.
    async fn get_file(
        &self,
        org_id: Uuid,
        file_id: Uuid,
        now: Timestamp,
    ) -> StoreResult<StoredFile>;
    /// Up to `limit` files that expired before `now`.
    async fn expired_files(&self, now: Timestamp, limit: i64) -> StoreResult<Vec<Uuid>>;
    async fn forget_files(&self, ids: &[Uuid]) -> StoreResult<()>;

    async fn create_realtime_session(
        &self,
        session: &RealtimeSession,
        audit: AuditRecord,
    ) -> StoreResult<()>;
    /// Marks an unexpired, unused session whose secret has this digest as used, and returns
    /// it: a session can be claimed once. `NotFound` for an unknown id or a wrong secret
    /// (which does not use the session up), `Conflict` for a used or expired one.
    async fn claim_realtime_session(
        &self,
        session_id: Uuid,
        secret: &KeyDigest,
        now: Timestamp,
    ) -> StoreResult<RealtimeSession>;

    /// Writes buffered request records and last-use times (org, key, when) in one transaction.
    async fn record_batch(
        &self,
        audit: &[AuditRecord],
        last_used: &[(Uuid, Uuid, Timestamp)],
    ) -> StoreResult<()>;
    /// Up to `limit` records after `cursor` (newest first), each with the cursor of the next
    /// page: a stable walk over every matching record, however many arrive meanwhile.
    async fn export_audit(
        &self,
        org_id: Uuid,
        filter: &AuditFilter,
        cursor: Option<AuditCursor>,
        limit: i64,
    ) -> StoreResult<(Vec<AuditRecord>, Option<AuditCursor>)>;
    async fn list_audit(
        &self,
        org_id: Uuid,
        filter: &AuditFilter,
        page: Page,
    ) -> StoreResult<Listed<AuditRecord>>;
}
