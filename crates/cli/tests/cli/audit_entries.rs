//! What callers put in audit entries cannot grow the log or forge the
//! reports printed from it: the real binary and generated clients against a
//! local mTLS deployment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;

use tongban_devkit::local::{CALL_TIMEOUT, LocalDeployment};
use tongban_devkit::reference::stories;
use tongban_proto::v1::audit_client::AuditClient;
use tongban_proto::v1::{
    AdminContext, AuditFilter, AuditSearchRequest, CaseContext, LookupRequest, Subject,
};

/// A line of the subject report, as a forger would have it appear.
const FORGED_LINE: &str = "     Result · 结果    released · 已提供 (forged)";

fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

async fn audit(command: &str, local: &LocalDeployment, extra: &[&str]) -> Output {
    let id = local.pki().get("admin").unwrap();
    let mut args: Vec<String> = vec![
        "audit".into(),
        command.into(),
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
        "citizen request 96196-0042".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    tokio::process::Command::new(env!("CARGO_BIN_EXE_tongban"))
        .args(&args)
        .env_remove("TONGBAN_EXCHANGE")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .await
        .unwrap()
}

fn assert_not_forged(out: &Output) {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.contains(&0x1b), "ESC in the report:\n{text}");
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with(FORGED_LINE.trim_start()) || l == FORGED_LINE),
        "forged line in the report:\n{text}"
    );
    assert!(
        text.contains("\\u{a}"),
        "the newline is shown escaped:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evidence_type_with_control_characters_cannot_forge_the_printed_reports() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalDeployment::start(dir.path()).await.unwrap();
    let worker = stories::LAID_OFF_WORKER;
    // Nearly 16 KB: as much as the exchange's default request limit lets in.
    let evidence_type = format!(
        "hrss.unemployment\n{FORGED_LINE}\n\x1b[31m{}\x1b[0m",
        "x".repeat(15_500)
    );
    let mut clerk = local.client("dongli-community").await.unwrap();
    let refused = clerk
        .lookup(timed(LookupRequest {
            case: Some(CaseContext {
                matter: "unemployment-benefit".into(),
                case_number: "XQ-DL-2026-0990".into(),
                operator_id: "clerk-he".into(),
            }),
            subject: Some(Subject {
                id_number: worker.id_number.into(),
                name: worker.name.into(),
                ..Default::default()
            }),
            evidence_type,
            fields: None,
        }))
        .await
        .unwrap_err();
    // Refused (today the status echoing the whole evidence type is too large
    // for HTTP/2 trailers, so the client sees a protocol error); either way
    // the exchange audited the request before answering.
    assert_ne!(refused.code(), tonic::Code::Ok, "{refused:?}");
    local.exchange().audit_log().unwrap().flush().await.unwrap();

    let report = audit("subject", &local, &[worker.id_number]).await;
    assert_not_forged(&report);
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(text.contains("Accesses · 查询次数: 1"), "{text}");
    // The stored evidence type was cut: the report is short.
    assert!(report.stdout.len() < 4096, "{text}");

    let table = audit("search", &local, &["--subject", worker.id_number]).await;
    assert_not_forged(&table);
}

/// A refused non-administrator's call is logged, but bounded: twenty
/// refusals with a 3.9 MB case number (refused from their length prefix,
/// before decoding) add kilobytes, not megabytes, and the administrator's
/// search still decodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_searches_with_huge_filters_are_logged_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalDeployment::start(dir.path()).await.unwrap();
    let huge = "9".repeat(3_900_000);
    let mut intruder = AuditClient::new(local.channel("dongli-community").await.unwrap());
    for _ in 0..20 {
        let refused = intruder
            .search(timed(AuditSearchRequest {
                admin: Some(AdminContext {
                    operator_id: "clerk-he".into(),
                    reason: "curious".into(),
                }),
                filter: Some(AuditFilter {
                    case_number: huge.clone(),
                    ..Default::default()
                }),
                page_size: 10,
                page_token: String::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::ResourceExhausted,
            "{refused:?}"
        );
    }
    let mut admin = AuditClient::new(local.channel("admin").await.unwrap());
    let page = admin
        .search(timed(AuditSearchRequest {
            admin: Some(AdminContext {
                operator_id: "auditor-zhao".into(),
                reason: "inspection".into(),
            }),
            filter: Some(AuditFilter {
                kind: "AdminAction".into(),
                outcome_code: Some(8),
                ..Default::default()
            }),
            page_size: 200,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.records.len(), 20);
    for r in &page.records {
        assert_eq!(r.caller_unit, "dongli-community");
        assert!(r.detail.chars().count() <= 1024, "{} chars", r.detail.len());
        assert!(!r.detail.contains("999"), "caller text in the log");
        assert_eq!(r.outcome_reason, "REQUEST_TOO_LARGE");
    }
}
