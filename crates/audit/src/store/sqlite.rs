//! SQLite backend: embedded default, WAL with `synchronous=FULL`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};
use tracing::Instrument;

use super::*;
use crate::entry::AuditEntry;

/// Audit store in one SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection for every write. SQLite has one writer at a time
    /// anyway, and a connection that wrote last keeps its page cache; one
    /// that did not must re-read every page another connection changed (a
    /// dozen reads per commit with the search indexes).
    writer: SqlitePool,
    path: Option<PathBuf>,
}

impl SqliteStore {
    /// The table as a person's entries are read from it: through the
    /// subject index. Without statistics SQLite would walk the primary key `(node, idx)`
    /// range, the whole log, for a person's few entries.
    const ENTRIES_BY_SUBJECT: &'static str = "audit_entries INDEXED BY audit_entries_subject";
    const BACKEND: &'static str = "sqlite";

    /// Opens (creating if missing) the database file and runs migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        Self::with_options(opts, Some(path.to_path_buf())).await
    }

    /// Opens from a `sqlite:` URL (e.g. `sqlite://audit.db`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let path = opts.get_filename().to_path_buf();
        let path = (path.as_os_str() != ":memory:").then_some(path);
        Self::with_options(opts, path).await
    }

    async fn with_options(
        opts: SqliteConnectOptions,
        path: Option<PathBuf>,
    ) -> Result<Self, StoreError> {
        // Seven search indexes make inserts page-cache bound: 16 MiB per connection.
        let opts = opts
            .pragma("cache_size", "-16384")
            .pragma("wal_autocheckpoint", "16384");
        // No ping before each acquire: it would be one more round trip to the
        // connection's thread on the commit path, and a local file has no
        // network to fail.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(opts)
            .await?;
        Ok(Self { pool, writer, path })
    }

    /// The pool, for tests and tools that need raw access.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes every connection (reads and the writer's).
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    fn writes(&self) -> &SqlitePool {
        &self.writer
    }

    /// A read transaction: in WAL mode it sees one snapshot from its first read.
    async fn begin_snapshot(&self) -> Result<sqlx::Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// A lock file beside the database, held for the writer's lifetime; the
    /// OS releases it if the process dies, so `kill -9` never leaves it stuck.
    async fn lock_writer_impl(&self, node: &str) -> Result<WriterLease, StoreError> {
        let Some(db) = &self.path else {
            return Ok(WriterLease::new(Box::new(())));
        };
        let mut name = db.as_os_str().to_owned();
        name.push(format!(".audit-writer-{node}.lock"));
        let lock_path = PathBuf::from(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        match file.try_lock() {
            Ok(()) => Ok(WriterLease::new(Box::new(file))),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::NodeLocked {
                node: node.to_string(),
                detail: format!("lock file {} is held", lock_path.display()),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Io(e)),
        }
    }
}

impl SqliteStore {
    /// The whole batch — `BEGIN IMMEDIATE`, the inserts, `COMMIT` — as one
    /// multi-statement query: sqlx runs a SQLite connection on its own
    /// thread, and every separate statement would be one more round trip to
    /// it (two thread wake-ups) on the commit path.
    async fn append_batch_impl(
        &self,
        node: &str,
        entries: &[LoggedEntry],
        tree_nodes: &[(NodeId, Hash)],
    ) -> Result<(), StoreError> {
        let mut qb = sqlx::QueryBuilder::<Sqlite>::new("BEGIN IMMEDIATE; ");
        for chunk in entries.chunks(ENTRY_CHUNK) {
            push_entry_insert(&mut qb, node, chunk)?;
            qb.push("; ");
        }
        for chunk in tree_nodes.chunks(TREE_CHUNK) {
            push_tree_insert(&mut qb, node, chunk)?;
            qb.push("; ");
        }
        qb.push("COMMIT");
        let mut conn = self.writer.acquire().await?;
        // Batch sizes vary, so the statement text does too: caching it would
        // only evict the statements worth keeping.
        let result = qb.build().persistent(false).execute(&mut *conn).await;
        if let Err(e) = result {
            // A failed statement leaves the explicit transaction open; roll it
            // back, and if even that fails, never return this connection.
            if let Err(rollback) = sqlx::query("ROLLBACK").execute(&mut *conn).await
                && !rollback.to_string().contains("no transaction is active")
            {
                conn.close_on_drop();
            }
            return Err(e.into());
        }
        Ok(())
    }
}

impl_common_store!(SqliteStore, Sqlite);
