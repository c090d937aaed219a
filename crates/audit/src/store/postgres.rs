//! PostgreSQL backend: synchronous commit, several nodes per database.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool, Postgres};
use tracing::Instrument;

use super::*;
use crate::entry::AuditEntry;

/// Audit store in a PostgreSQL database (optionally in one schema).
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    opts: PgConnectOptions,
}

// Hand-written so connection options (and any password in them) never reach logs.
impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("host", &self.opts.get_host())
            .field("database", &self.opts.get_database())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// The table as a person's entries are read from it: through the
    /// subject index. PostgreSQL picks the subject index itself.
    const ENTRIES_BY_SUBJECT: &'static str = "audit_entries";
    const BACKEND: &'static str = "postgres";

    /// Connects and runs migrations. With `schema`, every connection uses it
    /// (`search_path`); the schema must already exist.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Self, StoreError> {
        let mut opts = PgConnectOptions::from_str(url)?.options([("synchronous_commit", "on")]);
        if let Some(s) = schema {
            opts = opts.options([("search_path", s)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool, opts })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Writes share the pool: the server orders them.
    fn writes(&self) -> &PgPool {
        &self.pool
    }

    /// A read transaction that sees one snapshot throughout.
    async fn begin_snapshot(&self) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// A session-level advisory lock on a dedicated connection: held while the
    /// writer lives, released by the server when the connection drops.
    async fn lock_writer_impl(&self, node: &str) -> Result<WriterLease, StoreError> {
        use sqlx::Row;
        let mut conn = sqlx::PgConnection::connect_with(&self.opts).await?;
        let got: bool = sqlx::query(
            "SELECT pg_try_advisory_lock(hashtext('tongban-audit-writer'), hashtext(current_schema() || '/' || $1))",
        )
        .bind(node)
        .fetch_one(&mut conn)
        .await?
        .try_get(0)?;
        if !got {
            let _ = conn.close().await;
            return Err(StoreError::NodeLocked {
                node: node.to_string(),
                detail: "a PostgreSQL advisory lock for this node is held by another session"
                    .into(),
            });
        }
        Ok(WriterLease::new(Box::new(LeaseConn(
            tokio::sync::Mutex::new(conn),
        ))))
    }
}

impl PostgresStore {
    /// One transaction; each INSERT is its own round trip (the extended
    /// protocol takes one statement at a time).
    async fn append_batch_impl(
        &self,
        node: &str,
        entries: &[LoggedEntry],
        tree_nodes: &[(NodeId, Hash)],
    ) -> Result<(), StoreError> {
        let mut tx = self.writes().begin().await?;
        for chunk in entries.chunks(ENTRY_CHUNK) {
            let mut qb = sqlx::QueryBuilder::<Postgres>::new("");
            push_entry_insert(&mut qb, node, chunk)?;
            qb.build().execute(&mut *tx).await?;
        }
        for chunk in tree_nodes.chunks(TREE_CHUNK) {
            let mut qb = sqlx::QueryBuilder::<Postgres>::new("");
            push_tree_insert(&mut qb, node, chunk)?;
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Keeps the locking session open; the mutex makes it `Sync`.
struct LeaseConn(tokio::sync::Mutex<sqlx::PgConnection>);

impl LeaseGuard for LeaseConn {
    fn release(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let conn = self.0.into_inner();
            // Closing the session releases its advisory locks before we return.
            let _ = conn.close().await;
        })
    }
}

impl_common_store!(PostgresStore, Postgres);
