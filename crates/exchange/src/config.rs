//! The exchange's configuration file (TOML). Relative paths are resolved
//! against the file's directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::audit::AuditSettings;

/// Everything one exchange node needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeConfig {
    /// This node's name; it names the node's audit log.
    #[serde(default = "default_node")]
    pub node: String,
    /// Where service points connect.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Matter catalogue file; the embedded default when absent.
    #[serde(default)]
    pub catalogue: Option<PathBuf>,
    /// Access policy file (required: without grants everything is denied).
    pub policy: PathBuf,
    /// How often the policy and certificate files are checked for changes.
    #[serde(default = "default_reload_poll_ms")]
    pub reload_poll_ms: u64,
    /// Mutual TLS on both hops. Without it the exchange serves plaintext and
    /// needs `plaintext_caller`.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Plaintext mode only: the caller every request is attributed to
    /// (`org/<credit code>/unit/<unit>`). For development and benchmarks.
    #[serde(default)]
    pub plaintext_caller: Option<String>,
    /// Department id -> where its adapter listens.
    #[serde(default)]
    pub departments: BTreeMap<String, DepartmentConfig>,
    /// The node's audit log.
    #[serde(default)]
    pub audit: AuditSettings,
}

/// PEM files for mutual TLS. The exchange presents the same certificate to
/// service points (as server) and to adapters (as client).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA bundle that service points' and adapters' certificates chain to.
    pub ca: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentConfig {
    /// Adapter endpoints: `https://host:port` with TLS, `http://` without.
    pub endpoints: Vec<String>,
    /// Longest the exchange waits for this department, whatever the caller's
    /// deadline.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The SPIFFE id the adapter's certificate must carry (TLS only).
    #[serde(default)]
    pub identity: Option<String>,
}

fn default_node() -> String {
    "exchange-1".into()
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7443))
}

fn default_reload_poll_ms() -> u64 {
    1000
}

fn default_timeout_ms() -> u64 {
    5000
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl ExchangeConfig {
    /// Reads, parses and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::from_toml(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(config)
    }

    /// Parses and checks TOML text (paths left as written).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if self.node.is_empty()
            || !self
                .node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "node {:?} must be letters, digits, '-' or '_'",
                self.node
            ));
        }
        match (&self.tls, &self.plaintext_caller) {
            (Some(_), Some(_)) => {
                return Err("plaintext_caller applies only without [tls]; remove one".into());
            }
            (None, None) => {
                return Err(
                    "without [tls] the exchange serves plaintext and needs plaintext_caller".into(),
                );
            }
            _ => {}
        }
        if let Some(c) = &self.plaintext_caller {
            tongban_core::Caller::parse_reference(c)
                .map_err(|e| format!("plaintext_caller: {e}"))?;
        }
        for (id, d) in &self.departments {
            if d.endpoints.is_empty() {
                return Err(format!("department {id:?} lists no endpoints"));
            }
            for e in &d.endpoints {
                let tls = e.starts_with("https://");
                if tls != self.tls.is_some() || !(tls || e.starts_with("http://")) {
                    return Err(format!(
                        "department {id:?} endpoint {e:?} must use {} like the exchange",
                        if self.tls.is_some() {
                            "https://"
                        } else {
                            "http://"
                        }
                    ));
                }
            }
            if d.timeout_ms == 0 {
                return Err(format!("department {id:?}: timeout_ms must be positive"));
            }
        }
        if self.reload_poll_ms == 0 {
            return Err("reload_poll_ms must be positive".into());
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.policy);
        if let Some(c) = &mut self.catalogue {
            fix(c);
        }
        self.audit.resolve_paths(base);
        if let Some(t) = &mut self.tls {
            fix(&mut t.cert);
            fix(&mut t.key);
            fix(&mut t.ca);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = r#"
policy = "policy.toml"
plaintext_caller = "org/91350100M000100Y43/unit/bench"
[departments.police]
endpoints = ["http://127.0.0.1:7101"]
"#;

    #[test]
    fn defaults_and_plaintext() {
        let c = ExchangeConfig::from_toml(PLAIN).unwrap();
        assert_eq!(c.node, "exchange-1");
        assert_eq!(c.listen.port(), 7443);
        assert_eq!(c.departments["police"].timeout_ms, 5000);
    }

    #[test]
    fn mistakes_are_named() {
        let no_caller = PLAIN.replace(
            "plaintext_caller = \"org/91350100M000100Y43/unit/bench\"\n",
            "",
        );
        assert!(
            ExchangeConfig::from_toml(&no_caller)
                .unwrap_err()
                .contains("plaintext_caller")
        );
        let tls_endpoint = PLAIN.replace("http://", "https://");
        assert!(
            ExchangeConfig::from_toml(&tls_endpoint)
                .unwrap_err()
                .contains("must use http://")
        );
        let unknown = format!("{PLAIN}\ncolour = 1\n");
        assert!(
            ExchangeConfig::from_toml(&unknown)
                .unwrap_err()
                .contains("colour")
        );
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exchange.toml");
        std::fs::write(&path, PLAIN).unwrap();
        let c = ExchangeConfig::load(&path).unwrap();
        assert_eq!(c.policy, dir.path().join("policy.toml"));
    }
}
