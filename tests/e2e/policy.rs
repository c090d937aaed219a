//! Issue 3: the access policy is data. A changed file takes effect without a
//! restart, a broken one is rejected (logged) while the old one stays in
//! force, and the per-caller rate limit answers RESOURCE_EXHAUSTED with
//! RetryInfo. Each test runs its own deployment, since it changes the policy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tongban_devkit::local::{LocalDeployment, LocalOptions, policy_toml};
use tongban_devkit::reference::stories;
use tongban_proto::v1::LookupRequest;
use tongban_proto::v1::exchange_client::ExchangeClient;
use tongban_tests::*;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

const HOTLINE: &str = "hotline-96196";

/// Replaces the policy file the way an operator's tooling should: write
/// aside, then rename, so the exchange never reads half a file.
fn write_policy(local: &LocalDeployment, text: &str) {
    let path = local.policy_path();
    let aside = path.with_extension("toml.new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, &path).unwrap();
}

/// The deployment's policy plus a grant of temporary ID cards to the hotline.
fn with_hotline_grant(local: &LocalDeployment) -> String {
    let hotline = &local.pki().get(HOTLINE).unwrap().identity;
    format!(
        "{}\n[[grant]]\ncallers = [\"org/{}/unit/{}\"]\nmatters = [\"temporary-id-card\"]\n",
        policy_toml(local.pki()).unwrap(),
        hotline.org(),
        hotline.unit()
    )
}

fn household_lookup() -> LookupRequest {
    lookup_request(
        "temporary-id-card",
        &stories::MOSUO_VILLAGER,
        "police.household",
    )
}

/// The hotline's household lookup: Ok, or the refusal's ErrorInfo reason.
async fn hotline_household(local: &LocalDeployment) -> Result<(), String> {
    let mut client = local.client(HOTLINE).await.unwrap();
    match client.lookup(timed(household_lookup())).await {
        Ok(_) => Ok(()),
        Err(status) => {
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
            Err(error_info(&status).0)
        }
    }
}

async fn wait_until_granted(local: &LocalDeployment, granted: bool) {
    eventually(
        Duration::from_secs(10),
        if granted {
            "grant in force"
        } else {
            "grant revoked"
        },
        || async {
            let outcome = hotline_household(local).await;
            (outcome.is_ok() == granted).then_some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_apply_without_restart_and_broken_files_are_rejected() {
    let logs = capture_logs();
    let (_dir, local) =
        own_deployment(LocalOptions::default().reload_poll(Duration::from_millis(100)))
            .await
            .unwrap();
    assert_eq!(
        hotline_household(&local).await,
        Err("MATTER_NOT_GRANTED".to_owned())
    );

    // Grant: in force without a restart.
    let from = logs.len();
    write_policy(&local, &with_hotline_grant(&local));
    wait_until_granted(&local, true).await;
    logs.wait_for(from, &["policy reloaded"], Duration::from_secs(5))
        .await
        .unwrap();

    // Revoke: refused again.
    write_policy(&local, &policy_toml(local.pki()).unwrap());
    wait_until_granted(&local, false).await;

    // Grant again, then break the file two ways: each is rejected with an
    // error naming the problem, and the grant in force stays.
    write_policy(&local, &with_hotline_grant(&local));
    wait_until_granted(&local, true).await;
    let broken = [
        ("[[grant]\ncallers = ", "invalid policy"),
        (
            "[[grant]]\ncallers = [\"group:nobody\"]\nmatters = [\"temporary-id-card\"]\n",
            "unknown group",
        ),
        (
            &*with_hotline_grant(&local).replace(
                "matters = [\"temporary-id-card\"]\n",
                "matters = [\"dog-licence\"]\n",
            ),
            "unknown matter",
        ),
    ];
    for (text, problem) in broken {
        let from = logs.len();
        write_policy(&local, text);
        let line = logs
            .wait_for(
                from,
                &["ERROR", "policy file rejected", problem],
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert!(line.contains("policy.toml"), "{line}");
        assert_eq!(hotline_household(&local).await, Ok(()), "after {problem}");
        // Others keep their grants too.
        let mut community = local.client("dongli-community").await.unwrap();
        community
            .lookup(timed(lookup_request(
                "unemployment-benefit",
                &stories::LAID_OFF_WORKER,
                "hrss.unemployment",
            )))
            .await
            .unwrap();
    }

    // A fixed file is picked up again.
    write_policy(&local, &policy_toml(local.pki()).unwrap());
    wait_until_granted(&local, false).await;
    local.shutdown().await.unwrap();
}

/// The deployment's policy with a rate of 1 request per second, burst 2.
fn tiny_rate(pki: &tongban_devkit::pki::DevPki) -> anyhow::Result<String> {
    let text = policy_toml(pki)?;
    let limited = text
        .replace("requests_per_second = 2000.0", "requests_per_second = 1.0")
        .replace("burst = 4000", "burst = 2");
    anyhow::ensure!(limited != text && limited.contains("burst = 2\n"));
    Ok(limited)
}

async fn community_lookup(client: &mut ExchangeClient<Channel>) -> Result<(), tonic::Status> {
    client
        .lookup(timed(lookup_request(
            "unemployment-benefit",
            &stories::LAID_OFF_WORKER,
            "police.identity",
        )))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_resource_exhausted_with_retry_info() {
    let (_dir, local) = own_deployment(LocalOptions::default().policy(tiny_rate))
        .await
        .unwrap();
    // One connection, so the three calls follow each other closely (a token
    // comes back only after a second).
    let mut community = local.client("dongli-community").await.unwrap();
    // The burst passes; the next request is refused.
    community_lookup(&mut community).await.unwrap();
    community_lookup(&mut community).await.unwrap();
    let status = community_lookup(&mut community).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let (reason, domain, _) = error_info(&status);
    assert_eq!(
        (reason.as_str(), domain.as_str()),
        ("RATE_LIMITED", "tongban.gov")
    );
    let retry = status
        .get_details_retry_info()
        .expect("RetryInfo")
        .retry_delay
        .expect("a retry delay");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(1),
        "{retry:?}"
    );

    // Buckets are per caller: the police station is unaffected.
    let mut station = local.client("salian-police-station").await.unwrap();
    station
        .lookup(timed(lookup_request(
            "temporary-id-card",
            &stories::MOSUO_VILLAGER,
            "police.identity",
        )))
        .await
        .unwrap();

    // After the advised delay, the caller is served again.
    tokio::time::sleep(retry + Duration::from_millis(50)).await;
    community_lookup(&mut community).await.unwrap();
    local.shutdown().await.unwrap();
}
