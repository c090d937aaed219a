//! Health that reflects readiness (audit store, departments), server
//! reflection on the exchange and the adapters, and the Prometheus endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::obs;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tongban_devkit::reference::Dept;
use tongban_devkit::reference::stories::{LAID_OFF_WORKER, MOSUO_VILLAGER, SUBSISTENCE_RECIPIENT};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;
const WITHIN: Duration = Duration::from_secs(15);

async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The health status of `service`, or -1 when the check fails.
async fn health(channel: &Channel, service: &str) -> i32 {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.into(),
    });
    request.set_timeout(Duration::from_secs(5));
    HealthClient::new(channel.clone())
        .check(request)
        .await
        .map_or(-1, |r| r.into_inner().status)
}

async fn wait_health(channel: &Channel, service: &str, want: i32) {
    obs::eventually(WITHIN, &format!("{service:?} to be {want}"), || async {
        health(channel, service).await == want
    })
    .await;
}

/// The services a server lists over gRPC reflection (v1).
async fn reflected_services(channel: &Channel) -> Vec<String> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let first = responses.message().await.unwrap().unwrap();
    match first.message_response.unwrap() {
        MessageResponse::ListServicesResponse(list) => {
            let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            names.sort();
            names
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_audit_store_and_each_department_and_reflection_lists_services() {
    // The audit store is PostgreSQL in a schema of this test, reached
    // through a proxy the test can cut.
    let schema = format!(
        "obs_health_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let admin = sqlx::PgPool::connect(PG).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let proxy = obs::CuttableProxy::start("127.0.0.1:5432".parse().unwrap()).await;

    let dir = tempfile::tempdir().unwrap();
    let mut adapters = obs::Adapters::start(dir.path(), None).await;
    // The plaintext health-only port (for probes without a certificate).
    let health_addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let config = obs::exchange_config(
        dir.path(),
        &adapters,
        &format!(
            "health_probe_ms = 100\nhealth_listen = \"{health_addr}\"\n[audit]\nstore = \"postgres://postgres@{}/test\"\npostgres_schema = \"{schema}\"\n",
            proxy.addr()
        ),
    );
    let exchange = tongban_exchange::start(config, tongban_exchange::StartOptions::default())
        .await
        .unwrap();
    let ch = channel(exchange.local_addr()).await;

    wait_health(&ch, "", SERVING).await;
    wait_health(&ch, tongban_exchange::EXCHANGE_HEALTH_SERVICE, SERVING).await;
    for dept in obs::DEPARTMENTS {
        wait_health(
            &ch,
            &tongban_exchange::department_health_service(dept.id()),
            SERVING,
        )
        .await;
    }
    // The node answers while ready.
    let mut client = obs::exchange_client(exchange.local_addr()).await;
    obs::gather(&mut client, "unemployment-benefit", &LAID_OFF_WORKER)
        .await
        .unwrap();

    // The audit store goes away: the node is not ready; it comes back.
    let probe_port = channel(health_addr).await;
    assert_eq!(health(&probe_port, "").await, SERVING);
    proxy.cut();
    wait_health(&ch, "", NOT_SERVING).await;
    wait_health(&probe_port, "", NOT_SERVING).await;
    wait_health(&ch, tongban_exchange::EXCHANGE_HEALTH_SERVICE, NOT_SERVING).await;
    proxy.restore();
    wait_health(&ch, "", SERVING).await;
    wait_health(&ch, tongban_exchange::EXCHANGE_HEALTH_SERVICE, SERVING).await;

    // One department goes away: only its status changes; it comes back.
    let civil = tongban_exchange::department_health_service(Dept::Civil.id());
    adapters.stop(Dept::Civil).await;
    wait_health(&ch, &civil, NOT_SERVING).await;
    assert_eq!(
        health(
            &ch,
            &tongban_exchange::department_health_service(Dept::Police.id())
        )
        .await,
        SERVING
    );
    assert_eq!(health(&ch, "").await, SERVING);
    adapters.restart(Dept::Civil).await;
    wait_health(&ch, &civil, SERVING).await;

    // Reflection: the exchange and an adapter describe themselves.
    let exchange_services = reflected_services(&ch).await;
    for s in [
        "tongban.v1.Exchange",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            exchange_services.iter().any(|n| n == s),
            "{exchange_services:?}"
        );
    }
    let adapter_addr: SocketAddr = adapters.url(Dept::Police)["http://".len()..]
        .parse()
        .unwrap();
    let adapter_channel = channel(adapter_addr).await;
    let adapter_services = reflected_services(&adapter_channel).await;
    for s in ["tongban.v1.Adapter", "grpc.health.v1.Health"] {
        assert!(
            adapter_services.iter().any(|n| n == s),
            "{adapter_services:?}"
        );
    }
    assert_eq!(
        health(&adapter_channel, "tongban.v1.Adapter").await,
        SERVING
    );
    assert_eq!(health(&adapter_channel, "").await, SERVING);

    exchange.shutdown().await.unwrap();
    adapters.shutdown().await;
    drop(proxy);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format strictly enough to catch a broken
/// rendering: comments are `# HELP`/`# TYPE`, every sample is
/// `name{label="value",...} number`.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "bad comment {line:?}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line:?}"));
                let mut labels = BTreeMap::new();
                let mut rest = body;
                while !rest.is_empty() {
                    let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line:?}"));
                    let end = after.find('"').unwrap_or_else(|| panic!("{line:?}"));
                    labels.insert(key.to_owned(), after[..end].to_owned());
                    rest = after[end + 1..].trim_start_matches(',');
                }
                (name, labels)
            }
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

/// Sum of the samples named `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

async fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let (status, body) = obs::http_get(addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    parse_exposition(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_endpoint_parses_and_counters_move_with_traffic() {
    let (_provider, metrics, prometheus) = tongban_telemetry::metrics::prometheus_only().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let adapters = obs::Adapters::start(dir.path(), Some(metrics.clone())).await;
    let config = obs::exchange_config(dir.path(), &adapters, "[admin]\nlisten = \"127.0.0.1:0\"\n");
    let exchange = tongban_exchange::start(
        config,
        tongban_exchange::StartOptions {
            metrics: Some(metrics),
            prometheus: Some(prometheus),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let admin = exchange.admin_addr().expect("admin endpoint runs");
    assert!(admin.ip().is_loopback());
    let mut client = obs::exchange_client(exchange.local_addr()).await;

    let gather_ok = [("method", "tongban.v1.Exchange/Gather"), ("code", "OK")];
    let before = scrape(admin).await;
    let gathers_before = value(&before, "tongban_rpc_requests_total", &gather_ok);

    for _ in 0..3 {
        obs::gather(&mut client, "subsistence-allowance", &SUBSISTENCE_RECIPIENT)
            .await
            .unwrap();
    }
    // Not granted to this caller: a policy denial.
    let denied = obs::gather(&mut client, "temporary-id-card", &MOSUO_VILLAGER)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    let after = scrape(admin).await;
    assert_eq!(
        value(&after, "tongban_rpc_requests_total", &gather_ok) - gathers_before,
        3.0
    );
    assert_eq!(
        value(
            &after,
            "tongban_rpc_errors_total",
            &[
                ("method", "tongban.v1.Exchange/Gather"),
                ("code", "PERMISSION_DENIED")
            ]
        ),
        1.0
    );
    assert!(
        value(
            &after,
            "tongban_rpc_duration_seconds_count",
            &[("method", "tongban.v1.Exchange/Gather")]
        ) >= 4.0
    );
    // The adapters (same process, same registry here) count their side.
    assert_eq!(
        value(
            &after,
            "tongban_rpc_requests_total",
            &[("method", "tongban.v1.Adapter/Query"), ("code", "OK")]
        ),
        18.0
    );
    for dept in ["police", "civil", "hrss"] {
        assert_eq!(
            value(
                &after,
                "tongban_department_duration_seconds_count",
                &[("department", dept), ("code", "OK")]
            ),
            6.0,
            "{dept}"
        );
    }
    assert_eq!(
        value(
            &after,
            "tongban_policy_denials_total",
            &[("reason", "MATTER_NOT_GRANTED")]
        ),
        1.0
    );
    // 20 audit entries — 18 evidence requests, the refused Gather and the
    // policy in force at start-up — committed in batches.
    assert_eq!(value(&after, "tongban_audit_batch_size_sum", &[]), 20.0);
    let batches = value(&after, "tongban_audit_batch_size_count", &[]);
    assert!((1.0..=20.0).contains(&batches), "{batches}");
    assert_eq!(
        value(&after, "tongban_audit_commit_duration_seconds_count", &[]),
        batches
    );
    assert!(after.iter().any(|s| s.name == "tongban_rpc_inflight"));
    // Nothing personal in any label.
    for s in &after {
        for v in s.labels.values() {
            assert!(!v.contains(SUBSISTENCE_RECIPIENT.id_number));
        }
    }
    let (status, _) = obs::http_get(admin, "/nothing").await;
    assert!(status.contains("404"), "{status}");

    exchange.shutdown().await.unwrap();
    adapters.shutdown().await;
}
