//! Environment overrides for the processes' TOML configuration files.
//!
//! Every key `a.b.c` of a configuration can be overridden by the variable
//! `TONGBAN_A_B_C` (upper case, `.` and `-` become `_`): `listen` by
//! `TONGBAN_LISTEN`, `audit.store` by `TONGBAN_AUDIT_STORE`,
//! `departments.police.endpoints` by `TONGBAN_DEPARTMENTS_POLICE_ENDPOINTS`.
//! Values are typed by the key: strings as given, integers and booleans
//! parsed, lists comma-separated. An override wins over the file, which wins
//! over the built-in default. Pure: the caller passes the variables in.

use toml::{Table, Value};

/// The type of an overridable key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    String,
    Integer,
    Bool,
    /// Comma-separated in the variable.
    StringList,
}

/// One key that an environment variable may override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvKey {
    /// Dotted path in the TOML document, e.g. `audit.store`.
    pub path: String,
    pub kind: ValueKind,
}

impl EnvKey {
    pub fn new(path: impl Into<String>, kind: ValueKind) -> Self {
        Self {
            path: path.into(),
            kind,
        }
    }

    /// The variable that overrides this key.
    pub fn var(&self) -> String {
        env_var_name(&self.path)
    }
}

/// Prefix of every override variable.
pub const ENV_PREFIX: &str = "TONGBAN_";

/// `audit.store` -> `TONGBAN_AUDIT_STORE`.
pub fn env_var_name(path: &str) -> String {
    let mut name = String::from(ENV_PREFIX);
    name.extend(path.chars().map(|c| match c {
        '.' | '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    name
}

/// An override that was applied: the variable and the key it set. Values
/// are not kept (they may be secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedOverride {
    pub var: String,
    pub path: String,
}

/// An override that could not be applied; names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct EnvOverrideError {
    /// The variable, e.g. `TONGBAN_AUDIT_STORE`.
    pub var: String,
    pub problem: OverrideProblem,
}

/// What is wrong with an override.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideProblem {
    #[error("{0:?} is not an integer")]
    NotInteger(String),
    #[error("{0:?} is not true or false")]
    NotBool(String),
    #[error("empty key")]
    EmptyKey,
    /// A part of the key's path is a value, not a table, in the file.
    #[error("{0} is not a table in the file")]
    NotATable(String),
}

/// Sets every key of `keys` whose variable is among `vars`.
pub fn apply_env_overrides<I, K, V>(
    document: &mut Table,
    keys: &[EnvKey],
    vars: I,
) -> Result<Vec<AppliedOverride>, EnvOverrideError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.as_ref().starts_with(ENV_PREFIX))
        .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
        .collect();
    let mut applied = Vec::new();
    for key in keys {
        let var = key.var();
        let Some((_, raw)) = vars.iter().find(|(k, _)| *k == var) else {
            continue;
        };
        let applied_to =
            parse_value(raw, key.kind).and_then(|value| set_path(document, &key.path, value));
        if let Err(problem) = applied_to {
            return Err(EnvOverrideError { var, problem });
        }
        applied.push(AppliedOverride {
            var,
            path: key.path.clone(),
        });
    }
    Ok(applied)
}

fn parse_value(raw: &str, kind: ValueKind) -> Result<Value, OverrideProblem> {
    let raw = raw.trim();
    Ok(match kind {
        ValueKind::String => Value::String(raw.to_owned()),
        ValueKind::Integer => Value::Integer(
            raw.parse()
                .map_err(|_| OverrideProblem::NotInteger(raw.to_owned()))?,
        ),
        ValueKind::Bool => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Value::Boolean(true),
            "false" | "0" | "no" => Value::Boolean(false),
            _ => return Err(OverrideProblem::NotBool(raw.to_owned())),
        },
        ValueKind::StringList => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
    })
}

fn set_path(document: &mut Table, path: &str, value: Value) -> Result<(), OverrideProblem> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else {
        return Err(OverrideProblem::EmptyKey);
    };
    let mut table = document;
    for part in parts {
        let entry = table
            .entry(part.to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| OverrideProblem::NotATable(part.to_owned()))?;
    }
    table.insert(last.to_owned(), value);
    Ok(())
}

/// A connection URL with its password (`user:password@`, `password=...`
/// query parameter) replaced by `REDACTED`, for printing configurations.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                out.replace_range(start..rest_start + at, "REDACTED");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=REDACTED"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<EnvKey> {
        vec![
            EnvKey::new("listen", ValueKind::String),
            EnvKey::new("reload_poll_ms", ValueKind::Integer),
            EnvKey::new("audit.store", ValueKind::String),
            EnvKey::new("admin.enabled", ValueKind::Bool),
            EnvKey::new("departments.civil-affairs.endpoints", ValueKind::StringList),
        ]
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cr@t@db:5432/x?sslmode=require&password=p2"),
            "postgres://app:REDACTED@db:5432/x?sslmode=require&password=REDACTED"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(
            redact_url("sqlite://police.db?mode=rwc"),
            "sqlite://police.db?mode=rwc"
        );
        assert_eq!(redact_url("audit.db"), "audit.db");
    }

    #[test]
    fn names_follow_the_path() {
        assert_eq!(env_var_name("audit.store"), "TONGBAN_AUDIT_STORE");
        assert_eq!(
            env_var_name("departments.civil-affairs.endpoints"),
            "TONGBAN_DEPARTMENTS_CIVIL_AFFAIRS_ENDPOINTS"
        );
    }

    #[test]
    fn overrides_win_and_are_typed() {
        let mut doc: Table =
            toml::from_str("listen = \"127.0.0.1:1\"\n[audit]\nstore = \"a.db\"\n").unwrap();
        let applied = apply_env_overrides(
            &mut doc,
            &keys(),
            [
                ("TONGBAN_LISTEN", "0.0.0.0:7443"),
                ("TONGBAN_RELOAD_POLL_MS", "250"),
                ("TONGBAN_AUDIT_STORE", "postgres://db/x"),
                ("TONGBAN_ADMIN_ENABLED", "false"),
                (
                    "TONGBAN_DEPARTMENTS_CIVIL_AFFAIRS_ENDPOINTS",
                    "http://a:1, http://b:2",
                ),
                ("TONGBAN_UNRELATED", "x"),
                ("HOME", "/root"),
            ],
        )
        .unwrap();
        assert_eq!(applied.len(), 5);
        assert_eq!(doc["listen"].as_str(), Some("0.0.0.0:7443"));
        assert_eq!(doc["reload_poll_ms"].as_integer(), Some(250));
        assert_eq!(doc["audit"]["store"].as_str(), Some("postgres://db/x"));
        assert_eq!(doc["admin"]["enabled"].as_bool(), Some(false));
        let endpoints = doc["departments"]["civil-affairs"]["endpoints"]
            .as_array()
            .unwrap();
        assert_eq!(endpoints.len(), 2);
        assert_eq!(endpoints[1].as_str(), Some("http://b:2"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let mut doc = Table::new();
        let err = apply_env_overrides(&mut doc, &keys(), [("TONGBAN_RELOAD_POLL_MS", "soon")])
            .unwrap_err();
        assert_eq!(err.var, "TONGBAN_RELOAD_POLL_MS");
        assert_eq!(
            err.to_string(),
            "TONGBAN_RELOAD_POLL_MS: \"soon\" is not an integer"
        );
        let mut doc: Table = toml::from_str("audit = 1").unwrap();
        assert!(apply_env_overrides(&mut doc, &keys(), [("TONGBAN_AUDIT_STORE", "x")]).is_err());
    }
}
