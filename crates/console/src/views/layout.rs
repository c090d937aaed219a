//! The page frame and the pieces every page shares.

use maud::{DOCTYPE, Markup, html};

use crate::url::url_encode;

/// Navigation entries: path, label.
const NAV: [(&str, &str); 4] = [
    ("/overview", "概览 Overview"),
    ("/search", "搜索 Search"),
    ("/subject", "个人报告 Subject report"),
    ("/integrity", "完整性 Integrity"),
];

/// Who is signed in, for the page frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame<'a> {
    pub user: Option<&'a str>,
    pub csrf: Option<&'a str>,
    pub active: &'a str,
}

impl Frame<'static> {
    /// Nobody signed in: no navigation, no sign-out form.
    pub const ANONYMOUS: Self = Self {
        user: None,
        csrf: None,
        active: "",
    };
}

/// A whole page: header, navigation, `body`, footer.
pub(crate) fn page(title: &str, frame: &Frame<'_>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · 通办 tongban console" }
                link rel="stylesheet" href="/static/console.css";
                link rel="stylesheet" href="/static/print.css" media="print";
                script src="/static/console.js" defer {}
            }
            body {
                header class="top" {
                    div class="brand" { "通办 tongban " span { "审计控制台 Audit console" } }
                    @if let Some(user) = frame.user {
                        nav {
                            @for (path, label) in NAV {
                                a href=(path) class=[(path == frame.active).then_some("active")] { (label) }
                            }
                        }
                        form class="signout" method="post" action="/logout" {
                            span class="user" id="signed-in-user" { (user) }
                            (csrf_field(frame.csrf.unwrap_or_default()))
                            button type="submit" { "退出 Sign out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
                footer { "通办 tongban · 攀枝花 Panzhihua · 每次查看都记入审计日志 Every view is recorded in the audit log" }
            }
        }
    }
}

/// The hidden CSRF field every POST form carries.
pub(crate) fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// A page with one error message.
pub(crate) fn error_page(title: &str, message: &str, frame: &Frame<'_>) -> Markup {
    page(
        title,
        frame,
        html! { p class="error" id="error" { (message) } },
    )
}

/// The sign-in form, with the double-submit token.
pub(crate) fn login(token: &str, error: Option<&str>) -> Markup {
    let body = html! {
        @if let Some(e) = error {
            p class="error" id="login-error" { (e) }
        }
        form class="login" method="post" action="/login" {
            (csrf_field(token))
            label { "用户名 Name " input name="user" id="user" autocomplete="username" required; }
            label { "密码 Password " input type="password" name="password" id="password" autocomplete="current-password" required; }
            button type="submit" id="sign-in" { "登录 Sign in" }
        }
    };
    page("登录 Sign in", &Frame::ANONYMOUS, body)
}

pub(crate) fn outcome_cell(code: i32, reason: &str) -> Markup {
    html! {
        @if code == 0 {
            span class="ok" { "OK" }
        } @else {
            span class="bad" { (code) " " (reason) }
        }
    }
}

pub(crate) fn entry_link(node: &str, index: u64) -> String {
    format!("/entry?node={}&index={index}", url_encode(node))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_escape_every_special_character() {
        let text = r#"<script>alert("x&y")</script>'"#;
        assert_eq!(
            html! { (text) }.into_string(),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;'"
        );
        assert_eq!(
            html! { a title=(text) {} }.into_string(),
            "<a title=\"&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;'\"></a>"
        );
        assert_eq!(html! { ("攀枝花 plain") }.into_string(), "攀枝花 plain");
        assert_eq!(html! { ("&amp;") }.into_string(), "&amp;amp;");
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
            html! { p { "body" } },
        )
        .into_string();
        assert!(html.contains("<h1>&lt;t&gt;</h1>"));
        assert!(html.contains("&lt;u&gt;"));
        assert!(html.contains("value=\"tok&quot;\""));
        assert!(html.contains("<p>body</p>"));
        assert!(html.contains("<a href=\"/search\" class=\"active\">"));
        assert!(!html.contains("<script>"), "no inline script");
    }

    #[test]
    fn entry_links_encode_the_node() {
        assert_eq!(entry_link("a b&c", 3), "/entry?node=a%20b%26c&index=3");
        assert_eq!(
            html! { a href=(entry_link("node-a", 0)) {} }.into_string(),
            "<a href=\"/entry?node=node-a&amp;index=0\"></a>"
        );
    }
}
