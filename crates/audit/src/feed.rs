//! The live audit feed: every node's durable entries, in index order per
//! node, from a cursor, with no gap and no duplicate — the read side of
//! `Audit.Watch` (SIEMs follow the log with it).
//!
//! A [`FeedCursor`] names, per node, the next index to deliver; its text form
//! (`exchange-1:43,exchange-2:8`) is what clients store and hand back, and
//! [`FeedCursor::from_str`] parses it strictly. A [`Feed`] is pulled one
//! event at a time ([`Feed::next`]) and holds at most one page of entries,
//! so a slow consumer stops the reading instead of growing memory. It reads
//! only through [`AuditStore`] (`list_nodes`, `scan`, `log_state`): what it
//! delivers is what the store durably holds.
//!
//! Nodes the cursor does not name (a new cursor, or a node that joined the
//! store later) start at their first entry. Entries pruned before the feed
//! reaches them are announced by one [`FeedEvent::Pruned`] naming the range,
//! and the feed goes on after it. An entry missing below later ones (a log
//! changed behind its writer's back) ends the feed with
//! [`AuditError::Inconsistent`]: nothing is skipped silently.

use std::collections::{BTreeMap, VecDeque};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::AuditError;
use crate::log::validate_node_id;
use crate::store::{AuditStore, LoggedEntry};

/// Most nodes a cursor may name (a deployment has a handful).
pub const MAX_CURSOR_NODES: usize = 256;
/// Longest cursor text accepted: every node at its longest name and index.
pub const MAX_CURSOR_CHARS: usize = MAX_CURSOR_NODES * (64 + 1 + 20 + 1);

/// Where a feed stands: for each node, the index of the next entry to
/// deliver. Nodes it does not name start at their first entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedCursor {
    next: BTreeMap<String, u64>,
}

/// Why a cursor's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CursorError(String);

impl FeedCursor {
    /// The cursor naming these positions.
    pub fn from_positions(
        positions: impl IntoIterator<Item = (String, u64)>,
    ) -> Result<Self, CursorError> {
        let mut next = BTreeMap::new();
        for (node, index) in positions {
            validate_node_id(&node)
                .map_err(|_| CursorError(format!("node {node:?} is not a node name")))?;
            if next.insert(node.clone(), index).is_some() {
                return Err(CursorError(format!("node {node} is named twice")));
            }
        }
        if next.len() > MAX_CURSOR_NODES {
            return Err(CursorError(format!(
                "names {} nodes, at most {MAX_CURSOR_NODES}",
                next.len()
            )));
        }
        Ok(Self { next })
    }

    /// The next index to deliver of each named node, by node name.
    pub fn positions(&self) -> &BTreeMap<String, u64> {
        &self.next
    }

    /// The next index of `node`, if the cursor names it.
    pub fn get(&self, node: &str) -> Option<u64> {
        self.next.get(node).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.next.is_empty()
    }
}

/// `node:next` pairs, by node name, joined by commas; empty for the start.
impl std::fmt::Display for FeedCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (node, next)) in self.next.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{node}:{next}")?;
        }
        Ok(())
    }
}

/// Strict: node names as nodes are named, indexes in plain decimal (no
/// sign, no leading zero, no space), each node once, nothing else.
impl FromStr for FeedCursor {
    type Err = CursorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Ok(Self::default());
        }
        if s.len() > MAX_CURSOR_CHARS {
            return Err(CursorError(format!(
                "is {} characters long, at most {MAX_CURSOR_CHARS}",
                s.len()
            )));
        }
        let mut positions = Vec::new();
        for (n, pair) in s.split(',').enumerate() {
            let bad = |why: &str| CursorError(format!("part {} ({pair:?}) {why}", n + 1));
            let Some((node, index)) = pair.split_once(':') else {
                return Err(bad("is not node:index"));
            };
            if validate_node_id(node).is_err() {
                return Err(bad("does not start with a node name"));
            }
            let plain = !index.is_empty()
                && index.bytes().all(|b| b.is_ascii_digit())
                && (index == "0" || !index.starts_with('0'));
            let index = index
                .parse::<u64>()
                .ok()
                .filter(|_| plain)
                .ok_or_else(|| bad("does not end with an index in plain decimal"))?;
            if positions.len() == MAX_CURSOR_NODES {
                return Err(CursorError(format!(
                    "names more than {MAX_CURSOR_NODES} nodes"
                )));
            }
            positions.push((node.to_owned(), index));
        }
        Self::from_positions(positions)
    }
}

/// One thing the feed delivers, with the cursor to resume after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// The next entry of its node.
    Entry {
        entry: Box<LoggedEntry>,
        cursor: FeedCursor,
    },
    /// Entries `from..to` of `node` were pruned (retention) before the feed
    /// reached them; it goes on at `to`.
    Pruned {
        node: String,
        from: u64,
        to: u64,
        cursor: FeedCursor,
    },
}

impl FeedEvent {
    /// The cursor after this event.
    pub fn cursor(&self) -> &FeedCursor {
        match self {
            Self::Entry { cursor, .. } | Self::Pruned { cursor, .. } => cursor,
        }
    }
}

/// Where a feed starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedStart {
    /// From a cursor (the empty cursor: every node from its first entry).
    Cursor(FeedCursor),
    /// From the current end of every node's log: only what comes next.
    End,
}

/// How a feed reads.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// Wait for new entries at the end (true), or end there (false).
    pub follow: bool,
    /// Entries read per store query (the most the feed holds at a time).
    pub page: u32,
    /// Longest wait before the store is read again while following, for
    /// entries written by other nodes (this node's commits wake it first
    /// through `wake`).
    pub poll: Duration,
    /// The local writer's commit signal ([`crate::AuditLog::subscribe_commits`]).
    pub wake: Option<watch::Receiver<u64>>,
}

/// Default entries per store read.
pub const FEED_PAGE: u32 = 256;

/// A cursor's position the store cannot serve: the caller's mistake.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("names node {0:?}, which has no log in this store")]
    UnknownNode(String),
    #[error("names entry {next} of node {node:?}, beyond its end ({size} entries)")]
    Beyond { node: String, next: u64, size: u64 },
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// A pull-based reader of every node's log from a cursor.
pub struct Feed {
    store: Arc<dyn AuditStore>,
    positions: BTreeMap<String, u64>,
    /// Without follow: each node's size when the feed started; the feed
    /// ends once every node reached it.
    ends: Option<BTreeMap<String, u64>>,
    options: FeedOptions,
    buffer: VecDeque<LoggedEntry>,
    /// The node the next fill starts with (round robin, so one busy node
    /// cannot starve the others).
    turn: usize,
    /// The store's node list must be read again (a new node may have come).
    refresh_nodes: bool,
    done: bool,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("positions", &self.positions)
            .field("follow", &self.options.follow)
            .finish_non_exhaustive()
    }
}

impl Feed {
    /// Checks the start against the store: a cursor naming a node the store
    /// has no log of, or an index past a node's end, is refused
    /// ([`StartError`]); a cursor names only what a feed delivered.
    pub async fn open(
        store: Arc<dyn AuditStore>,
        start: FeedStart,
        mut options: FeedOptions,
    ) -> Result<Self, StartError> {
        if options.page == 0 {
            options.page = FEED_PAGE;
        }
        let nodes = store.list_nodes().await.map_err(AuditError::from)?;
        let mut positions = BTreeMap::new();
        let mut sizes = BTreeMap::new();
        for node in &nodes {
            let state = store.log_state(node).await.map_err(AuditError::from)?;
            sizes.insert(node.clone(), state.size);
        }
        match start {
            FeedStart::End => positions.clone_from(&sizes),
            FeedStart::Cursor(cursor) => {
                for (node, &next) in cursor.positions() {
                    let Some(&size) = sizes.get(node) else {
                        return Err(StartError::UnknownNode(node.clone()));
                    };
                    if next > size {
                        return Err(StartError::Beyond {
                            node: node.clone(),
                            next,
                            size,
                        });
                    }
                    positions.insert(node.clone(), next);
                }
                for node in &nodes {
                    positions.entry(node.clone()).or_insert(0);
                }
            }
        }
        let ends = (!options.follow).then_some(sizes);
        Ok(Self {
            store,
            positions,
            ends,
            options,
            buffer: VecDeque::new(),
            turn: 0,
            refresh_nodes: false,
            done: false,
        })
    }

    /// Where the feed stands now.
    pub fn cursor(&self) -> FeedCursor {
        FeedCursor {
            next: self.positions.clone(),
        }
    }

    /// The next event; `None` at the end (without follow). While following,
    /// waits for new entries: woken by the local writer's commits, and at
    /// least every `poll` for other nodes' — never a busy loop.
    pub async fn next(&mut self) -> Result<Option<FeedEvent>, AuditError> {
        loop {
            if let Some(entry) = self.buffer.pop_front() {
                let node = entry.entry.node.clone();
                self.positions.insert(node, entry.index + 1);
                return Ok(Some(FeedEvent::Entry {
                    entry: Box::new(entry),
                    cursor: self.cursor(),
                }));
            }
            if self.done {
                return Ok(None);
            }
            if let Some(pruned) = self.fill().await? {
                return Ok(Some(pruned));
            }
            if !self.buffer.is_empty() {
                continue;
            }
            if !self.options.follow {
                self.done = true;
                return Ok(None);
            }
            self.wait().await;
        }
    }

    /// Waits for this node's next commit or the poll interval.
    async fn wait(&mut self) {
        let poll = tokio::time::sleep(self.options.poll);
        tokio::pin!(poll);
        match &mut self.options.wake {
            Some(wake) => {
                tokio::select! {
                    changed = wake.changed() => {
                        if changed.is_err() {
                            // The writer has stopped: poll from now on.
                            self.options.wake = None;
                            poll.await;
                            self.refresh_nodes = true;
                        }
                    }
                    () = &mut poll => self.refresh_nodes = true,
                }
            }
            None => {
                poll.await;
                self.refresh_nodes = true;
            }
        }
    }

    /// Reads the next page of the first node (in turn) with new entries
    /// into the buffer, or returns the pruned range found instead.
    async fn fill(&mut self) -> Result<Option<FeedEvent>, AuditError> {
        if self.refresh_nodes && self.ends.is_none() {
            self.refresh_nodes = false;
            for node in self.store.list_nodes().await? {
                self.positions.entry(node).or_insert(0);
            }
        }
        let nodes: Vec<String> = self.positions.keys().cloned().collect();
        let count = nodes.len();
        for k in 0..count {
            let node = &nodes[(self.turn + k) % count];
            let next = self.positions[node];
            let mut limit = self.options.page;
            if let Some(ends) = &self.ends {
                let end = ends.get(node).copied().unwrap_or(0);
                if next >= end {
                    continue;
                }
                limit = limit.min(u32::try_from(end - next).unwrap_or(u32::MAX));
            }
            let mut rows = self.store.scan(node, next, limit).await?;
            if rows.first().is_some_and(|r| r.index == next) {
                if let Some(row) = rows.iter().find(|r| r.entry.node != *node) {
                    return Err(AuditError::Inconsistent {
                        node: node.clone(),
                        detail: format!(
                            "entry {} is stored as node {:?}'s",
                            row.index, row.entry.node
                        ),
                    });
                }
                // Up to a gap: what comes before it is delivered, and the
                // next read, starting at the gap, reports it.
                let contiguous = rows
                    .iter()
                    .zip(next..)
                    .take_while(|(row, want)| row.index == *want)
                    .count();
                rows.truncate(contiguous);
                self.buffer.extend(rows);
                self.turn = (self.turn + k + 1) % count;
                return Ok(None);
            }
            // Nothing at `next`: the end of the log, or pruned, or lost.
            let state = self.store.log_state(node).await?;
            if state.pruned_before > next {
                let to = state.pruned_before;
                self.positions.insert(node.clone(), to);
                self.turn = (self.turn + k + 1) % count;
                return Ok(Some(FeedEvent::Pruned {
                    node: node.clone(),
                    from: next,
                    to,
                    cursor: self.cursor(),
                }));
            }
            if !rows.is_empty() {
                return Err(missing(node, next));
            }
        }
        Ok(None)
    }
}

fn missing(node: &str, index: u64) -> AuditError {
    AuditError::Inconsistent {
        node: node.to_owned(),
        detail: format!("entry {index} is missing while later entries are stored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::entry::{AuditEntry, EntryKind};
    use crate::{AuditConfig, AuditLog, LogSigner, SqliteStore};

    #[test]
    fn cursors_round_trip_and_parse_strictly() {
        let c: FeedCursor = "exchange-2:8,exchange-1:43".parse().unwrap();
        assert_eq!(c.to_string(), "exchange-1:43,exchange-2:8");
        assert_eq!(c.get("exchange-1"), Some(43));
        assert_eq!(c.to_string().parse::<FeedCursor>().unwrap(), c);
        assert!("".parse::<FeedCursor>().unwrap().is_empty());
        assert_eq!(
            "n:0".parse::<FeedCursor>().unwrap().get("n"),
            Some(0),
            "zero is plain decimal"
        );
        for bad in [
            ",",
            "n",
            "n:",
            ":4",
            "n:4,",
            "n:+4",
            "n:-4",
            "n:04",
            "n: 4",
            " n:4",
            "n:4 ",
            "n:4,n:5",
            "n:0x10",
            "n:18446744073709551616",
            "n/1:4",
            "n:4;m:5",
            "n\u{1b}:4",
        ] {
            assert!(bad.parse::<FeedCursor>().is_err(), "{bad:?} was accepted");
        }
        let long = format!("{}:1", "n".repeat(65));
        assert!(long.parse::<FeedCursor>().is_err());
        let many: Vec<String> = (0..=MAX_CURSOR_NODES).map(|i| format!("n{i}:1")).collect();
        assert!(many.join(",").parse::<FeedCursor>().is_err());
        let huge = "n:1,".repeat(MAX_CURSOR_CHARS);
        assert!(huge.parse::<FeedCursor>().is_err());
    }

    async fn log(dir: &std::path::Path, node: &str) -> (Arc<dyn AuditStore>, AuditLog) {
        let store: Arc<dyn AuditStore> =
            Arc::new(SqliteStore::open(&dir.join("a.db")).await.unwrap());
        let signer = LogSigner::generate(&crate::origin_for_node(node)).unwrap();
        let log = AuditLog::open(store.clone(), signer, AuditConfig::new(node))
            .await
            .unwrap();
        (store, log)
    }

    async fn append(log: &AuditLog, n: usize) {
        for i in 0..n {
            let mut e = AuditEntry::new(EntryKind::Lookup, chrono::Utc::now());
            e.case_number = format!("case-{i}");
            log.append(e).await.unwrap();
        }
    }

    fn options(follow: bool, page: u32) -> FeedOptions {
        FeedOptions {
            follow,
            page,
            poll: Duration::from_millis(20),
            wake: None,
        }
    }

    async fn drain(feed: &mut Feed) -> Vec<(String, u64)> {
        let mut got = Vec::new();
        while let Some(event) = feed.next().await.unwrap() {
            if let FeedEvent::Entry { entry, .. } = event {
                got.push((entry.entry.node, entry.index));
            }
        }
        got
    }

    /// Paging, resuming from any event's cursor, and the end of a
    /// non-following feed at the size it started with.
    #[tokio::test]
    async fn resumes_from_any_cursor_without_gap_or_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let (store, log) = log(dir.path(), "n1").await;
        append(&log, 10).await;
        let mut feed = Feed::open(
            store.clone(),
            FeedStart::Cursor(FeedCursor::default()),
            options(false, 3),
        )
        .await
        .unwrap();
        let mut cursors = Vec::new();
        let mut indexes = Vec::new();
        while let Some(event) = feed.next().await.unwrap() {
            // It holds at most one page, whatever the log's size.
            assert!(feed.buffer.len() < 3);
            let FeedEvent::Entry { entry, cursor } = event else {
                panic!("nothing was pruned")
            };
            assert_eq!(cursor.get("n1"), Some(entry.index + 1));
            indexes.push(entry.index);
            cursors.push(cursor);
        }
        assert_eq!(indexes, (0..10).collect::<Vec<_>>());
        append(&log, 2).await;
        // From the 4th event's cursor: entries 4.. including the later two.
        let mut resumed = Feed::open(
            store.clone(),
            FeedStart::Cursor(cursors[3].clone()),
            options(false, 4),
        )
        .await
        .unwrap();
        let got: Vec<u64> = drain(&mut resumed).await.into_iter().map(|e| e.1).collect();
        assert_eq!(got, (4..12).collect::<Vec<_>>());
        // From the end: nothing until something new.
        let mut tail = Feed::open(store.clone(), FeedStart::End, options(false, 4))
            .await
            .unwrap();
        assert_eq!(tail.next().await.unwrap(), None);
        assert_eq!(tail.cursor().get("n1"), Some(12));
    }

    #[tokio::test]
    async fn refuses_unknown_nodes_and_positions_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let (store, log) = log(dir.path(), "n1").await;
        append(&log, 3).await;
        let open = |c: &str| {
            Feed::open(
                store.clone(),
                FeedStart::Cursor(c.parse().unwrap()),
                options(false, 0),
            )
        };
        assert!(matches!(
            open("n2:0").await.unwrap_err(),
            StartError::UnknownNode(n) if n == "n2"
        ));
        assert!(matches!(
            open("n1:4").await.unwrap_err(),
            StartError::Beyond {
                next: 4,
                size: 3,
                ..
            }
        ));
        assert!(open("n1:3").await.is_ok());
    }

    /// A follower is woken by the writer's commit, long before its poll.
    #[tokio::test]
    async fn a_follower_wakes_on_the_local_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (store, log) = log(dir.path(), "n1").await;
        append(&log, 1).await;
        let mut feed = Feed::open(
            store,
            FeedStart::End,
            FeedOptions {
                follow: true,
                page: 8,
                poll: Duration::from_secs(3600),
                wake: Some(log.subscribe_commits()),
            },
        )
        .await
        .unwrap();
        let writer = log.clone();
        let appended = tokio::spawn(async move { append(&writer, 2).await });
        let first = tokio::time::timeout(Duration::from_secs(30), feed.next())
            .await
            .expect("woken by the commit")
            .unwrap()
            .unwrap();
        let FeedEvent::Entry { entry, .. } = first else {
            panic!("an entry")
        };
        assert_eq!(entry.index, 1);
        appended.await.unwrap();
    }

    /// Entries pruned before the feed reached them are announced once,
    /// with the range, and the feed goes on after it.
    #[tokio::test]
    async fn pruned_entries_are_announced() {
        let dir = tempfile::tempdir().unwrap();
        let (store, log) = log(dir.path(), "n1").await;
        let old = chrono::Utc::now() - chrono::Duration::days(400);
        for _ in 0..5 {
            log.append(AuditEntry::new(EntryKind::Lookup, old))
                .await
                .unwrap();
        }
        append(&log, 2).await;
        log.flush().await.unwrap();
        let report = log
            .prune(crate::PruneRequest {
                older_than_days: 365,
                operator: "ops".into(),
                reason: "test".into(),
                force: false,
                now: chrono::Utc::now(),
            })
            .await
            .unwrap();
        assert_eq!(report.pruned_before, 5);
        let mut feed = Feed::open(
            store,
            FeedStart::Cursor("n1:1".parse().unwrap()),
            options(false, 0),
        )
        .await
        .unwrap();
        let first = feed.next().await.unwrap().unwrap();
        assert!(
            matches!(&first, FeedEvent::Pruned { node, from: 1, to: 5, cursor } if node == "n1" && cursor.get("n1") == Some(5)),
            "{first:?}"
        );
        let rest: Vec<u64> = drain(&mut feed).await.into_iter().map(|e| e.1).collect();
        assert_eq!(
            rest,
            (5..8).collect::<Vec<_>>(),
            "two entries and the prune record"
        );
    }
}
