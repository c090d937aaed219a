//! The exchange side: a task per node that, every `interval`, offers the
//! node's latest checkpoint to each configured witness that has not yet
//! cosigned it, with a consistency proof from the size that witness last
//! cosigned, checks the returned cosignature against the witness's pinned
//! key and stores it beside the checkpoint
//! ([`AuditStore::add_cosignature`]). Failures are logged at WARN with the
//! witness's URL and retried on the next tick.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tongban_audit::{AuditStore, WitnessKey, consistency_proof, has_cosignature};

use crate::request::{AddCheckpoint, parse_decimal};
use crate::server::TLOG_SIZE_CONTENT_TYPE;

/// Largest witness answer read: a few signature lines.
const MAX_RESPONSE_BYTES: usize = 16 * 1024;

/// A witness the exchange asks: its submission prefix (`http://host:port`,
/// `/add-checkpoint` is appended) and its pinned key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessEndpoint {
    pub url: String,
    pub key: WitnessKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectorConfig {
    /// Between rounds.
    pub interval: Duration,
    /// Each request to a witness, connecting included.
    pub request_timeout: Duration,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Why one witness gave no cosignature this round.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("invalid witness URL {url:?}: only http://host[:port][/prefix] is supported")]
    BadUrl { url: String },
    #[error("audit store: {0}")]
    Audit(#[from] tongban_audit::AuditError),
    #[error("audit store: {0}")]
    Store(#[from] tongban_audit::StoreError),
    #[error("request failed: {0}")]
    Http(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("witness answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("witness has cosigned size {witness}, beyond this log's latest checkpoint {ours}")]
    Ahead { witness: u64, ours: u64 },
    #[error("witness answered without a valid cosignature by its pinned key")]
    NoCosignature,
}

/// Counters since the collector started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CollectorStats {
    /// Cosignatures received, verified and stored.
    pub cosigned: u64,
    /// Witness requests that gave none.
    pub failed: u64,
    /// Rounds completed.
    pub rounds: u64,
}

#[derive(Debug)]
struct Target {
    endpoint: WitnessEndpoint,
    add_url: http::Uri,
    /// The size this witness last cosigned, as far as we know (0: unknown).
    last_size: u64,
}

/// Collects cosignatures for one node's log.
#[derive(Debug)]
pub struct Collector {
    store: Arc<dyn AuditStore>,
    node: String,
    targets: Vec<Target>,
    config: CollectorConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    stats: watch::Sender<CollectorStats>,
}

impl Collector {
    pub fn new(
        store: Arc<dyn AuditStore>,
        node: &str,
        witnesses: Vec<WitnessEndpoint>,
        config: CollectorConfig,
    ) -> Result<Self, CollectorError> {
        let targets = witnesses
            .into_iter()
            .map(|endpoint| {
                let add = format!("{}/add-checkpoint", endpoint.url.trim_end_matches('/'));
                let add_url: http::Uri = add.parse().map_err(|_| CollectorError::BadUrl {
                    url: endpoint.url.clone(),
                })?;
                if add_url.scheme_str() != Some("http") || add_url.host().is_none() {
                    return Err(CollectorError::BadUrl {
                        url: endpoint.url.clone(),
                    });
                }
                Ok(Target {
                    endpoint,
                    add_url,
                    last_size: 0,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.request_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            store,
            node: node.to_string(),
            targets,
            config,
            client,
            stats: watch::Sender::new(CollectorStats::default()),
        })
    }

    pub fn stats(&self) -> CollectorStats {
        *self.stats.borrow()
    }

    /// Watches the counters (e.g. to wait until a cosignature arrived).
    pub fn subscribe(&self) -> watch::Receiver<CollectorStats> {
        self.stats.subscribe()
    }

    /// One round: every witness missing from the latest checkpoint is asked.
    pub async fn run_once(&mut self) {
        let latest = match self.store.latest_checkpoint(&self.node).await {
            Ok(Some(cp)) => cp,
            Ok(None) => {
                self.stats.send_modify(|s| s.rounds += 1);
                return;
            }
            Err(e) => {
                tracing::warn!(node = %self.node, error = %e, "cannot read the latest checkpoint for witnesses");
                self.stats.send_modify(|s| s.rounds += 1);
                return;
            }
        };
        for i in 0..self.targets.len() {
            if has_cosignature(&latest.note, &self.targets[i].endpoint.key) {
                self.targets[i].last_size = latest.tree_size;
                continue;
            }
            let result = self.ask(i, latest.tree_size, &latest.note).await;
            let target = &mut self.targets[i];
            match result {
                Ok(()) => {
                    target.last_size = latest.tree_size;
                    self.stats.send_modify(|s| s.cosigned += 1);
                }
                Err(e) => {
                    tracing::warn!(
                        node = %self.node,
                        witness = %target.endpoint.url,
                        size = latest.tree_size,
                        error = %e,
                        "witness cosignature not obtained; retrying next round"
                    );
                    self.stats.send_modify(|s| s.failed += 1);
                }
            }
        }
        self.stats.send_modify(|s| s.rounds += 1);
    }

    /// Asks witness `i` to cosign `note` (size `size`); on 409 retries once
    /// from the size the witness says it holds.
    async fn ask(&self, i: usize, size: u64, note: &str) -> Result<(), CollectorError> {
        let target = &self.targets[i];
        let mut old = if target.last_size <= size {
            target.last_size
        } else {
            0
        };
        for attempt in 0..2 {
            let proof = if old == 0 || old == size {
                Vec::new()
            } else {
                consistency_proof(self.store.as_ref(), &self.node, old, size)
                    .await?
                    .proof
            };
            let request = AddCheckpoint::encode(old, &proof, note);
            let (status, content_type, body) = self.post(&target.add_url, request).await?;
            match status {
                200 => return self.store_cosignature(target, size, note, &body).await,
                409 if attempt == 0 && content_type.starts_with(TLOG_SIZE_CONTENT_TYPE) => {
                    let theirs = parse_decimal(body.trim_end_matches('\n')).ok_or_else(|| {
                        CollectorError::Refused {
                            status,
                            message: "409 without a tree size".into(),
                        }
                    })?;
                    if theirs > size {
                        return Err(CollectorError::Ahead {
                            witness: theirs,
                            ours: size,
                        });
                    }
                    old = theirs;
                }
                _ => {
                    return Err(CollectorError::Refused {
                        status,
                        message: body
                            .lines()
                            .next()
                            .unwrap_or_default()
                            .chars()
                            .take(200)
                            .collect(),
                    });
                }
            }
        }
        Err(CollectorError::Refused {
            status: 409,
            message: "old size still conflicts after retrying".into(),
        })
    }

    async fn store_cosignature(
        &self,
        target: &Target,
        size: u64,
        note: &str,
        body: &str,
    ) -> Result<(), CollectorError> {
        let key = &target.endpoint.key;
        let prefix = format!("\u{2014} {} ", key.name);
        let line = body
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .find(|l| has_cosignature(&format!("{note}{l}\n"), key))
            .ok_or(CollectorError::NoCosignature)?;
        self.store.add_cosignature(&self.node, size, line).await?;
        Ok(())
    }

    async fn post(
        &self,
        url: &http::Uri,
        body: String,
    ) -> Result<(u16, String, String), CollectorError> {
        let request = http::Request::post(url.clone())
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CollectorError::Http(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| CollectorError::Http(e.to_string()))?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| CollectorError::Http(e.to_string()))?
                .to_bytes();
            Ok((
                status,
                content_type,
                String::from_utf8_lossy(&bytes).into_owned(),
            ))
        };
        tokio::time::timeout(self.config.request_timeout, exchange)
            .await
            .map_err(|_| CollectorError::Timeout(self.config.request_timeout))?
    }

    /// Runs rounds every `interval` (tokio's clock) on a spawned task.
    pub fn spawn(mut self) -> CollectorHandle {
        let stats = self.stats.subscribe();
        let interval = self.config.interval;
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                self.run_once().await;
            }
        });
        CollectorHandle { task, stats }
    }
}

/// A running collector; dropping it stops the task.
#[derive(Debug)]
pub struct CollectorHandle {
    task: JoinHandle<()>,
    stats: watch::Receiver<CollectorStats>,
}

impl CollectorHandle {
    pub fn stats(&self) -> CollectorStats {
        *self.stats.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<CollectorStats> {
        self.stats.clone()
    }

    /// Stops the task (a round in flight is abandoned; it holds nothing
    /// that needs finishing: a stored cosignature is one atomic update).
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for CollectorHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
