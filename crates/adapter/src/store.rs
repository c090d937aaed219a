//! The department database and the config-driven evidence source. All of
//! the adapter's SQL runs here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures::TryStreamExt;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{AssertSqlSafe, Column, Executor, Row, SqlSafeStr, Statement, TypeInfo, ValueRef};
use tongban_core::{
    Catalogue, EvidenceAnswer, EvidenceTypeDef, Field, FieldSpec, FieldType, FieldValue, IdNumber,
    SubjectId, SubjectKind,
};

use crate::config::{AS_OF_COLUMN, AdapterConfig, ConfigError, check_columns, dialect_of};
use crate::sql::{self, BoundSql, Dialect, Placeholder};

/// A department's database: SQLite (default, tests, demo), PostgreSQL or
/// MySQL/MariaDB (production).
#[derive(Debug, Clone)]
pub enum DepartmentPool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    /// MySQL or MariaDB. sqlx sets each connection's `time_zone` to
    /// `+00:00`, so `TIMESTAMP` values read back in UTC, and `DATETIME`
    /// values are taken as UTC, as PostgreSQL's `TIMESTAMP` is.
    Mysql(MySqlPool),
}

impl DepartmentPool {
    /// Opens a pool for `url` (`sqlite:`, `postgres://` or `mysql://`). Connections are
    /// made lazily, so a database that is down at start-up surfaces as
    /// UNAVAILABLE answers rather than a refusal to start.
    pub fn connect_lazy(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let dialect = dialect_of(url).map_err(|e| StoreError::Connect(e.to_string()))?;
        Ok(match dialect {
            Dialect::Sqlite => Self::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(acquire_timeout)
                    .connect_lazy(url)
                    .map_err(|e| StoreError::Connect(e.to_string()))?,
            ),
            Dialect::Postgres => Self::Postgres(
                PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(acquire_timeout)
                    .connect_lazy(url)
                    .map_err(|e| StoreError::Connect(e.to_string()))?,
            ),
            Dialect::Mysql => Self::Mysql(
                MySqlPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(acquire_timeout)
                    .connect_lazy(&url.replacen("mariadb://", "mysql://", 1))
                    .map_err(|e| StoreError::Connect(e.to_string()))?,
            ),
        })
    }

    /// Opens the pool named by a config.
    pub fn from_config(config: &AdapterConfig) -> Result<Self, StoreError> {
        Self::connect_lazy(
            &config.database_url,
            config.max_connections,
            Duration::from_millis(config.acquire_timeout_ms),
        )
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Self::Sqlite(_) => Dialect::Sqlite,
            Self::Postgres(_) => Dialect::Postgres,
            Self::Mysql(_) => Dialect::Mysql,
        }
    }

    /// Closes every connection; later queries fail as UNAVAILABLE.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(p) => p.close().await,
            Self::Postgres(p) => p.close().await,
            Self::Mysql(p) => p.close().await,
        }
    }

    /// Whether the database answers a trivial query (the health probe).
    pub async fn ping(&self) -> bool {
        match self {
            Self::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.is_ok(),
            Self::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.is_ok(),
            Self::Mysql(p) => sqlx::query("SELECT 1").execute(p).await.is_ok(),
        }
    }

    /// The result column names of `sql`, as the database prepares it with
    /// the types the runtime will bind.
    async fn columns(&self, sql: &str, binds: &[Placeholder]) -> Result<Vec<String>, sqlx::Error> {
        use sqlx::{Postgres, Type};
        let sql = AssertSqlSafe(sql.to_owned()).into_sql_str();
        Ok(match self {
            Self::Sqlite(p) => p
                .prepare(sql)
                .await?
                .columns()
                .iter()
                .map(|c| c.name().to_owned())
                .collect(),
            Self::Postgres(p) => p
                .prepare_with(
                    sql,
                    &binds
                        .iter()
                        .map(|b| match b {
                            Placeholder::IdNumber
                            | Placeholder::CreditCode
                            | Placeholder::Name
                            | Placeholder::LegalRepresentativeIdNumber => {
                                <String as Type<Postgres>>::type_info()
                            }
                            Placeholder::Today => <NaiveDate as Type<Postgres>>::type_info(),
                        })
                        .collect::<Vec<_>>(),
                )
                .await?
                .columns()
                .iter()
                .map(|c| c.name().to_owned())
                .collect(),
            // MySQL prepares without parameter types.
            Self::Mysql(p) => p
                .prepare(sql)
                .await?
                .columns()
                .iter()
                .map(|c| c.name().to_owned())
                .collect(),
        })
    }
}

/// Failure to open a database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database: {0}")]
    Connect(String),
}

/// Why an evidence request could not be answered from the database.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("department {department:?} does not serve evidence type {evidence_type:?}")]
    UnknownEvidenceType {
        department: String,
        evidence_type: String,
    },
    #[error("department {department:?} holds no record of the subject")]
    SubjectNotFound { department: String },
    #[error("query for {evidence_type:?} returned more than one row")]
    Ambiguous { evidence_type: String },
    /// The evidence type is about another kind of subject (e.g. a person's
    /// identity number for evidence about organisations).
    #[error("evidence type {evidence_type:?} is about an {expected}, named by {}", subject_field(*.expected))]
    WrongSubjectKind {
        evidence_type: String,
        expected: SubjectKind,
    },
    #[error("department {department:?} database is unavailable: {source}")]
    Unavailable {
        department: String,
        source: sqlx::Error,
    },
    #[error("query for {evidence_type:?} failed: {source}")]
    Database {
        evidence_type: String,
        source: sqlx::Error,
    },
    #[error("query for {evidence_type:?}: {source}")]
    Decode {
        evidence_type: String,
        source: DecodeError,
    },
}

/// The request field that names a subject of `kind`.
pub fn subject_field(kind: SubjectKind) -> &'static str {
    match kind {
        SubjectKind::Person => "subject.id_number",
        SubjectKind::Organisation => "subject.credit_code",
    }
}

/// A result cell that does not fit its field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("column {column:?} is NULL but the field is not optional")]
    NullNotAllowed { column: String },
    #[error("column {column:?} holds {found}, expected {expected}")]
    WrongType {
        column: String,
        expected: FieldType,
        found: String,
    },
    /// The offending value is kept for the caller but never displayed, so
    /// logging this error cannot leak personal data.
    #[error("column {column:?} does not hold {expected}")]
    BadValue {
        column: String,
        expected: &'static str,
        value: String,
    },
    #[error("column {column:?} is not a field of the evidence type")]
    UnknownColumn { column: String },
    #[error("no column for field {field:?}")]
    MissingColumn { field: String },
}

/// One result cell, backend-neutral.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Real(f64),
    Text(String),
    Date(NaiveDate),
    Timestamp(DateTime<Utc>),
    /// A database type the adapter does not decode, by name.
    Other(String),
}

impl Cell {
    fn describe(&self) -> String {
        match self {
            Self::Null => "NULL".into(),
            Self::Bool(_) => "a boolean".into(),
            Self::Int(_) => "an integer".into(),
            Self::Real(_) => "a real number".into(),
            Self::Text(_) => "text".into(),
            Self::Date(_) => "a date".into(),
            Self::Timestamp(_) => "a timestamp".into(),
            Self::Other(t) => format!("type {t}"),
        }
    }
}

/// Decodes one cell per the field's declared type.
pub fn decode_field(spec: &FieldSpec, cell: Cell) -> Result<Option<FieldValue>, DecodeError> {
    let column = || spec.name.clone();
    let wrong = |cell: &Cell| DecodeError::WrongType {
        column: spec.name.clone(),
        expected: spec.field_type,
        found: cell.describe(),
    };
    let value = match (spec.field_type, cell) {
        (_, Cell::Null) if spec.optional => return Ok(None),
        (_, Cell::Null) => return Err(DecodeError::NullNotAllowed { column: column() }),
        (FieldType::Bool, Cell::Bool(b)) => FieldValue::Bool(b),
        (FieldType::Bool, Cell::Int(i @ (0 | 1))) => FieldValue::Bool(i == 1),
        (FieldType::Bool, Cell::Int(i)) => {
            return Err(DecodeError::BadValue {
                column: column(),
                expected: "0 or 1",
                value: i.to_string(),
            });
        }
        (FieldType::Int, Cell::Int(i)) => FieldValue::Int(i),
        // SQLite arithmetic may yield an integral REAL.
        (FieldType::Int, Cell::Real(r)) if r.fract() == 0.0 && r.abs() < 9.0e15 => {
            FieldValue::Int(r as i64)
        }
        (FieldType::Text, Cell::Text(t)) => FieldValue::Text(t),
        (FieldType::Date, Cell::Date(d)) => FieldValue::Date(d),
        (FieldType::Date, Cell::Text(t)) => {
            FieldValue::Date(NaiveDate::parse_from_str(&t, "%Y-%m-%d").map_err(|_| {
                DecodeError::BadValue {
                    column: column(),
                    expected: "a date YYYY-MM-DD",
                    value: t,
                }
            })?)
        }
        (_, cell) => return Err(wrong(&cell)),
    };
    Ok(Some(value))
}

/// Decodes the optional `as_of` column: a timestamp, RFC 3339 text, or
/// "YYYY-MM-DD HH:MM:SS" text in UTC. NULL means "now".
pub fn decode_as_of(cell: Cell) -> Result<Option<DateTime<Utc>>, DecodeError> {
    match cell {
        Cell::Null => Ok(None),
        Cell::Timestamp(t) => Ok(Some(t)),
        Cell::Text(t) => DateTime::parse_from_rfc3339(&t)
            .map(|d| d.with_timezone(&Utc))
            .or_else(|_| {
                NaiveDateTime::parse_from_str(&t, "%Y-%m-%d %H:%M:%S").map(|d| d.and_utc())
            })
            .map(Some)
            .map_err(|_| DecodeError::BadValue {
                column: AS_OF_COLUMN.into(),
                expected: "an RFC 3339 or 'YYYY-MM-DD HH:MM:SS' UTC timestamp",
                value: t,
            }),
        other => Err(DecodeError::BadValue {
            column: AS_OF_COLUMN.into(),
            expected: "a timestamp",
            value: other.describe(),
        }),
    }
}

/// Builds an answer from one row's named cells.
pub fn answer_from_cells(
    def: &EvidenceTypeDef,
    cells: Vec<(String, Cell)>,
    now: DateTime<Utc>,
) -> Result<EvidenceAnswer, DecodeError> {
    let mut by_name: HashMap<String, Cell> = HashMap::with_capacity(cells.len());
    for (name, cell) in cells {
        if name != AS_OF_COLUMN && def.field(&name).is_none() {
            return Err(DecodeError::UnknownColumn { column: name });
        }
        by_name.insert(name, cell);
    }
    let current_as_of = match by_name.remove(AS_OF_COLUMN) {
        Some(cell) => decode_as_of(cell)?.unwrap_or(now),
        None => now,
    };
    let fields = def
        .fields
        .iter()
        .map(|spec| {
            let cell = by_name
                .remove(&spec.name)
                .ok_or_else(|| DecodeError::MissingColumn {
                    field: spec.name.clone(),
                })?;
            Ok(Field {
                name: spec.name.clone(),
                value: decode_field(spec, cell)?,
            })
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    Ok(EvidenceAnswer {
        evidence_type: def.id.clone(),
        department: def.department.clone(),
        current_as_of,
        fields,
    })
}

fn sqlite_cells(row: &SqliteRow) -> Result<Vec<(String, Cell)>, sqlx::Error> {
    let mut out = Vec::with_capacity(row.columns().len());
    for (i, col) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        let cell = if raw.is_null() {
            Cell::Null
        } else {
            let ty = raw.type_info().name().to_owned();
            match ty.as_str() {
                "INTEGER" | "BOOLEAN" => Cell::Int(row.try_get_unchecked::<i64, _>(i)?),
                "REAL" => Cell::Real(row.try_get_unchecked::<f64, _>(i)?),
                "TEXT" | "DATE" | "DATETIME" | "TIME" => {
                    Cell::Text(row.try_get_unchecked::<String, _>(i)?)
                }
                _ => Cell::Other(ty),
            }
        };
        out.push((col.name().to_owned(), cell));
    }
    Ok(out)
}

fn pg_cells(row: &PgRow) -> Result<Vec<(String, Cell)>, sqlx::Error> {
    let mut out = Vec::with_capacity(row.columns().len());
    for (i, col) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        let cell = if raw.is_null() {
            Cell::Null
        } else {
            let ty = raw.type_info().name().to_owned();
            match ty.as_str() {
                "BOOL" => Cell::Bool(row.try_get::<bool, _>(i)?),
                "INT2" => Cell::Int(row.try_get::<i16, _>(i)?.into()),
                "INT4" => Cell::Int(row.try_get::<i32, _>(i)?.into()),
                "INT8" => Cell::Int(row.try_get::<i64, _>(i)?),
                "FLOAT4" => Cell::Real(row.try_get::<f32, _>(i)?.into()),
                "FLOAT8" => Cell::Real(row.try_get::<f64, _>(i)?),
                "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => Cell::Text(row.try_get::<String, _>(i)?),
                "DATE" => Cell::Date(row.try_get::<NaiveDate, _>(i)?),
                "TIMESTAMPTZ" => Cell::Timestamp(row.try_get::<DateTime<Utc>, _>(i)?),
                "TIMESTAMP" => Cell::Timestamp(row.try_get::<NaiveDateTime, _>(i)?.and_utc()),
                _ => Cell::Other(ty),
            }
        };
        out.push((col.name().to_owned(), cell));
    }
    Ok(out)
}

fn mysql_cells(row: &MySqlRow) -> Result<Vec<(String, Cell)>, sqlx::Error> {
    let mut out = Vec::with_capacity(row.columns().len());
    for (i, col) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        let cell = if raw.is_null() {
            Cell::Null
        } else {
            let ty = raw.type_info().name().to_owned();
            match ty.as_str() {
                // BOOLEAN is TINYINT(1): decoded as 0 or 1, like SQLite's.
                "BOOLEAN" | "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => {
                    Cell::Int(row.try_get_unchecked::<i64, _>(i)?)
                }
                "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED"
                | "INT UNSIGNED" | "BIGINT UNSIGNED" => {
                    let u = row.try_get_unchecked::<u64, _>(i)?;
                    i64::try_from(u).map_or(Cell::Other(ty), Cell::Int)
                }
                "FLOAT" => Cell::Real(row.try_get::<f32, _>(i)?.into()),
                "DOUBLE" => Cell::Real(row.try_get::<f64, _>(i)?),
                // SUM() and integer division yield DECIMAL: sent as text.
                "DECIMAL" => {
                    let t = row.try_get_unchecked::<String, _>(i)?;
                    decimal_cell(&t).unwrap_or(Cell::Other(ty))
                }
                "VARCHAR" | "CHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM"
                | "SET" => Cell::Text(row.try_get_unchecked::<String, _>(i)?),
                // `_bin` collations flag text columns binary: text when
                // it is UTF-8.
                "VARBINARY" | "BINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
                    match String::from_utf8(row.try_get_unchecked::<Vec<u8>, _>(i)?) {
                        Ok(t) => Cell::Text(t),
                        Err(_) => Cell::Other(ty),
                    }
                }
                "DATE" => Cell::Date(row.try_get::<NaiveDate, _>(i)?),
                "DATETIME" | "TIMESTAMP" => Cell::Timestamp(row.try_get::<DateTime<Utc>, _>(i)?),
                _ => Cell::Other(ty),
            }
        };
        out.push((col.name().to_owned(), cell));
    }
    Ok(out)
}

/// A MySQL DECIMAL's text as an integer when it has no fraction, else a
/// real number.
fn decimal_cell(text: &str) -> Option<Cell> {
    let trimmed = match text.split_once('.') {
        Some((whole, fraction)) if fraction.bytes().all(|b| b == b'0') => whole,
        Some(_) => return text.parse::<f64>().ok().map(Cell::Real),
        None => text,
    };
    trimmed
        .parse::<i64>()
        .ok()
        .map(Cell::Int)
        .or_else(|| text.parse::<f64>().ok().map(Cell::Real))
}

/// Whether a database error means the department's store is unreachable
/// (as opposed to a broken query).
fn is_outage(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE classes 08 (connection exception, also MySQL's "too
        // many connections" and server shutdown), 53 (insufficient
        // resources), 57 (operator intervention, e.g. shutdown); SQLite
        // "cannot open" (14) and "busy" (5); MySQL's lock wait timeout
        // (HY000 with 1205) counts as a store that cannot answer now.
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|c| {
                c.starts_with("08")
                    || c.starts_with("53")
                    || c.starts_with("57")
                    || c == "14"
                    || c == "5"
            }) || db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .is_some_and(|e| e.number() == 1205)
        }
        _ => false,
    }
}

#[derive(Debug)]
struct CompiledQuery {
    def: EvidenceTypeDef,
    sql: Arc<str>,
    binds: Vec<Placeholder>,
}

/// Answers evidence requests from the department database with the
/// configured queries, checked at start-up against the catalogue.
#[derive(Debug)]
pub struct EvidenceSource {
    department: tongban_core::Department,
    pool: DepartmentPool,
    queries: Vec<CompiledQuery>,
}

impl EvidenceSource {
    /// Validates `config` against `catalogue`, then prepares every query on
    /// the database and checks its result columns against the evidence
    /// type's fields. Fails with a message naming the query and problem.
    pub async fn new(
        config: &AdapterConfig,
        catalogue: &Catalogue,
        pool: DepartmentPool,
    ) -> Result<Self, ConfigError> {
        config.validate(catalogue)?;
        let department = catalogue
            .department(&config.department)
            .cloned()
            .ok_or_else(|| ConfigError::UnknownDepartment(config.department.clone()))?;
        let dialect = pool.dialect();
        let mut queries = Vec::new();
        // Catalogue order, so `Describe` lists types as the catalogue does.
        for def in catalogue.evidence_types() {
            let Some(q) = config.evidence.get(&def.id) else {
                continue;
            };
            let BoundSql { sql, binds } =
                sql::rewrite(q.sql_for(dialect), dialect).map_err(|source| {
                    ConfigError::BadSql {
                        evidence_type: def.id.clone(),
                        source,
                    }
                })?;
            let columns = pool.columns(&sql, &binds).await.map_err(|e| {
                let evidence_type = def.id.clone();
                let message = e.to_string();
                if is_outage(&e) {
                    ConfigError::DatabaseUnreachable {
                        evidence_type,
                        message,
                    }
                } else {
                    ConfigError::Prepare {
                        evidence_type,
                        message,
                    }
                }
            })?;
            check_columns(def, &columns)?;
            queries.push(CompiledQuery {
                def: def.clone(),
                sql: sql.into(),
                binds,
            });
        }
        Ok(Self {
            department,
            pool,
            queries,
        })
    }

    pub fn department(&self) -> &tongban_core::Department {
        &self.department
    }

    pub fn pool(&self) -> &DepartmentPool {
        &self.pool
    }

    /// The evidence types this department serves, in catalogue order.
    pub fn evidence_types(&self) -> impl Iterator<Item = &EvidenceTypeDef> {
        self.queries.iter().map(|q| &q.def)
    }

    pub fn evidence_type(&self, id: &str) -> Option<&EvidenceTypeDef> {
        self.queries.iter().find(|q| q.def.id == id).map(|q| &q.def)
    }

    /// Runs the query for `evidence_type` about `asked.subject`. Exactly
    /// one row is an answer (every field); none means the department holds
    /// no record. A subject of the wrong kind for the evidence type (a
    /// person for evidence about organisations, or the reverse) is refused
    /// before the database is asked.
    #[tracing::instrument(skip(self, asked), fields(department = %self.department.id))]
    pub async fn answer(
        &self,
        evidence_type: &str,
        asked: &Asked<'_>,
    ) -> Result<EvidenceAnswer, SourceError> {
        let q = self
            .queries
            .iter()
            .find(|q| q.def.id == evidence_type)
            .ok_or_else(|| SourceError::UnknownEvidenceType {
                department: self.department.id.clone(),
                evidence_type: evidence_type.to_owned(),
            })?;
        if q.def.subject != asked.subject.kind() {
            return Err(SourceError::WrongSubjectKind {
                evidence_type: evidence_type.to_owned(),
                expected: q.def.subject,
            });
        }
        let db_err = |source: sqlx::Error| {
            if is_outage(&source) {
                SourceError::Unavailable {
                    department: self.department.id.clone(),
                    source,
                }
            } else {
                SourceError::Database {
                    evidence_type: evidence_type.to_owned(),
                    source,
                }
            }
        };
        let sql = AssertSqlSafe(Arc::clone(&q.sql));
        // One body for every backend: bind each placeholder in order, then
        // read at most two rows (two is ambiguous).
        macro_rules! one_row {
            ($pool:expr, $cells:ident) => {{
                let mut query = sqlx::query(sql);
                for b in &q.binds {
                    query = match asked.value(*b) {
                        BindValue::Text(text) => query.bind(text),
                        BindValue::Date(date) => query.bind(date),
                    };
                }
                let mut rows = query.fetch($pool);
                let first = rows.try_next().await.map_err(db_err)?;
                let second = rows.try_next().await.map_err(db_err)?;
                match (first, second) {
                    (Some(row), None) => Some($cells(&row).map_err(db_err)?),
                    (None, _) => None,
                    (Some(_), Some(_)) => {
                        return Err(SourceError::Ambiguous {
                            evidence_type: evidence_type.to_owned(),
                        });
                    }
                }
            }};
        }
        let cells = match &self.pool {
            DepartmentPool::Sqlite(pool) => one_row!(pool, sqlite_cells),
            DepartmentPool::Postgres(pool) => one_row!(pool, pg_cells),
            DepartmentPool::Mysql(pool) => one_row!(pool, mysql_cells),
        };
        let cells = cells.ok_or_else(|| SourceError::SubjectNotFound {
            department: self.department.id.clone(),
        })?;
        answer_from_cells(&q.def, cells, Utc::now()).map_err(|source| SourceError::Decode {
            evidence_type: evidence_type.to_owned(),
            source,
        })
    }
}

/// What a query is asked about: the values its placeholders are bound to.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// Whom the evidence is about (`:id_number` or `:credit_code`).
    pub subject: &'a SubjectId,
    /// The name as presented (`:name`), if any.
    pub name: Option<&'a str>,
    /// The case's legal representative (`:legal_representative_id_number`),
    /// if the exchange passed one.
    pub legal_representative: Option<&'a IdNumber>,
    /// The date bound as `:today`.
    pub today: NaiveDate,
}

/// One bound value: text (NULL when absent) or a date.
enum BindValue {
    Text(Option<String>),
    Date(NaiveDate),
}

impl<'a> Asked<'a> {
    /// About `subject`, with no related legal representative.
    pub fn new(subject: &'a SubjectId, name: Option<&'a str>, today: NaiveDate) -> Self {
        Self {
            subject,
            name,
            legal_representative: None,
            today,
        }
    }

    fn value(&self, placeholder: Placeholder) -> BindValue {
        let text = |s: Option<&str>| BindValue::Text(s.map(str::to_owned));
        match placeholder {
            Placeholder::IdNumber => text(self.subject.person().map(IdNumber::as_str)),
            Placeholder::CreditCode => text(match self.subject {
                SubjectId::Organisation(code) => Some(code.as_str()),
                SubjectId::Person(_) => None,
            }),
            Placeholder::Name => text(self.name),
            Placeholder::LegalRepresentativeIdNumber => {
                text(self.legal_representative.map(IdNumber::as_str))
            }
            Placeholder::Today => BindValue::Date(self.today),
        }
    }
}

/// Today's date in China (UTC+8): the `:today` the runtime binds.
pub fn china_today() -> NaiveDate {
    (Utc::now() + chrono::Duration::hours(8)).date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, t: FieldType, optional: bool) -> FieldSpec {
        FieldSpec {
            name: name.into(),
            field_type: t,
            description: String::new(),
            optional,
        }
    }

    #[test]
    fn decodes_each_type() {
        let b = spec("b", FieldType::Bool, false);
        assert_eq!(
            decode_field(&b, Cell::Int(1)),
            Ok(Some(FieldValue::Bool(true)))
        );
        assert_eq!(
            decode_field(&b, Cell::Int(0)),
            Ok(Some(FieldValue::Bool(false)))
        );
        assert_eq!(
            decode_field(&b, Cell::Bool(true)),
            Ok(Some(FieldValue::Bool(true)))
        );
        assert!(matches!(
            decode_field(&b, Cell::Int(2)),
            Err(DecodeError::BadValue { .. })
        ));
        assert!(matches!(
            decode_field(&b, Cell::Text("yes".into())),
            Err(DecodeError::WrongType { .. })
        ));
        let i = spec("i", FieldType::Int, false);
        assert_eq!(
            decode_field(&i, Cell::Int(-4)),
            Ok(Some(FieldValue::Int(-4)))
        );
        assert_eq!(
            decode_field(&i, Cell::Real(12.0)),
            Ok(Some(FieldValue::Int(12)))
        );
        assert!(decode_field(&i, Cell::Real(12.5)).is_err());
        let t = spec("t", FieldType::Text, false);
        assert_eq!(
            decode_field(&t, Cell::Text("valid".into())),
            Ok(Some(FieldValue::Text("valid".into())))
        );
        assert!(decode_field(&t, Cell::Int(3)).is_err());
        let d = spec("d", FieldType::Date, false);
        let date = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
        assert_eq!(
            decode_field(&d, Cell::Text("2024-02-29".into())),
            Ok(Some(FieldValue::Date(date)))
        );
        assert_eq!(
            decode_field(&d, Cell::Date(date)),
            Ok(Some(FieldValue::Date(date)))
        );
        assert!(matches!(
            decode_field(&d, Cell::Text("2023-02-29".into())),
            Err(DecodeError::BadValue { .. })
        ));
        assert!(matches!(
            decode_field(&d, Cell::Other("BLOB".into())),
            Err(DecodeError::WrongType { .. })
        ));
    }

    #[test]
    fn mysql_decimals_become_integers_when_whole() {
        assert_eq!(decimal_cell("86"), Some(Cell::Int(86)));
        assert_eq!(decimal_cell("86.000"), Some(Cell::Int(86)));
        assert_eq!(decimal_cell("-3.0"), Some(Cell::Int(-3)));
        assert_eq!(decimal_cell("2.5"), Some(Cell::Real(2.5)));
        assert_eq!(
            decimal_cell("123456789012345678901234"),
            Some(Cell::Real(1.2345678901234568e23))
        );
        assert_eq!(decimal_cell("abc"), None);
        let i = spec("i", FieldType::Int, false);
        assert!(decode_field(&i, Cell::Real(2.5)).is_err());
    }

    #[test]
    fn null_only_for_optional_fields() {
        assert_eq!(
            decode_field(&spec("o", FieldType::Date, true), Cell::Null),
            Ok(None)
        );
        assert_eq!(
            decode_field(&spec("alive", FieldType::Bool, false), Cell::Null),
            Err(DecodeError::NullNotAllowed {
                column: "alive".into()
            })
        );
    }

    #[test]
    fn as_of_formats() {
        let want = DateTime::parse_from_rfc3339("2026-11-20T08:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            decode_as_of(Cell::Text("2026-11-20T16:30:00+08:00".into())),
            Ok(Some(want))
        );
        assert_eq!(
            decode_as_of(Cell::Text("2026-11-20 08:30:00".into())),
            Ok(Some(want))
        );
        assert_eq!(decode_as_of(Cell::Timestamp(want)), Ok(Some(want)));
        assert_eq!(decode_as_of(Cell::Null), Ok(None));
        assert!(decode_as_of(Cell::Text("yesterday".into())).is_err());
    }

    #[test]
    fn answer_keeps_catalogue_order_and_defaults_as_of() {
        let cat = Catalogue::embedded();
        let def = cat.evidence("civil.death").unwrap();
        let now = Utc::now();
        let a = answer_from_cells(
            def,
            vec![
                ("date_of_death".into(), Cell::Null),
                ("deceased".into(), Cell::Int(0)),
            ],
            now,
        )
        .unwrap();
        assert_eq!(a.current_as_of, now);
        assert_eq!(a.department, "civil");
        assert_eq!(a.fields[0].name, "deceased");
        assert_eq!(a.fields[0].value, Some(FieldValue::Bool(false)));
        assert_eq!(a.fields[1].value, None);
        let e = answer_from_cells(def, vec![("deceased".into(), Cell::Null)], now).unwrap_err();
        assert!(matches!(e, DecodeError::NullNotAllowed { .. }));
    }

    fn test_id(seq: u16) -> IdNumber {
        IdNumber::from_parts("510402", NaiveDate::from_ymd_opt(1980, 1, 1).unwrap(), seq).unwrap()
    }

    /// A fresh database on a backend: SQLite in memory, or a uniquely named
    /// database on the PostgreSQL or MariaDB server of `tests/setup.sh`,
    /// dropped with the guard (even when the test panics).
    struct Scratch {
        dialect: Dialect,
        url: String,
        name: String,
    }

    const SERVERS: [(Dialect, &str); 2] = [
        (Dialect::Postgres, "postgres://postgres@127.0.0.1:5432"),
        (Dialect::Mysql, "mysql://root@127.0.0.1:3306"),
    ];

    fn server(dialect: Dialect) -> &'static str {
        SERVERS
            .iter()
            .find(|(d, _)| *d == dialect)
            .map(|(_, url)| *url)
            .unwrap_or_default()
    }

    /// Runs one statement on the server's `test` database.
    async fn on_server(dialect: Dialect, sql: String) -> Result<(), sqlx::Error> {
        use sqlx::Connection;
        let admin = format!("{}/test", server(dialect));
        let sql = AssertSqlSafe(sql);
        match dialect {
            Dialect::Postgres => {
                let mut c = sqlx::PgConnection::connect(&admin).await?;
                sqlx::raw_sql(sql).execute(&mut c).await?;
                c.close().await
            }
            Dialect::Mysql => {
                let mut c = sqlx::MySqlConnection::connect(&admin).await?;
                sqlx::raw_sql(sql).execute(&mut c).await?;
                c.close().await
            }
            Dialect::Sqlite => Ok(()),
        }
    }

    impl Scratch {
        async fn new(dialect: Dialect) -> Self {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let name = format!(
                "tb_adapter_{}_{}_{}",
                std::process::id(),
                Utc::now().timestamp_micros() % 1_000_000_000_000,
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            if dialect == Dialect::Sqlite {
                return Self {
                    dialect,
                    url: "sqlite::memory:".into(),
                    name,
                };
            }
            on_server(dialect, format!("CREATE DATABASE {name}"))
                .await
                .unwrap_or_else(|e| panic!("{dialect:?} server (tests/setup.sh starts it): {e}"));
            Self {
                dialect,
                url: format!("{}/{name}", server(dialect)),
                name,
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let (dialect, name) = (self.dialect, self.name.clone());
            let sql = match dialect {
                Dialect::Sqlite => return,
                Dialect::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                Dialect::Mysql => format!("DROP DATABASE IF EXISTS {name}"),
            };
            // Outside async (and perhaps unwinding): a runtime of its own.
            let dropped = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?
                    .block_on(on_server(dialect, sql))
                    .map_err(|e| e.to_string())
            })
            .join();
            if !matches!(dropped, Ok(Ok(()))) {
                eprintln!("could not drop test database {}: {dropped:?}", self.name);
            }
        }
    }

    /// A civil-affairs source on `dialect` over a small table `d`, whose
    /// `civil.death` query is `sql`.
    async fn source_on(
        dialect: Dialect,
        sql: &str,
    ) -> (Result<EvidenceSource, ConfigError>, Scratch) {
        let db = Scratch::new(dialect).await;
        let pool = DepartmentPool::connect_lazy(&db.url, 1, Duration::from_secs(2)).unwrap();
        let statements = [
            "CREATE TABLE d (id VARCHAR(32) PRIMARY KEY, dead BOOLEAN NOT NULL, died DATE)",
            "INSERT INTO d VALUES ('dup', FALSE, NULL)",
            "INSERT INTO d VALUES ('dup2', FALSE, NULL)",
            "INSERT INTO d VALUES (:id_number, TRUE, '2025-03-01')",
        ];
        for statement in statements {
            // The runtime's own rewriting gives each backend its binds.
            let bound = sql::rewrite(statement, dialect).unwrap();
            let text = AssertSqlSafe(bound.sql);
            let id = test_id(1).as_str().to_owned();
            macro_rules! exec {
                ($p:expr) => {{
                    let mut q = sqlx::query(text);
                    if !bound.binds.is_empty() {
                        q = q.bind(id);
                    }
                    q.execute($p).await.unwrap();
                }};
            }
            match &pool {
                DepartmentPool::Sqlite(p) => exec!(p),
                DepartmentPool::Postgres(p) => exec!(p),
                DepartmentPool::Mysql(p) => exec!(p),
            }
        }
        let config = AdapterConfig::from_toml(
            &format!(
                r#"
department = "civil"
database_url = "{url}"
[evidence."civil.death"]
sql = "{sql}"
[evidence."civil.marriage"]
sql = "SELECT 'unmarried' AS marital_status, CAST(NULL AS DATE) AS status_since"
[evidence."civil.subsistence"]
sql = "SELECT FALSE AS receiving, CAST(NULL AS DATE) AS since, NULL AS monthly_amount_yuan, CAST(NULL AS DATE) AS next_review"
"#,
                url = db.url
            ),
            "t",
        )
        .unwrap();
        (
            EvidenceSource::new(&config, &Catalogue::embedded(), pool).await,
            db,
        )
    }

    const BACKENDS: [Dialect; 3] = [Dialect::Sqlite, Dialect::Postgres, Dialect::Mysql];

    #[tokio::test]
    async fn source_checks_columns_at_start_on_every_backend() {
        for dialect in BACKENDS {
            let (e, _db) = source_on(
                dialect,
                "SELECT dead AS deceased FROM d WHERE id = :id_number",
            )
            .await;
            let e = e.unwrap_err();
            assert!(
                e.to_string()
                    .contains("no column for field \"date_of_death\""),
                "{dialect:?}: {e}"
            );
            let (e, _db) = source_on(
                dialect,
                "SELECT dead AS deceased, died AS date_of_death, id FROM d WHERE id = :id_number",
            )
            .await;
            let e = e.unwrap_err();
            assert!(e.to_string().contains("column \"id\""), "{dialect:?}: {e}");
            let (e, _db) = source_on(
                dialect,
                "SELECT dead AS deceased, died AS date_of_death FROM nosuch WHERE id = :id_number",
            )
            .await;
            let e = e.unwrap_err();
            assert!(matches!(e, ConfigError::Prepare { .. }), "{dialect:?}: {e}");
        }
    }

    #[tokio::test]
    async fn source_answers_and_distinguishes_zero_and_many_rows_on_every_backend() {
        for dialect in BACKENDS {
            let (s, _db) = source_on(
                dialect,
                &format!("SELECT dead AS deceased, died AS date_of_death FROM d WHERE id = :id_number OR (:id_number = '{}' AND id LIKE 'dup%')", test_id(2).as_str()),
            )
            .await;
            let s = s.unwrap();
            let today = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
            let id = test_id(1);
            let a = s
                .answer(
                    "civil.death",
                    &Asked::new(&SubjectId::Person(id.clone()), None, today),
                )
                .await
                .unwrap();
            assert_eq!(
                a.fields[0].value,
                Some(FieldValue::Bool(true)),
                "{dialect:?}"
            );
            assert_eq!(
                a.fields[1].value,
                Some(FieldValue::Date(
                    NaiveDate::from_ymd_opt(2025, 3, 1).unwrap()
                )),
                "{dialect:?}"
            );
            let other =
                IdNumber::from_parts("510403", NaiveDate::from_ymd_opt(1990, 5, 5).unwrap(), 11)
                    .unwrap();
            assert!(matches!(
                s.answer(
                    "civil.death",
                    &Asked::new(&SubjectId::Person(other.clone()), None, today)
                )
                .await,
                Err(SourceError::SubjectNotFound { .. })
            ));
            let dup = test_id(2);
            assert!(matches!(
                s.answer(
                    "civil.death",
                    &Asked::new(&SubjectId::Person(dup.clone()), None, today)
                )
                .await,
                Err(SourceError::Ambiguous { .. })
            ));
            assert!(matches!(
                s.answer(
                    "police.identity",
                    &Asked::new(&SubjectId::Person(id.clone()), None, today)
                )
                .await,
                Err(SourceError::UnknownEvidenceType { .. })
            ));
            s.pool().close().await;
            assert!(matches!(
                s.answer(
                    "civil.death",
                    &Asked::new(&SubjectId::Person(id.clone()), None, today)
                )
                .await,
                Err(SourceError::Unavailable { .. })
            ));
        }
    }

    /// MySQL's types as the adapter reads them: TINYINT(1) and comparisons
    /// as booleans, DECIMAL sums and unsigned integers as integers, text in
    /// a binary collation and ENUMs as text, DATETIME and TIMESTAMP as UTC
    /// whatever the server's time zone.
    #[tokio::test]
    async fn mysql_types_decode_to_fields() {
        let db = Scratch::new(Dialect::Mysql).await;
        let pool = DepartmentPool::connect_lazy(&db.url, 1, Duration::from_secs(2)).unwrap();
        let DepartmentPool::Mysql(p) = &pool else {
            unreachable!()
        };
        sqlx::raw_sql(
            "CREATE TABLE c (id VARCHAR(18) COLLATE utf8mb4_bin, months INT UNSIGNED,
                 first_month VARCHAR(7) COLLATE utf8mb4_bin, last_month ENUM('2025-12', '2026-10'),
                 ongoing BOOLEAN, posted DATETIME(6), seen TIMESTAMP(6) NULL)
                 DEFAULT CHARSET = utf8mb4;
             INSERT INTO c VALUES ('A', 40, '2019-01', '2025-12', FALSE, '2026-11-01 02:00:00', NULL),
                                  ('A', 46, '2023-01', '2026-10', TRUE, '2026-11-20 08:30:00.5', NULL);",
        )
        .execute(p)
        .await
        .unwrap();
        let config = AdapterConfig::from_toml(
            &format!(
                r#"
department = "hrss"
database_url = "{url}"
[evidence."hrss.contributions"]
sql = "SELECT SUM(months) AS total_months, MIN(first_month) AS first_month, MAX(last_month) AS last_month, MAX(ongoing) AS contributing, MAX(posted) AS as_of FROM c WHERE id = 'A' AND :id_number IS NOT NULL"
[evidence."hrss.unemployment"]
sql = "SELECT months > 12 AS eligible, CONCAT('months: ', months) AS reason, CAST(months AS UNSIGNED) AS insured_months, CAST(NULL AS DATE) AS separation_date, ongoing AS registered_unemployed, seen AS as_of FROM c WHERE id = 'A' AND ongoing AND :id_number IS NOT NULL"
[evidence."hrss.pension"]
sql = "SELECT FALSE AS retired, FALSE AS receiving, CAST(NULL AS DATE) AS last_qualification_date, FALSE AS qualification_due FROM c WHERE :id_number IS NULL"
"#,
                url = db.url
            ),
            "t",
        )
        .unwrap();
        let s = EvidenceSource::new(&config, &Catalogue::embedded(), pool)
            .await
            .unwrap();
        let today = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        let a = s
            .answer(
                "hrss.contributions",
                &Asked::new(&SubjectId::Person(test_id(1)), None, today),
            )
            .await
            .unwrap();
        let values: Vec<_> = a.fields.iter().map(|f| f.value.clone()).collect();
        assert_eq!(
            values,
            [
                Some(FieldValue::Int(86)),
                Some(FieldValue::Text("2019-01".into())),
                Some(FieldValue::Text("2026-10".into())),
                Some(FieldValue::Bool(true)),
            ]
        );
        assert_eq!(
            a.current_as_of,
            DateTime::parse_from_rfc3339("2026-11-20T08:30:00.5Z").unwrap()
        );
        let u = s
            .answer(
                "hrss.unemployment",
                &Asked::new(&SubjectId::Person(test_id(1)), None, today),
            )
            .await
            .unwrap();
        let values: Vec<_> = u.fields.iter().map(|f| f.value.clone()).collect();
        assert_eq!(
            values,
            [
                Some(FieldValue::Bool(true)),
                Some(FieldValue::Text("months: 46".into())),
                Some(FieldValue::Int(46)),
                None,
                Some(FieldValue::Bool(true)),
            ]
        );
        s.pool().close().await;
    }
}
