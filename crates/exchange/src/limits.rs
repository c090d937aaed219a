//! Per-caller request rate: a token bucket per caller, refilled continuously.

use std::collections::HashMap;
use std::sync::Mutex;
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
}
