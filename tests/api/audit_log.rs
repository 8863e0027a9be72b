//! `GET /api/v1/AuditLog`: its time window, and a CSV export that a spreadsheet opens
//! without running anything.

use std::time::Duration;

use serde_json::json;
use siesta::clock::Timestamp;
use siesta::store::AuditRecord;

use crate::helpers::*;

/// The audit log as CSV, read with the tenant's admin key.
async fn csv(app: &TestApp, t: &Tenant, query: &str) -> String {
    let r = app
        .client
        .get(app.url(&format!("/api/v1/AuditLog?{query}")))
        .header("X-Api-Key", &t.admin)
        .header("X-Org-Id", t.org_id.to_string())
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// The `targetId`s of a page of the audit log, newest first.
async fn targets(app: &TestApp, t: &Tenant, query: &str) -> Vec<String> {
    let page = app
        .get(&format!("/api/v1/AuditLog?{query}"), &t.admin, t.org_id)
        .await
        .ok(200);
    let items = page["items"].as_array().unwrap();
    assert_eq!(page["total"], items.len(), "one page holds them all");
    items
        .iter()
        .map(|r| r["targetId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_audit_log_window_takes_records_from_from_and_before_to() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    // Records around one instant, long before anything the test itself does.
    let edge = Timestamp::parse("2001-02-03T04:05:06.789Z").unwrap();
    let around = [
        ("an-hour-before", -3_600_000),
        ("a-millisecond-before", -1),
        ("at-the-edge", 0),
        ("a-millisecond-after", 1),
        ("an-hour-after", 3_600_000),
    ];
    let records: Vec<AuditRecord> = around
        .iter()
        .map(|(name, offset)| {
            let mut r = AuditRecord::event(t.org_id, "test.window", "cli").target(name);
            r.at = Timestamp(edge.millis() + offset);
            r
        })
        .collect();
    app.store.record_batch(&records, &[]).await.unwrap();
    let edge = edge.to_string();
    assert_eq!(edge, "2001-02-03T04:05:06.789Z");

    // `To` is exclusive: what is at or after it stays out, what is before it is in.
    let before = targets(&app, &t, &format!("Action=test.window&To={edge}")).await;
    assert_eq!(before, ["a-millisecond-before", "an-hour-before"]);
    // `From` is inclusive.
    let from = targets(&app, &t, &format!("Action=test.window&From={edge}")).await;
    assert_eq!(
        from,
        ["an-hour-after", "a-millisecond-after", "at-the-edge"]
    );
    // Both: [From, To).
    let window = "Action=test.window&From=2001-02-03T04:05:06.788Z&To=2001-02-03T04:05:06.790Z";
    assert_eq!(
        targets(&app, &t, window).await,
        ["at-the-edge", "a-millisecond-before"]
    );
    // The same window in another offset names the same instants.
    let shifted = "Action=test.window&To=2001-02-03T06:05:06.789%2B02:00";
    assert_eq!(
        targets(&app, &t, shifted).await,
        ["a-millisecond-before", "an-hour-before"]
    );

    // The CSV export filters the same way.
    let text = csv(&app, &t, &format!("Action=test.window&To={edge}")).await;
    let rows: Vec<&str> = text.trim_end().split("\r\n").skip(1).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows[0].ends_with(",a-millisecond-before"), "{text}");
    assert!(rows[1].ends_with(",an-hour-before"), "{text}");
}

#[tokio::test]
async fn a_csv_export_defuses_every_cell_that_starts_like_a_formula() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    // Key names are the organization's own text in every record of the key's requests.
    // Names refuse control characters, so a tab or a carriage return can only reach a
    // record some other way: written here straight to the store.
    let names = ["=HYPERLINK(\"x\")", "+1+2", "-1+2", "@SUM(A1)"];
    for (i, name) in names.iter().enumerate() {
        let made = app
            .post("/api/v1/ApiKey", &t.admin, t.org_id, json!({"name": name}))
            .await
            .ok(201);
        // The request id is the client's text too: `[A-Za-z0-9._:-]`, so it may start with `-`.
        let r = app
            .client
            .get(app.url("/api/v1/Me"))
            .header("X-Api-Key", made["key"].as_str().unwrap())
            .header("X-Org-Id", t.org_id.to_string())
            .header("X-Request-Id", format!("-{i}-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let controls = ["\t=1+2", "\r=1+2"];
    let records: Vec<AuditRecord> = controls
        .iter()
        .map(|name| {
            AuditRecord::event(t.org_id, "request", "api_key")
                .key(uuid::Uuid::now_v7(), name)
                .target("control")
        })
        .collect();
    app.store.record_batch(&records, &[]).await.unwrap();
    // Requests are recorded in batches: wait for those four.
    let all_recorded = eventually(Duration::from_secs(5), || async {
        let page = app
            .get(
                "/api/v1/AuditLog?Action=request&Limit=100",
                &t.admin,
                t.org_id,
            )
            .await
            .ok(200);
        let items = page["items"].as_array().unwrap().clone();
        names
            .iter()
            .all(|n| items.iter().any(|r| r["keyName"] == *n))
    })
    .await;
    assert!(all_recorded.is_some(), "the requests are in the audit log");

    let text = csv(&app, &t, "Action=request").await;
    // Each cell that starts with = + - @ tab or CR is quoted and starts with a `'`, and its
    // text is otherwise kept as it was (quotes doubled, as RFC 4180 has it).
    for name in names.iter().chain(&controls) {
        let defused = format!(",\"'{}\",", name.replace('"', "\"\""));
        assert!(
            text.contains(&defused),
            "{name:?} as {defused:?} in {text:?}"
        );
        assert!(
            !text.contains(&format!(",{name}")) && !text.contains(&format!(",\"{name}")),
            "{name:?} never starts a cell: {text:?}"
        );
    }
    for i in 0..names.len() {
        assert!(text.contains(&format!(",\"'-{i}-1\",")), "{text:?}");
    }
    // Cells that merely contain such a character are left alone.
    assert!(text.contains(",GET,/api/v1/Me,200,"), "{text:?}");
}
