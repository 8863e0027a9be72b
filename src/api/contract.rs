//! What the OpenAPI document says beyond the types: the rules the server checks on text
//! and ids, written as patterns a client (or a property-based tester) can check before
//! sending, and links from each create to the operations on what it created.

use std::collections::{BTreeMap, BTreeSet};

use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ArrayItems, KnownFormat, Schema, SchemaFormat, SchemaType, Type};
use utoipa::openapi::{OpenApi, RefOr};

use crate::duration::{DURATION_PATTERN, POSITIVE_DURATION_PATTERN};

/// No control characters but tab, line feed and carriage return, and no bidirectional
/// controls (what `FieldErrors::text` refuses).
const TEXT: &str =
    r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*$";
/// A text query parameter (`Search`, `Action`): no control characters at all, tab and line
/// breaks included, and no bidirectional controls (what `Params::search` refuses).
const QUERY_TEXT: &str = r"^[^\u0000-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*$";
/// As [`TEXT`], with at least one character that is neither a control character nor white
/// space as Rust's `trim` reads it (spelled out: a JavaScript `\s` also takes U+FEFF).
const NOT_BLANK: &str = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u202F\u205F\u2066-\u2069\u3000][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*$";
/// A key name: no control characters, and no white space at either end (what
/// `lifecycle::check_name` checks).
const KEY_NAME: &str = r"^[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u202F\u205F\u2066-\u2069\u3000]([^\u0000-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u202F\u205F\u2066-\u2069\u3000])?$";
/// An id as the API writes them.
const UUID: &str = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Fields with a grammar of their own, by schema and property name.
const SPECIAL: [(&str, &str, &str); 3] = [
    ("NewApiKey", "name", KEY_NAME),
    ("NewApiKey", "expiresIn", POSITIVE_DURATION_PATTERN),
    ("Rotation", "grace", DURATION_PATTERN),
];

/// The document as served. utoipa 5 writes a link's `operationId` as `operation_id` (fixed
/// in utoipa 6); the served document uses the names of the OpenAPI specification.
pub fn to_json(doc: &OpenApi) -> Vec<u8> {
    let mut value = serde_json::to_value(doc).expect("the OpenAPI document serializes");
    if let Some(paths) = value.get_mut("paths").and_then(|p| p.as_object_mut()) {
        let responses = paths
            .values_mut()
            .filter_map(|item| item.as_object_mut())
            .flat_map(|item| item.values_mut())
            .filter_map(|op| op.get_mut("responses").and_then(|r| r.as_object_mut()))
            .flat_map(|responses| responses.values_mut());
        for response in responses {
            let links = response.get_mut("links").and_then(|l| l.as_object_mut());
            for link in links.into_iter().flat_map(|l| l.values_mut()) {
                let Some(link) = link.as_object_mut() else {
                    continue;
                };
                if let Some(id) = link.remove("operation_id") {
                    link.insert("operationId".to_owned(), id);
                }
            }
        }
    }
    serde_json::to_vec(&value).expect("JSON serializes")
}

/// Adds patterns and links to the document the routes made.
pub fn complete(doc: &mut OpenApi) {
    describe_successes(doc);
    constrain_bodies(doc);
    constrain_parameters(doc);
    link_creates(doc);
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
    ]
    .into_iter()
    .flatten()
}

fn is_string(t: &SchemaType) -> bool {
    match t {
        SchemaType::Type(t) => *t == Type::String,
        SchemaType::Array(types) => types.contains(&Type::String),
        SchemaType::AnyValue => false,
    }
}

/// The pattern for a string schema that has none, from its format and length.
fn pattern_for(format: Option<&SchemaFormat>, min_length: Option<usize>) -> Option<&'static str> {
    match format {
        Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)) => Some(UUID),
        Some(_) => None,
        None if min_length.unwrap_or(0) > 0 => Some(NOT_BLANK),
        None => Some(TEXT),
    }
}

fn constrain(schema: &mut RefOr<Schema>, special: Option<&'static str>) {
    match schema {
        RefOr::T(Schema::Object(o)) if is_string(&o.schema_type) && o.pattern.is_none() => {
            o.pattern = special
                .or_else(|| pattern_for(o.format.as_ref(), o.min_length))
                .map(str::to_owned);
        }
        RefOr::T(Schema::Array(a)) => {
            if let ArrayItems::RefOrSchema(items) = &mut a.items {
                constrain(items, None);
            }
        }
        _ => {}
    }
}

/// Every string field of every request body gets the pattern the server checks.
fn constrain_bodies(doc: &mut OpenApi) {
    let mut names = BTreeSet::new();
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            let Some(body) = &op.request_body else {
                continue;
            };
            for content in body.content.values() {
                // A body is a schema by reference, or (when optional) one of null and that.
                let refs = match &content.schema {
                    Some(RefOr::Ref(r)) => vec![r],
                    Some(RefOr::T(Schema::OneOf(one))) => one
                        .items
                        .iter()
                        .filter_map(|item| match item {
                            RefOr::Ref(r) => Some(r),
                            RefOr::T(_) => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                for r in refs {
                    if let Some(name) = r.ref_location.rsplit('/').next() {
                        names.insert(name.to_owned());
                    }
                }
            }
        }
    }
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for name in names {
        let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(&name) else {
            continue;
        };
        for (field, property) in object.properties.iter_mut() {
            let special = SPECIAL
                .iter()
                .find(|(s, f, _)| *s == name && f == field)
                .map(|(_, _, p)| *p);
            constrain(property, special);
        }
    }
}

/// A success answer the route left undescribed says what its status means here.
fn describe_successes(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            for (status, response) in op.responses.responses.iter_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                if !response.description.is_empty() {
                    continue;
                }
                response.description = match status.as_str() {
                    "200" => "OK: the answer below.",
                    "201" => "Created: the new object.",
                    "204" => "Done; no body.",
                    _ => continue,
                }
                .to_owned();
            }
        }
    }
}

/// Path and query parameters get the pattern of their format (ids), or of free text
/// (`Search`, `Action`: no control characters at all, line breaks included). Times keep only their format: a pattern cannot say
/// which days a month has.
fn constrain_parameters(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            for parameter in op.parameters.iter_mut().flatten() {
                if let Some(RefOr::T(Schema::Object(o))) = &mut parameter.schema {
                    let timed = matches!(
                        o.format,
                        Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))
                    );
                    if is_string(&o.schema_type) && o.pattern.is_none() && !timed {
                        let pattern = match &o.format {
                            None => Some(QUERY_TEXT),
                            format => pattern_for(format.as_ref(), None),
                        };
                        o.pattern = pattern.map(str::to_owned);
                    }
                }
            }
        }
    }
}

/// Whether an operation's body may name other objects by id (`conversationId`, `fileIds`):
/// a link can fill in its path, not those, so such operations are not link targets.
fn body_names_ids(op: &Operation, schemas: &BTreeMap<String, RefOr<Schema>>) -> bool {
    let Some(body) = &op.request_body else {
        return false;
    };
    let text = serde_json::to_string(body).unwrap_or_default();
    let referenced = schemas
        .iter()
        .filter(|(name, _)| text.contains(&format!("/{name}\"")))
        .map(|(_, schema)| serde_json::to_string(schema).unwrap_or_default());
    std::iter::once(text.clone())
        .chain(referenced)
        .any(|json| json.contains("\"format\":\"uuid\""))
}

/// The fields of a component schema, through `allOf` too (`IssuedKey` is a `KeyRecord` and
/// a `key`).
fn fields_of(schemas: &BTreeMap<String, RefOr<Schema>>, name: &str) -> Vec<String> {
    match schemas.get(name) {
        Some(RefOr::T(Schema::Object(o))) => o.properties.keys().cloned().collect(),
        Some(RefOr::T(Schema::AllOf(all))) => all
            .items
            .iter()
            .flat_map(|item| match item {
                RefOr::Ref(r) => fields_of(
                    schemas,
                    r.ref_location.rsplit('/').next().unwrap_or_default(),
                ),
                RefOr::T(Schema::Object(o)) => o.properties.keys().cloned().collect(),
                RefOr::T(_) => Vec::new(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Links from what an operation answers to the operations that take it: an object's `id`
/// to the operations under its collection (`POST /Agent` to `GET /Agent/{agentId}`), and
/// a field such as `conversationId` to every operation with a path parameter of that name.
fn link_creates(doc: &mut OpenApi) {
    let schemas = doc
        .components
        .as_ref()
        .map(|c| c.schemas.clone())
        .unwrap_or_default();
    // Path parameter name -> (path, operation id) of each operation that takes it.
    let mut by_parameter: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (path, item) in doc.paths.paths.iter_mut() {
        for op in operations(item) {
            let (Some(id), Some(parameters)) = (&op.operation_id, &op.parameters) else {
                continue;
            };
            if body_names_ids(op, &schemas) {
                continue;
            }
            for p in parameters {
                if path.contains(&format!("{{{}}}", p.name)) {
                    by_parameter
                        .entry(p.name.clone())
                        .or_default()
                        .push((path.clone(), id.clone()));
                }
            }
        }
    }
    let mut plans = Vec::new();
    for (path, item) in doc.paths.paths.iter() {
        // Only what a POST made: a read (`GET /Me` names the calling key) is no invitation
        // to delete what it names.
        if let Some(op) = &item.post {
            for (status, response) in &op.responses.responses {
                if !status.starts_with('2') {
                    continue;
                }
                let RefOr::T(response) = response else {
                    continue;
                };
                let Some(RefOr::Ref(r)) = response
                    .content
                    .get("application/json")
                    .and_then(|c| c.schema.as_ref())
                else {
                    continue;
                };
                let schema = r.ref_location.rsplit('/').next().unwrap_or_default();
                for field in fields_of(&schemas, schema) {
                    for (parameter, targets) in &by_parameter {
                        let under_collection = field == "id"
                            && targets.iter().all(|(p, _)| {
                                p.strip_prefix(path.as_str())
                                    .is_some_and(|rest| rest.starts_with("/{"))
                            });
                        if !(under_collection || field == *parameter) {
                            continue;
                        }
                        for (_, target) in targets {
                            plans.push((
                                path.clone(),
                                status.clone(),
                                target.clone(),
                                parameter.clone(),
                                field.clone(),
                            ));
                        }
                    }
                }
            }
        }
    }
    for (path, status, target, parameter, field) in plans {
        let op = doc
            .paths
            .paths
            .get_mut(&path)
            .and_then(|item| item.post.as_mut());
        let Some(RefOr::T(response)) = op.and_then(|op| op.responses.responses.get_mut(&status))
        else {
            continue;
        };
        let link = LinkBuilder::new()
            .operation_id(target.clone())
            .parameter(parameter, format!("$response.body#/{field}"))
            .build();
        response.links.insert(target, RefOr::T(link));
    }
}
