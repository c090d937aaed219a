//! `tongban transparency history`: what a citizen portal (or a citizen's
//! advocate) does — fetch one person's access history through the
//! `Transparency` service, verify offline that it is complete against keys
//! pinned out of band, and print it as the citizen reads it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use tongban_audit::EntryKind;
use tongban_audit::entry::PublicEntry;
use tongban_audit::transparency::{
    Access, CheckOptions, History, HistoryError, Seen, TrustAnchors, VerifiedHistory,
    verify_history,
};
use tongban_core::IdNumber;
use tongban_proto::v1::ListAccessesRequest;
use tongban_proto::v1::transparency_client::TransparencyClient;
use tonic::transport::Channel;

use tongban_exchange::wire::{AccessLabel, HistoryPages, HistoryWireError};

use crate::client::ConnectArgs;

/// Display labels by (node, index).
pub type Labels = BTreeMap<(String, u64), AccessLabel>;
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
    let anchors = anchors_of(&args.log_keys, &args.witness_keys, args.witness_quorum)?;
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
    let options = CheckOptions {
        max_age: args
            .max_age_secs
            .map(|s| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX))),
        now: Some(Utc::now()),
        seen,
    };
    let channel = match args.connect.channel().await {
        Ok(channel) => channel,
        Err(e) => {
            // No answer is no proof: the portal must not show a history.
            eprintln!("{FAILED}: no verifiable answer: {e:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let timeout = Duration::from_millis(args.connect.timeout_ms);
    match fetch_and_verify(channel, &id, &anchors, &options, timeout).await {
        Ok((verified, labels)) => {
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
        Err(failure) => {
            eprintln!("{}", failure_text(&failure));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// How a portal heads a check that failed, in both languages.
const FAILED: &str = "verification FAILED / 验证失败";

/// Why a portal shows no history: no verifiable answer, or an answer that
/// fails its check. Either way the citizen is shown the failure, never a
/// list that might be incomplete.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("no verifiable answer: the exchange refused: {message} ({code:?})")]
    Refused { code: tonic::Code, message: String },
    #[error("no verifiable answer: {0}")]
    Malformed(#[from] HistoryWireError),
    #[error("no verifiable answer: the history did not end within {MAX_PAGES} pages")]
    TooManyPages,
    #[error("{0}")]
    Check(#[from] HistoryError),
}

/// The failure as the portal shows it.
pub fn failure_text(failure: &Failure) -> String {
    format!("{FAILED}: {failure}")
}

/// What a portal does with one person's history: fetch every page over
/// `channel` (each call within `timeout`), put each node's parts together
/// and verify the whole against `anchors`. The labels (organisation names,
/// matter titles) are for display only; they are not part of the proof.
pub async fn fetch_and_verify(
    channel: Channel,
    id: &IdNumber,
    anchors: &TrustAnchors,
    options: &CheckOptions,
    timeout: Duration,
) -> Result<(VerifiedHistory, Labels), Failure> {
    let (history, labels) = fetch(channel, id, timeout).await?;
    let verified = verify_history(&history, id.as_str(), anchors, options)?;
    Ok((verified, labels))
}

/// The trust anchors from pinned key texts (each a key, or a file of keys
/// one per line): node log keys, witness keys and the witness quorum
/// (default: all witnesses given).
pub fn anchors_of(
    log_keys: &[String],
    witness_keys: &[String],
    quorum: Option<usize>,
) -> anyhow::Result<TrustAnchors> {
    let logs = crate::witness::log_keys(log_keys)?;
    let witnesses = crate::witness::witness_keys(witness_keys)?;
    let quorum = quorum.unwrap_or(witnesses.len());
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

/// Fetches every page and puts each node's parts together.
async fn fetch(
    channel: Channel,
    id: &IdNumber,
    timeout: Duration,
) -> Result<(History, Labels), Failure> {
    let mut client = TransparencyClient::new(channel);
    let mut token = String::new();
    let mut pages = HistoryPages::new();
    for _ in 0..MAX_PAGES {
        let mut request = tonic::Request::new(ListAccessesRequest {
            id_number: id.as_str().to_owned(),
            page_size: 0,
            page_token: token.clone(),
        });
        request.set_timeout(timeout);
        let mut page = client
            .list_accesses(request)
            .await
            .map_err(|s| Failure::Refused {
                code: s.code(),
                message: s.message().to_owned(),
            })?
            .into_inner();
        let next = std::mem::take(&mut page.next_page_token);
        pages.add(page)?;
        if next.is_empty() {
            return Ok(pages.finish());
        }
        token = next;
    }
    Err(Failure::TooManyPages)
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

fn access_text(e: &PublicEntry, label: Option<&AccessLabel>) -> String {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_failure_is_shown_as_the_portal_shows_it() {
        let missing = Failure::from(HistoryError::NodeMissing("exchange-2".into()));
        assert_eq!(
            failure_text(&missing),
            "verification FAILED / 验证失败: the answer has no history from node exchange-2 (every pinned node must answer)"
        );
        let refused = Failure::Refused {
            code: tonic::Code::PermissionDenied,
            message: "not a portal".into(),
        };
        assert_eq!(
            failure_text(&refused),
            "verification FAILED / 验证失败: no verifiable answer: the exchange refused: not a portal (PermissionDenied)"
        );
    }

    #[test]
    fn anchors_refuse_a_quorum_above_the_witnesses_given() {
        let signer =
            tongban_audit::LogSigner::generate(&tongban_audit::origin_for_node("n1")).unwrap();
        let log_key = signer.verifier().to_string();
        let anchors = anchors_of(std::slice::from_ref(&log_key), &[], None).unwrap();
        assert_eq!((anchors.logs.len(), anchors.quorum), (1, 0));
        let err = anchors_of(&[log_key], &[], Some(1)).unwrap_err();
        assert!(err.to_string().contains("--witness-quorum 1"), "{err}");
        assert!(anchors_of(&["not a key".into()], &[], None).is_err());
    }
}
