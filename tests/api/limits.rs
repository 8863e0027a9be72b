//! The served OpenAPI document and the server agree on every limit. Each field of each JSON
//! request body, and each query parameter, is sent values around its schema's limits: text
//! at and past its length, every kind of white space and control character alone, leading,
//! trailing and inside, ids and times in other spellings, numbers at and past their bounds,
//! lists at and past their size. What the schema allows is accepted (anything but 400);
//! what it refuses is refused with 400 and the field named in `errors`.

use std::collections::HashMap;

use regex_automata::dfa::regex::Regex;
use serde_json::{json, Map, Value};
use siesta::Settings;
use uuid::Uuid;

use crate::helpers::*;

/// Characters around every rule: the white space of `trim` (and U+FEFF, which JavaScript
/// calls white space and `trim` does not), control characters, bidirectional controls,
/// invisible and astral characters.
const CHARACTERS: [char; 26] = [
    ' ', '\t', '\n', '\r', '\u{B}', '\u{C}', '\u{0}', '\u{7}', '\u{1F}', '\u{7F}', '\u{85}',
    '\u{9F}', '\u{A0}', '\u{1680}', '\u{2000}', '\u{200B}', '\u{2028}', '\u{2029}', '\u{202A}',
    '\u{202F}', '\u{205F}', '\u{2066}', '\u{3000}', '\u{FEFF}', 'é', '😀',
];

/// The document, and its patterns compiled once.
struct Contract {
    doc: Value,
    patterns: HashMap<String, Regex>,
}

impl Contract {
    /// A schema with its reference followed.
    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str() {
            Some(r) => {
                let name = r.rsplit('/').next().unwrap();
                self.resolve(&self.doc["components"]["schemas"][name])
            }
            None => schema,
        }
    }

    fn matches(&mut self, pattern: &str, text: &str) -> bool {
        let regex = self
            .patterns
            .entry(pattern.to_owned())
            .or_insert_with(|| Regex::new(pattern).expect("the document's pattern compiles"));
        regex.is_match(text)
    }

    /// Whether `schema` allows `value` (the parts of JSON Schema the document uses).
    fn allows(&mut self, schema: &Value, value: &Value) -> bool {
        let schema = self.resolve(schema).clone();
        if let Some(choices) = schema["oneOf"].as_array() {
            return choices.iter().any(|s| self.allows(s, value));
        }
        if let Some(values) = schema["enum"].as_array() {
            return values.contains(value);
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![
                "string", "integer", "number", "array", "object", "boolean", "null",
            ],
        };
        let number = |key: &str| schema[key].as_f64();
        match value {
            Value::Null => types.contains(&"null"),
            Value::String(text) => {
                let n = text.chars().count();
                let length_ok = schema["minLength"].as_u64().is_none_or(|m| n as u64 >= m)
                    && schema["maxLength"].as_u64().is_none_or(|m| n as u64 <= m);
                let format_ok = match schema["format"].as_str() {
                    Some("date-time") => time::OffsetDateTime::parse(
                        text,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .is_ok(),
                    _ => true,
                };
                let pattern_ok = match schema["pattern"].as_str() {
                    Some(p) => self.matches(p, text),
                    None => true,
                };
                types.contains(&"string") && length_ok && format_ok && pattern_ok
            }
            Value::Number(n) => {
                let f = n.as_f64().unwrap();
                let kind_ok =
                    types.contains(&"number") || (types.contains(&"integer") && f.fract() == 0.0);
                kind_ok
                    && number("minimum").is_none_or(|m| f >= m)
                    && number("maximum").is_none_or(|m| f <= m)
            }
            Value::Array(items) => {
                types.contains(&"array")
                    && schema["maxItems"]
                        .as_u64()
                        .is_none_or(|m| items.len() as u64 <= m)
                    && items.iter().all(|i| self.allows(&schema["items"], i))
            }
            Value::Bool(_) => types.contains(&"boolean"),
            Value::Object(_) => types.contains(&"object"),
        }
    }

    /// Values on both sides of the schema's limits.
    fn candidates(&self, schema: &Value) -> Vec<Value> {
        let schema = self.resolve(schema);
        if let Some(choices) = schema["oneOf"].as_array() {
            let mut all = vec![Value::Null];
            for choice in choices {
                all.extend(self.candidates(choice));
            }
            return all;
        }
        if let Some(values) = schema["enum"].as_array() {
            let mut all = values.clone();
            all.extend([json!("nope"), json!(""), json!(" read")]);
            return all;
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let mut all = Vec::new();
        if types.contains(&"null") {
            all.push(Value::Null);
        }
        if types.contains(&"string") {
            all.extend(text_candidates(schema).into_iter().map(Value::String));
        }
        if types.contains(&"integer") {
            let min = schema["minimum"].as_i64().unwrap_or(0);
            let max = schema["maximum"].as_i64().unwrap_or(1000);
            for n in [min - 1, min, min + 1, max - 1, max, max + 1] {
                all.push(json!(n));
            }
            all.extend([json!(max as f64), json!(min as f64 + 0.5), json!("1")]);
        }
        if types.contains(&"array") {
            let max = schema["maxItems"].as_u64().unwrap_or(3) as usize;
            let ids = |n: usize| Value::from((0..n).map(|_| id()).collect::<Vec<_>>());
            all.extend([ids(0), ids(1), ids(max), ids(max + 1), json!(["nope"])]);
        }
        all
    }
}

fn id() -> String {
    Uuid::new_v4().to_string()
}

/// Text on both sides of a string schema's length, format and pattern.
fn text_candidates(schema: &Value) -> Vec<String> {
    let mut all: Vec<String> = [
        "sample",
        "Support triage",
        "a",
        "",
        "crm-prod-sync",
        "zendesk",
        "Zendesk",
        "0",
        "0s",
        "24h",
        "90d",
        "999999d",
        "1000000s",
        "05m",
        "1.5h",
        "api_key.created",
    ]
    .map(str::to_owned)
    .to_vec();
    if let Some(example) = schema["example"].as_str() {
        all.push(example.to_owned());
    }
    if let Some(max) = schema["maxLength"].as_u64() {
        let max = max as usize;
        all.extend(["a".repeat(max), "a".repeat(max + 1), "é".repeat(max)]);
    }
    match schema["format"].as_str() {
        Some("uuid") => {
            let u = Uuid::new_v4();
            all.extend([
                u.to_string(),
                u.to_string().to_uppercase(),
                u.simple().to_string(),
                format!("{{{u}}}"),
                format!("urn:uuid:{u}"),
            ]);
        }
        Some("date-time") => all.extend(
            [
                "2026-11-28T09:30:00Z",
                "2026-11-28T09:30:00.123456789+01:00",
                "2026-11-28T09:30:00.1234567891+01:00",
                "2026-02-30T09:30:00Z",
                "yesterday",
            ]
            .map(str::to_owned),
        ),
        _ => {}
    }
    for c in CHARACTERS {
        all.extend([
            c.to_string(),
            format!("a{c}"),
            format!("{c}a"),
            format!("a{c}a"),
        ]);
    }
    all
}

/// Where the test was wrong about the server: each disagreement, described.
type Findings = Vec<String>;

fn judge(
    findings: &mut Findings,
    what: &str,
    field: &str,
    value: &Value,
    allowed: bool,
    r: &Reply,
) {
    let shown = value.to_string().chars().take(80).collect::<String>();
    let refused = r.status.as_u16() == 400;
    if allowed && refused {
        findings.push(format!(
            "{what} {field}={shown}: the document allows it, the server refused it: {}",
            r.text()
        ));
    } else if !allowed && !refused {
        findings.push(format!(
            "{what} {field}={shown}: the document refuses it, the server answered {}",
            r.status
        ));
    } else if !allowed && r.json()["errors"].get(field).is_none() {
        findings.push(format!(
            "{what} {field}={shown}: refused without naming the field: {}",
            r.text()
        ));
    }
}

/// A body the schema allows: each required field with the first value its schema allows.
fn valid_body(contract: &mut Contract, schema: &Value) -> Map<String, Value> {
    let mut body = Map::new();
    let schema = contract.resolve(schema).clone();
    for name in schema["required"].as_array().into_iter().flatten() {
        let name = name.as_str().unwrap();
        let property = &schema["properties"][name];
        let value = contract
            .candidates(property)
            .into_iter()
            .find(|v| !v.is_null() && contract.allows(property, v))
            .unwrap_or_else(|| panic!("no valid value for {name}"));
        body.insert(name.to_owned(), value);
    }
    body
}

#[tokio::test]
async fn the_server_enforces_exactly_the_limits_the_document_states() {
    let app = spawn_app_with(Settings {
        rate_limit: 1_000_000_000,
        ..Settings::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    let key = t.admin.as_str();
    let doc = app.get("/openapi.json", key, t.org_id).await.ok(200);

    // Objects for the operations whose path names one: a body is checked once its object is
    // found, so it is sent to one that exists.
    let make = |path: &'static str, body: Value| {
        let app = &app;
        async move { app.post(path, key, t.org_id, body).await.ok(201)["id"].clone() }
    };
    let agent = make("/api/v1/Agent", json!({"name": "Limits"})).await;
    let workspace = make("/api/v1/TaskWorkspace", json!({"name": "Limits"})).await;
    let task = make(
        "/api/v1/Task",
        json!({"title": "Limits", "workspaceId": workspace}),
    )
    .await;
    let api_key = make("/api/v1/ApiKey", json!({"name": "limits-test-key"})).await;
    let ids = [
        ("{agentId}", agent),
        ("{taskId}", task),
        ("{keyId}", api_key),
    ]
    .map(|(name, id)| (name, id.as_str().unwrap().to_owned()));

    let mut contract = Contract {
        doc,
        patterns: HashMap::new(),
    };
    let mut findings = Findings::new();
    let (mut bodies, mut parameters, mut sent) = (0, 0, 0);
    let paths = contract.doc["paths"].as_object().unwrap().clone();
    for (template, item) in &paths {
        let mut path = template.clone();
        for (name, id) in &ids {
            path = path.replace(name, id);
        }
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{} {template}", method.to_uppercase());
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body_schema = &op["requestBody"]["content"]["application/json"]["schema"];
            if !body_schema.is_null() {
                bodies += 1;
                // An optional body is one of null and its schema.
                let schema = match body_schema["oneOf"].as_array() {
                    Some(choices) => choices.iter().find(|c| c.get("$ref").is_some()).unwrap(),
                    None => body_schema,
                }
                .clone();
                let schema = contract.resolve(&schema).clone();
                let base = valid_body(&mut contract, &schema);
                let send = |body: Map<String, Value>| {
                    let (method, path) = (method.clone(), path.clone());
                    let app = &app;
                    async move {
                        app.call(
                            method,
                            &path,
                            Some(key),
                            Some(&t.org_id.to_string()),
                            Some(Value::Object(body)),
                        )
                        .await
                    }
                };
                let r = send(base.clone()).await;
                assert_ne!(r.status.as_u16(), 400, "{what}: {base:?}: {}", r.text());
                let required: Vec<&str> = schema["required"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                for (field, property) in schema["properties"].as_object().unwrap() {
                    for value in contract.candidates(property) {
                        let allowed = contract.allows(property, &value);
                        let mut body = base.clone();
                        body.insert(field.clone(), value.clone());
                        let r = send(body).await;
                        sent += 1;
                        judge(&mut findings, &what, field, &value, allowed, &r);
                    }
                    let mut body = base.clone();
                    body.remove(field);
                    let r = send(body).await;
                    let allowed = !required.contains(&field.as_str());
                    judge(
                        &mut findings,
                        &what,
                        field,
                        &json!("(left out)"),
                        allowed,
                        &r,
                    );
                }
            }
            for parameter in op["parameters"].as_array().into_iter().flatten() {
                if parameter["in"] != "query" {
                    continue;
                }
                parameters += 1;
                let name = parameter["name"].as_str().unwrap();
                let integer = contract.resolve(&parameter["schema"])["type"] == "integer";
                for value in contract.candidates(&parameter["schema"]) {
                    let text = match &value {
                        Value::String(s) => s.clone(),
                        Value::Null => continue,
                        other => other.to_string(),
                    };
                    // A query holds text: what the schema reads in it is a whole number
                    // only when the text is one.
                    let as_sent = match text.parse::<i64>() {
                        Ok(n) if integer => Value::from(n),
                        _ => Value::String(text.clone()),
                    };
                    let query = form_urlencoded::Serializer::new(String::new())
                        .append_pair(name, &text)
                        .finish();
                    let r = app
                        .call(
                            method.clone(),
                            &format!("{path}?{query}"),
                            Some(key),
                            Some(&t.org_id.to_string()),
                            None,
                        )
                        .await;
                    let allowed = contract.allows(&parameter["schema"], &as_sent);
                    sent += 1;
                    judge(&mut findings, &what, name, &value, allowed, &r);
                }
            }
        }
    }
    assert!(bodies >= 10, "{bodies} bodies");
    assert!(sent >= 2_000, "{sent} requests");
    assert!(parameters >= 15, "{parameters} query parameters");
    eprintln!("{bodies} bodies, {parameters} query parameters, {sent} requests");
    assert!(
        findings.is_empty(),
        "{} disagreements:\n{}",
        findings.len(),
        findings.join("\n")
    );
}
