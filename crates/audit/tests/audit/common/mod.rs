//! Shared helpers: a store per backend (SQLite file in a temp dir, PostgreSQL
//! in a uniquely named schema dropped afterwards), synthetic entries, raw SQL.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::large_enum_variant
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Connection;
use tongban_audit::{
    AuditConfig, AuditEntry, AuditLog, AuditStore, EntryKind, Keyring, LogSigner, PostgresStore,
    SqliteStore, SubjectPseudonymizer, origin_for_node,
};

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn pg_url() -> String {
    std::env::var("TONGBAN_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

pub enum Concrete {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

pub struct TestDb {
    pub backend: Backend,
    pub store: Arc<dyn AuditStore>,
    pub concrete: Concrete,
    pub dir: Option<tempfile::TempDir>,
    pub schema: Option<String>,
}

/// A raw SQL argument for tamper statements.
pub enum Arg {
    Text(String),
    Int(i64),
    Int32(i32),
    Blob(Vec<u8>),
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let s = SqliteStore::open(&dir.path().join("audit.db"))
                    .await
                    .unwrap();
                TestDb {
                    backend,
                    store: Arc::new(s.clone()),
                    concrete: Concrete::Sqlite(s),
                    dir: Some(dir),
                    schema: None,
                }
            }
            Backend::Postgres => {
                let schema = format!(
                    "audit_t_{}_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed),
                    Utc::now().timestamp_micros() % 1_000_000
                );
                let mut c = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&mut c)
                    .await
                    .unwrap();
                c.close().await.unwrap();
                let s = PostgresStore::connect(&pg_url(), Some(&schema))
                    .await
                    .unwrap();
                TestDb {
                    backend,
                    store: Arc::new(s.clone()),
                    concrete: Concrete::Postgres(s),
                    dir: None,
                    schema: Some(schema),
                }
            }
        }
    }

    /// A second, independent store on the same database (as after a restart).
    pub async fn reopen(&self) -> Arc<dyn AuditStore> {
        match self.backend {
            Backend::Sqlite => Arc::new(
                SqliteStore::open(&self.dir.as_ref().unwrap().path().join("audit.db"))
                    .await
                    .unwrap(),
            ),
            Backend::Postgres => Arc::new(
                PostgresStore::connect(&pg_url(), self.schema.as_deref())
                    .await
                    .unwrap(),
            ),
        }
    }

    /// Runs raw SQL behind the log's back; returns rows affected.
    pub async fn exec(&self, sql: &str, args: Vec<Arg>) -> u64 {
        macro_rules! run {
            ($pool:expr) => {{
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
                for a in args {
                    q = match a {
                        Arg::Text(s) => q.bind(s),
                        Arg::Int(i) => q.bind(i),
                        Arg::Int32(i) => q.bind(i),
                        Arg::Blob(b) => q.bind(b),
                    };
                }
                q.execute($pool).await.unwrap().rows_affected()
            }};
        }
        match &self.concrete {
            Concrete::Sqlite(s) => run!(s.pool()),
            Concrete::Postgres(s) => run!(s.pool()),
        }
    }

    pub async fn close_pool(&self) {
        match &self.concrete {
            Concrete::Sqlite(s) => s.close().await,
            Concrete::Postgres(s) => s.close().await,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            // Drop the schema from a separate runtime: Drop cannot await.
            let url = pg_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    if let Ok(mut c) = sqlx::PgConnection::connect(&url).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP SCHEMA IF EXISTS {schema} CASCADE"
                        )))
                        .execute(&mut c)
                        .await;
                        let _ = c.close().await;
                    }
                });
            })
            .join();
        }
    }
}

pub fn signer(node: &str) -> LogSigner {
    let mut seed = [0u8; 32];
    for (i, b) in node.bytes().enumerate() {
        seed[i % 32] ^= b;
    }
    seed[31] ^= 0x5a;
    LogSigner::from_seed(&origin_for_node(node), &seed).unwrap()
}

pub fn keyring(nodes: &[&str]) -> Keyring {
    let mut k = Keyring::new();
    for n in nodes {
        k.add(signer(n).verifier());
    }
    k
}

pub fn config(node: &str) -> AuditConfig {
    let mut c = AuditConfig::new(node);
    c.checkpoint_every = 16;
    c.checkpoint_interval = std::time::Duration::from_millis(200);
    c.lock_wait = std::time::Duration::from_millis(100);
    c
}

pub async fn open_log(store: Arc<dyn AuditStore>, node: &str) -> AuditLog {
    AuditLog::open(store, signer(node), config(node))
        .await
        .unwrap()
}

/// GB 32100-2015 unified social credit code with a valid check character.
pub fn uscc(body17: &str) -> String {
    const ALPHABET: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";
    const W: [u32; 17] = [
        1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
    ];
    let sum: u32 = body17
        .chars()
        .zip(W)
        .map(|(c, w)| ALPHABET.find(c).unwrap() as u32 * w)
        .sum();
    let check = (31 - sum % 31) % 31;
    format!("{body17}{}", ALPHABET.chars().nth(check as usize).unwrap())
}

/// GB 11643-1999 resident identity number with a valid check character.
pub fn id_number(region: &str, birth: &str, seq: u32) -> String {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let body = format!("{region}{birth}{seq:03}");
    let sum: u32 = body
        .chars()
        .zip(W)
        .map(|(c, w)| c.to_digit(10).unwrap() * w)
        .sum();
    let check = "10X98765432".chars().nth((sum % 11) as usize).unwrap();
    format!("{body}{check}")
}

/// One per test binary, so its cache of subject keys is shared (clones
/// share it) and each subject's VRF is evaluated once.
pub fn pseudonymizer() -> SubjectPseudonymizer {
    static SHARED: std::sync::OnceLock<SubjectPseudonymizer> = std::sync::OnceLock::new();
    SHARED
        .get_or_init(|| {
            SubjectPseudonymizer::from_bytes(b"tongban-test-pseudonym-key-0001").unwrap()
        })
        .clone()
}

pub const MATTERS: [&str; 3] = [
    "unemployment-benefit",
    "pension-qualification",
    "temporary-id-card",
];

/// A synthetic lookup entry; `i` varies the fields.
pub fn entry(i: u64, time: DateTime<Utc>) -> AuditEntry {
    let mut e = AuditEntry::new(EntryKind::Lookup, time);
    e.caller_org = uscc(if i.is_multiple_of(2) {
        "11510403MB0000001"
    } else {
        "11510421MB0000002"
    });
    e.caller_unit = if i.is_multiple_of(2) {
        "dongli-station-community".into()
    } else {
        "salian-town-service-point".into()
    };
    e.operator = format!("clerk-{:02}", i % 7);
    e.matter = MATTERS[(i % 3) as usize].into();
    e.case_number = format!("PZH-2026-{i:06}");
    e.evidence_type = if i.is_multiple_of(3) {
        "unemployment-insurance".into()
    } else {
        "identity-verification".into()
    };
    e.department = if i.is_multiple_of(3) {
        "hrss".into()
    } else {
        "police".into()
    };
    e.subject =
        pseudonymizer().pseudonym(&id_number("510403", "19800101", (i % 50) as u32 * 2 + 1));
    if i % 10 == 9 {
        e.outcome_code = 5;
        e.outcome_reason = "SUBJECT_NOT_FOUND".into();
    } else {
        e.released_fields_hash =
            pseudonymizer().released_fields_hash(&[("eligible", "true"), ("months", "14")]);
    }
    e.latency_us = 200 + i;
    e.trace_id = format!("{:032x}", i);
    e
}

pub fn now_minus_days(d: i64) -> DateTime<Utc> {
    Utc::now() - TimeDelta::days(d)
}
