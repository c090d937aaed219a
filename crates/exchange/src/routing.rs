//! Routing: each department's adapters behind pooled gRPC channels, with the
//! caller's deadline capped per department, load balancing over endpoints
//! (power of two choices), outlier ejection (a dead endpoint fails fast),
//! a per-department concurrency limit with a share per caller (shed, don't
//! queue) and budgeted retries of unreachable endpoints.
//!
//! Only an endpoint's own failures count towards ejecting it: a request that
//! ran out of the caller's time, when the caller gave less than
//! `slow_after`, says nothing about the endpoint, so a caller with tiny
//! deadlines cannot take a department offline for everyone.
//!
//! Time is tokio's clock (`tokio::time::Instant`), so tests pause and advance
//! it; the random source of the balancing is held by the department and
//! replaced by a seeded one in tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tongban_core::Caller;

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
    /// Requests one caller may have in flight to the department at once;
    /// `None`: a quarter of `max_in_flight` (at least 1).
    pub max_in_flight_per_caller: Option<usize>,
    /// A timeout counts against an endpoint only if the attempt was given at
    /// least this long; a shorter one is the caller's deadline, not the
    /// endpoint's fault.
    pub slow_after: Duration,
    /// Smallest time worth asking the department with; a caller's deadline
    /// leaving less is refused (DEADLINE_EXCEEDED) before anything is taken.
    pub min_budget: Duration,
}

impl Resilience {
    /// The most one caller may hold of `max_in_flight`.
    pub fn caller_share(&self) -> usize {
        let max = self.max_in_flight.max(1);
        self.max_in_flight_per_caller
            .unwrap_or(max / 4)
            .clamp(1, max)
    }
}

impl Default for Resilience {
    fn default() -> Self {
        Self {
            max_in_flight: 512,
            eject_after: 5,
            eject_for: Duration::from_millis(500),
            eject_max: Duration::from_secs(30),
            retry_ratio: 0.2,
            max_in_flight_per_caller: None,
            slow_after: Duration::from_secs(1),
            min_budget: Duration::from_millis(10),
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

    /// The attempt says nothing about the endpoint (the caller's deadline
    /// ended it first): counts stay, but a claimed probe slot is given back,
    /// or the endpoint would stay out of rotation for good.
    fn inconclusive(&mut self) {
        self.probing = false;
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

/// One caller's requests in flight to a department, by caller. An entry
/// exists only while the caller has requests in flight, so the map holds at
/// most `max_in_flight` entries whatever the number of callers.
#[derive(Debug, Default)]
struct CallerShares {
    held: Mutex<HashMap<String, usize>>,
}

impl CallerShares {
    /// Takes a slot for `caller` if it holds fewer than `limit`.
    fn try_hold<'a>(&'a self, caller: &'a str, limit: usize) -> Option<CallerSlot<'a>> {
        let mut held = lock(&self.held);
        // On the request path: allocate the key only for a caller with
        // nothing in flight yet.
        match held.get_mut(caller) {
            Some(count) if *count >= limit => return None,
            Some(count) => *count += 1,
            None if limit == 0 => return None,
            None => {
                held.insert(caller.to_owned(), 1);
            }
        }
        Some(CallerSlot {
            shares: self,
            caller,
        })
    }

    #[cfg(test)]
    fn held_by(&self, caller: &str) -> usize {
        lock(&self.held).get(caller).copied().unwrap_or(0)
    }
}

/// Gives a caller's slot back when its request ends, however.
struct CallerSlot<'a> {
    shares: &'a CallerShares,
    caller: &'a str,
}

impl Drop for CallerSlot<'_> {
    fn drop(&mut self) {
        let mut held = lock(&self.shares.held);
        if let Some(count) = held.get_mut(self.caller) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(self.caller);
            }
        }
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
    /// The caller's deadline, shorter than `slow_after`, ended the attempt:
    /// not the endpoint's fault, so its breaker is left as it was.
    OutOfCallerTime(ExchangeError),
}

/// The random source of the balancing; tests put a seeded one in.
struct Chooser(Mutex<Box<dyn RngCore + Send>>);

impl std::fmt::Debug for Chooser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Chooser")
    }
}

/// One department's adapters: load-balanced (power of two choices), with
/// outlier ejection, a concurrency limit with a share per caller and a retry
/// budget. Cheap to clone.
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
    callers: CallerShares,
    retries: RetryBudget,
    ejections: AtomicU64,
    rng: Chooser,
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
                callers: CallerShares::default(),
                retries: RetryBudget::new(resilience.retry_ratio),
                ejections: AtomicU64::new(0),
                rng: Chooser(Mutex::new(Box::new(StdRng::from_entropy()))),
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

    /// How many times an endpoint of this department was taken out of
    /// rotation since start.
    pub fn ejections(&self) -> u64 {
        self.inner.ejections.load(Ordering::Relaxed)
    }

    /// Asks the department for `caller`, within the caller's deadline capped
    /// by this department's configured maximum. The span is the client side
    /// of the hop; its W3C context travels in the request so the adapter's
    /// span is its child.
    #[tracing::instrument(
        name = "department.query",
        skip_all,
        fields(otel.kind = "client", department = %self.inner.id, evidence_type = %request.evidence_type)
    )]
    pub async fn query(
        &self,
        caller: &Caller,
        request: QueryRequest,
        caller_deadline: Option<std::time::Instant>,
    ) -> Result<Evidence, ExchangeError> {
        let started = Instant::now();
        let evidence_type = request.evidence_type.clone();
        // The caller's deadline is on the process clock; from here on,
        // routing counts on tokio's.
        let caller_left =
            caller_deadline.map(|at| at.saturating_duration_since(std::time::Instant::now()));
        let outcome = self.ask(&caller.path(), request, caller_left).await;
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

    /// `caller_left`: how long the caller still waits (`None`: no deadline).
    async fn ask(
        &self,
        caller: &str,
        mut request: QueryRequest,
        caller_left: Option<Duration>,
    ) -> Result<Evidence, ExchangeError> {
        let d = &self.inner;
        let timeout = caller_left.map_or(d.max_timeout, |left| {
            department_budget(left).min(d.max_timeout)
        });
        // Checked before anything is taken: a hopeless request must cost
        // the department nothing, neither a permit nor a retry token nor a
        // mark against an endpoint.
        if timeout < d.resilience.min_budget {
            return Err(ExchangeError::DeadlineTooShort {
                department: d.id.clone(),
                left: caller_left.unwrap_or(d.max_timeout),
                needed: caller_time_for(d.resilience.min_budget),
            });
        }
        let deadline = Instant::now() + timeout;
        // Shed instead of queueing: a slow department must not hold the
        // exchange's memory or starve the others.
        let Ok(_permit) = d.permits.clone().try_acquire_owned() else {
            return Err(ExchangeError::DepartmentOverloaded {
                department: d.id.clone(),
                in_flight: d.resilience.max_in_flight,
            });
        };
        // One caller may not take the whole department: past its share it
        // is shed, and only it (its permit goes back at once).
        let share = d.resilience.caller_share();
        let Some(_slot) = d.callers.try_hold(caller, share) else {
            return Err(ExchangeError::CallerShareExhausted {
                department: d.id.clone(),
                limit: share,
            });
        };
        d.retries.deposit();
        let mut tried: Vec<usize> = Vec::new();
        loop {
            let picked = {
                let mut rng = lock(&d.rng.0);
                self.pick(&tried, Instant::now(), &mut *rng)
            };
            let Some(index) = picked else {
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
                Attempt::Refused(e) | Attempt::Failed(e) | Attempt::OutOfCallerTime(e) => {
                    return Err(e);
                }
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

    /// Power of two choices among endpoints in rotation at `now` not yet
    /// tried: of two picked with `rng`, the one with fewer requests in flight.
    fn pick(&self, tried: &[usize], now: Instant, rng: &mut (impl Rng + ?Sized)) -> Option<usize> {
        let eps = &self.inner.endpoints;
        let candidates: Vec<usize> = (0..eps.len())
            .filter(|i| !tried.contains(i))
            .filter(|&i| lock(&eps[i].breaker).is_available(now))
            .collect();
        let chosen = match candidates.as_slice() {
            [] => return None,
            [only] => *only,
            _ => {
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
            Err(_elapsed) => timed_out(&d.id, timeout, &d.resilience),
            Ok(Ok(response)) => match response.into_inner().evidence {
                Some(evidence) => Attempt::Answered(evidence),
                None => Attempt::Failed(ExchangeError::BadAnswer {
                    department: d.id.clone(),
                    detail: format!("endpoint {}: answer without evidence", endpoint.url),
                }),
            },
            Ok(Err(status)) => classify(&d.id, &endpoint.url, status, timeout, &d.resilience),
        };
        let now = Instant::now();
        let mut breaker = lock(&endpoint.breaker);
        match &outcome {
            Attempt::Answered(_) | Attempt::Refused(_) => breaker.success(),
            Attempt::OutOfCallerTime(_) => breaker.inconclusive(),
            Attempt::Unreachable(_) | Attempt::Failed(_) => {
                if breaker.failure(now, &d.resilience) {
                    d.ejections.fetch_add(1, Ordering::Relaxed);
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

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An attempt given `timeout` got no answer in time: the endpoint's fault
/// only if `timeout` was long enough for a healthy endpoint to answer.
fn timed_out(department: &str, timeout: Duration, policy: &Resilience) -> Attempt {
    let error = ExchangeError::DepartmentTimeout {
        department: department.to_owned(),
        after: timeout,
    };
    if timeout >= policy.slow_after {
        Attempt::Failed(error)
    } else {
        Attempt::OutOfCallerTime(error)
    }
}

/// Maps an adapter's error status to what the exchange reports. The
/// status's message (transport and OS errors, addresses) goes only into the
/// internal detail, never into what the caller is told.
fn classify(
    department: &str,
    endpoint: &str,
    status: tonic::Status,
    timeout: Duration,
    policy: &Resilience,
) -> Attempt {
    let unavailable = |status: &tonic::Status| ExchangeError::DepartmentUnavailable {
        department: department.to_owned(),
        detail: format!(
            "endpoint {endpoint}: {:?}: {}",
            status.code(),
            status.message()
        ),
    };
    match status.code() {
        // Unreachable, or the adapter answered that it cannot serve (e.g.
        // its database is down): nothing was released, another endpoint may
        // do better.
        Code::Unavailable => Attempt::Unreachable(unavailable(&status)),
        Code::Unknown if is_transport_failure(&status) => {
            Attempt::Unreachable(unavailable(&status))
        }
        Code::DeadlineExceeded | Code::Cancelled => timed_out(department, timeout, policy),
        // The adapter's own failures are not the caller's business.
        Code::Internal | Code::Unknown | Code::DataLoss | Code::Unimplemented => {
            Attempt::Failed(ExchangeError::BadAnswer {
                department: department.to_owned(),
                detail: format!(
                    "endpoint {endpoint} failed: {:?}: {}",
                    status.code(),
                    status.message()
                ),
            })
        }
        _ => Attempt::Refused(ExchangeError::Department {
            department: department.to_owned(),
            status,
        }),
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

/// The least time a caller must leave for the department to get `budget`:
/// the inverse of [`department_budget`].
pub fn caller_time_for(budget: Duration) -> Duration {
    let (min_reserve, max_reserve) = (Duration::from_millis(5), Duration::from_millis(100));
    // Below 50 ms the reserve is its minimum, above 1 s its maximum, and a
    // tenth of the total in between.
    if budget + min_reserve <= min_reserve * 10 {
        budget + min_reserve
    } else if budget + max_reserve >= max_reserve * 10 {
        budget + max_reserve
    } else {
        let nanos = budget.as_nanos().saturating_mul(10).div_ceil(9);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
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

    fn department(endpoints: Vec<Channel>, max_timeout: Duration, p: Resilience) -> Department {
        let d = Department::with_endpoints(
            "police",
            endpoints
                .into_iter()
                .enumerate()
                .map(|(i, c)| (format!("e{i}"), c))
                .collect(),
            max_timeout,
            p,
            None,
        );
        *lock(&d.inner.rng.0) = Box::new(StdRng::seed_from_u64(7));
        d
    }

    #[tokio::test]
    async fn power_of_two_choices_between_two_always_takes_the_less_loaded() {
        let d = department(
            vec![lazy_channel(), lazy_channel()],
            Duration::from_secs(1),
            policy(),
        );
        let eps = &d.inner.endpoints;
        let now = Instant::now();
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(seed);
            eps[0].in_flight.store(3, Ordering::Relaxed);
            eps[1].in_flight.store(1, Ordering::Relaxed);
            assert_eq!(d.pick(&[], now, &mut rng), Some(1), "seed {seed}");
            eps[0].in_flight.store(0, Ordering::Relaxed);
            assert_eq!(d.pick(&[], now, &mut rng), Some(0), "seed {seed}");
        }
    }

    #[tokio::test]
    async fn power_of_two_choices_prefers_the_less_loaded_and_skips_ejected() {
        let d = department(
            (0..3).map(|_| lazy_channel()).collect(),
            Duration::from_secs(1),
            policy(),
        );
        let eps = &d.inner.endpoints;
        eps[0].in_flight.store(10, Ordering::Relaxed);
        eps[1].in_flight.store(10, Ordering::Relaxed);
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(42);
        // With two of three busy, every pair holding e2 picks e2; only a
        // pair of the two busy ones (a third of pairs) picks another.
        let picks: Vec<usize> = (0..300)
            .filter_map(|_| d.pick(&[], now, &mut rng))
            .collect();
        assert_eq!(picks.len(), 300);
        let e2 = picks.iter().filter(|&&i| i == 2).count();
        assert!((170..=230).contains(&e2), "{e2} of 300");
        // An ejected endpoint is never picked; tried ones are skipped.
        lock(&eps[2].breaker).open_until = Some(now + Duration::from_secs(60));
        for _ in 0..50 {
            assert_ne!(d.pick(&[], now, &mut rng), Some(2));
        }
        assert_eq!(d.pick(&[0], now, &mut rng), Some(1));
        assert_eq!(d.pick(&[0, 1], now, &mut rng), None);
        let open = d.circuit_open();
        assert_eq!(open.code(), Code::Unavailable);
    }

    #[test]
    fn an_inconclusive_probe_gives_the_probe_slot_back() {
        let p = policy();
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.failure(t0, &p);
        }
        let later = t0 + p.eject_for;
        assert!(b.admit(later), "probe");
        b.inconclusive();
        assert!(b.is_available(later), "another request may probe");
        assert!(b.admit(later));
    }

    #[test]
    fn caller_time_for_inverts_the_department_budget() {
        for ms in [1, 10, 44, 45, 46, 100, 500, 899, 900, 901, 5000] {
            let budget = Duration::from_millis(ms);
            let needed = caller_time_for(budget);
            assert!(department_budget(needed) >= budget, "{ms} ms");
            assert!(
                department_budget(needed - Duration::from_micros(10)) < budget,
                "{ms} ms: {needed:?} is not the least"
            );
        }
        assert_eq!(
            caller_time_for(Duration::from_millis(10)),
            Duration::from_millis(15)
        );
    }

    #[test]
    fn the_caller_share_defaults_to_a_quarter() {
        let p = Resilience::default();
        assert_eq!(p.caller_share(), 128);
        let small = Resilience {
            max_in_flight: 2,
            ..Resilience::default()
        };
        assert_eq!(small.caller_share(), 1);
        let set = Resilience {
            max_in_flight_per_caller: Some(10_000),
            ..Resilience::default()
        };
        assert_eq!(set.caller_share(), 512);
    }

    /// A stand-in adapter on an in-memory connection (no sockets, so paused
    /// time advances only when everything waits on a timer).
    mod stand_in {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        use hyper_util::rt::TokioIo;
        use tokio::sync::{Semaphore, mpsc};
        use tongban_proto::v1::adapter_server::{Adapter, AdapterServer};
        use tongban_proto::v1::{
            DescribeRequest, DescribeResponse, Evidence, QueryRequest, QueryResponse,
        };
        use tonic::transport::{Channel, Endpoint, Server};
        use tonic::{Request, Response, Status};

        /// Counts queries; answers each once `gate` gives it a permit
        /// (never, if no permit is ever added).
        #[derive(Clone)]
        pub struct StandIn {
            pub asked: Arc<AtomicUsize>,
            pub gate: Arc<Semaphore>,
        }

        #[tonic::async_trait]
        impl Adapter for StandIn {
            async fn query(
                &self,
                request: Request<QueryRequest>,
            ) -> Result<Response<QueryResponse>, Status> {
                self.asked.fetch_add(1, Ordering::SeqCst);
                let permit = self.gate.acquire().await;
                drop(permit);
                Ok(Response::new(QueryResponse {
                    evidence: Some(Evidence {
                        evidence_type: request.into_inner().evidence_type,
                        department: "police".into(),
                        ..Evidence::default()
                    }),
                }))
            }

            async fn describe(
                &self,
                _: Request<DescribeRequest>,
            ) -> Result<Response<DescribeResponse>, Status> {
                Err(Status::unimplemented("not in this stand-in"))
            }
        }

        /// Serves a stand-in; returns it and a channel to it.
        pub fn start(open: bool) -> (StandIn, Channel) {
            let gate = Arc::new(Semaphore::new(if open {
                Semaphore::MAX_PERMITS
            } else {
                0
            }));
            let stand_in = StandIn {
                asked: Arc::new(AtomicUsize::new(0)),
                gate,
            };
            let (connections, incoming) = mpsc::unbounded_channel();
            let server = Server::builder()
                .add_service(AdapterServer::new(stand_in.clone()))
                .serve_with_incoming(tokio_stream::wrappers::UnboundedReceiverStream::new(
                    incoming,
                ));
            tokio::spawn(server);
            let channel = Endpoint::from_static("http://stand-in").connect_with_connector_lazy(
                tower::service_fn(move |_| {
                    let (client, server) = tokio::io::duplex(64 * 1024);
                    let sent = connections.send(Ok::<_, std::io::Error>(server));
                    async move {
                        sent.map_err(|_| std::io::Error::other("stand-in stopped"))?;
                        Ok::<_, std::io::Error>(TokioIo::new(client))
                    }
                }),
            );
            (stand_in, channel)
        }
    }

    fn query() -> QueryRequest {
        QueryRequest {
            evidence_type: "police.identity".into(),
            ..QueryRequest::default()
        }
    }

    fn failures(d: &Department, endpoint: usize) -> u32 {
        lock(&d.inner.endpoints[endpoint].breaker).consecutive_failures
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_of_short_caller_deadlines_never_eject() {
        let (stand_in, channel) = stand_in::start(false);
        let d = department(vec![channel], Duration::from_secs(5), policy());
        // 50 ms left: a 45 ms budget, above the minimum, below slow_after.
        for i in 0..20 {
            let e = d
                .ask(
                    "org/X/unit/hotline",
                    query(),
                    Some(Duration::from_millis(50)),
                )
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::DeadlineExceeded, "{i}: {e}");
            assert_eq!(e.reason(), "DEPARTMENT_TIMEOUT");
        }
        assert_eq!(stand_in.asked.load(Ordering::SeqCst), 20, "each was asked");
        assert_eq!(d.ejections(), 0);
        assert_eq!(failures(&d, 0), 0);
        // The endpoint answers the next caller as soon as it can.
        stand_in.gate.add_permits(Semaphore::MAX_PERMITS);
        d.ask("org/Y/unit/honest", query(), Some(Duration::from_secs(2)))
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_genuinely_slow_endpoint_is_still_ejected() {
        let (stand_in, channel) = stand_in::start(false);
        let p = policy();
        let d = department(vec![channel], Duration::from_secs(2), p.clone());
        let started = Instant::now();
        // No caller deadline: the department's 2 s, over slow_after (1 s).
        for i in 0..p.eject_after {
            let e = d.ask("org/Y/unit/honest", query(), None).await.unwrap_err();
            assert_eq!(e.code(), Code::DeadlineExceeded, "{i}: {e}");
        }
        // Each waited its whole 2 s (the timer wheel may round up a tick).
        let waited = started.elapsed();
        let expected = Duration::from_secs(2) * p.eject_after;
        assert!(
            waited >= expected && waited < expected + Duration::from_millis(10),
            "{waited:?}"
        );
        assert_eq!(d.ejections(), 1);
        // Out of rotation: the next request fails at once, unasked.
        let at = Instant::now();
        let e = d.ask("org/Y/unit/honest", query(), None).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e}");
        assert!(at.elapsed() < Duration::from_millis(1));
        assert_eq!(stand_in.asked.load(Ordering::SeqCst), 3);
        // A caller deadline of exactly slow_after is long enough to count.
        let (_, channel) = stand_in::start(false);
        let d = department(vec![channel], Duration::from_secs(5), p.clone());
        for _ in 0..p.eject_after {
            d.ask("c", query(), Some(caller_time_for(p.slow_after)))
                .await
                .unwrap_err();
        }
        assert_eq!(d.ejections(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_below_the_minimum_never_reaches_the_endpoint() {
        let (stand_in, channel) = stand_in::start(true);
        let d = department(vec![channel], Duration::from_secs(5), policy());
        let tokens_before = *lock(&d.inner.retries.tokens);
        for _ in 0..100 {
            let e = d
                .ask(
                    "org/X/unit/hotline",
                    query(),
                    Some(Duration::from_millis(3)),
                )
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::DeadlineExceeded);
            assert_eq!(e.reason(), "DEADLINE_TOO_SHORT");
            assert_eq!(
                e.to_string(),
                "the caller's deadline left 3 ms; asking department police needs at least 15 ms"
            );
        }
        assert_eq!(stand_in.asked.load(Ordering::SeqCst), 0);
        assert_eq!(d.inner.permits.available_permits(), 512);
        assert_eq!(d.inner.callers.held_by("org/X/unit/hotline"), 0);
        assert_eq!(*lock(&d.inner.retries.tokens), tokens_before);
        assert_eq!(failures(&d, 0), 0);
        assert_eq!(d.inner.endpoints[0].in_flight.load(Ordering::Relaxed), 0);
        // Just enough time left is asked.
        d.ask(
            "org/X/unit/hotline",
            query(),
            Some(Duration::from_millis(15)),
        )
        .await
        .unwrap();
        assert_eq!(stand_in.asked.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_per_caller_share_sheds_only_the_greedy_caller() {
        let (stand_in, channel) = stand_in::start(false);
        let p = Resilience {
            max_in_flight: 8,
            max_in_flight_per_caller: Some(2),
            ..policy()
        };
        let d = department(vec![channel], Duration::from_secs(5), p);
        let greedy = "org/X/unit/hotline";
        let held: Vec<_> = (0..2)
            .map(|_| {
                let d = d.clone();
                tokio::spawn(async move { d.ask(greedy, query(), None).await })
            })
            .collect();
        // Bounded wait (paused clock) until both reached the endpoint.
        for _ in 0..100 {
            if stand_in.asked.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(stand_in.asked.load(Ordering::SeqCst), 2);
        let e = d.ask(greedy, query(), None).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
        assert_eq!(e.reason(), "CALLER_SHARE_EXHAUSTED");
        assert_eq!(stand_in.asked.load(Ordering::SeqCst), 2, "shed unasked");
        // Another caller still gets through while the greedy one is full.
        let honest = {
            let d = d.clone();
            tokio::spawn(async move { d.ask("org/Y/unit/honest", query(), None).await })
        };
        stand_in.gate.add_permits(Semaphore::MAX_PERMITS);
        honest.await.unwrap().unwrap();
        for call in held {
            call.await.unwrap().unwrap();
        }
        // Its share is back once its requests ended.
        assert_eq!(d.inner.callers.held_by(greedy), 0);
        d.ask(greedy, query(), None).await.unwrap();
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
