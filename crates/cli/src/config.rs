//! `tongban config check FILE`: validates an exchange or adapter
//! configuration the way the process would load it (environment overrides
//! included) and prints the effective configuration, secrets redacted; or a
//! policy or catalogue file with the loaders the exchange uses, and prints
//! what it holds.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use tongban_core::config_env::AppliedOverride;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a file — an exchange or adapter configuration, an access
    /// policy or a matter catalogue (told apart by content, or `--kind`) —
    /// with the loaders the servers use, and print what was checked:
    /// the effective configuration with secrets redacted, or a summary of
    /// the policy or catalogue. Exits 1 with `file:line:column` on error.
    Check(CheckArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The file.
    pub file: PathBuf,
    /// What the file is, when its content does not say.
    #[arg(long, value_enum)]
    pub kind: Option<ConfigKind>,
    /// For a policy: the catalogue to check it against (default: the
    /// embedded catalogue, as an exchange configured without `catalogue`).
    #[arg(long)]
    pub catalogue: Option<PathBuf>,
}

/// What a file checked by `config check` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConfigKind {
    Exchange,
    Adapter,
    Policy,
    Catalogue,
}

/// Top-level keys only an access policy has (`[admin]` is in both a policy,
/// as callers, and an exchange configuration, as the metrics endpoint).
const POLICY_KEYS: [&str; 6] = [
    "grant",
    "groups",
    "portal",
    "organisations",
    "limits",
    "trust_domain",
];

/// Top-level keys of an exchange configuration (`ExchangeConfig`).
const EXCHANGE_KEYS: [&str; 14] = [
    "node",
    "listen",
    "catalogue",
    "policy",
    "reload_poll_ms",
    "plaintext_caller",
    "drain_timeout_ms",
    "health_probe_ms",
    "health_listen",
    "tls",
    "audit",
    "departments",
    "server",
    "console",
];

/// Tells the kind from the top-level keys: a catalogue has `[[department]]`,
/// `[[evidence]]` or `[[matter]]` tables; an adapter names its `department`
/// (a string); a policy has a policy table or key (`[[grant]]`, `[groups]`,
/// `[portal]`, `[organisations]`, `[limits]`, `trust_domain`) and no key of
/// an exchange configuration; anything else is read as an exchange
/// configuration, which says which of its keys is wrong. Unknown keys (a
/// typo) count for neither, so the loader can name them.
pub fn detect(text: &str) -> anyhow::Result<ConfigKind> {
    let document: toml::Table = toml::from_str(text).context("not valid TOML")?;
    let is_array = |key: &str| document.get(key).is_some_and(toml::Value::is_array);
    if is_array("department") || is_array("evidence") || is_array("matter") {
        return Ok(ConfigKind::Catalogue);
    }
    if document.get("department").is_some_and(toml::Value::is_str) {
        return Ok(ConfigKind::Adapter);
    }
    let has_any = |keys: &[&str]| document.keys().any(|k| keys.contains(&k.as_str()));
    if has_any(&POLICY_KEYS) && !has_any(&EXCHANGE_KEYS) {
        return Ok(ConfigKind::Policy);
    }
    Ok(ConfigKind::Exchange)
}

impl std::fmt::Display for ConfigKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Exchange => "an exchange configuration",
            Self::Adapter => "an adapter configuration",
            Self::Policy => "a policy",
            Self::Catalogue => "a catalogue",
        })
    }
}

/// Checks `path` as `kind` (detected when `None`) and returns the report.
pub fn check<K: AsRef<str>, V: AsRef<str>>(
    path: &Path,
    kind: Option<ConfigKind>,
    catalogue: Option<&Path>,
    vars: impl IntoIterator<Item = (K, V)>,
) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (kind, detected) = match kind {
        Some(kind) => (kind, false),
        None => (
            detect(&text).with_context(|| path.display().to_string())?,
            true,
        ),
    };
    let report = match kind {
        ConfigKind::Exchange | ConfigKind::Adapter => {
            if catalogue.is_some() {
                anyhow::bail!(
                    "--catalogue is for policies; a configuration names its own catalogue"
                );
            }
            check_report_as(path, kind, vars)
        }
        ConfigKind::Policy => policy_report(path, catalogue),
        ConfigKind::Catalogue => {
            if catalogue.is_some() {
                anyhow::bail!("--catalogue is for policies");
            }
            catalogue_report(path, &text)
        }
    };
    report.with_context(|| {
        if detected {
            format!("checked as {kind}, told by its keys (say otherwise with --kind)")
        } else {
            format!("checked as {kind}")
        }
    })
}

/// A policy's report: checked with the exchange's loader against the
/// catalogue named (or the embedded one), then what it holds.
pub fn policy_report(path: &Path, catalogue: Option<&Path>) -> anyhow::Result<String> {
    let (catalogue, source) = crate::policy::load_catalogue(catalogue)?;
    let policy = tongban_exchange::reload::load_policy(path, &catalogue)?;
    let s = policy.summary();
    let l = policy.limits();
    Ok(format!(
        "# {}: valid policy (version {}), against {source}\n\
         grants: {} ({} for discovery only) naming {} caller patterns\n\
         service points: {}\n\
         administrators: {}\n\
         portals: {}\n\
         organisations named: {}\n\
         trust domain: {}\n\
         limits: requests_per_second={} burst={} max_gather_evidence={} max_request_bytes={} refusals_per_second={} refusal_burst={}\n",
        path.display(),
        policy.version(),
        s.grants,
        s.discover_grants,
        s.grant_callers,
        s.service_points,
        s.admins,
        s.portals,
        s.organisations,
        policy.trust_domain().unwrap_or("(any)"),
        l.requests_per_second,
        l.burst,
        l.max_gather_evidence,
        l.max_request_bytes,
        l.refusals_per_second,
        l.refusal_burst,
    ))
}

/// A catalogue's report: checked with the exchange's loader, then counted.
pub fn catalogue_report(path: &Path, text: &str) -> anyhow::Result<String> {
    let catalogue = tongban_core::Catalogue::from_toml(text, &path.display().to_string())?;
    let fields: usize = catalogue
        .evidence_types()
        .iter()
        .map(|e| e.fields.len())
        .sum();
    let sealed = catalogue
        .matters()
        .iter()
        .filter(|m| m.disclosure_delay_days.is_some())
        .count();
    let departments: Vec<&str> = catalogue
        .departments()
        .iter()
        .map(|d| d.id.as_str())
        .collect();
    Ok(format!(
        "# {}: valid catalogue\n\
         departments: {} ({})\n\
         evidence types: {} ({fields} fields)\n\
         matters: {} ({sealed} sealed from their subjects for a time)\n",
        path.display(),
        departments.len(),
        departments.join(", "),
        catalogue.evidence_types().len(),
        catalogue.matters().len(),
    ))
}

/// The report `config check` prints for a file whose kind is detected.
pub fn check_report<K: AsRef<str>, V: AsRef<str>>(
    path: &Path,
    vars: impl IntoIterator<Item = (K, V)>,
) -> anyhow::Result<String> {
    check(path, None, None, vars)
}

/// An exchange or adapter configuration's report: what the file is, which
/// variables overrode it, and the effective configuration (redacted).
fn check_report_as<K: AsRef<str>, V: AsRef<str>>(
    path: &Path,
    kind: ConfigKind,
    vars: impl IntoIterator<Item = (K, V)>,
) -> anyhow::Result<String> {
    let (kind, applied, effective) = match kind {
        ConfigKind::Exchange => {
            let (node, applied) = crate::node::NodeConfig::load_with_env(path, vars)?;
            let config = &node.exchange;
            let catalogue = tongban_exchange::server::load_catalogue(config)?;
            tongban_exchange::reload::load_policy(&config.policy, &catalogue)?;
            for id in config.departments.keys() {
                if catalogue.department(id).is_none() {
                    anyhow::bail!("department {id:?} is not in the catalogue");
                }
            }
            ("exchange", applied, node.to_redacted_toml())
        }
        ConfigKind::Adapter => {
            let (config, applied) = tongban_adapter::AdapterConfig::from_file_with_env(path, vars)?;
            let catalogue = config.load_catalogue()?;
            config.validate(&catalogue)?;
            ("adapter", applied, config.to_redacted_toml())
        }
        ConfigKind::Policy | ConfigKind::Catalogue => {
            anyhow::bail!("not a process configuration")
        }
    };
    Ok(format!(
        "# {}: valid {kind} configuration\n{}\n{effective}",
        path.display(),
        overrides(&applied)
    ))
}

fn overrides(applied: &[AppliedOverride]) -> String {
    if applied.is_empty() {
        return "# no TONGBAN_* environment overrides".into();
    }
    applied
        .iter()
        .map(|a| format!("# {} overrides {}", a.var, a.path))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn run(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Check(args) => {
            print!(
                "{}",
                check(
                    &args.file,
                    args.kind,
                    args.catalogue.as_deref(),
                    std::env::vars()
                )?
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_and_adapter_files_are_told_apart_and_redacted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("policy.toml"),
            "[[grant]]\ncallers = [\"org/91350100M000100Y43/unit/bench\"]\nmatters = [\"temporary-id-card\"]\n",
        )
        .unwrap();
        let exchange = dir.path().join("exchange.toml");
        std::fs::write(
            &exchange,
            "policy = \"policy.toml\"\nplaintext_caller = \"org/91350100M000100Y43/unit/bench\"\n\
             [departments.police]\nendpoints = [\"http://127.0.0.1:7101\"]\n",
        )
        .unwrap();
        let report = check_report(
            &exchange,
            [("TONGBAN_AUDIT_STORE", "postgres://audit:pa55@db/tongban")],
        )
        .unwrap();
        assert!(report.contains("valid exchange configuration"), "{report}");
        assert!(report.contains("TONGBAN_AUDIT_STORE overrides audit.store"));
        assert!(report.contains("postgres://audit:REDACTED@db/tongban"));
        assert!(!report.contains("pa55"));
        assert!(report.contains("drain_timeout_ms = 10000"), "{report}");

        let adapter = dir.path().join("police.toml");
        let rendered = tongban_devkit::reference::config(
            tongban_devkit::reference::Dept::Police,
            "postgres://police:hunter2@db/police",
        )
        .to_toml();
        std::fs::write(&adapter, rendered).unwrap();
        let report = check_report(&adapter, std::iter::empty::<(String, String)>()).unwrap();
        assert!(report.contains("valid adapter configuration"), "{report}");
        assert!(!report.contains("hunter2"), "{report}");

        std::fs::write(
            &adapter,
            "department = \"tax\"\ndatabase_url = \"sqlite::memory:\"\n",
        )
        .unwrap();
        let err = check_report(&adapter, std::iter::empty::<(String, String)>()).unwrap_err();
        assert!(format!("{err:#}").contains("tax"), "{err:#}");
    }

    fn deploy(file: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/config")
            .join(file)
    }

    fn none() -> std::iter::Empty<(String, String)> {
        std::iter::empty()
    }

    #[test]
    fn policy_and_catalogue_files_are_recognised_and_summarised() {
        let report = check(&deploy("policy.toml"), None, None, none()).unwrap();
        assert!(report.contains("valid policy (version "), "{report}");
        assert!(
            report.contains("against the embedded catalogue"),
            "{report}"
        );
        assert!(
            report.contains("grants: 5 (1 for discovery only) naming 4 caller patterns"),
            "{report}"
        );
        assert!(report.contains("service points: 3"), "{report}");
        assert!(report.contains("administrators: 1"), "{report}");
        assert!(
            report.contains("trust domain: panzhihua.tongban.test"),
            "{report}"
        );
        assert!(report.contains("max_request_bytes=16384"), "{report}");
        let report = check(
            &deploy("policy.toml"),
            None,
            Some(&deploy("catalogue.toml")),
            none(),
        )
        .unwrap();
        assert!(report.contains("catalogue.toml"), "{report}");

        let report = check(&deploy("catalogue.toml"), None, None, none()).unwrap();
        assert!(report.contains("valid catalogue"), "{report}");
        assert!(
            report.contains("departments: 5 (police, civil, hrss, market, medins)"),
            "{report}"
        );
        // The other deploy files keep their kinds.
        for (file, kind) in [
            ("exchange.toml", ConfigKind::Exchange),
            ("exchange-postgres.toml", ConfigKind::Exchange),
            ("civil.toml", ConfigKind::Adapter),
            ("hrss.toml", ConfigKind::Adapter),
            ("police.toml", ConfigKind::Adapter),
            ("policy.toml", ConfigKind::Policy),
            ("catalogue.toml", ConfigKind::Catalogue),
        ] {
            let text = std::fs::read_to_string(deploy(file)).unwrap();
            assert_eq!(detect(&text).unwrap(), kind, "{file}");
        }
    }

    #[test]
    fn broken_policies_and_catalogues_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let good = std::fs::read_to_string(deploy("policy.toml")).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        for (bad, want) in [
            // An unknown key in a grant.
            (
                good.replace(
                    "matters = [\"temporary-id-card\", \"household-registration-certificate\"]",
                    "matters = [\"temporary-id-card\", \"household-registration-certificate\"]\nmaters = []",
                ),
                ":15:",
            ),
            // A grant naming a matter the catalogue lacks.
            (
                good.replace("[\"temporary-id-card\",", "[\"temporary-card\","),
                ":14:",
            ),
            // A field the evidence type lacks.
            (
                good.replace("\"alive\"]", "\"salary\"]"),
                "no field \"salary\"",
            ),
            // A bad caller path.
            (
                good.replace(
                    "org/12510400TB0000087Y/unit/hotline-96196",
                    "org/12510400TB0000087Y/hotline-96196",
                ),
                ":31:",
            ),
        ] {
            let path = write("policy.toml", &bad);
            let e = check(&path, None, None, none()).unwrap_err();
            let e = format!("{e:#}");
            assert!(
                e.contains(&format!("{}{want}", path.display())) || e.contains(want),
                "{want}: {e}"
            );
            assert!(e.contains("policy.toml:"), "{e}");
        }
        // A policy with a misspelt table is still read as a policy.
        let path = write("policy.toml", &good.replace("[limits]", "[limit]"));
        let e = format!("{:#}", check(&path, None, None, none()).unwrap_err());
        assert!(e.contains("unknown field `limit`"), "{e}");
        assert!(e.contains("checked as a policy, told by its keys"), "{e}");
        // Content that names no kind is read as an exchange configuration,
        // and the error says how to say otherwise; with --kind, that loader
        // speaks.
        let path = write("mystery.toml", "colour = \"blue\"\n");
        let e = check(&path, None, None, none()).unwrap_err();
        assert!(
            format!("{e:#}").contains("an exchange configuration"),
            "{e:#}"
        );
        assert!(format!("{e:#}").contains("--kind"), "{e:#}");
        let e = check(&path, Some(ConfigKind::Policy), None, none()).unwrap_err();
        assert!(
            format!("{e:#}").contains("mystery.toml:1:1: unknown field `colour`"),
            "{e:#}"
        );

        let catalogue = std::fs::read_to_string(deploy("catalogue.toml")).unwrap();
        let path = write(
            "catalogue.toml",
            &catalogue.replacen(
                "title_zh = \"攀枝花市公安局\"",
                "title_zh = \"攀枝花市公安局\"\nchief = \"x\"",
                1,
            ),
        );
        let e = format!("{:#}", check(&path, None, None, none()).unwrap_err());
        assert!(e.contains("catalogue.toml:") && e.contains("chief"), "{e}");
        // --catalogue only means something for a policy.
        assert!(
            check(
                &deploy("catalogue.toml"),
                None,
                Some(&deploy("catalogue.toml")),
                none()
            )
            .is_err()
        );
    }
}
