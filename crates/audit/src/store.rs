//! Storage behind [`AuditStore`], with SQLite and PostgreSQL backends.
//!
//! All SQL of the crate lives in this module and its two backend submodules.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::entry::{AuditEntry, EntryKind};
use crate::map::{MapNode, MapPath, MapValue};
use crate::merkle::{Hash, NodeId};

pub mod postgres;
pub mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Errors from a storage backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("another writer holds the audit log of node {node:?}: {detail}")]
    NodeLocked { node: String, detail: String },
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "cannot add a cosignature to the checkpoint of node {node:?} at size {tree_size}: {detail}"
    )]
    Cosignature {
        node: String,
        tree_size: u64,
        detail: String,
    },
}

/// A boxed future, so the trait stays object safe (`Arc<dyn AuditStore>`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// An entry as stored: its position and leaf hash with the fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedEntry {
    pub index: u64,
    #[serde(with = "hex_hash")]
    pub leaf_hash: Hash,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

pub(crate) mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(h))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("hash must be 32 bytes"))
    }
}

/// A stored signed checkpoint. `tree_size`/`root` are unsigned row copies;
/// verification trusts only the signed `note`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub tree_size: u64,
    pub root: Hash,
    pub time: DateTime<Utc>,
    pub note: String,
}

/// The chain state of a subject after its last pruned entry: retained
/// entries chain on from `link(head_before_last, last_index, last_leaf)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrunedChain {
    /// Pruned entries about the subject.
    pub count: u64,
    pub head_before_last: Hash,
    pub last_index: u64,
    pub last_leaf: Hash,
}

impl PrunedChain {
    /// The chain state after the last pruned entry.
    pub fn value(&self) -> MapValue {
        let mut value = MapValue {
            count: self.count.saturating_sub(1),
            head: self.head_before_last,
        };
        value.extend(self.last_index, &self.last_leaf);
        value
    }
}

/// What a checkpoint changes in the subject map, stored with it.
#[derive(Debug, Clone, Default)]
pub struct MapWrite {
    /// New leaf values (count and chain head) by subject key.
    pub leaves: Vec<([u8; 32], MapValue)>,
    pub upserts: Vec<MapNode>,
    pub deletes: Vec<MapPath>,
}

/// One subject's part of the map at the node's latest checkpoint, read in
/// one snapshot so the proof and the checkpoint always agree.
#[derive(Debug, Clone, Default)]
pub struct SubjectSnapshot {
    pub checkpoint: Option<StoredCheckpoint>,
    /// The map's internal nodes on the subject key's path.
    pub path_nodes: Vec<MapNode>,
    /// The subject's map value, when it has entries.
    pub value: Option<MapValue>,
    /// The map's only leaf, when it holds exactly one (then it has no
    /// internal node).
    pub single_leaf: Option<([u8; 32], MapValue)>,
    /// Where the subject's path ends when it ends at another subject's
    /// leaf (an absence proof shows that leaf): its key and value.
    pub terminal_leaf: Option<([u8; 32], MapValue)>,
    /// The subject's pruned chain, when some of its entries were pruned.
    pub pruned: Option<PrunedChain>,
    pub pruned_before: u64,
    /// The first of the subject's retained entries below the checkpoint's
    /// size, ascending (as many as asked for).
    pub entries: Vec<LoggedEntry>,
}

/// What the store knows about one node's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogState {
    /// Next index to assign.
    pub size: u64,
    /// Entries below this index have been pruned.
    pub pruned_before: u64,
}

/// Filters for administrators' searches. `None`/empty means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchFilter {
    pub node: Option<String>,
    /// Inclusive lower bound.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub to: Option<DateTime<Utc>>,
    pub kind: Option<EntryKind>,
    pub caller_org: Option<String>,
    pub caller_unit: Option<String>,
    pub operator: Option<String>,
    pub department: Option<String>,
    pub evidence_type: Option<String>,
    pub matter: Option<String>,
    pub case_number: Option<String>,
    pub outcome_code: Option<i32>,
    /// Subject pseudonym (never an identity number).
    pub subject: Option<String>,
}

/// Position in the newest-first order: (time, node, index), exclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub time_us: i64,
    pub node: String,
    pub index: u64,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.time_us, self.index, self.node)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut it = s.splitn(3, ':');
        let (Some(t), Some(i), Some(n)) = (it.next(), it.next(), it.next()) else {
            return Err(format!("bad cursor {s:?}"));
        };
        Ok(Cursor {
            time_us: t.parse().map_err(|_| format!("bad cursor {s:?}"))?,
            index: i.parse().map_err(|_| format!("bad cursor {s:?}"))?,
            node: n.to_string(),
        })
    }
}

/// Something that holds a writer lock and can give it back.
pub trait LeaseGuard: Send + Sync {
    /// Releases the lock now (dropping also releases it, possibly later).
    fn release(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

impl LeaseGuard for () {
    fn release(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async {})
    }
}

impl LeaseGuard for std::fs::File {
    fn release(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let _ = self.unlock();
        Box::pin(async {})
    }
}

/// A held writer lease for one node; dropping it releases the lease.
pub struct WriterLease {
    guard: Box<dyn LeaseGuard>,
}

impl std::fmt::Debug for WriterLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriterLease")
    }
}

impl WriterLease {
    pub fn new(guard: Box<dyn LeaseGuard>) -> Self {
        Self { guard }
    }
    pub async fn release(self) {
        self.guard.release().await
    }
}

/// Durable storage of audit logs. Implementations keep every batch atomic.
pub trait AuditStore: Send + Sync + std::fmt::Debug {
    /// "sqlite" or "postgres".
    fn backend(&self) -> &'static str;
    /// Exclusive writer lease for `node`; fails if another live writer holds it.
    fn lock_writer<'a>(&'a self, node: &'a str) -> StoreFuture<'a, WriterLease>;
    /// Registers the node's log if new.
    fn ensure_log<'a>(&'a self, node: &'a str) -> StoreFuture<'a, ()>;
    fn log_state<'a>(&'a self, node: &'a str) -> StoreFuture<'a, LogState>;
    /// Every node with a log, entries or checkpoints in the store.
    fn list_nodes(&self) -> StoreFuture<'_, Vec<String>>;
    /// Inserts entries and the tree nodes they complete in one transaction.
    fn append_batch<'a>(
        &'a self,
        node: &'a str,
        entries: &'a [LoggedEntry],
        tree_nodes: &'a [(NodeId, Hash)],
    ) -> StoreFuture<'a, ()>;
    /// Stored hashes for the ids (level 0 from leaf hashes or kept leaves).
    fn get_nodes<'a>(
        &'a self,
        node: &'a str,
        ids: &'a [NodeId],
    ) -> StoreFuture<'a, HashMap<NodeId, Hash>>;
    /// Stored tree nodes of one level with `from <= index <= to`.
    fn tree_nodes_range<'a>(
        &'a self,
        node: &'a str,
        level: u32,
        from: u64,
        to: u64,
    ) -> StoreFuture<'a, Vec<(u64, Hash)>>;
    fn put_checkpoint<'a>(&'a self, node: &'a str, cp: &'a StoredCheckpoint)
    -> StoreFuture<'a, ()>;
    /// All checkpoints by increasing tree size.
    fn checkpoints<'a>(&'a self, node: &'a str) -> StoreFuture<'a, Vec<StoredCheckpoint>>;
    fn latest_checkpoint<'a>(&'a self, node: &'a str) -> StoreFuture<'a, Option<StoredCheckpoint>>;
    /// How many checkpoints `node` has. (The default reads them all; the
    /// SQL stores count.)
    fn checkpoint_count<'a>(&'a self, node: &'a str) -> StoreFuture<'a, u64> {
        Box::pin(async move { Ok(self.checkpoints(node).await?.len() as u64) })
    }
    /// Up to `limit` checkpoints with a tree size below `below` (any when
    /// `None`), newest first: one page of them. (The default reads them
    /// all; the SQL stores read only the page.)
    fn checkpoints_page<'a>(
        &'a self,
        node: &'a str,
        below: Option<u64>,
        limit: u32,
    ) -> StoreFuture<'a, Vec<StoredCheckpoint>> {
        Box::pin(async move {
            let all = self.checkpoints(node).await?;
            Ok(all
                .into_iter()
                .rev()
                .filter(|cp| below.is_none_or(|b| cp.tree_size < b))
                .take(limit as usize)
                .collect())
        })
    }
    /// Appends a cosignature `line` (a note signature line, no newline) to
    /// the signed note of `node`'s checkpoint at `tree_size`, unless the
    /// note already carries it. Atomic (a compare-and-swap on the note, so
    /// concurrent adders never lose a line) and idempotent; returns whether
    /// the line was added. The note stays a valid signed note: the line goes
    /// after its last signature line. Whether the cosignature is valid is
    /// the caller's to check.
    fn add_cosignature<'a>(
        &'a self,
        node: &'a str,
        tree_size: u64,
        line: &'a str,
    ) -> StoreFuture<'a, bool>;
    /// Up to `limit` entries with index >= `from`, ascending.
    fn scan<'a>(
        &'a self,
        node: &'a str,
        from: u64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<LoggedEntry>>;
    fn entry<'a>(&'a self, node: &'a str, index: u64) -> StoreFuture<'a, Option<LoggedEntry>>;
    /// Newest first, strictly after `after`.
    fn search<'a>(
        &'a self,
        filter: &'a SearchFilter,
        after: Option<&'a Cursor>,
        limit: u32,
    ) -> StoreFuture<'a, Vec<LoggedEntry>>;
    /// Smallest retained index whose time is >= `cutoff_us` (or the log size).
    fn prune_cut<'a>(&'a self, node: &'a str, cutoff_us: i64) -> StoreFuture<'a, u64>;
    /// Atomically keeps `keep` tree nodes, deletes entries below `cut`, and
    /// records the new first retained index. Returns the rows deleted.
    /// ... and records, in the same transaction, the subjects' new pruned
    /// chains.
    fn prune_below<'a>(
        &'a self,
        node: &'a str,
        cut: u64,
        keep: &'a [(NodeId, Hash)],
        pruned: &'a [([u8; 32], PrunedChain)],
    ) -> StoreFuture<'a, u64>;
    /// Stores a checkpoint and the map changes it commits to, atomically.
    fn put_checkpoint_with_map<'a>(
        &'a self,
        node: &'a str,
        cp: &'a StoredCheckpoint,
        map: &'a MapWrite,
    ) -> StoreFuture<'a, ()>;
    /// The map's leaf values for `subjects` (those that have one).
    fn map_leaves<'a>(
        &'a self,
        node: &'a str,
        subjects: &'a [[u8; 32]],
    ) -> StoreFuture<'a, HashMap<[u8; 32], MapValue>>;
    /// The map's internal nodes at `paths` (those that exist).
    fn map_nodes<'a>(
        &'a self,
        node: &'a str,
        paths: &'a [MapPath],
    ) -> StoreFuture<'a, Vec<MapNode>>;
    /// The map's only leaf, when it holds exactly one.
    fn map_single_leaf<'a>(
        &'a self,
        node: &'a str,
    ) -> StoreFuture<'a, Option<([u8; 32], MapValue)>>;
    /// The subjects' pruned chains (those that have one).
    fn pruned_chains<'a>(
        &'a self,
        node: &'a str,
        subjects: &'a [[u8; 32]],
    ) -> StoreFuture<'a, HashMap<[u8; 32], PrunedChain>>;
    /// Up to `limit` subjects' pruned chains with keys after `after`, in key
    /// order: `verify` pages through all of them, since a subject whose
    /// entries were all pruned stays in the map with no entry to name it.
    fn pruned_chains_page<'a>(
        &'a self,
        node: &'a str,
        after: Option<&'a [u8; 32]>,
        limit: u32,
    ) -> StoreFuture<'a, Vec<([u8; 32], PrunedChain)>>;
    /// Reads, in one snapshot, the latest checkpoint and the subject's part
    /// of the map under it (`paths`: the internal nodes on its key's path).
    fn subject_snapshot<'a>(
        &'a self,
        node: &'a str,
        subject: &'a [u8; 32],
        paths: &'a [MapPath],
        entries_limit: u32,
    ) -> StoreFuture<'a, SubjectSnapshot>;
    /// Forgets the node's subject map (to rebuild it from the log); keeps
    /// the pruned chains, from which the rebuilt map starts.
    fn map_reset<'a>(&'a self, node: &'a str) -> StoreFuture<'a, ()>;
    /// Up to `limit` entries about `subject` (its hex pseudonym) with
    /// `from <= index < below`, ascending.
    fn subject_entries<'a>(
        &'a self,
        node: &'a str,
        subject: &'a str,
        from: u64,
        below: u64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<LoggedEntry>>;
    /// Records that an administrator disclosed a sealed entry early.
    fn put_unsealed<'a>(
        &'a self,
        node: &'a str,
        index: u64,
        time: DateTime<Utc>,
    ) -> StoreFuture<'a, ()>;
    /// Which of `indexes` were disclosed early.
    fn unsealed<'a>(
        &'a self,
        node: &'a str,
        indexes: &'a [u64],
    ) -> StoreFuture<'a, std::collections::HashSet<u64>>;
}

/// Attempts at swapping a note before giving up: each failed one means
/// another writer changed the note in between, so this bounds only a storm.
const COSIGN_ATTEMPTS: usize = 16;

/// The note with `line` appended, or `None` if it already carries it.
fn note_with_cosignature(
    node: &str,
    tree_size: u64,
    note: &str,
    line: &str,
) -> Result<Option<String>, StoreError> {
    let err = |detail: &str| StoreError::Cosignature {
        node: node.to_string(),
        tree_size,
        detail: detail.to_string(),
    };
    let well_formed = line
        .strip_prefix("\u{2014} ")
        .and_then(|rest| rest.split_once(' '))
        .is_some_and(|(name, sig)| !name.is_empty() && !sig.is_empty() && !sig.contains(' '));
    if !well_formed || line.contains(['\n', '\r']) {
        return Err(err("not a note signature line"));
    }
    let Some(split) = note.rfind("\n\n") else {
        return Err(err("stored note has no signature lines"));
    };
    if !note.ends_with('\n') {
        return Err(err("stored note does not end in a newline"));
    }
    if note[split + 2..].lines().any(|l| l == line) {
        return Ok(None);
    }
    Ok(Some(format!("{note}{line}\n")))
}

pub(crate) fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("value {v} exceeds i64")))
}

pub(crate) fn to_u64(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative value {v}")))
}

pub(crate) fn to_hash(v: Vec<u8>) -> Result<Hash, StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt("hash is not 32 bytes".into()))
}

pub(crate) const ENTRY_COLUMNS: &str = "node, idx, time_us, kind, caller_org, caller_unit, operator, matter, case_number, evidence_type, department, subject, outcome_code, outcome_reason, latency_us, trace_id, released_fields_hash, detail, policy_version, encoding, leaf_hash";

/// SQL shared by both backends (placeholders via `$n`, which SQLite accepts).
macro_rules! impl_common_store {
    ($store:ty, $db:ty) => {
        fn row_to_entry(row: &<$db as sqlx::Database>::Row) -> Result<LoggedEntry, StoreError> {
            use sqlx::Row;
            let kind: String = row.try_get("kind")?;
            let entry = AuditEntry {
                time: crate::entry::micros_to_time(row.try_get("time_us")?),
                node: row.try_get("node")?,
                kind: kind.parse().map_err(StoreError::Corrupt)?,
                caller_org: row.try_get("caller_org")?,
                caller_unit: row.try_get("caller_unit")?,
                operator: row.try_get("operator")?,
                matter: row.try_get("matter")?,
                case_number: row.try_get("case_number")?,
                evidence_type: row.try_get("evidence_type")?,
                department: row.try_get("department")?,
                subject: row.try_get("subject")?,
                outcome_code: row.try_get("outcome_code")?,
                outcome_reason: row.try_get("outcome_reason")?,
                latency_us: to_u64(row.try_get("latency_us")?)?,
                trace_id: row.try_get("trace_id")?,
                released_fields_hash: row.try_get("released_fields_hash")?,
                detail: row.try_get("detail")?,
                policy_version: row.try_get("policy_version")?,
                encoding: u8::try_from(row.try_get::<i32, _>("encoding")?).map_err(|_| {
                    StoreError::Corrupt("entry encoding out of range".into())
                })?,
            };
            Ok(LoggedEntry {
                index: to_u64(row.try_get("idx")?)?,
                leaf_hash: to_hash(row.try_get("leaf_hash")?)?,
                entry,
            })
        }

        fn row_to_checkpoint(
            row: &<$db as sqlx::Database>::Row,
        ) -> Result<StoredCheckpoint, StoreError> {
            use sqlx::Row;
            Ok(StoredCheckpoint {
                tree_size: to_u64(row.try_get("tree_size")?)?,
                root: to_hash(row.try_get("root")?)?,
                time: crate::entry::micros_to_time(row.try_get("time_us")?),
                note: row.try_get("note")?,
            })
        }

        /// Appends `INSERT INTO audit_entries ... VALUES ...` for `chunk` to `qb`.
        fn push_entry_insert(
            qb: &mut sqlx::QueryBuilder<$db>,
            node: &str,
            chunk: &[LoggedEntry],
        ) -> Result<(), StoreError> {
            qb.push(format_args!("INSERT INTO audit_entries ({ENTRY_COLUMNS}) "));
            let mut bad = None;
            qb.push_values(chunk, |mut b, e| {
                let idx = to_i64(e.index).unwrap_or_else(|err| {
                    bad = Some(err);
                    0
                });
                let lat = to_i64(e.entry.latency_us).unwrap_or(i64::MAX);
                b.push_bind(node.to_string())
                    .push_bind(idx)
                    .push_bind(e.entry.time.timestamp_micros())
                    .push_bind(e.entry.kind.as_str())
                    .push_bind(e.entry.caller_org.clone())
                    .push_bind(e.entry.caller_unit.clone())
                    .push_bind(e.entry.operator.clone())
                    .push_bind(e.entry.matter.clone())
                    .push_bind(e.entry.case_number.clone())
                    .push_bind(e.entry.evidence_type.clone())
                    .push_bind(e.entry.department.clone())
                    .push_bind(e.entry.subject.clone())
                    .push_bind(e.entry.outcome_code)
                    .push_bind(e.entry.outcome_reason.clone())
                    .push_bind(lat)
                    .push_bind(e.entry.trace_id.clone())
                    .push_bind(e.entry.released_fields_hash.clone())
                    .push_bind(e.entry.detail.clone())
                    .push_bind(e.entry.policy_version.clone())
                    .push_bind(i32::from(e.entry.encoding))
                    .push_bind(e.leaf_hash.to_vec());
            });
            match bad {
                Some(err) => Err(err),
                None => Ok(()),
            }
        }

        /// Appends `INSERT INTO audit_tree_nodes ... VALUES ...` for `chunk` to `qb`.
        fn push_tree_insert(
            qb: &mut sqlx::QueryBuilder<$db>,
            node: &str,
            chunk: &[(NodeId, Hash)],
        ) -> Result<(), StoreError> {
            qb.push("INSERT INTO audit_tree_nodes (node, level, idx, hash) ");
            let mut bad = None;
            qb.push_values(chunk, |mut b, (id, h)| {
                let idx = to_i64(id.index).unwrap_or_else(|err| {
                    bad = Some(err);
                    0
                });
                b.push_bind(node.to_string())
                    .push_bind(id.level as i32)
                    .push_bind(idx)
                    .push_bind(h.to_vec());
            });
            match bad {
                Some(err) => Err(err),
                None => Ok(()),
            }
        }

        /// Rows per INSERT: 21 binds per entry row keeps a statement under
        /// SQLite's 32766-parameter limit (and PostgreSQL's 65535).
        const ENTRY_CHUNK: usize = 1000;
        const TREE_CHUNK: usize = 4000;

        /// Rows or keys per map statement.
        const MAP_CHUNK: usize = 2000;

        fn row_to_map_leaf(
            row: &<$db as sqlx::Database>::Row,
        ) -> Result<([u8; 32], MapValue), StoreError> {
            use sqlx::Row;
            Ok((
                to_hash(row.try_get("subject")?)?,
                MapValue {
                    count: to_u64(row.try_get("count")?)?,
                    head: to_hash(row.try_get("head")?)?,
                },
            ))
        }

        fn row_to_pruned(
            row: &<$db as sqlx::Database>::Row,
        ) -> Result<([u8; 32], PrunedChain), StoreError> {
            use sqlx::Row;
            Ok((
                to_hash(row.try_get("subject")?)?,
                PrunedChain {
                    count: to_u64(row.try_get("count")?)?,
                    head_before_last: to_hash(row.try_get("head_before_last")?)?,
                    last_index: to_u64(row.try_get("last_idx")?)?,
                    last_leaf: to_hash(row.try_get("last_leaf")?)?,
                },
            ))
        }

        fn row_to_map_node(row: &<$db as sqlx::Database>::Row) -> Result<MapNode, StoreError> {
            use sqlx::Row;
            let leaf = |v: Option<Vec<u8>>| v.map(to_hash).transpose();
            let path: Vec<u8> = row.try_get("path")?;
            Ok(MapNode {
                path: MapPath::decode(&path)
                    .map_err(|e| StoreError::Corrupt(format!("map node path: {e}")))?,
                left: crate::map::MapChild {
                    hash: to_hash(row.try_get("left_hash")?)?,
                    leaf_key: leaf(row.try_get("left_leaf")?)?,
                },
                right: crate::map::MapChild {
                    hash: to_hash(row.try_get("right_hash")?)?,
                    leaf_key: leaf(row.try_get("right_leaf")?)?,
                },
            })
        }

        /// The rows of `select` (which ends in `WHERE node = `) for `node`
        /// whose subject is one of `subjects`, a chunk at a time.
        async fn rows_for_subjects(
            pool: &sqlx::Pool<$db>,
            select: &'static str,
            node: &str,
            subjects: &[[u8; 32]],
        ) -> Result<Vec<<$db as sqlx::Database>::Row>, StoreError> {
            let mut rows = Vec::with_capacity(subjects.len());
            for chunk in subjects.chunks(MAP_CHUNK) {
                let mut qb = sqlx::QueryBuilder::<$db>::new(select);
                qb.push_bind(node.to_string()).push(" AND subject IN (");
                let mut keys = qb.separated(", ");
                for k in chunk {
                    keys.push_bind(k.to_vec());
                }
                qb.push(")");
                rows.extend(qb.build().persistent(false).fetch_all(pool).await?);
            }
            Ok(rows)
        }

        /// Up to `limit` entries about `subject` (hex) with `from <= index <
        /// below`, ascending. The subject index finds a person's few
        /// entries (the query repeats its partial-index term, so planners
        /// use it with a bound subject); they are sorted after.
        async fn select_subject_entries<'e, E>(
            executor: E,
            node: &str,
            subject: &str,
            from: u64,
            below: u64,
            limit: u32,
        ) -> Result<Vec<LoggedEntry>, StoreError>
        where
            E: sqlx::Executor<'e, Database = $db>,
        {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {ENTRY_COLUMNS} FROM {} WHERE subject = $1 AND subject <> '' AND node = $2 AND idx >= $3 AND idx < $4 ORDER BY idx LIMIT $5",
                <$store>::ENTRIES_BY_SUBJECT
            )))
            .bind(subject.to_owned())
            .bind(node.to_owned())
            .bind(to_i64(from)?)
            .bind(to_i64(below)?)
            .bind(i64::from(limit))
            .fetch_all(executor)
            .await?;
            rows.iter().map(row_to_entry).collect()
        }

        async fn select_map_nodes<'e, E>(
            executor: E,
            node: &str,
            paths: &[MapPath],
        ) -> Result<Vec<MapNode>, StoreError>
        where
            E: sqlx::Executor<'e, Database = $db>,
        {
            if paths.is_empty() {
                return Ok(Vec::new());
            }
            let mut qb = sqlx::QueryBuilder::<$db>::new(
                "SELECT path, left_hash, left_leaf, right_hash, right_leaf FROM audit_map_nodes WHERE node = ",
            );
            qb.push_bind(node.to_string()).push(" AND path IN (");
            let mut list = qb.separated(", ");
            for p in paths {
                list.push_bind(p.encode());
            }
            qb.push(")");
            let rows = qb.build().persistent(false).fetch_all(executor).await?;
            rows.iter().map(row_to_map_node).collect()
        }

        impl AuditStore for $store {
            fn backend(&self) -> &'static str {
                Self::BACKEND
            }

            fn lock_writer<'a>(&'a self, node: &'a str) -> StoreFuture<'a, WriterLease> {
                Box::pin(self.lock_writer_impl(node))
            }

            fn ensure_log<'a>(&'a self, node: &'a str) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO audit_logs (node, pruned_before, created_us) VALUES ($1, 0, $2) ON CONFLICT (node) DO NOTHING",
                    )
                    .bind(node)
                    .bind(Utc::now().timestamp_micros())
                    .execute(self.writes())
                    .await?;
                    Ok(())
                })
            }

            fn log_state<'a>(&'a self, node: &'a str) -> StoreFuture<'a, LogState> {
                Box::pin(async move {
                    use sqlx::Row;
                    let pruned: Option<i64> =
                        sqlx::query("SELECT pruned_before FROM audit_logs WHERE node = $1")
                            .bind(node)
                            .fetch_optional(&self.pool)
                            .await?
                            .map(|r| r.try_get(0))
                            .transpose()?;
                    let max: Option<i64> =
                        sqlx::query("SELECT MAX(idx) FROM audit_entries WHERE node = $1")
                            .bind(node)
                            .fetch_one(&self.pool)
                            .await?
                            .try_get(0)?;
                    let pruned_before = to_u64(pruned.unwrap_or(0))?;
                    let size = match max {
                        Some(m) => to_u64(m)? + 1,
                        None => 0,
                    }
                    .max(pruned_before);
                    Ok(LogState { size, pruned_before })
                }.instrument(tracing::debug_span!("audit_store.log_state", backend = Self::BACKEND, node)))
            }

            fn list_nodes(&self) -> StoreFuture<'_, Vec<String>> {
                Box::pin(async move {
                    use sqlx::Row;
                    let rows = sqlx::query(
                        "SELECT node FROM audit_logs UNION SELECT DISTINCT node FROM audit_checkpoints UNION SELECT DISTINCT node FROM audit_entries ORDER BY 1",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
                        .collect()
                })
            }

            fn append_batch<'a>(
                &'a self,
                node: &'a str,
                entries: &'a [LoggedEntry],
                tree_nodes: &'a [(NodeId, Hash)],
            ) -> StoreFuture<'a, ()> {
                Box::pin(self.append_batch_impl(node, entries, tree_nodes).instrument(
                    tracing::debug_span!("audit_store.append_batch", backend = Self::BACKEND, node, entries = entries.len()),
                ))
            }

            fn get_nodes<'a>(
                &'a self,
                node: &'a str,
                ids: &'a [NodeId],
            ) -> StoreFuture<'a, HashMap<NodeId, Hash>> {
                Box::pin(async move {
                    use sqlx::Row;
                    let mut out = HashMap::new();
                    for chunk in ids.chunks(400) {
                        // Each term names the whole primary key: with `node`
                        // outside the OR, SQLite scanned the node's whole
                        // tree (seconds at a million entries) instead of
                        // one lookup per term.
                        let mut qb = sqlx::QueryBuilder::<$db>::new(
                            "SELECT level, idx, hash FROM audit_tree_nodes WHERE ",
                        );
                        for (i, id) in chunk.iter().enumerate() {
                            if i > 0 {
                                qb.push(" OR ");
                            }
                            qb.push("(node = ")
                                .push_bind(node.to_string())
                                .push(" AND level = ")
                                .push_bind(id.level as i32)
                                .push(" AND idx = ")
                                .push_bind(to_i64(id.index)?)
                                .push(")");
                        }
                        for row in qb.build().fetch_all(&self.pool).await? {
                            let level: i32 = row.try_get(0)?;
                            let id = NodeId::new(
                                u32::try_from(level)
                                    .map_err(|_| StoreError::Corrupt("negative level".into()))?,
                                to_u64(row.try_get(1)?)?,
                            );
                            out.insert(id, to_hash(row.try_get(2)?)?);
                        }
                        let leaves: Vec<&NodeId> = chunk.iter().filter(|id| id.level == 0).collect();
                        if !leaves.is_empty() {
                            let mut qb = sqlx::QueryBuilder::<$db>::new(
                                "SELECT idx, leaf_hash FROM audit_entries WHERE node = ",
                            );
                            qb.push_bind(node.to_string()).push(" AND idx IN (");
                            let mut sep = qb.separated(", ");
                            for id in &leaves {
                                sep.push_bind(to_i64(id.index)?);
                            }
                            qb.push(")");
                            for row in qb.build().fetch_all(&self.pool).await? {
                                let id = NodeId::new(0, to_u64(row.try_get(0)?)?);
                                out.insert(id, to_hash(row.try_get(1)?)?);
                            }
                        }
                    }
                    Ok(out)
                })
            }

            fn tree_nodes_range<'a>(
                &'a self,
                node: &'a str,
                level: u32,
                from: u64,
                to: u64,
            ) -> StoreFuture<'a, Vec<(u64, Hash)>> {
                Box::pin(async move {
                    use sqlx::Row;
                    let rows = sqlx::query(
                        "SELECT idx, hash FROM audit_tree_nodes WHERE node = $1 AND level = $2 AND idx >= $3 AND idx <= $4 ORDER BY idx",
                    )
                    .bind(node)
                    .bind(level as i32)
                    .bind(to_i64(from)?)
                    .bind(to_i64(to)?)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|r| Ok((to_u64(r.try_get(0)?)?, to_hash(r.try_get(1)?)?)))
                        .collect()
                })
            }

            fn put_checkpoint<'a>(
                &'a self,
                node: &'a str,
                cp: &'a StoredCheckpoint,
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO audit_checkpoints (node, tree_size, root, time_us, note) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (node, tree_size) DO NOTHING",
                    )
                    .bind(node)
                    .bind(to_i64(cp.tree_size)?)
                    .bind(cp.root.to_vec())
                    .bind(cp.time.timestamp_micros())
                    .bind(cp.note.as_str())
                    .execute(self.writes())
                    .await?;
                    Ok(())
                }.instrument(tracing::debug_span!("audit_store.put_checkpoint", backend = Self::BACKEND, node, size = cp.tree_size)))
            }

            fn checkpoints<'a>(&'a self, node: &'a str) -> StoreFuture<'a, Vec<StoredCheckpoint>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT tree_size, root, time_us, note FROM audit_checkpoints WHERE node = $1 ORDER BY tree_size",
                    )
                    .bind(node)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(row_to_checkpoint).collect()
                })
            }

            fn checkpoint_count<'a>(&'a self, node: &'a str) -> StoreFuture<'a, u64> {
                Box::pin(async move {
                    use sqlx::Row;
                    let count: i64 =
                        sqlx::query("SELECT COUNT(*) FROM audit_checkpoints WHERE node = $1")
                            .bind(node)
                            .fetch_one(&self.pool)
                            .await?
                            .try_get(0)?;
                    to_u64(count)
                })
            }

            fn checkpoints_page<'a>(
                &'a self,
                node: &'a str,
                below: Option<u64>,
                limit: u32,
            ) -> StoreFuture<'a, Vec<StoredCheckpoint>> {
                Box::pin(async move {
                    // A bound beyond every storable size is no bound.
                    let below = below.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
                    let rows = sqlx::query(
                        "SELECT tree_size, root, time_us, note FROM audit_checkpoints WHERE node = $1 AND tree_size < $2 ORDER BY tree_size DESC LIMIT $3",
                    )
                    .bind(node)
                    .bind(below)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(row_to_checkpoint).collect()
                })
            }

            fn latest_checkpoint<'a>(
                &'a self,
                node: &'a str,
            ) -> StoreFuture<'a, Option<StoredCheckpoint>> {
                Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT tree_size, root, time_us, note FROM audit_checkpoints WHERE node = $1 ORDER BY tree_size DESC LIMIT 1",
                    )
                    .bind(node)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(row_to_checkpoint).transpose()
                })
            }

            fn add_cosignature<'a>(
                &'a self,
                node: &'a str,
                tree_size: u64,
                line: &'a str,
            ) -> StoreFuture<'a, bool> {
                Box::pin(async move {
                    use sqlx::Row;
                    let size = to_i64(tree_size)?;
                    for _ in 0..COSIGN_ATTEMPTS {
                        // Read where writes go, so the swap compares against
                        // the newest note.
                        let row = sqlx::query(
                            "SELECT note FROM audit_checkpoints WHERE node = $1 AND tree_size = $2",
                        )
                        .bind(node)
                        .bind(size)
                        .fetch_optional(self.writes())
                        .await?;
                        let Some(row) = row else {
                            return Err(StoreError::Cosignature {
                                node: node.to_string(),
                                tree_size,
                                detail: "no such checkpoint".into(),
                            });
                        };
                        let old: String = row.try_get(0)?;
                        let Some(new) = note_with_cosignature(node, tree_size, &old, line)? else {
                            return Ok(false);
                        };
                        let done = sqlx::query(
                            "UPDATE audit_checkpoints SET note = $1 WHERE node = $2 AND tree_size = $3 AND note = $4",
                        )
                        .bind(new.as_str())
                        .bind(node)
                        .bind(size)
                        .bind(old.as_str())
                        .execute(self.writes())
                        .await?
                        .rows_affected();
                        if done == 1 {
                            return Ok(true);
                        }
                    }
                    Err(StoreError::Cosignature {
                        node: node.to_string(),
                        tree_size,
                        detail: "the note kept changing underneath".into(),
                    })
                }.instrument(tracing::debug_span!("audit_store.add_cosignature", backend = Self::BACKEND, node, size = tree_size)))
            }

            fn scan<'a>(
                &'a self,
                node: &'a str,
                from: u64,
                limit: u32,
            ) -> StoreFuture<'a, Vec<LoggedEntry>> {
                Box::pin(async move {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE node = $1 AND idx >= $2 ORDER BY idx LIMIT $3"
                    )))
                    .bind(node)
                    .bind(to_i64(from)?)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(row_to_entry).collect()
                })
            }

            fn entry<'a>(
                &'a self,
                node: &'a str,
                index: u64,
            ) -> StoreFuture<'a, Option<LoggedEntry>> {
                Box::pin(async move {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE node = $1 AND idx = $2"
                    )))
                    .bind(node)
                    .bind(to_i64(index)?)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(row_to_entry).transpose()
                })
            }

            fn search<'a>(
                &'a self,
                filter: &'a SearchFilter,
                after: Option<&'a Cursor>,
                limit: u32,
            ) -> StoreFuture<'a, Vec<LoggedEntry>> {
                Box::pin(async move {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                        "SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE 1 = 1"
                    ));
                    let text_filters: [(&str, &Option<String>); 9] = [
                        ("node", &filter.node),
                        ("caller_org", &filter.caller_org),
                        ("caller_unit", &filter.caller_unit),
                        ("operator", &filter.operator),
                        ("department", &filter.department),
                        ("evidence_type", &filter.evidence_type),
                        ("matter", &filter.matter),
                        ("case_number", &filter.case_number),
                        ("subject", &filter.subject),
                    ];
                    for (col, val) in text_filters {
                        if let Some(v) = val {
                            qb.push(format!(" AND {col} = ")).push_bind(v.clone());
                        }
                    }
                    // Repeat the partial indexes' own WHERE terms: a planner
                    // cannot prove `x = $1` implies `x <> ''` for a bound $1,
                    // and would otherwise scan the time index instead.
                    if filter.subject.as_deref().is_some_and(|s| !s.is_empty()) {
                        qb.push(" AND subject <> ''");
                    }
                    if filter.case_number.as_deref().is_some_and(|s| !s.is_empty()) {
                        qb.push(" AND case_number <> ''");
                    }
                    if let Some(k) = filter.kind {
                        qb.push(" AND kind = ").push_bind(k.as_str());
                    }
                    if let Some(code) = filter.outcome_code {
                        qb.push(" AND outcome_code = ").push_bind(code);
                        if code != 0 {
                            qb.push(" AND outcome_code <> 0");
                        }
                    }
                    if let Some(from) = filter.from {
                        qb.push(" AND time_us >= ").push_bind(from.timestamp_micros());
                    }
                    if let Some(to) = filter.to {
                        qb.push(" AND time_us < ").push_bind(to.timestamp_micros());
                    }
                    if let Some(c) = after {
                        qb.push(" AND (time_us, node, idx) < (")
                            .push_bind(c.time_us)
                            .push(", ")
                            .push_bind(c.node.clone())
                            .push(", ")
                            .push_bind(to_i64(c.index)?)
                            .push(")");
                    }
                    qb.push(" ORDER BY time_us DESC, node DESC, idx DESC LIMIT ")
                        .push_bind(i64::from(limit));
                    let rows = qb.build().fetch_all(&self.pool).await?;
                    rows.iter().map(row_to_entry).collect()
                }.instrument(tracing::debug_span!("audit_store.search", backend = Self::BACKEND, limit)))
            }

            fn prune_cut<'a>(&'a self, node: &'a str, cutoff_us: i64) -> StoreFuture<'a, u64> {
                Box::pin(async move {
                    use sqlx::Row;
                    // Walks the primary key upward and stops at the first young entry,
                    // so it reads only the rows about to be pruned.
                    let row = sqlx::query(
                        "SELECT idx FROM audit_entries WHERE node = $1 AND time_us >= $2 ORDER BY idx LIMIT 1",
                    )
                    .bind(node)
                    .bind(cutoff_us)
                    .fetch_optional(&self.pool)
                    .await?;
                    match row {
                        Some(r) => to_u64(r.try_get(0)?),
                        None => Ok(self.log_state(node).await?.size),
                    }
                })
            }

            fn prune_below<'a>(
                &'a self,
                node: &'a str,
                cut: u64,
                keep: &'a [(NodeId, Hash)],
                pruned: &'a [([u8; 32], PrunedChain)],
            ) -> StoreFuture<'a, u64> {
                Box::pin(async move {
                    let mut tx = self.writes().begin().await?;
                    for (subject, chain) in pruned {
                        sqlx::query(
                            "INSERT INTO audit_map_pruned (node, subject, count, head_before_last, last_idx, last_leaf) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (node, subject) DO UPDATE SET count = excluded.count, head_before_last = excluded.head_before_last, last_idx = excluded.last_idx, last_leaf = excluded.last_leaf",
                        )
                        .bind(node)
                        .bind(subject.to_vec())
                        .bind(to_i64(chain.count)?)
                        .bind(chain.head_before_last.to_vec())
                        .bind(to_i64(chain.last_index)?)
                        .bind(chain.last_leaf.to_vec())
                        .execute(&mut *tx)
                        .await?;
                    }
                    for (id, h) in keep {
                        sqlx::query(
                            "INSERT INTO audit_tree_nodes (node, level, idx, hash) VALUES ($1, $2, $3, $4) ON CONFLICT (node, level, idx) DO NOTHING",
                        )
                        .bind(node)
                        .bind(id.level as i32)
                        .bind(to_i64(id.index)?)
                        .bind(h.to_vec())
                        .execute(&mut *tx)
                        .await?;
                    }
                    let deleted = sqlx::query("DELETE FROM audit_entries WHERE node = $1 AND idx < $2")
                        .bind(node)
                        .bind(to_i64(cut)?)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    sqlx::query(
                        "INSERT INTO audit_logs (node, pruned_before, created_us) VALUES ($1, $2, $3) ON CONFLICT (node) DO UPDATE SET pruned_before = CASE WHEN audit_logs.pruned_before > excluded.pruned_before THEN audit_logs.pruned_before ELSE excluded.pruned_before END",
                    )
                    .bind(node)
                    .bind(to_i64(cut)?)
                    .bind(Utc::now().timestamp_micros())
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(deleted)
                }.instrument(tracing::debug_span!("audit_store.prune_below", backend = Self::BACKEND, node, cut)))
            }

            fn put_checkpoint_with_map<'a>(
                &'a self,
                node: &'a str,
                cp: &'a StoredCheckpoint,
                map: &'a MapWrite,
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    let mut tx = self.writes().begin().await?;
                    for chunk in map.leaves.chunks(MAP_CHUNK) {
                        let mut qb = sqlx::QueryBuilder::<$db>::new(
                            "INSERT INTO audit_map_leaves (node, subject, count, head) ",
                        );
                        let mut bad = None;
                        qb.push_values(chunk, |mut b, (subject, value)| {
                            let count = to_i64(value.count).unwrap_or_else(|e| {
                                bad = Some(e);
                                0
                            });
                            b.push_bind(node.to_string())
                                .push_bind(subject.to_vec())
                                .push_bind(count)
                                .push_bind(value.head.to_vec());
                        });
                        if let Some(e) = bad {
                            return Err(e);
                        }
                        qb.push(" ON CONFLICT (node, subject) DO UPDATE SET count = excluded.count, head = excluded.head");
                        qb.build().persistent(false).execute(&mut *tx).await?;
                    }
                    for chunk in map.deletes.chunks(MAP_CHUNK) {
                        let mut qb = sqlx::QueryBuilder::<$db>::new(
                            "DELETE FROM audit_map_nodes WHERE node = ",
                        );
                        qb.push_bind(node.to_string()).push(" AND path IN (");
                        let mut paths = qb.separated(", ");
                        for path in chunk {
                            paths.push_bind(path.encode());
                        }
                        qb.push(")");
                        qb.build().persistent(false).execute(&mut *tx).await?;
                    }
                    for chunk in map.upserts.chunks(MAP_CHUNK) {
                        let mut qb = sqlx::QueryBuilder::<$db>::new(
                            "INSERT INTO audit_map_nodes (node, path, left_hash, left_leaf, right_hash, right_leaf) ",
                        );
                        qb.push_values(chunk, |mut b, n| {
                            b.push_bind(node.to_string())
                                .push_bind(n.path.encode())
                                .push_bind(n.left.hash.to_vec())
                                .push_bind(n.left.leaf_key.map(|k| k.to_vec()))
                                .push_bind(n.right.hash.to_vec())
                                .push_bind(n.right.leaf_key.map(|k| k.to_vec()));
                        });
                        qb.push(" ON CONFLICT (node, path) DO UPDATE SET left_hash = excluded.left_hash, left_leaf = excluded.left_leaf, right_hash = excluded.right_hash, right_leaf = excluded.right_leaf");
                        qb.build().persistent(false).execute(&mut *tx).await?;
                    }
                    sqlx::query(
                        "INSERT INTO audit_checkpoints (node, tree_size, root, time_us, note) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (node, tree_size) DO NOTHING",
                    )
                    .bind(node)
                    .bind(to_i64(cp.tree_size)?)
                    .bind(cp.root.to_vec())
                    .bind(cp.time.timestamp_micros())
                    .bind(cp.note.as_str())
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(())
                }.instrument(tracing::debug_span!("audit_store.put_checkpoint_with_map", backend = Self::BACKEND, node, size = cp.tree_size, leaves = map.leaves.len(), map_nodes = map.upserts.len())))
            }

            fn map_leaves<'a>(
                &'a self,
                node: &'a str,
                subjects: &'a [[u8; 32]],
            ) -> StoreFuture<'a, HashMap<[u8; 32], MapValue>> {
                Box::pin(async move {
                    let rows = rows_for_subjects(
                        self.writes(),
                        "SELECT subject, count, head FROM audit_map_leaves WHERE node = ",
                        node,
                        subjects,
                    )
                    .await?;
                    rows.iter().map(row_to_map_leaf).collect()
                })
            }

            fn map_nodes<'a>(
                &'a self,
                node: &'a str,
                paths: &'a [MapPath],
            ) -> StoreFuture<'a, Vec<MapNode>> {
                Box::pin(async move {
                    let mut out = Vec::new();
                    for chunk in paths.chunks(MAP_CHUNK) {
                        out.extend(select_map_nodes(self.writes(), node, chunk).await?);
                    }
                    Ok(out)
                })
            }

            fn map_single_leaf<'a>(
                &'a self,
                node: &'a str,
            ) -> StoreFuture<'a, Option<([u8; 32], MapValue)>> {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT subject, count, head FROM audit_map_leaves WHERE node = $1 LIMIT 2",
                    )
                    .bind(node)
                    .fetch_all(self.writes())
                    .await?;
                    match rows.as_slice() {
                        [only] => Ok(Some(row_to_map_leaf(only)?)),
                        _ => Ok(None),
                    }
                })
            }

            fn pruned_chains<'a>(
                &'a self,
                node: &'a str,
                subjects: &'a [[u8; 32]],
            ) -> StoreFuture<'a, HashMap<[u8; 32], PrunedChain>> {
                Box::pin(async move {
                    let rows = rows_for_subjects(
                        self.writes(),
                        "SELECT subject, count, head_before_last, last_idx, last_leaf FROM audit_map_pruned WHERE node = ",
                        node,
                        subjects,
                    )
                    .await?;
                    rows.iter().map(row_to_pruned).collect()
                })
            }

            fn pruned_chains_page<'a>(
                &'a self,
                node: &'a str,
                after: Option<&'a [u8; 32]>,
                limit: u32,
            ) -> StoreFuture<'a, Vec<([u8; 32], PrunedChain)>> {
                Box::pin(async move {
                    // Every key is 32 bytes, so the empty one sorts first.
                    let rows = sqlx::query(
                        "SELECT subject, count, head_before_last, last_idx, last_leaf FROM audit_map_pruned WHERE node = $1 AND subject > $2 ORDER BY subject LIMIT $3",
                    )
                    .bind(node)
                    .bind(after.map_or_else(Vec::new, |k| k.to_vec()))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(row_to_pruned).collect()
                })
            }

            fn subject_snapshot<'a>(
                &'a self,
                node: &'a str,
                subject: &'a [u8; 32],
                paths: &'a [MapPath],
                entries_limit: u32,
            ) -> StoreFuture<'a, SubjectSnapshot> {
                Box::pin(async move {
                    use sqlx::Row;
                    // One read transaction: the writer stores a checkpoint and
                    // its map changes together, so they are seen together.
                    let mut tx = self.begin_snapshot().await?;
                    let checkpoint = sqlx::query(
                        "SELECT tree_size, root, time_us, note FROM audit_checkpoints WHERE node = $1 ORDER BY tree_size DESC LIMIT 1",
                    )
                    .bind(node)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| row_to_checkpoint(&r))
                    .transpose()?;
                    let path_nodes = select_map_nodes(&mut *tx, node, paths).await?;
                    let value = sqlx::query(
                        "SELECT subject, count, head FROM audit_map_leaves WHERE node = $1 AND subject = $2",
                    )
                    .bind(node)
                    .bind(subject.to_vec())
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| row_to_map_leaf(&r))
                    .transpose()?
                    .map(|(_, v)| v);
                    let single_leaf = if path_nodes.is_empty() {
                        let rows = sqlx::query(
                            "SELECT subject, count, head FROM audit_map_leaves WHERE node = $1 LIMIT 2",
                        )
                        .bind(node)
                        .fetch_all(&mut *tx)
                        .await?;
                        match rows.as_slice() {
                            [only] => Some(row_to_map_leaf(only)?),
                            _ => None,
                        }
                    } else {
                        None
                    };
                    let terminal = crate::map::terminal_key(
                        subject,
                        &path_nodes,
                        single_leaf.map(|(k, v)| (k, v.hash())),
                    )
                    .map_err(|e| StoreError::Corrupt(format!("subject map: {e}")))?;
                    let terminal_leaf = match terminal {
                        Some(key) if key != *subject => sqlx::query(
                            "SELECT subject, count, head FROM audit_map_leaves WHERE node = $1 AND subject = $2",
                        )
                        .bind(node)
                        .bind(key.to_vec())
                        .fetch_optional(&mut *tx)
                        .await?
                        .map(|r| row_to_map_leaf(&r))
                        .transpose()?,
                        _ => None,
                    };
                    let pruned = sqlx::query(
                        "SELECT subject, count, head_before_last, last_idx, last_leaf FROM audit_map_pruned WHERE node = $1 AND subject = $2",
                    )
                    .bind(node)
                    .bind(subject.to_vec())
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| row_to_pruned(&r))
                    .transpose()?
                    .map(|(_, c)| c);
                    let pruned_before = match sqlx::query(
                        "SELECT pruned_before FROM audit_logs WHERE node = $1",
                    )
                    .bind(node)
                    .fetch_optional(&mut *tx)
                    .await?
                    {
                        Some(r) => to_u64(r.try_get(0)?)?,
                        None => 0,
                    };
                    let below = checkpoint.as_ref().map_or(0, |c| c.tree_size);
                    let entries = select_subject_entries(
                        &mut *tx,
                        node,
                        &hex::encode(subject),
                        pruned_before,
                        below,
                        entries_limit,
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(SubjectSnapshot {
                        checkpoint,
                        path_nodes,
                        value,
                        single_leaf,
                        terminal_leaf,
                        pruned,
                        pruned_before,
                        entries,
                    })
                }.instrument(tracing::debug_span!("audit_store.subject_snapshot", backend = Self::BACKEND, node)))
            }

            fn map_reset<'a>(&'a self, node: &'a str) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    let mut tx = self.writes().begin().await?;
                    for table in ["audit_map_nodes", "audit_map_leaves"] {
                        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE node = $1")))
                            .bind(node)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                })
            }

            fn subject_entries<'a>(
                &'a self,
                node: &'a str,
                subject: &'a str,
                from: u64,
                below: u64,
                limit: u32,
            ) -> StoreFuture<'a, Vec<LoggedEntry>> {
                Box::pin(async move {
                    select_subject_entries(&self.pool, node, subject, from, below, limit).await
                })
            }

            fn put_unsealed<'a>(
                &'a self,
                node: &'a str,
                index: u64,
                time: DateTime<Utc>,
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO audit_unsealed (node, idx, time_us) VALUES ($1, $2, $3) ON CONFLICT (node, idx) DO NOTHING",
                    )
                    .bind(node)
                    .bind(to_i64(index)?)
                    .bind(time.timestamp_micros())
                    .execute(self.writes())
                    .await?;
                    Ok(())
                })
            }

            fn unsealed<'a>(
                &'a self,
                node: &'a str,
                indexes: &'a [u64],
            ) -> StoreFuture<'a, std::collections::HashSet<u64>> {
                Box::pin(async move {
                    use sqlx::Row;
                    let mut out = std::collections::HashSet::new();
                    for chunk in indexes.chunks(MAP_CHUNK) {
                        let mut qb = sqlx::QueryBuilder::<$db>::new(
                            "SELECT idx FROM audit_unsealed WHERE node = ",
                        );
                        qb.push_bind(node.to_string()).push(" AND idx IN (");
                        let mut list = qb.separated(", ");
                        for i in chunk {
                            list.push_bind(to_i64(*i)?);
                        }
                        qb.push(")");
                        for row in qb.build().persistent(false).fetch_all(&self.pool).await? {
                            out.insert(to_u64(row.try_get(0)?)?);
                        }
                    }
                    Ok(out)
                })
            }
        }
    };
}

pub(crate) use impl_common_store;
