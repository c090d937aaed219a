//! `tongban witness`: run a witness that cosigns audit-log checkpoints
//! (C2SP tlog-witness), or make its key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use tongban_audit::{Keyring, VerifierKey, WitnessKey, WitnessSigner};
use tongban_witness::{Witness, WitnessServer, WitnessState};

#[derive(Debug, Subcommand)]
pub enum WitnessCommand {
    /// Serve `POST /add-checkpoint` for the logs whose keys are given.
    Serve(ServeArgs),
    /// Make a witness key: writes the private key file (mode 0600, never
    /// overwritten) and prints the verifier key to give the exchange.
    Keygen {
        /// The witness's name, e.g. `witness.supervision.example.gov.cn`.
        #[arg(long)]
        name: String,
        /// Where to write the private key.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (plain HTTP: requests and answers are signed).
    #[arg(long, default_value = "127.0.0.1:7380")]
    pub listen: SocketAddr,
    /// The witness's private key file (`tongban witness keygen`).
    #[arg(long)]
    pub key: PathBuf,
    /// The witness's name (must match the key file).
    #[arg(long)]
    pub name: String,
    /// A log's verifier key (its name is the log's origin,
    /// `tongban/audit/<node>`), as text or a file of keys; repeatable.
    #[arg(long = "log-key", required = true)]
    pub log_keys: Vec<String>,
    /// Directory of the witness's state (latest cosigned checkpoint per
    /// log, split-view evidence).
    #[arg(long)]
    pub state: PathBuf,
}

pub async fn run(command: WitnessCommand) -> anyhow::Result<()> {
    match command {
        WitnessCommand::Keygen { name, out } => {
            let signer = WitnessSigner::generate(&name)?;
            // The error names the file already.
            signer.save(&out)?;
            println!("{}", signer.verifier());
            Ok(())
        }
        WitnessCommand::Serve(args) => serve(args).await,
    }
}

/// Log keys given as text or files of keys (one per line); at least one.
pub fn log_keys(args: &[String]) -> anyhow::Result<Vec<VerifierKey>> {
    let mut out = Vec::new();
    for arg in args {
        if let Ok(key) = VerifierKey::parse(arg) {
            out.push(key);
            continue;
        }
        let text = std::fs::read_to_string(Path::new(arg)).with_context(|| {
            format!("--log-key {arg:?} is neither a verifier key nor a readable file")
        })?;
        let ring = Keyring::parse(&text).with_context(|| format!("verifier keys in {arg}"))?;
        out.extend(ring.keys().iter().cloned());
    }
    if out.is_empty() {
        bail!("no log keys given (--log-key)");
    }
    Ok(out)
}

/// Witness keys given as text or files of keys; used by `audit verify` and
/// `transparency history`.
pub fn witness_keys(args: &[String]) -> anyhow::Result<Vec<WitnessKey>> {
    let mut out: Vec<WitnessKey> = Vec::new();
    for arg in args {
        if let Ok(key) = WitnessKey::parse(arg) {
            out.push(key);
            continue;
        }
        let text = std::fs::read_to_string(Path::new(arg)).with_context(|| {
            format!("--witness-key {arg:?} is neither a witness key nor a readable file")
        })?;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            out.push(WitnessKey::parse(line).with_context(|| format!("witness key in {arg}"))?);
        }
    }
    out.dedup();
    Ok(out)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let signer = WitnessSigner::load(&args.key, &args.name)?;
    let keys = log_keys(&args.log_keys)?;
    let state = WitnessState::open(&args.state)?;
    let witness = Arc::new(Witness::open(signer, &keys, state)?);
    let server = WitnessServer::bind(args.listen, witness.clone())
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    eprintln!(
        "witness {} listening on http://{} for {} log(s); key {}",
        witness.name(),
        server.local_addr(),
        witness.sizes().len(),
        witness.key()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    server.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_text_or_files() {
        let dir = tempfile::tempdir().unwrap();
        let w = WitnessSigner::generate("witness.a").unwrap();
        let text = w.verifier().to_string();
        let file = dir.path().join("w.pub");
        std::fs::write(&file, format!("# witnesses\n{text}\n")).unwrap();
        let keys = witness_keys(&[text.clone(), file.display().to_string()]).unwrap();
        assert_eq!(keys, vec![w.verifier()]);
        assert!(witness_keys(&["nonsense".into()]).is_err());
        let log = tongban_audit::LogSigner::generate("tongban/audit/n1").unwrap();
        assert_eq!(
            log_keys(&[log.verifier().to_string()]).unwrap(),
            vec![log.verifier()]
        );
        // A log key is not a witness key (different signature type).
        assert!(witness_keys(&[log.verifier().to_string()]).is_err());
    }

    #[test]
    fn command_line_parses() {
        use clap::{CommandFactory, Parser};
        crate::Cli::command().debug_assert();
        let serve = [
            "tongban",
            "witness",
            "serve",
            "--key",
            "k",
            "--name",
            "w",
            "--log-key",
            "a",
            "--log-key",
            "b",
            "--state",
            "s",
        ];
        let cli = crate::Cli::try_parse_from(serve).unwrap();
        let crate::Command::Witness(WitnessCommand::Serve(args)) = cli.command else {
            panic!("not witness serve");
        };
        assert_eq!(args.log_keys, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(args.listen.to_string(), "127.0.0.1:7380");
        let verify = ["tongban", "audit", "verify", "--store", "x", "--key", "k"];
        let with_quorum = [&verify[..], &["--witness-quorum", "1"]].concat();
        assert!(
            crate::Cli::try_parse_from(with_quorum).is_err(),
            "quorum needs keys"
        );
        let ok = [
            &verify[..],
            &[
                "--witness-key",
                "w1",
                "--witness-key",
                "w2",
                "--witness-quorum",
                "1",
            ],
        ]
        .concat();
        assert!(crate::Cli::try_parse_from(ok).is_ok());
    }

    /// `audit verify --witness-key`: the latest checkpoint of every node
    /// must carry the quorum; the report names the node and what is missing.
    #[tokio::test]
    async fn audit_verify_checks_the_witness_quorum() {
        use tongban_audit::{AuditConfig, AuditEntry, AuditLog, EntryKind, SqliteStore};
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn tongban_audit::AuditStore> =
            Arc::new(SqliteStore::open(&dir.path().join("a.db")).await.unwrap());
        let signer = tongban_audit::LogSigner::generate("tongban/audit/n1").unwrap();
        let log = AuditLog::open(store.clone(), signer, AuditConfig::new("n1"))
            .await
            .unwrap();
        log.append(AuditEntry::new(EntryKind::Lookup, chrono::Utc::now()))
            .await
            .unwrap();
        let note = log.flush().await.unwrap().unwrap();
        log.shutdown().await.unwrap();
        let (a, b) = (
            WitnessSigner::generate("witness.a").unwrap(),
            WitnessSigner::generate("witness.b").unwrap(),
        );
        let body = format!("{}\n", note.split_once("\n\n").unwrap().0);
        store
            .add_cosignature("n1", 1, &a.cosign(&body, 1_700_000_000).unwrap())
            .await
            .unwrap();
        let keys = [a.verifier(), b.verifier()];
        let nodes = ["n1".to_string(), "n2".to_string()];
        let checks = crate::audit::check_witnesses(store.as_ref(), &nodes, &keys, 2)
            .await
            .unwrap();
        let text = crate::audit::witness_report_text(&checks, 2, 2);
        assert!(
            text.contains("FAILED: node n1: latest checkpoint (size 1): 2 of 2 required witness cosignatures, only witness.a valid"),
            "{text}"
        );
        assert!(text.contains("node n2: no checkpoint yet"), "{text}");
        let checks = crate::audit::check_witnesses(store.as_ref(), &nodes[..1], &keys, 1)
            .await
            .unwrap();
        assert!(checks[0].error.is_none());
        assert_eq!(checks[0].cosigned_by, vec!["witness.a".to_string()]);
    }
}
