//! Cheap change detection for certificate files.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

/// What we know about a file without reading it. Inode and size catch
/// replacements by rename and edits within one mtime tick.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

/// The stamps of a set of files; a missing file has no stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FilesStamp(Vec<Option<FileStamp>>);

impl FilesStamp {
    pub(crate) fn of(paths: &[&Path]) -> Self {
        Self(
            paths
                .iter()
                .map(|path| {
                    std::fs::metadata(path).ok().map(|m| FileStamp {
                        modified: m.modified().ok(),
                        len: m.len(),
                        inode: m.ino(),
                        device: m.dev(),
                    })
                })
                .collect(),
        )
    }
}
