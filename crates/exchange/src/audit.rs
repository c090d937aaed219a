//! The exchange's side of the audit log: turns pipeline events into audit
//! entries (subject pseudonymised, released fields hashed), opens the log
//! named by the configuration, and reads it back ([`AuditReader`], for the
//! `Audit` service and `Exchange.ProveReceipt`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tongban_audit::{
    AuditConfig, AuditEntry, AuditError, AuditLog, AuditStats, AuditStore, EntryKind, LogSigner,
    PostgresStore, PruneRequest, SqliteStore, StoreError, SubjectPseudonymizer, origin_for_node,
};
use tongban_core::Caller;
use tongban_proto::v1::{self as pb, AuditReceipt};
use tongban_telemetry::Metrics;

use crate::error::AuditSinkError;
use crate::error::ExchangeError;
use crate::pipeline::{AuditEvent, AuditFuture, AuditKind, AuditSink, PolicyChange, ProbeFuture};
use crate::wire::inclusion_to_proto;

/// `[audit]` in the exchange configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// A SQLite file path (the embedded default) or a `postgres://` URL.
    #[serde(default = "default_store")]
    pub store: String,
    /// PostgreSQL schema for the audit tables (default `public`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_schema: Option<String>,
    /// This node's Ed25519 checkpoint signing key; created on first start.
    #[serde(default = "default_signing_key")]
    pub signing_key: PathBuf,
    /// Secret key of the subject pseudonyms (hex); created on first start.
    /// Every node and every administrator tool of one deployment shares it.
    #[serde(default = "default_subject_key")]
    pub subject_key: PathBuf,
    /// Sign a checkpoint at least this often while entries arrive.
    #[serde(default = "default_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
    /// ... and after this many entries.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Entries older than this many days are pruned once a day (checkpoints
    /// and the tree frontier stay). At least 183 (Cybersecurity Law art. 21);
    /// 0 keeps everything.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Longest a request waits for its audit entry to commit; past it the
    /// request fails `UNAVAILABLE` (`AUDIT_UNAVAILABLE`) and nothing is
    /// released. Requests beyond the writer's queue fail at once.
    #[serde(default = "default_append_timeout_ms")]
    pub append_timeout_ms: u64,
    /// Keep the subject map, so citizen portals can prove a person's access
    /// history complete (`Transparency` service); its checkpoints commit to
    /// the map. Off only to measure what it costs.
    #[serde(default = "default_transparency")]
    pub transparency: bool,
    /// Witnesses (`tongban witness`, run by other parties) this node offers
    /// each new checkpoint to; their cosignatures are stored with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub witnesses: Vec<WitnessSettings>,
    /// How often checkpoints are offered to the witnesses.
    #[serde(default = "default_witness_interval_ms")]
    pub witness_interval_ms: u64,
}

/// One `[[audit.witnesses]]`: where a witness takes checkpoints and the
/// key its cosignatures must verify under.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessSettings {
    /// `http://host:port` (the witness's `/add-checkpoint` is below it).
    pub url: String,
    /// Its cosignature verifier key, `<name>+<id>+<base64>`.
    pub key: String,
}

impl AuditSettings {
    /// The configured witnesses, their keys parsed.
    pub fn witness_endpoints(
        &self,
    ) -> Result<Vec<tongban_witness::WitnessEndpoint>, tongban_audit::cosign::CosignError> {
        self.witnesses
            .iter()
            .map(|w| {
                Ok(tongban_witness::WitnessEndpoint {
                    url: w.url.clone(),
                    key: tongban_audit::WitnessKey::parse(&w.key)?,
                })
            })
            .collect()
    }
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            store: default_store(),
            postgres_schema: None,
            signing_key: default_signing_key(),
            subject_key: default_subject_key(),
            checkpoint_interval_ms: default_checkpoint_interval_ms(),
            checkpoint_every: default_checkpoint_every(),
            retention_days: default_retention_days(),
            append_timeout_ms: default_append_timeout_ms(),
            transparency: default_transparency(),
            witnesses: Vec::new(),
            witness_interval_ms: default_witness_interval_ms(),
        }
    }
}

fn default_witness_interval_ms() -> u64 {
    1000
}

fn default_transparency() -> bool {
    true
}

fn default_store() -> String {
    "audit.db".into()
}
fn default_signing_key() -> PathBuf {
    "audit-signing.key".into()
}
fn default_subject_key() -> PathBuf {
    "subject-pseudonym.key".into()
}
fn default_checkpoint_interval_ms() -> u64 {
    1000
}
fn default_checkpoint_every() -> u64 {
    4096
}
fn default_append_timeout_ms() -> u64 {
    2000
}
fn default_retention_days() -> u32 {
    // The legal minimum fits an i64 day count trivially.
    tongban_audit::MIN_RETENTION_DAYS as u32
}

/// Why `[audit]` is unusable as written.
#[derive(Debug, thiserror::Error)]
pub enum AuditSettingsError {
    #[error("audit.append_timeout_ms must be positive")]
    ZeroAppendTimeout,
    #[error(
        "audit.retention_days = {days} is below the legal minimum of {minimum} days (Cybersecurity Law art. 21); use 0 to keep everything"
    )]
    RetentionTooShort { days: u32, minimum: i64 },
}

/// Why the configured audit store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenStoreError {
    #[error("audit store: {0}")]
    Postgres(#[source] StoreError),
    #[error("audit store {}: {source}", .path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
}

/// How often the exchange prunes entries past their retention.
pub const RETENTION_SWEEP_EVERY: Duration = Duration::from_secs(24 * 3600);

impl AuditSettings {
    /// Rejects a retention under the legal minimum and a zero append timeout.
    pub fn check(&self) -> Result<(), AuditSettingsError> {
        if self.append_timeout_ms == 0 {
            return Err(AuditSettingsError::ZeroAppendTimeout);
        }
        if self.retention_days != 0
            && i64::from(self.retention_days) < tongban_audit::MIN_RETENTION_DAYS
        {
            return Err(AuditSettingsError::RetentionTooShort {
                days: self.retention_days,
                minimum: tongban_audit::MIN_RETENTION_DAYS,
            });
        }
        Ok(())
    }

    /// The retention period, or None when entries are kept forever.
    pub fn retention(&self) -> Option<chrono::TimeDelta> {
        (self.retention_days > 0).then(|| chrono::TimeDelta::days(i64::from(self.retention_days)))
    }

    pub fn is_postgres(&self) -> bool {
        self.store.starts_with("postgres://") || self.store.starts_with("postgresql://")
    }

    /// Makes relative file paths relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.signing_key);
        fix(&mut self.subject_key);
        if !self.is_postgres() {
            let path = PathBuf::from(self.store.strip_prefix("sqlite://").unwrap_or(&self.store));
            if path.is_relative() {
                self.store = base.join(path).display().to_string();
            }
        }
    }

    /// Opens the configured store.
    pub async fn open_store(&self) -> Result<Arc<dyn AuditStore>, OpenStoreError> {
        if self.is_postgres() {
            let store = PostgresStore::connect(&self.store, self.postgres_schema.as_deref())
                .await
                .map_err(OpenStoreError::Postgres)?;
            Ok(Arc::new(store))
        } else {
            let path = Path::new(self.store.strip_prefix("sqlite://").unwrap_or(&self.store));
            let store = SqliteStore::open(path)
                .await
                .map_err(|source| OpenStoreError::Sqlite {
                    path: path.to_path_buf(),
                    source,
                })?;
            Ok(Arc::new(store))
        }
    }

    /// The subject pseudonymiser, creating its key file (0600) if absent.
    /// Start-up opens the log first ([`open_log_and_store`](Self::open_log_and_store)),
    /// which refuses a missing key for a log that already holds entries.
    pub fn pseudonymizer(&self) -> Result<SubjectPseudonymizer, SubjectKeyError> {
        load_or_create_subject_key(&self.subject_key)
    }

    /// Opens this node's log: store, signing key (created if absent) and
    /// writer.
    pub async fn open_log(&self, node: &str) -> Result<AuditLog, AuditOpenError> {
        self.open_log_and_store(node).await.map(|(log, _)| log)
    }

    /// [`open_log`](Self::open_log), also returning the store (for
    /// readiness probes). Keys are created only for a fresh log: when the
    /// node's log already holds entries or checkpoints, a missing signing or
    /// subject key stops start-up instead (a new signing key would fork the
    /// log, a new subject key would empty every earlier subject report).
    pub async fn open_log_and_store(
        &self,
        node: &str,
    ) -> Result<(AuditLog, Arc<dyn AuditStore>), AuditOpenError> {
        let store = self.open_store().await?;
        let state = store.log_state(node).await.map_err(AuditError::from)?;
        let has_checkpoint = store
            .latest_checkpoint(node)
            .await
            .map_err(AuditError::from)?
            .is_some();
        if state.size > 0 || has_checkpoint {
            for (key, path) in [
                (KeyRole::Signing, &self.signing_key),
                (KeyRole::Subject, &self.subject_key),
            ] {
                if !path.exists() {
                    return Err(AuditOpenError::MissingKey {
                        key,
                        path: path.clone(),
                        node: node.to_string(),
                        entries: state.size,
                    });
                }
            }
        }
        let origin = origin_for_node(node);
        let signer = LogSigner::load_or_generate(&self.signing_key, &origin).map_err(|source| {
            AuditOpenError::SigningKey {
                path: self.signing_key.clone(),
                source,
            }
        })?;
        let public = self.signing_key.with_extension("pub");
        if !public.exists() {
            let text = format!("{}\n", signer.verifier());
            if let Err(e) = std::fs::write(&public, text) {
                tracing::warn!(path = %public.display(), error = %e, "cannot write the verifier key");
            }
        }
        // Created here, with the signing key, so both exist once the log does.
        let pseudonymizer = load_or_create_subject_key(&self.subject_key)?;
        let mut config = AuditConfig::new(node);
        config.transparency = self.transparency.then(|| pseudonymizer.vrf_public_key());
        config.checkpoint_interval = Duration::from_millis(self.checkpoint_interval_ms.max(1));
        config.checkpoint_every = self.checkpoint_every.max(1);
        config.append_timeout = Duration::from_millis(self.append_timeout_ms.max(1));
        let log = AuditLog::open(store.clone(), signer, config).await?;
        Ok((log, store))
    }
}

/// Which key file [`AuditOpenError::MissingKey`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    Signing,
    Subject,
}

impl std::fmt::Display for KeyRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyRole::Signing => {
                "audit signing key (a new one would fork the log: its checkpoints would no longer verify under the pinned key)"
            }
            KeyRole::Subject => {
                "subject pseudonym key (a new one would make every earlier entry unfindable by person)"
            }
        })
    }
}

/// Why the node's audit log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AuditOpenError {
    #[error(transparent)]
    Store(#[from] OpenStoreError),
    #[error(
        "{key} file {path} is missing, but the audit log of node {node} already holds {entries} entries; restore the key file from backup (refusing to create a new one)"
    )]
    MissingKey {
        key: KeyRole,
        path: PathBuf,
        node: String,
        entries: u64,
    },
    #[error("signing key {path}: {source}")]
    SigningKey {
        path: PathBuf,
        #[source]
        source: tongban_audit::note::NoteError,
    },
    #[error(transparent)]
    SubjectKey(#[from] SubjectKeyError),
    #[error("audit log: {0}")]
    Log(#[from] AuditError),
}

/// Why the subject pseudonym key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum SubjectKeyError {
    #[error("subject key {path}: {source}")]
    Malformed {
        path: PathBuf,
        #[source]
        source: tongban_audit::entry::PseudonymKeyError,
    },
    #[error("cannot read subject key {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create subject key {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads a hex pseudonym key, or writes a fresh random one (mode 0600).
pub fn load_or_create_subject_key(path: &Path) -> Result<SubjectPseudonymizer, SubjectKeyError> {
    let malformed = |source| SubjectKeyError::Malformed {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => SubjectPseudonymizer::from_hex(&text).map_err(malformed),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            let text = hex::encode(key);
            write_secret(path, &format!("{text}\n")).map_err(|source| SubjectKeyError::Create {
                path: path.to_path_buf(),
                source,
            })?;
            tracing::info!(path = %path.display(), "created the subject pseudonym key");
            SubjectPseudonymizer::from_bytes(&key).map_err(malformed)
        }
        Err(source) => Err(SubjectKeyError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_secret(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// Writes pipeline events to a node's audit log.
#[derive(Debug, Clone)]
pub struct AuditLogSink {
    log: AuditLog,
    pseudonymizer: SubjectPseudonymizer,
    store: Option<Arc<dyn AuditStore>>,
    batches: Option<Arc<BatchMetrics>>,
}

/// Turns the log's cumulative counters into batch observations.
#[derive(Debug)]
struct BatchMetrics {
    metrics: Metrics,
    seen: Mutex<AuditStats>,
}

impl BatchMetrics {
    /// Records the batches committed since the last call. Several batches
    /// between two calls are recorded as that many observations of their
    /// mean size and commit time, so counts and sums stay exact.
    fn sample(&self, now: AuditStats) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let batches = now.batches.saturating_sub(seen.batches);
        if batches == 0 {
            return;
        }
        let entries = now.entries_committed.saturating_sub(seen.entries_committed);
        let commit_us = now.total_commit_us.saturating_sub(seen.total_commit_us);
        *seen = now;
        drop(seen);
        // The mean, with the remainder spread one entry each over the first
        // batches, so the recorded sizes add up to the entries exactly.
        let (size, remainder) = (entries / batches, entries % batches);
        let latency = Duration::from_micros(commit_us / batches);
        for i in 0..batches.min(1024) {
            let this = size + u64::from(i < remainder);
            self.metrics
                .record_audit_batch(usize::try_from(this).unwrap_or(usize::MAX), latency);
        }
    }
}

/// The entry that records a call reading the log (an administrator's act, a
/// portal's read of a history): who, when, how it ended, how long it took,
/// its trace and the policy that decided it. The caller of this fills in
/// what was read.
pub(crate) fn read_entry(
    call: &crate::pipeline::Call,
    kind: EntryKind,
    refusal: Option<&ExchangeError>,
) -> AuditEntry {
    let mut entry = AuditEntry::new(kind, call.time);
    entry.caller_org = call.caller.org.to_string();
    entry.caller_unit = call.caller.unit.clone();
    if let Some(e) = refusal {
        entry.outcome_code = e.code() as i32;
        entry.outcome_reason = e.reason().into_owned();
    }
    entry.latency_us = u64::try_from(call.started.elapsed().as_micros()).unwrap_or(u64::MAX);
    entry.trace_id = call.trace.to_string();
    entry.policy_version = call.policy.version().to_owned();
    entry
}

/// Longest a readiness probe of the audit store may take.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl AuditLogSink {
    pub fn new(log: AuditLog, pseudonymizer: SubjectPseudonymizer) -> Self {
        Self {
            log,
            pseudonymizer,
            store: None,
            batches: None,
        }
    }

    /// Probes `store` (the log's store) for readiness.
    pub fn with_store(mut self, store: Arc<dyn AuditStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Records audit batch sizes and commit latencies in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.batches = Some(Arc::new(BatchMetrics {
            metrics,
            seen: Mutex::new(self.log.stats()),
        }));
        self
    }

    pub fn log(&self) -> &AuditLog {
        &self.log
    }

    pub fn pseudonymizer(&self) -> &SubjectPseudonymizer {
        &self.pseudonymizer
    }

    fn entry(&self, event: AuditEvent) -> AuditEntry {
        let kind = match event.kind {
            AuditKind::Lookup => EntryKind::Lookup,
            AuditKind::GatherItem => EntryKind::GatherItem,
            AuditKind::AdminAction => EntryKind::AdminAction,
        };
        let mut entry = AuditEntry::new(kind, event.time);
        entry.caller_org = event.caller.org.to_string();
        entry.caller_unit = event.caller.unit;
        entry.operator = event.operator;
        entry.matter = event.matter;
        entry.case_number = event.case_number;
        entry.evidence_type = event.evidence_type;
        entry.department = event.department;
        entry.subject = event
            .subject
            .map(|s| self.pseudonymizer.pseudonym(&s.pseudonym_input()))
            .unwrap_or_default();
        entry.outcome_code = event.outcome_code;
        entry.outcome_reason = event.outcome_reason;
        entry.latency_us = u64::try_from(event.latency.as_micros()).unwrap_or(u64::MAX);
        entry.trace_id = event.trace_id;
        entry.detail = event.detail;
        if event.outcome_code == 0 {
            entry.released_fields_hash = self.pseudonymizer.released_fields_hash(&event.released);
        }
        entry.policy_version = event.policy_version;
        entry
    }
}

/// The audit entry of a policy that took effect: its version, where it came
/// from, and what it permits that the previous one did not and vice versa
/// (counts first, so they survive the log's bound on `detail`).
fn policy_change_entry(change: PolicyChange) -> AuditEntry {
    let mut entry = AuditEntry::new(EntryKind::PolicyChange, change.time);
    entry.operator = "policy-reload".into();
    entry.policy_version = change.version.clone();
    entry.detail = format!(
        "policy version={} previous={} source={} added={} removed={}; added: {}; removed: {}",
        change.version,
        change.previous.as_deref().unwrap_or("none"),
        change.source,
        change.added.len(),
        change.removed.len(),
        change.added.join(" | "),
        change.removed.join(" | "),
    );
    entry
}

impl AuditSink for AuditLogSink {
    fn record_all(&self, events: Vec<AuditEvent>) -> AuditFuture<'_> {
        let entries: Vec<AuditEntry> = events.into_iter().map(|e| self.entry(e)).collect();
        Box::pin(async move {
            let appended = self.log.append_all(entries).await;
            if let Some(batches) = &self.batches {
                batches.sample(self.log.stats());
            }
            appended
                .into_iter()
                .map(|r| {
                    let receipt = r?;
                    Ok(Some(AuditReceipt {
                        node: receipt.node,
                        index: receipt.index,
                        leaf_hash: receipt.leaf_hash.to_vec(),
                    }))
                })
                .collect()
        })
    }

    fn record_policy_change(&self, change: PolicyChange) -> ProbeFuture<'_> {
        let entry = policy_change_entry(change);
        Box::pin(async move {
            self.log.append(entry).await?;
            Ok(())
        })
    }

    fn probe(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            let Some(store) = &self.store else {
                return Ok(());
            };
            match tokio::time::timeout(STORE_PROBE_TIMEOUT, store.log_state(self.log.node())).await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(AuditSinkError::Store(e)),
                Err(_) => Err(AuditSinkError::ProbeTimeout(STORE_PROBE_TIMEOUT)),
            }
        })
    }
}

/// The log's read side, shared by the `Audit` service and `ProveReceipt`.
#[derive(Debug, Clone)]
pub struct AuditReader {
    sink: AuditLogSink,
    store: Arc<dyn AuditStore>,
}

impl AuditReader {
    pub fn new(sink: AuditLogSink, store: Arc<dyn AuditStore>) -> Self {
        Self { sink, store }
    }

    pub fn store(&self) -> &dyn AuditStore {
        self.store.as_ref()
    }

    pub fn store_arc(&self) -> Arc<dyn AuditStore> {
        self.store.clone()
    }

    /// The node's log (administrators' acts are appended to it).
    pub fn log(&self) -> &AuditLog {
        self.sink.log()
    }

    /// The node's subject pseudonymiser (administrators search by person).
    pub fn pseudonymizer(&self) -> &SubjectPseudonymizer {
        self.sink.pseudonymizer()
    }

    /// An inclusion proof for `receipt`, if `caller` caused that entry.
    /// A receipt of someone else's entry, of a pruned one, of an index past
    /// the end, or with another leaf hash all get the same NOT_FOUND: the
    /// answer reveals nothing about entries that are not the caller's.
    pub async fn prove_own_receipt(
        &self,
        caller: &Caller,
        receipt: &pb::AuditReceipt,
    ) -> Result<pb::InclusionProof, ExchangeError> {
        let not_found = || {
            ExchangeError::Audit(AuditError::NotFound(
                "no entry of yours matches that receipt".into(),
            ))
        };
        let entry = self
            .store
            .entry(&receipt.node, receipt.index)
            .await
            .map_err(|e| ExchangeError::Audit(e.into()))?
            .ok_or_else(not_found)?;
        let own =
            entry.entry.caller_org == caller.org.as_str() && entry.entry.caller_unit == caller.unit;
        if !own || receipt.leaf_hash != entry.leaf_hash {
            return Err(not_found());
        }
        let proof =
            tongban_audit::inclusion_proof(self.store.as_ref(), &receipt.node, receipt.index)
                .await
                .map_err(|e| match e {
                    AuditError::NotFound(_) => not_found(),
                    e => ExchangeError::Audit(e),
                })?;
        Ok(inclusion_to_proto(proof))
    }

    /// An inclusion proof for any entry: for administrators, whose call is
    /// logged before this runs.
    pub(crate) async fn prove_any(
        &self,
        node: &str,
        index: u64,
    ) -> Result<pb::InclusionProof, ExchangeError> {
        if self
            .store
            .entry(node, index)
            .await
            .map_err(|e| ExchangeError::Audit(e.into()))?
            .is_none()
        {
            return Err(ExchangeError::Audit(AuditError::NotFound(format!(
                "no entry {index} in the log of node {node:?}"
            ))));
        }
        let proof = tongban_audit::inclusion_proof(self.store.as_ref(), node, index)
            .await
            .map_err(ExchangeError::Audit)?;
        Ok(inclusion_to_proto(proof))
    }
}

/// Prunes this node's own log past `retention` now and then every `every`.
/// Each prune that deletes anything is authorised by a prune record the
/// writer appends and signs first; other nodes sharing the store prune
/// their own logs.
pub fn spawn_retention(
    log: AuditLog,
    retention: chrono::TimeDelta,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            prune_once(&log, retention, chrono::Utc::now()).await;
        }
    })
}

/// One retention sweep of this node's own log.
pub async fn prune_once(
    log: &AuditLog,
    retention: chrono::TimeDelta,
    now: chrono::DateTime<chrono::Utc>,
) {
    // Retention comes from whole configured days.
    let days = u32::try_from(retention.num_days()).unwrap_or(u32::MAX);
    match log.prune(PruneRequest::retention(days, now)).await {
        Ok(report) if report.deleted > 0 => tracing::info!(
            node = %report.node,
            pruned_before = report.pruned_before,
            deleted = report.deleted,
            record = report.record_index,
            "audit retention sweep pruned entries"
        ),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "audit retention sweep failed"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn retention_below_the_legal_minimum_is_refused() {
        let mut settings = AuditSettings::default();
        assert_eq!(settings.retention_days, 183);
        assert!(settings.check().is_ok());
        settings.retention_days = 30;
        assert!(settings.check().unwrap_err().to_string().contains("183"));
        settings.retention_days = 0;
        assert!(settings.check().is_ok());
        assert_eq!(settings.retention(), None);
        settings.retention_days = 400;
        assert_eq!(settings.retention(), Some(chrono::TimeDelta::days(400)));
    }

    #[test]
    fn the_append_timeout_is_a_positive_setting_of_two_seconds_by_default() {
        let settings: AuditSettings = toml::from_str("").unwrap();
        assert_eq!(settings.append_timeout_ms, 2000);
        let settings: AuditSettings = toml::from_str("append_timeout_ms = 500").unwrap();
        assert_eq!(settings.append_timeout_ms, 500);
        assert!(settings.check().is_ok());
        let settings: AuditSettings = toml::from_str("append_timeout_ms = 0").unwrap();
        assert!(
            settings
                .check()
                .unwrap_err()
                .to_string()
                .contains("append_timeout_ms")
        );
    }

    #[tokio::test]
    async fn released_fields_are_hashed_under_the_node_key() {
        use crate::pipeline::{AuditEvent, AuditKind};
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn AuditStore> =
            Arc::new(SqliteStore::open(&dir.path().join("a.db")).await.unwrap());
        let signer = LogSigner::generate(&origin_for_node("n1")).unwrap();
        let log = AuditLog::open(store.clone(), signer, AuditConfig::new("n1"))
            .await
            .unwrap();
        let key = SubjectPseudonymizer::from_bytes(&[9u8; 32]).unwrap();
        let sink = AuditLogSink::new(log.clone(), key.clone());
        let (_, caller) =
            tongban_core::Caller::parse_reference("org/91350100M000100Y43/unit/bench").unwrap();
        let released = [("marital_status", "married"), ("since", "2019-05-01")];
        let event = AuditEvent {
            time: chrono::Utc::now(),
            kind: AuditKind::Lookup,
            caller,
            matter: "marriage-registration".into(),
            case_number: "XQ-1".into(),
            operator: "clerk-he".into(),
            evidence_type: "civil.marriage".into(),
            department: "civil".into(),
            subject: Some(tongban_core::SubjectId::Person(
                tongban_core::IdNumber::parse("510403198507220465").unwrap(),
            )),
            outcome_code: 0,
            outcome_reason: String::new(),
            latency: Duration::from_millis(3),
            trace_id: String::new(),
            released: released
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            policy_version: "0123456789abcdef".into(),
            detail: String::new(),
        };
        let receipt = sink
            .record_all(vec![event])
            .await
            .remove(0)
            .unwrap()
            .unwrap();
        let stored = store
            .entry("n1", receipt.index)
            .await
            .unwrap()
            .unwrap()
            .entry;
        assert_eq!(
            stored.released_fields_hash,
            key.released_fields_hash(&released)
        );
        let other = SubjectPseudonymizer::from_bytes(&[8u8; 32]).unwrap();
        assert_ne!(
            stored.released_fields_hash,
            other.released_fields_hash(&released)
        );
        assert_eq!(stored.policy_version, "0123456789abcdef");
        log.shutdown().await.unwrap();
    }

    /// Two nodes sharing one store, each with 5 entries 200 days old and a
    /// fresh one.
    async fn two_nodes_with_old_entries(
        dir: &Path,
    ) -> (
        Arc<dyn AuditStore>,
        AuditLog,
        AuditLog,
        tongban_audit::Keyring,
    ) {
        let store: Arc<dyn AuditStore> =
            Arc::new(SqliteStore::open(&dir.join("a.db")).await.unwrap());
        let mut keyring = tongban_audit::Keyring::new();
        let mut logs = Vec::new();
        for node in ["n1", "n2"] {
            let signer = LogSigner::generate(&origin_for_node(node)).unwrap();
            keyring.add(signer.verifier());
            let log = AuditLog::open(store.clone(), signer, AuditConfig::new(node))
                .await
                .unwrap();
            let old = chrono::Utc::now() - chrono::TimeDelta::days(200);
            for _ in 0..5 {
                log.append(AuditEntry::new(EntryKind::Lookup, old))
                    .await
                    .unwrap();
            }
            log.append(AuditEntry::new(EntryKind::Lookup, chrono::Utc::now()))
                .await
                .unwrap();
            log.flush().await.unwrap();
            logs.push(log);
        }
        let n2 = logs.pop().unwrap();
        let n1 = logs.pop().unwrap();
        (store, n1, n2, keyring)
    }

    async fn verify_all(store: &dyn AuditStore, keyring: &tongban_audit::Keyring) {
        let report = tongban_audit::verify(store, keyring, &Default::default(), &mut |_| {})
            .await
            .unwrap();
        assert!(
            report.is_ok(),
            "{}",
            report
                .findings
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    #[tokio::test]
    async fn the_sweep_records_then_prunes_only_its_own_node() {
        let dir = tempfile::tempdir().unwrap();
        let (store, n1, n2, keyring) = two_nodes_with_old_entries(dir.path()).await;
        let now = chrono::Utc::now();
        prune_once(&n1, chrono::TimeDelta::days(183), now).await;

        assert_eq!(store.log_state("n1").await.unwrap().pruned_before, 5);
        // The other node's log is its own writer's business.
        let other = store.log_state("n2").await.unwrap();
        assert_eq!((other.pruned_before, other.size), (0, 6));
        assert!(store.entry("n2", 0).await.unwrap().is_some());
        // The record sits after the pruned entries, names the boundary, and
        // a signed checkpoint already covers it (it was signed before the delete).
        let record = store.entry("n1", 6).await.unwrap().unwrap().entry;
        assert_eq!(record.kind, EntryKind::Prune);
        assert_eq!(record.operator, "retention");
        let parsed = tongban_audit::PruneRecord::parse(&record.detail).unwrap();
        assert_eq!(parsed.before_index, 5);
        assert_eq!(parsed.older_than_days, 183);
        assert_eq!(
            parsed.cutoff,
            tongban_audit::entry::truncate_to_micros(now - chrono::TimeDelta::days(183))
        );
        assert_eq!(
            store
                .latest_checkpoint("n1")
                .await
                .unwrap()
                .unwrap()
                .tree_size,
            7
        );
        verify_all(store.as_ref(), &keyring).await;

        // A second sweep finds nothing more and records nothing.
        prune_once(&n1, chrono::TimeDelta::days(183), chrono::Utc::now()).await;
        n1.flush().await.unwrap();
        assert_eq!(store.log_state("n1").await.unwrap().size, 7);
        n1.shutdown().await.unwrap();
        n2.shutdown().await.unwrap();
    }

    fn settings_in(dir: &Path) -> AuditSettings {
        let mut settings = AuditSettings::default();
        settings.resolve_paths(dir);
        settings
    }

    #[tokio::test]
    async fn a_missing_key_stops_start_up_once_the_log_holds_entries() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings_in(dir.path());
        // A fresh log creates both keys.
        let (log, _) = settings.open_log_and_store("n1").await.unwrap();
        assert!(settings.signing_key.exists() && settings.subject_key.exists());
        log.append(AuditEntry::new(EntryKind::Lookup, chrono::Utc::now()))
            .await
            .unwrap();
        log.shutdown().await.unwrap();
        let subject = std::fs::read(&settings.subject_key).unwrap();
        let signing = std::fs::read(&settings.signing_key).unwrap();

        for (path, role) in [
            (&settings.subject_key, KeyRole::Subject),
            (&settings.signing_key, KeyRole::Signing),
        ] {
            std::fs::remove_file(path).unwrap();
            let err = settings.open_log_and_store("n1").await.unwrap_err();
            assert!(
                matches!(&err, AuditOpenError::MissingKey { key, entries: 1, node, .. } if *key == role && node == "n1"),
                "{err:?}"
            );
            let message = err.to_string();
            for words in [
                path.display().to_string(),
                "already holds 1 entries".into(),
                "restore the key file from backup".into(),
            ] {
                assert!(message.contains(&words), "{message}");
            }
            // Nothing was created in its place.
            assert!(!path.exists());
            std::fs::write(&settings.subject_key, &subject).unwrap();
            std::fs::write(&settings.signing_key, &signing).unwrap();
        }
        // Another signing key in its place is refused too.
        std::fs::remove_file(&settings.signing_key).unwrap();
        let other = LogSigner::generate(&origin_for_node("n1")).unwrap();
        std::fs::write(&settings.signing_key, other.to_note_private_key()).unwrap();
        let err = settings.open_log_and_store("n1").await.unwrap_err();
        assert!(
            err.to_string()
                .contains("does not continue the log of node n1"),
            "{err}"
        );
        std::fs::write(&settings.signing_key, &signing).unwrap();
        let (log, _) = settings.open_log_and_store("n1").await.unwrap();
        log.shutdown().await.unwrap();
    }
}
