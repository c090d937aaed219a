//! `Audit.Watch`, the live feed for SIEMs, over real mutual TLS: a watcher
//! is cut off mid-way, entries keep coming, and resuming from the last
//! cursor it received yields every entry of every node exactly once, in
//! order — on SQLite and on a PostgreSQL store shared with a second node.
//! Then `tongban audit tail`, the real binary: JSON Lines with cursors,
//! `--from`, `--follow`, bad cursors and callers who are not administrators.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use tokio::io::AsyncBufReadExt;
use tongban_audit::{
    AuditConfig, AuditEntry, AuditLog, AuditStore, EntryKind, LogSigner, PostgresStore,
    origin_for_node,
};
use tongban_devkit::local::{LocalDeployment, LocalOptions, NODE};
use tongban_proto::v1::audit_client::AuditClient;
use tongban_proto::v1::{AdminContext, WatchEvent, WatchRequest, watch_event};
use tonic::Code;

/// Longest wait for any one event: generous, never part of an assertion.
const EVENT_WAIT: Duration = Duration::from_secs(30);

fn admin() -> Option<AdminContext> {
    Some(AdminContext {
        operator_id: "siem-feed".into(),
        reason: "SIEM forwarding".into(),
    })
}

fn watch(cursor: &str, follow: bool) -> WatchRequest {
    WatchRequest {
        admin: admin(),
        cursor: cursor.into(),
        from_end: false,
        follow,
    }
}

async fn append(log: &AuditLog, tag: &str, n: usize) {
    for i in 0..n {
        let mut e = AuditEntry::new(EntryKind::Lookup, chrono::Utc::now());
        e.case_number = format!("{tag}-{i}");
        e.matter = "unemployment-benefit".into();
        log.append(e).await.unwrap();
    }
}

async fn next_event(stream: &mut tonic::Streaming<WatchEvent>) -> Option<WatchEvent> {
    tokio::time::timeout(EVENT_WAIT, stream.message())
        .await
        .expect("an event within the bound")
        .unwrap()
}

/// What a watcher received: per node, the indexes in order (and their
/// leaf hashes).
#[derive(Default)]
struct Received {
    by_node: BTreeMap<String, Vec<u64>>,
    hashes: BTreeMap<String, Vec<Vec<u8>>>,
    cursor: String,
}

impl Received {
    fn take(&mut self, event: WatchEvent) {
        if let Some(watch_event::Event::Entry(r)) = event.event {
            self.hashes
                .entry(r.node.clone())
                .or_default()
                .push(r.leaf_hash);
            self.by_node.entry(r.node).or_default().push(r.index);
        } else {
            assert!(event.event.is_none(), "nothing is pruned here: {event:?}");
        }
        self.cursor = event.cursor;
    }

    fn count(&self) -> usize {
        self.by_node.values().map(Vec::len).sum()
    }

    fn reached(&self, node: &str, index: u64) -> bool {
        self.by_node
            .get(node)
            .and_then(|v| v.last())
            .is_some_and(|&last| last >= index)
    }
}

/// Writes on this node (and `other`, a second node of the same store),
/// watches, drops the connection mid-way, writes more, resumes from the
/// last cursor received while still more is written, and checks that each
/// node's entries arrived as exactly 0, 1, 2, … with nothing twice.
async fn cut_and_resume(
    local: &LocalDeployment,
    store: Arc<dyn AuditStore>,
    other: Option<AuditLog>,
) {
    let log = local.exchange().audit_log().unwrap().clone();
    append(&log, "before", 40).await;
    if let Some(other) = &other {
        append(other, "other-before", 25).await;
    }

    let mut received = Received::default();
    {
        let mut client = AuditClient::new(local.channel("admin").await.unwrap());
        let mut stream = client.watch(watch("", true)).await.unwrap().into_inner();
        let start = next_event(&mut stream).await.unwrap();
        assert!(start.event.is_none());
        while received.count() < 30 {
            received.take(next_event(&mut stream).await.unwrap());
        }
        // Cut off mid-way: the stream and the connection go.
    }
    append(&log, "while-away", 30).await;
    if let Some(other) = &other {
        append(other, "other-while-away", 20).await;
    }

    let mut client = AuditClient::new(local.channel("admin").await.unwrap());
    let mut stream = client
        .watch(watch(&received.cursor, true))
        .await
        .unwrap()
        .into_inner();
    let resumed_at = next_event(&mut stream).await.unwrap();
    assert!(resumed_at.event.is_none());
    assert_eq!(
        resumed_at.cursor, received.cursor,
        "it starts where it was left"
    );
    // More comes while following; the other node's only through polling.
    let last_here = log.append(AuditEntry::new(EntryKind::Lookup, chrono::Utc::now()));
    let last_here = last_here.await.unwrap().index;
    let last_other = match &other {
        Some(other) => {
            append(other, "other-after", 5).await;
            let r = other
                .append(AuditEntry::new(EntryKind::Lookup, chrono::Utc::now()))
                .await
                .unwrap();
            Some((other.node().to_owned(), r.index))
        }
        None => None,
    };
    while !(received.reached(NODE, last_here)
        && last_other
            .as_ref()
            .is_none_or(|(node, index)| received.reached(node, *index)))
    {
        received.take(next_event(&mut stream).await.unwrap());
    }
    drop(stream);

    let mut expected_nodes = vec![NODE.to_owned()];
    if let Some((node, _)) = &last_other {
        expected_nodes.push(node.clone());
    }
    expected_nodes.sort();
    assert_eq!(
        received.by_node.keys().cloned().collect::<Vec<_>>(),
        expected_nodes
    );
    for (node, indexes) in &received.by_node {
        let want: Vec<u64> = (0..indexes.len() as u64).collect();
        assert_eq!(indexes, &want, "node {node}: a gap or a duplicate");
        // And they are the store's entries, up to the last one seen.
        let stored: Vec<Vec<u8>> = store
            .scan(node, 0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .take(indexes.len())
            .map(|e| e.leaf_hash.to_vec())
            .collect();
        assert_eq!(&stored, &received.hashes[node], "node {node}");
    }
    assert!(received.reached(NODE, last_here));
    // Two watches, two entries: nothing per item.
    let logged = store.scan(NODE, 0, 10_000).await.unwrap();
    let watches: Vec<_> = logged
        .iter()
        .filter(|e| e.entry.kind == EntryKind::AdminAction && e.entry.detail.starts_with("watch"))
        .collect();
    assert_eq!(watches.len(), 2, "{watches:#?}");
    assert!(
        watches[1]
            .entry
            .detail
            .contains(&received_cursor_prefix(&resumed_at.cursor))
    );
}

/// The logged start of the resumed watch names the cursor it was given.
fn received_cursor_prefix(cursor: &str) -> String {
    format!("watch from={cursor} follow=true")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_watch_resumes_without_gap_or_duplicate_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalDeployment::start(dir.path()).await.unwrap();
    let store: Arc<dyn AuditStore> = Arc::new(
        tongban_audit::SqliteStore::open(&dir.path().join("audit.db"))
            .await
            .unwrap(),
    );
    cut_and_resume(&local, store, None).await;
    local.shutdown().await.unwrap();
}

fn pg_url() -> String {
    std::env::var("TONGBAN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_watch_resumes_without_gap_or_duplicate_on_postgres_with_two_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!("audit_watch_{}_{nanos}", std::process::id());
    let mut db = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&mut db)
        .await
        .unwrap();
    let outcome = tokio::spawn({
        let dir = dir.path().to_owned();
        let schema = schema.clone();
        async move {
            let options = LocalOptions::default().audit_store(&pg_url(), Some(&schema));
            let local = LocalDeployment::start_with(&dir, options).await.unwrap();
            let store: Arc<dyn AuditStore> = Arc::new(
                PostgresStore::connect(&pg_url(), Some(&schema))
                    .await
                    .unwrap(),
            );
            // A second exchange node writing to the same store.
            let signer = LogSigner::generate(&origin_for_node("exchange-2")).unwrap();
            let other = AuditLog::open(store.clone(), signer, AuditConfig::new("exchange-2"))
                .await
                .unwrap();
            cut_and_resume(&local, store, Some(other.clone())).await;
            other.shutdown().await.unwrap();
            local.shutdown().await.unwrap();
        }
    })
    .await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(&mut db)
    .await
    .unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Refusals over the wire: a service point is not an administrator
/// (PERMISSION_DENIED, and logged); a malformed cursor is INVALID_ARGUMENT
/// naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_refusals_over_mtls() {
    use tonic_types::StatusExt;
    let dir = tempfile::tempdir().unwrap();
    let local = LocalDeployment::start(dir.path()).await.unwrap();
    let mut clerk = AuditClient::new(local.channel("dongli-community").await.unwrap());
    let status = clerk.watch(watch("", true)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let mut client = AuditClient::new(local.channel("admin").await.unwrap());
    let status = client
        .watch(watch("exchange-1:007", false))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["cursor"]);
    let log = local.exchange().audit_log().unwrap();
    log.flush().await.unwrap();
    let store = tongban_audit::SqliteStore::open(&dir.path().join("audit.db"))
        .await
        .unwrap();
    let refused: Vec<_> = store
        .scan(NODE, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.entry.detail.starts_with("watch"))
        .map(|e| (e.entry.caller_unit, e.entry.outcome_code))
        .collect();
    assert_eq!(
        refused,
        [
            ("dongli-community".to_owned(), Code::PermissionDenied as i32),
            ("admin".to_owned(), Code::InvalidArgument as i32)
        ]
    );
    local.shutdown().await.unwrap();
}

fn connect(local: &LocalDeployment, party: &str) -> Vec<String> {
    let id = local.pki().get(party).unwrap();
    vec![
        "--exchange".into(),
        local.exchange_url(),
        "--cert".into(),
        id.cert.display().to_string(),
        "--key".into(),
        id.key.display().to_string(),
        "--ca".into(),
        local.pki().ca_cert.display().to_string(),
        "--operator".into(),
        "siem-feed".into(),
        "--reason".into(),
        "SIEM forwarding".into(),
    ]
}

fn tail_command(local: &LocalDeployment, party: &str, extra: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tongban"));
    command
        .args(["audit", "tail"])
        .args(connect(local, party))
        .args(extra)
        .env_remove("TONGBAN_EXCHANGE")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .kill_on_drop(true);
    command
}

fn text(out: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_tail_prints_json_lines_resumes_and_follows() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalDeployment::start(dir.path()).await.unwrap();
    let log = local.exchange().audit_log().unwrap().clone();
    append(&log, "tail", 10).await;

    // To the end: one line per entry with its cursor, nothing in clear.
    let out = tail_command(&local, "admin", &["--json"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let lines = json_lines(&out);
    assert!(lines.len() >= 10, "{}", text(&out));
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["index"], i as u64);
        assert_eq!(line["node"], NODE);
        assert_eq!(line["cursor"], format!("{NODE}:{}", i + 1));
    }
    let last = lines.len();

    // --from a line's cursor: exactly what came after that line.
    let from = lines[4]["cursor"].as_str().unwrap().to_owned();
    let out = tail_command(&local, "admin", &["--json", "--from", &from])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let resumed = json_lines(&out);
    let indexes: Vec<u64> = resumed
        .iter()
        .map(|l| l["index"].as_u64().unwrap())
        .collect();
    // Up to the end when it started: the first tail's own entry included.
    assert_eq!(indexes, (5..=last as u64).collect::<Vec<_>>());

    // Readable lines, and the cursor to resume with on stderr.
    let out = tail_command(&local, "admin", &["--from", &from])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .next()
            .unwrap()
            .contains(&format!("{NODE}:5 Lookup OK")),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("resume with: --from exchange-1:"),
        "{}",
        text(&out)
    );

    // --follow --from-end: its own entry, then what is committed next, as
    // it comes; stopped by the test after a bounded wait.
    let mut child = tail_command(&local, "admin", &["--json", "--follow", "--from-end"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut read_line = async || -> serde_json::Value {
        let line = tokio::time::timeout(EVENT_WAIT, lines.next_line())
            .await
            .expect("a line within the bound")
            .unwrap()
            .expect("the feed goes on");
        serde_json::from_str(&line).unwrap()
    };
    let own = read_line().await;
    assert_eq!(own["kind"], "AdminAction");
    assert!(
        own["detail"]
            .as_str()
            .unwrap()
            .starts_with("watch from=end follow=true")
    );
    append(&log, "followed", 3).await;
    for i in 0..3 {
        let line = read_line().await;
        assert_eq!(line["case_number"], format!("followed-{i}"));
        assert_eq!(line["index"], own["index"].as_u64().unwrap() + 1 + i);
    }
    child.kill().await.unwrap();

    // A malformed cursor, and a caller who is not an administrator.
    let out = tail_command(&local, "admin", &["--from", "exchange-1:x"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("cursor"),
        "{}",
        text(&out)
    );
    let out = tail_command(&local, "dongli-community", &["--follow"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PermissionDenied"),
        "{}",
        text(&out)
    );
    local.shutdown().await.unwrap();
}

/// An entry deleted behind the exchange's back is never skipped silently:
/// the feed delivers everything before it, then ends with DATA_LOSS; put
/// back, the same cursor goes on through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_entry_ends_the_feed_with_data_loss() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalDeployment::start(dir.path()).await.unwrap();
    let log = local.exchange().audit_log().unwrap().clone();
    append(&log, "gap", 6).await;
    let deleted = local
        .delete_entry_behind_the_exchange(NODE, 3)
        .await
        .unwrap();
    let mut client = AuditClient::new(local.channel("admin").await.unwrap());
    let mut stream = client.watch(watch("", false)).await.unwrap().into_inner();
    let mut received = Received::default();
    let status = loop {
        match tokio::time::timeout(EVENT_WAIT, stream.message())
            .await
            .expect("an event within the bound")
        {
            Ok(Some(event)) => received.take(event),
            Ok(None) => panic!("the feed ended without saying an entry is missing"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert_eq!(received.by_node[NODE], [0, 1, 2]);
    assert_eq!(received.cursor, format!("{NODE}:3"));
    deleted.undo().await.unwrap();
    let mut stream = client
        .watch(watch(&received.cursor, false))
        .await
        .unwrap()
        .into_inner();
    let mut resumed = Received::default();
    while let Some(event) = next_event(&mut stream).await {
        resumed.take(event);
    }
    assert_eq!(resumed.by_node[NODE][..4], [3, 4, 5, 6]);
    local.shutdown().await.unwrap();
}
