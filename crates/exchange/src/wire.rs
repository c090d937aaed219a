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

/// The wire form of an access as a citizen reads it: the entry's public
/// part, with the organisation's name and the matter's titles beside it for
/// display (`organisation_name` from the policy's directory).
pub fn disclosed_access(
    public: tongban_audit::entry::PublicEntry,
    organisation_name: &str,
    matter: Option<&tongban_core::Matter>,
) -> pb::DisclosedAccess {
    pb::DisclosedAccess {
        time: Some(timestamp(public.time)),
        kind: public.kind.as_str().to_owned(),
        caller_org_name: organisation_name.to_owned(),
        caller_org: public.caller_org,
        caller_unit: public.caller_unit,
        matter_title: matter.map(|m| m.title.clone()).unwrap_or_default(),
        matter_title_zh: matter.map(|m| m.title_zh.clone()).unwrap_or_default(),
        matter: public.matter,
        evidence_type: public.evidence_type,
        department: public.department,
        outcome_code: public.outcome_code,
        outcome_reason: public.outcome_reason,
        private_digest: public.private_digest.to_vec(),
    }
}

/// What the exchange says beside each disclosed access for display only
/// (names and titles are not part of the proof).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessLabel {
    pub organisation: String,
    pub matter_title: String,
    pub matter_title_zh: String,
}

/// Why pages of a `ListAccesses` answer cannot be read as a history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryWireError {
    #[error("{0} is not 32 bytes")]
    NotAHash(&'static str),
    #[error("the pages name different subject keys")]
    SubjectKeyChanged,
    #[error("entry {index} of node {node}: {detail}")]
    BadEntry {
        node: String,
        index: u64,
        detail: String,
    },
}

/// Puts the pages of one `ListAccesses` answer together, as a portal does
/// before verifying it with `tongban_audit::transparency::verify_history`.
#[derive(Debug, Default)]
pub struct HistoryPages {
    subject_key: Option<[u8; 32]>,
    vrf_proof: Vec<u8>,
    nodes: std::collections::BTreeMap<String, tongban_audit::transparency::NodeHistory>,
    labels: std::collections::BTreeMap<(String, u64), AccessLabel>,
}

impl HistoryPages {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one page, in the order received.
    pub fn add(&mut self, page: pb::ListAccessesResponse) -> Result<(), HistoryWireError> {
        let key = hash32(&page.subject_key, "the subject key")?;
        if *self.subject_key.get_or_insert(key) != key {
            return Err(HistoryWireError::SubjectKeyChanged);
        }
        if !page.vrf_proof.is_empty() {
            self.vrf_proof = page.vrf_proof;
        }
        for part in page.nodes {
            self.add_part(part, &key)?;
        }
        Ok(())
    }

    fn add_part(&mut self, part: pb::NodeHistory, key: &[u8; 32]) -> Result<(), HistoryWireError> {
        use tongban_audit::transparency::{NodeHistory, PrunedPrefix};
        let node = part.node.clone();
        let entry = self
            .nodes
            .entry(node.clone())
            .or_insert_with(|| NodeHistory {
                node: node.clone(),
                checkpoint: String::new(),
                map_proof: Vec::new(),
                count: 0,
                pruned: None,
                entries: Vec::new(),
            });
        if !part.checkpoint.is_empty() {
            entry.checkpoint = part.checkpoint;
            entry.map_proof = part.map_proof;
            entry.count = part.count;
            entry.pruned = part
                .pruned
                .map(|p| -> Result<PrunedPrefix, HistoryWireError> {
                    Ok(PrunedPrefix {
                        chain: tongban_audit::store::PrunedChain {
                            count: p.count,
                            head_before_last: hash32(&p.head_before_last, "a pruned chain head")?,
                            last_index: p.last_index,
                            last_leaf: hash32(&p.last_leaf_hash, "a pruned leaf hash")?,
                        },
                        removed_before: p
                            .removed_before
                            .as_ref()
                            .and_then(tongban_proto::convert::time_of)
                            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
                    })
                })
                .transpose()?;
        }
        for access in part.entries {
            let index = access.index;
            let bad = |detail: String| HistoryWireError::BadEntry {
                node: node.clone(),
                index,
                detail,
            };
            let listed = match access.access {
                Some(pb::access_entry::Access::Disclosed(d)) => {
                    self.labels.insert(
                        (node.clone(), index),
                        AccessLabel {
                            organisation: d.caller_org_name.clone(),
                            matter_title: d.matter_title.clone(),
                            matter_title_zh: d.matter_title_zh.clone(),
                        },
                    );
                    tongban_audit::transparency::Access::Disclosed(Box::new(
                        tongban_audit::entry::PublicEntry {
                            time: d
                                .time
                                .as_ref()
                                .and_then(tongban_proto::convert::time_of)
                                .ok_or_else(|| bad("no time".into()))?,
                            node: node.clone(),
                            kind: d.kind.parse().map_err(bad)?,
                            caller_org: d.caller_org,
                            caller_unit: d.caller_unit,
                            matter: d.matter,
                            evidence_type: d.evidence_type,
                            department: d.department,
                            // The leaf hash commits to the subject: it is the
                            // person's own key, never taken from the answer.
                            subject: hex::encode(key),
                            outcome_code: d.outcome_code,
                            outcome_reason: d.outcome_reason,
                            private_digest: hash32(&d.private_digest, "a private digest")?,
                        },
                    ))
                }
                Some(pb::access_entry::Access::Sealed(s)) => {
                    tongban_audit::transparency::Access::Sealed {
                        leaf_hash: hash32(&s.leaf_hash, "a sealed leaf hash")?,
                        disclosed_after: s
                            .disclosed_after
                            .as_ref()
                            .and_then(tongban_proto::convert::time_of)
                            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
                    }
                }
                None => return Err(bad("empty".into())),
            };
            entry
                .entries
                .push(tongban_audit::transparency::ListedAccess {
                    index,
                    access: listed,
                    inclusion: access
                        .inclusion_proof
                        .iter()
                        .map(|h| hash32(h, "an inclusion proof hash"))
                        .collect::<Result<_, _>>()?,
                });
        }
        Ok(())
    }

    /// The history, and the display labels by (node, index).
    pub fn finish(
        self,
    ) -> (
        tongban_audit::transparency::History,
        std::collections::BTreeMap<(String, u64), AccessLabel>,
    ) {
        (
            tongban_audit::transparency::History {
                subject_key: self.subject_key.unwrap_or_default(),
                vrf_proof: self.vrf_proof,
                nodes: self.nodes.into_values().collect(),
            },
            self.labels,
        )
    }
}

fn hash32(bytes: &[u8], what: &'static str) -> Result<[u8; 32], HistoryWireError> {
    bytes
        .try_into()
        .map_err(|_| HistoryWireError::NotAHash(what))
}
