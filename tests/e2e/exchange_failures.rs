//! Issue 2: a department that is down or slow. Each test runs its own local
//! deployment, since it takes a department offline or slows one down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tongban_devkit::local::{LocalDeployment, LocalOptions};
use tongban_devkit::reference::Dept;
use tongban_devkit::reference::stories;
use tongban_proto::v1::{GatherRequest, GatherResponse, gather_item};
use tongban_tests::*;
use tonic::Code;

const COMMUNITY: &str = "dongli-community";

async fn gather(local: &LocalDeployment, matter: &str) -> GatherResponse {
    let mut client = local.client(COMMUNITY).await.unwrap();
    client
        .gather(timed(GatherRequest {
            case: case(matter),
            subject: subject(&stories::SUBSISTENCE_RECIPIENT),
            evidence_types: Vec::new(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
}

/// (evidence type, Ok(department) | Err(status)) per item.
fn outcomes(response: &GatherResponse) -> Vec<(String, Result<String, tonic::Status>)> {
    response
        .items
        .iter()
        .map(|i| {
            let outcome = match i.result.as_ref().expect("a result") {
                gather_item::Result::Evidence(e) => Ok(e.department.clone()),
                gather_item::Result::Error(s) => Err(item_status(s)),
            };
            (i.evidence_type.clone(), outcome)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gather_with_a_department_down_is_partial_and_recovers() {
    let (_dir, mut local) = own_deployment(LocalOptions::default()).await.unwrap();
    let matter = "subsistence-allowance";
    let before = gather(&local, matter).await;
    assert!(
        outcomes(&before).iter().all(|(_, o)| o.is_ok()),
        "{before:?}"
    );

    local.stop_department(Dept::Hrss).await.unwrap();
    let during = gather(&local, matter).await;
    let mut down = 0;
    for ((evidence_type, outcome), item) in outcomes(&during).into_iter().zip(&during.items) {
        // Every item is audited, answered or not.
        assert_receipt(item.receipt.as_ref());
        if evidence_type.starts_with("hrss.") {
            let status = outcome.expect_err("hrss is down");
            assert_eq!(
                status.code(),
                Code::Unavailable,
                "{evidence_type}: {status:?}"
            );
            assert!(status.message().contains("hrss"), "{}", status.message());
            let (reason, domain, meta) = error_info(&status);
            assert_eq!(reason, "DEPARTMENT_UNAVAILABLE");
            assert_eq!(domain, "tongban.gov");
            assert_eq!(meta["department"], "hrss");
            down += 1;
        } else {
            let department = outcome.unwrap_or_else(|s| panic!("{evidence_type}: {s:?}"));
            assert_eq!(Some(department.as_str()), evidence_type.split('.').next());
        }
    }
    assert_eq!(down, 2, "hrss.unemployment and hrss.pension");
    // The other evidence is intact, with the same facts as before.
    for (b, d) in before.items.iter().zip(&during.items) {
        if !b.evidence_type.starts_with("hrss.") {
            let (Some(gather_item::Result::Evidence(b)), Some(gather_item::Result::Evidence(d))) =
                (&b.result, &d.result)
            else {
                panic!("evidence expected");
            };
            assert_eq!(fields(b), fields(d));
        }
    }

    // A Lookup of the department's evidence fails the same way.
    let mut client = local.client(COMMUNITY).await.unwrap();
    let status = client
        .lookup(timed(lookup_request(
            "unemployment-benefit",
            &stories::LAID_OFF_WORKER,
            "hrss.unemployment",
        )))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(error_info(&status).2["department"], "hrss");
    assert_receipt(refusal_receipt(&status).as_ref());

    local.restart_department(Dept::Hrss).await.unwrap();
    // The exchange's channel reconnects on its own (with back-off).
    let after = eventually(
        Duration::from_secs(15),
        "full answers after restart",
        || {
            let local = &local;
            async move {
                let response = gather(local, matter).await;
                outcomes(&response)
                    .iter()
                    .all(|(_, o)| o.is_ok())
                    .then_some(response)
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(after.items.len(), 6);
    local.shutdown().await.unwrap();
}

/// A deployment whose hrss adapter takes 5 s per answer.
async fn slow_hrss(options: LocalOptions) -> (tempfile::TempDir, LocalDeployment) {
    own_deployment(options.slow_department(Dept::Hrss, Duration::from_secs(5)))
        .await
        .unwrap()
}

/// Checks the status is the exchange's timeout of hrss, and returns how
/// long the exchange gave the department, from the message. That number,
/// not a stopwatch, shows whose deadline bounded the wait.
fn assert_timeout_names_hrss(status: &tonic::Status) -> Duration {
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("hrss"), "{}", status.message());
    let (reason, domain, meta) = error_info(status);
    assert_eq!(reason, "DEPARTMENT_TIMEOUT");
    assert_eq!(domain, "tongban.gov");
    assert_eq!(meta["department"], "hrss");
    let waited = status
        .message()
        .strip_prefix("department hrss did not answer within ")
        .and_then(|rest| rest.strip_suffix(" ms"))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no wait in {:?}", status.message()));
    Duration::from_millis(waited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_department_exceeds_the_callers_deadline() {
    let (_dir, local) = slow_hrss(LocalOptions::default()).await;
    let mut client = local.client(COMMUNITY).await.unwrap();
    let mut request = tonic::Request::new(lookup_request(
        "unemployment-benefit",
        &stories::LAID_OFF_WORKER,
        "hrss.unemployment",
    ));
    // 900 ms: the exchange keeps a tenth (90 ms) to audit and answer, so
    // one slow commit on a shared disk does not lose the race with tonic's
    // own grpc-timeout (at 300 ms the margin was 30 ms, and a CI run lost).
    request.set_timeout(Duration::from_millis(900));
    // The client enforces nothing itself: the answer below is the exchange's
    // (its error details and receipt say so). The department answers only
    // after 5 s, so a timeout at all means the exchange stopped waiting;
    // that it gave the department at most the caller's budget shows it was
    // the caller's deadline that stopped it.
    let budget = tongban_exchange::routing::department_budget(Duration::from_millis(900));
    let status = tokio::time::timeout(CALL_TIMEOUT, client.lookup(request))
        .await
        .expect("an answer, not a hang")
        .unwrap_err();
    let waited = assert_timeout_names_hrss(&status);
    assert!(waited <= budget, "waited {waited:?} of a {budget:?} budget");
    // The department was asked, so the outcome must be in the audit log.
    assert_receipt(refusal_receipt(&status).as_ref());

    // In a Gather, only the slow department's item times out.
    let mut request = tonic::Request::new(GatherRequest {
        case: case("unemployment-benefit"),
        subject: subject(&stories::LAID_OFF_WORKER),
        evidence_types: Vec::new(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(900));
    let response = client.gather(request).await.unwrap().into_inner();
    let got = outcomes(&response);
    assert_eq!(got[0].1.as_deref().ok(), Some("police"));
    let waited = assert_timeout_names_hrss(got[1].1.as_ref().unwrap_err());
    assert!(waited <= budget, "waited {waited:?} of a {budget:?} budget");
    local.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_department_exceeds_the_departments_own_limit() {
    // The caller would wait 10 s; the exchange waits 300 ms for any department.
    let (_dir, local) =
        slow_hrss(LocalOptions::default().department_timeout(Duration::from_millis(300))).await;
    let mut client = local.client(COMMUNITY).await.unwrap();
    let status = client
        .lookup(timed(lookup_request(
            "unemployment-benefit",
            &stories::LAID_OFF_WORKER,
            "hrss.unemployment",
        )))
        .await
        .unwrap_err();
    // The department's own limit, not the caller's 10 s, bounded the wait
    // (a little less than 300 ms remain by the time the attempt starts).
    let waited = assert_timeout_names_hrss(&status);
    assert!(waited <= Duration::from_millis(300), "waited {waited:?}");
    assert_receipt(refusal_receipt(&status).as_ref());
    local.shutdown().await.unwrap();
}
