//! Shared by the tests that run the real `tongban` binary: a stand-in
//! department and a way to start `tongban serve` as a child process.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tongban_proto::v1::adapter_server::{Adapter, AdapterServer};
use tongban_proto::v1::{DescribeRequest, DescribeResponse, Evidence, QueryRequest, QueryResponse};

/// A department that answers every query after `delay`, with no fields.
#[derive(Debug, Clone)]
pub struct StubAdapter {
    pub delay: Duration,
}

#[tonic::async_trait]
impl Adapter for StubAdapter {
    async fn query(
        &self,
        request: tonic::Request<QueryRequest>,
    ) -> Result<tonic::Response<QueryResponse>, tonic::Status> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let evidence_type = request.into_inner().evidence_type;
        Ok(tonic::Response::new(QueryResponse {
            evidence: Some(Evidence {
                department: evidence_type
                    .split('.')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                evidence_type,
                current_as_of: None,
                fields: Vec::new(),
            }),
        }))
    }

    async fn describe(
        &self,
        _: tonic::Request<DescribeRequest>,
    ) -> Result<tonic::Response<DescribeResponse>, tonic::Status> {
        Ok(tonic::Response::new(DescribeResponse::default()))
    }
}

/// Serves a [`StubAdapter`] on 127.0.0.1 (plaintext) and says where.
pub async fn spawn_adapter(delay: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AdapterServer::new(StubAdapter { delay }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

/// Starts `tongban serve --config <config>` with `RUST_LOG=<log>` and reads
/// where it listens from its first line.
pub async fn spawn_exchange(config: &Path, log: &str) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tongban"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", log)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the exchange says where it listens")
        .unwrap()
        .unwrap();
    let addr = line
        .strip_prefix("exchange listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    // Keep draining stdout so the child never blocks on it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}
