//! Several replicas: two `siesta serve` processes (or two servers in this process, where a
//! test needs settings the command line does not offer) on one PostgreSQL database and one
//! Redis.
//! Data written through one is read through the other, a key deleted through one is refused
//! by the other within a second, a key's limit holds across both, and with Redis gone both
//! keep serving with limits of their own.
//!
//! Needs `SIESTA_TEST_POSTGRES_URL` and `SIESTA_TEST_REDIS_URL` (and `redis-server` on the
//! PATH, or `SIESTA_TEST_REDIS_SERVER`, for the test that stops one). Without them these
//! tests skip locally and fail under CI.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::helpers::*;

fn redis_url_or_skip() -> Option<String> {
    service_url_or_skip(
        "SIESTA_TEST_REDIS_URL",
        "a Redis server, such as redis://127.0.0.1:6379",
    )
}

/// Held by the tests that announce key changes on the shared Redis and by those that listen
/// for announcements, so that what a listener hears can only come from its own test.
static ANNOUNCEMENTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One replica: a `siesta serve` process, or a server run in this process with settings the
/// command line does not offer.
struct Replica {
    base: String,
    /// The process, or the server task: dropping it stops the replica.
    _running: Box<dyn Send>,
}

/// A server task of this process, stopped when the replica is dropped.
struct Served(tokio::task::JoinHandle<()>);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The first replica's bootstrap credentials (an admin key).
struct Admin {
    key: String,
    org: String,
}

impl Replica {
    /// Starts a replica and waits until it listens. The first one on an empty database also
    /// creates the first organization and key, and says them.
    async fn start(
        database: &str,
        redis: &str,
        dir: &Path,
        first: bool,
    ) -> (Replica, Option<Admin>) {
        let data = tempfile::tempdir_in(dir).unwrap().keep();
        let log = std::fs::File::create(data.join("server.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_siesta"))
            .args(["serve", "--listen", "127.0.0.1:0", "--database", database])
            .args(["--redis-url", redis, "--rate-limit", "100000"])
            .arg("--data-dir")
            .arg(data.join("files"))
            .current_dir(&data)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("siesta starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut base, mut key, mut org) = (None, None, None);
        let read = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("listening on ") {
                    base = Some(url.to_owned());
                    if !first {
                        break;
                    }
                }
                if let Some(k) = line.trim().strip_prefix("X-Api-Key:") {
                    key = Some(k.trim().to_owned());
                }
                if let Some(o) = line.trim().strip_prefix("X-Org-Id:") {
                    org = Some(o.trim().to_owned());
                }
                if line.trim().starts_with("curl ") {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("the replica started within 30 s");
        let admin = first.then(|| Admin {
            key: key.expect("the first start printed a key"),
            org: org.expect("the first start printed the organization"),
        });
        let replica = Replica {
            base: base.expect("the replica said where it listens"),
            _running: Box::new(child),
        };
        (replica, admin)
    }

    /// Starts a replica in this process on `database`, with `settings` and files of its own
    /// in `dir`; it listens when this returns.
    async fn in_process(database: &str, dir: &Path, settings: siesta::Settings) -> Replica {
        let store = siesta::store::open(database)
            .await
            .expect("the database opens");
        let settings = siesta::Settings {
            data_dir: tempfile::tempdir_in(dir).unwrap().keep().join("files"),
            ..settings
        };
        let server = siesta::Server::bind("127.0.0.1:0".parse().unwrap(), settings, store)
            .await
            .expect("binds port 0");
        let base = format!("http://{}", server.local_addr().unwrap());
        let task = tokio::spawn(server.run(std::future::pending()));
        Replica {
            base,
            _running: Box::new(Served(task)),
        }
    }
}

/// Two replicas on a fresh database and the given Redis, and the admin key of the first.
async fn two_replicas(
    server: &str,
    redis: &str,
    dir: &Path,
) -> (TestDatabase, Replica, Replica, Admin) {
    let database = TestDatabase::fresh_postgres(server).await;
    let (a, admin) = Replica::start(&database.url, redis, dir, true).await;
    let (b, _) = Replica::start(&database.url, redis, dir, false).await;
    (database, a, b, admin.unwrap())
}

/// Two replicas run in this process, each with `settings`, on a fresh database, and an admin
/// key made in it.
async fn two_replicas_in_process(
    server: &str,
    dir: &Path,
    settings: siesta::Settings,
) -> (TestDatabase, Replica, Replica, Admin) {
    let database = TestDatabase::fresh_postgres(server).await;
    let a = Replica::in_process(&database.url, dir, settings.clone()).await;
    let b = Replica::in_process(&database.url, dir, settings).await;
    let store = siesta::store::open(&database.url).await.unwrap();
    let (org, keys) = organization(&*store, &[("ops-prod-admin", siesta::key::Scope::Admin)]).await;
    let admin = Admin {
        key: keys[0].clone(),
        org: org.to_string(),
    };
    (database, a, b, admin)
}

struct Client(reqwest::Client);

impl Client {
    fn new() -> Self {
        Client(
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        )
    }

    async fn call(
        &self,
        method: reqwest::Method,
        replica: &Replica,
        path: &str,
        key: &str,
        org: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .0
            .request(method, format!("{}{path}", replica.base))
            .header("X-Api-Key", key)
            .header("X-Org-Id", org);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("the replica answers");
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn get(&self, replica: &Replica, path: &str, key: &str, org: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, replica, path, key, org, None)
            .await
    }

    /// A new key made through `replica`, as (id, value).
    async fn new_key(&self, replica: &Replica, admin: &Admin, body: Value) -> (String, String) {
        let (status, key) = self
            .call(
                reqwest::Method::POST,
                replica,
                "/api/v1/ApiKey",
                &admin.key,
                &admin.org,
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{key}");
        (
            key["id"].as_str().unwrap().to_owned(),
            key["key"].as_str().unwrap().to_owned(),
        )
    }

    async fn readiness(&self, replica: &Replica) -> Value {
        let r = self
            .0
            .get(format!("{}/readyz", replica.base))
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }
}

#[tokio::test]
async fn data_written_through_one_replica_is_read_through_the_other() {
    let (Some(server), Some(redis)) = (postgres_url_or_skip(), redis_url_or_skip()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_db, a, b, admin) = two_replicas(&server, &redis, dir.path()).await;
    let http = Client::new();
    let (status, agent) = http
        .call(
            reqwest::Method::POST,
            &a,
            "/api/v1/Agent",
            &admin.key,
            &admin.org,
            Some(json!({"name": "Triage", "instructions": "Be brief."})),
        )
        .await;
    assert_eq!(status, 201);
    let path = format!("/api/v1/Agent/{}", agent["id"].as_str().unwrap());
    let (status, read) = http.get(&b, &path, &admin.key, &admin.org).await;
    assert_eq!(status, 200);
    assert_eq!(read, agent);
    let (status, list) = http
        .get(&b, "/api/v1/Agent?Limit=10", &admin.key, &admin.org)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["total"], 1);
}

#[tokio::test]
async fn a_key_deleted_through_one_replica_is_refused_by_the_other_within_a_second() {
    let (Some(server), Some(redis)) = (postgres_url_or_skip(), redis_url_or_skip()) else {
        return;
    };
    let _announcing = ANNOUNCEMENTS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (_db, a, b, admin) = two_replicas(&server, &redis, dir.path()).await;
    let http = Client::new();
    let mut lags = Vec::new();
    for trial in 0..10 {
        let (id, key) = http
            .new_key(&a, &admin, json!({"name": format!("trial-{trial}")}))
            .await;
        // The other replica verifies the key, and caches it.
        let (status, _) = http.get(&b, "/api/v1/Me", &key, &admin.org).await;
        assert_eq!(status, 200);
        let (status, _) = http
            .call(
                reqwest::Method::DELETE,
                &a,
                &format!("/api/v1/ApiKey/{id}"),
                &admin.key,
                &admin.org,
                None,
            )
            .await;
        assert_eq!(status, 204);
        let deleted = Instant::now();
        loop {
            let (status, body) = http.get(&b, "/api/v1/Me", &key, &admin.org).await;
            if status == 401 {
                assert_eq!(body["code"], "invalid_api_key");
                break;
            }
            assert_eq!(status, 200);
            assert!(
                deleted.elapsed() < Duration::from_secs(1),
                "trial {trial}: still accepted after a second"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lags.push(deleted.elapsed());
    }
    lags.sort();
    eprintln!(
        "revocation lag over {} trials: median {:?}, max {:?}",
        lags.len(),
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );
}

/// Asks `replica` for `/api/v1/Me` with `key` until it is refused (or `within` has passed),
/// and returns the last answer.
async fn refused_within(
    http: &Client,
    replica: &Replica,
    key: &str,
    org: &str,
    within: Duration,
) -> (u16, Value) {
    let last = std::cell::RefCell::new((0, Value::Null));
    eventually(within, || async {
        let answer = http.get(replica, "/api/v1/Me", key, org).await;
        let refused = answer.0 != 200;
        *last.borrow_mut() = answer;
        refused
    })
    .await;
    last.into_inner()
}

#[tokio::test]
async fn a_replica_drops_a_key_deleted_or_rotated_through_another_on_the_announcement_alone() {
    let (Some(server), Some(redis)) = (postgres_url_or_skip(), redis_url_or_skip()) else {
        return;
    };
    let _announcing = ANNOUNCEMENTS.lock().await;
    // The change counter is read once at start, then after an hour, and nothing stays cached
    // for less: within the test, only a Redis announcement can make a replica drop a key.
    let settings = siesta::Settings {
        redis_url: Some(redis.into()),
        change_poll: Duration::from_secs(3600),
        key_cache_ttl: Duration::from_secs(3600),
        rate_limit: 100_000,
        ..siesta::Settings::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let (_db, a, b, admin) = two_replicas_in_process(&server, dir.path(), settings).await;
    let http = Client::new();
    for r in [&a, &b] {
        let ready = wait_for_readiness(&http, r, "ready").await;
        assert_eq!(
            ready,
            json!({"status": "ready", "database": "ok", "redis": "ok"})
        );
    }
    let admin_path = |id: &str, action: &str| format!("/api/v1/ApiKey/{id}{action}");
    // Several rounds, so that the first announcement heard cannot be mistaken for the cache
    // a replica empties when its subscription starts.
    for round in 0..3 {
        let (id, key) = http
            .new_key(&a, &admin, json!({"name": format!("deleted-{round}")}))
            .await;
        let (status, _) = http.get(&b, "/api/v1/Me", &key, &admin.org).await;
        assert_eq!(
            status, 200,
            "the other replica verifies the key, and caches it"
        );
        let (status, _) = http
            .call(
                reqwest::Method::DELETE,
                &a,
                &admin_path(&id, ""),
                &admin.key,
                &admin.org,
                None,
            )
            .await;
        assert_eq!(status, 204);
        let (status, body) =
            refused_within(&http, &b, &key, &admin.org, Duration::from_secs(1)).await;
        assert_eq!(
            (status, &body["code"]),
            (401, &json!("invalid_api_key")),
            "round {round}: a deleted key is refused by the other replica within a second: {body}"
        );

        let (id, key) = http
            .new_key(&a, &admin, json!({"name": format!("rotated-{round}")}))
            .await;
        let (status, _) = http.get(&b, "/api/v1/Me", &key, &admin.org).await;
        assert_eq!(status, 200);
        let (status, successor) = http
            .call(
                reqwest::Method::POST,
                &a,
                &admin_path(&id, "/rotate"),
                &admin.key,
                &admin.org,
                Some(json!({"grace": "0"})),
            )
            .await;
        assert_eq!(status, 200, "{successor}");
        let (status, body) =
            refused_within(&http, &b, &key, &admin.org, Duration::from_secs(1)).await;
        assert_eq!(
            (status, &body["code"]),
            (401, &json!("expired_api_key")),
            "round {round}: a key rotated without grace is refused by the other replica \
             within a second: {body}"
        );
        let successor = successor["key"].as_str().unwrap();
        let (status, _) = http.get(&b, "/api/v1/Me", successor, &admin.org).await;
        assert_eq!(status, 200, "its successor works there");
    }
}

/// Sends `n` requests with `key`, alternating between the replicas; counts each status.
async fn alternate(
    http: &Client,
    replicas: [&Replica; 2],
    key: &str,
    org: &str,
    n: usize,
) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(n);
    for i in 0..n {
        let (status, _) = http.get(replicas[i % 2], "/api/v1/Me", key, org).await;
        statuses.push(status);
    }
    statuses
}

#[tokio::test]
async fn a_key_limit_holds_across_replicas() {
    let (Some(server), Some(redis)) = (postgres_url_or_skip(), redis_url_or_skip()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_db, a, b, admin) = two_replicas(&server, &redis, dir.path()).await;
    let http = Client::new();
    const N: usize = 20;
    let (_, key) = http
        .new_key(&a, &admin, json!({"name": "limited", "rateLimit": N}))
        .await;
    let statuses = alternate(&http, [&a, &b], &key, &admin.org, 3 * N).await;
    let passed = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(passed >= N, "the burst of {N} passes: {passed}");
    assert!(
        passed as f64 <= 1.1 * N as f64,
        "{passed} of {} passed a limit of {N}/min",
        3 * N
    );
}

/// A `redis-server` of the test's own, on a free port, that the test can stop and restart.
struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        let binary =
            std::env::var("SIESTA_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = std::process::Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts (install it, or set SIESTA_TEST_REDIS_SERVER)");
        OwnRedis {
            port,
            child: Some(child),
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn wait_for_readiness(http: &Client, replica: &Replica, status: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http.readiness(replica).await;
        if r["status"] == status || Instant::now() > until {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn with_redis_gone_replicas_keep_serving_with_limits_of_their_own_and_recover() {
    let (Some(server), Some(_)) = (postgres_url_or_skip(), redis_url_or_skip()) else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = OwnRedis::start(port);
    let dir = tempfile::tempdir().unwrap();
    let http = Client::new();
    let database = TestDatabase::fresh_postgres(&server).await;
    let (a, admin) = Replica::start(&database.url, &redis.url(), dir.path(), true).await;
    let (b, _) = Replica::start(&database.url, &redis.url(), dir.path(), false).await;
    let admin = admin.unwrap();
    for r in [&a, &b] {
        let ready = wait_for_readiness(&http, r, "ready").await;
        assert_eq!(
            ready,
            json!({"status": "ready", "database": "ok", "redis": "ok"})
        );
    }
    const N: usize = 10;
    let (_, key) = http
        .new_key(&a, &admin, json!({"name": "limited", "rateLimit": N}))
        .await;

    redis.stop();
    // Each replica now limits on its own: at most N (its own full bucket) pass through
    // each, and nothing fails.
    let statuses = alternate(&http, [&a, &b], &key, &admin.org, 6 * N).await;
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "no 5xx while Redis is gone: {statuses:?}"
    );
    let through = |replica: usize| {
        statuses
            .iter()
            .skip(replica)
            .step_by(2)
            .filter(|s| **s == 200)
            .count()
    };
    for replica in 0..2 {
        assert!(
            (1..=N).contains(&through(replica)),
            "replica {replica} let {} through: {statuses:?}",
            through(replica)
        );
    }
    for r in [&a, &b] {
        let degraded = wait_for_readiness(&http, r, "degraded").await;
        assert_eq!(
            degraded,
            json!({"status": "degraded", "database": "ok", "redis": "unreachable"})
        );
        let metrics = http
            .0
            .get(format!("{}/metrics", r.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(metrics.contains("\nsiesta_redis_up 0\n"), "{metrics}");
    }

    // Redis back on the same address: both replicas find it by themselves.
    let _redis = OwnRedis::start(port);
    for r in [&a, &b] {
        let ready = wait_for_readiness(&http, r, "ready").await;
        assert_eq!(ready["redis"], "ok", "{ready}");
    }
    let (status, _) = http.get(&b, "/api/v1/Me", &admin.key, &admin.org).await;
    assert_eq!(status, 200);
}

/// What every key change is announced as: `keys` on the channel the replicas follow.
#[track_caller]
fn assert_announcement(message: &redis::Msg) {
    assert_eq!(message.get_channel_name(), "siesta:keys-changed");
    let payload: String = message.get_payload().expect("a text payload");
    assert_eq!(payload, "keys");
}

/// Runs the command line on `database`, with the Redis the replicas share, and reads its JSON.
async fn siesta(database: &str, redis: &str, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_siesta"))
        .args(["--database", database, "--json"])
        .args(args)
        .env("SIESTA_REDIS_URL", redis)
        .output()
        .await
        .expect("the command line runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stderr}");
    assert!(!stderr.contains("could not tell the replicas"), "{stderr}");
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[tokio::test]
async fn the_command_line_announces_its_key_changes_to_the_replicas() {
    use futures_util::StreamExt;
    let Some(redis) = redis_url_or_skip() else {
        return;
    };
    let _listening = ANNOUNCEMENTS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::fresh(dir.path()).await;
    let db = database.url.as_str();
    let org = siesta(db, &redis, &["org", "create", "--name", "Acme"]).await;
    let org = org["id"].as_str().unwrap().to_owned();
    siesta(db, &redis, &["user", "create", "--email", "ops@acme.test"]).await;
    siesta(
        db,
        &redis,
        &[
            "member",
            "add",
            "--org",
            &org,
            "--user",
            "ops@acme.test",
            "--role",
            "admin",
        ],
    )
    .await;
    let key = siesta(
        db,
        &redis,
        &[
            "keys",
            "create",
            "--org",
            &org,
            "--user",
            "ops@acme.test",
            "--name",
            "crm-prod-sync",
        ],
    )
    .await;
    let id = key["id"].as_str().unwrap().to_owned();

    let client = redis::Client::open(redis.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("siesta:keys-changed").await.unwrap();
    let mut messages = pubsub.on_message();
    for args in [
        vec!["keys", "rotate", id.as_str(), "--grace", "0"],
        vec!["member", "remove", "--org", &org, "--user", "ops@acme.test"],
    ] {
        siesta(db, &redis, &args).await;
        let heard = tokio::time::timeout(Duration::from_secs(2), messages.next()).await;
        let Ok(Some(message)) = heard else {
            panic!("{args:?} was not announced on Redis");
        };
        assert_announcement(&message);
    }
}

#[tokio::test]
async fn deletes_and_rotations_through_the_api_are_announced_on_redis() {
    use futures_util::StreamExt;
    let Some(redis) = redis_url_or_skip() else {
        return;
    };
    let _listening = ANNOUNCEMENTS.lock().await;
    let app = spawn_app_with(siesta::Settings {
        redis_url: Some(redis.clone().into()),
        ..siesta::Settings::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    let client = redis::Client::open(redis.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("siesta:keys-changed").await.unwrap();
    let mut messages = pubsub.on_message();
    let (id, _) = app
        .issue(t.org_id, t.owner, "crm-prod-sync", siesta::key::Scope::Read)
        .await;
    // The replica may start before it has reached Redis: wait until it has.
    let ready = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let r = app.client.get(app.url("/readyz")).send().await.unwrap();
            let body: Value = r.json().await.unwrap();
            if body["redis"] == "ok" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    ready.await.expect("the server reached Redis");
    let rotated = app
        .post(
            &format!("/api/v1/ApiKey/{id}/rotate"),
            &t.admin,
            t.org_id,
            json!({}),
        )
        .await
        .ok(200);
    let successor = rotated["id"].as_str().unwrap().to_owned();
    let heard = tokio::time::timeout(Duration::from_secs(2), messages.next()).await;
    let Ok(Some(message)) = heard else {
        panic!("the rotation was not announced");
    };
    assert_announcement(&message);
    app.delete(&format!("/api/v1/ApiKey/{successor}"), &t.admin, t.org_id)
        .await
        .ok(204);
    let heard = tokio::time::timeout(Duration::from_secs(2), messages.next()).await;
    let Ok(Some(message)) = heard else {
        panic!("the delete was not announced");
    };
    assert_announcement(&message);
}
