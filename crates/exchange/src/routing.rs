//! Routing: each department's adapter behind a pooled gRPC channel, with the
//! caller's deadline capped per department.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tongban_proto::v1::adapter_client::AdapterClient;
use tongban_proto::v1::{Evidence, QueryRequest};
use tongban_telemetry::Metrics;
use tonic::Code;
use tonic::transport::Channel;

use crate::error::ExchangeError;

/// One department's adapter, reached over a shared HTTP/2 channel.
#[derive(Debug, Clone)]
pub struct Department {
    id: String,
    channel: Channel,
    client: AdapterClient<Channel>,
    max_timeout: Duration,
    metrics: Option<Metrics>,
}

impl Department {
    /// `channel` may be lazy: the first request connects.
    pub fn new(id: impl Into<String>, channel: Channel, max_timeout: Duration) -> Self {
        Self {
            id: id.into(),
            client: AdapterClient::new(channel.clone()),
            channel,
            max_timeout,
            metrics: None,
        }
    }

    /// Records every query's latency and outcome in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The channel to the adapter (also carries its health service).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The longest the exchange waits for this department.
    pub fn max_timeout(&self) -> Duration {
        self.max_timeout
    }

    /// Asks the adapter, within the caller's deadline capped by this
    /// department's configured maximum. The span is the client side of the
    /// hop; its W3C context travels in the request so the adapter's span is
    /// its child.
    #[tracing::instrument(
        name = "department.query",
        skip_all,
        fields(otel.kind = "client", department = %self.id, evidence_type = %request.evidence_type)
    )]
    pub async fn query(
        &self,
        request: QueryRequest,
        caller_deadline: Option<Instant>,
    ) -> Result<Evidence, ExchangeError> {
        let started = Instant::now();
        let evidence_type = request.evidence_type.clone();
        let outcome = self.ask(request, caller_deadline).await;
        if let Some(metrics) = &self.metrics {
            let code = match &outcome {
                Ok(_) => Code::Ok,
                Err(e) => e.code(),
            };
            metrics.record_department_query(&self.id, &evidence_type, code, started.elapsed());
        }
        outcome
    }

    async fn ask(
        &self,
        request: QueryRequest,
        caller_deadline: Option<Instant>,
    ) -> Result<Evidence, ExchangeError> {
        let timeout = caller_deadline.map_or(self.max_timeout, |at| {
            department_budget(at.saturating_duration_since(Instant::now())).min(self.max_timeout)
        });
        let mut request = tonic::Request::new(request);
        // Tell the adapter how long it has, so it can stop early too.
        request.set_timeout(timeout);
        tongban_telemetry::inject_trace_context(request.metadata_mut());
        let mut client = self.client.clone();
        let answer = tokio::time::timeout(timeout, client.query(request)).await;
        let status = match answer {
            Err(_elapsed) => {
                return Err(ExchangeError::DepartmentTimeout {
                    department: self.id.clone(),
                    after: timeout,
                });
            }
            Ok(Ok(response)) => {
                return response
                    .into_inner()
                    .evidence
                    .ok_or_else(|| ExchangeError::BadAnswer {
                        department: self.id.clone(),
                        detail: "answer without evidence".into(),
                    });
            }
            Ok(Err(status)) => status,
        };
        Err(match status.code() {
            Code::Unavailable | Code::Unknown if is_transport_failure(&status) => {
                ExchangeError::DepartmentUnavailable {
                    department: self.id.clone(),
                    detail: status.message().to_owned(),
                }
            }
            Code::Unavailable => ExchangeError::DepartmentUnavailable {
                department: self.id.clone(),
                detail: status.message().to_owned(),
            },
            Code::DeadlineExceeded | Code::Cancelled => ExchangeError::DepartmentTimeout {
                department: self.id.clone(),
                after: timeout,
            },
            // The adapter's own failures are not the caller's business.
            Code::Internal | Code::Unknown | Code::DataLoss | Code::Unimplemented => {
                tracing::warn!(department = %self.id, code = ?status.code(), message = status.message(), "department failed");
                ExchangeError::BadAnswer {
                    department: self.id.clone(),
                    detail: format!("the department failed ({:?})", status.code()),
                }
            }
            _ => ExchangeError::Department {
                department: self.id.clone(),
                status,
            },
        })
    }
}

/// A connection failure surfaces as UNAVAILABLE or UNKNOWN with a transport
/// error as its source.
fn is_transport_failure(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// Every department the exchange can reach, by department id.
#[derive(Debug, Clone, Default)]
pub struct Departments {
    by_id: HashMap<String, Department>,
}

impl Departments {
    pub fn new(departments: impl IntoIterator<Item = Department>) -> Self {
        Self {
            by_id: departments.into_iter().map(|d| (d.id.clone(), d)).collect(),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Department> {
        self.by_id.get(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.by_id.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Department> {
        self.by_id.values()
    }
}

/// How much of the caller's remaining time a department may use: the rest is
/// kept back so the exchange can still commit the audit entry and answer
/// (DEADLINE_EXCEEDED, with a receipt) before the caller gives up.
pub fn department_budget(remaining: Duration) -> Duration {
    let reserve = (remaining / 10).clamp(Duration::from_millis(5), Duration::from_millis(100));
    remaining.saturating_sub(reserve)
}

/// Parses a `grpc-timeout` header value ("100m", "5S", ...).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn department_budget_keeps_time_back() {
        assert_eq!(
            department_budget(Duration::from_millis(300)),
            Duration::from_millis(270)
        );
        assert_eq!(
            department_budget(Duration::from_secs(10)),
            Duration::from_millis(9900)
        );
        assert_eq!(
            department_budget(Duration::from_millis(20)),
            Duration::from_millis(15)
        );
        assert_eq!(department_budget(Duration::from_millis(3)), Duration::ZERO);
    }

    #[test]
    fn grpc_timeout_values() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("250u"), Some(Duration::from_micros(250)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(parse_grpc_timeout("5"), None);
        assert_eq!(parse_grpc_timeout("1234567890S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("-5S"), None);
    }
}
