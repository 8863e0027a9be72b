//! The OpenAPI document is generated from the router; this keeps it from changing
//! unnoticed. After an intended change: `UPDATE_SNAPSHOTS=1 cargo test openapi`.
//! `.ci/run` also checks the snapshot with openapi-spec-validator.

use crate::helpers::*;

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/openapi.json");

#[tokio::test]
async fn the_openapi_document_matches_its_snapshot() {
    let app = spawn_app().await;
    let doc = app.document().await;
    let served = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(SNAPSHOT, &served).unwrap();
    }
    let stored = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    assert!(
        stored == served,
        "the OpenAPI document changed; review it and run UPDATE_SNAPSHOTS=1 cargo test openapi"
    );
}

#[tokio::test]
async fn every_api_operation_declares_both_headers_and_its_refusals() {
    let app = spawn_app().await;
    let doc = app.document().await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        doc["components"]["securitySchemes"]["ApiKey"]["name"],
        "X-Api-Key"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["OrgId"]["name"],
        "X-Org-Id"
    );
    assert_eq!(
        doc["security"],
        serde_json::json!([{"ApiKey": [], "OrgId": []}]),
        "both, together"
    );
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            for status in ["400", "401", "403", "404", "429", "500"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{method} {path} lacks {status}"
                );
            }
            if op.get("requestBody").is_some() {
                assert!(
                    op["responses"]["413"].is_object(),
                    "{method} {path} lacks 413"
                );
            }
            for (status, response) in op["responses"].as_object().unwrap() {
                if status.starts_with('2') {
                    let said = response["description"].as_str().unwrap_or("");
                    assert!(!said.is_empty(), "{method} {path} {status} says nothing");
                }
            }
        }
    }
    assert!(operations >= 25, "{operations}");
    let ok = &doc["paths"]["/api/v1/ApiKey/{keyId}"]["get"]["responses"]["200"];
    assert_eq!(ok["description"], "OK: the answer below.");
}

#[tokio::test]
async fn creates_link_to_the_operations_on_what_they_made() {
    let app = spawn_app().await;
    let doc = app.document().await;
    let links = &doc["paths"]["/api/v1/Agent"]["post"]["responses"]["201"]["links"];
    assert_eq!(
        links["get_agent"],
        serde_json::json!({"operationId": "get_agent", "parameters": {"agentId": "$response.body#/id"}})
    );
    assert!(links["delete_agent"].is_object());
    assert_eq!(
        doc["paths"]["/api/v1/ApiKey"]["post"]["responses"]["201"]["links"]["delete_key"]
            ["parameters"]["keyId"],
        "$response.body#/id"
    );
    // A read is no invitation to delete what it names: GET /Me names the calling key.
    assert!(doc["paths"]["/api/v1/Me"]["get"]["responses"]["200"]
        .get("links")
        .is_none());
    // An operation whose body names other objects by id is not a link target.
    assert!(links.get("respond").is_none(), "{links}");
    let task = &doc["paths"]["/api/v1/Task"]["post"]["responses"]["201"]["links"];
    assert_eq!(
        task["get_workspace"]["parameters"]["workspaceId"],
        "$response.body#/workspaceId"
    );
    // Free text refuses control characters in the document as on the server.
    let name = &doc["components"]["schemas"]["NewAgent"]["properties"]["name"];
    assert!(name["pattern"].as_str().unwrap().contains(r"\u0000"));
    // A search term refuses every control character, tab and line breaks included, in the
    // document as on the server.
    for path in ["/api/v1/ApiKey", "/api/v1/Agent", "/api/v1/AuditLog"] {
        let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
        let search = params
            .iter()
            .find(|p| p["name"] == "Search" || p["name"] == "Action")
            .unwrap_or_else(|| panic!("{path} has a text parameter"));
        assert_eq!(
            search["schema"]["pattern"],
            r"^[^\u0000-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*$",
            "{path}"
        );
    }
    assert_eq!(
        doc["components"]["schemas"]["NewAgent"]["required"],
        serde_json::json!(["name"])
    );
}
