//! The writer: one background task per node batching appends into
//! transactions (group commit), signing checkpoints, failing closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::entry::{AuditEntry, EntryKind, truncate_to_micros};
use crate::map::{MapUpdate, MapValue, subject_key};
use crate::merkle::{CompactRange, Hash, range_hash};
use crate::note::{Checkpoint, Keyring, LogSigner, MapCommitment, PrunedBoundary, origin_for_node};
use crate::read::{PruneRecord, PruneReport, PruneRequest, frontier_to_keep};
use crate::store::{
    AuditStore, LoggedEntry, MapWrite, PrunedChain, StoreError, StoredCheckpoint, WriterLease,
};

pub use crate::error::AuditError;

/// Proof that an entry was durably committed at a position in a node's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub node: String,
    pub index: u64,
    #[serde(with = "crate::store::hex_hash")]
    pub leaf_hash: Hash,
}

/// Writer tuning. Defaults follow Tessera's order of magnitude.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub node: String,
    /// Sign a checkpoint after this many new entries...
    pub checkpoint_every: u64,
    /// ...or after this long with unsigned entries.
    pub checkpoint_interval: Duration,
    /// Most entries per transaction.
    pub max_batch: usize,
    /// Most calls (`append`, `append_all`) waiting for the writer: the bound
    /// on waiting work. A call that finds the queue full fails at once with
    /// `Unavailable` instead of waiting.
    pub queue_capacity: usize,
    /// Longest an `append`/`append_all` waits for its commit before failing
    /// with `Unavailable`. The entries may still commit later; their caller
    /// has released nothing (fail closed).
    pub append_timeout: Duration,
    /// How long `open` retries while another writer holds the node's lease
    /// (a crashed predecessor's lease can take a moment to be released).
    pub lock_wait: Duration,
    /// Keep the subject map, so citizens can check their history: each
    /// checkpoint then commits to it and names this VRF-r255 public key,
    /// under which subject keys are proven. `None`: no map.
    pub transparency: Option<[u8; 32]>,
}

impl AuditConfig {
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_string(),
            checkpoint_every: 4096,
            checkpoint_interval: Duration::from_millis(1000),
            max_batch: 1024,
            queue_capacity: 16384,
            append_timeout: Duration::from_secs(2),
            lock_wait: Duration::from_secs(5),
            transparency: None,
        }
    }
}

/// Node ids end up in origins, key names and lock names.
pub fn validate_node_id(node: &str) -> Result<(), AuditError> {
    let ok = !node.is_empty()
        && node.len() <= 64
        && node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(AuditError::BadNode(node.to_string()))
    }
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AuditStats {
    pub entries_committed: u64,
    pub batches: u64,
    pub last_batch_size: u64,
    pub last_commit_us: u64,
    pub total_commit_us: u64,
    pub failed_batches: u64,
    pub checkpoints_signed: u64,
    pub checkpoint_failures: u64,
    pub tree_size: u64,
    /// Calls refused at once because the writer's queue was full.
    pub appends_refused: u64,
    /// Calls that gave up waiting for their commit.
    pub appends_timed_out: u64,
}

#[derive(Debug, Default)]
struct Counters {
    entries_committed: AtomicU64,
    batches: AtomicU64,
    last_batch_size: AtomicU64,
    last_commit_us: AtomicU64,
    total_commit_us: AtomicU64,
    failed_batches: AtomicU64,
    checkpoints_signed: AtomicU64,
    checkpoint_failures: AtomicU64,
    tree_size: AtomicU64,
    appends_refused: AtomicU64,
    appends_timed_out: AtomicU64,
}

type Reply<T> = oneshot::Sender<Result<T, AuditError>>;

enum Command {
    /// Entries committed together (one call's evidence requests are never
    /// split across group commits).
    Append(Vec<(Box<AuditEntry>, Reply<Receipt>)>),
    /// Commit everything queued before it and sign a checkpoint.
    Flush(Reply<Option<String>>),
    /// Record, sign, then delete (see [`AuditLog::prune`]).
    Prune(Box<PruneRequest>, Reply<PruneReport>),
    Shutdown(Reply<Option<String>>),
}

/// Handle to one node's audit log. Cheap to clone; all clones share one writer.
#[derive(Debug, Clone)]
pub struct AuditLog {
    node: Arc<str>,
    tx: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    append_timeout: Duration,
    queue_capacity: usize,
    /// The log's committed size, sent after every commit (readers such as
    /// the audit feed wake on it instead of polling this node's log).
    committed: watch::Receiver<u64>,
}

impl AuditLog {
    /// Takes the node's writer lease, recovers size and frontier from the
    /// store, signs a checkpoint over any unsigned tail, and starts the writer.
    pub async fn open(
        store: Arc<dyn AuditStore>,
        signer: LogSigner,
        config: AuditConfig,
    ) -> Result<Self, AuditError> {
        validate_node_id(&config.node)?;
        let origin = origin_for_node(&config.node);
        if signer.name() != origin {
            return Err(AuditError::Invalid(format!(
                "signing key is named {:?}, the log's origin is {origin:?}",
                signer.name()
            )));
        }
        if config.max_batch == 0
            || config.queue_capacity == 0
            || config.checkpoint_every == 0
            || config.append_timeout.is_zero()
        {
            return Err(AuditError::Invalid(
                "max_batch, queue_capacity, checkpoint_every and append_timeout must be positive"
                    .into(),
            ));
        }
        let deadline = Instant::now() + config.lock_wait;
        let lease = loop {
            match store.lock_writer(&config.node).await {
                Ok(l) => break l,
                Err(StoreError::NodeLocked { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        store.ensure_log(&config.node).await?;
        let counters = Arc::new(Counters::default());
        let (committed_tx, committed) = watch::channel(0);
        let mut writer = Writer {
            store,
            signer,
            origin,
            node: config.node.clone(),
            range: CompactRange::new(),
            signed_size: 0,
            last_checkpoint: Instant::now(),
            needs_recovery: true,
            counters: counters.clone(),
            map: config.transparency.map(|vrf_key| MapState {
                vrf_key,
                root: crate::map::EMPTY,
                pending: Vec::new(),
                seed: std::collections::HashMap::new(),
            }),
            pruned: None,
            config: config.clone(),
            lease,
            committed: committed_tx,
        };
        writer.recover().await?;
        writer.check_signer_continues_log().await?;
        writer.checkpoint_if_behind().await?;
        writer.committed.send_replace(writer.range.size());
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        tokio::spawn(writer.run(rx));
        Ok(Self {
            node: config.node.into(),
            tx,
            counters,
            append_timeout: config.append_timeout,
            queue_capacity: config.queue_capacity,
            committed,
        })
    }

    /// The log's committed size: changes after every commit of this node's
    /// writer, once the entries are durable (the store holds them). Entries
    /// other nodes write to a shared store are not signalled here.
    pub fn subscribe_commits(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Appends one entry; returns only once it is durably committed.
    /// `entry.node` may be empty (filled in) or must equal this log's node.
    /// The entry is stored [bounded and clean](AuditEntry::bound_and_clean).
    /// Fails with `Unavailable` at once when the writer's queue is full, and
    /// when the commit does not come within the append timeout.
    pub async fn append(&self, entry: AuditEntry) -> Result<Receipt, AuditError> {
        self.append_all(vec![entry])
            .await
            .pop()
            .unwrap_or(Err(AuditError::Closed))
    }

    /// Appends several entries in one transaction — never split across
    /// group commits, so a call with several evidence requests waits for one
    /// durable write, not one per entry. Results are in the entries' order.
    /// Bounds, queue and deadline as for [`append`](Self::append).
    pub async fn append_all(&self, entries: Vec<AuditEntry>) -> Vec<Result<Receipt, AuditError>> {
        let deadline = tokio::time::Instant::now() + self.append_timeout;
        let mut items = Vec::with_capacity(entries.len());
        let mut replies = Vec::with_capacity(entries.len());
        for mut entry in entries {
            // Here, not in the writer: the queue then holds only bounded entries.
            entry.bound_and_clean();
            let (reply, rx) = oneshot::channel();
            items.push((Box::new(entry), reply));
            replies.push(rx);
        }
        if let Err(e) = self.tx.try_send(Command::Append(items)) {
            let full = matches!(e, mpsc::error::TrySendError::Full(_));
            if full {
                self.counters
                    .appends_refused
                    .fetch_add(1, Ordering::Relaxed);
            }
            return replies
                .iter()
                .map(|_| {
                    Err(if full {
                        AuditError::Unavailable(format!(
                            "the audit writer's queue is full ({} calls waiting)",
                            self.queue_capacity
                        ))
                    } else {
                        AuditError::Closed
                    })
                })
                .collect();
        }
        let mut out = Vec::with_capacity(replies.len());
        for rx in replies {
            out.push(match tokio::time::timeout_at(deadline, rx).await {
                Ok(reply) => reply.unwrap_or(Err(AuditError::Closed)),
                Err(_) => {
                    self.counters
                        .appends_timed_out
                        .fetch_add(1, Ordering::Relaxed);
                    Err(AuditError::Unavailable(format!(
                        "the audit store did not commit within {}",
                        duration_text(self.append_timeout)
                    )))
                }
            });
        }
        out
    }

    /// Commits everything queued so far and signs a checkpoint; returns it
    /// (None when the log is empty).
    pub async fn flush(&self) -> Result<Option<String>, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Flush(reply))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Prunes this node's own log: entries older than the request's
    /// retention that a signed checkpoint already covers. The writer first
    /// appends a [`EntryKind::Prune`] record naming the new boundary, signs a
    /// checkpoint covering it, and only then deletes, so the store never
    /// holds a boundary that no signed record authorises. Nothing old enough:
    /// no record, nothing deleted.
    pub async fn prune(&self, request: PruneRequest) -> Result<PruneReport, AuditError> {
        request.check()?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Prune(Box::new(request), reply))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Flushes, writes a final checkpoint, stops the writer and releases the
    /// node's lease. Appends on any clone fail with `Closed` afterwards.
    pub async fn shutdown(&self) -> Result<Option<String>, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Shutdown(reply))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    pub fn stats(&self) -> AuditStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AuditStats {
            entries_committed: g(&c.entries_committed),
            batches: g(&c.batches),
            last_batch_size: g(&c.last_batch_size),
            last_commit_us: g(&c.last_commit_us),
            total_commit_us: g(&c.total_commit_us),
            failed_batches: g(&c.failed_batches),
            checkpoints_signed: g(&c.checkpoints_signed),
            checkpoint_failures: g(&c.checkpoint_failures),
            tree_size: g(&c.tree_size),
            appends_refused: g(&c.appends_refused),
            appends_timed_out: g(&c.appends_timed_out),
        }
    }
}

struct Writer {
    store: Arc<dyn AuditStore>,
    signer: LogSigner,
    origin: String,
    node: String,
    range: CompactRange,
    signed_size: u64,
    last_checkpoint: Instant,
    needs_recovery: bool,
    counters: Arc<Counters>,
    /// The subject map, when the log keeps one.
    map: Option<MapState>,
    /// The retention boundary the next checkpoint names.
    pruned: Option<PrunedBoundary>,
    config: AuditConfig,
    lease: WriterLease,
    /// Told the committed size after each commit.
    committed: watch::Sender<u64>,
}

/// The writer's view of the subject map: its root at the last signed
/// checkpoint, and what has to go into it at the next one.
struct MapState {
    vrf_key: [u8; 32],
    root: Hash,
    /// (subject key, index, leaf hash) of every entry about a subject
    /// committed since the last signed checkpoint, in log order.
    pending: Vec<([u8; 32], u64, Hash)>,
    /// A rebuilt map's start: the value of each subject's pruned chain, so
    /// the map goes on counting pruned entries (as `verify` and portals,
    /// which start from the same chains, expect). Goes into the next
    /// checkpoint's map.
    seed: std::collections::HashMap<[u8; 32], MapValue>,
}

impl Writer {
    /// Reloads size and frontier from the store and checks them against the
    /// latest stored checkpoint (refusing to extend a log that disagrees).
    async fn recover(&mut self) -> Result<(), AuditError> {
        let state = self.store.log_state(&self.node).await?;
        let ids = CompactRange::frontier_ids(state.size);
        let found = self.store.get_nodes(&self.node, &ids).await?;
        let mut hashes = Vec::with_capacity(ids.len());
        for id in &ids {
            let h = found.get(id).ok_or_else(|| AuditError::Inconsistent {
                node: self.node.clone(),
                detail: format!(
                    "subtree hash level {} index {} (needed to continue the tree at size {}) is missing",
                    id.level, id.index, state.size
                ),
            })?;
            hashes.push(*h);
        }
        let range =
            CompactRange::from_parts(state.size, hashes).map_err(|e| AuditError::Inconsistent {
                node: self.node.clone(),
                detail: e.to_string(),
            })?;
        let latest = self.store.latest_checkpoint(&self.node).await?;
        let signed_size = match latest {
            None => 0,
            Some(cp) => {
                if cp.tree_size > state.size {
                    return Err(AuditError::Inconsistent {
                        node: self.node.clone(),
                        detail: format!(
                            "latest checkpoint covers {} entries but the store holds {}: entries were removed",
                            cp.tree_size, state.size
                        ),
                    });
                }
                let ids = crate::merkle::perfect_decomposition(0, cp.tree_size);
                let nodes = self.store.get_nodes(&self.node, &ids).await?;
                let root =
                    range_hash(0, cp.tree_size, &|id| nodes.get(&id).copied()).map_err(|e| {
                        AuditError::Inconsistent {
                            node: self.node.clone(),
                            detail: e.to_string(),
                        }
                    })?;
                if cp.tree_size > 0 && root != cp.root {
                    return Err(AuditError::Inconsistent {
                        node: self.node.clone(),
                        detail: format!(
                            "stored tree at size {} does not match the latest checkpoint's root",
                            cp.tree_size
                        ),
                    });
                }
                cp.tree_size
            }
        };
        self.range = range;
        self.signed_size = signed_size;
        self.recover_map_and_boundary(&state).await?;
        self.needs_recovery = false;
        self.counters
            .tree_size
            .store(self.range.size(), Ordering::Relaxed);
        Ok(())
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut pending: Option<Command> = None;
        loop {
            let first = match pending.take() {
                Some(c) => c,
                None => {
                    let unsigned = self.range.size() > self.signed_size;
                    if unsigned {
                        let due = self
                            .config
                            .checkpoint_interval
                            .saturating_sub(self.last_checkpoint.elapsed());
                        match tokio::time::timeout(due, rx.recv()).await {
                            Ok(Some(c)) => c,
                            Ok(None) => break,
                            Err(_) => {
                                let _ = self.checkpoint().await;
                                continue;
                            }
                        }
                    } else {
                        match rx.recv().await {
                            Some(c) => c,
                            None => break,
                        }
                    }
                }
            };
            match first {
                Command::Append(mut batch) => {
                    while batch.len() < self.config.max_batch {
                        match rx.try_recv() {
                            Ok(Command::Append(items)) => batch.extend(items),
                            Ok(other) => {
                                pending = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit(batch).await;
                    if self.range.size() - self.signed_size >= self.config.checkpoint_every
                        || self.last_checkpoint.elapsed() >= self.config.checkpoint_interval
                    {
                        let _ = self.checkpoint().await;
                    }
                }
                Command::Flush(reply) => {
                    let _ = reply.send(self.checkpoint().await);
                }
                Command::Prune(request, reply) => {
                    let _ = reply.send(self.prune(*request).await);
                }
                Command::Shutdown(reply) => {
                    rx.close();
                    // Anything already queued behind the shutdown is still committed.
                    let mut rest = Vec::new();
                    while let Ok(c) = rx.try_recv() {
                        if let Command::Append(items) = c {
                            rest.extend(items);
                        } else if let Command::Flush(r) | Command::Shutdown(r) = c {
                            let _ = r.send(Err(AuditError::Closed));
                        } else if let Command::Prune(_, r) = c {
                            let _ = r.send(Err(AuditError::Closed));
                        }
                    }
                    for chunk in chunk_owned(rest, self.config.max_batch) {
                        self.commit(chunk).await;
                    }
                    let result = self.checkpoint().await;
                    // Release the lease before answering so the node can be reopened at once.
                    self.lease.release().await;
                    let _ = reply.send(result);
                    return;
                }
            }
        }
        // Every handle dropped: sign what was committed.
        let _ = self.checkpoint().await;
    }

    async fn commit(&mut self, batch: Vec<(Box<AuditEntry>, Reply<Receipt>)>) {
        if self.needs_recovery
            && let Err(e) = self.recover().await
        {
            self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
            let msg = e.to_string();
            for (_, r) in batch {
                let _ = r.send(Err(AuditError::Unavailable(msg.clone())));
            }
            return;
        }
        let mut range = self.range.clone();
        let mut rows = Vec::with_capacity(batch.len());
        let mut nodes = Vec::new();
        let mut replies = Vec::with_capacity(batch.len());
        for (entry, reply) in batch {
            let mut entry = *entry;
            if entry.node.is_empty() {
                entry.node = self.node.clone();
            } else if entry.node != self.node {
                let _ = reply.send(Err(AuditError::WrongNode {
                    entry: entry.node,
                    log: self.node.clone(),
                }));
                continue;
            }
            entry.time = truncate_to_micros(entry.time);
            let index = range.size();
            let leaf_hash = entry.leaf_hash(index);
            nodes.extend(range.append(leaf_hash));
            rows.push(LoggedEntry {
                index,
                leaf_hash,
                entry,
            });
            replies.push(reply);
        }
        if rows.is_empty() {
            return;
        }
        let started = Instant::now();
        let result = self.store.append_batch(&self.node, &rows, &nodes).await;
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match result {
            Ok(()) => {
                self.range = range;
                let n = rows.len() as u64;
                let c = &self.counters;
                c.entries_committed.fetch_add(n, Ordering::Relaxed);
                c.batches.fetch_add(1, Ordering::Relaxed);
                c.last_batch_size.store(n, Ordering::Relaxed);
                c.last_commit_us.store(us, Ordering::Relaxed);
                c.total_commit_us.fetch_add(us, Ordering::Relaxed);
                c.tree_size.store(self.range.size(), Ordering::Relaxed);
                self.committed.send_replace(self.range.size());
                if let Some(map) = &mut self.map {
                    map.pending.extend(rows.iter().filter_map(|row| {
                        subject_key(&row.entry.subject).map(|k| (k, row.index, row.leaf_hash))
                    }));
                }
                for (row, reply) in rows.into_iter().zip(replies) {
                    let _ = reply.send(Ok(Receipt {
                        node: self.node.clone(),
                        index: row.index,
                        leaf_hash: row.leaf_hash,
                    }));
                }
            }
            Err(e) => {
                // The outcome of a failed commit is unknown: reload before the next batch.
                self.needs_recovery = true;
                self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::error!(node = %self.node, error = %e, entries = rows.len(), "audit batch commit failed");
                let msg = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(AuditError::Unavailable(msg.clone())));
                }
            }
        }
    }

    /// A key that cannot open the log's latest checkpoint would fork the
    /// log: every later checkpoint would fail verification under the pinned
    /// key. Refuse to write with it.
    async fn check_signer_continues_log(&self) -> Result<(), AuditError> {
        let Some(latest) = self.store.latest_checkpoint(&self.node).await? else {
            return Ok(());
        };
        let mut own = Keyring::new();
        own.add(self.signer.verifier());
        if let Err(e) = Checkpoint::open(&latest.note, &own, &self.origin) {
            return Err(AuditError::Invalid(format!(
                "the signing key does not continue the log of node {}: its latest checkpoint (size {}) does not verify under it ({e}); use the node's own signing key (restore it from backup)",
                self.node, latest.tree_size
            )));
        }
        Ok(())
    }

    async fn prune(&mut self, request: PruneRequest) -> Result<PruneReport, AuditError> {
        if self.needs_recovery {
            self.recover().await?;
        }
        let cutoff = request.cutoff();
        let state = self.store.log_state(&self.node).await?;
        // Only entries a signed checkpoint already covers may go.
        let cut = self
            .store
            .prune_cut(&self.node, cutoff.timestamp_micros())
            .await?
            .min(self.signed_size);
        let mut report = PruneReport {
            node: self.node.clone(),
            cutoff,
            pruned_before: state.pruned_before,
            deleted: 0,
            record_index: None,
        };
        if cut <= state.pruned_before {
            return Ok(report);
        }
        let keep = frontier_to_keep(self.store.as_ref(), &self.node, cut).await?;
        let mut record = AuditEntry::new(EntryKind::Prune, request.now);
        record.operator = request.operator;
        record.detail = PruneRecord {
            before_index: cut,
            older_than_days: request.older_than_days,
            cutoff,
            reason: request.reason,
        }
        .to_detail();
        let (reply, rx) = oneshot::channel();
        self.commit(vec![(Box::new(record), reply)]).await;
        let receipt = rx.await.map_err(|_| AuditError::Closed)??;
        self.pruned = Some(PrunedBoundary {
            before: cut,
            cutoff: truncate_to_micros(cutoff),
        });
        // Signed before deleting: a crash in between leaves an authorised,
        // not yet applied boundary, which verifies.
        self.checkpoint().await?;
        // Kept without a map too: a map begun later starts from them, and
        // they stay whole for maps signed before it was switched off.
        let chains = self.pruned_chains(state.pruned_before, cut).await?;
        let deleted = self
            .store
            .prune_below(&self.node, cut, &keep, &chains)
            .await?;
        tracing::info!(node = %self.node, cut, deleted, record = receipt.index, "pruned audit entries");
        report.pruned_before = cut;
        report.deleted = deleted;
        report.record_index = Some(receipt.index);
        Ok(report)
    }

    /// The map's root at the latest checkpoint, and the entries about
    /// subjects committed after it. A log without a map at its latest
    /// checkpoint (new, or kept before maps existed) gets one built from
    /// every retained entry.
    async fn recover_map_and_boundary(
        &mut self,
        state: &crate::store::LogState,
    ) -> Result<(), AuditError> {
        let latest = match self.store.latest_checkpoint(&self.node).await? {
            Some(stored) => {
                let mut own = Keyring::new();
                own.add(self.signer.verifier());
                // An unverifiable latest checkpoint is refused by
                // `check_signer_continues_log`; here it only lacks a map.
                Checkpoint::open(&stored.note, &own, &self.origin).ok()
            }
            None => None,
        };
        self.pruned = match latest.as_ref().and_then(|cp| cp.pruned) {
            Some(boundary) if boundary.before >= state.pruned_before => Some(boundary),
            _ if state.pruned_before > 0 => Some(PrunedBoundary {
                before: state.pruned_before,
                cutoff: self.last_prune_cutoff().await?,
            }),
            _ => None,
        };
        let Some(map) = &mut self.map else {
            return Ok(());
        };
        let committed = latest.as_ref().and_then(|cp| cp.map.map(|m| (cp.size, m)));
        let from = match committed {
            // A new VRF key changes nothing in the map (it is keyed by the
            // entries' subjects), so it continues: a rebuild would forget
            // the pruned chains, and every map signed before the change over
            // them would no longer verify.
            Some((size, commitment)) => {
                map.root = commitment.root;
                size
            }
            None => {
                // No map: rebuild from the pruned chains and the log.
                self.store.map_reset(&self.node).await?;
                map.root = crate::map::EMPTY;
                map.seed.clear();
                let mut after: Option<[u8; 32]> = None;
                loop {
                    let page = self
                        .store
                        .pruned_chains_page(&self.node, after.as_ref(), 10_000)
                        .await?;
                    let Some((last, _)) = page.last() else { break };
                    after = Some(*last);
                    map.seed
                        .extend(page.iter().map(|(key, chain)| (*key, chain.value())));
                }
                state.pruned_before
            }
        };
        map.pending.clear();
        let mut next = from;
        while next < self.range.size() {
            let rows = self.store.scan(&self.node, next, 10_000).await?;
            let Some(last) = rows.last() else { break };
            next = last.index + 1;
            map.pending.extend(rows.iter().filter_map(|row| {
                subject_key(&row.entry.subject)
                    .map(|k| (k, row.index, row.entry.leaf_hash(row.index)))
            }));
        }
        Ok(())
    }

    /// The cutoff of the node's latest prune record (for logs pruned before
    /// checkpoints named their boundary).
    async fn last_prune_cutoff(&self) -> Result<chrono::DateTime<Utc>, AuditError> {
        let filter = crate::store::SearchFilter {
            node: Some(self.node.clone()),
            kind: Some(EntryKind::Prune),
            ..Default::default()
        };
        let found = self.store.search(&filter, None, 1).await?;
        Ok(found
            .first()
            .and_then(|e| PruneRecord::parse(&e.entry.detail).ok())
            .map_or(chrono::DateTime::<Utc>::MIN_UTC, |r| r.cutoff))
    }

    /// The map changes of the next checkpoint: every pending entry chained
    /// on to its subject's value, and the internal nodes that change.
    async fn map_update(&mut self) -> Result<Option<(MapCommitment, MapWrite)>, AuditError> {
        let Some(map) = &self.map else {
            return Ok(None);
        };
        let commitment = |root| MapCommitment {
            root,
            vrf_key: map.vrf_key,
        };
        if map.pending.is_empty() && map.seed.is_empty() {
            return Ok(Some((commitment(map.root), MapWrite::default())));
        }
        let mut by_subject: std::collections::BTreeMap<[u8; 32], Vec<(u64, Hash)>> =
            std::collections::BTreeMap::new();
        for key in map.seed.keys() {
            by_subject.entry(*key).or_default();
        }
        for (key, index, leaf) in &map.pending {
            by_subject.entry(*key).or_default().push((*index, *leaf));
        }
        let keys: Vec<[u8; 32]> = by_subject.keys().copied().collect();
        let current = self.store.map_leaves(&self.node, &keys).await?;
        let single = self.store.map_single_leaf(&self.node).await?;
        let mut leaves = Vec::with_capacity(keys.len());
        let mut changes = Vec::with_capacity(keys.len());
        for (key, entries) in by_subject {
            let mut value = current
                .get(&key)
                .or_else(|| map.seed.get(&key))
                .copied()
                .unwrap_or_default();
            for (index, leaf) in entries {
                value.extend(index, &leaf);
            }
            changes.push((key, value.hash()));
            leaves.push((key, value));
        }
        let mut update = MapUpdate::new(single.map(|(k, v)| (k, v.hash())), changes);
        loop {
            let wanted = update.wanted();
            if wanted.is_empty() {
                break;
            }
            let found = self.store.map_nodes(&self.node, &wanted).await?;
            update.supply(found);
        }
        let delta = update.finish().map_err(|e| AuditError::Inconsistent {
            node: self.node.clone(),
            detail: format!("subject map: {e}"),
        })?;
        Ok(Some((
            commitment(delta.root),
            MapWrite {
                leaves,
                upserts: delta.upserts,
                deletes: delta.deletes,
            },
        )))
    }

    /// The pruned chains of every subject with entries in `[from, cut)`,
    /// continued from what earlier prunes left.
    async fn pruned_chains(
        &self,
        from: u64,
        cut: u64,
    ) -> Result<Vec<([u8; 32], PrunedChain)>, AuditError> {
        let mut by_subject: std::collections::BTreeMap<[u8; 32], Vec<(u64, Hash)>> =
            std::collections::BTreeMap::new();
        let mut next = from;
        while next < cut {
            let rows = self.store.scan(&self.node, next, 10_000).await?;
            let Some(last) = rows.last() else { break };
            next = last.index + 1;
            for row in rows.iter().filter(|r| r.index < cut) {
                if let Some(key) = subject_key(&row.entry.subject) {
                    by_subject
                        .entry(key)
                        .or_default()
                        .push((row.index, row.entry.leaf_hash(row.index)));
                }
            }
        }
        let keys: Vec<[u8; 32]> = by_subject.keys().copied().collect();
        let earlier = self.store.pruned_chains(&self.node, &keys).await?;
        let mut out = Vec::with_capacity(keys.len());
        for (key, entries) in by_subject {
            let mut value = earlier
                .get(&key)
                .map(PrunedChain::value)
                .unwrap_or_default();
            let mut chain = None;
            for (index, leaf) in entries {
                chain = Some(PrunedChain {
                    count: value.count + 1,
                    head_before_last: value.head,
                    last_index: index,
                    last_leaf: leaf,
                });
                value.extend(index, &leaf);
            }
            if let Some(chain) = chain {
                out.push((key, chain));
            }
        }
        Ok(out)
    }

    async fn checkpoint_if_behind(&mut self) -> Result<(), AuditError> {
        if self.range.size() > self.signed_size {
            self.checkpoint().await?;
        }
        Ok(())
    }

    /// Signs and stores a checkpoint at the current size (if it advanced).
    async fn checkpoint(&mut self) -> Result<Option<String>, AuditError> {
        // Set first so a failing store is retried once per interval, not in a spin.
        self.last_checkpoint = Instant::now();
        if self.needs_recovery {
            self.recover().await?;
        }
        let size = self.range.size();
        if size == 0 {
            return Ok(None);
        }
        if size == self.signed_size
            && let Some(cp) = self.store.latest_checkpoint(&self.node).await?
            && cp.tree_size == size
        {
            return Ok(Some(cp.note));
        }
        let map_update = match self.map_update().await {
            Ok(update) => update,
            Err(e) => {
                self.counters
                    .checkpoint_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %self.node, error = %e, size, "updating the subject map failed");
                return Err(e);
            }
        };
        let cp = Checkpoint {
            origin: self.origin.clone(),
            size,
            root: self.range.root(),
            time: truncate_to_micros(Utc::now()),
            map: map_update.as_ref().map(|(commitment, _)| *commitment),
            pruned: self.pruned,
        };
        let note = cp.sign(&self.signer)?;
        let stored = StoredCheckpoint {
            tree_size: size,
            root: cp.root,
            time: cp.time,
            note: note.clone(),
        };
        let result = match &map_update {
            Some((_, write)) => {
                self.store
                    .put_checkpoint_with_map(&self.node, &stored, write)
                    .await
            }
            None => self.store.put_checkpoint(&self.node, &stored).await,
        };
        match result {
            Ok(()) => {
                self.signed_size = size;
                if let (Some(map), Some((commitment, _))) = (&mut self.map, map_update) {
                    map.root = commitment.root;
                    map.pending.clear();
                    map.seed.clear();
                }
                self.counters
                    .checkpoints_signed
                    .fetch_add(1, Ordering::Relaxed);
                Ok(Some(note))
            }
            Err(e) => {
                self.counters
                    .checkpoint_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %self.node, error = %e, size, "storing audit checkpoint failed");
                Err(e.into())
            }
        }
    }
}

/// "2 s", "250 ms": how a person states a timeout.
fn duration_text(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

fn chunk_owned<T>(mut v: Vec<T>, n: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    while !v.is_empty() {
        let rest = v.split_off(v.len().min(n));
        out.push(v);
        v = rest;
    }
    out
}
