//! The benchmark's result: a readable table, or JSON for machines.

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
    fn read() -> Self {
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

fn load_average() -> Option<f64> {
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
}

impl Settings {
    pub(crate) fn new(
        args: &BenchArgs,
        runner: &ExchangeRunner,
        load: LoadSpec,
        single: LoadSpec,
    ) -> Self {
        Self {
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
    /// Under load (connections × concurrency in flight).
    pub load: Option<RunStats>,
    /// One request in flight (e).
    pub single: Option<RunStats>,
    pub peak_rss: Option<PeakRss>,
    /// CPU time of the proxy's own processes (nginx, a child exchange) per
    /// request under load: its cost, whatever else the machine was doing.
    pub proxy_cpu_us_per_request: Option<f64>,
    /// CPU time of the bench process (generator and departments) per request.
    pub bench_cpu_us_per_request: Option<f64>,
    /// One-in-flight latency added over (a).
    pub added_p50_us: Option<f64>,
    pub added_p99_us: Option<f64>,
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
            added_p50_us: None,
            added_p99_us: None,
        }
    }
}

/// Throughput ratios under the same load.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ratios {
    pub c_over_b: Option<f64>,
    pub d_over_b: Option<f64>,
    pub b_over_a: Option<f64>,
    pub c_over_a: Option<f64>,
    pub d_over_a: Option<f64>,
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

    /// Total errors over every measured run (warm-up included).
    pub fn total_errors(&self) -> u64 {
        let runs = self
            .paths
            .iter()
            .flat_map(|p| [p.load.as_ref(), p.single.as_ref()])
            .flatten()
            .chain(self.gather.iter().flat_map(|g| {
                g.lookups
                    .iter()
                    .map(|l| &l.stats)
                    .chain(std::iter::once(&g.gather))
            }));
        runs.map(|r| r.errors + r.warmup_errors).sum()
    }

    /// Ratios and added latencies, once every path is in.
    pub(crate) fn finish(&mut self) {
        let rps = |id| {
            self.path(id)
                .and_then(|p| p.load.as_ref())
                .map(|l| l.throughput_rps)
        };
        let over = |a: Option<f64>, b: Option<f64>| a.zip(b).and_then(|(a, b)| ratio(a, b));
        let (a, b, c, d) = (
            rps(PathId::A),
            rps(PathId::B),
            rps(PathId::C),
            rps(PathId::D),
        );
        self.ratios = Ratios {
            c_over_b: over(c, b),
            d_over_b: over(d, b),
            b_over_a: over(b, a),
            c_over_a: over(c, a),
            d_over_a: over(d, a),
        };
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
            "unary {} for matter {}; departments: {}\nload: {} connections × {} streams = {} in flight, {} ms (+{} ms warm-up); exchange: {}\n",
            s.lookup_evidence,
            s.matter,
            s.departments,
            s.connections,
            s.concurrency,
            s.in_flight,
            s.duration_ms,
            s.warmup_ms,
            s.exchange
        );
        let _ = writeln!(out, "Under load ({} in flight)", self.settings.in_flight);
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
        let _ = writeln!(
            out,
            "  CPU columns: CPU time per request in the window; proxy = nginx or the exchange process, bench = generator + departments"
        );
        for p in &self.paths {
            if let Some(r) = &p.peak_rss {
                let _ = writeln!(out, "  peak RSS ({}): {}", p.path.letter(), r.scope);
            }
            if let Some(e) = p.load.as_ref().and_then(|l| l.first_error.as_ref()) {
                let _ = writeln!(out, "  first error ({}): {e}", p.path.letter());
            }
        }
        let r = &self.ratios;
        let _ = writeln!(
            out,
            "\nThroughput ratios: (c)/(b) = {}   (d)/(b) = {}   (b)/(a) = {}   (c)/(a) = {}   (d)/(a) = {}",
            times(r.c_over_b),
            times(r.d_over_b),
            times(r.b_over_a),
            times(r.c_over_a),
            times(r.d_over_a)
        );
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
