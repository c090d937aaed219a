//! `init` installs the process-wide subscriber, so it gets a test binary
//! (a process) of its own, on the multi-thread runtime the binaries use.

use std::time::Duration;

use tongban_telemetry::testing::OtlpReceiver;
use tongban_telemetry::{LogOutput, TelemetryError, TelemetryOptions, current_trace_id, init};
use tracing::Instrument;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_installs_the_global_pipeline_once() {
    let receiver = OtlpReceiver::start().await.expect("receiver");
    let mut options = TelemetryOptions::new("tongban-exchange");
    options.otlp_endpoint = Some(receiver.endpoint());
    options.log_output = LogOutput::TestWriter;
    let guard = init(options.clone()).expect("init");
    assert!(matches!(
        init(options),
        Err(TelemetryError::AlreadyInitialised)
    ));

    // Spans from any worker thread reach the global pipeline.
    let trace_id = tokio::spawn(
        async {
            tokio::task::yield_now().await;
            tracing::info!("inside the request");
            current_trace_id()
        }
        .instrument(tracing::info_span!("Exchange/Gather")),
    )
    .await
    .expect("task");
    assert_eq!(trace_id.len(), 32);

    guard.metrics().record_denial("NOT_GRANTED");
    guard.force_flush().expect("flush");
    let spans = receiver
        .wait_for_spans(Duration::from_secs(10), |s| !s.is_empty())
        .await;
    let [span] = &spans[..] else {
        panic!("{spans:#?}")
    };
    assert_eq!(span.name, "Exchange/Gather");
    assert_eq!(span.trace_id, trace_id);
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        assert_eq!(span.service_name, "tongban-exchange");
    }
    assert!(
        receiver
            .wait_for_metric("tongban.policy.denials", Duration::from_secs(10))
            .await
    );

    let start = std::time::Instant::now();
    guard.shutdown().expect("shutdown");
    assert!(start.elapsed() < Duration::from_secs(5));
    receiver.shutdown().await;
}
