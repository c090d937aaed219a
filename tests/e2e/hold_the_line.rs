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
        ..Default::default()
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

/// A caller sending calls bound to be refused gets them answered (and
/// recorded) no faster than its refusal budget: beyond it they wait their
/// turn, and one whose deadline passes first ends `REFUSALS_PACED` with no
/// entry. Another caller's refusal is answered at once meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refusals_is_paced_and_bounded() {
    let (_dir, local) = own_deployment(LocalOptions::default().policy(|pki| {
        // Two refusals at once, then one per ten seconds: far longer than
        // any call's deadline here, however slow the machine.
        Ok(policy_toml(pki)?.replace(
            "[limits]\n",
            "[limits]\nrefusals_per_second = 0.1\nrefusal_burst = 2\n",
        ))
    }))
    .await
    .unwrap();
    let worker = stories::LAID_OFF_WORKER;
    let invalid = || {
        let mut request = lookup_request("unemployment-benefit", &worker, "hrss.unemployment");
        request.subject.as_mut().unwrap().id_number = "not-a-number".into();
        let mut request = tonic::Request::new(request);
        request.set_timeout(Duration::from_secs(1));
        request
    };
    let hotline = local.client("hotline-96196").await.unwrap();
    let before = log_size(&local).await;
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let mut client = hotline.clone();
        let request = invalid();
        flood.spawn(async move { client.lookup(request).await.unwrap_err() });
    }
    let outcomes: Vec<tonic::Status> = flood.join_all().await;
    let mut reasons: Vec<String> = outcomes.iter().map(reason).collect();
    reasons.sort();
    // Two within the burst are refused and recorded; the others' second
    // ends long before the next refill.
    assert_eq!(
        reasons,
        [
            "INVALID_REQUEST",
            "INVALID_REQUEST",
            "REFUSALS_PACED",
            "REFUSALS_PACED",
            "REFUSALS_PACED",
            "REFUSALS_PACED"
        ],
        "{outcomes:?}"
    );
    let paced = outcomes
        .iter()
        .find(|s| reason(s) == "REFUSALS_PACED")
        .unwrap();
    assert_eq!(paced.code(), Code::DeadlineExceeded);
    assert!(
        refusal_receipt(paced).is_none(),
        "a paced call has no entry"
    );
    assert_eq!(log_size(&local).await, before + 2);
    // Another caller's budget is its own.
    let mut community = local.client("dongli-community").await.unwrap();
    let status = community.lookup(invalid()).await.unwrap_err();
    assert_eq!(reason(&status), "INVALID_REQUEST");
    assert_eq!(log_size(&local).await, before + 3);
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
        reload.detail.contains("added=0 removed=5"),
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

/// An honest service point's lookups, one at a time, 125 a second (under
/// its rate limit of 200): every latency.
async fn honest_lookups(local: &LocalDeployment, count: usize) -> Vec<Duration> {
    let mut client = local.client("dongli-community").await.unwrap();
    let worker = stories::LAID_OFF_WORKER;
    let mut latencies = Vec::with_capacity(count);
    let mut pace = tokio::time::interval(Duration::from_millis(8));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..count {
        pace.tick().await;
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

/// How hard the attackers of classes 2 and 3 push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intensity {
    /// As reported: the hotline stays under its rate limit (180 lookups/s
    /// with a 3 ms deadline), the intruder sends 20 refused searches/s.
    AsReported,
    /// Far beyond the rate limits: 32 hotline lookups always in flight and
    /// the intruder's searches back to back.
    BeyondTheRateLimits,
}

/// What the attackers sent and how it ended.
#[derive(Debug, Default)]
struct AttackCounts {
    lookups_sent: u64,
    lookups_answered: u64,
    searches_sent: u64,
    searches_answered: u64,
}

/// The attackers run on a thread and runtime of their own, as another
/// party on the same machine would: their client work competes with the
/// exchange for the CPU, not for the exchange's own scheduler.
struct Attack {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<AttackCounts>,
}

/// No attack loop runs longer than this, whatever the test does.
const ATTACK_CAP: Duration = Duration::from_secs(120);

impl Attack {
    /// Starts classes 1–3 against `local`'s exchange; returns once the idle
    /// sockets are held and the floods are running.
    async fn start(local: &LocalDeployment, intensity: Intensity) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

        let url = local.exchange_url();
        let expected = local.pki().get("exchange").unwrap().identity.clone();
        let hotline_tls = local.pki().client_config("hotline-96196").unwrap();
        let intruder_tls = local.pki().client_config("salian-township").unwrap();
        let addr = local.exchange().local_addr();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let (ready, started) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("attacker")
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let until = tokio::time::Instant::now() + ATTACK_CAP;
                let going = move || {
                    !stopping.load(Ordering::Relaxed) && tokio::time::Instant::now() < until
                };
                // Class 1: idle sockets that never send a ClientHello.
                let mut idle = Vec::new();
                for _ in 0..1100 {
                    idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
                }
                let hotline = tongban_proto::v1::exchange_client::ExchangeClient::new(
                    tongban_trust::connect_channel(&url, &hotline_tls, Some(&expected))
                        .await
                        .unwrap(),
                );
                let intruder = AuditClient::new(
                    tongban_trust::connect_channel(&url, &intruder_tls, Some(&expected))
                        .await
                        .unwrap(),
                );
                // Class 2: the hotline's lookups with a 3 ms deadline.
                let sent = Arc::new(AtomicU64::new(0));
                let answered = Arc::new(AtomicU64::new(0));
                let one_lookup = {
                    let (sent, answered) = (sent.clone(), answered.clone());
                    move |mut client: tongban_proto::v1::exchange_client::ExchangeClient<
                        tonic::transport::Channel,
                    >| {
                        let (sent, answered) = (sent.clone(), answered.clone());
                        async move {
                            let mut request = tonic::Request::new(lookup_request(
                                "social-insurance-record",
                                &stories::LAID_OFF_WORKER,
                                "police.identity",
                            ));
                            request.set_timeout(Duration::from_millis(3));
                            sent.fetch_add(1, Ordering::Relaxed);
                            if client.lookup(request).await.is_ok() {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                };
                let mut floods = tokio::task::JoinSet::new();
                match intensity {
                    Intensity::AsReported => {
                        let going = going.clone();
                        floods.spawn(async move {
                            let mut tick = tokio::time::interval(Duration::from_micros(5_556));
                            let mut calls = tokio::task::JoinSet::new();
                            while going() {
                                tick.tick().await;
                                while calls.try_join_next().is_some() {}
                                calls.spawn(one_lookup(hotline.clone()));
                            }
                            calls.join_all().await;
                        });
                    }
                    Intensity::BeyondTheRateLimits => {
                        for _ in 0..32 {
                            let (going, one_lookup, hotline) =
                                (going.clone(), one_lookup.clone(), hotline.clone());
                            floods.spawn(async move {
                                while going() {
                                    one_lookup(hotline.clone()).await;
                                }
                            });
                        }
                    }
                }
                // Class 3: Audit searches by a service point, with a filter
                // over the text limit (decoded, then refused) and one over
                // the size limit (refused before decoding), in turn.
                let searches_sent = Arc::new(AtomicU64::new(0));
                let searches_answered = Arc::new(AtomicU64::new(0));
                {
                    let (going, sent, answered) = (
                        going.clone(),
                        searches_sent.clone(),
                        searches_answered.clone(),
                    );
                    let mut intruder = intruder;
                    floods.spawn(async move {
                        let mut tick = tokio::time::interval(match intensity {
                            Intensity::AsReported => Duration::from_millis(50),
                            Intensity::BeyondTheRateLimits => Duration::from_micros(1),
                        });
                        let mut n = 0u64;
                        while going() {
                            tick.tick().await;
                            let size = if n.is_multiple_of(2) {
                                10_000
                            } else {
                                3_900_000
                            };
                            n += 1;
                            sent.fetch_add(1, Ordering::Relaxed);
                            let result = intruder
                                .search(timed(AuditSearchRequest {
                                    admin: admin(),
                                    filter: Some(AuditFilter {
                                        case_number: "C".repeat(size),
                                        ..AuditFilter::default()
                                    }),
                                    page_size: 10,
                                    page_token: String::new(),
                                }))
                                .await;
                            if result.is_ok() {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
                ready.send(()).unwrap();
                floods.join_all().await;
                drop(idle);
                AttackCounts {
                    lookups_sent: sent.load(Ordering::Relaxed),
                    lookups_answered: answered.load(Ordering::Relaxed),
                    searches_sent: searches_sent.load(Ordering::Relaxed),
                    searches_answered: searches_answered.load(Ordering::Relaxed),
                }
            })
        });
        started.await.expect("the attack started");
        Attack { stop, thread }
    }

    /// Stops the attackers and counts what they sent.
    async fn stop(self) -> AttackCounts {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::task::spawn_blocking(move || self.thread.join().unwrap())
            .await
            .unwrap()
    }
}

/// Runs an honest service point's lookups unloaded and then under the
/// attacks of classes 1–3 at `intensity`; asserts they all succeed, no
/// department endpoint is ejected, every attacking call is refused, and
/// the log grows by no more than one entry per call; prints the p99s (a
/// benchmark's business, not a test's: see BENCHMARKS.md).
async fn honest_caller_under_attack(intensity: Intensity) {
    // The policy's default rate limits (200/s, burst 400 per caller), as a
    // deployment has them: they are what bounds an attacker's share. For a
    // side-by-side measurement, `TONGBAN_ATTACK_UNPACED=1` lifts the refusal
    // budget out of reach (as before the exchange had one).
    let unpaced = std::env::var_os("TONGBAN_ATTACK_UNPACED").is_some();
    let (_dir, local) = own_deployment(LocalOptions::default().policy(move |pki| {
        let limits = if unpaced {
            "requests_per_second = 200.0\nburst = 400\nrefusals_per_second = 1e9\nrefusal_burst = 1000000000"
        } else {
            "requests_per_second = 200.0\nburst = 400"
        };
        Ok(policy_toml(pki)?.replace("requests_per_second = 2000.0\nburst = 4000", limits))
    }))
    .await
    .unwrap();
    // Each phase's sample; `TONGBAN_ATTACK_SAMPLES` raises it for a
    // measurement (BENCHMARKS.md), the default keeps the suite quick.
    let honest: usize = std::env::var("TONGBAN_ATTACK_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    honest_lookups(&local, 20).await; // warm connections and caches
    let mut unloaded = honest_lookups(&local, honest).await;
    let before = log_size(&local).await;

    let attack = Attack::start(&local, intensity).await;
    let attacked = std::time::Instant::now();
    let mut loaded = honest_lookups(&local, honest).await;
    let counts = attack.stop().await;
    let seconds = attacked.elapsed().as_secs_f64() + 1.0; // with the start-up
    let grown = log_size(&local).await - before;

    let ejections: u64 = local
        .exchange()
        .exchange()
        .departments()
        .iter()
        .map(|d| d.ejections())
        .sum();
    assert_eq!(ejections, 0, "an endpoint was ejected by the attack");
    assert_eq!(counts.lookups_answered, 0, "{counts:?}");
    assert_eq!(counts.searches_answered, 0, "{counts:?}");
    assert!(
        counts.lookups_sent > 0 && counts.searches_sent > 0,
        "{counts:?}"
    );
    // One entry per honest lookup, at most one per attacking call (a call
    // its caller gave up on before the exchange read it leaves none).
    let most = honest as u64 + counts.lookups_sent + counts.searches_sent;
    assert!(
        grown >= honest as u64 && grown <= most,
        "the log grew by {grown}, expected {honest}..={most}: {counts:?}"
    );
    // However fast they send, the attackers' entries are bounded by their
    // budgets: the hotline's admitted requests (burst 400, 200/s) and each
    // attacker's recorded refusals (burst 100, 50/s).
    let limits = tongban_core::Limits::default();
    let budget = |burst: u32, rate: f64| f64::from(burst) + rate * seconds;
    let bound = honest as f64
        + budget(limits.burst, limits.requests_per_second)
        + 2.0 * budget(limits.refusal_burst, limits.refusals_per_second);
    assert!(
        unpaced || (grown as f64) <= bound,
        "the log grew by {grown} in {seconds:.1} s, over the attackers' budgets ({bound:.0}): {counts:?}"
    );
    // And the departments serve everyone at once afterwards.
    honest_lookups(&local, 5).await;
    let (unloaded_p99, loaded_p99) = (p99(&mut unloaded), p99(&mut loaded));
    println!(
        "{intensity:?}{}: honest lookups p99 unloaded {unloaded_p99} µs, under attack {loaded_p99} µs \
         (ratio {:.2}); attack {counts:?}; log grew by {grown}",
        if unpaced { " (refusals unpaced)" } else { "" },
        loaded_p99 as f64 / unloaded_p99.max(1) as f64,
    );
    local.shutdown().await.unwrap();
}

/// Classes 1–3 as reported: 1,100 idle sockets that never send a
/// ClientHello, the hotline's lookups with a 3 ms deadline under its rate
/// limit, a service point's refused Audit searches with oversized filters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_caller_is_served_under_the_reported_attacks() {
    honest_caller_under_attack(Intensity::AsReported).await;
}

/// The same attackers far beyond their rate limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_caller_is_served_under_floods_beyond_the_rate_limits() {
    honest_caller_under_attack(Intensity::BeyondTheRateLimits).await;
}
