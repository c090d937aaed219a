//! The audit entry, its canonical encoding and the subject pseudonymiser.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, TimeZone, Utc};
use curve25519_dalek::{RistrettoPoint, Scalar};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use crate::merkle::{Hash, hash_leaf};

/// Version byte of the canonical encoding of entries without a policy
/// version (every entry written before that field existed).
pub const ENTRY_ENCODING_V1: u8 = 1;
/// Version byte of entries that carry a `policy_version`: v1's bytes with
/// the policy version appended. The version follows from the content, so
/// rows stored before the field existed hash exactly as they did.
pub const ENTRY_ENCODING_V2: u8 = 2;
/// Version byte of entries written since citizens can check their history:
/// the fields a citizen may see in clear, then a digest of the rest
/// ([`AuditEntry::private_digest`]: clerk, case, trace, detail...), so a
/// portal can recompute the leaf hash of an access to its person without
/// seeing who at the counter handled it.
pub const ENTRY_ENCODING_V3: u8 = 3;
/// What [`AuditEntry::encoding`] holds for entries stored before v3: their
/// version follows from their content (v1 without a policy version, v2 with).
pub const ENTRY_ENCODING_BY_CONTENT: u8 = 0;

/// What kind of act an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// One `Lookup` request.
    Lookup,
    /// One item of a `Gather` request.
    GatherItem,
    /// An administrator's act (audit search, export, proof...).
    AdminAction,
    /// Authorises a prune of the node's own log: written by the node's
    /// writer before anything is deleted; `detail` is a
    /// [`PruneRecord`](crate::read::PruneRecord).
    Prune,
    /// A policy that took effect, at start-up or on reload
    /// (`policy_version` is the new one).
    PolicyChange,
    /// A citizen portal read a person's access history (`subject` is that
    /// person): it is itself an access the person sees.
    PortalView,
}

impl EntryKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            EntryKind::Lookup => "Lookup",
            EntryKind::GatherItem => "GatherItem",
            EntryKind::AdminAction => "AdminAction",
            EntryKind::Prune => "Prune",
            EntryKind::PolicyChange => "PolicyChange",
            EntryKind::PortalView => "PortalView",
        }
    }
    fn code(&self) -> u8 {
        match self {
            EntryKind::Lookup => 1,
            EntryKind::GatherItem => 2,
            EntryKind::AdminAction => 3,
            // New codes only ever get added, so older entries keep their hashes.
            EntryKind::Prune => 4,
            EntryKind::PolicyChange => 5,
            EntryKind::PortalView => 6,
        }
    }
}

impl std::str::FromStr for EntryKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Lookup" => Ok(EntryKind::Lookup),
            "GatherItem" => Ok(EntryKind::GatherItem),
            "AdminAction" => Ok(EntryKind::AdminAction),
            "Prune" => Ok(EntryKind::Prune),
            "PolicyChange" => Ok(EntryKind::PolicyChange),
            "PortalView" => Ok(EntryKind::PortalView),
            other => Err(format!("unknown entry kind {other:?}")),
        }
    }
}

/// One audited act. `subject` is a pseudonym, never an identity number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// UTC, microsecond precision (finer precision is truncated on append).
    pub time: DateTime<Utc>,
    /// Exchange node id; filled in by the log when empty.
    pub node: String,
    pub kind: EntryKind,
    /// Unified social credit code of the calling organisation.
    pub caller_org: String,
    pub caller_unit: String,
    pub operator: String,
    pub matter: String,
    pub case_number: String,
    pub evidence_type: String,
    pub department: String,
    /// The identity number's subject key, 64 lower-case hex (see
    /// [`SubjectPseudonymizer::pseudonym`]); empty when none.
    pub subject: String,
    /// gRPC status code, 0 = OK.
    pub outcome_code: i32,
    /// Short machine reason, e.g. "SUBJECT_NOT_FOUND"; empty when OK.
    pub outcome_reason: String,
    pub latency_us: u64,
    pub trace_id: String,
    /// Hex keyed hash over the released fields, see
    /// [`SubjectPseudonymizer::released_fields_hash`]; empty when nothing
    /// was released.
    pub released_fields_hash: String,
    /// For admin actions: what was done/searched (identity numbers pseudonymised).
    pub detail: String,
    /// Hex digest of the access policy that decided the act; empty when
    /// unknown (entries written before the field existed).
    #[serde(default)]
    pub policy_version: String,
    /// Canonical encoding: [`ENTRY_ENCODING_V3`] for every new entry,
    /// [`ENTRY_ENCODING_BY_CONTENT`] for entries stored before it existed.
    #[serde(default)]
    pub encoding: u8,
}

impl AuditEntry {
    /// A blank entry of `kind` at `time`; fill the fields you know.
    pub fn new(kind: EntryKind, time: DateTime<Utc>) -> Self {
        Self {
            time: truncate_to_micros(time),
            node: String::new(),
            kind,
            caller_org: String::new(),
            caller_unit: String::new(),
            operator: String::new(),
            matter: String::new(),
            case_number: String::new(),
            evidence_type: String::new(),
            department: String::new(),
            subject: String::new(),
            outcome_code: 0,
            outcome_reason: String::new(),
            latency_us: 0,
            trace_id: String::new(),
            released_fields_hash: String::new(),
            detail: String::new(),
            policy_version: String::new(),
            encoding: ENTRY_ENCODING_V3,
        }
    }

    /// Cuts every text field to its limit (see [`FIELD_LIMITS`]) and
    /// escapes control characters, so a stored entry is at most
    /// [`MAX_ENTRY_BYTES`] encoded and prints as what it is. `AuditLog`
    /// applies it to every entry before hashing it.
    pub fn bound_and_clean(&mut self) {
        for (field, max_chars) in [
            (&mut self.node, MAX_CODE_CHARS),
            (&mut self.caller_org, MAX_CODE_CHARS),
            (&mut self.caller_unit, MAX_CODE_CHARS),
            (&mut self.operator, MAX_CODE_CHARS),
            (&mut self.matter, MAX_CODE_CHARS),
            (&mut self.case_number, MAX_CASE_NUMBER_CHARS),
            (&mut self.evidence_type, MAX_CODE_CHARS),
            (&mut self.department, MAX_CODE_CHARS),
            (&mut self.subject, MAX_CODE_CHARS),
            (&mut self.outcome_reason, MAX_CODE_CHARS),
            (&mut self.trace_id, MAX_CODE_CHARS),
            (&mut self.released_fields_hash, MAX_CODE_CHARS),
            (&mut self.detail, MAX_DETAIL_CHARS),
            (&mut self.policy_version, MAX_POLICY_VERSION_CHARS),
        ] {
            if let Cow::Owned(clean) = bounded_clean_text(field, max_chars) {
                *field = clean;
            }
        }
    }

    /// The encoding version this entry hashes with.
    pub fn encoding_version(&self) -> u8 {
        match self.encoding {
            ENTRY_ENCODING_BY_CONTENT if self.policy_version.is_empty() => ENTRY_ENCODING_V1,
            ENTRY_ENCODING_BY_CONTENT => ENTRY_ENCODING_V2,
            v => v,
        }
    }

    /// Canonical, versioned bytes hashed into the log. The position (node,
    /// index) is part of them so a moved or copied row no longer matches.
    pub fn canonical_bytes(&self, index: u64) -> Vec<u8> {
        let version = self.encoding_version();
        if version == ENTRY_ENCODING_V3 {
            // Borrowed, not through `public()`: no field is copied per entry.
            return V3Fields {
                node: &self.node,
                time: self.time,
                kind: self.kind,
                texts: [
                    &self.caller_org,
                    &self.caller_unit,
                    &self.matter,
                    &self.evidence_type,
                    &self.department,
                    &self.subject,
                ],
                outcome_code: self.outcome_code,
                outcome_reason: &self.outcome_reason,
                private_digest: self.private_digest(),
            }
            .canonical_bytes(index);
        }
        let mut out = Vec::with_capacity(256 + self.detail.len());
        out.push(version);
        put_str(&mut out, &self.node);
        out.extend_from_slice(&index.to_be_bytes());
        out.extend_from_slice(&self.time.timestamp_micros().to_be_bytes());
        out.push(self.kind.code());
        for s in [
            &self.caller_org,
            &self.caller_unit,
            &self.operator,
            &self.matter,
            &self.case_number,
            &self.evidence_type,
            &self.department,
            &self.subject,
        ] {
            put_str(&mut out, s);
        }
        out.extend_from_slice(&self.outcome_code.to_be_bytes());
        put_str(&mut out, &self.outcome_reason);
        out.extend_from_slice(&self.latency_us.to_be_bytes());
        put_str(&mut out, &self.trace_id);
        put_str(&mut out, &self.released_fields_hash);
        put_str(&mut out, &self.detail);
        if version == ENTRY_ENCODING_V2 {
            put_str(&mut out, &self.policy_version);
        }
        out
    }

    /// SHA-256 over the fields a citizen does not see (encoding v3): the
    /// clerk, the case number, latency, trace id, released-fields hash,
    /// detail and policy version, each length-prefixed under a label.
    pub fn private_digest(&self) -> Hash {
        use sha2::Digest;
        let mut out = Vec::with_capacity(160 + self.detail.len());
        out.extend_from_slice(PRIVATE_DIGEST_LABEL);
        put_str(&mut out, &self.operator);
        put_str(&mut out, &self.case_number);
        out.extend_from_slice(&self.latency_us.to_be_bytes());
        put_str(&mut out, &self.trace_id);
        put_str(&mut out, &self.released_fields_hash);
        put_str(&mut out, &self.detail);
        put_str(&mut out, &self.policy_version);
        Sha256::digest(&out).into()
    }

    /// What a citizen may see of this entry, enough to recompute its v3
    /// leaf hash.
    pub fn public(&self) -> PublicEntry {
        PublicEntry {
            time: self.time,
            node: self.node.clone(),
            kind: self.kind,
            caller_org: self.caller_org.clone(),
            caller_unit: self.caller_unit.clone(),
            matter: self.matter.clone(),
            evidence_type: self.evidence_type.clone(),
            department: self.department.clone(),
            subject: self.subject.clone(),
            outcome_code: self.outcome_code,
            outcome_reason: self.outcome_reason.clone(),
            private_digest: self.private_digest(),
        }
    }

    /// RFC 6962 leaf hash of the entry at `index`.
    pub fn leaf_hash(&self, index: u64) -> Hash {
        hash_leaf(&self.canonical_bytes(index))
    }
}

/// Label of [`AuditEntry::private_digest`], so its input can never be read
/// as any other encoding's.
const PRIVATE_DIGEST_LABEL: &[u8] = b"tongban/audit/private/v1\n";

/// The part of a v3 entry a citizen sees in clear, with the digest that
/// stands for the rest. Its leaf hash is the full entry's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicEntry {
    pub time: DateTime<Utc>,
    pub node: String,
    pub kind: EntryKind,
    pub caller_org: String,
    pub caller_unit: String,
    pub matter: String,
    pub evidence_type: String,
    pub department: String,
    pub subject: String,
    pub outcome_code: i32,
    pub outcome_reason: String,
    #[serde(with = "crate::store::hex_hash")]
    pub private_digest: Hash,
}

impl PublicEntry {
    /// The v3 canonical bytes of the entry at `index`.
    pub fn canonical_bytes(&self, index: u64) -> Vec<u8> {
        V3Fields {
            node: &self.node,
            time: self.time,
            kind: self.kind,
            texts: [
                &self.caller_org,
                &self.caller_unit,
                &self.matter,
                &self.evidence_type,
                &self.department,
                &self.subject,
            ],
            outcome_code: self.outcome_code,
            outcome_reason: &self.outcome_reason,
            private_digest: self.private_digest,
        }
        .canonical_bytes(index)
    }

    /// RFC 6962 leaf hash of the entry at `index`.
    pub fn leaf_hash(&self, index: u64) -> Hash {
        hash_leaf(&self.canonical_bytes(index))
    }
}

/// What encoding v3 hashes, borrowed from a full entry or its public part.
struct V3Fields<'a> {
    node: &'a str,
    time: DateTime<Utc>,
    kind: EntryKind,
    /// Caller organisation and unit, matter, evidence type, department,
    /// subject, in that order.
    texts: [&'a str; 6],
    outcome_code: i32,
    outcome_reason: &'a str,
    private_digest: Hash,
}

impl V3Fields<'_> {
    fn canonical_bytes(&self, index: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.push(ENTRY_ENCODING_V3);
        put_str(&mut out, self.node);
        out.extend_from_slice(&index.to_be_bytes());
        out.extend_from_slice(&self.time.timestamp_micros().to_be_bytes());
        out.push(self.kind.code());
        for s in self.texts {
            put_str(&mut out, s);
        }
        out.extend_from_slice(&self.outcome_code.to_be_bytes());
        put_str(&mut out, self.outcome_reason);
        out.extend_from_slice(&self.private_digest);
        out
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Entries are far below 4 GiB; saturate rather than wrap, the bytes still differ.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Drops sub-microsecond precision so stored and hashed times agree.
pub fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    micros_to_time(t.timestamp_micros())
}

pub(crate) fn micros_to_time(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Limit, in characters, of identifier-like fields: node, caller
/// organisation and unit, operator, matter, evidence type, department,
/// subject pseudonym, outcome reason, trace id, released-fields hash.
pub const MAX_CODE_CHARS: usize = 64;
/// Limit, in characters, of `case_number`.
pub const MAX_CASE_NUMBER_CHARS: usize = 128;
/// Limit, in characters, of `detail` (administrators' acts).
pub const MAX_DETAIL_CHARS: usize = 1024;
/// Limit, in characters, of `policy_version` (a hex digest, room for a prefix).
pub const MAX_POLICY_VERSION_CHARS: usize = 128;

/// Every text field's limit, by name, for documentation and tests.
pub const FIELD_LIMITS: [(&str, usize); 14] = [
    ("node", MAX_CODE_CHARS),
    ("caller_org", MAX_CODE_CHARS),
    ("caller_unit", MAX_CODE_CHARS),
    ("operator", MAX_CODE_CHARS),
    ("matter", MAX_CODE_CHARS),
    ("case_number", MAX_CASE_NUMBER_CHARS),
    ("evidence_type", MAX_CODE_CHARS),
    ("department", MAX_CODE_CHARS),
    ("subject", MAX_CODE_CHARS),
    ("outcome_reason", MAX_CODE_CHARS),
    ("trace_id", MAX_CODE_CHARS),
    ("released_fields_hash", MAX_CODE_CHARS),
    ("detail", MAX_DETAIL_CHARS),
    ("policy_version", MAX_POLICY_VERSION_CHARS),
];

const fn sum_limits() -> usize {
    let mut total = 0;
    let mut i = 0;
    while i < FIELD_LIMITS.len() {
        total += FIELD_LIMITS[i].1;
        i += 1;
    }
    total
}

/// Largest canonical encoding of an entry that went through
/// [`AuditEntry::bound_and_clean`] (every `AuditLog` entry): each character
/// is at most 4 bytes of UTF-8, each text field has a 4-byte length prefix,
/// plus version (1), index (8), time (8), kind (1), outcome code (4) and
/// latency (8). About 8 KB.
pub const MAX_ENTRY_BYTES: usize = 4 * sum_limits() + 4 * FIELD_LIMITS.len() + 30;

/// Whether `c` must not be stored or printed raw: C0, DEL and C1 controls
/// (newlines and terminal escapes among them), the line and paragraph
/// separators, and the bidirectional controls and marks that reorder what a
/// reader sees.
pub fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every [forbidden character](is_forbidden_char) replaced by a
/// visible escape such as `\u{1b}`; borrowed when there was none.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    bounded_clean_text(s, usize::MAX)
}

/// `s` with forbidden characters escaped and, when the result would be
/// longer than `max_chars` characters, cut so that with the marker
/// `…[+N bytes]` (N = bytes of `s` left out) it is at most `max_chars`
/// (for limits wider than the marker, about 20; every limit here is).
/// Works in one pass that stops at the limit, so a 4 MB text costs no more
/// than a short one.
pub fn bounded_clean_text(s: &str, max_chars: usize) -> Cow<'_, str> {
    // Byte length bounds the character count, so short clean texts are free.
    if s.len() <= max_chars && !s.chars().any(is_forbidden_char) {
        return Cow::Borrowed(s);
    }
    // The marker's width with the largest N possible; the real one is no wider.
    let keep_chars = max_chars.saturating_sub(marker(s.len()).chars().count());
    let mut out = String::new();
    let mut out_chars = 0usize;
    let mut changed = false;
    // Where to cut if it comes to that: (byte offset in `s`, length of `out`).
    let mut cut = None;
    for (at, c) in s.char_indices() {
        let piece_chars = if is_forbidden_char(c) {
            escape_char(c).len()
        } else {
            1
        };
        if cut.is_none() && out_chars + piece_chars > keep_chars {
            cut = Some((at, out.len()));
        }
        if out_chars + piece_chars > max_chars {
            let (cut_at, kept_len) = cut.unwrap_or((at, out.len()));
            out.truncate(kept_len);
            out.push_str(&marker(s.len() - cut_at));
            return Cow::Owned(out);
        }
        if is_forbidden_char(c) {
            out.push_str(&escape_char(c));
            changed = true;
        } else {
            out.push(c);
        }
        out_chars += piece_chars;
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(s)
    }
}

fn escape_char(c: char) -> String {
    format!("\\u{{{:x}}}", u32::from(c))
}

fn marker(cut_bytes: usize) -> String {
    format!("…[+{cut_bytes} bytes]")
}

/// Hashes released fields: sorted by name then value, each name and value
/// length-prefixed, so the order of `fields` does not matter.
fn released_fields_mac<K: AsRef<str>, V: AsRef<str>>(
    mut mac: Hmac<Sha256>,
    fields: &[(K, V)],
) -> String {
    let mut sorted: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    sorted.sort();
    mac.update(b"tongban-released-fields-v1");
    mac.update(&(sorted.len() as u64).to_be_bytes());
    for (k, v) in sorted {
        mac.update(&(k.len() as u64).to_be_bytes());
        mac.update(k.as_bytes());
        mac.update(&(v.len() as u64).to_be_bytes());
        mac.update(v.as_bytes());
    }
    hex::encode(mac.finalize().into_bytes())
}

/// Errors building a pseudonymiser.
#[derive(Debug, thiserror::Error)]
pub enum PseudonymKeyError {
    #[error("pseudonym key must be at least 16 bytes, got {0}")]
    TooShort(usize),
    #[error("pseudonym key is not valid hex")]
    BadHex,
    #[error("pseudonym key rejected by HMAC")]
    Rejected,
}

/// Why a subject proof was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectProofError {
    #[error("subject proof must be {SUBJECT_PROOF_LEN} bytes, got {0}")]
    BadLength(usize),
    #[error("subject proof is not a valid encoding")]
    Malformed,
    #[error("subject VRF public key is not a valid ristretto255 key")]
    BadPublicKey,
    #[error("subject proof does not hold for this identity number under this key")]
    Invalid,
}

/// Length of a subject proof: RFC 9381 ECVRF-RISTRETTO255-SHA512's pi,
/// Gamma (32 bytes) ‖ challenge (16) ‖ response scalar (32).
pub const SUBJECT_PROOF_LEN: usize = 80;

/// A subject key with the VRF proof that it belongs to one identity number,
/// checkable with [`verify_subject_proof`] and the deployment's
/// [`SubjectPseudonymizer::vrf_public_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectProof {
    /// The first 32 bytes of the VRF output: the subject key of audit entries.
    pub key: [u8; 32],
    /// The RFC 9381 proof, [`SUBJECT_PROOF_LEN`] bytes.
    pub proof: Vec<u8>,
}

/// Label under which the released-fields key is derived from the subject
/// key. It has lower-case letters, and [`SubjectPseudonymizer::pseudonym`]
/// upper-cases its input, so no pseudonym can ever equal the derived key.
const RELEASED_FIELDS_KEY_LABEL: &[u8] = b"tongban released-fields v1";

/// Label under which the VRF secret key is derived from the pseudonym key
/// (HMAC-SHA512, wide-reduced to a scalar), so every node of a deployment,
/// sharing the pseudonym key, has the same VRF key without a new key file.
const SUBJECT_VRF_KEY_LABEL: &[u8] = b"tongban subject vrf v1";

/// Entries of the subject-key cache, over all shards (about 100 bytes
/// each with the map's overhead: some 6 MB at most).
const SUBJECT_KEY_CACHE_CAPACITY: usize = 65_536;
/// Shards of the cache: a lookup locks one, so concurrent requests seldom meet.
const SUBJECT_KEY_CACHE_SHARDS: usize = 16;
const SUBJECT_KEY_SHARD_CAPACITY: usize = SUBJECT_KEY_CACHE_CAPACITY / SUBJECT_KEY_CACHE_SHARDS;

/// The identity number as the VRF's input and the cache's: trimmed, upper
/// case (`IdNumber::as_str()`'s form), so both spellings of the check
/// character `x` give one subject.
fn normalise_id(id_number: &str) -> String {
    id_number.trim().to_ascii_uppercase()
}

/// ECVRF-RISTRETTO255-SHA512's suite string (c2sp.org/vrf-r255).
const VRF_SUITE: &[u8] = b"\xFFc2sp.org/vrf-r255";

/// RFC 9381 proof_to_hash for the suite, from Gamma's encoding (a proof's
/// first 32 bytes): what `PublicKey::verify` returns. Tests hold it to
/// the crate's.
fn vrf_output(gamma: &[u8; 32]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(VRF_SUITE);
    h.update([0x03]);
    h.update(gamma);
    h.update([0x00]);
    h.finalize().into()
}

/// The VRF output alone, without a proof: RFC 9381 section 5.1 steps 1-4
/// (encode_to_curve as c2sp.org/vrf-r255 specifies it, Gamma = x·H) then
/// proof_to_hash. One variable-base multiplication instead of the proof's
/// three, since the request path needs only the key. Tests hold it to
/// `SecretKey::prove`.
fn vrf_hash(secret: &Scalar, public_key: &[u8; 32], alpha: &[u8]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(VRF_SUITE);
    h.update([0x82]);
    h.update(public_key);
    h.update(alpha);
    let point = RistrettoPoint::from_uniform_bytes(&h.finalize().into());
    vrf_output((secret * point).compress().as_bytes())
}

fn first_32(bytes: &[u8; 64]) -> [u8; 32] {
    let mut key = [0u8; 32];
    key.copy_from_slice(&bytes[..32]);
    key
}

/// Checks `proof` for identity number `id` under the VRF `public_key` and
/// returns the subject key it proves (the entries' `subject`, decoded).
/// `id` is normalised as [`SubjectPseudonymizer::pseudonym`] does.
pub fn verify_subject_proof(
    public_key: &[u8; 32],
    id: &str,
    proof: &[u8],
) -> Result<[u8; 32], SubjectProofError> {
    let public_key =
        vrf_r255::PublicKey::from_bytes(*public_key).ok_or(SubjectProofError::BadPublicKey)?;
    let bytes: [u8; SUBJECT_PROOF_LEN] = proof
        .try_into()
        .map_err(|_| SubjectProofError::BadLength(proof.len()))?;
    let proof = vrf_r255::Proof::from_bytes(bytes).ok_or(SubjectProofError::Malformed)?;
    let output: Option<[u8; 64]> = public_key
        .verify(normalise_id(id).as_bytes(), &proof)
        .into();
    output
        .map(|out| first_32(&out))
        .ok_or(SubjectProofError::Invalid)
}

/// Subject keys already computed, keyed by the identity number's HMAC under
/// the pseudonym key (so no identity number is held, even in memory). A
/// bounded map per shard that is emptied when full: unlike an LRU it costs
/// a hit no bookkeeping (no write under the lock), a clear is O(n) once per
/// shard capacity of misses, and what it drops costs one VRF evaluation to
/// get back. Shards are picked by the HMAC's first byte, which no caller
/// can steer without the key.
struct SubjectKeyCache {
    shards: [Mutex<HashMap<[u8; 32], [u8; 32]>>; SUBJECT_KEY_CACHE_SHARDS],
}

impl SubjectKeyCache {
    fn new() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }

    fn shard(&self, mac: &[u8; 32]) -> MutexGuard<'_, HashMap<[u8; 32], [u8; 32]>> {
        let shard = &self.shards[usize::from(mac[0]) % SUBJECT_KEY_CACHE_SHARDS];
        // A panic under this lock can only lose a derived value; the map
        // itself stays sound, so a poisoned lock is still usable.
        shard.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, mac: &[u8; 32]) -> Option<[u8; 32]> {
        self.shard(mac).get(mac).copied()
    }

    fn insert(&self, mac: [u8; 32], key: [u8; 32]) {
        let mut shard = self.shard(&mac);
        if shard.len() >= SUBJECT_KEY_SHARD_CAPACITY && !shard.contains_key(&mac) {
            shard.clear();
        }
        shard.insert(mac, key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        (0..SUBJECT_KEY_CACHE_SHARDS)
            .map(|i| {
                self.shards[i]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len()
            })
            .sum()
    }
}

/// Subject keys for identity numbers, so the log can be searched by person
/// without holding identity numbers in clear; and the keyed hash of
/// released fields, under a key derived from the same secret.
///
/// A subject key is the first 32 bytes of an RFC 9381 VRF output
/// (ECVRF-RISTRETTO255-SHA512) over the identity number, under a VRF key
/// derived from the pseudonym key: like a keyed hash only the key's holder
/// can compute it, but with [`prove`](Self::prove) anyone holding the
/// [public key](Self::vrf_public_key) can check that a key is a given
/// person's ([`verify_subject_proof`]) without learning the secret.
/// Clones share one cache of computed keys.
#[derive(Clone)]
pub struct SubjectPseudonymizer {
    /// HMAC keyed with the subject key: the cache's key, never stored.
    subject_mac: Hmac<Sha256>,
    /// HMAC keyed with HMAC(subject key, [`RELEASED_FIELDS_KEY_LABEL`]).
    released_mac: Hmac<Sha256>,
    /// Derived under [`SUBJECT_VRF_KEY_LABEL`].
    vrf: vrf_r255::SecretKey,
    /// The same secret as a scalar, and the public key's encoding: what
    /// [`vrf_hash`] needs.
    vrf_scalar: Scalar,
    vrf_public: [u8; 32],
    cache: Arc<SubjectKeyCache>,
}

impl std::fmt::Debug for SubjectPseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectPseudonymizer")
            .field("key", &"<redacted>")
            .finish()
    }
}

impl SubjectPseudonymizer {
    pub fn from_bytes(key: &[u8]) -> Result<Self, PseudonymKeyError> {
        if key.len() < 16 {
            return Err(PseudonymKeyError::TooShort(key.len()));
        }
        let subject_mac =
            Hmac::<Sha256>::new_from_slice(key).map_err(|_| PseudonymKeyError::Rejected)?;
        let mut derive = subject_mac.clone();
        derive.update(RELEASED_FIELDS_KEY_LABEL);
        let released_key = derive.finalize().into_bytes();
        let released_mac = Hmac::<Sha256>::new_from_slice(&released_key)
            .map_err(|_| PseudonymKeyError::Rejected)?;
        let (vrf_scalar, vrf) = derive_vrf_key(key)?;
        Ok(Self {
            subject_mac,
            released_mac,
            vrf,
            vrf_scalar,
            vrf_public: vrf_r255::PublicKey::from(vrf).to_bytes(),
            cache: Arc::new(SubjectKeyCache::new()),
        })
    }

    pub fn from_hex(key_hex: &str) -> Result<Self, PseudonymKeyError> {
        let key = hex::decode(key_hex.trim()).map_err(|_| PseudonymKeyError::BadHex)?;
        Self::from_bytes(&key)
    }

    /// The identity number's subject key as lower-case hex (64 characters),
    /// the entries' `subject`. Lower-case `x` is folded to upper case first
    /// so both spellings of one number map to one pseudonym.
    pub fn pseudonym(&self, id_number: &str) -> String {
        hex::encode(self.subject_key(id_number))
    }

    /// The identity number's subject key: the first 32 bytes of the VRF
    /// output. From the cache when this node computed it lately.
    pub fn subject_key(&self, id_number: &str) -> [u8; 32] {
        let alpha = normalise_id(id_number);
        let mac = self.cache_key(&alpha);
        if let Some(key) = self.cache.get(&mac) {
            return key;
        }
        let key = first_32(&vrf_hash(
            &self.vrf_scalar,
            &self.vrf_public,
            alpha.as_bytes(),
        ));
        self.cache.insert(mac, key);
        key
    }

    /// The identity number's subject key with its VRF proof, for a portal
    /// to check with [`verify_subject_proof`]. Always evaluates the VRF.
    pub fn prove(&self, id_number: &str) -> SubjectProof {
        let alpha = normalise_id(id_number);
        let proof = self.vrf.prove(alpha.as_bytes()).to_bytes();
        let mut gamma = [0u8; 32];
        gamma.copy_from_slice(&proof[..32]);
        let key = first_32(&vrf_output(&gamma));
        self.cache.insert(self.cache_key(&alpha), key);
        SubjectProof {
            key,
            proof: proof.to_vec(),
        }
    }

    /// The VRF public key under which subject proofs verify (compressed
    /// ristretto255). Public: portals pin it.
    pub fn vrf_public_key(&self) -> [u8; 32] {
        self.vrf_public
    }

    fn cache_key(&self, alpha: &str) -> [u8; 32] {
        let mut mac = self.subject_mac.clone();
        mac.update(alpha.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Hex HMAC-SHA256 over the released fields (names and values, in any
    /// order), under a key derived from the subject key. Field values have
    /// little entropy (a marital status, a date), so an unkeyed hash would
    /// give them away to anyone with a copy of the log; only a holder of the
    /// subject key can check this one against claimed values.
    pub fn released_fields_hash<K: AsRef<str>, V: AsRef<str>>(&self, fields: &[(K, V)]) -> String {
        released_fields_mac(self.released_mac.clone(), fields)
    }
}

/// The VRF secret key: HMAC-SHA512(pseudonym key, label), 64 bytes reduced
/// modulo the group order, so the scalar is uniform.
fn derive_vrf_key(key: &[u8]) -> Result<(Scalar, vrf_r255::SecretKey), PseudonymKeyError> {
    let mut mac = Hmac::<Sha512>::new_from_slice(key).map_err(|_| PseudonymKeyError::Rejected)?;
    mac.update(SUBJECT_VRF_KEY_LABEL);
    let wide: [u8; 64] = mac.finalize().into_bytes().into();
    let scalar = Scalar::from_bytes_mod_order_wide(&wide);
    // A reduced scalar is canonical; only zero (probability 2^-252) is refused.
    let secret: Option<vrf_r255::SecretKey> =
        vrf_r255::SecretKey::from_bytes(scalar.to_bytes()).into();
    secret
        .map(|secret| (scalar, secret))
        .ok_or(PseudonymKeyError::Rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AuditEntry {
        let mut e = AuditEntry::new(
            EntryKind::Lookup,
            Utc.with_ymd_and_hms(2026, 3, 1, 8, 30, 0).unwrap(),
        );
        e.node = "n1".into();
        e.caller_org = "11510400MB1234567X".into();
        e.matter = "unemployment-benefit".into();
        e
    }

    /// A v3 entry's leaf hash is recomputable from its public part, which
    /// holds no clerk, case number or detail; every field still counts.
    #[test]
    fn v3_leaf_hashes_come_from_the_public_part_and_the_private_digest() {
        let mut e = sample();
        e.operator = "clerk-0042".into();
        e.case_number = "PZH-2026-000123".into();
        e.detail = "something private".into();
        e.subject = "ab".repeat(32);
        let public = e.public();
        assert_eq!(public.leaf_hash(9), e.leaf_hash(9));
        let shown = serde_json::to_string(&public).unwrap();
        for secret in ["clerk-0042", "PZH-2026-000123", "something private"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        for change in [
            |e: &mut AuditEntry| e.operator.push('x'),
            |e: &mut AuditEntry| e.case_number.push('x'),
            |e: &mut AuditEntry| e.latency_us += 1,
            |e: &mut AuditEntry| e.detail.push('x'),
            |e: &mut AuditEntry| e.policy_version.push('x'),
            |e: &mut AuditEntry| e.subject.replace_range(0..2, "cd"),
            |e: &mut AuditEntry| e.matter.push('x'),
            |e: &mut AuditEntry| e.outcome_code = 7,
        ] {
            let mut f = e.clone();
            change(&mut f);
            assert_ne!(f.leaf_hash(9), e.leaf_hash(9));
        }
        // Stored rows keep their version: a legacy row hashes as before.
        let mut legacy = e.clone();
        legacy.encoding = ENTRY_ENCODING_BY_CONTENT;
        assert_eq!(legacy.canonical_bytes(9)[0], ENTRY_ENCODING_V1);
    }

    #[test]
    fn canonical_bytes_are_deterministic_and_position_bound() {
        let e = sample();
        assert_eq!(e.canonical_bytes(3), e.canonical_bytes(3));
        assert_ne!(e.leaf_hash(3), e.leaf_hash(4));
        assert_eq!(e.canonical_bytes(0)[0], ENTRY_ENCODING_V3);
        let mut f = e.clone();
        f.latency_us += 1;
        assert_ne!(e.leaf_hash(0), f.leaf_hash(0));
        // Field boundaries are unambiguous.
        let mut a = e.clone();
        a.caller_org = "ab".into();
        a.caller_unit = "c".into();
        let mut b = e.clone();
        b.caller_org = "a".into();
        b.caller_unit = "bc".into();
        assert_ne!(a.leaf_hash(0), b.leaf_hash(0));
    }

    #[test]
    fn time_is_truncated_to_micros() {
        let t = Utc.timestamp_nanos(1_700_000_000_123_456_789);
        let e = AuditEntry::new(EntryKind::AdminAction, t);
        assert_eq!(e.time.timestamp_subsec_nanos() % 1000, 0);
        assert_eq!(e.time.timestamp_micros(), 1_700_000_000_123_456);
    }

    /// What the log held before the hash was keyed: SHA-256 over the same
    /// bytes, which anyone could recompute from guessed field values.
    fn unkeyed_released_fields_hash(fields: &[(&str, &str)]) -> String {
        let mut sorted = fields.to_vec();
        sorted.sort();
        let mut h = Sha256::new();
        h.update(b"tongban-released-fields-v1");
        h.update((sorted.len() as u64).to_be_bytes());
        for (k, v) in sorted {
            h.update((k.len() as u64).to_be_bytes());
            h.update(k.as_bytes());
            h.update((v.len() as u64).to_be_bytes());
            h.update(v.as_bytes());
        }
        hex::encode(h.finalize())
    }

    #[test]
    fn released_fields_hash_is_order_independent() {
        let p = SubjectPseudonymizer::from_bytes(&[1u8; 32]).unwrap();
        let a = p.released_fields_hash(&[("eligible", "true"), ("months", "14")]);
        let b = p.released_fields_hash(&[("months", "14"), ("eligible", "true")]);
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        let c = p.released_fields_hash(&[("months", "15"), ("eligible", "true")]);
        assert_ne!(a, c);
        assert_ne!(p.released_fields_hash::<&str, &str>(&[]), a);
    }

    #[test]
    fn released_fields_hash_is_keyed() {
        let fields = [("marital_status", "married"), ("since", "2019-05-01")];
        let p = SubjectPseudonymizer::from_bytes(&[1u8; 32]).unwrap();
        let q = SubjectPseudonymizer::from_bytes(&[2u8; 32]).unwrap();
        let hashed = p.released_fields_hash(&fields);
        assert_ne!(hashed, q.released_fields_hash(&fields));
        // Not the old unkeyed value: a copy of the log no longer lets anyone
        // test guesses of the released values.
        assert_ne!(hashed, unkeyed_released_fields_hash(&fields));
        // Nor the plain HMAC under the subject key, nor a pseudonym: the key
        // is derived with its own label.
        assert_ne!(hashed, p.pseudonym("marital_status"));
        assert_ne!(
            p.released_fields_hash::<&str, &str>(&[]),
            released_fields_mac::<&str, &str>(
                Hmac::<Sha256>::new_from_slice(&[1u8; 32]).unwrap(),
                &[]
            )
        );
    }

    #[test]
    fn control_characters_are_escaped_visibly() {
        let text = "ok\nforged line\x1b[31m\u{202e}rtl\u{7f}\u{85}";
        let clean = escape_controls(text);
        assert_eq!(
            clean,
            "ok\\u{a}forged line\\u{1b}[31m\\u{202e}rtl\\u{7f}\\u{85}"
        );
        assert!(!clean.chars().any(is_forbidden_char));
        assert!(matches!(escape_controls("plain 通办"), Cow::Borrowed(_)));
    }

    #[test]
    fn long_text_is_cut_with_a_marker_within_the_limit() {
        let long = "a".repeat(100);
        let cut = bounded_clean_text(&long, 64);
        assert!(cut.chars().count() <= 64, "{cut}");
        assert!(cut.starts_with("aaaa"));
        let kept = cut.chars().take_while(|c| *c == 'a').count();
        assert!(cut.ends_with(&format!("…[+{} bytes]", 100 - kept)), "{cut}");
        // Exactly at the limit: untouched.
        assert_eq!(bounded_clean_text(&"b".repeat(64), 64), "b".repeat(64));
        // Multi-byte characters count as one.
        assert_eq!(bounded_clean_text(&"通".repeat(64), 64), "通".repeat(64));
        // An escape is never split by the cut.
        let escapes = "\x1b".repeat(100);
        let cut = bounded_clean_text(&escapes, 64);
        assert!(cut.chars().count() <= 64, "{cut}");
        assert!(cut.starts_with("\\u{1b}\\u{1b}"));
        let body = cut.split('…').next().unwrap();
        assert_eq!(body.len() % "\\u{1b}".len(), 0, "{cut}");
    }

    #[test]
    fn a_bounded_entry_encodes_within_max_entry_bytes() {
        // Worst case: 4-byte characters and characters that escape to many.
        let huge = "𝄞\u{10ffff}\x1b\u{2069}".repeat(1 << 20);
        assert!(huge.len() >= 4 << 20);
        let mut e = AuditEntry::new(EntryKind::AdminAction, Utc::now());
        for field in [
            &mut e.node,
            &mut e.caller_org,
            &mut e.caller_unit,
            &mut e.operator,
            &mut e.matter,
            &mut e.case_number,
            &mut e.evidence_type,
            &mut e.department,
            &mut e.subject,
            &mut e.outcome_reason,
            &mut e.trace_id,
            &mut e.released_fields_hash,
            &mut e.detail,
            &mut e.policy_version,
        ] {
            *field = huge.clone();
        }
        e.bound_and_clean();
        let bytes = e.canonical_bytes(u64::MAX);
        assert!(
            bytes.len() <= MAX_ENTRY_BYTES,
            "{} > {MAX_ENTRY_BYTES}",
            bytes.len()
        );
        const { assert!(MAX_ENTRY_BYTES < 9 * 1024) };
        for (name, value, max) in [
            ("case_number", &e.case_number, MAX_CASE_NUMBER_CHARS),
            ("evidence_type", &e.evidence_type, MAX_CODE_CHARS),
            ("detail", &e.detail, MAX_DETAIL_CHARS),
        ] {
            assert!(value.chars().count() <= max, "{name}");
            assert!(value.contains("bytes]"), "{name}: {value}");
            assert!(!value.chars().any(is_forbidden_char), "{name}");
        }
        // Four-byte characters only: the bound holds too.
        let mut f = AuditEntry::new(EntryKind::Lookup, Utc::now());
        f.detail = "𝄞".repeat(1 << 20);
        f.case_number = f.detail.clone();
        f.bound_and_clean();
        assert!(f.canonical_bytes(0).len() <= MAX_ENTRY_BYTES);
    }

    #[test]
    fn entries_with_a_policy_version_use_encoding_v2_and_old_ones_hash_as_before() {
        let mut e = sample();
        // As stored before encoding v3.
        e.encoding = ENTRY_ENCODING_BY_CONTENT;
        let v1 = e.canonical_bytes(7);
        assert_eq!(v1[0], ENTRY_ENCODING_V1);
        let mut f = e.clone();
        f.policy_version = "ab".repeat(32);
        let v2 = f.canonical_bytes(7);
        assert_eq!(v2[0], ENTRY_ENCODING_V2);
        // v2 is v1's fields followed by the policy version.
        assert_eq!(&v2[1..v1.len()], &v1[1..]);
        assert_eq!(v2.len(), v1.len() + 4 + 64);
        assert_ne!(e.leaf_hash(7), f.leaf_hash(7));
        // The v1 bytes are those of an entry before the field existed.
        let mut legacy = vec![ENTRY_ENCODING_V1];
        put_str(&mut legacy, "n1");
        legacy.extend_from_slice(&7u64.to_be_bytes());
        legacy.extend_from_slice(&e.time.timestamp_micros().to_be_bytes());
        legacy.push(1);
        for s in [
            "11510400MB1234567X",
            "",
            "",
            "unemployment-benefit",
            "",
            "",
            "",
            "",
        ] {
            put_str(&mut legacy, s);
        }
        legacy.extend_from_slice(&0i32.to_be_bytes());
        put_str(&mut legacy, "");
        legacy.extend_from_slice(&0u64.to_be_bytes());
        for _ in 0..3 {
            put_str(&mut legacy, "");
        }
        assert_eq!(v1, legacy);
    }

    #[test]
    fn policy_change_has_its_own_kind_code() {
        let mut e = sample();
        e.kind = EntryKind::PolicyChange;
        assert_eq!(e.canonical_bytes(0)[1 + 4 + 2 + 8 + 8], 5);
        assert_eq!("PolicyChange".parse::<EntryKind>().unwrap(), e.kind);
        assert_eq!(e.kind.as_str(), "PolicyChange");
    }

    #[test]
    fn pseudonyms_are_keyed_and_hide_the_key() {
        let p = SubjectPseudonymizer::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
        let q = SubjectPseudonymizer::from_bytes(&[7u8; 32]).unwrap();
        let id = "51040219800101001x";
        assert_eq!(p.pseudonym(id), p.pseudonym("51040219800101001X"));
        assert_ne!(p.pseudonym(id), q.pseudonym(id));
        assert_eq!(p.pseudonym(id).len(), 64);
        assert!(!p.pseudonym(id).contains("510402"));
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("0001020304"), "{dbg}");
        assert!(dbg.contains("redacted"));
        assert!(SubjectPseudonymizer::from_bytes(b"short").is_err());
        assert!(SubjectPseudonymizer::from_hex("zz").is_err());
    }

    const ID: &str = "510402198001010015";

    #[test]
    fn subject_keys_are_deterministic_per_key_and_differ_between_keys() {
        let p = SubjectPseudonymizer::from_bytes(&[1u8; 32]).unwrap();
        let again = SubjectPseudonymizer::from_bytes(&[1u8; 32]).unwrap();
        let q = SubjectPseudonymizer::from_bytes(&[2u8; 32]).unwrap();
        assert_eq!(p.pseudonym(ID), again.pseudonym(ID));
        assert_eq!(p.vrf_public_key(), again.vrf_public_key());
        assert_ne!(p.pseudonym(ID), q.pseudonym(ID));
        assert_ne!(p.vrf_public_key(), q.vrf_public_key());
        assert_ne!(p.pseudonym(ID), p.pseudonym("51040219800101001X"));
        let hex = p.pseudonym(ID);
        assert_eq!(hex.len(), 64);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(hex, hex::encode(p.subject_key(ID)));
        let proof = p.prove(ID);
        assert_eq!(proof.key, p.subject_key(ID));
        assert_eq!(proof.proof.len(), SUBJECT_PROOF_LEN);
        // Proving is deterministic too (RFC 9381 nonces are derived).
        assert_eq!(proof, again.prove(ID));
    }

    /// Pins the derivation (label, HMAC-SHA512, wide reduction, input form,
    /// first 32 bytes): other implementations, and every node of a
    /// deployment, must get these same bytes from the same pseudonym key.
    #[test]
    fn subject_keys_match_the_pinned_derivation() {
        let p = SubjectPseudonymizer::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
        assert_eq!(hex::encode(p.vrf_public_key()), PINNED_PUBLIC_KEY);
        assert_eq!(p.pseudonym(" 51040219800101001x "), PINNED_SUBJECT);
    }
    const PINNED_PUBLIC_KEY: &str =
        "0a10a6c9acdc179b30c80e8fd3a1c86ccecb0fbf618ecd23387d8224e332424a";
    const PINNED_SUBJECT: &str = "b6e40becd4b0f536672571ff294784cbe8883c0158b35268b0f9b326b12129b4";

    #[test]
    fn a_subject_proof_verifies_for_its_id_only() {
        let p = SubjectPseudonymizer::from_bytes(&[3u8; 32]).unwrap();
        let q = SubjectPseudonymizer::from_bytes(&[4u8; 32]).unwrap();
        let pk = p.vrf_public_key();
        let x_id = "51040219800101001X";
        let proof = p.prove(x_id);
        // The right id, in either spelling of its check character.
        assert_eq!(verify_subject_proof(&pk, x_id, &proof.proof), Ok(proof.key));
        assert_eq!(
            verify_subject_proof(&pk, "51040219800101001x", &proof.proof),
            Ok(proof.key)
        );
        // Another id, another public key.
        assert_eq!(
            verify_subject_proof(&pk, ID, &proof.proof),
            Err(SubjectProofError::Invalid)
        );
        assert_eq!(
            verify_subject_proof(&q.vrf_public_key(), x_id, &proof.proof),
            Err(SubjectProofError::Invalid)
        );
        // q's proof for the same id does not pass under p's key either.
        assert_eq!(
            verify_subject_proof(&pk, x_id, &q.prove(x_id).proof),
            Err(SubjectProofError::Invalid)
        );
        // Any tampered byte: the challenge or the response no longer match,
        // or Gamma or the scalar no longer decode.
        for at in [0, 31, 32, 47, 48, 60] {
            let mut tampered = proof.proof.clone();
            tampered[at] ^= 0x01;
            let got = verify_subject_proof(&pk, x_id, &tampered);
            assert!(
                matches!(
                    got,
                    Err(SubjectProofError::Invalid | SubjectProofError::Malformed)
                ),
                "byte {at}: {got:?}"
            );
        }
        let mut high = proof.proof.clone();
        high[SUBJECT_PROOF_LEN - 1] = 0xff; // a scalar above the group order
        assert_eq!(
            verify_subject_proof(&pk, x_id, &high),
            Err(SubjectProofError::Malformed)
        );
        assert_eq!(
            verify_subject_proof(&pk, x_id, &proof.proof[1..]),
            Err(SubjectProofError::BadLength(SUBJECT_PROOF_LEN - 1))
        );
        // The identity point is no key (RFC 9381 validate_key).
        assert_eq!(
            verify_subject_proof(&[0u8; 32], x_id, &proof.proof),
            Err(SubjectProofError::BadPublicKey)
        );
    }

    #[test]
    fn the_cache_answers_as_the_vrf_does_and_is_shared_by_clones() {
        let p = SubjectPseudonymizer::from_bytes(&[5u8; 32]).unwrap();
        let fresh = SubjectPseudonymizer::from_bytes(&[5u8; 32]).unwrap();
        assert_eq!(p.cache.len(), 0);
        let first = p.pseudonym(ID);
        assert_eq!(p.cache.len(), 1);
        let clone = p.clone();
        // Cached, in the clone too, and equal to a fresh evaluation.
        assert_eq!(clone.pseudonym(ID), first);
        assert_eq!(clone.pseudonym("  510402198001010015"), first);
        assert_eq!(p.cache.len(), 1);
        assert_eq!(fresh.prove(ID).key, p.subject_key(ID));
        assert_eq!(first, hex::encode(fresh.prove(ID).key));
        // The cache never holds the identity number, only its HMAC.
        let alpha = normalise_id(ID);
        assert_eq!(p.cache.get(&p.cache_key(&alpha)), Some(p.subject_key(ID)));
    }

    /// The request path's shortcut (Gamma without a proof) gives what the
    /// crate's prover and verifier give, for many keys and inputs.
    #[test]
    fn the_output_without_a_proof_is_the_provers() {
        for k in 0..4u8 {
            let p = SubjectPseudonymizer::from_bytes(&[k + 10; 32]).unwrap();
            let public = vrf_r255::PublicKey::from_bytes(p.vrf_public_key()).unwrap();
            for i in 0..16u32 {
                let alpha = format!("5104021980010{i:05}");
                let proof = p.vrf.prove(alpha.as_bytes());
                let verified: Option<[u8; 64]> = public.verify(alpha.as_bytes(), &proof).into();
                let fast = vrf_hash(&p.vrf_scalar, &p.vrf_public, alpha.as_bytes());
                assert_eq!(Some(fast), verified, "key {k}, input {i}");
                assert_eq!(first_32(&fast), p.prove(&alpha).key);
            }
        }
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = SubjectKeyCache::new();
        for i in 0..(2 * SUBJECT_KEY_CACHE_CAPACITY) as u32 {
            let mut mac = [0u8; 32];
            mac[..4].copy_from_slice(&i.to_le_bytes());
            cache.insert(mac, [1u8; 32]);
            assert!(cache.len() <= SUBJECT_KEY_CACHE_CAPACITY);
        }
        // The last one inserted is still there; re-inserting a held key on a
        // full shard does not clear it.
        let mut last = [0u8; 32];
        last[..4].copy_from_slice(&(2 * SUBJECT_KEY_CACHE_CAPACITY as u32 - 1).to_le_bytes());
        assert_eq!(cache.get(&last), Some([1u8; 32]));
        let shard_of_last = cache.shard(&last).len();
        cache.insert(last, [2u8; 32]);
        assert_eq!(cache.shard(&last).len(), shard_of_last);
        assert_eq!(cache.get(&last), Some([2u8; 32]));
    }
}
