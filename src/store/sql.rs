//! The [`Store`] on SQL, written once for SQLite and PostgreSQL: every statement, and the
//! order in which each method runs them. What the two databases do differently is a
//! [`Backend`], implemented in `sqlite.rs` and `postgres.rs`.
//!
//! Shared SQL numbers its placeholders `$1`, `$2`, ...: PostgreSQL's syntax, which sqlx also
//! reads for SQLite, so one text serves both. Ids are bound as [`Id`], which each database
//! stores its own way.

use async_trait::async_trait;
use sqlx::{Database, Pool, Transaction};

use uuid::Uuid;

use super::backend::*;
use super::columns::*;
use super::model::*;
use super::statement::*;
use crate::clock::Timestamp;
use crate::key::{KeyDigest, Scope};

/// A [`Store`] on one SQL database.
pub struct SqlStore<DB: Database> {
    /// Where reads go.
    pub(super) reader: Pool<DB>,
    /// Where transactions that write go: for SQLite a pool of one connection, so that
    /// writers queue in the process; for PostgreSQL the same pool as `reader`.
    pub(super) writer: Pool<DB>,
}

/// `$1` org, `$2` key: a key that has not been deleted.
fn key_by_id() -> String {
    format!(
        "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.org_id = $1 AND k.id = $2 AND k.deleted_at IS NULL"
    )
}

/// `$1` org, `$2` search (a case-insensitive substring of the name), `$3` unused since: the
/// organization's keys, oldest first. `instr` is SQLite's; the PostgreSQL schema defines it.
fn key_list() -> String {
    format!(
        "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.org_id = $1 AND k.deleted_at IS NULL \
         AND ($2 IS NULL OR instr(lower(k.name), lower($2)) > 0) \
         AND ($3 IS NULL OR COALESCE(k.last_used_at, k.created_at) < $3) \
         ORDER BY k.created_at, k.id"
    )
}

/// `$1` org, `$2` name, `$3` now: keys that still answer requests under their name, that
/// is not deleted, not replaced, not expired.
const LIVE_KEY_NAMED: &str =
    "SELECT 1 FROM api_keys WHERE org_id = $1 AND name = $2 AND deleted_at IS NULL \
     AND replaced_by IS NULL AND (expires_at IS NULL OR expires_at > $3)";

/// A key that has not been deleted, with its digest, its organization's name and its
/// creator's role ([`KeyGrant`]), chosen by `condition`. The role is NULL unless the
/// membership the key was created under still lasts: a member removed and added back has
/// a new membership.
fn grant_where(condition: &str) -> String {
    format!(
        "SELECT {KEY_COLUMNS}, k.digest, o.name AS org_name, m.role AS owner_role \
         FROM api_keys k JOIN organizations o ON o.id = k.org_id \
         LEFT JOIN members m ON m.org_id = k.org_id AND m.user_id = k.created_by \
         AND m.id = k.membership_id \
         WHERE {condition} AND k.deleted_at IS NULL"
    )
}

/// `$1` org, `$2` user: the member's role and the id of their membership, which a key
/// created now belongs to.
const MEMBERSHIP: &str = "SELECT role, id FROM members WHERE org_id = $1 AND user_id = $2";

/// A new key acts for a member whose role must allow its scope. (A key whose owner is
/// demoted later is capped when it is used.)
fn ensure_scope_allowed(role: Role, scope: Scope) -> StoreResult<()> {
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

/// `$1` org, `$2` search: a case-insensitive substring of the name or the description.
const AGENT_FILTER: &str = "org_id = $1 AND ($2 IS NULL OR instr(lower(name), lower($2)) > 0 \
     OR instr(lower(description), lower($2)) > 0)";

impl Catalog {
    fn table(self) -> &'static str {
        match self {
            Catalog::TaskWorkspaces => "task_workspaces",
            Catalog::DataSourceCollections => "data_source_collections",
        }
    }
}

/// `$1` org, `$2` workspace, `$3` status.
const TASK_FILTER: &str =
    "org_id = $1 AND ($2 IS NULL OR workspace_id = $2) AND ($3 IS NULL OR status = $3)";

/// Binds [`TASK_FILTER`]'s placeholders.
fn task_filter<'q, DB: Backend>(
    statement: Statement<'q, DB>,
    org_id: Uuid,
    f: &TaskFilter,
) -> Statement<'q, DB> {
    statement
        .bind(Id(org_id))
        .bind(f.workspace_id.map(Id))
        .bind(f.status.map(TaskStatus::as_str))
}

/// `$1` org, `$2` member: private connections are visible only to keys of the member who
/// created them.
const CONNECTION_VISIBLE: &str = "org_id = $1 AND (visibility = 'shared' OR created_by = $2)";

/// `$1` org, `$2` conversation: how many messages the conversation holds, both roles
/// counted. A macro, so that [`CONVERSATION_HEAD`] counts with the same text.
macro_rules! count_messages {
    () => {
        "SELECT COUNT(*) AS held FROM messages WHERE org_id = $1 AND conversation_id = $2"
    };
}

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

/// `$1` org, `$2` from, `$3` to, `$4` action.
const AUDIT_FILTER: &str = "org_id = $1 AND ($2 IS NULL OR at >= $2) AND ($3 IS NULL OR at < $3) \
     AND ($4 IS NULL OR action = $4)";
/// Binds [`AUDIT_FILTER`]'s placeholders.
fn audit_filter<'q, DB: Backend>(
    statement: Statement<'q, DB>,
    org_id: Uuid,
    f: &'q AuditFilter,
) -> Statement<'q, DB> {
    statement
        .bind(Id(org_id))
        .bind(f.from.map(Timestamp::millis))
        .bind(f.to.map(Timestamp::millis))
        .bind(f.action.as_deref())
}

/// Newest first; `seq` orders the records of one millisecond.
const AUDIT_ORDER: &str = "at DESC, seq DESC";

/// The export's page: [`AUDIT_FILTER`], then `$5`, `$6` the cursor and `$7` the limit.
fn audit_export() -> String {
    format!(
        "SELECT {AUDIT_COLUMNS}, seq FROM audit_log WHERE {AUDIT_FILTER} \
         AND ($5 IS NULL OR at < $5 OR (at = $5 AND seq < $6)) \
         ORDER BY {AUDIT_ORDER} LIMIT $7"
    )
}

/// The audit records the first start of a server writes.
fn bootstrap_audit(boot: &Bootstrap, user_id: Uuid, key: &NewKey) -> [AuditRecord; 3] {
    let org_id = boot.org.id;
    [
        AuditRecord::event(org_id, "organization.created", "server").target(org_id),
        AuditRecord::event(org_id, "member.added", "server").target(user_id),
        AuditRecord::event(org_id, "api_key.created", "server")
            .key(key.id, &key.name)
            .target(key.id),
    ]
}

/// `INSERT INTO {table} ({columns}) VALUES ($1, $2, ...)`: the columns joined, and a
/// placeholder for each.
fn insert_into(table: &str, columns: &[&str]) -> String {
    insert_rows(table, &columns.join(", "), 1, numbered)
}

/// `$n`, the shared SQL's placeholder.
fn numbered(n: usize) -> String {
    format!("${n}")
}

/// `INSERT INTO {table} ({columns}) VALUES ($1, $2, ...), ...`: `rows` rows of placeholders,
/// each written by `placeholder` from its number.
pub(super) fn insert_rows(
    table: &str,
    columns: &str,
    rows: usize,
    placeholder: fn(usize) -> String,
) -> String {
    let width = columns.split(',').count();
    let values = (0..rows)
        .map(|row| {
            let row = (1..=width).map(|n| placeholder(row * width + n));
            format!("({})", row.collect::<Vec<_>>().join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("INSERT INTO {table} ({columns}) VALUES {values}")
}

/// The statements of a page of `SELECT {columns} FROM {from} WHERE {filter} ORDER BY
/// {order}`, counted as the database prefers ([`Backend::COUNTED_PAGES`]). The filter's
/// placeholders are `$1` to `$n`; the page's limit and offset come after them.
fn page_sql<DB: Backend>(columns: &str, from: &str, filter: &str, order: &str) -> PageSql {
    let counted = DB::COUNTED_PAGES;
    let n = last_placeholder(filter);
    PageSql {
        count: format!("SELECT COUNT(*) AS {TOTAL} FROM {from} WHERE {filter}"),
        select: format!(
            "SELECT {columns}{} FROM {from} WHERE {filter} ORDER BY {order} LIMIT ${} OFFSET ${}",
            if counted { COUNTED } else { "" },
            n + 1,
            n + 2
        ),
        counted,
    }
}

/// The highest `$n` in `sql`.
fn last_placeholder(sql: &str) -> usize {
    sql.split('$')
        .skip(1)
        .filter_map(|after| {
            let digits = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            after[..digits].parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// A page as SQL: the count of all matches, and one page of them; when `counted`,
/// each row of the page also carries the count, so a page is one round trip (the count
/// alone is then only for a page past the end).
struct PageSql {
    count: String,
    select: String,
    counted: bool,
}

/// The column of a counted page's rows that holds the count of all matches.
const TOTAL: &str = "total_matches";
const COUNTED: &str = ", COUNT(*) OVER () AS total_matches";

/// Lists ordered oldest first, stable under paging.
const OLDEST_FIRST: &str = "created_at, id";

fn email_taken(email: &str) -> StoreError {
    StoreError::Conflict(format!("a user with email '{email}' already exists"))
}

fn key_name_taken(name: &str) -> StoreError {
    StoreError::Conflict(format!(
        "the organization already has a live key named '{name}'; pick another name or rotate that key"
    ))
}

fn already_rotated() -> StoreError {
    StoreError::Conflict("this key was already rotated; rotate its successor instead".into())
}

fn not_a_member() -> StoreError {
    StoreError::Invalid {
        field: "user",
        message: "the user is not a member of this organization".into(),
    }
}

type Tx<DB> = Transaction<'static, DB>;

/// Ids one statement of a sweep deletes: far below either database's limit on parameters.
pub(super) const FORGOTTEN_PER_STATEMENT: usize = 100;

/// `$1, $2, ..., $n`.
fn placeholders(n: usize) -> String {
    (1..=n).map(numbered).collect::<Vec<_>>().join(", ")
}

/// `sql`, locking the rows it reads until the transaction ends where the database locks
/// rows.
fn locked<DB: Backend>(sql: &str, lock: RowLock) -> String {
    match DB::row_lock(lock) {
        Some(clause) => format!("{sql} {clause}"),
        None => sql.to_owned(),
    }
}

/// Runs a statement that must change a row: `NotFound` when it changes none.
async fn change<DB: Backend>(tx: &mut Tx<DB>, statement: Statement<'_, DB>) -> StoreResult<()> {
    if statement.execute(tx).await? == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Writes a change's audit record with it, and commits.
async fn commit<DB: Backend>(mut tx: Tx<DB>, audit: AuditRecord) -> StoreResult<()> {
    DB::insert_audit(&mut tx, &[audit]).await?;
    tx.commit().await.map_err(DB::map_err)
}

/// For every change that can invalidate a verified key.
async fn bump_generation<DB: Backend>(tx: &mut Tx<DB>) -> StoreResult<()> {
    let sql = "UPDATE change_counter SET generation = generation + 1 WHERE id = 1";
    statement(sql).execute(tx).await?;
    Ok(())
}

async fn insert_org<DB: Backend>(tx: &mut Tx<DB>, org: &Organization) -> StoreResult<()> {
    let sql = insert_into("organizations", &[ORG_COLUMNS]);
    change(tx, org.bind_columns(statement(&sql))).await
}

/// Stores a key created under the membership `membership_id` (`None`: one that has ended).
async fn insert_key<DB: Backend>(
    tx: &mut Tx<DB>,
    org_id: Uuid,
    key: &NewKey,
    membership_id: Option<Uuid>,
) -> StoreResult<()> {
    let sql = insert_into(
        "api_keys",
        &[
            "id, org_id, name, environment, scope, digest, hint, created_by",
            "created_at, expires_at, rate_limit, membership_id",
        ],
    );
    let statement = statement(&sql)
        .bind(Id(key.id))
        .bind(Id(org_id))
        .bind(key.name.as_str())
        .bind(key.environment.as_str())
        .bind(key.scope.as_str())
        .bind(key.digest.as_bytes())
        .bind(key.hint.as_str())
        .bind(Id(key.created_by))
        .bind(key.created_at.millis())
        .bind(key.expires_at.map(Timestamp::millis))
        .bind(key.rate_limit.map(i64::from))
        .bind(membership_id.map(Id));
    change(tx, statement).await
}

/// The key, locked until the transaction ends if `lock` says how.
async fn key_in_tx<DB: Backend>(
    tx: &mut Tx<DB>,
    org_id: Uuid,
    key_id: Uuid,
    lock: Option<RowLock>,
) -> StoreResult<KeyRecord> {
    let sql = match lock {
        Some(lock) => locked::<DB>(&key_by_id(), lock),
        None => key_by_id(),
    };
    let statement = statement(&sql).bind(Id(org_id)).bind(Id(key_id));
    let row = statement.fetch_optional(tx).await?;
    KeyRecord::from_row(&row.ok_or(StoreError::NotFound)?)
}

/// Begins a transaction that creates or rotates keys of the organization: one at a time
/// for each organization, so that two keys cannot take one name. Where rows are locked,
/// `NO KEY UPDATE` on the organization's row leaves the rows that only reference it free to
/// be written meanwhile.
async fn write_keys<DB: Backend>(pool: &Pool<DB>, org_id: Uuid) -> StoreResult<Tx<DB>> {
    let mut tx = write(pool).await?;
    if let Some(lock) = DB::row_lock(RowLock::NoKeyUpdate) {
        let sql = format!("SELECT 1 FROM organizations WHERE id = $1 {lock}");
        statement(&sql)
            .bind(Id(org_id))
            .fetch_optional(&mut tx)
            .await?;
    }
    Ok(tx)
}

/// The member's role and membership id, or an error naming the user if they are no member;
/// the member stays a member until the transaction ends. (A role changed meanwhile is
/// caught when the key is used.)
async fn ensure_member<DB: Backend>(
    tx: &mut Tx<DB>,
    org_id: Uuid,
    user_id: Uuid,
) -> StoreResult<(Role, Uuid)> {
    let sql = locked::<DB>(MEMBERSHIP, RowLock::KeyShare);
    let statement = statement(&sql).bind(Id(org_id)).bind(Id(user_id));
    let row = statement.fetch_optional(tx).await?;
    membership_from_row(&row.ok_or_else(not_a_member)?)
}

async fn ensure_name_free<DB: Backend>(
    tx: &mut Tx<DB>,
    org_id: Uuid,
    name: &str,
    now: Timestamp,
) -> StoreResult<()> {
    let statement = statement(LIVE_KEY_NAMED)
        .bind(Id(org_id))
        .bind(name)
        .bind(now.millis());
    if statement.fetch_optional(tx).await?.is_some() {
        return Err(key_name_taken(name));
    }
    Ok(())
}

/// A workspace named by a task must be one of the organization's own.
async fn ensure_workspace<DB: Backend>(
    tx: &mut Tx<DB>,
    org_id: Uuid,
    workspace_id: Uuid,
) -> StoreResult<()> {
    let sql = "SELECT 1 FROM task_workspaces WHERE org_id = $1 AND id = $2";
    let statement = statement(sql).bind(Id(org_id)).bind(Id(workspace_id));
    statement
        .fetch_optional(tx)
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok(())
}

/// Begins a transaction that writes.
async fn write<DB: Backend>(pool: &Pool<DB>) -> StoreResult<Tx<DB>> {
    pool.begin_with(DB::BEGIN_WRITE).await.map_err(DB::map_err)
}

/// An object of the organization, by id.
async fn read_by_id<DB: Backend, T: FromRow>(
    pool: &Pool<DB>,
    columns: &str,
    table: &str,
    org_id: Uuid,
    id: Uuid,
) -> StoreResult<T> {
    let sql = format!("SELECT {columns} FROM {table} WHERE org_id = $1 AND id = $2");
    statement(&sql)
        .bind(Id(org_id))
        .bind(Id(id))
        .one(pool)
        .await
}

/// Runs one statement that must change a row, with its audit record, in a transaction;
/// `NotFound` when it changes none.
async fn audited<DB: Backend>(
    pool: &Pool<DB>,
    statement: Statement<'_, DB>,
    audit: AuditRecord,
) -> StoreResult<()> {
    let mut tx = write(pool).await?;
    change(&mut tx, statement).await?;
    commit(tx, audit).await
}

/// Inserts an object of the organization (its `columns`), with its audit record.
async fn insert<DB: Backend>(
    pool: &Pool<DB>,
    table: &str,
    columns: &str,
    org_id: Uuid,
    object: &impl ToRow,
    audit: AuditRecord,
) -> StoreResult<()> {
    let sql = insert_into(table, &["org_id", columns]);
    let statement = object.bind_columns(statement(&sql).bind(Id(org_id)));
    audited(pool, statement, audit).await
}

impl PageSql {
    /// One page and the count of all matches, read on `pool`; `filter` binds the filter's
    /// placeholders.
    async fn read<'q, DB: Backend, T: FromRow>(
        &'q self,
        pool: &Pool<DB>,
        page: Page,
        filter: impl Fn(Statement<'q, DB>) -> Statement<'q, DB>,
    ) -> StoreResult<Listed<T>> {
        let count = || async { filter(statement(&self.count)).row(pool).await?.int(TOTAL) };
        let counted_first = if self.counted {
            None
        } else {
            Some(count().await?)
        };
        let select = filter(statement(&self.select))
            .bind(page.limit)
            .bind(page.offset);
        let rows = select.rows(pool).await?;
        let total = match (counted_first, rows.first()) {
            (Some(total), _) => total,
            (None, Some(row)) => row.int(TOTAL)?,
            (None, None) if page.offset == 0 => 0,
            // Past the last page: the rows cannot say how many there are.
            (None, None) => count().await?,
        };
        Ok(Listed {
            items: rows.iter().map(T::from_row).collect::<StoreResult<_>>()?,
            total,
        })
    }
}

#[async_trait]
impl<DB: Backend> Store for SqlStore<DB> {
    async fn ping(&self) -> StoreResult<()> {
        statement("SELECT 1").rows(&self.reader).await?;
        Ok(())
    }

    async fn generation(&self) -> StoreResult<i64> {
        let sql = "SELECT generation FROM change_counter WHERE id = 1";
        statement(sql).row(&self.reader).await?.int("generation")
    }

    async fn bootstrap(&self, boot: &Bootstrap) -> StoreResult<bool> {
        let mut tx = write(&self.writer).await?;
        if let Some(lock) = DB::LOCK_ORGANIZATIONS {
            statement(lock).execute(&mut tx).await?;
        }
        let any = statement("SELECT 1 FROM organizations LIMIT 1");
        if any.fetch_optional(&mut tx).await?.is_some() {
            return Ok(false);
        }
        insert_org(&mut tx, &boot.org).await?;
        let email = DB::USER_EMAIL;
        let sql = format!(
            "{} ON CONFLICT ({email}) DO NOTHING",
            insert_into("users", &[USER_COLUMNS])
        );
        boot.user
            .bind_columns(statement(&sql))
            .execute(&mut tx)
            .await?;
        let sql = format!("SELECT id FROM users WHERE {email} = lower($1)");
        let user = statement(&sql).bind(boot.user.email.as_str());
        let user = user
            .fetch_optional(&mut tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let user_id = Uuid::read(&user, "id")?;
        let membership_id = Uuid::now_v7();
        let sql = "INSERT INTO members (org_id, user_id, role, created_at, id) \
                   VALUES ($1, $2, 'owner', $3, $4)";
        let statement = statement(sql)
            .bind(Id(boot.org.id))
            .bind(Id(user_id))
            .bind(boot.org.created_at.millis())
            .bind(Id(membership_id));
        change(&mut tx, statement).await?;
        let key = NewKey {
            created_by: user_id,
            ..boot.key.clone()
        };
        insert_key(&mut tx, boot.org.id, &key, Some(membership_id)).await?;
        DB::insert_audit(&mut tx, &bootstrap_audit(boot, user_id, &key)).await?;
        tx.commit().await.map_err(DB::map_err)?;
        Ok(true)
    }

    async fn create_org(&self, org: &Organization) -> StoreResult<()> {
        let mut tx = write(&self.writer).await?;
        insert_org(&mut tx, org).await?;
        let audit = AuditRecord::event(org.id, "organization.created", "cli").target(org.id);
        commit(tx, audit).await
    }

    async fn list_orgs(&self) -> StoreResult<Vec<Organization>> {
        let sql = format!("SELECT {ORG_COLUMNS} FROM organizations ORDER BY {OLDEST_FIRST}");
        statement(&sql).all(&self.reader).await
    }

    async fn get_org(&self, org_id: Uuid) -> StoreResult<Organization> {
        let sql = format!("SELECT {ORG_COLUMNS} FROM organizations WHERE id = $1");
        statement(&sql).bind(Id(org_id)).one(&self.reader).await
    }

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let mut tx = write(&self.writer).await?;
        let sql = insert_into("users", &[USER_COLUMNS]);
        let inserted = user.bind_columns(statement(&sql)).execute(&mut tx).await;
        inserted.map_err(|e| match e {
            StoreError::Conflict(_) => email_taken(&user.email),
            other => other,
        })?;
        tx.commit().await.map_err(DB::map_err)
    }

    async fn find_user(&self, id_or_email: &str) -> StoreResult<User> {
        // Ids are lowercase text in SQLite: only that spelling names a user by id.
        let id = Uuid::parse_str(id_or_email)
            .ok()
            .filter(|id| id.to_string() == id_or_email.to_ascii_lowercase());
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = $1 OR {} = lower($2)",
            DB::USER_EMAIL
        );
        statement(&sql)
            .bind(id.map(Id))
            .bind(id_or_email)
            .one(&self.reader)
            .await
    }

    async fn set_password(&self, user_id: Uuid, password_hash: &str) -> StoreResult<()> {
        let mut tx = write(&self.writer).await?;
        let set = statement("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(Id(user_id));
        if set.execute(&mut tx).await? == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await.map_err(DB::map_err)
    }

    async fn password_hash(&self, user_id: Uuid) -> StoreResult<Option<String>> {
        let row = statement("SELECT password_hash FROM users WHERE id = $1")
            .bind(Id(user_id))
            .row(&self.reader)
            .await?;
        Option::<String>::read(&row, "password_hash")
    }

    async fn add_member(&self, m: &Membership, audit: AuditRecord) -> StoreResult<()> {
        let mut tx = write(&self.writer).await?;
        // A role change keeps the membership's id, and so the keys created under it.
        let sql = "INSERT INTO members (org_id, user_id, role, created_at, id) \
                   VALUES ($1, $2, $3, $4, $5) \
                   ON CONFLICT (org_id, user_id) DO UPDATE SET role = excluded.role";
        let statement = statement(sql)
            .bind(Id(m.org_id))
            .bind(Id(m.user_id))
            .bind(m.role.as_str())
            .bind(m.created_at.millis())
            .bind(Id(Uuid::now_v7()))
            .on_err(|e| match &e {
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
                _ => DB::map_err(e),
            });
        statement.execute(&mut tx).await?;
        // A member added (or given another role) changes what cached keys may do.
        bump_generation(&mut tx).await?;
        commit(tx, audit).await
    }

    async fn remove_member(
        &self,
        org_id: Uuid,
        user_id: Uuid,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let mut tx = write(&self.writer).await?;
        let sql = "DELETE FROM members WHERE org_id = $1 AND user_id = $2";
        change(&mut tx, statement(sql).bind(Id(org_id)).bind(Id(user_id))).await?;
        bump_generation(&mut tx).await?;
        commit(tx, audit).await
    }

    async fn create_key(
        &self,
        org_id: Uuid,
        key: &NewKey,
        audit: AuditRecord,
    ) -> StoreResult<KeyRecord> {
        let mut tx = write_keys(&self.writer, org_id).await?;
        let (role, membership_id) = ensure_member(&mut tx, org_id, key.created_by).await?;
        ensure_scope_allowed(role, key.scope)?;
        ensure_name_free(&mut tx, org_id, &key.name, key.created_at).await?;
        insert_key(&mut tx, org_id, key, Some(membership_id)).await?;
        let record = key_in_tx(&mut tx, org_id, key.id, None).await?;
        commit(tx, audit).await?;
        Ok(record)
    }

    async fn list_keys(&self, org_id: Uuid, filter: &KeyFilter) -> StoreResult<Vec<KeyRecord>> {
        let sql = key_list();
        let statement = statement(&sql)
            .bind(Id(org_id))
            .bind(filter.search.as_deref())
            .bind(filter.unused_since.map(Timestamp::millis));
        statement.all(&self.reader).await
    }

    async fn get_key(&self, org_id: Uuid, key_id: Uuid) -> StoreResult<KeyRecord> {
        let sql = key_by_id();
        statement(&sql)
            .bind(Id(org_id))
            .bind(Id(key_id))
            .one(&self.reader)
            .await
    }

    async fn key_org(&self, key_id: Uuid) -> StoreResult<Uuid> {
        let sql = "SELECT org_id FROM api_keys WHERE id = $1 AND deleted_at IS NULL";
        let row = statement(sql).bind(Id(key_id)).row(&self.reader).await?;
        Uuid::read(&row, "org_id")
    }

    async fn rotate_key(
        &self,
        org_id: Uuid,
        key_id: Uuid,
        grace_ends_at: Timestamp,
        successor: &NewKey,
        audit: AuditRecord,
    ) -> StoreResult<KeyRecord> {
        let mut tx = write_keys(&self.writer, org_id).await?;
        // A second rotation of the same key waits here, then sees the first one's successor.
        let old = key_in_tx(&mut tx, org_id, key_id, Some(RowLock::Update)).await?;
        if old.replaced_by.is_some() {
            return Err(already_rotated());
        }
        // The successor belongs to the membership the key was created under.
        let sql = "UPDATE api_keys SET replaced_by = $3, grace_ends_at = $4 \
                   WHERE org_id = $1 AND id = $2 RETURNING membership_id";
        let replace = statement(sql)
            .bind(Id(org_id))
            .bind(Id(key_id))
            .bind(Id(successor.id))
            .bind(grace_ends_at.millis());
        let replaced = replace.fetch_optional(&mut tx).await?;
        let membership_id =
            ColumnValue::read(&replaced.ok_or(StoreError::NotFound)?, "membership_id")?;
        insert_key(&mut tx, org_id, successor, membership_id).await?;
        bump_generation(&mut tx).await?;
        let record = key_in_tx(&mut tx, org_id, successor.id, None).await?;
        commit(tx, audit).await?;
        Ok(record)
    }

    async fn delete_key(&self, org_id: Uuid, key_id: Uuid, audit: AuditRecord) -> StoreResult<()> {
        let mut tx = write(&self.writer).await?;
        let sql = "UPDATE api_keys SET deleted_at = $3 \
                   WHERE org_id = $1 AND id = $2 AND deleted_at IS NULL";
        let statement = statement(sql)
            .bind(Id(org_id))
            .bind(Id(key_id))
            .bind(Timestamp::now().millis());
        change(&mut tx, statement).await?;
        bump_generation(&mut tx).await?;
        commit(tx, audit).await
    }

    async fn find_grant(&self, digest: &KeyDigest) -> StoreResult<Option<KeyGrant>> {
        let sql = grant_where("k.digest = $1");
        statement(&sql)
            .bind(digest.as_bytes())
            .optional(&self.reader)
            .await
    }

    async fn key_grant(&self, org_id: Uuid, key_id: Uuid) -> StoreResult<Option<KeyGrant>> {
        let sql = grant_where("k.org_id = $1 AND k.id = $2");
        statement(&sql)
            .bind(Id(org_id))
            .bind(Id(key_id))
            .optional(&self.reader)
            .await
    }

    async fn list_agents(
        &self,
        org_id: Uuid,
        search: Option<&str>,
        page: Page,
    ) -> StoreResult<Listed<Agent>> {
        let sql = page_sql::<DB>(AGENT_COLUMNS, "agents", AGENT_FILTER, OLDEST_FIRST);
        sql.read(&self.reader, page, |s| s.bind(Id(org_id)).bind(search))
            .await
    }

    async fn create_agent(&self, org_id: Uuid, a: &Agent, audit: AuditRecord) -> StoreResult<()> {
        insert(&self.writer, "agents", AGENT_COLUMNS, org_id, a, audit).await
    }

    async fn get_agent(&self, org_id: Uuid, agent_id: Uuid) -> StoreResult<Agent> {
        read_by_id(&self.reader, AGENT_COLUMNS, "agents", org_id, agent_id).await
    }

    async fn update_agent(&self, org_id: Uuid, a: &Agent, audit: AuditRecord) -> StoreResult<()> {
        let sql = "UPDATE agents SET name = $3, description = $4, instructions = $5, \
                   model = $6, updated_at = $7 WHERE org_id = $1 AND id = $2";
        let statement = statement(sql)
            .bind(Id(org_id))
            .bind(Id(a.id))
            .bind(a.name.as_str())
            .bind(a.description.as_str())
            .bind(a.instructions.as_str())
            .bind(a.model.as_deref())
            .bind(a.updated_at.millis());
        audited(&self.writer, statement, audit).await
    }

    async fn delete_agent(
        &self,
        org_id: Uuid,
        agent_id: Uuid,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let sql = "DELETE FROM agents WHERE org_id = $1 AND id = $2";
        audited(
            &self.writer,
            statement(sql).bind(Id(org_id)).bind(Id(agent_id)),
            audit,
        )
        .await
    }

    async fn list_named(
        &self,
        catalog: Catalog,
        org_id: Uuid,
        page: Page,
    ) -> StoreResult<Listed<Named>> {
        let sql = page_sql::<DB>(NAMED_COLUMNS, catalog.table(), "org_id = $1", OLDEST_FIRST);
        sql.read(&self.reader, page, |s| s.bind(Id(org_id))).await
    }

    async fn create_named(
        &self,
        catalog: Catalog,
        org_id: Uuid,
        object: &Named,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        insert(
            &self.writer,
            catalog.table(),
            NAMED_COLUMNS,
            org_id,
            object,
            audit,
        )
        .await
    }

    async fn get_named(&self, catalog: Catalog, org_id: Uuid, id: Uuid) -> StoreResult<Named> {
        read_by_id(&self.reader, NAMED_COLUMNS, catalog.table(), org_id, id).await
    }

    async fn list_tasks(
        &self,
        org_id: Uuid,
        f: &TaskFilter,
        page: Page,
    ) -> StoreResult<Listed<Task>> {
        let sql = page_sql::<DB>(TASK_COLUMNS, "tasks", TASK_FILTER, OLDEST_FIRST);
        sql.read(&self.reader, page, |s| task_filter(s, org_id, f))
            .await
    }

    async fn create_task(&self, org_id: Uuid, t: &Task, audit: AuditRecord) -> StoreResult<()> {
        let mut tx = write(&self.writer).await?;
        ensure_workspace(&mut tx, org_id, t.workspace_id).await?;
        let sql = insert_into("tasks", &["org_id", TASK_COLUMNS]);
        change(&mut tx, t.bind_columns(statement(&sql).bind(Id(org_id)))).await?;
        commit(tx, audit).await
    }

    async fn get_task(&self, org_id: Uuid, task_id: Uuid) -> StoreResult<Task> {
        read_by_id(&self.reader, TASK_COLUMNS, "tasks", org_id, task_id).await
    }

    async fn update_task(&self, org_id: Uuid, t: &Task, audit: AuditRecord) -> StoreResult<()> {
        let mut tx = write(&self.writer).await?;
        ensure_workspace(&mut tx, org_id, t.workspace_id).await?;
        let sql = "UPDATE tasks SET workspace_id = $3, title = $4, description = $5, \
                   status = $6, updated_at = $7 WHERE org_id = $1 AND id = $2";
        let statement = statement(sql)
            .bind(Id(org_id))
            .bind(Id(t.id))
            .bind(Id(t.workspace_id))
            .bind(t.title.as_str())
            .bind(t.description.as_str())
            .bind(t.status.as_str())
            .bind(t.updated_at.millis());
        change(&mut tx, statement).await?;
        commit(tx, audit).await
    }

    async fn list_connections(
        &self,
        org_id: Uuid,
        member: Uuid,
        page: Page,
    ) -> StoreResult<Listed<Connection>> {
        let sql = page_sql::<DB>(
            CONNECTION_COLUMNS,
            "connections",
            CONNECTION_VISIBLE,
            OLDEST_FIRST,
        );
        sql.read(&self.reader, page, |s| s.bind(Id(org_id)).bind(Id(member)))
            .await
    }

    async fn create_connection(
        &self,
        org_id: Uuid,
        c: &Connection,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        insert(
            &self.writer,
            "connections",
            CONNECTION_COLUMNS,
            org_id,
            c,
            audit,
        )
        .await
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
        let statement = statement(&sql)
            .bind(Id(org_id))
            .bind(Id(member))
            .bind(Id(id));
        statement.one(&self.reader).await
    }

    async fn get_conversation(
        &self,
        org_id: Uuid,
        conversation_id: Uuid,
    ) -> StoreResult<Conversation> {
        let sql = "SELECT id, agent_id, created_at, updated_at FROM conversations \
                   WHERE org_id = $1 AND id = $2";
        let head = statement(sql).bind(Id(org_id)).bind(Id(conversation_id));
        let mut conversation: Conversation = head.one(&self.reader).await?;
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE org_id = $1 AND conversation_id = $2 ORDER BY created_at, id"
        );
        let messages = statement(&sql).bind(Id(org_id)).bind(Id(conversation_id));
        conversation.messages = messages.all(&self.reader).await?;
        Ok(conversation)
    }

    async fn conversation_tail(
        &self,
        org_id: Uuid,
        conversation_id: Uuid,
        chars: usize,
    ) -> StoreResult<ConversationTail> {
        let head = statement(CONVERSATION_HEAD)
            .bind(Id(org_id))
            .bind(Id(conversation_id));
        let mut tail: ConversationTail = head.one(&self.reader).await?;
        let recent = statement(RECENT_MESSAGES)
            .bind(Id(org_id))
            .bind(Id(conversation_id))
            .bind(char_budget(chars));
        tail.recent = recent.all(&self.reader).await?;
        Ok(tail)
    }

    async fn record_exchange(
        &self,
        org_id: Uuid,
        x: &Exchange,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let mut tx = write(&self.writer).await?;
        let conversation = if x.starts {
            let sql = "INSERT INTO conversations (org_id, id, agent_id, created_at, updated_at) \
                       VALUES ($1, $2, $3, $4, $5)";
            statement(sql)
                .bind(Id(org_id))
                .bind(Id(x.conversation_id))
                .bind(Id(x.agent_id))
                .bind(x.question.created_at.millis())
                .bind(x.answer.created_at.millis())
        } else {
            let sql = "UPDATE conversations SET updated_at = $4 \
                       WHERE org_id = $1 AND id = $2 AND agent_id = $3";
            statement(sql)
                .bind(Id(org_id))
                .bind(Id(x.conversation_id))
                .bind(Id(x.agent_id))
                .bind(x.answer.created_at.millis())
        };
        change(&mut tx, conversation).await?;
        // Counted once the conversation's row is written: SQLite runs transactions that write
        // one at a time, and in PostgreSQL that row's lock orders the exchanges of one
        // conversation, so the count sees every exchange stored before this one.
        let held = if x.starts {
            0
        } else {
            let count = statement(count_messages!())
                .bind(Id(org_id))
                .bind(Id(x.conversation_id));
            let row = count.fetch_optional(&mut tx).await?;
            row.ok_or(StoreError::NotFound)?.int("held")?
        };
        ensure_room(held, x.max_messages)?;
        let sql = insert_into("messages", &["org_id, conversation_id", MESSAGE_COLUMNS]);
        for m in [&x.question, &x.answer] {
            let message = statement(&sql).bind(Id(org_id)).bind(Id(x.conversation_id));
            change(&mut tx, m.bind_columns(message)).await?;
        }
        commit(tx, audit).await
    }

    async fn create_file(
        &self,
        org_id: Uuid,
        f: &StoredFile,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        insert(&self.writer, "files", FILE_COLUMNS, org_id, f, audit).await
    }

    async fn get_file(
        &self,
        org_id: Uuid,
        file_id: Uuid,
        now: Timestamp,
    ) -> StoreResult<StoredFile> {
        let file: StoredFile =
            read_by_id(&self.reader, FILE_COLUMNS, "files", org_id, file_id).await?;
        if file.expires_at <= now {
            return Err(StoreError::NotFound);
        }
        Ok(file)
    }

    async fn expired_files(&self, now: Timestamp, limit: i64) -> StoreResult<Vec<Uuid>> {
        let sql = "SELECT id FROM files WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2";
        let rows = statement(sql)
            .bind(now.millis())
            .bind(limit)
            .rows(&self.reader)
            .await?;
        rows.iter().map(|row| Uuid::read(row, "id")).collect()
    }

    async fn forget_files(&self, ids: &[Uuid]) -> StoreResult<()> {
        // Maintenance across organizations: these ids come from `expired_files`, never from
        // a request.
        let mut tx = write(&self.writer).await?;
        for chunk in ids.chunks(FORGOTTEN_PER_STATEMENT) {
            let sql = format!(
                "DELETE FROM files WHERE id IN ({})",
                placeholders(chunk.len())
            );
            let forget = chunk.iter().fold(statement(&sql), |s, id| s.bind(Id(*id)));
            forget.execute(&mut tx).await?;
        }
        tx.commit().await.map_err(DB::map_err)
    }

    async fn create_realtime_session(
        &self,
        r: &RealtimeSession,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let sql = insert_into("realtime_sessions", &[REALTIME_COLUMNS]);
        audited(&self.writer, r.bind_columns(statement(&sql)), audit).await
    }

    async fn claim_realtime_session(
        &self,
        session_id: Uuid,
        secret: &KeyDigest,
        now: Timestamp,
    ) -> StoreResult<RealtimeSession> {
        // Looked up by id alone: the session names its organization, and the secret is what
        // authenticates the caller. A second claim waits for the first one's transaction,
        // then finds the session used.
        let mut tx = write(&self.writer).await?;
        let sql = locked::<DB>(
            &format!("SELECT {REALTIME_COLUMNS}, used_at FROM realtime_sessions WHERE id = $1"),
            RowLock::Update,
        );
        let row = statement(&sql)
            .bind(Id(session_id))
            .fetch_optional(&mut tx)
            .await?;
        let session = claimable_session(&row.ok_or(StoreError::NotFound)?, secret, now)?;
        let sql = "UPDATE realtime_sessions SET used_at = $1 WHERE id = $2";
        change(
            &mut tx,
            statement(sql).bind(now.millis()).bind(Id(session_id)),
        )
        .await?;
        tx.commit().await.map_err(DB::map_err)?;
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
        let mut tx = write(&self.writer).await?;
        DB::insert_audit(&mut tx, audit).await?;
        DB::record_last_used(&mut tx, last_used).await?;
        tx.commit().await.map_err(DB::map_err)
    }

    async fn export_audit(
        &self,
        org_id: Uuid,
        f: &AuditFilter,
        cursor: Option<AuditCursor>,
        limit: i64,
    ) -> StoreResult<(Vec<AuditRecord>, Option<AuditCursor>)> {
        let sql = audit_export();
        let statement = audit_filter(statement(&sql), org_id, f)
            .bind(cursor.map(|c| c.at))
            .bind(cursor.map(|c| c.seq))
            .bind(limit);
        audit_page(&statement.rows(&self.reader).await?, limit)
    }

    async fn list_audit(
        &self,
        org_id: Uuid,
        f: &AuditFilter,
        page: Page,
    ) -> StoreResult<Listed<AuditRecord>> {
        let sql = page_sql::<DB>(AUDIT_COLUMNS, "audit_log", AUDIT_FILTER, AUDIT_ORDER);
        sql.read(&self.reader, page, |s| audit_filter(s, org_id, f))
            .await
    }
}
