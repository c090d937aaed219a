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
    path: Option<PathBuf>,
}

impl SqliteStore {
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
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool, path })
    }

    /// The pool, for tests and tools that need raw access.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
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

impl_common_store!(SqliteStore, Sqlite);
