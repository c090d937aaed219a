//! kill -9 the writer mid-load, restart: every receipt it ever printed is in
//! the store and verify passes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common::*;
use tongban_audit::{
    AuditConfig, AuditLog, Keyring, LogSigner, VerifyOptions, origin_for_node, verify,
};

async fn crash_and_recover(b: Backend) {
    let db = TestDb::new(b).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("n1.key");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tongban-audit-load"));
    match b {
        Backend::Sqlite => {
            cmd.arg("--sqlite")
                .arg(db.dir.as_ref().unwrap().path().join("audit.db"));
        }
        Backend::Postgres => {
            cmd.arg("--postgres")
                .arg(pg_url())
                .arg("--schema")
                .arg(db.schema.as_ref().unwrap());
        }
    }
    cmd.arg("--key")
        .arg(&key)
        .args([
            "--node",
            "n1",
            "--concurrency",
            "32",
            "--count",
            "100000000",
            "--print-receipts",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut receipts: Vec<(u64, String)> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while receipts.len() < 2000 && std::time::Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(parts[0], "RECEIPT");
        receipts.push((parts[2].parse().unwrap(), parts[3].to_string()));
    }
    child.kill().unwrap(); // SIGKILL: no flush, no final checkpoint.
    // Receipts already written to the pipe were received by the client too.
    for line in lines.map_while(Result::ok) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() == 4 {
            receipts.push((parts[2].parse().unwrap(), parts[3].to_string()));
        }
    }
    child.wait().unwrap();
    assert!(
        receipts.len() >= 2000,
        "load produced only {} receipts",
        receipts.len()
    );

    // Restart: the node's lease is free again and the state is recovered.
    let store = db.reopen().await;
    let signer = LogSigner::load(&key, &origin_for_node("n1")).unwrap();
    let ring = Keyring::new().with(signer.verifier());
    let log = AuditLog::open(store.clone(), signer, AuditConfig::new("n1"))
        .await
        .unwrap();
    for (index, leaf) in &receipts {
        let e = store
            .entry("n1", *index)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{b:?}: acknowledged entry {index} is missing"));
        assert_eq!(&hex::encode(e.leaf_hash), leaf);
    }
    let r = log.append(entry(1, chrono::Utc::now())).await.unwrap();
    assert!(r.index as usize >= receipts.len());
    log.shutdown().await.unwrap();
    let report = verify(
        store.as_ref(),
        &ring,
        &VerifyOptions::default(),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert!(
        report.is_ok() && report.findings.is_empty(),
        "{b:?}: {:#?}",
        report.findings
    );
    assert_eq!(report.nodes[0].tree_size, r.index + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_loses_no_acknowledged_entry() {
    for b in BACKENDS {
        crash_and_recover(b).await;
    }
}
