//! Routing: each department's adapters behind pooled gRPC channels, with the
//! caller's deadline capped per department, load balancing over endpoints
//! (power of two choices), outlier ejection (a dead endpoint fails fast),
//! a per-department concurrency limit (shed, don't queue) and budgeted
//! retries of unreachable endpoints.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::Semaphore;

use tongban_proto::v1::adapter_client::AdapterClient;
use tongban_proto::v1::{Evidence, QueryRequest};
use tongban_telemetry::Metrics;
use tonic::Code;
use tonic::transport::Channel;

use crate::error::ExchangeError;

/// How one department is protected from overload and failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Resilience {
    /// Requests in flight to the department at once; more are shed with
    /// RESOURCE_EXHAUSTED rather than queued.
    pub max_in_flight: usize,
    /// Consecutive failures (unreachable, timed out, failed) after which an
    /// endpoint is taken out of rotation.
    pub eject_after: u32,
    /// First time out of rotation; doubles on each failed probe.
    pub eject_for: Duration,
    /// Longest time out of rotation.
    pub eject_max: Duration,
    /// Retries allowed, as a share of requests (on another endpoint, only
    /// when the first could not be reached, within the deadline).
    pub retry_ratio: f64,
}

impl Default for Resilience {
    fn default() -> Self {
        Self {
            max_in_flight: 512,
            eject_after: 5,
            eject_for: Duration::from_millis(500),
            eject_max: Duration::from_secs(30),
            retry_ratio: 0.2,
        }
    }
}

/// One adapter endpoint of a department, with its load and health.
#[derive(Debug)]
struct Endpoint {
    url: String,
    channel: Channel,
    client: AdapterClient<Channel>,
    in_flight: AtomicUsize,
    breaker: Mutex<Breaker>,
}

/// Outlier detection for one endpoint: closed (in rotation), open (out until
/// `open_until`), or half-open (one probe request allowed after that).
#[derive(Debug, Default)]
struct Breaker {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    cooldown: Duration,
    probing: bool,
}

impl Breaker {
    /// May a request go here now? Claims the probe slot of a half-open one.
    fn admit(&mut self, now: Instant) -> bool {
        match self.open_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) if self.probing => false,
            Some(_) => {
                self.probing = true;
                true
            }
        }
    }

    fn is_available(&self, now: Instant) -> bool {
        match self.open_until {
            None => true,
            Some(until) => now >= until && !self.probing,
        }
    }

    fn success(&mut self) {
        *self = Self::default();
    }

    /// Returns true when this failure takes the endpoint out of rotation.
    fn failure(&mut self, now: Instant, policy: &Resilience) -> bool {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let was_probe = std::mem::take(&mut self.probing);
        if was_probe
            || (self.open_until.is_none() && self.consecutive_failures >= policy.eject_after)
        {
            self.cooldown = if was_probe {
                (self.cooldown * 2).min(policy.eject_max)
            } else {
                policy.eject_for
            };
            self.open_until = Some(now + self.cooldown);
            return true;
        }
        false
    }
}

/// Retries may not exceed a share of requests, so a failing department
/// cannot make the exchange multiply its own load.
#[derive(Debug)]
struct RetryBudget {
    tokens: Mutex<f64>,
    ratio: f64,
}

/// Retries in hand at most (and at start).
const RETRY_BUDGET_CAP: f64 = 10.0;

impl RetryBudget {
    fn new(ratio: f64) -> Self {
        Self {
            tokens: Mutex::new(RETRY_BUDGET_CAP),
            ratio,
        }
    }

    fn deposit(&self) {
        let mut t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        *t = (*t + self.ratio).min(RETRY_BUDGET_CAP);
    }

    fn withdraw(&self) -> bool {
        let mut t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if *t >= 1.0 {
            *t -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Decrements an endpoint's in-flight count when the attempt ends, however.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How one attempt on one endpoint ended.
enum Attempt {
    Answered(Evidence),
    /// Could not reach the endpoint: the request was not processed, so
    /// another endpoint may be tried.
    Unreachable(ExchangeError),
    /// Counts against the endpoint, but is not retried (time is spent, or the
    /// request may have been processed).
    Failed(ExchangeError),
    /// A well-formed refusal: the endpoint is healthy.
    Refused(ExchangeError),
}

/// One department's adapters: load-balanced (power of two choices), with
/// outlier ejection, a concurrency limit and a retry budget. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Department {
    inner: Arc<DepartmentInner>,
}

#[derive(Debug)]
struct DepartmentInner {
    id: String,
    endpoints: Vec<Endpoint>,
    max_timeout: Duration,
    resilience: Resilience,
    permits: Arc<Semaphore>,
    retries: RetryBudget,
    metrics: Option<Metrics>,
}

impl Department {
    /// One endpoint, default protection. `channel` may be lazy.
    pub fn new(id: impl Into<String>, channel: Channel, max_timeout: Duration) -> Self {
        Self::with_endpoints(
            id,
            vec![(String::new(), channel)],
            max_timeout,
            Resilience::default(),
            None,
        )
    }

    /// Several endpoints (URL, channel), balanced and protected by `resilience`.
    pub fn with_endpoints(
        id: impl Into<String>,
        endpoints: Vec<(String, Channel)>,
        max_timeout: Duration,
        resilience: Resilience,
        metrics: Option<Metrics>,
    ) -> Self {
        let endpoints = endpoints
            .into_iter()
            .map(|(url, channel)| Endpoint {
                url,
                client: AdapterClient::new(channel.clone()),
                channel,
                in_flight: AtomicUsize::new(0),
                breaker: Mutex::new(Breaker::default()),
            })
            .collect();
        Self {
            inner: Arc::new(DepartmentInner {
                id: id.into(),
                endpoints,
                max_timeout,
                permits: Arc::new(Semaphore::new(resilience.max_in_flight.max(1))),
                retries: RetryBudget::new(resilience.retry_ratio),
                resilience,
                metrics,
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Channels to the adapter endpoints (they also carry health services).
    pub fn channels(&self) -> impl Iterator<Item = &Channel> {
        self.inner.endpoints.iter().map(|e| &e.channel)
    }

    /// The longest the exchange waits for this department.
    pub fn max_timeout(&self) -> Duration {
        self.inner.max_timeout
    }

    /// Asks the department, within the caller's deadline capped by this
    /// department's configured maximum. The span is the client side of the
    /// hop; its W3C context travels in the request so the adapter's span is
    /// its child.
    #[tracing::instrument(
        name = "department.query",
        skip_all,
        fields(otel.kind = "client", department = %self.inner.id, evidence_type = %request.evidence_type)
    )]
    pub async fn query(
        &self,
        request: QueryRequest,
        caller_deadline: Option<Instant>,
    ) -> Result<Evidence, ExchangeError> {
        let started = Instant::now();
        let evidence_type = request.evidence_type.clone();
        let outcome = self.ask(request, caller_deadline).await;
        if let Some(metrics) = &self.inner.metrics {
            let code = match &outcome {
                Ok(_) => Code::Ok,
                Err(e) => e.code(),
            };
            metrics.record_department_query(
                &self.inner.id,
                &evidence_type,
                code,
                started.elapsed(),
            );
        }
        outcome
    }

    async fn ask(
        &self,
        mut request: QueryRequest,
        caller_deadline: Option<Instant>,
    ) -> Result<Evidence, ExchangeError> {
        let d = &self.inner;
        let timeout = caller_deadline.map_or(d.max_timeout, |at| {
            department_budget(at.saturating_duration_since(Instant::now())).min(d.max_timeout)
        });
        let deadline = Instant::now() + timeout;
        // Shed instead of queueing: a slow department must not hold the
        // exchange's memory or starve the others.
        let Ok(_permit) = d.permits.clone().try_acquire_owned() else {
            return Err(ExchangeError::DepartmentOverloaded {
                department: d.id.clone(),
                in_flight: d.resilience.max_in_flight,
            });
        };
        d.retries.deposit();
        let mut tried: Vec<usize> = Vec::new();
        loop {
            let Some(index) = self.pick(&tried) else {
                return Err(self.circuit_open());
            };
            tried.push(index);
            let remaining = deadline.saturating_duration_since(Instant::now());
            // Copy the request only while another endpoint could still be
            // tried; the last (usually the only) attempt takes it.
            let this_attempt = if tried.len() < d.endpoints.len() {
                request.clone()
            } else {
                std::mem::take(&mut request)
            };
            match self.attempt(index, this_attempt, remaining).await {
                Attempt::Answered(evidence) => return Ok(evidence),
                Attempt::Refused(e) | Attempt::Failed(e) => return Err(e),
                Attempt::Unreachable(e) => {
                    let more = tried.len() < d.endpoints.len()
                        && deadline.saturating_duration_since(Instant::now()) > MIN_RETRY_TIME;
                    if !(more && d.retries.withdraw()) {
                        return Err(e);
                    }
                    tracing::debug!(department = %d.id, "endpoint unreachable; retrying on another");
                }
            }
        }
    }

    /// Power of two choices among endpoints in rotation not yet tried: of
    /// two picked at random, the one with fewer requests in flight.
    fn pick(&self, tried: &[usize]) -> Option<usize> {
        let now = Instant::now();
        let eps = &self.inner.endpoints;
        let candidates: Vec<usize> = (0..eps.len())
            .filter(|i| !tried.contains(i))
            .filter(|&i| lock(&eps[i].breaker).is_available(now))
            .collect();
        let chosen = match candidates.as_slice() {
            [] => return None,
            [only] => *only,
            _ => {
                let mut rng = rand::thread_rng();
                let a = candidates[rng.gen_range(0..candidates.len())];
                let mut b = candidates[rng.gen_range(0..candidates.len() - 1)];
                if b == a {
                    b = candidates[candidates.len() - 1];
                }
                let load = |i: usize| eps[i].in_flight.load(Ordering::Relaxed);
                if load(b) < load(a) { b } else { a }
            }
        };
        // Another request may have claimed a half-open endpoint meanwhile.
        lock(&eps[chosen].breaker).admit(now).then_some(chosen)
    }

    fn circuit_open(&self) -> ExchangeError {
        let now = Instant::now();
        let next = self
            .inner
            .endpoints
            .iter()
            .filter_map(|e| lock(&e.breaker).open_until)
            .min()
            .map(|t| t.saturating_duration_since(now));
        ExchangeError::DepartmentUnavailable {
            department: self.inner.id.clone(),
            detail: match next {
                Some(wait) => format!(
                    "every endpoint failed repeatedly and is out of rotation; next try in {} ms",
                    wait.as_millis()
                ),
                None => "every endpoint is busy probing after failures".into(),
            },
        }
    }

    async fn attempt(&self, index: usize, request: QueryRequest, timeout: Duration) -> Attempt {
        let d = &self.inner;
        let endpoint = &d.endpoints[index];
        let _in_flight = InFlight::enter(&endpoint.in_flight);
        let mut request = tonic::Request::new(request);
        // Tell the adapter how long it has, so it can stop early too.
        request.set_timeout(timeout);
        tongban_telemetry::inject_trace_context(request.metadata_mut());
        let mut client = endpoint.client.clone();
        let answer = tokio::time::timeout(timeout, client.query(request)).await;
        let outcome = match answer {
            Err(_elapsed) => Attempt::Failed(ExchangeError::DepartmentTimeout {
                department: d.id.clone(),
                after: timeout,
            }),
            Ok(Ok(response)) => match response.into_inner().evidence {
                Some(evidence) => Attempt::Answered(evidence),
                None => Attempt::Failed(ExchangeError::BadAnswer {
                    department: d.id.clone(),
                    detail: "answer without evidence".into(),
                }),
            },
            Ok(Err(status)) => classify(&d.id, status, timeout),
        };
        let now = Instant::now();
        let mut breaker = lock(&endpoint.breaker);
        match &outcome {
            Attempt::Answered(_) | Attempt::Refused(_) => breaker.success(),
            Attempt::Unreachable(_) | Attempt::Failed(_) => {
                if breaker.failure(now, &d.resilience) {
                    tracing::warn!(
                        department = %d.id,
                        endpoint = %endpoint.url,
                        failures = breaker.consecutive_failures,
                        cooldown_ms = u64::try_from(breaker.cooldown.as_millis()).unwrap_or(u64::MAX),
                        "endpoint taken out of rotation"
                    );
                }
            }
        }
        outcome
    }
}

/// Below this much time left, a retry cannot help.
const MIN_RETRY_TIME: Duration = Duration::from_millis(5);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Maps an adapter's error status to what the exchange reports.
fn classify(department: &str, status: tonic::Status, timeout: Duration) -> Attempt {
    let department = department.to_owned();
    match status.code() {
        Code::Unavailable | Code::Unknown if is_transport_failure(&status) => {
            Attempt::Unreachable(ExchangeError::DepartmentUnavailable {
                department,
                detail: status.message().to_owned(),
            })
        }
        // The adapter answered that it cannot serve (e.g. its database is
        // down): nothing was released, another endpoint may do better.
        Code::Unavailable => Attempt::Unreachable(ExchangeError::DepartmentUnavailable {
            department,
            detail: status.message().to_owned(),
        }),
        Code::DeadlineExceeded | Code::Cancelled => {
            Attempt::Failed(ExchangeError::DepartmentTimeout {
                department,
                after: timeout,
            })
        }
        // The adapter's own failures are not the caller's business.
        Code::Internal | Code::Unknown | Code::DataLoss | Code::Unimplemented => {
            tracing::warn!(department = %department, code = ?status.code(), message = status.message(), "department failed");
            Attempt::Failed(ExchangeError::BadAnswer {
                detail: format!("the department failed ({:?})", status.code()),
                department,
            })
        }
        _ => Attempt::Refused(ExchangeError::Department { department, status }),
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
            by_id: departments
                .into_iter()
                .map(|d| (d.inner.id.clone(), d))
                .collect(),
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

    fn policy() -> Resilience {
        Resilience {
            eject_after: 3,
            eject_for: Duration::from_millis(100),
            eject_max: Duration::from_millis(350),
            ..Resilience::default()
        }
    }

    #[test]
    fn breaker_ejects_after_consecutive_failures_and_probes_once() {
        let p = policy();
        let t0 = Instant::now();
        let mut b = Breaker::default();
        assert!(!b.failure(t0, &p));
        assert!(!b.failure(t0, &p));
        assert!(b.failure(t0, &p), "third failure ejects");
        assert!(!b.admit(t0 + Duration::from_millis(50)), "out of rotation");
        let later = t0 + Duration::from_millis(100);
        assert!(b.is_available(later));
        assert!(b.admit(later), "one probe after the cooldown");
        assert!(!b.admit(later), "only one probe at a time");
        assert!(!b.is_available(later));
        // A failed probe doubles the cooldown, up to the cap.
        assert!(b.failure(later, &p));
        assert_eq!(b.cooldown, Duration::from_millis(200));
        let t2 = later + Duration::from_millis(200);
        assert!(b.admit(t2));
        assert!(b.failure(t2, &p));
        assert_eq!(b.cooldown, Duration::from_millis(350));
        // A successful probe closes it.
        let t3 = t2 + Duration::from_millis(350);
        assert!(b.admit(t3));
        b.success();
        assert!(b.admit(t3) && b.admit(t3));
        assert_eq!(b.consecutive_failures, 0);
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let p = policy();
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.failure(t0, &p);
        b.failure(t0, &p);
        b.success();
        assert!(!b.failure(t0, &p));
        assert!(b.admit(t0));
    }

    #[test]
    fn retry_budget_is_a_share_of_requests() {
        let budget = RetryBudget::new(0.2);
        let mut granted = 0;
        for _ in 0..100 {
            budget.deposit();
            if budget.withdraw() {
                granted += 1;
            }
        }
        // The initial allowance plus one retry per five requests.
        assert!((25..=31).contains(&granted), "{granted}");
    }

    fn lazy_channel() -> Channel {
        tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy()
    }

    #[tokio::test]
    async fn power_of_two_choices_prefers_the_less_loaded_and_skips_ejected() {
        let d = Department::with_endpoints(
            "police",
            (0..3).map(|i| (format!("e{i}"), lazy_channel())).collect(),
            Duration::from_secs(1),
            policy(),
            None,
        );
        let eps = &d.inner.endpoints;
        eps[0].in_flight.store(10, Ordering::Relaxed);
        eps[1].in_flight.store(10, Ordering::Relaxed);
        // With two of three busy, every pair holding e2 picks e2.
        let picks: Vec<usize> = (0..200).filter_map(|_| d.pick(&[])).collect();
        let e2 = picks.iter().filter(|&&i| i == 2).count();
        assert!(e2 > 120, "{e2} of 200");
        // An ejected endpoint is never picked; tried ones are skipped.
        lock(&eps[2].breaker).open_until = Some(Instant::now() + Duration::from_secs(60));
        for _ in 0..50 {
            assert_ne!(d.pick(&[]), Some(2));
        }
        assert_eq!(d.pick(&[0]), Some(1));
        assert_eq!(d.pick(&[0, 1]), None);
        let open = d.circuit_open();
        assert_eq!(open.code(), Code::Unavailable);
    }

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
