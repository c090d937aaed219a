//! C2SP signed-note and tlog-checkpoint with Ed25519, and key management.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

const ALG_ED25519: u8 = 0x01;
pub(crate) const SIG_PREFIX: &str = "\u{2014} ";
const TIME_EXTENSION: &str = "time ";
const MAP_EXTENSION: &str = "map ";
const VRF_EXTENSION: &str = "vrf ";
const PRUNED_EXTENSION: &str = "pruned ";
pub(crate) const PRIVATE_KEY_PREFIX: &str = "PRIVATE+KEY+";

/// Errors about keys and notes.
#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    #[error("invalid key name {0:?}: must be non-empty, without spaces or '+'")]
    BadKeyName(String),
    #[error("malformed key: {0}")]
    BadKey(String),
    #[error("cannot read or write key file {path}: {source}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed note: {0}")]
    Malformed(String),
    #[error("malformed checkpoint: {0}")]
    BadCheckpoint(String),
    #[error("note is not signed by any pinned key for {name:?} (signatures seen: {seen})")]
    UnknownSigner { name: String, seen: String },
    #[error("signature by pinned key {name}+{key_id} is invalid")]
    BadSignature { name: String, key_id: String },
}

pub(crate) fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(NoteError::BadKeyName(name.to_string()));
    }
    Ok(())
}

/// key id = SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4].
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    key_id_for(ALG_ED25519, name, public_key)
}

/// key id = SHA-256(name ‖ 0x0A ‖ `alg` ‖ public key)[:4], for any signature
/// type (0x04 is a cosignature/v1 key).
pub(crate) fn key_id_for(alg: u8, name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', alg]);
    h.update(public_key);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// The text of a signed-note key, public or private (the latter after
/// `PRIVATE+KEY+`): `<name>+<hex key id>+<base64(alg ‖ 32 key bytes)>`.
pub(crate) fn key_text(name: &str, key_id: &[u8; 4], alg: u8, key: &[u8; 32]) -> String {
    let mut raw = Vec::with_capacity(33);
    raw.push(alg);
    raw.extend_from_slice(key);
    format!("{name}+{}+{}", hex::encode(key_id), B64.encode(raw))
}

/// Parses [`key_text`] of signature type `alg`: the (checked) name, the hex
/// key id as written (the caller checks it against the key) and the 32 key
/// bytes. `what` names the kind of key in the error ("an Ed25519 verifier
/// key").
pub(crate) fn parse_key_text<'a>(
    text: &'a str,
    alg: u8,
    what: &str,
) -> Result<(&'a str, &'a str, [u8; 32]), NoteError> {
    // Names never contain '+', base64 may: split from the left.
    let mut parts = text.trim().splitn(3, '+');
    let (Some(name), Some(id_hex), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::BadKey("expected name+id+key".into()));
    };
    check_name(name)?;
    let raw = B64
        .decode(b64)
        .map_err(|_| NoteError::BadKey("key is not base64".into()))?;
    if raw.len() != 33 || raw[0] != alg {
        return Err(NoteError::BadKey(format!("not {what}")));
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&raw[1..]);
    Ok((name, id_hex, key))
}

/// One signature line of a note: the key name and the decoded bytes
/// (key id first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignatureLine<'a> {
    pub name: &'a str,
    pub raw: Vec<u8>,
}

/// Splits a signed note into its body (with the final newline) and its
/// signature lines, strictly: every line after the blank one must be a
/// signature line.
pub(crate) fn split_note(note: &str) -> Result<(&str, Vec<SignatureLine<'_>>), NoteError> {
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| NoteError::Malformed("no blank line before signatures".into()))?;
    let body = &note[..split + 1];
    let mut sigs = Vec::new();
    for line in note[split + 2..].lines() {
        let rest = line
            .strip_prefix(SIG_PREFIX)
            .ok_or_else(|| NoteError::Malformed(format!("bad signature line {line:?}")))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| NoteError::Malformed(format!("bad signature line {line:?}")))?;
        let raw = B64
            .decode(b64)
            .map_err(|_| NoteError::Malformed("signature is not base64".into()))?;
        if raw.len() < 5 {
            return Err(NoteError::Malformed("signature too short".into()));
        }
        sigs.push(SignatureLine { name, raw });
    }
    Ok((body, sigs))
}

/// A log's Ed25519 signing key with its signed-note key name.
#[derive(Clone)]
pub struct LogSigner {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for LogSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSigner")
            .field("name", &self.name)
            .field("verifier", &self.verifier().to_string())
            .finish_non_exhaustive()
    }
}

impl LogSigner {
    /// A fresh random key.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        check_name(name)?;
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        Ok(Self {
            name: name.to_string(),
            key,
        })
    }

    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_string(),
            key: SigningKey::from_bytes(seed),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn verifier(&self) -> VerifierKey {
        VerifierKey::new(&self.name, self.key.verifying_key())
    }

    /// signed-note private key text: `PRIVATE+KEY+<name>+<hex id>+<base64(0x01‖seed)>`.
    pub fn to_note_private_key(&self) -> String {
        let id = key_id(&self.name, self.key.verifying_key().as_bytes());
        let text = key_text(&self.name, &id, ALG_ED25519, &self.key.to_bytes());
        format!("{PRIVATE_KEY_PREFIX}{text}")
    }

    pub fn from_note_private_key(text: &str) -> Result<Self, NoteError> {
        let rest = text
            .trim()
            .strip_prefix(PRIVATE_KEY_PREFIX)
            .ok_or_else(|| NoteError::BadKey("missing PRIVATE+KEY+ prefix".into()))?;
        let (name, id_hex, seed) = parse_key_text(rest, ALG_ED25519, "an Ed25519 private key")?;
        let signer = Self::from_seed(name, &seed)?;
        if hex::encode(key_id(name, signer.key.verifying_key().as_bytes())) != id_hex {
            return Err(NoteError::BadKey("key id does not match key".into()));
        }
        Ok(signer)
    }

    /// PKCS#8 PEM of the key (the name is not part of PEM).
    pub fn to_pkcs8_pem(&self) -> Result<String, NoteError> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|z| z.to_string())
            .map_err(|e| NoteError::BadKey(e.to_string()))
    }

    pub fn from_pkcs8_pem(name: &str, pem: &str) -> Result<Self, NoteError> {
        check_name(name)?;
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| NoteError::BadKey(e.to_string()))?;
        Ok(Self {
            name: name.to_string(),
            key,
        })
    }

    /// Loads a key file: signed-note private key text, or PKCS#8 PEM named `name`.
    pub fn load(path: &Path, name: &str) -> Result<Self, NoteError> {
        let text = std::fs::read_to_string(path).map_err(|source| NoteError::KeyFile {
            path: path.display().to_string(),
            source,
        })?;
        if text.trim_start().starts_with(PRIVATE_KEY_PREFIX) {
            let s = Self::from_note_private_key(&text)?;
            if s.name != name {
                return Err(NoteError::BadKey(format!(
                    "key file is for {:?}, expected {name:?}",
                    s.name
                )));
            }
            Ok(s)
        } else {
            Self::from_pkcs8_pem(name, &text)
        }
    }

    /// Loads `path`, or generates a key and writes it there (mode 0600) if absent.
    pub fn load_or_generate(path: &Path, name: &str) -> Result<Self, NoteError> {
        if path.exists() {
            return Self::load(path, name);
        }
        let s = Self::generate(name)?;
        write_private(path, &(s.to_note_private_key() + "\n")).map_err(|source| {
            NoteError::KeyFile {
                path: path.display().to_string(),
                source,
            }
        })?;
        Ok(s)
    }

    /// Signs `body` (which must end in '\n') as a signed note.
    pub fn sign_note(&self, body: &str) -> Result<String, NoteError> {
        if !body.ends_with('\n') || body.contains("\n\n") {
            return Err(NoteError::Malformed(
                "note body must end in a newline and contain no blank line".into(),
            ));
        }
        let sig: Signature = self.key.sign(body.as_bytes());
        let mut raw = key_id(&self.name, self.key.verifying_key().as_bytes()).to_vec();
        raw.extend_from_slice(&sig.to_bytes());
        Ok(format!(
            "{body}\n{SIG_PREFIX}{} {}\n",
            self.name,
            B64.encode(raw)
        ))
    }
}

pub(crate) fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

/// A verifier key, `<name>+<hex key id>+<base64(0x01‖public key)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    pub key_id: [u8; 4],
    pub key: VerifyingKey,
}

impl VerifierKey {
    pub fn new(name: &str, key: VerifyingKey) -> Self {
        Self {
            name: name.to_string(),
            key_id: key_id(name, key.as_bytes()),
            key,
        }
    }

    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let (name, id_hex, pk) = parse_key_text(text, ALG_ED25519, "an Ed25519 verifier key")?;
        let key = VerifyingKey::from_bytes(&pk).map_err(|e| NoteError::BadKey(e.to_string()))?;
        let v = Self::new(name, key);
        if hex::encode(v.key_id) != id_hex {
            return Err(NoteError::BadKey("key id does not match key".into()));
        }
        Ok(v)
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&key_text(
            &self.name,
            &self.key_id,
            ALG_ED25519,
            self.key.as_bytes(),
        ))
    }
}

/// Pinned verifier keys, supplied by the caller (never read from the audit store).
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<VerifierKey>,
}

impl Keyring {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn add(&mut self, key: VerifierKey) {
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
    }
    pub fn with(mut self, key: VerifierKey) -> Self {
        self.add(key);
        self
    }
    /// One verifier key per line; blank lines and `#` comments ignored.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let mut k = Self::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            k.add(VerifierKey::parse(line)?);
        }
        Ok(k)
    }
    pub fn keys(&self) -> &[VerifierKey] {
        &self.keys
    }
    fn find(&self, name: &str, id: &[u8; 4]) -> Option<&VerifierKey> {
        self.keys.iter().find(|k| k.name == name && &k.key_id == id)
    }

    /// Verifies a signed note; returns its body. Requires a valid signature by
    /// a pinned key named `expected_name`; any invalid pinned signature rejects.
    pub fn open_note<'a>(&self, note: &'a str, expected_name: &str) -> Result<&'a str, NoteError> {
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| NoteError::Malformed("no blank line before signatures".into()))?;
        let body = &note[..split + 1];
        let sigs = &note[split + 2..];
        let mut verified = false;
        let mut seen = Vec::new();
        for line in sigs.lines() {
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or_else(|| NoteError::Malformed(format!("bad signature line {line:?}")))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or_else(|| NoteError::Malformed(format!("bad signature line {line:?}")))?;
            let raw = B64
                .decode(b64)
                .map_err(|_| NoteError::Malformed("signature is not base64".into()))?;
            if raw.len() < 5 {
                return Err(NoteError::Malformed("signature too short".into()));
            }
            let id = [raw[0], raw[1], raw[2], raw[3]];
            seen.push(format!("{name}+{}", hex::encode(id)));
            if name != expected_name {
                continue;
            }
            let Some(k) = self.find(name, &id) else {
                continue;
            };
            let sig = Signature::from_slice(&raw[4..]).map_err(|_| NoteError::BadSignature {
                name: name.to_string(),
                key_id: hex::encode(id),
            })?;
            k.key
                .verify_strict(body.as_bytes(), &sig)
                .map_err(|_| NoteError::BadSignature {
                    name: name.to_string(),
                    key_id: hex::encode(id),
                })?;
            verified = true;
        }
        if !verified {
            return Err(NoteError::UnknownSigner {
                name: expected_name.to_string(),
                seen: if seen.is_empty() {
                    "none".into()
                } else {
                    seen.join(", ")
                },
            });
        }
        Ok(body)
    }
}

/// A tlog-checkpoint body: origin, size, root, and extension lines: `time`,
/// and, on logs that citizens can check, `map` (the subject map's root),
/// `vrf` (the public key subject keys are proven under) and `pruned` (the
/// first retained index and the retention cutoff, once entries were pruned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub time: DateTime<Utc>,
    pub map: Option<MapCommitment>,
    pub pruned: Option<PrunedBoundary>,
}

/// What a checkpoint commits to about the subject map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapCommitment {
    /// Root of the map over every entry below the checkpoint's size.
    pub root: Hash,
    /// The VRF-r255 public key of the deployment's subject keys.
    pub vrf_key: [u8; 32],
}

/// Entries below `before` were removed under the retention rule; they were
/// older than `cutoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrunedBoundary {
    pub before: u64,
    pub cutoff: DateTime<Utc>,
}

/// The origin (and key name) of a node's log.
pub fn origin_for_node(node: &str) -> String {
    format!("tongban/audit/{node}")
}

impl Checkpoint {
    pub fn body(&self) -> String {
        let mut body = format!(
            "{}\n{}\n{}\n{TIME_EXTENSION}{}\n",
            self.origin,
            self.size,
            B64.encode(self.root),
            self.time.to_rfc3339_opts(SecondsFormat::Micros, true)
        );
        if let Some(map) = &self.map {
            body.push_str(&format!(
                "{MAP_EXTENSION}{}\n{VRF_EXTENSION}{}\n",
                B64.encode(map.root),
                B64.encode(map.vrf_key)
            ));
        }
        if let Some(pruned) = &self.pruned {
            body.push_str(&format!(
                "{PRUNED_EXTENSION}{} {}\n",
                pruned.before,
                pruned.cutoff.to_rfc3339_opts(SecondsFormat::Micros, true)
            ));
        }
        body
    }

    pub fn parse_body(body: &str) -> Result<Self, NoteError> {
        let mut lines = body.lines();
        let bad = |m: &str| NoteError::BadCheckpoint(m.to_string());
        let origin = lines
            .next()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("no origin"))?;
        let size: u64 = lines
            .next()
            .and_then(|s| {
                if s.len() > 1 && s.starts_with('0') {
                    None
                } else {
                    s.parse().ok()
                }
            })
            .ok_or_else(|| bad("bad tree size"))?;
        let root_raw = lines
            .next()
            .and_then(|s| B64.decode(s).ok())
            .ok_or_else(|| bad("root is not base64"))?;
        let root: Hash = root_raw
            .try_into()
            .map_err(|_| bad("root is not 32 bytes"))?;
        let extensions: Vec<&str> = lines.collect();
        // Each known extension at most once: two `map` lines would let a
        // reader pick the one that suits it.
        let only = |prefix: &str| -> Result<Option<&str>, NoteError> {
            let mut found = extensions.iter().filter_map(|l| l.strip_prefix(prefix));
            let first = found.next();
            if found.next().is_some() {
                return Err(NoteError::BadCheckpoint(format!(
                    "more than one {:?} line",
                    prefix.trim_end()
                )));
            }
            Ok(first)
        };
        let parse_time = |t: &str| {
            DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        };
        let hash32 = |t: &str, what: &str| -> Result<[u8; 32], NoteError> {
            B64.decode(t)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| {
                    NoteError::BadCheckpoint(format!("{what} is not 32 bytes of base64"))
                })
        };
        let time = only(TIME_EXTENSION)?
            .and_then(parse_time)
            .ok_or_else(|| bad("no time extension line"))?;
        let map = match (only(MAP_EXTENSION)?, only(VRF_EXTENSION)?) {
            (None, None) => None,
            (Some(root), Some(vrf)) => Some(MapCommitment {
                root: hash32(root, "map root")?,
                vrf_key: hash32(vrf, "vrf key")?,
            }),
            _ => return Err(bad("a map line needs a vrf line and the other way round")),
        };
        let pruned = match only(PRUNED_EXTENSION)? {
            None => None,
            Some(text) => {
                let (before, cutoff) = text
                    .split_once(' ')
                    .ok_or_else(|| bad("pruned line is not \"pruned <index> <time>\""))?;
                Some(PrunedBoundary {
                    before: before
                        .parse()
                        .map_err(|_| bad("pruned index is not a number"))?,
                    cutoff: parse_time(cutoff).ok_or_else(|| bad("pruned cutoff is not a time"))?,
                })
            }
        };
        Ok(Self {
            origin: origin.to_string(),
            size,
            root,
            time,
            map,
            pruned,
        })
    }

    /// Signs this checkpoint; the signer's key name must equal the origin.
    pub fn sign(&self, signer: &LogSigner) -> Result<String, NoteError> {
        if signer.name() != self.origin {
            return Err(NoteError::BadKeyName(format!(
                "signer {:?} cannot sign origin {:?}",
                signer.name(),
                self.origin
            )));
        }
        signer.sign_note(&self.body())
    }

    /// Verifies a signed checkpoint against the keyring; origin must be `origin`.
    pub fn open(note: &str, keyring: &Keyring, origin: &str) -> Result<Self, NoteError> {
        let body = keyring.open_note(note, origin)?;
        let cp = Self::parse_body(body)?;
        if cp.origin != origin {
            return Err(NoteError::BadCheckpoint(format!(
                "origin {:?} is not {origin:?}",
                cp.origin
            )));
        }
        Ok(cp)
    }

    /// Origin of an unverified note (to pick the node before verifying).
    pub fn peek_origin(note: &str) -> Option<&str> {
        note.lines().next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn key_id_and_vkey_round_trip() {
        let s = LogSigner::from_seed("tongban/audit/n1", &[3u8; 32]).unwrap();
        let v = s.verifier();
        let text = v.to_string();
        assert!(text.starts_with("tongban/audit/n1+"));
        assert_eq!(VerifierKey::parse(&text).unwrap(), v);
        let pk = s.key.verifying_key();
        let mut pre = b"tongban/audit/n1\n\x01".to_vec();
        pre.extend_from_slice(pk.as_bytes());
        assert_eq!(v.key_id[..], Sha256::digest(&pre)[..4]);
        // A tampered id is rejected.
        let mut parts: Vec<&str> = text.split('+').collect();
        parts[1] = "00000000";
        assert!(VerifierKey::parse(&parts.join("+")).is_err());
    }

    #[test]
    fn go_sumdb_known_verifier_key_parses() {
        // The Go sumdb/note documentation example verifier key.
        let v = VerifierKey::parse(
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        )
        .unwrap();
        assert_eq!(v.name, "PeterNeumann");
        assert_eq!(hex::encode(v.key_id), "c74f20a3");
    }

    #[test]
    fn private_key_formats_round_trip() {
        let s = LogSigner::generate("tongban/audit/n2").unwrap();
        let t = LogSigner::from_note_private_key(&s.to_note_private_key()).unwrap();
        assert_eq!(t.verifier(), s.verifier());
        let pem = s.to_pkcs8_pem().unwrap();
        let u = LogSigner::from_pkcs8_pem("tongban/audit/n2", &pem).unwrap();
        assert_eq!(u.verifier(), s.verifier());
        let dbg = format!("{s:?}");
        assert!(!dbg.contains(&B64.encode(s.key.to_bytes())));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let a = LogSigner::load_or_generate(&p, "tongban/audit/n2").unwrap();
        let b = LogSigner::load_or_generate(&p, "tongban/audit/n2").unwrap();
        assert_eq!(a.verifier(), b.verifier());
        assert!(LogSigner::load(&p, "tongban/audit/other").is_err());
        let pem_path = dir.path().join("k.pem");
        std::fs::write(&pem_path, &pem).unwrap();
        assert_eq!(
            LogSigner::load(&pem_path, "tongban/audit/n2")
                .unwrap()
                .verifier(),
            s.verifier()
        );
    }

    #[test]
    fn checkpoint_sign_open_and_reject() {
        let s = LogSigner::from_seed("tongban/audit/n1", &[9u8; 32]).unwrap();
        let cp = Checkpoint {
            origin: "tongban/audit/n1".into(),
            size: 42,
            root: [7u8; 32],
            time: Utc.timestamp_micros(1_780_000_000_000_001).unwrap(),
            map: None,
            pruned: None,
        };
        let note = cp.sign(&s).unwrap();
        let lines: Vec<&str> = note.lines().collect();
        assert_eq!(lines[0], "tongban/audit/n1");
        assert_eq!(lines[1], "42");
        assert_eq!(lines[2], B64.encode([7u8; 32]));
        assert!(lines[3].starts_with("time "));
        assert_eq!(lines[4], "");
        assert!(lines[5].starts_with("\u{2014} tongban/audit/n1 "));
        let ring = Keyring::new().with(s.verifier());
        assert_eq!(
            Checkpoint::open(&note, &ring, "tongban/audit/n1").unwrap(),
            cp
        );
        // Altered body.
        let forged = note.replace("\n42\n", "\n43\n");
        assert!(matches!(
            Checkpoint::open(&forged, &ring, "tongban/audit/n1"),
            Err(NoteError::BadSignature { .. })
        ));
        // Signed by another key with the same name.
        let other = LogSigner::from_seed("tongban/audit/n1", &[1u8; 32]).unwrap();
        let note2 = cp.sign(&other).unwrap();
        assert!(matches!(
            Checkpoint::open(&note2, &ring, "tongban/audit/n1"),
            Err(NoteError::UnknownSigner { .. })
        ));
        // Wrong origin.
        assert!(Checkpoint::open(&note, &ring, "tongban/audit/n9").is_err());
        assert!(LogSigner::generate("bad name").is_err());
    }
}
