//! What the two databases do differently ([`Backend`], implemented in `sqlite.rs` and
//! `postgres.rs`), and what the shared code needs of sqlx, said once.
//!
//! sqlx states what a database can bind and run on as bounds on each value type and on
//! each executor, which generic code over `sqlx::Database` would repeat on every function.
//! Here they are said once, as supertraits of [`Backend`] (which Rust implies wherever
//! `DB: Backend` holds), so the store is written once with that one bound.

use std::future::Future;

use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnection;
use sqlx::{
    Arguments, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row, Transaction,
    Type,
};
use uuid::Uuid;

use super::model::*;
use crate::clock::Timestamp;

/// An id as both databases bind and read it: PostgreSQL keeps its native `uuid`, SQLite
/// the lowercase hyphenated text its rows have always held. Each backend module implements
/// sqlx's `Type`, `Encode` and `Decode` for it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Id(pub Uuid);

/// A database that binds values of type `T` (for statements that live for `'q`).
pub(super) trait Binds<'q, T>: Database {
    fn add(args: &mut Self::Arguments<'q>, value: T) -> Result<(), BoxDynError>;
}

impl<'q, T, DB> Binds<'q, T> for DB
where
    DB: Database,
    T: 'q + Encode<'q, DB> + Type<DB>,
{
    fn add(args: &mut Self::Arguments<'q>, value: T) -> Result<(), BoxDynError> {
        args.add(value)
    }
}

/// A database whose connections run statements: its connections and bound values as sqlx
/// takes them.
pub(super) trait Runs: Database {
    fn executor(conn: &mut Self::Connection) -> impl Executor<'_, Database = Self>;
    fn arguments(args: Self::Arguments<'_>) -> impl IntoArguments<'_, Self>;
}

impl<DB> Runs for DB
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    fn executor(conn: &mut DB::Connection) -> impl Executor<'_, Database = DB> {
        conn
    }
    fn arguments(args: DB::Arguments<'_>) -> impl IntoArguments<'_, DB> {
        args
    }
}

/// How many rows a statement changed.
pub(super) trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// Where a statement runs: in a transaction, or on a connection of a pool.
pub(super) trait On<DB: Database> {
    fn connection(&mut self) -> &mut DB::Connection;
}

impl<DB: Database> On<DB> for Transaction<'_, DB> {
    fn connection(&mut self) -> &mut DB::Connection {
        self
    }
}

impl<DB: Database> On<DB> for PoolConnection<DB> {
    fn connection(&mut self) -> &mut DB::Connection {
        self
    }
}

/// The column types the store reads, for any row of either database.
pub(super) trait Columns {
    fn text(&self, col: &str) -> StoreResult<String>;
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>>;
    fn int(&self, col: &str) -> StoreResult<i64>;
    fn opt_int(&self, col: &str) -> StoreResult<Option<i64>>;
    fn flag(&self, col: &str) -> StoreResult<bool>;
    fn bytes(&self, col: &str) -> StoreResult<Vec<u8>>;
    fn opt_id(&self, col: &str) -> StoreResult<Option<Uuid>>;
}

impl<R, DB> Columns for R
where
    R: Row<Database = DB>,
    DB: Database,
    for<'a> &'a str: ColumnIndex<R>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    i64: for<'r> Decode<'r, DB> + Type<DB>,
    bool: for<'r> Decode<'r, DB> + Type<DB>,
    Vec<u8>: for<'r> Decode<'r, DB> + Type<DB>,
    Id: for<'r> Decode<'r, DB> + Type<DB>,
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
    fn opt_id(&self, col: &str) -> StoreResult<Option<Uuid>> {
        let id: Option<Id> = self.try_get(col).map_err(column_err)?;
        Ok(id.map(|Id(id)| id))
    }
}

/// A column that is missing or of the wrong type: a bug, not a state of the database.
fn column_err(e: sqlx::Error) -> StoreError {
    StoreError::Internal(e.to_string())
}

/// What a transaction locks of a row it reads, on a database that locks rows.
#[derive(Debug, Clone, Copy)]
pub(super) enum RowLock {
    /// Against any change: a key being rotated, a session being claimed.
    Update,
    /// Against changes, but not against rows that reference it: an organization while
    /// one of its keys is created or rotated.
    NoKeyUpdate,
    /// Against its deletion: the membership a key is being created under.
    KeyShare,
}

/// What the two databases do differently; everything else is written once, below. Its
/// supertraits are what the shared code needs of sqlx, each database meeting them with its
/// own types (see `statement.rs`).
pub(super) trait Backend:
    Database<Row: Columns, QueryResult: RowsAffected>
    + Runs
    + for<'q> Binds<'q, Id>
    + for<'q> Binds<'q, Option<Id>>
    + for<'q> Binds<'q, &'q str>
    + for<'q> Binds<'q, Option<&'q str>>
    + for<'q> Binds<'q, i64>
    + for<'q> Binds<'q, Option<i64>>
    + for<'q> Binds<'q, bool>
    + for<'q> Binds<'q, &'q [u8]>
{
    /// Begins a transaction that writes: how the database serialises the decisions made in
    /// one (SQLite takes the database's write lock at once; PostgreSQL locks rows as it
    /// goes, see [`Backend::row_lock`]).
    const BEGIN_WRITE: &'static str;
    /// Run first by the bootstrap, so that of two servers starting at once on an empty
    /// database one bootstraps and the other then finds the organization; `None` where
    /// [`Backend::BEGIN_WRITE`] serialises them already.
    const LOCK_ORGANIZATIONS: Option<&'static str>;
    /// The expression users' emails are unique by, case-insensitively, as the schema's
    /// unique index has it.
    const USER_EMAIL: &'static str;
    /// Whether a page's rows carry the count of all matches (see [`page_sql`]).
    const COUNTED_PAGES: bool;

    /// The clause that makes a SELECT lock the rows it reads until the transaction ends;
    /// `None` where a transaction that writes holds the whole database.
    fn row_lock(lock: RowLock) -> Option<&'static str>;
    /// Whether an error code of the database means it cannot serve now.
    fn unavailable(code: &str) -> bool;
    /// A database error as the store reports it.
    fn map_err(e: sqlx::Error) -> StoreError {
        map_sqlx_err(e, Self::unavailable)
    }
    /// Inserts audit records, in their order.
    fn insert_audit(
        tx: &mut Transaction<'static, Self>,
        records: &[AuditRecord],
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Moves keys' last use (org, key, when) forward, never back.
    fn record_last_used(
        tx: &mut Transaction<'static, Self>,
        last_used: &[(Uuid, Uuid, Timestamp)],
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// A database error as the store reports it; `unavailable` names the database's own codes
/// for "cannot serve now".
fn map_sqlx_err(e: sqlx::Error, unavailable: fn(&str) -> bool) -> StoreError {
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

fn unique_violation() -> StoreError {
    StoreError::Conflict("an object with these values already exists".into())
}
