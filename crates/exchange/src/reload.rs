//! Policy reload without restart: on file change (polled) or SIGHUP, the
//! policy file is read and validated; a broken file is rejected with an error
//! log and the policy in force stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tongban_core::{Catalogue, CatalogueError, Policy};

use crate::pipeline::Exchange;

/// Why a policy file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid policy: {0}")]
    Invalid(#[from] CatalogueError),
}

/// Reads and validates a policy file against the catalogue.
pub fn load_policy(path: &Path, catalogue: &Catalogue) -> Result<Policy, PolicyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(Policy::from_toml(
        &text,
        &path.display().to_string(),
        catalogue,
    )?)
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Watches `path` and puts each valid new version in force. Runs until the
/// returned task is aborted.
pub fn spawn_policy_reloader(
    exchange: Exchange,
    path: PathBuf,
    catalogue: Arc<Catalogue>,
    poll: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = stamp(&path);
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let forced = match hangup.as_mut() {
                Some(sig) => tokio::select! {
                    _ = tokio::time::sleep(poll) => false,
                    _ = sig.recv() => true,
                },
                None => {
                    tokio::time::sleep(poll).await;
                    false
                }
            };
            #[cfg(not(unix))]
            let forced = {
                tokio::time::sleep(poll).await;
                false
            };
            let now = stamp(&path);
            if !forced && now == last {
                continue;
            }
            last = now;
            match load_policy(&path, &catalogue) {
                Ok(policy) => {
                    let version = policy.version().to_owned();
                    match exchange
                        .replace_policy(policy, &path.display().to_string())
                        .await
                    {
                        Ok(()) => {
                            tracing::info!(path = %path.display(), %version, "policy reloaded")
                        }
                        Err(e) => {
                            // Retried on the next poll: a change takes
                            // effect only once it is in the audit log.
                            last = None;
                            tracing::error!(path = %path.display(), error = %e, "cannot audit the policy change; the previous policy stays in force");
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "policy file rejected; the previous policy stays in force");
                }
            }
        }
    })
}
