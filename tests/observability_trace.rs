//! One Gather is one trace: caller -> exchange -> every department adapter,
//! exported over OTLP to an in-process collector. `init` installs the
//! process-wide subscriber, so this test has a binary of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "obs/mod.rs"]
mod obs;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tongban_devkit::reference::stories::SUBSISTENCE_RECIPIENT;
use tongban_telemetry::testing::{OtlpReceiver, ReceivedSpan};
use tongban_telemetry::{LogOutput, TelemetryOptions};
use tracing::Instrument;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gather_is_one_trace_with_a_child_span_per_department() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let mut options = TelemetryOptions::new("tongban-exchange");
    options.otlp_endpoint = Some(receiver.endpoint());
    options.log_output = LogOutput::TestWriter;
    let guard = tongban_telemetry::init(options).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (adapters, exchange) = obs::start_exchange(dir.path(), guard.metrics()).await;
    let mut client = obs::exchange_client(exchange.local_addr()).await;

    // The caller's own span: its W3C context travels in the request.
    let caller_span = tracing::info_span!("service_point.gather");
    let answer = async {
        let mut request = obs::gather_request("subsistence-allowance", &SUBSISTENCE_RECIPIENT);
        tongban_telemetry::inject_trace_context(request.metadata_mut());
        assert!(request.metadata().get("traceparent").is_some());
        client.gather(request).await.unwrap().into_inner()
    }
    .instrument(caller_span)
    .await;
    let departments_asked: BTreeSet<String> = answer
        .items
        .iter()
        .map(|i| i.evidence_type.split('.').next().unwrap().to_owned())
        .collect();
    assert_eq!(answer.items.len(), 6);
    assert_eq!(departments_asked.len(), 3, "{departments_asked:?}");

    let mut spans = Vec::new();
    for _ in 0..50 {
        guard.force_flush_async().await.unwrap();
        spans = receiver.spans();
        if spans
            .iter()
            .filter(|s| s.name == "tongban.v1.Adapter/Query")
            .count()
            >= 6
            && spans.iter().any(|s| s.name == "tongban.v1.Exchange/Gather")
            && spans.iter().any(|s| s.name == "service_point.gather")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let root = one(&spans, "service_point.gather");
    assert!(root.is_root());
    let trace: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .collect();
    let by_id: HashMap<&str, &ReceivedSpan> =
        trace.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let is_under = |span: &ReceivedSpan, ancestor: &ReceivedSpan| {
        let mut parent = span.parent_span_id.as_str();
        for _ in 0..32 {
            if parent == ancestor.span_id {
                return true;
            }
            match by_id.get(parent) {
                Some(p) => parent = p.parent_span_id.as_str(),
                None => return false,
            }
        }
        false
    };

    // The exchange's server span is the caller's child.
    let exchange_span = one(&spans, "tongban.v1.Exchange/Gather");
    assert_eq!(exchange_span.trace_id, root.trace_id, "one trace");
    assert_eq!(exchange_span.parent_span_id, root.span_id);
    assert_eq!(exchange_span.kind, ReceivedSpan::KIND_SERVER);

    // One client span per department query, under the exchange's span.
    let queries: Vec<&ReceivedSpan> = trace
        .iter()
        .copied()
        .filter(|s| s.name == "department.query")
        .collect();
    assert_eq!(queries.len(), 6, "{queries:#?}");
    let mut departments = BTreeSet::new();
    for q in &queries {
        assert_eq!(q.kind, ReceivedSpan::KIND_CLIENT);
        assert!(is_under(q, exchange_span), "{q:#?}");
        departments.insert(q.attribute("department").unwrap().to_owned());
    }
    assert_eq!(departments, departments_asked);

    // Each adapter's server span is the child of exactly one query span.
    let adapter_spans: Vec<&ReceivedSpan> = trace
        .iter()
        .copied()
        .filter(|s| s.name == "tongban.v1.Adapter/Query")
        .collect();
    assert_eq!(adapter_spans.len(), 6, "{adapter_spans:#?}");
    let mut parents = BTreeSet::new();
    for a in &adapter_spans {
        assert_eq!(a.kind, ReceivedSpan::KIND_SERVER);
        let parent = by_id[a.parent_span_id.as_str()];
        assert_eq!(parent.name, "department.query");
        parents.insert(a.parent_span_id.clone());
    }
    assert_eq!(parents.len(), 6, "one adapter span per query");

    // Nothing identifying leaves in span names or attributes.
    for s in &spans {
        let text = format!("{} {:?}", s.name, s.attributes);
        assert!(!text.contains(SUBSISTENCE_RECIPIENT.id_number), "{s:#?}");
        assert!(!text.contains(SUBSISTENCE_RECIPIENT.name), "{s:#?}");
    }

    // The audit log carries the same trace id, for correlation.
    exchange.shutdown().await.unwrap();
    let store = tongban_audit::SqliteStore::open(&dir.path().join("audit.db"))
        .await
        .unwrap();
    // Entry 0 is the policy in force at start-up; then the Gather's six.
    for index in 1..7 {
        let entry = tongban_audit::AuditStore::entry(&store, "exchange-1", index)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(entry.entry.trace_id, root.trace_id, "audit entry {index}");
    }
    adapters.shutdown().await;
    guard.shutdown_async().await.unwrap();
    receiver.shutdown().await;
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "exactly one {name} span in {spans:#?}");
    found[0]
}
