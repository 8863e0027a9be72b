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

use super::sql::*;
use super::*;

pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
}

/// Arguments for a filter, bound in order as `$1`, `$2`, ...
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
        let sql = query.sql(args.len(), false);
        list_page(&self.reader, &sql, args, page, map, map_err).await
    }

    async fn begin(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)
    }
}

fn map_err(e: sqlx::Error) -> StoreError {
    map_sqlx_err(e, busy)
}

/// SQLITE_BUSY or SQLITE_LOCKED: another process held the lock past the busy timeout. sqlx
/// reports extended codes (517 is BUSY_SNAPSHOT, 773 BUSY_TIMEOUT, ...), whose low byte is
/// the primary code.
fn busy(code: &str) -> bool {
    code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
}

impl UuidColumn for SqliteRow {
    fn opt_uuid(&self, col: &str) -> StoreResult<Option<Uuid>> {
        let s: Option<String> = self.try_get(col).map_err(column_err)?;
        s.map(|s| parse_uuid(col, &s)).transpose()
    }
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

/// Stores a key created under the membership `membership_id` (`None`: one that has ended).
async fn insert_key(
    tx: &mut Transaction<'static, Sqlite>,
    org_id: Uuid,
    key: &NewKey,
    membership_id: Option<Uuid>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, org_id, name, environment, scope, digest, hint, created_by, created_at, expires_at, rate_limit, membership_id) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    .bind(membership_id.map(|m| m.to_string()))
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
    let row = sqlx::query(&key_by_id())
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
    let taken: Option<i64> = sqlx::query_scalar(LIVE_KEY_NAMED)
        .bind(org_id.to_string())
        .bind(name)
        .bind(now.millis())
        .fetch_optional(&mut **tx)
        .await
        .map_err(map_err)?;
    if taken.is_some() {
        return Err(key_name_taken(name));
    }
    Ok(())
}

/// The member's role and membership id; an error naming the user if they are no member.
async fn ensure_member(
    tx: &mut Transaction<'static, Sqlite>,
    org_id: Uuid,
    user_id: Uuid,
) -> StoreResult<(Role, Uuid)> {
    let row = sqlx::query(MEMBERSHIP)
        .bind(org_id.to_string())
        .bind(user_id.to_string())
        .fetch_optional(&mut **tx)
        .await
        .map_err(map_err)?
        .ok_or_else(not_a_member)?;
    membership_from_row(&row)
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
        let membership_id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO members (org_id, user_id, role, created_at, id) VALUES (?, ?, 'owner', ?, ?)",
        )
        .bind(boot.org.id.to_string())
        .bind(&user_id)
        .bind(boot.org.created_at.millis())
        .bind(membership_id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let mut key = boot.key.clone();
        key.created_by =
            Uuid::parse_str(&user_id).map_err(|e| StoreError::Internal(e.to_string()))?;
        insert_key(&mut tx, boot.org.id, &key, Some(membership_id)).await?;
        insert_audit(&mut tx, &bootstrap_audit(boot, key.created_by, &key)).await?;
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
        let sql = format!("SELECT {ORG_COLUMNS} FROM organizations ORDER BY {OLDEST_FIRST}");
        let rows = sqlx::query(&sql)
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter().map(org_from_row).collect()
    }

    async fn get_org(&self, org_id: Uuid) -> StoreResult<Organization> {
        let row = sqlx::query(&format!(
            "SELECT {ORG_COLUMNS} FROM organizations WHERE id = ?"
        ))
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
                StoreError::Conflict(_) => email_taken(&user.email),
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
        // A role change keeps the membership's id, and so the keys created under it.
        sqlx::query(
            "INSERT INTO members (org_id, user_id, role, created_at, id) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (org_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(m.org_id.to_string())
        .bind(m.user_id.to_string())
        .bind(m.role.as_str())
        .bind(m.created_at.millis())
        .bind(Uuid::now_v7().to_string())
        .execute(&mut *tx)
        .await
        .map_err(|e| match map_err(e) {
            StoreError::Internal(msg) if msg.contains("FOREIGN KEY") => StoreError::NotFound,
            other => other,
        })?;
        // A member added (or given another role) changes what cached keys may do.
        bump_generation(&mut tx).await?;
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
        let (role, membership_id) = ensure_member(&mut tx, org_id, key.created_by).await?;
        ensure_scope_allowed(role, key.scope)?;
        ensure_name_free(&mut tx, org_id, &key.name, key.created_at).await?;
        insert_key(&mut tx, org_id, key, Some(membership_id)).await?;
        insert_audit(&mut tx, &[audit]).await?;
        let record = key_in_tx(&mut tx, org_id, key.id).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(record)
    }

    async fn list_keys(&self, org_id: Uuid, filter: &KeyFilter) -> StoreResult<Vec<KeyRecord>> {
        let rows = sqlx::query(&key_list())
            .bind(org_id.to_string())
            .bind(filter.search.as_deref())
            .bind(filter.unused_since.map(Timestamp::millis))
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn get_key(&self, org_id: Uuid, key_id: Uuid) -> StoreResult<KeyRecord> {
        let row = sqlx::query(&key_by_id())
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
            return Err(already_rotated());
        }
        let replaced = sqlx::query(REPLACE_KEY)
            .bind(successor.id.to_string())
            .bind(grace_ends_at.millis())
            .bind(org_id.to_string())
            .bind(key_id.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        let membership_id = opt_uuid_col(&replaced, "membership_id")?;
        insert_key(&mut tx, org_id, successor, membership_id).await?;
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
        let row = sqlx::query(&grant_by_digest())
            .bind(digest.as_bytes())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        row.as_ref().map(grant_from_row).transpose()
    }

    async fn key_grant(&self, org_id: Uuid, key_id: Uuid) -> StoreResult<Option<KeyGrant>> {
        let row = sqlx::query(&grant_by_id())
            .bind(org_id.to_string())
            .bind(key_id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        row.as_ref().map(grant_from_row).transpose()
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
            filter: AGENT_FILTER,
            order: OLDEST_FIRST,
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
            order: OLDEST_FIRST,
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
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE {CONNECTION_VISIBLE} AND id = $3"
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
        conversation_from_rows(&row, &rows)
    }

    async fn conversation_tail(
        &self,
        org_id: Uuid,
        conversation_id: Uuid,
        chars: usize,
    ) -> StoreResult<ConversationTail> {
        conversation_tail(
            &self.reader,
            org_id.to_string(),
            conversation_id.to_string(),
            chars,
            map_err,
        )
        .await
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
        // Write transactions run one at a time (`BEGIN IMMEDIATE`), so this count sees every
        // exchange stored before this one.
        let held = if x.starts {
            0
        } else {
            sqlx::query_scalar(COUNT_MESSAGES)
                .bind(org_id.to_string())
                .bind(x.conversation_id.to_string())
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?
        };
        ensure_room(held, x.max_messages)?;
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
        let row = sqlx::query(&format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE org_id = ? AND id = ? AND expires_at > ?"
        ))
        .bind(org_id.to_string())
        .bind(file_id.to_string())
        .bind(now.millis())
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
        file_from_row(&row)
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
        let row = sqlx::query(&format!(
            "SELECT {REALTIME_COLUMNS} FROM realtime_sessions WHERE id = ?"
        ))
        .bind(session_id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
        let session = claimable_session(&row, secret, now)?;
        sqlx::query("UPDATE realtime_sessions SET used_at = ? WHERE id = ?")
            .bind(now.millis())
            .bind(session_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
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
        let rows = sqlx::query(&audit_export())
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
        audit_page(&rows, limit)
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
            order: AUDIT_ORDER,
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
            filter: "org_id = $1",
            order: OLDEST_FIRST,
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
            filter: TASK_FILTER,
            order: OLDEST_FIRST,
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

#[cfg(test)]
mod tests {
    #[test]
    fn every_busy_or_locked_code_means_unavailable() {
        for code in ["5", "6", "261", "517", "773", "262"] {
            assert!(super::busy(code), "{code}");
        }
        for code in ["1", "19", "2067", "x"] {
            assert!(!super::busy(code), "{code}");
        }
    }
}
