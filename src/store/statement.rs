//! Statements of the shared SQL, bound and run the same way on both databases, and the
//! traits of what is read from and bound to a row.

use sqlx::error::BoxDynError;
use sqlx::query::Query;
use sqlx::{Database, Executor, IntoArguments, Pool};

use super::backend::{Backend, Binds, Columns, On, RowsAffected};
use super::model::*;

/// A type read from a row.
pub(super) trait FromRow: Sized {
    fn from_row(row: &impl Columns) -> StoreResult<Self>;
}

/// A type stored as a row: its fields bound to a statement's next placeholders, in the
/// order of its columns.
pub(super) trait ToRow {
    fn bind_columns<'q, DB: Backend>(&'q self, statement: Statement<'q, DB>) -> Statement<'q, DB>;
}

/// The column a field is stored in: its own name unless another is given.
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
