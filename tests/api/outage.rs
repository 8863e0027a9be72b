//! PostgreSQL failing under a running server, and coming back: the test puts a TCP forwarder
//! of its own between the server and the database, and takes it down or makes it silent.
//!
//! Needs `SIESTA_TEST_POSTGRES_URL`; without it these tests skip locally and fail under CI.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use siesta::key::Scope;
use siesta::store::Store;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use uuid::Uuid;

use crate::helpers::*;

/// What the forwarder does with connections to the database server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Forwards them.
    Up,
    /// Closes every forwarded connection, and every new one as soon as it is accepted, as
    /// the host of a database that is down resets them.
    Down,
    /// Closes every forwarded connection, and holds every new one open without a byte of
    /// answer, as a database behind a silent network does.
    Silent,
}

/// A TCP forwarder from a port of its own to the database server, which the test can take
/// down, make silent, and bring back.
struct Forwarder {
    addr: SocketAddr,
    link: watch::Sender<Link>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn start(target: (String, u16)) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (link, _) = watch::channel(Link::Up);
        let watching = link.clone();
        let accepting = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let mut link = watching.subscribe();
                let now = *link.borrow_and_update();
                let target = target.clone();
                tokio::spawn(async move {
                    match now {
                        Link::Down => {}
                        // Held until the link changes, or the forwarder is dropped.
                        Link::Silent => drop(link.changed().await),
                        Link::Up => {
                            let Ok(mut server) = TcpStream::connect(target).await else {
                                return;
                            };
                            tokio::select! {
                                biased;
                                _ = link.wait_for(|l| *l != Link::Up) => {}
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            }
                        }
                    }
                    // Both ends are closed here.
                });
            }
        });
        Forwarder {
            addr,
            link,
            accepting,
        }
    }

    fn set(&self, link: Link) {
        self.link.send_replace(link);
    }

    /// `url` (a database on the forwarded server) reached through this forwarder instead.
    fn route(&self, url: &str) -> String {
        let mut url = reqwest::Url::parse(url).expect("a database URL");
        url.set_host(Some(&self.addr.ip().to_string())).unwrap();
        url.set_port(Some(self.addr.port())).unwrap();
        url.to_string()
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.set(Link::Down);
        self.accepting.abort();
    }
}

/// The host and port a `postgres://` URL names.
fn host_and_port(url: &str) -> (String, u16) {
    let url = reqwest::Url::parse(url).expect("SIESTA_TEST_POSTGRES_URL is a URL");
    let host = url
        .host_str()
        .expect("a PostgreSQL URL with a host")
        .to_owned();
    (host, url.port().unwrap_or(5432))
}

/// A server of this process on `store`, served until the returned task is dropped.
struct Served {
    base: String,
    client: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Served {
    async fn start(store: Arc<dyn Store>, dir: &std::path::Path) -> Served {
        let settings = siesta::Settings {
            data_dir: dir.join("files"),
            // A 503 is the server's failure, not the client's: were it counted, the few
            // answered during an outage would lock the address out of authenticating.
            auth_failure_limit: 2,
            ..siesta::Settings::default()
        };
        let server = siesta::Server::bind("127.0.0.1:0".parse().unwrap(), settings, store)
            .await
            .expect("binds port 0");
        let base = format!("http://{}", server.local_addr().unwrap());
        Served {
            base,
            // Longer than the server's own request timeout (30 s), so that a request that
            // waits too long on the database fails the test by its duration, not here.
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(45))
                .build()
                .unwrap(),
            task: tokio::spawn(server.run(std::future::pending())),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        key: &str,
        org: Uuid,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("X-Api-Key", key)
            .header("X-Org-Id", org.to_string());
        if let Some(b) = body {
            req = req.json(&b);
        }
        Reply::from(req.send().await.expect("the server answers")).await
    }

    async fn me(&self, key: &str, org: Uuid) -> Reply {
        self.call(Method::GET, "/api/v1/Me", key, org, None).await
    }

    async fn new_agent(&self, key: &str, org: Uuid) -> Reply {
        let body = json!({"name": "Triage", "instructions": "Be brief."});
        self.call(Method::POST, "/api/v1/Agent", key, org, Some(body))
            .await
    }

    async fn probe(&self, path: &str) -> Reply {
        let r = self.client.get(format!("{}{path}", self.base)).send();
        Reply::from(r.await.expect("the server answers")).await
    }
}

/// A reply, and how long it took.
async fn timed(reply: impl std::future::Future<Output = Reply>) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = reply.await;
    (reply, started.elapsed())
}

/// Asserts the 503 a request that needs the database gets while it is gone: the problem
/// document, whole, with nothing internal in it.
#[track_caller]
fn assert_unavailable(reply: &Reply) {
    let mut body = reply.problem(503, "service_unavailable");
    body.as_object_mut().unwrap().remove("requestId");
    assert_eq!(
        body,
        json!({
            "type": "/docs/errors#service_unavailable",
            "title": "Service unavailable",
            "status": 503,
            "detail": "The server could not complete the request right now. Try again shortly, \
                       and quote the requestId if it persists.",
            "code": "service_unavailable",
        })
    );
}

/// A server on a fresh database reached through a forwarder, with one key verified (and so
/// cached) and another never used, and `/readyz` answering that all is well.
struct Outage {
    forwarder: Forwarder,
    app: Served,
    org: Uuid,
    /// A write key that has been verified.
    used: String,
    /// A read key that has not.
    unused: String,
    /// An admin key that has not either, to read the audit log with.
    auditor: String,
    _dir: tempfile::TempDir,
    /// Last: dropped after the server, whose connections its drop ends.
    _database: TestDatabase,
}

impl Outage {
    async fn prepare(server: &str) -> Outage {
        let database = TestDatabase::fresh_postgres(server).await;
        let forwarder = Forwarder::start(host_and_port(server)).await;
        let store = siesta::store::open(&forwarder.route(&database.url))
            .await
            .expect("the database opens through the forwarder");
        let (org, mut keys) = organization(
            &*store,
            &[
                ("crm-prod-sync", Scope::Write),
                ("erp-prod-sync", Scope::Read),
                ("ops-prod-audit", Scope::Admin),
            ],
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let app = Served::start(store, dir.path()).await;
        let (auditor, unused, used) = (
            keys.pop().unwrap(),
            keys.pop().unwrap(),
            keys.pop().unwrap(),
        );
        app.me(&used, org).await.ok(200);
        app.new_agent(&used, org).await.ok(201);
        assert_eq!(
            app.probe("/readyz").await.ok(200),
            json!({"status": "ready", "database": "ok"})
        );
        Outage {
            forwarder,
            app,
            org,
            used,
            unused,
            auditor,
            _dir: dir,
            _database: database,
        }
    }
}

#[tokio::test]
async fn with_postgres_gone_verified_keys_still_answer_the_rest_is_503_and_it_recovers_by_itself() {
    let Some(server) = postgres_url_or_skip() else {
        return;
    };
    let outage = Outage::prepare(&server).await;
    let (forwarder, app, org) = (&outage.forwarder, &outage.app, outage.org);
    let (used, unused) = (outage.used.as_str(), outage.unused.as_str());

    forwarder.set(Link::Down);
    let me = app.me(used, org).await;
    assert_eq!(
        me.ok(200)["name"],
        "crm-prod-sync",
        "a verified key still authenticates"
    );
    for _ in 0..3 {
        assert_unavailable(&app.me(unused, org).await);
    }
    let refused_write = app.new_agent(used, org).await;
    assert_unavailable(&refused_write);
    let ready = app.probe("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(
        ready.json(),
        json!({"status": "unavailable", "database": "unreachable"})
    );
    let health = app.probe("/healthz").await;
    assert_eq!(health.status, 200, "the process is up: {}", health.text());
    let me_again = app.me(used, org).await;
    me_again.ok(200);
    // The database stays away longer than the few quick attempts the server makes to write
    // its records of requests (about 350 ms), and the verified key keeps answering.
    let away = Instant::now();
    while away.elapsed() < Duration::from_millis(1500) {
        app.me(used, org).await.ok(200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Back, with no restart: the pool reconnects by itself.
    forwarder.set(Link::Up);
    let recovered = eventually(Duration::from_secs(15), || async {
        app.probe("/readyz").await.status == 200
    })
    .await;
    assert!(recovered.is_some(), "/readyz is 200 again");
    assert_eq!(
        app.probe("/readyz").await.ok(200),
        json!({"status": "ready", "database": "ok"})
    );
    let answered = eventually(Duration::from_secs(15), || async {
        app.me(unused, org).await.status == 200
    })
    .await;
    assert!(
        answered.is_some(),
        "the key never used is verified once the database is back"
    );
    app.new_agent(used, org).await.ok(201);
    let agents = app
        .call(Method::GET, "/api/v1/Agent", unused, org, None)
        .await
        .ok(200);
    assert_eq!(
        agents["total"], 2,
        "both acknowledged writes are there: {agents}"
    );
    // The records of the requests made meanwhile waited in memory, and are written now.
    let meanwhile: Vec<&str> = [&me, &refused_write, &me_again]
        .iter()
        .map(|r| r.header("x-request-id").unwrap())
        .collect();
    let recorded = eventually(Duration::from_secs(15), || async {
        let log = app
            .call(
                Method::GET,
                "/api/v1/AuditLog?Action=request&Limit=100",
                &outage.auditor,
                org,
                None,
            )
            .await
            .ok(200);
        let ids: Vec<&str> = log["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["requestId"].as_str())
            .collect();
        meanwhile.iter().all(|id| ids.contains(id))
    })
    .await;
    assert!(
        recorded.is_some(),
        "the requests made while the database was gone are in the audit log"
    );
}

#[tokio::test]
async fn with_postgres_silent_a_request_that_needs_it_gets_503_once_the_connection_wait_is_over() {
    let Some(server) = postgres_url_or_skip() else {
        return;
    };
    let outage = Outage::prepare(&server).await;
    let (app, org) = (&outage.app, outage.org);
    let (used, unused) = (outage.used.as_str(), outage.unused.as_str());

    outage.forwarder.set(Link::Silent);
    // A verified key does not wait for the database at all.
    let started = Instant::now();
    app.me(used, org).await.ok(200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a verified key answered in {:?}",
        started.elapsed()
    );
    // A connection waits at most 5 s; then the request is a 503, not a hang.
    let ((me, me_took), (created, created_took), (ready, ready_took)) = tokio::join!(
        timed(app.me(unused, org)),
        timed(app.new_agent(used, org)),
        timed(app.probe("/readyz")),
    );
    eprintln!(
        "with the database silent: an unverified key answered in {me_took:?}, a write in \
         {created_took:?}, /readyz in {ready_took:?}"
    );
    assert_unavailable(&me);
    assert_unavailable(&created);
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(
        ready.json(),
        json!({"status": "unavailable", "database": "unreachable"})
    );
    for (what, took) in [
        ("an unverified key", me_took),
        ("a write", created_took),
        ("/readyz", ready_took),
    ] {
        assert!(
            took < Duration::from_secs(8),
            "{what} was answered after {took:?}, past the 5 s connection wait"
        );
    }
}
