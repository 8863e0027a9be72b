//! PostgreSQL, for several replicas behind a load balancer.
//!
//! One pool serves reads and writes. Where SQLite serialises every write with `BEGIN
//! IMMEDIATE`, transactions here run at READ COMMITTED and lock what they decide on: the
//! organization's row while a key is created or rotated (so two keys cannot take one name),
//! the key's row while it is rotated (so a key is rotated once), the member's row while a
//! key is issued in their name, the session's row while it is claimed. `lock_timeout` plays
//! the part of SQLite's busy timeout: a lock held too long is "unavailable", not a hang.
//! Batches of audit records and last-use times go in one statement each, as arrays.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Arguments, ConnectOptions, Connection as _, Postgres, Row, Transaction};
use uuid::Uuid;

use super::sql::*;
use super::*;

pub struct PostgresStore {
    pool: PgPool,
}

type Tx = Transaction<'static, Postgres>;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// Connections a store holds at most, unless the URL says `max_connections=N`.
const MAX_CONNECTIONS: u32 = 16;
/// How long a query waits for a connection, or a connection attempt for the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a statement waits for a row another transaction holds.
const LOCK_TIMEOUT: &str = "10s";

impl PostgresStore {
    /// Opens a `postgres://` or `postgresql://` URL and migrates the database. Several
    /// processes may open one database at once: the migrations run under an advisory lock.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let (url, max_connections) = pool_size(url)?;
        let options = PgConnectOptions::from_str(&url)
            .map_err(|e| StoreError::Unavailable(format!("bad database URL: {e}")))?
            .options([("lock_timeout", LOCK_TIMEOUT)]);
        // A connection of its own, closed after: the migrator's lock is held by the session,
        // so it ends with it even when a migration fails.
        let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
            .await
            .map_err(|_| StoreError::Unavailable("the database did not answer in time".into()))?
            .map_err(map_err)?;
        MIGRATOR
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        conn.close().await.map_err(map_err)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(map_err)?;
        Ok(PostgresStore { pool })
    }

    /// One page of a list query and the count of all its matches.
    async fn list_page<T>(
        &self,
        query: PageQuery<'_>,
        args: PgArguments,
        page: Page,
        map: fn(&PgRow) -> StoreResult<T>,
    ) -> StoreResult<Listed<T>> {
        let sql = query.sql(args.len(), true);
        list_page(&self.pool, &sql, args, page, map, map_err).await
    }

    async fn begin(&self) -> StoreResult<Tx> {
        self.pool.begin().await.map_err(map_err)
    }

    /// Runs one statement in a transaction with its audit record.
    async fn audited(&self, sql: &str, args: PgArguments, audit: AuditRecord) -> StoreResult<()> {
        self.audited_or(sql, args, audit, map_err, false).await
    }

    /// [`Self::audited`], with the statement's own reading of its errors.
    async fn audited_or(
        &self,
        sql: &str,
        args: PgArguments,
        audit: AuditRecord,
        on_err: fn(sqlx::Error) -> StoreError,
        bump: bool,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query_with(sql, args)
            .execute(&mut *tx)
            .await
            .map_err(on_err)?;
        if bump {
            bump_generation(&mut tx).await?;
        }
        insert_audit(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(map_err)
    }

    /// Runs one statement that must change a row, in a transaction with its audit record;
    /// `NotFound` when it changes none.
    async fn audited_change(
        &self,
        sql: &str,
        args: PgArguments,
        audit: AuditRecord,
        bump: bool,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query_with(sql, args)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        if bump {
            bump_generation(&mut tx).await?;
        }
        insert_audit(&mut tx, &[audit]).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn fetch_one_of<T>(
        &self,
        sql: &str,
        args: PgArguments,
        map: fn(&PgRow) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let row = sqlx::query_with(sql, args)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)?;
        map(&row)
    }
}

/// Arguments bound in order as `$1`, `$2`, ...
fn args(
    values: impl FnOnce(&mut PgArguments) -> Result<(), sqlx::error::BoxDynError>,
) -> StoreResult<PgArguments> {
    with(PgArguments::default(), values)
}

fn with(
    mut a: PgArguments,
    values: impl FnOnce(&mut PgArguments) -> Result<(), sqlx::error::BoxDynError>,
) -> StoreResult<PgArguments> {
    values(&mut a).map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok(a)
}

/// Takes `max_connections=N` out of the URL's query: the pool's size, which the driver
/// does not know.
fn pool_size(url: &str) -> StoreResult<(String, u32)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), MAX_CONNECTIONS));
    };
    let mut max = MAX_CONNECTIONS;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("max_connections", n)) => {
                max = n.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    StoreError::Unavailable(format!(
                        "bad database URL: max_connections={n} is not a positive number"
                    ))
                })?
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, max))
}

fn map_err(e: sqlx::Error) -> StoreError {
    map_sqlx_err(e, |code| {
        // Connection exceptions (08), insufficient resources (53), the server shutting down
        // or cancelling (57), failed authentication (28), an unknown database (3D), and
        // lock_timeout (55P03).
        ["08", "53", "57", "28", "3D"]
            .iter()
            .any(|class| code.starts_with(class))
            || code == "55P03"
    })
}

impl UuidColumn for PgRow {
    fn opt_uuid(&self, col: &str) -> StoreResult<Option<Uuid>> {
        self.try_get(col).map_err(column_err)
    }
}

async fn exists(tx: &mut Tx, sql: &str, args: PgArguments) -> StoreResult<bool> {
    let row = sqlx::query_with(sql, args)
        .fetch_optional(&mut **tx)
        .await
        .map_err(map_err)?;
    Ok(row.is_some())
}

/// A workspace named by a task must be one of the organization's own.
async fn ensure_workspace(tx: &mut Tx, org_id: Uuid, workspace_id: Uuid) -> StoreResult<()> {
    let sql = "SELECT 1 FROM task_workspaces WHERE org_id = $1 AND id = $2";
    let found = exists(
        tx,
        sql,
        args(|a| {
            a.add(org_id)?;
            a.add(workspace_id)
        })?,
    )
    .await?;
    found.then_some(()).ok_or(StoreError::NotFound)
}

/// Serialises the creation and rotation of an organization's keys. `NO KEY UPDATE` leaves
/// the rows that only reference the organization free to be written meanwhile.
async fn lock_org(tx: &mut Tx, org_id: Uuid) -> StoreResult<()> {
    let sql = "SELECT 1 FROM organizations WHERE id = $1 FOR NO KEY UPDATE";
    exists(tx, sql, args(|a| a.add(org_id))?).await?;
    Ok(())
}

/// Inserts records in one statement, in their order (which `seq` keeps).
async fn insert_audit(tx: &mut Tx, records: &[AuditRecord]) -> StoreResult<()> {
    if records.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO audit_log ({AUDIT_COLUMNS}) SELECT {AUDIT_COLUMNS} FROM UNNEST(\
         $1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[], $6::uuid[], \
         $7::text[], $8::text[], $9::text[], $10::bigint[], $11::text[], $12::text[]) \
         WITH ORDINALITY AS r({AUDIT_COLUMNS}, n) ORDER BY n"
    );
    fn column<'r, T>(records: &'r [AuditRecord], f: impl Fn(&'r AuditRecord) -> T) -> Vec<T> {
        records.iter().map(f).collect()
    }
    sqlx::query(&sql)
        .bind(column(records, |r| r.id))
        .bind(column(records, |r| r.org_id))
        .bind(column(records, |r| r.at.millis()))
        .bind(column(records, |r| r.action.as_str()))
        .bind(column(records, |r| r.actor.as_str()))
        .bind(column(records, |r| r.key_id))
        .bind(column(records, |r| r.key_name.as_deref()))
        .bind(column(records, |r| r.method.as_deref()))
        .bind(column(records, |r| r.path.as_deref()))
        .bind(column(records, |r| r.status.map(i64::from)))
        .bind(column(records, |r| r.request_id.as_deref()))
        .bind(column(records, |r| r.target_id.as_deref()))
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
    Ok(())
}

async fn bump_generation(tx: &mut Tx) -> StoreResult<()> {
    sqlx::query("UPDATE change_counter SET generation = generation + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// Stores a key created under the membership `membership_id` (`None`: one that has ended).
async fn insert_key(
    tx: &mut Tx,
    org_id: Uuid,
    key: &NewKey,
    membership_id: Option<Uuid>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, org_id, name, environment, scope, digest, hint, created_by, \
         created_at, expires_at, rate_limit, membership_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(key.id)
    .bind(org_id)
    .bind(&key.name)
    .bind(key.environment.as_str())
    .bind(key.scope.as_str())
    .bind(key.digest.as_bytes())
    .bind(&key.hint)
    .bind(key.created_by)
    .bind(key.created_at.millis())
    .bind(key.expires_at.map(Timestamp::millis))
    .bind(key.rate_limit.map(i64::from))
    .bind(membership_id)
    .execute(&mut **tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// The key, locked until the transaction ends when `lock` is set.
async fn key_in_tx(tx: &mut Tx, org_id: Uuid, key_id: Uuid, lock: bool) -> StoreResult<KeyRecord> {
    let sql = if lock {
        format!("{} FOR UPDATE", key_by_id())
    } else {
        key_by_id()
    };
    let row = sqlx::query(&sql)
        .bind(org_id)
        .bind(key_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
    key_from_row(&row)
}

async fn ensure_name_free(
    tx: &mut Tx,
    org_id: Uuid,
    name: &str,
    now: Timestamp,
) -> StoreResult<()> {
    let taken = exists(
        tx,
        LIVE_KEY_NAMED,
        args(|a| {
            a.add(org_id)?;
            a.add(name)?;
            a.add(now.millis())
        })?,
    )
    .await?;
    if taken {
        return Err(key_name_taken(name));
    }
    Ok(())
}

/// The member's role and membership id; the member stays a member until the transaction
/// ends. (A role changed meanwhile is caught when the key is used.)
async fn ensure_member(tx: &mut Tx, org_id: Uuid, user_id: Uuid) -> StoreResult<(Role, Uuid)> {
    let row = sqlx::query_with(
        &format!("{MEMBERSHIP} FOR KEY SHARE"),
        org_and(org_id, user_id)?,
    )
    .fetch_optional(&mut **tx)
    .await
    .map_err(map_err)?
    .ok_or_else(not_a_member)?;
    membership_from_row(&row)
}

/// Two org-scoped ids: `$1` the organization, `$2` the object.
fn org_and(org_id: Uuid, id: Uuid) -> StoreResult<PgArguments> {
    args(|a| {
        a.add(org_id)?;
        a.add(id)
    })
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn generation(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT generation FROM change_counter WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)
    }

    async fn bootstrap(&self, boot: &Bootstrap) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        // Two servers starting at once on an empty database: one bootstraps, the other waits
        // and then finds the organization.
        sqlx::query("LOCK TABLE organizations IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if exists(
            &mut tx,
            "SELECT 1 FROM organizations LIMIT 1",
            args(|_| Ok(()))?,
        )
        .await?
        {
            return Ok(false);
        }
        insert_org(&mut tx, &boot.org).await?;
        sqlx::query(
            "INSERT INTO users (id, email, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (lower(email)) DO NOTHING",
        )
        .bind(boot.user.id)
        .bind(&boot.user.email)
        .bind(boot.user.created_at.millis())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let user_id: Uuid =
            sqlx::query_scalar("SELECT id FROM users WHERE lower(email) = lower($1)")
                .bind(&boot.user.email)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
        let membership_id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO members (org_id, user_id, role, created_at, id) \
             VALUES ($1, $2, 'owner', $3, $4)",
        )
        .bind(boot.org.id)
        .bind(user_id)
        .bind(boot.org.created_at.millis())
        .bind(membership_id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let key = NewKey {
            created_by: user_id,
            ..boot.key.clone()
        };
        insert_key(&mut tx, boot.org.id, &key, Some(membership_id)).await?;
        insert_audit(&mut tx, &bootstrap_audit(boot, user_id, &key)).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn create_org(&self, org: &Organization) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        insert_org(&mut tx, org).await?;
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
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(org_from_row).collect()
    }

    async fn get_org(&self, org_id: Uuid) -> StoreResult<Organization> {
        let sql = format!("SELECT {ORG_COLUMNS} FROM organizations WHERE id = $1");
        self.fetch_one_of(&sql, args(|a| a.add(org_id))?, org_from_row)
            .await
    }

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        sqlx::query("INSERT INTO users (id, email, created_at) VALUES ($1, $2, $3)")
            .bind(user.id)
            .bind(&user.email)
            .bind(user.created_at.millis())
            .execute(&self.pool)
            .await
            .map_err(|e| match map_err(e) {
                StoreError::Conflict(_) => email_taken(&user.email),
                other => other,
            })?;
        Ok(())
    }

    async fn find_user(&self, id_or_email: &str) -> StoreResult<User> {
        // As in SQLite, where ids are lowercase text: only that spelling names a user by id.
        let id = Uuid::parse_str(id_or_email)
            .ok()
            .filter(|id| id.to_string() == id_or_email.to_ascii_lowercase());
        let sql =
            "SELECT id, email, created_at FROM users WHERE id = $1 OR lower(email) = lower($2)";
        let args = args(|a| {
            a.add(id)?;
            a.add(id_or_email)
        })?;
        self.fetch_one_of(sql, args, user_from_row).await
    }

    async fn add_member(&self, m: &Membership, audit: AuditRecord) -> StoreResult<()> {
        // A role change keeps the membership's id, and so the keys created under it.
        let sql = "INSERT INTO members (org_id, user_id, role, created_at, id) \
                   VALUES ($1, $2, $3, $4, $5) \
                   ON CONFLICT (org_id, user_id) DO UPDATE SET role = excluded.role";
        let args = args(|a| {
            a.add(m.org_id)?;
            a.add(m.user_id)?;
            a.add(m.role.as_str())?;
            a.add(m.created_at.millis())?;
            a.add(Uuid::now_v7())
        })?;
        // A member added (or given another role) changes what cached keys may do.
        let on_err = |e: sqlx::Error| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
            _ => map_err(e),
        };
        self.audited_or(sql, args, audit, on_err, true).await
    }

    async fn remove_member(
        &self,
        org_id: Uuid,
        user_id: Uuid,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let sql = "DELETE FROM members WHERE org_id = $1 AND user_id = $2";
        self.audited_change(sql, org_and(org_id, user_id)?, audit, true)
            .await
    }

    async fn create_key(
        &self,
        org_id: Uuid,
        key: &NewKey,
        audit: AuditRecord,
    ) -> StoreResult<KeyRecord> {
        let mut tx = self.begin().await?;
        lock_org(&mut tx, org_id).await?;
        let (role, membership_id) = ensure_member(&mut tx, org_id, key.created_by).await?;
        ensure_scope_allowed(role, key.scope)?;
        ensure_name_free(&mut tx, org_id, &key.name, key.created_at).await?;
        insert_key(&mut tx, org_id, key, Some(membership_id)).await?;
        insert_audit(&mut tx, &[audit]).await?;
        let record = key_in_tx(&mut tx, org_id, key.id, false).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(record)
    }

    async fn list_keys(&self, org_id: Uuid, filter: &KeyFilter) -> StoreResult<Vec<KeyRecord>> {
        let rows = sqlx::query(&key_list())
            .bind(org_id)
            .bind(filter.search.as_deref())
            .bind(filter.unused_since.map(Timestamp::millis))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn get_key(&self, org_id: Uuid, key_id: Uuid) -> StoreResult<KeyRecord> {
        self.fetch_one_of(&key_by_id(), org_and(org_id, key_id)?, key_from_row)
            .await
    }

    async fn key_org(&self, key_id: Uuid) -> StoreResult<Uuid> {
        sqlx::query_scalar("SELECT org_id FROM api_keys WHERE id = $1 AND deleted_at IS NULL")
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)
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
        lock_org(&mut tx, org_id).await?;
        // A second rotation of the same key waits here, then sees the first one's successor.
        let old = key_in_tx(&mut tx, org_id, key_id, true).await?;
        if old.replaced_by.is_some() {
            return Err(already_rotated());
        }
        let replaced = sqlx::query(REPLACE_KEY)
            .bind(successor.id)
            .bind(grace_ends_at.millis())
            .bind(org_id)
            .bind(key_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
        let membership_id = opt_uuid_col(&replaced, "membership_id")?;
        insert_key(&mut tx, org_id, successor, membership_id).await?;
        bump_generation(&mut tx).await?;
        insert_audit(&mut tx, &[audit]).await?;
        let record = key_in_tx(&mut tx, org_id, successor.id, false).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(record)
    }

    async fn delete_key(&self, org_id: Uuid, key_id: Uuid, audit: AuditRecord) -> StoreResult<()> {
        let sql = "UPDATE api_keys SET deleted_at = $3 WHERE org_id = $1 AND id = $2 \
                   AND deleted_at IS NULL";
        let args = with(org_and(org_id, key_id)?, |a| {
            a.add(Timestamp::now().millis())
        })?;
        self.audited_change(sql, args, audit, true).await
    }

    async fn find_grant(&self, digest: &KeyDigest) -> StoreResult<Option<KeyGrant>> {
        let row = sqlx::query(&grant_by_digest())
            .bind(digest.as_bytes())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(grant_from_row).transpose()
    }

    async fn key_grant(&self, org_id: Uuid, key_id: Uuid) -> StoreResult<Option<KeyGrant>> {
        let row = sqlx::query_with(&grant_by_id(), org_and(org_id, key_id)?)
            .fetch_optional(&self.pool)
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
        let args = args(|a| {
            a.add(org_id)?;
            a.add(search)
        })?;
        self.list_page(query, args, page, agent_from_row).await
    }

    async fn create_agent(&self, org_id: Uuid, a: &Agent, audit: AuditRecord) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO agents (org_id, {AGENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        );
        let args = with(org_and(org_id, a.id)?, |q| {
            q.add(&a.name)?;
            q.add(&a.description)?;
            q.add(&a.instructions)?;
            q.add(a.model.as_deref())?;
            q.add(a.created_at.millis())?;
            q.add(a.updated_at.millis())
        })?;
        self.audited(&sql, args, audit).await
    }

    async fn get_agent(&self, org_id: Uuid, agent_id: Uuid) -> StoreResult<Agent> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE org_id = $1 AND id = $2");
        self.fetch_one_of(&sql, org_and(org_id, agent_id)?, agent_from_row)
            .await
    }

    async fn update_agent(&self, org_id: Uuid, a: &Agent, audit: AuditRecord) -> StoreResult<()> {
        let sql = "UPDATE agents SET name = $3, description = $4, instructions = $5, model = $6, \
                   updated_at = $7 WHERE org_id = $1 AND id = $2";
        let args = with(org_and(org_id, a.id)?, |q| {
            q.add(&a.name)?;
            q.add(&a.description)?;
            q.add(&a.instructions)?;
            q.add(a.model.as_deref())?;
            q.add(a.updated_at.millis())
        })?;
        self.audited_change(sql, args, audit, false).await
    }

    async fn delete_agent(
        &self,
        org_id: Uuid,
        agent_id: Uuid,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let sql = "DELETE FROM agents WHERE org_id = $1 AND id = $2";
        self.audited_change(sql, org_and(org_id, agent_id)?, audit, false)
            .await
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
        self.list_page(query, args(|a| a.add(org_id))?, page, named_from_row)
            .await
    }

    async fn create_named(
        &self,
        catalog: Catalog,
        org_id: Uuid,
        object: &Named,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO {} (org_id, {NAMED_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)",
            catalog.table()
        );
        let args = with(org_and(org_id, object.id)?, |a| {
            a.add(&object.name)?;
            a.add(&object.description)?;
            a.add(object.created_at.millis())?;
            a.add(object.updated_at.millis())
        })?;
        self.audited(&sql, args, audit).await
    }

    async fn get_named(&self, catalog: Catalog, org_id: Uuid, id: Uuid) -> StoreResult<Named> {
        let sql = format!(
            "SELECT {NAMED_COLUMNS} FROM {} WHERE org_id = $1 AND id = $2",
            catalog.table()
        );
        self.fetch_one_of(&sql, org_and(org_id, id)?, named_from_row)
            .await
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
            a.add(org_id)?;
            a.add(f.workspace_id)?;
            a.add(f.status.map(TaskStatus::as_str))
        })?;
        self.list_page(query, args, page, task_from_row).await
    }

    async fn create_task(&self, org_id: Uuid, t: &Task, audit: AuditRecord) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        ensure_workspace(&mut tx, org_id, t.workspace_id).await?;
        sqlx::query(&format!(
            "INSERT INTO tasks (org_id, {TASK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(org_id)
        .bind(t.id)
        .bind(t.workspace_id)
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
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE org_id = $1 AND id = $2");
        self.fetch_one_of(&sql, org_and(org_id, task_id)?, task_from_row)
            .await
    }

    async fn update_task(&self, org_id: Uuid, t: &Task, audit: AuditRecord) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        ensure_workspace(&mut tx, org_id, t.workspace_id).await?;
        let done = sqlx::query(
            "UPDATE tasks SET workspace_id = $3, title = $4, description = $5, status = $6, \
             updated_at = $7 WHERE org_id = $1 AND id = $2",
        )
        .bind(org_id)
        .bind(t.id)
        .bind(t.workspace_id)
        .bind(&t.title)
        .bind(&t.description)
        .bind(t.status.as_str())
        .bind(t.updated_at.millis())
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
        self.list_page(query, org_and(org_id, member)?, page, connection_from_row)
            .await
    }

    async fn create_connection(
        &self,
        org_id: Uuid,
        c: &Connection,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO connections (org_id, {CONNECTION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        );
        let args = with(org_and(org_id, c.id)?, |a| {
            a.add(&c.name)?;
            a.add(&c.kind)?;
            a.add(c.visibility.as_str())?;
            a.add(c.created_by)?;
            a.add(c.created_at.millis())?;
            a.add(c.updated_at.millis())
        })?;
        self.audited(&sql, args, audit).await
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
        let args = with(org_and(org_id, member)?, |a| a.add(id))?;
        self.fetch_one_of(&sql, args, connection_from_row).await
    }

    async fn get_conversation(
        &self,
        org_id: Uuid,
        conversation_id: Uuid,
    ) -> StoreResult<Conversation> {
        let row = sqlx::query(
            "SELECT id, agent_id, created_at, updated_at FROM conversations \
             WHERE org_id = $1 AND id = $2",
        )
        .bind(org_id)
        .bind(conversation_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
        let messages = sqlx::query(
            "SELECT id, role, content, created_at FROM messages \
             WHERE org_id = $1 AND conversation_id = $2 ORDER BY created_at, id",
        )
        .bind(org_id)
        .bind(conversation_id)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        conversation_from_rows(&row, &messages)
    }

    async fn conversation_tail(
        &self,
        org_id: Uuid,
        conversation_id: Uuid,
        chars: usize,
    ) -> StoreResult<ConversationTail> {
        conversation_tail(&self.pool, org_id, conversation_id, chars, map_err).await
    }

    async fn record_exchange(
        &self,
        org_id: Uuid,
        x: &Exchange,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let done = if x.starts {
            sqlx::query(
                "INSERT INTO conversations (org_id, id, agent_id, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(org_id)
            .bind(x.conversation_id)
            .bind(x.agent_id)
            .bind(x.question.created_at.millis())
            .bind(x.answer.created_at.millis())
        } else {
            sqlx::query(
                "UPDATE conversations SET updated_at = $4 \
                 WHERE org_id = $1 AND id = $2 AND agent_id = $3",
            )
            .bind(org_id)
            .bind(x.conversation_id)
            .bind(x.agent_id)
            .bind(x.answer.created_at.millis())
        }
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        // After the conversation's row is written: that row's lock orders the exchanges of
        // one conversation, so this count sees every exchange stored before this one.
        let held = if x.starts {
            0
        } else {
            sqlx::query_scalar(COUNT_MESSAGES)
                .bind(org_id)
                .bind(x.conversation_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?
        };
        ensure_room(held, x.max_messages)?;
        for m in [&x.question, &x.answer] {
            sqlx::query(
                "INSERT INTO messages (org_id, conversation_id, id, role, content, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(org_id)
            .bind(x.conversation_id)
            .bind(m.id)
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
        let sql = format!(
            "INSERT INTO files (org_id, {FILE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        );
        let args = with(org_and(org_id, f.id)?, |a| {
            a.add(&f.name)?;
            a.add(f.size)?;
            a.add(&f.content_type)?;
            a.add(f.created_at.millis())?;
            a.add(f.expires_at.millis())
        })?;
        self.audited(&sql, args, audit).await
    }

    async fn get_file(
        &self,
        org_id: Uuid,
        file_id: Uuid,
        now: Timestamp,
    ) -> StoreResult<StoredFile> {
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE org_id = $1 AND id = $2 AND expires_at > $3"
        );
        let args = with(org_and(org_id, file_id)?, |a| a.add(now.millis()))?;
        self.fetch_one_of(&sql, args, file_from_row).await
    }

    async fn expired_files(&self, now: Timestamp, limit: i64) -> StoreResult<Vec<Uuid>> {
        sqlx::query_scalar(
            "SELECT id FROM files WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2",
        )
        .bind(now.millis())
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)
    }

    async fn forget_files(&self, ids: &[Uuid]) -> StoreResult<()> {
        // Maintenance across organizations: these ids come from `expired_files`, never from
        // a request.
        sqlx::query("DELETE FROM files WHERE id = ANY($1)")
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn create_realtime_session(
        &self,
        r: &RealtimeSession,
        audit: AuditRecord,
    ) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO realtime_sessions ({REALTIME_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL)"
        );
        let args = args(|a| {
            a.add(r.id)?;
            a.add(r.org_id)?;
            a.add(r.agent_id)?;
            a.add(r.conversation_id)?;
            a.add(r.continues)?;
            a.add(r.secret_digest.as_bytes())?;
            a.add(r.key_id)?;
            a.add(&r.key_name)?;
            a.add(r.created_at.millis())?;
            a.add(r.expires_at.millis())
        })?;
        self.audited(&sql, args, audit).await
    }

    async fn claim_realtime_session(
        &self,
        session_id: Uuid,
        secret: &KeyDigest,
        now: Timestamp,
    ) -> StoreResult<RealtimeSession> {
        // Looked up by id alone: the session names its organization, and the secret is what
        // authenticates the caller. A second claim waits for the row, then finds it used.
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT {REALTIME_COLUMNS} FROM realtime_sessions WHERE id = $1 FOR UPDATE"
        ))
        .bind(session_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
        let session = claimable_session(&row, secret, now)?;
        sqlx::query("UPDATE realtime_sessions SET used_at = $1 WHERE id = $2")
            .bind(now.millis())
            .bind(session_id)
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
        if !last_used.is_empty() {
            // The rows are locked in id order, so two replicas' batches cannot deadlock.
            sqlx::query(
                "WITH used AS ( \
                   SELECT org_id, id, max(at) AS at \
                   FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[]) AS u(org_id, id, at) \
                   GROUP BY org_id, id \
                 ), stale AS ( \
                   SELECT k.id, used.at FROM api_keys k \
                   JOIN used ON k.org_id = used.org_id AND k.id = used.id \
                   WHERE k.last_used_at IS NULL OR k.last_used_at < used.at \
                   ORDER BY k.id FOR UPDATE OF k \
                 ) \
                 UPDATE api_keys k SET last_used_at = stale.at FROM stale \
                 WHERE k.id = stale.id AND (k.last_used_at IS NULL OR k.last_used_at < stale.at)",
            )
            .bind(last_used.iter().map(|u| u.0).collect::<Vec<_>>())
            .bind(last_used.iter().map(|u| u.1).collect::<Vec<_>>())
            .bind(last_used.iter().map(|u| u.2.millis()).collect::<Vec<_>>())
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
            .bind(org_id)
            .bind(f.from.map(Timestamp::millis))
            .bind(f.to.map(Timestamp::millis))
            .bind(f.action.as_deref())
            .bind(cursor.map(|c| c.at))
            .bind(cursor.map(|c| c.seq))
            .bind(limit)
            .fetch_all(&self.pool)
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
        let args = args(|a| {
            a.add(org_id)?;
            a.add(f.from.map(Timestamp::millis))?;
            a.add(f.to.map(Timestamp::millis))?;
            a.add(f.action.as_deref())
        })?;
        self.list_page(query, args, page, audit_from_row).await
    }
}

async fn insert_org(tx: &mut Tx, org: &Organization) -> StoreResult<()> {
    sqlx::query(&format!(
        "INSERT INTO organizations ({ORG_COLUMNS}) VALUES ($1, $2, $3)"
    ))
    .bind(org.id)
    .bind(&org.name)
    .bind(org.created_at.millis())
    .execute(&mut **tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_size_is_taken_out_of_the_url_and_the_rest_is_kept() {
        let base = "postgres://siesta@127.0.0.1:5432/siesta";
        assert_eq!(pool_size(base).unwrap(), (base.to_owned(), MAX_CONNECTIONS));
        assert_eq!(
            pool_size(&format!("{base}?max_connections=4")).unwrap(),
            (base.to_owned(), 4)
        );
        assert_eq!(
            pool_size(&format!(
                "{base}?sslmode=disable&max_connections=32&application_name=x"
            ))
            .unwrap(),
            (format!("{base}?sslmode=disable&application_name=x"), 32)
        );
        for bad in ["0", "-1", "many", ""] {
            let url = format!("{base}?max_connections={bad}");
            assert!(matches!(pool_size(&url), Err(StoreError::Unavailable(_))));
        }
    }
}
