//! Persistence behind one interface, implemented once for SQLite and PostgreSQL (`sql.rs`),
//! the database chosen by URL.
//!
//! Every query on tenant data takes the organization id first: there is no way to read an
//! agent, a key or an audit record by id alone.

mod backend;
mod columns;
mod model;
mod postgres;
mod sql;
mod sqlite;
mod statement;

use std::sync::Arc;

pub use model::*;
pub use postgres::PostgresStore;
pub use sql::SqlStore;
pub use sqlite::SqliteStore;

/// Opens the database a URL names, creating and migrating it if needed: PostgreSQL for a
/// `postgres://` or `postgresql://` URL, else SQLite.
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    if is_postgres(url) {
        return Ok(Arc::new(PostgresStore::open(url).await?));
    }
    Ok(Arc::new(SqliteStore::open(url).await?))
}

/// Whether a database URL names a PostgreSQL server.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}
