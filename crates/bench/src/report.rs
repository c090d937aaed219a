//! The benchmark's result: a readable table, or JSON for machines.
//!
//! The under-load measurement is repeated in interleaved rounds (every path
//! once per round, in the same order). Each path's headline numbers are those
//! of its median-throughput round, and each throughput ratio is the median of
//! the ratios measured within the same round: paths measured seconds apart
//! share the machine's mood, rounds minutes apart need not.

use std::fmt::Write as _;

use serde::Serialize;

use crate::deploy::{ExchangeRunner, PeakRss};
use crate::load::{LoadSpec, RunStats};
use crate::{BenchArgs, PathId};

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub machine: Machine,
    pub settings: Settings,
    pub paths: Vec<PathReport>,
    pub ratios: Ratios,
    pub gather: Vec<GatherReport>,
}

/// The machine, as far as it matters for the numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: Option<String>,
    pub memory_mib: Option<u64>,
    /// 1-minute load average before and after the run (others' work shows here).
    pub load_average_before: Option<f64>,
    pub load_average_after: Option<f64>,
}

impl Machine {
    pub(crate) fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|v| v.split_once(':'))
                .map(|(_, v)| v.trim().to_owned()),
            memory_mib: crate::deploy::parse_status_kib(&meminfo, "MemTotal:").map(|k| k / 1024),
            load_average_before: load_average(),
            load_average_after: None,
        }
    }
}

pub(crate) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How the run was made.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Interleaved rounds of the under-load measurement.
    pub rounds: usize,
    pub connections: usize,
    pub concurrency: usize,
    pub in_flight: usize,
    pub duration_ms: u128,
    pub warmup_ms: u128,
    pub single_duration_ms: u128,
    pub single_warmup_ms: u128,
    pub exchange: String,
    /// Where the departments answer from.
    pub departments: String,
    pub matter: String,
    pub lookup_evidence: String,
    /// How many people the load asks about, each in turn.
    pub people: usize,
}

impl Settings {
    pub(crate) fn new(
        args: &BenchArgs,
        runner: &ExchangeRunner,
        load: LoadSpec,
        single: LoadSpec,
    ) -> Self {
        Self {
            rounds: args.rounds,
            connections: load.connections,
            concurrency: load.concurrency,
            in_flight: load.connections * load.concurrency,
            duration_ms: load.duration.as_millis(),
            warmup_ms: load.warmup.as_millis(),
            single_duration_ms: single.duration.as_millis(),
            single_warmup_ms: single.warmup.as_millis(),
            exchange: match runner {
                ExchangeRunner::Process(p) => format!("child process: {} serve", p.display()),
                ExchangeRunner::InProcess => "in the bench process".into(),
            },
            departments: if args.memory_departments {
                "in memory (one recorded answer per evidence type)".into()
            } else {
                "reference adapters on SQLite".into()
            },
            matter: crate::MATTER.into(),
            lookup_evidence: crate::LOOKUP_EVIDENCE.into(),
            people: crate::people().len(),
        }
    }
}

/// One path's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct PathReport {
    pub path: PathId,
    pub title: String,
    /// Why the path was not measured.
    pub skipped: Option<String>,
    /// Under load (connections × concurrency in flight): the round of
    /// `median_round`.
    pub load: Option<RunStats>,
    /// One request in flight (e), measured in round 1 only.
    pub single: Option<RunStats>,
    /// The highest peak RSS of any round.
    pub peak_rss: Option<PeakRss>,
    /// CPU time of the proxy's own processes (nginx, a child exchange) per
    /// request under load: its cost, whatever else the machine was doing.
    /// Of the `median_round`, like `load`.
    pub proxy_cpu_us_per_request: Option<f64>,
    /// CPU time of the bench process (generator and departments) per
    /// request, of the `median_round`.
    pub bench_cpu_us_per_request: Option<f64>,
    /// The round (1-based) whose throughput is the median of this path's
    /// rounds (of an even count, the lower of the middle two).
    pub median_round: Option<usize>,
    /// Median over the rounds of the proxy's CPU per request (the steadier
    /// figure on a shared machine).
    pub median_proxy_cpu_us_per_request: Option<f64>,
    /// Median over the rounds of the bench process's CPU per request.
    pub median_bench_cpu_us_per_request: Option<f64>,
    /// Every round's under-load measurement, in round order.
    pub rounds: Vec<RoundStats>,
    /// One-in-flight latency added over (a).
    pub added_p50_us: Option<f64>,
    pub added_p99_us: Option<f64>,
}

/// One round's under-load measurement of one path.
#[derive(Debug, Clone, Serialize)]
pub struct RoundStats {
    /// 1-based.
    pub round: usize,
    pub requests_per_sec: f64,
    /// CPU time of the proxy's own processes per request (none when it has
    /// no processes of its own).
    pub proxy_cpu_us_per_request: Option<f64>,
    /// CPU time of the bench process per request.
    pub bench_cpu_us_per_request: Option<f64>,
    /// Failed calls, warm-up included.
    pub errors: u64,
    /// The proxy's peak RSS after this round (its process is new each round).
    pub peak_rss: Option<PeakRss>,
    /// Everything the round's run measured.
    pub load: RunStats,
}

impl RoundStats {
    pub(crate) fn new(
        round: usize,
        load: RunStats,
        proxy_cpu_us_per_request: Option<f64>,
        bench_cpu_us_per_request: Option<f64>,
    ) -> Self {
        Self {
            round,
            requests_per_sec: load.throughput_rps,
            proxy_cpu_us_per_request,
            bench_cpu_us_per_request,
            errors: load.errors + load.warmup_errors,
            peak_rss: None,
            load,
        }
    }
}

impl PathReport {
    pub(crate) fn new(path: PathId) -> Self {
        Self {
            path,
            title: path.title().into(),
            skipped: None,
            load: None,
            single: None,
            peak_rss: None,
            proxy_cpu_us_per_request: None,
            bench_cpu_us_per_request: None,
            median_round: None,
            median_proxy_cpu_us_per_request: None,
            median_bench_cpu_us_per_request: None,
            rounds: Vec::new(),
            added_p50_us: None,
            added_p99_us: None,
        }
    }

    /// The round whose throughput is the median (the lower middle one of an
    /// even count); none without rounds.
    pub fn median_throughput_round(&self) -> Option<&RoundStats> {
        let mut sorted: Vec<&RoundStats> = self.rounds.iter().collect();
        sorted.sort_by(|x, y| x.requests_per_sec.total_cmp(&y.requests_per_sec));
        sorted.get(sorted.len().checked_sub(1)? / 2).copied()
    }

    /// The round numbered `round`.
    pub fn round(&self, round: usize) -> Option<&RoundStats> {
        self.rounds.iter().find(|r| r.round == round)
    }

    /// The headline figures from the rounds: the median-throughput round's
    /// run and CPU, the highest peak RSS, the medians of CPU per request.
    fn summarize_rounds(&mut self) {
        if let Some(m) = self.median_throughput_round() {
            let (round, load, proxy, bench) = (
                m.round,
                m.load.clone(),
                m.proxy_cpu_us_per_request,
                m.bench_cpu_us_per_request,
            );
            self.median_round = Some(round);
            self.load = Some(load);
            self.proxy_cpu_us_per_request = proxy;
            self.bench_cpu_us_per_request = bench;
        }
        if let Some(peak) = self
            .rounds
            .iter()
            .filter_map(|r| r.peak_rss.as_ref())
            .max_by(|x, y| x.mib.total_cmp(&y.mib))
        {
            self.peak_rss = Some(peak.clone());
        }
        self.median_proxy_cpu_us_per_request = median(
            self.rounds
                .iter()
                .filter_map(|r| r.proxy_cpu_us_per_request),
        );
        self.median_bench_cpu_us_per_request = median(
            self.rounds
                .iter()
                .filter_map(|r| r.bench_cpu_us_per_request),
        );
    }
}

/// Throughput ratios under the same load: each headline ratio is the median
/// of the per-round ratios (with one round, that round's ratio).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ratios {
    /// What transparency costs: (c) with it on over (c0) with it off.
    pub c_over_c0: Option<f64>,
    pub c_over_b: Option<f64>,
    pub d_over_b: Option<f64>,
    pub b_over_a: Option<f64>,
    pub c_over_a: Option<f64>,
    pub d_over_a: Option<f64>,
    /// The ratios within each round, in round order.
    pub per_round: Vec<RoundRatios>,
}

/// Throughput ratios of the paths measured in one round.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoundRatios {
    /// 1-based.
    pub round: usize,
    pub c_over_c0: Option<f64>,
    pub c_over_b: Option<f64>,
    pub d_over_b: Option<f64>,
    pub b_over_a: Option<f64>,
    pub c_over_a: Option<f64>,
    pub d_over_a: Option<f64>,
}

/// The ratios in display order: label, headline value, per-round accessor.
type RatioField = (
    &'static str,
    fn(&Ratios) -> Option<f64>,
    fn(&RoundRatios) -> Option<f64>,
);

const RATIO_FIELDS: [RatioField; 6] = [
    ("(c)/(c0)", |r| r.c_over_c0, |r| r.c_over_c0),
    ("(c)/(b)", |r| r.c_over_b, |r| r.c_over_b),
    ("(d)/(b)", |r| r.d_over_b, |r| r.d_over_b),
    ("(b)/(a)", |r| r.b_over_a, |r| r.b_over_a),
    ("(c)/(a)", |r| r.c_over_a, |r| r.c_over_a),
    ("(d)/(a)", |r| r.d_over_a, |r| r.d_over_a),
];

impl Ratios {
    /// Per-round ratios from each path's rounds, and their medians.
    fn from_paths(paths: &[PathReport]) -> Self {
        let per_round: Vec<RoundRatios> = round_numbers(paths)
            .into_iter()
            .map(|round| {
                let rps = |id: PathId| {
                    paths
                        .iter()
                        .find(|p| p.path == id)
                        .and_then(|p| p.round(round))
                        .map(|r| r.requests_per_sec)
                };
                let over = |a: Option<f64>, b: Option<f64>| a.zip(b).and_then(|(a, b)| ratio(a, b));
                let (a, b, c, c0, d) = (
                    rps(PathId::A),
                    rps(PathId::B),
                    rps(PathId::C),
                    rps(PathId::C0),
                    rps(PathId::D),
                );
                RoundRatios {
                    round,
                    c_over_c0: over(c, c0),
                    c_over_b: over(c, b),
                    d_over_b: over(d, b),
                    b_over_a: over(b, a),
                    c_over_a: over(c, a),
                    d_over_a: over(d, a),
                }
            })
            .collect();
        let median_of = |f: fn(&RoundRatios) -> Option<f64>| median(per_round.iter().filter_map(f));
        Self {
            c_over_c0: median_of(|r| r.c_over_c0),
            c_over_b: median_of(|r| r.c_over_b),
            d_over_b: median_of(|r| r.d_over_b),
            b_over_a: median_of(|r| r.b_over_a),
            c_over_a: median_of(|r| r.c_over_a),
            d_over_a: median_of(|r| r.d_over_a),
            per_round,
        }
    }
}

/// The round numbers any path measured, in order.
fn round_numbers(paths: &[PathReport]) -> Vec<usize> {
    let mut numbers: Vec<usize> = paths
        .iter()
        .flat_map(|p| p.rounds.iter().map(|r| r.round))
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    numbers
}

/// The median (the mean of the middle two of an even count); none of nothing.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => v.get(n / 2).copied(),
        _ => Some((v.get(n / 2 - 1)? + v.get(n / 2)?) / 2.0),
    }
}

/// One single lookup's latency within the Gather benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct LookupLatency {
    pub evidence_type: String,
    pub stats: RunStats,
}

/// A 3-department Gather against its slowest single lookup, one in flight.
#[derive(Debug, Clone, Serialize)]
pub struct GatherReport {
    pub path: PathId,
    pub lookups: Vec<LookupLatency>,
    pub gather: RunStats,
    /// The lookup with the highest p50.
    pub slowest_lookup: Option<String>,
    /// Gather p50 / slowest lookup p50.
    pub ratio_p50: Option<f64>,
    /// Gather p99 / highest lookup p99.
    pub ratio_p99: Option<f64>,
}

impl GatherReport {
    pub(crate) fn new(path: PathId, lookups: Vec<LookupLatency>, gather: RunStats) -> Self {
        let slowest = lookups
            .iter()
            .max_by(|a, b| a.stats.p50_us.total_cmp(&b.stats.p50_us));
        let max_p99 = lookups.iter().map(|l| l.stats.p99_us).fold(0.0, f64::max);
        Self {
            path,
            slowest_lookup: slowest.map(|l| l.evidence_type.clone()),
            ratio_p50: slowest.and_then(|l| ratio(gather.p50_us, l.stats.p50_us)),
            ratio_p99: ratio(gather.p99_us, max_p99),
            lookups,
            gather,
        }
    }
}

fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator > 0.0 && numerator > 0.0).then(|| numerator / denominator)
}

impl BenchReport {
    pub(crate) fn new(settings: Settings) -> Self {
        Self {
            machine: Machine::read(),
            settings,
            paths: Vec::new(),
            ratios: Ratios::default(),
            gather: Vec::new(),
        }
    }

    pub fn path(&self, id: PathId) -> Option<&PathReport> {
        self.paths.iter().find(|p| p.path == id)
    }

    /// The round numbers measured, in order.
    pub fn round_numbers(&self) -> Vec<usize> {
        round_numbers(&self.paths)
    }

    /// Total errors over every measured run (warm-up included), every round.
    pub fn total_errors(&self) -> u64 {
        let runs = self
            .paths
            .iter()
            .flat_map(|p| {
                // `load` is one of the rounds once there are rounds.
                let under_load: Vec<&RunStats> = if p.rounds.is_empty() {
                    p.load.iter().collect()
                } else {
                    p.rounds.iter().map(|r| &r.load).collect()
                };
                under_load.into_iter().chain(p.single.as_ref())
            })
            .chain(self.gather.iter().flat_map(|g| {
                g.lookups
                    .iter()
                    .map(|l| &l.stats)
                    .chain(std::iter::once(&g.gather))
            }));
        runs.map(|r| r.errors + r.warmup_errors).sum()
    }

    /// Headline figures from the rounds, ratios and added latencies, once
    /// every path is in.
    pub(crate) fn finish(&mut self) {
        for p in &mut self.paths {
            p.summarize_rounds();
        }
        self.ratios = Ratios::from_paths(&self.paths);
        let floor = self
            .path(PathId::A)
            .and_then(|p| p.single.as_ref())
            .map(|s| (s.p50_us, s.p99_us));
        if let Some((p50, p99)) = floor {
            for p in &mut self.paths {
                if let Some(s) = &p.single {
                    p.added_p50_us = Some(s.p50_us - p50);
                    p.added_p99_us = Some(s.p99_us - p99);
                }
            }
        }
        self.machine.load_average_after = load_average();
    }

    /// The human-readable table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let s = &self.settings;
        let _ = writeln!(
            out,
            "\ntongban bench — {} CPUs ({}), {} MiB RAM, load average {} before / {} after",
            m.cpus,
            m.cpu_model.as_deref().unwrap_or("unknown CPU"),
            m.memory_mib.map_or("?".into(), |v| v.to_string()),
            opt(m.load_average_before, 2),
            opt(m.load_average_after, 2),
        );
        let _ = writeln!(
            out,
            "unary {} for matter {}, about {} people in turn; departments: {}\nload: {} connections × {} streams = {} in flight, {} ms (+{} ms warm-up); exchange: {}\n",
            s.lookup_evidence,
            s.matter,
            s.people,
            s.departments,
            s.connections,
            s.concurrency,
            s.in_flight,
            s.duration_ms,
            s.warmup_ms,
            s.exchange
        );
        let rounds = self.round_numbers();
        let interleaved = rounds.len() > 1;
        if interleaved {
            let _ = writeln!(
                out,
                "Under load ({} in flight), {} interleaved rounds",
                s.in_flight,
                rounds.len()
            );
        } else {
            let _ = writeln!(out, "Under load ({} in flight)", s.in_flight);
        }
        let _ = writeln!(
            out,
            "  {:<44} {:>10} {:>9} {:>9} {:>9} {:>7} {:>10} {:>11} {:>11}",
            "path",
            "req/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "errors",
            "peak RSS",
            "proxy CPU",
            "bench CPU"
        );
        for p in &self.paths {
            let name = format!("({}) {}", p.path.letter(), p.title);
            match (&p.skipped, &p.load) {
                (Some(why), _) => {
                    let _ = writeln!(out, "  {name:<44} skipped: {why}");
                }
                (None, Some(l)) => {
                    let _ = writeln!(
                        out,
                        "  {name:<44} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>7} {:>10} {:>11} {:>11}",
                        l.throughput_rps,
                        l.p50_us / 1000.0,
                        l.p99_us / 1000.0,
                        l.p999_us / 1000.0,
                        l.errors + l.warmup_errors,
                        p.peak_rss
                            .as_ref()
                            .map_or("-".into(), |r| format!("{:.1} MiB", r.mib)),
                        per_request(p.proxy_cpu_us_per_request),
                        per_request(p.bench_cpu_us_per_request),
                    );
                }
                (None, None) => {}
            }
        }
        if interleaved {
            let _ = writeln!(
                out,
                "  each row is the median-throughput round of {}; every round below (peak RSS: the highest of any round)",
                rounds.len()
            );
        }
        let _ = writeln!(
            out,
            "  CPU columns: CPU time per request in the window; proxy = nginx or the exchange process, bench = generator + departments"
        );
        for p in &self.paths {
            if let Some(r) = &p.peak_rss {
                let _ = writeln!(out, "  peak RSS ({}): {}", p.path.letter(), r.scope);
            }
            let first_error = p
                .rounds
                .iter()
                .find_map(|r| Some((Some(r.round), r.load.first_error.as_ref()?)))
                .or_else(|| Some((None, p.load.as_ref()?.first_error.as_ref()?)));
            match first_error {
                Some((Some(round), e)) if interleaved => {
                    let _ = writeln!(
                        out,
                        "  first error ({}, round {round}): {e}",
                        p.path.letter()
                    );
                }
                Some((_, e)) => {
                    let _ = writeln!(out, "  first error ({}): {e}", p.path.letter());
                }
                None => {}
            }
        }
        let r = &self.ratios;
        let _ = writeln!(
            out,
            "\nThroughput ratios{}: (c)/(b) = {}   (d)/(b) = {}   (b)/(a) = {}   (c)/(a) = {}   (d)/(a) = {}",
            if interleaved {
                " (median of the per-round ratios)"
            } else {
                ""
            },
            times(r.c_over_b),
            times(r.d_over_b),
            times(r.b_over_a),
            times(r.c_over_a),
            times(r.d_over_a)
        );
        if self.path(PathId::C0).is_some() {
            let _ = writeln!(
                out,
                "What transparency costs: (c)/(c0) = {} (the exchange with the subject map over the same exchange without it)",
                times(r.c_over_c0)
            );
        }
        if interleaved {
            self.render_rounds(&mut out, &rounds);
        }
        if self.paths.iter().any(|p| p.single.is_some()) {
            let _ = writeln!(
                out,
                "\n(e) One request in flight ({} ms each)",
                s.single_duration_ms
            );
            let _ = writeln!(
                out,
                "  {:<44} {:>10} {:>9} {:>9} {:>9} {:>12} {:>12}",
                "path", "req/s", "p50 µs", "p99 µs", "p99.9 µs", "+p50 vs (a)", "+p99 vs (a)"
            );
            for p in &self.paths {
                if let Some(l) = &p.single {
                    let _ = writeln!(
                        out,
                        "  {:<44} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>12} {:>12}",
                        format!("({}) {}", p.path.letter(), p.title),
                        l.throughput_rps,
                        l.p50_us,
                        l.p99_us,
                        l.p999_us,
                        signed(p.added_p50_us),
                        signed(p.added_p99_us),
                    );
                }
            }
        }
        for g in &self.gather {
            let _ = writeln!(
                out,
                "\nGather across three departments through ({}), one in flight",
                g.path.letter()
            );
            let _ = writeln!(
                out,
                "  {:<44} {:>10} {:>9} {:>9} {:>9}",
                "call", "req/s", "p50 µs", "p99 µs", "p99.9 µs"
            );
            for l in &g.lookups {
                row(&mut out, &format!("Lookup {}", l.evidence_type), &l.stats);
            }
            row(&mut out, "Gather (3 departments)", &g.gather);
            let _ = writeln!(
                out,
                "  Gather / slowest lookup ({}): p50 {}, p99 {}",
                g.slowest_lookup.as_deref().unwrap_or("?"),
                times(g.ratio_p50),
                times(g.ratio_p99)
            );
        }
        let errors = self.total_errors();
        let _ = writeln!(out, "\nerrors in all runs: {errors}");
        out
    }
}

/// Widths of a round's two sub-columns in the "Rounds" section.
const RPS_COLUMN: usize = 10;
const CPU_COLUMN: usize = 11;

impl BenchReport {
    /// The "Rounds" section: every round of every path, the ratios within
    /// each round and their medians.
    fn render_rounds(&self, out: &mut String, rounds: &[usize]) {
        let _ = writeln!(
            out,
            "\nRounds (interleaved: every path once per round, in the order above)"
        );
        let mut header = format!("  {:<9}", "");
        let mut columns = format!("  {:<9}", "");
        for n in rounds {
            let _ = write!(
                header,
                "  {:^width$}",
                format!("round {n}"),
                width = RPS_COLUMN + 1 + CPU_COLUMN
            );
            let _ = write!(
                columns,
                "  {:>RPS_COLUMN$} {:>CPU_COLUMN$}",
                "req/s", "proxy CPU"
            );
        }
        let _ = writeln!(out, "{header}   median");
        let _ = writeln!(out, "{columns}   proxy CPU");
        for p in &self.paths {
            let mut line = format!("  {:<9}", format!("({})", p.path.letter()));
            if let Some(why) = &p.skipped {
                let _ = writeln!(out, "{line}skipped: {why}");
                continue;
            }
            for n in rounds {
                let (rps, cpu) = p.round(*n).map_or(("-".into(), "-".into()), |r| {
                    (
                        format!("{:.0}", r.requests_per_sec),
                        r.proxy_cpu_us_per_request
                            .map_or("-".into(), |v| format!("{v:.0} µs")),
                    )
                });
                let _ = write!(line, "  {rps:>RPS_COLUMN$} {cpu:>CPU_COLUMN$}");
            }
            let _ = writeln!(
                out,
                "{line}   {}",
                per_request(p.median_proxy_cpu_us_per_request)
            );
            for r in p.rounds.iter().filter(|r| r.errors > 0) {
                let _ = writeln!(
                    out,
                    "  ({}) round {}: {} errors",
                    p.path.letter(),
                    r.round,
                    r.errors
                );
            }
        }
        for (label, headline, in_round) in RATIO_FIELDS {
            let per_round: Vec<Option<f64>> = rounds
                .iter()
                .map(|n| {
                    self.ratios
                        .per_round
                        .iter()
                        .find(|r| r.round == *n)
                        .and_then(in_round)
                })
                .collect();
            // A ratio of a path not measured: "n/a" in the line above is enough.
            if per_round.iter().all(Option::is_none) {
                continue;
            }
            let mut line = format!("  {label:<9}");
            for v in per_round {
                let _ = write!(line, "  {:>RPS_COLUMN$} {:>CPU_COLUMN$}", times(v), "");
            }
            let _ = writeln!(out, "{line}   median {}", times(headline(&self.ratios)));
        }
    }
}

fn row(out: &mut String, name: &str, l: &RunStats) {
    let _ = writeln!(
        out,
        "  {name:<44} {:>10.0} {:>9.0} {:>9.0} {:>9.0}",
        l.throughput_rps, l.p50_us, l.p99_us, l.p999_us
    );
}

fn per_request(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0} µs/req"))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("?".into(), |v| format!("{v:.digits$}"))
}

fn times(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.2}×"))
}

fn signed(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:+.0} µs"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stats(rps: f64, errors: u64) -> RunStats {
        RunStats {
            connections: 1,
            concurrency: 1,
            seconds: 1.0,
            requests: rps as u64,
            errors,
            warmup_errors: 0,
            audited: 0,
            throughput_rps: rps,
            mean_us: 1000.0,
            p50_us: 1000.0,
            p99_us: 2000.0,
            p999_us: 3000.0,
            max_us: 4000.0,
            first_error: (errors > 0).then(|| "boom".to_owned()),
        }
    }

    /// A path measured in rounds 1..: throughput and proxy CPU per round.
    fn path(id: PathId, rounds: &[(f64, Option<f64>)]) -> PathReport {
        let mut p = PathReport::new(id);
        for (i, (rps, cpu)) in rounds.iter().enumerate() {
            let mut r = RoundStats::new(i + 1, stats(*rps, 0), *cpu, Some(10.0));
            r.peak_rss = Some(PeakRss {
                mib: 10.0 + i as f64,
                scope: "exchange process".into(),
            });
            p.rounds.push(r);
        }
        p
    }

    fn skipped(id: PathId) -> PathReport {
        let mut p = PathReport::new(id);
        p.skipped = Some("nginx is not installed".into());
        p
    }

    fn report(rounds: usize, paths: Vec<PathReport>) -> BenchReport {
        let args = BenchArgs {
            rounds,
            ..BenchArgs::default()
        };
        let spec = LoadSpec::single(Duration::ZERO, Duration::from_millis(1));
        let mut r = BenchReport::new(Settings::new(&args, &ExchangeRunner::InProcess, spec, spec));
        r.paths = paths;
        r.finish();
        r
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn median_of_odd_even_and_no_values() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median([7.0]), Some(7.0));
        assert_eq!(median([]), None);
        assert_eq!(median([f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn headline_ratios_are_medians_of_the_per_round_ratios() {
        // c/b per round: 1.02, 0.78, 0.91 -> median 0.91, though the median
        // throughputs (c 910, b 1000) would give the same here by chance;
        // b/a per round: 0.5, 0.25, 1.0 -> 0.5.
        let r = report(
            3,
            vec![
                path(PathId::A, &[(2000.0, None), (4000.0, None), (1000.0, None)]),
                path(
                    PathId::B,
                    &[
                        (1000.0, Some(30.0)),
                        (1000.0, Some(20.0)),
                        (1000.0, Some(40.0)),
                    ],
                ),
                path(
                    PathId::C,
                    &[
                        (1020.0, Some(55.0)),
                        (780.0, Some(60.0)),
                        (910.0, Some(50.0)),
                    ],
                ),
            ],
        );
        assert_eq!(r.ratios.per_round.len(), 3);
        assert!(close(r.ratios.per_round[0].c_over_b, 1.02));
        assert!(close(r.ratios.per_round[1].c_over_b, 0.78));
        assert!(close(r.ratios.per_round[2].c_over_b, 0.91));
        assert!(close(r.ratios.c_over_b, 0.91));
        assert!(close(r.ratios.b_over_a, 0.5));
        // c/a per round: 0.51, 0.195, 0.91 -> 0.51 (not 910 / 2000).
        assert!(close(r.ratios.c_over_a, 0.51));
        assert_eq!(r.ratios.d_over_b, None);
        assert_eq!(r.ratios.per_round[1].d_over_a, None);

        let c = r.path(PathId::C).unwrap();
        // The median-throughput round (910 req/s) is round 3, with its CPU.
        assert_eq!(c.median_round, Some(3));
        assert!(close(c.load.as_ref().map(|l| l.throughput_rps), 910.0));
        assert!(close(c.proxy_cpu_us_per_request, 50.0));
        assert!(close(c.median_proxy_cpu_us_per_request, 55.0));
        assert!(close(c.median_bench_cpu_us_per_request, 10.0));
        // Peak RSS: the highest of any round.
        assert!(close(c.peak_rss.as_ref().map(|p| p.mib), 12.0));
        assert_eq!(r.path(PathId::A).unwrap().median_round, Some(1));
        assert_eq!(
            r.path(PathId::A).unwrap().median_proxy_cpu_us_per_request,
            None
        );

        let table = r.render();
        assert!(table.contains("3 interleaved rounds"), "{table}");
        assert!(
            table.contains("each row is the median-throughput round of 3; every round below"),
            "{table}"
        );
        assert!(
            table.contains("(median of the per-round ratios)"),
            "{table}"
        );
        let line = table
            .lines()
            .find(|l| l.trim_start().starts_with("(c)/(b)"))
            .unwrap();
        assert!(
            line.contains("1.02×") && line.contains("0.78×") && line.ends_with("median 0.91×"),
            "{line}"
        );
        let c_line = table
            .lines()
            .find(|l| l.trim_start().starts_with("(c)") && l.contains("1020"))
            .unwrap();
        assert!(
            c_line.contains("780       60 µs") && c_line.ends_with("55 µs/req"),
            "{c_line}"
        );
        // Ratios no round has are left out of the rounds section.
        assert!(
            !table
                .lines()
                .any(|l| l.trim_start().starts_with("(d)/(b)") && l.contains("median"))
        );

        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["settings"]["rounds"], 3);
        assert_eq!(json["paths"][2]["rounds"][1]["requests_per_sec"], 780.0);
        assert_eq!(
            json["paths"][2]["rounds"][1]["proxy_cpu_us_per_request"],
            60.0
        );
        assert_eq!(json["paths"][2]["median_round"], 3);
        assert!((json["ratios"]["c_over_b"].as_f64().unwrap() - 0.91).abs() < 1e-9);
        assert_eq!(json["ratios"]["per_round"].as_array().unwrap().len(), 3);
        assert_eq!(json["ratios"]["per_round"][0]["round"], 1);
    }

    #[test]
    fn transparency_cost_is_c_over_c0_within_each_round() {
        // c/c0 per round: 0.95, 0.80, 1.00 -> median 0.95.
        let r = report(
            3,
            vec![
                path(
                    PathId::C,
                    &[
                        (950.0, Some(50.0)),
                        (800.0, Some(55.0)),
                        (1000.0, Some(52.0)),
                    ],
                ),
                path(
                    PathId::C0,
                    &[
                        (1000.0, Some(45.0)),
                        (1000.0, Some(47.0)),
                        (1000.0, Some(46.0)),
                    ],
                ),
            ],
        );
        assert!(close(r.ratios.per_round[0].c_over_c0, 0.95));
        assert!(close(r.ratios.per_round[1].c_over_c0, 0.80));
        assert!(close(r.ratios.per_round[2].c_over_c0, 1.00));
        assert!(close(r.ratios.c_over_c0, 0.95));
        assert_eq!(r.ratios.c_over_a, None);
        let table = r.render();
        assert!(
            table.contains("What transparency costs: (c)/(c0) = 0.95×"),
            "{table}"
        );
        let line = table
            .lines()
            .find(|l| l.trim_start().starts_with("(c)/(c0)"))
            .unwrap();
        assert!(
            line.contains("0.95×") && line.contains("0.80×") && line.ends_with("median 0.95×"),
            "{line}"
        );
        assert!(
            table.lines().any(|l| l
                .trim_start()
                .starts_with("(c0) exchange plaintext, transparency off")),
            "{table}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["paths"][1]["path"], "c0");
        assert!((json["ratios"]["c_over_c0"].as_f64().unwrap() - 0.95).abs() < 1e-9);

        // Without (c0) the ratio is absent and its line is not printed.
        let r = report(1, vec![path(PathId::C, &[(900.0, None)])]);
        assert_eq!(r.ratios.c_over_c0, None);
        assert!(!r.render().contains("What transparency costs"));
    }

    #[test]
    fn an_even_count_takes_the_mean_of_the_middle_ratios_and_the_lower_middle_round() {
        let r = report(
            4,
            vec![
                path(
                    PathId::A,
                    &[
                        (1000.0, None),
                        (1000.0, None),
                        (1000.0, None),
                        (1000.0, None),
                    ],
                ),
                path(
                    PathId::D,
                    &[
                        (400.0, Some(80.0)),
                        (100.0, Some(90.0)),
                        (300.0, Some(70.0)),
                        (200.0, Some(60.0)),
                    ],
                ),
            ],
        );
        // d/a: 0.4, 0.1, 0.3, 0.2 -> (0.2 + 0.3) / 2.
        assert!(close(r.ratios.d_over_a, 0.25));
        let d = r.path(PathId::D).unwrap();
        // Sorted 100, 200, 300, 400: the lower middle is 200 req/s, round 4.
        assert_eq!(d.median_round, Some(4));
        assert!(close(d.proxy_cpu_us_per_request, 60.0));
        assert!(close(d.median_proxy_cpu_us_per_request, 75.0));
    }

    #[test]
    fn a_skipped_path_gives_na_not_a_panic() {
        let r = report(
            2,
            vec![
                path(PathId::A, &[(1000.0, None), (900.0, None)]),
                skipped(PathId::B),
                path(PathId::C, &[(500.0, Some(50.0)), (450.0, Some(40.0))]),
            ],
        );
        assert_eq!(r.ratios.c_over_b, None);
        assert_eq!(r.ratios.b_over_a, None);
        assert!(close(r.ratios.c_over_a, 0.5));
        let b = r.path(PathId::B).unwrap();
        assert!(b.load.is_none() && b.median_round.is_none() && b.rounds.is_empty());
        assert_eq!(b.median_proxy_cpu_us_per_request, None);
        let table = r.render();
        assert!(table.contains("(c)/(b) = n/a"), "{table}");
        assert!(table.contains("skipped: nginx is not installed"), "{table}");
        assert!(
            table.contains("(c)/(a)") && table.contains("median 0.50×"),
            "{table}"
        );

        // Nothing measured at all: every ratio n/a, and the table renders.
        let empty = report(1, vec![skipped(PathId::B)]);
        assert_eq!(empty.ratios.per_round.len(), 0);
        assert_eq!(empty.ratios.c_over_b, None);
        assert!(empty.render().contains("(c)/(b) = n/a"));
    }

    #[test]
    fn one_round_is_todays_report_and_errors_count_in_every_round() {
        let r = report(
            1,
            vec![
                path(PathId::A, &[(1000.0, None)]),
                path(PathId::C, &[(800.0, Some(50.0))]),
            ],
        );
        assert!(close(r.ratios.c_over_a, 0.8));
        let table = r.render();
        assert!(
            !table.contains("Rounds") && !table.contains("median-throughput"),
            "{table}"
        );

        let mut c = path(PathId::C, &[(800.0, None), (700.0, None), (900.0, None)]);
        // Errors in a round that is not the median one still count.
        c.rounds[2] = RoundStats::new(3, stats(900.0, 2), None, None);
        let r = report(3, vec![c]);
        assert_eq!(r.path(PathId::C).unwrap().median_round, Some(1));
        assert_eq!(r.total_errors(), 2);
        let table = r.render();
        assert!(table.contains("first error (c, round 3): boom"), "{table}");
        assert!(table.contains("(c) round 3: 2 errors"), "{table}");
    }
}
