//! `[console]` in the exchange configuration.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `127.0.0.1:9465`, next to the Prometheus endpoint on 9464.
pub const DEFAULT_CONSOLE_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9465));

/// The console's settings. It runs when `enabled` or when users are configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Mark the session cookie `Secure` (set when a TLS proxy fronts the console).
    #[serde(default)]
    pub secure_cookie: bool,
    /// A session ends after this long without a request.
    #[serde(default = "default_idle")]
    pub session_idle_secs: u64,
    /// ... and this long after sign-in, whatever happens.
    #[serde(default = "default_absolute")]
    pub session_max_secs: u64,
    /// Administrator name -> Argon2 PHC hash (`tongban console hash-password`).
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    /// Files holding further nodes' checkpoint verifier keys (one per line);
    /// the node's own key is always pinned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verifier_keys: Vec<PathBuf>,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: default_listen(),
            secure_cookie: false,
            session_idle_secs: default_idle(),
            session_max_secs: default_absolute(),
            users: BTreeMap::new(),
            verifier_keys: Vec::new(),
        }
    }
}

fn default_listen() -> SocketAddr {
    DEFAULT_CONSOLE_ADDR
}
fn default_idle() -> u64 {
    30 * 60
}
fn default_absolute() -> u64 {
    8 * 3600
}

impl ConsoleSettings {
    /// Whether the console should be served.
    pub fn is_active(&self) -> bool {
        self.enabled || !self.users.is_empty()
    }

    /// Makes relative key paths relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in &mut self.verifier_keys {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// Problems that make the settings unusable.
    pub fn check(&self) -> Result<(), String> {
        if self.session_idle_secs == 0 || self.session_max_secs == 0 {
            return Err("console: session lifetimes must be positive".into());
        }
        for (name, hash) in &self.users {
            if name.is_empty() || name.len() > 64 || !name.chars().all(is_name_char) {
                return Err(format!(
                    "console.users: {name:?} is not a valid administrator name (letters, digits, . _ -)"
                ));
            }
            if argon2::PasswordHash::new(hash).is_err() {
                return Err(format!(
                    "console.users.{name}: not an Argon2 PHC hash (make one with `tongban console hash-password`)"
                ));
            }
        }
        Ok(())
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_loopback_and_inactive() {
        let s: ConsoleSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(s, ConsoleSettings::default());
        assert!(s.listen.ip().is_loopback());
        assert_eq!(s.listen.port(), 9465);
        assert!(!s.is_active());
        assert!(s.check().is_ok());
    }

    #[test]
    fn users_activate_and_are_checked() {
        let mut s = ConsoleSettings::default();
        s.users
            .insert("admin".into(), crate::hash_password("pw").unwrap());
        assert!(s.is_active());
        assert!(s.check().is_ok());
        s.users
            .insert("bad name".into(), crate::hash_password("pw").unwrap());
        assert!(s.check().unwrap_err().contains("bad name"));
        s.users.clear();
        s.users.insert("plain".into(), "secret".into());
        assert!(s.check().unwrap_err().contains("Argon2"));
    }
}
