//! `tongban bench`: one run, one load generator, the same load, side by side:
//!
//! - (a) a department adapter called directly (plaintext) — the floor;
//! - (b) nginx `grpc_pass` in front of the same adapter — the peer, a plain
//!   proxy that checks nothing and logs nothing (skipped without nginx);
//! - (c) the exchange without TLS, policy and durable audit on, with
//!   transparency (the subject map citizens check) as by default;
//! - (c0) the same exchange with transparency off, so (c)/(c0) is what
//!   transparency costs;
//! - (d) the exchange with mutual TLS on both hops, policy and durable audit;
//! - (e) one request in flight through each of them, for latency;
//!
//! plus a `Gather` across three departments against its slowest single
//! lookup. Everything runs on 127.0.0.1 ephemeral ports from a temporary
//! directory that is removed afterwards.
//!
//! `--transparency-proof` measures something else instead (see [`proof`]):
//! the size and verification time of one person's access history proof in
//! a log of a million entries.
//!
//! On a shared machine one measurement of each path is not enough: the
//! machine's load drifts between paths measured seconds apart. So the
//! under-load measurement runs in `--rounds` interleaved rounds (round 1:
//! a, b, c, c0, d; round 2: a, b, c, c0, d; …), each proxy started afresh for each
//! round. The report shows each path's median-throughput round, every
//! round, and the ratios between paths per round with their median as the
//! headline. The one-in-flight latency runs (e) and the Gather benchmark run
//! once, in round 1.
//!
//! The exchange runs as a child process (`tongban serve`) so its peak RSS is
//! its own; the departments and the generator share the bench process.

pub mod deploy;
pub mod load;
pub mod nginx;
pub mod proof;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;
use tongban_devkit::reference::{Dept, stories};
use tongban_proto::v1::{CaseContext, GatherRequest, LookupRequest, QueryRequest, Subject};

pub use deploy::{Deployment, ExchangeRunner, PeakRss, RunningExchange, Security, Transparency};
pub use load::{Call, LoadSpec, RunStats, Target};
pub use report::{
    BenchReport, GatherReport, LookupLatency, Machine, PathReport, Ratios, RoundRatios, RoundStats,
    Settings,
};

/// The matter every benchmark request is made for: it needs evidence from
/// all three departments, so the same grant serves Lookup and Gather.
pub const MATTER: &str = "pension-qualification";
/// The evidence type of the unary benchmark.
pub const LOOKUP_EVIDENCE: &str = "police.identity";
/// The Gather's evidence, one per department.
pub const GATHER_EVIDENCE: [(&str, Dept); 3] = [
    ("police.identity", Dept::Police),
    ("civil.death", Dept::Civil),
    ("hrss.pension", Dept::Hrss),
];

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("setting up: {0}")]
    Setup(String),
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    #[error("exchange: {0}")]
    Exchange(String),
    #[error("nginx: {0}")]
    Nginx(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Rounds(#[from] RoundsError),
}

impl BenchError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// One of the compared paths, in the order each round measures them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathId {
    /// Directly against a department adapter, plaintext.
    A,
    /// nginx grpc_pass in front of the same adapter.
    B,
    /// The exchange, plaintext, policy and durable audit on, transparency on.
    C,
    /// The exchange, plaintext, policy and durable audit on, transparency off.
    #[value(name = "c0")]
    C0,
    /// The exchange, mutual TLS on both hops, policy and durable audit on.
    D,
}

impl PathId {
    pub const ALL: [Self; 5] = [Self::A, Self::B, Self::C, Self::C0, Self::D];

    /// The path's name in tables and `--only`: `a`, `b`, `c`, `c0`, `d`.
    pub fn letter(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
            Self::C => "c",
            Self::C0 => "c0",
            Self::D => "d",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::A => "direct adapter (plaintext)",
            Self::B => "nginx grpc_pass -> adapter",
            Self::C => "exchange plaintext, transparency on",
            Self::C0 => "exchange plaintext, transparency off",
            Self::D => "exchange mTLS both hops, policy+audit",
        }
    }

    /// The exchange node this path runs through, if any.
    fn exchange(self) -> Option<(Security, Transparency)> {
        match self {
            Self::A | Self::B => None,
            Self::C => Some((Security::Plaintext, Transparency::On)),
            Self::C0 => Some((Security::Plaintext, Transparency::Off)),
            Self::D => Some((Security::MutualTls, Transparency::On)),
        }
    }
}

/// `tongban bench`: measure the paths side by side.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Measuring time of each path under load (e.g. 5s, 300ms), per round.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Interleaved rounds of the under-load measurement (every path once
    /// per round); ratios are reported per round and as their median.
    #[arg(long, default_value_t = DEFAULT_ROUNDS, value_parser = parse_rounds)]
    pub rounds: usize,
    /// Warm-up before each measurement, not counted.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// HTTP/2 connections of the load generator.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Concurrent streams per connection (requests in flight = connections × concurrency).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Only these paths (comma-separated): a direct, b nginx, c exchange
    /// plaintext, c0 the same with transparency off, d exchange mTLS.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<PathId>,
    /// Skip the one-request-in-flight latency runs (e).
    #[arg(long)]
    pub no_latency: bool,
    /// Skip the Gather benchmark.
    #[arg(long)]
    pub no_gather: bool,
    /// Departments answer from memory (one recorded answer per evidence
    /// type) instead of SQLite, so the numbers show the proxies' own cost.
    #[arg(long)]
    pub memory_departments: bool,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Run the exchange inside the bench process instead of as a child
    /// process (peak RSS then covers the generator and adapters too).
    #[arg(long)]
    pub in_process: bool,
    /// The `tongban` binary to run the exchange with (default: this one).
    #[arg(long, hide = true)]
    pub exchange_binary: Option<PathBuf>,
    /// `--transparency-proof` and its sizes.
    #[command(flatten)]
    pub proof: proof::ProofArgs,
}

impl Default for BenchArgs {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(5),
            rounds: DEFAULT_ROUNDS,
            warmup: Duration::from_secs(1),
            connections: 16,
            concurrency: 32,
            only: Vec::new(),
            no_latency: false,
            no_gather: false,
            memory_departments: false,
            json: false,
            in_process: false,
            exchange_binary: None,
            proof: proof::ProofArgs::default(),
        }
    }
}

/// Rounds when `--rounds` is not given: the least that has a median.
pub const DEFAULT_ROUNDS: usize = 3;
/// More rounds than anyone waits for is a typo.
const MAX_ROUNDS: usize = 1000;

/// A `--rounds` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoundsError {
    #[error("{0:?} is not a number of rounds")]
    NotANumber(String),
    #[error("--rounds must be between 1 and {max}, not {0}", max = MAX_ROUNDS)]
    OutOfRange(usize),
}

/// A number of rounds: 1 to [`MAX_ROUNDS`].
pub fn parse_rounds(text: &str) -> Result<usize, RoundsError> {
    let rounds: usize = text
        .trim()
        .parse()
        .map_err(|_| RoundsError::NotANumber(text.to_owned()))?;
    check_rounds(rounds)?;
    Ok(rounds)
}

fn check_rounds(rounds: usize) -> Result<(), RoundsError> {
    if (1..=MAX_ROUNDS).contains(&rounds) {
        Ok(())
    } else {
        Err(RoundsError::OutOfRange(rounds))
    }
}

/// A duration argument that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration like 5s or 300ms")]
    NotADuration(String),
    #[error("{0:?} must be between 0 and 1 hour")]
    OutOfRange(String),
}

/// `5s`, `300ms`, `1.5s`, `2m`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| DurationError::NotADuration(text.to_owned()))?;
    if !value.is_finite() || value < 0.0 || value * scale > 3600.0 {
        return Err(DurationError::OutOfRange(text.to_owned()));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// What `tongban bench` measured: the paths, or the transparency proof.
#[derive(Debug, Clone)]
pub enum BenchOutcome {
    Paths(Box<BenchReport>),
    Proof(Box<proof::ProofReport>),
}

impl BenchOutcome {
    /// Failed calls over every run (a proof that does not verify is an
    /// error, not a count).
    pub fn total_errors(&self) -> u64 {
        match self {
            Self::Paths(r) => r.total_errors(),
            Self::Proof(_) => 0,
        }
    }
}

/// Runs the benchmark and prints the table (or JSON) on stdout; progress
/// goes to stderr.
pub async fn bench(args: BenchArgs) -> Result<BenchOutcome, BenchError> {
    let json = args.json;
    let (outcome, text) = if args.proof.transparency_proof {
        let report = proof::run(&args.proof, json).await?;
        let text = if json {
            to_json(&report)?
        } else {
            report.render()
        };
        (BenchOutcome::Proof(Box::new(report)), text)
    } else {
        let report = run(args).await?;
        let text = if json {
            to_json(&report)?
        } else {
            report.render()
        };
        (BenchOutcome::Paths(Box::new(report)), text)
    };
    if json {
        println!("{text}");
    } else {
        print!("{text}");
    }
    Ok(outcome)
}

fn to_json(value: &impl Serialize) -> Result<String, BenchError> {
    serde_json::to_string_pretty(value).map_err(|e| BenchError::Invalid(format!("JSON: {e}")))
}

fn case() -> CaseContext {
    CaseContext {
        matter: MATTER.into(),
        case_number: "BENCH-2026-000001".into(),
        operator_id: "bench-clerk".into(),
    }
}

fn subject() -> Subject {
    let who = stories::CERTIFIED_RETIREE;
    Subject {
        id_number: who.id_number.into(),
        name: who.name.into(),
        ..Default::default()
    }
}

/// Everyone the reference departments hold, in a fixed order: loads ask
/// about all of them in turn, as a city's service points would, so the
/// audit log's subject map changes many leaves per checkpoint, not one.
pub(crate) fn people() -> &'static [Subject] {
    static PEOPLE: std::sync::OnceLock<Vec<Subject>> = std::sync::OnceLock::new();
    PEOPLE.get_or_init(|| {
        let today = chrono::Utc::now().date_naive();
        tongban_devkit::reference::population::Population::reference(today)
            .residents
            .iter()
            .map(|r| Subject {
                id_number: r.id.as_str().to_owned(),
                name: r.name.clone(),
                ..Default::default()
            })
            .collect()
    })
}

/// One lookup of `evidence_type` per person of [`people`].
fn lookups(evidence_type: &str) -> Vec<Call> {
    people()
        .iter()
        .map(|who| {
            Call::Lookup(LookupRequest {
                case: Some(case()),
                subject: Some(who.clone()),
                evidence_type: evidence_type.into(),
                fields: None,
            })
        })
        .collect()
}

fn lookup(evidence_type: &str) -> Call {
    Call::Lookup(LookupRequest {
        case: Some(case()),
        subject: Some(subject()),
        evidence_type: evidence_type.into(),
        fields: None,
    })
}

/// What the exchange itself would send the adapter for [`lookup`].
pub(crate) fn query_request(requester: String, evidence_type: &str) -> QueryRequest {
    QueryRequest {
        case: Some(case()),
        subject: Some(subject()),
        evidence_type: evidence_type.into(),
        fields: None,
        requester,
        ..Default::default()
    }
}

/// What the exchange would send the adapter for [`lookups`]: the same
/// people, for the paths without an exchange.
fn queries(requester: &str, evidence_type: &str) -> Vec<Call> {
    people()
        .iter()
        .map(|who| {
            let mut request = query_request(requester.to_owned(), evidence_type);
            request.subject = Some(who.clone());
            Call::Query(request)
        })
        .collect()
}

fn gather() -> Call {
    Call::Gather(GatherRequest {
        case: Some(case()),
        subject: Some(subject()),
        evidence_types: GATHER_EVIDENCE.iter().map(|(e, _)| (*e).into()).collect(),
        ..Default::default()
    })
}

pub(crate) fn progress(quiet: bool, line: &str) {
    if !quiet {
        eprintln!("bench: {line}");
    }
}

fn selected(args: &BenchArgs) -> Vec<PathId> {
    let mut paths = if args.only.is_empty() {
        PathId::ALL.to_vec()
    } else {
        args.only.clone()
    };
    paths.sort();
    paths.dedup();
    paths
}

/// Runs the benchmark and returns the report (prints only progress).
pub async fn run(args: BenchArgs) -> Result<BenchReport, BenchError> {
    check_rounds(args.rounds)?;
    let paths = selected(&args);
    let runner = if args.in_process {
        ExchangeRunner::InProcess
    } else {
        match &args.exchange_binary {
            Some(p) => ExchangeRunner::Process(p.clone()),
            None => ExchangeRunner::Process(
                std::env::current_exe()
                    .map_err(|e| BenchError::io("finding the tongban binary", e))?,
            ),
        }
    };
    let load_spec = LoadSpec {
        connections: args.connections,
        concurrency: args.concurrency,
        warmup: args.warmup,
        duration: args.duration,
    };
    // Latency runs are light; half the time gives thousands of samples.
    let single_spec = LoadSpec::single(args.warmup / 2, args.duration / 2);
    let quiet = args.json;
    let mut report = BenchReport::new(Settings::new(&args, &runner, load_spec, single_spec));

    progress(quiet, "seeding the reference departments and a dev PKI");
    let deployment = Deployment::start(args.memory_departments).await?;
    let police = deployment.plain_adapter(Dept::Police)?;
    let result = run_paths(
        &args,
        &paths,
        &runner,
        &deployment,
        police,
        load_spec,
        single_spec,
        &mut report,
    )
    .await;
    deployment.shutdown().await;
    result?;
    report.finish();
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn run_paths(
    args: &BenchArgs,
    paths: &[PathId],
    runner: &ExchangeRunner,
    deployment: &Deployment,
    police: std::net::SocketAddr,
    load_spec: LoadSpec,
    single_spec: LoadSpec,
    report: &mut BenchReport,
) -> Result<(), BenchError> {
    let quiet = args.json;
    let nginx_binary = if paths.contains(&PathId::B) {
        nginx::find()
    } else {
        None
    };
    let mut entries: Vec<PathReport> = paths.iter().map(|&p| PathReport::new(p)).collect();
    for entry in &mut entries {
        if entry.path == PathId::B && nginx_binary.is_none() {
            let why = "nginx is not installed (apt-get install -y nginx); path (b) skipped";
            progress(quiet, why);
            entry.skipped = Some(why.into());
        }
    }
    for round in 1..=args.rounds {
        for entry in entries.iter_mut().filter(|e| e.skipped.is_none()) {
            let round = Round {
                number: round,
                of: args.rounds,
            };
            run_path_round(
                args,
                round,
                runner,
                deployment,
                police,
                nginx_binary.as_deref(),
                load_spec,
                single_spec,
                entry,
                report,
            )
            .await?;
        }
    }
    report.paths.extend(entries);
    Ok(())
}

/// Which round of how many.
#[derive(Debug, Clone, Copy)]
struct Round {
    number: usize,
    of: usize,
}

impl Round {
    /// Latency (e) and Gather run once, in the first round.
    fn first(self) -> bool {
        self.number == 1
    }

    /// The progress line's prefix.
    fn prefix(self) -> String {
        if self.of > 1 {
            format!("round {}/{}: ", self.number, self.of)
        } else {
            String::new()
        }
    }
}

/// One round of one path: starts its proxy (if any), measures, stops it,
/// and adds the round to `entry`.
#[allow(clippy::too_many_arguments)]
async fn run_path_round(
    args: &BenchArgs,
    round: Round,
    runner: &ExchangeRunner,
    deployment: &Deployment,
    police: std::net::SocketAddr,
    nginx_binary: Option<&std::path::Path>,
    load_spec: LoadSpec,
    single_spec: LoadSpec,
    entry: &mut PathReport,
    report: &mut BenchReport,
) -> Result<(), BenchError> {
    let path = entry.path;
    let mut nginx = None;
    let mut exchange = None;
    let (target, calls) = match path {
        PathId::A => (
            Target::plaintext(police),
            queries(&deployment.requester(), LOOKUP_EVIDENCE),
        ),
        PathId::B => {
            let binary = nginx_binary.ok_or_else(|| {
                BenchError::Nginx("path (b) is measured only with nginx installed".into())
            })?;
            // The same directory every round: nginx rewrites its
            // configuration and removes its pid file when it stops.
            let n = nginx::Nginx::start(binary, &deployment.dir().join("nginx"), police).await?;
            let target = Target::plaintext(n.addr);
            nginx = Some(n);
            (target, queries(&deployment.requester(), LOOKUP_EVIDENCE))
        }
        PathId::C | PathId::C0 | PathId::D => {
            let Some((security, transparency)) = path.exchange() else {
                return Err(BenchError::Invalid(format!(
                    "path ({}) has no exchange",
                    path.letter()
                )));
            };
            // A directory of its own for every start: see `Deployment::start_exchange`.
            let x = deployment
                .start_exchange(security, transparency, runner)
                .await?;
            let target = match deployment.exchange_target(security, x.addr) {
                Ok(t) => t,
                Err(e) => {
                    let _ = x.stop().await;
                    return Err(e);
                }
            };
            exchange = Some(x);
            (target, lookups(LOOKUP_EVIDENCE))
        }
    };
    let proxy_pids = match (&exchange, &nginx) {
        (Some(x), _) => x.pids(),
        (_, Some(n)) => n.pids(),
        _ => Vec::new(),
    };
    let measured = measure_path(
        args,
        path,
        round,
        &target,
        &calls,
        proxy_pids,
        load_spec,
        single_spec,
        entry,
        report,
    )
    .await;
    let peak_rss = match (&exchange, &nginx) {
        (Some(x), _) => x.peak_rss(),
        (_, Some(n)) => n.peak_rss(),
        _ => None,
    };
    if let Some(n) = nginx {
        if let Ok(stats) = &measured
            && stats.errors > 0
        {
            // nginx's own account of what failed (502s name the upstream error).
            progress(
                args.json,
                &format!(
                    "({}) nginx error log: {}",
                    path.letter(),
                    n.error_log_tail()
                ),
            );
        }
        n.stop().await;
    }
    let stopped = match exchange {
        Some(x) => x.stop().await,
        None => Ok(()),
    };
    let mut stats = measured?;
    stopped?;
    stats.peak_rss = peak_rss;
    entry.rounds.push(stats);
    Ok(())
}

/// The under-load run of one path in one round and, in the first round,
/// its latency (e) and Gather runs.
#[allow(clippy::too_many_arguments)]
async fn measure_path(
    args: &BenchArgs,
    path: PathId,
    round: Round,
    target: &Target,
    calls: &[Call],
    proxy_pids: Vec<String>,
    load_spec: LoadSpec,
    single_spec: LoadSpec,
    entry: &mut PathReport,
    report: &mut BenchReport,
) -> Result<RoundStats, BenchError> {
    let quiet = args.json;
    let letter = path.letter();
    let prefix = round.prefix();
    progress(
        quiet,
        &format!(
            "{prefix}({letter}) {}: {} connections × {} streams, {:?} + {:?} warm-up",
            path.title(),
            load_spec.connections,
            load_spec.concurrency,
            load_spec.duration,
            load_spec.warmup
        ),
    );
    let cpu = tokio::spawn(cpu_in_window(proxy_pids, load_spec));
    let load = load::run(target, calls, load_spec).await?;
    let (mut proxy_cpu, mut bench_cpu) = (None, None);
    if let Ok(Some((proxy, bench))) = cpu.await
        && load.requests > 0
    {
        let per_request = |d: std::time::Duration| d.as_secs_f64() * 1e6 / load.requests as f64;
        proxy_cpu = proxy.map(per_request);
        bench_cpu = Some(per_request(bench));
    }
    let stats = RoundStats::new(round.number, load, proxy_cpu, bench_cpu);
    if !round.first() {
        return Ok(stats);
    }
    if !args.no_latency {
        progress(
            quiet,
            &format!("{prefix}(e) one request in flight through ({letter})"),
        );
        entry.single = Some(load::run(target, calls, single_spec).await?);
    }
    if !args.no_gather && matches!(path, PathId::C | PathId::D) {
        progress(
            quiet,
            &format!("{prefix}Gather across three departments through ({letter}), one in flight"),
        );
        let mut lookups = Vec::new();
        for (evidence, _) in GATHER_EVIDENCE {
            let stats = load::run(target, &[lookup(evidence)], single_spec).await?;
            lookups.push(LookupLatency {
                evidence_type: evidence.into(),
                stats,
            });
        }
        let gather = load::run(target, &[gather()], single_spec).await?;
        report.gather.push(GatherReport::new(path, lookups, gather));
    }
    Ok(stats)
}

/// CPU time spent in the measuring window by the proxy's processes (if it
/// has its own) and by the bench process (generator and departments).
async fn cpu_in_window(
    proxy_pids: Vec<String>,
    spec: LoadSpec,
) -> Option<(Option<Duration>, Duration)> {
    let sample =
        |pids: &[String]| -> Option<Duration> { pids.iter().map(|p| deploy::cpu_time(p)).sum() };
    tokio::time::sleep(spec.warmup).await;
    let proxy_start = sample(&proxy_pids);
    let bench_start = deploy::cpu_time("self")?;
    tokio::time::sleep(spec.duration).await;
    let proxy_end = sample(&proxy_pids);
    let bench_end = deploy::cpu_time("self")?;
    let proxy = match (proxy_start, proxy_end) {
        (Some(a), Some(b)) if !proxy_pids.is_empty() => Some(b.saturating_sub(a)),
        _ => None,
    };
    Some((proxy, bench_end.saturating_sub(bench_start)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("2h").is_err());
    }

    #[test]
    fn flags_parse_and_default() {
        let cli = Cli::parse_from(["bench"]);
        assert_eq!(cli.bench.duration, Duration::from_secs(5));
        assert_eq!((cli.bench.connections, cli.bench.concurrency), (16, 32));
        assert_eq!(selected(&cli.bench), PathId::ALL.to_vec());
        let cli = Cli::parse_from([
            "bench",
            "--only",
            "d,a,c",
            "--duration",
            "300ms",
            "--warmup",
            "0s",
            "--json",
        ]);
        assert_eq!(selected(&cli.bench), vec![PathId::A, PathId::C, PathId::D]);
        assert_eq!(cli.bench.duration, Duration::from_millis(300));
        assert!(cli.bench.json);
        assert!(Cli::try_parse_from(["bench", "--only", "x"]).is_err());
    }

    #[test]
    fn c0_is_a_path_of_its_own_between_c_and_d() {
        let cli = Cli::parse_from(["bench", "--only", "c0,c"]);
        assert_eq!(selected(&cli.bench), vec![PathId::C, PathId::C0]);
        let all = selected(&Cli::parse_from(["bench"]).bench);
        assert_eq!(
            all.iter().map(|p| p.letter()).collect::<Vec<_>>(),
            ["a", "b", "c", "c0", "d"]
        );
        assert_eq!(
            PathId::C.exchange(),
            Some((Security::Plaintext, Transparency::On))
        );
        assert_eq!(
            PathId::C0.exchange(),
            Some((Security::Plaintext, Transparency::Off))
        );
        assert_eq!(
            PathId::D.exchange(),
            Some((Security::MutualTls, Transparency::On))
        );
        assert_eq!(PathId::A.exchange(), None);
        assert!(Cli::try_parse_from(["bench", "--only", "c1"]).is_err());
        assert_eq!(serde_json::to_value(PathId::C0).unwrap(), "c0");
    }

    #[test]
    fn proof_flags_parse_and_default() {
        let cli = Cli::parse_from(["bench"]);
        assert!(!cli.bench.proof.transparency_proof);
        assert_eq!(cli.bench.proof.proof_entries, 1_000_000);
        assert_eq!(cli.bench.proof.proof_people, 100_000);
        assert_eq!(cli.bench.proof.proof_accesses, 100);
        assert_eq!(cli.bench.proof.proof_runs, 200);
        let cli = Cli::parse_from([
            "bench",
            "--transparency-proof",
            "--proof-entries",
            "5000",
            "--proof-accesses=20",
        ]);
        assert!(cli.bench.proof.transparency_proof);
        assert_eq!(
            (
                cli.bench.proof.proof_entries,
                cli.bench.proof.proof_accesses
            ),
            (5000, 20)
        );
        assert!(Cli::try_parse_from(["bench", "--proof-accesses", "501"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--proof-accesses", "0"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--proof-people", "1"]).is_err());
    }

    #[test]
    fn rounds_parse_default_to_three_and_refuse_zero() {
        assert_eq!(Cli::parse_from(["bench"]).bench.rounds, 3);
        assert_eq!(BenchArgs::default().rounds, 3);
        assert_eq!(Cli::parse_from(["bench", "--rounds", "5"]).bench.rounds, 5);
        assert_eq!(Cli::parse_from(["bench", "--rounds=1"]).bench.rounds, 1);
        let zero = Cli::try_parse_from(["bench", "--rounds", "0"])
            .unwrap_err()
            .to_string();
        assert!(zero.contains("--rounds must be between 1 and"), "{zero}");
        assert!(Cli::try_parse_from(["bench", "--rounds", "-1"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--rounds", "three"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--rounds", "1001"]).is_err());
    }

    #[tokio::test]
    async fn zero_rounds_fail_before_anything_starts() {
        let args = BenchArgs {
            rounds: 0,
            json: true,
            ..BenchArgs::default()
        };
        match run(args).await {
            Err(e @ BenchError::Rounds(RoundsError::OutOfRange(0))) => {
                assert!(e.to_string().contains("--rounds"), "{e}")
            }
            other => panic!("expected Rounds, got {other:?}"),
        }
    }

    #[test]
    fn a_round_is_first_only_once_and_prefixed_only_among_many() {
        let one = Round { number: 1, of: 1 };
        assert!(one.first() && one.prefix().is_empty());
        let second = Round { number: 2, of: 3 };
        assert!(!second.first());
        assert_eq!(second.prefix(), "round 2/3: ");
    }
}
