//! RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification.
//!
//! Everything here is pure: proof *generation* is expressed as "which subtree
//! ranges are needed" plus a fold over stored perfect-subtree hashes, so a store
//! can answer any proof with O(log n) node lookups.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// Root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Leaf hash: SHA-256(0x00 ‖ data).
pub fn hash_leaf(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// Interior node hash: SHA-256(0x01 ‖ left ‖ right).
pub fn hash_children(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// A perfect subtree: covers leaves `[index << level, (index + 1) << level)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u32,
    pub index: u64,
}

impl NodeId {
    pub fn new(level: u32, index: u64) -> Self {
        Self { level, index }
    }
    /// First leaf covered.
    pub fn start(&self) -> u64 {
        self.index << self.level
    }
    /// One past the last leaf covered.
    pub fn end(&self) -> u64 {
        (self.index + 1) << self.level
    }
}

/// Errors from proof verification or malformed proof requests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("index {index} is outside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("invalid tree sizes: old size {old} must satisfy 0 < old <= new size {new}")]
    InvalidSizes { old: u64, new: u64 },
    #[error("proof has {got} hashes, expected {expected}")]
    WrongLength { got: usize, expected: usize },
    #[error("proof does not lead to the expected root")]
    RootMismatch,
    #[error("a subtree hash needed for the proof is missing: level {level}, index {index}")]
    MissingNode { level: u32, index: u64 },
}

/// Largest power of two strictly smaller than `n` (n >= 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Ranges `[start, end)` whose hashes form the inclusion proof for `index` in a
/// tree of `size`, in proof order (leaf-adjacent first), per RFC 6962 §2.1.1.
pub fn inclusion_ranges(index: u64, size: u64) -> Result<Vec<(u64, u64)>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut out = Vec::new();
    // Walk top-down, then reverse: PATH(m, D[n]) appends the sibling of the
    // half containing m after the deeper path.
    let (mut lo, mut hi, mut m) = (0u64, size, index);
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if m < k {
            out.push((lo + k, hi));
            hi = lo + k;
        } else {
            out.push((lo, lo + k));
            lo += k;
            m -= k;
        }
    }
    out.reverse();
    Ok(out)
}

/// Ranges whose hashes form the consistency proof between `old` and `new`
/// sizes, in proof order, per RFC 6962 §2.1.2. Empty when `old == new`.
pub fn consistency_ranges(old: u64, new: u64) -> Result<Vec<(u64, u64)>, ProofError> {
    if old == 0 || old > new {
        return Err(ProofError::InvalidSizes { old, new });
    }
    let mut out = Vec::new();
    let (mut lo, mut hi, mut m, mut whole) = (0u64, new, old, true);
    loop {
        let n = hi - lo;
        if m == n {
            if !whole {
                out.push((lo, hi));
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            out.push((lo + k, hi));
            hi = lo + k;
        } else {
            out.push((lo, lo + k));
            lo += k;
            m -= k;
            whole = false;
        }
    }
    out.reverse();
    Ok(out)
}

/// Decomposes `[start, end)` (start aligned as in every RFC 6962 subtree) into
/// perfect subtrees, left to right.
pub fn perfect_decomposition(start: u64, end: u64) -> Vec<NodeId> {
    let mut out = Vec::new();
    let mut lo = start;
    while lo < end {
        let rem = end - lo;
        let mut level = 63 - rem.leading_zeros();
        // Also bounded by the alignment of lo.
        if lo != 0 {
            level = level.min(lo.trailing_zeros());
        }
        out.push(NodeId::new(level, lo >> level));
        lo += 1u64 << level;
    }
    out
}

/// Hash of `[start, end)` from its perfect subtrees (right-to-left fold).
pub fn range_hash(
    start: u64,
    end: u64,
    node: &dyn Fn(NodeId) -> Option<Hash>,
) -> Result<Hash, ProofError> {
    if start >= end {
        return Ok(empty_root());
    }
    let parts = perfect_decomposition(start, end);
    let mut acc: Option<Hash> = None;
    for id in parts.iter().rev() {
        let h = node(*id).ok_or(ProofError::MissingNode {
            level: id.level,
            index: id.index,
        })?;
        acc = Some(match acc {
            None => h,
            Some(right) => hash_children(&h, &right),
        });
    }
    acc.ok_or(ProofError::MissingNode {
        level: 0,
        index: start,
    })
}

/// All perfect-subtree nodes needed to evaluate the given ranges.
pub fn nodes_for_ranges(ranges: &[(u64, u64)]) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = ranges
        .iter()
        .flat_map(|(a, b)| perfect_decomposition(*a, *b))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    let computed = root_from_inclusion_proof(leaf_hash, index, size, proof)?;
    if &computed == root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Root implied by an inclusion proof.
pub fn root_from_inclusion_proof(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_ranges(index, size)?.len();
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            expected,
        });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::RootMismatch);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = hash_children(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = hash_children(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::RootMismatch);
    }
    Ok(r)
}

/// Verifies a consistency proof between two tree heads (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size == 0 || old_size > new_size {
        return Err(ProofError::InvalidSizes {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                expected: 0,
            });
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    let expected = consistency_ranges(old_size, new_size)?.len();
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            expected,
        });
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if old_size.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let mut fr = path[0];
    let mut sr = path[0];
    for c in &path[1..] {
        if sn == 0 {
            return Err(ProofError::RootMismatch);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = hash_children(c, &fr);
            sr = hash_children(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = hash_children(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn == 0 && &fr == old_root && &sr == new_root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// The right edge of a tree: the perfect subtrees decomposing `[0, size)`.
/// Appending a leaf yields the interior nodes it completes, to be stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    /// Left to right, strictly decreasing levels.
    nodes: Vec<(NodeId, Hash)>,
}

impl CompactRange {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds from the stored hashes of `frontier_ids(size)`, in order.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<Self, ProofError> {
        let ids = Self::frontier_ids(size);
        if ids.len() != hashes.len() {
            return Err(ProofError::WrongLength {
                got: hashes.len(),
                expected: ids.len(),
            });
        }
        Ok(Self {
            size,
            nodes: ids.into_iter().zip(hashes).collect(),
        })
    }

    /// Node ids of the frontier of a tree of `size`.
    pub fn frontier_ids(size: u64) -> Vec<NodeId> {
        perfect_decomposition(0, size)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn frontier(&self) -> &[(NodeId, Hash)] {
        &self.nodes
    }

    /// Appends a leaf hash; returns the interior nodes (level >= 1) completed.
    pub fn append(&mut self, leaf: Hash) -> Vec<(NodeId, Hash)> {
        let mut completed = Vec::new();
        let mut cur = (NodeId::new(0, self.size), leaf);
        while let Some((left_id, left_hash)) = self.nodes.last().copied() {
            if left_id.level != cur.0.level {
                break;
            }
            self.nodes.pop();
            let parent = NodeId::new(left_id.level + 1, left_id.index >> 1);
            cur = (parent, hash_children(&left_hash, &cur.1));
            completed.push(cur);
        }
        self.nodes.push(cur);
        self.size += 1;
        completed
    }

    /// Root hash of the tree of the current size.
    pub fn root(&self) -> Hash {
        let mut acc: Option<Hash> = None;
        for (_, h) in self.nodes.iter().rev() {
            acc = Some(match acc {
                None => *h,
                Some(r) => hash_children(h, &r),
            });
        }
        acc.unwrap_or_else(empty_root)
    }
}

/// An in-memory tree over leaf hashes: a reference for tests and tools.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    leaves: Vec<Hash>,
}

impl MemoryTree {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push_leaf_hash(&mut self, h: Hash) {
        self.leaves.push(h);
    }
    pub fn push_data(&mut self, data: &[u8]) {
        self.leaves.push(hash_leaf(data));
    }
    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }
    /// Merkle tree hash of leaves `[start, end)` by direct recursion.
    pub fn subtree_hash(&self, start: u64, end: u64) -> Hash {
        let n = end - start;
        match n {
            0 => empty_root(),
            1 => self.leaves[start as usize],
            _ => {
                let k = split_point(n);
                hash_children(
                    &self.subtree_hash(start, start + k),
                    &self.subtree_hash(start + k, end),
                )
            }
        }
    }
    pub fn root(&self, size: u64) -> Hash {
        self.subtree_hash(0, size)
    }
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        Ok(inclusion_ranges(index, size)?
            .into_iter()
            .map(|(a, b)| self.subtree_hash(a, b))
            .collect())
    }
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
        Ok(consistency_ranges(old, new)?
            .into_iter()
            .map(|(a, b)| self.subtree_hash(a, b))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hd(s: &str) -> Hash {
        let v = hex::decode(s).unwrap();
        v.try_into().unwrap()
    }

    // transparency-dev/merkle testonly: leaf inputs and known roots.
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn kat_tree() -> MemoryTree {
        let mut t = MemoryTree::new();
        for l in LEAVES {
            t.push_data(&hex::decode(l).unwrap());
        }
        t
    }

    #[test]
    fn kat_leaf_and_node_hashes() {
        let t = kat_tree();
        let level0 = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
        ];
        for (i, h) in level0.iter().enumerate() {
            assert_eq!(t.leaves[i], hd(h), "leaf {i}");
        }
        let level1 = [
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        ];
        let mut cr = CompactRange::new();
        let mut stored = std::collections::HashMap::new();
        for (i, l) in t.leaves.iter().enumerate() {
            stored.insert(NodeId::new(0, i as u64), *l);
            for (id, h) in cr.append(*l) {
                stored.insert(id, h);
            }
        }
        for (i, h) in level1.iter().enumerate() {
            assert_eq!(stored[&NodeId::new(1, i as u64)], hd(h));
        }
        assert_eq!(
            stored[&NodeId::new(2, 0)],
            hd("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7")
        );
        assert_eq!(
            stored[&NodeId::new(2, 1)],
            hd("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")
        );
        assert_eq!(stored[&NodeId::new(3, 0)], hd(ROOTS[8]));
    }

    #[test]
    fn kat_roots_all_sizes() {
        let t = kat_tree();
        let mut cr = CompactRange::new();
        assert_eq!(cr.root(), hd(ROOTS[0]));
        for (i, leaf) in t.leaves.iter().enumerate() {
            cr.append(*leaf);
            assert_eq!(
                cr.root(),
                hd(ROOTS[i + 1]),
                "compact root at size {}",
                i + 1
            );
            assert_eq!(t.root(i as u64 + 1), hd(ROOTS[i + 1]));
        }
        assert_eq!(empty_root(), hd(ROOTS[0]));
    }

    #[test]
    fn kat_inclusion_proofs() {
        let t = kat_tree();
        let cases: &[(u64, u64, &[&str])] = &[
            (0, 1, &[]),
            (
                0,
                2,
                &["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"],
            ),
            (
                1,
                2,
                &["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (index, size, want) in cases {
            let want: Vec<Hash> = want.iter().map(|h| hd(h)).collect();
            let got = t.inclusion_proof(*index, *size).unwrap();
            assert_eq!(got, want, "inclusion {index}/{size}");
            let root = hd(ROOTS[*size as usize]);
            verify_inclusion(&t.leaves[*index as usize], *index, *size, &got, &root).unwrap();
            // A proof for the wrong index must fail.
            if *size > 1 {
                let other = (index + 1) % size;
                assert!(
                    verify_inclusion(&t.leaves[*index as usize], other, *size, &got, &root)
                        .is_err()
                );
            }
        }
    }

    #[test]
    fn kat_consistency_proofs() {
        let t = kat_tree();
        let cases: &[(u64, u64, &[&str])] = &[
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (old, new, want) in cases {
            let want: Vec<Hash> = want.iter().map(|h| hd(h)).collect();
            let got = t.consistency_proof(*old, *new).unwrap();
            assert_eq!(got, want, "consistency {old}->{new}");
            let (r1, r2) = (hd(ROOTS[*old as usize]), hd(ROOTS[*new as usize]));
            verify_consistency(*old, *new, &r1, &r2, &got).unwrap();
            if old != new {
                assert!(verify_consistency(*old, *new, &r2, &r1, &got).is_err());
            }
        }
    }

    /// Deterministic xorshift so the test is reproducible without a rand dependency.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn proofs_from_stored_nodes_round_trip_random_sizes() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut t = MemoryTree::new();
        let mut cr = CompactRange::new();
        let mut stored = std::collections::HashMap::new();
        for i in 0..300u64 {
            let leaf = hash_leaf(&i.to_be_bytes());
            t.push_leaf_hash(leaf);
            stored.insert(NodeId::new(0, i), leaf);
            for (id, h) in cr.append(leaf) {
                stored.insert(id, h);
            }
            assert_eq!(cr.root(), t.root(i + 1));
            let rebuilt = CompactRange::from_parts(
                i + 1,
                CompactRange::frontier_ids(i + 1)
                    .iter()
                    .map(|id| stored[id])
                    .collect(),
            )
            .unwrap();
            assert_eq!(rebuilt, cr);
        }
        let lookup = |id: NodeId| stored.get(&id).copied();
        for _ in 0..400 {
            let size = xorshift(&mut seed) % 300 + 1;
            let index = xorshift(&mut seed) % size;
            let old = xorshift(&mut seed) % size + 1;
            let root = range_hash(0, size, &lookup).unwrap();
            assert_eq!(root, t.root(size));
            let proof: Vec<Hash> = inclusion_ranges(index, size)
                .unwrap()
                .into_iter()
                .map(|(a, b)| range_hash(a, b, &lookup).unwrap())
                .collect();
            assert_eq!(proof, t.inclusion_proof(index, size).unwrap());
            verify_inclusion(&t.leaves[index as usize], index, size, &proof, &root).unwrap();
            let cproof: Vec<Hash> = consistency_ranges(old, size)
                .unwrap()
                .into_iter()
                .map(|(a, b)| range_hash(a, b, &lookup).unwrap())
                .collect();
            assert_eq!(cproof, t.consistency_proof(old, size).unwrap());
            verify_consistency(old, size, &t.root(old), &root, &cproof).unwrap();
            // Tampered proofs fail.
            if let Some(first) = cproof.first() {
                let mut bad = cproof.clone();
                bad[0] = hash_children(first, first);
                assert!(verify_consistency(old, size, &t.root(old), &root, &bad).is_err());
            }
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let last = bad.len() - 1;
                bad[last][0] ^= 1;
                assert!(
                    verify_inclusion(&t.leaves[index as usize], index, size, &bad, &root).is_err()
                );
            }
        }
    }

    #[test]
    fn proof_errors() {
        assert!(inclusion_ranges(3, 3).is_err());
        assert!(consistency_ranges(0, 3).is_err());
        assert!(consistency_ranges(4, 3).is_err());
        let r = empty_root();
        assert_eq!(
            verify_inclusion(&r, 0, 2, &[], &r),
            Err(ProofError::WrongLength {
                got: 0,
                expected: 1
            })
        );
    }
}
