//! The exchange's configuration file (TOML). Relative paths are resolved
//! against the file's directory. Every key but `policy` has a default; every
//! key can be overridden from the environment as `TONGBAN_<SECTION>_<KEY>`
//! (see [`tongban_core::config_env`] and [`ExchangeConfig::env_keys`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tongban_core::CallerError;
use tongban_core::config_env::{
    AppliedOverride, EnvKey, EnvOverrideError, ValueKind, apply_env_overrides,
};
use tongban_trust::{IdentityError, LimitsError};

use crate::audit::{AuditSettings, AuditSettingsError};
use crate::routing::Resilience;

/// Everything one exchange node needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeConfig {
    /// This node's name; it names the node's audit log.
    #[serde(default = "default_node")]
    pub node: String,
    /// Where service points connect.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Matter catalogue file; the embedded default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalogue: Option<PathBuf>,
    /// Access policy file (required: without grants everything is denied).
    pub policy: PathBuf,
    /// How often the policy and certificate files are checked for changes.
    #[serde(default = "default_reload_poll_ms")]
    pub reload_poll_ms: u64,
    /// Mutual TLS on both hops. Without it the exchange serves plaintext and
    /// needs `plaintext_caller`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// Plaintext mode only: the caller every request is attributed to
    /// (`org/<credit code>/unit/<unit>`). For development and benchmarks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext_caller: Option<String>,
    /// Department id -> where its adapter listens.
    #[serde(default)]
    pub departments: BTreeMap<String, DepartmentConfig>,
    /// Longest a stopping node waits for in-flight requests before it
    /// cuts them off (then it commits the audit tail and exits).
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// How often readiness (audit store, each department) is probed for the
    /// gRPC health service.
    #[serde(default = "default_health_probe_ms")]
    pub health_probe_ms: u64,
    /// Also serve gRPC health alone, in plaintext, here (for probes that
    /// cannot present a client certificate, e.g. the kubelet's); none when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_listen: Option<SocketAddr>,
    /// The node's audit log.
    #[serde(default)]
    pub audit: AuditSettings,
    /// The admin HTTP endpoint (Prometheus `GET /metrics`).
    #[serde(default)]
    pub admin: AdminSettings,
    /// `[console]`, the administrators' web console, kept as written and
    /// unread: the process that serves the console next to the node parses
    /// it (`tongban serve`, with `tongban_console::ConsoleSettings`), so the
    /// exchange library does not depend on the console. Its environment
    /// overrides and relative paths are that reader's too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<toml::Table>,
    /// `[server]`: HTTP/2 and connection limits of the gRPC listeners
    /// (concurrent streams, reset floods, keepalive, TLS handshakes); every
    /// key has a default, see [`tongban_trust::ServerLimits`].
    #[serde(default)]
    pub server: tongban_trust::ServerLimits,
}

/// `[admin]`: the Prometheus endpoint. It reveals traffic patterns, not
/// data; keep it on loopback or a management network.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: default_admin_listen(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

fn default_drain_timeout_ms() -> u64 {
    10_000
}

fn default_health_probe_ms() -> u64 {
    2000
}

/// PEM files for mutual TLS. The exchange presents the same certificate to
/// service points (as server) and to adapters (as client).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA bundle that service points' and adapters' certificates chain to.
    pub ca: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentConfig {
    /// Adapter endpoints: `https://host:port` with TLS, `http://` without.
    pub endpoints: Vec<String>,
    /// Longest the exchange waits for this department, whatever the caller's
    /// deadline.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The SPIFFE id the adapter's certificate must carry (TLS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Requests in flight to this department at once; more are shed with
    /// RESOURCE_EXHAUSTED instead of queued.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Consecutive failures that take an endpoint out of rotation.
    #[serde(default = "default_eject_after_failures")]
    pub eject_after_failures: u32,
    /// First time out of rotation (doubles while probes fail, up to 30 s).
    #[serde(default = "default_eject_for_ms")]
    pub eject_for_ms: u64,
    /// Requests one caller may have in flight to this department at once;
    /// more from that caller are shed with RESOURCE_EXHAUSTED
    /// (`CALLER_SHARE_EXHAUSTED`). Default: a quarter of `max_in_flight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight_per_caller: Option<usize>,
    /// A timeout counts towards ejecting an endpoint only when the attempt
    /// had at least this long; shorter ones are the caller's deadline.
    #[serde(default = "default_slow_after_ms")]
    pub slow_after_ms: u64,
    /// A caller's deadline that leaves the department less than this is
    /// refused with DEADLINE_EXCEEDED (`DEADLINE_TOO_SHORT`) unasked.
    #[serde(default = "default_min_budget_ms")]
    pub min_budget_ms: u64,
}

impl DepartmentConfig {
    /// The protection this department's traffic gets.
    pub fn resilience(&self) -> Resilience {
        Resilience {
            max_in_flight: self.max_in_flight,
            eject_after: self.eject_after_failures,
            eject_for: Duration::from_millis(self.eject_for_ms),
            max_in_flight_per_caller: self.max_in_flight_per_caller,
            slow_after: Duration::from_millis(self.slow_after_ms),
            min_budget: Duration::from_millis(self.min_budget_ms),
            ..Resilience::default()
        }
    }
}

fn default_max_in_flight() -> usize {
    Resilience::default().max_in_flight
}

fn default_eject_after_failures() -> u32 {
    Resilience::default().eject_after
}

fn default_eject_for_ms() -> u64 {
    u64::try_from(Resilience::default().eject_for.as_millis()).unwrap_or(500)
}

fn default_slow_after_ms() -> u64 {
    u64::try_from(Resilience::default().slow_after.as_millis()).unwrap_or(1000)
}

fn default_min_budget_ms() -> u64 {
    u64::try_from(Resilience::default().min_budget.as_millis()).unwrap_or(10)
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
    /// Not a `source()`: the message prints it.
    #[error("{path}: {problem}")]
    Invalid {
        path: PathBuf,
        problem: InvalidConfig,
    },
}

/// Why a configuration's text is unusable; names the key at fault.
/// Variants that print their cause do not also return it as `source()`.
#[derive(Debug, thiserror::Error)]
pub enum InvalidConfig {
    #[error("{0}")]
    Toml(toml::de::Error),
    #[error(transparent)]
    EnvOverride(#[from] EnvOverrideError),
    #[error(transparent)]
    Audit(#[from] AuditSettingsError),
    #[error("[server] {0}")]
    ServerLimits(LimitsError),
    #[error("node {0:?} must be letters, digits, '-' or '_'")]
    NodeName(String),
    #[error("plaintext_caller applies only without [tls]; remove one")]
    PlaintextCallerWithTls,
    #[error("without [tls] the exchange serves plaintext and needs plaintext_caller")]
    NoPlaintextCaller,
    #[error("plaintext_caller: {0}")]
    PlaintextCaller(CallerError),
    #[error("department {department:?} lists no endpoints")]
    NoEndpoints { department: String },
    #[error("department {department:?} endpoint {endpoint:?} must use {scheme} like the exchange")]
    EndpointScheme {
        department: String,
        endpoint: String,
        /// `https://` with `[tls]`, `http://` without.
        scheme: &'static str,
    },
    #[error(
        "department {department:?}: identity is required with [tls] (the SPIFFE id its adapter's certificate carries, e.g. \"spiffe://<trust domain>/org/<credit code>/unit/{department}\")"
    )]
    IdentityRequired { department: String },
    #[error("department {department:?}: identity: {error}")]
    Identity {
        department: String,
        error: IdentityError,
    },
    #[error("department {department:?}: identity applies only with [tls]")]
    IdentityWithoutTls { department: String },
    #[error(
        "department {department:?}: timeout_ms, max_in_flight, eject_after_failures and eject_for_ms must be positive"
    )]
    DepartmentLimitNotPositive { department: String },
    #[error(
        "department {department:?}: max_in_flight_per_caller must be between 1 and max_in_flight ({max_in_flight})"
    )]
    CallerShare {
        department: String,
        max_in_flight: usize,
    },
    #[error(
        "department {department:?}: min_budget_ms must be between 1 and timeout_ms ({timeout_ms})"
    )]
    MinBudget { department: String, timeout_ms: u64 },
    #[error("department {department:?}: slow_after_ms must be positive")]
    SlowAfterNotPositive { department: String },
    /// A top-level interval, e.g. `reload_poll_ms`.
    #[error("{0} must be positive")]
    NotPositive(&'static str),
}

impl ExchangeConfig {
    /// Reads, parses and checks a configuration file, with the process's
    /// `TONGBAN_…` environment overrides applied.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars()).map(|(config, _)| config)
    }

    /// [`load`](Self::load) with the given variables instead of the
    /// process environment; also returns the overrides applied.
    pub fn load_with_env<K: AsRef<str>, V: AsRef<str>>(
        path: &Path,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(Self, Vec<AppliedOverride>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |problem| ConfigError::Invalid {
            path: path.to_owned(),
            problem,
        };
        let (mut config, applied) = Self::from_toml_with_env(&text, vars).map_err(invalid)?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok((config, applied))
    }

    /// Parses and checks TOML text (paths left as written).
    pub fn from_toml(text: &str) -> Result<Self, InvalidConfig> {
        Self::from_toml_with_env(text, std::iter::empty::<(String, String)>()).map(|(c, _)| c)
    }

    /// Parses TOML text, applies the overrides among `vars`, and checks.
    pub fn from_toml_with_env<K: AsRef<str>, V: AsRef<str>>(
        text: &str,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(Self, Vec<AppliedOverride>), InvalidConfig> {
        let mut document: toml::Table = toml::from_str(text).map_err(InvalidConfig::Toml)?;
        let keys = Self::env_keys(&document);
        let applied = apply_env_overrides(&mut document, &keys, vars)?;
        let config: Self = document.try_into().map_err(InvalidConfig::Toml)?;
        config.check()?;
        Ok((config, applied))
    }

    /// Every key an environment variable may override (departments: those
    /// named in `document`).
    pub fn env_keys(document: &toml::Table) -> Vec<EnvKey> {
        use ValueKind::{Bool, Integer, String as Str, StringList};
        let mut keys: Vec<EnvKey> = [
            ("node", Str),
            ("listen", Str),
            ("catalogue", Str),
            ("policy", Str),
            ("reload_poll_ms", Integer),
            ("plaintext_caller", Str),
            ("drain_timeout_ms", Integer),
            ("health_probe_ms", Integer),
            ("health_listen", Str),
            ("tls.cert", Str),
            ("tls.key", Str),
            ("tls.ca", Str),
            ("audit.store", Str),
            ("audit.postgres_schema", Str),
            ("audit.signing_key", Str),
            ("audit.subject_key", Str),
            ("audit.checkpoint_interval_ms", Integer),
            ("audit.checkpoint_every", Integer),
            ("audit.retention_days", Integer),
            ("audit.append_timeout_ms", Integer),
            ("admin.enabled", Bool),
            ("admin.listen", Str),
        ]
        .into_iter()
        .map(|(path, kind)| EnvKey::new(path, kind))
        .collect();
        keys.extend(
            tongban_trust::ServerLimits::KEYS
                .iter()
                .map(|key| EnvKey::new(format!("server.{key}"), Integer)),
        );
        if let Some(departments) = document.get("departments").and_then(toml::Value::as_table) {
            for id in departments.keys() {
                keys.push(EnvKey::new(
                    format!("departments.{id}.endpoints"),
                    StringList,
                ));
                keys.push(EnvKey::new(format!("departments.{id}.timeout_ms"), Integer));
                keys.push(EnvKey::new(format!("departments.{id}.identity"), Str));
                keys.push(EnvKey::new(
                    format!("departments.{id}.max_in_flight"),
                    Integer,
                ));
                keys.push(EnvKey::new(
                    format!("departments.{id}.eject_after_failures"),
                    Integer,
                ));
                keys.push(EnvKey::new(
                    format!("departments.{id}.eject_for_ms"),
                    Integer,
                ));
                for key in ["max_in_flight_per_caller", "slow_after_ms", "min_budget_ms"] {
                    keys.push(EnvKey::new(format!("departments.{id}.{key}"), Integer));
                }
            }
        }
        keys
    }

    /// The effective configuration as TOML, database passwords redacted
    /// (key file paths are shown; the keys themselves are never in it).
    /// `[console]` is left out: only its reader knows which of its values
    /// are secret, and shows it.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.audit.store = tongban_core::config_env::redact_url(&shown.audit.store);
        shown.console = None;
        // Plain data (strings, numbers, paths, maps): serialisation cannot fail.
        toml::to_string_pretty(&shown).unwrap_or_default()
    }

    fn check(&self) -> Result<(), InvalidConfig> {
        self.audit.check()?;
        self.server.check().map_err(InvalidConfig::ServerLimits)?;
        if self.node.is_empty()
            || !self
                .node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(InvalidConfig::NodeName(self.node.clone()));
        }
        match (&self.tls, &self.plaintext_caller) {
            (Some(_), Some(_)) => return Err(InvalidConfig::PlaintextCallerWithTls),
            (None, None) => return Err(InvalidConfig::NoPlaintextCaller),
            _ => {}
        }
        if let Some(c) = &self.plaintext_caller {
            tongban_core::Caller::parse_reference(c).map_err(InvalidConfig::PlaintextCaller)?;
        }
        for (id, d) in &self.departments {
            let department = || id.clone();
            if d.endpoints.is_empty() {
                return Err(InvalidConfig::NoEndpoints {
                    department: department(),
                });
            }
            for e in &d.endpoints {
                let tls = e.starts_with("https://");
                if tls != self.tls.is_some() || !(tls || e.starts_with("http://")) {
                    return Err(InvalidConfig::EndpointScheme {
                        department: department(),
                        endpoint: e.clone(),
                        scheme: if self.tls.is_some() {
                            "https://"
                        } else {
                            "http://"
                        },
                    });
                }
            }
            // With TLS, a department is pinned to its adapter's identity:
            // any certificate of the CA with the right host name is not
            // enough to receive personal data.
            match (&self.tls, &d.identity) {
                (Some(_), None) => {
                    return Err(InvalidConfig::IdentityRequired {
                        department: department(),
                    });
                }
                (Some(_), Some(identity)) => {
                    tongban_trust::PeerIdentity::parse_uri(identity).map_err(|error| {
                        InvalidConfig::Identity {
                            department: department(),
                            error,
                        }
                    })?;
                }
                (None, Some(_)) => {
                    return Err(InvalidConfig::IdentityWithoutTls {
                        department: department(),
                    });
                }
                (None, None) => {}
            }
            if d.timeout_ms == 0
                || d.max_in_flight == 0
                || d.eject_after_failures == 0
                || d.eject_for_ms == 0
            {
                return Err(InvalidConfig::DepartmentLimitNotPositive {
                    department: department(),
                });
            }
            if let Some(share) = d.max_in_flight_per_caller
                && (share == 0 || share > d.max_in_flight)
            {
                return Err(InvalidConfig::CallerShare {
                    department: department(),
                    max_in_flight: d.max_in_flight,
                });
            }
            if d.min_budget_ms == 0 || d.min_budget_ms > d.timeout_ms {
                return Err(InvalidConfig::MinBudget {
                    department: department(),
                    timeout_ms: d.timeout_ms,
                });
            }
            if d.slow_after_ms == 0 {
                return Err(InvalidConfig::SlowAfterNotPositive {
                    department: department(),
                });
            }
        }
        for (key, value) in [
            ("reload_poll_ms", self.reload_poll_ms),
            ("drain_timeout_ms", self.drain_timeout_ms),
            ("health_probe_ms", self.health_probe_ms),
        ] {
            if value == 0 {
                return Err(InvalidConfig::NotPositive(key));
            }
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
                .to_string()
                .contains("plaintext_caller")
        );
        let tls_endpoint = PLAIN.replace("http://", "https://");
        assert!(
            ExchangeConfig::from_toml(&tls_endpoint)
                .unwrap_err()
                .to_string()
                .contains("must use http://")
        );
        // With TLS, every department is pinned to its adapter's identity.
        let tls = PLAIN
            .replace("http://", "https://")
            .replace(
                "plaintext_caller = \"org/91350100M000100Y43/unit/bench\"\n",
                "",
            )
            .replace(
                "[departments.police]",
                "[tls]\ncert = \"x.pem\"\nkey = \"x.key\"\nca = \"ca.pem\"\n[departments.police]",
            );
        let unpinned = ExchangeConfig::from_toml(&tls).unwrap_err().to_string();
        assert!(unpinned.contains("identity is required"), "{unpinned}");
        let pinned = format!(
            "{tls}identity = \"spiffe://tongban.test/org/11510400TB0000028Y/unit/police\"\n"
        );
        ExchangeConfig::from_toml(&pinned).unwrap();
        let plain_pinned = format!(
            "{PLAIN}identity = \"spiffe://tongban.test/org/11510400TB0000028Y/unit/police\"\n"
        );
        assert!(
            ExchangeConfig::from_toml(&plain_pinned)
                .unwrap_err()
                .to_string()
                .contains("only with [tls]")
        );
        let unknown = format!("{PLAIN}\ncolour = 1\n");
        assert!(
            ExchangeConfig::from_toml(&unknown)
                .unwrap_err()
                .to_string()
                .contains("colour")
        );
    }

    #[test]
    fn environment_overrides_and_redaction() {
        let (c, applied) = ExchangeConfig::from_toml_with_env(
            PLAIN,
            [
                ("TONGBAN_LISTEN", "0.0.0.0:8443"),
                ("TONGBAN_NODE", "exchange-2"),
                ("TONGBAN_AUDIT_STORE", "postgres://audit:hunter2@db/tongban"),
                ("TONGBAN_ADMIN_LISTEN", "127.0.0.1:0"),
                ("TONGBAN_DEPARTMENTS_POLICE_TIMEOUT_MS", "750"),
                ("TONGBAN_DRAIN_TIMEOUT_MS", "1500"),
            ],
        )
        .unwrap();
        assert_eq!(applied.len(), 6);
        assert_eq!(c.listen.port(), 8443);
        assert_eq!(c.node, "exchange-2");
        assert_eq!(c.admin.listen.port(), 0);
        assert!(c.admin.enabled);
        assert_eq!(c.departments["police"].timeout_ms, 750);
        assert_eq!(c.drain_timeout_ms, 1500);
        let shown = c.to_redacted_toml();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://audit:REDACTED@db/tongban"),
            "{shown}"
        );
        // The printed configuration loads back to the same values.
        let again = ExchangeConfig::from_toml(&shown).unwrap();
        assert_eq!(again.departments["police"].timeout_ms, 750);
        assert_eq!(again.health_probe_ms, 2000);
        let bad = ExchangeConfig::from_toml_with_env(PLAIN, [("TONGBAN_RELOAD_POLL_MS", "x")]);
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("TONGBAN_RELOAD_POLL_MS")
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
