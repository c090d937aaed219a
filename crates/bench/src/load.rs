//! The load generator: N HTTP/2 connections × M concurrent streams, closed
//! loop (fixed concurrency), warm-up then a bounded measuring window. Every
//! path is driven by this same code so the numbers compare.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tongban_proto::v1::adapter_client::AdapterClient;
use tongban_proto::v1::exchange_client::ExchangeClient;
use tongban_proto::v1::{GatherRequest, LookupRequest, QueryRequest, gather_item};
use tongban_trust::{PeerIdentity, TlsClientConfig};
use tonic::transport::{Channel, Endpoint};

use crate::BenchError;

/// No single call may hang a run for longer than this.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the generator connects.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://127.0.0.1:<port>` or, with `tls`, `https://…`.
    pub url: String,
    /// Client certificate to present and the server identity to expect.
    pub tls: Option<(TlsClientConfig, PeerIdentity)>,
}

impl Target {
    pub fn plaintext(addr: std::net::SocketAddr) -> Self {
        Self {
            url: format!("http://{addr}"),
            tls: None,
        }
    }

    /// One new HTTP/2 connection (each call dials its own TCP socket).
    pub async fn connect(&self) -> Result<Channel, BenchError> {
        let connect_error = |e: String| BenchError::Connect {
            url: self.url.clone(),
            message: e,
        };
        match &self.tls {
            None => Endpoint::from_shared(self.url.clone())
                .map_err(|e| connect_error(e.to_string()))?
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .map_err(|e| connect_error(e.to_string())),
            Some((tls, expected)) => tongban_trust::connect_channel(&self.url, tls, Some(expected))
                .await
                .map_err(|e| connect_error(e.to_string())),
        }
    }
}

/// What each stream sends, again and again.
#[derive(Debug, Clone)]
pub enum Call {
    /// `Exchange/Lookup`.
    Lookup(LookupRequest),
    /// `Exchange/Gather`; every item must come back with evidence.
    Gather(GatherRequest),
    /// `Adapter/Query` (direct or through a plain proxy).
    Query(QueryRequest),
}

/// Shape and length of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSpec {
    pub connections: usize,
    /// Concurrent streams per connection.
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

impl LoadSpec {
    /// One request in flight at a time.
    pub fn single(warmup: Duration, duration: Duration) -> Self {
        Self {
            connections: 1,
            concurrency: 1,
            warmup,
            duration,
        }
    }
}

/// What a run measured (only calls completed inside the measuring window).
#[derive(Debug, Clone, Serialize)]
pub struct RunStats {
    pub connections: usize,
    pub concurrency: usize,
    pub seconds: f64,
    /// Successful calls completed in the window.
    pub requests: u64,
    /// Failed calls in the window.
    pub errors: u64,
    /// Failed calls during warm-up (not in `errors`).
    pub warmup_errors: u64,
    /// Successful exchange answers carrying an audit receipt.
    pub audited: u64,
    pub throughput_rps: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// The first failure seen, for diagnosis.
    pub first_error: Option<String>,
}

#[derive(Debug, Default)]
struct StreamTally {
    latencies_ns: Vec<u64>,
    errors: u64,
    warmup_errors: u64,
    audited: u64,
    first_error: Option<String>,
}

#[derive(Debug, Clone)]
enum Client {
    Exchange(ExchangeClient<Channel>),
    Adapter(AdapterClient<Channel>),
}

/// Why one call did not count as answered; the first is reported.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("{code:?}: {message}")]
    Status { code: tonic::Code, message: String },
    #[error("gather returned no items")]
    NoGatherItems,
    #[error("gather item {evidence_type}: code {code} {message}")]
    GatherItem {
        evidence_type: String,
        code: i32,
        message: String,
    },
    #[error("this call does not fit this endpoint")]
    WrongEndpoint,
    #[error("answer without evidence")]
    NoEvidence,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl From<tonic::Status> for CallError {
    fn from(s: tonic::Status) -> Self {
        Self::Status {
            code: s.code(),
            message: s.message().to_owned(),
        }
    }
}

impl Client {
    /// One call; `Ok(true)` when the answer carries an audit receipt.
    async fn call(&mut self, call: &Call) -> Result<bool, CallError> {
        let answer = match (self, call) {
            (Self::Exchange(c), Call::Lookup(r)) => c.lookup(r.clone()).await.map(|a| {
                let a = a.into_inner();
                (a.evidence.is_some(), a.receipt.is_some())
            })?,
            (Self::Exchange(c), Call::Gather(r)) => {
                let a = c.gather(r.clone()).await?.into_inner();
                if a.items.is_empty() {
                    return Err(CallError::NoGatherItems);
                }
                for item in &a.items {
                    if let Some(gather_item::Result::Error(e)) = &item.result {
                        return Err(CallError::GatherItem {
                            evidence_type: item.evidence_type.clone(),
                            code: e.code,
                            message: e.message.clone(),
                        });
                    }
                }
                let ok = a
                    .items
                    .iter()
                    .all(|i| matches!(i.result, Some(gather_item::Result::Evidence(_))));
                (ok, a.items.iter().all(|i| i.receipt.is_some()))
            }
            (Self::Adapter(c), Call::Query(r)) => c
                .query(r.clone())
                .await
                .map(|a| (a.into_inner().evidence.is_some(), false))?,
            _ => return Err(CallError::WrongEndpoint),
        };
        match answer {
            (true, audited) => Ok(audited),
            (false, _) => Err(CallError::NoEvidence),
        }
    }
}

/// Drives `calls` against `target` as `spec` says and returns the stats:
/// each stream goes through them in turn, from its own offset, so a load
/// about many people asks about all of them.
pub async fn run(target: &Target, calls: &[Call], spec: LoadSpec) -> Result<RunStats, BenchError> {
    let Some(call) = calls.first() else {
        return Err(BenchError::Invalid("no call to make".into()));
    };
    if spec.connections == 0 || spec.concurrency == 0 {
        return Err(BenchError::Invalid(
            "connections and concurrency must be at least 1".into(),
        ));
    }
    let mut clients = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        let channel = target.connect().await?;
        clients.push(match call {
            Call::Query(_) => Client::Adapter(AdapterClient::new(channel)),
            Call::Lookup(_) | Call::Gather(_) => Client::Exchange(ExchangeClient::new(channel)),
        });
    }
    let calls: Arc<Vec<Call>> = Arc::new(calls.to_vec());
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let measure_until = measure_from + spec.duration;
    let mut streams = Vec::with_capacity(spec.connections * spec.concurrency);
    for client in &clients {
        for _ in 0..spec.concurrency {
            let mut client = client.clone();
            let calls = calls.clone();
            let mut next = streams.len();
            streams.push(tokio::spawn(async move {
                let mut tally = StreamTally::default();
                loop {
                    let sent = Instant::now();
                    if sent >= measure_until {
                        break;
                    }
                    let call = &calls[next % calls.len()];
                    next += 1;
                    let outcome = match tokio::time::timeout(CALL_TIMEOUT, client.call(call)).await
                    {
                        Ok(r) => r,
                        Err(_) => Err(CallError::Timeout(CALL_TIMEOUT)),
                    };
                    let done = Instant::now();
                    let counted = done >= measure_from && done <= measure_until;
                    match outcome {
                        Ok(audited) if counted => {
                            let ns = u64::try_from((done - sent).as_nanos()).unwrap_or(u64::MAX);
                            tally.latencies_ns.push(ns);
                            tally.audited += u64::from(audited);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            if done < measure_from {
                                tally.warmup_errors += 1;
                            } else {
                                tally.errors += 1;
                            }
                            tally.first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                tally
            }));
        }
    }
    let mut latencies = Vec::new();
    let mut total = StreamTally::default();
    for stream in futures::future::join_all(streams).await {
        let tally =
            stream.map_err(|e| BenchError::Invalid(format!("a load stream failed: {e}")))?;
        latencies.extend(tally.latencies_ns);
        total.errors += tally.errors;
        total.warmup_errors += tally.warmup_errors;
        total.audited += tally.audited;
        if total.first_error.is_none() {
            total.first_error = tally.first_error;
        }
    }
    Ok(summarise(spec, latencies, total))
}

fn summarise(spec: LoadSpec, mut latencies: Vec<u64>, total: StreamTally) -> RunStats {
    latencies.sort_unstable();
    let seconds = spec.duration.as_secs_f64();
    let requests = latencies.len() as u64;
    let us = |ns: u64| ns as f64 / 1000.0;
    let mean_us = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().map(|&n| n as f64).sum::<f64>() / latencies.len() as f64 / 1000.0
    };
    RunStats {
        connections: spec.connections,
        concurrency: spec.concurrency,
        seconds,
        requests,
        errors: total.errors,
        warmup_errors: total.warmup_errors,
        audited: total.audited,
        throughput_rps: if seconds > 0.0 {
            requests as f64 / seconds
        } else {
            0.0
        },
        mean_us,
        p50_us: us(percentile(&latencies, 0.50)),
        p99_us: us(percentile(&latencies, 0.99)),
        p999_us: us(percentile(&latencies, 0.999)),
        max_us: us(latencies.last().copied().unwrap_or(0)),
        first_error: total.first_error,
    }
}

/// Nearest-rank percentile of sorted samples (0 when there are none).
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&samples, 0.50), 500);
        assert_eq!(percentile(&samples, 0.99), 990);
        assert_eq!(percentile(&samples, 0.999), 999);
        assert_eq!(percentile(&samples, 1.0), 1000);
        assert_eq!(percentile(&[7], 0.999), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn summary_counts_only_the_window() {
        let spec = LoadSpec {
            connections: 2,
            concurrency: 3,
            warmup: Duration::from_millis(10),
            duration: Duration::from_secs(2),
        };
        let total = StreamTally {
            errors: 1,
            warmup_errors: 2,
            audited: 4,
            ..Default::default()
        };
        let s = summarise(spec, vec![3000, 1000, 2000, 4000], total);
        assert_eq!(s.requests, 4);
        assert!((s.throughput_rps - 2.0).abs() < 1e-9);
        assert!((s.p50_us - 2.0).abs() < 1e-9);
        assert!((s.max_us - 4.0).abs() < 1e-9);
        assert!((s.mean_us - 2.5).abs() < 1e-9);
        assert_eq!((s.errors, s.warmup_errors, s.audited), (1, 2, 4));
    }
}
