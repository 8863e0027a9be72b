//! Statements of the shared SQL, bound and run the same way on both databases.
//!
//! sqlx states what a database can bind and run on as bounds on each value type and on
//! each executor, which generic code over `sqlx::Database` would repeat on every function.
//! Here they are said once, as supertraits of [`Backend`] (which Rust implies wherever
//! `DB: Backend` holds), so the store is written once with that one bound.

use futures_util::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnection;
use sqlx::{Arguments, Database, Encode, Executor, IntoArguments, Transaction, Type};

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

/// A database whose connections run statements.
pub(super) trait Runs: Database {
    fn execute<'e, 'q: 'e>(
        conn: &'e mut Self::Connection,
        sql: &'q str,
        args: Self::Arguments<'q>,
    ) -> BoxFuture<'e, sqlx::Result<Self::QueryResult>>;
    fn fetch_optional<'e, 'q: 'e>(
        conn: &'e mut Self::Connection,
        sql: &'q str,
        args: Self::Arguments<'q>,
    ) -> BoxFuture<'e, sqlx::Result<Option<Self::Row>>>;
    fn fetch_all<'e, 'q: 'e>(
        conn: &'e mut Self::Connection,
        sql: &'q str,
        args: Self::Arguments<'q>,
    ) -> BoxFuture<'e, sqlx::Result<Vec<Self::Row>>>;
}

impl<DB> Runs for DB
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    fn execute<'e, 'q: 'e>(
        conn: &'e mut DB::Connection,
        sql: &'q str,
        args: DB::Arguments<'q>,
    ) -> BoxFuture<'e, sqlx::Result<DB::QueryResult>> {
        conn.execute(sqlx::query_with(sql, args))
    }
    fn fetch_optional<'e, 'q: 'e>(
        conn: &'e mut DB::Connection,
        sql: &'q str,
        args: DB::Arguments<'q>,
    ) -> BoxFuture<'e, sqlx::Result<Option<DB::Row>>> {
        conn.fetch_optional(sqlx::query_with(sql, args))
    }
    fn fetch_all<'e, 'q: 'e>(
        conn: &'e mut DB::Connection,
        sql: &'q str,
        args: DB::Arguments<'q>,
    ) -> BoxFuture<'e, sqlx::Result<Vec<DB::Row>>> {
        conn.fetch_all(sqlx::query_with(sql, args))
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
    on_err: fn(sqlx::Error) -> StoreError,
}

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
    pub(super) fn on_err(self, on_err: fn(sqlx::Error) -> StoreError) -> Self {
        Statement { on_err, ..self }
    }

    /// The statement, unless a value could not be bound.
    fn checked(self) -> StoreResult<Self> {
        match self.unbound {
            Some(e) => Err(StoreError::Internal(e.to_string())),
            None => Ok(self),
        }
    }

    /// Runs the statement on a connection or in a transaction; how many rows it changed.
    pub(super) async fn execute(self, on: &mut impl On<DB>) -> StoreResult<u64> {
        let Statement {
            sql, args, on_err, ..
        } = self.checked()?;
        let done = DB::execute(on.connection(), sql, args)
            .await
            .map_err(on_err)?;
        Ok(done.rows_affected())
    }

    /// The first row the statement returns, if any.
    pub(super) async fn fetch_optional(self, on: &mut impl On<DB>) -> StoreResult<Option<DB::Row>> {
        let Statement {
            sql, args, on_err, ..
        } = self.checked()?;
        DB::fetch_optional(on.connection(), sql, args)
            .await
            .map_err(on_err)
    }

    pub(super) async fn fetch_all(self, on: &mut impl On<DB>) -> StoreResult<Vec<DB::Row>> {
        let Statement {
            sql, args, on_err, ..
        } = self.checked()?;
        DB::fetch_all(on.connection(), sql, args)
            .await
            .map_err(on_err)
    }
}
