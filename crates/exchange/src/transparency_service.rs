//! The `Transparency` gRPC service: a citizen portal reads every access to
//! one person's data, from every node of the deployment, with the proof
//! that the list is complete (`tongban_audit::transparency`).
//!
//! Only the policy's `[portal]` callers are served. Every call — refused or
//! not — is itself an audit entry (`PortalView`) about the person, committed
//! before anything is answered, so the citizen sees who read the history.
//! What leaves: the public part of each entry (never the clerk, the case
//! number or the detail: those are behind the entry's private digest), and
//! for a sealed access only its leaf hash and disclosure date.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use tongban_audit::store::LoggedEntry;
use tongban_audit::transparency::{first_page, next_page};

use tongban_audit::{AuditEntry, EntryKind};
use tongban_core::IdNumber;
use tongban_proto::convert::timestamp;
use tongban_proto::v1::transparency_server::Transparency as TransparencyApi;
use tongban_proto::v1::{
    self as pb, AccessEntry, ListAccessesRequest, ListAccessesResponse, NodeHistory,
    PrunedAccesses, SealedAccess,
};
use tonic::{Request, Response, Status};

use crate::audit::{AuditReader, read_entry};
use crate::auth::Authenticator;
use crate::error::{AuditSinkError, ExchangeError};
use crate::pipeline::{Call, Exchange};
use crate::wire::disclosed_access;

/// Entries per page when the portal does not say.
const DEFAULT_PAGE: u32 = 100;
/// Most entries per page (per node).
const MAX_PAGE: u32 = 500;
/// Longest page token accepted, in characters.
const MAX_TOKEN_CHARS: usize = 4096;
/// Most nodes a page token may name.
const MAX_TOKEN_NODES: usize = 64;
/// Longest an answer waits for the witnesses to cosign the latest checkpoint.
const WITNESS_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
const WITNESS_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// The `Transparency` gRPC service.
#[derive(Clone)]
pub struct TransparencyService {
    exchange: Exchange,
    authenticate: Authenticator,
    reader: AuditReader,
    /// The deployment's witnesses: answers wait (briefly) for a checkpoint
    /// they have all cosigned.
    witnesses: Vec<tongban_audit::WitnessKey>,
}

impl std::fmt::Debug for TransparencyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransparencyService")
            .finish_non_exhaustive()
    }
}

/// Where the next page starts, per node: entries with `from <= index <
/// below` (`below` is the first page's checkpoint size, so every page
/// answers against the same checkpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PageToken {
    nodes: Vec<NodeCursor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeCursor {
    node: String,
    from: u64,
    below: u64,
}

impl PageToken {
    /// `node/from/below` per node, comma-separated (node ids hold neither).
    fn encode(&self) -> String {
        self.nodes
            .iter()
            .map(|c| format!("{}/{}/{}", c.node, c.from, c.below))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn decode(text: &str) -> Result<Self, ExchangeError> {
        let bad = || ExchangeError::invalid("page_token", "not a token this exchange gave");
        if text.len() > MAX_TOKEN_CHARS {
            return Err(bad());
        }
        let mut nodes = Vec::new();
        for part in text.split(',') {
            let mut fields = part.split('/');
            let (Some(node), Some(from), Some(below), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(bad());
            };
            tongban_audit::log::validate_node_id(node).map_err(|_| bad())?;
            nodes.push(NodeCursor {
                node: node.to_owned(),
                from: from.parse().map_err(|_| bad())?,
                below: below.parse().map_err(|_| bad())?,
            });
        }
        let token = Self { nodes };
        if token.nodes.is_empty()
            || token.nodes.len() > MAX_TOKEN_NODES
            || token.nodes.iter().any(|c| c.from >= c.below)
        {
            return Err(bad());
        }
        Ok(token)
    }
}

impl TransparencyService {
    pub fn new(exchange: Exchange, authenticate: Authenticator, reader: AuditReader) -> Self {
        Self {
            exchange,
            authenticate,
            reader,
            witnesses: Vec::new(),
        }
    }

    /// A token names, per node, a checkpoint that node has signed, or it is
    /// not one this exchange gave.
    async fn check_token(&self, validated: Validated) -> Result<Validated, ExchangeError> {
        if let (_, _, Some(token)) = &validated {
            for cursor in &token.nodes {
                let signed = self
                    .reader
                    .store()
                    .latest_checkpoint(&cursor.node)
                    .await
                    .map_err(|e| ExchangeError::Audit(e.into()))?
                    .map_or(0, |c| c.tree_size);
                if cursor.below > signed {
                    return Err(ExchangeError::invalid(
                        "page_token",
                        "not a token this exchange gave",
                    ));
                }
            }
        }
        Ok(validated)
    }

    /// Answers against checkpoints these witnesses have cosigned: a portal
    /// that requires them would refuse a checkpoint signed a moment ago.
    pub fn with_witnesses(mut self, witnesses: Vec<tongban_audit::WitnessKey>) -> Self {
        self.witnesses = witnesses;
        self
    }

    /// The first page of `node`, from a snapshot whose checkpoint every
    /// witness has cosigned, when one comes within [`WITNESS_WAIT`] (else
    /// the latest: the portal decides whether that is enough).
    async fn witnessed_first_page(
        &self,
        call: &Call,
        node: &str,
        key: &[u8; 32],
        page_size: u32,
    ) -> Result<tongban_audit::transparency::FirstPage, ExchangeError> {
        let store = self.reader.store();
        // Never past half of what is left of the caller's deadline: the
        // answer must still be read and sent.
        let mut until = tokio::time::Instant::now() + WITNESS_WAIT;
        if let Some(deadline) = call.deadline {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            until = until.min(tokio::time::Instant::now() + left / 2);
        }
        loop {
            let page = first_page(store, node, key, page_size)
                .await
                .map_err(ExchangeError::Audit)?;
            let cosigned = page.checkpoint.as_ref().is_none_or(|cp| {
                self.witnesses
                    .iter()
                    .all(|w| tongban_audit::has_cosignature(&cp.note, w))
            });
            if cosigned || tokio::time::Instant::now() >= until {
                return Ok(page);
            }
            tokio::time::sleep(WITNESS_POLL).await;
        }
    }

    /// Authenticates, validates, charges, checks the caller is a portal and
    /// logs the call about the person — refused or not — before returning.
    async fn admit(
        &self,
        request: &Request<ListAccessesRequest>,
    ) -> Result<(Call, IdNumber, u32, Option<PageToken>), ExchangeError> {
        let call = self
            .exchange
            .begin(&self.authenticate, request.extensions(), None)?;
        let asked = request.get_ref();
        let validated = validate(asked);
        let decision = match &validated {
            Err(_) => Err(None),
            Ok(_) => self
                .exchange
                .charge(&call, 1)
                .and_then(|()| {
                    call.policy
                        .require_portal(&call.caller)
                        .map_err(ExchangeError::from)
                })
                .map_err(Some),
        };
        // Only a portal's token costs store reads to check.
        let validated = match (validated, &decision) {
            (Ok(v), Ok(())) => self.check_token(v).await,
            (other, _) => other,
        };
        if decision.is_err() || validated.is_err() {
            self.exchange.wait_refusal_turn(&call).await?;
        }
        let refusal = match (&validated, &decision) {
            (Err(e), _) | (Ok(_), Err(Some(e))) => Some(e),
            _ => None,
        };
        let mut entry = read_entry(&call, EntryKind::PortalView, refusal);
        // A refused read of a valid person's history is still about them.
        if let Some(id) = valid_id(asked) {
            entry.subject = self.reader.pseudonymizer().pseudonym(id.as_str());
        }
        entry.detail = match &validated {
            Ok((_, _, None)) => "ListAccesses first page".into(),
            Ok((_, _, Some(_))) => "ListAccesses next page".into(),
            Err(_) => "ListAccesses request rejected".into(),
        };
        if let Err(e) = self.reader.log().append(entry).await {
            tracing::error!(error = %e, "cannot log a portal's call; refusing it");
            return Err(AuditSinkError::from(e).into());
        }
        if let Err(Some(e)) = decision {
            return Err(e);
        }
        let (id, page_size, token) = validated?;
        Ok((call, id, page_size, token))
    }

    async fn list(
        &self,
        call: &Call,
        id: &IdNumber,
        page_size: u32,
        token: Option<PageToken>,
    ) -> Result<ListAccessesResponse, ExchangeError> {
        let store = self.reader.store();
        let audit = |e: tongban_audit::AuditError| ExchangeError::Audit(e);
        let key = self.reader.pseudonymizer().subject_key(id.as_str());
        let now = Utc::now();
        let mut nodes = Vec::new();
        let mut cursors = Vec::new();
        match token {
            None => {
                let mut names = store.list_nodes().await.map_err(|e| audit(e.into()))?;
                names.sort();
                for node in names {
                    let page = self
                        .witnessed_first_page(call, &node, &key, page_size)
                        .await?;
                    let Some(checkpoint) = page.checkpoint else {
                        continue;
                    };
                    let removed_before = page.pruned.and_then(|_| {
                        tongban_audit::Checkpoint::parse_body(
                            checkpoint.note.split("\n\n").next().unwrap_or_default(),
                        )
                        .ok()
                        .and_then(|cp| cp.pruned)
                        .map(|b| b.cutoff)
                    });
                    if page.entries.len() as u32 == page_size
                        && let Some(last) = page.entries.last()
                        && last.index + 1 < checkpoint.tree_size
                    {
                        cursors.push(NodeCursor {
                            node: node.clone(),
                            from: last.index + 1,
                            below: checkpoint.tree_size,
                        });
                    }
                    nodes.push(NodeHistory {
                        node: node.clone(),
                        checkpoint: checkpoint.note,
                        map_proof: page.map_proof.to_bytes(),
                        count: page.count,
                        pruned: page.pruned.map(|p| PrunedAccesses {
                            count: p.count,
                            head_before_last: p.head_before_last.to_vec(),
                            last_index: p.last_index,
                            last_leaf_hash: p.last_leaf.to_vec(),
                            removed_before: removed_before.map(timestamp),
                        }),
                        entries: self
                            .accesses(call, &node, page.entries, checkpoint.tree_size, now)
                            .await?,
                    });
                }
            }
            Some(token) => {
                for cursor in token.nodes {
                    let entries = next_page(
                        store,
                        &cursor.node,
                        &key,
                        cursor.from,
                        cursor.below,
                        page_size,
                    )
                    .await
                    .map_err(audit)?;
                    if entries.len() as u32 == page_size
                        && let Some(last) = entries.last()
                        && last.index + 1 < cursor.below
                    {
                        cursors.push(NodeCursor {
                            node: cursor.node.clone(),
                            from: last.index + 1,
                            below: cursor.below,
                        });
                    }
                    nodes.push(NodeHistory {
                        node: cursor.node.clone(),
                        entries: self
                            .accesses(call, &cursor.node, entries, cursor.below, now)
                            .await?,
                        ..Default::default()
                    });
                }
            }
        }
        let first = nodes.iter().any(|n| !n.checkpoint.is_empty());
        Ok(ListAccessesResponse {
            subject_key: key.to_vec(),
            // The VRF proof (a few hundred µs) only where a portal checks it.
            vrf_proof: if first {
                self.reader.pseudonymizer().prove(id.as_str()).proof
            } else {
                Vec::new()
            },
            nodes,
            next_page_token: if cursors.is_empty() {
                String::new()
            } else {
                PageToken { nodes: cursors }.encode()
            },
        })
    }

    /// The wire form of a node's entries: disclosed, or sealed until their
    /// matter's disclosure delay has passed (unless unsealed early).
    async fn accesses(
        &self,
        call: &Call,
        node: &str,
        entries: Vec<LoggedEntry>,
        size: u64,
        now: DateTime<Utc>,
    ) -> Result<Vec<AccessEntry>, ExchangeError> {
        let indexes: Vec<u64> = entries.iter().map(|e| e.index).collect();
        let mut proofs = tongban_audit::transparency::inclusion_proofs(
            self.reader.store(),
            node,
            &indexes,
            size,
        )
        .await
        .map_err(ExchangeError::Audit)?
        .into_iter();
        let catalogue = self.exchange.catalogue();
        let sealed_until = |e: &AuditEntry| -> Option<DateTime<Utc>> {
            let until = e.time + catalogue.matter(&e.matter)?.disclosure_delay()?;
            (until > now).then_some(until)
        };
        let candidates: Vec<u64> = entries
            .iter()
            .filter(|e| sealed_until(&e.entry).is_some())
            .map(|e| e.index)
            .collect();
        let unsealed: HashSet<u64> = if candidates.is_empty() {
            HashSet::new()
        } else {
            self.reader
                .store()
                .unsealed(node, &candidates)
                .await
                .map_err(|e| ExchangeError::Audit(e.into()))?
        };
        let directory = call.policy.clone();
        Ok(entries
            .into_iter()
            .map(|logged| {
                let index = logged.index;
                let e = logged.entry;
                let sealed = sealed_until(&e).filter(|_| !unsealed.contains(&index));
                let access = match sealed {
                    Some(until) => pb::access_entry::Access::Sealed(SealedAccess {
                        // From the stored fields, never the stored hash: an
                        // altered sealed entry must not match its commitment.
                        leaf_hash: e.leaf_hash(index).to_vec(),
                        disclosed_after: Some(timestamp(until)),
                    }),
                    None if e.encoding_version() != tongban_audit::entry::ENTRY_ENCODING_V3 => {
                        // Written before entries had a public part: it can
                        // only be counted, not shown.
                        pb::access_entry::Access::Sealed(SealedAccess {
                            leaf_hash: e.leaf_hash(index).to_vec(),
                            disclosed_after: None,
                        })
                    }
                    None => pb::access_entry::Access::Disclosed(disclosed_access(
                        e.public(),
                        directory
                            .organisation_name(&e.caller_org)
                            .unwrap_or_default(),
                        catalogue.matter(&e.matter),
                    )),
                };
                AccessEntry {
                    index,
                    access: Some(access),
                    inclusion_proof: proofs
                        .next()
                        .unwrap_or_default()
                        .iter()
                        .map(|h| h.to_vec())
                        .collect(),
                }
            })
            .collect())
    }
}

type Validated = (IdNumber, u32, Option<PageToken>);

/// The request's identity number, page size and token, or what is wrong.
fn validate(asked: &ListAccessesRequest) -> Result<Validated, ExchangeError> {
    let id = IdNumber::parse(asked.id_number.trim()).map_err(|e| {
        ExchangeError::invalid(
            "id_number",
            format!(
                "not a valid resident identity number ({} check failed): {e}",
                e.check()
            ),
        )
    })?;
    let page_size = match asked.page_size {
        0 => DEFAULT_PAGE,
        n if n <= MAX_PAGE => n,
        n => {
            return Err(ExchangeError::invalid(
                "page_size",
                format!("{n} is more than {MAX_PAGE}"),
            ));
        }
    };
    let token = match asked.page_token.as_str() {
        "" => None,
        t => Some(PageToken::decode(t)?),
    };
    Ok((id, page_size, token))
}

fn valid_id(asked: &ListAccessesRequest) -> Option<IdNumber> {
    IdNumber::parse(asked.id_number.trim()).ok()
}

#[tonic::async_trait]
impl TransparencyApi for TransparencyService {
    async fn list_accesses(
        &self,
        request: Request<ListAccessesRequest>,
    ) -> Result<Response<ListAccessesResponse>, Status> {
        let answer = async {
            let (call, id, page_size, token) = self.admit(&request).await?;
            self.list(&call, &id, page_size, token).await
        };
        answer.await.map(Response::new).map_err(|e| e.to_status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_refuse_anything_else() {
        let token = PageToken {
            nodes: vec![
                NodeCursor {
                    node: "exchange-1".into(),
                    from: 17,
                    below: 300,
                },
                NodeCursor {
                    node: "node.b_2".into(),
                    from: 0,
                    below: 1,
                },
            ],
        };
        assert_eq!(PageToken::decode(&token.encode()).unwrap(), token);
        for bad in [
            "",
            "exchange-1/5",
            "exchange-1/5/4",
            "exchange-1/5/5",
            "exchange-1/x/9",
            "exchange-1/1/2/3",
            "../etc/1/2",
            "a b/1/2",
            "exchange-1/1/2,",
            "exchange-1/-1/2",
        ] {
            assert!(PageToken::decode(bad).is_err(), "{bad:?}");
        }
        let many = vec!["n/1/2"; MAX_TOKEN_NODES + 1].join(",");
        assert!(PageToken::decode(&many).is_err());
        assert!(PageToken::decode(&"n".repeat(MAX_TOKEN_CHARS + 1)).is_err());
    }
}
