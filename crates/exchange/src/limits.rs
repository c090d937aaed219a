//! Per-caller budgets: the request rate (a token bucket per caller, refilled
//! continuously) and the pace at which a caller's refusals are recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tongban_core::{Caller, Limits};

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by caller. Rates come from the current policy on each
/// call, so a policy reload changes them at once.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<Caller, Bucket>>,
}

/// Buckets idle this long are full again and can be forgotten.
const IDLE_EVICTION: Duration = Duration::from_secs(300);

impl RateLimiter {
    /// Takes `cost` tokens, or says how long until they would be there.
    pub fn try_acquire(&self, caller: &Caller, cost: u32, limits: &Limits) -> Result<(), Duration> {
        self.try_acquire_at(caller, cost, limits, Instant::now())
    }

    fn try_acquire_at(
        &self,
        caller: &Caller,
        cost: u32,
        limits: &Limits,
        now: Instant,
    ) -> Result<(), Duration> {
        let rate = limits.requests_per_second;
        let burst = f64::from(limits.burst);
        let cost = f64::from(cost);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.updated) < IDLE_EVICTION);
        }
        let bucket = match buckets.get_mut(caller) {
            Some(b) => b,
            None => buckets.entry(caller.clone()).or_insert(Bucket {
                tokens: burst,
                updated: now,
            }),
        };
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            Ok(())
        } else {
            let missing = cost - bucket.tokens;
            Err(Duration::from_secs_f64((missing / rate).max(0.001)))
        }
    }
}

/// Paces the refusals of each caller: every refusal is recorded in the log
/// before it is answered, so a caller sending calls that are bound to be
/// refused (over its rate, invalid, oversize, not granted) would otherwise
/// make the exchange write — and every other caller's entries wait behind —
/// as many entries as it can send. Each caller's refusals pass through a
/// first-come-first-served gate with a token bucket of the policy's
/// `refusals_per_second` and `refusal_burst`: within it a refusal goes at
/// once; beyond it, it waits its turn. A call that its caller abandons, or
/// whose deadline ends it, while waiting leaves the queue and is never
/// recorded (it was never answered, and nothing was looked up), so a flood
/// grows the log by at most the caller's refusal rate however fast it sends.
/// An honest caller's rare refusal finds its bucket full and waits for
/// nothing. Written here because the wait must be FIFO per caller, follow a
/// reloadable policy and give back nothing a cancelled waiter did not take,
/// which a generic rate limiter (tower's, governor's) does not combine.
#[derive(Debug, Default)]
pub struct RefusalPacer {
    gates: Mutex<HashMap<Caller, Arc<tokio::sync::Mutex<RefusalBucket>>>>,
}

#[derive(Debug)]
struct RefusalBucket {
    tokens: f64,
    updated: tokio::time::Instant,
}

/// Gates are forgotten once this many callers have one and theirs is idle.
const MAX_IDLE_GATES: usize = 10_000;

/// How long a refusal of a call without a deadline waits for its turn at
/// most; it is recorded then, whatever the budget (such calls are bounded by
/// the transport's streams per connection and connections per caller).
pub const REFUSAL_WAIT_WITHOUT_DEADLINE: Duration = Duration::from_secs(30);

impl RefusalPacer {
    /// Waits until a refusal of `caller` may be recorded. `false` when the
    /// call's `deadline` came first: the call is over, nothing was taken
    /// from the budget, and the refusal is not to be recorded. A call with
    /// no deadline waits at most [`REFUSAL_WAIT_WITHOUT_DEADLINE`], then
    /// goes (taking its token on credit if it reached the bucket, so later
    /// refusals wait for the debt).
    /// Runs on tokio's clock, so tests pause it.
    pub async fn wait_turn(
        &self,
        caller: &Caller,
        limits: &Limits,
        deadline: Option<tokio::time::Instant>,
    ) -> bool {
        let gate = self.gate(caller, limits);
        let until =
            deadline.unwrap_or_else(|| tokio::time::Instant::now() + REFUSAL_WAIT_WITHOUT_DEADLINE);
        // The fair (FIFO) tokio mutex is the queue: a waiter that is dropped
        // leaves it, holding nothing.
        let Ok(mut bucket) = tokio::time::timeout_at(until, gate.lock()).await else {
            return deadline.is_none();
        };
        let rate = limits.refusals_per_second;
        let burst = f64::from(limits.refusal_burst);
        let refill = |bucket: &mut RefusalBucket| {
            let now = tokio::time::Instant::now();
            bucket.tokens = (bucket.tokens
                + now.duration_since(bucket.updated).as_secs_f64() * rate)
                .min(burst);
            bucket.updated = now;
        };
        refill(&mut bucket);
        if bucket.tokens < 1.0 {
            let ready =
                tokio::time::Instant::now() + Duration::from_secs_f64((1.0 - bucket.tokens) / rate);
            // Cancelled here, the waiter has taken nothing: the bucket is
            // only charged below.
            tokio::time::sleep_until(ready.min(until)).await;
            refill(&mut bucket);
            if ready > until && deadline.is_some() {
                return false;
            }
        }
        // Below zero only when a call without a deadline stopped waiting.
        bucket.tokens -= 1.0;
        true
    }

    fn gate(&self, caller: &Caller, limits: &Limits) -> Arc<tokio::sync::Mutex<RefusalBucket>> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(gate) = gates.get(caller) {
            return gate.clone();
        }
        if gates.len() >= MAX_IDLE_GATES {
            // A gate nobody waits at (held only by the map) and that is
            // unlocked can go. Its caller starts full again on its next
            // refusal; callers hold certificates, so ten thousand of them
            // at once means a large deployment, not a way to dodge the pace.
            gates.retain(|_, gate| Arc::strong_count(gate) > 1 || gate.try_lock().is_err());
        }
        gates
            .entry(caller.clone())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(RefusalBucket {
                    tokens: f64::from(limits.refusal_burst),
                    updated: tokio::time::Instant::now(),
                }))
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tongban_core::CreditCode;

    #[test]
    fn bucket_allows_burst_then_refills() {
        let limits = Limits {
            requests_per_second: 10.0,
            burst: 3,
            ..Limits::default()
        };
        let caller =
            Caller::new(CreditCode::with_check("11510400MB0000001").unwrap(), "a").unwrap();
        let other = Caller::new(CreditCode::with_check("11510400MB0000002").unwrap(), "a").unwrap();
        let rl = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            rl.try_acquire_at(&caller, 1, &limits, t0).unwrap();
        }
        let wait = rl.try_acquire_at(&caller, 1, &limits, t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // Callers do not share buckets.
        rl.try_acquire_at(&other, 3, &limits, t0).unwrap();
        // 100 ms later one token is back.
        rl.try_acquire_at(&caller, 1, &limits, t0 + Duration::from_millis(100))
            .unwrap();
        assert!(
            rl.try_acquire_at(&caller, 1, &limits, t0 + Duration::from_millis(100))
                .is_err()
        );
        // A cost above the burst can never pass; it reports the wait anyway.
        assert!(
            rl.try_acquire_at(&other, 5, &limits, t0 + Duration::from_secs(10))
                .is_err()
        );
    }

    fn paced(rate: f64, burst: u32) -> Limits {
        Limits {
            refusals_per_second: rate,
            refusal_burst: burst,
            ..Limits::default()
        }
    }

    /// Equal up to the timer's millisecond granularity.
    fn assert_near(actual: Duration, expected: Duration) {
        let diff = actual.abs_diff(expected);
        assert!(
            diff <= Duration::from_millis(2),
            "{actual:?} is not {expected:?}"
        );
    }

    fn caller(unit: &str) -> Caller {
        Caller::new(CreditCode::with_check("11510400MB0000001").unwrap(), unit).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_within_the_burst_wait_for_nothing_then_keep_the_rate() {
        let pacer = RefusalPacer::default();
        let limits = paced(10.0, 3);
        let (flooder, other) = (caller("flood"), caller("other"));
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            assert!(pacer.wait_turn(&flooder, &limits, None).await);
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        // Beyond the burst: one every 100 ms.
        for n in 1..=5u32 {
            assert!(pacer.wait_turn(&flooder, &limits, None).await);
            assert_near(start.elapsed(), Duration::from_millis(100) * n);
        }
        // Another caller's budget is its own.
        let at = tokio::time::Instant::now();
        assert!(pacer.wait_turn(&other, &limits, None).await);
        assert_eq!(at.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_takes_nothing_and_the_queue_is_first_come() {
        let pacer = Arc::new(RefusalPacer::default());
        let limits = paced(10.0, 1);
        let flooder = caller("flood");
        assert!(pacer.wait_turn(&flooder, &limits, None).await);
        // A refusal abandoned after 30 ms (its caller hung up) ...
        let abandoned = tokio::time::timeout(
            Duration::from_millis(30),
            pacer.wait_turn(&flooder, &limits, None),
        )
        .await;
        assert!(abandoned.is_err());
        // ... leaves the next one its turn at 100 ms, not 200 ms.
        let start = tokio::time::Instant::now();
        assert!(pacer.wait_turn(&flooder, &limits, None).await);
        assert_near(start.elapsed(), Duration::from_millis(70));
        // Three queued waiters finish in the order they came, 100 ms apart.
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = tokio::task::JoinSet::new();
        for n in 0..3 {
            let (pacer, limits, flooder, order) = (
                pacer.clone(),
                limits.clone(),
                flooder.clone(),
                order.clone(),
            );
            waiters.spawn(async move {
                assert!(pacer.wait_turn(&flooder, &limits, None).await);
                order.lock().unwrap().push((n, tokio::time::Instant::now()));
            });
            tokio::task::yield_now().await;
        }
        waiters.join_all().await;
        let order = order.lock().unwrap();
        let ns: Vec<i32> = order.iter().map(|(n, _)| *n).collect();
        assert_eq!(ns, [0, 1, 2]);
        assert_near(order[1].1 - order[0].1, Duration::from_millis(100));
        assert_near(order[2].1 - order[1].1, Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_ends_the_wait_unrecorded_and_no_deadline_waits_at_most_the_bound() {
        let pacer = RefusalPacer::default();
        let limits = paced(0.01, 1);
        let flooder = caller("flood");
        assert!(pacer.wait_turn(&flooder, &limits, None).await);
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_millis(3);
        assert!(!pacer.wait_turn(&flooder, &limits, Some(deadline)).await);
        assert_near(start.elapsed(), Duration::from_millis(3));
        // Without a deadline: recorded after the bound.
        assert!(pacer.wait_turn(&flooder, &limits, None).await);
        assert_near(
            start.elapsed(),
            Duration::from_millis(3) + REFUSAL_WAIT_WITHOUT_DEADLINE,
        );
    }
}
