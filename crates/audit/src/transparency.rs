//! Citizens' access histories: what a node answers about one person (read
//! side) and the offline check that the answer is complete (verifier).
//!
//! The proof, per node: the checkpoint (signed with the node's pinned key,
//! cosigned by witnesses) commits to the subject map's root and to the VRF
//! key; the VRF proof shows the subject key belongs to the identity number;
//! the map proof gives the subject's value (count, chain head) — or its
//! absence; the listed entries, chained on from the pruned prefix, must
//! reproduce exactly that value. Nothing can be left out, added, reordered
//! or taken from another person without breaking one of these. See
//! `docs/transparency.md` for the design and its threat model.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cosign::{WitnessKey, verify_cosignatures};
use crate::entry::{PublicEntry, verify_subject_proof};
use crate::error::AuditError;
use crate::map::{self, MapProof, MapValue};
use crate::merkle::Hash;
use crate::note::{Checkpoint, Keyring, VerifierKey};
use crate::store::{AuditStore, LoggedEntry, PrunedChain, StoredCheckpoint};

// ---------------------------------------------------------------------------
// Read side

/// The first page of one node's part of a person's history.
#[derive(Debug, Clone)]
pub struct FirstPage {
    pub node: String,
    /// None when the node has signed nothing yet.
    pub checkpoint: Option<StoredCheckpoint>,
    pub map_proof: MapProof,
    /// The subject's entries up to the checkpoint, pruned ones included.
    pub count: u64,
    pub pruned: Option<PrunedChain>,
    /// The first retained index (entries below were pruned).
    pub pruned_before: u64,
    pub entries: Vec<LoggedEntry>,
}

/// Reads the first page of `subject`'s history on `node`, in one snapshot.
pub async fn first_page(
    store: &dyn AuditStore,
    node: &str,
    subject: &[u8; 32],
    limit: u32,
) -> Result<FirstPage, AuditError> {
    let paths = map::prove_paths(subject);
    let snap = store.subject_snapshot(node, subject, &paths, limit).await?;
    let leaf_value = |key: &[u8; 32]| -> Option<Hash> {
        if key == subject {
            snap.value.map(|v| v.hash())
        } else {
            snap.terminal_leaf
                .or(snap.single_leaf)
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.hash())
        }
    };
    let map_proof = map::prove(
        subject,
        snap.path_nodes.clone(),
        snap.single_leaf.map(|(k, v)| (k, v.hash())),
        leaf_value,
    )
    .map_err(|e| AuditError::Inconsistent {
        node: node.to_string(),
        detail: format!("subject map: {e}"),
    })?;
    Ok(FirstPage {
        node: node.to_string(),
        checkpoint: snap.checkpoint,
        map_proof,
        count: snap.value.map_or(0, |v| v.count),
        pruned: snap.pruned,
        pruned_before: snap.pruned_before,
        entries: snap.entries,
    })
}

/// Inclusion proofs of the entries at `indexes` in the tree of `size`:
/// each listed entry is shown to be in the log the witnesses follow, not
/// only in the map.
pub async fn inclusion_proofs(
    store: &dyn AuditStore,
    node: &str,
    indexes: &[u64],
    size: u64,
) -> Result<Vec<Vec<Hash>>, AuditError> {
    let mut proofs = Vec::with_capacity(indexes.len());
    // One read per entry: a few dozen subtree ids each. One read for a
    // whole page (thousands of ids) was seconds on SQLite, whose planner
    // gives up on the index for that many OR terms.
    for &index in indexes {
        let ranges = crate::merkle::inclusion_ranges(index, size)
            .map_err(|e| AuditError::Invalid(e.to_string()))?;
        proofs.push(crate::read::fetch_ranges(store, node, &ranges).await?);
    }
    Ok(proofs)
}

/// A later page: the subject's entries with `from <= index < below`.
pub async fn next_page(
    store: &dyn AuditStore,
    node: &str,
    subject: &[u8; 32],
    from: u64,
    below: u64,
    limit: u32,
) -> Result<Vec<LoggedEntry>, AuditError> {
    Ok(store
        .subject_entries(node, &hex::encode(subject), from, below, limit)
        .await?)
}

// ---------------------------------------------------------------------------
// Verifier

/// One listed access: in full (its public part), or sealed (its leaf hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    Disclosed(Box<PublicEntry>),
    Sealed {
        #[serde(with = "crate::store::hex_hash")]
        leaf_hash: Hash,
        disclosed_after: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedAccess {
    pub index: u64,
    pub access: Access,
    /// RFC 6962 inclusion proof of the entry in the node's tree at the
    /// checkpoint's size.
    #[serde(skip)]
    pub inclusion: Vec<Hash>,
}

/// The chain state after the person's last pruned entry on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrunedPrefix {
    pub chain: PrunedChain,
    pub removed_before: DateTime<Utc>,
}

/// One node's part of a history, all pages together.
#[derive(Debug, Clone)]
pub struct NodeHistory {
    pub node: String,
    /// The signed, cosigned checkpoint note.
    pub checkpoint: String,
    pub map_proof: Vec<u8>,
    pub count: u64,
    pub pruned: Option<PrunedPrefix>,
    pub entries: Vec<ListedAccess>,
}

/// A whole answer, as a portal received it.
#[derive(Debug, Clone)]
pub struct History {
    pub subject_key: [u8; 32],
    pub vrf_proof: Vec<u8>,
    pub nodes: Vec<NodeHistory>,
}

/// What the verifier trusts: keys pinned out of band.
#[derive(Debug, Clone, Default)]
pub struct TrustAnchors {
    /// One key per node of the deployment (origin `tongban/audit/<node>`):
    /// the answer must cover every one of them.
    pub logs: Vec<VerifierKey>,
    /// Witnesses, and how many of them must have cosigned each checkpoint.
    pub witnesses: Vec<WitnessKey>,
    pub quorum: usize,
    /// The deployment's VRF key, when pinned; else the one every checkpoint
    /// names (they must agree).
    pub vrf_key: Option<[u8; 32]>,
}

/// What a portal remembers of the last history it verified, per node, so a
/// replayed older answer is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub nodes: BTreeMap<String, SeenNode>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenNode {
    pub size: u64,
    pub count: u64,
}

/// Options of one verification.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Refuse checkpoints older than this (by the newest of the
    /// checkpoint's own time and its quorum's cosignature times), at `now`.
    pub max_age: Option<chrono::Duration>,
    pub now: Option<DateTime<Utc>>,
    /// The last verified state, to refuse going back.
    pub seen: Option<Seen>,
}

/// A verified node history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedNode {
    pub node: String,
    pub checkpoint_size: u64,
    pub checkpoint_time: DateTime<Utc>,
    /// Names of the witnesses whose cosignatures were verified.
    pub witnessed_by: Vec<String>,
    pub count: u64,
    /// (pruned accesses, removed before) when some were pruned.
    pub pruned: Option<(u64, DateTime<Utc>)>,
    pub entries: Vec<ListedAccess>,
}

/// A verified history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedHistory {
    #[serde(with = "crate::store::hex_hash")]
    pub subject_key: [u8; 32],
    pub nodes: Vec<VerifiedNode>,
}

impl VerifiedHistory {
    /// What to remember for the next check.
    pub fn seen(&self) -> Seen {
        Seen {
            nodes: self
                .nodes
                .iter()
                .map(|n| {
                    (
                        n.node.clone(),
                        SeenNode {
                            size: n.checkpoint_size,
                            count: n.count,
                        },
                    )
                })
                .collect(),
        }
    }
}

/// Why a history failed its check, in words a citizen's advocate can act on.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("the answer has no history from node {0} (every pinned node must answer)")]
    NodeMissing(String),
    #[error("the answer holds a history from node {0}, for which no key is pinned")]
    UnknownNode(String),
    #[error("the answer holds node {0} twice")]
    DuplicateNode(String),
    #[error("node {node}: the checkpoint does not verify: {detail}")]
    Checkpoint { node: String, detail: String },
    #[error(
        "node {0}: the checkpoint commits to no subject map (transparency is off on that node)"
    )]
    NoMap(String),
    #[error("node {node}: witnesses: {detail}")]
    Witnesses { node: String, detail: String },
    #[error("the nodes' checkpoints name different VRF keys, or not the pinned one")]
    VrfKeyMismatch,
    #[error("the subject key is not this person's: {0}")]
    NotThisPerson(String),
    #[error(
        "node {node}: the checkpoint (size {size}) is older than one already seen (size {seen}): a stale checkpoint was replayed"
    )]
    Stale { node: String, size: u64, seen: u64 },
    #[error(
        "node {node}: the checkpoint is {age} old, more than the {max} allowed: a stale checkpoint was replayed"
    )]
    TooOld {
        node: String,
        age: String,
        max: String,
    },
    #[error("node {node}: the person's access count went back from {seen} to {now}")]
    CountRolledBack { node: String, seen: u64, now: u64 },
    #[error("node {node}: entry {index} is about another person")]
    OtherPerson { node: String, index: u64 },
    #[error("node {node}: entry {index}: {detail}")]
    BadEntry {
        node: String,
        index: u64,
        detail: String,
    },
    #[error("node {node}: the pruned prefix is invalid: {detail}")]
    BadPruned { node: String, detail: String },
    #[error(
        "node {node}: the listed accesses do not match the map: the checkpoint commits to {committed} accesses, {listed} were listed or pruned{hint}"
    )]
    CountMismatch {
        node: String,
        committed: u64,
        listed: u64,
        hint: String,
    },
    #[error(
        "node {node}: the listed accesses do not reproduce the committed chain: an access is missing, added, altered or reordered"
    )]
    ChainMismatch { node: String },
    #[error("node {node}: the map proof does not verify: {detail}")]
    MapProof { node: String, detail: String },
}

/// Checks a whole history of `id_number` against the pinned anchors.
pub fn verify_history(
    history: &History,
    id_number: &str,
    anchors: &TrustAnchors,
    options: &CheckOptions,
) -> Result<VerifiedHistory, HistoryError> {
    let mut by_node: BTreeMap<&str, &NodeHistory> = BTreeMap::new();
    for n in &history.nodes {
        if by_node.insert(n.node.as_str(), n).is_some() {
            return Err(HistoryError::DuplicateNode(n.node.clone()));
        }
    }
    let pinned: Vec<(String, &VerifierKey)> = anchors
        .logs
        .iter()
        .filter_map(|k| {
            k.name
                .strip_prefix("tongban/audit/")
                .map(|node| (node.to_string(), k))
        })
        .collect();
    for n in by_node.keys() {
        if !pinned.iter().any(|(node, _)| node == n) {
            return Err(HistoryError::UnknownNode((*n).to_string()));
        }
    }
    let subject_hex = hex::encode(history.subject_key);
    let mut vrf_key = anchors.vrf_key;
    let mut out = Vec::with_capacity(pinned.len());
    for (node, key) in &pinned {
        let part = by_node
            .get(node.as_str())
            .ok_or_else(|| HistoryError::NodeMissing(node.clone()))?;
        let keyring = Keyring::new().with((*key).clone());
        let cp = Checkpoint::open(&part.checkpoint, &keyring, &key.name).map_err(|e| {
            HistoryError::Checkpoint {
                node: node.clone(),
                detail: e.to_string(),
            }
        })?;
        let commitment = cp.map.ok_or_else(|| HistoryError::NoMap(node.clone()))?;
        match vrf_key {
            Some(k) if k != commitment.vrf_key => return Err(HistoryError::VrfKeyMismatch),
            Some(_) => {}
            None => vrf_key = Some(commitment.vrf_key),
        }
        // Witnesses first: a split view is refused before anything else is read.
        let mut witnessed_by = Vec::new();
        let mut newest = cp.time;
        if !anchors.witnesses.is_empty() {
            let cosigned =
                verify_cosignatures(&part.checkpoint, &anchors.witnesses, anchors.quorum).map_err(
                    |e| HistoryError::Witnesses {
                        node: node.clone(),
                        detail: e.to_string(),
                    },
                )?;
            for c in cosigned {
                if let Some(t) = i64::try_from(c.time)
                    .ok()
                    .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
                {
                    newest = newest.max(t);
                }
                witnessed_by.push(c.name);
            }
        }
        if let Some(seen) = options.seen.as_ref().and_then(|s| s.nodes.get(node)) {
            if cp.size < seen.size {
                return Err(HistoryError::Stale {
                    node: node.clone(),
                    size: cp.size,
                    seen: seen.size,
                });
            }
            if part.count < seen.count {
                return Err(HistoryError::CountRolledBack {
                    node: node.clone(),
                    seen: seen.count,
                    now: part.count,
                });
            }
        }
        if let Some(max) = options.max_age {
            let now = options.now.unwrap_or_else(Utc::now);
            let age = now - newest;
            if age > max {
                return Err(HistoryError::TooOld {
                    node: node.clone(),
                    age: human_duration(age),
                    max: human_duration(max),
                });
            }
        }
        // Chain the listed entries on from the pruned prefix.
        let mut value = MapValue::default();
        let mut last_index = None;
        let mut pruned = None;
        if let Some(p) = &part.pruned {
            let bad = |detail: &str| HistoryError::BadPruned {
                node: node.clone(),
                detail: detail.to_string(),
            };
            let boundary = cp
                .pruned
                .ok_or_else(|| bad("the checkpoint names no retention boundary"))?;
            if p.chain.count == 0 {
                return Err(bad("it holds no access"));
            }
            if p.chain.last_index >= boundary.before {
                return Err(bad("its last access was not pruned"));
            }
            value = p.chain.value();
            last_index = Some(p.chain.last_index);
            pruned = Some((p.chain.count, p.removed_before));
        }
        for listed in &part.entries {
            let bad = |detail: String| HistoryError::BadEntry {
                node: node.clone(),
                index: listed.index,
                detail,
            };
            if last_index.is_some_and(|l| listed.index <= l) {
                return Err(bad("listed out of order or twice".into()));
            }
            if listed.index >= cp.size {
                return Err(bad(format!("beyond the checkpoint's size {}", cp.size)));
            }
            let leaf = match &listed.access {
                Access::Disclosed(e) => {
                    if e.subject != subject_hex {
                        return Err(HistoryError::OtherPerson {
                            node: node.clone(),
                            index: listed.index,
                        });
                    }
                    if e.node != *node {
                        return Err(bad(format!("names node {:?}", e.node)));
                    }
                    e.leaf_hash(listed.index)
                }
                Access::Sealed { leaf_hash, .. } => *leaf_hash,
            };
            crate::merkle::verify_inclusion(
                &leaf,
                listed.index,
                cp.size,
                &listed.inclusion,
                &cp.root,
            )
            .map_err(|e| bad(format!("not in the node's log under the checkpoint: {e}")))?;
            value.extend(listed.index, &leaf);
            last_index = Some(listed.index);
        }
        if value.count != part.count {
            let hint = if value.count < part.count {
                format!(": {} missing", part.count - value.count)
            } else {
                format!(": {} too many", value.count - part.count)
            };
            return Err(HistoryError::CountMismatch {
                node: node.clone(),
                committed: part.count,
                listed: value.count,
                hint,
            });
        }
        let proof = MapProof::from_bytes(&part.map_proof).map_err(|e| HistoryError::MapProof {
            node: node.clone(),
            detail: e.to_string(),
        })?;
        let claimed = (value.count > 0).then(|| value.hash());
        if let Err(e) = map::verify(&commitment.root, &history.subject_key, claimed, &proof) {
            // The map holds the person with another value: the listed
            // accesses are not the committed ones.
            return Err(
                if proof_value_differs(&commitment.root, &history.subject_key, &proof) {
                    HistoryError::ChainMismatch { node: node.clone() }
                } else {
                    HistoryError::MapProof {
                        node: node.clone(),
                        detail: e.to_string(),
                    }
                },
            );
        }
        out.push(VerifiedNode {
            node: node.clone(),
            checkpoint_size: cp.size,
            checkpoint_time: cp.time,
            witnessed_by,
            count: part.count,
            pruned,
            entries: part.entries.clone(),
        });
    }
    let vrf_key = vrf_key.ok_or(HistoryError::VrfKeyMismatch)?;
    let key = verify_subject_proof(&vrf_key, id_number, &history.vrf_proof)
        .map_err(|e| HistoryError::NotThisPerson(e.to_string()))?;
    if key != history.subject_key {
        return Err(HistoryError::NotThisPerson(
            "the VRF output differs from the subject key the answer uses".into(),
        ));
    }
    Ok(VerifiedHistory {
        subject_key: history.subject_key,
        nodes: out,
    })
}

/// Whether the proof leads to the root for this key with *some* value: then
/// the map holds the person, and only the chain disagrees.
fn proof_value_differs(root: &Hash, key: &[u8; 32], proof: &MapProof) -> bool {
    match &proof.terminal {
        map::Terminal::Leaf { key: k, value_hash } if k == key => {
            map::verify(root, key, Some(*value_hash), proof).is_ok()
        }
        _ => false,
    }
}

fn human_duration(d: chrono::Duration) -> String {
    let s = d.num_seconds();
    if s >= 3600 {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}
