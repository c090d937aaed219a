//! With no OTLP exporter configured nothing is recorded, yet trace ids still
//! flow: the caller's W3C trace id is written into every audit entry of its
//! call, and a call without one gets a fresh id of its own. `init` installs
//! the process-wide subscriber, so this test has a binary of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "obs/mod.rs"]
mod obs;

use std::collections::BTreeSet;

use tongban_audit::{AuditStore, SqliteStore};
use tongban_devkit::reference::stories::SUBSISTENCE_RECIPIENT;
use tongban_telemetry::{LogOutput, TelemetryOptions};

/// The trace ids of the audit entries behind a Gather's receipts.
async fn audited_trace_ids(
    store: &SqliteStore,
    answer: &tongban_proto::v1::GatherResponse,
) -> Vec<String> {
    let mut ids = Vec::new();
    for item in &answer.items {
        let receipt = item.receipt.as_ref().expect("every item is audited");
        let entry = store
            .entry(&receipt.node, receipt.index)
            .await
            .unwrap()
            .expect("the receipt's entry is stored");
        ids.push(entry.entry.trace_id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_trace_id_reaches_every_audit_entry_without_an_exporter() {
    let mut options = TelemetryOptions::new("tongban-exchange");
    options.log_output = LogOutput::TestWriter;
    let guard = tongban_telemetry::init(options).unwrap();
    if guard.exporting_traces() {
        // An OTEL_EXPORTER_OTLP_* variable in the environment turned export
        // on; this test is about running without one.
        eprintln!("skipping: an OTLP exporter is configured by the environment");
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let (adapters, exchange) = obs::start_exchange(dir.path(), guard.metrics()).await;
    let mut client = obs::exchange_client(exchange.local_addr()).await;
    let store = SqliteStore::open(&dir.path().join("audit.db"))
        .await
        .unwrap();

    // A caller that propagates W3C trace context.
    let caller_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut request = obs::gather_request("subsistence-allowance", &SUBSISTENCE_RECIPIENT);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{caller_trace}-b7ad6b7169203331-01")
            .parse()
            .unwrap(),
    );
    let answer = client.gather(request).await.unwrap().into_inner();
    assert_eq!(answer.items.len(), 6);
    let ids = audited_trace_ids(&store, &answer).await;
    assert!(ids.iter().all(|id| id == caller_trace), "{ids:?}");

    // A caller that does not: the exchange starts a trace, one per call.
    let answer = client
        .gather(obs::gather_request(
            "subsistence-allowance",
            &SUBSISTENCE_RECIPIENT,
        ))
        .await
        .unwrap()
        .into_inner();
    let ids: BTreeSet<String> = audited_trace_ids(&store, &answer)
        .await
        .into_iter()
        .collect();
    assert_eq!(ids.len(), 1, "one trace for the call: {ids:?}");
    let id = ids.first().unwrap();
    assert!(
        id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()) && id != caller_trace,
        "{id:?}"
    );

    exchange.shutdown().await.unwrap();
    adapters.shutdown().await;
    guard.shutdown_async().await.unwrap();
}
