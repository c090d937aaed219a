//! The overview's numbers: traffic of the last 24 hours, per hour and
//! department (drawn by `views::overview`).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use tongban_audit::{AuditError, AuditStore, EntryKind, PageRequest, SearchFilter};

pub(crate) const HOURS: usize = 24;
/// The newest entries of each kind the overview reads at most, so the page
/// stays fast on a busy node (the charts then say they are sampled).
pub(crate) const MAX_ENTRIES_PER_KIND: usize = 50_000;

/// gRPC codes counted as refusals by policy or identity.
const DENIAL_CODES: [i32; 2] = [7, 16];
/// gRPC codes counted as failures of the exchange or a department.
const ERROR_CODES: [i32; 6] = [2, 4, 8, 13, 14, 15];

#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Department -> requests per hour, oldest hour first.
    pub per_department: BTreeMap<String, [u64; HOURS]>,
    pub total: [u64; HOURS],
    pub errors: [u64; HOURS],
    pub denials: [u64; HOURS],
    /// Department -> latencies in µs.
    pub latencies: BTreeMap<String, Vec<u64>>,
    pub sampled: bool,
    /// Start of the oldest hour bucket.
    pub start: DateTime<Utc>,
}

pub(crate) async fn collect(
    store: &dyn AuditStore,
    now: DateTime<Utc>,
) -> Result<Stats, AuditError> {
    let end = now
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now)
        + TimeDelta::hours(1);
    let start = end - TimeDelta::hours(HOURS as i64);
    let mut stats = Stats {
        start,
        ..Default::default()
    };
    for kind in [EntryKind::Lookup, EntryKind::GatherItem] {
        let filter = SearchFilter {
            from: Some(start),
            kind: Some(kind),
            ..Default::default()
        };
        let mut after = None;
        let mut seen = 0;
        loop {
            let page = tongban_audit::search(
                store,
                &filter,
                &PageRequest {
                    limit: 1000,
                    after: after.take(),
                },
            )
            .await?;
            for e in &page.entries {
                let x = &e.entry;
                let Ok(bucket) = usize::try_from((x.time - start).num_hours()) else {
                    continue;
                };
                if bucket >= HOURS {
                    continue;
                }
                let dept = if x.department.is_empty() {
                    "—".to_owned()
                } else {
                    x.department.clone()
                };
                stats
                    .per_department
                    .entry(dept.clone())
                    .or_insert([0; HOURS])[bucket] += 1;
                stats.total[bucket] += 1;
                if DENIAL_CODES.contains(&x.outcome_code) {
                    stats.denials[bucket] += 1;
                } else if ERROR_CODES.contains(&x.outcome_code) {
                    stats.errors[bucket] += 1;
                }
                stats.latencies.entry(dept).or_default().push(x.latency_us);
            }
            seen += page.entries.len();
            match page.next {
                Some(n) if seen < MAX_ENTRIES_PER_KIND => after = Some(n),
                Some(_) => {
                    stats.sampled = true;
                    break;
                }
                None => break,
            }
        }
    }
    Ok(stats)
}

/// The `p`-th percentile (0..=100) by nearest rank; 0 for no values.
pub(crate) fn percentile(sorted: &[u64], p: u32) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (u64::from(p) * sorted.len() as u64).div_ceil(100).max(1);
    sorted[usize::try_from(rank - 1).unwrap_or(0).min(sorted.len() - 1)]
}

pub(crate) fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 95), 95);
        assert_eq!(percentile(&v, 99), 99);
        assert_eq!(percentile(&v, 100), 100);
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile(&[], 50), 0);
    }
}
