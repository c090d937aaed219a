//! Discovery over real mutual TLS: which matters each caller sees
//! (`ListMatters`, `DescribeMatter`), where a matter is handled
//! (`FindServicePoints`), and that the hotline's discover grant shows it
//! everything while releasing no evidence. One shared local deployment,
//! which these tests do not change.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use tongban_core::{Catalogue, Level};
use tongban_devkit::local::LocalDeployment;
use tongban_devkit::pki::ORG_DONGLI_COMMUNITY;
use tongban_devkit::reference::stories;
use tongban_proto::v1::exchange_client::ExchangeClient;
use tongban_proto::v1::{
    DescribeMatterRequest, FindServicePointsRequest, FindServicePointsResponse, GatherRequest,
    ListEvidenceTypesRequest, ListMattersRequest,
};
use tongban_tests::*;
use tongban_trust::{TlsClientConfig, connect_channel};
use tonic::Code;
use tonic::transport::Channel;

const HOTLINE: &str = "hotline-96196";

fn local() -> &'static LocalDeployment {
    shared_deployment(env!("CARGO_TARGET_TMPDIR"))
}

async fn client(party: &str) -> ExchangeClient<Channel> {
    local().client(party).await.unwrap()
}

async fn matters(party: &str) -> BTreeSet<String> {
    client(party)
        .await
        .list_matters(timed(ListMattersRequest {}))
        .await
        .unwrap()
        .into_inner()
        .matters
        .into_iter()
        .map(|m| m.code)
        .collect()
}

fn at_or_below(level: Level) -> BTreeSet<String> {
    Catalogue::embedded()
        .matters()
        .iter()
        .filter(|m| m.level <= level)
        .map(|m| m.code.clone())
        .collect()
}

async fn find(
    party: &str,
    matter: &str,
    region: &str,
) -> Result<FindServicePointsResponse, tonic::Status> {
    client(party)
        .await
        .find_service_points(timed(FindServicePointsRequest {
            matter: matter.into(),
            region_code: region.into(),
        }))
        .await
        .map(tonic::Response::into_inner)
}

fn names(found: &FindServicePointsResponse) -> Vec<&str> {
    found
        .service_points
        .iter()
        .map(|p| p.name.as_str())
        .collect()
}

#[tokio::test]
async fn each_caller_lists_only_the_matters_its_grants_allow() {
    // A township hall: every matter up to township level, no county or city one.
    let township = matters("salian-township").await;
    assert_eq!(township, at_or_below(Level::Township));
    assert!(!township.contains("household-move-spouse"));
    assert!(!township.contains("pension-transfer"));
    // A community centre: community matters, plus the one named matter.
    let mut community = at_or_below(Level::Community);
    community.insert("unemployment-benefit".into());
    assert_eq!(matters("dongli-community").await, community);
    // A police station: its named matters.
    assert_eq!(
        matters("salian-police-station").await,
        [
            "criminal-investigation-assist",
            "household-registration-certificate",
            "temporary-id-card"
        ]
        .map(String::from)
        .into()
    );
    // The hotline's discover grant names every level up to the city.
    assert_eq!(matters(HOTLINE).await, at_or_below(Level::City));
    // A portal holds no grant: nothing.
    assert!(matters(tongban_devkit::pki::PORTAL_PARTY).await.is_empty());

    // DescribeMatter follows the same grants.
    let status = client("salian-township")
        .await
        .describe_matter(timed(DescribeMatterRequest {
            matter: "household-move-spouse".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(error_info(&status).0, "MATTER_NOT_GRANTED");
    let described = client("salian-township")
        .await
        .describe_matter(timed(DescribeMatterRequest {
            matter: "subsistence-allowance".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let matter = described.matter.unwrap();
    assert_eq!(
        (matter.level.as_str(), matter.city_wide),
        ("community", false)
    );
    assert!(
        described
            .evidence_types
            .iter()
            .all(|e| !e.fields.is_empty())
    );
}

#[tokio::test]
async fn the_hotline_discovers_everything_and_is_released_nothing_by_it() {
    let mut hotline = client(HOTLINE).await;
    // It may describe a matter it only discovers: which evidence the
    // exchange gathers, without any field.
    let described = hotline
        .describe_matter(timed(DescribeMatterRequest {
            matter: "unemployment-benefit".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let types: Vec<_> = described
        .evidence_types
        .iter()
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(types, ["police.identity", "hrss.unemployment"]);
    assert!(described.evidence_types.iter().all(|e| e.fields.is_empty()));
    // But no evidence under it: Lookup and Gather are refused (and audited).
    let status = hotline
        .lookup(timed(lookup_request(
            "unemployment-benefit",
            &stories::LAID_OFF_WORKER,
            "hrss.unemployment",
        )))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(error_info(&status).0, "MATTER_NOT_GRANTED");
    assert_receipt(refusal_receipt(&status).as_ref());
    for matter in [
        "pension-transfer",
        "subsistence-allowance",
        "temporary-id-card",
    ] {
        let status = hotline
            .gather(timed(GatherRequest {
                case: case(matter),
                subject: subject(&stories::MOSUO_VILLAGER),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{matter}: {status:?}"
        );
        assert_eq!(error_info(&status).0, "MATTER_NOT_GRANTED", "{matter}");
    }
    // Evidence types: only those of its one evidence grant, restricted.
    let listed = hotline
        .list_evidence_types(timed(ListEvidenceTypesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let ids: BTreeSet<_> = listed
        .evidence_types
        .iter()
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(ids, ["hrss.contributions", "police.identity"].into());
}

#[tokio::test]
async fn service_points_follow_level_grants_and_region() {
    // Not city-wide, community level: only where the household is.
    let found = find("salian-township", "subsistence-allowance", "510421")
        .await
        .unwrap();
    assert_eq!(found.matter, "subsistence-allowance");
    assert_eq!(
        (found.level.as_str(), found.city_wide),
        ("community", false)
    );
    assert_eq!(found.levels, ["community", "township", "county", "city"]);
    assert_eq!(names(&found), ["米易县撒莲镇便民服务中心"]);
    let point = &found.service_points[0];
    assert_eq!(
        (
            point.level.as_str(),
            point.region_code.as_str(),
            point.region_name.as_str()
        ),
        ("township", "510421", "米易县")
    );
    let township = &local().pki().get("salian-township").unwrap().identity;
    assert_eq!(
        point.unit,
        format!("org/{}/unit/{}", township.org(), township.unit())
    );
    let west = find(HOTLINE, "subsistence-allowance", "510403")
        .await
        .unwrap();
    assert_eq!(names(&west), ["西区动力站社区党群服务中心"]);
    assert!(
        find(HOTLINE, "subsistence-allowance", "510411")
            .await
            .unwrap()
            .service_points
            .is_empty()
    );
    // Without a region: every point granted it, lowest level first.
    let all = find(HOTLINE, "subsistence-allowance", "").await.unwrap();
    assert_eq!(
        names(&all),
        ["西区动力站社区党群服务中心", "米易县撒莲镇便民服务中心"]
    );

    // City-wide (同城通办), township level: every point that may handle it,
    // wherever the applicant lives; the community centre may not.
    let card = find(HOTLINE, "temporary-id-card", "510403").await.unwrap();
    assert!(card.city_wide);
    assert_eq!(card.levels, ["township", "county", "city"]);
    assert_eq!(
        names(&card),
        ["米易县公安局撒莲派出所", "米易县撒莲镇便民服务中心"]
    );
    // City-wide and asked for Miyi: those in Miyi first.
    let benefit = find(HOTLINE, "unemployment-benefit", "510421")
        .await
        .unwrap();
    assert_eq!(
        names(&benefit),
        ["米易县撒莲镇便民服务中心", "西区动力站社区党群服务中心"]
    );
    // A county matter nobody in the demo handles: known, no point.
    let spouse = find(HOTLINE, "household-move-spouse", "").await.unwrap();
    assert_eq!(spouse.level, "county");
    assert!(spouse.service_points.is_empty());
}

#[tokio::test]
async fn find_service_points_refuses_the_ungranted_and_the_malformed() {
    // A caller whose grants do not reach the matter: like DescribeMatter.
    let status = find("dongli-community", "household-move-spouse", "")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let (reason, _, meta) = error_info(&status);
    assert_eq!(reason, "MATTER_NOT_GRANTED");
    assert_eq!(meta["missing_grant"], "matter:household-move-spouse");
    // A certificate the policy does not name at all.
    let dir = tempfile::tempdir().unwrap();
    let files = issue_client(
        local().pki(),
        dir.path(),
        ORG_DONGLI_COMMUNITY.credit_code,
        "dongli-annex",
        |spec| spec,
    )
    .unwrap();
    let tls = TlsClientConfig::new(&files.cert, &files.key, &local().pki().ca_cert);
    let expected = local().pki().get("exchange").unwrap().identity.clone();
    let mut stranger = ExchangeClient::new(
        connect_channel(&local().exchange_url(), &tls, Some(&expected))
            .await
            .unwrap(),
    );
    let status = stranger
        .find_service_points(timed(FindServicePointsRequest {
            matter: "temporary-id-card".into(),
            region_code: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // Bad region codes: INVALID_ARGUMENT naming the field.
    for (region, says) in [
        ("5104", "6 digits"),
        ("5104211", "6 digits"),
        ("51042x", "6 digits"),
        ("51０421", "6 digits"),
        ("990421", "province"),
        ("510000", "province"),
        ("510421\n", "6 digits"),
    ] {
        let status = find(HOTLINE, "temporary-id-card", region)
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{region:?}: {status:?}"
        );
        let v = violations(&status);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].0, "region_code");
        assert!(v[0].1.contains(says), "{region:?}: {v:?}");
    }
    // Unknown or missing matter: NOT_FOUND.
    for matter in ["", "no-such-matter"] {
        let status = find(HOTLINE, matter, "").await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{matter:?}: {status:?}");
    }
    // Oversize: refused before decoding, like every call.
    let status = find(HOTLINE, &"x".repeat(64 * 1024), "").await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

/// The deployment's policy with a rate of 1 request per second, burst 2.
fn tiny_rate(pki: &tongban_devkit::pki::DevPki) -> anyhow::Result<String> {
    let text = tongban_devkit::local::policy_toml(pki)?;
    let limited = text
        .replace("requests_per_second = 2000.0", "requests_per_second = 1.0")
        .replace("burst = 4000", "burst = 2");
    anyhow::ensure!(limited != text && limited.contains("burst = 2\n"));
    Ok(limited)
}

/// A flood of discovery calls is held to the caller's rate, and being
/// discovery (no personal data), adds nothing to the audit log; a policy
/// change to the service points and discover grants applies without a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_floods_are_rate_limited_and_policy_changes_apply_live() {
    let (_dir, local) = own_deployment(
        tongban_devkit::local::LocalOptions::default()
            .policy(tiny_rate)
            .reload_poll(std::time::Duration::from_millis(50)),
    )
    .await
    .unwrap();
    let log = local.exchange().audit_log().unwrap();
    let before = log.stats().entries_committed;
    let mut hotline = local.client(HOTLINE).await.unwrap();
    let ask = FindServicePointsRequest {
        matter: "temporary-id-card".into(),
        region_code: "510421".into(),
    };
    let mut limited = 0;
    for _ in 0..20 {
        match hotline.find_service_points(timed(ask.clone())).await {
            Ok(_) => {}
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert_eq!(error_info(&status).0, "RATE_LIMITED");
                limited += 1;
            }
        }
    }
    // At most the burst and a token or two came back during the loop.
    assert!(limited >= 15, "{limited}");
    assert_eq!(
        log.stats().entries_committed,
        before,
        "discovery is not audited"
    );

    // Take the hotline's discover grant away and move the township hall to
    // county level: in force without a restart.
    let hotline_unit = &local.pki().get(HOTLINE).unwrap().identity;
    let text = std::fs::read_to_string(local.policy_path()).unwrap();
    let discover = format!(
        "[[grant]]\ncallers = [\"org/{}/unit/{}\"]\naccess = \"discover\"\nup_to_level = \"city\"\n",
        hotline_unit.org(),
        hotline_unit.unit()
    );
    assert!(text.contains(&discover), "{text}");
    let changed = text
        .replace(&discover, "")
        .replace("up_to_level = \"township\"", "up_to_level = \"county\"")
        .replace("requests_per_second = 1.0", "requests_per_second = 2000.0")
        .replace("burst = 2\n", "burst = 4000\n");
    let aside = local.policy_path().with_extension("toml.new");
    std::fs::write(&aside, changed).unwrap();
    std::fs::rename(&aside, local.policy_path()).unwrap();
    let mut township = local.client("salian-township").await.unwrap();
    eventually(
        std::time::Duration::from_secs(10),
        "the new policy in force",
        || {
            let mut township = township.clone();
            async move {
                township
                    .find_service_points(timed(FindServicePointsRequest {
                        matter: "household-move-spouse".into(),
                        region_code: String::new(),
                    }))
                    .await
                    .ok()
            }
        },
    )
    .await
    .map(|found| {
        let found = found.into_inner();
        assert_eq!(names(&found), ["米易县撒莲镇便民服务中心"]);
    })
    .unwrap();
    let status = hotline
        .find_service_points(timed(ask.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // Its one evidence grant still lets it list that matter, and only that.
    let listed = hotline
        .list_matters(timed(ListMattersRequest {}))
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<_> = listed.matters.iter().map(|m| m.code.as_str()).collect();
    assert_eq!(codes, ["social-insurance-record"]);
    let _ = township
        .list_matters(timed(ListMattersRequest {}))
        .await
        .unwrap();
    local.shutdown().await.unwrap();
}
