//! What a witness remembers: per log origin, the latest checkpoint it
//! cosigned, one file per origin in a directory, each replaced atomically
//! (temporary file, fsync, rename, fsync of the directory), so a crash
//! leaves the old or the new checkpoint, never a torn one. Split-view
//! evidence is written beside them.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tongban_audit::Hash;

use crate::request::CheckpointHead;
use crate::witness::WitnessError;

const STATE_SUFFIX: &str = ".checkpoint";

/// Errors reading or writing the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("witness state {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("witness state file {path} is not a checkpoint note: {detail}")]
    Corrupt { path: String, detail: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The latest checkpoint cosigned for one origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latest {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// The whole body, extension lines included: what was cosigned.
    pub body: String,
    /// The signed note as the log submitted it.
    pub note: String,
}

impl Latest {
    /// From a signed note (already verified by the caller).
    pub fn from_note(note: &str) -> Result<Self, WitnessError> {
        let (body, _) = note.split_once("\n\n").ok_or_else(|| {
            WitnessError::Malformed("no blank line before signatures".to_string())
        })?;
        let body = format!("{body}\n");
        let head = CheckpointHead::parse(&body)?;
        Ok(Self {
            origin: head.origin,
            size: head.size,
            root: head.root,
            body,
            note: note.to_string(),
        })
    }
}

/// A file name for `origin` that cannot escape the directory: its safe
/// characters, for people, and a hash of the whole origin, so two origins
/// that sanitise alike never share a file.
pub(crate) fn sanitise(origin: &str) -> String {
    let readable: String = origin
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let digest = Sha256::digest(origin.as_bytes());
    format!("{readable}-{}", hex::encode(&digest[..4]))
}

/// The witness's state directory.
#[derive(Debug, Clone)]
pub struct WitnessState {
    dir: PathBuf,
}

impl WitnessState {
    /// Opens (creating if needed) the directory.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_for(&self, origin: &str) -> PathBuf {
        self.dir.join(format!("{}{STATE_SUFFIX}", sanitise(origin)))
    }

    /// Every stored checkpoint, by origin. The notes' signatures are the
    /// caller's to check against the log keys it trusts.
    pub fn load_all(&self) -> Result<HashMap<String, Latest>, StateError> {
        let mut out = HashMap::new();
        for dirent in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let path = dirent.map_err(io_err(&self.dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some(&STATE_SUFFIX[1..]) {
                continue;
            }
            let note = std::fs::read_to_string(&path).map_err(io_err(&path))?;
            let latest = Latest::from_note(&note).map_err(|e| StateError::Corrupt {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
            if self.path_for(&latest.origin) != path {
                return Err(StateError::Corrupt {
                    path: path.display().to_string(),
                    detail: format!("it holds origin {:?}", latest.origin),
                });
            }
            out.insert(latest.origin.clone(), latest);
        }
        Ok(out)
    }

    /// Replaces the stored checkpoint of `latest.origin`, durably.
    pub fn save(&self, latest: &Latest) -> Result<(), StateError> {
        let path = self.path_for(&latest.origin);
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(latest.note.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // The rename is durable only once the directory is.
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(io_err(&path))
    }

    /// Writes both signed notes of a split view to a new file
    /// `split-view-<origin>-<size>[-n].txt`; returns its path.
    pub fn save_evidence(
        &self,
        origin: &str,
        size: u64,
        cosigned: &str,
        offered: &str,
    ) -> Result<PathBuf, StateError> {
        let text = format!(
            "Split view of log {origin:?} at size {size}: two different checkpoints, both signed by the log.\n\nCosigned earlier by this witness:\n{cosigned}\nOffered later:\n{offered}"
        );
        let stem = format!("split-view-{}-{size}", sanitise(origin));
        let mut last_err = None;
        // Never overwrite earlier evidence: number later files.
        for n in 1..=1000u32 {
            let name = if n == 1 {
                format!("{stem}.txt")
            } else {
                format!("{stem}-{n}.txt")
            };
            let path = self.dir.join(name);
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(text.as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(io_err(&path))?;
                    return Ok(path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    last_err = Some(e);
                }
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        let path = self.dir.join(format!("{stem}.txt"));
        Err(io_err(&path)(last_err.unwrap_or_else(|| {
            std::io::Error::other("too many evidence files")
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;

    fn note(origin: &str, size: u64) -> String {
        format!(
            "{origin}\n{size}\n{}\ntime t\n\n\u{2014} {origin} AAAAAA==\n",
            B64.encode([1u8; 32])
        )
    }

    #[test]
    fn saves_replaces_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let st = WitnessState::open(&dir.path().join("state")).unwrap();
        assert!(st.load_all().unwrap().is_empty());
        let a = Latest::from_note(&note("tongban/audit/n1", 3)).unwrap();
        assert_eq!(
            a.body,
            format!("tongban/audit/n1\n3\n{}\ntime t\n", B64.encode([1u8; 32]))
        );
        st.save(&a).unwrap();
        let b = Latest::from_note(&note("tongban/audit/n1", 9)).unwrap();
        st.save(&b).unwrap();
        let c = Latest::from_note(&note("../etc/passwd", 1)).unwrap();
        st.save(&c).unwrap();
        let all = st.load_all().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all["tongban/audit/n1"], b);
        assert_eq!(all["../etc/passwd"], c);
        for f in std::fs::read_dir(st.dir()).unwrap() {
            let name = f.unwrap().file_name().into_string().unwrap();
            assert!(name.ends_with(".checkpoint"), "{name}");
            assert!(!name.contains('/'));
        }
        assert_ne!(sanitise("a/b"), sanitise("a_b"));
    }

    #[test]
    fn evidence_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let st = WitnessState::open(dir.path()).unwrap();
        let p1 = st.save_evidence("tongban/audit/n1", 5, "A", "B").unwrap();
        let p2 = st.save_evidence("tongban/audit/n1", 5, "A", "C").unwrap();
        assert_ne!(p1, p2);
        let name = p1.file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with("split-view-tongban_audit_n1-"), "{name}");
        assert!(name.ends_with("-5.txt"), "{name}");
        assert!(
            std::fs::read_to_string(&p2)
                .unwrap()
                .contains("Offered later:\nC")
        );
        // Evidence files are not state.
        assert!(st.load_all().unwrap().is_empty());
    }
}
