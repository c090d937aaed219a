//! The verifiable subject map: subject key → (count of that subject's entries,
//! chain head over them), as a compressed sparse Merkle tree whose root goes
//! into each signed checkpoint, so a citizen's portal can check offline that
//! the list of entries it was given about a person is the whole list.
//!
//! Hashing (SHA-256, prefixes kept apart from RFC 6962's 0x00/0x01):
//! - chain link: `SHA256(0x13 ‖ prev ‖ index BE ‖ entry leaf hash)`, from `[0; 32]`;
//! - value hash: `SHA256(0x12 ‖ count BE ‖ head)`;
//! - map leaf: `SHA256(0x10 ‖ key ‖ value hash)`;
//! - internal node: `SHA256(0x11 ‖ left ‖ right)`;
//! - empty subtree: `[0; 32]`.
//!
//! The tree is a binary trie over the key's 256 bits, most significant bit of
//! `key[0]` first (0 = left). A subtree with no leaf hashes to EMPTY, one with
//! exactly one leaf to that leaf's hash whatever its depth, one with two or
//! more to `internal(left, right)` — so there is an internal node at *every*
//! depth above the point where two keys part.
//!
//! Only internal nodes are stored, each with both children ([`MapNode`]).
//! Since values are only inserted or changed, never removed, an internal node
//! never goes away or moves: an update only adds nodes and rewrites those on
//! the changed keys' paths ([`MapDelta::deletes`] stays empty).
//!
//! Everything here is pure: the store is driven through [`MapUpdate`] (which
//! paths to load, level by level) and [`prove_paths`] (which paths a proof
//! needs), and does the SQL itself.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// A map key: the 32 bytes of an entry's `subject` pseudonym.
pub type Key = [u8; 32];

/// Hash of an empty subtree.
pub const EMPTY: Hash = [0u8; 32];

/// Number of key bits, hence the most levels a proof can have.
pub const KEY_BITS: usize = 256;

/// Upper bound of [`MapProof::to_bytes`]: tag, count, full bitmap, every
/// sibling, terminal leaf.
pub const MAX_PROOF_BYTES: usize = 1 + 2 + KEY_BITS / 8 + KEY_BITS * 32 + 64;

/// Levels [`MapUpdate`] asks for beyond each pending node, by default: each
/// round then covers four levels, so an update takes about a quarter of the
/// tree's depth in rounds. Near the top every one of those nodes is needed
/// anyway; near the bottom at most this many absent paths per changed key
/// are asked for in vain.
pub const DEFAULT_LOOKAHEAD: u16 = 3;

const TAG_LEAF: u8 = 0x10;
const TAG_INTERNAL: u8 = 0x11;
const TAG_VALUE: u8 = 0x12;
const TAG_LINK: u8 = 0x13;

/// Errors of the subject map. Their text is meant for whoever checks a
/// citizen's report, so it says what failed in their terms; it never holds a
/// key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("the map proof does not lead to the checkpoint's map root")]
    RootMismatch,
    #[error("the map proof is for another subject than the one asked about")]
    WrongKey,
    #[error(
        "the map proof's leaf lies off the subject's path, so it proves nothing about this subject"
    )]
    LeafOffPath,
    #[error(
        "the map holds a different value for this subject than the entries given: they are not all of the subject's entries, or not the same ones"
    )]
    ValueMismatch,
    #[error("the map proof shows the subject present, but no entries were given for it")]
    UnexpectedlyPresent,
    #[error("the map proof shows the subject absent, but entries were given for it")]
    UnexpectedlyAbsent,
    #[error("the map proof has {levels} levels, more than the {KEY_BITS} a subject key has")]
    ProofTooLong { levels: usize },
    #[error("the map proof's encoding is malformed: {0}")]
    MalformedProof(&'static str),
    #[error("the map node path's encoding is malformed: {0}")]
    MalformedPath(&'static str),
    #[error(
        "entry index {next} does not come after {prev}: a subject's entries must be listed in increasing log order, each once"
    )]
    IndexNotIncreasing { prev: u64, next: u64 },
    #[error("the subject's entry count overflows")]
    CountOverflow,
    #[error("the map update changes the same subject twice in one batch")]
    DuplicateKey,
    #[error("the map update was finished before every node it needs was loaded")]
    LoadingUnfinished,
    #[error("the map store lacks the internal node at depth {depth} that its parent refers to")]
    MissingNode { depth: u16 },
    #[error("the map store's node at depth {depth} is malformed: {why}")]
    BadNode { depth: u16, why: &'static str },
    #[error("the map store holds both internal nodes and a single leaf")]
    SingleLeafWithNodes,
    #[error("the map store has no value for a leaf the tree refers to")]
    MissingLeafValue,
    #[error("the stored value of a leaf does not match the tree's hash of it")]
    LeafValueMismatch,
}

/// Bit `i` of `key`, most significant bit of `key[0]` first.
pub fn bit(key: &Key, i: usize) -> u8 {
    (key[i / 8] >> (7 - i % 8)) & 1
}

/// Chain link of one entry onto a subject's chain head.
pub fn link(prev: &Hash, index: u64, leaf_hash: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([TAG_LINK]);
    h.update(prev);
    h.update(index.to_be_bytes());
    h.update(leaf_hash);
    h.finalize().into()
}

/// Hash of a map value.
pub fn value_hash(count: u64, head: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([TAG_VALUE]);
    h.update(count.to_be_bytes());
    h.update(head);
    h.finalize().into()
}

/// Hash of a map leaf: the key bound to its value hash.
pub fn leaf(key: &Key, value_hash: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([TAG_LEAF]);
    h.update(key);
    h.update(value_hash);
    h.finalize().into()
}

/// Hash of an internal node.
pub fn internal(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([TAG_INTERNAL]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The map key of an entry's `subject` field: exactly 64 lower-case hex
/// digits, else `None` (entries without a subject are not in the map).
pub fn subject_key(subject: &str) -> Option<Key> {
    let b = subject.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut key = [0u8; 32];
    for (i, out) in key.iter_mut().enumerate() {
        *out = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
    }
    Some(key)
}

/// A subject's value in the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MapValue {
    /// How many entries about the subject the log holds.
    pub count: u64,
    /// Chain head over them, in increasing log index.
    pub head: Hash,
}

impl MapValue {
    /// The value hash stored under the subject's key.
    pub fn hash(&self) -> Hash {
        value_hash(self.count, &self.head)
    }

    /// Adds the entry at `index` with RFC 6962 leaf hash `leaf_hash`. The
    /// count saturates: a log cannot hold 2^64 entries, and [`chain`] reports
    /// overflow for untrusted input.
    pub fn extend(&mut self, index: u64, leaf_hash: &Hash) {
        self.count = self.count.saturating_add(1);
        self.head = link(&self.head, index, leaf_hash);
    }
}

/// Folds a subject's entries `(log index, leaf hash)` onto `start` (the value
/// over the entries before them; `MapValue::default()` for all of them).
/// Indexes must strictly increase, so an entry cannot be counted twice.
pub fn chain(
    entries: impl IntoIterator<Item = (u64, Hash)>,
    start: MapValue,
) -> Result<MapValue, MapError> {
    let mut value = start;
    let mut prev: Option<u64> = None;
    for (index, leaf_hash) in entries {
        if let Some(p) = prev
            && index <= p
        {
            return Err(MapError::IndexNotIncreasing {
                prev: p,
                next: index,
            });
        }
        prev = Some(index);
        value.count = value.count.checked_add(1).ok_or(MapError::CountOverflow)?;
        value.head = link(&value.head, index, &leaf_hash);
    }
    Ok(value)
}

/// Where an internal node sits: the first `depth` bits of every key below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MapPath {
    depth: u16,
    prefix: Key,
}

impl MapPath {
    /// The root: depth 0.
    pub const ROOT: MapPath = MapPath {
        depth: 0,
        prefix: [0u8; 32],
    };

    /// The path of depth `depth` on `key`'s way down; `None` past depth 255,
    /// where no internal node can be.
    pub fn of_key(key: &Key, depth: u16) -> Option<MapPath> {
        if usize::from(depth) >= KEY_BITS {
            return None;
        }
        Some(Self::of_key_unchecked(key, usize::from(depth)))
    }

    /// Like `of_key` for a depth the caller knows is below 256.
    fn of_key_unchecked(key: &Key, depth: usize) -> MapPath {
        let mut prefix = [0u8; 32];
        let full = depth / 8;
        prefix[..full].copy_from_slice(&key[..full]);
        let rem = depth % 8;
        if rem > 0 {
            prefix[full] = key[full] & (0xFFu8 << (8 - rem));
        }
        MapPath {
            // depth < 256 here, so it fits.
            depth: depth as u16,
            prefix,
        }
    }

    pub fn depth(&self) -> u16 {
        self.depth
    }

    /// The key bits above this node; bits from `depth` on are zero.
    pub fn prefix(&self) -> &Key {
        &self.prefix
    }

    /// Whether `key` lies below this node.
    pub fn contains(&self, key: &Key) -> bool {
        Self::of_key_unchecked(key, usize::from(self.depth)) == *self
    }

    /// The store key: depth as two bytes big-endian, then the first
    /// `ceil(depth / 8)` bytes of the prefix.
    pub fn encode(&self) -> Vec<u8> {
        let n = usize::from(self.depth).div_ceil(8);
        let mut out = Vec::with_capacity(2 + n);
        out.extend_from_slice(&self.depth.to_be_bytes());
        out.extend_from_slice(&self.prefix[..n]);
        out
    }

    /// Parses [`MapPath::encode`]'s output, refusing any other spelling of it.
    pub fn decode(bytes: &[u8]) -> Result<MapPath, MapError> {
        let (head, rest) = bytes
            .split_first_chunk::<2>()
            .ok_or(MapError::MalformedPath("shorter than its depth"))?;
        let depth = u16::from_be_bytes(*head);
        let d = usize::from(depth);
        if d >= KEY_BITS {
            return Err(MapError::MalformedPath("depth past 255"));
        }
        if rest.len() != d.div_ceil(8) {
            return Err(MapError::MalformedPath(
                "prefix length does not match depth",
            ));
        }
        let mut prefix = [0u8; 32];
        prefix[..rest.len()].copy_from_slice(rest);
        let path = MapPath { depth, prefix };
        if Self::of_key_unchecked(&prefix, d) != path {
            return Err(MapError::MalformedPath("bits set past the depth"));
        }
        Ok(path)
    }
}

/// One child of an internal node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapChild {
    /// The child subtree's hash: EMPTY, a leaf hash, or an internal hash.
    pub hash: Hash,
    /// The leaf's key when the child subtree holds exactly one leaf.
    pub leaf_key: Option<Key>,
}

impl MapChild {
    /// An empty subtree.
    pub const EMPTY: MapChild = MapChild {
        hash: EMPTY,
        leaf_key: None,
    };

    /// A subtree of exactly one leaf.
    pub fn leaf(key: Key, value_hash: &Hash) -> MapChild {
        MapChild {
            hash: leaf(&key, value_hash),
            leaf_key: Some(key),
        }
    }

    fn kind(&self) -> Subtree {
        match self.leaf_key {
            Some(k) => Subtree::Leaf(k, self.hash),
            None if self.hash == EMPTY => Subtree::Empty,
            None => Subtree::Internal,
        }
    }
}

/// A stored internal node: a subtree holding two leaves or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapNode {
    pub path: MapPath,
    pub left: MapChild,
    pub right: MapChild,
}

impl MapNode {
    /// This subtree's hash.
    pub fn hash(&self) -> Hash {
        internal(&self.left.hash, &self.right.hash)
    }

    /// The child on side `bit` (0 = left).
    pub fn child(&self, bit: u8) -> &MapChild {
        if bit == 0 { &self.left } else { &self.right }
    }

    /// Checks what can be checked without the leaves' values: leaf keys lie
    /// under their side, an internal node holds two leaves or more, nothing
    /// internal hangs below depth 255.
    pub fn check(&self) -> Result<(), MapError> {
        let depth = self.path.depth;
        let bad = |why| Err(MapError::BadNode { depth, why });
        let mut leaves = 0;
        for (side, child) in [(0u8, &self.left), (1u8, &self.right)] {
            match child.kind() {
                Subtree::Empty => {}
                Subtree::Leaf(k, h) => {
                    if h == EMPTY {
                        return bad("a leaf child has the empty hash");
                    }
                    if !self.path.contains(&k) || bit(&k, usize::from(depth)) != side {
                        return bad("a leaf child's key lies outside its side");
                    }
                    leaves += 1;
                }
                Subtree::Internal => {
                    if usize::from(depth) + 1 >= KEY_BITS {
                        return bad("an internal child below the last level");
                    }
                    leaves += 2;
                }
            }
        }
        if leaves < 2 {
            return bad("it holds fewer than two leaves");
        }
        Ok(())
    }
}

/// What a subtree holds, as its parent knows it.
#[derive(Debug, Clone, Copy)]
enum Subtree {
    Empty,
    /// Key and leaf hash.
    Leaf(Key, Hash),
    /// Two leaves or more: the node itself must be loaded to go further.
    Internal,
}

impl Subtree {
    fn child(self, internal_hash: Hash) -> MapChild {
        match self {
            Subtree::Empty => MapChild::EMPTY,
            Subtree::Leaf(k, h) => MapChild {
                hash: h,
                leaf_key: Some(k),
            },
            Subtree::Internal => MapChild {
                hash: internal_hash,
                leaf_key: None,
            },
        }
    }
}

/// What a batch update writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDelta {
    /// The map root after the batch.
    pub root: Hash,
    /// Internal nodes to insert or overwrite, keyed by path.
    pub upserts: Vec<MapNode>,
    /// Internal nodes to delete. Always empty while values are never
    /// removed (internal nodes then never move); kept so a store applying
    /// deltas needs no change if removal ever comes.
    pub deletes: Vec<MapPath>,
}

/// A node that must be loaded: its path and the changed keys below it.
#[derive(Debug, Clone, Copy)]
struct Pending {
    path: MapPath,
    lo: usize,
    hi: usize,
}

/// A batch update of the map, driven as a loop by the store:
///
/// ```text
/// let mut up = MapUpdate::new(single, changes);
/// loop {
///     let wanted = up.wanted();
///     if wanted.is_empty() { break }
///     up.supply(/* the stored nodes among `wanted` */);
/// }
/// let delta = up.finish()?;
/// ```
///
/// Each round asks for the nodes on the changed keys' paths at the next
/// `1 + lookahead` levels, so one query per round loads the tree by levels;
/// the rounds number about the tree's depth over `1 + lookahead`. A round
/// asks for at most `max(changes, 1) × (1 + lookahead)` paths, none twice
/// (mind the SQL parameter limit: bind them as one array). Work is
/// O(changes × depth) in all; `finish` recurses at most 257 frames deep
/// (a few hundred bytes each).
#[derive(Debug)]
pub struct MapUpdate {
    /// Sorted by key, distinct.
    changes: Vec<(Key, Hash)>,
    single: Option<(Key, Hash)>,
    lookahead: u16,
    pending: Vec<Pending>,
    wanted: Vec<MapPath>,
    asked: HashSet<MapPath>,
    loaded: HashMap<MapPath, MapNode>,
    error: Option<MapError>,
}

impl MapUpdate {
    /// An update setting each key in `changes` to its new value hash.
    /// `root_single_leaf` is the tree's only leaf (key, value hash) when it
    /// has no internal node; `None` when it has internal nodes or is empty.
    pub fn new(root_single_leaf: Option<(Key, Hash)>, changes: Vec<(Key, Hash)>) -> Self {
        Self::with_lookahead(root_single_leaf, changes, DEFAULT_LOOKAHEAD)
    }

    /// Like [`MapUpdate::new`], asking for `lookahead` further levels each
    /// round (0: strictly one level per round).
    pub fn with_lookahead(
        root_single_leaf: Option<(Key, Hash)>,
        mut changes: Vec<(Key, Hash)>,
        lookahead: u16,
    ) -> Self {
        changes.sort_unstable_by_key(|c| c.0);
        let duplicate = changes.windows(2).any(|w| w[0].0 == w[1].0);
        let mut up = MapUpdate {
            pending: vec![Pending {
                path: MapPath::ROOT,
                lo: 0,
                hi: changes.len(),
            }],
            changes,
            single: root_single_leaf,
            lookahead,
            wanted: Vec::new(),
            asked: HashSet::new(),
            loaded: HashMap::new(),
            error: None,
        };
        if duplicate {
            up.fail(MapError::DuplicateKey);
        } else {
            up.plan();
        }
        up
    }

    /// Internal-node paths to load now; empty when loading is done.
    pub fn wanted(&self) -> Vec<MapPath> {
        self.wanted.clone()
    }

    /// The stored nodes among the last [`MapUpdate::wanted`] (those absent
    /// simply left out).
    pub fn supply(&mut self, found: Vec<MapNode>) {
        if self.error.is_some() {
            return;
        }
        let asked_now: HashSet<MapPath> = self.wanted.drain(..).collect();
        for node in found {
            if !asked_now.contains(&node.path) {
                return self.fail(MapError::BadNode {
                    depth: node.path.depth,
                    why: "it was supplied without being asked for",
                });
            }
            if let Err(e) = node.check() {
                return self.fail(e);
            }
            self.loaded.insert(node.path, node);
        }
        self.asked.extend(asked_now);
        if let Err(e) = self.advance() {
            return self.fail(e);
        }
        self.plan();
    }

    /// The new root and the nodes to write; call once `wanted()` is empty.
    pub fn finish(self) -> Result<MapDelta, MapError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if !self.wanted.is_empty() {
            return Err(MapError::LoadingUnfinished);
        }
        let root = match (self.loaded.get(&MapPath::ROOT), self.single) {
            (Some(_), Some(_)) => return Err(MapError::SingleLeafWithNodes),
            (Some(_), None) => Subtree::Internal,
            (None, Some((k, vh))) => Subtree::Leaf(k, leaf(&k, &vh)),
            (None, None) => Subtree::Empty,
        };
        let mut upserts = Vec::new();
        let top = if self.changes.is_empty() {
            // Nothing changes: the root is what is stored.
            match self.loaded.get(&MapPath::ROOT) {
                Some(node) => root.child(node.hash()),
                None => root.child(EMPTY),
            }
        } else {
            let b = Builder {
                changes: &self.changes,
                loaded: &self.loaded,
            };
            b.build(0, root, 0, self.changes.len(), &mut upserts)?
        };
        Ok(MapDelta {
            root: top.hash,
            upserts,
            deletes: Vec::new(),
        })
    }

    fn fail(&mut self, e: MapError) {
        self.error = Some(e);
        self.pending.clear();
        self.wanted.clear();
    }

    /// Expands every pending node that is now loaded, as deep as the loaded
    /// nodes reach; keeps those not asked for yet.
    fn advance(&mut self) -> Result<(), MapError> {
        let mut work = std::mem::take(&mut self.pending);
        while let Some(p) = work.pop() {
            if let Some(node) = self.loaded.get(&p.path) {
                if p.path == MapPath::ROOT && self.single.is_some() {
                    return Err(MapError::SingleLeafWithNodes);
                }
                let depth = usize::from(p.path.depth);
                let mid = split(&self.changes, p.lo, p.hi, depth);
                for (side, lo, hi) in [(0u8, p.lo, mid), (1u8, mid, p.hi)] {
                    if lo < hi && matches!(node.child(side).kind(), Subtree::Internal) {
                        // check() refused internal children at depth 255.
                        let path = MapPath::of_key_unchecked(&self.changes[lo].0, depth + 1);
                        work.push(Pending { path, lo, hi });
                    }
                }
            } else if self.asked.contains(&p.path) {
                // An absent root only means the tree has no internal node.
                if p.path != MapPath::ROOT {
                    return Err(MapError::MissingNode {
                        depth: p.path.depth,
                    });
                }
            } else {
                self.pending.push(p);
            }
        }
        Ok(())
    }

    /// Computes the next round's paths: each pending node, and the paths of
    /// its changed keys at up to `lookahead` levels below it.
    fn plan(&mut self) {
        let mut wanted = Vec::new();
        for p in &self.pending {
            wanted.push(p.path);
            let depth = usize::from(p.path.depth);
            let last = (depth + usize::from(self.lookahead)).min(KEY_BITS - 1);
            for d in depth + 1..=last {
                let mut prev: Option<MapPath> = None;
                for (k, _) in &self.changes[p.lo..p.hi] {
                    let path = MapPath::of_key_unchecked(k, d);
                    // Keys are sorted, so equal paths are adjacent.
                    if prev != Some(path) && !self.asked.contains(&path) {
                        wanted.push(path);
                    }
                    prev = Some(path);
                }
            }
        }
        self.wanted = wanted;
    }
}

/// First index in `lo..hi` whose key has bit `depth` set; the keys there
/// share their first `depth` bits and are sorted, so bit `depth` is 0 then 1.
fn split(changes: &[(Key, Hash)], lo: usize, hi: usize, depth: usize) -> usize {
    lo + changes[lo..hi].partition_point(|(k, _)| bit(k, depth) == 0)
}

struct Builder<'a> {
    changes: &'a [(Key, Hash)],
    loaded: &'a HashMap<MapPath, MapNode>,
}

impl Builder<'_> {
    /// The new child for the subtree at `depth` holding `changes[lo..hi]`
    /// (non-empty, sharing their first `depth` bits) on top of `old`.
    fn build(
        &self,
        depth: usize,
        old: Subtree,
        lo: usize,
        hi: usize,
        out: &mut Vec<MapNode>,
    ) -> Result<MapChild, MapError> {
        let changes = &self.changes[lo..hi];
        let stale = match old {
            Subtree::Leaf(k, _) => changes.binary_search_by(|(c, _)| c.cmp(&k)).is_ok(),
            _ => false,
        };
        let (old_node, old) = match old {
            // The old leaf gets a new value: as if the subtree were empty.
            Subtree::Leaf(..) if stale => (None, Subtree::Empty),
            Subtree::Internal => {
                let path = MapPath::of_key_unchecked(&changes[0].0, depth);
                let node = self
                    .loaded
                    .get(&path)
                    .ok_or(MapError::MissingNode { depth: path.depth })?;
                (Some(node), old)
            }
            other => (None, other),
        };
        if let (Subtree::Empty, [(k, vh)]) = (old, changes) {
            return Ok(MapChild::leaf(*k, vh));
        }
        // Two leaves or more from here: an internal node at this depth.
        if depth >= KEY_BITS {
            // Two distinct keys cannot share all 256 bits.
            return Err(MapError::BadNode {
                depth: 255,
                why: "a leaf's key collides with another",
            });
        }
        let path = MapPath::of_key_unchecked(&changes[0].0, depth);
        let mid = split(self.changes, lo, hi, depth);
        let mut sides = [MapChild::EMPTY; 2];
        for (side, (a, b)) in [(lo, mid), (mid, hi)].into_iter().enumerate() {
            let before = match (old_node, old) {
                (Some(n), _) => n.child(side as u8).kind(),
                (None, Subtree::Leaf(k, h)) if usize::from(bit(&k, depth)) == side => {
                    Subtree::Leaf(k, h)
                }
                _ => Subtree::Empty,
            };
            sides[side] = if a < b {
                self.build(depth + 1, before, a, b, out)?
            } else {
                match (old_node, before) {
                    (Some(n), _) => *n.child(side as u8),
                    (None, before) => before.child(EMPTY),
                }
            };
        }
        let node = MapNode {
            path,
            left: sides[0],
            right: sides[1],
        };
        if old_node != Some(&node) {
            out.push(node);
        }
        Ok(MapChild {
            hash: node.hash(),
            leaf_key: None,
        })
    }
}

/// The root of a stored tree: its root node's hash, else its single leaf's,
/// else EMPTY.
pub fn root_of(nodes: &[MapNode], single: Option<(Key, Hash)>) -> Result<Hash, MapError> {
    match (nodes.iter().find(|n| n.path == MapPath::ROOT), single) {
        (Some(_), Some(_)) => Err(MapError::SingleLeafWithNodes),
        (Some(n), None) => Ok(n.hash()),
        (None, Some((k, vh))) => Ok(leaf(&k, &vh)),
        (None, None) => Ok(EMPTY),
    }
}

/// The root over `leaves` (key, value hash), computed from scratch without
/// any stored node: for `verify`, which rebuilds every subject's value from
/// the entries and compares this with the checkpoint's map root.
pub fn root_from_leaves(mut leaves: Vec<(Key, Hash)>) -> Result<Hash, MapError> {
    fn go(depth: usize, s: &[(Key, Hash)]) -> Hash {
        match s {
            [] => EMPTY,
            [(k, vh)] => leaf(k, vh),
            // Two distinct keys part before depth 256, so `depth` stays
            // below it here.
            _ => {
                let mid = s.partition_point(|(k, _)| bit(k, depth) == 0);
                internal(&go(depth + 1, &s[..mid]), &go(depth + 1, &s[mid..]))
            }
        }
    }
    leaves.sort_unstable_by_key(|l| l.0);
    if leaves.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(MapError::DuplicateKey);
    }
    Ok(go(0, &leaves))
}

/// What ends a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminal {
    /// The key's subtree at the proof's depth is empty.
    Empty,
    /// The key's subtree at the proof's depth is this one leaf: the key
    /// itself (membership) or another key sharing that many bits (absence).
    Leaf { key: Key, value_hash: Hash },
}

/// A proof of a key's value, or of its absence, under a map root.
///
/// `siblings` holds one hash per level from the root down — EMPTY ones
/// included — so `siblings.len()` is the depth of the terminal subtree
/// (at most 256). The wire form ([`MapProof::to_bytes`]) leaves EMPTY
/// siblings out behind a bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapProof {
    pub siblings: Vec<Hash>,
    pub terminal: Terminal,
}

impl MapProof {
    /// Compact encoding:
    /// - 1 byte: terminal, 0 = empty, 1 = leaf;
    /// - 2 bytes big-endian: number of siblings `n` (≤ 256);
    /// - `ceil(n / 8)` bytes: bitmap, bit `i` (most significant first) set
    ///   when sibling `i` is not EMPTY; the bits past `n` zero;
    /// - 32 bytes per set bit: those siblings, root first;
    /// - for a leaf terminal: its key, then its value hash (32 bytes each).
    pub fn to_bytes(&self) -> Vec<u8> {
        let n = self.siblings.len();
        let present = self.siblings.iter().filter(|s| **s != EMPTY).count();
        let mut out = Vec::with_capacity(3 + n.div_ceil(8) + present * 32 + 64);
        out.push(match self.terminal {
            Terminal::Empty => 0,
            Terminal::Leaf { .. } => 1,
        });
        // A proof with more than u16::MAX siblings is not a proof; it encodes
        // as one whose parser refuses it.
        out.extend_from_slice(&u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes());
        let mut bitmap = vec![0u8; n.div_ceil(8)];
        for (i, s) in self.siblings.iter().enumerate() {
            if *s != EMPTY {
                bitmap[i / 8] |= 0x80 >> (i % 8);
            }
        }
        out.extend_from_slice(&bitmap);
        for s in self.siblings.iter().filter(|s| **s != EMPTY) {
            out.extend_from_slice(s);
        }
        if let Terminal::Leaf { key, value_hash } = &self.terminal {
            out.extend_from_slice(key);
            out.extend_from_slice(value_hash);
        }
        out
    }

    /// Parses [`MapProof::to_bytes`]'s output strictly: exact length, at
    /// most 256 siblings, no stray bitmap bit.
    pub fn from_bytes(bytes: &[u8]) -> Result<MapProof, MapError> {
        let bad = MapError::MalformedProof;
        if bytes.len() > MAX_PROOF_BYTES {
            return Err(bad("longer than any proof"));
        }
        let (&tag, rest) = bytes.split_first().ok_or(bad("empty"))?;
        let leaf_terminal = match tag {
            0 => false,
            1 => true,
            _ => return Err(bad("unknown terminal")),
        };
        let (count, rest) = rest
            .split_first_chunk::<2>()
            .ok_or(bad("cut short before the sibling count"))?;
        let n = usize::from(u16::from_be_bytes(*count));
        if n > KEY_BITS {
            return Err(MapError::ProofTooLong { levels: n });
        }
        let (bitmap, mut rest) = rest
            .split_at_checked(n.div_ceil(8))
            .ok_or(bad("cut short in the bitmap"))?;
        if n % 8 != 0 && bitmap[n / 8] & (0xFFu8 >> (n % 8)) != 0 {
            return Err(bad("bitmap bits set past the last sibling"));
        }
        let mut siblings = Vec::with_capacity(n);
        for i in 0..n {
            if bitmap[i / 8] & (0x80 >> (i % 8)) == 0 {
                siblings.push(EMPTY);
                continue;
            }
            let (h, r) = rest
                .split_first_chunk::<32>()
                .ok_or(bad("cut short in the siblings"))?;
            if *h == EMPTY {
                return Err(bad("an empty sibling marked present"));
            }
            siblings.push(*h);
            rest = r;
        }
        let terminal = if leaf_terminal {
            let (key, r) = rest
                .split_first_chunk::<32>()
                .ok_or(bad("cut short in the leaf key"))?;
            let (value_hash, r) = r
                .split_first_chunk::<32>()
                .ok_or(bad("cut short in the leaf value"))?;
            rest = r;
            Terminal::Leaf {
                key: *key,
                value_hash: *value_hash,
            }
        } else {
            Terminal::Empty
        };
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(MapProof { siblings, terminal })
    }
}

/// The internal-node paths on `key`'s way down (depths 0 to 255): the store
/// fetches those that exist, in one query, for [`prove`].
pub fn prove_paths(key: &Key) -> Vec<MapPath> {
    (0..KEY_BITS)
        .map(|d| MapPath::of_key_unchecked(key, d))
        .collect()
}

/// Where a walk down the stored tree ends.
enum End {
    Empty,
    /// A child leaf: key and leaf hash.
    Leaf(Key, Hash),
    /// The tree's single leaf, value known.
    Single(Key, Hash),
}

fn walk(
    key: &Key,
    path_nodes: &[MapNode],
    single: Option<(Key, Hash)>,
) -> Result<(Vec<Hash>, End), MapError> {
    let mut by_depth: Vec<Option<&MapNode>> = vec![None; KEY_BITS];
    for n in path_nodes {
        if n.path.contains(key) {
            by_depth[usize::from(n.path.depth)] = Some(n);
        }
    }
    let Some(mut node) = by_depth[0] else {
        return Ok((
            Vec::new(),
            match single {
                Some((k, vh)) => End::Single(k, vh),
                None => End::Empty,
            },
        ));
    };
    if single.is_some() {
        return Err(MapError::SingleLeafWithNodes);
    }
    let mut siblings = Vec::new();
    loop {
        node.check()?;
        let depth = usize::from(node.path.depth);
        let b = bit(key, depth);
        siblings.push(node.child(1 - b).hash);
        match node.child(b).kind() {
            Subtree::Empty => return Ok((siblings, End::Empty)),
            Subtree::Leaf(k, h) => return Ok((siblings, End::Leaf(k, h))),
            Subtree::Internal => {
                // check() refused internal children at depth 255.
                node = by_depth[depth + 1].ok_or(MapError::MissingNode {
                    depth: (depth + 1) as u16,
                })?;
            }
        }
    }
}

/// The key of the leaf a proof for `key` ends at, if any: the store loads its
/// value for [`prove`]'s `leaf_value`. `path_nodes` are the stored nodes
/// among [`prove_paths`].
pub fn terminal_key(
    key: &Key,
    path_nodes: &[MapNode],
    root_single_leaf: Option<(Key, Hash)>,
) -> Result<Option<Key>, MapError> {
    Ok(match walk(key, path_nodes, root_single_leaf)?.1 {
        End::Empty => None,
        End::Leaf(k, _) | End::Single(k, _) => Some(k),
    })
}

/// A proof for `key` from the stored nodes among [`prove_paths`] (or the
/// tree's single leaf), with `leaf_value` giving the value hash of the leaf
/// it ends at (see [`terminal_key`]).
pub fn prove(
    key: &Key,
    path_nodes: Vec<MapNode>,
    root_single_leaf: Option<(Key, Hash)>,
    leaf_value: impl Fn(&Key) -> Option<Hash>,
) -> Result<MapProof, MapError> {
    let (siblings, end) = walk(key, &path_nodes, root_single_leaf)?;
    let terminal = match end {
        End::Empty => Terminal::Empty,
        End::Single(key, value_hash) => Terminal::Leaf { key, value_hash },
        End::Leaf(k, h) => {
            let value_hash = leaf_value(&k).ok_or(MapError::MissingLeafValue)?;
            if leaf(&k, &value_hash) != h {
                return Err(MapError::LeafValueMismatch);
            }
            Terminal::Leaf { key: k, value_hash }
        }
    };
    Ok(MapProof { siblings, terminal })
}

/// Checks that under `root`, `key` maps to `claimed` (a value hash), or is
/// absent when `claimed` is `None`.
pub fn verify(
    root: &Hash,
    key: &Key,
    claimed: Option<Hash>,
    proof: &MapProof,
) -> Result<(), MapError> {
    let levels = proof.siblings.len();
    if levels > KEY_BITS {
        return Err(MapError::ProofTooLong { levels });
    }
    let mut h = match (proof.terminal, claimed) {
        (Terminal::Empty, None) => EMPTY,
        (Terminal::Empty, Some(_)) => return Err(MapError::UnexpectedlyAbsent),
        (Terminal::Leaf { key: k, value_hash }, claimed) => {
            if k == *key {
                match claimed {
                    None => return Err(MapError::UnexpectedlyPresent),
                    Some(c) if c != value_hash => return Err(MapError::ValueMismatch),
                    Some(_) => {}
                }
            } else {
                if claimed.is_some() {
                    return Err(MapError::WrongKey);
                }
                // The leaf must sit where `key` would: otherwise any leaf
                // could be shown anywhere to "prove" an absence.
                if (0..levels).any(|i| bit(&k, i) != bit(key, i)) {
                    return Err(MapError::LeafOffPath);
                }
            }
            leaf(&k, &value_hash)
        }
    };
    for (i, s) in proof.siblings.iter().enumerate().rev() {
        h = if bit(key, i) == 0 {
            internal(&h, s)
        } else {
            internal(s, &h)
        };
    }
    if h != *root {
        return Err(MapError::RootMismatch);
    }
    Ok(())
}

/// The portal's check: `entries` (log index, RFC 6962 leaf hash), in
/// increasing index, are all of the entries about `key` under `root`.
/// Returns their value (count and chain head).
pub fn verify_subject(
    root: &Hash,
    key: &Key,
    entries: impl IntoIterator<Item = (u64, Hash)>,
    proof: &MapProof,
) -> Result<MapValue, MapError> {
    let value = chain(entries, MapValue::default())?;
    let claimed = (value.count > 0).then(|| value.hash());
    verify(root, key, claimed, proof)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::rngs::StdRng;
    use rand::{Rng, RngCore, SeedableRng};

    use super::*;

    /// The definition, from scratch: no stored nodes, no compression tricks.
    fn reference_root(leaves: &BTreeMap<Key, Hash>) -> Hash {
        fn go(depth: usize, s: &[(Key, Hash)]) -> Hash {
            match s {
                [] => EMPTY,
                [(k, vh)] => leaf(k, vh),
                _ => {
                    let mid = s.partition_point(|(k, _)| bit(k, depth) == 0);
                    internal(&go(depth + 1, &s[..mid]), &go(depth + 1, &s[mid..]))
                }
            }
        }
        let all: Vec<(Key, Hash)> = leaves.iter().map(|(k, v)| (*k, *v)).collect();
        go(0, &all)
    }

    /// An in-memory store applying deltas as the SQL one will.
    #[derive(Default)]
    struct Store {
        nodes: HashMap<MapPath, MapNode>,
        leaves: BTreeMap<Key, Hash>,
        root: Hash,
    }

    impl Store {
        fn single(&self) -> Option<(Key, Hash)> {
            if self.nodes.is_empty() && self.leaves.len() == 1 {
                self.leaves.iter().next().map(|(k, v)| (*k, *v))
            } else {
                None
            }
        }

        /// Runs one batch; returns the rounds of loading it took.
        fn apply(&mut self, changes: Vec<(Key, Hash)>, lookahead: u16) -> Result<usize, MapError> {
            let mut up = MapUpdate::with_lookahead(self.single(), changes.clone(), lookahead);
            let mut rounds = 0;
            loop {
                let wanted = up.wanted();
                if wanted.is_empty() {
                    break;
                }
                rounds += 1;
                assert!(rounds <= KEY_BITS + 1, "loading does not end");
                // Bounded per round, and never a path twice.
                let cap = changes.len().max(1) * (1 + usize::from(lookahead));
                assert!(wanted.len() <= cap, "{} paths wanted", wanted.len());
                let distinct: HashSet<&MapPath> = wanted.iter().collect();
                assert_eq!(distinct.len(), wanted.len());
                let found = wanted
                    .iter()
                    .filter_map(|p| self.nodes.get(p).copied())
                    .collect();
                up.supply(found);
            }
            let delta = up.finish()?;
            assert!(delta.deletes.is_empty());
            for p in &delta.deletes {
                self.nodes.remove(p);
            }
            for n in delta.upserts {
                n.check().unwrap();
                self.nodes.insert(n.path, n);
            }
            self.leaves.extend(changes);
            self.root = delta.root;
            Ok(rounds)
        }

        fn prove(&self, key: &Key) -> MapProof {
            let path_nodes: Vec<MapNode> = prove_paths(key)
                .iter()
                .filter_map(|p| self.nodes.get(p).copied())
                .collect();
            let tk = terminal_key(key, &path_nodes, self.single()).unwrap();
            let proof = prove(key, path_nodes, self.single(), |k| {
                assert_eq!(
                    Some(*k),
                    tk,
                    "prove asked for another leaf than terminal_key named"
                );
                self.leaves.get(k).copied()
            })
            .unwrap();
            assert_eq!(MapProof::from_bytes(&proof.to_bytes()).unwrap(), proof);
            proof
        }

        fn check_key(&self, key: &Key) {
            let proof = self.prove(key);
            let claimed = self.leaves.get(key).copied();
            verify(&self.root, key, claimed, &proof).unwrap();
            // The same proof refuses the opposite claim.
            let other = match claimed {
                Some(_) => None,
                None => Some([7u8; 32]),
            };
            assert!(verify(&self.root, key, other, &proof).is_err());
        }
    }

    fn random_key(rng: &mut StdRng) -> Key {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        k
    }

    fn random_hash(rng: &mut StdRng) -> Hash {
        random_key(rng)
    }

    fn flip(mut k: Key, i: usize) -> Key {
        k[i / 8] ^= 0x80 >> (i % 8);
        k
    }

    /// Keys differing from some stored key in one bit, mostly a late one.
    fn near_key(rng: &mut StdRng, store: &Store) -> Option<Key> {
        let n = store.leaves.len();
        if n == 0 {
            return None;
        }
        let base = *store.leaves.keys().nth(rng.gen_range(0..n))?;
        let i = if rng.gen_bool(0.5) {
            255
        } else {
            rng.gen_range(200..256)
        };
        Some(flip(base, i))
    }

    fn batch(rng: &mut StdRng, store: &Store, size: usize) -> Vec<(Key, Hash)> {
        let mut keys: BTreeMap<Key, Hash> = BTreeMap::new();
        while keys.len() < size {
            let k = match rng.gen_range(0..10) {
                0..=6 => random_key(rng),
                7 => near_key(rng, store).unwrap_or_else(|| random_key(rng)),
                _ => match store.leaves.len() {
                    0 => random_key(rng),
                    n => *store.leaves.keys().nth(rng.gen_range(0..n)).unwrap(),
                },
            };
            keys.insert(k, random_hash(rng));
        }
        keys.into_iter().collect()
    }

    #[test]
    fn hashes_are_as_specified() {
        let h = |parts: &[&[u8]]| -> Hash {
            let mut s = Sha256::new();
            for p in parts {
                s.update(p);
            }
            s.finalize().into()
        };
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(link(&a, 5, &b), h(&[&[0x13], &a, &5u64.to_be_bytes(), &b]));
        assert_eq!(value_hash(3, &a), h(&[&[0x12], &3u64.to_be_bytes(), &a]));
        assert_eq!(leaf(&a, &b), h(&[&[0x10], &a, &b]));
        assert_eq!(internal(&a, &b), h(&[&[0x11], &a, &b]));
        let mut v = MapValue::default();
        v.extend(9, &b);
        assert_eq!(
            v,
            MapValue {
                count: 1,
                head: link(&EMPTY, 9, &b)
            }
        );
        assert_eq!(v.hash(), value_hash(1, &v.head));
    }

    #[test]
    fn subject_keys_are_lower_case_hex() {
        let hex = "00ff".repeat(16);
        let k = subject_key(&hex).unwrap();
        assert_eq!(k[0], 0);
        assert_eq!(k[1], 0xff);
        assert_eq!(subject_key(&hex.to_uppercase()), None);
        assert_eq!(subject_key(&hex[..62]), None);
        assert_eq!(subject_key(""), None);
        assert_eq!(subject_key(&format!("{}g", &hex[..63])), None);
    }

    #[test]
    fn paths_encode_canonically() {
        let key = [0xAB; 32];
        for depth in [0u16, 1, 7, 8, 9, 100, 255] {
            let p = MapPath::of_key(&key, depth).unwrap();
            let bytes = p.encode();
            assert_eq!(bytes.len(), 2 + usize::from(depth).div_ceil(8));
            assert_eq!(MapPath::decode(&bytes).unwrap(), p);
            assert!(p.contains(&key));
        }
        assert_eq!(MapPath::of_key(&key, 256), None);
        assert_eq!(MapPath::ROOT.encode(), vec![0, 0]);
        // 0xAB = 1010_1011: at depth 3 only the first three bits stay.
        assert_eq!(MapPath::of_key(&key, 3).unwrap().encode(), vec![0, 3, 0xA0]);
        assert!(
            MapPath::decode(&[0, 3, 0xB0]).is_err(),
            "bit past the depth"
        );
        assert!(MapPath::decode(&[0, 3]).is_err(), "prefix missing");
        assert!(
            MapPath::decode(&[0, 3, 0xA0, 0]).is_err(),
            "prefix too long"
        );
        assert!(MapPath::decode(&[1, 0]).is_err(), "depth 256");
        assert!(MapPath::decode(&[0]).is_err(), "no depth");
    }

    #[test]
    fn random_batches_match_the_reference() {
        let mut rng = StdRng::seed_from_u64(13);
        let mut store = Store::default();
        let mut fresh = Store::default();
        for round in 0..30 {
            let size = rng.gen_range(1..=if round % 5 == 0 { 3 } else { 100 });
            let changes = batch(&mut rng, &store, size);
            let lookahead = [0, 1, DEFAULT_LOOKAHEAD, 8][round % 4];
            store.apply(changes.clone(), lookahead).unwrap();
            assert_eq!(store.root, reference_root(&store.leaves), "batch {round}");
            for (k, _) in changes.iter().take(10) {
                store.check_key(k);
            }
            for _ in 0..10 {
                store.check_key(&random_key(&mut rng));
                if let Some(k) = near_key(&mut rng, &store) {
                    store.check_key(&k);
                }
            }
        }
        // The same leaves in one batch on an empty store give the same nodes.
        fresh
            .apply(store.leaves.iter().map(|(k, v)| (*k, *v)).collect(), 0)
            .unwrap();
        assert_eq!(fresh.root, store.root);
        assert_eq!(fresh.nodes, store.nodes);
        let all: Vec<(Key, Hash)> = store.leaves.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(root_from_leaves(all.clone()).unwrap(), store.root);
        let mut twice = all;
        twice.push(twice[0]);
        assert_eq!(root_from_leaves(twice), Err(MapError::DuplicateKey));
    }

    #[test]
    fn small_trees_and_the_deepest_split() {
        let mut store = Store::default();
        assert_eq!(store.apply(Vec::new(), 0).unwrap(), 1);
        assert_eq!(store.root, EMPTY);
        let a = [0x5A; 32];
        store.check_key(&a);

        store.apply(vec![(a, [1; 32])], 0).unwrap();
        assert_eq!(store.root, leaf(&a, &[1; 32]));
        assert!(store.nodes.is_empty());
        store.check_key(&a);
        store.check_key(&[0; 32]);

        // Changing the single leaf keeps it single.
        store.apply(vec![(a, [2; 32])], 0).unwrap();
        assert_eq!(store.root, leaf(&a, &[2; 32]));

        // A key differing only in the last bit pushes the leaf all the way down.
        let b = flip(a, 255);
        store.apply(vec![(b, [3; 32])], 0).unwrap();
        assert_eq!(store.nodes.len(), KEY_BITS);
        assert_eq!(store.root, reference_root(&store.leaves));
        let proof = store.prove(&b);
        assert_eq!(proof.siblings.len(), KEY_BITS);
        store.check_key(&a);
        store.check_key(&b);
        store.check_key(&flip(a, 254));

        // An update then loads all 256 levels, one round per level, or four.
        let mut again = MapUpdate::with_lookahead(None, vec![(a, [4; 32])], 0);
        let mut rounds = 0;
        while !again.wanted().is_empty() {
            let found = again
                .wanted()
                .iter()
                .filter_map(|p| store.nodes.get(p).copied())
                .collect();
            again.supply(found);
            rounds += 1;
        }
        assert_eq!(rounds, KEY_BITS);
        assert_eq!(
            store.apply(vec![(a, [4; 32])], DEFAULT_LOOKAHEAD).unwrap(),
            KEY_BITS / 4
        );
        assert_eq!(store.root, reference_root(&store.leaves));

        // Doing nothing to a tree with nodes gives its root.
        let root = store.root;
        store.apply(Vec::new(), DEFAULT_LOOKAHEAD).unwrap();
        assert_eq!(store.root, root);
    }

    #[test]
    fn rounds_stay_few_for_ten_thousand_keys() {
        let mut rng = StdRng::seed_from_u64(10_000);
        let mut store = Store::default();
        let mut worst = [0usize; 2];
        for _ in 0..10 {
            let changes: Vec<(Key, Hash)> = (0..1000)
                .map(|_| (random_key(&mut rng), random_hash(&mut rng)))
                .collect();
            worst[0] = worst[0].max(store.apply(changes, DEFAULT_LOOKAHEAD).unwrap());
        }
        assert_eq!(store.leaves.len(), 10_000);
        // Every key changed at once, strictly level by level.
        let all: Vec<(Key, Hash)> = store
            .leaves
            .keys()
            .map(|k| (*k, random_hash(&mut rng)))
            .collect();
        worst[1] = store.apply(all, 0).unwrap();
        assert!(worst[0] <= 12, "rounds with lookahead: {worst:?}");
        assert!(worst[1] <= 40, "rounds level by level: {worst:?}");
        assert_eq!(store.root, reference_root(&store.leaves));
    }

    #[test]
    fn chain_needs_increasing_indexes() {
        let (h1, h2) = ([1u8; 32], [2u8; 32]);
        let v = chain([(3, h1), (7, h2)], MapValue::default()).unwrap();
        let mut w = MapValue::default();
        w.extend(3, &h1);
        w.extend(7, &h2);
        assert_eq!(v, w);
        assert_eq!(
            chain([(7, h1), (7, h2)], MapValue::default()),
            Err(MapError::IndexNotIncreasing { prev: 7, next: 7 })
        );
        assert!(chain([(7, h1), (3, h2)], MapValue::default()).is_err());
        let full = MapValue {
            count: u64::MAX,
            head: EMPTY,
        };
        assert_eq!(chain([(0, h1)], full), Err(MapError::CountOverflow));
    }

    /// A store with a few hundred subjects, and one whose value is a chain.
    fn populated() -> (Store, Key, Vec<(u64, Hash)>) {
        let mut rng = StdRng::seed_from_u64(6962);
        let mut store = Store::default();
        let changes: Vec<(Key, Hash)> = (0..300)
            .map(|_| (random_key(&mut rng), random_hash(&mut rng)))
            .collect();
        store.apply(changes, DEFAULT_LOOKAHEAD).unwrap();
        let subject = random_key(&mut rng);
        let entries: Vec<(u64, Hash)> = (0..5)
            .map(|i| (i * 11 + 4, random_hash(&mut rng)))
            .collect();
        let value = chain(entries.iter().copied(), MapValue::default()).unwrap();
        store
            .apply(vec![(subject, value.hash())], DEFAULT_LOOKAHEAD)
            .unwrap();
        (store, subject, entries)
    }

    #[test]
    fn a_portal_checks_a_subjects_entries() {
        let (store, subject, entries) = populated();
        let proof = store.prove(&subject);
        let value = verify_subject(&store.root, &subject, entries.iter().copied(), &proof).unwrap();
        assert_eq!(value.count, 5);
        // One entry left out, or one added, or another order: refused.
        let fewer = &entries[..4];
        assert_eq!(
            verify_subject(&store.root, &subject, fewer.iter().copied(), &proof),
            Err(MapError::ValueMismatch)
        );
        let mut more = entries.clone();
        more.push((1000, [9; 32]));
        assert!(verify_subject(&store.root, &subject, more, &proof).is_err());
        let mut swapped = entries.clone();
        swapped[1].1 = swapped[2].1;
        assert!(verify_subject(&store.root, &subject, swapped, &proof).is_err());
        // No entries while the map holds some.
        assert_eq!(
            verify_subject(&store.root, &subject, [], &proof),
            Err(MapError::UnexpectedlyPresent)
        );
        // An absent subject: no entries, proven.
        let nobody = [0xEE; 32];
        let absent = store.prove(&nobody);
        assert_eq!(
            verify_subject(&store.root, &nobody, [], &absent)
                .unwrap()
                .count,
            0
        );
        assert!(matches!(
            verify_subject(&store.root, &nobody, [(1, [1; 32])], &absent),
            Err(MapError::UnexpectedlyAbsent | MapError::WrongKey)
        ));
    }

    #[test]
    fn tampered_proofs_are_refused() {
        let (store, subject, entries) = populated();
        let value = chain(entries.iter().copied(), MapValue::default())
            .unwrap()
            .hash();
        let proof = store.prove(&subject);
        verify(&store.root, &subject, Some(value), &proof).unwrap();

        // A flipped bit in any sibling.
        for i in 0..proof.siblings.len() {
            let mut p = proof.clone();
            p.siblings[i][31] ^= 1;
            assert_eq!(
                verify(&store.root, &subject, Some(value), &p),
                Err(MapError::RootMismatch)
            );
        }
        // Another root.
        let mut root = store.root;
        root[0] ^= 1;
        assert_eq!(
            verify(&root, &subject, Some(value), &proof),
            Err(MapError::RootMismatch)
        );
        // A claimed value that differs.
        assert_eq!(
            verify(&store.root, &subject, Some([1; 32]), &proof),
            Err(MapError::ValueMismatch)
        );
        // A terminal swapped for another leaf's, or for the empty one.
        let (other, other_vh) = store.leaves.iter().find(|(k, _)| **k != subject).unwrap();
        let mut p = proof.clone();
        p.terminal = Terminal::Leaf {
            key: *other,
            value_hash: *other_vh,
        };
        assert!(verify(&store.root, &subject, Some(*other_vh), &p).is_err());
        p.terminal = Terminal::Empty;
        assert_eq!(
            verify(&store.root, &subject, None, &p),
            Err(MapError::RootMismatch)
        );
        // The proof for another key.
        let other_proof = store.prove(other);
        assert_eq!(
            verify(&store.root, &subject, Some(*other_vh), &other_proof),
            Err(MapError::WrongKey)
        );
        // A proof one level too short or too long.
        let mut p = proof.clone();
        p.siblings.pop();
        assert!(verify(&store.root, &subject, Some(value), &p).is_err());
        let mut p = proof.clone();
        p.siblings.push(EMPTY);
        assert!(verify(&store.root, &subject, Some(value), &p).is_err());
        let mut p = proof.clone();
        p.siblings = vec![EMPTY; KEY_BITS + 1];
        assert_eq!(
            verify(&store.root, &subject, Some(value), &p),
            Err(MapError::ProofTooLong {
                levels: KEY_BITS + 1
            })
        );
    }

    #[test]
    fn an_absence_cannot_borrow_a_leaf_from_elsewhere() {
        let (store, subject, _) = populated();
        // A key absent from the map whose path ends at an empty subtree, and
        // one whose path ends at a leaf.
        let mut rng = StdRng::seed_from_u64(1);
        let mut at_empty = None;
        let mut at_leaf = None;
        while at_empty.is_none() || at_leaf.is_none() {
            let k = random_key(&mut rng);
            match store.prove(&k).terminal {
                Terminal::Empty => at_empty = at_empty.or(Some(k)),
                Terminal::Leaf { .. } => at_leaf = at_leaf.or(Some(k)),
            }
        }
        for absent in [at_empty.unwrap(), at_leaf.unwrap()] {
            verify(&store.root, &absent, None, &store.prove(&absent)).unwrap();
            // The subject's own membership proof, offered as the absence of
            // `absent`: its leaf lies elsewhere.
            let borrowed = store.prove(&subject);
            assert!(matches!(
                verify(&store.root, &absent, None, &borrowed),
                Err(MapError::LeafOffPath | MapError::RootMismatch)
            ));
        }
        // Shown absent by a proof ending at a leaf, the key is refused
        // present; and the same leaf cannot disprove a key off its path.
        let k = at_leaf.unwrap();
        let p = store.prove(&k);
        assert_eq!(
            verify(&store.root, &k, Some([1; 32]), &p),
            Err(MapError::WrongKey)
        );
        let far = flip(k, 0);
        assert_eq!(
            verify(&store.root, &far, None, &p),
            Err(MapError::LeafOffPath)
        );
        // The subject itself cannot be proven absent with its own proof.
        assert_eq!(
            verify(&store.root, &subject, None, &store.prove(&subject)),
            Err(MapError::UnexpectedlyPresent)
        );
    }

    #[test]
    fn proof_bytes_are_parsed_strictly() {
        let (store, subject, _) = populated();
        let proof = store.prove(&subject);
        let bytes = proof.to_bytes();
        // Only the non-empty siblings are written.
        let present = proof.siblings.iter().filter(|s| **s != EMPTY).count();
        assert_eq!(
            bytes.len(),
            3 + proof.siblings.len().div_ceil(8) + present * 32 + 64
        );
        for cut in 0..bytes.len() {
            assert!(MapProof::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            MapProof::from_bytes(&long),
            Err(MapError::MalformedProof("trailing bytes"))
        );
        let mut tag = bytes.clone();
        tag[0] = 2;
        assert!(MapProof::from_bytes(&tag).is_err());
        // 257 levels.
        let mut deep = vec![0u8, 1, 1];
        deep.extend(vec![0u8; 33]);
        assert_eq!(
            MapProof::from_bytes(&deep),
            Err(MapError::ProofTooLong { levels: 257 })
        );
        // A bitmap bit past the last sibling: 3 levels, bit 4 set.
        assert!(MapProof::from_bytes(&[0, 0, 3, 0x08]).is_err());
        // An empty sibling marked present.
        let mut zero = vec![0u8, 0, 1, 0x80];
        zero.extend([0u8; 32]);
        assert!(MapProof::from_bytes(&zero).is_err());
        // Over the bound.
        assert!(MapProof::from_bytes(&vec![0u8; MAX_PROOF_BYTES + 1]).is_err());
        // The deepest proof round-trips and fits the bound.
        let deepest = MapProof {
            siblings: vec![[9u8; 32]; KEY_BITS],
            terminal: Terminal::Leaf {
                key: [1; 32],
                value_hash: [2; 32],
            },
        };
        let b = deepest.to_bytes();
        assert_eq!(b.len(), MAX_PROOF_BYTES);
        assert_eq!(MapProof::from_bytes(&b).unwrap(), deepest);
        let empty = MapProof {
            siblings: Vec::new(),
            terminal: Terminal::Empty,
        };
        assert_eq!(empty.to_bytes(), vec![0, 0, 0]);
        assert_eq!(MapProof::from_bytes(&[0, 0, 0]).unwrap(), empty);
    }

    #[test]
    fn misuse_and_broken_stores_are_refused() {
        let a = [1u8; 32];
        // Duplicate keys.
        let up = MapUpdate::new(None, vec![(a, [1; 32]), (a, [2; 32])]);
        assert!(up.wanted().is_empty());
        assert_eq!(up.finish(), Err(MapError::DuplicateKey));
        // Finishing before loading.
        let up = MapUpdate::new(None, vec![(a, [1; 32])]);
        assert_eq!(up.finish(), Err(MapError::LoadingUnfinished));

        let (store, subject, _) = populated();
        // A node supplied that was not asked for.
        let mut up = MapUpdate::new(None, vec![(subject, [1; 32])]);
        let stray = store
            .nodes
            .values()
            .find(|n| n.path.depth() > 5)
            .copied()
            .unwrap();
        up.supply(vec![stray]);
        assert!(matches!(up.finish(), Err(MapError::BadNode { .. })));
        // A node its parent refers to, missing from the store.
        let mut broken = Store {
            nodes: store.nodes.clone(),
            ..Store::default()
        };
        broken.leaves = store.leaves.clone();
        let victim = MapPath::of_key(&subject, 1).unwrap();
        assert!(broken.nodes.remove(&victim).is_some());
        assert_eq!(
            broken.apply(vec![(subject, [1; 32])], 0),
            Err(MapError::MissingNode { depth: 1 })
        );
        assert_eq!(
            broken.apply(vec![(subject, [1; 32])], DEFAULT_LOOKAHEAD),
            Err(MapError::MissingNode { depth: 1 })
        );
        let nodes: Vec<MapNode> = broken.nodes.values().copied().collect();
        assert_eq!(
            prove(&subject, nodes, None, |_| None),
            Err(MapError::MissingNode { depth: 1 })
        );
        // A single leaf claimed beside internal nodes.
        let mut up = MapUpdate::new(Some((a, [1; 32])), vec![(subject, [1; 32])]);
        let root = store.nodes[&MapPath::ROOT];
        up.supply(vec![root]);
        assert_eq!(up.finish(), Err(MapError::SingleLeafWithNodes));
        // A leaf whose stored value does not match the tree.
        let nodes: Vec<MapNode> = store.nodes.values().copied().collect();
        assert_eq!(
            prove(&subject, nodes.clone(), None, |_| Some([0xAA; 32])),
            Err(MapError::LeafValueMismatch)
        );
        assert_eq!(
            prove(&subject, nodes, None, |_| None),
            Err(MapError::MissingLeafValue)
        );
        // A node whose leaf child lies on the wrong side.
        let mut bad = root;
        if let Some(k) = bad.left.leaf_key.or(bad.right.leaf_key) {
            bad.left.leaf_key = Some(flip(k, 0));
        } else {
            bad.left = MapChild::leaf(flip([0u8; 32], 0), &[1; 32]);
        }
        assert!(matches!(
            bad.check(),
            Err(MapError::BadNode { depth: 0, .. })
        ));
        // A node holding a single leaf.
        let lonely = MapNode {
            path: MapPath::ROOT,
            left: MapChild::leaf([0u8; 32], &[1; 32]),
            right: MapChild::EMPTY,
        };
        assert!(lonely.check().is_err());
        assert_eq!(root_of(&[root], None).unwrap(), store.root);
        assert_eq!(root_of(&[], None).unwrap(), EMPTY);
        assert_eq!(
            root_of(&[], Some((a, [1; 32]))).unwrap(),
            leaf(&a, &[1; 32])
        );
    }
}
