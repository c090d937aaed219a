//! The overview: traffic of the last 24 hours as server-rendered SVG charts.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use tongban_audit::{AuditError, AuditStore, EntryKind, PageRequest, SearchFilter};

use crate::html::{cst, escape_html};

const HOURS: usize = 24;
/// The newest entries of each kind the overview reads at most, so the page
/// stays fast on a busy node (the charts then say they are sampled).
const MAX_ENTRIES_PER_KIND: usize = 50_000;

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

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

const W: f64 = 760.0;
const H: f64 = 260.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 40.0;
/// Grid intervals per axis: with maxima of 1, 2 or 5 × 10ⁿ every label is round.
const TICKS: u32 = 5;

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

/// Axes, grid and hour labels of a 24-hour chart; returns (svg, y-scale max).
fn frame(id: &str, label: &str, max: f64, unit: &str, start: DateTime<Utc>) -> (String, f64) {
    let max = nice_max(max);
    let mut s = format!(
        "<svg class=\"chart\" id=\"{id}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">",
        escape_html(label)
    );
    let plot_h = H - TOP - BOTTOM;
    for i in 0..=TICKS {
        let v = max * f64::from(i) / f64::from(TICKS);
        let y = TOP + plot_h * (1.0 - f64::from(i) / f64::from(TICKS));
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}{unit}</text>",
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            format_value(v)
        );
    }
    let step = (W - LEFT - RIGHT) / HOURS as f64;
    for h in (0..HOURS).step_by(3) {
        let x = LEFT + step * (h as f64 + 0.5);
        let hour = (start + TimeDelta::hours(h as i64))
            .with_timezone(&cst())
            .format("%H:00");
        let _ = write!(
            s,
            "<text class=\"axis\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{hour}</text>",
            H - BOTTOM + 18.0
        );
    }
    (s, max)
}

fn format_value(v: f64) -> String {
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        // Trim the zeros of e.g. 0.20 and 0.0040.
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn polyline(class: &str, values: &[f64], max: f64) -> String {
    let step = (W - LEFT - RIGHT) / HOURS as f64;
    let plot_h = H - TOP - BOTTOM;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                LEFT + step * (i as f64 + 0.5),
                TOP + plot_h * (1.0 - v / max)
            )
        })
        .collect();
    format!(
        "<polyline class=\"series {class}\" fill=\"none\" points=\"{}\"/>",
        points.join(" ")
    )
}

fn legend(items: &[(String, String)]) -> String {
    let mut s = String::from("<ul class=\"legend\">");
    for (class, label) in items {
        let _ = write!(
            s,
            "<li><span class=\"swatch {class}\"></span>{}</li>",
            escape_html(label)
        );
    }
    s.push_str("</ul>");
    s
}

fn department_label(id: &str) -> String {
    match tongban_core::Catalogue::embedded().department(id) {
        Some(d) => format!("{} {id}", d.title_zh),
        None => id.to_owned(),
    }
}

pub(crate) async fn render(
    store: &dyn AuditStore,
    now: DateTime<Utc>,
) -> Result<String, AuditError> {
    let stats = collect(store, now).await?;
    Ok(render_stats(&stats))
}

pub(crate) fn render_stats(stats: &Stats) -> String {
    let mut out = String::new();
    let total: u64 = stats.total.iter().sum();
    let errors: u64 = stats.errors.iter().sum();
    let denials: u64 = stats.denials.iter().sum();
    let mut all: Vec<u64> = stats.latencies.values().flatten().copied().collect();
    all.sort_unstable();
    let _ = write!(
        out,
        "<div class=\"cards\">\
         <div class=\"stat\"><span class=\"label\">24小时请求 Requests (24 h)</span><span class=\"value\" id=\"total-requests\">{total}</span></div>\
         <div class=\"stat\"><span class=\"label\">错误率 Error rate</span><span class=\"value {}\">{:.1}%</span></div>\
         <div class=\"stat\"><span class=\"label\">拒绝率 Denial rate</span><span class=\"value {}\">{:.1}%</span></div>\
         <div class=\"stat\"><span class=\"label\">P95 延迟 latency</span><span class=\"value\">{:.1} ms</span></div></div>",
        if rate(errors, total) > 1.0 {
            "bad"
        } else {
            "ok"
        },
        rate(errors, total),
        if rate(denials, total) > 5.0 {
            "bad"
        } else {
            "ok"
        },
        rate(denials, total),
        percentile(&all, 95) as f64 / 1000.0
    );
    if stats.sampled {
        let _ = write!(
            out,
            "<p class=\"muted\">按最近 {MAX_ENTRIES_PER_KIND} 条计算 Computed from the newest {MAX_ENTRIES_PER_KIND} entries of each kind.</p>"
        );
    }

    // Lookups per department per hour.
    let max = stats
        .per_department
        .values()
        .flat_map(|v| v.iter())
        .copied()
        .max()
        .unwrap_or(0) as f64;
    let (mut svg, max) = frame(
        "chart-lookups",
        "每小时各部门查询 Lookups per department per hour",
        max,
        "",
        stats.start,
    );
    let mut items = Vec::new();
    for (i, (dept, counts)) in stats.per_department.iter().enumerate() {
        let class = format!("s{}", i % 6);
        let values: Vec<f64> = counts.iter().map(|&c| c as f64).collect();
        svg.push_str(&polyline(&class, &values, max));
        items.push((class, department_label(dept)));
    }
    svg.push_str("</svg>");
    let _ = write!(
        out,
        "<section class=\"card\"><h2>每小时各部门查询 Lookups per department per hour</h2>{svg}{}</section>",
        legend(&items)
    );

    // Error and denial rates per hour.
    let err: Vec<f64> = (0..HOURS)
        .map(|h| rate(stats.errors[h], stats.total[h]))
        .collect();
    let den: Vec<f64> = (0..HOURS)
        .map(|h| rate(stats.denials[h], stats.total[h]))
        .collect();
    let max = err.iter().chain(&den).copied().fold(0.0, f64::max);
    let (mut svg, max) = frame(
        "chart-rates",
        "每小时错误率和拒绝率 Error and denial rate per hour",
        max,
        "%",
        stats.start,
    );
    svg.push_str(&polyline("err", &err, max));
    svg.push_str(&polyline("deny", &den, max));
    svg.push_str("</svg>");
    let _ = write!(
        out,
        "<section class=\"card\"><h2>错误率和拒绝率 Error and denial rates</h2>{svg}{}</section>",
        legend(&[
            (
                "err".into(),
                "错误 Errors (UNAVAILABLE, DEADLINE, INTERNAL…)".into()
            ),
            (
                "deny".into(),
                "拒绝 Denials (PERMISSION_DENIED, UNAUTHENTICATED)".into()
            ),
        ])
    );

    // Latency percentiles per department.
    let mut rows = Vec::new();
    for (dept, lat) in &stats.latencies {
        let mut v = lat.clone();
        v.sort_unstable();
        rows.push((
            dept.clone(),
            [percentile(&v, 50), percentile(&v, 95), percentile(&v, 99)],
            v.len(),
        ));
    }
    let max_ms = rows
        .iter()
        .flat_map(|(_, p, _)| p.iter())
        .copied()
        .max()
        .unwrap_or(0) as f64
        / 1000.0;
    let max_ms = nice_max(max_ms);
    let bar_h = 14.0;
    let group_h = bar_h * 3.0 + 14.0;
    let height = TOP + group_h * rows.len().max(1) as f64 + 30.0;
    let label_w = 250.0;
    let plot_w = W - label_w - RIGHT - 60.0;
    let mut svg = format!(
        "<svg class=\"chart\" id=\"chart-latency\" viewBox=\"0 0 {W} {height:.0}\" role=\"img\" aria-label=\"latency percentiles\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for i in 0..=TICKS {
        let x = label_w + plot_w * f64::from(i) / f64::from(TICKS);
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\"/><text class=\"axis\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{} ms</text>",
            height - 26.0,
            height - 10.0,
            format_value(max_ms * f64::from(i) / f64::from(TICKS))
        );
    }
    for (g, (dept, p, _)) in rows.iter().enumerate() {
        let y0 = TOP + group_h * g as f64;
        let _ = write!(
            svg,
            "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            label_w - 8.0,
            y0 + bar_h * 1.5 + 4.0,
            escape_html(&department_label(dept))
        );
        for (i, (class, v)) in ["p50", "p95", "p99"].iter().zip(p).enumerate() {
            let ms = *v as f64 / 1000.0;
            let w = (plot_w * ms / max_ms).max(1.0);
            let y = y0 + bar_h * i as f64;
            let _ = write!(
                svg,
                "<rect class=\"bar {class}\" x=\"{label_w}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\"/>\
                 <text class=\"value\" x=\"{:.1}\" y=\"{:.1}\">{ms:.1}</text>",
                bar_h - 2.0,
                label_w + w + 4.0,
                y + bar_h - 4.0
            );
        }
    }
    svg.push_str("</svg>");
    let _ = write!(
        out,
        "<section class=\"card\"><h2>延迟百分位 Latency percentiles (24 h)</h2>{svg}{}",
        legend(&[
            ("p50".into(), "P50".into()),
            ("p95".into(), "P95".into()),
            ("p99".into(), "P99".into()),
        ])
    );
    out.push_str(
        "<table class=\"entries\"><thead><tr><th>部门 Department</th><th>请求 Requests</th><th>P50</th><th>P95</th><th>P99</th></tr></thead><tbody>",
    );
    for (dept, p, n) in &rows {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"num\">{n}</td><td class=\"num\">{:.1} ms</td><td class=\"num\">{:.1} ms</td><td class=\"num\">{:.1} ms</td></tr>",
            escape_html(&department_label(dept)),
            p[0] as f64 / 1000.0,
            p[1] as f64 / 1000.0,
            p[2] as f64 / 1000.0
        );
    }
    out.push_str("</tbody></table></section>");
    if total == 0 {
        out.insert_str(
            0,
            "<p class=\"empty\">过去24小时没有查询。No lookups in the last 24 hours.</p>",
        );
    }
    out
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

    #[test]
    fn axis_labels_are_round() {
        assert_eq!(format_value(0.2), "0.2");
        assert_eq!(format_value(0.004), "0.004");
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(250.0), "250");
        for max in [0.5, 1.0, 2.0, 5.0, 20.0, 500.0] {
            for i in 0..=TICKS {
                let label = format_value(max * f64::from(i) / f64::from(TICKS));
                assert!(label.len() <= 5, "{max}: {label}");
            }
        }
    }

    #[test]
    fn nice_axis_maxima() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(13.0), 20.0);
        assert_eq!(nice_max(42.0), 50.0);
        assert_eq!(nice_max(0.3), 0.5);
    }

    #[test]
    fn charts_render_escaped_svg() {
        let mut stats = Stats::default();
        let mut counts = [0; HOURS];
        counts[23] = 4;
        stats.per_department.insert("<police>".into(), counts);
        stats.total[23] = 4;
        stats.denials[23] = 1;
        stats
            .latencies
            .insert("<police>".into(), vec![1000, 2000, 3000, 90_000]);
        let html = render_stats(&stats);
        for id in ["chart-lookups", "chart-rates", "chart-latency"] {
            assert!(
                html.contains(&format!("<svg class=\"chart\" id=\"{id}\"")),
                "{id}"
            );
        }
        assert!(html.contains("&lt;police&gt;"));
        assert!(!html.contains("<police>"));
        assert!(html.contains("<polyline"));
        assert!(html.contains("<rect class=\"bar p99\""));
        assert!(html.contains("id=\"total-requests\">4<"));
        assert!(html.contains("25.0%"), "denial rate 1 of 4");
    }
}
