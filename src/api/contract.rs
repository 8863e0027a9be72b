//! What the OpenAPI document says beyond the types: every limit the server enforces, each
//! taken from the constant the validator checks ([`RequestBody::RULES`], [`params`], the
//! tables below); the headers every answer carries; and links from each create to the
//! operations on what it created.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayItems, KnownFormat, ObjectBuilder, Schema, SchemaFormat, SchemaType,
    Type,
};
use utoipa::openapi::security::{ApiKey as ApiKeyScheme, ApiKeyValue, SecurityScheme};
use utoipa::openapi::server::ServerBuilder;
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{OpenApi, Ref, RefOr, Required};
use utoipa::{Modify, OpenApi as _, ToSchema};

use super::{agent, api_key, connection, conversation, file, named, realtime, task};
use crate::error::Problem;
use crate::http::{RequestBody, Rule, TextRule, LIMIT, OFFSET, SEARCH, TIME_MAX};
use crate::listener::MAX_HEAD_BYTES;
use crate::settings::Settings;

/// An id as the API writes them ([`crate::http::parse_id`]).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Siesta External API", description = "Work with one organization's agents, tasks, files and audit data."),
    modifiers(&SecurityAddon),
    components(schemas(Problem)),
    tags(
        (name = "Agent", description = "Agents, and talking to them over HTTP or a realtime session."),
        (name = "ApiKey", description = "The organization's API keys (admin): list, create, rotate, delete. Values are shown once."),
        (name = "AuditLog", description = "What happened in the organization, newest first, as JSON pages or one CSV file (admin)."),
        (name = "Connection", description = "Connections to outside systems; a private one is seen only by its creator's keys."),
        (name = "Conversation", description = "The transcripts of conversations with agents."),
        (name = "DataSourceCollection", description = "Data source collections: read with `read`, created with `admin`."),
        (name = "File", description = "Temporary files, given to agents as context, gone once they expire."),
        (name = "Me", description = "The key that makes the request."),
        (name = "Task", description = "Tasks, each in one of the organization's workspaces."),
        (name = "TaskWorkspace", description = "The places an organization's tasks live."),
    ),
    security(("ApiKey" = [], "OrgId" = [])),
)]
struct ApiDoc;

/// The document's root, before the routes add their operations.
pub(super) fn base() -> OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "ApiKey",
            SecurityScheme::ApiKey(ApiKeyScheme::Header(ApiKeyValue::with_description(
                "X-Api-Key",
                "Your integration's API key (sai_live_… or sai_test_…).",
            ))),
        );
        components.add_security_scheme(
            "OrgId",
            SecurityScheme::ApiKey(ApiKeyScheme::Header(ApiKeyValue::with_description(
                "X-Org-Id",
                "The id of the organization the key belongs to.",
            ))),
        );
    }
}

const UUID: &str = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";
const UUID_LEN: usize = 36;

/// A body's rules, by field.
type Rules = &'static [(&'static str, Rule)];

/// The JSON bodies the API reads, each with its rules. A body missing here is a startup
/// panic, so a new one cannot go undocumented.
fn bodies() -> Vec<(Cow<'static, str>, Rules)> {
    fn of<T: RequestBody + ToSchema>() -> (Cow<'static, str>, Rules) {
        (T::name(), T::RULES)
    }
    vec![
        of::<agent::NewAgent>(),
        of::<agent::AgentUpdate>(),
        of::<api_key::NewApiKey>(),
        of::<api_key::Rotation>(),
        of::<connection::NewConnection>(),
        of::<conversation::NewMessage>(),
        of::<named::NewNamed>(),
        of::<realtime::NewRealtimeSession>(),
        of::<task::NewTask>(),
        of::<task::TaskUpdate>(),
    ]
}

/// A limit of something the server answers: text up to a length, a whole number within
/// bounds, a list of at most so many items.
#[derive(Clone, Copy)]
enum Bound {
    Length(usize),
    Whole(i64, i64),
    Items(usize),
}

/// The longest organization name, as `siesta org create` checks it.
const ORG_NAME_MAX: usize = 200;
/// Texts the server writes itself, each far under its bound: a problem's `type`, `title`
/// and `code`, an audit record's `action` and `actor`, a validation message.
const WORD_MAX: usize = 64;
const SENTENCE_MAX: usize = 500;
/// A problem's `detail`: one of the server's sentences, or "Not valid: " and at most 20 field
/// names of at most 64 characters (`FieldErrors::check`).
const DETAIL_MAX: usize = 2_000;
/// What a validation error says of one field: a few messages at most.
const MESSAGES_MAX: usize = 10;

/// What the server answers, by schema and field, for the fields that the types do not bound:
/// each bound is the rule its input was checked against, or what the server makes.
fn answers(settings: &Settings) -> Vec<(&'static str, &'static str, Bound)> {
    let text = |rule: TextRule| Bound::Length(rule.max);
    let rate = Bound::Whole(1, i64::from(crate::duration::MAX_RATE_LIMIT));
    let file_bytes = i64::try_from(settings.max_file_bytes).unwrap_or(i64::MAX);
    vec![
        ("Agent", "name", text(named::NAME)),
        ("Agent", "description", text(named::DESCRIPTION)),
        ("Agent", "instructions", text(agent::INSTRUCTIONS)),
        ("Agent", "model", text(agent::MODEL)),
        ("Named", "name", text(named::NAME)),
        ("Named", "description", text(named::DESCRIPTION)),
        ("Task", "title", text(task::TITLE)),
        ("Task", "description", text(task::DESCRIPTION)),
        ("Connection", "name", text(named::NAME)),
        ("Connection", "type", Bound::Length(connection::KIND_MAX)),
        (
            "KeyRecord",
            "name",
            Bound::Length(crate::lifecycle::NAME_MAX),
        ),
        ("KeyRecord", "hint", Bound::Length(crate::key::KEY_LEN)),
        ("KeyRecord", "rateLimit", rate),
        ("IssuedKey", "key", Bound::Length(crate::key::KEY_LEN)),
        ("Me", "name", Bound::Length(crate::lifecycle::NAME_MAX)),
        ("Me", "hint", Bound::Length(crate::key::KEY_LEN)),
        ("Me", "orgName", Bound::Length(ORG_NAME_MAX)),
        ("Me", "rateLimit", rate),
        ("StoredFile", "name", Bound::Length(file::NAME_MAX)),
        (
            "StoredFile",
            "contentType",
            Bound::Length(file::CONTENT_TYPE_MAX),
        ),
        ("StoredFile", "size", Bound::Whole(0, file_bytes)),
        (
            "FileUpload",
            "file",
            Bound::Length(settings.max_file_bytes as usize),
        ),
        (
            "Conversation",
            "messages",
            Bound::Items(settings.max_conversation_messages as usize),
        ),
        (
            "RealtimeSessionCreated",
            "clientSecret",
            Bound::Length(realtime::CLIENT_SECRET_LEN),
        ),
        ("AuditRecord", "action", Bound::Length(WORD_MAX)),
        ("AuditRecord", "actor", Bound::Length(WORD_MAX)),
        (
            "AuditRecord",
            "keyName",
            Bound::Length(crate::lifecycle::NAME_MAX),
        ),
        // The request's method and path: they came in its head.
        ("AuditRecord", "method", Bound::Length(MAX_HEAD_BYTES)),
        ("AuditRecord", "path", Bound::Length(MAX_HEAD_BYTES)),
        ("AuditRecord", "requestId", Bound::Length(REQUEST_ID_MAX)),
        ("AuditRecord", "targetId", Bound::Length(UUID_LEN)),
        ("AuditRecord", "status", Bound::Whole(100, 599)),
        ("Problem", "type", Bound::Length(WORD_MAX)),
        ("Problem", "title", Bound::Length(WORD_MAX)),
        ("Problem", "code", Bound::Length(WORD_MAX)),
        ("Problem", "detail", Bound::Length(DETAIL_MAX)),
        ("Problem", "requestId", Bound::Length(REQUEST_ID_MAX)),
        ("Problem", "status", Bound::Whole(400, 599)),
    ]
}

/// A request id as the server keeps or makes it (`context::sane_request_id`).
const REQUEST_ID_MAX: usize = 64;

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

/// The problem answers every operation can give, named once in `components.responses`.
const PROBLEMS: [(&str, &str, &str); 12] = [
    ("400", "BadRequest", "Not valid: `validation_error` (with `errors` by field or parameter), `invalid_json`, or `credentials_in_url`."),
    ("401", "Unauthorized", "`missing_api_key`, `invalid_api_key`, `expired_api_key` or `missing_org_id`."),
    ("403", "Forbidden", "`invalid_org_id`, `org_access_denied`, `key_owner_not_member` or `insufficient_scope`."),
    ("404", "NotFound", "`not_found`: no such object, or it belongs to another organization."),
    ("409", "Conflict", "`conflict`: the change collides with the current state, such as a key name already in use, a key already rotated, or a conversation that is full."),
    ("413", "PayloadTooLarge", "`payload_too_large`: the body is over its limit."),
    ("415", "UnsupportedMediaType", "`unsupported_media_type`: a JSON body without `Content-Type: application/json`."),
    ("429", "TooManyRequests", "`rate_limited`: wait for `Retry-After` seconds."),
    ("500", "InternalError", "`internal_error`: the server could not complete the request."),
    ("502", "BadGateway", "`provider_error`: the model provider failed."),
    ("503", "ServiceUnavailable", "`service_unavailable`: the server could not complete the request in time."),
    ("504", "GatewayTimeout", "`provider_timeout`: the model provider did not answer in time."),
];

/// Adds to every operation the problem answers it can give, as references to shared
/// responses: the router decides what exists, this decides how refusals look.
fn document_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

    let components = doc.components.get_or_insert_with(Default::default);
    for (_, name, description) in PROBLEMS {
        let response = ResponseBuilder::new().description(description).content(
            crate::error::PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        );
        components
            .responses
            .insert(name.to_owned(), RefOr::T(response.build()));
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        let talks_to_model = path.ends_with("/response");
        for (method, op) in methods(item) {
            let writes = !matches!(method, "get" | "head");
            let has_body = op.request_body.is_some();
            for (status, name, _) in PROBLEMS {
                let applies = match status {
                    "413" | "415" => has_body,
                    "409" => writes,
                    "502" | "504" => talks_to_model,
                    _ => true,
                };
                if applies {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| {
                            RefOr::Ref(Ref::new(format!("#/components/responses/{name}")))
                        });
                }
            }
        }
    }
}

/// Adds limits, headers and links to the document the routes made.
pub fn complete(doc: &mut OpenApi, settings: &Settings) {
    document_errors(doc);
    tag_and_name_ids(doc);
    describe_successes(doc);
    share_list_items(doc);
    constrain_bodies(doc);
    constrain_answers(doc, settings);
    constrain_formats(doc);
    constrain_parameters(doc);
    declare_headers(doc);
    declare_tags_and_server(doc);
    link_creates(doc);
}

/// A path's operations, each with its method.
pub(super) fn methods(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("patch", &mut item.patch),
        ("head", &mut item.head),
    ]
    .into_iter()
    .filter_map(|(method, op)| Some((method, op.as_mut()?)))
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    methods(item).map(|(_, op)| op)
}

fn is(t: &SchemaType, wanted: Type) -> bool {
    match t {
        SchemaType::Type(t) => *t == wanted,
        SchemaType::Array(types) => types.contains(&wanted),
        SchemaType::AnyValue => false,
    }
}

/// Visits every schema inside `schema` (properties, items, members of `oneOf` and `allOf`,
/// map values and names), `schema` included; references are left to their components.
fn walk(schema: &mut Schema, visit: &mut dyn FnMut(&mut Schema)) {
    visit(schema);
    match schema {
        Schema::Object(o) => {
            for property in o.properties.values_mut() {
                walk_ref(property, visit);
            }
            if let Some(AdditionalProperties::RefOr(extra)) = o.additional_properties.as_deref_mut()
            {
                walk_ref(extra, visit);
            }
            if let Some(names) = o.property_names.as_deref_mut() {
                walk(names, visit);
            }
        }
        Schema::Array(a) => {
            if let ArrayItems::RefOrSchema(items) = &mut a.items {
                walk_ref(items, visit);
            }
        }
        Schema::OneOf(one) => one.items.iter_mut().for_each(|s| walk_ref(s, visit)),
        Schema::AllOf(all) => all.items.iter_mut().for_each(|s| walk_ref(s, visit)),
        Schema::AnyOf(any) => any.items.iter_mut().for_each(|s| walk_ref(s, visit)),
        _ => {}
    }
}

fn walk_ref(schema: &mut RefOr<Schema>, visit: &mut dyn FnMut(&mut Schema)) {
    if let RefOr::T(schema) = schema {
        walk(schema, visit);
    }
}

/// Every schema of the document: components, parameters, bodies and answers.
fn walk_document(doc: &mut OpenApi, visit: &mut dyn FnMut(&mut Schema)) {
    if let Some(components) = doc.components.as_mut() {
        for schema in components.schemas.values_mut() {
            walk_ref(schema, visit);
        }
    }
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            for parameter in op.parameters.iter_mut().flatten() {
                if let Some(schema) = parameter.schema.as_mut() {
                    walk_ref(schema, visit);
                }
            }
            let bodies = op
                .request_body
                .iter_mut()
                .flat_map(|b| b.content.values_mut());
            let answers = op
                .responses
                .responses
                .values_mut()
                .filter_map(|r| match r {
                    RefOr::T(r) => Some(r.content.values_mut()),
                    RefOr::Ref(_) => None,
                })
                .flatten();
            for content in bodies.chain(answers) {
                if let Some(schema) = content.schema.as_mut() {
                    walk_ref(schema, visit);
                }
            }
        }
    }
}

/// States a rule on the schema of one field.
fn apply_rule(schema: &mut Schema, rule: Rule) {
    match (schema, rule) {
        (Schema::Object(o), Rule::Text(text)) => {
            o.min_length = (text.min > 0).then_some(text.min);
            o.max_length = Some(text.max);
            o.pattern = Some(text.chars.pattern().to_owned());
        }
        (Schema::Object(o), Rule::Grammar { pattern, max }) => {
            o.min_length = Some(1);
            o.max_length = Some(max);
            o.pattern = Some(pattern.to_owned());
        }
        (Schema::Object(o), Rule::Whole { min, max }) => {
            o.minimum = Some(min.into());
            o.maximum = Some(max.into());
        }
        (Schema::Array(a), Rule::Items(max)) => a.max_items = Some(max),
        (_, rule) => panic!("{rule:?} does not fit its field's schema"),
    }
}

/// States a bound on what the server answers in one field.
fn apply_bound(schema: &mut Schema, bound: Bound) {
    match (schema, bound) {
        (Schema::Object(o), Bound::Length(max)) => o.max_length = Some(max),
        (Schema::Object(o), Bound::Whole(min, max)) => {
            o.minimum = Some(min.into());
            o.maximum = Some(max.into());
        }
        (Schema::Array(a), Bound::Items(max)) => a.max_items = Some(max),
        _ => panic!("a bound that does not fit its field's schema"),
    }
}

/// The schema of a field of a component schema (through `allOf`), when it is written out.
fn field<'a>(schema: &'a mut RefOr<Schema>, name: &str) -> Option<&'a mut Schema> {
    let property = match schema {
        RefOr::T(Schema::Object(o)) => o.properties.get_mut(name),
        RefOr::T(Schema::AllOf(all)) => all.items.iter_mut().find_map(|item| match item {
            RefOr::T(Schema::Object(o)) => o.properties.get_mut(name),
            _ => None,
        }),
        _ => None,
    }?;
    match property {
        // `Option<T>` written as one of `null` and `T`.
        RefOr::T(Schema::OneOf(one)) => one.items.iter_mut().find_map(|s| match s {
            RefOr::T(Schema::Object(o)) if is(&o.schema_type, Type::Null) => None,
            RefOr::T(s) => Some(s),
            RefOr::Ref(_) => None,
        }),
        RefOr::T(s) => Some(s),
        RefOr::Ref(_) => None,
    }
}

/// The names of the JSON schemas operations take as bodies.
fn body_names(doc: &OpenApi) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for item in doc.paths.paths.values() {
        let ops = [&item.get, &item.put, &item.post, &item.delete, &item.patch];
        for op in ops.into_iter().flatten() {
            let Some(body) = &op.request_body else {
                continue;
            };
            let Some(content) = body.content.get("application/json") else {
                continue;
            };
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
    names
}

/// Every field of every JSON body gets the rule the server checks it against.
fn constrain_bodies(doc: &mut OpenApi) {
    let names = body_names(doc);
    let bodies = bodies();
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for name in names {
        let (_, rules) = bodies
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("contract::bodies() lacks the body {name}"));
        let schema = components.schemas.get_mut(&name).expect("a body's schema");
        for (field_name, rule) in rules.iter() {
            let field = field(schema, field_name)
                .unwrap_or_else(|| panic!("{name} has no field {field_name}"));
            apply_rule(field, *rule);
        }
    }
}

/// What the server answers, bounded: the table of [`answers`], each list's page, and each
/// validation error's messages.
fn constrain_answers(doc: &mut OpenApi, settings: &Settings) {
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for (name, field_name, bound) in answers(settings) {
        let Some(schema) = components.schemas.get_mut(name) else {
            panic!("no schema {name}");
        };
        let field =
            field(schema, field_name).unwrap_or_else(|| panic!("{name} has no field {field_name}"));
        apply_bound(field, bound);
    }
    for (name, schema) in components.schemas.iter_mut() {
        if name.starts_with("List_") {
            let page = [
                ("offset", Bound::Whole(OFFSET.min, OFFSET.max)),
                ("limit", Bound::Whole(LIMIT.min, LIMIT.max)),
                ("total", Bound::Whole(0, i64::MAX)),
                ("items", Bound::Items(LIMIT.max as usize)),
            ];
            for (field_name, bound) in page {
                apply_bound(field(schema, field_name).expect("a list's field"), bound);
            }
        }
    }
    if let Some(problem) = components.schemas.get_mut("Problem") {
        bound_messages(problem);
    }
}

/// A validation error's `errors`: field names as the server labels them, each with a few
/// messages of one sentence.
fn bound_messages(problem: &mut RefOr<Schema>) -> Option<()> {
    let Schema::Object(errors) = field(problem, "errors")? else {
        return None;
    };
    apply_bound(
        errors.property_names.as_deref_mut()?,
        Bound::Length(WORD_MAX),
    );
    let Some(AdditionalProperties::RefOr(RefOr::T(messages))) =
        errors.additional_properties.as_deref_mut()
    else {
        return None;
    };
    apply_bound(messages, Bound::Items(MESSAGES_MAX));
    let Schema::Array(messages) = messages else {
        return None;
    };
    let ArrayItems::RefOrSchema(message) = &mut messages.items else {
        return None;
    };
    let RefOr::T(message) = message.as_mut() else {
        return None;
    };
    apply_bound(message, Bound::Length(SENTENCE_MAX));
    Some(())
}

/// A list's items are the component of their type, by reference (utoipa writes the type out
/// again in each `List_<Type>`).
fn share_list_items(doc: &mut OpenApi) {
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    let names: BTreeSet<String> = components.schemas.keys().cloned().collect();
    for (name, schema) in components.schemas.iter_mut() {
        let Some(item) = name.strip_prefix("List_").filter(|i| names.contains(*i)) else {
            continue;
        };
        if let Some(Schema::Array(a)) = field(schema, "items") {
            a.items = ArrayItems::RefOrSchema(Box::new(RefOr::Ref(Ref::from_schema_name(item))));
        }
    }
}

/// Ids and times, wherever they are: an id is 36 characters of its pattern, a time at most
/// [`TIME_MAX`] characters (a pattern cannot say which days a month has).
fn constrain_formats(doc: &mut OpenApi) {
    walk_document(doc, &mut |schema| {
        let Schema::Object(o) = schema else { return };
        if !is(&o.schema_type, Type::String) {
            return;
        }
        match o.format {
            Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)) => {
                o.pattern = Some(UUID.to_owned());
                o.min_length = Some(UUID_LEN);
                o.max_length = Some(UUID_LEN);
            }
            Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)) => {
                o.max_length = Some(TIME_MAX);
            }
            _ => {}
        }
    });
}

/// Each operation is tagged with its resource, the path's first segment (`/api/v1/Agent/…`
/// is `Agent`), and declares the ids its path names: every path parameter is an id
/// ([`crate::http::PathId`]), so the routes need not repeat either.
fn tag_and_name_ids(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let resource = path.trim_start_matches("/api/v1/").split('/').next();
        let ids: Vec<&str> = path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for op in operations(item) {
            op.tags = resource.map(|r| vec![r.to_owned()]);
            if ids.is_empty() {
                continue;
            }
            let parameters = op.parameters.get_or_insert_with(Vec::new);
            for (at, name) in ids.iter().enumerate() {
                if parameters.iter().any(|p| p.name == *name) {
                    continue;
                }
                let schema = ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)));
                let parameter = ParameterBuilder::new()
                    .name(*name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(schema))
                    .build();
                parameters.insert(at, parameter);
            }
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

/// Free-text query parameters (`Search`, `Action`) get [`SEARCH`]; ids and times
/// were bounded with every other.
fn constrain_parameters(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            for parameter in op.parameters.iter_mut().flatten() {
                if let Some(RefOr::T(schema @ Schema::Object(_))) = &mut parameter.schema {
                    let Schema::Object(o) = &*schema else {
                        continue;
                    };
                    if is(&o.schema_type, Type::String)
                        && o.format.is_none()
                        && o.enum_values.is_none()
                    {
                        apply_rule(schema, Rule::Text(SEARCH));
                    }
                }
            }
        }
    }
}

/// A header's schema: text of at most `max` characters, in a pattern when it has one.
fn text_header(description: &str, max: usize, pattern: Option<&str>) -> Header {
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(max))
        .pattern(pattern);
    HeaderBuilder::new()
        .schema(schema)
        .description(Some(description))
        .build()
}

/// Whether an answer of this status carries a header.
type Applies = fn(&str) -> bool;

/// The headers the server sends, by name, and whether an answer of this status carries it.
fn headers() -> Vec<(&'static str, Header, Applies)> {
    let every = |_: &str| true;
    // Sent once a request has passed authentication, whatever came of it then: not on a
    // refusal of the credentials (401, 403) nor on a timeout (503).
    let authenticated = |status: &str| !matches!(status, "401" | "403" | "503");
    let limited = |status: &str| status == "429";
    let policy = r#"^"(api-key|failed-auth)";q=[0-9]+;w=60$"#;
    let left = r#"^"(api-key|failed-auth)";r=[0-9]+;t=[0-9]+$"#;
    let retry_after = HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
                .minimum(Some(1))
                // A refused request waits for one request's share of the minute at most.
                .maximum(Some(60)),
        )
        .description(Some("Whole seconds to wait before trying again, 1 to 60."))
        .build();
    vec![
        (
            "X-Request-Id",
            text_header(
                "The request's id: the caller's `X-Request-Id` if it is 1 to 64 characters of \
                 `[A-Za-z0-9._:-]` with no run of 40 or more letters and digits, else a new one.",
                REQUEST_ID_MAX,
                Some("^[A-Za-z0-9._:-]{1,64}$"),
            ),
            every,
        ),
        (
            "Access-Control-Allow-Origin",
            text_header(
                "Only when the request's `Origin` is one of the origins the server allows \
                 (`SIESTA_CORS_ORIGINS`, none by default): that origin, never `*`. Other \
                 origins get no CORS headers, so a browser refuses them the answer.",
                MAX_HEAD_BYTES,
                None,
            ),
            every,
        ),
        (
            "RateLimit-Policy",
            text_header(
                "The quota that applies: `\"api-key\";q=600;w=60` for the key's requests per \
                 minute (`\"failed-auth\"` for the client address's failed attempts).",
                64,
                Some(policy),
            ),
            authenticated,
        ),
        (
            "RateLimit",
            text_header(
                "What is left of it: `\"api-key\";r=599;t=1`, `r` requests left and `t` seconds \
                 until the burst is full again.",
                64,
                Some(left),
            ),
            authenticated,
        ),
        ("Retry-After", retry_after, limited),
    ]
}

/// Every answer, success or problem, declares the headers the server sends with it: once
/// here for all operations, on the shared problem answers and on each success.
fn declare_headers(doc: &mut OpenApi) {
    let headers = headers();
    let add = |status: &str, response: &mut utoipa::openapi::Response| {
        for (name, header, applies) in &headers {
            if applies(status) {
                response.headers.insert((*name).to_owned(), header.clone());
            }
        }
    };
    if let Some(components) = doc.components.as_mut() {
        for (status, name, _) in PROBLEMS {
            if let Some(RefOr::T(response)) = components.responses.get_mut(name) {
                add(status, response);
            }
        }
    }
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            for (status, response) in op.responses.responses.iter_mut() {
                if let RefOr::T(response) = response {
                    add(status, response);
                }
            }
        }
    }
}

/// Each tag an operation uses, declared (with its description where `ApiDoc` gives one);
/// and the server: this one, where the document is
/// served (its address is the operator's, so it is relative).
fn declare_tags_and_server(doc: &mut OpenApi) {
    let mut names = BTreeSet::new();
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            names.extend(op.tags.iter().flatten().cloned());
        }
    }
    let tags = doc.tags.get_or_insert_with(Vec::new);
    for name in names {
        if !tags.iter().any(|t| t.name == name) {
            tags.push(TagBuilder::new().name(name).build());
        }
    }
    // The External API is for integrations outside the organization's network.
    let audience = ExtensionsBuilder::new().add("x-internal", false).build();
    doc.servers = Some(vec![ServerBuilder::new()
        .url("/")
        .description(Some(
            "The server that serves this document, in production or any other environment \
             (live and test are kinds of key, not of server).",
        ))
        .extensions(Some(audience))
        .build()]);
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
