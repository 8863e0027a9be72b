//! Membership bounds keys: a removal ends a member's keys for good, and a key never acts
//! beyond what its owner's current role allows.

use std::time::Duration;

use serde_json::json;
use siesta::clock::Timestamp;
use siesta::key::Scope;
use siesta::lifecycle::{self, Actor};
use siesta::store::{AuditRecord, KeyFilter, Role, StoreError};
use siesta::Settings;
use uuid::Uuid;

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_siesta");

/// Runs `siesta ARGS --database <the app's database> --json`: success, stdout, stderr.
async fn siesta(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .args(["--database", &app.database.url, "--json"])
        .env_remove("SIESTA_DATABASE_URL")
        .env_remove("SIESTA_REDIS_URL")
        .current_dir(app.dir.path())
        .output()
        .await
        .expect("siesta runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

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

/// Whether `GET /api/v1/ApiKey` with `key` comes to answer `status` within a second: the
/// time a change of role has to reach a running server.
async fn key_listing_answers_within_a_second(
    app: &TestApp,
    key: &str,
    org: Uuid,
    status: u16,
) -> bool {
    let answered = eventually(Duration::from_secs(1), || async {
        app.get("/api/v1/ApiKey", key, org).await.status == status
    });
    answered.await.is_some()
}

/// Dev, a member of the tenant's organization, and a key issued to them.
struct Dev {
    user: Uuid,
    key_id: Uuid,
    key: String,
}

/// Makes dev a member of the tenant's organization with `role`, and issues them a key of
/// `scope`.
async fn dev_with_a_key(app: &TestApp, t: &Tenant, role: Role, name: &str, scope: Scope) -> Dev {
    let user = member(app, t, "dev@acme.example", role).await;
    let (key_id, key) = app.issue(t.org_id, user, name, scope).await;
    Dev { user, key_id, key }
}

#[tokio::test]
async fn a_member_removed_and_added_back_finds_their_old_keys_dead_and_new_ones_working() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let dev = dev_with_a_key(&app, &t, Role::Member, "crm-prod-sync", Scope::Read).await;
    let (old_id, old) = (dev.key_id, &dev.key);
    app.get("/api/v1/Me", old, t.org_id).await.ok(200);

    remove(&app, t.org_id, dev.user).await;
    app.add_member(t.org_id, dev.user, Role::Member).await;
    // Made by another writer than the server: it reaches the server within a second.
    let refused = app
        .me_answers(Duration::from_secs(1), old, t.org_id, 403)
        .await;
    assert!(refused.is_some(), "the old key stops although dev is back");
    app.get("/api/v1/Me", old, t.org_id)
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
        .issue(t.org_id, dev.user, "crm-prod-other", Scope::Read)
        .await;
    app.get("/api/v1/Me", &new, t.org_id).await.ok(200);
    app.add_member(t.org_id, dev.user, Role::Admin).await;
    app.get("/api/v1/Me", &new, t.org_id).await.ok(200);
    app.get("/api/v1/Me", old, t.org_id)
        .await
        .problem(403, "key_owner_not_member");

    // Rotating the old key does not bring it back either.
    let successor = app.rotate(t.org_id, old_id, Duration::ZERO).await;
    app.get("/api/v1/Me", &successor, t.org_id)
        .await
        .problem(403, "key_owner_not_member");
}

#[tokio::test]
async fn a_realtime_session_ends_when_its_keys_owner_is_removed_even_if_added_back() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let dev = dev_with_a_key(&app, &t, Role::Member, "voice-prod-backend", Scope::Write).await;
    let agent = app
        .post(
            "/api/v1/Agent",
            &dev.key,
            t.org_id,
            json!({"name": "voice-bot", "instructions": "Be quick."}),
        )
        .await
        .ok(201);
    let agent = agent["id"].as_str().unwrap();
    let open = app
        .realtime_session(agent, &dev.key, t.org_id, json!({}))
        .await;
    let mut ws = open_socket(&open).await;
    let (_, done) = say(&mut ws, "Hello").await;
    assert_eq!(done["type"], "done", "{done}");

    remove(&app, t.org_id, dev.user).await;
    app.add_member(t.org_id, dev.user, Role::Member).await;
    let (deltas, refused) = say(&mut ws, "Still there?").await;
    assert_eq!(deltas, "");
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "expired_api_key");
}

#[tokio::test]
async fn the_cli_refuses_a_member_a_key_wider_than_write() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let dev = member(&app, &t, "dev@acme.example", Role::Member).await;
    let org = t.org_id.to_string();
    let create = |scope: &'static str| {
        let org = org.clone();
        let app = &app;
        async move {
            let args = [
                "keys",
                "create",
                "--org",
                &org,
                "--user",
                "dev@acme.example",
                "--name",
                "crm-prod-sync",
                "--scope",
                scope,
            ];
            siesta(app, &args).await
        }
    };
    let (ok, stdout, stderr) = create("admin").await;
    assert!(!ok, "refused with a non-zero exit");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("scope"), "{stderr}");
    assert!(!stderr.contains("sai_"), "{stderr}");
    let keys = app
        .store
        .list_keys(t.org_id, &KeyFilter::default())
        .await
        .unwrap();
    assert!(
        keys.iter().all(|k| k.created_by != dev),
        "no key was created"
    );

    // The same through the lifecycle, which the API uses too.
    let refused = lifecycle::create(
        &*app.store,
        t.org_id,
        dev,
        &spec("crm-prod-sync", Scope::Admin),
        &Actor::Cli,
        Timestamp::now(),
    )
    .await;
    assert!(
        matches!(refused, Err(StoreError::Invalid { field: "scope", .. })),
        "{refused:?}"
    );

    // Up to write is a member's to have; an admin may have any scope.
    let (ok, stdout, stderr) = create("write").await;
    assert!(ok, "{stderr}");
    let key: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(key["scope"], "write");
    let ops = member(&app, &t, "ops@acme.example", Role::Admin).await;
    app.issue(t.org_id, ops, "ops-prod-admin", Scope::Admin)
        .await;
}

#[tokio::test]
async fn over_http_a_key_wider_than_its_owners_role_is_refused_by_scope() {
    // The server never learns of the demotion below by itself: it acts on what it cached.
    let app = spawn_app_with(Settings {
        change_poll: Duration::from_secs(3600),
        key_cache_ttl: Duration::from_secs(3600),
        ..Settings::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    app.get("/api/v1/ApiKey", &t.admin, t.org_id).await.ok(200);
    app.add_member(t.org_id, t.owner, Role::Member).await;

    // The calling key passed as admin, but the new key would be the owner's, now a member:
    // the database's role decides.
    let body = json!({"name": "crm-prod-sync", "scope": "admin"});
    let r = app
        .post("/api/v1/ApiKey", &t.admin, t.org_id, body)
        .await
        .problem(400, "validation_error");
    assert!(r["errors"]["scope"].is_array(), "{r}");
    let keys = app
        .store
        .list_keys(t.org_id, &KeyFilter::default())
        .await
        .unwrap();
    assert!(keys.iter().all(|k| k.name != "crm-prod-sync"));

    // A key too narrow for key management is refused for that first (row 10).
    let body = json!({"name": "crm-prod-sync", "scope": "admin"});
    app.post("/api/v1/ApiKey", &t.write, t.org_id, body)
        .await
        .problem(403, "insufficient_scope");
}

#[tokio::test]
async fn a_demoted_owners_admin_key_acts_with_write_scope_from_the_next_request() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    app.get("/api/v1/ApiKey", &t.admin, t.org_id).await.ok(200);
    let me = app.get("/api/v1/Me", &t.admin, t.org_id).await.ok(200);
    assert_eq!(me["scope"], "admin");

    app.add_member(t.org_id, t.owner, Role::Member).await;
    assert!(
        key_listing_answers_within_a_second(&app, &t.admin, t.org_id, 403).await,
        "the demotion reaches the server within a second"
    );
    let r = app
        .get("/api/v1/ApiKey", &t.admin, t.org_id)
        .await
        .problem(403, "insufficient_scope");
    assert_eq!(
        r["detail"],
        "This operation needs a key with admin scope; this key acts with write scope, \
         the most its owner's role allows.",
    );
    let r = app
        .post("/api/v1/Agent", &t.read, t.org_id, json!({"name": "x"}))
        .await
        .problem(403, "insufficient_scope");
    assert_eq!(
        r["detail"],
        "This operation needs a key with write scope; this key has read scope."
    );
    let body = json!({"name": "crm-prod-sync", "scope": "write"});
    app.post("/api/v1/ApiKey", &t.admin, t.org_id, body)
        .await
        .problem(403, "insufficient_scope");
    let me = app.get("/api/v1/Me", &t.admin, t.org_id).await.ok(200);
    assert_eq!(me["scope"], "write", "GET /Me shows the effective scope");
    // What the role still allows, the key still does; narrower keys keep their scope.
    app.post(
        "/api/v1/Agent",
        &t.admin,
        t.org_id,
        json!({"name": "support-bot"}),
    )
    .await
    .ok(201);
    let me = app.get("/api/v1/Me", &t.read, t.org_id).await.ok(200);
    assert_eq!(me["scope"], "read");

    // Promoted again, the key acts with its own scope again.
    app.add_member(t.org_id, t.owner, Role::Admin).await;
    assert!(key_listing_answers_within_a_second(&app, &t.admin, t.org_id, 200).await);
}

#[tokio::test]
async fn a_demotion_by_the_cli_reaches_a_running_server_within_a_second() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    app.get("/api/v1/ApiKey", &t.admin, t.org_id).await.ok(200);
    let org = t.org_id.to_string();
    let args = [
        "member",
        "add",
        "--org",
        &org,
        "--user",
        "owner@acme.example",
        "--role",
        "member",
    ];
    let (ok, _, stderr) = siesta(&app, &args).await;
    assert!(ok, "{stderr}");
    assert!(
        key_listing_answers_within_a_second(&app, &t.admin, t.org_id, 403).await,
        "the role change reached the server in time"
    );
    app.get("/api/v1/ApiKey", &t.admin, t.org_id)
        .await
        .problem(403, "insufficient_scope");
    let me = app.get("/api/v1/Me", &t.admin, t.org_id).await.ok(200);
    assert_eq!(me["scope"], "write");
}

#[tokio::test]
async fn rotation_keeps_the_stored_scope_and_the_successor_is_capped_the_same_way() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let dev = dev_with_a_key(&app, &t, Role::Admin, "crm-prod-admin", Scope::Admin).await;
    app.get("/api/v1/ApiKey", &dev.key, t.org_id).await.ok(200);
    app.add_member(t.org_id, dev.user, Role::Member).await;
    assert!(key_listing_answers_within_a_second(&app, &dev.key, t.org_id, 403).await);

    // The owner's admin key rotates dev's key: a rotation is never refused for the scope.
    let next = app.rotate_with_default_grace(&t, dev.key_id).await.ok(200);
    assert_eq!(
        next["scope"], "admin",
        "the successor keeps the stored scope"
    );
    assert_eq!(next["createdBy"], dev.user.to_string());
    let successor = next["key"].as_str().unwrap();
    let me = app.get("/api/v1/Me", successor, t.org_id).await.ok(200);
    assert_eq!(me["scope"], "write", "and acts with its owner's maximum");
    app.get("/api/v1/ApiKey", successor, t.org_id)
        .await
        .problem(403, "insufficient_scope");
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
        run_statements::<sqlx::Postgres>(&mut conn, &statements).await;
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&format!("{}?mode=rwc", db.url))
            .await
            .unwrap();
        migrator.run(&mut conn).await.unwrap();
        run_statements::<sqlx::Sqlite>(&mut conn, &statements).await;
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

/// Runs each statement on `conn`, with its bytes, if any, bound to `$1`.
async fn run_statements<DB>(conn: &mut DB::Connection, statements: &[(String, Option<Vec<u8>>)])
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> Option<Vec<u8>>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    for (sql, bytes) in statements {
        sqlx::query(sql)
            .bind(bytes.clone())
            .execute(&mut *conn)
            .await
            .unwrap();
    }
}
