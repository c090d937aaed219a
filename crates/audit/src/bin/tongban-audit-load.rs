//! Load generator and benchmark for the audit writer: many concurrent
//! appenders against SQLite or PostgreSQL; prints durable appends per second.
//! With `--print-receipts` every acknowledged receipt is printed as it
//! arrives, which the crash test uses (kill -9 mid-load, then check them all).
//!
//! Usage:
//!   tongban-audit-load --sqlite PATH | --postgres URL [--schema S]
//!       [--node n1] [--key FILE] [--concurrency 64] [--count 100000]
//!       [--print-receipts]

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tongban_audit::{
    AuditConfig, AuditEntry, AuditLog, AuditStore, EntryKind, LogSigner, PostgresStore,
    SqliteStore, SubjectPseudonymizer, origin_for_node,
};

struct Args {
    sqlite: Option<PathBuf>,
    postgres: Option<String>,
    schema: Option<String>,
    node: String,
    key: Option<PathBuf>,
    concurrency: u64,
    count: u64,
    print_receipts: bool,
}

/// Arguments this tool cannot run with.
#[derive(Debug, thiserror::Error)]
enum ArgsError {
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("bad {0}")]
    BadNumber(&'static str),
    #[error("unknown argument {0:?}")]
    Unknown(String),
    #[error("give exactly one of --sqlite PATH or --postgres URL")]
    NoSingleStore,
}

fn parse_args() -> Result<Args, ArgsError> {
    let mut a = Args {
        sqlite: None,
        postgres: None,
        schema: None,
        node: "n1".into(),
        key: None,
        concurrency: 64,
        count: 100_000,
        print_receipts: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .ok_or_else(|| ArgsError::MissingValue(flag.clone()))
        };
        match flag.as_str() {
            "--sqlite" => a.sqlite = Some(PathBuf::from(val()?)),
            "--postgres" => a.postgres = Some(val()?),
            "--schema" => a.schema = Some(val()?),
            "--node" => a.node = val()?,
            "--key" => a.key = Some(PathBuf::from(val()?)),
            "--concurrency" => {
                a.concurrency = val()?
                    .parse()
                    .map_err(|_| ArgsError::BadNumber("--concurrency"))?
            }
            "--count" => {
                a.count = val()?
                    .parse()
                    .map_err(|_| ArgsError::BadNumber("--count"))?
            }
            "--print-receipts" => a.print_receipts = true,
            other => return Err(ArgsError::Unknown(other.to_owned())),
        }
    }
    if a.sqlite.is_none() == a.postgres.is_none() {
        return Err(ArgsError::NoSingleStore);
    }
    Ok(a)
}

fn synthetic_entry(i: u64, p: &SubjectPseudonymizer) -> AuditEntry {
    let mut e = AuditEntry::new(EntryKind::Lookup, Utc::now());
    e.caller_org = "11510403MB0000001X".into();
    e.caller_unit = "dongli-station-community".into();
    e.operator = format!("clerk-{:02}", i % 17);
    e.matter = "unemployment-benefit".into();
    e.case_number = format!("LOAD-{i:09}");
    e.evidence_type = "unemployment-insurance".into();
    e.department = "hrss".into();
    // Synthetic: a made-up number per 1000 appends, never a real person.
    e.subject = p.pseudonym(&format!("510403198001{:06}", i % 1000));
    e.latency_us = 150;
    e.trace_id = format!("{i:032x}");
    e
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args().map_err(|e| format!("{e}\nsee the file header for usage"))?;
    let store: Arc<dyn AuditStore> = match (&args.sqlite, &args.postgres) {
        (Some(path), _) => Arc::new(SqliteStore::open(path).await?),
        (_, Some(url)) => Arc::new(PostgresStore::connect(url, args.schema.as_deref()).await?),
        _ => unreachable!("checked in parse_args"),
    };
    let origin = origin_for_node(&args.node);
    let signer = match &args.key {
        Some(p) => LogSigner::load_or_generate(p, &origin)?,
        None => LogSigner::generate(&origin)?,
    };
    let log = AuditLog::open(store.clone(), signer, AuditConfig::new(&args.node)).await?;
    let pseudo = SubjectPseudonymizer::from_bytes(b"tongban-load-test-key-not-secret")?;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (log, next, pseudo) = (log.clone(), next.clone(), pseudo.clone());
        let (count, print) = (args.count, args.print_receipts);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return Ok::<(), tongban_audit::AuditError>(());
                }
                let r = log.append(synthetic_entry(i, &pseudo)).await?;
                if print {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(
                        out,
                        "RECEIPT {} {} {}",
                        r.node,
                        r.index,
                        hex::encode(r.leaf_hash)
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed();
    log.shutdown().await?;
    let stats = log.stats();
    let rate = stats.entries_committed as f64 / elapsed.as_secs_f64();
    eprintln!(
        "backend={} entries={} concurrency={} seconds={:.3} durable_appends_per_sec={:.0} batches={} mean_batch={:.1} mean_commit_ms={:.2}",
        store.backend(),
        stats.entries_committed,
        args.concurrency,
        elapsed.as_secs_f64(),
        rate,
        stats.batches,
        stats.entries_committed as f64 / stats.batches.max(1) as f64,
        stats.total_commit_us as f64 / stats.batches.max(1) as f64 / 1000.0
    );
    Ok(())
}
