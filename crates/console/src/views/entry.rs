//! One entry: its fields, its receipt and its inclusion proof.

use chrono::{DateTime, Utc};
use maud::{Markup, html};
use tongban_audit::{InclusionProof, LoggedEntry};

use super::layout::{Frame, page};
use crate::time::format_time;

/// What became of the entry's inclusion proof.
#[derive(Debug)]
pub(crate) enum ProofVerdict<'a> {
    /// In the tree of `size` whose root a pinned key (`keys`) signed at `signed`.
    Verified {
        proof: &'a InclusionProof,
        size: u64,
        keys: String,
        signed: DateTime<Utc>,
    },
    /// The proof is for another leaf hash than the entry's.
    WrongLeaf(&'a InclusionProof),
    /// The checkpoint or the path does not verify.
    Invalid(&'a InclusionProof, String),
    /// A signed checkpoint covers the entry, yet no proof could be made.
    Unavailable(String),
    /// No signed checkpoint covers the entry yet.
    Pending,
}

pub(crate) fn entry_page(
    frame: &Frame<'_>,
    found: &LoggedEntry,
    leaf_matches: bool,
    verdict: &ProofVerdict<'_>,
) -> Markup {
    let x = &found.entry;
    let index = found.index;
    let latency = format!("{:.3} ms", x.latency_us as f64 / 1000.0);
    let outcome = format!("{} {}", x.outcome_code, x.outcome_reason);
    let index_text = index.to_string();
    let time_text = format_time(&x.time);
    let rows: [(&str, &str); 17] = [
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
    ];
    let body = html! {
        section class="card" {
            h2 { "字段 Fields" }
            table class="fields" {
                @for (label, value) in rows {
                    tr { th { (label) } td class="mono" { (value) } }
                }
            }
        }
        section class="card" {
            h2 { "回执 Receipt" }
            table class="fields" {
                tr { th { "节点 Node" } td class="mono" { (x.node) } }
                tr { th { "序号 Index" } td class="mono" { (index) } }
                tr { th { "叶哈希 Leaf hash" } td class="mono" id="leaf-hash" { (hex::encode(found.leaf_hash)) } }
            }
            @if !leaf_matches {
                p class="bad" id="leaf-mismatch" {
                    "✗ 条目内容与叶哈希不符 The entry's fields do not hash to the stored leaf hash: it was altered."
                }
            }
        }
        section class="card" {
            h2 { "包含证明 Inclusion proof" }
            (proof_view(verdict))
        }
    };
    page(&format!("条目 Entry {}#{index}", x.node), frame, body)
}

fn proof_view(verdict: &ProofVerdict<'_>) -> Markup {
    let proof = match verdict {
        ProofVerdict::Verified { proof, .. }
        | ProofVerdict::WrongLeaf(proof)
        | ProofVerdict::Invalid(proof, _) => Some(*proof),
        ProofVerdict::Unavailable(_) | ProofVerdict::Pending => None,
    };
    html! {
        @match verdict {
            ProofVerdict::Verified { size, keys, signed, .. } => {
                p class="verdict ok" id="proof-status" data-status="verified" {
                    "✓ 已验证 Verified: this entry is in the tree of size " (size)
                    " whose root is signed by a pinned key (" (keys) "), checkpoint of " (format_time(signed)) "."
                }
            }
            ProofVerdict::WrongLeaf(_) => {
                p class="verdict bad" id="proof-status" data-status="failed" {
                    "✗ 验证失败 Not verified: the proof is for a different leaf hash than this entry's."
                }
            }
            ProofVerdict::Invalid(_, e) => {
                p class="verdict bad" id="proof-status" data-status="failed" { "✗ 验证失败 Not verified: " (e) }
            }
            ProofVerdict::Unavailable(e) => {
                p class="verdict bad" id="proof-status" data-status="failed" { "✗ 无法生成证明 No proof: " (e) }
            }
            ProofVerdict::Pending => {
                p class="verdict pending" id="proof-status" data-status="pending" {
                    "⏳ 尚未签名 Not yet covered by a signed checkpoint; the node signs one within seconds — reload to see the proof."
                }
            }
        }
        @if let Some(proof) = proof {
            table class="fields" {
                tr { th { "树大小 Tree size" } td class="mono" { (proof.tree_size) } }
                tr {
                    th { "路径 Path (" (proof.proof.len()) " hashes)" }
                    td class="mono" { @for h in &proof.proof { (hex::encode(h)) br; } }
                }
            }
            h3 { "签名检查点 Signed checkpoint" }
            pre id="checkpoint" { (proof.checkpoint) }
        }
    }
}
