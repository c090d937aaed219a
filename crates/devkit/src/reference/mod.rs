//! The reference departments: police (公安), civil affairs (民政), human
//! resources & social security (人社) and market regulation (市场监督管理局,
//! enterprises: [`market`]), each with its own schema
//! (`migrations/<dept>/`), its adapter config (the SQL in `queries/`), and
//! the seeded synthetic population ([`population`], [`stories`]).
//!
//! Police is the authoritative register: an identity number it does not
//! hold is NOT_FOUND. Civil affairs and social security answer for any
//! identity number, because for them "no record" is itself the answer
//! (unmarried, no death registered, never insured). Market regulation is
//! the authoritative register of enterprises: a credit code it does not hold
//! is NOT_FOUND.

pub mod market;
pub mod population;
pub mod stories;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::migrate::Migrator;
use sqlx::{AssertSqlSafe, SqlSafeStr};

use population::{CardStatus, MarriageKind, Population};
use tongban_adapter::{AdapterConfig, AdapterService, DepartmentPool, EvidenceQuery, china_today};

static POLICE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/police");
static CIVIL_MIGRATIONS: Migrator = sqlx::migrate!("migrations/civil");
static HRSS_MIGRATIONS: Migrator = sqlx::migrate!("migrations/hrss");
static MARKET_MIGRATIONS: Migrator = sqlx::migrate!("migrations/market");

/// A reference department.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dept {
    Police,
    Civil,
    Hrss,
    Market,
}

impl Dept {
    pub const ALL: [Self; 4] = [Self::Police, Self::Civil, Self::Hrss, Self::Market];

    /// The department id in the catalogue.
    pub fn id(self) -> &'static str {
        match self {
            Self::Police => "police",
            Self::Civil => "civil",
            Self::Hrss => "hrss",
            Self::Market => "market",
        }
    }

    /// The default port of the stand-alone reference adapter.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Police => 50061,
            Self::Civil => 50062,
            Self::Hrss => 50063,
            // 50064 is left for medical insurance (medins), the catalogue's
            // fifth department.
            Self::Market => 50065,
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Self::Police => &POLICE_MIGRATIONS,
            Self::Civil => &CIVIL_MIGRATIONS,
            Self::Hrss => &HRSS_MIGRATIONS,
            Self::Market => &MARKET_MIGRATIONS,
        }
    }

    /// (evidence type, SQL, PostgreSQL variant).
    fn queries(self) -> &'static [(&'static str, &'static str, Option<&'static str>)] {
        match self {
            Self::Police => &[
                (
                    "police.identity",
                    include_str!("queries/police.identity.sql"),
                    None,
                ),
                (
                    "police.household",
                    include_str!("queries/police.household.sql"),
                    None,
                ),
            ],
            Self::Civil => &[
                (
                    "civil.marriage",
                    include_str!("queries/civil.marriage.sql"),
                    None,
                ),
                (
                    "civil.subsistence",
                    include_str!("queries/civil.subsistence.sql"),
                    None,
                ),
                ("civil.death", include_str!("queries/civil.death.sql"), None),
            ],
            Self::Hrss => &[
                (
                    "hrss.unemployment",
                    include_str!("queries/hrss.unemployment.sql"),
                    None,
                ),
                (
                    "hrss.pension",
                    include_str!("queries/hrss.pension.sqlite.sql"),
                    Some(include_str!("queries/hrss.pension.postgres.sql")),
                ),
                (
                    "hrss.contributions",
                    include_str!("queries/hrss.contributions.sql"),
                    None,
                ),
            ],
            Self::Market => &[
                (
                    "market.registration",
                    include_str!("queries/market.registration.sql"),
                    None,
                ),
                (
                    "market.abnormal",
                    include_str!("queries/market.abnormal.sql"),
                    None,
                ),
            ],
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
            format!("unknown reference department {s:?} (police, civil, hrss, market)")
        })
    }
}

/// The reference adapter config of `dept` on `database_url`.
pub fn config(dept: Dept, database_url: &str) -> AdapterConfig {
    let evidence: BTreeMap<String, EvidenceQuery> = dept
        .queries()
        .iter()
        .map(|(id, sql, pg)| {
            (
                (*id).to_owned(),
                EvidenceQuery {
                    sql: (*sql).to_owned(),
                    postgres_sql: pg.map(str::to_owned),
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
    }
    let rows = rows_for(dept, &Population::reference(today));
    let marker = format!("seed={:x} today={today}", population::SEED);
    let db = |source| SeedError::Database { dept, source };
    let written = match pool {
        DepartmentPool::Sqlite(p) => {
            let mut tx = p.begin().await.map_err(db)?;
            let seeded: Option<(String,)> =
                sqlx::query_as("SELECT value FROM seed_info WHERE key = 'population'")
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
            if seeded.is_some() {
                None
            } else {
                for (sql, values) in &rows {
                    let mut q = sqlx::query(AssertSqlSafe(sql.replace('$', "?")).into_sql_str());
                    for v in values {
                        q = bind!(q, v);
                    }
                    q.execute(&mut *tx).await.map_err(db)?;
                }
                sqlx::query("INSERT INTO seed_info (key, value) VALUES ('population', ?1)")
                    .bind(&marker)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                tx.commit().await.map_err(db)?;
                Some(rows.len())
            }
        }
        DepartmentPool::Postgres(p) => {
            let mut tx = p.begin().await.map_err(db)?;
            // Serialise concurrent seeders of the same database.
            sqlx::query("LOCK TABLE seed_info IN EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            let seeded: Option<(String,)> =
                sqlx::query_as("SELECT value FROM seed_info WHERE key = 'population'")
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
            if seeded.is_some() {
                None
            } else {
                for (sql, values) in &rows {
                    let mut q = sqlx::query(AssertSqlSafe(sql.clone()).into_sql_str());
                    for v in values {
                        q = bind!(q, v);
                    }
                    q.execute(&mut *tx).await.map_err(db)?;
                }
                sqlx::query("INSERT INTO seed_info (key, value) VALUES ('population', $1)")
                    .bind(&marker)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                tx.commit().await.map_err(db)?;
                Some(rows.len())
            }
        }
    };
    Ok(SeedReport {
        dept,
        inserted: written.is_some(),
        rows: written.unwrap_or(0),
    })
}

type Row = (String, Vec<V>);

fn insert(table: &str, columns: &[&str], values: Vec<V>) -> Row {
    let binds: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    (
        format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            columns.join(", "),
            binds.join(", ")
        ),
        values,
    )
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
