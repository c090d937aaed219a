//! `[console]` in the exchange configuration.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a `[console]` table cannot be used; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("console: session lifetimes must be positive")]
    SessionLifetime,
    #[error(
        "console.allowed_hosts: {0:?} is not a host as a browser sends it (name:port, e.g. \"console.example:9465\")"
    )]
    AllowedHost(String),
    #[error("console.users: {0:?} is not a valid administrator name (letters, digits, . _ -)")]
    UserName(String),
    #[error(
        "console.users.{0}: not an Argon2 PHC hash (make one with `tongban console hash-password`)"
    )]
    PasswordHash(String),
}

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
    /// The `Host` values (`name:port`, as a browser sends them) the console
    /// answers to; any other, or none, gets 421 Misdirected Request, so a
    /// page that rebinds its own DNS name to the console's address can
    /// neither read nor act. Empty (the default): the address the console
    /// is bound to as `ip:port`, and `localhost:port` (for a wildcard
    /// address, `127.0.0.1:port` and `[::1]:port` instead of it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
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
            allowed_hosts: Vec::new(),
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
    pub fn check(&self) -> Result<(), SettingsError> {
        if self.session_idle_secs == 0 || self.session_max_secs == 0 {
            return Err(SettingsError::SessionLifetime);
        }
        for host in &self.allowed_hosts {
            check_host(host)?;
        }
        for (name, hash) in &self.users {
            if name.is_empty() || name.len() > 64 || !name.chars().all(is_name_char) {
                return Err(SettingsError::UserName(name.clone()));
            }
            if argon2::PasswordHash::new(hash).is_err() {
                return Err(SettingsError::PasswordHash(name.clone()));
            }
        }
        Ok(())
    }
}

/// The `Host` values the console answers to, lower case: `allowed_hosts`,
/// or the defaults for the address it is actually bound to (which differs
/// from `listen` when that asks for port 0).
pub fn effective_allowed_hosts(configured: &[String], bound: SocketAddr) -> Vec<String> {
    if !configured.is_empty() {
        return configured.iter().map(|h| h.to_ascii_lowercase()).collect();
    }
    let port = bound.port();
    let mut hosts = if bound.ip().is_unspecified() {
        vec![format!("127.0.0.1:{port}"), format!("[::1]:{port}")]
    } else {
        vec![bound.to_string()]
    };
    hosts.push(format!("localhost:{port}"));
    if port == 80 {
        // Browsers leave out the scheme's default port.
        let bare: Vec<String> = hosts
            .iter()
            .filter_map(|h| h.strip_suffix(":80").map(str::to_owned))
            .collect();
        hosts.extend(bare);
    }
    hosts
}

/// A `Host` value: `name[:port]` with no user, path or spaces.
fn check_host(host: &str) -> Result<(), SettingsError> {
    let bad = || Err(SettingsError::AllowedHost(host.to_owned()));
    if host.is_empty() || host.len() > 255 || host.contains('@') {
        return bad();
    }
    let Ok(authority) = host.parse::<hyper::http::uri::Authority>() else {
        return bad();
    };
    let name = authority.host();
    // `http` takes a non-numeric port as part of the authority; a browser
    // never sends one.
    let port_ok = match host.strip_prefix(name) {
        Some("") => true,
        Some(port) => port
            .strip_prefix(':')
            .is_some_and(|p| p.parse::<u16>().is_ok()),
        None => false,
    };
    if name.is_empty() || !port_ok {
        return bad();
    }
    Ok(())
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
        assert_eq!(
            s.check().unwrap_err().to_string(),
            "console.users: \"bad name\" is not a valid administrator name (letters, digits, . _ -)"
        );
        s.users.clear();
        s.users.insert("plain".into(), "secret".into());
        assert!(s.check().unwrap_err().to_string().contains("Argon2"));
    }

    #[test]
    fn allowed_hosts_are_checked_and_default_to_the_bound_address() {
        let s: ConsoleSettings =
            toml::from_str("allowed_hosts = [\"Console.Example:9465\", \"[::1]:9465\"]").unwrap();
        assert!(s.check().is_ok());
        assert_eq!(
            effective_allowed_hosts(&s.allowed_hosts, DEFAULT_CONSOLE_ADDR),
            ["console.example:9465", "[::1]:9465"]
        );
        for bad in [
            "",
            "a b:1",
            "user@host:1",
            "host/path",
            "host:port",
            ":9465",
        ] {
            let s = ConsoleSettings {
                allowed_hosts: vec![bad.into()],
                ..ConsoleSettings::default()
            };
            let refused = s.check().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(refused.contains("allowed_hosts"), "{bad:?}");
        }

        let none: &[String] = &[];
        let bound: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        assert_eq!(
            effective_allowed_hosts(none, bound),
            ["127.0.0.1:40001", "localhost:40001"]
        );
        let bound: SocketAddr = "0.0.0.0:80".parse().unwrap();
        assert_eq!(
            effective_allowed_hosts(none, bound),
            [
                "127.0.0.1:80",
                "[::1]:80",
                "localhost:80",
                "127.0.0.1",
                "[::1]",
                "localhost"
            ]
        );
        // Old configurations, without the key, still load and print alike.
        let s: ConsoleSettings = toml::from_str("listen = \"127.0.0.1:9000\"").unwrap();
        assert!(s.allowed_hosts.is_empty());
        assert!(!toml::to_string(&s).unwrap().contains("allowed_hosts"));
    }
}
