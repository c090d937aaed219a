//! The HTTP/JSON mapping of `tongban.v1.Exchange`: its routes, and the
//! canonical proto3 JSON form of the messages they carry.
//!
//! JSON is read and written by `prost-reflect` from the same descriptor set
//! the server reflects ([`crate::FILE_DESCRIPTOR_SET`]), so the JSON front
//! door transcodes to and from the very protobuf bytes the gRPC services
//! decode: there is no second set of message types to drift. Well-known
//! types (`Timestamp`, `FieldMask`, `Any` in `google.rpc.Status.details`)
//! take their proto3 JSON forms; 64-bit integers are strings; unknown
//! fields are refused.

use std::sync::LazyLock;

use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions, Value,
};

/// The gRPC service the routes lead to.
pub const EXCHANGE_SERVICE: &str = "tongban.v1.Exchange";

/// The fully-qualified name of the error body's message.
pub const STATUS_MESSAGE: &str = "google.rpc.Status";

/// An HTTP method a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
        }
    }
}

/// One HTTP/JSON route: which RPC it calls and where the request message's
/// fields come from (the JSON body, one path segment, query parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    /// The path; a `{name}` segment binds the request field `name`.
    pub path: &'static str,
    /// The `Exchange` method called.
    pub rpc: &'static str,
    /// The body is the whole request message.
    pub body: bool,
    /// Query parameters, each binding the request field of its name.
    pub query: &'static [&'static str],
}

/// Every HTTP/JSON route of the `Exchange` service.
pub const ROUTES: &[Route] = &[
    Route {
        method: Method::Post,
        path: "/v1/lookup",
        rpc: "Lookup",
        body: true,
        query: &[],
    },
    Route {
        method: Method::Post,
        path: "/v1/gather",
        rpc: "Gather",
        body: true,
        query: &[],
    },
    Route {
        method: Method::Get,
        path: "/v1/matters",
        rpc: "ListMatters",
        body: false,
        query: &[],
    },
    Route {
        method: Method::Get,
        path: "/v1/matters/{matter}",
        rpc: "DescribeMatter",
        body: false,
        query: &[],
    },
    Route {
        method: Method::Get,
        path: "/v1/evidence-types",
        rpc: "ListEvidenceTypes",
        body: false,
        query: &["department"],
    },
    Route {
        method: Method::Get,
        path: "/v1/service-points",
        rpc: "FindServicePoints",
        body: false,
        query: &["matter", "region_code"],
    },
    Route {
        method: Method::Post,
        path: "/v1/receipts:prove",
        rpc: "ProveReceipt",
        body: true,
        query: &[],
    },
];

/// The header an HTTP/JSON call gives its deadline in, with `grpc-timeout`'s
/// syntax (`5S`, `800m`).
pub const TIMEOUT_HEADER: &str = "tongban-timeout";

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

impl Route {
    /// `/tongban.v1.Exchange/<rpc>`: the gRPC path this route calls.
    pub fn grpc_path(&self) -> String {
        format!("/{EXCHANGE_SERVICE}/{}", self.rpc)
    }

    /// Whether `path` is this route's; with the raw (still percent-encoded)
    /// text of its `{name}` segment, if it has one. A bound segment is never
    /// empty and never holds a `/`.
    pub fn matches<'p>(&self, path: &'p str) -> Option<Option<(&'static str, &'p str)>> {
        match self.path.split_once('{') {
            None => (path == self.path).then_some(None),
            Some((prefix, rest)) => {
                let name = rest.strip_suffix('}')?;
                let segment = path.strip_prefix(prefix)?;
                (!segment.is_empty() && !segment.contains('/')).then_some(Some((name, segment)))
            }
        }
    }

    /// The RPC's descriptor in [`pool`].
    pub fn method(&self) -> prost_reflect::MethodDescriptor {
        let found = pool()
            .get_service_by_name(EXCHANGE_SERVICE)
            .and_then(|service| service.methods().find(|m| m.name() == self.rpc));
        // The unit test `every_route_names_an_exchange_method_and_its_bound_fields`
        // checks every route against the descriptors.
        #[allow(clippy::expect_used)]
        found.expect("every route names an Exchange method")
    }
}

/// The descriptors of every tongban message, the well-known types they
/// import, and `google/rpc/error_details.proto` (from `tonic-types`, the
/// details the exchange puts in its errors), so `Any` details print as
/// their messages.
pub fn pool() -> &'static DescriptorPool {
    static POOL: LazyLock<DescriptorPool> = LazyLock::new(build_pool);
    &POOL
}

fn build_pool() -> DescriptorPool {
    // Both sets are compiled into this binary from checked-in protos; the
    // unit tests build the pool, so a set that does not decode or link
    // fails them rather than a server.
    #[allow(clippy::expect_used)]
    let mut pool =
        DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET).expect("tongban's descriptor set");
    #[allow(clippy::expect_used)]
    let details = prost_types::FileDescriptorSet::decode(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .expect("tonic-types' descriptor set");
    // Its `status.proto` declares the `google.rpc.Status` ours already
    // does; the well-known types it imports are added unless present.
    let missing: Vec<_> = details
        .file
        .into_iter()
        .filter(|f| {
            f.name().ends_with("error_details.proto")
                || (f.name().starts_with("google/protobuf/")
                    && pool.get_file_by_name(f.name()).is_none())
        })
        .collect();
    #[allow(clippy::expect_used)]
    pool.add_file_descriptor_protos(missing)
        .expect("google.rpc error details link against the pool");
    pool
}

/// Why a JSON body is not the message it should be.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("the body is not valid JSON for {message}: {error}")]
    Invalid {
        message: String,
        error: serde_json::Error,
    },
    #[error("{message} has no field {field:?}")]
    NoSuchField { message: String, field: String },
    #[error("the response is not a valid {message}: {error}")]
    Decode {
        message: String,
        error: prost::DecodeError,
    },
    #[error("cannot write {message} as JSON: {error}")]
    Encode {
        message: String,
        error: serde_json::Error,
    },
}

/// The JSON text of a `message`, as its protobuf encoding. Unknown fields,
/// wrong types, trailing text and anything not a JSON object are refused
/// with serde_json's position ("at line 1 column 17").
pub fn json_to_protobuf(message: &MessageDescriptor, json: &[u8]) -> Result<Vec<u8>, JsonError> {
    let invalid = |error| JsonError::Invalid {
        message: message.full_name().to_owned(),
        error,
    };
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let decoded = DynamicMessage::deserialize_with_options(
        message.clone(),
        &mut deserializer,
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .map_err(invalid)?;
    deserializer.end().map_err(invalid)?;
    Ok(decoded.encode_to_vec())
}

/// A request `message` from string-valued fields (a path segment, query
/// parameters), as its protobuf encoding. Each value is read as the JSON
/// string of its field, so a non-string field gets its proto3 JSON parse.
pub fn fields_to_protobuf(
    message: &MessageDescriptor,
    fields: &[(&str, String)],
) -> Result<Vec<u8>, JsonError> {
    let mut object = serde_json::Map::new();
    for (name, value) in fields {
        if message.get_field_by_name(name).is_none() {
            return Err(JsonError::NoSuchField {
                message: message.full_name().to_owned(),
                field: (*name).to_owned(),
            });
        }
        object.insert((*name).to_owned(), serde_json::Value::String(value.clone()));
    }
    let json = serde_json::Value::Object(object).to_string();
    json_to_protobuf(message, json.as_bytes())
}

/// The canonical proto3 JSON of an encoded `message`: lowerCamelCase names,
/// default values left out, 64-bit integers as strings, enums by name.
pub fn protobuf_to_json(
    message: &MessageDescriptor,
    bytes: &[u8],
) -> Result<serde_json::Value, JsonError> {
    let decoded =
        DynamicMessage::decode(message.clone(), bytes).map_err(|error| JsonError::Decode {
            message: message.full_name().to_owned(),
            error,
        })?;
    to_json(&decoded)
}

fn to_json(message: &DynamicMessage) -> Result<serde_json::Value, JsonError> {
    message
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .map_err(|error| JsonError::Encode {
            message: prost_reflect::ReflectMessage::descriptor(message)
                .full_name()
                .to_owned(),
            error,
        })
}

/// A gRPC status as its proto3 JSON `google.rpc.Status`:
/// `{"code": 7, "message": "...", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", ...}]}`.
/// `details` is the status's `grpc-status-details-bin` (an encoded
/// `google.rpc.Status`); `code` and `message` are the status's own, whatever
/// the encoded one says. Details that do not decode are left out.
pub fn status_to_json(code: i32, message: &str, details: &[u8]) -> serde_json::Value {
    let descriptor = status_descriptor();
    let mut status = DynamicMessage::decode(descriptor.clone(), details)
        .unwrap_or_else(|_| DynamicMessage::new(descriptor));
    status.set_field_by_name("code", Value::I32(code));
    status.set_field_by_name("message", Value::String(message.to_owned()));
    match to_json(&status) {
        Ok(json) => json,
        // An `Any` whose type is not in the pool: the code and message still.
        Err(_) => serde_json::json!({ "code": code, "message": message }),
    }
}

fn status_descriptor() -> MessageDescriptor {
    // The vendored proto/google/rpc/status.proto is in the set; the unit
    // tests look it up.
    #[allow(clippy::expect_used)]
    pool()
        .get_message_by_name(STATUS_MESSAGE)
        .expect("google.rpc.Status is in the descriptor set")
}

/// The HTTP status answering a gRPC code, as grpc-gateway and the
/// `google.rpc.Code` documentation map them.
pub fn http_status_of(code: i32) -> u16 {
    match code {
        0 => 200,
        1 => 499,  // CANCELLED
        3 => 400,  // INVALID_ARGUMENT
        4 => 504,  // DEADLINE_EXCEEDED
        5 => 404,  // NOT_FOUND
        6 => 409,  // ALREADY_EXISTS
        7 => 403,  // PERMISSION_DENIED
        8 => 429,  // RESOURCE_EXHAUSTED
        9 => 400,  // FAILED_PRECONDITION
        10 => 409, // ABORTED
        11 => 400, // OUT_OF_RANGE
        12 => 501, // UNIMPLEMENTED
        14 => 503, // UNAVAILABLE
        16 => 401, // UNAUTHENTICATED
        _ => 500,  // UNKNOWN, INTERNAL, DATA_LOSS, anything else
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::v1;

    fn input(rpc: &str) -> MessageDescriptor {
        ROUTES
            .iter()
            .find(|r| r.rpc == rpc)
            .unwrap()
            .method()
            .input()
    }

    #[test]
    fn every_route_names_an_exchange_method_and_its_bound_fields() {
        for route in ROUTES {
            let method = route.method();
            let input = method.input();
            if let Some((_, rest)) = route.path.split_once('{') {
                let name = rest.trim_end_matches('}');
                assert!(input.get_field_by_name(name).is_some(), "{route:?}");
            }
            for q in route.query {
                assert!(input.get_field_by_name(q).is_some(), "{route:?}");
            }
        }
        assert!(pool().get_message_by_name("google.rpc.ErrorInfo").is_some());
        assert!(
            pool()
                .get_message_by_name("google.rpc.BadRequest")
                .is_some()
        );
    }

    #[test]
    fn paths_match_exactly_and_bind_one_segment() {
        let describe = ROUTES.iter().find(|r| r.rpc == "DescribeMatter").unwrap();
        assert_eq!(
            describe.matches("/v1/matters/temporary-id-card"),
            Some(Some(("matter", "temporary-id-card")))
        );
        assert_eq!(describe.matches("/v1/matters/"), None);
        assert_eq!(describe.matches("/v1/matters/a/b"), None);
        assert_eq!(describe.matches("/v1/matters"), None);
        let list = ROUTES.iter().find(|r| r.rpc == "ListMatters").unwrap();
        assert_eq!(list.matches("/v1/matters"), Some(None));
        assert_eq!(list.matches("/v1/matters/"), None);
    }

    #[test]
    fn json_requests_encode_as_the_generated_messages_decode_them() {
        let json = br#"{"case": {"matter": "unemployment-benefit", "caseNumber": "XQ-1", "operatorId": "clerk-he"},
            "subject": {"idNumber": "510403198507220465", "name": "Zhang"},
            "evidenceType": "hrss.unemployment", "fields": "eligible,insuredMonths"}"#;
        let bytes = json_to_protobuf(&input("Lookup"), json).unwrap();
        let request = v1::LookupRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(request.case.unwrap().case_number, "XQ-1");
        assert_eq!(request.subject.unwrap().id_number, "510403198507220465");
        assert_eq!(request.evidence_type, "hrss.unemployment");
        assert_eq!(
            request.fields.unwrap().paths,
            vec!["eligible".to_owned(), "insured_months".to_owned()]
        );
        // The proto field names are accepted too, as the mapping requires.
        let bytes = json_to_protobuf(&input("Lookup"), br#"{"evidence_type": "x"}"#).unwrap();
        assert_eq!(
            v1::LookupRequest::decode(bytes.as_slice())
                .unwrap()
                .evidence_type,
            "x"
        );
    }

    #[test]
    fn bad_json_is_refused_saying_what_is_wrong() {
        let refuse = |json: &str| {
            json_to_protobuf(&input("Lookup"), json.as_bytes())
                .unwrap_err()
                .to_string()
        };
        let unknown = refuse(r#"{"evidenceType": "x", "caller": "me"}"#);
        assert!(
            unknown.contains("unrecognized field name 'caller'"),
            "{unknown}"
        );
        assert!(unknown.contains("tongban.v1.LookupRequest"), "{unknown}");
        let wrong_type = refuse(r#"{"evidenceType": 7}"#);
        assert!(wrong_type.contains("line 1 column"), "{wrong_type}");
        let truncated = refuse(r#"{"evidenceType": "#);
        assert!(truncated.contains("EOF"), "{truncated}");
        let trailing = refuse(r#"{} {}"#);
        assert!(trailing.contains("trailing characters"), "{trailing}");
        let not_object = refuse(r#"["a"]"#);
        assert!(not_object.contains("expected"), "{not_object}");
        assert!(refuse("").contains("EOF"));
        let nested = format!("{}{}", "{\"case\":".repeat(200), "}".repeat(200));
        assert!(json_to_protobuf(&input("Lookup"), nested.as_bytes()).is_err());
    }

    #[test]
    fn responses_print_canonical_proto3_json() {
        let response = v1::LookupResponse {
            evidence: None,
            receipt: Some(v1::AuditReceipt {
                node: "exchange-1".into(),
                index: 42,
                leaf_hash: vec![0xfb; 32],
            }),
        };
        let output = ROUTES[0].method().output();
        let json = protobuf_to_json(&output, &response.encode_to_vec()).unwrap();
        assert_eq!(json["receipt"]["node"], "exchange-1");
        assert_eq!(json["receipt"]["index"], "42", "int64 as a string");
        assert_eq!(
            json["receipt"]["leafHash"],
            "+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/s="
        );
        assert!(json.get("evidence").is_none(), "unset fields are left out");
    }

    #[test]
    fn statuses_print_with_their_details_as_typed_any() {
        use tonic_types::{ErrorDetails, StatusExt};
        let mut details = ErrorDetails::with_error_info(
            "MATTER_NOT_GRANTED",
            "tongban.gov",
            [("matter".to_owned(), "x".to_owned())],
        );
        details.add_bad_request_violation("case.matter", "is not granted");
        let status =
            tonic::Status::with_error_details(tonic::Code::PermissionDenied, "denied", details);
        let json = status_to_json(7, "denied", status.details());
        assert_eq!(json["code"], 7);
        assert_eq!(json["message"], "denied");
        let details = json["details"].as_array().unwrap();
        assert_eq!(
            details[0]["@type"],
            "type.googleapis.com/google.rpc.ErrorInfo"
        );
        assert_eq!(details[0]["reason"], "MATTER_NOT_GRANTED");
        assert_eq!(details[0]["metadata"]["matter"], "x");
        assert_eq!(
            details[1]["@type"],
            "type.googleapis.com/google.rpc.BadRequest"
        );
        assert_eq!(details[1]["fieldViolations"][0]["field"], "case.matter");
        // No details: code and message alone.
        let bare = status_to_json(14, "down", &[]);
        assert_eq!(bare, serde_json::json!({"code": 14, "message": "down"}));
        assert_eq!(status_to_json(5, "x", b"\xff\xff").get("code").unwrap(), 5);
    }

    #[test]
    fn codes_map_to_the_gateway_http_statuses() {
        let pairs = [
            (3, 400),
            (16, 401),
            (7, 403),
            (5, 404),
            (8, 429),
            (14, 503),
            (4, 504),
            (13, 500),
        ];
        for (code, http) in pairs {
            assert_eq!(http_status_of(code), http, "code {code}");
        }
    }
}
