//! Audit log records in their wire form, shared by the `Audit` service and
//! `Exchange.ProveReceipt` (the request types convert in `service.rs`, the
//! only place that receives them).

use tongban_audit::LoggedEntry;
use tongban_proto::v1::{self as pb, AuditRecord};

pub(crate) use tongban_proto::convert::timestamp;

/// The wire form of a stored entry.
pub fn record_to_proto(e: LoggedEntry) -> AuditRecord {
    let x = e.entry;
    AuditRecord {
        node: x.node,
        index: e.index,
        leaf_hash: e.leaf_hash.to_vec(),
        time: Some(timestamp(x.time)),
        kind: x.kind.as_str().to_owned(),
        caller_org: x.caller_org,
        caller_unit: x.caller_unit,
        operator_id: x.operator,
        matter: x.matter,
        case_number: x.case_number,
        evidence_type: x.evidence_type,
        department: x.department,
        subject: x.subject,
        outcome_code: x.outcome_code,
        outcome_reason: x.outcome_reason,
        latency_us: x.latency_us,
        trace_id: x.trace_id,
        released_fields_hash: x.released_fields_hash,
        detail: x.detail,
        policy_version: x.policy_version,
    }
}

/// The wire form of an inclusion proof.
pub fn inclusion_to_proto(p: tongban_audit::InclusionProof) -> pb::InclusionProof {
    pb::InclusionProof {
        node: p.node,
        index: p.index,
        tree_size: p.tree_size,
        leaf_hash: p.leaf_hash.to_vec(),
        proof: p.proof.iter().map(|h| h.to_vec()).collect(),
        checkpoint: p.checkpoint,
    }
}
