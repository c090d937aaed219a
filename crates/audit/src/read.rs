//! Administrators' read side: search, subject report, export, proofs, prune.

use std::io::Write;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::entry::EntryKind;
use crate::log::AuditError;
use crate::merkle::{
    CompactRange, Hash, NodeId, consistency_ranges, inclusion_ranges, nodes_for_ranges, range_hash,
    verify_consistency, verify_inclusion,
};
use crate::note::{Checkpoint, Keyring, origin_for_node};
use crate::store::{AuditStore, Cursor, LoggedEntry, SearchFilter};

/// Largest page a search returns: 200 entries of at most
/// [`MAX_ENTRY_BYTES`](crate::entry::MAX_ENTRY_BYTES) (about 8 KB) stay
/// under 2 MiB on the wire, half of gRPC's usual 4 MiB message limit.
pub const MAX_PAGE: u32 = 200;

/// Cybersecurity Law art. 21: keep network logs at least six months.
pub const MIN_RETENTION_DAYS: i64 = 183;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// 1..=MAX_PAGE; 0 means 100.
    pub limit: u32,
    /// Continue after this cursor (from a previous page's `next`).
    pub after: Option<Cursor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchPage {
    pub entries: Vec<LoggedEntry>,
    /// Present when more entries may follow.
    pub next: Option<Cursor>,
}

/// Newest-first search with keyset pagination.
pub async fn search(
    store: &dyn AuditStore,
    filter: &SearchFilter,
    page: &PageRequest,
) -> Result<SearchPage, AuditError> {
    let limit = match page.limit {
        0 => 100,
        n => n.min(MAX_PAGE),
    };
    let entries = store.search(filter, page.after.as_ref(), limit).await?;
    let next = if entries.len() as u32 == limit {
        entries.last().map(|e| Cursor {
            time_us: e.entry.time.timestamp_micros(),
            node: e.entry.node.clone(),
            index: e.index,
        })
    } else {
        None
    };
    Ok(SearchPage { entries, next })
}

/// One access to a person's data, as a Data-Tracker-style report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectAccess {
    pub time: DateTime<Utc>,
    pub node: String,
    pub index: u64,
    pub kind: EntryKind,
    pub caller_org: String,
    pub caller_unit: String,
    pub operator: String,
    pub matter: String,
    pub case_number: String,
    pub evidence_type: String,
    pub department: String,
    pub outcome_code: i32,
    pub outcome_reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectReport {
    pub subject: String,
    /// Newest first.
    pub accesses: Vec<SubjectAccess>,
    /// True when more than `max` accesses exist.
    pub truncated: bool,
}

/// Every access to one subject (by pseudonym), newest first, up to `max`.
pub async fn subject_report(
    store: &dyn AuditStore,
    pseudonym: &str,
    max: usize,
) -> Result<SubjectReport, AuditError> {
    if pseudonym.is_empty() {
        return Err(AuditError::Invalid("empty subject pseudonym".into()));
    }
    let filter = SearchFilter {
        subject: Some(pseudonym.to_string()),
        ..Default::default()
    };
    let mut accesses = Vec::new();
    let mut after = None;
    loop {
        let page = search(
            store,
            &filter,
            &PageRequest {
                limit: MAX_PAGE,
                after: after.take(),
            },
        )
        .await?;
        for e in page.entries {
            if accesses.len() == max {
                return Ok(SubjectReport {
                    subject: pseudonym.to_string(),
                    accesses,
                    truncated: true,
                });
            }
            let x = e.entry;
            accesses.push(SubjectAccess {
                time: x.time,
                node: x.node,
                index: e.index,
                kind: x.kind,
                caller_org: x.caller_org,
                caller_unit: x.caller_unit,
                operator: x.operator,
                matter: x.matter,
                case_number: x.case_number,
                evidence_type: x.evidence_type,
                department: x.department,
                outcome_code: x.outcome_code,
                outcome_reason: x.outcome_reason,
            });
        }
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    Ok(SubjectReport {
        subject: pseudonym.to_string(),
        accesses,
        truncated: false,
    })
}

/// Writes entries as JSON Lines (one [`LoggedEntry`] per line), per node in
/// index order; `node` restricts to one node. Returns the lines written.
pub async fn export_jsonl(
    store: &dyn AuditStore,
    node: Option<&str>,
    out: &mut dyn Write,
) -> Result<u64, AuditError> {
    let nodes = match node {
        Some(n) => vec![n.to_string()],
        None => store.list_nodes().await?,
    };
    let mut written = 0u64;
    let io = |e: std::io::Error| AuditError::Invalid(format!("export write failed: {e}"));
    for n in nodes {
        let mut from = 0u64;
        loop {
            let rows = store.scan(&n, from, 5000).await?;
            let Some(last) = rows.last() else { break };
            from = last.index + 1;
            for r in &rows {
                serde_json::to_writer(&mut *out, r)
                    .map_err(|e| AuditError::Invalid(format!("export encode failed: {e}")))?;
                out.write_all(b"\n").map_err(io)?;
                written += 1;
            }
        }
    }
    out.flush().map_err(io)?;
    Ok(written)
}

pub(crate) mod hex_hashes {
    use serde::{Deserialize, Deserializer, Serializer, ser::SerializeSeq};

    pub fn serialize<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for h in v {
            seq.serialize_element(&hex::encode(h))?;
        }
        seq.end()
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.into_iter()
            .map(|s| {
                hex::decode(s)
                    .map_err(serde::de::Error::custom)?
                    .try_into()
                    .map_err(|_| serde::de::Error::custom("hash must be 32 bytes"))
            })
            .collect()
    }
}

/// An inclusion proof with the signed checkpoint it leads to; checkable offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub node: String,
    pub index: u64,
    pub tree_size: u64,
    #[serde(with = "crate::store::hex_hash")]
    pub leaf_hash: Hash,
    #[serde(with = "hex_hashes")]
    pub proof: Vec<Hash>,
    /// Signed checkpoint (C2SP note text) at `tree_size`.
    pub checkpoint: String,
}

impl InclusionProof {
    /// Verifies the checkpoint against pinned keys and the proof against its root.
    pub fn verify(&self, keyring: &Keyring) -> Result<Checkpoint, AuditError> {
        let cp = Checkpoint::open(&self.checkpoint, keyring, &origin_for_node(&self.node))?;
        if cp.size != self.tree_size {
            return Err(AuditError::Invalid(format!(
                "checkpoint is for size {}, proof for size {}",
                cp.size, self.tree_size
            )));
        }
        verify_inclusion(&self.leaf_hash, self.index, cp.size, &self.proof, &cp.root)
            .map_err(|e| AuditError::Invalid(format!("inclusion proof: {e}")))?;
        Ok(cp)
    }
}

async fn fetch_ranges(
    store: &dyn AuditStore,
    node: &str,
    ranges: &[(u64, u64)],
) -> Result<Vec<Hash>, AuditError> {
    let ids = nodes_for_ranges(ranges);
    let found = store.get_nodes(node, &ids).await?;
    ranges
        .iter()
        .map(|(a, b)| {
            range_hash(*a, *b, &|id: NodeId| found.get(&id).copied()).map_err(|e| {
                AuditError::Inconsistent {
                    node: node.to_string(),
                    detail: e.to_string(),
                }
            })
        })
        .collect()
}

/// Inclusion proof for `(node, index)` against the node's latest checkpoint.
pub async fn inclusion_proof(
    store: &dyn AuditStore,
    node: &str,
    index: u64,
) -> Result<InclusionProof, AuditError> {
    let cp = store.latest_checkpoint(node).await?.ok_or_else(|| {
        AuditError::NotFound(format!("node {node:?} has no signed checkpoint yet"))
    })?;
    if index >= cp.tree_size {
        return Err(AuditError::NotFound(format!(
            "entry {index} of node {node:?} is not covered by the latest checkpoint (size {}) yet",
            cp.tree_size
        )));
    }
    let ranges =
        inclusion_ranges(index, cp.tree_size).map_err(|e| AuditError::Invalid(e.to_string()))?;
    let proof = fetch_ranges(store, node, &ranges).await?;
    let leaf = store
        .get_nodes(node, &[NodeId::new(0, index)])
        .await?
        .get(&NodeId::new(0, index))
        .copied()
        .ok_or_else(|| {
            AuditError::NotFound(format!(
                "entry {index} of node {node:?} is not stored (pruned?)"
            ))
        })?;
    Ok(InclusionProof {
        node: node.to_string(),
        index,
        tree_size: cp.tree_size,
        leaf_hash: leaf,
        proof,
        checkpoint: cp.note,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub node: String,
    pub old_size: u64,
    pub new_size: u64,
    #[serde(with = "hex_hashes")]
    pub proof: Vec<Hash>,
}

impl ConsistencyProof {
    pub fn verify(&self, old_root: &Hash, new_root: &Hash) -> Result<(), AuditError> {
        verify_consistency(
            self.old_size,
            self.new_size,
            old_root,
            new_root,
            &self.proof,
        )
        .map_err(|e| AuditError::Invalid(format!("consistency proof: {e}")))
    }
}

/// Consistency proof between two sizes of a node's log.
pub async fn consistency_proof(
    store: &dyn AuditStore,
    node: &str,
    old_size: u64,
    new_size: u64,
) -> Result<ConsistencyProof, AuditError> {
    let state = store.log_state(node).await?;
    if new_size > state.size {
        return Err(AuditError::NotFound(format!(
            "node {node:?} holds {} entries, fewer than {new_size}",
            state.size
        )));
    }
    let ranges =
        consistency_ranges(old_size, new_size).map_err(|e| AuditError::Invalid(e.to_string()))?;
    let proof = fetch_ranges(store, node, &ranges).await?;
    Ok(ConsistencyProof {
        node: node.to_string(),
        old_size,
        new_size,
        proof,
    })
}

/// Root of a node's tree at `size`, from stored subtree hashes.
pub async fn root_at(store: &dyn AuditStore, node: &str, size: u64) -> Result<Hash, AuditError> {
    Ok(fetch_ranges(store, node, &[(0, size)])
        .await?
        .pop()
        .unwrap_or_else(crate::merkle::empty_root))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodePrune {
    pub node: String,
    /// First retained index after pruning.
    pub pruned_before: u64,
    pub deleted: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub cutoff: Option<DateTime<Utc>>,
    pub nodes: Vec<NodePrune>,
}

/// Deletes entries older than `older_than` (by entry time) from every node,
/// keeping checkpoints and the subtree hashes later entries need. Refuses a
/// retention under [`MIN_RETENTION_DAYS`] unless `force`. Entries not yet
/// covered by a signed checkpoint are never pruned.
pub async fn prune(
    store: &dyn AuditStore,
    older_than: TimeDelta,
    force: bool,
) -> Result<PruneReport, AuditError> {
    prune_at(store, older_than, force, Utc::now()).await
}

/// [`prune`] with an explicit "now" (for tests and replays).
pub async fn prune_at(
    store: &dyn AuditStore,
    older_than: TimeDelta,
    force: bool,
    now: DateTime<Utc>,
) -> Result<PruneReport, AuditError> {
    if older_than < TimeDelta::days(MIN_RETENTION_DAYS) && !force {
        return Err(AuditError::Invalid(format!(
            "retention of {} days is below the legal minimum of {MIN_RETENTION_DAYS} days (Cybersecurity Law art. 21); pass force to override",
            older_than.num_days()
        )));
    }
    if older_than < TimeDelta::zero() {
        return Err(AuditError::Invalid("negative retention".into()));
    }
    let cutoff = now - older_than;
    let mut report = PruneReport {
        cutoff: Some(cutoff),
        nodes: Vec::new(),
    };
    for node in store.list_nodes().await? {
        let state = store.log_state(&node).await?;
        let signed = store
            .latest_checkpoint(&node)
            .await?
            .map(|c| c.tree_size)
            .unwrap_or(0);
        let cut = store
            .prune_cut(&node, cutoff.timestamp_micros())
            .await?
            .min(signed);
        if cut <= state.pruned_before {
            continue;
        }
        let ids = CompactRange::frontier_ids(cut);
        let found = store.get_nodes(&node, &ids).await?;
        let mut keep = Vec::with_capacity(ids.len());
        for id in ids {
            let h = found.get(&id).ok_or_else(|| AuditError::Inconsistent {
                node: node.clone(),
                detail: format!(
                    "cannot prune below {cut}: subtree hash level {} index {} is missing",
                    id.level, id.index
                ),
            })?;
            keep.push((id, *h));
        }
        let deleted = store.prune_below(&node, cut, &keep).await?;
        tracing::info!(node = %node, cut, deleted, "pruned audit entries");
        report.nodes.push(NodePrune {
            node,
            pruned_before: cut,
            deleted,
        });
    }
    Ok(report)
}
