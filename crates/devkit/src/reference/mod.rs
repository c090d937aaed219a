//! The reference departments: police (公安), civil affairs (民政), human
//! resources & social security (人社), market regulation (市场监督管理局,
//! enterprises: [`market`]) and healthcare security (医疗保障, [`medins`]),
//! each with its own schema
//! (`migrations/<dept>/`), its adapter config (the SQL in `queries/`), and
//! the seeded synthetic population ([`population`], [`stories`]).
//!
//! Every department runs on SQLite, PostgreSQL and MySQL/MariaDB, and gives
//! the same answers on each (the tests check it for the whole population):
//!
//! - **Schema**: `migrations/<dept>/` is portable DDL for SQLite and
//!   PostgreSQL; `migrations/<dept>/mysql/` is the same tables in MySQL's
//!   types (`VARCHAR(n)` keys, `DATETIME(6)` for `TIMESTAMPTZ`, `BOOLEAN`
//!   as `TINYINT(1)`, `utf8mb4_bin` so text compares exactly, `` `key` ``
//!   quoted). Never edit an applied migration; add the next one to both.
//! - **Queries**: one file per evidence type, `queries/<type>.sql`, when it
//!   runs unchanged everywhere; where a backend differs, a variant beside
//!   it (`<type>.postgres.sql`, `<type>.mysql.sql`) named in
//!   [`Dept::queries`]. MySQL needs one for `||` and `CAST(… AS TEXT)`
//!   (use `CONCAT`), date arithmetic (`DATE_SUB(:today, INTERVAL 12 MONTH)`)
//!   and exact text comparison of values a caller sends (`CAST(… AS
//!   BINARY)`: its collations ignore trailing spaces).
//! - **Seeding** ([`seed`]) is one code path: the rows of `rows_for` are
//!   rendered with each backend's binds and written in one transaction,
//!   serialised per database (SQLite's single writer, PostgreSQL's table
//!   lock, a MySQL named lock under which the migrations run too).
//!
//! Adding MySQL to a new department: write
//! `migrations/<dept>/mysql/0001_<dept>.sql` (the portable tables in the
//! types above), add its `sqlx::migrate!` to `Dept::mysql_migrator`, and add
//! `.mysql(include_str!("queries/<type>.mysql.sql"))` to the queries the
//! rules above name. Nothing else: the tests take departments from
//! `Dept::ALL` and run on every backend, including the comparison of all
//! three over the whole population, which shows a missing variant.
//!
//! Police is the authoritative register: an identity number it does not
//! hold is NOT_FOUND. Civil affairs and social security answer for any
//! identity number, because for them "no record" is itself the answer
//! (unmarried, no death registered, never insured). Market regulation is
//! the authoritative register of enterprises: a credit code it does not hold
//! is NOT_FOUND.

pub mod market;
pub mod medins;
pub mod population;
pub mod stories;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::migrate::Migrator;
use sqlx::{AssertSqlSafe, SqlSafeStr};

use population::{CardStatus, MarriageKind, Population};
use tongban_adapter::sql::Dialect;
use tongban_adapter::{AdapterConfig, AdapterService, DepartmentPool, EvidenceQuery, china_today};

static POLICE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/police");
static CIVIL_MIGRATIONS: Migrator = sqlx::migrate!("migrations/civil");
static HRSS_MIGRATIONS: Migrator = sqlx::migrate!("migrations/hrss");
static MEDINS_MIGRATIONS: Migrator = sqlx::migrate!("migrations/medins");
static MARKET_MIGRATIONS: Migrator = sqlx::migrate!("migrations/market");
static POLICE_MYSQL_MIGRATIONS: Migrator = sqlx::migrate!("migrations/police/mysql");
static CIVIL_MYSQL_MIGRATIONS: Migrator = sqlx::migrate!("migrations/civil/mysql");
static HRSS_MYSQL_MIGRATIONS: Migrator = sqlx::migrate!("migrations/hrss/mysql");
static MEDINS_MYSQL_MIGRATIONS: Migrator = sqlx::migrate!("migrations/medins/mysql");
static MARKET_MYSQL_MIGRATIONS: Migrator = sqlx::migrate!("migrations/market/mysql");

/// A reference query: the standard SQL and the variants for backends
/// where it differs.
#[derive(Debug, Clone, Copy)]
pub struct RefQuery {
    pub evidence_type: &'static str,
    pub sql: &'static str,
    pub postgres: Option<&'static str>,
    pub mysql: Option<&'static str>,
}

impl RefQuery {
    const fn new(evidence_type: &'static str, sql: &'static str) -> Self {
        Self {
            evidence_type,
            sql,
            postgres: None,
            mysql: None,
        }
    }

    const fn postgres(mut self, sql: &'static str) -> Self {
        self.postgres = Some(sql);
        self
    }

    const fn mysql(mut self, sql: &'static str) -> Self {
        self.mysql = Some(sql);
        self
    }
}

/// A reference department.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dept {
    Police,
    Civil,
    Hrss,
    /// Market regulation (市场监督管理局): enterprises' registration and
    /// the abnormal operations list.
    Market,
    /// Healthcare security (医疗保障): medical insurance enrolment.
    Medins,
}

impl Dept {
    pub const ALL: [Self; 5] = [
        Self::Police,
        Self::Civil,
        Self::Hrss,
        Self::Market,
        Self::Medins,
    ];

    /// The department id in the catalogue.
    pub fn id(self) -> &'static str {
        match self {
            Self::Police => "police",
            Self::Civil => "civil",
            Self::Hrss => "hrss",
            Self::Market => "market",
            Self::Medins => "medins",
        }
    }

    /// The default port of the stand-alone reference adapter.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Police => 50061,
            Self::Civil => 50062,
            Self::Hrss => 50063,
            Self::Market => 50064,
            Self::Medins => 50065,
        }
    }

    /// The schema's migrations on SQLite and PostgreSQL.
    fn migrator(self) -> &'static Migrator {
        match self {
            Self::Police => &POLICE_MIGRATIONS,
            Self::Civil => &CIVIL_MIGRATIONS,
            Self::Hrss => &HRSS_MIGRATIONS,
            Self::Market => &MARKET_MIGRATIONS,
            Self::Medins => &MEDINS_MIGRATIONS,
        }
    }

    /// The schema's migrations on MySQL/MariaDB.
    fn mysql_migrator(self) -> &'static Migrator {
        match self {
            Self::Police => &POLICE_MYSQL_MIGRATIONS,
            Self::Civil => &CIVIL_MYSQL_MIGRATIONS,
            Self::Hrss => &HRSS_MYSQL_MIGRATIONS,
            Self::Market => &MARKET_MYSQL_MIGRATIONS,
            Self::Medins => &MEDINS_MYSQL_MIGRATIONS,
        }
    }

    /// The department's queries, one per evidence type it serves.
    pub fn queries(self) -> &'static [RefQuery] {
        const POLICE: &[RefQuery] = &[
            RefQuery::new(
                "police.identity",
                include_str!("queries/police.identity.sql"),
            )
            .mysql(include_str!("queries/police.identity.mysql.sql")),
            RefQuery::new(
                "police.household",
                include_str!("queries/police.household.sql"),
            ),
        ];
        const CIVIL: &[RefQuery] = &[
            RefQuery::new("civil.marriage", include_str!("queries/civil.marriage.sql")),
            RefQuery::new(
                "civil.subsistence",
                include_str!("queries/civil.subsistence.sql"),
            ),
            RefQuery::new("civil.death", include_str!("queries/civil.death.sql")),
        ];
        const HRSS: &[RefQuery] = &[
            RefQuery::new(
                "hrss.unemployment",
                include_str!("queries/hrss.unemployment.sql"),
            )
            .mysql(include_str!("queries/hrss.unemployment.mysql.sql")),
            RefQuery::new(
                "hrss.pension",
                include_str!("queries/hrss.pension.sqlite.sql"),
            )
            .postgres(include_str!("queries/hrss.pension.postgres.sql"))
            .mysql(include_str!("queries/hrss.pension.mysql.sql")),
            RefQuery::new(
                "hrss.contributions",
                include_str!("queries/hrss.contributions.sql"),
            ),
        ];
        const MARKET: &[RefQuery] = &[
            RefQuery::new(
                "market.registration",
                include_str!("queries/market.registration.sql"),
            )
            .mysql(include_str!("queries/market.registration.mysql.sql")),
            RefQuery::new(
                "market.abnormal",
                include_str!("queries/market.abnormal.sql"),
            ),
        ];
        const MEDINS: &[RefQuery] = &[RefQuery::new(
            "medins.enrolment",
            include_str!("queries/medins.enrolment.sql"),
        )];
        match self {
            Self::Police => POLICE,
            Self::Civil => CIVIL,
            Self::Hrss => HRSS,
            Self::Market => MARKET,
            Self::Medins => MEDINS,
        }
    }
}

impl fmt::Display for Dept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Dept {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|d| d.id() == s).ok_or_else(|| {
            format!("unknown reference department {s:?} (police, civil, hrss, market, medins)")
        })
    }
}

/// The reference adapter config of `dept` on `database_url`.
pub fn config(dept: Dept, database_url: &str) -> AdapterConfig {
    let evidence: BTreeMap<String, EvidenceQuery> = dept
        .queries()
        .iter()
        .map(|q| {
            (
                q.evidence_type.to_owned(),
                EvidenceQuery {
                    sql: q.sql.to_owned(),
                    postgres_sql: q.postgres.map(str::to_owned),
                    mysql_sql: q.mysql.map(str::to_owned),
                },
            )
        })
        .collect();
    AdapterConfig {
        department: dept.id().to_owned(),
        database_url: database_url.to_owned(),
        catalogue: None,
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], dept.default_port())),
        max_connections: 8,
        acquire_timeout_ms: 2000,
        drain_timeout_ms: 10_000,
        admin_listen: None,
        health_listen: None,
        tls: None,
        server: Default::default(),
        evidence,
    }
}

/// Why a reference adapter could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error(transparent)]
    Seed(#[from] SeedError),
    #[error(transparent)]
    Serve(#[from] tongban_adapter::ServeError),
}

/// A ready reference adapter service for `dept` on `database_url`: opens
/// the pool, migrates and seeds (idempotently), then validates and prepares
/// every query. Serve it with [`tongban_adapter::serve`] or [`tongban_adapter::RunningAdapter`].
pub async fn service(dept: Dept, database_url: &str) -> Result<AdapterService, ReferenceError> {
    let config = config(dept, database_url);
    let pool = DepartmentPool::from_config(&config).map_err(tongban_adapter::ServeError::from)?;
    seed(dept, &pool).await?;
    Ok(
        tongban_adapter::service_from_parts(&config, &tongban_core::Catalogue::embedded(), pool)
            .await?,
    )
}

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("migrating the {dept} schema: {source}")]
    Migrate {
        dept: Dept,
        source: sqlx::migrate::MigrateError,
    },
    #[error("seeding {dept}: {source}")]
    Database { dept: Dept, source: sqlx::Error },
}

/// What [`seed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedReport {
    pub dept: Dept,
    /// False when the database was already seeded (nothing written).
    pub inserted: bool,
    /// Rows written (0 when already seeded).
    pub rows: usize,
}

/// A value to bind into a seed row.
#[derive(Debug, Clone)]
enum V {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    Bool(bool),
    Date(NaiveDate),
    OptDate(Option<NaiveDate>),
    Ts(DateTime<Utc>),
}

macro_rules! bind {
    ($q:expr, $v:expr) => {
        match $v {
            V::Text(s) => $q.bind(s.clone()),
            V::OptText(s) => $q.bind(s.clone()),
            V::Int(i) => $q.bind(*i),
            V::Bool(b) => $q.bind(*b),
            V::Date(d) => $q.bind(*d),
            V::OptDate(d) => $q.bind(*d),
            V::Ts(t) => $q.bind(*t),
        }
    };
}

/// Creates `dept`'s schema (versioned migrations) and loads the reference
/// population as of today (China). Idempotent: a seeded database is left as is.
pub async fn seed(dept: Dept, pool: &DepartmentPool) -> Result<SeedReport, SeedError> {
    seed_at(dept, pool, china_today()).await
}

/// [`seed`] with the population placed relative to `today`.
#[tracing::instrument(skip(pool), err(Display))]
pub async fn seed_at(
    dept: Dept,
    pool: &DepartmentPool,
    today: NaiveDate,
) -> Result<SeedReport, SeedError> {
    let migrate = |source| SeedError::Migrate { dept, source };
    match pool {
        DepartmentPool::Sqlite(p) => dept.migrator().run(p).await.map_err(migrate)?,
        DepartmentPool::Postgres(p) => dept.migrator().run(p).await.map_err(migrate)?,
        // Migrated under the seeding lock, below.
        DepartmentPool::Mysql(_) => {}
    }
    let rows = rows_for(dept, &Population::reference(today));
    let marker = format!("seed={:x} today={today}", population::SEED);
    let db = |source| SeedError::Database { dept, source };
    // One body for every backend: in one transaction (`$tx`, after any
    // lock), check the marker, write every row, write the marker.
    macro_rules! seed_in {
        ($tx:expr, $dialect:expr, $seeded:literal, $mark:literal) => {{
            let seeded: Option<(String,)> = sqlx::query_as($seeded)
                .fetch_optional(&mut *$tx)
                .await
                .map_err(db)?;
            if seeded.is_some() {
                None
            } else {
                for row in &rows {
                    let mut q = sqlx::query(AssertSqlSafe(row.sql($dialect)).into_sql_str());
                    for v in &row.values {
                        q = bind!(q, v);
                    }
                    q.execute(&mut *$tx).await.map_err(db)?;
                }
                sqlx::query($mark)
                    .bind(&marker)
                    .execute(&mut *$tx)
                    .await
                    .map_err(db)?;
                Some(rows.len())
            }
        }};
    }
    let written = match pool {
        DepartmentPool::Sqlite(p) => {
            // SQLite has one writer at a time: the first write serialises.
            let mut tx = p.begin().await.map_err(db)?;
            let written = seed_in!(
                tx,
                Dialect::Sqlite,
                "SELECT value FROM seed_info WHERE key = 'population'",
                "INSERT INTO seed_info (key, value) VALUES ('population', ?1)"
            );
            tx.commit().await.map_err(db)?;
            written
        }
        DepartmentPool::Postgres(p) => {
            let mut tx = p.begin().await.map_err(db)?;
            // Serialise concurrent seeders of the same database.
            sqlx::query("LOCK TABLE seed_info IN EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            let written = seed_in!(
                tx,
                Dialect::Postgres,
                "SELECT value FROM seed_info WHERE key = 'population'",
                "INSERT INTO seed_info (key, value) VALUES ('population', $1)"
            );
            tx.commit().await.map_err(db)?;
            written
        }
        DepartmentPool::Mysql(p) => {
            // Serialise concurrent seeders of the same database, migrations
            // included, with a named lock: sqlx's own migration lock asks
            // GET_LOCK for an infinite wait with -1, which MariaDB answers
            // NULL at once, and InnoDB's gap locks on an empty table would
            // let two seeders through and then deadlock. The lock belongs
            // to the connection: released after, and the connection closed
            // if anything went wrong, so no pooled connection keeps it.
            let mut conn = p.acquire().await.map_err(db)?;
            let locked: Option<i64> =
                sqlx::query_scalar("SELECT GET_LOCK(CONCAT('tongban-seed:', MD5(DATABASE())), 60)")
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db)?;
            if locked != Some(1) {
                return Err(db(sqlx::Error::Protocol(
                    "another seeder held the seeding lock for 60 s".into(),
                )));
            }
            let result: Result<Option<usize>, SeedError> = async {
                // On the locked connection itself. `run_direct` is what
                // `run` calls after acquiring; called through `run` on a
                // connection, rustc cannot prove the future Send
                // ("implementation of `Acquire` is not general enough", as
                // sqlx's own comment on `run_direct` says).
                dept.mysql_migrator()
                    .run_direct(None, &mut *conn, false)
                    .await
                    .map_err(migrate)?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(db)?;
                let written = seed_in!(
                    tx,
                    Dialect::Mysql,
                    "SELECT value FROM seed_info WHERE `key` = 'population'",
                    "INSERT INTO seed_info (`key`, value) VALUES ('population', ?)"
                );
                tx.commit().await.map_err(db)?;
                Ok(written)
            }
            .await;
            let released = sqlx::query("DO RELEASE_LOCK(CONCAT('tongban-seed:', MD5(DATABASE())))")
                .execute(&mut *conn)
                .await;
            if result.is_err() || released.is_err() {
                let _ = conn.close().await;
            }
            result?
        }
    };
    Ok(SeedReport {
        dept,
        inserted: written.is_some(),
        rows: written.unwrap_or(0),
    })
}

/// One row to insert, rendered with each backend's binds.
struct Row {
    table: &'static str,
    columns: &'static [&'static str],
    values: Vec<V>,
}

impl Row {
    fn sql(&self, dialect: Dialect) -> String {
        let binds: Vec<String> = (1..=self.columns.len())
            .map(|i| match dialect {
                Dialect::Sqlite => format!("?{i}"),
                Dialect::Postgres => format!("${i}"),
                Dialect::Mysql => "?".to_owned(),
            })
            .collect();
        format!(
            "INSERT INTO {} ({}) VALUES ({})",
            self.table,
            self.columns.join(", "),
            binds.join(", ")
        )
    }
}

fn insert(table: &'static str, columns: &'static [&'static str], values: Vec<V>) -> Row {
    Row {
        table,
        columns,
        values,
    }
}

fn text(s: impl Into<String>) -> V {
    V::Text(s.into())
}

/// The rows `dept` holds: each department only its own data.
fn rows_for(dept: Dept, p: &Population) -> Vec<Row> {
    let mut rows = Vec::new();
    match dept {
        Dept::Police => {
            for h in &p.households {
                rows.push(insert(
                    "households",
                    &["household_no", "region_code", "address", "head_id_number"],
                    vec![
                        text(&h.no),
                        text(h.region_code),
                        text(&h.address),
                        text(h.head.as_str()),
                    ],
                ));
            }
            for r in &p.residents {
                rows.push(insert(
                    "residents",
                    &[
                        "id_number",
                        "name",
                        "sex",
                        "birth_date",
                        "household_no",
                        "alive",
                        "updated_at",
                    ],
                    vec![
                        text(r.id.as_str()),
                        text(&r.name),
                        text(if r.male() { "M" } else { "F" }),
                        V::Date(r.birth_date()),
                        text(&r.household_no),
                        V::Bool(r.death.is_none()),
                        V::Ts(r.updated_at),
                    ],
                ));
                for c in &r.cards {
                    let changed = match c.status {
                        CardStatus::Valid => c.issued_on,
                        _ => r.death.unwrap_or(p.today - chrono::Duration::days(20)),
                    };
                    rows.push(insert(
                        "id_cards",
                        &[
                            "card_no",
                            "id_number",
                            "issued_on",
                            "valid_until",
                            "status",
                            "updated_at",
                        ],
                        vec![
                            text(&c.card_no),
                            text(r.id.as_str()),
                            V::Date(c.issued_on),
                            V::OptDate(c.valid_until),
                            text(c.status.as_str()),
                            V::Ts(changed.and_hms_opt(2, 0, 0).unwrap_or_default().and_utc()),
                        ],
                    ));
                }
            }
        }
        Dept::Civil => {
            let mut reg = 0;
            for r in &p.residents {
                for m in &r.marriages {
                    reg += 1;
                    rows.push(insert(
                        "marriage_registrations",
                        &[
                            "reg_no",
                            "id_number",
                            "kind",
                            "registered_on",
                            "spouse_id_number",
                        ],
                        vec![
                            text(format!("HY{reg:07}")),
                            text(r.id.as_str()),
                            text(match m.kind {
                                MarriageKind::Marriage => "marriage",
                                MarriageKind::Divorce => "divorce",
                            }),
                            V::Date(m.date),
                            V::OptText(m.spouse.as_ref().map(|s| s.as_str().to_owned())),
                        ],
                    ));
                }
                if let Some(d) = r.death {
                    rows.push(insert(
                        "death_registrations",
                        &["id_number", "date_of_death", "registered_at"],
                        vec![
                            text(r.id.as_str()),
                            V::Date(d),
                            V::Ts(
                                (d + chrono::Duration::days(3))
                                    .and_hms_opt(3, 0, 0)
                                    .unwrap_or_default()
                                    .and_utc(),
                            ),
                        ],
                    ));
                }
                if let Some(a) = &r.allowance {
                    rows.push(insert(
                        "subsistence_allowances",
                        &[
                            "case_no",
                            "id_number",
                            "start_date",
                            "end_date",
                            "monthly_amount_yuan",
                            "next_review",
                            "updated_at",
                        ],
                        vec![
                            text(&a.case_no),
                            text(r.id.as_str()),
                            V::Date(a.start),
                            V::OptDate(a.end),
                            V::Int(a.monthly_amount_yuan),
                            V::OptDate(a.next_review),
                            V::Ts(
                                a.end
                                    .unwrap_or(a.start)
                                    .and_hms_opt(2, 0, 0)
                                    .unwrap_or_default()
                                    .and_utc(),
                            ),
                        ],
                    ));
                }
            }
        }
        Dept::Market => market_rows(p, &mut rows),
        Dept::Medins => rows.extend(medins::rows(p)),
        Dept::Hrss => {
            for r in &p.residents {
                if let Some(u) = &r.unemployment {
                    rows.push(insert(
                        "unemployment_insurance",
                        &[
                            "id_number",
                            "insured_months",
                            "separation_date",
                            "registered_unemployed",
                            "updated_at",
                        ],
                        vec![
                            text(r.id.as_str()),
                            V::Int(u.insured_months),
                            V::OptDate(u.separation_date),
                            V::Bool(u.registered_unemployed),
                            V::Ts(r.updated_at),
                        ],
                    ));
                }
                if let Some(pe) = &r.pension {
                    rows.push(insert(
                        "pensions",
                        &["id_number", "retired_on", "receiving", "updated_at"],
                        vec![
                            text(r.id.as_str()),
                            V::Date(pe.retired_on),
                            V::Bool(pe.receiving),
                            V::Ts(r.updated_at),
                        ],
                    ));
                    for (i, c) in pe.certifications.iter().enumerate() {
                        rows.push(insert(
                            "qualification_certifications",
                            &["id_number", "certified_on", "channel"],
                            vec![
                                text(r.id.as_str()),
                                V::Date(*c),
                                text(["community", "mobile-app", "home-visit"][i % 3]),
                            ],
                        ));
                    }
                }
                for s in &r.spells {
                    rows.push(insert(
                        "contribution_spells",
                        &[
                            "id_number",
                            "employer",
                            "first_month",
                            "last_month",
                            "months",
                            "ongoing",
                            "posted_at",
                        ],
                        vec![
                            text(r.id.as_str()),
                            text(&s.employer),
                            text(s.first_month.format("%Y-%m").to_string()),
                            text(s.last_month.format("%Y-%m").to_string()),
                            V::Int(s.months),
                            V::Bool(s.ongoing),
                            V::Ts(
                                (s.last_month + chrono::Duration::days(35))
                                    .min(p.today)
                                    .and_hms_opt(2, 0, 0)
                                    .unwrap_or_default()
                                    .and_utc(),
                            ),
                        ],
                    ));
                }
            }
        }
    }
    rows
}

/// Market regulation's rows: the enterprises and their listings.
fn market_rows(p: &Population, rows: &mut Vec<Row>) {
    let mut listing = 0;
    for e in market::enterprises(p) {
        rows.push(insert(
            "enterprises",
            &[
                "credit_code",
                "name",
                "status",
                "legal_representative_id_number",
                "legal_representative_name",
                "established_on",
                "registered_capital_yuan",
                "updated_at",
            ],
            vec![
                text(e.credit_code.as_str()),
                text(&e.name),
                text(e.status.as_str()),
                text(e.legal_representative.as_str()),
                text(&e.legal_representative_name),
                V::Date(e.established_on),
                V::Int(e.registered_capital_yuan),
                V::Ts(e.updated_at),
            ],
        ));
        for l in &e.listings {
            listing += 1;
            rows.push(insert(
                "abnormal_listings",
                &[
                    "listing_no",
                    "credit_code",
                    "listed_on",
                    "reason",
                    "removed_on",
                    "updated_at",
                ],
                vec![
                    text(format!("YC{listing:07}")),
                    text(e.credit_code.as_str()),
                    V::Date(l.listed_on),
                    text(l.reason),
                    V::OptDate(l.removed_on),
                    V::Ts(
                        l.removed_on
                            .unwrap_or(l.listed_on)
                            .and_hms_opt(2, 0, 0)
                            .unwrap_or_default()
                            .and_utc(),
                    ),
                ],
            ));
        }
    }
}

#[cfg(test)]
mod tests;
