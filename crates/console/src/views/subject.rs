//! The subject report: every access to one person's data.

use chrono::Utc;
use maud::{Markup, html};
use tongban_audit::SubjectReport;

use super::layout::{Frame, csrf_field, entry_link, outcome_cell, page};
use crate::time::format_time;

const TITLE: &str = "个人报告 Subject report";

pub(crate) fn form_page(frame: &Frame<'_>, error: Option<&str>) -> Markup {
    let body = html! {
        p class="intro" {
            "列出对一个人数据的每次访问：何时、何机构、为何事项。身份证号只在此处即时转换为假名，不存储、不进入网址。"
            "Every access to one person's data: when, by whom, for which matter. The identity number is turned into its pseudonym on the fly; it is neither stored nor put in a URL."
        }
        @if let Some(e) = error {
            p class="error" id="error" { (e) }
        }
        form class="subject" method="post" action="/subject" {
            (csrf_field(frame.csrf.unwrap_or_default()))
            label { "身份证号 Identity number " input name="id_number" id="id-number" autocomplete="off" required maxlength="18"; }
            button type="submit" id="report-button" { "生成报告 Report" }
        }
    };
    page(TITLE, frame, body)
}

pub(crate) fn report_page(
    frame: &Frame<'_>,
    masked_id: &str,
    report: &SubjectReport,
    max: usize,
) -> Markup {
    let body = html! {
        section class="report" id="report" {
            h2 { "个人数据访问记录 Record of access to personal data" }
            p {
                "身份证号 Identity number: " strong class="mono" id="masked-id" { (masked_id) } br;
                "生成时间 Produced: " (format_time(&Utc::now())) " · 生成人 By: " (frame.user.unwrap_or_default()) br;
                "共 " strong id="access-count" { (report.accesses.len()) } " 次访问 accesses"
                @if report.truncated {
                    "（仅列出最近 " (max) " 次 only the newest " (max) " are listed）"
                }
            }
            table class="entries" id="accesses" {
                thead { tr {
                    th { "时间 Time" } th { "机构 Institution" } th { "经办人 Operator" } th { "事项 Matter" }
                    th { "案件号 Case" } th { "部门 Department" } th { "证据 Evidence" } th { "结果 Outcome" } th { "条目 Entry" }
                } }
                tbody {
                    @for a in &report.accesses {
                        tr {
                            td class="nowrap" { (format_time(&a.time)) }
                            td { (a.caller_org) br; small { (a.caller_unit) } }
                            td { (a.operator) }
                            td { (a.matter) }
                            td { (a.case_number) }
                            td { (a.department) }
                            td { (a.evidence_type) }
                            td { (outcome_cell(a.outcome_code, &a.outcome_reason)) }
                            td class="nowrap" { a href=(entry_link(&a.node, a.index)) { (a.node) "#" (a.index) } }
                        }
                    }
                }
            }
            @if report.accesses.is_empty() {
                p class="empty" { "没有访问记录。No accesses recorded." }
            }
            p class="noprint" {
                button type="button" id="print" { "打印 Print" }
                " "
                a href="/subject" { "另一人 Another person" }
            }
        }
    };
    page(TITLE, frame, body)
}
