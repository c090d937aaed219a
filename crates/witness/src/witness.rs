//! The witness's decision on one `add-checkpoint` request, over its state
//! and the log keys it trusts, following C2SP tlog-witness:
//!
//! 1. parse strictly (400; 413 when too large);
//! 2. the origin must be a configured log (404) and a configured key of it
//!    must have signed the note (403);
//! 3. `old` may not exceed the checkpoint's size (400);
//! 4. a checkpoint at the size this witness last cosigned must be that
//!    very checkpoint, byte for byte, or it is a **split view**: evidence
//!    is written, the event logged at ERROR and counted, and the request
//!    refused with 409 — the spec's answer when sizes match and roots do
//!    not. This witness compares the whole body, extension lines included:
//!    tongban's logs sign one checkpoint per size, so two bodies for one
//!    size mean the log equivocated even when the roots agree (an
//!    additional statement this witness makes, which the spec allows);
//! 5. `old` must be the size it last cosigned (0 for a new log), else 409
//!    with that size (`text/x.tlog.size`);
//! 6. the consistency proof from (old size, old root) must verify (422);
//! 7. cosign the whole body, persist, answer.
//!
//! Steps 4-7 hold the origin's lock, so two requests can never both
//! advance (or roll back) one log.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use tongban_audit::merkle::verify_consistency;
use tongban_audit::note::NoteError;
use tongban_audit::{CosignError, Keyring, VerifierKey, WitnessKey, WitnessSigner};

use crate::request::{AddCheckpoint, CheckpointHead};
use crate::state::{Latest, StateError, WitnessState};

/// Why a checkpoint was not cosigned; each maps to the spec's HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request larger than the witness accepts")]
    TooLarge,
    #[error("unknown log {0:?}")]
    UnknownLog(String),
    #[error("checkpoint is not signed by a trusted key of its log: {0}")]
    BadLogSignature(String),
    #[error("old size {old} is larger than the checkpoint size {size}")]
    OldAboveSize { old: u64, size: u64 },
    #[error(
        "old size does not match: the latest checkpoint cosigned for this log has size {latest}"
    )]
    Conflict { latest: u64 },
    #[error(
        "split view of log {origin:?} at size {size}: a different checkpoint of that size was cosigned before"
    )]
    SplitView {
        origin: String,
        size: u64,
        /// Where the evidence was written (`None` if writing it failed).
        evidence: Option<PathBuf>,
    },
    #[error("consistency proof from size {old} to {size} does not verify")]
    Inconsistent { old: u64, size: u64 },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot cosign: {0}")]
    Cosign(#[from] CosignError),
}

impl WitnessError {
    /// The HTTP status the spec gives this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Self::Malformed(_) | Self::OldAboveSize { .. } => 400,
            Self::TooLarge => 413,
            Self::UnknownLog(_) => 404,
            Self::BadLogSignature(_) => 403,
            Self::Conflict { .. } | Self::SplitView { .. } => 409,
            Self::Inconsistent { .. } => 422,
            Self::State(_) | Self::Cosign(_) => 500,
        }
    }
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WitnessStats {
    pub cosigned: u64,
    pub split_views: u64,
    pub inconsistent: u64,
    pub refused: u64,
}

#[derive(Debug)]
struct Log {
    keyring: Keyring,
    latest: Mutex<Option<Latest>>,
}

/// A witness: its key, the logs it follows and what it cosigned.
pub struct Witness {
    signer: WitnessSigner,
    logs: HashMap<String, Log>,
    state: WitnessState,
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
    cosigned: AtomicU64,
    split_views: AtomicU64,
    inconsistent: AtomicU64,
    refused: AtomicU64,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness")
            .field("signer", &self.signer)
            .field("logs", &self.logs.keys().collect::<Vec<_>>())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn system_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock(m: &Mutex<Option<Latest>>) -> MutexGuard<'_, Option<Latest>> {
    // The guarded value is replaced only after the state file is written,
    // so a panic elsewhere never leaves it half-updated: keep using it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Witness {
    /// A witness for the logs of `log_keys` (each key's name is its log's
    /// origin), with its state in `state`. Stored checkpoints are verified
    /// again with the log keys; state for logs no longer configured is
    /// left alone.
    pub fn open(
        signer: WitnessSigner,
        log_keys: &[VerifierKey],
        state: WitnessState,
    ) -> Result<Self, WitnessError> {
        let mut logs: HashMap<String, Log> = HashMap::new();
        for k in log_keys {
            logs.entry(k.name.clone())
                .or_insert_with(|| Log {
                    keyring: Keyring::new(),
                    latest: Mutex::new(None),
                })
                .keyring
                .add(k.clone());
        }
        for (origin, latest) in state.load_all()? {
            let Some(log) = logs.get_mut(&origin) else {
                tracing::warn!(origin = %origin, "witness state holds a log that is not configured; ignored");
                continue;
            };
            log.keyring
                .open_note(&latest.note, &origin)
                .map_err(|e| StateError::Corrupt {
                    path: state.dir().display().to_string(),
                    detail: format!("stored checkpoint of {origin:?} does not verify: {e}"),
                })?;
            *log.latest
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(latest);
        }
        Ok(Self {
            signer,
            logs,
            state,
            clock: Box::new(system_time),
            cosigned: AtomicU64::new(0),
            split_views: AtomicU64::new(0),
            inconsistent: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Replaces the clock (POSIX seconds) cosignatures are stamped with.
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    pub fn name(&self) -> &str {
        self.signer.name()
    }

    pub fn key(&self) -> WitnessKey {
        self.signer.verifier()
    }

    pub fn stats(&self) -> WitnessStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WitnessStats {
            cosigned: g(&self.cosigned),
            split_views: g(&self.split_views),
            inconsistent: g(&self.inconsistent),
            refused: g(&self.refused),
        }
    }

    /// The configured logs with the size last cosigned (0: none yet), by
    /// origin.
    pub fn sizes(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .logs
            .iter()
            .map(|(o, l)| (o.clone(), lock(&l.latest).as_ref().map_or(0, |l| l.size)))
            .collect();
        v.sort();
        v
    }

    /// Handles one `add-checkpoint` request body; returns the cosignature
    /// line(s), each ending in a newline.
    pub fn add_checkpoint(&self, text: &str) -> Result<String, WitnessError> {
        let result = self.add_checkpoint_inner(text);
        if result.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn add_checkpoint_inner(&self, text: &str) -> Result<String, WitnessError> {
        let req = AddCheckpoint::parse(text)?;
        let origin = req.note.lines().next().unwrap_or_default();
        let log = self
            .logs
            .get(origin)
            .ok_or_else(|| WitnessError::UnknownLog(origin.to_string()))?;
        let body = log
            .keyring
            .open_note(req.note, origin)
            .map_err(|e| match e {
                NoteError::Malformed(m) => WitnessError::Malformed(m),
                other => WitnessError::BadLogSignature(other.to_string()),
            })?;
        let head = CheckpointHead::parse(body)?;
        if req.old > head.size {
            return Err(WitnessError::OldAboveSize {
                old: req.old,
                size: head.size,
            });
        }

        let mut latest = lock(&log.latest);
        if let Some(seen) = latest.as_ref()
            && seen.size == head.size
            && seen.body != body
        {
            return Err(self.split_view(seen, req.note));
        }
        let current = latest.as_ref().map_or(0, |l| l.size);
        if req.old != current {
            return Err(WitnessError::Conflict { latest: current });
        }
        match latest.as_ref() {
            Some(seen) if req.old > 0 => {
                if verify_consistency(req.old, head.size, &seen.root, &head.root, &req.proof)
                    .is_err()
                {
                    self.inconsistent.fetch_add(1, Ordering::Relaxed);
                    // Signed by the log and not consistent with what we
                    // cosigned: possibly a fork; worth an operator's look.
                    tracing::warn!(
                        origin = %head.origin,
                        old = req.old,
                        size = head.size,
                        "witness refused a checkpoint whose consistency proof does not verify"
                    );
                    return Err(WitnessError::Inconsistent {
                        old: req.old,
                        size: head.size,
                    });
                }
            }
            _ => {
                if !req.proof.is_empty() {
                    return Err(WitnessError::Malformed(
                        "a proof from size 0 must be empty".into(),
                    ));
                }
            }
        }
        let line = self.signer.cosign(body, (self.clock)())?;
        let advanced = latest.as_ref().is_none_or(|l| l.size != head.size);
        if advanced {
            let new = Latest {
                origin: head.origin,
                size: head.size,
                root: head.root,
                body: body.to_string(),
                note: req.note.to_string(),
            };
            // Persisted before answering, under the lock (the spec's race).
            self.state.save(&new)?;
            *latest = Some(new);
        }
        self.cosigned.fetch_add(1, Ordering::Relaxed);
        Ok(format!("{line}\n"))
    }

    fn split_view(&self, seen: &Latest, offered: &str) -> WitnessError {
        self.split_views.fetch_add(1, Ordering::Relaxed);
        let evidence = match self
            .state
            .save_evidence(&seen.origin, seen.size, &seen.note, offered)
        {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!(origin = %seen.origin, error = %e, "cannot write split-view evidence");
                None
            }
        };
        // Origins, sizes and file names only: checkpoints hold no personal data.
        tracing::error!(
            origin = %seen.origin,
            size = seen.size,
            evidence = %evidence.as_ref().map_or_else(|| "-".to_string(), |p| p.display().to_string()),
            "SPLIT VIEW: the log signed two different checkpoints of one size"
        );
        WitnessError::SplitView {
            origin: seen.origin.clone(),
            size: seen.size,
            evidence,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use tongban_audit::merkle::MemoryTree;
    use tongban_audit::{Checkpoint, LogSigner, verify_cosignatures};

    pub const ORIGIN: &str = "tongban/audit/n1";

    pub fn log_signer() -> LogSigner {
        LogSigner::from_seed(ORIGIN, &[7u8; 32]).unwrap()
    }

    /// A log of `n` leaves and its signed checkpoint.
    pub fn tree(n: u64) -> MemoryTree {
        let mut t = MemoryTree::new();
        for i in 0..n {
            t.push_data(format!("entry {i}").as_bytes());
        }
        t
    }

    pub fn checkpoint(t: &MemoryTree, size: u64, signer: &LogSigner) -> String {
        Checkpoint {
            origin: signer.name().to_string(),
            size,
            root: t.root(size),
            time: Utc
                .timestamp_micros(1_780_000_000_000_000 + size as i64)
                .unwrap(),
            map: None,
            pruned: None,
        }
        .sign(signer)
        .unwrap()
    }

    pub fn request(t: &MemoryTree, old: u64, size: u64, note: &str) -> String {
        let proof = if old == 0 || old == size {
            vec![]
        } else {
            t.consistency_proof(old, size).unwrap()
        };
        AddCheckpoint::encode(old, &proof, note)
    }

    fn witness(dir: &std::path::Path) -> Witness {
        let signer = WitnessSigner::from_seed("witness.a", &[1u8; 32]).unwrap();
        Witness::open(
            signer,
            &[log_signer().verifier()],
            WitnessState::open(dir).unwrap(),
        )
        .unwrap()
        .with_clock(|| 1_700_000_000)
    }

    fn body(note: &str) -> String {
        note.split_once("\n\n").unwrap().0.to_string() + "\n"
    }

    #[test]
    fn first_checkpoint_then_consistent_extension() {
        let dir = tempfile::tempdir().unwrap();
        let w = witness(dir.path());
        let t = tree(20);
        let s = log_signer();
        let n5 = checkpoint(&t, 5, &s);
        let lines = w.add_checkpoint(&request(&t, 0, 5, &n5)).unwrap();
        assert!(lines.ends_with('\n') && lines.starts_with("\u{2014} witness.a "));
        let cosigned = format!("{n5}{lines}");
        assert_eq!(
            verify_cosignatures(&cosigned, &[w.key()], 1).unwrap()[0].time,
            1_700_000_000
        );
        let n13 = checkpoint(&t, 13, &s);
        w.add_checkpoint(&request(&t, 5, 13, &n13)).unwrap();
        // The same checkpoint again is cosigned again.
        w.add_checkpoint(&request(&t, 13, 13, &n13)).unwrap();
        assert_eq!(w.sizes(), vec![(ORIGIN.to_string(), 13)]);
        assert_eq!(w.stats().cosigned, 3);
        // Restart: the state is loaded.
        drop(w);
        let w = witness(dir.path());
        assert_eq!(w.sizes(), vec![(ORIGIN.to_string(), 13)]);
        let n20 = checkpoint(&t, 20, &s);
        assert!(matches!(
            w.add_checkpoint(&request(&t, 0, 20, &n20)),
            Err(WitnessError::Conflict { latest: 13 })
        ));
        w.add_checkpoint(&request(&t, 13, 20, &n20)).unwrap();
    }

    #[test]
    fn inconsistent_proof_is_422() {
        let dir = tempfile::tempdir().unwrap();
        let w = witness(dir.path());
        let t = tree(20);
        let s = log_signer();
        w.add_checkpoint(&request(&t, 0, 5, &checkpoint(&t, 5, &s)))
            .unwrap();
        // A different history of 12 leaves, signed by the log.
        let mut fork = tree(4);
        for i in 4..12 {
            fork.push_data(format!("forked {i}").as_bytes());
        }
        let e = w
            .add_checkpoint(&request(&fork, 5, 12, &checkpoint(&fork, 12, &s)))
            .unwrap_err();
        assert!(
            matches!(e, WitnessError::Inconsistent { old: 5, size: 12 }),
            "{e}"
        );
        assert_eq!(e.status(), 422);
        // A proof of the right shape for the wrong sizes fails too.
        let n12 = checkpoint(&t, 12, &s);
        let wrong = AddCheckpoint::encode(5, &t.consistency_proof(6, 12).unwrap(), &n12);
        assert_eq!(w.add_checkpoint(&wrong).unwrap_err().status(), 422);
        assert_eq!(w.stats().inconsistent, 2);
        assert_eq!(w.sizes()[0].1, 5);
    }

    #[test]
    fn wrong_old_is_409_with_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let w = witness(dir.path());
        let t = tree(20);
        let s = log_signer();
        let n8 = checkpoint(&t, 8, &s);
        let e = w.add_checkpoint(&request(&t, 3, 8, &n8)).unwrap_err();
        assert!(matches!(e, WitnessError::Conflict { latest: 0 }));
        assert_eq!(e.status(), 409);
        w.add_checkpoint(&request(&t, 0, 8, &n8)).unwrap();
        let n9 = checkpoint(&t, 9, &s);
        assert!(matches!(
            w.add_checkpoint(&request(&t, 4, 9, &n9)),
            Err(WitnessError::Conflict { latest: 8 })
        ));
        // An older checkpoint (rolling back) is a conflict too.
        let n4 = checkpoint(&t, 4, &s);
        assert!(matches!(
            w.add_checkpoint(&request(&t, 4, 4, &n4)),
            Err(WitnessError::Conflict { latest: 8 })
        ));
        // old above the size is malformed.
        assert_eq!(
            w.add_checkpoint(&AddCheckpoint::encode(9, &[], &n8))
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn split_view_is_detected_recorded_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let w = witness(dir.path());
        let t = tree(10);
        let s = log_signer();
        let n10 = checkpoint(&t, 10, &s);
        w.add_checkpoint(&request(&t, 0, 10, &n10)).unwrap();
        let mut other = tree(9);
        other.push_data(b"another last entry");
        let forged = checkpoint(&other, 10, &s);
        // With the right old size, and with any other: both detected.
        for old in [10, 0, 3] {
            let e = w
                .add_checkpoint(&AddCheckpoint::encode(old, &[], &forged))
                .unwrap_err();
            let WitnessError::SplitView {
                size: 10,
                evidence: Some(path),
                ..
            } = &e
            else {
                panic!("{e:?}");
            };
            assert_eq!(e.status(), 409);
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.contains(&n10) && text.contains(&forged));
        }
        assert_eq!(w.stats().split_views, 3);
        // Same tree, different extension line: still two bodies for one size.
        let mut body2 = body(&n10);
        body2.push_str("map something\n");
        let n10b = s.sign_note(&body2).unwrap();
        assert!(matches!(
            w.add_checkpoint(&AddCheckpoint::encode(10, &[], &n10b)),
            Err(WitnessError::SplitView { .. })
        ));
        let files = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|f| {
                f.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("split-view-")
            })
            .count();
        assert_eq!(files, 4);
        // The cosigned checkpoint is still the first.
        w.add_checkpoint(&request(&t, 10, 10, &n10)).unwrap();
    }

    #[test]
    fn bad_signature_unknown_origin_and_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let w = witness(dir.path());
        let t = tree(5);
        // Signed by another key under the log's name: 403.
        let impostor = LogSigner::from_seed(ORIGIN, &[9u8; 32]).unwrap();
        let e = w
            .add_checkpoint(&request(&t, 0, 5, &checkpoint(&t, 5, &impostor)))
            .unwrap_err();
        assert_eq!(e.status(), 403, "{e}");
        // Tampered body: 403.
        let n5 = checkpoint(&t, 5, &log_signer());
        let tampered = n5.replacen("\n5\n", "\n6\n", 1);
        assert_eq!(
            w.add_checkpoint(&request(&t, 0, 5, &tampered))
                .unwrap_err()
                .status(),
            403
        );
        // Unknown origin: 404.
        let other = LogSigner::from_seed("tongban/audit/n2", &[9u8; 32]).unwrap();
        let e = w
            .add_checkpoint(&request(&t, 0, 5, &checkpoint(&t, 5, &other)))
            .unwrap_err();
        assert!(matches!(e, WitnessError::UnknownLog(ref o) if o == "tongban/audit/n2"));
        assert_eq!(e.status(), 404);
        // Malformed: 400; oversize: 413.
        let unsigned = format!("old 0\n\n{}", body(&n5));
        let bad_size = format!("old 0\n\n{}", n5.replacen("\n5\n", "\n05\n", 1));
        for bad in ["", "old 0\n", &unsigned] {
            assert_eq!(w.add_checkpoint(bad).unwrap_err().status(), 400, "{bad:?}");
        }
        // Not signed as it stands (the signature covers "5"): 403 first.
        assert_eq!(w.add_checkpoint(&bad_size).unwrap_err().status(), 403);
        let proof_from_zero = AddCheckpoint::encode(0, &[[1; 32]], &n5);
        assert_eq!(
            w.add_checkpoint(&proof_from_zero).unwrap_err().status(),
            400
        );
        let huge = format!("old 0\n\n{n5}{}", "x".repeat(crate::MAX_REQUEST_BYTES));
        assert_eq!(w.add_checkpoint(&huge).unwrap_err().status(), 413);
        assert_eq!(w.stats().cosigned, 0);
        assert_eq!(w.sizes()[0].1, 0);
    }

    /// Many threads offer successive checkpoints from the same old size:
    /// exactly one advances from each size; the rest get 409.
    #[test]
    fn concurrent_adds_advance_once() {
        let dir = tempfile::tempdir().unwrap();
        let w = std::sync::Arc::new(witness(dir.path()));
        let t = std::sync::Arc::new(tree(40));
        let s = log_signer();
        w.add_checkpoint(&request(&t, 0, 4, &checkpoint(&t, 4, &s)))
            .unwrap();
        let handles: Vec<_> = (5..37u64)
            .map(|size| {
                let (w, t, note) = (w.clone(), t.clone(), checkpoint(&t, size, &s));
                std::thread::spawn(move || w.add_checkpoint(&request(&t, 4, size, &note)))
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "exactly one request advances from size 4");
        assert!(results.iter().all(|r| match r {
            Ok(_) => true,
            Err(WitnessError::Conflict { latest }) => *latest > 4,
            Err(_) => false,
        }));
        // The persisted state agrees with memory.
        let size = w.sizes()[0].1;
        drop(w);
        assert_eq!(witness(dir.path()).sizes()[0].1, size);
    }
}
