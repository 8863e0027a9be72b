//! `siesta serve` configured by its `SIESTA_*` environment variables instead of its flags,
//! over the real binary: each variable is seen to take effect.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use futures_util::{FutureExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use crate::helpers::*;
use crate::model_server::{model_server, Seen};
use crate::process::{field, launch, terminate_all, Running};

/// A server started by its variables, as a check sees it.
struct Ctx {
    base: String,
    key: String,
    org: String,
    stdout: Vec<String>,
    dir: PathBuf,
    db: String,
    seen: Seen,
    http: reqwest::Client,
}

impl Ctx {
    /// The server `r` after its first start, in `dir` on `db`.
    fn of(r: &Running, dir: &Path, db: &TestDatabase, seen: &Seen) -> Ctx {
        Ctx {
            base: r.base.clone(),
            key: field(&r.stdout, "X-Api-Key:").expect("a first start"),
            org: field(&r.stdout, "X-Org-Id:").expect("a first start"),
            stdout: r.stdout.clone(),
            dir: dir.to_owned(),
            db: db.url.clone(),
            seen: seen.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("X-Api-Key", &self.key)
            .header("X-Org-Id", &self.org)
    }

    async fn agent(&self) -> String {
        self.agent_asking(None).await
    }

    /// An agent that asks this model, or the server's default one.
    async fn agent_asking(&self, model: Option<&str>) -> String {
        let res = self
            .request(reqwest::Method::POST, "/api/v1/Agent")
            .json(&json!({"name": "env-bot", "model": model}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let agent: Value = res.json().await.unwrap();
        agent["id"].as_str().unwrap().to_owned()
    }

    /// Asks the agent; the status, and the body as JSON (`Null` if it is none).
    async fn ask(&self, agent: &str, body: Value) -> (u16, Value) {
        let res = self
            .request(
                reqwest::Method::POST,
                &format!("/api/v1/Agent/{agent}/response"),
            )
            .json(&body)
            .send()
            .await
            .expect("answered in time");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn upload(&self, bytes: &[u8]) -> (u16, Value) {
        const BOUNDARY: &str = "siesta-env-boundary";
        let mut body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\n\
             Content-Type: text/plain\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let res = self
            .request(reqwest::Method::POST, "/api/v1/File")
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// A request with a key nobody issued, from `client` as `X-Forwarded-For` names it.
    async fn bad_key_from(&self, client: Option<&str>) -> (u16, String) {
        let mut req = self
            .http
            .get(format!("{}/api/v1/Me", self.base))
            .header("X-Api-Key", "sai_live_thisisnotakey")
            .header("X-Org-Id", &self.org);
        if let Some(client) = client {
            req = req.header("X-Forwarded-For", client);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let problem: Value = res.json().await.unwrap();
        (status, problem["code"].as_str().unwrap_or("").to_owned())
    }
}

type Check = for<'a> fn(&'a Ctx) -> LocalBoxFuture<'a, ()>;

/// One row: the variables set (`{dir}`, `{db}`, `{model}` and `{redis}` are filled in), the
/// variable under test first, and what shows that it took effect.
struct Case {
    vars: &'static [(&'static str, &'static str)],
    check: Check,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            vars: &[("SIESTA_LISTEN", "127.0.0.1:0")],
            check: |c| {
                async move {
                    // Port 0: a free port, not the default 8080.
                    assert!(!c.base.ends_with(":8080"), "{}", c.base);
                    let res = c.http.get(format!("{}/healthz", c.base)).send().await;
                    assert_eq!(res.unwrap().status(), 200);
                }
                .boxed_local()
            },
        },
        Case {
            vars: &[("SIESTA_DATABASE_URL", "{db}")],
            check: |c| {
                async move {
                    // The first start wrote its organization into that database, not into
                    // the default file in the working directory.
                    let store = siesta::store::open(&c.db).await.unwrap();
                    store
                        .get_org(c.org.parse().unwrap())
                        .await
                        .expect("the bootstrap organization is in the named database");
                }
                .boxed_local()
            },
        },
        Case {
            vars: &[("SIESTA_RATE_LIMIT", "7")],
            check: |c| {
                async move {
                    let res = c.request(reqwest::Method::GET, "/api/v1/Me").send().await;
                    let res = res.unwrap();
                    assert_eq!(res.status(), 200);
                    let policy = res.headers()["ratelimit-policy"].to_str().unwrap();
                    assert_eq!(policy, "\"api-key\";q=7;w=60");
                }
                .boxed_local()
            },
        },
        Case {
            vars: &[("SIESTA_AUTH_FAILURE_LIMIT", "2")],
            check: |c| {
                async move {
                    let mut answers = Vec::new();
                    for _ in 0..3 {
                        answers.push(c.bad_key_from(None).await);
                    }
                    assert_eq!(
                        answers,
                        [
                            (401, "invalid_api_key".into()),
                            (401, "invalid_api_key".into()),
                            (429, "rate_limited".into()),
                        ]
                    );
                }
                .boxed_local()
            },
        },
        Case {
            vars: &[
                ("SIESTA_TRUSTED_PROXIES", "127.0.0.1"),
                ("SIESTA_AUTH_FAILURE_LIMIT", "1"),
            ],
            check: |c| {
                async move {
                    // Behind a trusted proxy, each forwarded client has its own count.
                    let one = Some("203.0.113.1");
                    assert_eq!(c.bad_key_from(one).await.0, 401);
                    assert_eq!(c.bad_key_from(one).await.0, 429);
                    assert_eq!(c.bad_key_from(Some("203.0.113.2")).await.0, 401);
                }
                .boxed_local()
            },
        },
        Case {
            vars: &[("SIESTA_CORS_ORIGINS", "https://a.example,https://b.example")],
            check: |c| {
                async move {
                    for (origin, allowed) in [
                        ("https://b.example", true),
                        ("https://a.example", true),
                        ("https://c.example", false),
                    ] {
                        let res = c
                            .request(reqwest::Method::GET, "/api/v1/Me")
                            .header("Origin", origin)
                            .send()
                            .await
                            .unwrap();
                        let acao = res
                            .headers()
                            .get("access-control-allow-origin")
                            .map(|v| v.to_str().unwrap().to_owned());
                        assert_eq!(acao.as_deref(), allowed.then_some(origin), "{origin}");
                    }
                }
                .boxed_local()
            },
        },
        Case {
            vars: &[("SIESTA_PUBLIC_URL", "https://env.example")],
            check: |c| {
                async move {
                    let curl = c
                        .stdout
                        .iter()
                        .find(|l| l.trim_start().starts_with("curl "))
                        .unwrap();
                    assert!(curl.ends_with(" https://env.example/api/v1/Me"), "{curl}");
                }
                .boxed_local()
            },
        },
        Case {
            vars: &[("SIESTA_MAX_CONNECTIONS", "2")],
            check: |c| {
                async move {
                    // Six silent connections: past the two the server takes (fewer while
                    // it still closes the connections that saw it start), each is answered
                    // 503 at once, before any request is sent, and closed.
                    let addr = c.base.trim_start_matches("http://");
                    let mut answers = futures_util::stream::FuturesUnordered::new();
                    for _ in 0..6 {
                        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
                        answers.push(async move {
                            let mut answer = Vec::new();
                            let _ = socket.read_to_end(&mut answer).await;
                            String::from_utf8_lossy(&answer).into_owned()
                        });
                    }
                    let mut refused = 0;
                    let deadline = tokio::time::sleep(Duration::from_secs(8));
                    tokio::pin!(deadline);
                    while refused < 4 {
                        let answer = tokio::select! {
                            Some(answer) = answers.next() => answer,
                            _ = &mut deadline => break,
                        };
                        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
                        let problem = answer.split("\r\n\r\n").nth(1).unwrap_or("");
                        let problem: Value = serde_json::from_str(problem).unwrap();
                        assert_eq!(problem["code"], "service_unavailable");
                        refused += 1;
                    }
                    assert_eq!(refused, 4, "four connections past the cap answered at once");
                }
                .boxed_local()
            },
        },
        Case {
            vars: &[("SIESTA_HEADER_READ_TIMEOUT", "1s")],
            check: |c| {
                async move {
                    // A client that sends nothing is closed after 1 s, not the default 10 s.
                    let addr = c.base.trim_start_matches("http://");
                    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let mut rest = Vec::new();
                    let closed =
                        tokio::time::timeout(Duration::from_secs(8), silent.read_to_end(&mut rest))
                            .await;
                    assert!(closed.is_ok(), "the silent connection is closed");
                }
                .boxed_local()
            },
        },
        Case {
            vars: &[("SIESTA_DATA_DIR", "{dir}/uploads")],
            check: |c| {
                async move {
                    let (status, file) = c.upload(b"Order 1234").await;
                    assert_eq!(status, 201, "{file}");
                    let id = file["id"].as_str().unwrap();
                    // Named by the id without its hyphens.
                    let stored = c.dir.join("uploads/files").join(id.replace('-', ""));
                    assert!(stored.is_file(), "{}", stored.display());
                }
                .boxed_local()
            },
        },
        Case {
            vars: &[("SIESTA_MAX_FILE_BYTES", "10")],
            check: |c| {
                async move {
                    assert_eq!(c.upload(b"0123456789").await.0, 201);
                    let (status, problem) = c.upload(b"0123456789A").await;
                    assert_eq!(status, 413, "{problem}");
                    assert_eq!(problem["code"], "payload_too_large");
                }
                .boxed_local()
            },
        },
        Case {
            vars: &[("SIESTA_FILE_TTL", "1s")],
            check: |c| {
                async move {
                    let (status, file) = c.upload(b"Order 1234").await;
                    assert_eq!(status, 201, "{file}");
                    let path = format!("/api/v1/File/{}", file["id"].as_str().unwrap());
                    let gone = eventually(Duration::from_secs(10), || async {
                        let res = c.request(reqwest::Method::GET, &path).send().await;
                        res.unwrap().status() == 404
                    })
                    .await;
                    assert!(gone.is_some(), "the file expires after a second");
                }
                .boxed_local()
            },
        },
        Case {
            vars: &[
                ("SIESTA_LLM_BASE_URL", "{model}"),
                ("SIESTA_LLM_MODEL", "env-model"),
            ],
            check: |c| {
                async move {
                    let agent = c.agent().await;
                    let (status, answer) = c.ask(&agent, json!({"message": "hi"})).await;
                    assert_eq!(status, 200, "{answer}");
                    assert_echo(&answer, "hi", 1);
                    let seen = c.seen.all();
                    assert_eq!(seen.last().unwrap().1["model"], "env-model");
                }
                .boxed_local()
            },
        },
        Case {
            vars: &[
                ("SIESTA_LLM_TIMEOUT", "1s"),
                ("SIESTA_LLM_BASE_URL", "{model}"),
                ("SIESTA_LLM_MODEL", "slow-model"),
            ],
            check: |c| {
                async move {
                    // Within the client's 10 s, where the default 25 s would not be.
                    let agent = c.agent().await;
                    let (status, problem) = c.ask(&agent, json!({"message": "hi"})).await;
                    assert_eq!(status, 504, "{problem}");
                    assert_eq!(problem["code"], "provider_timeout");
                }
                .boxed_local()
            },
        },
        Case {
            vars: &[
                ("SIESTA_REQUEST_TIMEOUT", "1s"),
                ("SIESTA_LLM_BASE_URL", "{model}"),
                ("SIESTA_LLM_MODEL", "slow-model"),
            ],
            check: |c| {
                async move {
                    let agent = c.agent().await;
                    let (status, problem) = c.ask(&agent, json!({"message": "hi"})).await;
                    assert_eq!(status, 503, "{problem}");
                    assert_eq!(problem["code"], "service_unavailable");
                }
                .boxed_local()
            },
        },
        Case {
            vars: &[
                ("SIESTA_STREAM_TIMEOUT", "1s"),
                ("SIESTA_LLM_BASE_URL", "{model}"),
                ("SIESTA_LLM_MODEL", "drip-model"),
            ],
            check: |c| {
                async move {
                    let agent = c.agent().await;
                    let res = c
                        .request(
                            reqwest::Method::POST,
                            &format!("/api/v1/Agent/{agent}/response"),
                        )
                        .header("Accept", "text/event-stream")
                        .json(&json!({"message": "hi"}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 200);
                    let events = res.text().await.expect("the stream ends in time");
                    assert!(events.contains("Thinking"), "{events}");
                    assert!(events.contains("provider_timeout"), "{events}");
                }
                .boxed_local()
            },
        },
        Case {
            vars: &[
                ("SIESTA_HISTORY_CHARS", "1"),
                ("SIESTA_LLM_BASE_URL", "{model}"),
                ("SIESTA_LLM_MODEL", "echo-model"),
            ],
            check: |c| {
                async move {
                    // No earlier message fits in one character: only the new one goes up.
                    let agent = c.agent().await;
                    let (_, first) = c.ask(&agent, json!({"message": "one"})).await;
                    let again =
                        json!({"message": "two", "conversationId": first["conversationId"]});
                    let (status, second) = c.ask(&agent, again).await;
                    assert_eq!(status, 200, "{second}");
                    assert_echo(&second, "two", 1);
                }
                .boxed_local()
            },
        },
        Case {
            vars: &[("SIESTA_MAX_CONVERSATION_MESSAGES", "2")],
            check: |c| {
                async move {
                    let agent = c.agent().await;
                    let (status, first) = c.ask(&agent, json!({"message": "one"})).await;
                    assert_eq!(status, 200, "{first}");
                    let again =
                        json!({"message": "two", "conversationId": first["conversationId"]});
                    let (status, problem) = c.ask(&agent, again).await;
                    assert_eq!(status, 409, "{problem}");
                    assert_eq!(problem["code"], "conflict");
                }
                .boxed_local()
            },
        },
        Case {
            vars: &[("SIESTA_REDIS_URL", "{redis}")],
            check: |c| {
                async move {
                    let ready = eventually(Duration::from_secs(10), || async {
                        let res = c.http.get(format!("{}/readyz", c.base)).send().await;
                        let body: Value = res.unwrap().json().await.unwrap();
                        body["redis"] == "ok"
                    })
                    .await;
                    assert!(ready.is_some(), "/readyz reports the shared Redis");
                }
                .boxed_local()
            },
        },
    ]
}

/// Starts `siesta serve` with the case's variables and only the flags it does not replace,
/// in a directory of its own on a fresh database, runs the check and stops the server.
async fn run(case: &Case, model: &str, seen: &Seen, redis: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    // The working directory is not where the database is, so the default `siesta.db`
    // would be another file.
    let cwd = dir.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let db = TestDatabase::fresh(dir.path()).await;
    let fill = |v: &str| {
        v.replace("{dir}", &dir.path().display().to_string())
            .replace("{db}", &db.url)
            .replace("{model}", model)
            .replace("{redis}", redis.unwrap_or(""))
    };
    let vars: Vec<(&str, String)> = case.vars.iter().map(|(k, v)| (*k, fill(v))).collect();
    let set = |name: &str| vars.iter().any(|(k, _)| *k == name);
    let mut args = Vec::new();
    if !set("SIESTA_LISTEN") {
        args.extend(["--listen", "127.0.0.1:0"]);
    }
    if !set("SIESTA_DATABASE_URL") {
        args.extend(["--database", &db.url]);
    }
    let mut env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("RUST_LOG", "warn"));
    let r = launch(&cwd, &args, &env, None).await;
    let ctx = Ctx::of(&r, dir.path(), &db, seen);
    (case.check)(&ctx).await;
    // How the server stops is not what this test is about.
    drop(r);
}

#[tokio::test]
async fn every_serve_setting_given_by_its_siesta_variable_takes_effect() {
    let (model, seen) = model_server().await;
    let redis = service_url_or_skip(
        "SIESTA_TEST_REDIS_URL",
        "a Redis server, such as redis://127.0.0.1:6379",
    );
    let mut failed = Vec::new();
    for case in cases() {
        let var = case.vars[0].0;
        if case.vars.iter().any(|(_, v)| v.contains("{redis}")) && redis.is_none() {
            eprintln!("skipped: {var}, without a Redis");
            continue;
        }
        let outcome = std::panic::AssertUnwindSafe(run(&case, &model, &seen, redis.as_deref()))
            .catch_unwind()
            .await;
        if outcome.is_err() {
            failed.push(var);
        }
    }
    assert!(
        failed.is_empty(),
        "these variables did not take effect: {failed:?}"
    );
}

/// A server on a fresh database in a directory of its own, started with these variables:
/// the server, its context, and what must outlive it.
async fn serve_with(
    env: &[(&str, &str)],
    seen: &Seen,
) -> (Running, Ctx, tempfile::TempDir, TestDatabase) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::fresh(dir.path()).await;
    let args = ["--listen", "127.0.0.1:0", "--database", &db.url];
    let r = launch(dir.path(), &args, env, None).await;
    let ctx = Ctx::of(&r, dir.path(), &db, seen);
    (r, ctx, dir, db)
}

#[tokio::test]
async fn with_siesta_log_format_json_every_log_line_is_a_json_object_and_a_request_has_its_fields()
{
    let env = [("SIESTA_LOG_FORMAT", "json"), ("RUST_LOG", "debug")];
    let (r, c, _dir, _db) = serve_with(&env, &Seen::default()).await;
    let me = c
        .request(reqwest::Method::GET, "/api/v1/Me")
        .header("X-Request-Id", "json-log-me")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.unwrap();
    let refused = c
        .http
        .get(format!("{}/api/v1/Agent?Limit=5", c.base))
        .header("X-Request-Id", "json-log-refused")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let (status, _, stderr) = terminate_all(r).await;
    assert!(status.success());

    let mut requests = Vec::new();
    for line in stderr.lines() {
        let entry: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for name in ["timestamp", "level", "target"] {
            assert!(entry[name].is_string(), "no {name}: {line}");
        }
        assert!(entry["fields"].is_object(), "no fields: {line}");
        if entry["fields"]["message"] == "request" {
            requests.push(entry);
        }
    }
    let logged = |id: &str| {
        let found: Vec<&Value> = requests
            .iter()
            .filter(|e| e["fields"]["request_id"] == id)
            .collect();
        assert_eq!(found.len(), 1, "one line for the request {id}: {stderr}");
        found[0].clone()
    };
    let line = logged("json-log-me");
    assert_eq!(line["target"], "siesta::request");
    assert_eq!(line["level"], "INFO");
    let fields = &line["fields"];
    assert_eq!(fields["method"], "GET");
    assert_eq!(fields["path"], "/api/v1/Me");
    assert_eq!(fields["status"], 200);
    assert!(
        fields["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{line}"
    );
    assert_eq!(fields["org_id"], c.org);
    assert_eq!(fields["key_id"], me["keyId"]);
    let fields = logged("json-log-refused")["fields"].clone();
    assert_eq!(fields["method"], "GET");
    assert_eq!(fields["path"], "/api/v1/Agent?Limit=5");
    assert_eq!(fields["status"], 401);
    assert_eq!(fields["org_id"], "-");
    assert_eq!(fields["key_id"], "-");
}

#[tokio::test]
async fn siesta_llm_api_key_reaches_the_model_server_and_never_the_output_even_at_trace_level() {
    let (model, seen) = model_server().await;
    let secret = format!("sk-sentinel-{}", uuid::Uuid::new_v4().simple());
    let env = [
        ("SIESTA_LLM_BASE_URL", model.as_str()),
        ("SIESTA_LLM_MODEL", "echo-model"),
        ("SIESTA_LLM_API_KEY", secret.as_str()),
        ("RUST_LOG", "trace"),
    ];
    let (r, c, _dir, _db) = serve_with(&env, &seen).await;
    let agent = c.agent().await;
    let (status, answer) = c.ask(&agent, json!({"message": "hi"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_echo(&answer, "hi", 1);
    // A model server that fails: the error path logs too.
    let broken = c.agent_asking(Some("broken-model")).await;
    let (status, problem) = c.ask(&broken, json!({"message": "hi"})).await;
    assert_eq!(status, 502, "{problem}");
    assert_eq!(problem["code"], "provider_error");
    let bearer = format!("Bearer {secret}");
    let sent = seen.all();
    assert_eq!(sent.len(), 2);
    for (auth, _) in &sent {
        assert_eq!(
            auth.as_deref(),
            Some(bearer.as_str()),
            "the key goes to the model server"
        );
    }

    let (status, stdout, stderr) = terminate_all(r).await;
    assert!(status.success());
    assert!(stderr.len() > 10_000, "trace logging was on");
    assert!(!stderr.contains(&secret), "the model key reached the log");
    assert!(
        stdout.iter().all(|l| !l.contains(&secret)),
        "the model key reached stdout"
    );
}

/// The stand-in model's answer to `message`, with `count` messages sent up.
#[track_caller]
fn assert_echo(answer: &Value, message: &str, count: usize) {
    let text = answer["response"].as_str().unwrap_or_default();
    assert!(
        text.starts_with(&format!("Echo: {message} |"))
            && text.ends_with(&format!("| messages: {count}")),
        "{answer}"
    );
}
