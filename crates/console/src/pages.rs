//! Page handlers and their HTML.

use std::fmt::Write;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use hyper::StatusCode;
use hyper::header::{self, HeaderValue};
use tongban_audit::{
    Checkpoint, EntryKind, LoggedEntry, PageRequest, SearchFilter, origin_for_node,
};
use tongban_core::IdNumber;

use crate::app::{
    Admin, Console, ConsoleRequest, ConsoleResponse, audit_unavailable, error_page, html_response,
    redirect,
};
use crate::html::{self, csrf_field, escape_html, format_time, url_encode};
use crate::text::is_unsafe_for_log;

/// Entries per search page.
const PAGE_SIZE: u32 = 50;
/// Most entries one export writes.
const MAX_EXPORT: usize = 10_000;
/// Most accesses a subject report lists.
const MAX_REPORT: usize = 10_000;
/// Checkpoints listed per node on the integrity page.
const CHECKPOINTS_SHOWN: usize = 20;

/// Text filters: query key, label.
const TEXT_FILTERS: [(&str, &str); 8] = [
    ("node", "节点 Node"),
    ("caller_org", "调用机构 Caller organisation"),
    ("caller_unit", "调用单位 Caller unit"),
    ("operator", "经办人 Operator"),
    ("department", "部门 Department"),
    ("evidence_type", "证据类型 Evidence type"),
    ("matter", "事项 Matter"),
    ("case", "案件号 Case number"),
];

fn param<'a>(params: &'a [(String, String)], key: &str) -> &'a str {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.trim())
}

fn is_pseudonym(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What `tongban_audit` accepts as a node id; nothing else can be found,
/// so nothing else is logged.
fn is_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn parse_local_time(s: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
        .ok()?;
    html::cst()
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// A search filter read from form or query parameters, the canonical
/// parameters that reproduce it (identity numbers replaced by pseudonyms),
/// and a description for the audit log.
#[derive(Debug, Clone, Default)]
pub(crate) struct ParsedFilter {
    pub filter: SearchFilter,
    pub params: Vec<(String, String)>,
}

impl ParsedFilter {
    pub fn describe(&self) -> String {
        if self.params.is_empty() {
            return "filter: all entries".into();
        }
        let parts: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("filter: {}", parts.join(" "))
    }

    pub fn query_string(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

pub(crate) fn parse_filter(
    console: &Console,
    params: &[(String, String)],
) -> Result<ParsedFilter, String> {
    let mut out = ParsedFilter::default();
    let text = |k: &str| {
        let v = param(params, k);
        (!v.is_empty()).then(|| v.to_owned())
    };
    for (key, _) in TEXT_FILTERS {
        if let Some(v) = text(key) {
            if v.chars().count() > 128 {
                return Err(format!("{key}: too long (at most 128 characters)"));
            }
            if v.chars().any(is_unsafe_for_log) {
                return Err(format!(
                    "{key}: contains control or text-direction characters"
                ));
            }
            out.params.push((key.to_owned(), v.clone()));
            let f = &mut out.filter;
            match key {
                "node" => f.node = Some(v),
                "caller_org" => f.caller_org = Some(v),
                "caller_unit" => f.caller_unit = Some(v),
                "operator" => f.operator = Some(v),
                "department" => f.department = Some(v),
                "evidence_type" => f.evidence_type = Some(v),
                "matter" => f.matter = Some(v),
                _ => f.case_number = Some(v),
            }
        }
    }
    if let Some(k) = text("kind") {
        out.filter.kind = Some(k.parse::<EntryKind>()?);
        out.params.push(("kind".into(), k));
    }
    if let Some(o) = text("outcome") {
        out.filter.outcome_code = Some(
            o.parse::<i32>()
                .map_err(|_| format!("outcome: {o:?} is not a status code"))?,
        );
        out.params.push(("outcome".into(), o));
    }
    for key in ["from", "to"] {
        if let Some(t) = text(key) {
            let time = parse_local_time(&t)
                .ok_or_else(|| format!("{key}: {t:?} is not a time like 2026-11-26T08:30"))?;
            if key == "from" {
                out.filter.from = Some(time);
            } else {
                out.filter.to = Some(time);
            }
            out.params.push((key.to_owned(), t));
        }
    }
    if let Some(id) = text("subject_id") {
        let id = IdNumber::parse(&id).map_err(|e| {
            format!(
                "身份证号无效 not a valid resident identity number ({} check failed)",
                e.check()
            )
        })?;
        let p = console.backend().pseudonymizer.pseudonym(id.as_str());
        out.filter.subject = Some(p.clone());
        out.params.push(("subject".into(), p));
    } else if let Some(p) = text("subject") {
        if !is_pseudonym(&p) {
            return Err("subject: not a pseudonym".into());
        }
        out.filter.subject = Some(p.clone());
        out.params.push(("subject".into(), p));
    }
    Ok(out)
}

pub(crate) fn login_body(token: &str, error: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(e) = error {
        let _ = write!(
            out,
            "<p class=\"error\" id=\"login-error\">{}</p>",
            escape_html(e)
        );
    }
    let _ = write!(
        out,
        "<form class=\"login\" method=\"post\" action=\"/login\">{}\
         <label>用户名 Name <input name=\"user\" id=\"user\" autocomplete=\"username\" required></label>\
         <label>密码 Password <input type=\"password\" name=\"password\" id=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\" id=\"sign-in\">登录 Sign in</button></form>",
        csrf_field(token)
    );
    out
}

fn search_form(admin: &Admin, params: &[(String, String)]) -> String {
    let mut out = String::from("<form class=\"filters\" method=\"post\" action=\"/search\">");
    out.push_str(&csrf_field(&admin.csrf));
    let _ = write!(
        out,
        "<label>开始 From <input type=\"datetime-local\" name=\"from\" value=\"{}\"></label>\
         <label>结束 To <input type=\"datetime-local\" name=\"to\" value=\"{}\"></label>",
        escape_html(param(params, "from")),
        escape_html(param(params, "to"))
    );
    for (key, label) in TEXT_FILTERS {
        let _ = write!(
            out,
            "<label>{label} <input name=\"{key}\" value=\"{}\"></label>",
            escape_html(param(params, key))
        );
    }
    let kind = param(params, "kind");
    out.push_str("<label>类型 Kind <select name=\"kind\"><option value=\"\">全部 All</option>");
    for k in ["Lookup", "GatherItem", "AdminAction"] {
        let sel = if k == kind { " selected" } else { "" };
        let _ = write!(out, "<option{sel}>{k}</option>");
    }
    out.push_str("</select></label>");
    let pseudonym = param(params, "subject");
    if !pseudonym.is_empty() {
        // Keeps the person filter when the form is sent again; a new
        // identity number replaces it.
        let _ = write!(
            out,
            "<input type=\"hidden\" name=\"subject\" value=\"{}\">",
            escape_html(pseudonym)
        );
    }
    let _ = write!(
        out,
        "<label>结果码 Outcome code <input name=\"outcome\" inputmode=\"numeric\" value=\"{}\"></label>\
         <label>身份证号 Subject identity number <input name=\"subject_id\" id=\"subject-id\" autocomplete=\"off\" placeholder=\"{}\"></label>\
         <div class=\"actions\"><button type=\"submit\" id=\"search-button\">搜索 Search</button> <a href=\"/search\">清除 Clear</a></div></form>",
        escape_html(param(params, "outcome")),
        if param(params, "subject").is_empty() {
            "18位 18 characters"
        } else {
            "按假名筛选中 filtering by pseudonym"
        }
    );
    out
}

fn outcome_cell(code: i32, reason: &str) -> String {
    if code == 0 {
        "<span class=\"ok\">OK</span>".into()
    } else {
        format!("<span class=\"bad\">{code} {}</span>", escape_html(reason))
    }
}

fn entry_link(node: &str, index: u64) -> String {
    format!(
        "/entry?node={}&amp;index={index}",
        escape_html(&url_encode(node))
    )
}

fn entries_table(entries: &[LoggedEntry]) -> String {
    let mut out = String::from(
        "<table class=\"entries\" id=\"results\"><thead><tr><th>时间 Time</th><th>条目 Entry</th><th>类型 Kind</th>\
         <th>调用方 Caller</th><th>经办人 Operator</th><th>事项 Matter / 案件 Case</th><th>证据 Evidence</th>\
         <th>主体 Subject</th><th>结果 Outcome</th><th>耗时 Latency</th></tr></thead><tbody>",
    );
    for e in entries {
        let x = &e.entry;
        let subject = if x.subject.is_empty() {
            "—".to_owned()
        } else {
            format!(
                "<span class=\"mono\" title=\"{}\">{}…</span>",
                escape_html(&x.subject),
                escape_html(&x.subject[..x.subject.len().min(10)])
            )
        };
        let _ = write!(
            out,
            "<tr><td class=\"nowrap\">{}</td><td class=\"nowrap\"><a class=\"entry-link\" href=\"{}\">{}#{}</a></td><td>{}</td>\
             <td>{}<br><small>{}</small></td><td>{}</td><td>{}<br><small>{}</small></td><td>{}<br><small>{}</small></td>\
             <td>{subject}</td><td>{}</td><td class=\"num\">{:.1} ms</td></tr>",
            escape_html(&format_time(&x.time)),
            entry_link(&x.node, e.index),
            escape_html(&x.node),
            e.index,
            x.kind.as_str(),
            escape_html(&x.caller_org),
            escape_html(&x.caller_unit),
            escape_html(&x.operator),
            escape_html(&x.matter),
            escape_html(&x.case_number),
            escape_html(&x.department),
            escape_html(&x.evidence_type),
            outcome_cell(x.outcome_code, &x.outcome_reason),
            x.latency_us as f64 / 1000.0
        );
        if x.kind == EntryKind::AdminAction && !x.detail.is_empty() {
            let _ = write!(
                out,
                "<tr class=\"detail\"><td></td><td colspan=\"9\">{}</td></tr>",
                escape_html(&x.detail)
            );
        }
    }
    out.push_str("</tbody></table>");
    out
}

pub(crate) fn search_post(
    console: &Console,
    admin: &Admin,
    request: &ConsoleRequest,
) -> ConsoleResponse {
    let form = request.form();
    match parse_filter(console, &form) {
        // The identity number never reaches a URL: only its pseudonym does.
        Ok(parsed) => redirect(&format!("/search?{}", parsed.query_string()), None),
        Err(e) => search_page(admin, &form, Some(&e), None, StatusCode::BAD_REQUEST),
    }
}

pub(crate) async fn search(
    console: &Console,
    admin: &Admin,
    request: &ConsoleRequest,
) -> ConsoleResponse {
    let params = request.query_params();
    let parsed = match parse_filter(console, &params) {
        Ok(p) => p,
        Err(e) => return search_page(admin, &params, Some(&e), None, StatusCode::BAD_REQUEST),
    };
    let after = match param(&params, "after") {
        "" => None,
        c => match c.parse::<tongban_audit::Cursor>() {
            Ok(c) => Some(c),
            Err(e) => {
                return search_page(admin, &params, Some(&e), None, StatusCode::BAD_REQUEST);
            }
        },
    };
    let mut detail = parsed.describe();
    if after.is_some() {
        detail.push_str(" (next page)");
    }
    if let Err(e) = console
        .record(&admin.user, "console.search", detail, None, None)
        .await
    {
        return audit_unavailable(&e, Some(admin));
    }
    let page = match tongban_audit::search(
        console.backend().store.as_ref(),
        &parsed.filter,
        &PageRequest {
            limit: PAGE_SIZE,
            after,
        },
    )
    .await
    {
        Ok(page) => page,
        Err(e) => {
            return search_page(
                admin,
                &parsed.params,
                Some(&format!("search failed: {e}")),
                None,
                StatusCode::INTERNAL_SERVER_ERROR,
            );
        }
    };
    let q = parsed.query_string();
    let mut results = String::new();
    let _ = write!(
        results,
        "<p class=\"summary\"><span id=\"result-count\">{}</span> 条，最新在前 entries, newest first. \
         <a href=\"/export?{}\" id=\"export\">导出 Export JSON Lines</a></p>",
        page.entries.len(),
        escape_html(&q)
    );
    if !parsed.params.iter().any(|(k, _)| k == "subject") || !page.entries.is_empty() {
        results.push_str(&entries_table(&page.entries));
    }
    if page.entries.is_empty() {
        results.push_str(
            "<p class=\"empty\" id=\"no-results\">没有符合条件的条目。No entries match.</p>",
        );
    }
    results.push_str("<p class=\"pager\">");
    if !param(&params, "after").is_empty() {
        let _ = write!(
            results,
            "<a href=\"/search?{}\">« 最新 Newest</a> ",
            escape_html(&q)
        );
    }
    if let Some(next) = page.next {
        let sep = if q.is_empty() { "" } else { "&" };
        let _ = write!(
            results,
            "<a id=\"next-page\" href=\"/search?{}\">下一页 Next »</a>",
            escape_html(&format!("{q}{sep}after={}", url_encode(&next.to_string())))
        );
    }
    results.push_str("</p>");
    search_page(admin, &parsed.params, None, Some(&results), StatusCode::OK)
}

fn search_page(
    admin: &Admin,
    params: &[(String, String)],
    error: Option<&str>,
    results: Option<&str>,
    status: StatusCode,
) -> ConsoleResponse {
    let mut body = search_form(admin, params);
    if let Some(e) = error {
        let _ = write!(
            body,
            "<p class=\"error\" id=\"error\">{}</p>",
            escape_html(e)
        );
    }
    if let Some(r) = results {
        body.push_str(r);
    }
    html_response(
        status,
        html::page("搜索 Search", &admin.frame("/search"), &body),
    )
}

pub(crate) async fn export(
    console: &Console,
    admin: &Admin,
    request: &ConsoleRequest,
) -> ConsoleResponse {
    let params = request.query_params();
    let parsed = match parse_filter(console, &params) {
        Ok(p) => p,
        Err(e) => {
            return error_page(StatusCode::BAD_REQUEST, "导出 Export", &e, Some(admin));
        }
    };
    if let Err(e) = console
        .record(&admin.user, "console.export", parsed.describe(), None, None)
        .await
    {
        return audit_unavailable(&e, Some(admin));
    }
    let mut out = Vec::new();
    let mut after = None;
    let mut written = 0;
    loop {
        let page = match tongban_audit::search(
            console.backend().store.as_ref(),
            &parsed.filter,
            &PageRequest {
                limit: 1000,
                after: after.take(),
            },
        )
        .await
        {
            Ok(p) => p,
            Err(e) => {
                return error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "导出 Export",
                    &format!("export failed: {e}"),
                    Some(admin),
                );
            }
        };
        for e in &page.entries {
            if written == MAX_EXPORT {
                break;
            }
            if serde_json::to_writer(&mut out, e).is_ok() {
                out.push(b'\n');
                written += 1;
            }
        }
        match page.next {
            Some(n) if written < MAX_EXPORT => after = Some(n),
            _ => break,
        }
    }
    let mut r = hyper::Response::new(http_body_util::Full::new(hyper::body::Bytes::from(out)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"tongban-audit-export.jsonl\""),
    );
    r
}

pub(crate) async fn entry(
    console: &Console,
    admin: &Admin,
    request: &ConsoleRequest,
) -> ConsoleResponse {
    let params = request.query_params();
    let node = param(&params, "node").to_owned();
    if !is_node_name(&node) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "条目 Entry",
            "node: not a node name (1 to 64 letters, digits, . _ -)",
            Some(admin),
        );
    }
    let Ok(index) = param(&params, "index").parse::<u64>() else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "条目 Entry",
            "index: not a number",
            Some(admin),
        );
    };
    if let Err(e) = console
        .record(
            &admin.user,
            "console.entry",
            format!("node={node} index={index}"),
            None,
            None,
        )
        .await
    {
        return audit_unavailable(&e, Some(admin));
    }
    let backend = console.backend();
    let found = match backend.store.entry(&node, index).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            return error_page(
                StatusCode::NOT_FOUND,
                "条目 Entry",
                "没有这个条目（或已按保留期删除）。No such entry (or pruned by retention).",
                Some(admin),
            );
        }
        Err(e) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "条目 Entry",
                &format!("store: {e}"),
                Some(admin),
            );
        }
    };
    let x = &found.entry;
    let mut body =
        String::from("<section class=\"card\"><h2>字段 Fields</h2><table class=\"fields\">");
    let latency = format!("{:.3} ms", x.latency_us as f64 / 1000.0);
    let outcome = format!("{} {}", x.outcome_code, x.outcome_reason);
    let index_text = index.to_string();
    let time_text = format_time(&x.time);
    let rows: [(&str, &str); 18] = [
        ("时间 Time", &time_text),
        ("节点 Node", &x.node),
        ("序号 Index", &index_text),
        ("类型 Kind", x.kind.as_str()),
        ("调用机构 Caller organisation", &x.caller_org),
        ("调用单位 Caller unit", &x.caller_unit),
        ("经办人 Operator", &x.operator),
        ("事项 Matter", &x.matter),
        ("案件号 Case number", &x.case_number),
        ("证据类型 Evidence type", &x.evidence_type),
        ("部门 Department", &x.department),
        ("主体假名 Subject pseudonym", &x.subject),
        ("结果 Outcome", &outcome),
        ("耗时 Latency", &latency),
        ("追踪 Trace id", &x.trace_id),
        ("释放字段哈希 Released fields hash", &x.released_fields_hash),
        ("详情 Detail", &x.detail),
        ("叶哈希 Leaf hash", ""),
    ];
    for (label, value) in &rows[..17] {
        let _ = write!(
            body,
            "<tr><th>{label}</th><td class=\"mono\">{}</td></tr>",
            escape_html(value)
        );
    }
    body.push_str("</table></section>");

    let leaf_hex = hex::encode(found.leaf_hash);
    let recomputed = x.leaf_hash(index) == found.leaf_hash;
    let _ = write!(
        body,
        "<section class=\"card\"><h2>回执 Receipt</h2><table class=\"fields\">\
         <tr><th>节点 Node</th><td class=\"mono\">{}</td></tr><tr><th>序号 Index</th><td class=\"mono\">{index}</td></tr>\
         <tr><th>{}</th><td class=\"mono\" id=\"leaf-hash\">{leaf_hex}</td></tr></table>",
        escape_html(&x.node),
        rows[17].0,
    );
    if !recomputed {
        body.push_str("<p class=\"bad\" id=\"leaf-mismatch\">✗ 条目内容与叶哈希不符 The entry's fields do not hash to the stored leaf hash: it was altered.</p>");
    }
    body.push_str("</section><section class=\"card\"><h2>包含证明 Inclusion proof</h2>");
    let proof = tongban_audit::inclusion_proof(backend.store.as_ref(), &node, index).await;
    match proof {
        Ok(proof) => {
            let verdict = proof.verify(&backend.keyring);
            match (&verdict, proof.leaf_hash == found.leaf_hash && recomputed) {
                (Ok(cp), true) => {
                    let _ = write!(
                        body,
                        "<p class=\"verdict ok\" id=\"proof-status\" data-status=\"verified\">✓ 已验证 Verified: \
                         this entry is in the tree of size {} whose root is signed by a pinned key ({}), checkpoint of {}.</p>",
                        cp.size,
                        escape_html(&key_names(console)),
                        escape_html(&format_time(&cp.time))
                    );
                }
                (Ok(_), false) => {
                    body.push_str("<p class=\"verdict bad\" id=\"proof-status\" data-status=\"failed\">✗ 验证失败 Not verified: \
                        the proof is for a different leaf hash than this entry's.</p>");
                }
                (Err(e), _) => {
                    let _ = write!(
                        body,
                        "<p class=\"verdict bad\" id=\"proof-status\" data-status=\"failed\">✗ 验证失败 Not verified: {}</p>",
                        escape_html(&e.to_string())
                    );
                }
            }
            let _ = write!(
                body,
                "<table class=\"fields\"><tr><th>树大小 Tree size</th><td class=\"mono\">{}</td></tr><tr><th>路径 Path ({} hashes)</th><td class=\"mono\">",
                proof.tree_size,
                proof.proof.len()
            );
            for h in &proof.proof {
                let _ = write!(body, "{}<br>", hex::encode(h));
            }
            let _ = write!(
                body,
                "</td></tr></table><h3>签名检查点 Signed checkpoint</h3><pre id=\"checkpoint\">{}</pre>",
                escape_html(&proof.checkpoint)
            );
        }
        Err(e) => {
            let covered = match backend.store.latest_checkpoint(&node).await {
                Ok(Some(cp)) => index < cp.tree_size,
                _ => false,
            };
            if covered {
                let _ = write!(
                    body,
                    "<p class=\"verdict bad\" id=\"proof-status\" data-status=\"failed\">✗ 无法生成证明 No proof: {}</p>",
                    escape_html(&e.to_string())
                );
            } else {
                body.push_str(
                    "<p class=\"verdict pending\" id=\"proof-status\" data-status=\"pending\">⏳ 尚未签名 Not yet covered by a signed checkpoint; \
                     the node signs one within seconds — reload to see the proof.</p>",
                );
            }
        }
    }
    body.push_str("</section>");
    html_response(
        StatusCode::OK,
        html::page(
            &format!("条目 Entry {}#{index}", x.node),
            &admin.frame("/search"),
            &body,
        ),
    )
}

fn key_names(console: &Console) -> String {
    console
        .backend()
        .keyring
        .keys()
        .iter()
        .map(|k| format!("{}+{}", k.name, hex::encode(k.key_id)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn subject_form(admin: &Admin, error: Option<&str>) -> ConsoleResponse {
    let mut body = String::from(
        "<p class=\"intro\">列出对一个人数据的每次访问：何时、何机构、为何事项。身份证号只在此处即时转换为假名，不存储、不进入网址。\
         Every access to one person's data: when, by whom, for which matter. The identity number is turned into its pseudonym on the fly; it is neither stored nor put in a URL.</p>",
    );
    if let Some(e) = error {
        let _ = write!(
            body,
            "<p class=\"error\" id=\"error\">{}</p>",
            escape_html(e)
        );
    }
    let _ = write!(
        body,
        "<form class=\"subject\" method=\"post\" action=\"/subject\">{}\
         <label>身份证号 Identity number <input name=\"id_number\" id=\"id-number\" autocomplete=\"off\" required maxlength=\"18\"></label>\
         <button type=\"submit\" id=\"report-button\">生成报告 Report</button></form>",
        csrf_field(&admin.csrf)
    );
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    html_response(
        status,
        html::page("个人报告 Subject report", &admin.frame("/subject"), &body),
    )
}

fn mask_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() < 10 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 10))
}

pub(crate) async fn subject_report(
    console: &Console,
    admin: &Admin,
    request: &ConsoleRequest,
) -> ConsoleResponse {
    let form = request.form();
    let id = match IdNumber::parse(param(&form, "id_number")) {
        Ok(id) => id,
        Err(e) => {
            return subject_form(
                admin,
                Some(&format!(
                    "身份证号无效 Not a valid resident identity number ({} check failed)",
                    e.check()
                )),
            );
        }
    };
    let backend = console.backend();
    let pseudonym = backend.pseudonymizer.pseudonym(id.as_str());
    if let Err(e) = console
        .record(
            &admin.user,
            "console.subject-report",
            format!("subject={pseudonym}"),
            None,
            None,
        )
        .await
    {
        return audit_unavailable(&e, Some(admin));
    }
    let report =
        match tongban_audit::subject_report(backend.store.as_ref(), &pseudonym, MAX_REPORT).await {
            Ok(r) => r,
            Err(e) => {
                return error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "个人报告 Subject report",
                    &format!("report failed: {e}"),
                    Some(admin),
                );
            }
        };
    let mut body = String::new();
    let _ = write!(
        body,
        "<section class=\"report\" id=\"report\"><h2>个人数据访问记录 Record of access to personal data</h2>\
         <p>身份证号 Identity number: <strong class=\"mono\" id=\"masked-id\">{}</strong><br>\
         生成时间 Produced: {} · 生成人 By: {}<br>\
         共 <strong id=\"access-count\">{}</strong> 次访问 accesses{}</p>",
        escape_html(&mask_id(id.as_str())),
        escape_html(&format_time(&Utc::now())),
        escape_html(&admin.user),
        report.accesses.len(),
        if report.truncated {
            format!("（仅列出最近 {MAX_REPORT} 次 only the newest {MAX_REPORT} are listed）")
        } else {
            String::new()
        }
    );
    body.push_str(
        "<table class=\"entries\" id=\"accesses\"><thead><tr><th>时间 Time</th><th>机构 Institution</th><th>经办人 Operator</th>\
         <th>事项 Matter</th><th>案件号 Case</th><th>部门 Department</th><th>证据 Evidence</th><th>结果 Outcome</th><th>条目 Entry</th></tr></thead><tbody>",
    );
    for a in &report.accesses {
        let _ = write!(
            body,
            "<tr><td class=\"nowrap\">{}</td><td>{}<br><small>{}</small></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"nowrap\"><a href=\"{}\">{}#{}</a></td></tr>",
            escape_html(&format_time(&a.time)),
            escape_html(&a.caller_org),
            escape_html(&a.caller_unit),
            escape_html(&a.operator),
            escape_html(&a.matter),
            escape_html(&a.case_number),
            escape_html(&a.department),
            escape_html(&a.evidence_type),
            outcome_cell(a.outcome_code, &a.outcome_reason),
            entry_link(&a.node, a.index),
            escape_html(&a.node),
            a.index
        );
    }
    body.push_str("</tbody></table>");
    if report.accesses.is_empty() {
        body.push_str("<p class=\"empty\">没有访问记录。No accesses recorded.</p>");
    }
    body.push_str("<p class=\"noprint\"><button type=\"button\" id=\"print\">打印 Print</button> <a href=\"/subject\">另一人 Another person</a></p></section>");
    html_response(
        StatusCode::OK,
        html::page("个人报告 Subject report", &admin.frame("/subject"), &body),
    )
}

pub(crate) async fn integrity(console: &Console, admin: &Admin) -> ConsoleResponse {
    if let Err(e) = console
        .record(&admin.user, "console.integrity", String::new(), None, None)
        .await
    {
        return audit_unavailable(&e, Some(admin));
    }
    let backend = console.backend();
    let mut body = String::new();
    let status = console.inner.verify.status();
    let _ = write!(
        body,
        "<section class=\"card\" id=\"verify\"><h2>立即验证 Verify now</h2>\
         <p>重新计算每个节点的全部条目和默克尔树，并与固定公钥签名的检查点比对。\
         Recomputes every node's entries and Merkle tree and checks them against checkpoints signed by the pinned keys ({}).</p>\
         <form method=\"post\" action=\"/integrity/verify\">{}<button type=\"submit\" id=\"verify-button\"{}>验证 Verify</button></form>",
        escape_html(&key_names(console)),
        csrf_field(&admin.csrf),
        if status.state == "running" {
            " disabled"
        } else {
            ""
        }
    );
    body.push_str(&verify_box(&status));
    body.push_str("</section>");
    let nodes = match backend.store.list_nodes().await {
        Ok(n) => n,
        Err(e) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "完整性 Integrity",
                &format!("store: {e}"),
                Some(admin),
            );
        }
    };
    for node in nodes {
        let state = backend.store.log_state(&node).await;
        let cps = backend.store.checkpoints(&node).await.unwrap_or_default();
        let _ = write!(
            body,
            "<section class=\"card node\"><h2>节点 Node {}</h2>",
            escape_html(&node)
        );
        if let Ok(s) = state {
            let _ = write!(
                body,
                "<p>条目 Entries: <strong>{}</strong>{} · 检查点 Checkpoints: <strong>{}</strong></p>",
                s.size,
                if s.pruned_before > 0 {
                    format!(" (保留自 retained from #{})", s.pruned_before)
                } else {
                    String::new()
                },
                cps.len()
            );
        }
        body.push_str(
            "<table class=\"entries checkpoints\"><thead><tr><th>树大小 Tree size</th><th>签名时间 Signed at</th><th>根哈希 Root</th><th>签名 Signature</th></tr></thead><tbody>",
        );
        let origin = origin_for_node(&node);
        for cp in cps.iter().rev().take(CHECKPOINTS_SHOWN) {
            let sig = match Checkpoint::open(&cp.note, &backend.keyring, &origin) {
                Ok(opened) if opened.size == cp.tree_size && opened.root == cp.root => {
                    "<span class=\"ok\">✓ 固定公钥 pinned key</span>".to_owned()
                }
                Ok(_) => {
                    "<span class=\"bad\">✗ 与存储不符 differs from the stored row</span>".to_owned()
                }
                Err(e) => format!(
                    "<span class=\"bad\">✗ {}</span>",
                    escape_html(&e.to_string())
                ),
            };
            let _ = write!(
                body,
                "<tr><td class=\"num\">{}</td><td>{}</td><td class=\"mono\">{}…</td><td>{sig}</td></tr>",
                cp.tree_size,
                escape_html(&format_time(&cp.time)),
                &hex::encode(cp.root)[..16]
            );
        }
        body.push_str("</tbody></table>");
        if cps.len() > CHECKPOINTS_SHOWN {
            let _ = write!(
                body,
                "<p class=\"muted\">仅显示最近 {CHECKPOINTS_SHOWN} 个 The newest {CHECKPOINTS_SHOWN} of {} are shown.</p>",
                cps.len()
            );
        }
        body.push_str("</section>");
    }
    html_response(
        StatusCode::OK,
        html::page("完整性 Integrity", &admin.frame("/integrity"), &body),
    )
}

/// The verification status box; console.js refreshes it while running.
fn verify_box(s: &crate::verify_job::VerifyStatus) -> String {
    let (class, label) = match s.state {
        "running" => ("pending", "⏳ 验证中 Verifying…"),
        "passed" => ("ok", "✓ 通过 PASSED: the log is intact"),
        "failed" => (
            "bad",
            "✗ 失败 FAILED: the log does not match its checkpoints",
        ),
        "error" => ("bad", "✗ 出错 ERROR: verification could not run"),
        _ => ("muted", "尚未运行 Not run since the console started"),
    };
    let mut out = format!(
        "<div id=\"verify-box\" data-state=\"{}\"><p class=\"verdict {class}\" id=\"verify-state\">{label}</p>\
         <progress id=\"verify-progress\" max=\"{}\" value=\"{}\"></progress> <span id=\"verify-count\">{} / {}</span>\
         <p id=\"verify-message\">{}</p><ul id=\"verify-findings\">",
        s.state,
        s.total.max(1),
        s.checked,
        s.checked,
        s.total,
        escape_html(&s.message)
    );
    for f in &s.findings {
        let _ = write!(
            out,
            "<li class=\"{}\">{} · {} · {}</li>",
            if f.severity == "error" { "bad" } else { "warn" },
            escape_html(&f.node),
            escape_html(&f.location),
            escape_html(&f.message)
        );
    }
    out.push_str("</ul></div>");
    out
}

pub(crate) async fn start_verify(console: &Console, admin: &Admin) -> ConsoleResponse {
    if let Err(e) = console
        .record(
            &admin.user,
            "console.verify-started",
            String::new(),
            None,
            None,
        )
        .await
    {
        return audit_unavailable(&e, Some(admin));
    }
    console.inner.verify.start(console, &admin.user);
    redirect("/integrity", None)
}

pub(crate) async fn overview(console: &Console, admin: &Admin) -> ConsoleResponse {
    if let Err(e) = console
        .record(&admin.user, "console.overview", String::new(), None, None)
        .await
    {
        return audit_unavailable(&e, Some(admin));
    }
    let body = match crate::overview::render(console.backend().store.as_ref(), Utc::now()).await {
        Ok(b) => b,
        Err(e) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "概览 Overview",
                &format!("store: {e}"),
                Some(admin),
            );
        }
    };
    html_response(
        StatusCode::OK,
        html::page("概览 Overview", &admin.frame("/overview"), &body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_identity_numbers() {
        assert_eq!(mask_id("510421199603140825"), "510421********0825");
        assert_eq!(mask_id("123"), "***");
    }

    #[test]
    fn local_times_are_china_standard_time() {
        let t = parse_local_time("2026-11-26T08:30").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-26T00:30:00+00:00");
        assert!(parse_local_time("2026-11-26T08:30:15").is_some());
        assert!(parse_local_time("yesterday").is_none());
    }

    #[test]
    fn pseudonyms_are_64_lower_hex() {
        assert!(is_pseudonym(&"a1".repeat(32)));
        assert!(!is_pseudonym(&"A1".repeat(32)));
        assert!(!is_pseudonym("510421199603140825"));
    }
}
