//! `siesta user set-password` (SPEC §8, §12): the console password, read from stdin when
//! no terminal is attached, and kept only as argon2id.

use std::process::Stdio;

use serde_json::Value;
use siesta::password::Password;
use tokio::io::AsyncWriteExt;

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_siesta");

/// Runs `siesta user set-password --user USER` on the app's database with `stdin`.
async fn set_password(app: &TestApp, user: &str, stdin: &str) -> (bool, String, String) {
    let mut child = tokio::process::Command::new(BIN)
        .args(["user", "set-password", "--user", user, "--json"])
        .args(["--database", &app.database.url])
        .env_remove("SIESTA_DATABASE_URL")
        .current_dir(app.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("siesta runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test]
async fn the_first_line_of_stdin_becomes_the_password_kept_only_as_argon2id() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let typed = "correct horse battery staple";
    let (ok, stdout, stderr) =
        set_password(&app, "owner@acme.example", &format!("{typed}\r\nignored\n")).await;
    assert!(ok, "{stderr}");
    let user: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(user["id"], t.owner.to_string());
    assert_eq!(user["email"], "owner@acme.example");
    assert!(!stdout.contains(typed) && !stderr.contains(typed));
    let stored = app.store.password_hash(t.owner).await.unwrap().unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    assert!(Password::new(typed.into()).unwrap().matches(&stored));
    // The line ending is not part of it, and the second line is not read.
    assert!(!Password::new(format!("{typed}\r"))
        .unwrap()
        .matches(&stored));
}

#[tokio::test]
async fn a_password_outside_12_to_128_characters_or_an_unknown_user_changes_nothing() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    for (typed, says) in [
        ("eleven char", "at least 12 characters"),
        (&"x".repeat(129)[..], "at most 128 characters"),
        ("", "at least 12 characters"),
    ] {
        let (ok, _, stderr) = set_password(&app, "owner@acme.example", typed).await;
        assert!(!ok);
        assert!(stderr.contains(says), "{stderr}");
        assert!(typed.is_empty() || !stderr.contains(typed), "{stderr}");
    }
    assert_eq!(app.store.password_hash(t.owner).await.unwrap(), None);
    let (ok, _, stderr) = set_password(&app, "nobody@acme.example", "long enough password").await;
    assert!(!ok);
    assert!(stderr.contains("no user"), "{stderr}");
}

#[tokio::test]
async fn a_password_cannot_be_given_on_the_command_line() {
    let app = spawn_app().await;
    app.tenant("Acme").await;
    let out = tokio::process::Command::new(BIN)
        .args(["user", "set-password", "--user", "owner@acme.example"])
        .args(["--password", "correct horse battery staple"])
        .args(["--database", &app.database.url])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument '--password'"));
}
