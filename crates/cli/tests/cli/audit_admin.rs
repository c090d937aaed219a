//! The audit log's surface over real mutual TLS: administrators search,
//! report, export and prove (and each of their reads is itself logged);
//! service points are refused; callers prove their own receipts offline;
//! with the audit store gone, nothing is released.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use tongban_audit::{Keyring, LogSigner, SubjectPseudonymizer, origin_for_node};
use tongban_cli::audit::check_proof;
use tongban_devkit::local::{CALL_TIMEOUT, LocalDeployment};
use tongban_devkit::reference::stories::{self, Story};
use tongban_proto::v1::audit_client::AuditClient;
use tongban_proto::v1::{
    AdminContext, AuditExportRequest, AuditFilter, AuditReceipt, AuditRecord, AuditSearchRequest,
    CaseContext, GatherRequest, InclusionProofRequest, ListCheckpointsRequest, LookupRequest,
    ProveReceiptRequest, Subject, SubjectReportRequest,
};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

fn admin() -> Option<AdminContext> {
    Some(AdminContext {
        operator_id: "auditor-zhao".into(),
        reason: "inspection 2026-Q4".into(),
    })
}

fn case(matter: &str, number: &str) -> Option<CaseContext> {
    Some(CaseContext {
        matter: matter.into(),
        case_number: number.into(),
        operator_id: "clerk-he".into(),
    })
}

fn subject(story: &Story) -> Option<Subject> {
    Some(Subject {
        id_number: story.id_number.into(),
        name: story.name.into(),
        ..Default::default()
    })
}

fn keyring(state_dir: &Path) -> Keyring {
    let text = std::fs::read_to_string(state_dir.join("audit-signing.pub")).unwrap();
    Keyring::parse(&text).unwrap()
}

fn pseudonymizer(state_dir: &Path) -> SubjectPseudonymizer {
    let text = std::fs::read_to_string(state_dir.join("subject-pseudonym.key")).unwrap();
    SubjectPseudonymizer::from_hex(&text).unwrap()
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

async fn audit_client(local: &LocalDeployment, party: &str) -> AuditClient<Channel> {
    AuditClient::new(local.channel(party).await.unwrap())
}

async fn search_all(client: &mut AuditClient<Channel>, filter: AuditFilter) -> Vec<AuditRecord> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .search(timed(AuditSearchRequest {
                admin: admin(),
                filter: Some(filter.clone()),
                page_size: 7,
                page_token: token,
            }))
            .await
            .unwrap()
            .into_inner();
        out.extend(page.records);
        token = page.next_page_token;
        if token.is_empty() {
            return out;
        }
    }
}

async fn gather_as(
    local: &LocalDeployment,
    party: &str,
    matter: &str,
    story: &Story,
) -> tongban_proto::v1::GatherResponse {
    let mut client = local.client(party).await.unwrap();
    client
        .gather(timed(GatherRequest {
            case: case(matter, "XQ-DL-2026-0900"),
            subject: subject(story),
            evidence_types: Vec::new(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_read_the_log_and_every_read_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalDeployment::start(dir.path()).await.unwrap();
    let worker = stories::LAID_OFF_WORKER;
    let gathered = gather_as(&local, "dongli-community", "unemployment-benefit", &worker).await;
    assert!(!gathered.items.is_empty());
    let pseudonym = pseudonymizer(dir.path()).pseudonym(worker.id_number);
    let log = local.exchange().audit_log().unwrap();
    log.flush().await.unwrap();
    let mut admin_calls = 0usize;

    // Search by identity number: the exchange pseudonymises it.
    let mut client = audit_client(&local, "admin").await;
    let found = search_all(
        &mut client,
        AuditFilter {
            subject_id_number: worker.id_number.into(),
            ..Default::default()
        },
    )
    .await;
    admin_calls += found.len() / 7 + 1;
    assert_eq!(found.len(), gathered.items.len());
    for r in &found {
        assert_eq!(r.subject, pseudonym);
        assert_eq!(r.kind, "GatherItem");
        assert_eq!(r.caller_unit, "dongli-community");
        assert_eq!(r.matter, "unemployment-benefit");
    }

    // Subject report.
    let report = client
        .subject_report(timed(SubjectReportRequest {
            admin: admin(),
            id_number: worker.id_number.into(),
            max_accesses: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    admin_calls += 1;
    assert!(!report.truncated);
    assert_eq!(report.accesses.len(), gathered.items.len());

    // Export streams the whole log, each entry hashing to its leaf.
    let mut stream = client
        .export(timed(AuditExportRequest {
            admin: admin(),
            node: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    admin_calls += 1;
    let mut exported = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        let logged = tongban_cli::audit::record_to_entry(&r).unwrap();
        assert_eq!(logged.entry.leaf_hash(logged.index), logged.leaf_hash);
        exported.push(r);
    }
    assert!(exported.len() >= gathered.items.len() + 2);
    for (i, r) in exported.iter().enumerate() {
        assert_eq!(r.index, i as u64, "export is in log order");
    }

    // Checkpoints and an inclusion proof, checked offline.
    log.flush().await.unwrap();
    let checkpoints = client
        .list_checkpoints(timed(ListCheckpointsRequest { admin: admin() }))
        .await
        .unwrap()
        .into_inner();
    admin_calls += 1;
    assert_eq!(checkpoints.checkpoints.len(), 1);
    assert_eq!(checkpoints.checkpoints[0].node, "exchange-1");
    let proof = client
        .get_inclusion_proof(timed(InclusionProofRequest {
            admin: admin(),
            node: "exchange-1".into(),
            index: found[0].index,
        }))
        .await
        .unwrap()
        .into_inner();
    admin_calls += 1;
    assert_eq!(proof.leaf_hash, found[0].leaf_hash);
    let (text, ok) = check_proof(&proof, &keyring(dir.path()));
    assert!(ok, "{text}");

    // A service point is no administrator; the refused attempt is logged.
    let mut clerk = audit_client(&local, "dongli-community").await;
    let refused = clerk
        .search(timed(AuditSearchRequest {
            admin: admin(),
            filter: Some(AuditFilter {
                subject_id_number: worker.id_number.into(),
                ..Default::default()
            }),
            page_size: 10,
            page_token: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(reason(&refused), "NOT_ADMINISTRATOR");

    // No AdminContext: invalid, and logged too.
    let invalid = client
        .search(timed(AuditSearchRequest {
            admin: None,
            filter: None,
            page_size: 10,
            page_token: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument, "{invalid:?}");
    let no_reason = client
        .subject_report(timed(SubjectReportRequest {
            admin: Some(AdminContext {
                operator_id: "auditor-zhao".into(),
                reason: "  ".into(),
            }),
            id_number: worker.id_number.into(),
            max_accesses: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(no_reason.code(), Code::InvalidArgument, "{no_reason:?}");

    let actions = search_all(
        &mut client,
        AuditFilter {
            kind: "AdminAction".into(),
            ..Default::default()
        },
    )
    .await;
    // Everything above, plus this search's own pages (newest first, so the
    // first page's entry is committed before it answers).
    let this_search = actions
        .iter()
        .filter(|r| r.detail.starts_with("search filter: kind=AdminAction"))
        .count();
    assert!(this_search >= 1);
    assert_eq!(actions.len() - this_search, admin_calls + 3, "{actions:#?}");
    for r in &actions {
        assert!(
            !r.detail.contains(worker.id_number),
            "identity number in clear: {r:?}"
        );
        assert!(r.subject.is_empty());
    }
    let denied: Vec<_> = actions
        .iter()
        .filter(|r| r.outcome_code == Code::PermissionDenied as i32)
        .collect();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].caller_unit, "dongli-community");
    assert_eq!(denied[0].outcome_reason, "NOT_ADMINISTRATOR");
    assert!(denied[0].detail.contains(&format!("subject={pseudonym}")));
    assert_eq!(
        actions
            .iter()
            .filter(|r| r.outcome_code == Code::InvalidArgument as i32)
            .count(),
        2
    );
    let report_entry = actions
        .iter()
        .find(|r| r.detail.starts_with("subject report") && r.outcome_code == 0)
        .unwrap();
    assert_eq!(report_entry.operator_id, "auditor-zhao");
    assert_eq!(
        report_entry.detail,
        format!("subject report subject={pseudonym}; reason: inspection 2026-Q4")
    );
    local.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_prove_their_own_receipts_offline() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalDeployment::start(dir.path()).await.unwrap();
    let retiree = stories::CERTIFIED_RETIREE;
    let mut clerk = local.client("dongli-community").await.unwrap();
    let looked_up = clerk
        .lookup(timed(LookupRequest {
            case: case("pension-qualification", "XQ-DL-2026-0901"),
            subject: subject(&retiree),
            evidence_type: "hrss.pension".into(),
            fields: None,
        }))
        .await
        .unwrap()
        .into_inner();
    let gathered = gather_as(
        &local,
        "dongli-community",
        "pension-qualification",
        &retiree,
    )
    .await;
    let mut receipts: Vec<AuditReceipt> = vec![looked_up.receipt.clone().unwrap()];
    for item in &gathered.items {
        receipts.push(
            item.receipt
                .clone()
                .expect("every Gather item has a receipt"),
        );
    }
    local.exchange().audit_log().unwrap().flush().await.unwrap();

    let pinned = keyring(dir.path());
    let impostor = Keyring::new().with(
        LogSigner::generate(&origin_for_node("exchange-1"))
            .unwrap()
            .verifier(),
    );
    for receipt in &receipts {
        let proof = clerk
            .prove_receipt(timed(ProveReceiptRequest {
                receipt: Some(receipt.clone()),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(proof.leaf_hash, receipt.leaf_hash);
        assert_eq!(proof.index, receipt.index);
        let (text, ok) = check_proof(&proof, &pinned);
        assert!(ok, "{text}");
        // The same proof under a key that is not the node's does not hold.
        let (text, ok) = check_proof(&proof, &impostor);
        assert!(!ok, "{text}");
        // A proof whose audit path was altered does not hold either.
        let mut bent = proof.clone();
        if let Some(h) = bent.proof.first_mut() {
            h[0] ^= 1;
            assert!(!check_proof(&bent, &pinned).1);
        }
    }

    // Another caller's receipt, or a receipt with a wrong leaf hash: not found.
    let mut hotline = local.client("hotline-96196").await.unwrap();
    let other = hotline
        .prove_receipt(timed(ProveReceiptRequest {
            receipt: Some(receipts[0].clone()),
        }))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::NotFound, "{other:?}");
    let mut forged = receipts[0].clone();
    forged.leaf_hash[5] ^= 0x40;
    let forged = clerk
        .prove_receipt(timed(ProveReceiptRequest {
            receipt: Some(forged),
        }))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), Code::NotFound, "{forged:?}");
    local.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_released_while_the_audit_store_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalDeployment::start(dir.path()).await.unwrap();
    let worker = stories::LAID_OFF_WORKER;
    let lookup = || LookupRequest {
        case: case("unemployment-benefit", "XQ-DL-2026-0902"),
        subject: subject(&worker),
        evidence_type: "hrss.unemployment".into(),
        fields: None,
    };
    let mut clerk = local.client("dongli-community").await.unwrap();
    clerk.lookup(timed(lookup())).await.unwrap();

    // Break the store behind the exchange's back.
    let raw = tongban_audit::SqliteStore::open(&dir.path().join("audit.db"))
        .await
        .unwrap();
    sqlx::query("ALTER TABLE audit_entries RENAME TO audit_entries_away")
        .execute(raw.pool())
        .await
        .unwrap();

    let refused = clerk.lookup(timed(lookup())).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(reason(&refused), "AUDIT_UNAVAILABLE");
    let mut gather = clerk
        .gather(timed(GatherRequest {
            case: case("unemployment-benefit", "XQ-DL-2026-0902"),
            subject: subject(&worker),
            evidence_types: Vec::new(),
            ..Default::default()
        }))
        .await;
    let refused = gather.as_mut().unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    // Administrators cannot read unlogged either.
    let mut admin_client = audit_client(&local, "admin").await;
    let refused = admin_client
        .list_checkpoints(timed(ListCheckpointsRequest { admin: admin() }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    // Repaired, the exchange answers again and the log still verifies.
    sqlx::query("ALTER TABLE audit_entries_away RENAME TO audit_entries")
        .execute(raw.pool())
        .await
        .unwrap();
    let mut answered = None;
    for _ in 0..50 {
        match clerk.lookup(timed(lookup())).await {
            Ok(r) => {
                answered = Some(r.into_inner());
                break;
            }
            Err(s) => {
                assert_eq!(s.code(), Code::Unavailable, "{s:?}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    let answered = answered.expect("answers once the store is back");
    assert!(answered.receipt.is_some());
    let log = local.exchange().audit_log().unwrap();
    log.flush().await.unwrap();
    let report = tongban_audit::verify(
        &raw,
        &keyring(dir.path()),
        &tongban_audit::VerifyOptions::default(),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "{:#?}", report.findings);
    // Two answered lookups; refused requests left no entry (none committed).
    let entries = tongban_audit::search(
        &raw,
        &tongban_audit::SearchFilter {
            kind: Some(tongban_audit::EntryKind::Lookup),
            ..Default::default()
        },
        &tongban_audit::PageRequest::default(),
    )
    .await
    .unwrap();
    assert!(entries.entries.iter().all(|e| e.entry.outcome_code == 0));
    assert_eq!(entries.entries.len(), 2);
    local.shutdown().await.unwrap();
}
