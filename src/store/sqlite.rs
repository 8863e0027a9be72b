//! The embedded default: one SQLite file in WAL mode.
//!
//! Writes go through a single connection, so writers queue in this process instead of
//! failing with SQLITE_BUSY, and each write transaction starts with `BEGIN IMMEDIATE`, so
//! a command-line process writing at the same time waits for the lock (busy timeout)
//! rather than failing half-way. `synchronous = FULL` makes every commit durable before it
//! is acknowledged: WAL alone survives a killed process, FULL also survives a crash of the
//! machine, and the cost is one fsync per commit, which batching keeps off the hot path.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Arguments, QueryBuilder, Row, Sqlite, Transaction};
use uuid::Uuid;

use super::*;

pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
}

/// The parts of a paged list query.
struct PageQuery<'a> {
    columns: &'a str,
    from: &'a str,
    filter: &'a str,
    order: &'a str,
}

/// Arguments for a filter, bound in order as `?1`, `?2`, ...
fn args<'q>(
    values: impl FnOnce(&mut SqliteArguments<'q>) -> Result<(), sqlx::error::BoxDynError>,
) -> StoreResult<SqliteArguments<'q>> {
    let mut a = SqliteArguments::default();
    values(&mut a).map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok(a)
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

impl SqliteStore {
    pub async fn open(url: &str) -> StoreResult<Self> {
        let url = if url.starts_with("sqlite:") {
            url.to_owned()
        } else {
            format!("sqlite://{url}")
        };
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(|e| StoreError::Unavailable(format!("bad database URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(map_err)?;
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(map_err)?;
        Ok(SqliteStore { reader, writer })
    }

    /// One page of `SELECT {columns} FROM {from} WHERE {filter} ORDER BY {order}` and the
    /// count of all matches. `args` binds the filter's numbered parameters.
    async fn list_page<T>(
        &self,
        query: PageQuery<'_>,
        args: SqliteArguments<'_>,
        page: Page,
        map: fn(&SqliteRow) -> StoreResult<T>,
    ) -> StoreResult<Listed<T>> {
        let PageQuery {
            columns,
            from,
            filter,
            order,
        } = query;
        let count = format!("SELECT COUNT(*) FROM {from} WHERE {filter}");
        let total: i64 = sqlx::query_scalar_with(&count, args.clone())
            .fetch_one(&self.reader)
            .await
            .map_err(map_err)?;
        let n = args.len();
        let select = format!(
            "SELECT {columns} FROM {from} WHERE {filter} ORDER BY {order} LIMIT ?{} OFFSET ?{}",
            n + 1,
            n + 2
        );
        let mut args = args;
        args.add(page.limit)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        args.add(page.offset)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let rows = sqlx::query_with(&select, args)
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(Listed {
            items: rows.iter().map(map).collect::<StoreResult<_>>()?,
            total,
        })
    }

    async fn begin(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)
    }
}

fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict("an object with these values already exists".into())
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some("5") => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

fn uuid_col(row: &SqliteRow, col: &str) -> StoreResult<Uuid> {
    let s: String = row.try_get(col).map_err(map_err)?;
    Uuid::parse_str(&s).map_err(|e| StoreError::Internal(format!("{col}: {e}")))
}

fn opt_uuid_col(row: &SqliteRow, col: &str) -> StoreResult<Option<Uuid>> {
    let s: Option<String> = row.try_get(col).map_err(map_err)?;
    s.map(|s| Uuid::parse_str(&s).map_err(|e| StoreError::Internal(format!("{col}: {e}"))))
        .transpose()
}

fn ts_col(row: &SqliteRow, col: &str) -> StoreResult<Timestamp> {
    Ok(Timestamp(row.try_get(col).map_err(map_err)?))
}

fn opt_ts_col(row: &SqliteRow, col: &str) -> StoreResult<Option<Timestamp>> {
    let v: Option<i64> = row.try_get(col).map_err(map_err)?;
    Ok(v.map(Timestamp))
}

fn str_col(row: &SqliteRow, col: &str) -> StoreResult<String> {
    row.try_get(col).map_err(map_err)
}

fn org_from_row(row: &SqliteRow) -> StoreResult<Organization> {
    Ok(Organization {
        id: uuid_col(row, "id")?,
        name: str_col(row, "name")?,
        created_at: ts_col(row, "created_at")?,
    })
}

fn user_from_row(row: &SqliteRow) -> StoreResult<User> {
    Ok(User {
        id: uuid_col(row, "id")?,
        email: str_col(row, "email")?,
        created_at: ts_col(row, "created_at")?,
    })
}

const KEY_COLUMNS: &str = "k.id, k.org_id, k.name, k.environment, k.scope, k.digest, k.hint, \
     k.created_by, k.created_at, k.expires_at, k.rate_limit, k.last_used_at, k.replaced_by, \
     k.grace_ends_at";

fn key_from_row(row: &SqliteRow) -> StoreResult<KeyRecord> {
    let env = str_col(row, "environment")?;
    let scope = str_col(row, "scope")?;
    let rate_limit: Option<i64> = row.try_get("rate_limit").map_err(map_err)?;
    Ok(KeyRecord {
        id: uuid_col(row, "id")?,
        org_id: uuid_col(row, "org_id")?,
        name: str_col(row, "name")?,
        environment: Environment::parse(&env)
            .ok_or_else(|| StoreError::Internal(format!("environment {env:?}")))?,
        scope: Scope::parse(&scope)
            .ok_or_else(|| StoreError::Internal(format!("scope {scope:?}")))?,
        hint: str_col(row, "hint")?,
        created_by: uuid_col(row, "created_by")?,
        created_at: ts_col(row, "created_at")?,
        expires_at: opt_ts_col(row, "expires_at")?,
        rate_limit: rate_limit.map(|n| n as u32),
        last_used_at: opt_ts_col(row, "last_used_at")?,
        replaced_by: opt_uuid_col(row, "replaced_by")?,
        grace_ends_at: opt_ts_col(row, "grace_ends_at")?,
    })
}

fn agent_from_row(row: &SqliteRow) -> StoreResult<Agent> {
    Ok(Agent {
        id: uuid_col(row, "id")?,
        name: str_col(row, "name")?,
        description: str_col(row, "description")?,
        instructions: str_col(row, "instructions")?,
        model: row.try_get("model").map_err(map_err)?,
        created_at: ts_col(row, "created_at")?,
        updated_at: ts_col(row, "updated_at")?,
    })
}

const AGENT_COLUMNS: &str = "id, name, description, instructions, model, created_at, updated_at";
const NAMED_COLUMNS: &str = "id, name, description, created_at, updated_at";
const TASK_COLUMNS: &str = "id, workspace_id, title, description, status, created_at, updated_at";

impl Catalog {
    fn table(self) -> &'static str {
        match self {
            Catalog::TaskWorkspaces => "task_workspaces",
            Catalog::DataSourceCollections => "data_source_collections",
        }
    }
}

fn named_from_row(row: &SqliteRow) -> StoreResult<Named> {
    Ok(Named {
        id: uuid_col(row, "id")?,
        name: str_col(row, "name")?,
        description: str_col(row, "description")?,
        created_at: ts_col(row, "created_at")?,
        updated_at: ts_col(row, "updated_at")?,
    })
}

fn task_from_row(row: &SqliteRow) -> StoreResult<Task> {
    let status = str_col(row, "status")?;
    Ok(Task {
        id: uuid_col(row, "id")?,
        workspace_id: uuid_col(row, "workspace_id")?,
        title: str_col(row, "title")?,
        description: str_col(row, "description")?,
        status: TaskStatus::parse(&status)
            .ok_or_else(|| StoreError::Internal(format!("status {status:?}")))?,
        created_at: ts_col(row, "created_at")?,
        updated_at: ts_col(row, "updated_at")?,
    })
}

const CONNECTION_COLUMNS: &str = "id, name, type, visibility, created_by, created_at, updated_at";
/// Private connections are visible only to keys of the member who created them.
const CONNECTION_VISIBLE: &str = "org_id = ?1 AND (visibility = 'shared' OR created_by = ?2)";

fn connection_from_row(row: &SqliteRow) -> StoreResult<Connection> {
    let visibility = str_col(row, "visibility")?;
    Ok(Connection {
        id: uuid_col(row, "id")?,
        name: str_col(row, "name")?,
        kind: str_col(row, "type")?,
        visibility: Visibility::parse(&visibility)
            .ok_or_else(|| StoreError::Internal(format!("visibility {visibility:?}")))?,
        created_by: uuid_col(row, "created_by")?,
        created_at: ts_col(row, "created_at")?,
        updated_at: ts_col(row, "updated_at")?,
    })
}

fn message_from_row(row: &SqliteRow) -> StoreResult<Message> {
    let role = str_col(row, "role")?;
    Ok(Message {
        id: uuid_col(row, "id")?,
        role: MessageRole::parse(&role)
            .ok_or_else(|| StoreError::Internal(format!("role {role:?}")))?,
        content: str_col(row, "content")?,
        created_at: ts_col(row, "created_at")?,
    })
}

/// A workspace named by a task must be one of the organization's own.
async fn ensure_workspace(
    tx: &mut Transaction<'static, Sqlite>,
    org_id: Uuid,
    workspace_id: Uuid,
) -> StoreResult<()> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM task_workspaces WHERE org_id = ? AND id = ?")
            .bind(org_id.to_string())
            .bind(workspace_id.to_string())
            .fetch_optional(&mut **tx)
            .await
            .map_err(map_err)?;
    found.map(|_| ()).ok_or(StoreError::NotFound)
}

const AUDIT_COLUMNS: &str =
    "id, org_id, at, action, actor, key_id, key_name, method, path, status, request_id, target_id";
/// `?1` org, `?2` from, `?3` to, `?4` action.
const AUDIT_FILTER: &str = "org_id = ?1 AND (?2 IS NULL OR at >= ?2) AND (?3 IS NULL OR at < ?3) \
                            AND (?4 IS NULL OR action = ?4)";

fn audit_from_row(row: &SqliteRow) -> StoreResult<AuditRecord> {
    let status: Option<i64> = row.try_get("status").map_err(map_err)?;
    Ok(AuditRecord {
        id: uuid_col(row, "id")?,
        org_id: uuid_col(row, "org_id")?,
        at: ts_col(row, "at")?,
        action: str_col(row, "action")?,
        actor: str_col(row, "actor")?,
        key_id: opt_uuid_col(row, "key_id")?,
        key_name: row.try_get("key_name").map_err(map_err)?,
        method: row.try_get("method").map_err(map_err)?,
        path: row.try_get("path").map_err(map_err)?,
        status: status.map(|s| s as u16),
        request_id: row.try_get("request_id").map_err(map_err)?,
        target_id: row.try_get("target_id").map_err(map_err)?,
    })
}

const AUDIT_INSERT: &str = "INSERT INTO audit_log \
    (id, org_id, at, action, actor, key_id, key_name, method, path, status, request_id, target_id) ";
/// Rows a multi-row insert carries: few enough to stay a cached prepared statement.
const AUDIT_ROWS_PER_INSERT: usize = 64;

/// Inserts records in statements of a fixed size, so each shape is prepared once and then
/// reused from the statement cache; the remainder goes one row at a time.
async fn insert_audit(
    tx: &mut Transaction<'static, Sqlite>,
    records: &[AuditRecord],
) -> StoreResult<()> {
    let full = records.len() - records.len() % AUDIT_ROWS_PER_INSERT;
    let (batched, rest) = records.split_at(full);
    for chunk in batched.chunks(AUDIT_ROWS_PER_INSERT).chain(rest.chunks(1)) {
        let mut q = QueryBuilder::<Sqlite>::new(AUDIT_INSERT);
        q.push_values(chunk, |mut b, r| {
            b.push_bind(r.id.to_string())
                .push_bind(r.org_id.to_string())
                .push_bind(r.at.millis())
                .push_bind(r.action.as_str())
                .push_bind(r.actor.as_str())
                .push_bind(r.key_id.map(|k| k.to_string()))
                .push_bind(r.key_name.as_deref())
                .push_bind(r.method.as_deref())
                .push_bind(r.path.as_deref())
                .push_bind(r.status.map(i64::from))
                .push_bind(r.request_id.as_deref())
                .push_bind(r.target_id.as_deref());
        });
        q.build()
            .persistent(true)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
    }
    Ok(())
}

async fn bump_generation(tx: &mut Transaction<'static, Sqlite>) -> StoreResult<()> {
    sqlx::query("UPDATE change_counter SET generation = generation + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
    Ok(())
}

async fn insert_key(
    tx: &mut Transaction<'static, Sqlite>,
    org_id: Uuid,
    key: &NewKey,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, org_id, name, environment, scope, digest, hint, created_by, created_at, expires_at, rate_limit) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(key.id.to_string())
    .bind(org_id.to_string())
    .bind(&key.name)
    .bind(key.environment.as_str())
    .bind(key.scope.as_str())
    .bind(key.digest.as_bytes())
    .bind(&key.hint)
    .bind(key.created_by.to_string())
    .bind(key.created_at.millis())
    .bind(key.expires_at.map(Timestamp::millis))
    .bind(key.rate_limit.map(i64::from))
    .execute(&mut **tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

async fn key_in_tx(
    tx: &mut Transaction<'static, Sqlite>,
    org_id: Uuid,
    key_id: Uuid,
) -> StoreResult<KeyRecord> {
    let row = sqlx::query(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.org_id = ? AND k.id = ? AND k.deleted_at IS NULL"
    ))
    .bind(org_id.to_string())
    .bind(key_id.to_string())
    .fetch_optional(&mut **tx)
    .await
    .map_err(map_err)?
    .ok_or(StoreError::NotFound)?;
    key_from_row(&row)
}

/// Keys that still answer requests under their name: not deleted, not replaced, not expired.
async fn ensure_name_free(
    tx: &mut Transaction<'static, Sqlite>,
    org_id: Uuid,
    name: &str,
    now: Timestamp,
) -> StoreResult<()> {
    let taken: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM api_keys WHERE org_id = ? AND name = ? AND deleted_at IS NULL \
         AND replaced_by IS NULL AND (expires_at IS NULL OR expires_at > ?)",
    )
    .bind(org_id.to_string())
    .bind(name)
    .bind(now.millis())
    .fetch_optional(&mut **tx)
    .await
    .map_err(map_err)?;
    if taken.is_some() {
        return Err(StoreError::Conflict(format!(
            "the organization already has a live key named '{name}'; pick another name or rotate that key"
        )));
    }
    Ok(())
}

async fn ensure_member(
    tx: &mut Transaction<'static, Sqlite>,
    org_id: Uuid,
    user_id: Uuid,
) -> StoreResult<()> {
    let member: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM members WHERE org_id = ? AND user_id = ?")
            .bind(org_id.to_string())
            .bind(user_id.to_string())
            .fetch_optional(&mut **tx)
            .await
            .map_err(map_err)?;
    match member {
        Some(_) => Ok(()),
        None => Err(StoreError::Invalid {
            field: "user",
            message: "the user is not a member of this organization".into(),
        }),
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn generation(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT generation FROM change_counter WHERE id = 1")
            .fetch_one(&self.reader)
            .await
            .map_err(map_err)
    }

    async fn bootstrap(&self, boot: &Bootstrap) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let any: Option<i64> = sqlx::query_scalar("SELECT 1 FROM organizations LIMIT 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        if any.is_some() {
            return Ok(false);
        }
        sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES (?, ?, ?)")
            .bind(boot.org.id.to_string())
            .bind(&boot.org.name)
            .bind(boot.org.created_at.millis())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO users (id, email, created_at) VALUES (?, ?, ?) ON CONFLICT (email) DO NOTHING",
        )
        .bind(boot.user.id.to_string())
        .bind(&boot.user.email)
        .bind(boot.user.created_at.millis())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let user_id: String = sqlx::query_scalar("SELECT id FROM users WHERE email = ?")
            .bind(&boot.user.email)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO members (org_id, user_id, role, created_at) VALUES (?, ?, 'owner', ?)",
        )
        .bind(boot.org.id.to_string())
        .bind(&user_id)
        .bind(boot.org.created_at.millis())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let mut key = boot.key.clone();
        key.created_by =
            Uuid::parse_str(&user_id).map_err(|e| StoreError::Internal(e.to_string()))?;
        insert_key(&mut tx, boot.org.id, &key).await?;
        let audit = [
            AuditRecord::event(boot.org.id, "organization.created", "server").target(boot.org.id),
            AuditRecord::event(boot.org.id, "member.added", "server").target(&user_id),
            AuditRecord::event(boot.org.id, "api_key.created", "server")
                .key(key.id, &key.name)
                .target(key.id),
        ];
        insert_audit(&mut tx, &audit).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn create_org(&self, org: &Organization) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES (?, ?, ?)")
            .bind(org.id.to_string())
            .bind(&org.name)
            .bind(org.created_at.millis())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        insert_audit(
            &mut tx,
            &[AuditRecord::event(org.id, "organization.created", "cli").target(org.id)],
        )
        .await?;
        tx.commit().await.map_err(map_err)
    }

    async fn list_orgs(&self) -> StoreResult<Vec<Organization>> {
        let rows =
            sqlx::query("SELECT id, name, created_at FROM organizations ORDER BY created_at, id")
                .fetch_all(&self.reader)
                .await
                .map_err(map_err)?;
        rows.iter().map(org_from_row).collect()
    }

    async fn get_org(&self, org_id: Uuid) -> StoreResult<Organization> {
        let row = sqlx::query("SELECT id, name, created_at FROM organizations WHERE id = ?")
            .bind(org_id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)?;
        org_from_row(&row)
    }

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO users (id, email, created_at) VALUES (?, ?, ?)")
            .bind(user.id.to_string())
            .bind(&user.email)
            .bind(user.created_at.millis())
            .execute(&mut *tx)
            .await
            .map_err(|e| match map_err(e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!(
                    "a user with email '{}' already exists",
                    user.email
                )),
                other => other,
            })?;
        tx.commit().await.map_err(map_err)
    }

    async fn find_user(&self, id_or_email: &str) -> StoreResult<User> {
        let row = sqlx::query("SELECT id, email, created_at FROM users WHERE id = ? OR email = ?")
            .bind(id_or_email.to_ascii_lowercase())
            .bind(id_or_email)
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)?;
        user_from_row(&row)
    }

    async fn add_member(&self, m: &Membership, audit: AuditRecord) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO members (org_id, user_id, role, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (org_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(m.org_id.to_string())
        .bind(m.user_id.to_string())
        .bind(m.role.as_str())
        .bind(m.created_at.millis())
        .execute(&mut *tx)
        .await
        .map_err(|e| match map_err(e) {
            StoreError::Internal(msg) if msg.contains("FOREIGN KEY") => StoreError::NotFound,
            other => other,
        })?;
        insert_audit(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn remove_member(
        &self,
        org_id: Uuid,
        user_id: Uuid,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM members WHERE org_id = ? AND user_id = ?")
            .bind(org_id.to_string())
            .bind(user_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        bump_generation(&mut tx).await?;
        insert_audit(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn create_key(
        &self,
        org_id: Uuid,
        key: &NewKey,
        audit: AuditRecord,
    ) -> StoreResult<KeyRecord> {
        let mut tx = self.begin().await?;
        ensure_member(&mut tx, org_id, key.created_by).await?;
        ensure_name_free(&mut tx, org_id, &key.name, key.created_at).await?;
        insert_key(&mut tx, org_id, key).await?;
        insert_audit(&mut tx, &[audit]).await?;
        let record = key_in_tx(&mut tx, org_id, key.id).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(record)
    }

    async fn list_keys(&self, org_id: Uuid, filter: &KeyFilter) -> StoreResult<Vec<KeyRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.org_id = ?1 AND k.deleted_at IS NULL \
             AND (?2 IS NULL OR instr(lower(k.name), lower(?2)) > 0) \
             AND (?3 IS NULL OR COALESCE(k.last_used_at, k.created_at) < ?3) \
             ORDER BY k.created_at, k.id"
        ))
        .bind(org_id.to_string())
        .bind(filter.search.as_deref())
        .bind(filter.unused_since.map(Timestamp::millis))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn get_key(&self, org_id: Uuid, key_id: Uuid) -> StoreResult<KeyRecord> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.org_id = ? AND k.id = ? AND k.deleted_at IS NULL"
        ))
        .bind(org_id.to_string())
        .bind(key_id.to_string())
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
        key_from_row(&row)
    }

    async fn key_org(&self, key_id: Uuid) -> StoreResult<Uuid> {
        let org: String =
            sqlx::query_scalar("SELECT org_id FROM api_keys WHERE id = ? AND deleted_at IS NULL")
                .bind(key_id.to_string())
                .fetch_optional(&self.reader)
                .await
                .map_err(map_err)?
                .ok_or(StoreError::NotFound)?;
        Uuid::parse_str(&org).map_err(|e| StoreError::Internal(e.to_string()))
    }

    async fn rotate_key(
        &self,
        org_id: Uuid,
        key_id: Uuid,
        grace_ends_at: Timestamp,
        successor: &NewKey,
        audit: AuditRecord,
    ) -> StoreResult<KeyRecord> {
        let mut tx = self.begin().await?;
        let old = key_in_tx(&mut tx, org_id, key_id).await?;
        if old.replaced_by.is_some() {
            return Err(StoreError::Conflict(
                "this key was already rotated; rotate its successor instead".into(),
            ));
        }
        sqlx::query(
            "UPDATE api_keys SET replaced_by = ?, grace_ends_at = ? WHERE org_id = ? AND id = ?",
        )
        .bind(successor.id.to_string())
        .bind(grace_ends_at.millis())
        .bind(org_id.to_string())
        .bind(key_id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_key(&mut tx, org_id, successor).await?;
        bump_generation(&mut tx).await?;
        insert_audit(&mut tx, &[audit]).await?;
        let record = key_in_tx(&mut tx, org_id, successor.id).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(record)
    }

    async fn delete_key(&self, org_id: Uuid, key_id: Uuid, audit: AuditRecord) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE api_keys SET deleted_at = ? WHERE org_id = ? AND id = ? AND deleted_at IS NULL",
        )
        .bind(Timestamp::now().millis())
        .bind(org_id.to_string())
        .bind(key_id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        bump_generation(&mut tx).await?;
        insert_audit(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn find_grant(&self, digest: &KeyDigest) -> StoreResult<Option<KeyGrant>> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS}, o.name AS org_name, \
             EXISTS (SELECT 1 FROM members m WHERE m.org_id = k.org_id AND m.user_id = k.created_by) AS owner_is_member \
             FROM api_keys k JOIN organizations o ON o.id = k.org_id \
             WHERE k.digest = ? AND k.deleted_at IS NULL"
        ))
        .bind(digest.as_bytes())
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        let Some(row) = row else { return Ok(None) };
        let stored: Vec<u8> = row.try_get("digest").map_err(map_err)?;
        let stored = KeyDigest::from_slice(&stored)
            .ok_or_else(|| StoreError::Internal("digest length".into()))?;
        Ok(Some(KeyGrant {
            key: key_from_row(&row)?,
            digest: stored,
            org_name: str_col(&row, "org_name")?,
            owner_is_member: row.try_get("owner_is_member").map_err(map_err)?,
        }))
    }

    async fn list_agents(
        &self,
        org_id: Uuid,
        search: Option<&str>,
        page: Page,
    ) -> StoreResult<Listed<Agent>> {
        let query = PageQuery {
            columns: AGENT_COLUMNS,
            from: "agents",
            filter: "org_id = ?1 AND (?2 IS NULL OR instr(lower(name), lower(?2)) > 0 \
                     OR instr(lower(description), lower(?2)) > 0)",
            order: "created_at, id",
        };
        let search = search.map(str::to_owned);
        let args = args(|a| {
            a.add(org_id.to_string())?;
            a.add(search)
        })?;
        self.list_page(query, args, page, agent_from_row).await
    }

    async fn create_agent(&self, org_id: Uuid, a: &Agent, audit: AuditRecord) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO agents (id, org_id, name, description, instructions, model, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(a.id.to_string())
        .bind(org_id.to_string())
        .bind(&a.name)
        .bind(&a.description)
        .bind(&a.instructions)
        .bind(a.model.as_deref())
        .bind(a.created_at.millis())
        .bind(a.updated_at.millis())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_audit(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_agent(&self, org_id: Uuid, agent_id: Uuid) -> StoreResult<Agent> {
        let row = sqlx::query(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE org_id = ? AND id = ?"
        ))
        .bind(org_id.to_string())
        .bind(agent_id.to_string())
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
        agent_from_row(&row)
    }

    async fn update_agent(&self, org_id: Uuid, a: &Agent, audit: AuditRecord) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE agents SET name = ?, description = ?, instructions = ?, model = ?, updated_at = ? \
             WHERE org_id = ? AND id = ?",
        )
        .bind(&a.name)
        .bind(&a.description)
        .bind(&a.instructions)
        .bind(a.model.as_deref())
        .bind(a.updated_at.millis())
        .bind(org_id.to_string())
        .bind(a.id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn delete_agent(
        &self,
        org_id: Uuid,
        agent_id: Uuid,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM agents WHERE org_id = ? AND id = ?")
            .bind(org_id.to_string())
            .bind(agent_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn list_connections(
        &self,
        org_id: Uuid,
        member: Uuid,
        page: Page,
    ) -> StoreResult<Listed<Connection>> {
        let query = PageQuery {
            columns: CONNECTION_COLUMNS,
            from: "connections",
            filter: CONNECTION_VISIBLE,
            order: "created_at, id",
        };
        let args = args(|a| {
            a.add(org_id.to_string())?;
            a.add(member.to_string())
        })?;
        self.list_page(query, args, page, connection_from_row).await
    }

    async fn create_connection(
        &self,
        org_id: Uuid,
        c: &Connection,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO connections (id, org_id, name, type, visibility, created_by, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(c.id.to_string())
        .bind(org_id.to_string())
        .bind(&c.name)
        .bind(&c.kind)
        .bind(c.visibility.as_str())
        .bind(c.created_by.to_string())
        .bind(c.created_at.millis())
        .bind(c.updated_at.millis())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_audit(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_connection(
        &self,
        org_id: Uuid,
        member: Uuid,
        id: Uuid,
    ) -> StoreResult<Connection> {
        let sql = format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE {CONNECTION_VISIBLE} AND id = ?3"
        );
        let row = sqlx::query(&sql)
            .bind(org_id.to_string())
            .bind(member.to_string())
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)?;
        connection_from_row(&row)
    }

    async fn get_conversation(
        &self,
        org_id: Uuid,
        conversation_id: Uuid,
    ) -> StoreResult<Conversation> {
        let row = sqlx::query("SELECT id, agent_id, created_at, updated_at FROM conversations WHERE org_id = ? AND id = ?")
            .bind(org_id.to_string())
            .bind(conversation_id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)?;
        let rows = sqlx::query(
            "SELECT id, role, content, created_at FROM messages WHERE org_id = ? AND conversation_id = ? \
             ORDER BY created_at, id",
        )
        .bind(org_id.to_string())
        .bind(conversation_id.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        Ok(Conversation {
            id: uuid_col(&row, "id")?,
            agent_id: uuid_col(&row, "agent_id")?,
            created_at: ts_col(&row, "created_at")?,
            updated_at: ts_col(&row, "updated_at")?,
            messages: rows
                .iter()
                .map(message_from_row)
                .collect::<StoreResult<_>>()?,
        })
    }

    async fn record_exchange(
        &self,
        org_id: Uuid,
        x: &Exchange,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        if x.starts {
            sqlx::query(
                "INSERT INTO conversations (id, org_id, agent_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(x.conversation_id.to_string())
            .bind(org_id.to_string())
            .bind(x.agent_id.to_string())
            .bind(x.question.created_at.millis())
            .bind(x.answer.created_at.millis())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        } else {
            let done = sqlx::query(
                "UPDATE conversations SET updated_at = ? WHERE org_id = ? AND id = ? AND agent_id = ?",
            )
            .bind(x.answer.created_at.millis())
            .bind(org_id.to_string())
            .bind(x.conversation_id.to_string())
            .bind(x.agent_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
        }
        for m in [&x.question, &x.answer] {
            sqlx::query(
                "INSERT INTO messages (id, org_id, conversation_id, role, content, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(m.id.to_string())
            .bind(org_id.to_string())
            .bind(x.conversation_id.to_string())
            .bind(m.role.as_str())
            .bind(&m.content)
            .bind(m.created_at.millis())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        insert_audit(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn create_file(
        &self,
        org_id: Uuid,
        f: &StoredFile,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO files (id, org_id, name, size, content_type, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(f.id.to_string())
        .bind(org_id.to_string())
        .bind(&f.name)
        .bind(f.size)
        .bind(&f.content_type)
        .bind(f.created_at.millis())
        .bind(f.expires_at.millis())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_audit(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_file(
        &self,
        org_id: Uuid,
        file_id: Uuid,
        now: Timestamp,
    ) -> StoreResult<StoredFile> {
        let row = sqlx::query(
            "SELECT id, name, size, content_type, created_at, expires_at FROM files \
             WHERE org_id = ? AND id = ? AND expires_at > ?",
        )
        .bind(org_id.to_string())
        .bind(file_id.to_string())
        .bind(now.millis())
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
        Ok(StoredFile {
            id: uuid_col(&row, "id")?,
            name: str_col(&row, "name")?,
            size: row.try_get("size").map_err(map_err)?,
            content_type: str_col(&row, "content_type")?,
            created_at: ts_col(&row, "created_at")?,
            expires_at: ts_col(&row, "expires_at")?,
        })
    }

    async fn expired_files(&self, now: Timestamp, limit: i64) -> StoreResult<Vec<Uuid>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM files WHERE expires_at <= ? ORDER BY expires_at LIMIT ?",
        )
        .bind(now.millis())
        .bind(limit)
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        ids.iter()
            .map(|s| Uuid::parse_str(s).map_err(|e| StoreError::Internal(e.to_string())))
            .collect()
    }

    async fn forget_files(&self, ids: &[Uuid]) -> StoreResult<()> {
        // Maintenance across organizations: these ids come from `expired_files`, never from
        // a request.
        let mut tx = self.begin().await?;
        for id in ids {
            sqlx::query("DELETE FROM files WHERE id = ?")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn create_realtime_session(
        &self,
        r: &RealtimeSession,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO realtime_sessions (id, org_id, agent_id, conversation_id, continues, secret_digest, \
             key_id, key_name, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(r.id.to_string())
        .bind(r.org_id.to_string())
        .bind(r.agent_id.to_string())
        .bind(r.conversation_id.to_string())
        .bind(r.continues)
        .bind(r.secret_digest.as_bytes())
        .bind(r.key_id.to_string())
        .bind(&r.key_name)
        .bind(r.created_at.millis())
        .bind(r.expires_at.millis())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_audit(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn claim_realtime_session(
        &self,
        session_id: Uuid,
        secret: &KeyDigest,
        now: Timestamp,
    ) -> StoreResult<RealtimeSession> {
        // Looked up by id alone: the session names its organization, and the secret, checked
        // below, is what authenticates the caller.
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT id, org_id, agent_id, conversation_id, continues, secret_digest, key_id, key_name, \
             created_at, expires_at, used_at FROM realtime_sessions WHERE id = ?",
        )
        .bind(session_id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
        let digest: Vec<u8> = row.try_get("secret_digest").map_err(map_err)?;
        let stored = KeyDigest::from_slice(&digest)
            .ok_or_else(|| StoreError::Internal("digest length".into()))?;
        if !stored.matches(secret) {
            return Err(StoreError::NotFound);
        }
        let used: Option<i64> = row.try_get("used_at").map_err(map_err)?;
        let expires_at = ts_col(&row, "expires_at")?;
        if used.is_some() || expires_at <= now {
            return Err(StoreError::Conflict(
                "the session was used already or has expired".into(),
            ));
        }
        sqlx::query("UPDATE realtime_sessions SET used_at = ? WHERE id = ?")
            .bind(now.millis())
            .bind(session_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let session = RealtimeSession {
            id: uuid_col(&row, "id")?,
            org_id: uuid_col(&row, "org_id")?,
            agent_id: uuid_col(&row, "agent_id")?,
            conversation_id: uuid_col(&row, "conversation_id")?,
            continues: row.try_get("continues").map_err(map_err)?,
            secret_digest: stored,
            key_id: uuid_col(&row, "key_id")?,
            key_name: str_col(&row, "key_name")?,
            created_at: ts_col(&row, "created_at")?,
            expires_at,
        };
        tx.commit().await.map_err(map_err)?;
        Ok(session)
    }

    async fn record_batch(
        &self,
        audit: &[AuditRecord],
        last_used: &[(Uuid, Uuid, Timestamp)],
    ) -> StoreResult<()> {
        if audit.is_empty() && last_used.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        insert_audit(&mut tx, audit).await?;
        for (org_id, key_id, at) in last_used {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = ?1 WHERE org_id = ?2 AND id = ?3 \
                 AND (last_used_at IS NULL OR last_used_at < ?1)",
            )
            .bind(at.millis())
            .bind(org_id.to_string())
            .bind(key_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn export_audit(
        &self,
        org_id: Uuid,
        f: &AuditFilter,
        cursor: Option<AuditCursor>,
        limit: i64,
    ) -> StoreResult<(Vec<AuditRecord>, Option<AuditCursor>)> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS}, seq FROM audit_log WHERE {AUDIT_FILTER} \
             AND (?5 IS NULL OR at < ?5 OR (at = ?5 AND seq < ?6)) \
             ORDER BY at DESC, seq DESC LIMIT ?7"
        );
        let rows = sqlx::query(&sql)
            .bind(org_id.to_string())
            .bind(f.from.map(Timestamp::millis))
            .bind(f.to.map(Timestamp::millis))
            .bind(f.action.as_deref())
            .bind(cursor.map(|c| c.at))
            .bind(cursor.map(|c| c.seq))
            .bind(limit)
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        let next = match rows.last() {
            Some(last) if rows.len() as i64 == limit => Some(AuditCursor {
                at: last.try_get("at").map_err(map_err)?,
                seq: last.try_get("seq").map_err(map_err)?,
            }),
            _ => None,
        };
        let records = rows
            .iter()
            .map(audit_from_row)
            .collect::<StoreResult<_>>()?;
        Ok((records, next))
    }

    async fn list_audit(
        &self,
        org_id: Uuid,
        f: &AuditFilter,
        page: Page,
    ) -> StoreResult<Listed<AuditRecord>> {
        let query = PageQuery {
            columns: AUDIT_COLUMNS,
            from: "audit_log",
            filter: AUDIT_FILTER,
            order: "at DESC, seq DESC",
        };
        let action = f.action.clone();
        let args = args(|a| {
            a.add(org_id.to_string())?;
            a.add(f.from.map(Timestamp::millis))?;
            a.add(f.to.map(Timestamp::millis))?;
            a.add(action)
        })?;
        self.list_page(query, args, page, audit_from_row).await
    }

    async fn list_named(
        &self,
        catalog: Catalog,
        org_id: Uuid,
        page: Page,
    ) -> StoreResult<Listed<Named>> {
        let query = PageQuery {
            columns: NAMED_COLUMNS,
            from: catalog.table(),
            filter: "org_id = ?1",
            order: "created_at, id",
        };
        let args = args(|a| a.add(org_id.to_string()))?;
        self.list_page(query, args, page, named_from_row).await
    }

    async fn create_named(
        &self,
        catalog: Catalog,
        org_id: Uuid,
        object: &Named,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let sql = format!(
            "INSERT INTO {} (id, org_id, name, description, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            catalog.table()
        );
        sqlx::query(&sql)
            .bind(object.id.to_string())
            .bind(org_id.to_string())
            .bind(&object.name)
            .bind(&object.description)
            .bind(object.created_at.millis())
            .bind(object.updated_at.millis())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        insert_audit(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_named(&self, catalog: Catalog, org_id: Uuid, id: Uuid) -> StoreResult<Named> {
        let sql = format!(
            "SELECT {NAMED_COLUMNS} FROM {} WHERE org_id = ? AND id = ?",
            catalog.table()
        );
        let row = sqlx::query(&sql)
            .bind(org_id.to_string())
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)?;
        named_from_row(&row)
    }

    async fn list_tasks(
        &self,
        org_id: Uuid,
        f: &TaskFilter,
        page: Page,
    ) -> StoreResult<Listed<Task>> {
        let query = PageQuery {
            columns: TASK_COLUMNS,
            from: "tasks",
            filter:
                "org_id = ?1 AND (?2 IS NULL OR workspace_id = ?2) AND (?3 IS NULL OR status = ?3)",
            order: "created_at, id",
        };
        let args = args(|a| {
            a.add(org_id.to_string())?;
            a.add(f.workspace_id.map(|w| w.to_string()))?;
            a.add(f.status.map(TaskStatus::as_str))
        })?;
        self.list_page(query, args, page, task_from_row).await
    }

    async fn create_task(&self, org_id: Uuid, t: &Task, audit: AuditRecord) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        ensure_workspace(&mut tx, org_id, t.workspace_id).await?;
        sqlx::query(
            "INSERT INTO tasks (id, org_id, workspace_id, title, description, status, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(t.id.to_string())
        .bind(org_id.to_string())
        .bind(t.workspace_id.to_string())
        .bind(&t.title)
        .bind(&t.description)
        .bind(t.status.as_str())
        .bind(t.created_at.millis())
        .bind(t.updated_at.millis())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        insert_audit(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_task(&self, org_id: Uuid, task_id: Uuid) -> StoreResult<Task> {
        let row = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE org_id = ? AND id = ?"
        ))
        .bind(org_id.to_string())
        .bind(task_id.to_string())
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
        task_from_row(&row)
    }

    async fn update_task(&self, org_id: Uuid, t: &Task, audit: AuditRecord) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        ensure_workspace(&mut tx, org_id, t.workspace_id).await?;
        let done = sqlx::query(
            "UPDATE tasks SET workspace_id = ?, title = ?, description = ?, status = ?, updated_at = ? \
             WHERE org_id = ? AND id = ?",
        )
        .bind(t.workspace_id.to_string())
        .bind(&t.title)
        .bind(&t.description)
        .bind(t.status.as_str())
        .bind(t.updated_at.millis())
        .bind(org_id.to_string())
        .bind(t.id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(map_err)
    }
}
