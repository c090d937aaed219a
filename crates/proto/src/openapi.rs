//! The OpenAPI 3.1 document of the HTTP/JSON front door, generated from the
//! descriptor set: paths from [`crate::json::ROUTES`], one schema per message
//! the routes carry (proto3 JSON names and types), the protos' comments as
//! descriptions. Committed as `docs/openapi.json` (a test fails when it is
//! stale) and served at `GET /v1/openapi.json`.
//!
//! Hand-written over a converter crate: the few available (protoc plugins,
//! grpc-gateway's `openapiv2`) need `protoc` or Go and emit Swagger 2.0,
//! while this walks the descriptors protox already compiled, in ~250 lines.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use prost_reflect::{
    Cardinality, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor, MethodDescriptor,
};
use serde_json::{Map, Value, json};

use crate::json::{
    EXCHANGE_SERVICE, OPENAPI_PATH, ROUTES, Route, STATUS_MESSAGE, TIMEOUT_HEADER, pool,
};

/// The error details the exchange sends, documented beside `Status`.
const DETAIL_MESSAGES: &[&str] = &[
    "google.rpc.ErrorInfo",
    "google.rpc.BadRequest",
    "google.rpc.RetryInfo",
];

/// The schema name of the error body.
const ERROR_SCHEMA: &str = "Error";

/// The document, as JSON.
pub fn openapi_document() -> Value {
    let mut comments = Comments::default();
    let mut wanted: Vec<MessageDescriptor> = Vec::new();
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for route in ROUTES {
        let method = route.method();
        wanted.push(method.input());
        wanted.push(method.output());
        let operation = operation(route, &method, &mut comments);
        paths
            .entry(route.path) // already in OpenAPI's `{name}` form
            .or_default()
            .insert(route.method.as_str().to_lowercase(), operation);
    }
    paths.entry(OPENAPI_PATH).or_default().insert(
        "get".into(),
        json!({
            "operationId": "GetOpenApiDocument",
            "summary": "This document.",
            "tags": ["Exchange"],
            "responses": {
                "200": {
                    "description": "The OpenAPI 3.1 document of the HTTP/JSON routes.",
                    "content": {"application/json": {"schema": {"type": "object"}}}
                },
                "default": error_response(),
            }
        }),
    );
    for name in std::iter::once(STATUS_MESSAGE).chain(DETAIL_MESSAGES.iter().copied()) {
        if let Some(message) = pool().get_message_by_name(name) {
            wanted.push(message);
        }
    }

    let mut schemas = Map::new();
    let mut seen = BTreeSet::new();
    while let Some(message) = wanted.pop() {
        if !seen.insert(message.full_name().to_owned()) || well_known(&message).is_some() {
            continue;
        }
        let schema = message_schema(&message, &mut comments, &mut wanted);
        schemas.insert(message.full_name().to_owned(), schema);
    }
    // The Status schema with the refusal's receipt beside its fields (not
    // an `allOf`: Status admits no other members).
    let mut error = schemas
        .get(STATUS_MESSAGE)
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    error["properties"]["receipt"] = describe(
        json!({"$ref": schema_ref("tongban.v1.AuditReceipt")}),
        "The audit entry that recorded the refusal, when one did (gRPC's \
         `tongban-receipt-bin` trailer); prove it with `POST /v1/receipts:prove`."
            .into(),
    );
    error["description"] = Value::String(
        "A refused or failed call: the google.rpc.Status of its gRPC code, with the same \
         google.rpc details (ErrorInfo, BadRequest, RetryInfo) a gRPC caller gets. The HTTP \
         status is that code's: 400 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 403 \
         PERMISSION_DENIED, 404 NOT_FOUND, 429 RESOURCE_EXHAUSTED (with Retry-After), 503 \
         UNAVAILABLE, 504 DEADLINE_EXCEEDED, 500 INTERNAL; 413 for a body over the size \
         limit, 405 and 415 for a wrong method or content type."
            .into(),
    );
    schemas.insert(ERROR_SCHEMA.into(), error);

    let service = pool().get_service_by_name(EXCHANGE_SERVICE);
    let description = service
        .as_ref()
        .and_then(|s| comments.of(&s.parent_file(), s.path()))
        .unwrap_or_default();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tongban Exchange (HTTP/JSON)",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "{description}\n\nThe HTTP/JSON form of `{EXCHANGE_SERVICE}`, served on the exchange's \
                 gRPC port (HTTP/1.1 or HTTP/2) over the same mutual TLS: the caller is the identity of \
                 its client certificate. Bodies are the canonical proto3 JSON mapping of the messages \
                 in proto/tongban/v1. A `{TIMEOUT_HEADER}` header (e.g. `5S`, `800m`) sets the call's deadline."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}
        },
        "security": [{"mutualTLS": []}],
        "tags": [{"name": "Exchange", "description": "Evidence for a case, and what a caller may ask."}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "mutualTLS": {
                    "type": "mutualTLS",
                    "description": "A client certificate issued by the deployment's CA, naming the \
                        calling organisation and unit in its SPIFFE URI."
                }
            },
            "schemas": schemas
        }
    })
}

/// The document as committed and served: pretty-printed, newline-terminated.
pub fn openapi_json() -> String {
    let mut text = serde_json::to_string_pretty(&openapi_document()).unwrap_or_default();
    text.push('\n');
    text
}

fn schema_ref(name: &str) -> String {
    format!("#/components/schemas/{name}")
}

fn error_response() -> Value {
    json!({
        "description": "The call was refused or failed: google.rpc.Status with details.",
        "content": {"application/json": {"schema": {"$ref": schema_ref(ERROR_SCHEMA)}}}
    })
}

fn operation(route: &Route, method: &MethodDescriptor, comments: &mut Comments) -> Value {
    let input = method.input();
    let mut parameters = Vec::new();
    if let Some((_, rest)) = route.path.split_once('{') {
        let name = rest.trim_end_matches('}');
        parameters.push(parameter(&input, name, "path", true, comments));
    }
    for name in route.query {
        parameters.push(parameter(&input, name, "query", false, comments));
    }
    parameters.push(json!({
        "name": TIMEOUT_HEADER,
        "in": "header",
        "required": false,
        "description": "The call's deadline, in gRPC's `grpc-timeout` syntax: digits and a unit (H, M, S, m, u, n), e.g. `5S`. (A `grpc-timeout` header itself is refused on these routes.) Without it, each department's own timeout bounds the call.",
        "schema": {"type": "string", "pattern": "^[0-9]{1,8}[HMSmun]$"}
    }));
    let mut op = json!({
        "operationId": route.rpc,
        "summary": comments.of(&method.parent_file(), method.path()).unwrap_or_default(),
        "description": format!("gRPC: `{EXCHANGE_SERVICE}/{}`.", route.rpc),
        "tags": ["Exchange"],
        "parameters": parameters,
        "responses": {
            "200": {
                "description": format!("`{}`", method.output().full_name()),
                "content": {"application/json": {"schema": {"$ref": schema_ref(method.output().full_name())}}}
            },
            "default": error_response(),
        }
    });
    if route.body {
        op["requestBody"] = json!({
            "required": true,
            "description": format!("`{}`", input.full_name()),
            "content": {"application/json": {"schema": {"$ref": schema_ref(input.full_name())}}}
        });
    }
    op
}

fn parameter(
    input: &MessageDescriptor,
    name: &str,
    place: &str,
    required: bool,
    comments: &mut Comments,
) -> Value {
    let description = input
        .get_field_by_name(name)
        .and_then(|f| comments.of(&f.parent_file(), f.path()))
        .unwrap_or_else(|| format!("`{}.{name}`", input.full_name()));
    json!({
        "name": name,
        "in": place,
        "required": required,
        "description": description,
        "schema": {"type": "string"}
    })
}

fn message_schema(
    message: &MessageDescriptor,
    comments: &mut Comments,
    wanted: &mut Vec<MessageDescriptor>,
) -> Value {
    let mut properties = Map::new();
    for field in message.fields() {
        let mut schema = field_schema(&field, wanted);
        let mut description = comments
            .of(&field.parent_file(), field.path())
            .unwrap_or_default();
        if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic()) {
            let members: Vec<String> = oneof.fields().map(|f| f.json_name().to_owned()).collect();
            if !description.is_empty() {
                description.push_str("\n\n");
            }
            description.push_str(&format!(
                "One of `{}`: at most one of {} is set.",
                oneof.name(),
                members.join(", ")
            ));
        }
        if !description.is_empty() {
            schema = describe(schema, description);
        }
        properties.insert(field.json_name().to_owned(), schema);
    }
    let mut schema = json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    });
    if let Some(description) = comments.of(&message.parent_file(), message.path()) {
        schema["description"] = Value::String(description);
    }
    schema
}

/// Adds a description; beside a `$ref`, wraps it (3.1 allows siblings, but
/// some tools still drop them).
fn describe(schema: Value, description: String) -> Value {
    if schema.get("$ref").is_some() {
        json!({"allOf": [schema], "description": description})
    } else {
        let mut schema = schema;
        schema["description"] = Value::String(description);
        schema
    }
}

fn field_schema(field: &FieldDescriptor, wanted: &mut Vec<MessageDescriptor>) -> Value {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return json!({"type": "object"});
        };
        let value = entry.map_entry_value_field();
        return json!({"type": "object", "additionalProperties": kind_schema(&value.kind(), wanted)});
    }
    let item = kind_schema(&field.kind(), wanted);
    if field.cardinality() == Cardinality::Repeated {
        json!({"type": "array", "items": item})
    } else {
        item
    }
}

fn kind_schema(kind: &Kind, wanted: &mut Vec<MessageDescriptor>) -> Value {
    match kind {
        Kind::Double | Kind::Float => json!({"type": "number"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": 4_294_967_295u64})
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"})
        }
        Kind::Uint64 | Kind::Fixed64 => {
            json!({"type": "string", "format": "uint64", "pattern": "^[0-9]+$"})
        }
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        Kind::Enum(e) => {
            let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
            json!({"type": "string", "enum": names})
        }
        Kind::Message(m) => match well_known(m) {
            Some(schema) => schema,
            None => {
                wanted.push(m.clone());
                json!({"$ref": schema_ref(m.full_name())})
            }
        },
    }
}

/// The proto3 JSON forms of the well-known types.
fn well_known(message: &MessageDescriptor) -> Option<Value> {
    Some(match message.full_name() {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time",
            "description": "RFC 3339, UTC, e.g. `2026-11-30T08:00:00Z`."}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
            "description": "Seconds with an `s` suffix, e.g. `1.5s`."})
        }
        "google.protobuf.FieldMask" => json!({"type": "string",
            "description": "Comma-separated lowerCamelCase field paths, e.g. `eligible,insuredMonths`."}),
        "google.protobuf.Any" => json!({"type": "object",
            "properties": {"@type": {"type": "string"}}, "required": ["@type"],
            "additionalProperties": true,
            "description": "A typed detail: `@type` names its message (e.g. \
                `type.googleapis.com/google.rpc.ErrorInfo`), the other members are its fields."}),
        "google.protobuf.Empty" => json!({"type": "object", "additionalProperties": false}),
        "google.protobuf.Struct" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array"}),
        "google.protobuf.StringValue" => json!({"type": "string"}),
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.BytesValue" => json!({"type": "string", "contentEncoding": "base64"}),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => json!({"type": "integer"}),
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => json!({"type": "string"}),
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => json!({"type": "number"}),
        _ => return None,
    })
}

/// Leading comments by file and descriptor path, read from each file's
/// source info once.
#[derive(Default)]
struct Comments {
    files: HashMap<String, HashMap<Vec<i32>, String>>,
}

impl Comments {
    fn of(&mut self, file: &FileDescriptor, path: &[i32]) -> Option<String> {
        let by_path = self.files.entry(file.name().to_owned()).or_insert_with(|| {
            let mut out = HashMap::new();
            if let Some(info) = &file.file_descriptor_proto().source_code_info {
                for location in &info.location {
                    if let Some(text) = &location.leading_comments {
                        out.insert(location.path.clone(), tidy(text));
                    }
                }
            }
            out
        });
        by_path.get(path).filter(|t| !t.is_empty()).cloned()
    }
}

/// A comment's lines, each trimmed, blank lines kept as paragraph breaks.
fn tidy(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push(if line.is_empty() || lines[i - 1].is_empty() {
                '\n'
            } else {
                ' '
            });
        }
        out.push_str(line);
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn every_route_is_a_path_with_its_schemas_and_the_protos_comments() {
        let doc = openapi_document();
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method.as_str().to_lowercase()];
            assert_eq!(op["operationId"], route.rpc, "{route:?}");
            let output = route.method().output();
            assert!(doc["components"]["schemas"][output.full_name()].is_object());
        }
        let schemas = &doc["components"]["schemas"];
        let lookup = &schemas["tongban.v1.LookupRequest"];
        assert_eq!(lookup["properties"]["evidenceType"]["type"], "string");
        assert!(
            lookup["properties"]["evidenceType"]["description"]
                .as_str()
                .unwrap()
                .contains("hrss.unemployment")
        );
        assert_eq!(lookup["properties"]["fields"]["type"], "string");
        assert_eq!(
            schemas["tongban.v1.AuditReceipt"]["properties"]["index"]["type"],
            "string"
        );
        assert!(schemas["google.rpc.ErrorInfo"].is_object());
        let summary = doc["paths"]["/v1/lookup"]["post"]["summary"]
            .as_str()
            .unwrap();
        assert_eq!(summary, "One evidence type about one subject.");
        // Every reference resolves.
        let text = doc.to_string();
        for piece in text.split("\"#/components/schemas/").skip(1) {
            let name = &piece[..piece.find('"').unwrap()];
            assert!(schemas.get(name).is_some(), "dangling $ref {name}");
        }
    }
}
