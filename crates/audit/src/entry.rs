//! The audit entry, its canonical encoding and the subject pseudonymiser.

use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::merkle::{Hash, hash_leaf};

/// Version byte of the canonical entry encoding.
pub const ENTRY_ENCODING_V1: u8 = 1;

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
    /// A policy that took effect (at start-up or on reload).
    PolicyChange,
}

impl EntryKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            EntryKind::Lookup => "Lookup",
            EntryKind::GatherItem => "GatherItem",
            EntryKind::AdminAction => "AdminAction",
            EntryKind::Prune => "Prune",
            EntryKind::PolicyChange => "PolicyChange",
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
    /// Hex HMAC-SHA256 pseudonym of the identity number; empty when none.
    pub subject: String,
    /// gRPC status code, 0 = OK.
    pub outcome_code: i32,
    /// Short machine reason, e.g. "SUBJECT_NOT_FOUND"; empty when OK.
    pub outcome_reason: String,
    pub latency_us: u64,
    pub trace_id: String,
    /// Hex SHA-256 over the released fields, see [`released_fields_hash`].
    pub released_fields_hash: String,
    /// For admin actions: what was done/searched (identity numbers pseudonymised).
    pub detail: String,
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
        }
    }

    /// Canonical, versioned bytes hashed into the log. The position (node,
    /// index) is part of them so a moved or copied row no longer matches.
    pub fn canonical_bytes(&self, index: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.detail.len());
        out.push(ENTRY_ENCODING_V1);
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
        out
    }

    /// RFC 6962 leaf hash of the entry at `index`.
    pub fn leaf_hash(&self, index: u64) -> Hash {
        hash_leaf(&self.canonical_bytes(index))
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

/// Hex SHA-256 over the released fields, sorted by name then value, each
/// name and value length-prefixed. Order of `fields` does not matter.
pub fn released_fields_hash<K: AsRef<str>, V: AsRef<str>>(fields: &[(K, V)]) -> String {
    let mut sorted: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
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

/// Errors building a pseudonymiser.
#[derive(Debug, thiserror::Error)]
pub enum PseudonymKeyError {
    #[error("pseudonym key must be at least 16 bytes, got {0}")]
    TooShort(usize),
    #[error("pseudonym key is not valid hex")]
    BadHex,
}

/// Keyed HMAC-SHA256 pseudonyms for identity numbers, so the log can be
/// searched by person without holding identity numbers in clear.
#[derive(Clone)]
pub struct SubjectPseudonymizer {
    key: Vec<u8>,
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
        Ok(Self { key: key.to_vec() })
    }

    pub fn from_hex(key_hex: &str) -> Result<Self, PseudonymKeyError> {
        let key = hex::decode(key_hex.trim()).map_err(|_| PseudonymKeyError::BadHex)?;
        Self::from_bytes(&key)
    }

    /// Hex HMAC-SHA256 of the identity number. Lower-case `x` is folded to
    /// upper case first so both spellings of one number map to one pseudonym.
    pub fn pseudonym(&self, id_number: &str) -> String {
        let normalised = id_number.trim().to_ascii_uppercase();
        // HMAC accepts keys of any length, so this cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(normalised.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
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

    #[test]
    fn canonical_bytes_are_deterministic_and_position_bound() {
        let e = sample();
        assert_eq!(e.canonical_bytes(3), e.canonical_bytes(3));
        assert_ne!(e.leaf_hash(3), e.leaf_hash(4));
        assert_eq!(e.canonical_bytes(0)[0], ENTRY_ENCODING_V1);
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

    #[test]
    fn released_fields_hash_is_order_independent() {
        let a = released_fields_hash(&[("eligible", "true"), ("months", "14")]);
        let b = released_fields_hash(&[("months", "14"), ("eligible", "true")]);
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        let c = released_fields_hash(&[("months", "15"), ("eligible", "true")]);
        assert_ne!(a, c);
        assert_ne!(released_fields_hash::<&str, &str>(&[]), a);
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
}
