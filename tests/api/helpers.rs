use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use siesta::clock::Timestamp;
use siesta::key::{Environment, Scope};
use siesta::lifecycle::{self, Actor, KeySpec};
use siesta::store::{AuditRecord, Membership, Organization, Role, SqliteStore, Store, User};
use siesta::{Server, Settings};
use tempfile::TempDir;
use tokio::sync::oneshot;
use uuid::Uuid;

pub struct TestApp {
    pub addr: SocketAddr,
    pub store: Arc<dyn Store>,
    pub client: reqwest::Client,
    pub dir: TempDir,
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
    let url = format!("sqlite://{}", dir.path().join("siesta.db").display());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.expect("database opens"));
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
        dir,
        shutdown: Some(tx),
        server: Some(handle),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server the way SIGTERM does: in-flight requests finish, records are written.
    pub async fn stop(mut self) {
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
        let (record, key) = lifecycle::create(&*self.store, org_id, user_id, &spec, &Actor::Cli)
            .await
            .unwrap();
        (record.id, key.reveal().to_owned())
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
    /// Repeats `GET /api/v1/Me` until it answers `status`; how long that took, if it did.
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
        assert_eq!(
            body["requestId"].as_str(),
            self.header("x-request-id"),
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
