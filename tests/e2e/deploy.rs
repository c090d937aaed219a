//! deploy/ cannot rot: every file parses, every example configuration loads
//! with the loaders the processes use, the adapter configurations are the
//! reference ones rendered, the catalogue copy is the embedded default, and
//! the container, compose and Kubernetes files hold what operators rely on.
//!
//! `TONGBAN_BLESS=1 cargo test -p tongban-tests --test e2e deploy::` rewrites the
//! rendered adapter configurations after a deliberate change.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tongban_adapter::{AdapterConfig, AdapterTls};
use tongban_devkit::reference::{self, Dept};
use tongban_exchange::ExchangeConfig;

const NO_ENV: [(&str, &str); 0] = [];
const EXCHANGE_IDENTITY: &str =
    "spiffe://panzhihua.tongban.test/org/12510400TB000001XU/unit/exchange";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn yaml_documents(text: &str) -> Vec<serde_norway::Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .map(|d| serde_norway::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// A systemd unit: `[Section]` headers and `Key=Value` lines.
fn parse_unit(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.to_owned());
            sections.entry(name.to_owned()).or_default();
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("{line:?}"));
        let section = current.clone().expect("a key before any section");
        sections
            .get_mut(&section)
            .unwrap()
            .insert(key.trim().to_owned(), value.trim().to_owned());
    }
    sections
}

#[test]
fn every_file_in_deploy_parses() {
    let all = files(&deploy_dir());
    assert!(all.len() >= 15, "{all:?}");
    for path in &all {
        let text = std::fs::read_to_string(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let shown = path.display();
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => {
                toml::from_str::<toml::Table>(&text).unwrap_or_else(|e| panic!("{shown}: {e}"));
            }
            Some("yaml" | "yml") => assert!(!yaml_documents(&text).is_empty(), "{shown}"),
            Some("json") => {
                serde_json::from_str::<serde_json::Value>(&text)
                    .unwrap_or_else(|e| panic!("{shown}: {e}"));
            }
            Some("service") => {
                let unit = parse_unit(&text);
                for section in ["Unit", "Service", "Install"] {
                    assert!(unit.contains_key(section), "{shown}: no [{section}]");
                }
                let service = &unit["Service"];
                assert!(
                    service["ExecStart"].contains("/usr/local/bin/tongban"),
                    "{shown}"
                );
                assert_eq!(service["KillSignal"], "SIGTERM", "{shown}");
                assert!(service.contains_key("TimeoutStopSec"), "{shown}");
            }
            Some("sql") => assert!(text.contains("CREATE DATABASE"), "{shown}"),
            Some("md") => assert!(text.starts_with("# "), "{shown}"),
            _ if name == "Dockerfile" => {
                let instructions: Vec<&str> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .collect();
                assert!(instructions[0].starts_with("FROM "), "{shown}");
                assert!(text.contains("--bin tongban"), "{shown}");
                assert!(text.contains("ENTRYPOINT"), "{shown}");
            }
            _ if name.ends_with(".dockerignore") => assert!(text.contains("target"), "{shown}"),
            _ => panic!("{shown}: no check for this kind of file; add one"),
        }
    }
}

#[test]
fn the_catalogue_copy_is_the_embedded_default() {
    let copy = std::fs::read_to_string(deploy_dir().join("config/catalogue.toml")).unwrap();
    assert_eq!(
        copy,
        include_str!("../../crates/core/src/default_catalogue.toml"),
        "deploy/config/catalogue.toml must be a verbatim copy of the embedded catalogue"
    );
}

/// Loads an exchange configuration as `tongban serve` does, with its
/// catalogue and policy.
fn load_exchange(path: &Path) -> ExchangeConfig {
    let (config, _) = ExchangeConfig::load_with_env(path, NO_ENV)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let catalogue = tongban_exchange::server::load_catalogue(&config).unwrap();
    tongban_exchange::reload::load_policy(&config.policy, &catalogue)
        .unwrap_or_else(|e| panic!("{}: {e}", config.policy.display()));
    for (id, department) in &config.departments {
        assert!(catalogue.department(id).is_some(), "{id}");
        assert!(department.identity.is_some(), "{id} pins its identity");
    }
    assert!(
        config.tls.is_some(),
        "{}: examples use mutual TLS",
        path.display()
    );
    config
}

/// Loads an adapter configuration as `tongban adapter` does.
fn load_adapter(path: &Path) -> AdapterConfig {
    let (config, _) = AdapterConfig::from_file_with_env(path, NO_ENV)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let catalogue = config.load_catalogue().unwrap();
    config
        .validate(&catalogue)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    config
}

#[test]
fn example_configurations_load_with_the_real_loaders() {
    let dir = deploy_dir().join("config");
    let single = load_exchange(&dir.join("exchange.toml"));
    assert!(!single.audit.is_postgres());
    assert!(single.admin.listen.ip().is_loopback());
    assert_eq!(single.departments.len(), 5);
    let multi = load_exchange(&dir.join("exchange-postgres.toml"));
    assert!(multi.audit.is_postgres());
    assert_eq!(
        tongban_core::config_env::redact_url(&multi.audit.store),
        multi.audit.store,
        "no password in the file"
    );
    for dept in [
        Dept::Police,
        Dept::Civil,
        Dept::Hrss,
        Dept::Market,
        Dept::Medins,
    ] {
        let config = load_adapter(&dir.join(format!("{}.toml", dept.id())));
        assert_eq!(config.department, dept.id());
    }
}

/// The adapter configuration shipped for `dept`: the reference one, served
/// with mutual TLS to the exchange only.
fn rendered_adapter(dept: Dept) -> String {
    let mut config = reference::config(
        dept,
        &format!("sqlite:///var/lib/tongban/{}.db?mode=rwc", dept.id()),
    );
    config.listen = std::net::SocketAddr::from(([0, 0, 0, 0], dept.default_port()));
    config.admin_listen = Some(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        9465 + (dept.default_port() - 50061),
    )));
    config.health_listen = Some(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        8081 + (dept.default_port() - 50061),
    )));
    config.tls = Some(AdapterTls {
        cert: format!("/etc/tongban/pki/{}.pem", dept.id()).into(),
        key: format!("/etc/tongban/pki/{}.key", dept.id()).into(),
        ca: "/etc/tongban/pki/ca.pem".into(),
        allowed_callers: vec![EXCHANGE_IDENTITY.into()],
    });
    format!(
        "# The reference {id} department's adapter (synthetic data; seed it with\n\
         # `tongban adapter --config {id}.toml --seed-reference`).\n\
         # Rendered from tongban_devkit::reference::config by tests/e2e/deploy.rs;\n\
         # regenerate with TONGBAN_BLESS=1 cargo test -p tongban-tests --test e2e deploy::.\n\
         # Override any key as TONGBAN_<SECTION>_<KEY> (e.g. TONGBAN_DATABASE_URL).\n\n{toml}",
        id = dept.id(),
        toml = config.to_toml()
    )
}

#[test]
fn adapter_configurations_are_the_rendered_reference_ones() {
    let dir = deploy_dir().join("config");
    for dept in [
        Dept::Police,
        Dept::Civil,
        Dept::Hrss,
        Dept::Market,
        Dept::Medins,
    ] {
        let path = dir.join(format!("{}.toml", dept.id()));
        let expected = rendered_adapter(dept);
        if std::env::var_os("TONGBAN_BLESS").is_some() {
            std::fs::write(&path, &expected).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            committed,
            expected,
            "{} drifted from the reference rendering (TONGBAN_BLESS=1 to rewrite)",
            path.display()
        );
    }
}

fn get<'a>(v: &'a serde_norway::Value, path: &[&str]) -> &'a serde_norway::Value {
    let mut v = v;
    for key in path {
        v = v
            .get(*key)
            .unwrap_or_else(|| panic!("no {key} in {path:?}"));
    }
    v
}

#[test]
fn compose_runs_the_whole_system_with_a_collector() {
    let dir = deploy_dir().join("compose");
    let text = std::fs::read_to_string(dir.join("compose.yaml")).unwrap();
    let compose = &yaml_documents(&text)[0];
    let services = get(compose, &["services"]).as_mapping().unwrap();
    for name in [
        "exchange",
        "police",
        "civil",
        "hrss",
        "market",
        "medins",
        "postgres",
        "otel-collector",
        "pki",
    ] {
        assert!(
            services.contains_key(serde_norway::Value::from(name)),
            "compose service {name}"
        );
    }
    let exchange = get(compose, &["services", "exchange"]);
    let env = serde_norway::to_string(get(exchange, &["environment"])).unwrap();
    assert!(env.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{env}");
    assert!(env.contains("TONGBAN_AUDIT_STORE"), "{env}");
    let collector = std::fs::read_to_string(dir.join("otel-collector.yaml")).unwrap();
    let collector = &yaml_documents(&collector)[0];
    get(collector, &["receivers", "otlp", "protocols", "grpc"]);
    let pipelines = get(collector, &["service", "pipelines"]);
    get(pipelines, &["traces"]);
    get(pipelines, &["metrics"]);
}

#[test]
fn kubernetes_manifests_probe_health_limit_resources_and_mount_certificates_from_secrets() {
    let dir = deploy_dir().join("kubernetes");
    let mut deployments = 0;
    let mut config_files: BTreeMap<String, String> = BTreeMap::new();
    for path in files(&dir) {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in yaml_documents(&text) {
            let Some(kind) = doc.get("kind").and_then(|k| k.as_str()) else {
                continue;
            };
            match kind {
                "Deployment" | "StatefulSet" => {
                    deployments += 1;
                    let spec = get(&doc, &["spec", "template", "spec"]);
                    let secret_volumes: Vec<&str> = get(spec, &["volumes"])
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .filter_map(|v| v.get("secret"))
                        .map(|s| get(s, &["secretName"]).as_str().unwrap())
                        .collect();
                    assert!(
                        !secret_volumes.is_empty(),
                        "{}: certificates from a Secret",
                        path.display()
                    );
                    for container in get(spec, &["containers"]).as_sequence().unwrap() {
                        for probe in ["readinessProbe", "livenessProbe"] {
                            get(container, &[probe, "grpc", "port"]);
                        }
                        get(container, &["resources", "limits", "memory"]);
                        get(container, &["resources", "limits", "cpu"]);
                        get(container, &["resources", "requests", "memory"]);
                    }
                }
                "ConfigMap" => {
                    if let Some(data) = doc.get("data").and_then(|d| d.as_mapping()) {
                        for (k, v) in data {
                            config_files.insert(
                                k.as_str().unwrap().to_owned(),
                                v.as_str().unwrap().to_owned(),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
    assert_eq!(deployments, 6, "the exchange and five adapters");
    // Copies of deploy/config/ stay copies.
    for name in [
        "policy.toml",
        "police.toml",
        "civil.toml",
        "hrss.toml",
        "market.toml",
        "medins.toml",
    ] {
        let original = std::fs::read_to_string(deploy_dir().join("config").join(name)).unwrap();
        assert_eq!(config_files.get(name), Some(&original), "ConfigMap {name}");
    }
    // The configuration files in ConfigMaps load like the others.
    let tmp = tempfile::tempdir().unwrap();
    for (name, text) in &config_files {
        std::fs::write(tmp.path().join(name), text).unwrap();
    }
    assert!(
        config_files.contains_key("exchange.toml"),
        "{config_files:?}"
    );
    load_exchange(&tmp.path().join("exchange.toml"));
    for dept in ["police", "civil", "hrss", "market", "medins"] {
        let name = format!("{dept}.toml");
        assert!(config_files.contains_key(&name), "{name}");
        load_adapter(&tmp.path().join(name));
    }
}
