//! Issue 2 over real sockets and mutual TLS: Lookup for each department,
//! Gather for every catalogue matter, and every kind of bad input with its
//! status code and google.rpc details. One shared local deployment.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tongban_core::Catalogue;
use tongban_devkit::reference::stories::{self, Story};
use tongban_proto::v1::{GatherRequest, LookupRequest, Subject, gather_item};
use tongban_tests::*;
use tonic::Code;

fn local() -> &'static tongban_devkit::local::LocalDeployment {
    shared_deployment(env!("CARGO_TARGET_TMPDIR"))
}

/// Looks up `evidence_type` as `party`; checks the answer's department,
/// freshness and receipt, and returns its fields.
async fn lookup_ok(party: &str, matter: &str, story: &Story, evidence_type: &str) -> Fields {
    let mut client = local().client(party).await.unwrap();
    let response = client
        .lookup(timed(lookup_request(matter, story, evidence_type)))
        .await
        .unwrap_or_else(|s| panic!("{evidence_type} of {}: {s:?}", story.name))
        .into_inner();
    let evidence = response.evidence.expect("evidence");
    assert_eq!(evidence.evidence_type, evidence_type);
    let department = evidence_type.split('.').next().unwrap();
    assert_eq!(evidence.department, department);
    let current = evidence.current_as_of.expect("current_as_of");
    assert!(current.seconds > 1_500_000_000, "{current:?}");
    assert_receipt(response.receipt.as_ref());
    fields(&evidence)
}

async fn lookup_err(party: &str, request: LookupRequest) -> tonic::Status {
    let mut client = local().client(party).await.unwrap();
    match client.lookup(timed(request)).await {
        Ok(r) => panic!("expected a refusal, got {r:?}"),
        Err(status) => status,
    }
}

const COMMUNITY: &str = "dongli-community";
const POLICE_STATION: &str = "salian-police-station";

#[tokio::test]
async fn police_identity_and_household_for_the_mosuo_villager() {
    let villager = stories::MOSUO_VILLAGER;
    let id = lookup_ok(
        POLICE_STATION,
        "temporary-id-card",
        &villager,
        "police.identity",
    )
    .await;
    assert_eq!(value(&id, "name_matches"), "true");
    assert_eq!(value(&id, "card_status"), "valid");
    assert_eq!(value(&id, "alive"), "true");
    assert!(id.contains_key("card_valid_until"));

    let household = lookup_ok(
        POLICE_STATION,
        "temporary-id-card",
        &villager,
        "police.household",
    )
    .await;
    assert_eq!(value(&household, "region_code"), "510421");
    assert_eq!(value(&household, "district"), "米易县");
    assert!(
        value(&household, "registered_address").contains("撒莲镇磨所村"),
        "{household:?}"
    );
    assert_eq!(value(&household, "household_head"), "true");
}

#[tokio::test]
async fn police_identity_edge_cases_deceased_cancelled_and_wrong_name() {
    let deceased = lookup_ok(
        COMMUNITY,
        "pension-qualification",
        &stories::DECEASED_PENSIONER,
        "police.identity",
    )
    .await;
    assert_eq!(value(&deceased, "alive"), "false");
    assert_eq!(value(&deceased, "card_status"), "cancelled");

    let cancelled = lookup_ok(
        COMMUNITY,
        "pension-qualification",
        &stories::CANCELLED_CARD,
        "police.identity",
    )
    .await;
    assert_eq!(value(&cancelled, "card_status"), "cancelled");
    assert_eq!(value(&cancelled, "alive"), "true");

    let impostor = Story {
        name: "王五",
        ..stories::LAID_OFF_WORKER
    };
    let mismatch = lookup_ok(
        COMMUNITY,
        "unemployment-benefit",
        &impostor,
        "police.identity",
    )
    .await;
    assert_eq!(value(&mismatch, "name_matches"), "false");
}

#[tokio::test]
async fn civil_death_marriage_and_subsistence() {
    let death = lookup_ok(
        COMMUNITY,
        "pension-qualification",
        &stories::DECEASED_PENSIONER,
        "civil.death",
    )
    .await;
    assert_eq!(value(&death, "deceased"), "true");
    assert!(value(&death, "date_of_death").len() == 10, "{death:?}");

    let alive = lookup_ok(
        COMMUNITY,
        "pension-qualification",
        &stories::CERTIFIED_RETIREE,
        "civil.death",
    )
    .await;
    assert_eq!(value(&alive, "deceased"), "false");
    assert_eq!(alive.get("date_of_death"), Some(&None), "{alive:?}");

    let widow = lookup_ok(
        COMMUNITY,
        "subsistence-allowance",
        &stories::WIDOW,
        "civil.marriage",
    )
    .await;
    assert_eq!(value(&widow, "marital_status"), "widowed");

    let recipient = stories::SUBSISTENCE_RECIPIENT;
    let marriage = lookup_ok(
        COMMUNITY,
        "subsistence-allowance",
        &recipient,
        "civil.marriage",
    )
    .await;
    assert_eq!(value(&marriage, "marital_status"), "divorced");
    assert_eq!(value(&marriage, "status_since"), "2015-06-20");
    let allowance = lookup_ok(
        COMMUNITY,
        "subsistence-allowance",
        &recipient,
        "civil.subsistence",
    )
    .await;
    assert_eq!(value(&allowance, "receiving"), "true");
    assert_eq!(value(&allowance, "monthly_amount_yuan"), "720");
}

#[tokio::test]
async fn hrss_unemployment_eligible_and_not() {
    let laid_off = lookup_ok(
        COMMUNITY,
        "unemployment-benefit",
        &stories::LAID_OFF_WORKER,
        "hrss.unemployment",
    )
    .await;
    assert_eq!(value(&laid_off, "eligible"), "true");
    assert_eq!(value(&laid_off, "insured_months"), "86");
    assert_eq!(value(&laid_off, "registered_unemployed"), "true");
    assert_eq!(value(&laid_off, "separation_date").len(), 10);

    let short = lookup_ok(
        COMMUNITY,
        "unemployment-benefit",
        &stories::SHORT_INSURED_WORKER,
        "hrss.unemployment",
    )
    .await;
    assert_eq!(value(&short, "eligible"), "false");
    assert_eq!(value(&short, "insured_months"), "7");
    assert!(value(&short, "reason").contains("12"), "{short:?}");
}

#[tokio::test]
async fn hrss_pension_and_contributions() {
    let certified = lookup_ok(
        COMMUNITY,
        "pension-qualification",
        &stories::CERTIFIED_RETIREE,
        "hrss.pension",
    )
    .await;
    assert_eq!(value(&certified, "retired"), "true");
    assert_eq!(value(&certified, "receiving"), "true");
    assert_eq!(value(&certified, "qualification_due"), "false");
    assert_eq!(value(&certified, "last_qualification_date").len(), 10);

    let overdue = lookup_ok(
        COMMUNITY,
        "pension-qualification",
        &stories::OVERDUE_RETIREE,
        "hrss.pension",
    )
    .await;
    assert_eq!(value(&overdue, "qualification_due"), "true");

    // Dead, but the pension office has not been told: still paid, and due.
    let deceased = lookup_ok(
        COMMUNITY,
        "pension-qualification",
        &stories::DECEASED_PENSIONER,
        "hrss.pension",
    )
    .await;
    assert_eq!(value(&deceased, "receiving"), "true");
    assert_eq!(value(&deceased, "qualification_due"), "true");

    let never = lookup_ok(
        COMMUNITY,
        "social-insurance-record",
        &stories::NEVER_INSURED,
        "hrss.contributions",
    )
    .await;
    assert_eq!(value(&never, "total_months"), "0");
    assert_eq!(value(&never, "contributing"), "false");
}

#[tokio::test]
async fn field_mask_releases_only_the_fields_asked_for() {
    let mut request = lookup_request(
        "unemployment-benefit",
        &stories::LAID_OFF_WORKER,
        "hrss.unemployment",
    );
    request.fields = Some(prost_types::FieldMask {
        paths: vec!["eligible".into()],
    });
    let mut client = local().client(COMMUNITY).await.unwrap();
    let evidence = client
        .lookup(timed(request))
        .await
        .unwrap()
        .into_inner()
        .evidence
        .unwrap();
    let released = fields(&evidence);
    assert_eq!(
        released.keys().collect::<Vec<_>>(),
        ["eligible"],
        "{released:?}"
    );
}

/// Gathers `matter` as `party` and checks one evidence item per evidence type,
/// in the matter's order, each with a receipt.
async fn gather_matter(party: &str, matter: &str, story: &Story) {
    let mut client = local().client(party).await.unwrap();
    let response = client
        .gather(timed(GatherRequest {
            case: case(matter),
            subject: subject(story),
            evidence_types: Vec::new(),
            ..Default::default()
        }))
        .await
        .unwrap_or_else(|s| panic!("{matter}: {s:?}"))
        .into_inner();
    assert_eq!(response.matter, matter);
    let catalogue = Catalogue::embedded();
    let expected = &catalogue.matter(matter).unwrap().evidence;
    let got: Vec<&str> = response
        .items
        .iter()
        .map(|i| i.evidence_type.as_str())
        .collect();
    assert_eq!(got, *expected, "{matter}: items in matter order");
    for item in &response.items {
        match &item.result {
            Some(gather_item::Result::Evidence(e)) => {
                assert_eq!(e.evidence_type, item.evidence_type);
                assert_eq!(
                    e.department,
                    catalogue.evidence(&item.evidence_type).unwrap().department
                );
                assert!(!e.fields.is_empty(), "{matter}/{}", item.evidence_type);
                assert!(e.current_as_of.is_some());
            }
            other => panic!("{matter}/{}: {other:?}", item.evidence_type),
        }
        assert_receipt(item.receipt.as_ref());
    }
}

#[tokio::test]
async fn gather_temporary_id_card() {
    gather_matter(
        POLICE_STATION,
        "temporary-id-card",
        &stories::MOSUO_VILLAGER,
    )
    .await;
}

#[tokio::test]
async fn gather_unemployment_benefit() {
    gather_matter(COMMUNITY, "unemployment-benefit", &stories::LAID_OFF_WORKER).await;
}

#[tokio::test]
async fn gather_pension_qualification() {
    gather_matter(
        COMMUNITY,
        "pension-qualification",
        &stories::CERTIFIED_RETIREE,
    )
    .await;
}

#[tokio::test]
async fn gather_social_insurance_record() {
    gather_matter(
        "salian-township",
        "social-insurance-record",
        &stories::WIDOW,
    )
    .await;
}

#[tokio::test]
async fn gather_subsistence_allowance() {
    gather_matter(
        COMMUNITY,
        "subsistence-allowance",
        &stories::SUBSISTENCE_RECIPIENT,
    )
    .await;
}

#[tokio::test]
async fn gather_catalogue_is_what_describe_matter_says() {
    // The five matters of the issue are in the catalogue the exchange serves.
    let mut client = local().client(COMMUNITY).await.unwrap();
    for matter in [
        "unemployment-benefit",
        "pension-qualification",
        "social-insurance-record",
        "subsistence-allowance",
    ] {
        let described = client
            .describe_matter(timed(tongban_proto::v1::DescribeMatterRequest {
                matter: matter.into(),
            }))
            .await
            .unwrap()
            .into_inner();
        let m = described.matter.unwrap();
        assert_eq!(m.code, matter);
        let ids: Vec<&str> = described
            .evidence_types
            .iter()
            .map(|e| e.id.as_str())
            .collect();
        assert_eq!(ids, m.evidence_types);
    }
}

// ---------- bad input

/// GB 11643-1999 check character of 17 digits (computed here, independently
/// of the code under test).
fn with_check(first17: &str) -> String {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17
        .chars()
        .zip(WEIGHTS)
        .map(|(c, w)| c.to_digit(10).unwrap() * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize] as char;
    format!("{first17}{check}")
}

fn with_id(id_number: &str) -> LookupRequest {
    LookupRequest {
        subject: Some(Subject {
            id_number: id_number.into(),
            name: String::new(),
            ..Default::default()
        }),
        ..lookup_request(
            "unemployment-benefit",
            &stories::LAID_OFF_WORKER,
            "police.identity",
        )
    }
}

#[tokio::test]
async fn malformed_identity_numbers_name_the_failed_check() {
    let good = stories::LAID_OFF_WORKER.id_number;
    assert_eq!(with_check(&good[..17]), good, "the helper agrees");
    let wrong_check = format!(
        "{}{}",
        &good[..17],
        if good.ends_with('6') { '7' } else { '6' }
    );
    let cases = [
        (wrong_check, "checksum"),
        (good[..17].to_owned(), "length"),
        (format!("{good}1"), "length"),
        (format!("{}A{}", &good[..8], &good[9..]), "digits"),
        (with_check("51040319900230012"), "birth_date"),
        (with_check("51040320990101012"), "birth_date_future"),
    ];
    for (id_number, check) in cases {
        let status = lookup_err(COMMUNITY, with_id(&id_number)).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{check}: {status:?}");
        let v = violations(&status);
        assert_eq!(v.len(), 1, "{check}: {v:?}");
        assert_eq!(v[0].0, "subject.id_number", "{check}");
        assert!(
            v[0].1.contains(&format!("({check} check failed)")),
            "{check}: {}",
            v[0].1
        );
        assert!(
            !status.message().contains(&id_number),
            "no echo of the number"
        );
        let (reason, domain, _) = error_info(&status);
        assert_eq!(
            (reason.as_str(), domain.as_str()),
            ("INVALID_REQUEST", "tongban.gov")
        );
    }
}

#[tokio::test]
async fn missing_case_parts_are_each_reported() {
    let base = lookup_request(
        "unemployment-benefit",
        &stories::LAID_OFF_WORKER,
        "police.identity",
    );
    let status = lookup_err(
        COMMUNITY,
        LookupRequest {
            case: None,
            ..base.clone()
        },
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violations(&status)[0].0, "case");

    for field in ["matter", "case_number", "operator_id"] {
        let mut request = base.clone();
        let case = request.case.as_mut().unwrap();
        match field {
            "matter" => case.matter.clear(),
            "case_number" => case.case_number.clear(),
            _ => case.operator_id.clear(),
        }
        let status = lookup_err(COMMUNITY, request).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert_eq!(
            violations(&status),
            [(format!("case.{field}"), "is required".to_owned())],
        );
    }

    // Everything wrong at once: every violation in one answer.
    let mut request = base.clone();
    request.case = Some(tongban_proto::v1::CaseContext::default());
    request.subject = Some(Subject {
        id_number: "123".into(),
        name: String::new(),
        ..Default::default()
    });
    request.evidence_type.clear();
    let status = lookup_err(COMMUNITY, request).await;
    let mut fields: Vec<String> = violations(&status).into_iter().map(|v| v.0).collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "case.case_number",
            "case.matter",
            "case.operator_id",
            "evidence_type",
            "subject.id_number",
        ]
    );

    // Malformed (not just missing) case parts.
    let mut request = base;
    request.case.as_mut().unwrap().case_number = "case 1".into();
    let status = lookup_err(COMMUNITY, request).await;
    assert_eq!(violations(&status)[0].0, "case.case_number");
}

#[tokio::test]
async fn unknown_evidence_type_and_matter_are_not_found() {
    let status = lookup_err(
        COMMUNITY,
        lookup_request(
            "unemployment-benefit",
            &stories::LAID_OFF_WORKER,
            "police.fingerprints",
        ),
    )
    .await;
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let (reason, _, meta) = error_info(&status);
    assert_eq!(reason, "UNKNOWN_EVIDENCE_TYPE");
    assert_eq!(meta["evidence_type"], "police.fingerprints");

    let status = lookup_err(
        COMMUNITY,
        lookup_request("dog-licence", &stories::LAID_OFF_WORKER, "police.identity"),
    )
    .await;
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let (reason, _, meta) = error_info(&status);
    assert_eq!(reason, "UNKNOWN_MATTER");
    assert_eq!(meta["matter"], "dog-licence");

    // The same through Gather.
    let mut client = local().client(COMMUNITY).await.unwrap();
    let status = client
        .gather(timed(GatherRequest {
            case: case("dog-licence"),
            subject: subject(&stories::LAID_OFF_WORKER),
            evidence_types: Vec::new(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(error_info(&status).0, "UNKNOWN_MATTER");
    let status = client
        .gather(timed(GatherRequest {
            case: case("unemployment-benefit"),
            subject: subject(&stories::LAID_OFF_WORKER),
            evidence_types: vec!["police.identity".into(), "police.fingerprints".into()],
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(error_info(&status).0, "UNKNOWN_EVIDENCE_TYPE");
}

#[tokio::test]
async fn unknown_field_in_the_mask_is_invalid() {
    let mut request = lookup_request(
        "unemployment-benefit",
        &stories::LAID_OFF_WORKER,
        "hrss.unemployment",
    );
    request.fields = Some(prost_types::FieldMask {
        paths: vec!["eligible".into(), "salary".into()],
    });
    let status = lookup_err(COMMUNITY, request).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let v = violations(&status);
    assert_eq!(v[0].0, "fields");
    assert!(v[0].1.contains("salary"), "{v:?}");
}

#[tokio::test]
async fn subject_unknown_to_the_department_is_not_found_and_audited() {
    let nobody = Story {
        id_number: stories::UNKNOWN_PERSON_ID,
        name: "无名",
        about: "nobody",
    };
    let status = lookup_err(
        COMMUNITY,
        lookup_request("unemployment-benefit", &nobody, "police.identity"),
    )
    .await;
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let (reason, domain, meta) = error_info(&status);
    assert_eq!(reason, "SUBJECT_NOT_FOUND");
    assert_eq!(domain, "tongban.gov");
    assert_eq!(meta["department"], "police");
    assert!(status.message().contains("police"), "{}", status.message());
    // The refusal is in the audit log too: its receipt rides in the trailers.
    assert_receipt(refusal_receipt(&status).as_ref());
}

#[tokio::test]
async fn gather_refuses_bad_identity_numbers_too() {
    let mut client = local().client(COMMUNITY).await.unwrap();
    let status = client
        .gather(timed(GatherRequest {
            case: case("unemployment-benefit"),
            subject: Some(Subject {
                id_number: with_check("51040319900230012"),
                name: String::new(),
                ..Default::default()
            }),
            evidence_types: Vec::new(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let v = violations(&status);
    assert_eq!(v[0].0, "subject.id_number");
    assert!(v[0].1.contains("(birth_date check failed)"), "{v:?}");
}
