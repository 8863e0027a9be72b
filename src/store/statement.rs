//! Statements of the shared SQL, bound and run the same way on both databases.
//!
//! sqlx states what a database can bind and run on as bounds on each value type and on
//! each executor, which generic code over `sqlx::Database` would repeat on every function.
//! Here they are said once, as supertraits of [`Backend`] (which Rust implies wherever
//! `DB: Backend` holds), so the store is written once with that one bound.

use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::{Arguments, Database, Encode, Executor, IntoArguments, Pool, Transaction, Type};

use super::columns::FromRow;
use super::sql::Backend;
use super::*;

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

/// A statement and the values bound to its placeholders so far, in order.
pub(super) struct Statement<'q, DB: Database> {
    sql: &'q str,
    args: DB::Arguments<'q>,
    /// The first value that could not be bound, reported when the statement runs.
    unbound: Option<BoxDynError>,
    on_err: OnErr,
}

/// How a statement's database errors read.
type OnErr = fn(sqlx::Error) -> StoreError;

/// `sql`, with nothing bound yet.
pub(super) fn statement<DB: Backend>(sql: &str) -> Statement<'_, DB> {
    Statement {
        sql,
        args: Default::default(),
        unbound: None,
        on_err: DB::map_err,
    }
}

impl<'q, DB: Backend> Statement<'q, DB> {
    /// Binds the next placeholder.
    pub(super) fn bind<T>(mut self, value: T) -> Self
    where
        DB: Binds<'q, T>,
    {
        if self.unbound.is_none() {
            self.unbound = DB::add(&mut self.args, value).err();
        }
        self
    }

    /// The statement, reading its own database errors with `on_err`.
    pub(super) fn on_err(self, on_err: OnErr) -> Self {
        Statement { on_err, ..self }
    }

    /// The statement as sqlx runs it, and how its errors read; an error if a value could not
    /// be bound.
    fn prepared(self) -> StoreResult<(Query<'q, DB, impl IntoArguments<'q, DB>>, OnErr)> {
        match self.unbound {
            Some(e) => Err(StoreError::Internal(e.to_string())),
            None => Ok((
                sqlx::query_with(self.sql, DB::arguments(self.args)),
                self.on_err,
            )),
        }
    }

    /// Runs the statement in a transaction or on a connection; how many rows it changed.
    pub(super) async fn execute(self, on: &mut impl On<DB>) -> StoreResult<u64> {
        let (query, on_err) = self.prepared()?;
        let done = DB::executor(on.connection()).execute(query).await;
        Ok(done.map_err(on_err)?.rows_affected())
    }

    /// The first row the statement returns, if any.
    pub(super) async fn fetch_optional(self, on: &mut impl On<DB>) -> StoreResult<Option<DB::Row>> {
        let (query, on_err) = self.prepared()?;
        let on = DB::executor(on.connection());
        on.fetch_optional(query).await.map_err(on_err)
    }

    pub(super) async fn fetch_all(self, on: &mut impl On<DB>) -> StoreResult<Vec<DB::Row>> {
        let (query, on_err) = self.prepared()?;
        let on = DB::executor(on.connection());
        on.fetch_all(query).await.map_err(on_err)
    }

    /// The first row the statement returns, if any, read on a connection of `pool`.
    async fn first_row(self, pool: &Pool<DB>) -> StoreResult<Option<DB::Row>> {
        let mut conn = pool.acquire().await.map_err(DB::map_err)?;
        self.fetch_optional(&mut conn).await
    }

    /// Every row the statement returns, read on a connection of `pool`.
    pub(super) async fn rows(self, pool: &Pool<DB>) -> StoreResult<Vec<DB::Row>> {
        let mut conn = pool.acquire().await.map_err(DB::map_err)?;
        self.fetch_all(&mut conn).await
    }

    /// The first row the statement returns, read on a connection of `pool`; `NotFound` if
    /// there is none.
    pub(super) async fn row(self, pool: &Pool<DB>) -> StoreResult<DB::Row> {
        self.first_row(pool).await?.ok_or(StoreError::NotFound)
    }

    /// [`Self::row`], read as a `T`.
    pub(super) async fn one<T: FromRow>(self, pool: &Pool<DB>) -> StoreResult<T> {
        T::from_row(&self.row(pool).await?)
    }

    /// The first row the statement returns, if any, read as a `T`.
    pub(super) async fn optional<T: FromRow>(self, pool: &Pool<DB>) -> StoreResult<Option<T>> {
        let row = self.first_row(pool).await?;
        row.as_ref().map(T::from_row).transpose()
    }

    /// [`Self::rows`], each read as a `T`.
    pub(super) async fn all<T: FromRow>(self, pool: &Pool<DB>) -> StoreResult<Vec<T>> {
        self.rows(pool).await?.iter().map(T::from_row).collect()
    }
}
