use std::time::Duration;

use siesta::clock::Timestamp;
use siesta::key::Scope;
use siesta::lifecycle::{self, Actor};
use siesta::store::{KeyFilter, StoreError};
use siesta::Settings;

use crate::helpers::*;

#[tokio::test]
async fn a_rotated_key_works_through_its_grace_period_then_expires() {
    let app = spawn_app_on_manual_clock(Settings::default()).await;
    let t = app.tenant("Acme").await;
    let (id, old) = app
        .issue(t.org_id, t.owner, "crm-prod-sync", Scope::Write)
        .await;
    app.get("/api/v1/Me", &old, t.org_id).await.ok(200);
    let lookups = app.key_lookups().await;
    let (successor, new) = lifecycle::rotate(
        &*app.store,
        t.org_id,
        id,
        Duration::from_secs(3600),
        &Actor::Cli,
        app.clock.now(),
    )
    .await
    .unwrap();
    assert_eq!(successor.name, "crm-prod-sync");
    assert_eq!(successor.scope, Scope::Write);
    assert_eq!(successor.created_by, t.owner);
    let new = new.reveal().to_owned();
    assert_ne!(new, old);
    app.get("/api/v1/Me", &new, t.org_id).await.ok(200);
    // Made by another writer, the rotation reaches the server through the change counter:
    // the old key is read again, with its grace period.
    let reread = eventually(Duration::from_secs(5), || async {
        app.get("/api/v1/Me", &old, t.org_id).await.ok(200);
        app.key_lookups().await > lookups + 1
    })
    .await;
    assert!(reread.is_some(), "the rotation reaches the server");
    // It works for the whole grace period, and not a millisecond longer.
    app.clock.advance(Duration::from_millis(3_599_999));
    app.get("/api/v1/Me", &old, t.org_id).await.ok(200);
    app.clock.advance(Duration::from_millis(1));
    app.get("/api/v1/Me", &old, t.org_id)
        .await
        .problem(401, "expired_api_key");
    app.get("/api/v1/Me", &new, t.org_id).await.ok(200);
    // Rotating the old key again is refused: its successor is the one to rotate.
    let again = lifecycle::rotate(
        &*app.store,
        t.org_id,
        id,
        Duration::ZERO,
        &Actor::Cli,
        Timestamp::now(),
    )
    .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))));
}

#[tokio::test]
async fn rotation_with_no_grace_ends_the_old_key_at_once() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let (id, old) = app
        .issue(t.org_id, t.owner, "crm-prod-sync", Scope::Read)
        .await;
    app.get("/api/v1/Me", &old, t.org_id).await.ok(200);
    let new = app.rotate(t.org_id, id, Duration::ZERO).await;
    // Made by another writer than the server, so it reaches the server within a second.
    let lapsed = app
        .me_answers(Duration::from_secs(1), &old, t.org_id, 401)
        .await;
    assert!(lapsed.is_some());
    app.get("/api/v1/Me", &old, t.org_id)
        .await
        .problem(401, "expired_api_key");
    app.get("/api/v1/Me", &new, t.org_id).await.ok(200);
}

#[tokio::test]
async fn names_are_unique_among_live_keys_and_searchable() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let (id, _) = app
        .issue(t.org_id, t.owner, "crm-prod-sync", Scope::Read)
        .await;
    let dup = lifecycle::create(
        &*app.store,
        t.org_id,
        t.owner,
        &spec("crm-prod-sync", Scope::Read),
        &Actor::Cli,
        Timestamp::now(),
    )
    .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))));
    app.issue(t.org_id, t.owner, "billing-prod-export", Scope::Read)
        .await;
    let found = app
        .store
        .list_keys(
            t.org_id,
            &KeyFilter {
                search: Some("CRM".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, id);
    // Once deleted, the name is free again.
    lifecycle::delete(&*app.store, t.org_id, id, &Actor::Cli)
        .await
        .unwrap();
    app.issue(t.org_id, t.owner, "crm-prod-sync", Scope::Read)
        .await;
}

#[tokio::test]
async fn unused_keys_are_listed_and_last_use_is_recorded_once_a_minute() {
    let app = spawn_app_on_manual_clock(Settings::default()).await;
    // At the start of a minute, so that the whole minute is the test's to spend.
    let start = app.clock.now();
    app.clock.advance(Duration::from_millis(
        60_000 - start.millis().rem_euclid(60_000) as u64,
    ));
    let minute = app.clock.now();
    let t = app.tenant("Acme").await;
    let (used_id, used) = app
        .issue(t.org_id, t.owner, "crm-prod-sync", Scope::Read)
        .await;
    let (store, org) = (&app.store, t.org_id);
    let last_use = |id| async move { store.get_key(org, id).await.unwrap().last_used_at };
    for _ in 0..5 {
        app.get("/api/v1/Me", &used, t.org_id).await.ok(200);
    }
    let recorded = eventually(Duration::from_secs(2), || async {
        last_use(used_id).await.is_some()
    })
    .await;
    assert!(
        recorded.is_some(),
        "first use in a minute reaches the database within a second"
    );
    assert_eq!(last_use(used_id).await, Some(minute));
    // A later use in the same minute writes nothing: once the first use of another key,
    // recorded after it, is in the database, the first key still shows its first use.
    app.clock.advance(Duration::from_millis(59_999));
    app.get("/api/v1/Me", &used, t.org_id).await.ok(200);
    let read_id = app.get("/api/v1/Me", &t.read, t.org_id).await.ok(200)["keyId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let flushed = eventually(Duration::from_secs(2), || async {
        last_use(read_id).await.is_some()
    })
    .await;
    assert!(flushed.is_some());
    assert_eq!(last_use(used_id).await, Some(minute));
    // The first use in the next minute is recorded again.
    app.clock.advance(Duration::from_millis(1));
    app.get("/api/v1/Me", &used, t.org_id).await.ok(200);
    let next = minute.plus(Duration::from_secs(60));
    let recorded = eventually(Duration::from_secs(2), || async {
        last_use(used_id).await == Some(next)
    })
    .await;
    assert!(
        recorded.is_some(),
        "the next minute's first use is recorded"
    );

    let in_an_hour = KeyFilter {
        unused_since: Some(Timestamp::now().plus(Duration::from_secs(3600))),
        ..Default::default()
    };
    let all = app.store.list_keys(t.org_id, &in_an_hour).await.unwrap();
    assert_eq!(
        all.len(),
        4,
        "measured an hour from now, every key is unused"
    );
    let a_minute_ago = KeyFilter {
        unused_since: Some(Timestamp::now().minus(Duration::from_secs(60))),
        ..Default::default()
    };
    assert!(app
        .store
        .list_keys(t.org_id, &a_minute_ago)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn lifecycle_events_are_audited_by_id_and_name_never_by_value() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let (id, key) = app
        .issue(t.org_id, t.owner, "crm-prod-sync", Scope::Read)
        .await;
    let new = app.rotate(t.org_id, id, Duration::ZERO).await;
    let log = app
        .get("/api/v1/AuditLog?Limit=100", &t.admin, t.org_id)
        .await
        .ok(200);
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"api_key.created"));
    assert!(actions.contains(&"api_key.rotated"));
    let rotated = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "api_key.rotated")
        .unwrap();
    assert_eq!(rotated["keyId"], id.to_string());
    assert_eq!(rotated["keyName"], "crm-prod-sync");
    let text = log.to_string();
    assert!(!text.contains(&key) && !text.contains(&new));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_rotations_of_one_key_issue_one_successor() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let (id, _) = app
        .issue(t.org_id, t.owner, "crm-prod-sync", Scope::Write)
        .await;
    let rotations = (0..6).map(|_| {
        let store = std::sync::Arc::clone(&app.store);
        tokio::spawn(async move {
            let grace = Duration::from_secs(60);
            lifecycle::rotate(&*store, t.org_id, id, grace, &Actor::Cli, Timestamp::now()).await
        })
    });
    let results = futures_util::future::join_all(rotations).await;
    let results: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(_) | Err(StoreError::Conflict(_)))));
    let keys = app
        .store
        .list_keys(t.org_id, &KeyFilter::default())
        .await
        .unwrap();
    let named = keys.iter().filter(|k| k.name == "crm-prod-sync").count();
    assert_eq!(named, 2, "the key and one successor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creations_of_one_name_issue_one_key() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let creations = (0..6).map(|_| {
        let store = std::sync::Arc::clone(&app.store);
        tokio::spawn(async move {
            let spec = spec("crm-prod-sync", Scope::Read);
            lifecycle::create(
                &*store,
                t.org_id,
                t.owner,
                &spec,
                &Actor::Cli,
                Timestamp::now(),
            )
            .await
        })
    });
    let results = futures_util::future::join_all(creations).await;
    let results: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for r in &results {
        if let Err(e) = r {
            assert!(
                e.to_string().contains("already has a live key named"),
                "{e}"
            );
        }
    }
}

/// Marks a key deleted behind the server's back: no change counter, no announcement.
async fn delete_unannounced(app: &TestApp, key_id: uuid::Uuid) {
    use sqlx::Connection;
    let sql = format!("UPDATE api_keys SET deleted_at = 1 WHERE id = '{key_id}'");
    if app.database.is_postgres() {
        let mut conn = sqlx::PgConnection::connect(&app.database.url)
            .await
            .unwrap();
        sqlx::query(&sql).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&app.database.url)
            .await
            .unwrap();
        sqlx::query(&sql).execute(&mut conn).await.unwrap();
    }
}

#[tokio::test]
async fn no_key_stays_cached_past_the_cache_lifetime_even_if_every_signal_is_lost() {
    // The change counter is read once, at start: only the lifetime can drop the key.
    let app = spawn_app_on_manual_clock(siesta::Settings {
        change_poll: Duration::from_secs(3600),
        ..siesta::Settings::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    let (id, key) = app
        .issue(t.org_id, t.owner, "crm-prod-sync", Scope::Read)
        .await;
    let lookups = app.key_lookups().await;
    app.get("/api/v1/Me", &key, t.org_id).await.ok(200);
    assert_eq!(app.key_lookups().await, lookups + 1);
    delete_unannounced(&app, id).await;
    app.clock.advance(Duration::from_millis(29_999));
    app.get("/api/v1/Me", &key, t.org_id).await.ok(200); // still cached
    assert_eq!(
        app.key_lookups().await,
        lookups + 1,
        "answered from the cache"
    );
    app.clock.advance(Duration::from_millis(1));
    app.get("/api/v1/Me", &key, t.org_id)
        .await
        .problem(401, "invalid_api_key");
    assert_eq!(app.key_lookups().await, lookups + 2, "read again at 30 s");
}

#[tokio::test]
async fn while_nothing_changes_the_change_poll_keeps_verified_keys() {
    // On a clock that stands still, no lifetime runs out and no minute's use is recorded.
    let app = spawn_app_on_manual_clock(Settings {
        change_poll: Duration::from_millis(10),
        ..Settings::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    // Making the tenant moved the change counter; once a poll has seen that, the key is
    // read again and then held.
    app.hold_as_verified(&t.read, t.org_id).await;
    let lookups = app.key_lookups().await;
    // Thirty polls that find the counter where it was.
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.get("/api/v1/Me", &t.read, t.org_id).await.ok(200);
    assert_eq!(app.key_lookups().await, lookups, "still held as verified");
}
