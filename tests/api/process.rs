//! Tests of the `siesta` binary: bootstrap, the CLI, signals, durability, secrecy in logs.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_siesta");

pub(crate) struct Running {
    pub child: Child,
    /// `http://` and the bound address, from the `listening on` line.
    pub base: String,
    /// The `listening on` line and the bootstrap block, if any.
    pub stdout: Vec<String>,
    rest: tokio::task::JoinHandle<Vec<String>>,
    stderr: tokio::task::JoinHandle<String>,
}

/// Where a test's processes run: their working directory and their database.
#[derive(Clone, Copy)]
struct Site<'a> {
    dir: &'a Path,
    db: &'a str,
}

impl<'a> Site<'a> {
    fn of(dir: &'a TempDir, db: &'a TestDatabase) -> Self {
        Site {
            dir: dir.path(),
            db: &db.url,
        }
    }
}

/// Starts `siesta serve` on port 0 and reads stdout up to the end of the bootstrap block
/// (or just the listening line when there is none).
async fn start(site: Site<'_>, log: &str) -> Running {
    start_with(site, log, &[], None).await
}

/// As [`start`], with more flags, and at most `open_files` open files when given.
async fn start_with(site: Site<'_>, log: &str, flags: &[&str], open_files: Option<u32>) -> Running {
    let mut args = vec!["--listen", "127.0.0.1:0", "--database", site.db];
    args.extend_from_slice(flags);
    launch(site.dir, &args, &[("RUST_LOG", log)], open_files).await
}

/// Starts `siesta serve ARGS` in `dir` with these environment variables and no other
/// `SIESTA_*` one, and reads stdout up to the end of the bootstrap block (or just the
/// listening line when there is none).
pub(crate) async fn launch(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    open_files: Option<u32>,
) -> Running {
    let mut command = match open_files {
        // The shell lowers the limit, then becomes the server.
        Some(n) => {
            let mut c = Command::new("sh");
            c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), BIN]);
            c
        }
        None => Command::new(BIN),
    };
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SIESTA_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("siesta starts");
    let mut stderr = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("listening line in time")
        .unwrap();
    let Some(first) = first else {
        let _ = child.wait().await;
        panic!(
            "siesta serve ended before listening: {}",
            stderr.await.unwrap()
        );
    };
    let base = first
        .strip_prefix("listening on ")
        .expect("first line is the listening line")
        .to_owned();
    let mut stdout = vec![first];
    // The bootstrap block, if any, follows at once; it ends with the curl line and a blank.
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_millis(300), lines.next_line()).await
    {
        let done = line.trim_start().starts_with("curl ");
        stdout.push(line);
        if done {
            break;
        }
    }
    let rest = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push(line);
        }
        rest
    });
    Running {
        child,
        base,
        stdout,
        rest,
        stderr,
    }
}

#[tokio::test]
async fn sigterm_as_soon_as_the_listening_line_is_out_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::fresh(dir.path()).await;
    let site = Site::of(&dir, &db);
    // The signal is taken over before the line is printed: never a death by signal.
    for round in 0..10 {
        let r = start(site, "info").await;
        let (status, logs) = terminate(r).await;
        assert!(status.success(), "round {round}: {status:?}\n{logs}");
        assert!(logs.contains("shutting down"), "round {round}: {logs}");
    }
}

pub(crate) fn field(stdout: &[String], label: &str) -> Option<String> {
    stdout
        .iter()
        .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_owned()))
}

async fn cli(site: Site<'_>, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--database", site.db, "--json"])
        .env("RUST_LOG", "trace")
        .current_dir(site.dir)
        .output()
        .await
        .expect("cli runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

async fn cli_json(site: Site<'_>, args: &[&str]) -> Value {
    let (ok, stdout, stderr) = cli(site, args).await;
    assert!(ok, "siesta {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("JSON from {args:?}: {stdout}"))
}

/// Sends SIGTERM and waits for the exit: its status, and everything on stderr.
pub(crate) async fn terminate(r: Running) -> (std::process::ExitStatus, String) {
    let (status, _, stderr) = terminate_all(r).await;
    (status, stderr)
}

/// As [`terminate`], with every line stdout carried.
pub(crate) async fn terminate_all(
    mut r: Running,
) -> (std::process::ExitStatus, Vec<String>, String) {
    let pid = r.child.id().unwrap() as i32;
    unsafe_kill(pid, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(20), r.child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    let mut stdout = r.stdout;
    stdout.extend(r.rest.await.unwrap());
    (status, stdout, r.stderr.await.unwrap())
}

fn unsafe_kill(pid: i32, signal: &str) {
    std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
}

async fn get(base: &str, path: &str, key: &str, org: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header("X-Api-Key", key)
        .header("X-Org-Id", org)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn first_start_prints_a_working_curl_once_and_never_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::fresh(dir.path()).await;
    let site = Site::of(&dir, &db);
    let first = start(site, "info").await;
    let org = field(&first.stdout, "X-Org-Id:").expect("org id printed");
    let key = field(&first.stdout, "X-Api-Key:").expect("key printed");
    let curl = first
        .stdout
        .iter()
        .find(|l| l.trim_start().starts_with("curl "))
        .unwrap();
    assert!(
        curl.contains(&key)
            && curl.contains(&org)
            && curl.contains(&format!("{}/api/v1/Me", first.base))
    );
    let me = get(&first.base, "/api/v1/Me", &key, &org).await;
    assert_eq!(me.status(), 200);
    let (status, logs) = terminate(first).await;
    assert!(status.success());
    assert!(
        !logs.contains(&key),
        "the bootstrap key never reaches the log"
    );

    let second = start(site, "info").await;
    assert_eq!(
        second.stdout.len(),
        1,
        "only the listening line: {:?}",
        second.stdout
    );
    assert_eq!(
        get(&second.base, "/api/v1/Me", &key, &org).await.status(),
        200
    );
    let (status, _) = terminate(second).await;
    assert!(status.success());
}

/// A `POST` whose head the server has read and whose body it is waiting for: sent with
/// `Expect: 100-continue`, it is in flight once the server answers `100 Continue`.
async fn in_flight(addr: &str, key: &str, org: &str, path: &str, body: &Value) -> InFlight {
    let body = body.to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nX-Api-Key: {key}\r\nX-Org-Id: {org}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut byte))
            .await
            .expect("100 Continue in time")
            .unwrap();
        assert_eq!(
            n,
            1,
            "the server closed: {}",
            String::from_utf8_lossy(&interim)
        );
        interim.push(byte[0]);
    }
    assert!(
        interim.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    InFlight { stream, body }
}

struct InFlight {
    stream: tokio::net::TcpStream,
    body: String,
}

impl InFlight {
    /// Sends the body and reads the whole answer.
    async fn finish(mut self) -> String {
        self.stream.write_all(self.body.as_bytes()).await.unwrap();
        let mut answer = String::new();
        self.stream.read_to_string(&mut answer).await.unwrap();
        answer
    }
}

#[tokio::test]
async fn sigterm_stops_accepting_finishes_the_requests_in_flight_writes_every_buffered_record_and_exits_zero(
) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::fresh(dir.path()).await;
    let site = Site::of(&dir, &db);
    let mut r = start(site, "info").await;
    let org = field(&r.stdout, "X-Org-Id:").unwrap();
    let key = field(&r.stdout, "X-Api-Key:").unwrap();
    let addr = r.base.strip_prefix("http://").unwrap().to_owned();

    // Reads, whose records wait in memory for the next batch, up to the signal.
    let reads = 20;
    for _ in 0..reads {
        assert_eq!(get(&r.base, "/api/v1/Me", &key, &org).await.status(), 200);
    }
    // Two requests in flight: a create, and a refused create, whose record is a read's,
    // batched, and made only when it is answered, after the signal.
    let create = in_flight(
        &addr,
        &key,
        &org,
        "/api/v1/Agent",
        &json!({"name": "in-flight"}),
    )
    .await;
    let refused = in_flight(&addr, &key, &org, "/api/v1/Agent", &json!({"name": 7})).await;
    let pid = r.child.id().unwrap() as i32;
    unsafe_kill(pid, "TERM");
    let stopped = eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(&addr).await.is_err()
    })
    .await;
    assert!(stopped.is_some(), "SIGTERM stops accepting connections");

    let answer = create.finish().await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let answer = refused.finish().await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // Nothing is left in flight: the process ends at once, not after the drain timeout.
    let status = tokio::time::timeout(Duration::from_secs(10), r.child.wait())
        .await
        .expect("the server exits once nothing is in flight")
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let store = siesta::store::open(site.db).await.unwrap();
    let org_id = org.parse().unwrap();
    let page = siesta::store::Page {
        offset: 0,
        limit: 100,
    };
    let filter = siesta::store::AuditFilter {
        action: Some("request".into()),
        ..Default::default()
    };
    let log = store.list_audit(org_id, &filter, page).await.unwrap();
    let recorded = |method: &str, path: &str, status: u16| {
        log.items
            .iter()
            .filter(|r| {
                r.method.as_deref() == Some(method)
                    && r.path.as_deref() == Some(path)
                    && r.status == Some(status)
            })
            .count()
    };
    assert_eq!(
        recorded("GET", "/api/v1/Me", 200),
        reads,
        "every read before the signal"
    );
    assert_eq!(
        recorded("POST", "/api/v1/Agent", 400),
        1,
        "the refusal answered after the signal, just before the exit"
    );
    let agents = store.list_agents(org_id, None, page).await.unwrap();
    assert_eq!(agents.items.len(), 1);
    assert_eq!(agents.items[0].name, "in-flight");
}

#[tokio::test]
async fn concurrent_writers_queue_and_every_acknowledged_write_survives_kill_dash_9() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::fresh(dir.path()).await;
    let site = Site::of(&dir, &db);
    let mut r = start(site, "warn").await;
    let org = field(&r.stdout, "X-Org-Id:").unwrap();
    let key = field(&r.stdout, "X-Api-Key:").unwrap();
    let client = reqwest::Client::new();
    let killed = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicUsize::new(0));
    // Each writer writes until the server is gone: every answer it gets is a 201, since
    // concurrent writers queue instead of failing; only the kill may end it.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (client, base, key, org) =
                (client.clone(), r.base.clone(), key.clone(), org.clone());
            let (killed, created) = (Arc::clone(&killed), Arc::clone(&created));
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0.. {
                    let res = client
                        .post(format!("{base}/api/v1/Agent"))
                        .header("X-Api-Key", &key)
                        .header("X-Org-Id", &org)
                        .json(&json!({"name": format!("w{w}-{i}")}))
                        .send()
                        .await;
                    let res = match res {
                        Ok(res) => res,
                        Err(e) => {
                            assert!(killed.load(Ordering::SeqCst), "before the kill: {e}");
                            break;
                        }
                    };
                    let status = res.status();
                    let body = res.text().await;
                    assert_eq!(status, 201, "writer {w}, write {i}: {body:?}");
                    // A 201 whose body the kill cut off was not seen acknowledged.
                    let Ok(body) = body else { break };
                    let agent: Value = serde_json::from_str(&body).unwrap();
                    ids.push(agent["id"].as_str().unwrap().to_owned());
                    created.fetch_add(1, Ordering::SeqCst);
                }
                ids
            })
        })
        .collect();
    let busy = eventually(Duration::from_secs(30), || async {
        created.load(Ordering::SeqCst) >= 40
    })
    .await;
    assert!(busy.is_some(), "the writers got going");
    killed.store(true, Ordering::SeqCst);
    r.child.start_kill().unwrap(); // SIGKILL
    r.child.wait().await.unwrap();
    let mut acknowledged = Vec::new();
    for w in writers {
        let ids = w.await.expect("a writer saw only 201s, then the kill");
        assert!(!ids.is_empty());
        acknowledged.extend(ids);
    }
    let store = siesta::store::open(site.db).await.unwrap();
    let org_id: uuid::Uuid = org.parse().unwrap();
    for id in &acknowledged {
        let id: uuid::Uuid = id.parse().unwrap();
        store
            .get_agent(org_id, id)
            .await
            .expect("an acknowledged agent is in the database");
    }
}

/// Asks `GET /api/v1/Me` with this key until it is refused, for at most a second, and
/// returns the refusal's status and problem code.
async fn refused_within_a_second(base: &str, key: &str, org: &str) -> (u16, String) {
    let refusal = std::cell::RefCell::new(None);
    let lag = eventually(Duration::from_secs(1), || {
        let refusal = &refusal;
        async move {
            let res = get(base, "/api/v1/Me", key, org).await;
            if res.status() == 200 {
                return false;
            }
            let status = res.status().as_u16();
            let problem: Value = res.json().await.unwrap();
            *refusal.borrow_mut() =
                Some((status, problem["code"].as_str().unwrap_or("").to_owned()));
            true
        }
    })
    .await;
    assert!(
        lag.is_some(),
        "the change reaches the server within a second"
    );
    refusal.into_inner().unwrap()
}

#[tokio::test]
async fn the_cli_administers_a_running_server_within_a_second() {
    let mut app = spawn_app().await;
    let site = Site::of(&app.dir, &app.database);
    let org = cli_json(site, &["org", "create", "--name", "Acme"]).await;
    let org_id = org["id"].as_str().unwrap().to_owned();
    let orgs = cli_json(site, &["org", "list"]).await;
    assert!(orgs
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["id"] == org["id"]));
    let user = cli_json(site, &["user", "create", "--email", "Dev@Acme.example"]).await;
    assert_eq!(user["email"], "dev@acme.example");
    cli_json(
        site,
        &[
            "member",
            "add",
            "--org",
            &org_id,
            "--user",
            "dev@acme.example",
            "--role",
            "admin",
        ],
    )
    .await;

    let (ok, _, stderr) = cli(
        site,
        &[
            "keys",
            "create",
            "--org",
            &org_id,
            "--user",
            "dev@acme.example",
            "--name",
            "my key",
        ],
    )
    .await;
    assert!(ok);
    assert!(
        stderr.contains("warning"),
        "names off the pattern get a warning: {stderr}"
    );
    let created = cli_json(
        site,
        &[
            "keys",
            "create",
            "--org",
            &org_id,
            "--user",
            "dev@acme.example",
            "--name",
            "crm-prod-sync",
            "--scope",
            "write",
            "--environment",
            "test",
            "--expires-in",
            "30d",
            "--rate-limit",
            "100/min",
        ],
    )
    .await;
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sai_test_"));
    assert_eq!(created["scope"], "write");
    assert_eq!(created["rateLimit"], 100);
    assert!(created["expiresAt"].is_string());
    assert_eq!(
        created["hint"].as_str().unwrap().chars().count(),
        "sai_test_".len() + 4 + 1 + 4
    );
    let me = get(&format!("http://{}", app.addr), "/api/v1/Me", &key, &org_id).await;
    assert_eq!(me.status(), 200);

    let listed = cli_json(site, &["keys", "list", "--org", &org_id, "--search", "CRM"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(listed[0].get("key").is_none(), "listing never shows values");
    let unused = cli_json(
        site,
        &["keys", "list", "--org", &org_id, "--unused-for", "30d"],
    )
    .await;
    assert!(unused.as_array().unwrap().is_empty());

    // Rotation from the CLI: the successor works, the old key lapses at once with --grace 0.
    let rotated = cli_json(
        site,
        &[
            "keys",
            "rotate",
            created["id"].as_str().unwrap(),
            "--grace",
            "0s",
        ],
    )
    .await;
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    let base = format!("http://{}", app.addr);
    assert_eq!(
        refused_within_a_second(&base, &key, &org_id).await,
        (401, "expired_api_key".into()),
        "a rotated key past its grace period"
    );
    assert_eq!(
        get(&base, "/api/v1/Me", &new_key, &org_id).await.status(),
        200
    );

    // Deletion from another process reaches the running server within a second.
    cli_json(site, &["keys", "delete", rotated["id"].as_str().unwrap()]).await;
    assert_eq!(
        refused_within_a_second(&base, &new_key, &org_id).await,
        (401, "invalid_api_key".into()),
        "a deleted key"
    );

    // Member removal from the CLI, likewise.
    let third = cli_json(
        site,
        &[
            "keys",
            "create",
            "--org",
            &org_id,
            "--user",
            "dev@acme.example",
            "--name",
            "crm-prod-other",
        ],
    )
    .await;
    let third = third["key"].as_str().unwrap().to_owned();
    assert_eq!(
        get(&base, "/api/v1/Me", &third, &org_id).await.status(),
        200
    );
    cli_json(
        site,
        &[
            "member",
            "remove",
            "--org",
            &org_id,
            "--user",
            "dev@acme.example",
        ],
    )
    .await;
    assert_eq!(
        refused_within_a_second(&base, &third, &org_id).await,
        (403, "key_owner_not_member".into()),
        "a key whose owner left the organization"
    );

    // Errors go to stderr with a non-zero exit.
    let (ok, stdout, stderr) =
        cli(site, &["keys", "delete", &uuid::Uuid::now_v7().to_string()]).await;
    assert!(!ok && stdout.is_empty() && stderr.contains("no key"));
    let (ok, _, stderr) = cli(
        site,
        &[
            "keys",
            "create",
            "--org",
            &org_id,
            "--user",
            "x",
            "--name",
            "a-b-c",
            "--rate-limit",
            "0/min",
        ],
    )
    .await;
    assert!(!ok && stderr.contains("rate limit"), "{stderr}");
    let (ok, _, stderr) = cli(site, &["keys", "rotate", "not-a-uuid"]).await;
    assert!(!ok);
    assert!(
        stderr.contains("KEY_ID takes an id (a UUID), not 'not-a-uuid'"),
        "{stderr}"
    );
    app.stop().await;
}

/// A key of `owner`'s stored as if made `age` ago, with the key itself.
async fn key_made_ago(
    store: &dyn siesta::store::Store,
    org_id: uuid::Uuid,
    owner: uuid::Uuid,
    name: &str,
    age: Duration,
) -> (uuid::Uuid, String) {
    use siesta::key::{ApiKey, Environment, Scope};
    let key = ApiKey::generate(Environment::Live);
    let new = siesta::store::NewKey {
        id: uuid::Uuid::now_v7(),
        name: name.into(),
        environment: Environment::Live,
        scope: Scope::Read,
        digest: key.digest(),
        hint: key.hint(),
        created_by: owner,
        created_at: siesta::clock::Timestamp::now().minus(age),
        expires_at: None,
        rate_limit: None,
    };
    let audit = siesta::store::AuditRecord::event(org_id, "api_key.created", "cli");
    let record = store.create_key(org_id, &new, audit).await.unwrap();
    (record.id, key.reveal().to_owned())
}

#[tokio::test]
async fn keys_list_unused_for_names_exactly_the_keys_not_used_for_that_long() {
    let mut app = spawn_app().await;
    let site = Site::of(&app.dir, &app.database);
    let org = app.create_org("Acme").await;
    let owner = app.create_user("owner@acme.example").await;
    app.add_member(org, owner, siesta::store::Role::Owner).await;
    let two_days = Duration::from_secs(2 * 86_400);
    let (idle, _) = key_made_ago(&*app.store, org, owner, "crm-prod-retired", two_days).await;
    let (busy, busy_key) = key_made_ago(&*app.store, org, owner, "crm-prod-sync", two_days).await;
    let org_id = org.to_string();
    // Made today and never used: not unused for a day yet.
    let fresh = cli_json(
        site,
        &[
            "keys",
            "create",
            "--org",
            &org_id,
            "--user",
            "owner@acme.example",
            "--name",
            "crm-prod-new",
        ],
    )
    .await;

    // The old key that is used today: its use is written within a second, in a batch.
    let base = format!("http://{}", app.addr);
    assert_eq!(
        get(&base, "/api/v1/Me", &busy_key, &org_id).await.status(),
        200
    );
    let written = eventually(Duration::from_secs(10), || async {
        let keys = cli_json(site, &["keys", "list", "--org", &org_id]).await;
        keys.as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == busy.to_string() && k["lastUsedAt"].is_string())
    })
    .await;
    assert!(written.is_some(), "the use of the key reaches the database");

    let unused = cli_json(
        site,
        &["keys", "list", "--org", &org_id, "--unused-for", "1d"],
    )
    .await;
    let ids: Vec<&str> = unused
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [idle.to_string()],
        "only the key nobody used for a day"
    );
    let all = cli_json(site, &["keys", "list", "--org", &org_id]).await;
    assert_eq!(all.as_array().unwrap().len(), 3);
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["id"] == fresh["id"]));
    // Nothing has been unused for longer than it has existed.
    let unused = cli_json(
        site,
        &["keys", "list", "--org", &org_id, "--unused-for", "3d"],
    )
    .await;
    assert_eq!(unused, json!([]));
    // Zero as people type it: every key, since none is being used at this instant.
    let unused = cli_json(
        site,
        &["keys", "list", "--org", &org_id, "--unused-for", "0s"],
    )
    .await;
    assert_eq!(unused.as_array().unwrap().len(), 3, "{unused}");
    app.stop().await;
}

#[tokio::test]
async fn at_trace_level_no_key_reaches_the_logs_or_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::fresh(dir.path()).await;
    let site = Site::of(&dir, &db);
    let r = start(site, "trace").await;
    let org = field(&r.stdout, "X-Org-Id:").unwrap();
    let boot = field(&r.stdout, "X-Api-Key:").unwrap();
    let (ok, out, cli_logs) = cli(
        site,
        &[
            "keys",
            "create",
            "--org",
            &org,
            "--user",
            "admin@localhost",
            "--name",
            "crm-prod-sync",
            "--scope",
            "admin",
        ],
    )
    .await;
    assert!(ok);
    let issued = serde_json::from_str::<Value>(&out).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, out, rotate_logs) = cli(
        site,
        &[
            "keys",
            "rotate",
            serde_json::from_str::<Value>(&out).unwrap()["id"]
                .as_str()
                .unwrap(),
        ],
    )
    .await;
    assert!(ok);
    let rotated = serde_json::from_str::<Value>(&out).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();

    // A key pasted where the command line wants an id, an org or a user is not echoed.
    let mut mistakes = String::new();
    for args in [
        vec!["keys", "rotate", &issued],
        vec!["keys", "delete", &issued],
        vec!["keys", "list", "--org", &issued],
        vec!["member", "add", "--org", &org, "--user", &issued],
    ] {
        let (ok, out, logs) = cli(site, &args).await;
        assert!(!ok, "{args:?}");
        assert!(logs.contains("<an API key, not shown>"), "{logs}");
        mistakes.push_str(&out);
        mistakes.push_str(&logs);
    }

    let client = reqwest::Client::new();
    let code = |res: reqwest::Response| async move {
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        (status, body["code"].as_str().unwrap().to_owned())
    };
    for key in [&boot, &issued, &rotated] {
        assert_eq!(get(&r.base, "/api/v1/Me", key, &org).await.status(), 200);
        for bad in [
            format!("/api/v1/Agent?api_key={key}"),
            format!("/api/v1/Agent?apiKey={key}"),
            format!("/api/v1/Agent?X-API-KEY={key}"),
            format!("/api/v1/Agent?key={key}"),
            format!("/api/v1/Agent/{key}"),
            format!("/api/v1/Agent/{}", key.replace('_', "%5F")),
        ] {
            let res = client.get(format!("{}{bad}", r.base)).send().await.unwrap();
            assert_eq!(code(res).await, (400, "credentials_in_url".into()));
        }
        let res = client
            .get(format!("{}/api/v1/Me", r.base))
            .header("X-Api-Key", key.as_str())
            .header("X-Org-Id", "nope")
            .send()
            .await
            .unwrap();
        assert_eq!(code(res).await, (403, "invalid_org_id".into()));
    }
    let (status, logs) = terminate(r).await;
    assert!(status.success());
    assert!(logs.len() > 1000, "trace logging was on");
    // SQLite: a clean shutdown folds the write-ahead log into the database file; any left is
    // read too. PostgreSQL: every row of every table, as text.
    let files = db.contents(dir.path()).await;
    assert!(db.is_postgres() || dir.path().join("siesta.db").is_file());
    assert!(!files.is_empty());
    for key in [&boot, &issued, &rotated] {
        let body = &key[9..];
        assert!(!logs.contains(body), "a key reached the server log");
        assert!(
            !cli_logs.contains(body) && !rotate_logs.contains(body) && !mistakes.contains(body),
            "a key reached the CLI log"
        );
        for f in &files {
            assert!(
                !f.windows(body.len()).any(|w| w == body.as_bytes()),
                "a key reached the database files"
            );
        }
    }
}

#[tokio::test]
async fn with_256_open_files_300_silent_sockets_neither_hang_the_api_nor_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::fresh(dir.path()).await;
    let r = start_with(
        Site::of(&dir, &db),
        "info",
        &["--header-read-timeout", "2s"],
        Some(256),
    )
    .await;
    let key = field(&r.stdout, "X-Api-Key:").unwrap();
    let org = field(&r.stdout, "X-Org-Id:").unwrap();
    let addr = r.base.trim_start_matches("http://").to_owned();
    let mut silent = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = tokio::net::TcpStream::connect(&addr).await {
            silent.push(s);
        }
    }
    // Past the cap (90 % of 256), a request is answered at once, not left to time out.
    let started = std::time::Instant::now();
    let me = reqwest::Client::new()
        .get(format!("{}/api/v1/Me", r.base))
        .header("X-Api-Key", &key)
        .header("X-Org-Id", &org)
        .send();
    let answer = tokio::time::timeout(Duration::from_secs(5), me)
        .await
        .expect("answered, not hung");
    match answer {
        Ok(answer) => assert!(
            [200, 503].contains(&answer.status().as_u16()),
            "{}",
            answer.status()
        ),
        // A connection refused while the server is out of descriptors is also an answer.
        Err(e) => assert!(e.is_connect() || e.is_request(), "{e}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    // Once the header-read timeout has closed the silent sockets, everybody is served.
    tokio::time::sleep(Duration::from_secs(3)).await;
    get(&r.base, "/api/v1/Me", &key, &org)
        .await
        .error_for_status()
        .expect("served again");
    drop(silent);
    let (status, _) = terminate(r).await;
    assert!(status.success(), "the server never died of it");
}

#[tokio::test]
async fn serve_takes_the_hardening_flags_and_hands_out_the_public_url() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::fresh(dir.path()).await;
    let flags = [
        "--public-url",
        "https://api.example.com/",
        "--max-connections",
        "50",
        "--header-read-timeout",
        "5s",
        "--stream-timeout",
        "1m",
        "--history-chars",
        "1000",
        "--max-conversation-messages",
        "4",
    ];
    let r = start_with(Site::of(&dir, &db), "info", &flags, None).await;
    let key = field(&r.stdout, "X-Api-Key:").unwrap();
    let org = field(&r.stdout, "X-Org-Id:").unwrap();
    // The first-start curl, like every absolute URL, starts with the public URL.
    let curl = r
        .stdout
        .iter()
        .find(|l| l.trim_start().starts_with("curl "))
        .unwrap();
    assert!(
        curl.ends_with(" https://api.example.com/api/v1/Me"),
        "{curl}"
    );
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        http.post(format!("{}{path}", r.base))
            .header("X-Api-Key", &key)
            .header("X-Org-Id", &org)
            .json(&body)
            .send()
    };
    let agent: Value = post("/api/v1/Agent".into(), json!({"name": "bot"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let agent = agent["id"].as_str().unwrap().to_owned();
    let session: Value = post(format!("/api/v1/Agent/{agent}/realtime-session"), json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = session["websocketUrl"].as_str().unwrap();
    assert!(url.starts_with("wss://api.example.com/realtime/"), "{url}");
    // A conversation of at most 4 messages: two exchanges, then 409.
    let ask = format!("/api/v1/Agent/{agent}/response");
    let first: Value = post(ask.clone(), json!({"message": "one"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let more = json!({"message": "again", "conversationId": first["conversationId"]});
    assert_eq!(post(ask.clone(), more.clone()).await.unwrap().status(), 200);
    let full = post(ask, more).await.unwrap();
    assert_eq!(full.status(), 409);
    let problem: Value = full.json().await.unwrap();
    assert_eq!(problem["code"], "conflict");
    let (status, _) = terminate(r).await;
    assert!(status.success());

    // A public URL with a path is refused at start, with the flag named.
    let (ok, _, stderr) = cli(
        Site::of(&dir, &db),
        &["serve", "--public-url", "https://api.example.com/siesta"],
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("--public-url"), "{stderr}");
}

#[tokio::test]
async fn two_replicas_starting_at_once_on_an_empty_postgresql_database_print_one_key_between_them()
{
    let Some(server) = postgres_url_or_skip() else {
        return;
    };
    // The start is a race: run it a few times, each on a new database.
    for _ in 0..4 {
        let db = TestDatabase::fresh_postgres(&server).await;
        let dir = tempfile::tempdir().unwrap();
        two_replicas_start_at_once(Site::of(&dir, &db)).await;
    }
}

async fn two_replicas_start_at_once(site: Site<'_>) {
    let (a, b) = tokio::join!(start(site, "info"), start(site, "info"));
    let announced: Vec<&Running> = [&a, &b]
        .into_iter()
        .filter(|r| r.stdout.len() > 1)
        .collect();
    assert_eq!(
        announced.len(),
        1,
        "exactly one replica prints the bootstrap block: {:?} {:?}",
        a.stdout,
        b.stdout
    );
    let key = field(&announced[0].stdout, "X-Api-Key:").unwrap();
    let org = field(&announced[0].stdout, "X-Org-Id:").unwrap();

    let store = siesta::store::open(site.db).await.unwrap();
    let orgs = store.list_orgs().await.unwrap();
    assert_eq!(orgs.len(), 1, "one organization");
    assert_eq!(orgs[0].id.to_string(), org);
    let keys = store
        .list_keys(orgs[0].id, &siesta::store::KeyFilter::default())
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "one key");
    // The key one replica printed works on both.
    for r in [&a, &b] {
        assert_eq!(get(&r.base, "/api/v1/Me", &key, &org).await.status(), 200);
    }
    for r in [a, b] {
        let (status, logs) = terminate(r).await;
        assert!(status.success());
        assert!(!logs.contains(&key), "the key never reaches the log");
    }
}

#[tokio::test]
async fn at_trace_level_a_realtime_client_secret_never_reaches_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::fresh(dir.path()).await;
    let site = Site::of(&dir, &db);
    let r = start(site, "trace").await;
    let org = field(&r.stdout, "X-Org-Id:").unwrap();
    let key = field(&r.stdout, "X-Api-Key:").unwrap();
    let client = reqwest::Client::new();
    let post = |path: &str| {
        client
            .post(format!("{}{path}", r.base))
            .header("X-Api-Key", &key)
            .header("X-Org-Id", &org)
    };
    let agent: Value = post("/api/v1/Agent")
        .json(&json!({"name": "voice-bot"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = format!(
        "/api/v1/Agent/{}/realtime-session",
        agent["id"].as_str().unwrap()
    );
    let session: Value = post(&path).send().await.unwrap().json().await.unwrap();
    let secret = session["clientSecret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("rts_"), "{session}");
    let mut ws = open_socket(&session).await;
    let (_, done) = say(&mut ws, "Hello").await;
    assert_eq!(done["type"], "done", "{done}");
    drop(ws);
    // Used once, refused the second time: that refusal is logged too.
    let again = tokio_tungstenite::connect_async(socket_url(&session)).await;
    assert!(again.is_err());
    let (status, logs) = terminate(r).await;
    assert!(status.success());
    assert!(
        logs.contains("/realtime/"),
        "the socket's requests were logged"
    );
    assert!(
        !logs.contains(&secret["rts_".len()..]),
        "a realtime client secret reached the log"
    );
    let files = db.contents(dir.path()).await;
    assert!(files
        .iter()
        .all(|f| !f.windows(secret.len()).any(|w| w == secret.as_bytes())));
}
