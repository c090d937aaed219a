//! `tongban config check FILE`: validates an exchange or adapter
//! configuration the way the process would load it (environment overrides
//! included) and prints the effective configuration, secrets redacted.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use tongban_core::config_env::AppliedOverride;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file (exchange or adapter, detected) and
    /// print the effective configuration with secrets redacted.
    Check(CheckArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The configuration file.
    pub file: PathBuf,
}

/// Which process a configuration file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    Exchange,
    Adapter,
}

/// Adapter configurations name their department; exchange ones never do.
pub fn detect(text: &str) -> anyhow::Result<ConfigKind> {
    let document: toml::Table = toml::from_str(text).context("not valid TOML")?;
    Ok(if document.contains_key("department") {
        ConfigKind::Adapter
    } else {
        ConfigKind::Exchange
    })
}

/// The report `config check` prints: what the file is, which variables
/// overrode it, and the effective configuration (redacted).
pub fn check_report<K: AsRef<str>, V: AsRef<str>>(
    path: &Path,
    vars: impl IntoIterator<Item = (K, V)>,
) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (kind, applied, effective) = match detect(&text)? {
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
            print!("{}", check_report(&args.file, std::env::vars())?);
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
}
