//! Administrators' read side: search, subject report, export, proofs, prune.

use std::io::Write;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::entry::EntryKind;
use crate::error::AuditError;
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

pub(crate) async fn fetch_ranges(
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

/// What a prune asks for. The writer computes the boundary itself: entries
/// older than `older_than_days` before `now`, and never past the latest
/// signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneRequest {
    pub older_than_days: u32,
    /// Allows a retention below [`MIN_RETENTION_DAYS`].
    pub force: bool,
    /// Who prunes (the record's `operator`): a person, or `retention` for the sweep.
    pub operator: String,
    /// Why; may be empty. One line of at most [`MAX_PRUNE_REASON`] bytes.
    pub reason: String,
    pub now: DateTime<Utc>,
}

/// Longest reason a prune record carries.
pub const MAX_PRUNE_REASON: usize = 256;
/// Longest operator name a prune record carries.
pub const MAX_PRUNE_OPERATOR: usize = 64;

impl PruneRequest {
    /// The sweep's request: `older_than_days` before now, by `retention`.
    pub fn retention(older_than_days: u32, now: DateTime<Utc>) -> Self {
        Self {
            older_than_days,
            force: false,
            operator: "retention".into(),
            reason: String::new(),
            now,
        }
    }

    /// Refuses a retention under the legal minimum (unless forced) and
    /// operator or reason texts a record could not hold unambiguously.
    pub fn check(&self) -> Result<(), AuditError> {
        if i64::from(self.older_than_days) < MIN_RETENTION_DAYS && !self.force {
            return Err(AuditError::Invalid(format!(
                "retention of {} days is below the legal minimum of {MIN_RETENTION_DAYS} days (Cybersecurity Law art. 21); pass force to override",
                self.older_than_days
            )));
        }
        if self.operator.is_empty()
            || self.operator.len() > MAX_PRUNE_OPERATOR
            || self.operator.chars().any(char::is_control)
        {
            return Err(AuditError::Invalid(format!(
                "prune operator must be 1-{MAX_PRUNE_OPERATOR} bytes without control characters"
            )));
        }
        if self.reason.len() > MAX_PRUNE_REASON || self.reason.chars().any(char::is_control) {
            return Err(AuditError::Invalid(format!(
                "prune reason must be at most {MAX_PRUNE_REASON} bytes on one line"
            )));
        }
        Ok(())
    }

    pub fn cutoff(&self) -> DateTime<Utc> {
        crate::entry::truncate_to_micros(
            self.now - TimeDelta::days(i64::from(self.older_than_days)),
        )
    }
}

/// The content of a [`EntryKind::Prune`] entry's `detail`:
/// `before_index=N older_than_days=D cutoff=<RFC 3339, µs, Z>`, then
/// optionally ` reason=<rest of the line>`. It authorises the node's stored
/// prune boundary up to `before_index`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneRecord {
    pub before_index: u64,
    pub older_than_days: u32,
    pub cutoff: DateTime<Utc>,
    pub reason: String,
}

/// Why a prune record's detail did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed prune record: {0}")]
pub struct PruneRecordError(String);

impl PruneRecord {
    pub fn to_detail(&self) -> String {
        let mut out = format!(
            "before_index={} older_than_days={} cutoff={}",
            self.before_index,
            self.older_than_days,
            self.cutoff
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
        if !self.reason.is_empty() {
            out.push_str(" reason=");
            out.push_str(&self.reason);
        }
        out
    }

    /// Strict inverse of [`to_detail`](Self::to_detail): fields in order,
    /// decimal digits only, the exact time form; anything else is refused.
    pub fn parse(detail: &str) -> Result<Self, PruneRecordError> {
        let bad = |what: &str| PruneRecordError(format!("{what} in {detail:?}"));
        let mut parts = detail.splitn(4, ' ');
        let mut field = |key: &str| -> Result<&str, PruneRecordError> {
            parts
                .next()
                .and_then(|p| p.strip_prefix(key))
                .and_then(|p| p.strip_prefix('='))
                .ok_or_else(|| bad(&format!("expected {key}=")))
        };
        let before = field("before_index")?;
        let days = field("older_than_days")?;
        let cutoff = field("cutoff")?;
        let digits =
            |v: &str| !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit());
        if !digits(before) || !digits(days) {
            return Err(bad("non-decimal number"));
        }
        let before_index = before
            .parse()
            .map_err(|_| bad("before_index out of range"))?;
        let older_than_days = days
            .parse()
            .map_err(|_| bad("older_than_days out of range"))?;
        let cutoff = DateTime::parse_from_rfc3339(cutoff)
            .map_err(|_| bad("cutoff is not an RFC 3339 time"))?
            .with_timezone(&Utc);
        let reason = match parts.next() {
            None => String::new(),
            Some(rest) => rest
                .strip_prefix("reason=")
                .filter(|r| !r.is_empty())
                .ok_or_else(|| bad("expected reason= after cutoff"))?
                .to_string(),
        };
        let record = Self {
            before_index,
            older_than_days,
            cutoff,
            reason,
        };
        // Only the canonical spelling is accepted, so one record has one text.
        if record.to_detail() != detail {
            return Err(bad("non-canonical spelling"));
        }
        Ok(record)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub node: String,
    pub cutoff: DateTime<Utc>,
    /// First retained index after the prune (unchanged when nothing was old enough).
    pub pruned_before: u64,
    pub deleted: u64,
    /// Index of the prune record that authorises it; None when nothing was pruned.
    pub record_index: Option<u64>,
}

/// The stored subtree hashes that stand for the entries below `cut` once
/// they are deleted.
pub(crate) async fn frontier_to_keep(
    store: &dyn AuditStore,
    node: &str,
    cut: u64,
) -> Result<Vec<(NodeId, Hash)>, AuditError> {
    let ids = CompactRange::frontier_ids(cut);
    let found = store.get_nodes(node, &ids).await?;
    ids.into_iter()
        .map(|id| {
            found
                .get(&id)
                .map(|h| (id, *h))
                .ok_or_else(|| AuditError::Inconsistent {
                    node: node.to_string(),
                    detail: format!(
                        "cannot prune below {cut}: subtree hash level {} index {} is missing",
                        id.level, id.index
                    ),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    fn record(reason: &str) -> PruneRecord {
        PruneRecord {
            before_index: 45,
            older_than_days: 183,
            cutoff: Utc.with_ymd_and_hms(2025, 9, 1, 8, 0, 0).unwrap(),
            reason: reason.into(),
        }
    }

    #[test]
    fn prune_records_round_trip() {
        for r in [record(""), record("ticket OPS-17: disk full")] {
            assert_eq!(PruneRecord::parse(&r.to_detail()).unwrap(), r);
        }
        assert_eq!(
            record("x").to_detail(),
            "before_index=45 older_than_days=183 cutoff=2025-09-01T08:00:00.000000Z reason=x"
        );
    }

    #[test]
    fn prune_records_are_parsed_strictly() {
        let good = record("").to_detail();
        for bad in [
            String::new(),
            "retention prune node=n1 before_index=5 deleted=5 older_than_days=183".into(),
            good.replace("before_index=45", "before_index=+45"),
            good.replace("before_index=45", "before_index=045"),
            good.replace("before_index=45", "before_index=99999999999999999999"),
            good.replace("older_than_days=183 ", "older_than_days=183  "),
            good.replace(".000000Z", "Z"),
            good.replace("Z", "+08:00"),
            format!("{good} "),
            format!("{good} reason="),
            format!("{good} deleted=5"),
            format!(" {good}"),
        ] {
            assert!(PruneRecord::parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prune_requests_keep_the_legal_floor_and_bounded_texts() {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let ok = PruneRequest::retention(183, now);
        ok.check().unwrap();
        assert_eq!(ok.cutoff(), now - TimeDelta::days(183));
        let short = PruneRequest::retention(30, now);
        assert!(short.check().unwrap_err().to_string().contains("183"));
        PruneRequest {
            force: true,
            ..short
        }
        .check()
        .unwrap();
        for (operator, reason) in [
            ("", ""),
            ("a\nb", ""),
            ("ops", "two\nlines"),
            ("ops", &"x".repeat(MAX_PRUNE_REASON + 1)),
        ] {
            let r = PruneRequest {
                operator: operator.into(),
                reason: reason.to_string(),
                ..PruneRequest::retention(183, now)
            };
            assert!(r.check().is_err(), "{operator:?} {reason:?}");
        }
    }
}
