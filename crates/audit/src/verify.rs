//! Full verification of every node's log against pinned keys.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::entry::EntryKind;
use crate::error::AuditError;
use crate::map::{Key, MapError, MapNode, MapPath, MapUpdate, MapValue, subject_key};
use crate::merkle::{CompactRange, Hash, NodeId};
use crate::note::{Checkpoint, Keyring, origin_for_node};
use crate::read::PruneRecord;
use crate::store::AuditStore;

/// Where a finding is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Location {
    /// The node's log as a whole.
    Log,
    /// The entry at this index.
    Entry(u64),
    /// The stored checkpoint at this tree size.
    Checkpoint(u64),
    /// An externally saved checkpoint of this tree size.
    ExternalCheckpoint(u64),
    /// A stored subtree hash.
    TreeNode { level: u32, index: u64 },
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Log => write!(f, "log"),
            Location::Entry(i) => write!(f, "entry {i}"),
            Location::Checkpoint(s) => write!(f, "checkpoint at size {s}"),
            Location::ExternalCheckpoint(s) => write!(f, "external checkpoint at size {s}"),
            Location::TreeNode { level, index } => {
                write!(f, "subtree hash level {level} index {index}")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Severity {
    /// Evidence of tampering, loss or corruption.
    Error,
    /// Not wrong, but not (yet) protected, e.g. entries after the last checkpoint.
    Warning,
}

/// One problem, naming the node and place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub node: String,
    pub location: Location,
    pub severity: Severity,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Error => "ERROR",
            Severity::Warning => "WARNING",
        };
        write!(
            f,
            "{sev} node {}, {}: {}",
            self.node, self.location, self.message
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeReport {
    pub node: String,
    pub first_index: u64,
    pub tree_size: u64,
    pub entries_checked: u64,
    pub checkpoints_checked: u64,
    /// Checkpoints whose subject map root was recomputed from the entries.
    pub maps_checked: u64,
    pub latest_signed_size: u64,
    /// Root recomputed at `tree_size` (hex), when the tree could be rebuilt.
    pub root: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub nodes: Vec<NodeReport>,
    pub findings: Vec<Finding>,
}

impl VerifyReport {
    /// True when there is no error-severity finding.
    pub fn is_ok(&self) -> bool {
        !self.findings.iter().any(|f| f.severity == Severity::Error)
    }
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }
}

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Signed checkpoint notes saved outside the store earlier (e.g. by
    /// `--checkpoint FILE`); catch truncation, rollback and replayed checkpoints.
    pub external_checkpoints: Vec<String>,
    /// Verify only these nodes (default: every node in the store, plus nodes
    /// named by external checkpoints).
    pub nodes: Option<Vec<String>>,
    /// Entries read per query (default 10 000).
    pub page_size: u32,
}

/// Progress of a long verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress<'a> {
    pub node: &'a str,
    pub checked: u64,
    pub total: u64,
}

/// Extracts all checkpoint notes from a file that may hold several (each a
/// signed note; notes are separated by the end of their signature lines).
pub fn split_checkpoint_notes(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_sigs = false;
    for line in text.split_inclusive('\n') {
        if in_sigs && !line.starts_with('\u{2014}') {
            out.push(std::mem::take(&mut cur));
            in_sigs = false;
            if line.trim().is_empty() {
                continue;
            }
        }
        if line == "\n" && !cur.is_empty() {
            in_sigs = true;
        }
        cur.push_str(line);
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

struct Target {
    root: Hash,
    external: bool,
}

/// A signed checkpoint's subject map root, to recompute.
struct MapTarget {
    root: Hash,
    external: bool,
}

/// A monitor's own copy of a node's subject map: every subject's value
/// rebuilt from the entries in log order, and the map over them kept as an
/// in-memory tree updated at each checkpoint that commits to a map (so each
/// costs only its changes, and the first bad checkpoint is named).
#[derive(Debug, Default)]
struct MapReplay {
    values: HashMap<Key, MapValue>,
    /// Subjects whose value changed since the map was last brought up to date.
    dirty: HashSet<Key>,
    nodes: HashMap<MapPath, MapNode>,
    /// The tree's only leaf while it has no internal node.
    single: Option<(Key, Hash)>,
}

impl MapReplay {
    /// Starts every subject from `base` (its pruned chain's value).
    fn new(base: impl IntoIterator<Item = (Key, MapValue)>) -> Self {
        let values: HashMap<Key, MapValue> = base.into_iter().collect();
        Self {
            dirty: values.keys().copied().collect(),
            values,
            ..Default::default()
        }
    }

    /// Chains the entry at `index` on to its subject's value, if it has one.
    fn add(&mut self, subject: &str, index: u64, leaf: &Hash) {
        if let Some(key) = subject_key(subject) {
            self.values.entry(key).or_default().extend(index, leaf);
            self.dirty.insert(key);
        }
    }

    /// The map root over every subject's current value.
    fn root(&mut self) -> Result<Hash, MapError> {
        let changes: Vec<(Key, Hash)> = self
            .dirty
            .drain()
            .map(|k| (k, self.values.get(&k).copied().unwrap_or_default().hash()))
            .collect();
        let only = match changes.as_slice() {
            [one] => Some(*one),
            _ => None,
        };
        let mut update = MapUpdate::new(self.single, changes);
        loop {
            let wanted = update.wanted();
            if wanted.is_empty() {
                break;
            }
            let found = wanted
                .iter()
                .filter_map(|p| self.nodes.get(p).copied())
                .collect();
            update.supply(found);
        }
        let delta = update.finish()?;
        for path in &delta.deletes {
            self.nodes.remove(path);
        }
        for node in delta.upserts {
            self.nodes.insert(node.path, node);
        }
        if self.nodes.contains_key(&MapPath::ROOT) {
            self.single = None;
        } else if only.is_some() {
            // No internal node: the tree holds at most the one changed key.
            self.single = only;
        }
        Ok(delta.root)
    }
}

/// Recomputes everything in the store and checks it against the checkpoints
/// signed by keys in `keyring` (which must come from configuration, never
/// from the store).
pub async fn verify(
    store: &dyn AuditStore,
    keyring: &Keyring,
    options: &VerifyOptions,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<VerifyReport, AuditError> {
    let mut report = VerifyReport::default();
    // External checkpoints grouped by node.
    let mut external: HashMap<String, Vec<String>> = HashMap::new();
    for note in &options.external_checkpoints {
        let node = Checkpoint::peek_origin(note)
            .and_then(|o| o.strip_prefix("tongban/audit/"))
            .unwrap_or("")
            .to_string();
        external.entry(node).or_default().push(note.clone());
    }
    if let Some(bad) = external.remove("") {
        for _ in bad {
            report.findings.push(Finding {
                node: String::new(),
                location: Location::ExternalCheckpoint(0),
                severity: Severity::Error,
                message: "external checkpoint has no tongban/audit/<node> origin".into(),
            });
        }
    }
    let nodes = match &options.nodes {
        Some(n) => n.clone(),
        None => {
            let mut n = store.list_nodes().await?;
            for k in external.keys() {
                if !n.contains(k) {
                    n.push(k.clone());
                }
            }
            n.sort();
            n
        }
    };
    let page = if options.page_size == 0 {
        10_000
    } else {
        options.page_size
    };
    for node in nodes {
        let ext = external.remove(&node).unwrap_or_default();
        let (nr, findings) = verify_node(store, keyring, &node, &ext, page, progress).await?;
        report.nodes.push(nr);
        report.findings.extend(findings);
    }
    Ok(report)
}

async fn verify_node(
    store: &dyn AuditStore,
    keyring: &Keyring,
    node: &str,
    external: &[String],
    page: u32,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<(NodeReport, Vec<Finding>), AuditError> {
    let origin = origin_for_node(node);
    let mut findings = Vec::new();
    let mut find = |location: Location, severity: Severity, message: String| {
        findings.push(Finding {
            node: node.to_string(),
            location,
            severity,
            message,
        });
    };
    let state = store.log_state(node).await?;
    let mut nr = NodeReport {
        node: node.to_string(),
        first_index: state.pruned_before,
        ..Default::default()
    };

    // 1. Checkpoints: signatures by pinned keys, row vs note, monotonic time.
    let mut targets: BTreeMap<u64, Vec<Target>> = BTreeMap::new();
    let mut map_targets: BTreeMap<u64, Vec<MapTarget>> = BTreeMap::new();
    // (size, VRF key) of the latest checkpoint with a map.
    let mut last_vrf: Option<(u64, [u8; 32])> = None;
    let mut prev: Option<Checkpoint> = None;
    let mut latest_signed = 0u64;
    for row in store.checkpoints(node).await? {
        nr.checkpoints_checked += 1;
        let cp = match Checkpoint::open(&row.note, keyring, &origin) {
            Ok(cp) => cp,
            Err(e) => {
                find(
                    Location::Checkpoint(row.tree_size),
                    Severity::Error,
                    format!("signature check failed: {e}"),
                );
                continue;
            }
        };
        if cp.size != row.tree_size || cp.root != row.root {
            find(
                Location::Checkpoint(row.tree_size),
                Severity::Error,
                format!(
                    "row says size {} but its signed note is for size {} with {} root (an older checkpoint replayed, or the row edited)",
                    row.tree_size,
                    cp.size,
                    if cp.root == row.root {
                        "the same"
                    } else {
                        "a different"
                    }
                ),
            );
        }
        if let Some(p) = &prev {
            if cp.size < p.size {
                find(
                    Location::Checkpoint(row.tree_size),
                    Severity::Error,
                    format!(
                        "signed size {} is smaller than the preceding checkpoint's {} (not monotonic)",
                        cp.size, p.size
                    ),
                );
            }
            if cp.time < p.time {
                find(
                    Location::Checkpoint(row.tree_size),
                    Severity::Error,
                    format!(
                        "signed time {} is earlier than checkpoint size {} signed at {} (not monotonic)",
                        fmt_time(cp.time),
                        p.size,
                        fmt_time(p.time)
                    ),
                );
            }
        }
        latest_signed = latest_signed.max(cp.size);
        targets.entry(cp.size).or_default().push(Target {
            root: cp.root,
            external: false,
        });
        if let Some(map) = cp.map {
            if let Some((size, key)) = last_vrf
                && key != map.vrf_key
            {
                find(
                    Location::Checkpoint(cp.size),
                    Severity::Warning,
                    format!(
                        "names VRF key {} for its subject map, the checkpoint at size {size} named {}: subject keys derived under the old key no longer match new entries about the same person",
                        hex::encode(map.vrf_key),
                        hex::encode(key)
                    ),
                );
            }
            last_vrf = Some((cp.size, map.vrf_key));
            map_targets.entry(cp.size).or_default().push(MapTarget {
                root: map.root,
                external: false,
            });
        }
        prev = Some(cp);
    }
    nr.latest_signed_size = latest_signed;
    for note in external {
        match Checkpoint::open(note, keyring, &origin) {
            Ok(cp) => {
                if cp.size > latest_signed {
                    find(
                        Location::ExternalCheckpoint(cp.size),
                        Severity::Error,
                        format!(
                            "the store's latest valid checkpoint (size {latest_signed}) is older than a checkpoint saved externally at size {}: the log was truncated or rolled back to an older checkpoint",
                            cp.size
                        ),
                    );
                }
                targets.entry(cp.size).or_default().push(Target {
                    root: cp.root,
                    external: true,
                });
                if let Some(map) = cp.map {
                    map_targets.entry(cp.size).or_default().push(MapTarget {
                        root: map.root,
                        external: true,
                    });
                }
            }
            Err(e) => find(
                Location::ExternalCheckpoint(0),
                Severity::Error,
                format!("external checkpoint does not verify: {e}"),
            ),
        }
    }
    for (size, ts) in &targets {
        if ts.iter().any(|t| t.root != ts[0].root) {
            find(
                Location::Checkpoint(*size),
                Severity::Error,
                format!(
                    "two validly signed checkpoints at size {size} have different roots: the log was forked"
                ),
            );
        }
    }
    for (size, ms) in &map_targets {
        if ms.iter().any(|m| m.root != ms[0].root) {
            find(
                Location::Checkpoint(*size),
                Severity::Error,
                format!(
                    "two validly signed checkpoints at size {size} commit to different subject maps: the map was forked"
                ),
            );
        }
    }

    // 2. The pruned prefix is represented by its stored frontier.
    let mut tree: Option<CompactRange> = None;
    if state.pruned_before > 0 {
        let ids = CompactRange::frontier_ids(state.pruned_before);
        let found = store.get_nodes(node, &ids).await?;
        let hashes: Option<Vec<Hash>> = ids.iter().map(|id| found.get(id).copied()).collect();
        match hashes.and_then(|h| CompactRange::from_parts(state.pruned_before, h).ok()) {
            Some(r) => {
                if let Some(ts) = targets.get(&state.pruned_before)
                    && ts.iter().any(|t| t.root != r.root())
                {
                    find(
                        Location::Checkpoint(state.pruned_before),
                        Severity::Error,
                        "signed root differs from the stored subtree hashes that stand for the pruned entries".into(),
                    );
                }
                tree = Some(r);
            }
            None => find(
                Location::Log,
                Severity::Error,
                format!(
                    "entries below {} were pruned but the subtree hashes that stand for them are missing; later checkpoints cannot be checked",
                    state.pruned_before
                ),
            ),
        }
    } else {
        tree = Some(CompactRange::new());
    }

    // 3. Stream entries, recompute leaves, the tree and the subject map.
    // Subjects with pruned entries start from the pruned chains the store
    // keeps: they cannot be checked on their own (their entries are gone),
    // but an altered one changes the recomputed map root, so it shows up
    // below as a map mismatch at every later checkpoint.
    let mut replay = if map_targets.is_empty() {
        None
    } else {
        let mut base = Vec::new();
        let mut after: Option<Key> = None;
        loop {
            let chunk = store.pruned_chains_page(node, after.as_ref(), page).await?;
            after = chunk.last().map(|(k, _)| *k);
            let done = chunk.len() < page as usize;
            base.extend(chunk.into_iter().map(|(k, c)| (k, c.value())));
            if done {
                break;
            }
        }
        Some(MapReplay::new(base))
    };
    if state.pruned_before > 0 {
        // A checkpoint at the boundary commits to exactly the pruned chains.
        check_map(
            &mut replay,
            &map_targets,
            state.pruned_before,
            &mut nr.maps_checked,
            &mut find,
        );
    }
    let total = state.size.saturating_sub(state.pruned_before);
    let mut expected = state.pruned_before;
    let mut last_good_size = state.pruned_before;
    let mut checked = 0u64;
    let mut roots_checked: HashMap<u64, bool> = HashMap::new();
    // (record index, before_index) of every well-formed retained prune record.
    let mut prune_records: Vec<(u64, u64)> = Vec::new();
    loop {
        let rows = store.scan(node, expected, page).await?;
        if rows.is_empty() {
            break;
        }
        let mut completed: Vec<(NodeId, Hash)> = Vec::new();
        for row in &rows {
            if row.index != expected {
                find(
                    Location::Entry(expected),
                    Severity::Error,
                    format!(
                        "entries {expected}..{} are missing (deleted): the next stored entry is {}",
                        row.index - 1,
                        row.index
                    ),
                );
                // The tree cannot be rebuilt past a gap, nor the map.
                tree = None;
                replay = None;
            }
            let leaf = row.entry.leaf_hash(row.index);
            if row.entry.node != node {
                find(
                    Location::Entry(row.index),
                    Severity::Error,
                    format!("entry names node {:?}", row.entry.node),
                );
            }
            if leaf != row.leaf_hash {
                find(
                    Location::Entry(row.index),
                    Severity::Error,
                    "stored fields do not match the stored leaf hash: the entry was modified, moved or inserted after it was written".into(),
                );
            }
            if row.entry.kind == EntryKind::Prune {
                match PruneRecord::parse(&row.entry.detail) {
                    Ok(r) if r.before_index > row.index => find(
                        Location::Entry(row.index),
                        Severity::Error,
                        format!(
                            "prune record authorises pruning below {}, past the record itself",
                            r.before_index
                        ),
                    ),
                    Ok(r) => prune_records.push((row.index, r.before_index)),
                    Err(e) => find(Location::Entry(row.index), Severity::Error, e.to_string()),
                }
            }
            if let Some(t) = tree.as_mut() {
                completed.extend(t.append(leaf));
                let size = t.size();
                if let Some(ts) = targets.get(&size) {
                    let root = t.root();
                    let ok = ts.iter().all(|x| x.root == root);
                    roots_checked.insert(size, ok);
                    if ok {
                        last_good_size = size;
                    } else {
                        let loc = if ts.iter().all(|x| x.external) {
                            Location::ExternalCheckpoint(size)
                        } else {
                            Location::Checkpoint(size)
                        };
                        find(
                            loc,
                            Severity::Error,
                            format!(
                                "signed root differs from the root recomputed from the stored entries: entries in {last_good_size}..{} were altered, replaced or reordered after signing",
                                size - 1
                            ),
                        );
                        // Keep later mismatches attributed to later ranges.
                        last_good_size = size;
                    }
                }
            }
            if let Some(r) = replay.as_mut() {
                r.add(&row.entry.subject, row.index, &leaf);
                check_map(
                    &mut replay,
                    &map_targets,
                    row.index + 1,
                    &mut nr.maps_checked,
                    &mut find,
                );
            }
            expected = row.index + 1;
            checked += 1;
        }
        // Stored subtree hashes must equal the recomputed ones (proofs use them).
        if tree.is_some() && !completed.is_empty() {
            check_stored_nodes(store, node, &completed, &mut find).await?;
        }
        progress(Progress {
            node,
            checked,
            total,
        });
        if rows.len() < page as usize {
            break;
        }
    }
    nr.entries_checked = checked;
    nr.tree_size = expected.max(state.pruned_before);
    if let Some(t) = &tree {
        nr.root = Some(hex::encode(t.root()));
    }

    // 4. Checkpoints beyond the stored log, or not reached.
    for (size, ts) in &targets {
        if *size > nr.tree_size {
            let loc = if ts.iter().all(|x| x.external) {
                Location::ExternalCheckpoint(*size)
            } else {
                Location::Checkpoint(*size)
            };
            find(
                loc,
                Severity::Error,
                format!(
                    "signed for {size} entries but the log holds only {}: entries {}..{} were removed (truncated tail)",
                    nr.tree_size,
                    nr.tree_size,
                    size - 1
                ),
            );
        } else if *size <= state.pruned_before {
            // Covered by pruning: the signature was checked, the entries are gone.
        } else if !roots_checked.contains_key(size) && tree.is_none() {
            find(
                Location::Checkpoint(*size),
                Severity::Error,
                "cannot be recomputed because entries before it are missing".into(),
            );
        }
    }
    check_prune_boundary(
        state.pruned_before,
        latest_signed,
        &prune_records,
        &mut find,
    );
    if nr.tree_size > latest_signed && nr.tree_size > state.pruned_before {
        find(
            Location::Log,
            Severity::Warning,
            format!(
                "entries {}..{} are not yet covered by a signed checkpoint",
                latest_signed.max(state.pruned_before),
                nr.tree_size - 1
            ),
        );
    }
    Ok((nr, findings))
}

/// Compares the map root recomputed over every subject so far with the
/// map roots signed at `size`, if any. A recomputation that fails (a bug,
/// not the log's fault) is reported and ends the map checks.
fn check_map(
    replay: &mut Option<MapReplay>,
    targets: &BTreeMap<u64, Vec<MapTarget>>,
    size: u64,
    checked: &mut u64,
    find: &mut impl FnMut(Location, Severity, String),
) {
    let (Some(r), Some(ts)) = (replay.as_mut(), targets.get(&size)) else {
        return;
    };
    match r.root() {
        Ok(root) => {
            *checked += 1;
            if ts.iter().any(|t| t.root != root) {
                let loc = if ts.iter().all(|t| t.external) {
                    Location::ExternalCheckpoint(size)
                } else {
                    Location::Checkpoint(size)
                };
                find(
                    loc,
                    Severity::Error,
                    format!(
                        "commits to a subject map that does not follow from the log's entries: its map root differs from the one recomputed from every subject's entries below {size} (the signed map leaves out, adds or alters an entry about someone)"
                    ),
                );
            }
        }
        Err(e) => {
            find(
                Location::Checkpoint(size),
                Severity::Error,
                format!("the subject map could not be recomputed, later maps are not checked: {e}"),
            );
            *replay = None;
        }
    }
}

/// A stored prune boundary stands only when the node's own writer
/// authorised it: a retained prune record with `before_index` at or past the
/// boundary, under a checkpoint signed by a pinned key, and the boundary
/// itself under the latest signed checkpoint (only signed entries are pruned).
fn check_prune_boundary(
    boundary: u64,
    latest_signed: u64,
    records: &[(u64, u64)],
    find: &mut impl FnMut(Location, Severity, String),
) {
    if boundary == 0 {
        return;
    }
    if boundary > latest_signed {
        find(
            Location::Log,
            Severity::Error,
            format!(
                "entries below {boundary} were pruned but the latest signed checkpoint covers only {latest_signed}: entries are pruned only once a signed checkpoint covers them"
            ),
        );
    }
    let authorising = || records.iter().filter(|(_, before)| *before >= boundary);
    if authorising().any(|(index, _)| *index < latest_signed) {
        return;
    }
    if let Some((index, before)) = authorising().next() {
        find(
            Location::Entry(*index),
            Severity::Error,
            format!(
                "this prune record (before_index={before}) is the only authority for the prune boundary {boundary}, and no checkpoint signed by a pinned key covers it"
            ),
        );
    } else if let Some((index, before)) = records.iter().max_by_key(|(_, before)| *before) {
        find(
            Location::Log,
            Severity::Error,
            format!(
                "entries below {boundary} were removed but the newest prune authority (the record at entry {index}) allows pruning only below {before}: entries {before}..{} were deleted without a prune record",
                boundary - 1
            ),
        );
    } else {
        find(
            Location::Log,
            Severity::Error,
            format!(
                "entries below {boundary} were removed but no prune record in the retained log authorises it: they were deleted behind the log's back"
            ),
        );
    }
}

async fn check_stored_nodes(
    store: &dyn AuditStore,
    node: &str,
    completed: &[(NodeId, Hash)],
    find: &mut impl FnMut(Location, Severity, String),
) -> Result<(), AuditError> {
    let mut by_level: BTreeMap<u32, Vec<(u64, Hash)>> = BTreeMap::new();
    for (id, h) in completed {
        by_level.entry(id.level).or_default().push((id.index, *h));
    }
    for (level, want) in by_level {
        let (lo, hi) = (want[0].0, want[want.len() - 1].0);
        let stored: HashMap<u64, Hash> = store
            .tree_nodes_range(node, level, lo, hi)
            .await?
            .into_iter()
            .collect();
        for (index, h) in want {
            let id = NodeId::new(level, index);
            match stored.get(&index) {
                None => find(
                    Location::TreeNode { level, index },
                    Severity::Error,
                    format!(
                        "stored subtree hash for entries {}..{} is missing",
                        id.start(),
                        id.end() - 1
                    ),
                ),
                Some(s) if *s != h => find(
                    Location::TreeNode { level, index },
                    Severity::Error,
                    format!(
                        "stored subtree hash for entries {}..{} differs from the recomputed one",
                        id.start(),
                        id.end() - 1
                    ),
                ),
                Some(_) => {}
            }
        }
    }
    Ok(())
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_concatenated_notes() {
        let a = "o\n1\nAAAA\ntime x\n\n\u{2014} o abc\n";
        let b = "o\n2\nBBBB\ntime y\n\n\u{2014} o def\n\u{2014} p ghi\n";
        let both = format!("{a}\n{b}");
        assert_eq!(
            split_checkpoint_notes(&both),
            vec![a.to_string(), b.to_string()]
        );
        assert_eq!(split_checkpoint_notes(a), vec![a.to_string()]);
        let glued = format!("{a}{b}");
        assert_eq!(
            split_checkpoint_notes(&glued),
            vec![a.to_string(), b.to_string()]
        );
    }

    /// The in-memory map, updated checkpoint by checkpoint, has the root
    /// computed from scratch over the same values: from none, through a
    /// single leaf, to many, with repeat subjects and a pruned base.
    #[test]
    fn replayed_map_matches_the_map_from_scratch() {
        use rand::rngs::StdRng;
        use rand::{RngCore, SeedableRng};

        let scratch = |r: &MapReplay| {
            crate::map::root_from_leaves(r.values.iter().map(|(k, v)| (*k, v.hash())).collect())
                .unwrap()
        };
        let mut rng = StdRng::seed_from_u64(7);
        let mut keys: Vec<Key> = Vec::new();
        let key = |rng: &mut StdRng| {
            let mut k = [0u8; 32];
            rng.fill_bytes(&mut k);
            k
        };
        let base = (0..3).map(|i| {
            let mut v = MapValue::default();
            v.extend(i, &[i as u8; 32]);
            ([i as u8 + 1; 32], v)
        });
        for seeded in [false, true] {
            let mut r = if seeded {
                MapReplay::new(base.clone())
            } else {
                MapReplay::new([])
            };
            assert_eq!(r.root().unwrap(), scratch(&r));
            keys.clear();
            keys.push(key(&mut rng));
            let mut index = 100;
            for round in 0..30 {
                for _ in 0..round {
                    // Mostly known subjects; a new one now and then.
                    if rng.next_u32().is_multiple_of(3) {
                        keys.push(key(&mut rng));
                    }
                    let k = keys[rng.next_u32() as usize % keys.len()];
                    let mut leaf = [0u8; 32];
                    rng.fill_bytes(&mut leaf);
                    r.add(&hex::encode(k), index, &leaf);
                    index += 1;
                }
                // Entries about nobody change nothing.
                r.add("", index, &[9u8; 32]);
                assert_eq!(r.root().unwrap(), scratch(&r), "round {round}");
            }
        }
    }

    #[test]
    fn report_ok_ignores_warnings() {
        let mut r = VerifyReport::default();
        assert!(r.is_ok());
        r.findings.push(Finding {
            node: "n".into(),
            location: Location::Log,
            severity: Severity::Warning,
            message: "x".into(),
        });
        assert!(r.is_ok());
        r.findings[0].severity = Severity::Error;
        assert!(!r.is_ok());
        assert_eq!(r.findings[0].to_string(), "ERROR node n, log: x");
    }
}
