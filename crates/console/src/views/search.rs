//! The search page and its results table.

use maud::{Markup, html};
use tongban_audit::{EntryKind, LoggedEntry};

use super::layout::{Frame, csrf_field, entry_link, outcome_cell, page};
use crate::filter::TEXT_FILTERS;
use crate::time::format_time;
use crate::url::{param, url_encode};

/// One page of results.
#[derive(Debug)]
pub(crate) struct Results<'a> {
    pub entries: &'a [LoggedEntry],
    /// The canonical query of the filter.
    pub query: &'a str,
    /// Whether this is a later page (so "newest" is offered).
    pub later_page: bool,
    /// The cursor of the next page, if there is one.
    pub next: Option<String>,
    /// Filtering by a person: an empty table is not shown.
    pub by_subject: bool,
}

pub(crate) fn search_page(
    frame: &Frame<'_>,
    params: &[(String, String)],
    error: Option<&str>,
    results: Option<&Results<'_>>,
) -> Markup {
    let body = html! {
        (form(frame.csrf.unwrap_or_default(), params))
        @if let Some(e) = error {
            p class="error" id="error" { (e) }
        }
        @if let Some(r) = results {
            (results_view(r))
        }
    };
    page("搜索 Search", frame, body)
}

fn form(csrf: &str, params: &[(String, String)]) -> Markup {
    let kind = param(params, "kind");
    let pseudonym = param(params, "subject");
    html! {
        form class="filters" method="post" action="/search" {
            (csrf_field(csrf))
            label { "开始 From " input type="datetime-local" name="from" value=(param(params, "from")); }
            label { "结束 To " input type="datetime-local" name="to" value=(param(params, "to")); }
            @for (key, label) in TEXT_FILTERS {
                label { (label) " " input name=(key) value=(param(params, key)); }
            }
            label { "类型 Kind "
                select name="kind" {
                    option value="" { "全部 All" }
                    @for k in ["Lookup", "GatherItem", "AdminAction"] {
                        option selected[k == kind] { (k) }
                    }
                }
            }
            @if !pseudonym.is_empty() {
                // Keeps the person filter when the form is sent again; a
                // new identity number replaces it.
                input type="hidden" name="subject" value=(pseudonym);
            }
            label { "结果码 Outcome code " input name="outcome" inputmode="numeric" value=(param(params, "outcome")); }
            label { "身份证号或统一社会信用代码 Identity number or credit code "
                input name="subject_id" id="subject-id" autocomplete="off"
                    placeholder=(if pseudonym.is_empty() { "18位 18 characters" } else { "按假名筛选中 filtering by pseudonym" });
            }
            div class="actions" {
                button type="submit" id="search-button" { "搜索 Search" }
                " "
                a href="/search" { "清除 Clear" }
            }
        }
    }
}

fn results_view(r: &Results<'_>) -> Markup {
    let q = r.query;
    html! {
        p class="summary" {
            span id="result-count" { (r.entries.len()) }
            " 条，最新在前 entries, newest first. "
            a href=(format!("/export?{q}")) id="export" { "导出 Export JSON Lines" }
        }
        @if !r.by_subject || !r.entries.is_empty() {
            (entries_table(r.entries))
        }
        @if r.entries.is_empty() {
            p class="empty" id="no-results" { "没有符合条件的条目。No entries match." }
        }
        p class="pager" {
            @if r.later_page {
                a href=(format!("/search?{q}")) { "« 最新 Newest" }
                " "
            }
            @if let Some(next) = &r.next {
                @let sep = if q.is_empty() { "" } else { "&" };
                a id="next-page" href=(format!("/search?{q}{sep}after={}", url_encode(next))) { "下一页 Next »" }
            }
        }
    }
}

fn entries_table(entries: &[LoggedEntry]) -> Markup {
    html! {
        table class="entries" id="results" {
            thead { tr {
                th { "时间 Time" } th { "条目 Entry" } th { "类型 Kind" } th { "调用方 Caller" }
                th { "经办人 Operator" } th { "事项 Matter / 案件 Case" } th { "证据 Evidence" }
                th { "主体 Subject" } th { "结果 Outcome" } th { "耗时 Latency" }
            } }
            tbody {
                @for e in entries {
                    @let x = &e.entry;
                    tr {
                        td class="nowrap" { (format_time(&x.time)) }
                        td class="nowrap" { a class="entry-link" href=(entry_link(&x.node, e.index)) { (x.node) "#" (e.index) } }
                        td { (x.kind.as_str()) }
                        td { (x.caller_org) br; small { (x.caller_unit) } }
                        td { (x.operator) }
                        td { (x.matter) br; small { (x.case_number) } }
                        td { (x.department) br; small { (x.evidence_type) } }
                        td {
                            @if x.subject.is_empty() {
                                "—"
                            } @else {
                                span class="mono" title=(x.subject) { (x.subject.chars().take(10).collect::<String>()) "…" }
                            }
                        }
                        td { (outcome_cell(x.outcome_code, &x.outcome_reason)) }
                        td class="num" { (format!("{:.1} ms", x.latency_us as f64 / 1000.0)) }
                    }
                    @if x.kind == EntryKind::AdminAction && !x.detail.is_empty() {
                        tr class="detail" { td {} td colspan="9" { (x.detail) } }
                    }
                }
            }
        }
    }
}
