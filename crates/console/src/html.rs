//! HTML escaping, URL encoding and the page frame.

use std::fmt::Write;

use chrono::{DateTime, FixedOffset, Offset, Utc};

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query-string component (RFC 3986 unreserved kept).
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decodes `application/x-www-form-urlencoded` text into pairs (bad
/// escapes are kept literally; invalid UTF-8 is replaced).
pub fn parse_form(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (url_decode(k), url_decode(v))
        })
        .collect()
}

fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// China Standard Time, the deployment's local time.
pub fn cst() -> FixedOffset {
    const EIGHT_HOURS: i32 = 8 * 3600;
    // Within ±24 h, so always Some; UTC is the fallback the type needs.
    FixedOffset::east_opt(EIGHT_HOURS).unwrap_or(Utc.fix())
}

/// `2026-11-26 21:30:05 +08:00`.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.with_timezone(&cst())
        .format("%Y-%m-%d %H:%M:%S%.3f %:z")
        .to_string()
}

/// Navigation entries: path, label.
const NAV: [(&str, &str); 4] = [
    ("/overview", "概览 Overview"),
    ("/search", "搜索 Search"),
    ("/subject", "个人报告 Subject report"),
    ("/integrity", "完整性 Integrity"),
];

/// Who is signed in, for the page frame.
#[derive(Debug, Clone)]
pub struct Frame<'a> {
    pub user: Option<&'a str>,
    pub csrf: Option<&'a str>,
    pub active: &'a str,
}

/// A whole page: header, navigation, `body`, footer. `title` and the user
/// name are escaped here; `body` must already be safe HTML.
pub fn page(title: &str, frame: &Frame<'_>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    out.push_str("<!DOCTYPE html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    let _ = write!(
        out,
        "<title>{} · 通办 tongban console</title>",
        escape_html(title)
    );
    out.push_str("<link rel=\"stylesheet\" href=\"/static/console.css\">");
    out.push_str("<link rel=\"stylesheet\" href=\"/static/print.css\" media=\"print\">");
    out.push_str("<script src=\"/static/console.js\" defer></script>");
    out.push_str("</head><body><header class=\"top\"><div class=\"brand\">通办 tongban <span>审计控制台 Audit console</span></div>");
    if let Some(user) = frame.user {
        out.push_str("<nav>");
        for (path, label) in NAV {
            let class = if path == frame.active {
                " class=\"active\""
            } else {
                ""
            };
            let _ = write!(out, "<a href=\"{path}\"{class}>{label}</a>");
        }
        out.push_str("</nav>");
        let _ = write!(
            out,
            "<form class=\"signout\" method=\"post\" action=\"/logout\"><span class=\"user\" id=\"signed-in-user\">{}</span>{}<button type=\"submit\">退出 Sign out</button></form>",
            escape_html(user),
            csrf_field(frame.csrf.unwrap_or_default())
        );
    }
    let _ = write!(
        out,
        "</header><main><h1>{}</h1>{body}</main><footer>通办 tongban · 攀枝花 Panzhihua · 每次查看都记入审计日志 Every view is recorded in the audit log</footer></body></html>",
        escape_html(title)
    );
    out
}

/// The hidden CSRF field every POST form carries.
pub fn csrf_field(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape_html(token)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(
            escape_html(r#"<script>alert("x&y")</script>'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"
        );
        assert_eq!(escape_html("攀枝花 plain"), "攀枝花 plain");
        assert_eq!(escape_html(""), "");
        assert_eq!(escape_html("&amp;"), "&amp;amp;");
    }

    #[test]
    fn url_encoding_round_trips() {
        let text = "a b&c=d/é+%";
        let enc = url_encode(text);
        assert_eq!(enc, "a%20b%26c%3Dd%2F%C3%A9%2B%25");
        assert_eq!(
            parse_form(&format!("k={enc}")),
            vec![("k".into(), text.into())]
        );
    }

    #[test]
    fn forms_parse() {
        assert_eq!(
            parse_form("a=1&b=x+y&&c&d=%E6%94%80&e=%zz&f=%4&g=%+1"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "".into()),
                ("d".into(), "攀".into()),
                ("e".into(), "%zz".into()),
                ("f".into(), "%4".into()),
                ("g".into(), "% 1".into()),
            ]
        );
    }

    #[test]
    fn page_escapes_title_and_user() {
        let html = page(
            "<t>",
            &Frame {
                user: Some("<u>"),
                csrf: Some("tok\""),
                active: "/search",
            },
            "<p>body</p>",
        );
        assert!(html.contains("<h1>&lt;t&gt;</h1>"));
        assert!(html.contains("&lt;u&gt;"));
        assert!(html.contains("value=\"tok&quot;\""));
        assert!(html.contains("<p>body</p>"));
        assert!(html.contains("<a href=\"/search\" class=\"active\">"));
        assert!(!html.contains("<script>"), "no inline script");
    }
}
