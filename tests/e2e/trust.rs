//! Issue 3 over real sockets: who gets in (mutual TLS), what a caller may ask
//! (deny by default, bound to purpose, field-level release), what discovery
//! shows it, and that a service point cannot bypass the exchange. One shared
//! local deployment, which these tests do not change.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use tongban_devkit::local::LocalDeployment;
use tongban_devkit::pki::{DevCa, KeyAlgorithm, ORG_DONGLI_COMMUNITY};
use tongban_devkit::reference::stories;
use tongban_proto::v1::adapter_client::AdapterClient;
use tongban_proto::v1::exchange_client::ExchangeClient;
use tongban_proto::v1::{
    DescribeMatterRequest, GatherRequest, ListEvidenceTypesRequest, ListMattersRequest,
    LookupRequest, QueryRequest, gather_item,
};
use tongban_tests::*;
use tongban_trust::{TlsClientConfig, connect_channel};
use tonic::Code;
use tonic::transport::Channel;

const DAY: Duration = Duration::from_secs(86_400);

fn local() -> &'static LocalDeployment {
    shared_deployment(env!("CARGO_TARGET_TMPDIR"))
}

fn sample_lookup() -> LookupRequest {
    lookup_request(
        "unemployment-benefit",
        &stories::LAID_OFF_WORKER,
        "police.identity",
    )
}

/// Connects with a raw TLS client presenting `client` (or nothing) and makes
/// one Lookup, which must fail at the transport. The server's log says why.
async fn refused_lookup(client: Option<&ClientFiles>) {
    let config = raw_tls_client(&local().pki().ca_cert, client).unwrap();
    let outcome = async {
        let mut exchange = raw_exchange_client(&local().exchange_url(), config).await?;
        exchange.lookup(timed(sample_lookup())).await?;
        anyhow::Ok(())
    }
    .await;
    let error = outcome.expect_err("the exchange must refuse the connection");
    // A transport failure (the TLS alert, or the connection closing before
    // it is read), never an answer from the service.
    if let Some(status) = error.downcast_ref::<tonic::Status>() {
        assert!(
            std::error::Error::source(status).is_some(),
            "not a transport failure: {status:?}"
        );
        assert!(
            tonic_types::StatusExt::get_details_error_info(status).is_none(),
            "the service answered: {status:?}"
        );
    }
}

#[tokio::test]
async fn no_client_certificate_is_refused_at_the_handshake() {
    let logs = capture_logs();
    refused_lookup(None).await;
    logs.wait_for(
        0,
        &["TLS handshake failed", "no client certificate"],
        Duration::from_secs(5),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let rogue = DevCa::generate(
        "rogue CA",
        KeyAlgorithm::EcdsaP256,
        now - DAY,
        now + 30 * DAY,
    )
    .unwrap();
    // The same identity as a real service point, signed by the wrong CA.
    let identity = local()
        .pki()
        .get("dongli-community")
        .unwrap()
        .identity
        .clone();
    let issued = rogue
        .issue(&tongban_devkit::pki::LeafSpec::for_identity(&identity))
        .unwrap();
    let files = ClientFiles {
        cert: dir.path().join("rogue.pem"),
        key: dir.path().join("rogue.key"),
    };
    issued.write(&files.cert, &files.key).unwrap();
    refused_lookup(Some(&files)).await;
    logs.wait_for(
        0,
        &["TLS handshake failed", "client certificate from unknown CA"],
        Duration::from_secs(5),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let files = issue_client(
        local().pki(),
        dir.path(),
        ORG_DONGLI_COMMUNITY.credit_code,
        "dongli-community",
        |spec| spec.valid_between(now - 10 * DAY, now - DAY),
    )
    .unwrap();
    refused_lookup(Some(&files)).await;
    logs.wait_for(
        0,
        &["TLS handshake failed", "client certificate expired"],
        Duration::from_secs(5),
    )
    .await
    .unwrap();
}

/// A client for a unit of the Dongli community's organisation that the
/// policy does not name: a valid certificate without any grant.
async fn ungranted_client() -> (tempfile::TempDir, ExchangeClient<Channel>) {
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
    let channel = connect_channel(&local().exchange_url(), &tls, Some(&expected))
        .await
        .unwrap();
    (dir, ExchangeClient::new(channel))
}

#[tokio::test]
async fn valid_certificate_without_a_grant_is_permission_denied_and_audited() {
    let (_dir, mut client) = ungranted_client().await;
    let committed_before = local()
        .exchange()
        .audit_log()
        .unwrap()
        .stats()
        .entries_committed;
    let status = client.lookup(timed(sample_lookup())).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let (reason, domain, meta) = error_info(&status);
    assert_eq!(reason, "MATTER_NOT_GRANTED");
    assert_eq!(domain, "tongban.gov");
    assert_eq!(meta["missing_grant"], "matter:unemployment-benefit");
    assert_eq!(
        meta["caller"],
        format!("org/{}/unit/dongli-annex", ORG_DONGLI_COMMUNITY.credit_code)
    );
    // Nothing about the subject is revealed.
    assert!(
        !status
            .message()
            .contains(stories::LAID_OFF_WORKER.id_number)
    );
    // The refusal is audited: a receipt in the trailers, an entry committed.
    let receipt = refusal_receipt(&status);
    assert_receipt(receipt.as_ref());
    let stats = local().exchange().audit_log().unwrap().stats();
    assert!(stats.entries_committed > committed_before, "{stats:?}");
    assert!(receipt.unwrap().index < stats.tree_size);

    let status = client
        .gather(timed(GatherRequest {
            case: case("unemployment-benefit"),
            subject: subject(&stories::LAID_OFF_WORKER),
            evidence_types: Vec::new(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(error_info(&status).0, "MATTER_NOT_GRANTED");

    // Discovery shows it nothing.
    let matters = client
        .list_matters(timed(ListMattersRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(matters.matters.is_empty(), "{matters:?}");
    let types = client
        .list_evidence_types(timed(ListEvidenceTypesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(types.evidence_types.is_empty(), "{types:?}");
}

#[tokio::test]
async fn evidence_outside_the_requested_matter_is_permission_denied() {
    // A police station may issue temporary ID cards; that purpose does not
    // need unemployment insurance records.
    let mut station = local().client("salian-police-station").await.unwrap();
    let status = station
        .lookup(timed(lookup_request(
            "temporary-id-card",
            &stories::MOSUO_VILLAGER,
            "hrss.unemployment",
        )))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let (reason, _, meta) = error_info(&status);
    assert_eq!(reason, "EVIDENCE_NOT_IN_MATTER");
    assert_eq!(meta["matter"], "temporary-id-card");
    assert_eq!(meta["evidence_type"], "hrss.unemployment");
    assert_receipt(refusal_receipt(&status).as_ref());

    // Granted the matter, but household registration is not needed for it.
    let mut community = local().client("dongli-community").await.unwrap();
    let status = community
        .lookup(timed(lookup_request(
            "unemployment-benefit",
            &stories::LAID_OFF_WORKER,
            "police.household",
        )))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(error_info(&status).0, "EVIDENCE_NOT_IN_MATTER");

    // Within a Gather, the out-of-matter item is refused and the rest answered.
    let response = community
        .gather(timed(GatherRequest {
            case: case("unemployment-benefit"),
            subject: subject(&stories::LAID_OFF_WORKER),
            evidence_types: vec!["police.identity".into(), "civil.marriage".into()],
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        response.items[0].result,
        Some(gather_item::Result::Evidence(_))
    ));
    let Some(gather_item::Result::Error(rpc)) = &response.items[1].result else {
        panic!("{:?}", response.items[1]);
    };
    let status = item_status(rpc);
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(error_info(&status).0, "EVIDENCE_NOT_IN_MATTER");
}

#[tokio::test]
async fn field_restriction_strips_fields_and_refuses_withheld_ones() {
    let mut hotline = local().client("hotline-96196").await.unwrap();
    let matter = "social-insurance-record";
    let worker = stories::LAID_OFF_WORKER;
    let names = |evidence: &tongban_proto::v1::Evidence| -> Vec<String> {
        fields(evidence).into_keys().collect()
    };

    let identity = hotline
        .lookup(timed(lookup_request(matter, &worker, "police.identity")))
        .await
        .unwrap()
        .into_inner()
        .evidence
        .unwrap();
    assert_eq!(names(&identity), ["alive", "name_matches"]);
    assert_eq!(value(&fields(&identity), "alive"), "true");
    let contributions = hotline
        .lookup(timed(lookup_request(matter, &worker, "hrss.contributions")))
        .await
        .unwrap()
        .into_inner()
        .evidence
        .unwrap();
    assert_eq!(names(&contributions), ["contributing", "total_months"]);
    assert_eq!(value(&fields(&contributions), "total_months"), "86");

    // A community centre, with no field restriction, gets every field.
    let mut community = local().client("dongli-community").await.unwrap();
    let full = community
        .lookup(timed(lookup_request(matter, &worker, "police.identity")))
        .await
        .unwrap()
        .into_inner()
        .evidence
        .unwrap();
    assert_eq!(
        names(&full),
        ["alive", "card_status", "card_valid_until", "name_matches"]
    );

    // Asking explicitly for a withheld field is refused, naming it.
    let mut request = lookup_request(matter, &worker, "police.identity");
    request.fields = Some(prost_types::FieldMask {
        paths: vec!["alive".into(), "card_status".into()],
    });
    let status = hotline.lookup(timed(request)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let (reason, _, meta) = error_info(&status);
    assert_eq!(reason, "FIELDS_NOT_GRANTED");
    assert_eq!(meta["evidence_type"], "police.identity");
    assert_eq!(meta["fields"], "card_status");

    // Asking for a granted subset works.
    let mut request = lookup_request(matter, &worker, "police.identity");
    request.fields = Some(prost_types::FieldMask {
        paths: vec!["alive".into()],
    });
    let only = hotline
        .lookup(timed(request))
        .await
        .unwrap()
        .into_inner()
        .evidence
        .unwrap();
    assert_eq!(names(&only), ["alive"]);

    // Gather applies the same restriction.
    let gathered = hotline
        .gather(timed(GatherRequest {
            case: case(matter),
            subject: subject(&worker),
            evidence_types: Vec::new(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    for item in &gathered.items {
        let Some(gather_item::Result::Evidence(e)) = &item.result else {
            panic!("{item:?}");
        };
        let expected: &[&str] = match item.evidence_type.as_str() {
            "police.identity" => &["alive", "name_matches"],
            _ => &["contributing", "total_months"],
        };
        assert_eq!(names(e), expected);
    }
}

async fn query_adapter_directly(party: &str) -> Result<(), String> {
    let local = local();
    let tls = local.pki().client_config(party).unwrap();
    let url = local
        .adapter_url(tongban_devkit::reference::Dept::Police)
        .unwrap();
    let expected = local.pki().get("police").unwrap().identity.clone();
    let channel = connect_channel(&url, &tls, Some(&expected))
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    AdapterClient::new(channel)
        .query(timed(QueryRequest {
            case: case("temporary-id-card"),
            subject: subject(&stories::MOSUO_VILLAGER),
            evidence_type: "police.identity".into(),
            fields: None,
            requester: "org/12510403TB0000060J/unit/dongli-community".into(),
            ..Default::default()
        }))
        .await
        .map(|_| ())
        .map_err(|s| {
            assert!(
                tonic_types::StatusExt::get_details_error_info(&s).is_none(),
                "the adapter answered instead of refusing the connection: {s:?}"
            );
            format!("call: {s:?}")
        })
}

#[tokio::test]
async fn a_service_points_certificate_cannot_call_an_adapter_directly() {
    let logs = capture_logs();
    query_adapter_directly("dongli-community")
        .await
        .expect_err("the adapter must refuse a service point");
    logs.wait_for(
        0,
        &[
            "TLS handshake failed",
            "unit/dongli-community is not allowed",
        ],
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    // The exchange's certificate is what it admits.
    query_adapter_directly("exchange").await.unwrap();
}

#[tokio::test]
async fn discovery_shows_a_police_station_only_its_matters() {
    let mut station = local().client("salian-police-station").await.unwrap();
    let matters = station
        .list_matters(timed(ListMattersRequest {}))
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<&str> = matters.matters.iter().map(|m| m.code.as_str()).collect();
    assert_eq!(
        codes,
        ["temporary-id-card", "criminal-investigation-assist"]
    );

    let types = station
        .list_evidence_types(timed(ListEvidenceTypesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = types.evidence_types.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["police.identity", "police.household"]);
    let hrss = station
        .list_evidence_types(timed(ListEvidenceTypesRequest {
            department: "hrss".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(hrss.evidence_types.is_empty(), "{hrss:?}");

    let described = station
        .describe_matter(timed(DescribeMatterRequest {
            matter: "temporary-id-card".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described.evidence_types.len(), 2);

    let status = station
        .describe_matter(timed(DescribeMatterRequest {
            matter: "unemployment-benefit".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let (reason, _, meta) = error_info(&status);
    assert_eq!(reason, "MATTER_NOT_GRANTED");
    assert_eq!(meta["missing_grant"], "matter:unemployment-benefit");
    // An unknown matter is NOT_FOUND, not a denial.
    let status = station
        .describe_matter(timed(DescribeMatterRequest {
            matter: "dog-licence".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn discovery_shows_each_caller_its_own_grants() {
    let mut community = local().client("dongli-community").await.unwrap();
    let matters = community
        .list_matters(timed(ListMattersRequest {}))
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<&str> = matters.matters.iter().map(|m| m.code.as_str()).collect();
    assert_eq!(
        codes,
        [
            "subsistence-allowance",
            "subsistence-allowance-review",
            "unemployment-benefit",
            "pension-qualification",
            "social-insurance-record",
        ]
    );
    let civil = community
        .list_evidence_types(timed(ListEvidenceTypesRequest {
            department: "civil".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = civil.evidence_types.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["civil.marriage", "civil.subsistence", "civil.death"]);
    let status = community
        .describe_matter(timed(DescribeMatterRequest {
            matter: "temporary-id-card".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let mut hotline = local().client("hotline-96196").await.unwrap();
    let matters = hotline
        .list_matters(timed(ListMattersRequest {}))
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<&str> = matters.matters.iter().map(|m| m.code.as_str()).collect();
    assert_eq!(codes, ["social-insurance-record"]);
    let types = hotline
        .list_evidence_types(timed(ListEvidenceTypesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = types.evidence_types.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["police.identity", "hrss.contributions"]);
}

#[tokio::test]
async fn discovery_lists_only_the_fields_a_caller_receives() {
    // The hotline receives two fields of police.identity; describing the
    // other two would advertise data it may not use.
    let mut hotline = local().client("hotline-96196").await.unwrap();
    let types = hotline
        .list_evidence_types(timed(ListEvidenceTypesRequest {
            department: "police".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let identity = &types.evidence_types[0];
    assert_eq!(identity.id, "police.identity");
    let names: Vec<&str> = identity.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["name_matches", "alive"], "ListEvidenceTypes");

    let described = hotline
        .describe_matter(timed(DescribeMatterRequest {
            matter: "social-insurance-record".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    for info in &described.evidence_types {
        let names: Vec<&str> = info.fields.iter().map(|f| f.name.as_str()).collect();
        let expected: &[&str] = match info.id.as_str() {
            "police.identity" => &["name_matches", "alive"],
            _ => &["total_months", "contributing"],
        };
        assert_eq!(names, expected, "DescribeMatter {}", info.id);
    }
}
