//! Starts the administrators' web console (`[console]`) next to the node:
//! it reads the node's audit store, pins the node's own checkpoint key (and
//! any `verifier_keys`), and records every administrator's act in the
//! node's log.

use std::sync::Arc;

use tongban_audit::{Keyring, LogSigner, VerifierKey, origin_for_node};
use tongban_console::{Console, ConsoleBackend, ConsoleServer};

use crate::audit_service::AuditReader;
use crate::config::ExchangeConfig;

/// The pinned keys: this node's (from its signing key) and the configured
/// files' (one verifier key per line).
pub fn console_keyring(config: &ExchangeConfig) -> Result<Keyring, String> {
    let own = LogSigner::load(&config.audit.signing_key, &origin_for_node(&config.node))
        .map_err(|e| format!("signing key {}: {e}", config.audit.signing_key.display()))?;
    let mut keyring = Keyring::new().with(own.verifier());
    for path in &config.console.verifier_keys {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("console verifier key {}: {e}", path.display()))?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let key = VerifierKey::parse(line)
                .map_err(|e| format!("console verifier key {}: {e}", path.display()))?;
            keyring.add(key);
        }
    }
    Ok(keyring)
}

/// Starts the console when `[console]` asks for it and the node writes an
/// audit log; `Ok(None)` when it is off.
pub async fn start_console(
    config: &ExchangeConfig,
    reader: Option<&AuditReader>,
) -> Result<Option<ConsoleServer>, String> {
    if !config.console.is_active() {
        return Ok(None);
    }
    let Some(reader) = reader else {
        return Err("the console needs the node's audit log".into());
    };
    let store = config.audit.open_store().await?;
    let backend = ConsoleBackend {
        store: Arc::clone(&store),
        pseudonymizer: config.audit.pseudonymizer()?,
        log: reader.log().clone(),
        keyring: console_keyring(config)?,
    };
    let console = Console::new(config.console.clone(), backend).map_err(|e| e.to_string())?;
    ConsoleServer::bind(config.console.listen, console)
        .await
        .map(Some)
        .map_err(|e| e.to_string())
}
