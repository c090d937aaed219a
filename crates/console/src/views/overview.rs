//! The overview's charts: server-rendered SVG, no script.

use chrono::{DateTime, TimeDelta, Utc};
use maud::{Markup, html};

use super::layout::{Frame, page};
use crate::overview::{HOURS, MAX_ENTRIES_PER_KIND, Stats, percentile, rate};
use crate::time::cst;

const W: f64 = 760.0;
const H: f64 = 260.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 40.0;
/// Grid intervals per axis: with maxima of 1, 2 or 5 × 10ⁿ every label is round.
const TICKS: u32 = 5;

pub(crate) fn overview_page(frame: &Frame<'_>, stats: &Stats) -> Markup {
    page("概览 Overview", frame, render_stats(stats))
}

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

fn format_value(v: f64) -> String {
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        // Trim the zeros of e.g. 0.20 and 0.0040.
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn f1(v: f64) -> String {
    format!("{v:.1}")
}

/// Axes, grid and hour labels of a 24-hour chart, around `series` (drawn
/// with the y-scale maximum it is given).
fn chart(
    id: &str,
    label: &str,
    max: f64,
    unit: &str,
    start: DateTime<Utc>,
    series: impl FnOnce(f64) -> Markup,
) -> Markup {
    let max = nice_max(max);
    let plot_h = H - TOP - BOTTOM;
    let step = (W - LEFT - RIGHT) / HOURS as f64;
    html! {
        svg class="chart" id=(id) viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(label) xmlns="http://www.w3.org/2000/svg" {
            @for i in 0..=TICKS {
                @let v = max * f64::from(i) / f64::from(TICKS);
                @let y = TOP + plot_h * (1.0 - f64::from(i) / f64::from(TICKS));
                line class="grid" x1=(LEFT) y1=(f1(y)) x2=(f1(W - RIGHT)) y2=(f1(y)) {}
                text class="axis" x=(f1(LEFT - 6.0)) y=(f1(y + 4.0)) text-anchor="end" { (format_value(v)) (unit) }
            }
            @for h in (0..HOURS).step_by(3) {
                @let x = LEFT + step * (h as f64 + 0.5);
                @let hour = (start + TimeDelta::hours(h as i64)).with_timezone(&cst()).format("%H:00").to_string();
                text class="axis" x=(f1(x)) y=(f1(H - BOTTOM + 18.0)) text-anchor="middle" { (hour) }
            }
            (series(max))
        }
    }
}

fn polyline(class: &str, values: &[f64], max: f64) -> Markup {
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
    html! {
        polyline class=(format!("series {class}")) fill="none" points=(points.join(" ")) {}
    }
}

fn legend(items: &[(String, String)]) -> Markup {
    html! {
        ul class="legend" {
            @for (class, label) in items {
                li { span class=(format!("swatch {class}")) {} (label) }
            }
        }
    }
}

fn department_label(id: &str) -> String {
    match tongban_core::Catalogue::embedded().department(id) {
        Some(d) => format!("{} {id}", d.title_zh),
        None => id.to_owned(),
    }
}

fn good_or_bad(bad: bool) -> &'static str {
    if bad { "value bad" } else { "value ok" }
}

pub(crate) fn render_stats(stats: &Stats) -> Markup {
    let total: u64 = stats.total.iter().sum();
    let errors: u64 = stats.errors.iter().sum();
    let denials: u64 = stats.denials.iter().sum();
    let mut all: Vec<u64> = stats.latencies.values().flatten().copied().collect();
    all.sort_unstable();

    // Lookups per department per hour.
    let lookups_max = stats
        .per_department
        .values()
        .flat_map(|v| v.iter())
        .copied()
        .max()
        .unwrap_or(0) as f64;
    let departments: Vec<(String, Vec<f64>)> = stats
        .per_department
        .iter()
        .enumerate()
        .map(|(i, (_, counts))| {
            (
                format!("s{}", i % 6),
                counts.iter().map(|&c| c as f64).collect(),
            )
        })
        .collect();
    let department_items: Vec<(String, String)> = stats
        .per_department
        .keys()
        .zip(&departments)
        .map(|(dept, (class, _))| (class.clone(), department_label(dept)))
        .collect();

    // Error and denial rates per hour.
    let err: Vec<f64> = (0..HOURS)
        .map(|h| rate(stats.errors[h], stats.total[h]))
        .collect();
    let den: Vec<f64> = (0..HOURS)
        .map(|h| rate(stats.denials[h], stats.total[h]))
        .collect();
    let rates_max = err.iter().chain(&den).copied().fold(0.0, f64::max);

    // Latency percentiles per department.
    let rows: Vec<(String, [u64; 3], usize)> = stats
        .latencies
        .iter()
        .map(|(dept, lat)| {
            let mut v = lat.clone();
            v.sort_unstable();
            (
                dept.clone(),
                [percentile(&v, 50), percentile(&v, 95), percentile(&v, 99)],
                v.len(),
            )
        })
        .collect();
    let max_ms = nice_max(
        rows.iter()
            .flat_map(|(_, p, _)| p.iter())
            .copied()
            .max()
            .unwrap_or(0) as f64
            / 1000.0,
    );
    let bar_h = 14.0;
    let group_h = bar_h * 3.0 + 14.0;
    let height = TOP + group_h * rows.len().max(1) as f64 + 30.0;
    let label_w = 250.0;
    let plot_w = W - label_w - RIGHT - 60.0;

    html! {
        @if total == 0 {
            p class="empty" { "过去24小时没有查询。No lookups in the last 24 hours." }
        }
        div class="cards" {
            div class="stat" { span class="label" { "24小时请求 Requests (24 h)" } span class="value" id="total-requests" { (total) } }
            div class="stat" { span class="label" { "错误率 Error rate" } span class=(good_or_bad(rate(errors, total) > 1.0)) { (format!("{:.1}%", rate(errors, total))) } }
            div class="stat" { span class="label" { "拒绝率 Denial rate" } span class=(good_or_bad(rate(denials, total) > 5.0)) { (format!("{:.1}%", rate(denials, total))) } }
            div class="stat" { span class="label" { "P95 延迟 latency" } span class="value" { (format!("{:.1} ms", percentile(&all, 95) as f64 / 1000.0)) } }
        }
        @if stats.sampled {
            p class="muted" {
                "按最近 " (MAX_ENTRIES_PER_KIND) " 条计算 Computed from the newest " (MAX_ENTRIES_PER_KIND) " entries of each kind."
            }
        }
        section class="card" {
            h2 { "每小时各部门查询 Lookups per department per hour" }
            (chart("chart-lookups", "每小时各部门查询 Lookups per department per hour", lookups_max, "", stats.start, |max| html! {
                @for (class, values) in &departments { (polyline(class, values, max)) }
            }))
            (legend(&department_items))
        }
        section class="card" {
            h2 { "错误率和拒绝率 Error and denial rates" }
            (chart("chart-rates", "每小时错误率和拒绝率 Error and denial rate per hour", rates_max, "%", stats.start, |max| html! {
                (polyline("err", &err, max))
                (polyline("deny", &den, max))
            }))
            (legend(&[
                ("err".into(), "错误 Errors (UNAVAILABLE, DEADLINE, INTERNAL…)".into()),
                ("deny".into(), "拒绝 Denials (PERMISSION_DENIED, UNAUTHENTICATED)".into()),
            ]))
        }
        section class="card" {
            h2 { "延迟百分位 Latency percentiles (24 h)" }
            svg class="chart" id="chart-latency" viewBox=(format!("0 0 {W} {height:.0}")) role="img" aria-label="latency percentiles" xmlns="http://www.w3.org/2000/svg" {
                @for i in 0..=TICKS {
                    @let x = label_w + plot_w * f64::from(i) / f64::from(TICKS);
                    line class="grid" x1=(f1(x)) y1=(TOP) x2=(f1(x)) y2=(f1(height - 26.0)) {}
                    text class="axis" x=(f1(x)) y=(f1(height - 10.0)) text-anchor="middle" {
                        (format_value(max_ms * f64::from(i) / f64::from(TICKS))) " ms"
                    }
                }
                @for (g, (dept, p, _)) in rows.iter().enumerate() {
                    @let y0 = TOP + group_h * g as f64;
                    text class="axis" x=(f1(label_w - 8.0)) y=(f1(y0 + bar_h * 1.5 + 4.0)) text-anchor="end" { (department_label(dept)) }
                    @for (i, (class, v)) in ["p50", "p95", "p99"].iter().zip(p).enumerate() {
                        @let ms = *v as f64 / 1000.0;
                        @let w = (plot_w * ms / max_ms).max(1.0);
                        @let y = y0 + bar_h * i as f64;
                        rect class=(format!("bar {class}")) x=(label_w) y=(f1(y)) width=(f1(w)) height=(f1(bar_h - 2.0)) {}
                        text class="value" x=(f1(label_w + w + 4.0)) y=(f1(y + bar_h - 4.0)) { (f1(ms)) }
                    }
                }
            }
            (legend(&[
                ("p50".into(), "P50".into()),
                ("p95".into(), "P95".into()),
                ("p99".into(), "P99".into()),
            ]))
            table class="entries" {
                thead { tr { th { "部门 Department" } th { "请求 Requests" } th { "P50" } th { "P95" } th { "P99" } } }
                tbody {
                    @for (dept, p, n) in &rows {
                        tr {
                            td { (department_label(dept)) }
                            td class="num" { (n) }
                            @for v in p {
                                td class="num" { (format!("{:.1} ms", *v as f64 / 1000.0)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let html = render_stats(&stats).into_string();
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
