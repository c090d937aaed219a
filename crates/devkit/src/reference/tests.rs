//! The reference departments' suite, run on every backend: each test is
//! an `async fn(Backend)`, and [`on_every_backend!`] makes one `#[tokio::test]`
//! per backend of it (`reference::tests::sqlite::…`, `…::postgres::…`,
//! `…::mysql::…`). Every test gets fresh databases of its own (a temporary
//! directory, or a uniquely named database on the server, dropped after).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
use sqlx::Connection;
use sqlx::mysql::MySqlConnection;
use sqlx::postgres::PgConnection;
use tongban_adapter::{Asked, RunningAdapter, SourceError};

const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432";
const MYSQL: &str = "mysql://root@127.0.0.1:3306";

/// A database backend the suite runs on (PostgreSQL and MariaDB as
/// `tests/setup.sh` starts them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Backend {
    Sqlite,
    Postgres,
    Mysql,
}

impl Backend {
    const ALL: [Self; 3] = [Self::Sqlite, Self::Postgres, Self::Mysql];
}

/// Makes one `#[tokio::test]` per backend of each `async fn(Backend)`.
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Backend::Sqlite).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Backend::Postgres).await
            })*
        }
        mod mysql {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Backend::Mysql).await
            })*
        }
    };
}

on_every_backend!(
    police_answers_identity_and_household,
    civil_answers_marriage_subsistence_death,
    hrss_answers_unemployment_pension_contributions,
    every_resident_gets_a_well_formed_answer_of_every_type,
    seeding_is_idempotent_and_departments_hold_only_their_data,
    concurrent_seeders_write_the_population_once,
    grpc_round_trip_on_ephemeral_port,
    police_not_found_outage_and_caller_check_over_grpc,
    hostile_names_are_bound_values_not_sql,
    medins_answers_enrolment_consistent_with_the_stories,
    market_answers_registration_and_abnormal_list,
    market_adapter_over_grpc_checks_credit_codes,
);

/// A fresh, empty database, dropped (with everything in it) when the
/// guard is, even when the test panics.
struct Scratch {
    backend: Backend,
    /// The database's URL.
    url: String,
    /// The server-side database's name (not for SQLite).
    name: String,
    _dir: Option<tempfile::TempDir>,
}

impl Scratch {
    async fn new(backend: Backend) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "tb_ref_{}_{}_{}",
            std::process::id(),
            Utc::now().timestamp_micros() % 1_000_000_000_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (url, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/{name}.db?mode=rwc", dir.path().display());
                (url, Some(dir))
            }
            Backend::Postgres => {
                let admin = PgConnection::connect(&format!("{POSTGRES}/test"))
                    .await
                    .expect("PostgreSQL at 127.0.0.1:5432 (tests/setup.sh starts it)");
                run(admin, &format!("CREATE DATABASE {name}")).await;
                (format!("{POSTGRES}/{name}"), None)
            }
            Backend::Mysql => {
                let admin = MySqlConnection::connect(&format!("{MYSQL}/test"))
                    .await
                    .expect("MariaDB at 127.0.0.1:3306 (tests/setup.sh starts it)");
                run(admin, &format!("CREATE DATABASE {name}")).await;
                (format!("{MYSQL}/{name}"), None)
            }
        };
        Self {
            backend,
            url,
            name,
            _dir: dir,
        }
    }

    fn pool(&self, max_connections: u32) -> DepartmentPool {
        DepartmentPool::connect_lazy(&self.url, max_connections, Duration::from_secs(5)).unwrap()
    }
}

/// Runs one statement on a connection of its own, then closes it.
async fn run<C: sqlx::Connection>(mut conn: C, sql: &str)
where
    for<'c> &'c mut C: sqlx::Executor<'c>,
{
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = conn.close().await;
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let (backend, name) = (self.backend, self.name.clone());
        if backend == Backend::Sqlite {
            return;
        }
        let shown = name.clone();
        // Drop runs outside async; a runtime of its own on its own thread
        // (the test's runtime may be single-threaded, or unwinding).
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                match backend {
                    Backend::Postgres => {
                        let admin = PgConnection::connect(&format!("{POSTGRES}/test")).await?;
                        run(
                            admin,
                            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                        )
                        .await;
                    }
                    Backend::Mysql => {
                        let admin = MySqlConnection::connect(&format!("{MYSQL}/test")).await?;
                        run(admin, &format!("DROP DATABASE IF EXISTS {name}")).await;
                    }
                    Backend::Sqlite => {}
                }
                Ok::<_, sqlx::Error>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {shown}: {dropped:?}");
        }
    }
}

struct Seeded {
    // Services (and their pools) before their databases.
    services: HashMap<Dept, AdapterService>,
    _dbs: Vec<Scratch>,
}

/// The three reference departments on `backend`, each in a fresh database
/// of its own, seeded.
async fn seeded(backend: Backend) -> Seeded {
    let mut services = HashMap::new();
    let mut dbs = Vec::new();
    for dept in Dept::ALL {
        let db = Scratch::new(backend).await;
        services.insert(dept, service(dept, &db.url).await.unwrap());
        dbs.push(db);
    }
    Seeded {
        services,
        _dbs: dbs,
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
                &Asked::new(&SubjectId::Person(id), name, china_today()),
            )
            .await
    }
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

/// Seeding runs inside spawned tasks and multi-threaded runtimes (the
/// local deployment, the console's browser test): its future must be Send
/// on every backend, which sqlx's generic migrator calls can break.
#[tokio::test]
async fn seeding_future_is_send() {
    fn is_send<T: Send>(_: &T) {}
    let pool = DepartmentPool::connect_lazy("sqlite::memory:", 1, Duration::from_secs(1)).unwrap();
    let future = seed(Dept::Police, &pool);
    is_send(&future);
    let future = service(Dept::Police, "mysql://root@127.0.0.1:1/x");
    is_send(&future);
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

async fn police_answers_identity_and_household(backend: Backend) {
    let s = seeded(backend).await;
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

async fn civil_answers_marriage_subsistence_death(backend: Backend) {
    let s = seeded(backend).await;
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

async fn hrss_answers_unemployment_pension_contributions(backend: Backend) {
    let s = seeded(backend).await;
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

async fn every_resident_gets_a_well_formed_answer_of_every_type(backend: Backend) {
    let s = seeded(backend).await;
    let p = Population::reference(china_today());
    let mut eligible = 0;
    for r in &p.residents {
        // Market regulation's evidence is about organisations: its own test.
        for dept in Dept::ALL.into_iter().filter(|d| *d != Dept::Market) {
            for q in dept.queries() {
                let evidence = &q.evidence_type;
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

async fn seeding_is_idempotent_and_departments_hold_only_their_data(backend: Backend) {
    let db = Scratch::new(backend).await;
    let pool = db.pool(2);
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
    let mut tables: Vec<String> = match &pool {
        DepartmentPool::Sqlite(p) => sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\'",
        )
        .fetch_all(p)
        .await
        .unwrap(),
        DepartmentPool::Postgres(p) => sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() AND table_name NOT LIKE '\\_%'",
        )
        .fetch_all(p)
        .await
        .unwrap(),
        DepartmentPool::Mysql(p) => sqlx::query_scalar(
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name NOT LIKE '\\_%'",
        )
        .fetch_all(p)
        .await
        .unwrap(),
    };
    tables.sort();
    assert_eq!(
        tables,
        [
            "death_registrations",
            "marriage_registrations",
            "seed_info",
            "subsistence_allowances"
        ]
    );
    pool.close().await;
}

/// Adapters started together on an empty database: the population is
/// written once, and every seeder comes back. (SQLite: one adapter per
/// database file, so seeders run one after the other.)
async fn concurrent_seeders_write_the_population_once(backend: Backend) {
    let db = Scratch::new(backend).await;
    let pools: Vec<DepartmentPool> = (0..3).map(|_| db.pool(2)).collect();
    let reports: Vec<SeedReport> = if backend == Backend::Sqlite {
        let mut reports = Vec::new();
        for p in &pools {
            reports.push(seed(Dept::Hrss, p).await.unwrap());
        }
        reports
    } else {
        futures::future::join_all(pools.iter().map(|p| seed(Dept::Hrss, p)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect()
    };
    let written: Vec<&SeedReport> = reports.iter().filter(|r| r.inserted).collect();
    assert_eq!(written.len(), 1, "{reports:?}");
    assert!(written[0].rows > 100, "{reports:?}");
    assert!(reports.iter().all(|r| r.inserted || r.rows == 0));
    for p in &pools {
        p.close().await;
    }
}

/// Names are the one free text a caller sends to a department's SQL: with
/// quotes, comment markers, backslashes (MySQL's escape character) or
/// trailing spaces (MySQL's collations ignore them) they are compared as
/// values, never read as SQL, and match only the exact name. An identity
/// number carrying SQL never reaches the database.
async fn hostile_names_are_bound_values_not_sql(backend: Backend) {
    let mut s = seeded(backend).await;
    let v = stories::MOSUO_VILLAGER;
    let hostile = [
        "' OR '1'='1".to_owned(),
        format!("{}' OR 1=1 -- ", v.name),
        format!("{}\\' OR 1=1 #", v.name),
        format!("{}'); DROP TABLE residents; --", v.name),
        format!("{}\\", v.name),
        format!("{} ", v.name),
        format!(" {}", v.name),
        "%".to_owned(),
        String::new(),
    ];
    for name in &hostile {
        let a = s.ask("police.identity", v, Some(name)).await;
        assert_eq!(get(&a, "name_matches"), b(false), "{name:?}");
        assert_eq!(text(&a, "card_status"), "valid", "{name:?}");
    }
    // Nothing was dropped or changed: the real name still matches.
    let a = s.ask("police.identity", v, Some(v.name)).await;
    assert_eq!(get(&a, "name_matches"), b(true));
    let h = s.ask("police.household", v, None).await;
    assert_eq!(text(&h, "region_code"), "510421");

    let police = s.services.remove(&Dept::Police).unwrap();
    let running = RunningAdapter::spawn(police, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut client = AdapterClient::connect(running.url()).await.unwrap();
    for id in [
        format!("{}' OR '1'='1", v.id_number),
        format!("{}'--", &v.id_number[..16]),
        "5104211992031500'#".to_owned(),
        "' OR 1=1; --".to_owned(),
    ] {
        let e = client
            .query(request("police.identity", &id, v.name, &[]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{id:?}");
        assert_eq!(
            e.get_details_bad_request().unwrap().field_violations[0].field,
            "subject.id_number",
            "{id:?}"
        );
    }
    let answer = client
        .query(request(
            "police.identity",
            v.id_number,
            &format!("{}' OR '1'='1", v.name),
            &["name_matches"],
        ))
        .await
        .unwrap()
        .into_inner()
        .evidence
        .unwrap();
    assert_eq!(answer.fields[0].value, Some(field::Value::BoolValue(false)));
    running.shutdown().await.unwrap();
}

/// The whole reference population, every evidence type, on SQLite,
/// PostgreSQL and MariaDB at once: the same answers everywhere (fields, and
/// the as-of time where the data gives one), and the same NOT_FOUND.
#[tokio::test]
async fn every_backend_answers_the_whole_population_alike() {
    let today = china_today();
    let started = Utc::now();
    let mut backends = Vec::new();
    for backend in Backend::ALL {
        backends.push((backend, seeded(backend).await));
    }
    let p = Population::reference(today);
    let mut compared = 0;
    let people = p
        .residents
        .iter()
        .map(|r| (r.id.as_str(), Some(r.name.as_str())))
        .chain([
            (stories::UNKNOWN_PERSON_ID, None),
            (stories::WIDOW.id_number, Some("someone else")),
        ]);
    for (id, name) in people {
        // Evidence about people; the enterprises are compared below.
        for dept in Dept::ALL.into_iter().filter(|d| *d != Dept::Market) {
            for q in dept.queries() {
                let mut answers = Vec::new();
                for (backend, s) in &backends {
                    let a = s.try_ask(q.evidence_type, id, name).await;
                    answers.push((*backend, a));
                }
                let (_, first) = &answers[0];
                for (backend, a) in &answers[1..] {
                    let context = format!("{} for {id} on {backend:?}", q.evidence_type);
                    match (first, a) {
                        (Ok(x), Ok(y)) => {
                            assert_eq!(x.fields, y.fields, "{context}");
                            assert_eq!(
                                x.current_as_of < started,
                                y.current_as_of < started,
                                "{context}: as_of from the data on one backend only"
                            );
                            if x.current_as_of < started {
                                assert_eq!(x.current_as_of, y.current_as_of, "{context}");
                            }
                        }
                        (
                            Err(SourceError::SubjectNotFound { .. }),
                            Err(SourceError::SubjectNotFound { .. }),
                        ) => {}
                        (x, y) => panic!("{context}: {x:?} vs {y:?}"),
                    }
                }
                compared += 1;
            }
        }
    }
    assert!(compared > 250 * 8, "{compared}");
    // Every enterprise of the register, and one it does not hold.
    let enterprises = market::enterprises(&p);
    let mut asked: Vec<(String, Option<String>, Option<String>)> = enterprises
        .iter()
        .map(|e| {
            (
                e.credit_code.as_str().to_owned(),
                Some(e.name.clone()),
                Some(e.legal_representative.as_str().to_owned()),
            )
        })
        .collect();
    asked.push((stories::UNKNOWN_ENTERPRISE_CODE.to_owned(), None, None));
    for (code, name, rep) in &asked {
        for q in Dept::Market.queries() {
            let mut answers = Vec::new();
            for (backend, s) in &backends {
                let a = s
                    .ask_enterprise(q.evidence_type, code, name.as_deref(), rep.as_deref())
                    .await;
                answers.push((*backend, a));
            }
            let (_, first) = &answers[0];
            for (backend, a) in &answers[1..] {
                let context = format!("{} for {code} on {backend:?}", q.evidence_type);
                match (first, a) {
                    (Ok(x), Ok(y)) => {
                        assert_eq!(x.fields, y.fields, "{context}");
                        assert_eq!(x.current_as_of, y.current_as_of, "{context}");
                    }
                    (
                        Err(SourceError::SubjectNotFound { .. }),
                        Err(SourceError::SubjectNotFound { .. }),
                    ) => {}
                    (x, y) => panic!("{context}: {x:?} vs {y:?}"),
                }
            }
        }
    }
}

/// A `mysql://` URL that cannot be used: a clear error at start-up, naming
/// what failed, and never a panic.
#[tokio::test]
async fn unusable_mysql_urls_are_refused_with_clear_errors() {
    // Nothing listens on port 1.
    let e = service(Dept::Police, "mysql://root@127.0.0.1:1/test")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("police"), "{e}");
    assert!(e.to_lowercase().contains("connect"), "{e}");
    // The adapter's own start-up (no seeding) says the database is unreachable.
    let unreachable = config(Dept::Police, "mysql://root@127.0.0.1:1/test");
    let e = tongban_adapter::service_from_config(&unreachable)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot reach the department database"), "{e}");
    // A database that does not exist.
    let missing = config(Dept::Police, &format!("{MYSQL}/tb_no_such_database"));
    let e = tongban_adapter::service_from_config(&missing)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("tb_no_such_database"), "{e}");
    // A malformed URL.
    let e = DepartmentPool::connect_lazy(
        "mysql://root@127.0.0.1:notaport/x",
        1,
        Duration::from_secs(1),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("cannot open database"), "{e}");
    // Wrong credentials.
    let wrong = config(Dept::Police, "mysql://tb_nobody:wrong@127.0.0.1:3306/test");
    let e = tongban_adapter::service_from_config(&wrong)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("tb_nobody"), "{e}");
}

/// A TCP relay in front of a database server that can be cut (open
/// connections reset, new ones refused) and restored: the database going
/// away under a running adapter.
struct Relay {
    addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn to(target: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let accept = {
            let (open, conns) = (open.clone(), conns.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is refused
                    }
                    let relay = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    conns.lock().unwrap().push(relay);
                }
            })
        };
        Self {
            addr,
            open,
            conns,
            accept,
        }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// The health status of `service` on `channel`, or -1 when the check fails.
async fn health(channel: &tonic::transport::Channel, service: &str) -> i32 {
    tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map_or(-1, |r| r.into_inner().status)
}

/// Waits (bounded: the adapter probes every 5 s) for `service` to be `want`.
async fn wait_health(channel: &tonic::transport::Channel, service: &str, want: i32) {
    for _ in 0..100 {
        if health(channel, service).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("health of {service:?} never became {want}");
}

/// The database server goes away under a running adapter (PostgreSQL and
/// MariaDB alike): queries answer UNAVAILABLE with DEPARTMENT_UNAVAILABLE,
/// health turns NOT_SERVING, and both recover when the server is back.
async fn server_outage_is_unavailable_and_not_serving(backend: Backend) {
    const SERVING: i32 = 1;
    const NOT_SERVING: i32 = 2;
    let db = Scratch::new(backend).await;
    let target = match backend {
        Backend::Postgres => "127.0.0.1:5432",
        Backend::Mysql => "127.0.0.1:3306",
        Backend::Sqlite => unreachable!("SQLite has no server"),
    };
    let relay = Relay::to(target).await;
    let url = db.url.replacen(target, &relay.addr.to_string(), 1);
    let svc = service(Dept::Police, &url).await.unwrap();
    let running = RunningAdapter::spawn(svc, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(running.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = AdapterClient::new(channel.clone());
    let v = stories::MOSUO_VILLAGER;
    client
        .query(request("police.identity", v.id_number, v.name, &[]))
        .await
        .unwrap();
    assert_eq!(health(&channel, "tongban.v1.Adapter").await, SERVING);

    relay.cut();
    let e = client
        .query(request("police.identity", v.id_number, v.name, &[]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(
        e.get_details_error_info().unwrap().reason,
        "DEPARTMENT_UNAVAILABLE"
    );
    assert!(
        !e.message().contains(&relay.addr.to_string()),
        "{}",
        e.message()
    );
    wait_health(&channel, "tongban.v1.Adapter", NOT_SERVING).await;
    wait_health(&channel, "", NOT_SERVING).await;

    relay.restore();
    wait_health(&channel, "tongban.v1.Adapter", SERVING).await;
    let a = client
        .query(request("police.identity", v.id_number, v.name, &[]))
        .await
        .unwrap()
        .into_inner();
    assert!(a.evidence.is_some());
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn postgres_outage_is_unavailable_and_not_serving() {
    server_outage_is_unavailable_and_not_serving(Backend::Postgres).await;
}

#[tokio::test]
async fn mysql_outage_is_unavailable_and_not_serving() {
    server_outage_is_unavailable_and_not_serving(Backend::Mysql).await;
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

async fn grpc_round_trip_on_ephemeral_port(backend: Backend) {
    let mut s = seeded(backend).await;
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

async fn police_not_found_outage_and_caller_check_over_grpc(backend: Backend) {
    let mut s = seeded(backend).await;
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

/// Medical insurance agrees with the other departments' stories.
async fn medins_answers_enrolment_consistent_with_the_stories(backend: Backend) {
    let s = seeded(backend).await;
    let ask = |story| s.ask("medins.enrolment", story, None);
    // Never insured anywhere: not enrolled.
    let never = ask(stories::NEVER_INSURED).await;
    assert_eq!(get(&never, "enrolled"), b(false));
    assert_eq!(text(&never, "scheme"), "none");
    assert_eq!(text(&never, "status"), "none");
    assert_eq!(get(&never, "since"), None);
    assert_eq!(get(&never, "assisted"), b(false));
    // Receiving the subsistence allowance: resident scheme, assisted.
    let dibao = ask(stories::SUBSISTENCE_RECIPIENT).await;
    assert_eq!(get(&dibao, "enrolled"), b(true));
    assert_eq!(text(&dibao, "scheme"), "resident");
    assert_eq!(text(&dibao, "status"), "active");
    assert_eq!(get(&dibao, "assisted"), b(true));
    // A retiree keeps the employee scheme.
    let retiree = ask(stories::CERTIFIED_RETIREE).await;
    assert_eq!(text(&retiree, "scheme"), "employee");
    assert_eq!(text(&retiree, "status"), "active");
    // Laid off: the employee enrolment is suspended.
    let laid_off = ask(stories::LAID_OFF_WORKER).await;
    assert_eq!(get(&laid_off, "enrolled"), b(true));
    assert_eq!(text(&laid_off, "scheme"), "employee");
    assert_eq!(text(&laid_off, "status"), "suspended");
    // Dead: the enrolment ended, so not enrolled.
    let dead = ask(stories::DECEASED_PENSIONER).await;
    assert_eq!(get(&dead, "enrolled"), b(false));
    assert_eq!(text(&dead, "status"), "none");
    // Unknown to every register: no enrolment either.
    let unknown = s
        .try_ask("medins.enrolment", stories::UNKNOWN_PERSON_ID, None)
        .await
        .unwrap();
    assert_eq!(get(&unknown, "enrolled"), b(false));

    // Across the population: every situation occurs.
    let p = Population::reference(china_today());
    let all: Vec<_> = p
        .residents
        .iter()
        .map(|r| medins::enrolment(r, p.today))
        .collect();
    let count =
        |f: &dyn Fn(&medins::Enrolment) -> bool| all.iter().flatten().filter(|e| f(e)).count();
    assert!(all.iter().filter(|e| e.is_none()).count() >= 3);
    assert!(
        count(&|e| e.scheme == medins::Scheme::Employee && e.status == medins::Status::Active)
            >= 10
    );
    assert!(
        count(&|e| e.scheme == medins::Scheme::Resident && e.status == medins::Status::Active)
            >= 10
    );
    assert!(count(&|e| e.status == medins::Status::Suspended) >= 3);
    assert!(count(&|e| e.assisted) >= 2);
    assert!(count(&|e| e.status == medins::Status::Terminated) >= 1);
    // Assistance only for those receiving the allowance, never the dead.
    for (r, e) in p.residents.iter().zip(&all) {
        if let Some(e) = e {
            assert!(!e.assisted || r.allowance.is_some(), "{}", r.id);
            assert_eq!(
                e.status == medins::Status::Terminated,
                r.death.is_some(),
                "{}",
                r.id
            );
            assert!(e.enrolled_on <= p.today);
        }
    }
}

/// Every enterprise of the register answers both evidence types; the story
/// enterprises answer what their stories say.
async fn market_answers_registration_and_abnormal_list(backend: Backend) {
    let s = seeded(backend).await;
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

/// The market adapter over gRPC: a credit code answers, each malformed one
/// is INVALID_ARGUMENT with BadRequest naming the failed check, a person's
/// number for organisation evidence is refused, and the related legal
/// representative is checked too.
async fn market_adapter_over_grpc_checks_credit_codes(backend: Backend) {
    let mut s = seeded(backend).await;
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
