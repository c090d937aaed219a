//! C2SP tlog-cosignature/v1 (Ed25519): witnesses' keys, the cosignatures
//! they add to a log's checkpoints, and checking a quorum of them.
//!
//! A cosignature is a signed-note signature line whose key id is computed
//! with signature type 0x04 and whose bytes are `key id ‖ u64 BE timestamp ‖
//! Ed25519 signature` over `cosignature/v1\ntime <timestamp>\n` followed by
//! the whole checkpoint body, extension lines included
//! (<https://c2sp.org/tlog-cosignature>).

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::note::{
    NoteError, PRIVATE_KEY_PREFIX, SIG_PREFIX, check_name, key_id_for, key_text, parse_key_text,
    split_note, write_private,
};

/// The signed-note signature type of a cosignature/v1 (Ed25519) key.
const ALG_COSIGNATURE_V1: u8 = 0x04;
/// Domain separation: the first line of every signed message.
const HEADER: &str = "cosignature/v1\n";
/// key id ‖ timestamp ‖ Ed25519 signature.
const SIGNATURE_LEN: usize = 4 + 8 + 64;

/// Errors about witness keys and cosignatures.
#[derive(Debug, thiserror::Error)]
pub enum CosignError {
    #[error(transparent)]
    Key(#[from] NoteError),
    #[error("malformed note: {0}")]
    Malformed(String),
    #[error("cosignature by witness {name}+{key_id} is invalid")]
    BadCosignature { name: String, key_id: String },
    #[error("cosignature timestamp {0} exceeds 2^63 - 1")]
    BadTime(u64),
    #[error("a quorum of {quorum} cannot be met by {keys} configured witness keys")]
    QuorumTooLarge { quorum: usize, keys: usize },
    #[error("{quorum} of {keys} required witness cosignatures, {found}")]
    Quorum {
        quorum: usize,
        keys: usize,
        /// "none valid" or "only witness.a, witness.b valid".
        found: String,
    },
}

/// A witness's Ed25519 cosigning key with its name.
#[derive(Clone)]
pub struct WitnessSigner {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for WitnessSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WitnessSigner")
            .field("name", &self.name)
            .field("verifier", &self.verifier().to_string())
            .finish_non_exhaustive()
    }
}

impl WitnessSigner {
    /// A fresh random key.
    pub fn generate(name: &str) -> Result<Self, CosignError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_string(),
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        })
    }

    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, CosignError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_string(),
            key: SigningKey::from_bytes(seed),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn verifier(&self) -> WitnessKey {
        WitnessKey::new(&self.name, self.key.verifying_key())
    }

    /// `PRIVATE+KEY+<name>+<hex id>+<base64(0x04‖seed)>`.
    pub fn to_note_private_key(&self) -> String {
        let text = key_text(
            &self.name,
            &self.verifier().key_id,
            ALG_COSIGNATURE_V1,
            &self.key.to_bytes(),
        );
        format!("{PRIVATE_KEY_PREFIX}{text}")
    }

    pub fn from_note_private_key(text: &str) -> Result<Self, CosignError> {
        let rest = text
            .trim()
            .strip_prefix(PRIVATE_KEY_PREFIX)
            .ok_or_else(|| NoteError::BadKey("missing PRIVATE+KEY+ prefix".into()))?;
        let (name, id_hex, seed) = parse_key_text(
            rest,
            ALG_COSIGNATURE_V1,
            "a cosignature/v1 (Ed25519) private key",
        )?;
        let signer = Self::from_seed(name, &seed)?;
        if hex::encode(signer.verifier().key_id) != id_hex {
            return Err(NoteError::BadKey("key id does not match key".into()).into());
        }
        Ok(signer)
    }

    /// Loads a private key file written by [`save`](Self::save); its name
    /// must be `name`.
    pub fn load(path: &Path, name: &str) -> Result<Self, CosignError> {
        let text = std::fs::read_to_string(path).map_err(|source| NoteError::KeyFile {
            path: path.display().to_string(),
            source,
        })?;
        let s = Self::from_note_private_key(&text)?;
        if s.name != name {
            return Err(NoteError::BadKey(format!(
                "key file is for {:?}, expected {name:?}",
                s.name
            ))
            .into());
        }
        Ok(s)
    }

    /// Writes the private key to a new file (mode 0600); never overwrites.
    pub fn save(&self, path: &Path) -> Result<(), CosignError> {
        write_private(path, &(self.to_note_private_key() + "\n")).map_err(|source| {
            NoteError::KeyFile {
                path: path.display().to_string(),
                source,
            }
            .into()
        })
    }

    /// The cosignature line (without its newline) over a checkpoint `body`
    /// (ending in a newline, no signature lines) at `time` (POSIX seconds).
    pub fn cosign(&self, body: &str, time: u64) -> Result<String, CosignError> {
        if !body.ends_with('\n') || body.contains("\n\n") {
            return Err(CosignError::Malformed(
                "checkpoint body must end in a newline and contain no blank line".into(),
            ));
        }
        if i64::try_from(time).is_err() {
            return Err(CosignError::BadTime(time));
        }
        let sig: Signature = self.key.sign(signed_message(body, time).as_bytes());
        let mut raw = self.verifier().key_id.to_vec();
        raw.extend_from_slice(&time.to_be_bytes());
        raw.extend_from_slice(&sig.to_bytes());
        Ok(format!("{SIG_PREFIX}{} {}", self.name, B64.encode(raw)))
    }
}

fn signed_message(body: &str, time: u64) -> String {
    format!("{HEADER}time {time}\n{body}")
}

/// A witness's verifier key, `<name>+<hex key id>+<base64(0x04‖public key)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessKey {
    pub name: String,
    pub key_id: [u8; 4],
    pub key: VerifyingKey,
}

impl WitnessKey {
    pub fn new(name: &str, key: VerifyingKey) -> Self {
        Self {
            name: name.to_string(),
            key_id: key_id_for(ALG_COSIGNATURE_V1, name, key.as_bytes()),
            key,
        }
    }

    pub fn parse(text: &str) -> Result<Self, CosignError> {
        let (name, id_hex, pk) = parse_key_text(
            text,
            ALG_COSIGNATURE_V1,
            "a cosignature/v1 verifier key (type 0x04, Ed25519)",
        )?;
        let key = VerifyingKey::from_bytes(&pk).map_err(|e| NoteError::BadKey(e.to_string()))?;
        let k = Self::new(name, key);
        if hex::encode(k.key_id) != id_hex {
            return Err(NoteError::BadKey("key id does not match key".into()).into());
        }
        Ok(k)
    }

    /// Checks one signature (the decoded bytes of a line named like this
    /// key, key id first) over `body`; returns its timestamp.
    fn verify_raw(&self, body: &str, raw: &[u8]) -> Result<u64, CosignError> {
        let bad = || CosignError::BadCosignature {
            name: self.name.clone(),
            key_id: hex::encode(self.key_id),
        };
        if raw.len() != SIGNATURE_LEN {
            return Err(bad());
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[4..12]);
        let time = u64::from_be_bytes(ts);
        if i64::try_from(time).is_err() {
            return Err(bad());
        }
        let sig = Signature::from_slice(&raw[12..]).map_err(|_| bad())?;
        self.key
            .verify_strict(signed_message(body, time).as_bytes(), &sig)
            .map_err(|_| bad())?;
        Ok(time)
    }
}

impl std::fmt::Display for WitnessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&key_text(
            &self.name,
            &self.key_id,
            ALG_COSIGNATURE_V1,
            self.key.as_bytes(),
        ))
    }
}

impl std::str::FromStr for WitnessKey {
    type Err = CosignError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A valid cosignature found on a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosigned {
    pub name: String,
    /// POSIX seconds, as the witness stated it.
    pub time: u64,
}

/// Checks the cosignatures on a signed note against the configured witness
/// `keys` and requires `quorum` distinct keys among them to have cosigned.
///
/// Only lines whose name and key id match a configured key count (several
/// lines by one key count once); lines by other keys, the log's own
/// signature included, are ignored. A line that matches a configured key but
/// does not verify is an error: someone presented a forgery. The log's own
/// signature is NOT checked here (open the note with the log's pinned keys
/// for that). Returns the valid cosignatures, one per key, in `keys` order.
pub fn verify_cosignatures(
    note: &str,
    keys: &[WitnessKey],
    quorum: usize,
) -> Result<Vec<Cosigned>, CosignError> {
    let mut distinct: Vec<&WitnessKey> = Vec::new();
    for k in keys {
        if !distinct.contains(&k) {
            distinct.push(k);
        }
    }
    if quorum > distinct.len() {
        return Err(CosignError::QuorumTooLarge {
            quorum,
            keys: distinct.len(),
        });
    }
    let (body, lines) = split_note(note).map_err(|e| CosignError::Malformed(e.to_string()))?;
    let mut found: Vec<Option<u64>> = vec![None; distinct.len()];
    for line in &lines {
        for (i, k) in distinct.iter().enumerate() {
            if line.name == k.name && line.raw[..4] == k.key_id {
                let time = k.verify_raw(body, &line.raw)?;
                // The first valid line of a key stands; more count nothing.
                found[i].get_or_insert(time);
            }
        }
    }
    let valid: Vec<Cosigned> = distinct
        .iter()
        .zip(&found)
        .filter_map(|(k, t)| {
            t.map(|time| Cosigned {
                name: k.name.clone(),
                time,
            })
        })
        .collect();
    if valid.len() < quorum {
        let found = if valid.is_empty() {
            "none valid".to_string()
        } else {
            let names: Vec<&str> = valid.iter().map(|c| c.name.as_str()).collect();
            format!("only {} valid", names.join(", "))
        };
        return Err(CosignError::Quorum {
            quorum,
            keys: distinct.len(),
            found,
        });
    }
    Ok(valid)
}

/// Whether `note` carries a valid cosignature by `key` (a forged line by it
/// counts as none).
pub fn has_cosignature(note: &str, key: &WitnessKey) -> bool {
    verify_cosignatures(note, std::slice::from_ref(key), 1).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::{Checkpoint, Keyring, LogSigner};
    use chrono::{TimeZone, Utc};
    use sha2::{Digest, Sha256};

    const ORIGIN: &str = "tongban/audit/n1";

    fn signed_checkpoint() -> (LogSigner, String) {
        let log = LogSigner::from_seed(ORIGIN, &[5u8; 32]).unwrap();
        let cp = Checkpoint {
            origin: ORIGIN.into(),
            size: 7,
            root: [3u8; 32],
            time: Utc.timestamp_micros(1_780_000_000_000_000).unwrap(),
            map: None,
            pruned: None,
        };
        let note = cp.sign(&log).unwrap();
        (log, note)
    }

    fn body_of(note: &str) -> &str {
        split_note(note).unwrap().0
    }

    fn witness(name: &str, seed: u8) -> WitnessSigner {
        WitnessSigner::from_seed(name, &[seed; 32]).unwrap()
    }

    fn add(note: &str, line: &str) -> String {
        format!("{note}{line}\n")
    }

    #[test]
    fn key_text_round_trips_with_type_0x04() {
        let w = witness("witness.a", 1);
        let k = w.verifier();
        let text = k.to_string();
        assert_eq!(WitnessKey::parse(&text).unwrap(), k);
        assert_eq!(text.parse::<WitnessKey>().unwrap(), k);
        let mut pre = b"witness.a\n\x04".to_vec();
        pre.extend_from_slice(k.key.as_bytes());
        assert_eq!(k.key_id[..], Sha256::digest(&pre)[..4]);
        // The same key as a log (type 0x01) key is a different key.
        assert!(
            WitnessKey::parse(
                &LogSigner::from_seed("witness.a", &[1u8; 32])
                    .unwrap()
                    .verifier()
                    .to_string()
            )
            .is_err()
        );
        let t = WitnessSigner::from_note_private_key(&w.to_note_private_key()).unwrap();
        assert_eq!(t.verifier(), k);
        assert!(!format!("{w:?}").contains(&B64.encode(w.key.to_bytes())));
    }

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.key");
        let w = WitnessSigner::generate("witness.a").unwrap();
        w.save(&p).unwrap();
        assert!(w.save(&p).is_err(), "never overwrites");
        assert_eq!(
            WitnessSigner::load(&p, "witness.a").unwrap().verifier(),
            w.verifier()
        );
        assert!(WitnessSigner::load(&p, "witness.b").is_err());
    }

    #[test]
    fn cosignature_round_trip_and_layout() {
        let (log, note) = signed_checkpoint();
        let w = witness("witness.a", 1);
        let line = w.cosign(body_of(&note), 1_700_000_000).unwrap();
        let cosigned = add(&note, &line);
        let (_, sigs) = split_note(&cosigned).unwrap();
        let raw = &sigs[1].raw;
        assert_eq!(raw.len(), 76);
        assert_eq!(raw[..4], w.verifier().key_id);
        assert_eq!(raw[4..12], 1_700_000_000u64.to_be_bytes());
        let got = verify_cosignatures(&cosigned, &[w.verifier()], 1).unwrap();
        assert_eq!(
            got,
            vec![Cosigned {
                name: "witness.a".into(),
                time: 1_700_000_000
            }]
        );
        // The log's own signature still opens the cosigned note.
        let ring = Keyring::new().with(log.verifier());
        assert!(Checkpoint::open(&cosigned, &ring, ORIGIN).is_ok());
        // Signed message is exactly header, time line, whole body.
        let msg = format!("cosignature/v1\ntime 1700000000\n{}", body_of(&note));
        let sig = Signature::from_slice(&raw[12..]).unwrap();
        assert!(w.verifier().key.verify_strict(msg.as_bytes(), &sig).is_ok());
    }

    /// The example in C2SP tlog-cosignature.md: the cosignature line's key
    /// id and timestamp decode as the spec describes (the spec does not
    /// publish the witness's public key, so the signature itself cannot be
    /// checked).
    #[test]
    fn spec_example_decodes() {
        let note = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n";
        let (_, sigs) = split_note(note).unwrap();
        assert_eq!(sigs[1].name, "witness.example.com/w1");
        assert_eq!(sigs[1].raw.len(), SIGNATURE_LEN);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&sigs[1].raw[4..12]);
        assert_eq!(u64::from_be_bytes(ts), 1_679_315_147);
        // Unknown witnesses are ignored: no key configured, no quorum asked.
        assert_eq!(verify_cosignatures(note, &[], 0).unwrap(), vec![]);
    }

    #[test]
    fn tampered_body_and_wrong_key_are_rejected() {
        let (_, note) = signed_checkpoint();
        let w = witness("witness.a", 1);
        let line = w.cosign(body_of(&note), 1_700_000_000).unwrap();
        let cosigned = add(&note, &line);
        let tampered = cosigned.replace("\n7\n", "\n8\n");
        assert!(matches!(
            verify_cosignatures(&tampered, &[w.verifier()], 1),
            Err(CosignError::BadCosignature { .. })
        ));
        // Same name, another key: that line is not by the configured key.
        let other = witness("witness.a", 2);
        let e = verify_cosignatures(&cosigned, &[other.verifier()], 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "1 of 1 required witness cosignatures, none valid"
        );
        // A line claiming the configured key id with a bad signature.
        let forged_line = other.cosign(body_of(&note), 5).unwrap();
        let with_forged = add(&note, &forged_line);
        let (_, sigs) = split_note(&with_forged).unwrap();
        let mut raw = sigs[1].raw.clone();
        raw[..4].copy_from_slice(&w.verifier().key_id);
        let forged = add(&note, &format!("{SIG_PREFIX}witness.a {}", B64.encode(raw)));
        assert!(matches!(
            verify_cosignatures(&forged, &[w.verifier()], 0),
            Err(CosignError::BadCosignature { .. })
        ));
        assert!(!has_cosignature(&forged, &w.verifier()));
        assert!(w.cosign("no newline", 1).is_err());
        assert!(w.cosign("a\n", u64::MAX).is_err());
    }

    #[test]
    fn quorum_counts_distinct_valid_keys() {
        let (_, note) = signed_checkpoint();
        let body = body_of(&note).to_string();
        let (a, b, c) = (
            witness("witness.a", 1),
            witness("witness.b", 2),
            witness("witness.c", 3),
        );
        let keys = [a.verifier(), b.verifier(), c.verifier()];
        let la = a.cosign(&body, 10).unwrap();
        // Duplicate lines by the same key count once.
        let la2 = a.cosign(&body, 11).unwrap();
        let only_a = add(&add(&note, &la), &la2);
        let e = verify_cosignatures(&only_a, &keys, 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "2 of 3 required witness cosignatures, only witness.a valid"
        );
        let got = verify_cosignatures(&only_a, &keys, 1).unwrap();
        assert_eq!(
            got,
            vec![Cosigned {
                name: "witness.a".into(),
                time: 10
            }]
        );
        let ab = add(&only_a, &b.cosign(&body, 12).unwrap());
        assert_eq!(verify_cosignatures(&ab, &keys, 2).unwrap().len(), 2);
        // A line by an unknown witness is ignored.
        let stranger = witness("witness.z", 9).cosign(&body, 1).unwrap();
        assert_eq!(
            verify_cosignatures(&add(&ab, &stranger), &keys, 2)
                .unwrap()
                .len(),
            2
        );
        // The log's own signature is not a cosignature, even by name.
        let log_as_witness = WitnessKey::new(
            ORIGIN,
            LogSigner::from_seed(ORIGIN, &[5u8; 32])
                .unwrap()
                .verifier()
                .key,
        );
        assert!(verify_cosignatures(&note, &[log_as_witness], 1).is_err());
        assert!(matches!(
            verify_cosignatures(&ab, &keys, 4),
            Err(CosignError::QuorumTooLarge { quorum: 4, keys: 3 })
        ));
        // Repeated configured keys count once.
        assert!(matches!(
            verify_cosignatures(&ab, &[a.verifier(), a.verifier()], 2),
            Err(CosignError::QuorumTooLarge { .. })
        ));
    }
}
