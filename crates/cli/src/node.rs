//! An exchange node as `tongban serve` runs it: the exchange library's
//! node, and next to it the administrators' web console (`[console]`),
//! composed here so the exchange does not depend on the console.
//!
//! The console reads the node's audit store, pins the node's own checkpoint
//! key (and any `verifier_keys`), and records every administrator's act in
//! the node's log.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tongban_audit::{Keyring, LogSigner, VerifierKey, origin_for_node};
use tongban_console::{Console, ConsoleBackend, ConsoleServer, ConsoleSettings};
use tongban_core::config_env::{AppliedOverride, EnvKey, ValueKind, apply_env_overrides};
use tongban_exchange::{ExchangeConfig, ExchangeHandle, StartOptions};

/// An exchange node's configuration file: the exchange's settings and the
/// console's, which the exchange keeps unread (`ExchangeConfig::console`).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `console` is `None`: its table is parsed into [`Self::console`].
    pub exchange: ExchangeConfig,
    pub console: ConsoleSettings,
}

/// `[console]` keys an environment variable may override
/// (`TONGBAN_CONSOLE_<KEY>`).
const CONSOLE_ENV_KEYS: [(&str, ValueKind); 6] = [
    ("console.enabled", ValueKind::Bool),
    ("console.listen", ValueKind::String),
    ("console.secure_cookie", ValueKind::Bool),
    ("console.session_idle_secs", ValueKind::Integer),
    ("console.session_max_secs", ValueKind::Integer),
    ("console.allowed_hosts", ValueKind::StringList),
];

impl NodeConfig {
    /// Reads, parses and checks an exchange configuration file, with the
    /// process's `TONGBAN_…` environment overrides applied.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Self::load_with_env(path, std::env::vars()).map(|(config, _)| config)
    }

    /// [`load`](Self::load) with the given variables instead of the
    /// process environment; also returns the overrides applied.
    pub fn load_with_env<K: AsRef<str>, V: AsRef<str>>(
        path: &Path,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> anyhow::Result<(Self, Vec<AppliedOverride>)> {
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        let (mut exchange, mut applied) =
            ExchangeConfig::load_with_env(path, vars.iter().cloned())?;
        let invalid = |message: String| anyhow::anyhow!("{}: {message}", path.display());
        let mut document = toml::Table::new();
        document.insert(
            "console".into(),
            toml::Value::Table(exchange.console.take().unwrap_or_default()),
        );
        let keys: Vec<EnvKey> = CONSOLE_ENV_KEYS
            .iter()
            .map(|(key, kind)| EnvKey::new(*key, *kind))
            .collect();
        applied.extend(
            apply_env_overrides(&mut document, &keys, vars).map_err(|e| invalid(e.to_string()))?,
        );
        let table = document
            .remove("console")
            .unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
        let mut console: ConsoleSettings = table
            .try_into()
            .map_err(|e: toml::de::Error| invalid(format!("console: {e}")))?;
        console.check().map_err(|e| invalid(e.to_string()))?;
        console.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok((Self { exchange, console }, applied))
    }

    /// The effective configuration as TOML, database passwords and
    /// administrators' password hashes redacted.
    pub fn to_redacted_toml(&self) -> String {
        #[derive(serde::Serialize)]
        struct Shown<'a> {
            console: &'a ConsoleSettings,
        }
        let mut console = self.console.clone();
        for hash in console.users.values_mut() {
            *hash = "<redacted>".into();
        }
        // Plain data (strings, numbers, paths, maps): serialisation cannot fail.
        let console = toml::to_string_pretty(&Shown { console: &console }).unwrap_or_default();
        format!("{}\n{console}", self.exchange.to_redacted_toml())
    }
}

/// A running node: the exchange and, when configured, its console.
#[derive(Debug)]
pub struct Node {
    exchange: ExchangeHandle,
    console: Option<ConsoleServer>,
}

impl Node {
    pub fn exchange(&self) -> &ExchangeHandle {
        &self.exchange
    }

    /// Where the administrators' console listens, when it runs.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console.as_ref().map(ConsoleServer::local_addr)
    }

    /// Stops the console, then the exchange (see `ExchangeHandle::shutdown`):
    /// the console writes to the node's log, which the exchange closes.
    pub async fn shutdown(self) -> Result<(), tonic::transport::Error> {
        if let Some(console) = self.console {
            console.shutdown().await;
        }
        self.exchange.shutdown().await
    }
}

/// Starts the exchange node, then its console when `[console]` asks for it.
pub async fn start(config: NodeConfig, options: StartOptions) -> anyhow::Result<Node> {
    let exchange = tongban_exchange::start(config.exchange.clone(), options).await?;
    // Like the metrics, a console that cannot start must not stop the node.
    let console = match start_console(&config, &exchange).await {
        Ok(console) => console,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "administrators' console not started"
            );
            None
        }
    };
    Ok(Node { exchange, console })
}

/// Starts the console when `[console]` asks for it and the node writes an
/// audit log; `Ok(None)` when it is off.
async fn start_console(
    config: &NodeConfig,
    exchange: &ExchangeHandle,
) -> anyhow::Result<Option<ConsoleServer>> {
    if !config.console.is_active() {
        return Ok(None);
    }
    let log = exchange
        .audit_log()
        .context("the console needs the node's audit log")?;
    let audit = &config.exchange.audit;
    let store = audit.open_store().await.map_err(anyhow::Error::msg)?;
    let backend = ConsoleBackend {
        store: Arc::clone(&store),
        pseudonymizer: audit.pseudonymizer().map_err(anyhow::Error::msg)?,
        log: log.clone(),
        keyring: console_keyring(&config.exchange, &config.console.verifier_keys)?,
    };
    let console = Console::new(config.console.clone(), backend)?;
    Ok(Some(
        ConsoleServer::bind(config.console.listen, console).await?,
    ))
}

/// The pinned keys: this node's (from its signing key) and those in the
/// `verifier_keys` files (one verifier key per line).
pub fn console_keyring(
    config: &ExchangeConfig,
    verifier_keys: &[std::path::PathBuf],
) -> anyhow::Result<Keyring> {
    let own = LogSigner::load(&config.audit.signing_key, &origin_for_node(&config.node))
        .with_context(|| format!("signing key {}", config.audit.signing_key.display()))?;
    let mut keyring = Keyring::new().with(own.verifier());
    for path in verifier_keys {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("console verifier key {}", path.display()))?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let key = VerifierKey::parse(line)
                .with_context(|| format!("console verifier key {}", path.display()))?;
            keyring.add(key);
        }
    }
    Ok(keyring)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: &str = "org/91350100M000100Y43/unit/bench";

    fn write(dir: &Path, console: &str) -> std::path::PathBuf {
        let path = dir.join("exchange.toml");
        std::fs::write(
            &path,
            format!("policy = \"policy.toml\"\nplaintext_caller = \"{CALLER}\"\n{console}"),
        )
        .unwrap();
        path
    }

    #[test]
    fn console_table_is_read_here_with_its_overrides_and_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "[console]\nenabled = true\nverifier_keys = [\"other.pub\"]\n",
        );
        let (config, applied) = NodeConfig::load_with_env(
            &path,
            [
                ("TONGBAN_CONSOLE_LISTEN", "127.0.0.1:0"),
                ("TONGBAN_LISTEN", "127.0.0.1:0"),
            ],
        )
        .unwrap();
        assert!(config.console.is_active());
        assert_eq!(config.console.listen.port(), 0);
        assert_eq!(config.exchange.listen.port(), 0);
        assert_eq!(config.console.verifier_keys, [dir.path().join("other.pub")]);
        assert!(config.exchange.console.is_none());
        let vars: Vec<&str> = applied.iter().map(|a| a.var.as_str()).collect();
        assert!(vars.contains(&"TONGBAN_CONSOLE_LISTEN"), "{vars:?}");
        // The printed configuration loads back, [console] included.
        let shown = config.to_redacted_toml();
        std::fs::write(&path, &shown).unwrap();
        let again = NodeConfig::load_with_env(&path, std::iter::empty::<(&str, &str)>())
            .unwrap()
            .0;
        assert!(again.console.enabled, "{shown}");
    }

    #[test]
    fn console_mistakes_are_named_at_load() {
        let dir = tempfile::tempdir().unwrap();
        for (console, named) in [
            ("[console]\ncolour = 1\n", "colour"),
            ("[console.users]\nalice = \"secret\"\n", "Argon2"),
            ("[console]\nsession_idle_secs = 0\n", "session lifetimes"),
        ] {
            let path = write(dir.path(), console);
            let e = NodeConfig::load_with_env(&path, std::iter::empty::<(&str, &str)>())
                .unwrap_err()
                .to_string();
            assert!(e.contains(named), "{console}: {e}");
        }
    }
}
