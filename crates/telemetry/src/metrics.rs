//! Every tongban metric, behind one typed handle, and their Prometheus text
//! rendering (see [`PrometheusMetrics`] for how the two fit together).
//!
//! | OpenTelemetry instrument          | Prometheus name                              | labels                              |
//! |-----------------------------------|----------------------------------------------|-------------------------------------|
//! | `tongban.rpc.requests`            | `tongban_rpc_requests_total`                 | `method`, `code`                    |
//! | `tongban.rpc.errors`              | `tongban_rpc_errors_total`                   | `method`, `code`                    |
//! | `tongban.rpc.duration` (s)        | `tongban_rpc_duration_seconds`               | `method`, `code`                    |
//! | `tongban.rpc.inflight`            | `tongban_rpc_inflight`                       |                                     |
//! | `tongban.department.duration` (s) | `tongban_department_duration_seconds`        | `department`, `evidence_type`, `code` |
//! | `tongban.audit.commit.duration` (s) | `tongban_audit_commit_duration_seconds`    |                                     |
//! | `tongban.audit.batch.size`        | `tongban_audit_batch_size`                   |                                     |
//! | `tongban.policy.denials`          | `tongban_policy_denials_total`               | `reason`                            |
//!
//! `code` is the canonical gRPC code name (`OK`, `PERMISSION_DENIED`, ...).
//! Label values must come from bounded sets (method names, catalogue
//! department and evidence ids, machine reasons), never from personal data.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider as _, UpDownCounter};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::error::TelemetryError;

/// Latency buckets in seconds: sub-millisecond local hops up to the longest
/// department deadline.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// The typed handle for every tongban metric. Cheap to clone; all clones
/// record into the same instruments.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Instruments>,
}

#[derive(Debug)]
struct Instruments {
    rpc_requests: Counter<u64>,
    rpc_errors: Counter<u64>,
    rpc_duration: Histogram<f64>,
    rpc_inflight: UpDownCounter<i64>,
    department_duration: Histogram<f64>,
    audit_commit_duration: Histogram<f64>,
    audit_batch_size: Histogram<u64>,
    policy_denials: Counter<u64>,
}

impl Metrics {
    /// Creates the instruments on `meter` (normally from
    /// [`crate::TelemetryGuard::metrics`]).
    pub fn new(meter: &Meter) -> Self {
        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_description(description)
                .with_unit("s")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build()
        };
        Self {
            inner: Arc::new(Instruments {
                rpc_requests: meter
                    .u64_counter("tongban.rpc.requests")
                    .with_description("gRPC requests served, by method and status code")
                    .build(),
                rpc_errors: meter
                    .u64_counter("tongban.rpc.errors")
                    .with_description("gRPC requests that ended with a status other than OK, by method and status code")
                    .build(),
                rpc_duration: seconds("tongban.rpc.duration", "Time to answer a gRPC request"),
                rpc_inflight: meter
                    .i64_up_down_counter("tongban.rpc.inflight")
                    .with_description("gRPC requests being served")
                    .build(),
                department_duration: seconds(
                    "tongban.department.duration",
                    "Time a department adapter took to answer one evidence query, by department, evidence type and status code",
                ),
                audit_commit_duration: seconds(
                    "tongban.audit.commit.duration",
                    "Time to make one batch of audit entries durable",
                ),
                audit_batch_size: meter
                    .u64_histogram("tongban.audit.batch.size")
                    .with_description("Audit entries committed together")
                    .with_boundaries(BATCH_BUCKETS.to_vec())
                    .build(),
                policy_denials: meter
                    .u64_counter("tongban.policy.denials")
                    .with_description("Evidence requests the access policy refused, by reason")
                    .build(),
            }),
        }
    }

    /// Instruments that record into a provider without readers: for
    /// components built without telemetry (unit tests, tools).
    pub fn disabled() -> Self {
        Self::new(&SdkMeterProvider::builder().build().meter("tongban"))
    }

    /// One served gRPC request. [`crate::GrpcServerLayer`] calls this for
    /// every request when given the handle.
    pub fn record_rpc(&self, method: &str, code: tonic::Code, latency: Duration) {
        let attributes = [
            KeyValue::new("method", method.to_owned()),
            KeyValue::new("code", code_name(code)),
        ];
        self.inner.rpc_requests.add(1, &attributes);
        if code != tonic::Code::Ok {
            self.inner.rpc_errors.add(1, &attributes);
        }
        self.inner
            .rpc_duration
            .record(latency.as_secs_f64(), &attributes);
    }

    /// One evidence query to a department adapter, as the exchange saw it
    /// (timeouts as `DEADLINE_EXCEEDED`, unreachable as `UNAVAILABLE`).
    pub fn record_department_query(
        &self,
        department: &str,
        evidence_type: &str,
        code: tonic::Code,
        latency: Duration,
    ) {
        self.inner.department_duration.record(
            latency.as_secs_f64(),
            &[
                KeyValue::new("department", department.to_owned()),
                KeyValue::new("evidence_type", evidence_type.to_owned()),
                KeyValue::new("code", code_name(code)),
            ],
        );
    }

    /// Counts one request in flight until the guard is dropped.
    pub fn inflight(&self) -> InflightGuard {
        self.inner.rpc_inflight.add(1, &[]);
        InflightGuard {
            metrics: self.clone(),
        }
    }

    /// One audit commit: how many entries it made durable and how long it took.
    pub fn record_audit_batch(&self, size: usize, commit_latency: Duration) {
        self.inner
            .audit_batch_size
            .record(u64::try_from(size).unwrap_or(u64::MAX), &[]);
        self.inner
            .audit_commit_duration
            .record(commit_latency.as_secs_f64(), &[]);
    }

    /// One policy refusal, by machine reason (e.g. `NOT_GRANTED`, `PURPOSE_MISMATCH`).
    pub fn record_denial(&self, reason: &str) {
        self.inner
            .policy_denials
            .add(1, &[KeyValue::new("reason", reason.to_owned())]);
    }
}

/// Keeps one request counted in `tongban.rpc.inflight` while alive.
#[derive(Debug)]
#[must_use = "the request stops counting as in flight when the guard is dropped"]
pub struct InflightGuard {
    metrics: Metrics,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.metrics.inner.rpc_inflight.add(-1, &[]);
    }
}

/// The canonical upper-case name of a gRPC status code (one table, in
/// the wire crate).
pub use tongban_proto::convert::code_name;

/// `Content-Type` of [`PrometheusMetrics::render`]'s output: the classic
/// Prometheus text format, for scrapers that do not ask for OpenMetrics.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `Content-Type` of [`PrometheusMetrics::render_openmetrics`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The two text formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpositionFormat {
    /// Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text, as Prometheus asks for by default.
    OpenMetrics,
}

impl ExpositionFormat {
    /// What to answer a scrape whose `Accept` header is `accept`: OpenMetrics
    /// when the scraper lists it at all (Prometheus does, first), the
    /// classic format otherwise (curl, older scrapers, tests reading text).
    pub fn negotiate(accept: Option<&str>) -> Self {
        let wants_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut params = range.split(';').map(str::trim);
                let media = params.next().unwrap_or_default();
                let refused = params.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if wants_openmetrics {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => PROMETHEUS_CONTENT_TYPE,
            Self::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// The metrics as Prometheus / OpenMetrics text, collected on demand from
/// the meter provider. Cheap to clone.
///
/// # Design
///
/// The OpenTelemetry SDK stays the one place where measurements are
/// aggregated; `prometheus-client` only encodes. On each scrape a
/// [`Collector`] reads the SDK's cumulative aggregates through a
/// [`ManualReader`] (the same way the OTLP exporter's periodic reader does)
/// and writes them with `prometheus-client`'s encoders. So:
/// * OTLP metric export is untouched: both readers see the same instruments.
/// * Callers keep one typed handle, [`Metrics`], and every request is
///   recorded once. Recording into `prometheus-client`'s own `Family` types
///   as well would cost every request a second set of updates and let the
///   two views drift apart.
/// * Names follow OpenTelemetry's Prometheus mapping, as the former
///   `opentelemetry-prometheus` exporter did: dots become underscores, the
///   unit `s` adds `_seconds`, monotonic sums are counters (`_total`), every
///   series carries `otel_scope_name`, and `target_info` carries the
///   resource (service name, SDK).
///
/// The price is the SDK's `experimental_metrics_custom_reader` feature (the
/// `ManualReader` API), which `opentelemetry-prometheus` used as well.
#[derive(Clone)]
pub struct PrometheusMetrics {
    registry: Arc<Registry>,
}

impl std::fmt::Debug for PrometheusMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusMetrics").finish_non_exhaustive()
    }
}

impl PrometheusMetrics {
    /// The Prometheus view and the reader that feeds it, to be given to
    /// exactly one meter provider.
    pub(crate) fn new() -> (Self, PrometheusReader) {
        let reader = Arc::new(ManualReader::builder().build());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SdkCollector {
            reader: reader.clone(),
        }));
        let metrics = Self {
            registry: Arc::new(registry),
        };
        (metrics, PrometheusReader(reader))
    }

    /// Collects and renders every metric now, in the classic Prometheus
    /// text format 0.0.4.
    pub fn render(&self) -> Result<String, TelemetryError> {
        self.render_as(ExpositionFormat::Prometheus)
    }

    /// Collects and renders every metric now, as OpenMetrics 1.0 text.
    pub fn render_openmetrics(&self) -> Result<String, TelemetryError> {
        self.render_as(ExpositionFormat::OpenMetrics)
    }

    pub fn render_as(&self, format: ExpositionFormat) -> Result<String, TelemetryError> {
        let mut text = String::new();
        match format {
            ExpositionFormat::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            }
            ExpositionFormat::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.registry)
            }
        }
        .map_err(TelemetryError::Render)?;
        Ok(text)
    }
}

/// The meter provider's end of [`PrometheusMetrics`]: a [`ManualReader`]
/// shared with the collectors that read it at scrape time.
#[derive(Debug)]
pub(crate) struct PrometheusReader(Arc<ManualReader>);

impl MetricReader for PrometheusReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    /// Prometheus counters and histograms are cumulative.
    fn temporality(&self, _kind: InstrumentKind) -> Temporality {
        Temporality::Cumulative
    }
}

/// Encodes the SDK's aggregates at each scrape.
#[derive(Debug)]
struct SdkCollector {
    reader: Arc<ManualReader>,
}

impl Collector for SdkCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut collected = ResourceMetrics::default();
        if let Err(e) = self.reader.collect(&mut collected) {
            tracing::warn!(error = %e, "cannot collect metrics for a scrape");
            return Err(std::fmt::Error);
        }
        for (name, family) in families(&collected) {
            family.encode(&name, &mut encoder)?;
        }
        Ok(())
    }
}

/// One metric family, converted from the SDK's data, before encoding.
#[derive(Debug)]
struct Family {
    kind: Kind,
    help: String,
    /// The unit the name ends with, for OpenMetrics' `# UNIT`.
    unit: Option<Unit>,
    series: Vec<(Labels, Point)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

type Labels = Vec<(String, String)>;

#[derive(Debug)]
enum Point {
    Number(Number),
    Histogram {
        sum: f64,
        count: u64,
        /// (upper bound, count in this bucket, not cumulative); the last
        /// bound is `+Inf`.
        buckets: Vec<(f64, u64)>,
    },
}

#[derive(Debug, Clone, Copy)]
enum Number {
    U64(u64),
    I64(i64),
    F64(f64),
}

trait IntoNumber: Copy {
    fn number(self) -> Number;
}

impl IntoNumber for u64 {
    fn number(self) -> Number {
        Number::U64(self)
    }
}

impl IntoNumber for i64 {
    fn number(self) -> Number {
        Number::I64(self)
    }
}

impl IntoNumber for f64 {
    fn number(self) -> Number {
        Number::F64(self)
    }
}

impl Number {
    /// Exact below 2^53, which a histogram's sum of counts or seconds does
    /// not reach.
    fn as_f64(self) -> f64 {
        match self {
            Self::U64(v) => v as f64,
            Self::I64(v) => v as f64,
            Self::F64(v) => v,
        }
    }
}

/// `target_info`'s help text, as OpenTelemetry's exporters write it.
const TARGET_INFO_HELP: &str = "Target metadata";

/// The collected data as Prometheus families, by name (sorted, so the
/// output is stable). A name claimed twice with different types keeps the
/// first; the same name and type from two scopes merges.
fn families(collected: &ResourceMetrics) -> BTreeMap<String, Family> {
    let mut families = BTreeMap::new();
    let mut resource: Labels = collected
        .resource()
        .iter()
        .map(|(k, v)| (sanitize(k.as_str(), false), v.as_str().into_owned()))
        .collect();
    resource.sort();
    if !resource.is_empty() {
        families.insert(
            "target_info".to_owned(),
            Family {
                kind: Kind::Gauge,
                help: TARGET_INFO_HELP.to_owned(),
                unit: None,
                series: vec![(resource, Point::Number(Number::I64(1)))],
            },
        );
    }
    for scope_metrics in collected.scope_metrics() {
        let scope = scope_metrics.scope();
        let mut scope_labels = vec![("otel_scope_name".to_owned(), scope.name().to_owned())];
        if let Some(version) = scope.version() {
            scope_labels.push(("otel_scope_version".to_owned(), version.to_owned()));
        }
        for metric in scope_metrics.metrics() {
            let Some((kind, series)) = (match metric.data() {
                AggregatedMetrics::U64(data) => convert(data, &scope_labels),
                AggregatedMetrics::I64(data) => convert(data, &scope_labels),
                AggregatedMetrics::F64(data) => convert(data, &scope_labels),
            }) else {
                continue;
            };
            if series.is_empty() {
                continue;
            }
            let unit = unit_suffix(metric.unit());
            let mut name = sanitize(metric.name(), true);
            if let Some(unit) = &unit
                && !name.ends_with(&format!("_{}", unit.as_str()))
            {
                name = format!("{name}_{}", unit.as_str());
            }
            match families.entry(name) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(Family {
                        kind,
                        help: metric.description().to_owned(),
                        unit,
                        series,
                    });
                }
                std::collections::btree_map::Entry::Occupied(mut slot) => {
                    if slot.get().kind == kind {
                        slot.get_mut().series.extend(series);
                    } else {
                        tracing::debug!(
                            metric = slot.key(),
                            "two instruments map to one Prometheus name with different types; keeping the first"
                        );
                    }
                }
            }
        }
    }
    // Sorted labels and series: the same text for the same state, whatever
    // order the SDK keeps them in.
    for family in families.values_mut() {
        for (labels, _) in &mut family.series {
            labels.sort();
        }
        family.series.sort_by(|a, b| a.0.cmp(&b.0));
    }
    families
}

fn convert<T: IntoNumber>(
    data: &MetricData<T>,
    scope: &Labels,
) -> Option<(Kind, Vec<(Labels, Point)>)> {
    let labels = |attributes: &mut dyn Iterator<Item = &KeyValue>| -> Labels {
        attributes
            .map(|kv| {
                (
                    sanitize(kv.key.as_str(), false),
                    kv.value.as_str().into_owned(),
                )
            })
            .chain(scope.iter().cloned())
            .collect()
    };
    Some(match data {
        MetricData::Sum(sum) => {
            let kind = if sum.is_monotonic() {
                Kind::Counter
            } else {
                Kind::Gauge
            };
            let series = sum
                .data_points()
                .map(|p| {
                    (
                        labels(&mut p.attributes()),
                        Point::Number(p.value().number()),
                    )
                })
                .collect();
            (kind, series)
        }
        MetricData::Gauge(gauge) => {
            let series = gauge
                .data_points()
                .map(|p| {
                    (
                        labels(&mut p.attributes()),
                        Point::Number(p.value().number()),
                    )
                })
                .collect();
            (Kind::Gauge, series)
        }
        MetricData::Histogram(histogram) => {
            let series = histogram
                .data_points()
                .map(|p| {
                    let mut bounds = p.bounds();
                    let buckets = p
                        .bucket_counts()
                        .map(|count| (bounds.next().unwrap_or(f64::INFINITY), count))
                        .collect();
                    let point = Point::Histogram {
                        sum: p.sum().number().as_f64(),
                        count: p.count(),
                        buckets,
                    };
                    (labels(&mut p.attributes()), point)
                })
                .collect();
            (Kind::Histogram, series)
        }
        // Not used by tongban, and not expressible in the text formats.
        MetricData::ExponentialHistogram(_) => return None,
    })
}

/// OpenTelemetry units with a Prometheus name suffix (the ones tongban uses).
fn unit_suffix(unit: &str) -> Option<Unit> {
    match unit {
        "s" => Some(Unit::Seconds),
        "By" => Some(Unit::Bytes),
        _ => None,
    }
}

/// A valid Prometheus metric (`[a-zA-Z_:][a-zA-Z0-9_:]*`) or label
/// (`[a-zA-Z_][a-zA-Z0-9_]*`) name: anything else becomes `_`.
fn sanitize(name: &str, metric: bool) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || (metric && c == ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

impl Family {
    /// Writes the family in whichever format `encoder` writes. Names are
    /// given without the unit (the encoders append it, and OpenMetrics adds
    /// `# UNIT`) and counters without `_total` (the encoders append it).
    /// Help texts are our instruments' one-line descriptions.
    fn encode(&self, name: &str, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let metric_type = match self.kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        };
        let suffix = self.unit.as_ref().map(|unit| format!("_{}", unit.as_str()));
        let base = suffix
            .as_deref()
            .and_then(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        let unit = if base.len() < name.len() {
            self.unit.as_ref()
        } else {
            None
        };
        let mut metric = encoder.encode_descriptor(base, &self.help, unit, metric_type)?;
        for (labels, point) in &self.series {
            let mut series = metric.encode_family(labels)?;
            match (self.kind, point) {
                (Kind::Counter, Point::Number(n)) => encode_counter(&mut series, *n)?,
                (_, Point::Number(n)) => encode_gauge(&mut series, *n)?,
                (
                    _,
                    Point::Histogram {
                        sum,
                        count,
                        buckets,
                    },
                ) => {
                    series.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_counter(series: &mut MetricEncoder, value: Number) -> Result<(), std::fmt::Error> {
    match value {
        Number::U64(v) => series.encode_counter::<NoLabelSet, _, f64>(&v, None),
        // A monotonic sum is never negative.
        Number::I64(v) => {
            series.encode_counter::<NoLabelSet, _, f64>(&u64::try_from(v).unwrap_or(0), None)
        }
        Number::F64(v) => series.encode_counter::<NoLabelSet, _, f64>(&v, None),
    }
}

fn encode_gauge(series: &mut MetricEncoder, value: Number) -> Result<(), std::fmt::Error> {
    match value {
        // The encoders refuse u64 values above i64::MAX for gauges, which a
        // count of events would take centuries to reach: saturate rather
        // than fail the whole scrape.
        Number::U64(v) => series.encode_gauge(&i64::try_from(v).unwrap_or(i64::MAX)),
        Number::I64(v) => series.encode_gauge(&v),
        Number::F64(v) => series.encode_gauge(&v),
    }
}

/// A meter provider with only a Prometheus reader, and its [`Metrics`]: for
/// tests and tools that want metrics without the rest of the pipeline.
/// (Nothing here fails any more; the `Result` stays for its callers.)
pub fn prometheus_only() -> Result<(SdkMeterProvider, Metrics, PrometheusMetrics), TelemetryError> {
    let (prometheus, reader) = PrometheusMetrics::new();
    let provider = SdkMeterProvider::builder().with_reader(reader).build();
    let metrics = Metrics::new(&provider.meter("tongban"));
    Ok((provider, metrics, prometheus))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    /// One sample line: metric name, labels, value.
    #[derive(Debug, Clone, PartialEq)]
    pub(crate) struct Sample {
        pub name: String,
        pub labels: Vec<(String, String)>,
        pub value: f64,
    }

    impl Sample {
        pub fn label(&self, key: &str) -> Option<&str> {
            self.labels
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        }
    }

    fn valid_metric_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn valid_label_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    fn parse_value(s: &str) -> Result<f64, String> {
        match s {
            "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            _ => s
                .parse::<f64>()
                .map_err(|e| format!("bad value {s:?}: {e}")),
        }
    }

    /// `{a="x",b="y\"z"}` starting at `s[0] == '{'`; returns labels and the rest.
    type Labels = Vec<(String, String)>;

    fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
        let mut labels = Vec::new();
        let mut rest = &s[1..];
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix('}') {
                return Ok((labels, r));
            }
            let eq = rest.find('=').ok_or("label without =")?;
            let name = rest[..eq].trim();
            if !valid_label_name(name) {
                return Err(format!("bad label name {name:?}"));
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err("unterminated label value".into()),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            labels.push((name.to_owned(), value));
            rest = &rest[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }

    /// A strict reader of the Prometheus text format 0.0.4: HELP/TYPE
    /// comments, samples, and the histogram rules (buckets with `le`,
    /// non-decreasing, `+Inf` bucket equal to `_count`, a `_sum`).
    pub(crate) fn parse_exposition(
        text: &str,
    ) -> Result<(HashMap<String, String>, Vec<Sample>), String> {
        let mut types: HashMap<String, String> = HashMap::new();
        let mut helped: HashSet<String> = HashSet::new();
        let mut samples = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
            if line.trim().is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut parts = comment.trim_start().splitn(3, ' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("HELP"), Some(name), _)
                        if !valid_metric_name(name) || !helped.insert(name.to_owned()) =>
                    {
                        return Err(err("bad or repeated HELP".into()));
                    }
                    (Some("TYPE"), Some(name), Some(kind)) => {
                        if !valid_metric_name(name)
                            || !["counter", "gauge", "histogram", "summary", "untyped"]
                                .contains(&kind)
                            || types.insert(name.to_owned(), kind.to_owned()).is_some()
                        {
                            return Err(err("bad or repeated TYPE".into()));
                        }
                        if samples
                            .iter()
                            .any(|s: &Sample| family_of(&s.name, &types) == name)
                        {
                            return Err(err("TYPE after samples".into()));
                        }
                    }
                    _ => {}
                }
                continue;
            }
            let name_end = line
                .find(['{', ' '])
                .ok_or_else(|| err("no value".into()))?;
            let name = &line[..name_end];
            if !valid_metric_name(name) {
                return Err(err("bad metric name".into()));
            }
            let (labels, rest) = if line[name_end..].starts_with('{') {
                parse_labels(&line[name_end..]).map_err(&err)?
            } else {
                (Vec::new(), &line[name_end..])
            };
            let mut fields = rest.split_whitespace();
            let value =
                parse_value(fields.next().ok_or_else(|| err("no value".into()))?).map_err(&err)?;
            if let Some(ts) = fields.next() {
                ts.parse::<i64>()
                    .map_err(|e| err(format!("bad timestamp: {e}")))?;
            }
            if fields.next().is_some() {
                return Err(err("trailing text".into()));
            }
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        check_histograms(&types, &samples)?;
        Ok((types, samples))
    }

    fn family_of<'a>(sample: &'a str, types: &HashMap<String, String>) -> &'a str {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = sample.strip_suffix(suffix)
                && types.get(base).is_some_and(|t| t == "histogram")
            {
                return base;
            }
        }
        sample
    }

    fn check_histograms(types: &HashMap<String, String>, samples: &[Sample]) -> Result<(), String> {
        for (family, kind) in types {
            if kind != "histogram" {
                continue;
            }
            // Series identity: labels without `le`.
            // Per series: (le, cumulative count) buckets, sum, count.
            type Series = (Vec<(f64, f64)>, Option<f64>, Option<f64>);
            let mut series: HashMap<Labels, Series> = HashMap::new();
            for s in samples {
                let key: Vec<_> = s
                    .labels
                    .iter()
                    .filter(|(k, _)| k != "le")
                    .cloned()
                    .collect();
                if s.name == format!("{family}_bucket") {
                    let le = s.label("le").ok_or(format!("{family}_bucket without le"))?;
                    series
                        .entry(key)
                        .or_default()
                        .0
                        .push((parse_value(le)?, s.value));
                } else if s.name == format!("{family}_sum") {
                    series.entry(key).or_default().1 = Some(s.value);
                } else if s.name == format!("{family}_count") {
                    series.entry(key).or_default().2 = Some(s.value);
                }
            }
            for (labels, (buckets, sum, count)) in series {
                let count = count.ok_or(format!("{family}{labels:?} has no _count"))?;
                sum.ok_or(format!("{family}{labels:?} has no _sum"))?;
                let mut previous = (f64::NEG_INFINITY, 0.0);
                for &(le, cumulative) in &buckets {
                    if le <= previous.0 || cumulative < previous.1 {
                        return Err(format!("{family}{labels:?}: buckets out of order"));
                    }
                    previous = (le, cumulative);
                }
                if previous.0 != f64::INFINITY || previous.1 != count {
                    return Err(format!(
                        "{family}{labels:?}: +Inf bucket missing or not equal to _count"
                    ));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn find<'a>(
        samples: &'a [Sample],
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<&'a Sample> {
        samples
            .iter()
            .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
    }

    #[test]
    fn the_parser_rejects_malformed_text() {
        assert!(parse_exposition("# TYPE a counter\na_total 1\n").is_ok());
        assert!(parse_exposition("a{b=\"c} 1\n").is_err());
        assert!(parse_exposition("a 1 2 3\n").is_err());
        assert!(parse_exposition("1a 1\n").is_err());
        assert!(parse_exposition("a{1b=\"x\"} 1\n").is_err());
        assert!(parse_exposition("a one\n").is_err());
        let bad_histogram = "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n";
        assert!(parse_exposition(bad_histogram).is_err());
        let no_inf = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n";
        assert!(parse_exposition(no_inf).is_err());
    }

    #[test]
    fn prometheus_text_parses_and_moves_with_traffic() {
        let (_provider, metrics, prometheus) = prometheus_only().expect("prometheus");
        metrics.record_rpc(
            "tongban.v1.Exchange/Gather",
            tonic::Code::Ok,
            Duration::from_millis(3),
        );
        metrics.record_rpc(
            "tongban.v1.Exchange/Gather",
            tonic::Code::Ok,
            Duration::from_millis(40),
        );
        metrics.record_rpc(
            "tongban.v1.Exchange/Lookup",
            tonic::Code::PermissionDenied,
            Duration::from_micros(700),
        );
        metrics.record_department_query(
            "police",
            "police.identity",
            tonic::Code::Ok,
            Duration::from_millis(2),
        );
        metrics.record_department_query(
            "hrss",
            "hrss.unemployment",
            tonic::Code::DeadlineExceeded,
            Duration::from_secs(2),
        );
        metrics.record_audit_batch(17, Duration::from_millis(4));
        metrics.record_denial("NOT_GRANTED");
        metrics.record_denial("NOT_GRANTED");
        let held = metrics.inflight();
        let _other = metrics.inflight();
        drop(held);

        let text = prometheus.render().expect("render");
        let (types, samples) = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

        assert_eq!(
            types.get("tongban_rpc_requests_total").map(String::as_str),
            Some("counter")
        );
        assert_eq!(
            types
                .get("tongban_rpc_duration_seconds")
                .map(String::as_str),
            Some("histogram")
        );
        assert_eq!(
            types.get("tongban_rpc_inflight").map(String::as_str),
            Some("gauge")
        );
        assert_eq!(
            types
                .get("tongban_department_duration_seconds")
                .map(String::as_str),
            Some("histogram")
        );
        assert_eq!(
            types
                .get("tongban_audit_commit_duration_seconds")
                .map(String::as_str),
            Some("histogram")
        );
        assert_eq!(
            types.get("tongban_audit_batch_size").map(String::as_str),
            Some("histogram")
        );
        assert!(text.contains("# HELP tongban_rpc_requests_total gRPC requests served"));

        let gather = find(
            &samples,
            "tongban_rpc_requests_total",
            &[("method", "tongban.v1.Exchange/Gather"), ("code", "OK")],
        );
        assert_eq!(gather.map(|s| s.value), Some(2.0));
        let denied = find(
            &samples,
            "tongban_rpc_errors_total",
            &[
                ("method", "tongban.v1.Exchange/Lookup"),
                ("code", "PERMISSION_DENIED"),
            ],
        );
        assert_eq!(denied.map(|s| s.value), Some(1.0));
        assert!(
            find(
                &samples,
                "tongban_rpc_errors_total",
                &[("method", "tongban.v1.Exchange/Gather")]
            )
            .is_none()
        );
        // 3 ms and 40 ms: one at or under 5 ms, both under 50 ms.
        let le5 = find(
            &samples,
            "tongban_rpc_duration_seconds_bucket",
            &[("method", "tongban.v1.Exchange/Gather"), ("le", "0.005")],
        );
        assert_eq!(le5.map(|s| s.value), Some(1.0));
        let le50 = find(
            &samples,
            "tongban_rpc_duration_seconds_bucket",
            &[("method", "tongban.v1.Exchange/Gather"), ("le", "0.05")],
        );
        assert_eq!(le50.map(|s| s.value), Some(2.0));
        let sum = find(
            &samples,
            "tongban_rpc_duration_seconds_sum",
            &[("method", "tongban.v1.Exchange/Gather")],
        );
        assert!(sum.is_some_and(|s| (s.value - 0.043).abs() < 1e-9));
        let slow = find(
            &samples,
            "tongban_department_duration_seconds_count",
            &[
                ("department", "hrss"),
                ("evidence_type", "hrss.unemployment"),
                ("code", "DEADLINE_EXCEEDED"),
            ],
        );
        assert_eq!(slow.map(|s| s.value), Some(1.0));
        assert_eq!(
            find(&samples, "tongban_audit_batch_size_sum", &[]).map(|s| s.value),
            Some(17.0)
        );
        assert_eq!(
            find(&samples, "tongban_audit_batch_size_bucket", &[("le", "16")]).map(|s| s.value),
            Some(0.0)
        );
        assert_eq!(
            find(&samples, "tongban_audit_batch_size_bucket", &[("le", "32")]).map(|s| s.value),
            Some(1.0)
        );
        assert_eq!(
            find(
                &samples,
                "tongban_policy_denials_total",
                &[("reason", "NOT_GRANTED")]
            )
            .map(|s| s.value),
            Some(2.0)
        );
        assert_eq!(
            find(&samples, "tongban_rpc_inflight", &[]).map(|s| s.value),
            Some(1.0)
        );

        // Counters are cumulative across scrapes.
        metrics.record_denial("NOT_GRANTED");
        let (_, again) = parse_exposition(&prometheus.render().expect("render")).expect("parse");
        assert_eq!(
            find(
                &again,
                "tongban_policy_denials_total",
                &[("reason", "NOT_GRANTED")]
            )
            .map(|s| s.value),
            Some(3.0)
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let (_provider, metrics, prometheus) = prometheus_only().expect("prometheus");
        metrics.record_denial("odd \"reason\"\\with\nnewline");
        let text = prometheus.render().expect("render");
        let (_, samples) = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(
            find(
                &samples,
                "tongban_policy_denials_total",
                &[("reason", "odd \"reason\"\\with\nnewline")]
            )
            .is_some()
        );
    }

    #[test]
    fn the_classic_text_reads_as_the_former_exporter_wrote_it() {
        let (_provider, metrics, prometheus) = prometheus_only().expect("prometheus");
        metrics.record_rpc("Svc/M", tonic::Code::Ok, Duration::from_millis(2));
        metrics.record_audit_batch(3, Duration::from_millis(1));
        let _held = metrics.inflight();
        let text = prometheus.render().expect("render");
        for line in [
            "# HELP tongban_rpc_requests_total gRPC requests served, by method and status code",
            "# TYPE tongban_rpc_requests_total counter",
            "tongban_rpc_requests_total{code=\"OK\",method=\"Svc/M\",otel_scope_name=\"tongban\"} 1",
            "# TYPE tongban_rpc_duration_seconds histogram",
            "tongban_rpc_duration_seconds_bucket{code=\"OK\",method=\"Svc/M\",otel_scope_name=\"tongban\",le=\"1\"} 1",
            "tongban_audit_batch_size_bucket{otel_scope_name=\"tongban\",le=\"4\"} 1",
            "# TYPE tongban_rpc_inflight gauge",
            "tongban_rpc_inflight{otel_scope_name=\"tongban\"} 1",
            "# HELP target_info Target metadata",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        let (_, samples) = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            find(&samples, "tongban_audit_batch_size_sum", &[]).map(|s| s.value),
            Some(3.0)
        );

        let openmetrics = prometheus.render_openmetrics().expect("render");
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
        assert!(
            openmetrics
                .lines()
                .any(|l| l == "# TYPE tongban_rpc_requests counter"),
            "{openmetrics}"
        );
    }

    #[test]
    fn the_format_follows_the_accept_header() {
        use ExpositionFormat::{OpenMetrics, Prometheus};
        for (accept, expected) in [
            (None, Prometheus),
            (Some("*/*"), Prometheus),
            (Some("text/plain;version=0.0.4"), Prometheus),
            (
                Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
                OpenMetrics,
            ),
            (Some("Application/OpenMetrics-Text"), OpenMetrics),
            (
                Some("application/openmetrics-text;q=0,text/plain"),
                Prometheus,
            ),
            (Some("application/openmetrics-textual"), Prometheus),
        ] {
            assert_eq!(ExpositionFormat::negotiate(accept), expected, "{accept:?}");
        }
        assert_eq!(OpenMetrics.content_type(), OPENMETRICS_CONTENT_TYPE);
        assert_eq!(Prometheus.content_type(), PROMETHEUS_CONTENT_TYPE);
    }
}
