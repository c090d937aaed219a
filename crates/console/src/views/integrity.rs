//! The integrity page: "verify now" and each node's signed checkpoints.

use maud::{Markup, html};
use tongban_audit::store::{LogState, StoredCheckpoint};

use super::layout::{Frame, csrf_field, page};
use crate::time::format_time;
use crate::url::url_encode;
use crate::verify_job::VerifyStatus;

/// What a stored checkpoint's signature says.
#[derive(Debug)]
pub(crate) enum Signature {
    /// Signed by a pinned key, for the size and root of the stored row.
    Pinned,
    /// Signed, but for another size or root than the stored row.
    DiffersFromRow,
    /// Not signed by a pinned key, or not a checkpoint at all.
    Refused(String),
}

/// One node's section: one page of its checkpoints, newest first.
#[derive(Debug)]
pub(crate) struct NodeCheckpoints {
    pub node: String,
    pub state: Option<LogState>,
    /// All the node's checkpoints, shown or not.
    pub total: u64,
    pub shown: Vec<(StoredCheckpoint, Signature)>,
    /// Whether this page starts below the newest checkpoint.
    pub later_page: bool,
    /// Whether older checkpoints follow this page.
    pub more: bool,
}

pub(crate) fn integrity_page(
    frame: &Frame<'_>,
    keys: &str,
    status: &VerifyStatus,
    nodes: &[NodeCheckpoints],
) -> Markup {
    let body = html! {
        section class="card" id="verify" {
            h2 { "立即验证 Verify now" }
            p {
                "重新计算每个节点的全部条目和默克尔树，并与固定公钥签名的检查点比对。"
                "Recomputes every node's entries and Merkle tree and checks them against checkpoints signed by the pinned keys (" (keys) ")."
            }
            form method="post" action="/integrity/verify" {
                (csrf_field(frame.csrf.unwrap_or_default()))
                button type="submit" id="verify-button" disabled[status.state == "running"] { "验证 Verify" }
            }
            (verify_box(status))
        }
        @for n in nodes {
            (node_section(n))
        }
    };
    page("完整性 Integrity", frame, body)
}

fn node_section(n: &NodeCheckpoints) -> Markup {
    let node_q = url_encode(&n.node);
    html! {
        section class="card node" {
            h2 { "节点 Node " (n.node) }
            @if let Some(s) = n.state {
                p {
                    "条目 Entries: " strong { (s.size) }
                    @if s.pruned_before > 0 { " (保留自 retained from #" (s.pruned_before) ")" }
                    " · 检查点 Checkpoints: " strong { (n.total) }
                }
            }
            table class="entries checkpoints" {
                thead { tr { th { "树大小 Tree size" } th { "签名时间 Signed at" } th { "根哈希 Root" } th { "签名 Signature" } } }
                tbody {
                    @for (cp, sig) in &n.shown {
                        tr {
                            td class="num" { (cp.tree_size) }
                            td { (format_time(&cp.time)) }
                            td class="mono" { (hex::encode(cp.root)[..16]) "…" }
                            td {
                                @match sig {
                                    Signature::Pinned => span class="ok" { "✓ 固定公钥 pinned key" },
                                    Signature::DiffersFromRow => span class="bad" { "✗ 与存储不符 differs from the stored row" },
                                    Signature::Refused(e) => span class="bad" { "✗ " (e) },
                                }
                            }
                        }
                    }
                }
            }
            @if !n.later_page && n.more {
                p class="muted" {
                    "仅显示最近 " (n.shown.len()) " 个 The newest " (n.shown.len()) " of " (n.total) " are shown."
                }
            }
            @if n.later_page || n.more {
                p class="pager" {
                    @if n.later_page {
                        a href="/integrity" { "« 最新 Newest" }
                        " "
                    }
                    @if let (true, Some((oldest, _))) = (n.more, n.shown.last()) {
                        a class="older" href=(format!("/integrity?node={node_q}&below={}", oldest.tree_size)) { "更早 Older »" }
                    }
                }
            }
        }
    }
}

/// The verification status box; console.js refreshes it while running.
fn verify_box(s: &VerifyStatus) -> Markup {
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
    html! {
        div id="verify-box" data-state=(s.state) {
            p class=(format!("verdict {class}")) id="verify-state" { (label) }
            progress id="verify-progress" max=(s.total.max(1)) value=(s.checked) {}
            " "
            span id="verify-count" { (s.checked) " / " (s.total) }
            p id="verify-message" { (s.message) }
            ul id="verify-findings" {
                @for f in &s.findings {
                    li class=(if f.severity == "error" { "bad" } else { "warn" }) {
                        (f.node) " · " (f.location) " · " (f.message)
                    }
                }
            }
        }
    }
}
