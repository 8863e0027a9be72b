use std::time::Duration;

use serde_json::json;
use siesta::Settings;

use crate::helpers::*;

const BOUNDARY: &str = "siesta-test-boundary";

fn form(parts: &[(&str, &str, &str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, filename, content_type, data) in parts {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n\
                 Content-Type: {content_type}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn upload(app: &TestApp, key: &str, org: uuid::Uuid, body: Vec<u8>) -> Reply {
    let r = app
        .client
        .post(app.url("/api/v1/File"))
        .header("X-Api-Key", key)
        .header("X-Org-Id", org.to_string())
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    Reply::from(r).await
}

fn files_on_disk(app: &TestApp) -> usize {
    std::fs::read_dir(app.dir.path().join("data").join("files"))
        .unwrap()
        .count()
}

#[tokio::test]
async fn files_are_uploaded_described_and_kept_to_their_organization() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let body = form(&[(
        "file",
        "../notes.txt",
        "text/plain",
        b"Order 1234 ships Monday.",
    )]);
    let file = upload(&app, &t.write, t.org_id, body).await.ok(201);
    assert_eq!(file["name"], "notes.txt");
    assert_eq!(file["size"], 24);
    assert_eq!(file["contentType"], "text/plain");
    assert!(file["expiresAt"].is_string());
    let path = format!("/api/v1/File/{}", file["id"].as_str().unwrap());
    assert_eq!(app.get(&path, &t.read, t.org_id).await.ok(200), file);
    assert_eq!(files_on_disk(&app), 1);

    let other = app.tenant("Globex").await;
    let theirs = not_found(app.get(&path, &other.read, other.org_id).await);
    let never = format!("/api/v1/File/{}", uuid::Uuid::now_v7());
    assert_eq!(
        theirs,
        not_found(app.get(&never, &other.read, other.org_id).await)
    );

    let body = form(&[("file", "a.txt", "text/plain", b"x")]);
    upload(&app, &t.read, t.org_id, body)
        .await
        .problem(403, "insufficient_scope");
    let body = form(&[("other", "a.txt", "text/plain", b"x")]);
    let r = upload(&app, &t.write, t.org_id, body)
        .await
        .problem(400, "validation_error");
    assert!(r["errors"]["other"].is_array(), "{r}");
    let body = form(&[]);
    let r = upload(&app, &t.write, t.org_id, body)
        .await
        .problem(400, "validation_error");
    assert!(r["errors"]["file"].is_array(), "{r}");
    // A part beside the file is refused by name, and the file is not kept.
    let stored = || {
        std::fs::read_dir(app.dir.path().join("data").join("files"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = stored();
    let body = form(&[
        ("file", "a.txt", "text/plain", b"x"),
        ("note", "n.txt", "text/plain", b"y"),
    ]);
    let r = upload(&app, &t.write, t.org_id, body)
        .await
        .problem(400, "validation_error");
    assert!(r["errors"]["note"].is_array(), "{r}");
    assert_eq!(stored(), before);
    let r = app
        .post("/api/v1/File", &t.write, t.org_id, json!({"file": "no"}))
        .await;
    r.problem(400, "validation_error");
}

#[tokio::test]
async fn an_upload_over_the_limit_is_refused_and_leaves_nothing_behind() {
    let app = spawn_app_with(Settings {
        max_file_bytes: 1_000,
        ..Settings::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    let body = form(&[("file", "big.bin", "application/octet-stream", &[7u8; 2_000])]);
    upload(&app, &t.write, t.org_id, body)
        .await
        .problem(413, "payload_too_large");
    assert_eq!(files_on_disk(&app), 0);
    let body = form(&[("file", "ok.bin", "application/octet-stream", &[7u8; 1_000])]);
    upload(&app, &t.write, t.org_id, body).await.ok(201);
}

#[tokio::test]
async fn attached_files_reach_the_agent_text_as_text_and_others_by_name() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let text = upload(
        &app,
        &t.write,
        t.org_id,
        form(&[("file", "notes.md", "text/markdown", b"# Shipping\nMonday")]),
    )
    .await
    .ok(201);
    let image = upload(
        &app,
        &t.write,
        t.org_id,
        form(&[("file", "logo.png", "image/png", &[0x89, b'P', b'N', b'G'])]),
    )
    .await
    .ok(201);
    let agent = app
        .created(&t, "/api/v1/Agent", json!({"name": "bot"}))
        .await;
    let path = format!("/api/v1/Agent/{}/response", agent["id"].as_str().unwrap());
    let r = app
        .post(
            &path,
            &t.write,
            t.org_id,
            json!({"message": "Read these", "fileIds": [text["id"], image["id"]]}),
        )
        .await
        .ok(200);
    let answer = r["response"].as_str().unwrap();
    assert!(
        answer.contains("notes.md (text/markdown, 17 characters of text)"),
        "{answer}"
    );
    assert!(answer.contains("logo.png (image/png)"), "{answer}");

    let other = app.tenant("Globex").await;
    let theirs = upload(
        &app,
        &other.write,
        other.org_id,
        form(&[("file", "x.txt", "text/plain", b"secret")]),
    )
    .await
    .ok(201);
    app.post(
        &path,
        &t.write,
        t.org_id,
        json!({"message": "Read it", "fileIds": [theirs["id"]]}),
    )
    .await
    .problem(404, "not_found");
}

#[tokio::test]
async fn expired_files_are_swept_from_disk_and_database() {
    let settings = Settings {
        sweep_every: Duration::from_millis(100),
        ..Settings::default()
    };
    let app = spawn_app_on_manual_clock(settings).await;
    let t = app.tenant("Acme").await;
    let file = upload(
        &app,
        &t.write,
        t.org_id,
        form(&[("file", "a.txt", "text/plain", b"soon gone")]),
    )
    .await
    .ok(201);
    let path = format!("/api/v1/File/{}", file["id"].as_str().unwrap());
    app.get(&path, &t.read, t.org_id).await.ok(200);
    // A file lives 24 hours by default, to the millisecond.
    app.clock
        .advance(Duration::from_secs(24 * 3600) - Duration::from_millis(1));
    app.get(&path, &t.read, t.org_id).await.ok(200);
    assert_eq!(files_on_disk(&app), 1);
    app.clock.advance(Duration::from_millis(1));
    app.get(&path, &t.read, t.org_id)
        .await
        .problem(404, "not_found");
    let gone = eventually(Duration::from_secs(4), || async {
        files_on_disk(&app) == 0
    })
    .await;
    assert!(gone.is_some(), "the sweeper removed the file from disk");
    app.get(&path, &t.read, t.org_id)
        .await
        .problem(404, "not_found");
    // The sweeper removes the file from disk first, then its row.
    let long_ago = siesta::clock::Timestamp(0);
    let id = file["id"].as_str().unwrap().parse().unwrap();
    let forgotten = eventually(Duration::from_secs(2), || async {
        app.store.get_file(t.org_id, id, long_ago).await.is_err()
    })
    .await;
    assert!(forgotten.is_some(), "and its row from the database");
}

#[tokio::test]
async fn partial_uploads_a_crash_left_behind_are_removed_after_an_hour() {
    let app = spawn_app_with(Settings {
        sweep_every: Duration::from_millis(100),
        ..Settings::default()
    })
    .await;
    let dir = app.dir.path().join("data").join("files");
    let old = dir.join(format!("{}.part", uuid::Uuid::now_v7().simple()));
    let recent = dir.join(format!("{}.part", uuid::Uuid::now_v7().simple()));
    for path in [&old, &recent] {
        std::fs::write(path, b"half an upload").unwrap();
    }
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let swept = eventually(Duration::from_secs(3), || async { !old.exists() }).await;
    assert!(swept.is_some(), "the abandoned partial file is removed");
    assert!(
        recent.exists(),
        "an upload that may still be running is kept"
    );
}
