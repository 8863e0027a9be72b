use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use siesta::clock::{Clock, Timestamp};
use siesta::key::{Environment, Scope};
use siesta::lifecycle::{self, Actor, KeySpec};
use siesta::store::{AuditRecord, Membership, Organization, Role, Store, User};
use siesta::{Server, Settings};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use uuid::Uuid;

pub struct TestApp {
    pub addr: SocketAddr,
    pub store: Arc<dyn Store>,
    pub client: reqwest::Client,
    pub database: TestDatabase,
    pub dir: TempDir,
    /// The server's clock: the system's, or a manual one the test moves.
    pub clock: Clock,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// An organization with an owner and a key of each scope.
pub struct Tenant {
    pub org_id: Uuid,
    pub owner: Uuid,
    pub read: String,
    pub write: String,
    pub admin: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Settings::default()).await
}

/// A server whose clock stands still until the test moves it with `app.clock.advance`.
pub async fn spawn_app_on_manual_clock(settings: Settings) -> TestApp {
    spawn_app_with(Settings {
        clock: Clock::manual(Timestamp::now()),
        ..settings
    })
    .await
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    spawn_app_with_provider(settings, Arc::new(siesta::provider::OfflineResponder)).await
}

pub async fn spawn_app_with_provider(
    settings: Settings,
    provider: Arc<dyn siesta::provider::Provider>,
) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = Settings {
        data_dir: dir.path().join("data"),
        ..settings
    };
    let clock = settings.clock.clone();
    let database = TestDatabase::fresh(dir.path()).await;
    let store = siesta::store::open(&database.url)
        .await
        .expect("database opens");
    let server = Server::bind_with(
        "127.0.0.1:0".parse().unwrap(),
        settings,
        Arc::clone(&store),
        provider,
    )
    .await
    .expect("binds port 0");
    let addr = server.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        store,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        database,
        dir,
        clock,
        shutdown: Some(tx),
        server: Some(handle),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The OpenAPI document as the server serves it.
    pub async fn document(&self) -> Value {
        let r = self.client.get(self.url("/openapi.json")).send().await;
        r.unwrap().json().await.unwrap()
    }

    /// Stops the server the way SIGTERM does: in-flight requests finish, records are written.
    /// The database stays until the app is dropped.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            h.await.unwrap();
        }
    }

    pub async fn create_org(&self, name: &str) -> Uuid {
        let org = Organization {
            id: Uuid::now_v7(),
            name: name.into(),
            created_at: Timestamp::now(),
        };
        self.store.create_org(&org).await.unwrap();
        org.id
    }

    pub async fn create_user(&self, email: &str) -> Uuid {
        let user = User {
            id: Uuid::now_v7(),
            email: email.into(),
            created_at: Timestamp::now(),
        };
        self.store.create_user(&user).await.unwrap();
        user.id
    }

    pub async fn add_member(&self, org_id: Uuid, user_id: Uuid, role: Role) {
        let m = Membership {
            org_id,
            user_id,
            role,
            created_at: Timestamp::now(),
        };
        self.store
            .add_member(&m, AuditRecord::event(org_id, "member.added", "cli"))
            .await
            .unwrap();
    }

    pub async fn issue(
        &self,
        org_id: Uuid,
        user_id: Uuid,
        name: &str,
        scope: Scope,
    ) -> (Uuid, String) {
        self.issue_spec(org_id, user_id, spec(name, scope)).await
    }

    pub async fn issue_spec(&self, org_id: Uuid, user_id: Uuid, spec: KeySpec) -> (Uuid, String) {
        let now = self.clock.now();
        let (record, key) =
            lifecycle::create(&*self.store, org_id, user_id, &spec, &Actor::Cli, now)
                .await
                .unwrap();
        (record.id, key.reveal().to_owned())
    }

    /// Rotates a key as the command line does, with `grace` for the old one: the
    /// successor's value.
    pub async fn rotate(&self, org_id: Uuid, key_id: Uuid, grace: Duration) -> String {
        let now = self.clock.now();
        let (_, key) = lifecycle::rotate(&*self.store, org_id, key_id, grace, &Actor::Cli, now)
            .await
            .unwrap();
        key.reveal().to_owned()
    }

    pub async fn tenant(&self, name: &str) -> Tenant {
        let org_id = self.create_org(name).await;
        let owner = self
            .create_user(&format!("owner@{}.example", name.to_lowercase()))
            .await;
        self.add_member(org_id, owner, Role::Owner).await;
        let (_, read) = self
            .issue(org_id, owner, "test-suite-read", Scope::Read)
            .await;
        let (_, write) = self
            .issue(org_id, owner, "test-suite-write", Scope::Write)
            .await;
        let (_, admin) = self
            .issue(org_id, owner, "test-suite-admin", Scope::Admin)
            .await;
        Tenant {
            org_id,
            owner,
            read,
            write,
            admin,
        }
    }

    /// A request with the two credential headers (either may be left out).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        org: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        if let Some(k) = key {
            req = req.header("X-Api-Key", k);
        }
        if let Some(o) = org {
            req = req.header("X-Org-Id", o);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Reply::from(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str, key: &str, org: Uuid) -> Reply {
        self.call(Method::GET, path, Some(key), Some(&org.to_string()), None)
            .await
    }

    /// Creates an object with the tenant's write key; anything but 201 fails the test.
    pub async fn created(&self, t: &Tenant, path: &str, body: Value) -> Value {
        self.post(path, &t.write, t.org_id, body).await.ok(201)
    }

    pub async fn post(&self, path: &str, key: &str, org: Uuid, body: Value) -> Reply {
        self.call(
            Method::POST,
            path,
            Some(key),
            Some(&org.to_string()),
            Some(body),
        )
        .await
    }

    pub async fn put(&self, path: &str, key: &str, org: Uuid, body: Value) -> Reply {
        self.call(
            Method::PUT,
            path,
            Some(key),
            Some(&org.to_string()),
            Some(body),
        )
        .await
    }

    pub async fn delete(&self, path: &str, key: &str, org: Uuid) -> Reply {
        self.call(
            Method::DELETE,
            path,
            Some(key),
            Some(&org.to_string()),
            None,
        )
        .await
    }
}

impl TestApp {
    /// Asks `agent` with the tenant's write key for an answer as server-sent events, and
    /// reads the whole stream.
    pub async fn stream_response(&self, t: &Tenant, agent: &str, body: Value) -> Reply {
        let r = self
            .client
            .post(self.url(&format!("/api/v1/Agent/{agent}/response")))
            .header("X-Api-Key", &t.write)
            .header("X-Org-Id", t.org_id.to_string())
            .header("Accept", "text/event-stream")
            .json(&body)
            .send()
            .await
            .expect("request sent");
        Reply::from(r).await
    }

    /// The messages a conversation holds, read with the tenant's read key.
    pub async fn conversation_messages(&self, t: &Tenant, conversation: &Value) -> Vec<Value> {
        let path = format!("/api/v1/Conversation/{}", conversation.as_str().unwrap());
        let c = self.get(&path, &t.read, t.org_id).await.ok(200);
        c["messages"].as_array().unwrap().clone()
    }

    /// Makes a realtime session with `agent` (201); `body` may name a conversation to
    /// continue.
    pub async fn realtime_session(&self, agent: &str, key: &str, org: Uuid, body: Value) -> Value {
        let path = format!("/api/v1/Agent/{agent}/realtime-session");
        self.post(&path, key, org, body).await.ok(201)
    }

    /// Rotates a key with no body, so with the default grace, by the tenant's admin key.
    pub async fn rotate_with_default_grace(
        &self,
        t: &Tenant,
        key_id: impl std::fmt::Display,
    ) -> Reply {
        self.call(
            Method::POST,
            &format!("/api/v1/ApiKey/{key_id}/rotate"),
            Some(&t.admin),
            Some(&t.org_id.to_string()),
            None,
        )
        .await
    }
}

impl TestApp {
    /// The server's metrics, as Prometheus text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics as text")
    }

    /// How many times the server has looked a key up in the database (a cache miss).
    pub async fn key_lookups(&self) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix("siesta_key_lookups_total "))
            .map_or(0, |n| n.trim().parse().expect("a count"))
    }

    /// Repeats `GET /api/v1/Me` until it answers `status`; how long that took, if it did.
    /// Waits until `key` is answered from the server's cache of verified keys: once the
    /// change counter's first poll has seen whatever the test set up, two requests in a row
    /// cost no lookup.
    pub async fn hold_as_verified(&self, key: &str, org: Uuid) {
        let held = eventually(Duration::from_secs(5), || async {
            self.get("/api/v1/Me", key, org).await.ok(200);
            let lookups = self.key_lookups().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.get("/api/v1/Me", key, org).await.ok(200);
            self.key_lookups().await == lookups
        })
        .await;
        assert!(held.is_some(), "the key is held as verified");
    }

    pub async fn me_answers(
        &self,
        within: Duration,
        key: &str,
        org: Uuid,
        status: u16,
    ) -> Option<Duration> {
        eventually(within, || async {
            self.get("/api/v1/Me", key, org).await.status == status
        })
        .await
    }
}

/// The server that `SIESTA_TEST_POSTGRES_URL` names, a URL whose user may `CREATE DATABASE`:
/// the PostgreSQL-only and replica tests use it, and with `SIESTA_TEST_BACKEND=postgres`
/// every test of the run gets a fresh PostgreSQL database there instead of a SQLite file.
const POSTGRES_URL: &str = "SIESTA_TEST_POSTGRES_URL";
const BACKEND: &str = "SIESTA_TEST_BACKEND";
/// Each test's own pool, kept small so that a parallel run stays far from the server's limit.
const TEST_POOL: &str = "max_connections=4";

fn postgres_url() -> Option<String> {
    std::env::var(POSTGRES_URL).ok().filter(|u| !u.is_empty())
}

/// The service a test needs, named by the environment variable `var`: `None` where none is
/// configured, so the test can skip, but a panic under CI, where a skipped test would pass
/// unseen.
pub fn service_url_or_skip(var: &str, what: &str) -> Option<String> {
    let url = std::env::var(var).ok().filter(|u| !u.is_empty());
    if url.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{var} is not set, and under CI the tests that need it must run, not skip: \
             set it to {what}"
        );
        eprintln!("skipped: {var} is not set");
    }
    url
}

/// The PostgreSQL server for a test that needs one whatever the run's backend.
pub fn postgres_url_or_skip() -> Option<String> {
    service_url_or_skip(
        POSTGRES_URL,
        "a PostgreSQL server where the user may CREATE DATABASE",
    )
}

/// A test's own database, on the run's backend; a PostgreSQL one is dropped with this.
pub struct TestDatabase {
    /// What `siesta::store::open` and `--database` take.
    pub url: String,
    postgres: Option<CreatedDatabase>,
}

impl TestDatabase {
    /// A fresh, empty database: a SQLite file in `dir`, or with `SIESTA_TEST_BACKEND=postgres`
    /// a new database on the server that `SIESTA_TEST_POSTGRES_URL` names.
    pub async fn fresh(dir: &Path) -> TestDatabase {
        match std::env::var(BACKEND).as_deref() {
            Ok("postgres") => {
                let server = postgres_url()
                    .unwrap_or_else(|| panic!("{BACKEND}=postgres needs {POSTGRES_URL}"));
                TestDatabase::fresh_postgres(&server).await
            }
            Ok("sqlite") | Err(_) => TestDatabase {
                url: format!("sqlite://{}", dir.join("siesta.db").display()),
                postgres: None,
            },
            Ok(other) => panic!("{BACKEND} is sqlite or postgres, not {other}"),
        }
    }

    /// A fresh database on this PostgreSQL server.
    pub async fn fresh_postgres(server: &str) -> TestDatabase {
        let created = CreatedDatabase::create(server).await;
        let url = with_query(&created.url, TEST_POOL);
        TestDatabase {
            url,
            postgres: Some(created),
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// Everything the database holds, as bytes to search: the SQLite files in `dir`, or every
    /// row of every table as text.
    pub async fn contents(&self, dir: &Path) -> Vec<Vec<u8>> {
        if self.postgres.is_none() {
            return std::fs::read_dir(dir)
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.is_file())
                .map(|path| std::fs::read(path).unwrap())
                .collect();
        }
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.postgres.as_ref().unwrap().url)
            .await
            .expect("test database answers");
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let mut rows = Vec::new();
        for table in tables {
            let sql = format!("SELECT t::text FROM \"{table}\" t");
            let texts: Vec<String> = sqlx::query_scalar(&sql).fetch_all(&mut conn).await.unwrap();
            rows.extend(texts.into_iter().map(String::into_bytes));
        }
        rows
    }
}

/// A database this test run created on a PostgreSQL server, dropped again when this is.
struct CreatedDatabase {
    server: String,
    name: String,
    url: String,
}

impl CreatedDatabase {
    async fn create(server: &str) -> CreatedDatabase {
        use sqlx::Connection;
        let name = format!("siesta_test_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(server)
            .await
            .unwrap_or_else(|e| panic!("{POSTGRES_URL} answers: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        let _ = conn.close().await;
        CreatedDatabase {
            url: with_database(server, &name),
            server: server.to_owned(),
            name,
        }
    }
}

impl Drop for CreatedDatabase {
    fn drop(&mut self) {
        // Drop runs outside async code: a thread of its own with a runtime of its own. FORCE
        // ends the connections a test's server or pool may still hold.
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&server).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}

/// The server URL with its database path replaced by `name`.
fn with_database(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server, None),
    };
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|i| start + i))
        .unwrap_or(base.len());
    let url = format!("{}/{name}", &base[..authority_end]);
    match query {
        Some(q) => format!("{url}?{q}"),
        None => url,
    }
}

fn with_query(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

pub fn spec(name: &str, scope: Scope) -> KeySpec {
    KeySpec {
        name: name.into(),
        environment: Environment::Live,
        scope,
        expires_in: None,
        rate_limit: None,
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Reply {
    pub async fn from(r: reqwest::Response) -> Reply {
        let status = r.status();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.expect("body").to_vec();
        Reply {
            status,
            headers,
            bytes,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|_| panic!("JSON body, got {:?}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem document with this status and code, and returns it.
    #[track_caller]
    pub fn problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "status; body: {}",
            self.text()
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let body = self.json();
        assert_eq!(body["code"], code, "body: {body}");
        assert_eq!(body["status"], status);
        assert!(
            body["title"].is_string() && body["detail"].is_string() && body["type"].is_string()
        );
        let request_id = self.header("x-request-id").expect("an X-Request-Id header");
        assert!(!request_id.is_empty());
        assert_eq!(
            body["requestId"].as_str(),
            Some(request_id),
            "requestId matches the header"
        );
        body
    }

    #[track_caller]
    pub fn ok(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        if self.bytes.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }
}

/// Where a browser opens a realtime session's socket: its URL with the one-time secret.
pub fn socket_url(s: &Value) -> String {
    format!(
        "{}?clientSecret={}",
        s["websocketUrl"].as_str().unwrap(),
        s["clientSecret"].as_str().unwrap()
    )
}

/// A realtime session's socket, open.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a realtime session's socket with its one-time secret, as a browser does.
pub async fn open_socket(session: &Value) -> Socket {
    let (ws, _) = tokio_tungstenite::connect_async(socket_url(session))
        .await
        .expect("the socket opens");
    ws
}

/// Sends a message on a realtime socket and reads frames up to `done` (or `error`): the
/// text of the deltas, and that last frame.
pub async fn say<S>(ws: &mut S, text: &str) -> (String, Value)
where
    S: futures_util::Stream<Item = Result<WsMessage, tungstenite::Error>>
        + futures_util::Sink<WsMessage>
        + Unpin,
    <S as futures_util::Sink<WsMessage>>::Error: std::fmt::Debug,
{
    let frame = serde_json::json!({"type": "message", "text": text}).to_string();
    ws.send(WsMessage::Text(frame.into())).await.unwrap();
    let mut deltas = String::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let WsMessage::Text(t) = frame else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        match v["type"].as_str().unwrap() {
            "delta" => deltas.push_str(v["text"].as_str().unwrap()),
            _ => return (deltas, v),
        }
    }
}

/// Asserts a 404 `not_found` and returns its body without the request id, so two such
/// answers can be compared byte for byte.
#[track_caller]
pub fn not_found(r: Reply) -> Value {
    let mut v = r.problem(404, "not_found");
    v.as_object_mut().unwrap().remove("requestId");
    v
}

/// Repeats `probe` until it returns true or `within` has passed; returns how long it took.
pub async fn eventually<F, Fut>(within: Duration, mut probe: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if probe().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// An organization with an owner, on `store`: its id, and a key of `scope` for each name.
pub async fn organization(store: &dyn Store, keys: &[(&str, Scope)]) -> (Uuid, Vec<String>) {
    let org = Organization {
        id: Uuid::now_v7(),
        name: "Acme".into(),
        created_at: Timestamp::now(),
    };
    store.create_org(&org).await.unwrap();
    let user = User {
        id: Uuid::now_v7(),
        email: "ops@acme.test".into(),
        created_at: Timestamp::now(),
    };
    store.create_user(&user).await.unwrap();
    let member = Membership {
        org_id: org.id,
        user_id: user.id,
        role: Role::Owner,
        created_at: Timestamp::now(),
    };
    let added = AuditRecord::event(org.id, "member.added", "cli");
    store.add_member(&member, added).await.unwrap();
    let mut values = Vec::new();
    for (name, scope) in keys {
        let (_, key) = lifecycle::create(
            store,
            org.id,
            user.id,
            &spec(name, *scope),
            &Actor::Cli,
            Timestamp::now(),
        )
        .await
        .unwrap();
        values.push(key.reveal().to_owned());
    }
    (org.id, values)
}
