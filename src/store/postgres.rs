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

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgArgumentBuffer, PgConnectOptions, PgPoolOptions, PgTypeInfo, PgValueRef};
use sqlx::{ConnectOptions, Connection as _, Decode, Encode, Postgres, Transaction, Type};
use uuid::Uuid;

use super::backend::*;
use super::columns::*;
use super::model::*;
use super::sql::*;
use crate::clock::Timestamp;

pub type PostgresStore = SqlStore<Postgres>;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// Connections a store holds at most, unless the URL says `max_connections=N`.
const MAX_CONNECTIONS: u32 = 16;
/// How long a query waits for a connection, or a connection attempt for the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a statement waits for a row another transaction holds.
const LOCK_TIMEOUT: &str = "10s";

impl SqlStore<Postgres> {
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
            .map_err(Postgres::map_err)?;
        MIGRATOR
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        conn.close().await.map_err(Postgres::map_err)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(Postgres::map_err)?;
        Ok(SqlStore {
            reader: pool.clone(),
            writer: pool,
        })
    }
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

/// Ids are the native `uuid`.
impl Type<Postgres> for Id {
    fn type_info() -> PgTypeInfo {
        <Uuid as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Id {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <Uuid as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Id {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        <Uuid as Decode<Postgres>>::decode(value).map(Id)
    }
}

impl Backend for Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";
    /// Two servers starting at once on an empty database: one bootstraps, the other waits
    /// and then finds the organization.
    const LOCK_ORGANIZATIONS: Option<&'static str> =
        Some("LOCK TABLE organizations IN SHARE ROW EXCLUSIVE MODE");
    /// The unique index is on the lower case.
    const USER_EMAIL: &'static str = "lower(email)";
    /// Across a network, a round trip costs more than counting along.
    const COUNTED_PAGES: bool = true;

    fn row_lock(lock: RowLock) -> Option<&'static str> {
        Some(match lock {
            RowLock::Update => "FOR UPDATE",
            RowLock::NoKeyUpdate => "FOR NO KEY UPDATE",
            RowLock::KeyShare => "FOR KEY SHARE",
        })
    }

    /// Connection exceptions (08), insufficient resources (53), the server shutting down or
    /// cancelling (57), failed authentication (28), an unknown database (3D), and
    /// lock_timeout (55P03).
    fn unavailable(code: &str) -> bool {
        ["08", "53", "57", "28", "3D"]
            .iter()
            .any(|class| code.starts_with(class))
            || code == "55P03"
    }

    /// Inserts records in one statement, in their order (which `seq` keeps).
    async fn insert_audit(
        tx: &mut Transaction<'static, Postgres>,
        records: &[AuditRecord],
    ) -> StoreResult<()> {
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
            .map_err(Postgres::map_err)?;
        Ok(())
    }

    /// In one statement; the rows are locked in id order, so two replicas' batches cannot
    /// deadlock.
    async fn record_last_used(
        tx: &mut Transaction<'static, Postgres>,
        last_used: &[(Uuid, Uuid, Timestamp)],
    ) -> StoreResult<()> {
        if last_used.is_empty() {
            return Ok(());
        }
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
        .execute(&mut **tx)
        .await
        .map_err(Postgres::map_err)?;
        Ok(())
    }
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
