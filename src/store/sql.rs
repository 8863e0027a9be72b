//! What the two SQL backends share: the column lists and filters, the decoding of rows,
//! and the errors they report, in the same words.
//!
//! Shared SQL numbers its placeholders `$1`, `$2`, ...: PostgreSQL's syntax, which sqlx also
//! reads for SQLite, so one text serves both.

use sqlx::{
    Arguments, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type,
};

use super::*;

/// Reads a stored UUID, whatever type the database keeps it in.
pub(super) trait UuidColumn {
    fn opt_uuid(&self, col: &str) -> StoreResult<Option<Uuid>>;
}

/// The column types the stores read, for any row of either database.
pub(super) trait Columns: UuidColumn {
    fn text(&self, col: &str) -> StoreResult<String>;
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>>;
    fn int(&self, col: &str) -> StoreResult<i64>;
    fn opt_int(&self, col: &str) -> StoreResult<Option<i64>>;
    fn flag(&self, col: &str) -> StoreResult<bool>;
    fn bytes(&self, col: &str) -> StoreResult<Vec<u8>>;
}

impl<R, DB> Columns for R
where
    R: Row<Database = DB> + UuidColumn,
    DB: Database,
    for<'a> &'a str: ColumnIndex<R>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    i64: for<'r> Decode<'r, DB> + Type<DB>,
    bool: for<'r> Decode<'r, DB> + Type<DB>,
    Vec<u8>: for<'r> Decode<'r, DB> + Type<DB>,
{
    fn text(&self, col: &str) -> StoreResult<String> {
        self.try_get(col).map_err(column_err)
    }
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>> {
        self.try_get(col).map_err(column_err)
    }
    fn int(&self, col: &str) -> StoreResult<i64> {
        self.try_get(col).map_err(column_err)
    }
    fn opt_int(&self, col: &str) -> StoreResult<Option<i64>> {
        self.try_get(col).map_err(column_err)
    }
    fn flag(&self, col: &str) -> StoreResult<bool> {
        self.try_get(col).map_err(column_err)
    }
    fn bytes(&self, col: &str) -> StoreResult<Vec<u8>> {
        self.try_get(col).map_err(column_err)
    }
}

/// A column that is missing or of the wrong type: a bug, not a state of the database.
pub(super) fn column_err(e: sqlx::Error) -> StoreError {
    StoreError::Internal(e.to_string())
}

pub(super) fn parse_uuid(col: &str, s: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(s).map_err(|e| StoreError::Internal(format!("{col}: {e}")))
}

pub(super) fn uuid_col(row: &impl Columns, col: &str) -> StoreResult<Uuid> {
    row.opt_uuid(col)?
        .ok_or_else(|| StoreError::Internal(format!("{col}: unexpected NULL")))
}

pub(super) fn opt_uuid_col(row: &impl Columns, col: &str) -> StoreResult<Option<Uuid>> {
    row.opt_uuid(col)
}

pub(super) fn ts_col(row: &impl Columns, col: &str) -> StoreResult<Timestamp> {
    row.int(col).map(Timestamp)
}

pub(super) fn opt_ts_col(row: &impl Columns, col: &str) -> StoreResult<Option<Timestamp>> {
    Ok(row.opt_int(col)?.map(Timestamp))
}

pub(super) fn str_col(row: &impl Columns, col: &str) -> StoreResult<String> {
    row.text(col)
}

pub(super) fn digest_col(row: &impl Columns, col: &str) -> StoreResult<KeyDigest> {
    KeyDigest::from_slice(&row.bytes(col)?)
        .ok_or_else(|| StoreError::Internal("digest length".into()))
}

/// A stored enumeration value, such as a scope or a status.
fn enum_col<T>(row: &impl Columns, col: &str, parse: fn(&str) -> Option<T>) -> StoreResult<T> {
    let s = row.text(col)?;
    parse(&s).ok_or_else(|| StoreError::Internal(format!("{col} {s:?}")))
}

pub(super) const ORG_COLUMNS: &str = "id, name, created_at";

pub(super) fn org_from_row(row: &impl Columns) -> StoreResult<Organization> {
    Ok(Organization {
        id: uuid_col(row, "id")?,
        name: str_col(row, "name")?,
        created_at: ts_col(row, "created_at")?,
    })
}

pub(super) fn user_from_row(row: &impl Columns) -> StoreResult<User> {
    Ok(User {
        id: uuid_col(row, "id")?,
        email: str_col(row, "email")?,
        created_at: ts_col(row, "created_at")?,
    })
}

pub(super) const KEY_COLUMNS: &str =
    "k.id, k.org_id, k.name, k.environment, k.scope, k.digest, k.hint, \
     k.created_by, k.created_at, k.expires_at, k.rate_limit, k.last_used_at, k.replaced_by, \
     k.grace_ends_at";

/// `$1` org, `$2` key: a key that has not been deleted.
pub(super) fn key_by_id() -> String {
    format!(
        "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.org_id = $1 AND k.id = $2 AND k.deleted_at IS NULL"
    )
}

/// `$1` org, `$2` name, `$3` now: keys that still answer requests under their name, that
/// is not deleted, not replaced, not expired.
pub(super) const LIVE_KEY_NAMED: &str =
    "SELECT 1 FROM api_keys WHERE org_id = $1 AND name = $2 AND deleted_at IS NULL \
     AND replaced_by IS NULL AND (expires_at IS NULL OR expires_at > $3)";

/// `$1` org, `$2` search (a case-insensitive substring of the name), `$3` unused since: the
/// organization's keys, oldest first. `instr` is SQLite's; the PostgreSQL schema defines it.
pub(super) fn key_list() -> String {
    format!(
        "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.org_id = $1 AND k.deleted_at IS NULL \
         AND ($2 IS NULL OR instr(lower(k.name), lower($2)) > 0) \
         AND ($3 IS NULL OR COALESCE(k.last_used_at, k.created_at) < $3) \
         ORDER BY k.created_at, k.id"
    )
}

/// A key that has not been deleted, with its organization's name and its creator's role,
/// chosen by `condition`. The role is NULL unless the membership the key was created under
/// still lasts: a member removed and added back has a new membership.
fn grant_where(condition: &str) -> String {
    format!(
        "SELECT {KEY_COLUMNS}, o.name AS org_name, m.role AS owner_role \
         FROM api_keys k JOIN organizations o ON o.id = k.org_id \
         LEFT JOIN members m ON m.org_id = k.org_id AND m.user_id = k.created_by \
         AND m.id = k.membership_id \
         WHERE {condition} AND k.deleted_at IS NULL"
    )
}

/// `$1` digest: the grant of a presented key.
pub(super) fn grant_by_digest() -> String {
    grant_where("k.digest = $1")
}

/// `$1` org, `$2` key: the grant of a key known by its id.
pub(super) fn grant_by_id() -> String {
    grant_where("k.org_id = $1 AND k.id = $2")
}

pub(super) fn key_from_row(row: &impl Columns) -> StoreResult<KeyRecord> {
    Ok(KeyRecord {
        id: uuid_col(row, "id")?,
        org_id: uuid_col(row, "org_id")?,
        name: str_col(row, "name")?,
        environment: enum_col(row, "environment", Environment::parse)?,
        scope: enum_col(row, "scope", Scope::parse)?,
        hint: str_col(row, "hint")?,
        created_by: uuid_col(row, "created_by")?,
        created_at: ts_col(row, "created_at")?,
        expires_at: opt_ts_col(row, "expires_at")?,
        rate_limit: row.opt_int("rate_limit")?.map(|n| n as u32),
        last_used_at: opt_ts_col(row, "last_used_at")?,
        replaced_by: opt_uuid_col(row, "replaced_by")?,
        grace_ends_at: opt_ts_col(row, "grace_ends_at")?,
    })
}

pub(super) fn grant_from_row(row: &impl Columns) -> StoreResult<KeyGrant> {
    Ok(KeyGrant {
        key: key_from_row(row)?,
        digest: digest_col(row, "digest")?,
        org_name: str_col(row, "org_name")?,
        owner_role: row
            .opt_text("owner_role")?
            .map(|r| Role::parse(&r).ok_or_else(|| StoreError::Internal(format!("role {r:?}"))))
            .transpose()?,
    })
}

/// `$1` org, `$2` user: the member's role and the id of their membership, which a key
/// created now belongs to.
pub(super) const MEMBERSHIP: &str =
    "SELECT role, id FROM members WHERE org_id = $1 AND user_id = $2";

pub(super) fn membership_from_row(row: &impl Columns) -> StoreResult<(Role, Uuid)> {
    Ok((enum_col(row, "role", Role::parse)?, uuid_col(row, "id")?))
}

/// A new key acts for a member whose role must allow its scope. (A key whose owner is
/// demoted later is capped when it is used.)
pub(super) fn ensure_scope_allowed(role: Role, scope: Scope) -> StoreResult<()> {
    if role.cap(scope) == scope {
        return Ok(());
    }
    Err(StoreError::Invalid {
        field: "scope",
        message: format!(
            "can be at most {} while the key's owner has the role {} in the organization",
            role.max_scope(),
            role.as_str()
        ),
    })
}

/// `$1` successor, `$2` end of grace, `$3` org, `$4` key: marks a key replaced, and returns
/// the membership it was created under, which its successor keeps.
pub(super) const REPLACE_KEY: &str =
    "UPDATE api_keys SET replaced_by = $1, grace_ends_at = $2 WHERE org_id = $3 AND id = $4 \
     RETURNING membership_id";

pub(super) const AGENT_COLUMNS: &str =
    "id, name, description, instructions, model, created_at, updated_at";

/// `$1` org, `$2` search: a case-insensitive substring of the name or the description.
pub(super) const AGENT_FILTER: &str =
    "org_id = $1 AND ($2 IS NULL OR instr(lower(name), lower($2)) > 0 \
     OR instr(lower(description), lower($2)) > 0)";

pub(super) fn agent_from_row(row: &impl Columns) -> StoreResult<Agent> {
    Ok(Agent {
        id: uuid_col(row, "id")?,
        name: str_col(row, "name")?,
        description: str_col(row, "description")?,
        instructions: str_col(row, "instructions")?,
        model: row.opt_text("model")?,
        created_at: ts_col(row, "created_at")?,
        updated_at: ts_col(row, "updated_at")?,
    })
}

pub(super) const NAMED_COLUMNS: &str = "id, name, description, created_at, updated_at";

impl Catalog {
    pub(super) fn table(self) -> &'static str {
        match self {
            Catalog::TaskWorkspaces => "task_workspaces",
            Catalog::DataSourceCollections => "data_source_collections",
        }
    }
}

pub(super) fn named_from_row(row: &impl Columns) -> StoreResult<Named> {
    Ok(Named {
        id: uuid_col(row, "id")?,
        name: str_col(row, "name")?,
        description: str_col(row, "description")?,
        created_at: ts_col(row, "created_at")?,
        updated_at: ts_col(row, "updated_at")?,
    })
}

pub(super) const TASK_COLUMNS: &str =
    "id, workspace_id, title, description, status, created_at, updated_at";
/// `$1` org, `$2` workspace, `$3` status.
pub(super) const TASK_FILTER: &str =
    "org_id = $1 AND ($2 IS NULL OR workspace_id = $2) AND ($3 IS NULL OR status = $3)";

pub(super) fn task_from_row(row: &impl Columns) -> StoreResult<Task> {
    Ok(Task {
        id: uuid_col(row, "id")?,
        workspace_id: uuid_col(row, "workspace_id")?,
        title: str_col(row, "title")?,
        description: str_col(row, "description")?,
        status: enum_col(row, "status", TaskStatus::parse)?,
        created_at: ts_col(row, "created_at")?,
        updated_at: ts_col(row, "updated_at")?,
    })
}

pub(super) const CONNECTION_COLUMNS: &str =
    "id, name, type, visibility, created_by, created_at, updated_at";
/// `$1` org, `$2` member: private connections are visible only to keys of the member who
/// created them.
pub(super) const CONNECTION_VISIBLE: &str =
    "org_id = $1 AND (visibility = 'shared' OR created_by = $2)";

pub(super) fn connection_from_row(row: &impl Columns) -> StoreResult<Connection> {
    Ok(Connection {
        id: uuid_col(row, "id")?,
        name: str_col(row, "name")?,
        kind: str_col(row, "type")?,
        visibility: enum_col(row, "visibility", Visibility::parse)?,
        created_by: uuid_col(row, "created_by")?,
        created_at: ts_col(row, "created_at")?,
        updated_at: ts_col(row, "updated_at")?,
    })
}

pub(super) fn message_from_row(row: &impl Columns) -> StoreResult<Message> {
    Ok(Message {
        id: uuid_col(row, "id")?,
        role: enum_col(row, "role", MessageRole::parse)?,
        content: str_col(row, "content")?,
        created_at: ts_col(row, "created_at")?,
    })
}

pub(super) fn conversation_from_rows<R: Columns>(
    row: &R,
    messages: &[R],
) -> StoreResult<Conversation> {
    Ok(Conversation {
        id: uuid_col(row, "id")?,
        agent_id: uuid_col(row, "agent_id")?,
        created_at: ts_col(row, "created_at")?,
        updated_at: ts_col(row, "updated_at")?,
        messages: messages
            .iter()
            .map(message_from_row)
            .collect::<StoreResult<_>>()?,
    })
}

/// `$1` org, `$2` conversation: how many messages the conversation holds, both roles
/// counted. A macro, so that [`CONVERSATION_HEAD`] counts with the same text.
macro_rules! count_messages {
    () => {
        "SELECT COUNT(*) FROM messages WHERE org_id = $1 AND conversation_id = $2"
    };
}

pub(super) const COUNT_MESSAGES: &str = count_messages!();

/// `$1` org, `$2` conversation: its agent, and how many messages it holds (`held`), as the
/// cap on a conversation counts them.
const CONVERSATION_HEAD: &str = concat!(
    "SELECT agent_id, (",
    count_messages!(),
    ") AS held FROM conversations WHERE org_id = $1 AND id = $2"
);

/// A conversation's newest messages whose lengths add up to at most `$3` characters, oldest
/// first. The running total is taken newest first, so the first message that does not fit
/// and every older one are left out; only the messages that fit are read out. `length`
/// counts characters on both databases.
const RECENT_MESSAGES: &str = "SELECT m.id, m.role, m.content, m.created_at \
     FROM messages m JOIN ( \
         SELECT id, SUM(length(content)) OVER ( \
             ORDER BY created_at DESC, id DESC ROWS UNBOUNDED PRECEDING) AS spent \
         FROM messages WHERE org_id = $1 AND conversation_id = $2 \
     ) r ON r.id = m.id \
     WHERE r.spent <= $3 ORDER BY m.created_at, m.id";

/// A character budget as the databases compare it.
fn char_budget(chars: usize) -> i64 {
    i64::try_from(chars).unwrap_or(i64::MAX)
}

/// [`Store::conversation_tail`] on `pool`, for either database: `org_id` and
/// `conversation_id` as the database binds ids.
pub(super) async fn conversation_tail<'q, DB, Id>(
    pool: &Pool<DB>,
    org_id: Id,
    conversation_id: Id,
    chars: usize,
    map_err: fn(sqlx::Error) -> StoreError,
) -> StoreResult<ConversationTail>
where
    DB: Database,
    DB::Arguments<'q>: IntoArguments<'q, DB>,
    DB::Row: Columns,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    Id: Encode<'q, DB> + Type<DB> + Clone + Send + 'q,
    i64: Encode<'q, DB> + Type<DB>,
{
    let conversation = sqlx::query(CONVERSATION_HEAD)
        .bind(org_id.clone())
        .bind(conversation_id.clone())
        .fetch_optional(pool)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
    let messages = sqlx::query(RECENT_MESSAGES)
        .bind(org_id)
        .bind(conversation_id)
        .bind(char_budget(chars))
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    tail_from_rows(&conversation, &messages)
}

fn tail_from_rows<R: Columns>(conversation: &R, messages: &[R]) -> StoreResult<ConversationTail> {
    Ok(ConversationTail {
        agent_id: uuid_col(conversation, "agent_id")?,
        held: conversation.int("held")?,
        recent: messages
            .iter()
            .map(message_from_row)
            .collect::<StoreResult<_>>()?,
    })
}

pub(super) const FILE_COLUMNS: &str = "id, name, size, content_type, created_at, expires_at";

pub(super) fn file_from_row(row: &impl Columns) -> StoreResult<StoredFile> {
    Ok(StoredFile {
        id: uuid_col(row, "id")?,
        name: str_col(row, "name")?,
        size: row.int("size")?,
        content_type: str_col(row, "content_type")?,
        created_at: ts_col(row, "created_at")?,
        expires_at: ts_col(row, "expires_at")?,
    })
}

pub(super) const REALTIME_COLUMNS: &str =
    "id, org_id, agent_id, conversation_id, continues, secret_digest, key_id, key_name, \
     created_at, expires_at, used_at";

/// A session as stored, if it may be claimed now with this secret: `NotFound` for a wrong
/// secret (which does not use the session up), `Conflict` for a used or expired one.
pub(super) fn claimable_session(
    row: &impl Columns,
    secret: &KeyDigest,
    now: Timestamp,
) -> StoreResult<RealtimeSession> {
    let stored = digest_col(row, "secret_digest")?;
    if !stored.matches(secret) {
        return Err(StoreError::NotFound);
    }
    let expires_at = ts_col(row, "expires_at")?;
    if row.opt_int("used_at")?.is_some() || expires_at <= now {
        return Err(StoreError::Conflict(
            "the session was used already or has expired".into(),
        ));
    }
    Ok(RealtimeSession {
        id: uuid_col(row, "id")?,
        org_id: uuid_col(row, "org_id")?,
        agent_id: uuid_col(row, "agent_id")?,
        conversation_id: uuid_col(row, "conversation_id")?,
        continues: row.flag("continues")?,
        secret_digest: stored,
        key_id: uuid_col(row, "key_id")?,
        key_name: str_col(row, "key_name")?,
        created_at: ts_col(row, "created_at")?,
        expires_at,
    })
}

pub(super) const AUDIT_COLUMNS: &str =
    "id, org_id, at, action, actor, key_id, key_name, method, path, status, request_id, target_id";
/// `$1` org, `$2` from, `$3` to, `$4` action.
pub(super) const AUDIT_FILTER: &str =
    "org_id = $1 AND ($2 IS NULL OR at >= $2) AND ($3 IS NULL OR at < $3) \
     AND ($4 IS NULL OR action = $4)";
/// Newest first; `seq` orders the records of one millisecond.
pub(super) const AUDIT_ORDER: &str = "at DESC, seq DESC";

/// The export's page: [`AUDIT_FILTER`], then `$5`, `$6` the cursor and `$7` the limit.
pub(super) fn audit_export() -> String {
    format!(
        "SELECT {AUDIT_COLUMNS}, seq FROM audit_log WHERE {AUDIT_FILTER} \
         AND ($5 IS NULL OR at < $5 OR (at = $5 AND seq < $6)) \
         ORDER BY {AUDIT_ORDER} LIMIT $7"
    )
}

pub(super) fn audit_from_row(row: &impl Columns) -> StoreResult<AuditRecord> {
    Ok(AuditRecord {
        id: uuid_col(row, "id")?,
        org_id: uuid_col(row, "org_id")?,
        at: ts_col(row, "at")?,
        action: str_col(row, "action")?,
        actor: str_col(row, "actor")?,
        key_id: opt_uuid_col(row, "key_id")?,
        key_name: row.opt_text("key_name")?,
        method: row.opt_text("method")?,
        path: row.opt_text("path")?,
        status: row.opt_int("status")?.map(|s| s as u16),
        request_id: row.opt_text("request_id")?,
        target_id: row.opt_text("target_id")?,
    })
}

/// The records of an export page and the cursor of the next, if the page was full.
pub(super) fn audit_page<R: Columns>(
    rows: &[R],
    limit: i64,
) -> StoreResult<(Vec<AuditRecord>, Option<AuditCursor>)> {
    let next = match rows.last() {
        Some(last) if rows.len() as i64 == limit => Some(AuditCursor {
            at: last.int("at")?,
            seq: last.int("seq")?,
        }),
        _ => None,
    };
    let records = rows
        .iter()
        .map(audit_from_row)
        .collect::<StoreResult<_>>()?;
    Ok((records, next))
}

/// The audit records the first start of a server writes.
pub(super) fn bootstrap_audit(boot: &Bootstrap, user_id: Uuid, key: &NewKey) -> [AuditRecord; 3] {
    let org_id = boot.org.id;
    [
        AuditRecord::event(org_id, "organization.created", "server").target(org_id),
        AuditRecord::event(org_id, "member.added", "server").target(user_id),
        AuditRecord::event(org_id, "api_key.created", "server")
            .key(key.id, &key.name)
            .target(key.id),
    ]
}

/// The parts of a paged list query.
pub(super) struct PageQuery<'a> {
    pub columns: &'a str,
    pub from: &'a str,
    /// Uses placeholders `$1` to `$n`, for the `n` arguments bound before the page's.
    pub filter: &'a str,
    pub order: &'a str,
}

impl PageQuery<'_> {
    /// The statements, for a filter of `n` arguments; the limit and offset come after them.
    /// `counted` is for a database across a network, where a round trip costs more than
    /// counting along: SQLite, in the process, stops reading at the page's end instead.
    pub fn sql(&self, n: usize, counted: bool) -> PageSql {
        let PageQuery {
            columns,
            from,
            filter,
            order,
        } = self;
        PageSql {
            count: format!("SELECT COUNT(*) FROM {from} WHERE {filter}"),
            select: format!(
                "SELECT {columns}{} FROM {from} WHERE {filter} ORDER BY {order} LIMIT ${} OFFSET ${}",
                if counted { COUNTED } else { "" },
                n + 1,
                n + 2
            ),
            counted,
        }
    }
}

/// A [`PageQuery`] as SQL: the count of all matches, and one page of them; when `counted`,
/// each row of the page also carries the count, so a page is one round trip (the count
/// alone is then only for a page past the end).
pub(super) struct PageSql {
    count: String,
    select: String,
    counted: bool,
}

/// The column of a counted page's rows that holds the count of all matches.
const TOTAL: &str = "total_matches";
const COUNTED: &str = ", COUNT(*) OVER () AS total_matches";

/// One page of a list query on `pool` and the count of all its matches; `args` binds the
/// filter's placeholders.
pub(super) async fn list_page<'q, DB, T>(
    pool: &Pool<DB>,
    sql: &'q PageSql,
    args: DB::Arguments<'q>,
    page: Page,
    map: fn(&DB::Row) -> StoreResult<T>,
    map_err: fn(sqlx::Error) -> StoreError,
) -> StoreResult<Listed<T>>
where
    DB: Database,
    DB::Arguments<'q>: Clone + IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'s> &'s str: ColumnIndex<DB::Row>,
{
    let count = |args| async {
        sqlx::query_scalar_with::<_, i64, _>(&sql.count, args)
            .fetch_one(pool)
            .await
            .map_err(map_err)
    };
    let counted_first = if sql.counted {
        None
    } else {
        Some(count(args.clone()).await?)
    };
    let mut paged = args.clone();
    paged
        .add(page.limit)
        .and_then(|()| paged.add(page.offset))
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    let rows = sqlx::query_with(&sql.select, paged)
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    let total = match (counted_first, rows.first()) {
        (Some(total), _) => total,
        (None, Some(row)) => row.try_get(TOTAL).map_err(map_err)?,
        (None, None) if page.offset == 0 => 0,
        // Past the last page: the rows cannot say how many there are.
        (None, None) => count(args).await?,
    };
    Ok(Listed {
        items: rows.iter().map(map).collect::<StoreResult<_>>()?,
        total,
    })
}

/// Lists ordered oldest first, stable under paging.
pub(super) const OLDEST_FIRST: &str = "created_at, id";

pub(super) fn unique_violation() -> StoreError {
    StoreError::Conflict("an object with these values already exists".into())
}

pub(super) fn email_taken(email: &str) -> StoreError {
    StoreError::Conflict(format!("a user with email '{email}' already exists"))
}

pub(super) fn key_name_taken(name: &str) -> StoreError {
    StoreError::Conflict(format!(
        "the organization already has a live key named '{name}'; pick another name or rotate that key"
    ))
}

pub(super) fn already_rotated() -> StoreError {
    StoreError::Conflict("this key was already rotated; rotate its successor instead".into())
}

pub(super) fn not_a_member() -> StoreError {
    StoreError::Invalid {
        field: "user",
        message: "the user is not a member of this organization".into(),
    }
}

/// The part of error mapping both databases share; `unavailable` names the database's own
/// codes for "cannot serve now".
pub(super) fn map_sqlx_err(e: sqlx::Error, unavailable: fn(&str) -> bool) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(db) if db.is_unique_violation() => unique_violation(),
        sqlx::Error::Database(db) if db.code().is_some_and(|c| unavailable(&c)) => {
            StoreError::Unavailable(e.to_string())
        }
        // PostgreSQL's text cannot hold U+0000: the request's fault, not the server's.
        sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "22021" || c == "22P05") => {
            StoreError::Invalid {
                field: "request",
                message: "holds a character the database cannot store (U+0000)".into(),
            }
        }
        _ => StoreError::Internal(e.to_string()),
    }
}
