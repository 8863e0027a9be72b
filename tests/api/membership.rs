//! Membership bounds keys: a removal ends a member's keys for good.

use std::time::Duration;

use serde_json::json;
use siesta::key::Scope;
use siesta::lifecycle::{self, Actor};
use siesta::store::{AuditRecord, Role};
use uuid::Uuid;

use crate::helpers::*;
use crate::realtime::{say, socket_url};

async fn remove(app: &TestApp, org_id: Uuid, user_id: Uuid) {
    let audit = AuditRecord::event(org_id, "member.removed", "cli");
    app.store
        .remove_member(org_id, user_id, audit)
        .await
        .unwrap();
}

/// A member of the tenant's organization, with the given role.
async fn member(app: &TestApp, t: &Tenant, email: &str, role: Role) -> Uuid {
    let user = app.create_user(email).await;
    app.add_member(t.org_id, user, role).await;
    user
}

#[tokio::test]
async fn a_member_removed_and_added_back_finds_their_old_keys_dead_and_new_ones_working() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let dev = member(&app, &t, "dev@acme.example", Role::Member).await;
    let (old_id, old) = app.issue(t.org_id, dev, "crm-prod-sync", Scope::Read).await;
    app.get("/api/v1/Me", &old, t.org_id).await.ok(200);

    remove(&app, t.org_id, dev).await;
    app.add_member(t.org_id, dev, Role::Member).await;
    // Made by another writer than the server: it reaches the server within a second.
    let refused = app
        .me_answers(Duration::from_secs(1), &old, t.org_id, 403)
        .await;
    assert!(refused.is_some(), "the old key stops although dev is back");
    app.get("/api/v1/Me", &old, t.org_id)
        .await
        .problem(403, "key_owner_not_member");
    let grant = app
        .store
        .key_grant(t.org_id, old_id)
        .await
        .unwrap()
        .unwrap();
    assert!(!grant.works_at(siesta::clock::Timestamp::now()));

    // A key issued after dev was added back works, and a role change is not a removal.
    let (_, new) = app
        .issue(t.org_id, dev, "crm-prod-other", Scope::Read)
        .await;
    app.get("/api/v1/Me", &new, t.org_id).await.ok(200);
    app.add_member(t.org_id, dev, Role::Admin).await;
    app.get("/api/v1/Me", &new, t.org_id).await.ok(200);
    app.get("/api/v1/Me", &old, t.org_id)
        .await
        .problem(403, "key_owner_not_member");

    // Rotating the old key does not bring it back either.
    let (_, successor) =
        lifecycle::rotate(&*app.store, t.org_id, old_id, Duration::ZERO, &Actor::Cli)
            .await
            .unwrap();
    app.get("/api/v1/Me", successor.reveal(), t.org_id)
        .await
        .problem(403, "key_owner_not_member");
}

#[tokio::test]
async fn a_realtime_session_ends_when_its_keys_owner_is_removed_even_if_added_back() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let dev = member(&app, &t, "dev@acme.example", Role::Member).await;
    let (_, key) = app
        .issue(t.org_id, dev, "voice-prod-backend", Scope::Write)
        .await;
    let agent = app
        .post(
            "/api/v1/Agent",
            &key,
            t.org_id,
            json!({"name": "voice-bot", "instructions": "Be quick."}),
        )
        .await
        .ok(201);
    let path = format!(
        "/api/v1/Agent/{}/realtime-session",
        agent["id"].as_str().unwrap()
    );
    let open = app.post(&path, &key, t.org_id, json!({})).await.ok(201);
    let (mut ws, _) = tokio_tungstenite::connect_async(socket_url(&open))
        .await
        .unwrap();
    let (_, done) = say(&mut ws, "Hello").await;
    assert_eq!(done["type"], "done", "{done}");

    remove(&app, t.org_id, dev).await;
    app.add_member(t.org_id, dev, Role::Member).await;
    let (deltas, refused) = say(&mut ws, "Still there?").await;
    assert_eq!(deltas, "");
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "expired_api_key");
}

#[tokio::test]
async fn a_database_from_before_membership_ids_migrates_without_losing_keys() {
    use siesta::key::{ApiKey, Environment};
    use sqlx::Connection;

    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::fresh(dir.path()).await;
    // The schema as it was: the migrations before membership ids, in a folder of their own.
    let (backend, first_new) = if db.is_postgres() {
        ("postgres", "0002")
    } else {
        ("sqlite", "0007")
    };
    let old = dir.path().join("old-migrations");
    std::fs::create_dir(&old).unwrap();
    let all = format!("{}/migrations/{backend}", env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(all).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_str().unwrap() < first_new {
            std::fs::copy(&path, old.join(path.file_name().unwrap())).unwrap();
        }
    }
    let migrator = sqlx::migrate::Migrator::new(old.as_path()).await.unwrap();
    let (org, other, owner, gone) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let kept = ApiKey::generate(Environment::Live);
    let dead = ApiKey::generate(Environment::Live);
    // Ids as quoted text, which both databases read into their id columns.
    let mut statements = vec![
        (
            format!("INSERT INTO organizations VALUES ('{org}', 'Acme', 1)"),
            None,
        ),
        (
            format!("INSERT INTO users VALUES ('{owner}', 'owner@acme.example', 1)"),
            None,
        ),
        (
            format!("INSERT INTO users VALUES ('{gone}', 'gone@acme.example', 1)"),
            None,
        ),
        (
            format!("INSERT INTO members VALUES ('{org}', '{owner}', 'owner', 1)"),
            None,
        ),
        (
            format!("INSERT INTO organizations VALUES ('{other}', 'Globex', 1)"),
            None,
        ),
        (
            format!("INSERT INTO members VALUES ('{other}', '{owner}', 'member', 1)"),
            None,
        ),
    ];
    for (user, key, name) in [
        (owner, &kept, "crm-prod-sync"),
        (gone, &dead, "crm-prod-old"),
    ] {
        let sql = format!(
            "INSERT INTO api_keys (id, org_id, name, environment, scope, digest, hint, \
             created_by, created_at) VALUES ('{}', '{org}', '{name}', 'live', 'admin', $1, \
             'sai_live_…', '{user}', 2)",
            Uuid::now_v7()
        );
        statements.push((sql, Some(key.digest().as_bytes().to_vec())));
    }
    if db.is_postgres() {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        migrator.run(&mut conn).await.unwrap();
        for (sql, digest) in &statements {
            sqlx::query(sql)
                .bind(digest)
                .execute(&mut conn)
                .await
                .unwrap();
        }
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&format!("{}?mode=rwc", db.url))
            .await
            .unwrap();
        migrator.run(&mut conn).await.unwrap();
        for (sql, digest) in &statements {
            sqlx::query(sql)
                .bind(digest)
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }

    let store = siesta::store::open(&db.url).await.expect("migrates");
    let now = siesta::clock::Timestamp::now();
    let grant = store.find_grant(&kept.digest()).await.unwrap().unwrap();
    assert_eq!(
        grant.owner_role,
        Some(Role::Owner),
        "the owner's key still works"
    );
    assert!(grant.works_at(now));
    // A key whose owner had already left stays stopped, even once they are back.
    let member = siesta::store::Membership {
        org_id: org,
        user_id: gone,
        role: Role::Admin,
        created_at: now,
    };
    let audit = AuditRecord::event(org, "member.added", "cli");
    store.add_member(&member, audit).await.unwrap();
    let grant = store.find_grant(&dead.digest()).await.unwrap().unwrap();
    assert_eq!(grant.owner_role, None);
    // Migrated memberships end like new ones.
    let audit = AuditRecord::event(org, "member.removed", "cli");
    store.remove_member(org, owner, audit).await.unwrap();
    let member = siesta::store::Membership {
        user_id: owner,
        ..member
    };
    let audit = AuditRecord::event(org, "member.added", "cli");
    store.add_member(&member, audit).await.unwrap();
    let grant = store.find_grant(&kept.digest()).await.unwrap().unwrap();
    assert!(!grant.works_at(now));
}
