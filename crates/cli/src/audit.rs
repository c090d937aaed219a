//! `tongban audit …`: administrators read the log through the exchange's
//! `Audit` service (every call is itself logged there), and check it
//! directly in its store with pinned keys (`verify`, `prune`), trusting
//! nothing the exchange says.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand};
use tongban_audit::{
    AuditConfig, AuditEntry, AuditError, AuditLog, AuditStore, EntryKind, Keyring, LogSigner,
    LoggedEntry, PostgresStore, Progress, SqliteStore, StoreError, VerifyOptions, VerifyReport,
    origin_for_node,
};
use tongban_core::Catalogue;
use tongban_proto::v1::audit_client::AuditClient;
use tongban_proto::v1::{
    self as pb, AdminContext, AuditExportRequest, AuditFilter, AuditRecord, AuditSearchRequest,
    InclusionProofRequest, ListCheckpointsRequest, SubjectReportRequest, WatchEvent, WatchRequest,
};
use tonic::transport::Channel;

use crate::client::ConnectArgs;
use crate::render;
use crate::render::printable;

// Parsed once per process: the size of the arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Search the log (newest first) through the exchange.
    Search(SearchArgs),
    /// Every access to one person's data: a report to hand to the citizen.
    Subject(SubjectArgs),
    /// Every entry as JSON Lines, in log order.
    Export(ExportArgs),
    /// Follow the log live (for a SIEM): every node's entries from a cursor,
    /// each with the cursor to resume after it.
    Tail(TailArgs),
    /// Fetch an entry's inclusion proof and check it offline with pinned keys.
    Proof(ProofArgs),
    /// The latest signed checkpoint of every node (save them to detect
    /// truncation or rollback later).
    Checkpoints(CheckpointsArgs),
    /// Recompute the whole log in its store against pinned keys.
    Verify(VerifyArgs),
    /// Delete entries older than the retention period, directly in the store.
    Prune(PruneArgs),
    /// Disclose a sealed access to its person before its matter's delay has
    /// passed (`--reason` says why; the act is logged first).
    Unseal(UnsealArgs),
}

#[derive(Debug, Clone, Args)]
pub struct UnsealArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Exchange node whose log holds the entry.
    pub node: String,
    /// The entry's index in that log.
    pub index: u64,
}

/// An administrator's connection and the context every read is logged with.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Who is reading the log (your operator id).
    #[arg(long, env = "TONGBAN_OPERATOR")]
    pub operator: String,
    /// Why (ticket, citizen request, inspection); logged with the read.
    #[arg(long)]
    pub reason: String,
}

impl AdminArgs {
    async fn client(&self) -> anyhow::Result<AuditClient<Channel>> {
        Ok(AuditClient::new(self.connect.channel().await?))
    }

    fn context(&self) -> Option<AdminContext> {
        Some(AdminContext {
            operator_id: self.operator.clone(),
            reason: self.reason.clone(),
        })
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(Duration::from_millis(self.connect.timeout_ms));
        request
    }
}

#[derive(Debug, Clone, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Entries at or after this time (RFC 3339, or a date: YYYY-MM-DD).
    #[arg(long, value_parser = parse_time)]
    pub from: Option<DateTime<Utc>>,
    /// Entries before this time (RFC 3339, or a date: YYYY-MM-DD).
    #[arg(long, value_parser = parse_time)]
    pub to: Option<DateTime<Utc>>,
    /// Calling organisation (unified social credit code).
    #[arg(long)]
    pub caller_org: Option<String>,
    /// Calling unit within the organisation.
    #[arg(long)]
    pub caller_unit: Option<String>,
    /// The clerk (operator id) who made the request.
    #[arg(long = "clerk")]
    pub clerk: Option<String>,
    #[arg(long)]
    pub department: Option<String>,
    #[arg(long)]
    pub evidence_type: Option<String>,
    #[arg(long)]
    pub matter: Option<String>,
    #[arg(long = "case")]
    pub case_number: Option<String>,
    /// Outcome status: a name (OK, PERMISSION_DENIED, …) or its number.
    #[arg(long, value_parser = parse_code)]
    pub outcome: Option<i32>,
    /// A resident identity number; the exchange pseudonymises it before searching.
    #[arg(long, conflicts_with = "credit_code")]
    pub subject: Option<String>,
    /// An organisation's unified social credit code (an enterprise the
    /// entries are about); pseudonymised by the exchange like a person's number.
    #[arg(long)]
    pub credit_code: Option<String>,
    /// Only this exchange node's log.
    #[arg(long)]
    pub node: Option<String>,
    /// Lookup, GatherItem or AdminAction.
    #[arg(long)]
    pub kind: Option<String>,
    /// At most this many entries (ignored with --all).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Follow every page to the end.
    #[arg(long)]
    pub all: bool,
    /// JSON Lines (one entry per line) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct SubjectArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The person's resident identity number.
    pub id_number: String,
    /// At most this many accesses (up to 10 000).
    #[arg(long, default_value_t = 1000)]
    pub max: u32,
    /// JSON instead of the printable report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Only this node's log (default: every node).
    #[arg(long)]
    pub node: Option<String>,
    /// Write here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Keep going: print entries as they are committed, until interrupted
    /// (reconnecting from the last cursor when the exchange goes away).
    /// Without it, stop at the end of the log.
    #[arg(long)]
    pub follow: bool,
    /// Resume after the event that carried this cursor (`node:index,…`, as
    /// printed). Default: every node from its first entry.
    #[arg(long, value_name = "CURSOR", conflicts_with = "from_end")]
    pub from: Option<String>,
    /// Start at the current end: only entries committed from now on.
    #[arg(long)]
    pub from_end: bool,
    /// JSON Lines: one entry per line (as `audit export`) with its `cursor`;
    /// a prune the feed skipped is a line with `pruned`. Without it, one
    /// readable line per entry, and the cursor to resume with on stderr.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ProofArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Exchange node whose log holds the entry.
    pub node: String,
    /// The entry's index in that log.
    pub index: u64,
    /// Pinned verifier key file(s) (a node's audit-signing.pub); repeatable.
    #[arg(long = "log-key", required = true)]
    pub keys: Vec<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct CheckpointsArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Check the signatures with these pinned verifier key files.
    #[arg(long = "log-key")]
    pub keys: Vec<PathBuf>,
    /// Append the checkpoints to this file (for `verify --checkpoint`).
    #[arg(long)]
    pub save: Option<PathBuf>,
}

/// Where the log is stored.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// A SQLite file path or a postgres:// URL.
    #[arg(long)]
    pub store: String,
    /// PostgreSQL schema of the audit tables.
    #[arg(long)]
    pub schema: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Pinned verifier key file(s), one key per line; repeatable. Never read
    /// from the store.
    #[arg(long = "key", visible_alias = "log-key", required = true)]
    pub keys: Vec<PathBuf>,
    /// Checkpoints saved earlier (`audit checkpoints --save`); repeatable.
    #[arg(long)]
    pub checkpoint: Vec<PathBuf>,
    /// Only these nodes (default: every node in the store); repeatable.
    #[arg(long)]
    pub node: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// A witness's verifier key (as text, or a file of keys); repeatable.
    /// Every node's latest checkpoint must then carry a quorum of their
    /// cosignatures.
    #[arg(long = "witness-key")]
    pub witness_keys: Vec<String>,
    /// How many of the witness keys must have cosigned (default: all).
    #[arg(long = "witness-quorum", requires = "witness_keys")]
    pub witness_quorum: Option<usize>,
}

/// A stopped node's own log, pruned under its writer lease and signing key.
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// The node's exchange configuration: takes the store, schema, node
    /// and signing key from it.
    #[arg(long, conflicts_with_all = ["store", "schema", "node", "signing_key"])]
    pub config: Option<PathBuf>,
    /// A SQLite file path or a postgres:// URL (without --config).
    #[arg(long, required_unless_present = "config")]
    pub store: Option<String>,
    /// PostgreSQL schema of the audit tables.
    #[arg(long)]
    pub schema: Option<String>,
    /// The node whose log is pruned (without --config).
    #[arg(long, required_unless_present = "config")]
    pub node: Option<String>,
    /// The node's checkpoint signing key (without --config); never created here.
    #[arg(long, required_unless_present = "config")]
    pub signing_key: Option<PathBuf>,
    /// Delete entries older than this many days.
    #[arg(long)]
    pub older_than_days: u32,
    /// Allow a retention below the legal minimum of 183 days.
    #[arg(long)]
    pub force: bool,
    /// Who prunes (your operator id); written into the prune record.
    #[arg(long, env = "TONGBAN_OPERATOR")]
    pub operator: String,
    /// Why (ticket, decision); written into the prune record.
    #[arg(long, default_value = "")]
    pub reason: String,
}

pub async fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Search(args) => search(args).await,
        AuditCommand::Subject(args) => subject(args).await,
        AuditCommand::Export(args) => export(args).await,
        AuditCommand::Tail(args) => tail(args).await,
        AuditCommand::Proof(args) => proof(args).await,
        AuditCommand::Checkpoints(args) => checkpoints(args).await,
        AuditCommand::Verify(args) => verify(args).await,
        AuditCommand::Prune(args) => prune(args).await,
        AuditCommand::Unseal(args) => unseal(args).await,
    }
}

pub async fn unseal(args: UnsealArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.admin.client().await?;
    let answer = client
        .unseal(args.admin.request(pb::UnsealRequest {
            admin: args.admin.context(),
            node: args.node.clone(),
            index: args.index,
        }))
        .await
        .map_err(|s| anyhow::anyhow!("{}", render::status_text(&s)))?
        .into_inner();
    if answer.was_sealed {
        println!(
            "entry {}#{} is disclosed to its person from now on",
            args.node, args.index
        );
    } else {
        println!(
            "entry {}#{} was not sealed (its matter delays nothing, or its date has passed); nothing changed",
            args.node, args.index
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A time argument that is neither form `--from`/`--to` take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither RFC 3339 (2026-11-26T08:00:00Z) nor YYYY-MM-DD")]
pub struct BadTime(String);

fn parse_time(s: &str) -> Result<DateTime<Utc>, BadTime> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| BadTime(s.to_owned()))
}

/// An argument that names no gRPC status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a gRPC status code (e.g. OK, PERMISSION_DENIED, 7)")]
pub struct BadCode(String);

/// A gRPC status code by name (any case) or number.
pub fn parse_code(s: &str) -> Result<i32, BadCode> {
    tongban_proto::convert::parse_code(s)
        .map(|code| code as i32)
        .ok_or_else(|| BadCode(s.to_owned()))
}

pub use tongban_proto::convert::code_name_of as code_name;
use tongban_proto::convert::timestamp;

fn record_time(r: &AuditRecord) -> DateTime<Utc> {
    r.time
        .as_ref()
        .and_then(tongban_proto::convert::time_of)
        .unwrap_or_default()
}

/// The wire record as the library's entry, so JSON output has one shape
/// (that of `tongban_audit::export_jsonl`) and leaf hashes can be rechecked.
pub fn record_to_entry(r: &AuditRecord) -> anyhow::Result<LoggedEntry> {
    let kind: EntryKind = r.kind.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let mut entry = AuditEntry::new(kind, record_time(r));
    entry.node = r.node.clone();
    entry.caller_org = r.caller_org.clone();
    entry.caller_unit = r.caller_unit.clone();
    entry.operator = r.operator_id.clone();
    entry.matter = r.matter.clone();
    entry.case_number = r.case_number.clone();
    entry.evidence_type = r.evidence_type.clone();
    entry.department = r.department.clone();
    entry.subject = r.subject.clone();
    entry.outcome_code = r.outcome_code;
    entry.outcome_reason = r.outcome_reason.clone();
    entry.latency_us = r.latency_us;
    entry.trace_id = r.trace_id.clone();
    entry.released_fields_hash = r.released_fields_hash.clone();
    entry.detail = r.detail.clone();
    entry.policy_version = r.policy_version.clone();
    let leaf_hash: [u8; 32] = r
        .leaf_hash
        .as_slice()
        .try_into()
        .context("leaf hash is not 32 bytes")?;
    Ok(LoggedEntry {
        index: r.index,
        leaf_hash,
        entry,
    })
}

/// One JSON line for a record; `leaf_ok` is false when the entry's fields
/// no longer hash to the leaf hash the exchange sent.
fn json_line(r: &AuditRecord) -> anyhow::Result<String> {
    let logged = record_to_entry(r)?;
    Ok(serde_json::to_string(&logged)?)
}

fn outcome_text(code: i32, reason: &str) -> String {
    match (code, reason) {
        (0, _) => "OK".into(),
        (c, "") => code_name(c).into(),
        (c, r) => format!("{} {r}", code_name(c)),
    }
}

fn short_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// A readable table of records (UTC times). Entry text is escaped: entries
/// written before the log cleaned them may hold control characters.
pub fn records_table(records: &[AuditRecord]) -> String {
    let mut out = format!(
        "{:<19}  {:<16}  {:<11}  {:<40}  {:<14}  {:<22}  {:<18}  {:<20}  {}\n",
        "TIME (UTC)",
        "ENTRY",
        "KIND",
        "CALLER (ORG/UNIT)",
        "OPERATOR",
        "MATTER",
        "CASE",
        "EVIDENCE",
        "OUTCOME"
    );
    for r in records {
        let what = if r.kind == "AdminAction" {
            truncate(&printable(&r.detail), 60)
        } else {
            printable(&r.evidence_type).into_owned()
        };
        out.push_str(&format!(
            "{:<19}  {:<16}  {:<11}  {:<40}  {:<14}  {:<22}  {:<18}  {:<20}  {}\n",
            short_time(record_time(r)),
            truncate(&printable(&format!("{}#{}", r.node, r.index)), 16),
            printable(&r.kind),
            truncate(
                &printable(&format!("{}/{}", r.caller_org, r.caller_unit)),
                40
            ),
            truncate(&printable(&r.operator_id), 14),
            truncate(&printable(&r.matter), 22),
            truncate(&printable(&r.case_number), 18),
            what,
            printable(&outcome_text(r.outcome_code, &r.outcome_reason))
        ));
    }
    out
}

pub async fn search(args: SearchArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.admin.client().await?;
    let filter = AuditFilter {
        from: args.from.map(timestamp),
        to: args.to.map(timestamp),
        node: args.node.clone().unwrap_or_default(),
        kind: args.kind.clone().unwrap_or_default(),
        caller_org: args.caller_org.clone().unwrap_or_default(),
        caller_unit: args.caller_unit.clone().unwrap_or_default(),
        operator_id: args.clerk.clone().unwrap_or_default(),
        department: args.department.clone().unwrap_or_default(),
        evidence_type: args.evidence_type.clone().unwrap_or_default(),
        matter: args.matter.clone().unwrap_or_default(),
        case_number: args.case_number.clone().unwrap_or_default(),
        outcome_code: args.outcome,
        subject_id_number: args.subject.clone().unwrap_or_default(),
        subject_credit_code: args.credit_code.clone().unwrap_or_default(),
    };
    let wanted = if args.all {
        u64::MAX
    } else {
        args.limit.max(1).into()
    };
    let mut shown = 0u64;
    let mut token = String::new();
    let mut table = Vec::new();
    let stdout = std::io::stdout();
    loop {
        let left = wanted - shown;
        let page_size = u32::try_from(left.min(1000)).unwrap_or(1000);
        let response = client
            .search(args.admin.request(AuditSearchRequest {
                admin: args.admin.context(),
                filter: Some(filter.clone()),
                page_size,
                page_token: token.clone(),
            }))
            .await
            .map_err(|s| anyhow::anyhow!("{}", render::status_text(&s)))?
            .into_inner();
        shown += response.records.len() as u64;
        if args.json {
            let mut out = stdout.lock();
            for r in &response.records {
                writeln!(out, "{}", json_line(r)?)?;
            }
        } else {
            table.extend(response.records);
        }
        token = response.next_page_token;
        if token.is_empty() || shown >= wanted {
            break;
        }
    }
    if !args.json {
        print!("{}", records_table(&table));
        let more = if token.is_empty() {
            String::new()
        } else {
            " (more match: raise --limit or pass --all)".into()
        };
        println!("{} entries{more}", table.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// An identity number with its middle hidden, for headings.
pub fn masked(id_number: &str) -> String {
    let chars: Vec<char> = id_number.trim().chars().collect();
    if chars.len() < 10 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 10))
}

/// The Data-Tracker-style report: who accessed one person's data, when, why.
pub fn subject_report_text(
    id_number: &str,
    accesses: &[AuditRecord],
    truncated: bool,
    catalogue: &Catalogue,
) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line("Record of access to personal data · 个人信息查询记录".into());
    line(format!("Person · 身份证号: {}", masked(id_number)));
    line(format!(
        "Produced · 生成时间: {} UTC",
        short_time(Utc::now())
    ));
    let data_accesses: Vec<&AuditRecord> = accesses
        .iter()
        .filter(|r| r.kind != "AdminAction")
        .collect();
    line(format!(
        "Accesses · 查询次数: {}{}",
        data_accesses.len(),
        if truncated {
            " (more exist; list cut)"
        } else {
            ""
        }
    ));
    if data_accesses.is_empty() {
        line("No service point has asked for this person's data.".into());
    }
    for (n, r) in data_accesses.iter().enumerate() {
        // Entries written before the log cleaned them may hold control
        // characters: escaped, they cannot forge lines of this report.
        let p = |s: &str| printable(s).into_owned();
        let matter = catalogue
            .matter(&r.matter)
            .map(|m| format!("{} · {} ({})", m.title, m.title_zh, r.matter))
            .unwrap_or_else(|| p(&r.matter));
        let evidence = catalogue
            .evidence(&r.evidence_type)
            .map(|e| format!("{} · {} ({})", e.title, e.title_zh, r.evidence_type))
            .unwrap_or_else(|| p(&r.evidence_type));
        let department = catalogue
            .department(&r.department)
            .map(|d| format!("{} · {}", d.title, d.title_zh))
            .unwrap_or_else(|| p(&r.department));
        let result = match r.outcome_code {
            0 => "released · 已提供".to_owned(),
            7 | 16 => format!(
                "refused, nothing released · 拒绝 ({})",
                p(&outcome_text(r.outcome_code, &r.outcome_reason))
            ),
            _ => format!(
                "not answered · 未提供 ({})",
                p(&outcome_text(r.outcome_code, &r.outcome_reason))
            ),
        };
        line(String::new());
        line(format!(
            "{:>3}. When · 时间      {} UTC",
            n + 1,
            short_time(record_time(r))
        ));
        line(format!(
            "     Who · 查询单位   organisation {}, unit {}, clerk {}",
            p(&r.caller_org),
            p(&r.caller_unit),
            p(&r.operator_id)
        ));
        line(format!(
            "     Why · 办理事项   {matter}, case {}",
            p(&r.case_number)
        ));
        line(format!(
            "     What · 数据      {evidence}, held by {department}"
        ));
        line(format!("     Result · 结果    {result}"));
        line(format!("     Log entry · 记录 {}#{}", p(&r.node), r.index));
    }
    out
}

pub async fn subject(args: SubjectArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.admin.client().await?;
    let response = client
        .subject_report(args.admin.request(SubjectReportRequest {
            admin: args.admin.context(),
            id_number: args.id_number.clone(),
            max_accesses: args.max,
        }))
        .await
        .map_err(|s| anyhow::anyhow!("{}", render::status_text(&s)))?
        .into_inner();
    if args.json {
        let accesses = response
            .accesses
            .iter()
            .map(record_to_entry)
            .collect::<anyhow::Result<Vec<_>>>()?;
        println!(
            "{}",
            serde_json::json!({ "accesses": accesses, "truncated": response.truncated })
        );
    } else {
        print!(
            "{}",
            subject_report_text(
                &args.id_number,
                &response.accesses,
                response.truncated,
                &Catalogue::embedded()
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.admin.client().await?;
    // An export may take long: no overall deadline, only the connect timeout.
    let mut stream = client
        .export(tonic::Request::new(AuditExportRequest {
            admin: args.admin.context(),
            node: args.node.clone().unwrap_or_default(),
        }))
        .await
        .map_err(|s| anyhow::anyhow!("{}", render::status_text(&s)))?
        .into_inner();
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut written = 0u64;
    let mut mismatched = 0u64;
    while let Some(record) = stream
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("{}", render::status_text(&s)))?
    {
        let logged = record_to_entry(&record)?;
        if logged.entry.leaf_hash(logged.index) != logged.leaf_hash {
            mismatched += 1;
        }
        serde_json::to_writer(&mut out, &logged)?;
        out.write_all(b"\n")?;
        written += 1;
    }
    out.flush()?;
    if let Some(path) = &args.out {
        eprintln!("{written} entries written to {}", path.display());
    }
    if mismatched > 0 {
        eprintln!(
            "warning: {mismatched} exported entries do not hash to their leaf hash; run `tongban audit verify` on the store"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of `audit tail` for an event: JSON (the entry as `export`
/// writes it, plus `cursor`; or `pruned` and `cursor`) or readable text.
/// `Ok(None)` for an event without content (from a newer exchange).
pub fn tail_line(event: &WatchEvent, json: bool) -> anyhow::Result<Option<(String, bool)>> {
    use pb::watch_event::Event;
    let cursor = event.cursor.as_str();
    let Some(inner) = &event.event else {
        return Ok(None);
    };
    let line = match inner {
        Event::Entry(record) => {
            let logged = record_to_entry(record)?;
            let hash_ok = logged.entry.leaf_hash(logged.index) == logged.leaf_hash;
            let line = if json {
                let mut value = serde_json::to_value(&logged)?;
                if let serde_json::Value::Object(map) = &mut value {
                    map.insert("cursor".into(), cursor.into());
                }
                serde_json::to_string(&value)?
            } else {
                let e = &logged.entry;
                let mut text = format!(
                    "{} {}:{} {} {}",
                    short_time(e.time),
                    printable(&e.node),
                    logged.index,
                    e.kind.as_str(),
                    printable(&outcome_text(e.outcome_code, &e.outcome_reason)),
                );
                for part in [
                    format!("{}/{}", e.caller_org, e.caller_unit),
                    e.operator.clone(),
                    e.matter.clone(),
                    e.evidence_type.clone(),
                    e.subject.chars().take(16).collect(),
                    e.detail.clone(),
                ] {
                    if !part.is_empty() && part != "/" {
                        text.push(' ');
                        text.push_str(&printable(&truncate(&part, 120)));
                    }
                }
                text
            };
            (line, hash_ok)
        }
        Event::Pruned(p) => {
            let line = if json {
                serde_json::json!({
                    "pruned": {"node": p.node, "from_index": p.from_index, "to_index": p.to_index},
                    "cursor": cursor,
                })
                .to_string()
            } else {
                format!(
                    "-- node {}: entries {}..{} were pruned before they could be read",
                    printable(&p.node),
                    p.from_index,
                    p.to_index
                )
            };
            (line, true)
        }
    };
    Ok(Some(line))
}

/// Longest pause between reconnections while following.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(30);

pub async fn tail(args: TailArgs) -> anyhow::Result<ExitCode> {
    let mut cursor = args.from.clone().unwrap_or_default();
    let mut from_end = args.from_end;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut mismatched = 0u64;
    let mut backoff = Duration::from_millis(500);
    loop {
        // No overall deadline: a feed lasts as long as it has entries (or,
        // following, until interrupted); only connecting is bounded.
        let request = tonic::Request::new(WatchRequest {
            admin: args.admin.context(),
            cursor: cursor.clone(),
            from_end,
            follow: args.follow,
        });
        let started = async {
            let mut client = args.admin.client().await?;
            client
                .watch(request)
                .await
                .map(tonic::Response::into_inner)
                .map_err(anyhow::Error::from)
        };
        let ended = match started.await {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(event)) => {
                        if let Some((line, hash_ok)) = tail_line(&event, args.json)? {
                            writeln!(out, "{line}")?;
                            if args.follow {
                                out.flush()?;
                            }
                            mismatched += u64::from(!hash_ok);
                        }
                        cursor = event.cursor;
                        from_end = false;
                        backoff = Duration::from_millis(500);
                    }
                    Ok(None) => break Ok(()),
                    Err(status) => break Err(anyhow::Error::from(status)),
                }
            },
            Err(e) => Err(e),
        };
        out.flush()?;
        let error = match ended {
            Ok(()) => break,
            Err(e) => e,
        };
        // While following, a lost connection is resumed from the last
        // cursor; anything the exchange refused is final.
        let transient = match error.downcast_ref::<tonic::Status>() {
            Some(status) => matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            ),
            None => true,
        };
        let text = match error.downcast_ref::<tonic::Status>() {
            Some(status) => render::status_text(status),
            None => format!("{error:#}"),
        };
        if !args.follow || !transient {
            if !cursor.is_empty() && !args.json {
                eprintln!("resume with: --from {cursor}");
            }
            bail!("{text}");
        }
        eprintln!(
            "warning: the feed stopped ({text}); reconnecting in {} ms from {}",
            backoff.as_millis(),
            if cursor.is_empty() {
                "the start"
            } else {
                &cursor
            }
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
    }
    if !args.json && !cursor.is_empty() {
        eprintln!("resume with: --from {cursor}");
    }
    if mismatched > 0 {
        eprintln!(
            "warning: {mismatched} entries do not hash to their leaf hash; run `tongban audit verify` on the store"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads pinned verifier keys (one per line) from files.
pub fn read_keyring(paths: &[PathBuf]) -> anyhow::Result<Keyring> {
    let mut keyring = Keyring::new();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading verifier key {}", path.display()))?;
        let keys =
            Keyring::parse(&text).with_context(|| format!("verifier key {}", path.display()))?;
        for key in keys.keys() {
            keyring.add(key.clone());
        }
    }
    if keyring.keys().is_empty() {
        bail!("no verifier keys given (--log-key FILE, e.g. a node's audit-signing.pub)");
    }
    Ok(keyring)
}

/// The wire proof as the library's, to verify offline.
pub fn proof_from_proto(p: &pb::InclusionProof) -> anyhow::Result<tongban_audit::InclusionProof> {
    let hash = |b: &[u8]| -> anyhow::Result<[u8; 32]> {
        b.try_into().context("a proof hash is not 32 bytes")
    };
    Ok(tongban_audit::InclusionProof {
        node: p.node.clone(),
        index: p.index,
        tree_size: p.tree_size,
        leaf_hash: hash(&p.leaf_hash)?,
        proof: p
            .proof
            .iter()
            .map(|h| hash(h))
            .collect::<anyhow::Result<_>>()?,
        checkpoint: p.checkpoint.clone(),
    })
}

/// Checks a proof offline; returns a printable verdict and whether it holds.
pub fn check_proof(p: &pb::InclusionProof, keyring: &Keyring) -> (String, bool) {
    let verdict = proof_from_proto(p).and_then(|proof| Ok(proof.verify(keyring)?));
    match verdict {
        Ok(cp) => (
            format!(
                "OK: entry {} (leaf {}) is in the log of node {} as signed at size {}, {} UTC (root {})",
                p.index,
                hex::encode(&p.leaf_hash),
                p.node,
                cp.size,
                short_time(cp.time),
                hex::encode(cp.root)
            ),
            true,
        ),
        Err(e) => (
            format!(
                "FAILED: the proof for entry {} of node {} does not verify: {e:#}",
                p.index, p.node
            ),
            false,
        ),
    }
}

pub async fn proof(args: ProofArgs) -> anyhow::Result<ExitCode> {
    let keyring = read_keyring(&args.keys)?;
    let mut client = args.admin.client().await?;
    let proof = client
        .get_inclusion_proof(args.admin.request(InclusionProofRequest {
            admin: args.admin.context(),
            node: args.node.clone(),
            index: args.index,
        }))
        .await
        .map_err(|s| anyhow::anyhow!("{}", render::status_text(&s)))?
        .into_inner();
    if proof.node != args.node || proof.index != args.index {
        println!(
            "FAILED: asked for {}#{}, the exchange proved {}#{}",
            args.node, args.index, proof.node, proof.index
        );
        return Ok(ExitCode::FAILURE);
    }
    println!("Checkpoint:\n{}", proof.checkpoint.trim_end());
    println!(
        "Audit path: {} hashes from entry {} to the root of size {}",
        proof.proof.len(),
        proof.index,
        proof.tree_size
    );
    let (text, ok) = check_proof(&proof, &keyring);
    println!("{text}");
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn checkpoints(args: CheckpointsArgs) -> anyhow::Result<ExitCode> {
    let keyring = if args.keys.is_empty() {
        None
    } else {
        Some(read_keyring(&args.keys)?)
    };
    let mut client = args.admin.client().await?;
    let response = client
        .list_checkpoints(args.admin.request(ListCheckpointsRequest {
            admin: args.admin.context(),
        }))
        .await
        .map_err(|s| anyhow::anyhow!("{}", render::status_text(&s)))?
        .into_inner();
    let mut all_ok = true;
    for cp in &response.checkpoints {
        let status = match &keyring {
            None => "signature not checked (no --log-key)".to_owned(),
            Some(k) => match tongban_audit::Checkpoint::open(
                &cp.checkpoint,
                k,
                &tongban_audit::origin_for_node(&cp.node),
            ) {
                Ok(c) if c.size == cp.tree_size => {
                    format!("signature OK, signed {} UTC", short_time(c.time))
                }
                Ok(c) => {
                    all_ok = false;
                    format!(
                        "FAILED: listed as size {} but signed for {}",
                        cp.tree_size, c.size
                    )
                }
                Err(e) => {
                    all_ok = false;
                    format!("FAILED: {e}")
                }
            },
        };
        println!("node {}: size {} — {status}", cp.node, cp.tree_size);
    }
    if response.checkpoints.is_empty() {
        println!("no node has signed a checkpoint yet");
    }
    if let Some(path) = &args.save {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        for cp in &response.checkpoints {
            let note = cp.checkpoint.trim_end();
            writeln!(file, "{note}\n")?;
        }
        file.sync_all()?;
        println!(
            "{} checkpoints appended to {} (pass it to `tongban audit verify --checkpoint`)",
            response.checkpoints.len(),
            path.display()
        );
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Opens a store directly: a postgres:// URL or an existing SQLite file.
pub async fn open_store(args: &StoreArgs) -> anyhow::Result<Arc<dyn AuditStore>> {
    if args.store.starts_with("postgres://") || args.store.starts_with("postgresql://") {
        let store = PostgresStore::connect(&args.store, args.schema.as_deref())
            .await
            .context("connecting to the PostgreSQL audit store")?;
        Ok(Arc::new(store))
    } else {
        let path = Path::new(args.store.strip_prefix("sqlite://").unwrap_or(&args.store));
        // Opening creates missing files: a typo must not verify an empty log.
        if !path.is_file() {
            bail!("no audit store at {}", path.display());
        }
        let store = SqliteStore::open(path)
            .await
            .with_context(|| format!("opening the audit store {}", path.display()))?;
        Ok(Arc::new(store))
    }
}

/// Reports progress on stderr at most once a second and at each 10 %.
struct ProgressPrinter {
    last: Instant,
    last_tenth: u64,
    node: String,
}

impl ProgressPrinter {
    fn observe(&mut self, p: Progress<'_>) {
        if p.node != self.node {
            self.node = p.node.to_owned();
            self.last_tenth = 0;
        }
        let tenth = p
            .checked
            .saturating_mul(10)
            .checked_div(p.total)
            .unwrap_or(10);
        if tenth > self.last_tenth || self.last.elapsed() >= Duration::from_secs(1) {
            self.last_tenth = tenth;
            self.last = Instant::now();
            let pct = p
                .checked
                .saturating_mul(100)
                .checked_div(p.total)
                .unwrap_or(100);
            eprintln!(
                "verifying node {}: {}/{} entries ({pct}%)",
                p.node, p.checked, p.total
            );
        }
    }
}

/// The human report of a verification.
pub fn verify_report_text(report: &VerifyReport) -> String {
    let mut out = String::new();
    for n in &report.nodes {
        out.push_str(&format!(
            "node {}: entries {}..{} ({} checked), {} checkpoints checked, latest signed size {}, root {}\n",
            n.node,
            n.first_index,
            n.tree_size,
            n.entries_checked,
            n.checkpoints_checked,
            n.latest_signed_size,
            n.root.as_deref().unwrap_or("not rebuilt")
        ));
    }
    if report.nodes.is_empty() {
        out.push_str("the store holds no audit log\n");
    }
    for f in &report.findings {
        out.push_str(&format!("{f}\n"));
    }
    let errors = report.errors().count();
    if report.is_ok() {
        out.push_str(
            "OK: every entry, subtree hash and checkpoint verifies against the pinned keys\n",
        );
    } else {
        out.push_str(&format!("FAILED: {errors} error finding(s)\n"));
    }
    out
}

/// What `verify` found about one node's witness cosignatures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WitnessCheck {
    pub node: String,
    /// Size of the latest checkpoint (`None`: the node has none).
    pub tree_size: Option<u64>,
    /// Witnesses whose valid cosignature it carries.
    pub cosigned_by: Vec<String>,
    /// Why the quorum is not met (`None`: it is).
    pub error: Option<String>,
}

/// Checks that each node's latest checkpoint carries `quorum` of `keys`'
/// cosignatures. The checkpoints themselves are verified by `verify`.
pub async fn check_witnesses(
    store: &dyn AuditStore,
    nodes: &[String],
    keys: &[tongban_audit::WitnessKey],
    quorum: usize,
) -> anyhow::Result<Vec<WitnessCheck>> {
    let mut out = Vec::new();
    for node in nodes {
        let Some(cp) = store.latest_checkpoint(node).await? else {
            out.push(WitnessCheck {
                node: node.clone(),
                tree_size: None,
                cosigned_by: Vec::new(),
                error: None,
            });
            continue;
        };
        let (cosigned_by, error) = match tongban_audit::verify_cosignatures(&cp.note, keys, quorum)
        {
            Ok(valid) => (valid.into_iter().map(|c| c.name).collect(), None),
            Err(e) => {
                // What is valid, for the report, when the quorum is not met.
                let valid = tongban_audit::verify_cosignatures(&cp.note, keys, 0)
                    .map(|v| v.into_iter().map(|c| c.name).collect())
                    .unwrap_or_default();
                (valid, Some(e.to_string()))
            }
        };
        out.push(WitnessCheck {
            node: node.clone(),
            tree_size: Some(cp.tree_size),
            cosigned_by,
            error,
        });
    }
    Ok(out)
}

/// The human lines of the witness checks.
pub fn witness_report_text(checks: &[WitnessCheck], quorum: usize, keys: usize) -> String {
    let mut out = String::new();
    for c in checks {
        match (&c.tree_size, &c.error) {
            (None, _) => out.push_str(&format!(
                "node {}: no checkpoint yet, nothing for witnesses to cosign\n",
                c.node
            )),
            (Some(size), None) => out.push_str(&format!(
                "node {}: latest checkpoint (size {size}) cosigned by {} ({quorum} of {keys} required)\n",
                c.node,
                if c.cosigned_by.is_empty() {
                    "no witness".to_string()
                } else {
                    c.cosigned_by.join(", ")
                }
            )),
            (Some(size), Some(e)) => out.push_str(&format!(
                "FAILED: node {}: latest checkpoint (size {size}): {e}\n",
                c.node
            )),
        }
    }
    out
}

pub async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let keyring = read_keyring(&args.keys)?;
    let witness_keys = crate::witness::witness_keys(&args.witness_keys)?;
    let quorum = args.witness_quorum.unwrap_or(witness_keys.len());
    if quorum > witness_keys.len() {
        bail!(
            "--witness-quorum {quorum} exceeds the {} distinct witness keys given",
            witness_keys.len()
        );
    }
    let mut external = Vec::new();
    for path in &args.checkpoint {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading checkpoints {}", path.display()))?;
        external.extend(tongban_audit::verify::split_checkpoint_notes(&text));
    }
    let store = open_store(&args.store).await?;
    let options = VerifyOptions {
        external_checkpoints: external,
        nodes: (!args.node.is_empty()).then(|| args.node.clone()),
        page_size: 0,
    };
    let mut printer = ProgressPrinter {
        last: Instant::now(),
        last_tenth: 0,
        node: String::new(),
    };
    let report = tongban_audit::verify(store.as_ref(), &keyring, &options, &mut |p| {
        printer.observe(p)
    })
    .await?;
    let checks = if witness_keys.is_empty() {
        Vec::new()
    } else {
        let nodes: Vec<String> = report.nodes.iter().map(|n| n.node.clone()).collect();
        check_witnesses(store.as_ref(), &nodes, &witness_keys, quorum).await?
    };
    let witnesses_ok = checks.iter().all(|c| c.error.is_none());
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "ok": report.is_ok() && witnesses_ok, "nodes": report.nodes, "findings": report.findings, "witnesses": checks })
        );
    } else {
        print!("{}", verify_report_text(&report));
        print!(
            "{}",
            witness_report_text(&checks, quorum, witness_keys.len())
        );
    }
    Ok(if report.is_ok() && witnesses_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Where `prune` finds the node's log and key.
struct PruneTarget {
    store: StoreArgs,
    node: String,
    signing_key: PathBuf,
}

fn prune_target(args: &PruneArgs) -> anyhow::Result<PruneTarget> {
    if let Some(path) = &args.config {
        let config = tongban_exchange::config::ExchangeConfig::load(path)?;
        return Ok(PruneTarget {
            store: StoreArgs {
                store: config.audit.store.clone(),
                schema: config.audit.postgres_schema.clone(),
            },
            node: config.node.clone(),
            signing_key: config.audit.signing_key.clone(),
        });
    }
    // clap requires all three without --config.
    let (Some(store), Some(node), Some(signing_key)) = (&args.store, &args.node, &args.signing_key)
    else {
        bail!("give --config, or --store, --node and --signing-key");
    };
    Ok(PruneTarget {
        store: StoreArgs {
            store: store.clone(),
            schema: args.schema.clone(),
        },
        node: node.clone(),
        signing_key: signing_key.clone(),
    })
}

/// Prunes one stopped node's log as its writer would: takes the node's
/// writer lease, appends a signed prune record, deletes, signs a final
/// checkpoint and releases the lease.
pub async fn prune(args: PruneArgs) -> anyhow::Result<ExitCode> {
    let days = i64::from(args.older_than_days);
    if days < tongban_audit::MIN_RETENTION_DAYS && !args.force {
        bail!(
            "refusing to prune entries younger than {} days (Cybersecurity Law art. 21 requires keeping logs at least six months); pass --force to override",
            tongban_audit::MIN_RETENTION_DAYS
        );
    }
    let request = tongban_audit::PruneRequest {
        older_than_days: args.older_than_days,
        force: args.force,
        operator: args.operator.clone(),
        reason: args.reason.clone(),
        now: Utc::now(),
    };
    request.check()?;
    let target = prune_target(&args)?;
    let node = target.node.as_str();
    let store = open_store(&target.store).await?;
    // Opening the log would register a mistyped node as a new, empty one.
    if !store.list_nodes().await?.iter().any(|n| n == node) {
        bail!("the store holds no audit log of node {node}");
    }
    let signer =
        LogSigner::load(&target.signing_key, &origin_for_node(node)).with_context(|| {
            format!(
                "loading the signing key of node {node} from {}",
                target.signing_key.display()
            )
        })?;
    let mut config = AuditConfig::new(node);
    // A running node holds its lease for good: fail at once, do not wait.
    config.lock_wait = Duration::ZERO;
    let log = match AuditLog::open(store, signer, config).await {
        Ok(log) => log,
        Err(AuditError::Store(StoreError::NodeLocked { .. })) => {
            bail!("node {node} is running; its own retention sweep prunes it, or stop it first")
        }
        Err(e) => return Err(e).context(format!("opening the audit log of node {node}")),
    };
    let pruned = log.prune(request).await;
    // Sign whatever was written and release the lease, also after a failure.
    let closed = log.shutdown().await;
    let report = pruned?;
    closed?;
    println!("cutoff: entries before {} UTC", short_time(report.cutoff));
    match report.record_index {
        None => println!("nothing to prune"),
        Some(record) => println!(
            "node {node}: {} entries deleted; entries from index {} on remain (checkpoints and subtree hashes kept); prune record at entry {record}",
            report.deleted, report.pruned_before
        ),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_parse_by_name_or_number() {
        assert_eq!(parse_code("PERMISSION_DENIED"), Ok(7));
        assert_eq!(parse_code("permission-denied"), Ok(7));
        assert_eq!(parse_code("14"), Ok(14));
        assert_eq!(parse_code("OK"), Ok(0));
        assert!(parse_code("17").is_err());
        assert!(parse_code("DENIED").is_err());
        assert_eq!(code_name(5), "NOT_FOUND");
        assert_eq!(code_name(99), "?");
    }

    #[test]
    fn times_parse_as_rfc3339_or_dates() {
        assert_eq!(
            parse_time("2026-11-26T08:00:00+08:00").unwrap(),
            parse_time("2026-11-26T00:00:00Z").unwrap()
        );
        assert_eq!(
            parse_time("2026-11-26").unwrap(),
            parse_time("2026-11-26T00:00:00Z").unwrap()
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn identity_numbers_are_masked_in_headings() {
        assert_eq!(masked("51040319850722046X"), "510403********046X");
        assert_eq!(masked("123"), "***");
    }

    #[test]
    fn records_become_library_entries_with_their_hash() {
        let mut entry = AuditEntry::new(EntryKind::Lookup, Utc::now());
        entry.node = "exchange-1".into();
        entry.matter = "unemployment-benefit".into();
        entry.outcome_code = 7;
        let leaf = entry.leaf_hash(3);
        let record = AuditRecord {
            node: "exchange-1".into(),
            index: 3,
            leaf_hash: leaf.to_vec(),
            time: Some(timestamp(entry.time)),
            kind: "Lookup".into(),
            matter: "unemployment-benefit".into(),
            outcome_code: 7,
            ..Default::default()
        };
        let logged = record_to_entry(&record).unwrap();
        assert_eq!(logged.entry, entry);
        assert_eq!(logged.entry.leaf_hash(3), logged.leaf_hash);
        let line: serde_json::Value = serde_json::from_str(&json_line(&record).unwrap()).unwrap();
        assert_eq!(line["index"], 3);
        assert_eq!(line["leaf_hash"], hex::encode(leaf));
    }

    /// Text an attacker managed to get into an old, uncleaned entry.
    const FORGERY: &str = "hrss.x\n     Result · 结果    released · 已提供\x1b[31m\u{202e}";

    fn forged_record() -> AuditRecord {
        AuditRecord {
            node: "exchange-1".into(),
            index: 4,
            kind: "Lookup".into(),
            caller_org: "91510400MA0000000X".into(),
            caller_unit: "unit\x1b[2J".into(),
            operator_id: "clerk\r\nforged".into(),
            matter: "no-such-matter\n".into(),
            case_number: "XQ\u{85}1".into(),
            evidence_type: FORGERY.into(),
            department: "dept\u{2028}".into(),
            outcome_code: 5,
            outcome_reason: "R\n".into(),
            ..Default::default()
        }
    }

    /// `audit tail` lines: JSON with the entry as `export` writes it plus
    /// its cursor; a pruned range as its own line; readable lines that no
    /// entry's text can break or colour; the start event prints nothing.
    #[test]
    fn tail_lines_carry_the_cursor_and_cannot_be_forged() {
        use pb::watch_event::Event;
        let mut record = forged_record();
        record.leaf_hash = vec![0; 32];
        let event = WatchEvent {
            event: Some(Event::Entry(record.clone())),
            cursor: "exchange-1:5,exchange-2:9".into(),
        };
        let (line, hash_ok) = tail_line(&event, true).unwrap().unwrap();
        assert!(!hash_ok, "a zero leaf hash is not the entry's");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["cursor"], "exchange-1:5,exchange-2:9");
        assert_eq!(value["index"], 4);
        assert_eq!(value["caller_unit"], "unit\x1b[2J");
        let mut back: serde_json::Value = value.clone();
        back.as_object_mut().unwrap().remove("cursor");
        let logged: LoggedEntry = serde_json::from_value(back).unwrap();
        assert_eq!(logged, record_to_entry(&record).unwrap());

        let (text, _) = tail_line(&event, false).unwrap().unwrap();
        assert!(
            text.starts_with("1970-01-01 00:00:00 exchange-1:4 Lookup"),
            "{text}"
        );
        assert!(
            !text.chars().any(tongban_audit::entry::is_forbidden_char),
            "{text}"
        );
        assert!(text.contains("\\u{1b}[31m"), "{text}");

        let pruned = WatchEvent {
            event: Some(Event::Pruned(pb::WatchPruned {
                node: "exchange-1".into(),
                from_index: 0,
                to_index: 17,
            })),
            cursor: "exchange-1:17".into(),
        };
        let (line, _) = tail_line(&pruned, true).unwrap().unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["pruned"]["to_index"], 17);
        assert_eq!(value["cursor"], "exchange-1:17");
        let (text, _) = tail_line(&pruned, false).unwrap().unwrap();
        assert!(text.contains("entries 0..17 were pruned"), "{text}");

        let start = WatchEvent {
            event: None,
            cursor: "exchange-1:0".into(),
        };
        assert!(tail_line(&start, true).unwrap().is_none());
    }

    fn assert_unforgeable(text: &str, lines: usize) {
        assert!(!text.contains('\x1b'), "{text}");
        // The only control characters left are the report's own line breaks.
        assert!(
            text.chars()
                .filter(|c| tongban_audit::entry::is_forbidden_char(*c))
                .all(|c| c == '\n'),
            "{text}"
        );
        assert_eq!(text.lines().count(), lines, "{text}");
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("     Result · 结果    released")),
            "{text}"
        );
        assert!(text.contains("\\u{1b}[31m"), "{text}");
    }

    #[test]
    fn control_characters_in_entries_cannot_forge_report_lines() {
        let text = subject_report_text(
            "510403198507220465",
            &[forged_record()],
            false,
            &Catalogue::embedded(),
        );
        // Heading (4 lines), a blank line and six lines for the one access.
        assert_unforgeable(&text, 4 + 1 + 6);
        assert!(text.contains("clerk\\u{d}\\u{a}forged"), "{text}");
        let table = records_table(&[forged_record()]);
        assert_unforgeable(&table, 2);
    }

    #[test]
    fn the_subject_report_names_matter_caller_and_result() {
        let record = AuditRecord {
            node: "exchange-1".into(),
            index: 9,
            kind: "GatherItem".into(),
            caller_org: "91510400MA0000000X".into(),
            caller_unit: "dongli-community".into(),
            operator_id: "clerk-he".into(),
            matter: "unemployment-benefit".into(),
            case_number: "XQ-DL-2026-0317".into(),
            evidence_type: "hrss.unemployment".into(),
            department: "hrss".into(),
            ..Default::default()
        };
        let admin = AuditRecord {
            kind: "AdminAction".into(),
            ..Default::default()
        };
        let text = subject_report_text(
            "510403198507220465",
            &[record, admin],
            false,
            &Catalogue::embedded(),
        );
        assert!(text.contains("510403********0465"), "{text}");
        assert!(!text.contains("510403198507220465"), "{text}");
        assert!(text.contains("Accesses · 查询次数: 1"), "{text}");
        assert!(text.contains("dongli-community"), "{text}");
        assert!(text.contains("XQ-DL-2026-0317"), "{text}");
        assert!(text.contains("released"), "{text}");
        assert!(text.contains("exchange-1#9"), "{text}");
    }
}
