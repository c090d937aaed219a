//! `tongban transparency history`: what a citizen portal (or a citizen's
//! advocate) does — fetch one person's access history through the
//! `Transparency` service, verify offline that it is complete against keys
//! pinned out of band, and print it as the citizen reads it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use tongban_audit::cosign::WitnessKey;
use tongban_audit::entry::PublicEntry;
use tongban_audit::store::PrunedChain;
use tongban_audit::transparency::{
    Access, CheckOptions, History, ListedAccess, NodeHistory, PrunedPrefix, Seen, TrustAnchors,
    VerifiedHistory, verify_history,
};
use tongban_audit::{EntryKind, VerifierKey};
use tongban_core::IdNumber;
use tongban_proto::convert::time_of;
use tongban_proto::v1::transparency_client::TransparencyClient;
use tongban_proto::v1::{self as pb, ListAccessesRequest};

use crate::client::ConnectArgs;
use crate::render::printable;

#[derive(Debug, Subcommand)]
pub enum TransparencyCommand {
    /// Fetch one person's access history, verify it complete offline, print it.
    History(HistoryArgs),
}

#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// A node's pinned checkpoint verifier key (text, or a file of keys one
    /// per line); one per node of the deployment, every node must answer.
    #[arg(long = "log-key", required = true)]
    pub log_keys: Vec<String>,
    /// A witness's cosignature verifier key (text or file); repeatable.
    #[arg(long = "witness-key")]
    pub witness_keys: Vec<String>,
    /// How many of the witnesses must have cosigned each checkpoint
    /// (default: all given).
    #[arg(long)]
    pub witness_quorum: Option<usize>,
    /// The person's resident identity number.
    #[arg(long = "id")]
    pub id_number: String,
    /// Refuse checkpoints (with their cosignatures) older than this many
    /// seconds.
    #[arg(long)]
    pub max_age_secs: Option<u64>,
    /// Remembers, per node, the newest checkpoint and count verified, and
    /// refuses an older answer next time (created if missing).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Print the verified history as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What the exchange says beside each disclosed access for display only
/// (names and titles are not part of the proof), by (node, index).
#[derive(Debug, Clone, Default)]
pub struct Label {
    pub organisation: String,
    pub matter_title: String,
    pub matter_title_zh: String,
}

pub type Labels = BTreeMap<(String, u64), Label>;

/// Most pages fetched for one history (each up to 500 entries per node).
const MAX_PAGES: usize = 1000;

pub async fn run(command: TransparencyCommand) -> anyhow::Result<ExitCode> {
    match command {
        TransparencyCommand::History(args) => history(args).await,
    }
}

async fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let id = IdNumber::parse(args.id_number.trim())
        .map_err(|e| anyhow::anyhow!("--id is not a valid resident identity number: {e}"))?;
    let anchors = anchors(&args)?;
    let seen = match &args.state {
        Some(path) if path.exists() => Some(
            serde_json::from_str::<Seen>(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            )
            .with_context(|| format!("{} is not a state file", path.display()))?,
        ),
        _ => None,
    };
    let (history, labels) = fetch(&args, &id).await?;
    let options = CheckOptions {
        max_age: args
            .max_age_secs
            .map(|s| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX))),
        now: Some(Utc::now()),
        seen,
    };
    match verify_history(&history, id.as_str(), &anchors, &options) {
        Ok(verified) => {
            if let Some(path) = &args.state {
                std::fs::write(path, serde_json::to_string_pretty(&verified.seen())?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&verified)?);
            } else {
                print!("{}", history_text(&verified, &labels, &id));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("verification FAILED / 验证失败: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn anchors(args: &HistoryArgs) -> anyhow::Result<TrustAnchors> {
    let mut logs = Vec::new();
    for text in keys_of(&args.log_keys)? {
        logs.push(VerifierKey::parse(&text).with_context(|| format!("--log-key {text:?}"))?);
    }
    let mut witnesses = Vec::new();
    for text in keys_of(&args.witness_keys)? {
        witnesses
            .push(WitnessKey::parse(&text).with_context(|| format!("--witness-key {text:?}"))?);
    }
    let quorum = args.witness_quorum.unwrap_or(witnesses.len());
    if quorum > witnesses.len() {
        bail!(
            "--witness-quorum {quorum} is more than the {} witness keys given",
            witnesses.len()
        );
    }
    Ok(TrustAnchors {
        logs,
        witnesses,
        quorum,
        vrf_key: None,
    })
}

/// Key texts: each argument is a key, or a file of keys one per line.
fn keys_of(args: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for arg in args {
        let path = std::path::Path::new(arg);
        if path.is_file() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            out.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        } else {
            out.push(arg.clone());
        }
    }
    Ok(out)
}

/// Fetches every page and puts each node's parts together.
async fn fetch(args: &HistoryArgs, id: &IdNumber) -> anyhow::Result<(History, Labels)> {
    let mut client = TransparencyClient::new(args.connect.channel().await?);
    let mut token = String::new();
    let mut subject_key = None;
    let mut vrf_proof = Vec::new();
    let mut nodes: BTreeMap<String, NodeHistory> = BTreeMap::new();
    let mut labels = Labels::new();
    for _ in 0..MAX_PAGES {
        let mut request = tonic::Request::new(ListAccessesRequest {
            id_number: id.as_str().to_owned(),
            page_size: 0,
            page_token: token.clone(),
        });
        request.set_timeout(std::time::Duration::from_millis(args.connect.timeout_ms));
        let page = client
            .list_accesses(request)
            .await
            .map_err(|s| anyhow::anyhow!("the exchange refused: {} ({:?})", s.message(), s.code()))?
            .into_inner();
        let key: [u8; 32] = page
            .subject_key
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("the answer's subject key is not 32 bytes"))?;
        if *subject_key.get_or_insert(key) != key {
            bail!("the pages name different subject keys");
        }
        if !page.vrf_proof.is_empty() {
            vrf_proof = page.vrf_proof;
        }
        for part in page.nodes {
            add_part(&mut nodes, &mut labels, part, &key)?;
        }
        if page.next_page_token.is_empty() {
            let history = History {
                subject_key: key,
                vrf_proof,
                nodes: nodes.into_values().collect(),
            };
            return Ok((history, labels));
        }
        token = page.next_page_token;
    }
    bail!("the history did not end within {MAX_PAGES} pages")
}

fn add_part(
    nodes: &mut BTreeMap<String, NodeHistory>,
    labels: &mut Labels,
    part: pb::NodeHistory,
    key: &[u8; 32],
) -> anyhow::Result<()> {
    let node = part.node.clone();
    let entry = nodes.entry(node.clone()).or_insert_with(|| NodeHistory {
        node: node.clone(),
        checkpoint: String::new(),
        map_proof: Vec::new(),
        count: 0,
        pruned: None,
        entries: Vec::new(),
    });
    if !part.checkpoint.is_empty() {
        entry.checkpoint = part.checkpoint;
        entry.map_proof = part.map_proof;
        entry.count = part.count;
        entry.pruned = part.pruned.map(pruned_of).transpose()?;
    }
    for access in part.entries {
        if let Some(pb::access_entry::Access::Disclosed(d)) = &access.access {
            labels.insert(
                (node.clone(), access.index),
                Label {
                    organisation: d.caller_org_name.clone(),
                    matter_title: d.matter_title.clone(),
                    matter_title_zh: d.matter_title_zh.clone(),
                },
            );
        }
        entry.entries.push(access_of(&node, key, access)?);
    }
    Ok(())
}

fn hash32(bytes: &[u8], what: &str) -> anyhow::Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{what} is not 32 bytes"))
}

fn pruned_of(p: pb::PrunedAccesses) -> anyhow::Result<PrunedPrefix> {
    Ok(PrunedPrefix {
        chain: PrunedChain {
            count: p.count,
            head_before_last: hash32(&p.head_before_last, "pruned chain head")?,
            last_index: p.last_index,
            last_leaf: hash32(&p.last_leaf_hash, "pruned leaf hash")?,
        },
        removed_before: p
            .removed_before
            .as_ref()
            .and_then(time_of)
            .unwrap_or(DateTime::<Utc>::MIN_UTC),
    })
}

fn access_of(node: &str, key: &[u8; 32], a: pb::AccessEntry) -> anyhow::Result<ListedAccess> {
    let access = match a.access {
        Some(pb::access_entry::Access::Disclosed(d)) => Access::Disclosed(PublicEntry {
            time: d
                .time
                .as_ref()
                .and_then(time_of)
                .ok_or_else(|| anyhow::anyhow!("entry {} has no time", a.index))?,
            node: node.to_owned(),
            kind: d
                .kind
                .parse::<EntryKind>()
                .map_err(|e| anyhow::anyhow!("entry {}: {e}", a.index))?,
            caller_org: d.caller_org,
            caller_unit: d.caller_unit,
            matter: d.matter,
            evidence_type: d.evidence_type,
            department: d.department,
            // The verifier checks the entry is about this person: the
            // subject is what the leaf hash commits to, never taken from
            // the answer.
            subject: hex::encode(key),
            outcome_code: d.outcome_code,
            outcome_reason: d.outcome_reason,
            private_digest: hash32(&d.private_digest, "private digest")?,
        }),
        Some(pb::access_entry::Access::Sealed(s)) => Access::Sealed {
            leaf_hash: hash32(&s.leaf_hash, "sealed leaf hash")?,
            disclosed_after: s
                .disclosed_after
                .as_ref()
                .and_then(time_of)
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        },
        None => bail!("entry {} is empty", a.index),
    };
    Ok(ListedAccess {
        index: a.index,
        access,
    })
}

/// The history as a citizen reads it, in Chinese and English.
pub fn history_text(verified: &VerifiedHistory, labels: &Labels, id: &IdNumber) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "个人数据访问记录 / Who accessed the data of {id}\n"
    ));
    let nodes: Vec<String> = verified
        .nodes
        .iter()
        .map(|n| {
            let witnessed = if n.witnessed_by.is_empty() {
                String::new()
            } else {
                format!(", witnessed by {}", n.witnessed_by.join(", "))
            };
            format!(
                "{} (checkpoint {} of {}{witnessed})",
                n.node,
                n.checkpoint_size,
                n.checkpoint_time.format("%Y-%m-%d %H:%M:%S UTC")
            )
        })
        .collect();
    out.push_str(&format!(
        "已验证完整 / Verified complete: every access up to the signed checkpoints of {}\n\n",
        nodes.join("; ")
    ));
    let mut sealed = Vec::new();
    let mut shown = 0;
    for node in &verified.nodes {
        if let Some((count, before)) = node.pruned {
            out.push_str(&format!(
                "{count} 条访问记录因超过保存期限已删除（{} 之前）/ {count} access(es) before {} removed under the retention rule\n",
                before.format("%Y-%m-%d"),
                before.format("%Y-%m-%d")
            ));
        }
        for listed in &node.entries {
            match &listed.access {
                Access::Disclosed(e) => {
                    shown += 1;
                    let label = labels.get(&(node.node.clone(), listed.index));
                    out.push_str(&access_text(e, label));
                }
                Access::Sealed {
                    disclosed_after, ..
                } => sealed.push(*disclosed_after),
            }
        }
    }
    if shown == 0 && sealed.is_empty() {
        out.push_str("没有访问记录 / No one has accessed this person's data.\n");
    }
    sealed.sort();
    for until in sealed {
        if until == DateTime::<Utc>::MIN_UTC {
            out.push_str(
                "1 条早期格式的访问记录（只计数）/ 1 access recorded in an earlier format (counted, not shown)\n",
            );
        } else {
            out.push_str(&format!(
                "1 条保密访问，将于 {} 后公开 / 1 sealed access, disclosed after {}\n",
                until.format("%Y-%m-%d"),
                until.format("%Y-%m-%d")
            ));
        }
    }
    out
}

fn access_text(e: &PublicEntry, label: Option<&Label>) -> String {
    let label = label.cloned().unwrap_or_default();
    let outcome = if e.outcome_code == 0 {
        "answered / 已答复".to_owned()
    } else {
        format!("refused / 被拒绝 ({})", printable(&e.outcome_reason))
    };
    let what = match e.kind {
        EntryKind::PortalView => "viewed this history / 查看了本访问记录".to_owned(),
        EntryKind::AdminAction => "administrator's act / 管理员操作".to_owned(),
        _ => format!(
            "{} {} ({}) · evidence 证据 {} from {}",
            printable(&label.matter_title_zh),
            printable(&label.matter_title),
            printable(&e.matter),
            printable(&e.evidence_type),
            printable(&e.department)
        ),
    };
    format!(
        "{}  {} ({}) unit {}\n    {what}; {outcome}\n",
        e.time.format("%Y-%m-%d %H:%M:%S UTC"),
        if label.organisation.is_empty() {
            "(unnamed organisation)".to_owned()
        } else {
            printable(&label.organisation).into_owned()
        },
        printable(&e.caller_org),
        printable(&e.caller_unit),
    )
}
