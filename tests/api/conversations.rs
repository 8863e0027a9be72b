use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};
use siesta::Settings;

use crate::helpers::*;

async fn agent(app: &TestApp, t: &Tenant, name: &str) -> String {
    let body = json!({"name": name, "instructions": "Answer briefly and politely."});
    let a = app
        .post("/api/v1/Agent", &t.write, t.org_id, body)
        .await
        .ok(201);
    a["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_agent_answers_and_the_conversation_is_kept() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let id = agent(&app, &t, "support-bot").await;
    let path = format!("/api/v1/Agent/{id}/response");
    let first = app
        .post(
            &path,
            &t.write,
            t.org_id,
            json!({"message": "Where is my order?"}),
        )
        .await
        .ok(200);
    let text = first["response"].as_str().unwrap();
    assert!(text.contains("offline responder"), "{text}");
    assert!(
        text.contains("Answer briefly and politely."),
        "it saw the instructions: {text}"
    );
    assert!(text.contains("Where is my order?"), "{text}");
    assert!(
        text.contains("Earlier messages in this conversation: 0"),
        "{text}"
    );
    let conversation = first["conversationId"].as_str().unwrap();

    let again = json!({"message": "And when will it arrive?", "conversationId": conversation});
    let second = app.post(&path, &t.write, t.org_id, again).await.ok(200);
    assert_eq!(second["conversationId"], conversation);
    assert!(second["response"]
        .as_str()
        .unwrap()
        .contains("Earlier messages in this conversation: 2"));

    let c = app
        .get(
            &format!("/api/v1/Conversation/{conversation}"),
            &t.read,
            t.org_id,
        )
        .await
        .ok(200);
    assert_eq!(c["agentId"], id.as_str());
    let roles: Vec<&str> = c["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(c["messages"][3]["id"], second["messageId"]);
    assert_eq!(c["messages"][3]["content"], second["response"]);
    // The same question gets the same answer: the responder is deterministic.
    let third = app
        .post(
            &path,
            &t.write,
            t.org_id,
            json!({"message": "Where is my order?"}),
        )
        .await
        .ok(200);
    assert_eq!(third["response"], first["response"]);
}

#[tokio::test]
async fn answers_stream_as_server_sent_events_and_are_stored() {
    let app = spawn_app().await;
    let t = app.tenant("Acme").await;
    let id = agent(&app, &t, "support-bot").await;
    let r = app
        .stream_response(&t, &id, json!({"message": "Stream it"}))
        .await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let body = r.text();
    let mut deltas = String::new();
    let mut done: Option<Value> = None;
    let mut count = 0;
    for block in body.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let event = block
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .unwrap_or("");
        let data = block
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap_or("");
        match event {
            "delta" => {
                deltas.push_str(
                    serde_json::from_str::<Value>(data).unwrap()["text"]
                        .as_str()
                        .unwrap(),
                );
                count += 1;
            }
            "done" => done = Some(serde_json::from_str(data).unwrap()),
            other => panic!("unexpected event {other:?}: {block}"),
        }
    }
    assert!(count > 5, "the answer arrives in pieces");
    let done = done.expect("a final done event");
    let c = format!(
        "/api/v1/Conversation/{}",
        done["conversationId"].as_str().unwrap()
    );
    let c = app.get(&c, &t.read, t.org_id).await.ok(200);
    assert_eq!(c["messages"][1]["content"], deltas.as_str());
    assert_eq!(c["messages"][1]["id"], done["messageId"]);
}

#[tokio::test]
async fn conversations_stay_with_their_agent_and_organization() {
    let app = spawn_app().await;
    let a = app.tenant("Acme").await;
    let b = app.tenant("Globex").await;
    let mine = agent(&app, &a, "support-bot").await;
    let other_agent = agent(&app, &a, "sales-bot").await;
    let theirs = agent(&app, &b, "globex-bot").await;
    let talk = app
        .post(
            &format!("/api/v1/Agent/{theirs}/response"),
            &b.write,
            b.org_id,
            json!({"message": "secret"}),
        )
        .await
        .ok(200);
    let their_conv = talk["conversationId"].as_str().unwrap();
    let never = uuid::Uuid::now_v7();
    let missing = not_found(
        app.get(&format!("/api/v1/Conversation/{never}"), &a.read, a.org_id)
            .await,
    );
    assert_eq!(
        not_found(
            app.get(
                &format!("/api/v1/Conversation/{their_conv}"),
                &a.read,
                a.org_id
            )
            .await
        ),
        missing
    );
    // Continuing another org's conversation, or talking to another org's agent.
    let path = format!("/api/v1/Agent/{mine}/response");
    let r = app
        .post(
            &path,
            &a.write,
            a.org_id,
            json!({"message": "hi", "conversationId": their_conv}),
        )
        .await;
    let theirs = not_found(r);
    assert!(theirs["detail"]
        .as_str()
        .unwrap()
        .contains("conversationId"));
    let unknown = json!({"message": "hi", "conversationId": uuid::Uuid::now_v7()});
    let r = app.post(&path, &a.write, a.org_id, unknown).await;
    assert_eq!(
        not_found(r),
        theirs,
        "another org's conversation is as unknown as none"
    );
    let r = app
        .post(
            &format!("/api/v1/Agent/{theirs}/response"),
            &a.write,
            a.org_id,
            json!({"message": "hi"}),
        )
        .await;
    assert_eq!(not_found(r), missing);
    // A conversation belongs to one agent.
    let own = app
        .post(&path, &a.write, a.org_id, json!({"message": "hi"}))
        .await
        .ok(200);
    let r = app
        .post(
            &format!("/api/v1/Agent/{other_agent}/response"),
            &a.write,
            a.org_id,
            json!({"message": "hi", "conversationId": own["conversationId"]}),
        )
        .await;
    not_found(r);
    // Unknown files are not found; bad input is named; reading needs no more than read.
    let r = app
        .post(
            &path,
            &a.write,
            a.org_id,
            json!({"message": "hi", "fileIds": [never]}),
        )
        .await;
    not_found(r);
    let r = app
        .post(&path, &a.write, a.org_id, json!({}))
        .await
        .problem(400, "validation_error");
    assert!(r["errors"]["message"].is_array());
    app.post(&path, &a.read, a.org_id, json!({"message": "hi"}))
        .await
        .problem(403, "insufficient_scope");
    let conv = format!(
        "/api/v1/Conversation/{}",
        own["conversationId"].as_str().unwrap()
    );
    app.call(
        Method::GET,
        &conv,
        Some(&a.read),
        Some(&a.org_id.to_string()),
        None,
    )
    .await
    .ok(200);
}

/// A conversation with room for one more exchange: on an app whose conversations hold at
/// most four messages, a tenant's agent answered its first question. The app, the tenant,
/// the agent's id and the conversation's.
async fn a_conversation_with_room_for_one_exchange() -> (TestApp, Tenant, String, Value) {
    let app = spawn_app_with(Settings {
        max_conversation_messages: 4,
        ..Settings::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    let id = agent(&app, &t, "support-bot").await;
    let first = app
        .post(
            &format!("/api/v1/Agent/{id}/response"),
            &t.write,
            t.org_id,
            json!({"message": "one"}),
        )
        .await
        .ok(200);
    let conversation = first["conversationId"].clone();
    (app, t, id, conversation)
}

#[track_caller]
fn conversation_full(frame: &Value) {
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["code"], "conflict", "{frame}");
    let detail = frame["detail"].as_str().unwrap();
    assert!(detail.contains("full") && detail.contains("new"), "{frame}");
}

#[tokio::test]
async fn a_full_conversation_refuses_more_messages_and_stores_nothing_of_them() {
    let (app, t, id, conversation) = a_conversation_with_room_for_one_exchange().await;
    let path = format!("/api/v1/Agent/{id}/response");
    let more = |text: &str| json!({"message": text, "conversationId": conversation});
    app.post(&path, &t.write, t.org_id, more("two"))
        .await
        .ok(200);
    // Four messages held: a third question and its answer would make six.
    let full = app
        .post(&path, &t.write, t.org_id, more("three"))
        .await
        .problem(409, "conflict");
    let detail = full["detail"].as_str().unwrap();
    assert!(
        detail.contains("full") && detail.contains("new conversation"),
        "{detail}"
    );
    let streamed = app.stream_response(&t, &id, more("three")).await;
    assert_eq!(streamed.status, 409, "refused before any event");
    assert_eq!(app.conversation_messages(&t, &conversation).await.len(), 4);

    // A socket continuing it is refused too, and stays open.
    let continuing = json!({"conversationId": conversation});
    let s = app
        .realtime_session(&id, &t.write, t.org_id, continuing)
        .await;
    let mut ws = open_socket(&s).await;
    for text in ["three", "still three"] {
        let (deltas, refused) = say(&mut ws, text).await;
        assert_eq!(deltas, "");
        conversation_full(&refused);
    }
    assert_eq!(app.conversation_messages(&t, &conversation).await.len(), 4);

    // A conversation a socket starts fills up the same way.
    let s = app
        .realtime_session(&id, &t.write, t.org_id, json!({}))
        .await;
    let mut ws = open_socket(&s).await;
    for text in ["one", "two"] {
        let (_, done) = say(&mut ws, text).await;
        assert_eq!(done["type"], "done", "{done}");
    }
    let (_, refused) = say(&mut ws, "three").await;
    conversation_full(&refused);
    let started = &s["conversationId"];
    assert_eq!(app.conversation_messages(&t, started).await.len(), 4);
}

#[tokio::test]
async fn messages_racing_into_one_conversation_cannot_take_it_past_its_limit() {
    let (app, t, id, conversation) = a_conversation_with_room_for_one_exchange().await;
    let path = format!("/api/v1/Agent/{id}/response");
    // Room for one more exchange; six try at once.
    let racing = (0..6).map(|n| {
        app.post(
            &path,
            &t.write,
            t.org_id,
            json!({"message": format!("racer {n}"), "conversationId": conversation}),
        )
    });
    let statuses: Vec<u16> = join_all(racing)
        .await
        .iter()
        .map(|r| r.status.as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 409)),
        "{statuses:?}"
    );
    assert_eq!(app.conversation_messages(&t, &conversation).await.len(), 4);
}
