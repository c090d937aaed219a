//! The adapter's configuration: which department, which database, and the
//! SQL that answers each evidence type.
//!
//! ```toml
//! # Department id from the catalogue.
//! department = "police"
//! # sqlite://path?mode=rwc, postgres://user@host/db or mysql://user@host/db
//! database_url = "sqlite://police.db?mode=rwc"
//! # Optional: a catalogue file instead of the embedded default.
//! # catalogue = "catalogue.toml"
//! # Optional: address the `tongban adapter` command listens on.
//! listen = "127.0.0.1:50061"
//! max_connections = 8           # pool size (default 8)
//! acquire_timeout_ms = 2000     # wait for a pooled connection (default 2000)
//! drain_timeout_ms = 10000      # on SIGTERM, longest wait for in-flight calls
//! # Optional: Prometheus `GET /metrics` (keep it on loopback).
//! # admin_listen = "127.0.0.1:9465"
//! # Optional: gRPC health alone, plaintext, for probes without a certificate.
//! # health_listen = "0.0.0.0:8081"
//!
//! # Optional: HTTP/2 and connection limits (defaults shown in
//! # `tongban_trust::ServerLimits`), e.g.
//! [server]
//! max_concurrent_streams = 128
//!
//! [evidence."police.identity"]
//! # One row per subject; columns named after the catalogue's fields, plus an
//! # optional `as_of`. Placeholders: :id_number (a person; NULL for an
//! # organisation), :credit_code (an organisation; NULL for a person), :name
//! # (may be NULL), :legal_representative_id_number (the case's legal
//! # representative, for market.registration; NULL when none), :today.
//! sql = "SELECT ... FROM residents WHERE id_number = :id_number"
//! # Optional: used instead of `sql` when the database is PostgreSQL.
//! # postgres_sql = "..."
//! # Optional: used instead of `sql` when the database is MySQL or MariaDB
//! # (`?` binds, `CONCAT` rather than `||`, `DATE_SUB`, ...).
//! # mysql_sql = "..."
//! ```
//!
//! Every key can be overridden from the environment as
//! `TONGBAN_<SECTION>_<KEY>` (`TONGBAN_DATABASE_URL`, `TONGBAN_LISTEN`,
//! `TONGBAN_TLS_CERT`, ...; see [`AdapterConfig::env_keys`]) when the file is
//! read with [`AdapterConfig::from_file`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tongban_core::Catalogue;
use tongban_core::config_env::{AppliedOverride, EnvKey, ValueKind, apply_env_overrides};

use crate::sql::{self, Dialect};

/// Name of the optional result column giving when the data was current.
pub const AS_OF_COLUMN: &str = "as_of";

/// A department adapter's configuration (TOML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterConfig {
    /// Department id as declared in the catalogue, e.g. `police`.
    pub department: String,
    /// `sqlite://<path>[?mode=rwc]`, `postgres://…` or `mysql://…` (MySQL
    /// or MariaDB; `mariadb://…` too). (`sqlite::memory:`
    /// gives each pooled connection its own empty database: only with
    /// `max_connections = 1`.)
    pub database_url: String,
    /// Catalogue file; the embedded default when absent. A relative path is
    /// resolved against the config file's folder by [`AdapterConfig::from_file`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalogue: Option<PathBuf>,
    /// Where a stand-alone adapter listens (used by the CLI).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Maximum pooled database connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long a query waits for a pooled connection before the department
    /// is reported unavailable.
    #[serde(default = "default_acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
    /// On SIGTERM, the longest a stand-alone adapter waits for in-flight
    /// calls before it cuts them off.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// Where a stand-alone adapter serves Prometheus `GET /metrics`; none
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<SocketAddr>,
    /// Where a stand-alone adapter also serves gRPC health alone, in
    /// plaintext (for probes without a client certificate); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_listen: Option<SocketAddr>,
    /// Mutual TLS. Without it the adapter serves plaintext (development
    /// only): anyone who can reach the port can ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<AdapterTls>,
    /// `[server]`: HTTP/2 and connection limits of the gRPC listeners; every
    /// key has a default, see [`tongban_trust::ServerLimits`].
    #[serde(
        default,
        skip_serializing_if = "tongban_trust::ServerLimits::is_default"
    )]
    pub server: tongban_trust::ServerLimits,
    /// Evidence type id → the query that answers it.
    #[serde(default)]
    pub evidence: BTreeMap<String, EvidenceQuery>,
}

/// The adapter's certificate, the CA its callers' certificates chain to, and
/// the only caller identities admitted (the exchange's), refused at the
/// handshake otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// SPIFFE ids, e.g. `spiffe://<trust-domain>/org/<code>/unit/exchange`.
    pub allowed_callers: Vec<String>,
}

/// The query answering one evidence type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceQuery {
    /// Returns at most one row whose columns are named after the evidence
    /// type's fields (every field, no others), plus an optional `as_of`.
    pub sql: String,
    /// PostgreSQL variant of `sql`, for when date arithmetic differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_sql: Option<String>,
    /// MySQL/MariaDB variant of `sql`, for where MySQL differs (no `||`
    /// concatenation or `CAST(… AS TEXT)`, `DATE_SUB` date arithmetic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql_sql: Option<String>,
}

impl EvidenceQuery {
    /// A query with the same text on every backend.
    pub fn portable(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            postgres_sql: None,
            mysql_sql: None,
        }
    }

    /// The query text for `dialect`.
    pub fn sql_for(&self, dialect: Dialect) -> &str {
        match (dialect, &self.postgres_sql, &self.mysql_sql) {
            (Dialect::Postgres, Some(pg), _) => pg,
            (Dialect::Mysql, _, Some(my)) => my,
            _ => &self.sql,
        }
    }

    /// Each text with the dialect it is written for: `sql` in `default`
    /// (the database's), each variant in its own.
    fn texts(&self, default: Dialect) -> impl Iterator<Item = (&str, Dialect)> {
        std::iter::once((self.sql.as_str(), default))
            .chain(self.postgres_sql.as_deref().map(|q| (q, Dialect::Postgres)))
            .chain(self.mysql_sql.as_deref().map(|q| (q, Dialect::Mysql)))
    }
}

fn names(applied: &[AppliedOverride]) -> String {
    applied
        .iter()
        .map(|a| a.var.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50061))
}
fn default_max_connections() -> u32 {
    8
}
fn default_acquire_timeout_ms() -> u64 {
    2000
}
fn default_drain_timeout_ms() -> u64 {
    10_000
}

/// A configuration that cannot be used, with the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{source_name}: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: {source}")]
    EnvOverride {
        source_name: String,
        source: tongban_core::config_env::EnvOverrideError,
    },
    #[error(transparent)]
    Catalogue(#[from] tongban_core::CatalogueError),
    #[error("department {0:?} is not in the catalogue")]
    UnknownDepartment(String),
    #[error("[server] {0}")]
    ServerLimits(#[from] tongban_trust::LimitsError),
    #[error("evidence type {0:?} is not in the catalogue")]
    UnknownEvidenceType(String),
    #[error("evidence type {evidence_type:?} belongs to department {owner:?}, not {department:?}")]
    ForeignEvidenceType {
        evidence_type: String,
        owner: String,
        department: String,
    },
    #[error(
        "department {department:?} serves {evidence_type:?} in the catalogue but the config has no [evidence.{evidence_type:?}] query"
    )]
    MissingQuery {
        department: String,
        evidence_type: String,
    },
    #[error("query for {evidence_type:?}: {source}")]
    BadSql {
        evidence_type: String,
        source: sql::SqlError,
    },
    #[error(
        "query for {evidence_type:?} returns column {column:?}, which is not a field of {evidence_type:?} (fields: {fields}; plus optional `as_of`)"
    )]
    UnknownColumn {
        evidence_type: String,
        column: String,
        fields: String,
    },
    #[error("query for {evidence_type:?} returns no column for field {field:?}")]
    MissingColumn {
        evidence_type: String,
        field: String,
    },
    #[error("query for {evidence_type:?} returns column {column:?} twice")]
    DuplicateColumn {
        evidence_type: String,
        column: String,
    },
    #[error("query for {evidence_type:?} is rejected by the database: {message}")]
    Prepare {
        evidence_type: String,
        message: String,
    },
    #[error(
        "cannot reach the department database (while preparing the query for {evidence_type:?}): {message}"
    )]
    DatabaseUnreachable {
        evidence_type: String,
        message: String,
    },
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("tls.allowed_callers: {0}")]
    AllowedCaller(String),
    #[error(
        "database_url {0:?} must start with sqlite:, postgres:// (or postgresql://) or mysql:// (or mariadb://)"
    )]
    UnsupportedDatabase(String),
}

impl AdapterTls {
    /// The server TLS settings, admitting only `allowed_callers`.
    pub fn server_config(&self) -> Result<tongban_trust::TlsServerConfig, ConfigError> {
        if self.allowed_callers.is_empty() {
            return Err(ConfigError::AllowedCaller(
                "name at least one caller (the exchange)".into(),
            ));
        }
        let allowed = self
            .allowed_callers
            .iter()
            .map(|c| {
                tongban_trust::PeerIdentity::parse_uri(c)
                    .map_err(|e| ConfigError::AllowedCaller(format!("{c:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(
            tongban_trust::TlsServerConfig::new(&self.cert, &self.key, &self.ca)
                .allow_only(allowed),
        )
    }
}

impl AdapterConfig {
    /// Parses a config; `source_name` names it in errors. Validate it with
    /// [`AdapterConfig::validate`] against the catalogue before use.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let place = e
                .span()
                .map(|s| {
                    let before = &text[..text.floor_char_boundary(s.start)];
                    let line = before.matches('\n').count() + 1;
                    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                    format!("{line}:{col}: ")
                })
                .unwrap_or_default();
            ConfigError::Parse {
                source_name: source_name.to_owned(),
                message: format!("{place}{}", e.message().trim()),
            }
        })
    }

    /// Every key an environment variable may override.
    pub fn env_keys() -> Vec<EnvKey> {
        use ValueKind::{Integer, String as Str, StringList};
        [
            ("department", Str),
            ("database_url", Str),
            ("catalogue", Str),
            ("listen", Str),
            ("max_connections", Integer),
            ("acquire_timeout_ms", Integer),
            ("drain_timeout_ms", Integer),
            ("admin_listen", Str),
            ("health_listen", Str),
            ("tls.cert", Str),
            ("tls.key", Str),
            ("tls.ca", Str),
            ("tls.allowed_callers", StringList),
        ]
        .into_iter()
        .map(|(path, kind)| EnvKey::new(path, kind))
        .chain(
            tongban_trust::ServerLimits::KEYS
                .iter()
                .map(|key| EnvKey::new(format!("server.{key}"), Integer)),
        )
        .collect()
    }

    /// Parses a config with the overrides among `vars` applied.
    pub fn from_toml_with_env<K: AsRef<str>, V: AsRef<str>>(
        text: &str,
        source_name: &str,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(Self, Vec<AppliedOverride>), ConfigError> {
        let parse = |message: String| ConfigError::Parse {
            source_name: source_name.to_owned(),
            message,
        };
        let mut document: toml::Table = toml::from_str(text).map_err(|e| parse(e.to_string()))?;
        let applied =
            apply_env_overrides(&mut document, &Self::env_keys(), vars).map_err(|source| {
                ConfigError::EnvOverride {
                    source_name: source_name.to_owned(),
                    source,
                }
            })?;
        if applied.is_empty() {
            // The text itself, for errors with line and column.
            return Ok((Self::from_toml(text, source_name)?, applied));
        }
        let config = document.try_into().map_err(|e: toml::de::Error| {
            parse(format!("{} (with {})", e.message().trim(), names(&applied)))
        })?;
        Ok((config, applied))
    }

    /// The configuration as TOML with the database password redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database_url = tongban_core::config_env::redact_url(&shown.database_url);
        shown.to_toml()
    }

    /// Reads a config file with the process's `TONGBAN_…` overrides; a
    /// relative `catalogue` or TLS path is made relative to it.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_file_with_env(path, std::env::vars()).map(|(config, _)| config)
    }

    /// [`from_file`](Self::from_file) with the given variables; also
    /// returns the overrides applied.
    pub fn from_file_with_env<K: AsRef<str>, V: AsRef<str>>(
        path: &Path,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(Self, Vec<AppliedOverride>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let (mut config, applied) =
            Self::from_toml_with_env(&text, &path.display().to_string(), vars)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        if let Some(cat) = &mut config.catalogue {
            fix(cat);
        }
        if let Some(tls) = &mut config.tls {
            fix(&mut tls.cert);
            fix(&mut tls.key);
            fix(&mut tls.ca);
        }
        Ok((config, applied))
    }

    /// Renders the config as TOML (e.g. to write out a reference config).
    pub fn to_toml(&self) -> String {
        // Every field is a string, number, map or path: serialisation cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Loads the catalogue this config names (or the embedded default).
    pub fn load_catalogue(&self) -> Result<Catalogue, ConfigError> {
        match &self.catalogue {
            None => Ok(Catalogue::embedded()),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Ok(Catalogue::from_toml(&text, &path.display().to_string())?)
            }
        }
    }

    /// The SQL dialect of `database_url`.
    pub fn dialect(&self) -> Result<Dialect, ConfigError> {
        dialect_of(&self.database_url)
    }

    /// Checks the config against the catalogue without touching the
    /// database: the department exists, it has a query for every evidence
    /// type it serves and none for others, and every query's placeholders
    /// are known. Result columns are checked when the source starts.
    pub fn validate(&self, catalogue: &Catalogue) -> Result<(), ConfigError> {
        let dialect = self.dialect()?;
        if self.max_connections == 0 {
            return Err(ConfigError::Zero("max_connections"));
        }
        if self.acquire_timeout_ms == 0 {
            return Err(ConfigError::Zero("acquire_timeout_ms"));
        }
        if self.drain_timeout_ms == 0 {
            return Err(ConfigError::Zero("drain_timeout_ms"));
        }
        self.server.check()?;
        if catalogue.department(&self.department).is_none() {
            return Err(ConfigError::UnknownDepartment(self.department.clone()));
        }
        if let Some(tls) = &self.tls {
            tls.server_config()?;
        }
        for (id, query) in &self.evidence {
            let def = catalogue
                .evidence(id)
                .ok_or_else(|| ConfigError::UnknownEvidenceType(id.clone()))?;
            if def.department != self.department {
                return Err(ConfigError::ForeignEvidenceType {
                    evidence_type: id.clone(),
                    owner: def.department.clone(),
                    department: self.department.clone(),
                });
            }
            for (text, dialect) in query.texts(dialect) {
                sql::rewrite(text, dialect).map_err(|source| ConfigError::BadSql {
                    evidence_type: id.clone(),
                    source,
                })?;
            }
        }
        for def in catalogue.evidence_types() {
            if def.department == self.department && !self.evidence.contains_key(&def.id) {
                return Err(ConfigError::MissingQuery {
                    department: self.department.clone(),
                    evidence_type: def.id.clone(),
                });
            }
        }
        Ok(())
    }
}

pub(crate) fn dialect_of(url: &str) -> Result<Dialect, ConfigError> {
    if url.starts_with("sqlite:") {
        Ok(Dialect::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Dialect::Postgres)
    } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        Ok(Dialect::Mysql)
    } else {
        Err(ConfigError::UnsupportedDatabase(url.to_owned()))
    }
}

/// Checks the columns a prepared query returns against the evidence type's
/// fields: each field exactly once, nothing else but an optional `as_of`.
pub(crate) fn check_columns(
    evidence_type: &tongban_core::EvidenceTypeDef,
    columns: &[String],
) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for c in columns {
        if !seen.insert(c.as_str()) {
            return Err(ConfigError::DuplicateColumn {
                evidence_type: evidence_type.id.clone(),
                column: c.clone(),
            });
        }
        if c != AS_OF_COLUMN && evidence_type.field(c).is_none() {
            return Err(ConfigError::UnknownColumn {
                evidence_type: evidence_type.id.clone(),
                column: c.clone(),
                fields: evidence_type
                    .fields
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    for f in &evidence_type.fields {
        if !seen.contains(f.name.as_str()) {
            return Err(ConfigError::MissingColumn {
                evidence_type: evidence_type.id.clone(),
                field: f.name.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn civil_config() -> String {
        r#"
department = "civil"
database_url = "sqlite::memory:"

[evidence."civil.marriage"]
sql = "SELECT marital_status, status_since FROM m WHERE id_number = :id_number"

[evidence."civil.subsistence"]
sql = "SELECT receiving, since, monthly_amount_yuan, next_review FROM s WHERE id_number = :id_number"

[evidence."civil.death"]
sql = "SELECT deceased, date_of_death FROM d WHERE id_number = :id_number"
"#
        .to_owned()
    }

    fn validate(text: &str) -> Result<AdapterConfig, ConfigError> {
        let c = AdapterConfig::from_toml(text, "test.toml")?;
        c.validate(&Catalogue::embedded())?;
        Ok(c)
    }

    #[test]
    fn valid_config_has_defaults() {
        let c = validate(&civil_config()).unwrap();
        assert_eq!(c.max_connections, 8);
        assert_eq!(c.acquire_timeout_ms, 2000);
        assert_eq!(c.listen.port(), 50061);
        assert_eq!(c.dialect().unwrap(), Dialect::Sqlite);
    }

    #[test]
    fn server_limits_default_and_are_overridden_and_checked() {
        let c = validate(&civil_config()).unwrap();
        assert_eq!(c.server, tongban_trust::ServerLimits::default());
        assert!(
            !c.to_toml().contains("[server]"),
            "defaults are not rendered"
        );
        let (c, applied) = AdapterConfig::from_toml_with_env(
            &civil_config(),
            "test.toml",
            [("TONGBAN_SERVER_MAX_CONCURRENT_STREAMS", "16")],
        )
        .unwrap();
        assert_eq!(applied.len(), 1);
        assert_eq!(c.server.max_concurrent_streams, 16);
        let (c, _) = AdapterConfig::from_toml_with_env(
            &civil_config(),
            "test.toml",
            [("TONGBAN_SERVER_MAX_FRAME_SIZE", "100")],
        )
        .unwrap();
        let err = c.validate(&Catalogue::embedded()).unwrap_err().to_string();
        assert_eq!(
            err,
            "[server] max_frame_size must be between 16384 and 16777215, not 100"
        );
    }

    #[test]
    fn environment_overrides_and_redaction() {
        let (c, applied) = AdapterConfig::from_toml_with_env(
            &civil_config(),
            "test.toml",
            [
                (
                    "TONGBAN_DATABASE_URL",
                    "postgres://civil:s3cret@db:5432/civil",
                ),
                ("TONGBAN_LISTEN", "0.0.0.0:50062"),
                ("TONGBAN_ADMIN_LISTEN", "127.0.0.1:9466"),
                ("TONGBAN_DRAIN_TIMEOUT_MS", "2500"),
            ],
        )
        .unwrap();
        assert_eq!(applied.len(), 4);
        c.validate(&Catalogue::embedded()).unwrap();
        assert_eq!(c.dialect().unwrap(), Dialect::Postgres);
        assert_eq!(c.listen.port(), 50062);
        assert_eq!(c.admin_listen.map(|a| a.port()), Some(9466));
        assert_eq!(c.drain_timeout_ms, 2500);
        let shown = c.to_redacted_toml();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("postgres://civil:REDACTED@db:5432/civil"));
        let err = AdapterConfig::from_toml_with_env(
            &civil_config(),
            "test.toml",
            [("TONGBAN_MAX_CONNECTIONS", "many")],
        )
        .unwrap_err();
        assert!(err.to_string().contains("TONGBAN_MAX_CONNECTIONS"), "{err}");
    }

    #[test]
    fn unknown_key_is_rejected_with_line() {
        let text = civil_config().replace("department = \"civil\"", "departement = \"civil\"");
        let e = validate(&text).unwrap_err().to_string();
        assert!(
            e.starts_with("test.toml: 2:1: unknown field `departement`"),
            "{e}"
        );
        let text = civil_config().replace("sql = \"SELECT deceased", "query = \"SELECT deceased");
        let e = validate(&text).unwrap_err().to_string();
        assert!(e.contains("unknown field `query`"), "{e}");
    }

    #[test]
    fn missing_query_is_named() {
        let text =
            civil_config().replace("[evidence.\"civil.death\"]", "[evidence.\"civil.deaths\"]");
        let e = validate(&text).unwrap_err();
        assert!(
            matches!(&e, ConfigError::UnknownEvidenceType(t) if t == "civil.deaths"),
            "{e}"
        );
        let text = civil_config().replace(
            "[evidence.\"civil.death\"]\nsql = \"SELECT deceased, date_of_death FROM d WHERE id_number = :id_number\"\n",
            "",
        );
        let e = validate(&text).unwrap_err();
        assert_eq!(
            e.to_string(),
            "department \"civil\" serves \"civil.death\" in the catalogue but the config has no [evidence.\"civil.death\"] query"
        );
    }

    #[test]
    fn foreign_department_and_bad_placeholders_are_rejected() {
        let text = format!(
            "{}\n[evidence.\"police.identity\"]\nsql = \"SELECT 1\"\n",
            civil_config()
        );
        assert!(matches!(
            validate(&text).unwrap_err(),
            ConfigError::ForeignEvidenceType { .. }
        ));
        let text = civil_config().replace(
            "WHERE id_number = :id_number\"\n\n[evidence.\"civil.death\"]",
            "WHERE id_number = :idnumber\"\n\n[evidence.\"civil.death\"]",
        );
        let e = validate(&text).unwrap_err().to_string();
        assert!(
            e.contains("civil.subsistence") && e.contains(":idnumber"),
            "{e}"
        );
        let text = civil_config().replace("department = \"civil\"", "department = \"tax\"");
        assert!(matches!(
            validate(&text).unwrap_err(),
            ConfigError::UnknownDepartment(_)
        ));
        let text = civil_config().replace("sqlite::memory:", "mssql://x");
        let e = validate(&text).unwrap_err();
        assert!(matches!(&e, ConfigError::UnsupportedDatabase(_)), "{e}");
        assert!(e.to_string().contains("mysql://"), "{e}");
    }

    #[test]
    fn columns_must_match_fields() {
        let cat = Catalogue::embedded();
        let death = cat.evidence("civil.death").unwrap();
        let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        check_columns(death, &cols(&["deceased", "date_of_death", "as_of"])).unwrap();
        let e = check_columns(death, &cols(&["deceased", "date_of_death", "cause"])).unwrap_err();
        assert!(e.to_string().contains("column \"cause\""), "{e}");
        let e = check_columns(death, &cols(&["deceased"])).unwrap_err();
        assert!(matches!(e, ConfigError::MissingColumn { field, .. } if field == "date_of_death"));
        let e =
            check_columns(death, &cols(&["deceased", "deceased", "date_of_death"])).unwrap_err();
        assert!(matches!(e, ConfigError::DuplicateColumn { .. }));
    }

    #[test]
    fn renders_and_reparses() {
        let c = validate(&civil_config()).unwrap();
        let again = AdapterConfig::from_toml(&c.to_toml(), "rendered").unwrap();
        assert_eq!(c, again);
        // The reference departments' configs: `tongban-devkit`'s tests.
    }

    #[test]
    fn each_backend_gets_its_variant_or_the_standard_query() {
        let q = EvidenceQuery {
            sql: "a".into(),
            postgres_sql: Some("b".into()),
            mysql_sql: Some("c".into()),
        };
        assert_eq!(q.sql_for(Dialect::Sqlite), "a");
        assert_eq!(q.sql_for(Dialect::Postgres), "b");
        assert_eq!(q.sql_for(Dialect::Mysql), "c");
        let q = EvidenceQuery::portable("a");
        assert_eq!(q.sql_for(Dialect::Postgres), "a");
        assert_eq!(q.sql_for(Dialect::Mysql), "a");
    }

    #[test]
    fn mysql_urls_and_variants_are_accepted_and_checked() {
        for url in [
            "mysql://root@127.0.0.1:3306/civil",
            "mariadb://civil:pw@db/civil",
        ] {
            let (c, _) = AdapterConfig::from_toml_with_env(
                &civil_config(),
                "test.toml",
                [("TONGBAN_DATABASE_URL", url)],
            )
            .unwrap();
            c.validate(&Catalogue::embedded()).unwrap();
            assert_eq!(c.dialect().unwrap(), Dialect::Mysql);
        }
        let (c, _) = AdapterConfig::from_toml_with_env(
            &civil_config(),
            "test.toml",
            [("TONGBAN_DATABASE_URL", "mysql://civil:s3cret@db:3306/civil")],
        )
        .unwrap();
        let shown = c.to_redacted_toml();
        assert!(!shown.contains("s3cret"), "{shown}");
        // A variant is checked in its own dialect, whatever the database.
        let text = civil_config().replace(
            "sql = \"SELECT deceased, date_of_death FROM d WHERE id_number = :id_number\"",
            "sql = \"SELECT deceased, date_of_death FROM d WHERE id_number = :id_number\"\nmysql_sql = \"SELECT deceased, date_of_death FROM d WHERE id_number = :idnumber\"",
        );
        let e = validate(&text).unwrap_err().to_string();
        assert!(e.contains("civil.death") && e.contains(":idnumber"), "{e}");
        let text = civil_config().replace(
            "sql = \"SELECT deceased, date_of_death FROM d WHERE id_number = :id_number\"",
            "sql = \"SELECT deceased, date_of_death FROM d WHERE id_number = :id_number\"\nmysql_sql = \"SELECT deceased, `date:today` FROM d WHERE id_number = :id_number\"",
        );
        let c = validate(&text).unwrap();
        assert!(c.evidence["civil.death"].mysql_sql.is_some());
        assert_eq!(AdapterConfig::from_toml(&c.to_toml(), "r").unwrap(), c);
    }
}
