//! `tongban audit …` as an administrator uses it: the real binary against a
//! local mTLS deployment (search, subject, export, proof, checkpoints), then
//! `verify` directly on the store — clean, and after one row is altered
//! with raw SQL — and `prune`'s legal floor.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Output;

use tongban_audit::AuditStore;

use tongban_devkit::local::{CALL_TIMEOUT, LocalDeployment};
use tongban_devkit::reference::stories;
use tongban_proto::v1::{CaseContext, GatherRequest, Subject};

async fn tongban(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_tongban"))
        .args(args)
        .env_remove("TONGBAN_EXCHANGE")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .await
        .unwrap()
}

async fn tongban_owned<const N: usize>(args: [&str; N]) -> Output {
    tongban(&args).await
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `--exchange … --cert … --key … --ca …` for a PKI party.
fn connect(local: &LocalDeployment, party: &str) -> Vec<String> {
    let id = local.pki().get(party).unwrap();
    vec![
        "--exchange".into(),
        local.exchange_url(),
        "--cert".into(),
        id.cert.display().to_string(),
        "--key".into(),
        id.key.display().to_string(),
        "--ca".into(),
        local.pki().ca_cert.display().to_string(),
        "--operator".into(),
        "auditor-zhao".into(),
        "--reason".into(),
        "cli test".into(),
    ]
}

async fn audit(command: &str, local: &LocalDeployment, party: &str, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["audit".into(), command.into()];
    args.extend(connect(local, party));
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    tongban(&refs).await
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_use_the_audit_commands_and_verify_catches_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalDeployment::start(dir.path()).await.unwrap();
    let worker = stories::LAID_OFF_WORKER;
    let mut clerk = local.client("dongli-community").await.unwrap();
    let mut request = tonic::Request::new(GatherRequest {
        case: Some(CaseContext {
            matter: "unemployment-benefit".into(),
            case_number: "XQ-DL-2026-0950".into(),
            operator_id: "clerk-he".into(),
        }),
        subject: Some(Subject {
            id_number: worker.id_number.into(),
            name: worker.name.into(),
            ..Default::default()
        }),
        evidence_types: Vec::new(),
        ..Default::default()
    });
    request.set_timeout(CALL_TIMEOUT);
    let items = clerk
        .gather(request)
        .await
        .unwrap()
        .into_inner()
        .items
        .len();
    let log = local.exchange().audit_log().unwrap();
    log.flush().await.unwrap();
    let pub_key = dir.path().join("audit-signing.pub");

    // search --json: one JSON line per entry, subject pseudonymised.
    let out = audit(
        "search",
        &local,
        "admin",
        &["--subject", worker.id_number, "--json"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), items, "{}", text(&out));
    for l in &lines {
        assert_eq!(l["matter"], "unemployment-benefit");
        assert_eq!(l["kind"], "GatherItem");
        assert_eq!(l["subject"].as_str().unwrap().len(), 64);
    }
    assert!(!stdout(&out).contains(worker.id_number));
    // An enterprise's entries, found by its credit code: market
    // regulation's two answers about it, not its legal representative's.
    let company = stories::SALIAN_MANGO;
    let mut hall = local.client("salian-township").await.unwrap();
    let mut request = tonic::Request::new(GatherRequest {
        case: Some(CaseContext {
            matter: "enterprise-social-insurance-registration".into(),
            case_number: "MY-SL-2026-0950".into(),
            operator_id: "clerk-luo".into(),
        }),
        subjects: vec![
            Subject {
                credit_code: company.credit_code.into(),
                role: "enterprise".into(),
                ..Default::default()
            },
            Subject {
                id_number: company.legal_representative.id_number.into(),
                role: "legal-representative".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    request.set_timeout(CALL_TIMEOUT);
    hall.gather(request).await.unwrap();
    log.flush().await.unwrap();
    let out = audit(
        "search",
        &local,
        "admin",
        &["--credit-code", company.credit_code, "--json"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let mut found: Vec<String> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|l| l["evidence_type"].as_str().unwrap().to_owned())
        .collect();
    found.sort();
    assert_eq!(
        found,
        ["market.abnormal", "market.registration"],
        "{}",
        text(&out)
    );
    let out = audit(
        "search",
        &local,
        "admin",
        &["--credit-code", "91510421TB6A1B2C3N"],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("checksum check failed"),
        "{}",
        text(&out)
    );
    // The table, filtered by outcome name.
    let out = audit(
        "search",
        &local,
        "admin",
        &["--outcome", "OK", "--caller-unit", "dongli-community"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains("TIME (UTC)"), "{}", text(&out));
    assert!(
        stdout(&out).contains(&format!("{items} entries")),
        "{}",
        text(&out)
    );

    // subject: printable report, identity masked.
    let out = audit("subject", &local, "admin", &[worker.id_number]).await;
    assert!(out.status.success(), "{}", text(&out));
    let report = stdout(&out);
    assert!(report.contains("个人信息查询记录"), "{report}");
    assert!(
        report.contains(&format!("Accesses · 查询次数: {items}")),
        "{report}"
    );
    assert!(report.contains("XQ-DL-2026-0950"), "{report}");
    assert!(!report.contains(worker.id_number), "{report}");

    // A service point is refused, and the command fails.
    let out = audit("search", &local, "dongli-community", &[]).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("NOT_ADMINISTRATOR"), "{}", text(&out));

    // checkpoints --save, then proof against the pinned key.
    log.flush().await.unwrap();
    let saved = dir.path().join("saved-checkpoints.txt");
    let out = audit(
        "checkpoints",
        &local,
        "admin",
        &["--log-key", &s(&pub_key), "--save", &s(&saved)],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains("signature OK"), "{}", text(&out));
    let out = audit(
        "proof",
        &local,
        "admin",
        &["exchange-1", "1", "--log-key", &s(&pub_key)],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains("OK: entry 1"), "{}", text(&out));
    // Under someone else's key, the same proof fails.
    let other_key = dir.path().join("other.pub");
    let other = tongban_audit::LogSigner::generate("tongban/audit/exchange-1").unwrap();
    std::fs::write(&other_key, format!("{}\n", other.verifier())).unwrap();
    let out = audit(
        "proof",
        &local,
        "admin",
        &["exchange-1", "1", "--log-key", &s(&other_key)],
    )
    .await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains("FAILED"), "{}", text(&out));

    // export --out: the whole log, in order.
    let exported = dir.path().join("export.jsonl");
    let out = audit("export", &local, "admin", &["--out", &s(&exported)]).await;
    assert!(out.status.success(), "{}", text(&out));
    let export = std::fs::read_to_string(&exported).unwrap();
    for (i, line) in export.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["index"], i as u64);
    }
    assert!(export.lines().count() > items);

    local.shutdown().await.unwrap();
    let db = dir.path().join("audit.db");
    let verify = |extra: Vec<String>| {
        let mut args = vec![
            "audit".to_string(),
            "verify".into(),
            "--store".into(),
            s(&db),
            "--key".into(),
            s(&pub_key),
            "--checkpoint".into(),
            s(&saved),
        ];
        args.extend(extra);
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            tongban(&refs).await
        }
    };

    // Clean log: exit 0.
    let out = verify(vec![]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains("OK: every entry"), "{}", text(&out));
    // A key that is not the node's: every checkpoint fails.
    let out = tongban(&[
        "audit",
        "verify",
        "--store",
        &s(&db),
        "--key",
        &s(&other_key),
    ])
    .await;
    assert!(!out.status.success(), "{}", text(&out));
    // A missing store is an error, not an empty log that verifies.
    let out = tongban(&[
        "audit",
        "verify",
        "--store",
        &s(&dir.path().join("nope.db")),
        "--key",
        &s(&pub_key),
    ])
    .await;
    assert!(!out.status.success(), "{}", text(&out));

    // One field of entry 2 altered behind the log's back.
    let raw = tongban_audit::SqliteStore::open(&db).await.unwrap();
    sqlx::query("UPDATE audit_entries SET case_number = 'XQ-DL-2026-9999' WHERE node = 'exchange-1' AND idx = 2")
        .execute(raw.pool())
        .await
        .unwrap();
    raw.close().await;
    let out = verify(vec![]).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("ERROR node exchange-1, entry 2:"),
        "{}",
        text(&out)
    );
    let out = verify(vec!["--json".into()]).await;
    assert!(!out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["location"]["Entry"] == 2 && f["severity"] == "Error"),
        "{report}"
    );

    // prune: the legal minimum holds unless forced; fresh entries stay.
    let key = dir.path().join("audit-signing.key");
    let prune = |days: &str| {
        let args = [
            "audit",
            "prune",
            "--store",
            &s(&db),
            "--node",
            "exchange-1",
            "--signing-key",
            &s(&key),
            "--operator",
            "auditor-zhao",
            "--older-than-days",
            days,
        ]
        .map(String::from);
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            tongban(&refs).await
        }
    };
    let out = prune("30").await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("183"), "{}", text(&out));
    let out = prune("183").await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains("nothing to prune"), "{}", text(&out));
}

/// `prune` and `verify` on a node's store, the node being a live writer of
/// its log (as `tongban serve` is: same lease) and then stopped. Not a
/// whole deployment: its daily retention sweep would race the test for the
/// old entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_leaves_a_signed_record_that_verify_checks_and_refuses_a_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let signer = tongban_audit::LogSigner::generate("tongban/audit/exchange-1").unwrap();
    std::fs::write(
        dir.path().join("audit-signing.key"),
        signer.to_note_private_key(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("audit-signing.pub"),
        format!("{}\n", signer.verifier()),
    )
    .unwrap();
    let store = std::sync::Arc::new(tongban_audit::SqliteStore::open(&db).await.unwrap());
    let log = tongban_audit::AuditLog::open(
        store.clone(),
        signer,
        tongban_audit::AuditConfig::new("exchange-1"),
    )
    .await
    .unwrap();
    let old = chrono::Utc::now() - chrono::TimeDelta::days(200);
    for time in [old; 6].into_iter().chain([chrono::Utc::now(); 2]) {
        let entry = tongban_audit::AuditEntry::new(tongban_audit::EntryKind::Lookup, time);
        log.append(entry).await.unwrap();
    }
    log.flush().await.unwrap();
    let pub_key = dir.path().join("audit-signing.pub");
    let args = [
        "audit",
        "prune",
        "--store",
        &s(&db),
        "--node",
        "exchange-1",
        "--signing-key",
        &s(&dir.path().join("audit-signing.key")),
        "--operator",
        "auditor-zhao",
        "--reason",
        "ticket OPS-17",
        "--older-than-days",
        "183",
    ]
    .map(String::from);
    let prune = || async {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        tongban(&refs).await
    };

    // The running node holds its writer lease: refused, nothing touched.
    let out = prune().await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(
            "node exchange-1 is running; its own retention sweep prunes it, or stop it first"
        ),
        "{}",
        text(&out)
    );
    log.shutdown().await.unwrap();
    let raw = store;
    assert_eq!(raw.log_state("exchange-1").await.unwrap().pruned_before, 0);

    // Stopped: the prune record goes in first, then the old entries go.
    let out = prune().await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("node exchange-1: 6 entries deleted; entries from index 6 on remain")
            && stdout(&out).contains("prune record at entry 8"),
        "{}",
        text(&out)
    );
    let record = raw.entry("exchange-1", 8).await.unwrap().unwrap().entry;
    assert_eq!(record.kind, tongban_audit::EntryKind::Prune);
    assert_eq!(record.operator, "auditor-zhao");
    let parsed = tongban_audit::PruneRecord::parse(&record.detail).unwrap();
    assert_eq!(
        (parsed.before_index, parsed.reason.as_str()),
        (6, "ticket OPS-17")
    );
    let (db_arg, key_arg) = (s(&db), s(&pub_key));
    let verify = || tongban_owned(["audit", "verify", "--store", &db_arg, "--key", &key_arg]);
    let out = verify().await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains("OK: every entry"), "{}", text(&out));

    // Two more entries deleted and the boundary moved past the record's.
    sqlx::query("DELETE FROM audit_entries WHERE node = 'exchange-1' AND idx < 8")
        .execute(raw.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE audit_logs SET pruned_before = 8 WHERE node = 'exchange-1'")
        .execute(raw.pool())
        .await
        .unwrap();
    raw.close().await;
    let out = verify().await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains(
            "ERROR node exchange-1, log: entries below 8 were removed but the newest prune authority (the record at entry 8) allows pruning only below 6"
        ),
        "{}",
        text(&out)
    );
}
