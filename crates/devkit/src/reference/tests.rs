use std::collections::HashMap;
use std::time::Duration;

use chrono::Duration as Days;
use tongban_core::{EvidenceAnswer, FieldValue, IdNumber, SubjectId};
use tongban_proto::v1::{
    CaseContext, DescribeRequest, QueryRequest, Subject, adapter_client::AdapterClient, field,
};
use tonic::Code;
use tonic_types::StatusExt;

use super::population::months_before;
use super::stories::{self, Story};
use super::*;
use tongban_adapter::{Asked, RunningAdapter, SourceError};

struct Seeded {
    _dir: tempfile::TempDir,
    services: HashMap<Dept, AdapterService>,
}

async fn seeded() -> Seeded {
    let dir = tempfile::tempdir().unwrap();
    let mut services = HashMap::new();
    for dept in Dept::ALL {
        let url = format!("sqlite://{}/{dept}.db?mode=rwc", dir.path().display());
        services.insert(dept, service(dept, &url).await.unwrap());
    }
    Seeded {
        _dir: dir,
        services,
    }
}

impl Seeded {
    async fn ask(&self, evidence: &str, s: Story, name: Option<&str>) -> EvidenceAnswer {
        self.try_ask(evidence, s.id_number, name).await.unwrap()
    }

    async fn try_ask(
        &self,
        evidence: &str,
        id: &str,
        name: Option<&str>,
    ) -> Result<EvidenceAnswer, SourceError> {
        let dept: Dept = evidence.split('.').next().unwrap().parse().unwrap();
        let id = IdNumber::parse(id).unwrap();
        self.services[&dept]
            .source()
            .answer(
                evidence,
                &Asked::new(&SubjectId::Person(id.clone()), name, china_today()),
            )
            .await
    }
}

fn get<'a>(a: &'a EvidenceAnswer, field: &str) -> Option<&'a FieldValue> {
    a.field(field)
        .unwrap_or_else(|| panic!("{} has no field {field}", a.evidence_type))
        .value
        .as_ref()
}

fn b(v: bool) -> Option<&'static FieldValue> {
    Some(if v {
        &FieldValue::Bool(true)
    } else {
        &FieldValue::Bool(false)
    })
}

fn int(a: &EvidenceAnswer, f: &str) -> i64 {
    match get(a, f) {
        Some(FieldValue::Int(i)) => *i,
        other => panic!("{f}: {other:?}"),
    }
}

fn text<'a>(a: &'a EvidenceAnswer, f: &str) -> &'a str {
    match get(a, f) {
        Some(FieldValue::Text(t)) => t,
        other => panic!("{f}: {other:?}"),
    }
}

fn date(a: &EvidenceAnswer, f: &str) -> NaiveDate {
    match get(a, f) {
        Some(FieldValue::Date(d)) => *d,
        other => panic!("{f}: {other:?}"),
    }
}

/// Moved from `tongban-adapter`'s config tests with the reference departments.
#[test]
fn reference_configs_validate_and_render_and_reparse() {
    for dept in Dept::ALL {
        let c = config(dept, "postgres://db/x");
        c.validate(&tongban_core::Catalogue::embedded()).unwrap();
        assert_eq!(AdapterConfig::from_toml(&c.to_toml(), "r").unwrap(), c);
    }
}

#[tokio::test]
async fn police_answers_identity_and_household() {
    let s = seeded().await;
    let v = stories::MOSUO_VILLAGER;
    let a = s.ask("police.identity", v, Some(v.name)).await;
    assert_eq!(a.department, "police");
    assert_eq!(get(&a, "name_matches"), b(true));
    assert_eq!(text(&a, "card_status"), "valid");
    assert!(date(&a, "card_valid_until") > china_today());
    assert_eq!(get(&a, "alive"), b(true));
    assert!(a.current_as_of < Utc::now());
    let a = s.ask("police.identity", v, Some("罗春华")).await;
    assert_eq!(get(&a, "name_matches"), b(false));
    let a = s.ask("police.identity", v, None).await;
    assert_eq!(get(&a, "name_matches"), None);

    let a = s.ask("police.household", v, None).await;
    assert_eq!(text(&a, "region_code"), "510421");
    assert_eq!(text(&a, "district"), "米易县");
    assert!(text(&a, "registered_address").contains("撒莲镇磨所村"));
    assert_eq!(get(&a, "household_head"), b(true));
    let widow = s.ask("police.household", stories::WIDOW, None).await;
    assert_eq!(get(&widow, "household_head"), b(false));

    let dead = s
        .ask("police.identity", stories::DECEASED_PENSIONER, None)
        .await;
    assert_eq!(get(&dead, "alive"), b(false));
    assert_eq!(text(&dead, "card_status"), "cancelled");
    let c = s
        .ask("police.identity", stories::CANCELLED_CARD, None)
        .await;
    assert_eq!(text(&c, "card_status"), "cancelled");
    assert_eq!(get(&c, "alive"), b(true));

    assert!(matches!(
        s.try_ask("police.identity", stories::UNKNOWN_PERSON_ID, None)
            .await,
        Err(SourceError::SubjectNotFound { .. })
    ));
}

#[tokio::test]
async fn civil_answers_marriage_subsistence_death() {
    let s = seeded().await;
    let today = china_today();
    let h = s
        .ask("civil.marriage", stories::SUBSISTENCE_RECIPIENT, None)
        .await;
    assert_eq!(text(&h, "marital_status"), "divorced");
    assert_eq!(
        date(&h, "status_since"),
        NaiveDate::from_ymd_opt(2015, 6, 20).unwrap()
    );
    let w = s.ask("civil.marriage", stories::WIDOW, None).await;
    assert_eq!(text(&w, "marital_status"), "widowed");
    assert_eq!(date(&w, "status_since"), today - Days::days(40));
    let m = s
        .ask("civil.marriage", stories::LAID_OFF_WORKER, None)
        .await;
    assert_eq!(text(&m, "marital_status"), "married");
    let u = s.ask("civil.marriage", stories::NEVER_INSURED, None).await;
    assert_eq!(text(&u, "marital_status"), "unmarried");
    assert_eq!(get(&u, "status_since"), None);

    let a = s
        .ask("civil.subsistence", stories::SUBSISTENCE_RECIPIENT, None)
        .await;
    assert_eq!(get(&a, "receiving"), b(true));
    assert_eq!(int(&a, "monthly_amount_yuan"), 720);
    assert_eq!(date(&a, "since"), today - Days::days(400));
    assert_eq!(date(&a, "next_review"), today + Days::days(80));
    let n = s
        .ask("civil.subsistence", stories::MOSUO_VILLAGER, None)
        .await;
    assert_eq!(get(&n, "receiving"), b(false));
    assert_eq!(get(&n, "monthly_amount_yuan"), None);

    let d = s
        .ask("civil.death", stories::DECEASED_PENSIONER, None)
        .await;
    assert_eq!(get(&d, "deceased"), b(true));
    assert_eq!(date(&d, "date_of_death"), today - Days::days(40));
    let alive = s.ask("civil.death", stories::CERTIFIED_RETIREE, None).await;
    assert_eq!(get(&alive, "deceased"), b(false));
    assert_eq!(get(&alive, "date_of_death"), None);
}

#[tokio::test]
async fn hrss_answers_unemployment_pension_contributions() {
    let s = seeded().await;
    let today = china_today();
    let e = s
        .ask("hrss.unemployment", stories::LAID_OFF_WORKER, None)
        .await;
    assert_eq!(get(&e, "eligible"), b(true));
    assert_eq!(int(&e, "insured_months"), 86);
    assert_eq!(date(&e, "separation_date"), today - Days::days(45));
    assert_eq!(get(&e, "registered_unemployed"), b(true));
    assert!(
        text(&e, "reason").starts_with("Eligible: 86 insured months"),
        "{e:?}"
    );

    let short = s
        .ask("hrss.unemployment", stories::SHORT_INSURED_WORKER, None)
        .await;
    assert_eq!(get(&short, "eligible"), b(false));
    assert_eq!(
        text(&short, "reason"),
        "Not eligible: 7 insured months, at least 12 are required."
    );
    let v = s
        .ask("hrss.unemployment", stories::MOSUO_VILLAGER, None)
        .await;
    assert_eq!(get(&v, "eligible"), b(false));
    assert!(text(&v, "reason").contains("not registered as unemployed"));
    let never = s
        .ask("hrss.unemployment", stories::NEVER_INSURED, None)
        .await;
    assert_eq!(get(&never, "eligible"), b(false));
    assert_eq!(int(&never, "insured_months"), 0);
    assert!(text(&never, "reason").contains("no unemployment-insurance"));
    let employed = s
        .ask("hrss.unemployment", stories::CANCELLED_CARD, None)
        .await;
    assert!(text(&employed, "reason").contains("still employed"));

    let c = s
        .ask("hrss.pension", stories::CERTIFIED_RETIREE, None)
        .await;
    assert_eq!(get(&c, "retired"), b(true));
    assert_eq!(get(&c, "receiving"), b(true));
    assert_eq!(date(&c, "last_qualification_date"), months_before(today, 2));
    assert_eq!(get(&c, "qualification_due"), b(false));
    let o = s.ask("hrss.pension", stories::OVERDUE_RETIREE, None).await;
    assert_eq!(
        date(&o, "last_qualification_date"),
        months_before(today, 15)
    );
    assert_eq!(get(&o, "qualification_due"), b(true));
    let dead = s
        .ask("hrss.pension", stories::DECEASED_PENSIONER, None)
        .await;
    assert_eq!(get(&dead, "receiving"), b(true));
    assert_eq!(get(&dead, "qualification_due"), b(true));
    let none = s.ask("hrss.pension", stories::NEVER_INSURED, None).await;
    assert_eq!(get(&none, "retired"), b(false));
    assert_eq!(get(&none, "qualification_due"), b(false));
    let r = s
        .ask("hrss.unemployment", stories::CERTIFIED_RETIREE, None)
        .await;
    assert!(text(&r, "reason").contains("pension"));

    let k = s
        .ask("hrss.contributions", stories::LAID_OFF_WORKER, None)
        .await;
    assert_eq!(int(&k, "total_months"), 86);
    assert_eq!(get(&k, "contributing"), b(false));
    let sep = today - Days::days(45);
    assert_eq!(
        text(&k, "last_month"),
        months_before(sep, 1).format("%Y-%m").to_string()
    );
    let g = s
        .ask("hrss.contributions", stories::CANCELLED_CARD, None)
        .await;
    assert_eq!(get(&g, "contributing"), b(true));
    assert_eq!(int(&g, "total_months"), 120);
    let n = s
        .ask("hrss.contributions", stories::NEVER_INSURED, None)
        .await;
    assert_eq!(int(&n, "total_months"), 0);
    assert_eq!(get(&n, "first_month"), None);
    assert_eq!(get(&n, "contributing"), b(false));
}

#[tokio::test]
async fn every_resident_gets_a_well_formed_answer_of_every_type() {
    let s = seeded().await;
    let p = Population::reference(china_today());
    let mut eligible = 0;
    for r in &p.residents {
        // Market regulation's evidence is about organisations: below.
        for dept in Dept::ALL.into_iter().filter(|d| *d != Dept::Market) {
            for (evidence, _, _) in dept.queries() {
                let a = s
                    .try_ask(evidence, r.id.as_str(), Some(&r.name))
                    .await
                    .unwrap_or_else(|e| panic!("{evidence} for {}: {e}", r.id));
                if *evidence == "hrss.unemployment" && get(&a, "eligible") == b(true) {
                    eligible += 1;
                }
                if *evidence == "police.identity" {
                    assert_eq!(get(&a, "name_matches"), b(true));
                    assert_eq!(get(&a, "alive"), b(r.death.is_none()));
                }
            }
        }
    }
    assert!(eligible >= 2, "{eligible}");
}

#[tokio::test]
async fn seeding_is_idempotent_and_departments_hold_only_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/civil.db?mode=rwc", dir.path().display());
    let pool = DepartmentPool::connect_lazy(&url, 2, Duration::from_secs(2)).unwrap();
    let first = seed(Dept::Civil, &pool).await.unwrap();
    assert!(first.inserted && first.rows > 50, "{first:?}");
    let again = seed(Dept::Civil, &pool).await.unwrap();
    assert_eq!(
        again,
        SeedReport {
            dept: Dept::Civil,
            inserted: false,
            rows: 0
        }
    );
    let DepartmentPool::Sqlite(p) = &pool else {
        unreachable!()
    };
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY name")
            .fetch_all(p)
            .await
            .unwrap();
    let tables: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(
        tables,
        [
            "death_registrations",
            "marriage_registrations",
            "seed_info",
            "subsistence_allowances"
        ]
    );
}

fn request(evidence: &str, id: &str, name: &str, fields: &[&str]) -> QueryRequest {
    QueryRequest {
        case: Some(CaseContext {
            matter: "unemployment-benefit".into(),
            case_number: "XQ-2026-000123".into(),
            operator_id: "clerk-042".into(),
        }),
        subject: Some(Subject {
            id_number: id.into(),
            name: name.into(),
            ..Default::default()
        }),
        evidence_type: evidence.into(),
        fields: Some(prost_types::FieldMask {
            paths: fields.iter().map(|f| (*f).to_owned()).collect(),
        }),
        requester: "spiffe://tongban.panzhihua.gov.cn/org/test".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn grpc_round_trip_on_ephemeral_port() {
    let mut s = seeded().await;
    let hrss = s.services.remove(&Dept::Hrss).unwrap();
    let running = RunningAdapter::spawn(hrss, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert_ne!(running.addr().port(), 0);
    let mut client = AdapterClient::connect(running.url()).await.unwrap();

    let w = stories::LAID_OFF_WORKER;
    let resp = client
        .query(request(
            "hrss.unemployment",
            w.id_number,
            w.name,
            &["eligible", "reason"],
        ))
        .await
        .unwrap()
        .into_inner();
    let ev = resp.evidence.unwrap();
    assert_eq!(ev.department, "hrss");
    assert!(ev.current_as_of.is_some());
    let names: Vec<&str> = ev.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["eligible", "reason"],
        "only the masked fields are released"
    );
    assert_eq!(ev.fields[0].value, Some(field::Value::BoolValue(true)));

    let all = client
        .query(request("hrss.unemployment", w.id_number, "", &[]))
        .await
        .unwrap()
        .into_inner()
        .evidence
        .unwrap();
    assert_eq!(all.fields.len(), 5);
    assert!(matches!(&all.fields[3].value, Some(field::Value::DateValue(d)) if d.len() == 10));

    let d = client
        .describe(DescribeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.department, "hrss");
    assert_eq!(d.title_zh, "攀枝花市人力资源和社会保障局");
    let ids: Vec<&str> = d.evidence_types.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        ["hrss.unemployment", "hrss.pension", "hrss.contributions"]
    );
    assert_eq!(d.evidence_types[1].fields.len(), 4);

    // Wrong check character: INVALID_ARGUMENT with a BadRequest detail.
    let bad_id = format!("{}1", &w.id_number[..17]);
    let e = client
        .query(request("hrss.unemployment", &bad_id, "", &[]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let br = e.get_details_bad_request().unwrap();
    assert_eq!(br.field_violations[0].field, "subject.id_number");
    assert!(
        br.field_violations[0].description.starts_with("checksum"),
        "{br:?}"
    );
    assert!(!e.message().contains(&w.id_number[..14]));

    let e = client
        .query(request("police.identity", w.id_number, "", &[]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(
        e.get_details_error_info().unwrap().reason,
        "UNKNOWN_EVIDENCE_TYPE"
    );

    let e = client
        .query(request(
            "hrss.pension",
            w.id_number,
            "",
            &["retired", "salary"],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.get_details_bad_request().unwrap().field_violations[0].field,
        "fields.paths"
    );

    let mut bad_case = request("hrss.pension", w.id_number, "", &[]);
    bad_case.case.as_mut().unwrap().case_number = String::new();
    let e = client.query(bad_case).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.get_details_bad_request().unwrap().field_violations[0].field,
        "case.case_number"
    );

    let channel = tonic::transport::Endpoint::from_shared(running.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "tongban.v1.Adapter".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn police_not_found_outage_and_caller_check_over_grpc() {
    let mut s = seeded().await;
    let police = s.services.remove(&Dept::Police).unwrap();
    let pool = police.source().pool().clone();
    let guarded = police.clone().with_caller_check(|ext: &tonic::Extensions| {
        if ext.get::<AllowedMarker>().is_some() {
            Ok(())
        } else {
            Err(tongban_adapter::service::refuse_caller(
                "only the exchange may call this adapter",
            ))
        }
    });
    let open = RunningAdapter::spawn(police, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let closed = RunningAdapter::spawn(guarded, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut client = AdapterClient::connect(open.url()).await.unwrap();

    let e = client
        .query(request(
            "police.identity",
            stories::UNKNOWN_PERSON_ID,
            "",
            &[],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let info = e.get_details_error_info().unwrap();
    assert_eq!(info.reason, "SUBJECT_NOT_FOUND");
    assert_eq!(info.domain, "tongban.gov");

    let mut guarded_client = AdapterClient::connect(closed.url()).await.unwrap();
    let e = guarded_client
        .describe(DescribeRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(
        e.get_details_error_info().unwrap().reason,
        "CALLER_NOT_ALLOWED"
    );

    pool.close().await;
    let v = stories::MOSUO_VILLAGER;
    let e = client
        .query(request("police.identity", v.id_number, v.name, &[]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("police"), "{}", e.message());
    open.shutdown().await.unwrap();
    closed.shutdown().await.unwrap();
}

#[derive(Clone)]
struct AllowedMarker;

/// PostgreSQL is the production store: seed two departments, each into a
/// schema of its own (as each department has its own database), and answer
/// through the PostgreSQL variants of the queries.
#[tokio::test]
async fn postgres_path_answers_from_isolated_schema() {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    const URL: &str = "postgres://postgres@127.0.0.1:5432/test";
    let schema = format!(
        "tb_adapter_{}_{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(URL)
        .await
        .unwrap();
    for dept in [Dept::Hrss, Dept::Police] {
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}_{dept}")).into_sql_str())
            .execute(&admin)
            .await
            .unwrap();
    }
    let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async {
        let catalogue = tongban_core::Catalogue::embedded();
        let mut answers = Vec::new();
        for (dept, evidence, story) in [
            (Dept::Hrss, "hrss.pension", stories::OVERDUE_RETIREE),
            (Dept::Police, "police.identity", stories::MOSUO_VILLAGER),
        ] {
            let search_path = format!("{schema}_{dept}");
            let opts = URL
                .parse::<PgConnectOptions>()
                .unwrap()
                .options([("search_path", search_path.as_str())]);
            let pool = DepartmentPool::Postgres(
                PgPoolOptions::new()
                    .max_connections(2)
                    .connect_with(opts.clone())
                    .await
                    .unwrap(),
            );
            let report = seed(dept, &pool).await.unwrap();
            assert!(report.inserted);
            assert!(!seed(dept, &pool).await.unwrap().inserted);
            let cfg = config(dept, URL);
            let svc = tongban_adapter::service_from_parts(&cfg, &catalogue, pool.clone())
                .await
                .unwrap();
            let id = IdNumber::parse(story.id_number).unwrap();
            answers.push(
                svc.source()
                    .answer(
                        evidence,
                        &Asked::new(
                            &SubjectId::Person(id.clone()),
                            Some(story.name),
                            china_today(),
                        ),
                    )
                    .await
                    .unwrap(),
            );
            if dept == Dept::Hrss {
                let w = IdNumber::parse(stories::LAID_OFF_WORKER.id_number).unwrap();
                answers.push(
                    svc.source()
                        .answer(
                            "hrss.unemployment",
                            &Asked::new(&SubjectId::Person(w.clone()), None, china_today()),
                        )
                        .await
                        .unwrap(),
                );
                answers.push(
                    svc.source()
                        .answer(
                            "hrss.contributions",
                            &Asked::new(&SubjectId::Person(w.clone()), None, china_today()),
                        )
                        .await
                        .unwrap(),
                );
            }
            pool.close().await;
        }
        answers
    }))
    .await;
    for dept in [Dept::Hrss, Dept::Police] {
        sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {schema}_{dept} CASCADE")).into_sql_str())
            .execute(&admin)
            .await
            .unwrap();
    }
    let result = result.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let [pension, unemployment, contributions, identity] = result.as_slice() else {
        panic!("{result:?}")
    };
    assert_eq!(get(pension, "qualification_due"), b(true));
    assert_eq!(
        date(pension, "last_qualification_date"),
        months_before(china_today(), 15)
    );
    assert_eq!(get(unemployment, "eligible"), b(true));
    assert_eq!(int(unemployment, "insured_months"), 86);
    assert_eq!(int(contributions, "total_months"), 86);
    assert_eq!(get(identity, "name_matches"), b(true));
    assert_eq!(text(identity, "card_status"), "valid");
    assert_eq!(get(identity, "alive"), b(true));
}

impl Seeded {
    async fn ask_enterprise(
        &self,
        evidence: &str,
        code: &str,
        name: Option<&str>,
        legal_representative: Option<&str>,
    ) -> Result<EvidenceAnswer, SourceError> {
        let code = SubjectId::Organisation(tongban_core::CreditCode::parse(code).unwrap());
        let rep = legal_representative.map(|r| IdNumber::parse(r).unwrap());
        self.services[&Dept::Market]
            .source()
            .answer(
                evidence,
                &Asked {
                    subject: &code,
                    name,
                    legal_representative: rep.as_ref(),
                    today: china_today(),
                },
            )
            .await
    }
}

/// Every enterprise of the register answers both evidence types; the story
/// enterprises answer what their stories say.
#[tokio::test]
async fn market_answers_registration_and_abnormal_list() {
    let s = seeded().await;
    let p = Population::reference(china_today());
    let all = market::enterprises(&p);
    assert!(all.len() > stories::ENTERPRISES.len());
    for e in &all {
        let code = e.credit_code.as_str();
        let r = s
            .ask_enterprise(
                "market.registration",
                code,
                Some(&e.name),
                Some(e.legal_representative.as_str()),
            )
            .await
            .unwrap_or_else(|err| panic!("{code}: {err}"));
        assert_eq!(get(&r, "name_matches"), b(true));
        assert_eq!(get(&r, "legal_representative_matches"), b(true));
        assert_eq!(text(&r, "status"), e.status.as_str());
        assert_eq!(
            int(&r, "registered_capital_yuan"),
            e.registered_capital_yuan
        );
        let a = s
            .ask_enterprise("market.abnormal", code, None, None)
            .await
            .unwrap_or_else(|err| panic!("{code}: {err}"));
        let listed = e.listings.iter().any(|l| l.removed_on.is_none());
        assert_eq!(get(&a, "listed"), b(listed), "{code}");
    }
    // The Salian company: in operation, not listed; another person as
    // legal representative, or none, or another name.
    let mango = stories::SALIAN_MANGO;
    let r = s
        .ask_enterprise(
            "market.registration",
            mango.credit_code,
            Some("米易县撒莲芒果种植合作社"),
            Some(stories::MOSUO_VILLAGER.id_number),
        )
        .await
        .unwrap();
    assert_eq!(get(&r, "name_matches"), b(false));
    assert_eq!(get(&r, "legal_representative_matches"), b(false));
    assert_eq!(text(&r, "status"), "in-operation");
    let r = s
        .ask_enterprise("market.registration", mango.credit_code, None, None)
        .await
        .unwrap();
    assert_eq!(get(&r, "name_matches"), None);
    assert_eq!(get(&r, "legal_representative_matches"), None);
    let a = s
        .ask_enterprise("market.abnormal", mango.credit_code, None, None)
        .await
        .unwrap();
    assert_eq!(get(&a, "listed"), b(false));
    assert_eq!(get(&a, "reason"), None);
    // Revoked, cancelled, listed (an earlier listing was removed: only the
    // open one counts).
    let revoked = s
        .ask_enterprise(
            "market.registration",
            stories::REVOKED_LICENCE.credit_code,
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(text(&revoked, "status"), "revoked");
    let cancelled = s
        .ask_enterprise(
            "market.registration",
            stories::CANCELLED_ENTERPRISE.credit_code,
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(text(&cancelled, "status"), "cancelled");
    let listed = s
        .ask_enterprise(
            "market.abnormal",
            stories::ABNORMAL_ENTERPRISE.credit_code,
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(get(&listed, "listed"), b(true));
    assert_eq!(date(&listed, "listed_on"), china_today() - Days::days(120));
    assert_eq!(text(&listed, "reason"), "未按规定期限公示年度报告");
    // The deceased representative is still the registered one: the police
    // say he died (the exchange asks them in the same case).
    let d = s
        .ask_enterprise(
            "market.registration",
            stories::DECEASED_REPRESENTATIVE.credit_code,
            None,
            Some(stories::DECEASED_PENSIONER.id_number),
        )
        .await
        .unwrap();
    assert_eq!(get(&d, "legal_representative_matches"), b(true));
    let police = s
        .ask("police.identity", stories::DECEASED_PENSIONER, None)
        .await;
    assert_eq!(get(&police, "alive"), b(false));
    // An unknown enterprise is NOT_FOUND; a person's number is refused.
    assert!(matches!(
        s.ask_enterprise(
            "market.registration",
            stories::UNKNOWN_ENTERPRISE_CODE,
            None,
            None
        )
        .await,
        Err(SourceError::SubjectNotFound { .. })
    ));
    assert!(matches!(
        s.try_ask(
            "market.abnormal",
            stories::SALIAN_ENTREPRENEUR.id_number,
            None
        )
        .await,
        Err(SourceError::WrongSubjectKind { .. })
    ));
    // And the reverse: a credit code for evidence about a person.
    let code = SubjectId::Organisation(tongban_core::CreditCode::parse(mango.credit_code).unwrap());
    assert!(matches!(
        s.services[&Dept::Police]
            .source()
            .answer("police.identity", &Asked::new(&code, None, china_today()))
            .await,
        Err(SourceError::WrongSubjectKind { .. })
    ));
}

/// Market regulation on PostgreSQL: seeded into a schema of its own, the
/// same answers through the same queries.
#[tokio::test]
async fn market_on_postgres() {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    const URL: &str = "postgres://postgres@127.0.0.1:5432/test";
    let schema = format!(
        "tb_market_{}_{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(URL)
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")).into_sql_str())
        .execute(&admin)
        .await
        .unwrap();
    let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async {
        let opts = URL
            .parse::<PgConnectOptions>()
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let pool = DepartmentPool::Postgres(
            PgPoolOptions::new()
                .max_connections(2)
                .connect_with(opts)
                .await
                .unwrap(),
        );
        assert!(seed(Dept::Market, &pool).await.unwrap().inserted);
        let svc = tongban_adapter::service_from_parts(
            &config(Dept::Market, URL),
            &tongban_core::Catalogue::embedded(),
            pool.clone(),
        )
        .await
        .unwrap();
        let mut answers = Vec::new();
        for (evidence, story) in [
            ("market.registration", stories::DECEASED_REPRESENTATIVE),
            ("market.abnormal", stories::ABNORMAL_ENTERPRISE),
        ] {
            let code = SubjectId::Organisation(
                tongban_core::CreditCode::parse(story.credit_code).unwrap(),
            );
            let rep = IdNumber::parse(story.legal_representative.id_number).unwrap();
            answers.push(
                svc.source()
                    .answer(
                        evidence,
                        &Asked {
                            subject: &code,
                            name: Some(story.name),
                            legal_representative: Some(&rep),
                            today: china_today(),
                        },
                    )
                    .await
                    .unwrap(),
            );
        }
        pool.close().await;
        answers
    }))
    .await;
    sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")).into_sql_str())
        .execute(&admin)
        .await
        .unwrap();
    let result = result.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let [registration, abnormal] = result.as_slice() else {
        panic!("{result:?}")
    };
    assert_eq!(get(registration, "name_matches"), b(true));
    assert_eq!(get(registration, "legal_representative_matches"), b(true));
    assert_eq!(text(registration, "status"), "in-operation");
    assert_eq!(int(registration, "registered_capital_yuan"), 800_000);
    assert_eq!(get(abnormal, "listed"), b(true));
}

/// The market adapter over gRPC: a credit code answers, each malformed one
/// is INVALID_ARGUMENT with BadRequest naming the failed check, a person's
/// number for organisation evidence is refused, and the related legal
/// representative is checked too.
#[tokio::test]
async fn market_adapter_over_grpc_checks_credit_codes() {
    let mut s = seeded().await;
    let market = s.services.remove(&Dept::Market).unwrap();
    let running = RunningAdapter::spawn(market, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut client = AdapterClient::connect(running.url()).await.unwrap();
    let ask = |credit_code: &str, id_number: &str, related: Vec<Subject>| {
        let mut r = request("market.registration", id_number, "", &[]);
        r.case.as_mut().unwrap().matter = "enterprise-social-insurance-registration".into();
        r.subject.as_mut().unwrap().credit_code = credit_code.into();
        r.related = related;
        r
    };
    let rep = |id: &str| Subject {
        id_number: id.into(),
        role: "legal-representative".into(),
        ..Default::default()
    };
    let mango = stories::SALIAN_MANGO;
    let ok = client
        .query(ask(
            mango.credit_code,
            "",
            vec![rep(mango.legal_representative.id_number)],
        ))
        .await
        .unwrap()
        .into_inner()
        .evidence
        .unwrap();
    let matches = ok
        .fields
        .iter()
        .find(|f| f.name == "legal_representative_matches")
        .unwrap();
    assert_eq!(matches.value, Some(field::Value::BoolValue(true)));
    let body = &mango.credit_code[..17];
    for (code, check) in [
        (body.to_owned(), "LENGTH"),
        (
            format!("{}O", &body[..16]) + &mango.credit_code[17..],
            "ALPHABET",
        ),
        (format!("{body}0"), "CHECKSUM"),
    ] {
        let status = client.query(ask(&code, "", Vec::new())).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{code}");
        let br = status.get_details_bad_request().unwrap();
        assert_eq!(br.field_violations[0].field, "subject.credit_code");
        assert_eq!(br.field_violations[0].reason, check, "{code}");
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "INVALID_CREDIT_CODE"
        );
    }
    // Both identifiers, a person for organisation evidence, a bad related id.
    let both = client
        .query(ask(
            mango.credit_code,
            stories::SALIAN_ENTREPRENEUR.id_number,
            Vec::new(),
        ))
        .await
        .unwrap_err();
    assert_eq!(both.code(), Code::InvalidArgument);
    let person = client
        .query(ask("", stories::SALIAN_ENTREPRENEUR.id_number, Vec::new()))
        .await
        .unwrap_err();
    assert_eq!(
        person.get_details_bad_request().unwrap().field_violations[0].field,
        "subject.credit_code"
    );
    assert_eq!(
        person.get_details_error_info().unwrap().reason,
        "WRONG_SUBJECT_KIND"
    );
    let bad_related = client
        .query(ask(mango.credit_code, "", vec![rep("510421199603140826")]))
        .await
        .unwrap_err();
    assert_eq!(
        bad_related
            .get_details_bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "related[0].id_number"
    );
    let mut spouse = rep(stories::WIDOW.id_number);
    spouse.role = "spouse".into();
    let wrong_role = client
        .query(ask(mango.credit_code, "", vec![spouse]))
        .await
        .unwrap_err();
    assert_eq!(wrong_role.code(), Code::InvalidArgument);
}
