//! Output for people (aligned, bilingual labels) and for machines (`--json`).

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::{Value, json};
use tongban_core::Catalogue;
use tongban_proto::google::rpc::Status as RpcStatus;
use tongban_proto::v1::{self as pb, field::Value as FieldValueProto};
use tonic_types::{ErrorDetails, StatusExt};

/// Text from elsewhere (the exchange, the audit log, a department) as it
/// may reach a terminal: control characters, line separators and bidi
/// controls escaped (`\u{1b}`), so it cannot move the cursor, colour the
/// screen or start a line of its own.
pub fn printable(s: &str) -> Cow<'_, str> {
    tongban_audit::escape_controls(s)
}

fn field_text(value: Option<&FieldValueProto>) -> String {
    match value {
        None => "—".into(),
        Some(FieldValueProto::BoolValue(true)) => "yes".into(),
        Some(FieldValueProto::BoolValue(false)) => "no".into(),
        Some(FieldValueProto::IntValue(i)) => i.to_string(),
        Some(FieldValueProto::TextValue(t)) | Some(FieldValueProto::DateValue(t)) => t.clone(),
    }
}

fn field_json(value: Option<&FieldValueProto>) -> Value {
    match value {
        None => Value::Null,
        Some(FieldValueProto::BoolValue(b)) => json!(b),
        Some(FieldValueProto::IntValue(i)) => json!(i),
        Some(FieldValueProto::TextValue(t)) | Some(FieldValueProto::DateValue(t)) => json!(t),
    }
}

fn timestamp_text(ts: Option<&prost_types::Timestamp>) -> String {
    ts.and_then(tongban_proto::convert::time_of).map_or_else(
        || "unknown".into(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

fn receipt_text(r: &pb::AuditReceipt) -> String {
    let hash: String = r
        .leaf_hash
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{} #{} leaf {hash}…", r.node, r.index)
}

pub fn receipt_json(r: Option<&pb::AuditReceipt>) -> Value {
    r.map_or(Value::Null, |r| {
        json!({
            "node": r.node,
            "index": r.index,
            "leaf_hash": r.leaf_hash.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        })
    })
}

/// Human-readable evidence, indented by `indent` spaces.
pub fn evidence_text(ev: &pb::Evidence, catalogue: &Catalogue, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::new();
    let width = ev.fields.iter().map(|f| f.name.len()).max().unwrap_or(0);
    for f in &ev.fields {
        let _ = writeln!(
            out,
            "{pad}{:width$}  {}",
            f.name,
            field_text(f.value.as_ref())
        );
    }
    let department = catalogue
        .department(&ev.department)
        .map_or_else(|| ev.department.clone(), |d| d.title_zh.clone());
    let _ = writeln!(
        out,
        "{pad}— answered by {department}, data current as of {}",
        timestamp_text(ev.current_as_of.as_ref())
    );
    out
}

pub fn evidence_json(ev: &pb::Evidence) -> Value {
    let fields: serde_json::Map<String, Value> = ev
        .fields
        .iter()
        .map(|f| (f.name.clone(), field_json(f.value.as_ref())))
        .collect();
    json!({
        "evidence_type": ev.evidence_type,
        "department": ev.department,
        "current_as_of": ev.current_as_of.as_ref().map(|t| t.to_string()),
        "fields": fields,
    })
}

pub fn lookup_text(resp: &pb::LookupResponse, catalogue: &Catalogue) -> String {
    let mut out = String::new();
    if let Some(ev) = &resp.evidence {
        out.push_str(&evidence_text(ev, catalogue, 2));
    }
    if let Some(r) = &resp.receipt {
        let _ = writeln!(out, "  audit receipt: {}", receipt_text(r));
    }
    out
}

pub fn lookup_json(resp: &pb::LookupResponse) -> Value {
    json!({
        "evidence": resp.evidence.as_ref().map(evidence_json),
        "receipt": receipt_json(resp.receipt.as_ref()),
    })
}

pub fn gather_text(resp: &pb::GatherResponse, catalogue: &Catalogue) -> String {
    gather_text_with_subjects(resp, catalogue, &[])
}

/// A Gather's items; when they are about several subjects, grouped under a
/// line per subject: `labels[i]` for subject `i` (e.g. a name the clerk
/// typed), else its position and role.
pub fn gather_text_with_subjects(
    resp: &pb::GatherResponse,
    catalogue: &Catalogue,
    labels: &[String],
) -> String {
    let mut out = String::new();
    let several = resp
        .items
        .iter()
        .any(|i| i.subject_index != resp.items.first().map_or(0, |f| f.subject_index));
    let mut current = None;
    for item in &resp.items {
        if several && current != Some(item.subject_index) {
            current = Some(item.subject_index);
            let role = tongban_core::Role::parse(&item.role)
                .map(|r| format!("{} {}", r.name(), r.title_zh()))
                .unwrap_or_else(|| printable(&item.role).into_owned());
            let label = labels
                .get(item.subject_index as usize)
                .cloned()
                .unwrap_or_else(|| format!("subject {}", item.subject_index));
            let _ = writeln!(out, "  ● {label} · {role}");
        }
        let title = catalogue
            .evidence(&item.evidence_type)
            .map(|d| format!("{} · {}", d.title, d.title_zh))
            .unwrap_or_default();
        let _ = writeln!(out, "  ▸ {}  {title}", item.evidence_type);
        match &item.result {
            Some(pb::gather_item::Result::Evidence(ev)) => {
                out.push_str(&evidence_text(ev, catalogue, 4))
            }
            Some(pb::gather_item::Result::Error(s)) => {
                let _ = writeln!(out, "    ✗ {}", rpc_status_text(s));
            }
            None => {}
        }
    }
    out
}

pub fn gather_json(resp: &pb::GatherResponse) -> Value {
    json!({
        "matter": resp.matter,
        "items": resp.items.iter().map(|i| json!({
            "evidence_type": i.evidence_type,
            "evidence": match &i.result { Some(pb::gather_item::Result::Evidence(e)) => evidence_json(e), _ => Value::Null },
            "error": match &i.result { Some(pb::gather_item::Result::Error(s)) => rpc_status_json(s), _ => Value::Null },
            "receipt": receipt_json(i.receipt.as_ref()),
        })).collect::<Vec<_>>(),
    })
}

/// A per-item error: code, message, and the reason from its ErrorInfo.
pub fn rpc_status_text(s: &RpcStatus) -> String {
    let status = to_tonic(s);
    let mut text = format!(
        "{}: {}",
        tongban_proto::convert::code_name_of(s.code),
        printable(&s.message)
    );
    if let Some(info) = status.get_details_error_info() {
        let _ = write!(text, " [{}]", printable(&info.reason));
    }
    text
}

pub fn rpc_status_json(s: &RpcStatus) -> Value {
    status_json(&to_tonic(s))
}

fn to_tonic(s: &RpcStatus) -> tonic::Status {
    use prost::Message;
    tonic::Status::with_details(
        tonic::Code::from_i32(s.code),
        s.message.clone(),
        s.encode_to_vec().into(),
    )
}

/// A failed call, with its google.rpc details spelled out.
pub fn status_text(status: &tonic::Status) -> String {
    let mut out = format!("{:?}: {}", status.code(), printable(status.message()));
    let details: ErrorDetails = status.get_error_details();
    if let Some(info) = details.error_info() {
        let _ = write!(out, "\n  reason: {}", printable(&info.reason));
        let mut meta: Vec<_> = info.metadata.iter().collect();
        meta.sort();
        for (k, v) in meta {
            let _ = write!(out, "\n  {}: {}", printable(k), printable(v));
        }
    }
    if let Some(br) = details.bad_request() {
        for v in &br.field_violations {
            let _ = write!(
                out,
                "\n  field {}: {}",
                printable(&v.field),
                printable(&v.description)
            );
        }
    }
    if let Some(retry) = details.retry_info().and_then(|r| r.retry_delay) {
        let _ = write!(out, "\n  retry after: {retry:?}");
    }
    out
}

pub fn status_json(status: &tonic::Status) -> Value {
    let details = status.get_error_details();
    json!({
        "code": format!("{:?}", status.code()),
        "message": status.message(),
        "reason": details.error_info().map(|i| i.reason.clone()),
        "metadata": details.error_info().map(|i| i.metadata.clone()),
        "field_violations": details.bad_request().map(|b| b.field_violations.iter().map(|v| json!({"field": v.field, "description": v.description})).collect::<Vec<_>>()),
        "retry_after_ms": details.retry_info().and_then(|r| r.retry_delay).map(|d| d.as_millis() as u64),
    })
}
