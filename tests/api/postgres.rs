//! What only PostgreSQL shows: several processes opening one database, an unreachable
//! server. The rest of the suite runs on PostgreSQL too with `SIESTA_TEST_BACKEND=postgres`.

use futures_util::future::join_all;
use siesta::store::{PostgresStore, Store, StoreError};
use tokio::process::Command;

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_siesta");

#[tokio::test]
async fn processes_opening_one_new_database_at_once_all_find_it_migrated() {
    let Some(server) = postgres_url_or_skip() else {
        return;
    };
    let db = TestDatabase::fresh_postgres(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let processes = (0..3).map(|_| {
        Command::new(BIN)
            .args(["org", "list", "--json", "--database", &db.url])
            .env_remove("SIESTA_DATABASE_URL")
            .current_dir(dir.path())
            .output()
    });
    let opens = (0..3).map(|_| PostgresStore::open(&db.url));
    let (outputs, stores) = tokio::join!(join_all(processes), join_all(opens));
    for out in outputs {
        let out = out.expect("siesta runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    }
    for store in stores {
        let store = store.expect("the database opens");
        assert!(store.list_orgs().await.unwrap().is_empty());
        assert_eq!(store.generation().await.unwrap(), 0);
    }
}

#[tokio::test]
async fn a_server_that_does_not_answer_is_unavailable() {
    // Nothing listens on port 1 of the loopback address.
    let err = PostgresStore::open("postgres://siesta@127.0.0.1:1/siesta")
        .await
        .err()
        .expect("no database there");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    let err = siesta::store::open("postgresql://siesta@127.0.0.1:1/siesta?max_connections=0")
        .await
        .err()
        .expect("a pool of no connections");
    assert!(err.to_string().contains("max_connections"), "{err}");
}
