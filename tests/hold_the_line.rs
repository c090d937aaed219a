//! Attacks on the request path, each against a deployment of its own (real
//! mutual TLS, generated clients), counting the audit entries it leaves:
//! every refusal is one bounded entry (classes 3 and 5 of "Hold the line"),
//! caller text cannot forge report lines (6), sizes are checked before
//! decoding (8), receipts cannot probe the log, every entry names the policy
//! version that decided it, policy changes are entries, and a grant that
//! releases no field never reaches the department.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tongban_devkit::local::{LocalDeployment, LocalOptions, policy_toml};
use tongban_devkit::reference::Dept;
use tongban_devkit::reference::stories::{self, Story};
use tongban_proto::v1::audit_client::AuditClient;
use tongban_proto::v1::{
    AdminContext, AuditFilter, AuditReceipt, AuditRecord, AuditSearchRequest, GatherRequest,
    LookupRequest, ProveReceiptRequest,
};
use tonic::Code;

use tongban_tests::{
    case, error_info, eventually, lookup_request, own_deployment, refusal_receipt, subject, timed,
    violations,
};

fn admin() -> Option<AdminContext> {
    Some(AdminContext {
        operator_id: "auditor.e2e".into(),
        reason: "hold-the-line test".into(),
    })
}

/// Entries committed in the deployment's log so far.
async fn log_size(local: &LocalDeployment) -> u64 {
    let log = local.exchange().audit_log().unwrap();
    log.flush().await.unwrap();
    log.stats().tree_size
}

/// Every entry of the log, newest first, read as an administrator (which
/// adds one entry per page read).
async fn entries(local: &LocalDeployment, filter: AuditFilter) -> Vec<AuditRecord> {
    let mut client = AuditClient::new(local.channel("admin").await.unwrap());
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .search(timed(AuditSearchRequest {
                admin: admin(),
                filter: Some(filter.clone()),
                page_size: 100,
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

fn reason(status: &tonic::Status) -> String {
    error_info(status).0
}

/// The refusal has `expected` as its reason, and the log grew by exactly
/// one entry since `before`.
async fn assert_one_entry(
    local: &LocalDeployment,
    before: u64,
    status: &tonic::Status,
    expected: &str,
) {
    assert_eq!(reason(status), expected, "{status:?}");
    assert_eq!(log_size(local).await, before + 1, "{expected}");
    assert!(refusal_receipt(status).is_some(), "{expected}: no receipt");
}

fn gather(matter: &str, story: &Story, evidence_types: &[&str]) -> GatherRequest {
    GatherRequest {
        case: case(matter),
        subject: subject(story),
        evidence_types: evidence_types.iter().map(|e| (*e).to_owned()).collect(),
    }
}

/// Each refused call — whatever refused it, through Lookup or Gather —
/// leaves exactly one entry with its outcome, and the refusal carries that
/// entry's receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_leaves_exactly_one_entry() {
    let (_dir, local) = own_deployment(LocalOptions::default().policy(|pki| {
        // A tiny rate for the hotline, so the test can exhaust it.
        Ok(policy_toml(pki)?.replace(
            "[limits]\nrequests_per_second = 2000.0\nburst = 4000",
            "[limits]\nrequests_per_second = 0.01\nburst = 8",
        ))
    }))
    .await
    .unwrap();
    let worker = stories::LAID_OFF_WORKER;
    let mut community = local.client("dongli-community").await.unwrap();
    let mut hotline = local.client("hotline-96196").await.unwrap();

    let mut bad_id = lookup_request("unemployment-benefit", &worker, "hrss.unemployment");
    bad_id.subject.as_mut().unwrap().id_number = "510403198507220466".into();
    let mut oversize = lookup_request("unemployment-benefit", &worker, "hrss.unemployment");
    oversize.case.as_mut().unwrap().case_number = "X".repeat(64 * 1024);

    let before = log_size(&local).await;
    let status = hotline
        .gather(timed(gather("temporary-id-card", &worker, &[])))
        .await
        .unwrap_err();
    assert_one_entry(&local, before, &status, "MATTER_NOT_GRANTED").await;
    let before = log_size(&local).await;
    let status = community
        .gather(timed(gather("no-such-matter", &worker, &[])))
        .await
        .unwrap_err();
    assert_one_entry(&local, before, &status, "UNKNOWN_MATTER").await;
    for (expected, request) in [("INVALID_REQUEST", bad_id), ("REQUEST_TOO_LARGE", oversize)] {
        let before = log_size(&local).await;
        let status = community.lookup(timed(request)).await.unwrap_err();
        assert_one_entry(&local, before, &status, expected).await;
    }
    // A Gather that is invalid (an identity number failing its check).
    let mut invalid = gather("unemployment-benefit", &worker, &[]);
    invalid.subject.as_mut().unwrap().id_number = "not-a-number".into();
    let before = log_size(&local).await;
    let status = community.gather(timed(invalid)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(log_size(&local).await, before + 1);

    // Rate-limited, through Gather (the hotline's burst is 8 and a Gather
    // of its matter costs 2) and then Lookup.
    let mut limited = 0;
    for _ in 0..10 {
        let before = log_size(&local).await;
        let outcome = hotline
            .gather(timed(gather("social-insurance-record", &worker, &[])))
            .await;
        let after = log_size(&local).await;
        match outcome {
            Ok(answer) => assert_eq!(after, before + answer.get_ref().items.len() as u64),
            Err(status) => {
                assert_eq!(reason(&status), "RATE_LIMITED", "{status:?}");
                assert_eq!(after, before + 1);
                limited += 1;
            }
        }
    }
    assert!(limited > 0, "the hotline was never rate-limited");
    let before = log_size(&local).await;
    let status = hotline
        .lookup(timed(lookup_request(
            "social-insurance-record",
            &worker,
            "police.identity",
        )))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "RATE_LIMITED");
    assert_eq!(log_size(&local).await, before + 1);

    // The entries hold what was refused and why, attributed to the caller.
    let refused = entries(
        &local,
        AuditFilter {
            caller_unit: "hotline-96196".into(),
            ..AuditFilter::default()
        },
    )
    .await;
    let reasons: Vec<&str> = refused.iter().map(|r| r.outcome_reason.as_str()).collect();
    assert!(reasons.contains(&"MATTER_NOT_GRANTED"), "{reasons:?}");
    assert!(reasons.contains(&"RATE_LIMITED"), "{reasons:?}");
    let not_granted = refused
        .iter()
        .find(|r| r.outcome_reason == "MATTER_NOT_GRANTED")
        .unwrap();
    assert_eq!(not_granted.kind, "GatherItem");
    assert_eq!(not_granted.matter, "temporary-id-card");
    assert!(
        !not_granted.subject.is_empty(),
        "the subject is pseudonymised"
    );
    local.shutdown().await.unwrap();
}

/// An evidence type of 16 KB with newlines and terminal escapes is refused
/// as invalid; the entry it leaves holds no control character and is
/// bounded, so no report printed from the log can be forged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_text_cannot_forge_log_lines() {
    let (_dir, local) = own_deployment(LocalOptions::default()).await.unwrap();
    let worker = stories::LAID_OFF_WORKER;
    let mut community = local.client("dongli-community").await.unwrap();
    let forged = format!(
        "x\n2026-12-01 09:00 公安局 police.identity OK\n\u{1b}[2K\u{1b}[31m{}",
        "A".repeat(8 * 1024)
    );
    let mut request = lookup_request("unemployment-benefit", &worker, &forged);
    request.case.as_mut().unwrap().operator_id = "clerk\n\u{1b}[0m".into();
    let status = community.lookup(timed(request)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = violations(&status).into_iter().map(|(f, _)| f).collect();
    assert!(fields.contains(&"evidence_type".to_owned()), "{fields:?}");
    assert!(
        fields.contains(&"case.operator_id".to_owned()),
        "{fields:?}"
    );
    assert!(
        status.message().len() < 2048,
        "the message echoes the input"
    );

    let refused = entries(
        &local,
        AuditFilter {
            outcome_code: Some(Code::InvalidArgument as i32),
            caller_unit: "dongli-community".into(),
            ..AuditFilter::default()
        },
    )
    .await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    let entry = &refused[0];
    for text in [&entry.evidence_type, &entry.operator_id, &entry.detail] {
        let shown: String = text.chars().take(120).collect();
        assert!(!text.chars().any(char::is_control), "{shown:?}");
        assert!(text.chars().count() <= 100, "{} characters", text.len());
    }
    local.shutdown().await.unwrap();
}

/// Requests over the policy's `max_request_bytes` are refused from their
/// gRPC length prefix, before anything is decoded: eight concurrent 3.9 MB
/// lookups are each refused RESOURCE_EXHAUSTED, each leaves one entry, and
/// an honest lookup alongside them is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_requests_are_refused_before_decoding() {
    let (_dir, local) = own_deployment(LocalOptions::default()).await.unwrap();
    let worker = stories::LAID_OFF_WORKER;
    let before = log_size(&local).await;
    let mut calls = Vec::new();
    for _ in 0..8 {
        let mut client = local
            .client("dongli-community")
            .await
            .unwrap()
            .max_encoding_message_size(8 * 1024 * 1024);
        let mut request: LookupRequest =
            lookup_request("unemployment-benefit", &worker, "hrss.unemployment");
        request.case.as_mut().unwrap().case_number = "Z".repeat(3_900_000);
        calls.push(tokio::spawn(async move {
            client.lookup(timed(request)).await.unwrap_err()
        }));
    }
    let mut honest = local.client("dongli-community").await.unwrap();
    honest
        .lookup(timed(lookup_request(
            "unemployment-benefit",
            &worker,
            "hrss.unemployment",
        )))
        .await
        .unwrap();
    for call in calls {
        let status = call.await.unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        let (reason, domain, _) = error_info(&status);
        assert_eq!(
            (reason.as_str(), domain.as_str()),
            ("REQUEST_TOO_LARGE", "tongban.gov")
        );
        assert!(
            status.message().contains("at most 16384"),
            "{}",
            status.message()
        );
    }
    assert_eq!(log_size(&local).await, before + 8 + 1);
    local.shutdown().await.unwrap();
}

/// Non-administrators cannot grow the log: a refused Audit call with huge
/// filter text leaves one small entry (or none is decoded at all), and an
/// administrator can still read every page afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_audit_calls_leave_bounded_entries() {
    let (_dir, local) = own_deployment(LocalOptions::default()).await.unwrap();
    let mut intruder = AuditClient::new(local.channel("dongli-community").await.unwrap())
        .max_encoding_message_size(8 * 1024 * 1024);
    let before = log_size(&local).await;
    for size in [3_900_000usize, 10_000] {
        for _ in 0..10 {
            let status = intruder
                .search(timed(AuditSearchRequest {
                    admin: admin(),
                    filter: Some(AuditFilter {
                        case_number: "C".repeat(size),
                        ..AuditFilter::default()
                    }),
                    page_size: 10,
                    page_token: String::new(),
                }))
                .await
                .unwrap_err();
            let expected = if size > 16 * 1024 {
                "REQUEST_TOO_LARGE"
            } else {
                "INVALID_REQUEST"
            };
            assert_eq!(reason(&status), expected, "{status:?}");
        }
    }
    assert_eq!(log_size(&local).await, before + 20);
    let refused = entries(
        &local,
        AuditFilter {
            caller_unit: "dongli-community".into(),
            kind: "AdminAction".into(),
            ..AuditFilter::default()
        },
    )
    .await;
    assert_eq!(refused.len(), 20);
    for entry in &refused {
        assert!(
            entry.detail.len() < 512,
            "{} bytes of detail",
            entry.detail.len()
        );
        assert!(
            !entry.detail.contains("CCCC"),
            "caller text in the log: {}",
            entry.detail
        );
    }
    local.shutdown().await.unwrap();
}

/// `ProveReceipt` answers a receipt of someone else's entry, of an entry
/// past the end of the log and of a forged leaf exactly alike, and does not
/// let an administrator prove other callers' entries around the logged
/// `Audit` path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_cannot_probe_the_log() {
    let (_dir, local) = own_deployment(LocalOptions::default()).await.unwrap();
    let worker = stories::LAID_OFF_WORKER;
    let mut community = local.client("dongli-community").await.unwrap();
    let answer = community
        .lookup(timed(lookup_request(
            "unemployment-benefit",
            &worker,
            "hrss.unemployment",
        )))
        .await
        .unwrap()
        .into_inner();
    let receipt = answer.receipt.unwrap();
    local.exchange().audit_log().unwrap().flush().await.unwrap();
    community
        .prove_receipt(timed(ProveReceiptRequest {
            receipt: Some(receipt.clone()),
        }))
        .await
        .unwrap();

    let hotline = local.client("hotline-96196").await.unwrap();
    let admin = local.client("admin").await.unwrap();
    let past_end = AuditReceipt {
        index: receipt.index + 1_000_000,
        ..receipt.clone()
    };
    let mut forged = receipt.clone();
    forged.leaf_hash[0] ^= 1;
    let mut answers = Vec::new();
    for (mut client, probe) in [
        (hotline.clone(), receipt.clone()),
        (hotline.clone(), past_end.clone()),
        (community.clone(), past_end),
        (community.clone(), forged),
        (admin.clone(), receipt.clone()),
    ] {
        let status = client
            .prove_receipt(timed(ProveReceiptRequest {
                receipt: Some(probe),
            }))
            .await
            .unwrap_err();
        answers.push((status.code(), status.message().to_owned(), reason(&status)));
    }
    assert_eq!(answers[0].0, Code::NotFound);
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "answers differ: {answers:#?}"
    );
    local.shutdown().await.unwrap();
}

/// Every entry names the version of the policy that decided it; a call that
/// began under one policy is decided and recorded under it even when a new
/// one takes effect midway; each policy that takes effect is an entry of its
/// own saying what it added and removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_is_decided_by_one_policy_version() {
    let (_dir, local) = own_deployment(
        LocalOptions::default()
            .slow_department(Dept::Hrss, Duration::from_millis(800))
            .reload_poll(Duration::from_millis(50)),
    )
    .await
    .unwrap();
    let worker = stories::LAID_OFF_WORKER;
    let old_version = local.exchange().exchange().policy().version().to_owned();
    let mut community = local.client("dongli-community").await.unwrap();
    let slow_call = tokio::spawn(async move {
        community
            .gather(timed(gather("unemployment-benefit", &worker, &[])))
            .await
    });
    // While the department is slow, a new policy that revokes the community
    // centre's grant takes effect.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = std::fs::read_to_string(local.policy_path()).unwrap();
    let community_group = "callers = [\"group:community-centres\", \"group:township-halls\"]";
    assert!(text.contains(community_group));
    std::fs::write(
        local.policy_path(),
        text.replace(community_group, "callers = [\"group:township-halls\"]"),
    )
    .unwrap();
    eventually(Duration::from_secs(5), "the new policy", || async {
        let now = local.exchange().exchange().policy().version().to_owned();
        (now != old_version).then_some(now)
    })
    .await
    .unwrap();
    let new_version = local.exchange().exchange().policy().version().to_owned();
    let answered = slow_call.await.unwrap().unwrap().into_inner();
    assert!(answered.items.iter().all(|i| matches!(
        i.result,
        Some(tongban_proto::v1::gather_item::Result::Evidence(_))
    )));
    // The next call is refused under the new policy.
    let mut community = local.client("dongli-community").await.unwrap();
    let status = community
        .gather(timed(gather("unemployment-benefit", &worker, &[])))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "MATTER_NOT_GRANTED");

    let recorded = entries(
        &local,
        AuditFilter {
            caller_unit: "dongli-community".into(),
            ..AuditFilter::default()
        },
    )
    .await;
    let versions = |outcome: i32| -> Vec<&str> {
        recorded
            .iter()
            .filter(|r| r.outcome_code == outcome)
            .map(|r| r.policy_version.as_str())
            .collect()
    };
    assert!(!versions(0).is_empty());
    assert!(
        versions(0).iter().all(|v| *v == old_version),
        "{recorded:#?}"
    );
    assert_eq!(
        versions(Code::PermissionDenied as i32),
        [new_version.as_str()]
    );

    let changes = entries(
        &local,
        AuditFilter {
            kind: "PolicyChange".into(),
            ..AuditFilter::default()
        },
    )
    .await;
    assert_eq!(changes.len(), 2, "start-up and the reload: {changes:#?}");
    let reload = &changes[0];
    assert!(
        reload.detail.starts_with(&format!(
            "policy version={new_version} previous={old_version} source="
        )),
        "{}",
        reload.detail
    );
    assert!(
        reload.detail.contains("added=0 removed=4"),
        "{}",
        reload.detail
    );
    assert!(
        reload.detail.contains("dongli-community"),
        "{}",
        reload.detail
    );
    local.shutdown().await.unwrap();
}

/// A grant that releases no field of an evidence type is refused before the
/// department is asked (an empty field mask would mean "every field" to an
/// adapter), and audited. (Before, the exchange sent the empty mask and
/// filtered the full answer afterwards.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_releasing_no_field_never_asks_the_department() {
    let (_dir, local) = own_deployment(LocalOptions::default().policy(|pki| {
        Ok(policy_toml(pki)?.replace(
            "fields = { \"police.identity\" = [\"name_matches\", \"alive\"],",
            "fields = { \"police.identity\" = [],",
        ))
    }))
    .await
    .unwrap();
    let worker = stories::LAID_OFF_WORKER;
    let mut hotline = local.client("hotline-96196").await.unwrap();
    // Were the department asked, this would fail DEPARTMENT_UNAVAILABLE.
    let mut local = local;
    local.stop_department(Dept::Police).await.unwrap();
    let before = log_size(&local).await;
    let status = hotline
        .lookup(timed(lookup_request(
            "social-insurance-record",
            &worker,
            "police.identity",
        )))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_one_entry(&local, before, &status, "FIELDS_NOT_GRANTED").await;
    local.shutdown().await.unwrap();
}

/// p99 of `samples`, in microseconds.
fn p99(samples: &mut [Duration]) -> u128 {
    samples.sort();
    let at = (samples.len() * 99 / 100).min(samples.len().saturating_sub(1));
    samples.get(at).map_or(0, Duration::as_micros)
}

/// An honest service point's lookups, one at a time: every latency.
async fn honest_lookups(local: &LocalDeployment, count: usize) -> Vec<Duration> {
    let mut client = local.client("dongli-community").await.unwrap();
    let worker = stories::LAID_OFF_WORKER;
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let started = std::time::Instant::now();
        client
            .lookup(timed(lookup_request(
                "unemployment-benefit",
                &worker,
                "police.identity",
            )))
            .await
            .expect("an honest lookup under attack");
        latencies.push(started.elapsed());
    }
    latencies
}

/// Under the attacks of classes 1–3 at once — 1,100 idle sockets that never
/// send a ClientHello, the hotline flooding lookups with a 3 ms deadline,
/// and a service point flooding the Audit service with oversized filters —
/// an honest service point's lookups all succeed, no department endpoint is
/// ejected, and the log grows by one bounded entry per refused call. The
/// latencies are printed (a benchmark's business, not a test's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_caller_is_served_under_attack() {
    // The policy's default rate limits (200/s, burst 400 per caller), as a
    // deployment has them: they are what bounds an attacker's share.
    let (_dir, local) = own_deployment(LocalOptions::default().policy(|pki| {
        Ok(policy_toml(pki)?.replace(
            "requests_per_second = 2000.0\nburst = 4000",
            "requests_per_second = 200.0\nburst = 400",
        ))
    }))
    .await
    .unwrap();
    let mut unloaded = honest_lookups(&local, 200).await;
    let addr = local.exchange().local_addr();

    // Class 1: idle sockets, held for the whole attack.
    let mut idle = Vec::new();
    for _ in 0..1100 {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(socket) => idle.push(socket),
            Err(e) => panic!("idle socket {}: {e}", idle.len()),
        }
    }
    // Class 2: the hotline's lookups with a 3 ms deadline, 32 at a time.
    let hotline = local.client("hotline-96196").await.unwrap();
    let flood = tokio::spawn(async move {
        let worker = stories::LAID_OFF_WORKER;
        let mut refused = 0u64;
        let mut round = futures::stream::FuturesUnordered::new();
        for i in 0..2000 {
            let mut client = hotline.clone();
            round.push(async move {
                let mut request = tonic::Request::new(lookup_request(
                    "social-insurance-record",
                    &worker,
                    "police.identity",
                ));
                request.set_timeout(Duration::from_millis(3));
                client.lookup(request).await.is_err()
            });
            if round.len() >= 32 || i == 1999 {
                while let Some(failed) = futures::StreamExt::next(&mut round).await {
                    refused += u64::from(failed);
                }
            }
        }
        refused
    });
    // Class 3: refused Audit calls with oversized filters.
    let mut intruder = AuditClient::new(local.channel("salian-township").await.unwrap());
    let audit_flood = tokio::spawn(async move {
        for _ in 0..300 {
            let status = intruder
                .search(timed(AuditSearchRequest {
                    admin: admin(),
                    filter: Some(AuditFilter {
                        case_number: "C".repeat(10_000),
                        ..AuditFilter::default()
                    }),
                    page_size: 10,
                    page_token: String::new(),
                }))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
        }
    });
    let mut loaded = honest_lookups(&local, 200).await;
    let hotline_failures = flood.await.unwrap();
    audit_flood.await.unwrap();
    drop(idle);

    let ejections: u64 = local
        .exchange()
        .exchange()
        .departments()
        .iter()
        .map(|d| d.ejections())
        .sum();
    assert_eq!(ejections, 0, "an endpoint was ejected by the attack");
    // And the departments serve everyone at once afterwards.
    honest_lookups(&local, 5).await;
    println!(
        "honest lookups: p99 unloaded {} µs, under attack {} µs (ratio {:.2}); hotline calls refused or timed out: {hotline_failures}",
        p99(&mut unloaded),
        p99(&mut loaded),
        p99(&mut loaded) as f64 / p99(&mut unloaded).max(1) as f64,
    );
    local.shutdown().await.unwrap();
}
