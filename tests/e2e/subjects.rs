//! People and enterprises over real sockets and mutual TLS: enterprises
//! named by credit code, several subjects per case each in its role, every
//! refusal with its status and details, each Gather item audited against
//! its own subject, and every matter of the catalogue gathered end to end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use tongban_core::{Catalogue, Role};
use tongban_devkit::local::{DEPARTMENTS, LocalDeployment, LocalOptions, policy_toml};
use tongban_devkit::reference::stories::{self, Story, StoryEnterprise};
use tongban_exchange::pipeline::MAX_GATHER_SUBJECTS;
use tongban_proto::v1::audit_client::AuditClient;
use tongban_proto::v1::{
    AdminContext, AuditFilter, AuditSearchRequest, GatherItem, GatherRequest, GatherResponse,
    LookupRequest, Subject, gather_item,
};
use tongban_tests::*;
use tonic::Code;

fn local() -> &'static LocalDeployment {
    shared_deployment(env!("CARGO_TARGET_TMPDIR"))
}

const TOWNSHIP: &str = "salian-township";
const COMMUNITY: &str = "dongli-community";
const ENTERPRISE_MATTER: &str = "enterprise-social-insurance-registration";

fn person(story: &Story, role: &str) -> Subject {
    Subject {
        id_number: story.id_number.into(),
        name: story.name.into(),
        role: role.into(),
        ..Default::default()
    }
}

fn enterprise(e: &StoryEnterprise) -> Subject {
    Subject {
        credit_code: e.credit_code.into(),
        name: e.name.into(),
        role: "enterprise".into(),
        ..Default::default()
    }
}

fn gather_request(matter: &str, case_number: &str, subjects: Vec<Subject>) -> GatherRequest {
    let mut case = case(matter).unwrap();
    case.case_number = case_number.into();
    GatherRequest {
        case: Some(case),
        subjects,
        ..Default::default()
    }
}

async fn gather(party: &str, request: GatherRequest) -> Result<GatherResponse, tonic::Status> {
    let mut client = local().client(party).await.unwrap();
    client
        .gather(timed(request))
        .await
        .map(tonic::Response::into_inner)
}

fn item<'a>(r: &'a GatherResponse, index: u32, evidence_type: &str) -> &'a GatherItem {
    r.items
        .iter()
        .find(|i| i.subject_index == index && i.evidence_type == evidence_type)
        .unwrap_or_else(|| panic!("no item {index}/{evidence_type} in {r:?}"))
}

fn answered(item: &GatherItem) -> Fields {
    assert_receipt(item.receipt.as_ref());
    match &item.result {
        Some(gather_item::Result::Evidence(e)) => fields(e),
        other => panic!("{}: {other:?}", item.evidence_type),
    }
}

#[tokio::test]
async fn enterprise_registers_employees_at_the_township_hall() {
    let r = gather(
        TOWNSHIP,
        gather_request(
            ENTERPRISE_MATTER,
            "E2E-ENT-0001",
            vec![
                enterprise(&stories::SALIAN_MANGO),
                person(&stories::SALIAN_ENTREPRENEUR, "legal-representative"),
            ],
        ),
    )
    .await
    .unwrap();
    let shape: Vec<(u32, &str, &str)> = r
        .items
        .iter()
        .map(|i| (i.subject_index, i.role.as_str(), i.evidence_type.as_str()))
        .collect();
    assert_eq!(
        shape,
        [
            (0, "enterprise", "market.registration"),
            (0, "enterprise", "market.abnormal"),
            (1, "legal-representative", "police.identity"),
        ]
    );
    let reg = answered(item(&r, 0, "market.registration"));
    assert_eq!(value(&reg, "status"), "in-operation");
    assert_eq!(value(&reg, "name_matches"), "true");
    assert_eq!(value(&reg, "legal_representative_matches"), "true");
    assert_eq!(value(&reg, "registered_capital_yuan"), "500000");
    let abnormal = answered(item(&r, 0, "market.abnormal"));
    assert_eq!(value(&abnormal, "listed"), "false");
    let police = answered(item(&r, 1, "police.identity"));
    assert_eq!(value(&police, "alive"), "true");
    assert_eq!(value(&police, "name_matches"), "true");

    // Someone else presented as the legal representative: the register
    // says so.
    let r = gather(
        TOWNSHIP,
        gather_request(
            ENTERPRISE_MATTER,
            "E2E-ENT-0002",
            vec![
                enterprise(&stories::SALIAN_MANGO),
                person(&stories::MOSUO_VILLAGER, "legal-representative"),
            ],
        ),
    )
    .await
    .unwrap();
    let reg = answered(item(&r, 0, "market.registration"));
    assert_eq!(value(&reg, "legal_representative_matches"), "false");

    // Administrators find the enterprise's entries by its credit code, and
    // only those: the legal representative's are under his own number.
    let records = audit_entries(AuditFilter {
        subject_credit_code: stories::SALIAN_MANGO.credit_code.into(),
        case_number: "E2E-ENT-0001".into(),
        ..Default::default()
    })
    .await;
    let mut kinds: Vec<&str> = records.iter().map(|r| r.evidence_type.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["market.abnormal", "market.registration"]);
    assert!(records.iter().all(|r| r.detail == "role=enterprise"));
    let records = audit_entries(AuditFilter {
        subject_id_number: stories::SALIAN_ENTREPRENEUR.id_number.into(),
        case_number: "E2E-ENT-0001".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].evidence_type, "police.identity");
    assert_eq!(records[0].detail, "role=legal-representative");
    // A malformed credit code in the filter names its check.
    let mut client = AuditClient::new(local().channel("admin").await.unwrap());
    let status = client
        .search(timed(AuditSearchRequest {
            admin: Some(AdminContext {
                operator_id: "auditor.e2e".into(),
                reason: "subjects test".into(),
            }),
            filter: Some(AuditFilter {
                subject_credit_code: "91510421TB6A1B2C3N".into(),
                ..Default::default()
            }),
            page_size: 10,
            page_token: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let v = violations(&status);
    assert_eq!(v[0].0, "filter.subject_credit_code");
    assert!(v[0].1.contains("(checksum check failed)"), "{v:?}");
}

#[tokio::test]
async fn enterprise_edge_cases_revoked_listed_and_deceased_representative() {
    for (e, status, listed) in [
        (stories::REVOKED_LICENCE, "revoked", "true"),
        (stories::ABNORMAL_ENTERPRISE, "in-operation", "true"),
        (stories::DECEASED_REPRESENTATIVE, "in-operation", "false"),
    ] {
        let r = gather(
            TOWNSHIP,
            gather_request(
                ENTERPRISE_MATTER,
                "E2E-ENT-0003",
                vec![
                    enterprise(&e),
                    person(&e.legal_representative, "legal-representative"),
                ],
            ),
        )
        .await
        .unwrap();
        let reg = answered(item(&r, 0, "market.registration"));
        assert_eq!(value(&reg, "status"), status, "{}", e.name);
        assert_eq!(value(&reg, "legal_representative_matches"), "true");
        let abnormal = answered(item(&r, 0, "market.abnormal"));
        assert_eq!(value(&abnormal, "listed"), listed, "{}", e.name);
        let police = answered(item(&r, 1, "police.identity"));
        let alive = e.legal_representative != stories::DECEASED_PENSIONER;
        assert_eq!(value(&police, "alive"), alive.to_string(), "{}", e.name);
    }
    // A Lookup of an enterprise by its credit code alone (the primary role).
    let mut client = local().client(TOWNSHIP).await.unwrap();
    let answer = client
        .lookup(timed(LookupRequest {
            case: case(ENTERPRISE_MATTER),
            subject: Some(Subject {
                credit_code: stories::CANCELLED_ENTERPRISE.credit_code.into(),
                ..Default::default()
            }),
            evidence_type: "market.registration".into(),
            fields: None,
        }))
        .await
        .unwrap()
        .into_inner();
    let f = fields(answer.evidence.as_ref().unwrap());
    assert_eq!(value(&f, "status"), "cancelled");
    assert_eq!(f.get("legal_representative_matches"), Some(&None));
    // An unknown enterprise is NOT_FOUND from market regulation.
    let status = client
        .lookup(timed(LookupRequest {
            case: case(ENTERPRISE_MATTER),
            subject: Some(Subject {
                credit_code: stories::UNKNOWN_ENTERPRISE_CODE.into(),
                ..Default::default()
            }),
            evidence_type: "market.abnormal".into(),
            fields: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test]
async fn malformed_credit_codes_name_the_failed_check() {
    let mut client = local().client(TOWNSHIP).await.unwrap();
    for (code, check) in [
        ("91510421TB6A1B2C3", "length"),
        ("91510421TB6A1B2CIG", "alphabet"),
        ("91510421TB6A1B2C3N", "checksum"),
    ] {
        let status = client
            .lookup(timed(LookupRequest {
                case: case(ENTERPRISE_MATTER),
                subject: Some(Subject {
                    credit_code: code.into(),
                    ..Default::default()
                }),
                evidence_type: "market.registration".into(),
                fields: None,
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{code}");
        let v = violations(&status);
        assert_eq!(v[0].0, "subject.credit_code", "{code}: {v:?}");
        assert!(
            v[0].1.contains(&format!("({check} check failed)")),
            "{code}: {v:?}"
        );
        assert!(refusal_receipt(&status).is_some(), "refusals are audited");
        // The same in a Gather's subjects, by position.
        let mut bad = enterprise(&stories::SALIAN_MANGO);
        bad.credit_code = code.into();
        let status = gather(
            TOWNSHIP,
            gather_request(
                ENTERPRISE_MATTER,
                "E2E-ENT-0004",
                vec![
                    person(&stories::SALIAN_ENTREPRENEUR, "legal-representative"),
                    bad,
                ],
            ),
        )
        .await
        .unwrap_err();
        let v = violations(&status);
        assert_eq!(v[0].0, "subjects[1].credit_code", "{code}: {v:?}");
        assert!(v[0].1.contains(&format!("({check} check failed)")));
    }
}

#[tokio::test]
async fn roles_the_matter_does_not_have_or_lacks_are_refused_with_details() {
    let mango = enterprise(&stories::SALIAN_MANGO);
    let rep = person(&stories::SALIAN_ENTREPRENEUR, "legal-representative");
    let refused = |subjects: Vec<Subject>| async move {
        gather(
            TOWNSHIP,
            gather_request(ENTERPRISE_MATTER, "E2E-ROLE-0001", subjects),
        )
        .await
        .unwrap_err()
    };
    // A household member in an enterprise matter.
    let s = refused(vec![
        mango.clone(),
        rep.clone(),
        person(&stories::WIDOW, "household-member"),
    ])
    .await;
    assert_eq!(s.code(), Code::InvalidArgument);
    let (reason, _, meta) = error_info(&s);
    assert_eq!(reason, "ROLE_NOT_IN_MATTER");
    assert_eq!(meta["role"], "household-member");
    assert_eq!(meta["matter_roles"], "enterprise, legal-representative");
    // The legal representative missing.
    let s = refused(vec![mango.clone()]).await;
    let (reason, _, meta) = error_info(&s);
    assert_eq!(
        (s.code(), reason.as_str()),
        (Code::InvalidArgument, "MISSING_ROLE")
    );
    assert_eq!(meta["role"], "legal-representative");
    // Two legal representatives.
    let s = refused(vec![
        mango.clone(),
        rep.clone(),
        person(&stories::WIDOW, "legal-representative"),
    ])
    .await;
    assert_eq!(error_info(&s).0, "TOO_MANY_SUBJECTS");
    // A person as the enterprise, an enterprise as the legal representative.
    let mut as_rep = mango.clone();
    as_rep.role = "legal-representative".into();
    let s = refused(vec![person(&stories::WIDOW, "enterprise"), as_rep]).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    let fields: Vec<String> = violations(&s).into_iter().map(|v| v.0).collect();
    assert_eq!(fields, ["subjects[0].credit_code", "subjects[1].id_number"]);
    // An unknown role name; the same subject twice; both subject forms.
    let mut odd = rep.clone();
    odd.role = "landlord".into();
    let s = refused(vec![mango.clone(), odd]).await;
    assert_eq!(violations(&s)[0].0, "subjects[1].role");
    let s = refused(vec![mango.clone(), rep.clone(), mango.clone()]).await;
    assert!(
        violations(&s)
            .iter()
            .any(|(f, d)| f == "subjects[2]" && d.contains("subjects[0]")),
        "{s:?}"
    );
    let mut both = gather_request(ENTERPRISE_MATTER, "E2E-ROLE-0002", vec![mango, rep]);
    both.subject = Some(person(&stories::WIDOW, ""));
    let s = gather(TOWNSHIP, both).await.unwrap_err();
    assert_eq!(violations(&s)[0].0, "subjects");
    // More subjects than any matter could take is refused before any of
    // them is validated (the request is still within the size limit).
    let flood: Vec<Subject> = (0..=MAX_GATHER_SUBJECTS)
        .map(|_| person(&stories::WIDOW, "household-member"))
        .collect();
    let s = refused(flood).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    let (field, description) = violations(&s).remove(0);
    assert_eq!(field, "subjects");
    assert!(
        description.contains(&format!("at most {MAX_GATHER_SUBJECTS}")),
        "{description}"
    );
    // A Lookup of evidence the matter needs, but not about this role.
    let mut client = local().client(COMMUNITY).await.unwrap();
    let s = client
        .lookup(timed(LookupRequest {
            case: case("subsistence-allowance"),
            subject: Some(person(&stories::DIBAO_DAUGHTER, "household-member")),
            evidence_type: "civil.marriage".into(),
            fields: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
    let (reason, _, meta) = error_info(&s);
    assert_eq!(reason, "EVIDENCE_NOT_IN_ROLE");
    assert_eq!(meta["role"], "household-member");
}

async fn audit_entries(filter: AuditFilter) -> Vec<tongban_proto::v1::AuditRecord> {
    let mut client = AuditClient::new(local().channel("admin").await.unwrap());
    client
        .search(timed(AuditSearchRequest {
            admin: Some(AdminContext {
                operator_id: "auditor.e2e".into(),
                reason: "subjects test".into(),
            }),
            filter: Some(filter),
            page_size: 100,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .records
}

#[tokio::test]
async fn household_review_is_audited_against_each_member() {
    let case_number = "E2E-DIBAO-0001";
    let r = gather(
        COMMUNITY,
        gather_request(
            "subsistence-allowance-review",
            case_number,
            vec![
                person(&stories::SUBSISTENCE_RECIPIENT, "applicant"),
                person(&stories::DIBAO_DAUGHTER, "household-member"),
                person(&stories::DIBAO_MOTHER, "household-member"),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.items.len(), 5 + 4 + 4);
    for i in &r.items {
        answered(i);
        let expected = if i.subject_index == 0 {
            Role::Applicant
        } else {
            Role::HouseholdMember
        };
        assert_eq!(i.role, expected.name());
    }
    // The daughter is in work again: the reason the review is referred.
    let u = answered(item(&r, 1, "hrss.unemployment"));
    assert_eq!(value(&u, "registered_unemployed"), "false");
    assert_eq!(value(&u, "insured_months"), "2");
    assert_eq!(u.get("separation_date"), Some(&None));
    // Each member's entries are found under that member.
    for (story, count, role) in [
        (stories::SUBSISTENCE_RECIPIENT, 5, "applicant"),
        (stories::DIBAO_DAUGHTER, 4, "household-member"),
        (stories::DIBAO_MOTHER, 4, "household-member"),
    ] {
        let records = audit_entries(AuditFilter {
            subject_id_number: story.id_number.into(),
            case_number: case_number.into(),
            ..Default::default()
        })
        .await;
        assert_eq!(records.len(), count, "{}", story.name);
        for record in &records {
            assert_eq!(record.kind, "GatherItem");
            assert_eq!(record.detail, format!("role={role}"));
        }
    }
    // And the daughter sees the review in her own history on the citizens'
    // portal (once a witnessed checkpoint covers it).
    let channel = local().channel("tianfu-tongban").await.unwrap();
    let mut portal = tongban_proto::v1::transparency_client::TransparencyClient::new(channel);
    let seen = eventually(
        std::time::Duration::from_secs(20),
        "the review in the daughter's history",
        || {
            let mut portal = portal.clone();
            async move {
                let page = portal
                    .list_accesses(timed(tongban_proto::v1::ListAccessesRequest {
                        id_number: stories::DIBAO_DAUGHTER.id_number.into(),
                        page_size: 500,
                        page_token: String::new(),
                    }))
                    .await
                    .ok()?
                    .into_inner();
                let evidence: Vec<String> = page
                    .nodes
                    .iter()
                    .flat_map(|n| &n.entries)
                    .filter_map(|e| match &e.access {
                        Some(tongban_proto::v1::access_entry::Access::Disclosed(d))
                            if d.matter == "subsistence-allowance-review"
                                && d.kind == "GatherItem" =>
                        {
                            Some(d.evidence_type.clone())
                        }
                        _ => None,
                    })
                    .collect();
                (evidence.len() == 4).then_some(evidence)
            }
        },
    )
    .await
    .unwrap();
    let mut seen = seen;
    seen.sort();
    assert_eq!(
        seen,
        [
            "hrss.pension",
            "hrss.unemployment",
            "police.household",
            "police.identity"
        ]
    );
    portal = portal.clone();
    drop(portal);
}

/// Every matter of the catalogue, gathered with every role filled (an
/// optional role with one subject), as one service point granted all of
/// them: every department the catalogue names runs in the local deployment,
/// and every item is answered.
#[tokio::test]
async fn every_matter_of_the_catalogue_is_gathered_end_to_end() {
    let catalogue = Catalogue::embedded();
    let codes: Vec<String> = catalogue
        .matters()
        .iter()
        .map(|m| format!("{:?}", m.code))
        .collect();
    let options = LocalOptions::default().policy(move |pki| {
        let id = &pki.get(COMMUNITY)?.identity;
        Ok(format!(
            "{}\n[[grant]]\ncallers = [\"org/{}/unit/{}\"]\nmatters = [{}]\n",
            policy_toml(pki)?,
            id.org(),
            id.unit(),
            codes.join(", ")
        ))
    });
    let (_dir, local) = own_deployment(options).await.unwrap();
    let running: BTreeSet<&str> = DEPARTMENTS.iter().map(|d| d.id()).collect();
    let people = [
        stories::LAID_OFF_WORKER,
        stories::WIDOW,
        stories::DIBAO_DAUGHTER,
        stories::DIBAO_MOTHER,
        stories::MOSUO_VILLAGER,
        stories::CERTIFIED_RETIREE,
    ];
    let mut gathered = 0;
    let mut client = local.client(COMMUNITY).await.unwrap();
    for matter in catalogue.matters() {
        let missing: Vec<&str> = matter
            .evidence
            .iter()
            .map(|e| catalogue.evidence(e).unwrap().department.as_str())
            .filter(|d| !running.contains(d))
            .collect();
        assert!(
            missing.is_empty(),
            "{}: no reference adapter for {missing:?}",
            matter.code
        );
        let mut next_person = people.iter();
        let mut subjects = Vec::new();
        let mut expected = 0;
        for need in &matter.roles {
            for _ in 0..need.min.max(1) {
                subjects.push(match need.role {
                    Role::Enterprise => enterprise(&stories::SALIAN_MANGO),
                    role => person(next_person.next().unwrap(), role.name()),
                });
                expected += need.evidence.len();
            }
        }
        let mut request = gather_request(&matter.code, "E2E-ALL-0001", subjects);
        request.case.as_mut().unwrap().matter = matter.code.clone();
        let r = client
            .gather(timed(request))
            .await
            .unwrap_or_else(|s| panic!("{}: {s:?}", matter.code))
            .into_inner();
        assert_eq!(r.items.len(), expected, "{}", matter.code);
        for i in &r.items {
            match &i.result {
                Some(gather_item::Result::Evidence(e)) => assert!(!e.fields.is_empty()),
                other => panic!("{}/{}: {other:?}", matter.code, i.evidence_type),
            }
        }
        gathered += 1;
    }
    assert_eq!(gathered, catalogue.matters().len());
    assert!(gathered >= 20, "{gathered}");
    local.shutdown().await.unwrap();
}

/// Market regulation on PostgreSQL (its own schema, as its own database
/// would be): the same enterprise case over mutual TLS, and the same
/// refusals from the adapter's side.
#[tokio::test]
async fn enterprise_lookups_on_a_postgresql_market_department() {
    use sqlx::{AssertSqlSafe, SqlSafeStr};
    const URL: &str = "postgres://postgres@127.0.0.1:5432/test";
    let schema = format!(
        "tb_e2e_market_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(URL)
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")).into_sql_str())
        .execute(&admin)
        .await
        .unwrap();
    let url = format!("{URL}?options[search_path]={schema}");
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async {
        let options = LocalOptions::default()
            .department_database(tongban_devkit::reference::Dept::Market, &url);
        let (_dir, local) = own_deployment(options).await.unwrap();
        let mut client = local.client(TOWNSHIP).await.unwrap();
        let mut request = gather_request(
            ENTERPRISE_MATTER,
            "E2E-PG-0001",
            vec![
                enterprise(&stories::DECEASED_REPRESENTATIVE),
                person(&stories::DECEASED_PENSIONER, "legal-representative"),
            ],
        );
        request.case.as_mut().unwrap().matter = ENTERPRISE_MATTER.into();
        let r = client.gather(timed(request)).await.unwrap().into_inner();
        let reg = answered(item(&r, 0, "market.registration"));
        assert_eq!(value(&reg, "status"), "in-operation");
        assert_eq!(value(&reg, "name_matches"), "true");
        assert_eq!(value(&reg, "legal_representative_matches"), "true");
        let police = answered(item(&r, 1, "police.identity"));
        assert_eq!(value(&police, "alive"), "false");
        let abnormal = client
            .lookup(timed(LookupRequest {
                case: case(ENTERPRISE_MATTER),
                subject: Some(enterprise(&stories::ABNORMAL_ENTERPRISE)),
                evidence_type: "market.abnormal".into(),
                fields: None,
            }))
            .await
            .unwrap()
            .into_inner();
        let f = fields(abnormal.evidence.as_ref().unwrap());
        assert_eq!(value(&f, "listed"), "true");
        let missing = client
            .lookup(timed(LookupRequest {
                case: case(ENTERPRISE_MATTER),
                subject: Some(Subject {
                    credit_code: stories::UNKNOWN_ENTERPRISE_CODE.into(),
                    ..Default::default()
                }),
                evidence_type: "market.registration".into(),
                fields: None,
            }))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        local.shutdown().await.unwrap();
    }))
    .await;
    sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")).into_sql_str())
        .execute(&admin)
        .await
        .unwrap();
    outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}
