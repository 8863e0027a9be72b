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

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{
    SqliteArgumentValue, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions,
    SqliteSynchronous, SqliteTypeInfo, SqliteValueRef,
};
use sqlx::{Decode, Encode, Sqlite, Transaction, Type};
use uuid::fmt::Hyphenated;
use uuid::Uuid;

use super::backend::*;
use super::columns::*;
use super::model::*;
use super::sql::*;
use super::statement::*;
use crate::clock::Timestamp;

pub type SqliteStore = SqlStore<Sqlite>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

impl SqlStore<Sqlite> {
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
            .map_err(Sqlite::map_err)?;
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(Sqlite::map_err)?;
        Ok(SqlStore { reader, writer })
    }
}

/// Ids are lowercase hyphenated text, as the rows written so far hold them.
impl Type<Sqlite> for Id {
    fn type_info() -> SqliteTypeInfo {
        <Hyphenated as Type<Sqlite>>::type_info()
    }
}

impl<'q> Encode<'q, Sqlite> for Id {
    fn encode_by_ref(
        &self,
        args: &mut Vec<SqliteArgumentValue<'q>>,
    ) -> Result<IsNull, BoxDynError> {
        <Hyphenated as Encode<Sqlite>>::encode_by_ref(&self.0.hyphenated(), args)
    }
}

impl<'r> Decode<'r, Sqlite> for Id {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Id(
            <Hyphenated as Decode<Sqlite>>::decode(value)?.into_uuid()
        ))
    }
}

/// Rows a multi-row insert carries: few enough to stay a cached prepared statement.
const AUDIT_ROWS_PER_INSERT: usize = 64;

impl Backend for Sqlite {
    /// The database's write lock, taken at once: every decision of the transaction is made
    /// while no other writes, in this process or another.
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const LOCK_ORGANIZATIONS: Option<&'static str> = None;
    /// The column compares without case (`COLLATE NOCASE`).
    const USER_EMAIL: &'static str = "email";
    /// In the process, reading stops at the page's end instead.
    const COUNTED_PAGES: bool = false;

    fn row_lock(_: RowLock) -> Option<&'static str> {
        None
    }

    /// SQLITE_BUSY or SQLITE_LOCKED: another process held the lock past the busy timeout.
    /// sqlx reports extended codes (517 is BUSY_SNAPSHOT, 773 BUSY_TIMEOUT, ...), whose low
    /// byte is the primary code.
    fn unavailable(code: &str) -> bool {
        code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
    }

    /// Inserts records in statements of a fixed size, so each shape is prepared once and then
    /// reused from the statement cache; the remainder goes one row at a time.
    async fn insert_audit(
        tx: &mut Transaction<'static, Sqlite>,
        records: &[AuditRecord],
    ) -> StoreResult<()> {
        let full = records.len() - records.len() % AUDIT_ROWS_PER_INSERT;
        let (batched, rest) = records.split_at(full);
        // Anonymous placeholders: SQLite looks each numbered one up by name, a scan of all
        // of them, which for the hundreds of a batch cost a quarter of a request's time.
        let anonymous = |_| "?".to_owned();
        let batch = insert_rows("audit_log", AUDIT_COLUMNS, AUDIT_ROWS_PER_INSERT, anonymous);
        let single = insert_rows("audit_log", AUDIT_COLUMNS, 1, anonymous);
        for chunk in batched.chunks(AUDIT_ROWS_PER_INSERT).chain(rest.chunks(1)) {
            let sql = if chunk.len() == 1 { &single } else { &batch };
            let insert = chunk
                .iter()
                .fold(statement(sql), |insert, record| record.bind_columns(insert));
            insert.execute(tx).await?;
        }
        Ok(())
    }

    async fn record_last_used(
        tx: &mut Transaction<'static, Sqlite>,
        last_used: &[(Uuid, Uuid, Timestamp)],
    ) -> StoreResult<()> {
        let sql = "UPDATE api_keys SET last_used_at = $1 WHERE org_id = $2 AND id = $3 \
                   AND (last_used_at IS NULL OR last_used_at < $1)";
        for (org_id, key_id, at) in last_used {
            let used = statement(sql)
                .bind(at.millis())
                .bind(Id(*org_id))
                .bind(Id(*key_id));
            used.execute(tx).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_busy_or_locked_code_means_unavailable() {
        for code in ["5", "6", "261", "517", "773", "262"] {
            assert!(Sqlite::unavailable(code), "{code}");
        }
        for code in ["1", "19", "2067", "x"] {
            assert!(!Sqlite::unavailable(code), "{code}");
        }
    }

    /// A store on a new database, in a folder that lives as long as the first value.
    async fn fresh_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("siesta.db").to_str().unwrap())
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_batch_of_audit_records_is_stored_whole_and_in_order() {
        let (_dir, store) = fresh_store().await;
        let org_id = Uuid::now_v7();
        // Two full statements and a remainder, all in one millisecond.
        let records: Vec<_> = (0..AUDIT_ROWS_PER_INSERT * 2 + 3)
            .map(|i| AuditRecord {
                at: Timestamp(1_000),
                ..AuditRecord::event(org_id, &format!("test.{i}"), "server")
            })
            .collect();
        store.record_batch(&records, &[]).await.unwrap();
        let filter = AuditFilter::default();
        let (newest_first, _) = store
            .export_audit(org_id, &filter, None, 1_000)
            .await
            .unwrap();
        let stored: Vec<_> = newest_first.iter().rev().map(|r| &r.action).collect();
        let written: Vec<_> = records.iter().map(|r| &r.action).collect();
        assert_eq!(stored, written);
    }

    #[tokio::test]
    async fn a_sweep_forgets_every_expired_file_whatever_the_size_of_its_statements() {
        let (_dir, store) = fresh_store().await;
        let org = Organization {
            id: Uuid::now_v7(),
            name: "Acme".into(),
            created_at: Timestamp(0),
        };
        store.create_org(&org).await.unwrap();
        let file = |expires_at| StoredFile {
            id: Uuid::now_v7(),
            name: "a.txt".into(),
            size: 1,
            content_type: "text/plain".into(),
            created_at: Timestamp(0),
            expires_at: Timestamp(expires_at),
        };
        // Two full statements and one more id, and a file that has not expired.
        let expiring: Vec<_> = (0..FORGOTTEN_PER_STATEMENT * 2 + 1)
            .map(|_| file(1_000))
            .collect();
        let kept = file(2_000);
        for f in expiring.iter().chain([&kept]) {
            let audit = AuditRecord::event(org.id, "file.uploaded", "server");
            store.create_file(org.id, f, audit).await.unwrap();
        }
        let expired = store.expired_files(Timestamp(1_000), 1_000).await.unwrap();
        assert_eq!(expired.len(), expiring.len());
        store.forget_files(&expired).await.unwrap();
        let left = store.expired_files(Timestamp(2_000), 1_000).await.unwrap();
        assert_eq!(left, [kept.id]);
    }
}
