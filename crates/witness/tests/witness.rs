//! A real audit log on SQLite, two witness servers on 127.0.0.1 and a
//! collector: the node's checkpoints end up cosigned by a quorum, again as
//! the log grows, and a forged checkpoint of a cosigned size, signed with
//! the node's key, is reported as a split view.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tongban_audit::{
    AuditConfig, AuditEntry, AuditLog, AuditStore, Checkpoint, EntryKind, Keyring, LogSigner,
    SqliteStore, WitnessSigner, origin_for_node, verify_cosignatures,
};
use tongban_witness::{
    AddCheckpoint, Collector, CollectorConfig, Witness, WitnessEndpoint, WitnessServer,
    WitnessState,
};

const NODE: &str = "n1";

fn log_signer() -> LogSigner {
    LogSigner::from_seed(&origin_for_node(NODE), &[42u8; 32]).unwrap()
}

fn entry(i: u64) -> AuditEntry {
    let mut e = AuditEntry::new(EntryKind::Lookup, Utc::now());
    e.matter = "unemployment-benefit".into();
    e.case_number = format!("PZH-2026-{i:06}");
    e.operator = "clerk-01".into();
    e
}

/// One raw HTTP/1.1 exchange: (status, content type, body).
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: witness\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("answer within 10 s")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

struct RunningWitness {
    witness: Arc<Witness>,
    server: WitnessServer,
    dir: tempfile::TempDir,
}

async fn start_witness(name: &str, seed: u8) -> RunningWitness {
    let dir = tempfile::tempdir().unwrap();
    let signer = WitnessSigner::from_seed(name, &[seed; 32]).unwrap();
    let witness = Arc::new(
        Witness::open(
            signer,
            &[log_signer().verifier()],
            WitnessState::open(dir.path()).unwrap(),
        )
        .unwrap(),
    );
    let server = WitnessServer::bind("127.0.0.1:0".parse().unwrap(), witness.clone())
        .await
        .unwrap();
    RunningWitness {
        witness,
        server,
        dir,
    }
}

fn endpoint(w: &RunningWitness) -> WitnessEndpoint {
    WitnessEndpoint {
        url: format!("http://{}", w.server.local_addr()),
        key: w.witness.key(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_gets_checkpoints_cosigned_and_witness_reports_split_view() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn AuditStore> = Arc::new(
        SqliteStore::open(&dir.path().join("audit.db"))
            .await
            .unwrap(),
    );
    let mut config = AuditConfig::new(NODE);
    // Checkpoints only when the test flushes, so each round sees a known one.
    config.checkpoint_every = 1_000_000;
    config.checkpoint_interval = Duration::from_secs(3600);
    let log = AuditLog::open(store.clone(), log_signer(), config)
        .await
        .unwrap();
    let ring = Keyring::new().with(log_signer().verifier());
    let origin = origin_for_node(NODE);

    let a = start_witness("witness.a", 1).await;
    let b = start_witness("witness.b", 2).await;
    let keys = [a.witness.key(), b.witness.key()];
    let mut collector = Collector::new(
        store.clone(),
        NODE,
        vec![endpoint(&a), endpoint(&b)],
        CollectorConfig {
            interval: Duration::from_millis(50),
            request_timeout: Duration::from_secs(5),
        },
    )
    .unwrap();

    // Nothing signed yet: a round does nothing.
    collector.run_once().await;
    assert_eq!(collector.stats().cosigned, 0);

    for i in 0..5 {
        log.append(entry(i)).await.unwrap();
    }
    let first = log.flush().await.unwrap().unwrap();
    collector.run_once().await;
    assert_eq!(collector.stats().cosigned, 2, "{:?}", collector.stats());
    let stored = store.latest_checkpoint(NODE).await.unwrap().unwrap();
    assert!(stored.note.starts_with(&first));
    assert_eq!(
        verify_cosignatures(&stored.note, &keys, 2).unwrap().len(),
        2
    );
    Checkpoint::open(&stored.note, &ring, &origin).unwrap();
    // Already cosigned: the next round asks nobody.
    collector.run_once().await;
    assert_eq!(collector.stats().cosigned, 2);
    assert_eq!(a.witness.stats().cosigned, 1);

    // The log grows: cosigned again, with a consistency proof from size 5.
    for i in 5..13 {
        log.append(entry(i)).await.unwrap();
    }
    log.flush().await.unwrap();
    collector.run_once().await;
    assert_eq!(collector.stats().cosigned, 4);
    let stored = store.latest_checkpoint(NODE).await.unwrap().unwrap();
    assert_eq!(stored.tree_size, 13);
    assert_eq!(
        verify_cosignatures(&stored.note, &keys, 2).unwrap().len(),
        2
    );
    assert_eq!(a.witness.sizes(), vec![(origin.clone(), 13)]);

    // A collector that forgot what the witnesses saw (a restart) starts
    // from 0, is told the size by 409 and retries with a proof from it.
    let fresh = Collector::new(
        store.clone(),
        NODE,
        vec![endpoint(&a), endpoint(&b)],
        CollectorConfig {
            interval: Duration::from_millis(50),
            request_timeout: Duration::from_secs(5),
        },
    )
    .unwrap();
    for i in 13..20 {
        log.append(entry(i)).await.unwrap();
    }
    log.flush().await.unwrap();
    // Spawned, on tokio's clock: wait for both cosignatures.
    let handle = fresh.spawn();
    let mut stats = handle.subscribe();
    tokio::time::timeout(Duration::from_secs(30), stats.wait_for(|s| s.cosigned >= 2))
        .await
        .expect("cosigned within 30 s")
        .unwrap();
    assert_eq!(handle.stats().failed, 0);
    handle.shutdown().await;
    let stored = store.latest_checkpoint(NODE).await.unwrap().unwrap();
    assert_eq!(stored.tree_size, 20);
    assert_eq!(
        verify_cosignatures(&stored.note, &keys, 2).unwrap().len(),
        2
    );

    // The witness's 409 carries its size in the spec's content type.
    let plain = stored
        .note
        .split("\n\u{2014} witness")
        .next()
        .unwrap()
        .to_string()
        + "\n";
    let (status, ctype, body) = http(
        a.server.local_addr(),
        "POST",
        "/add-checkpoint",
        &AddCheckpoint::encode(7, &[], &plain),
    )
    .await;
    assert_eq!(
        (status, ctype.as_str(), body.as_str()),
        (409, "text/x.tlog.size", "20\n")
    );

    // A forged checkpoint of size 20 with another root, signed with the
    // node's key, posted directly: a split view.
    let body = format!("{}\n", plain.split_once("\n\n").unwrap().0);
    let mut forged = Checkpoint::parse_body(&body).unwrap();
    forged.root = [0xee; 32];
    let forged_note = forged.sign(&log_signer()).unwrap();
    let (status, _, body) = http(
        a.server.local_addr(),
        "POST",
        "/add-checkpoint",
        &AddCheckpoint::encode(20, &[], &forged_note),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("split view"), "{body}");
    assert_eq!(a.witness.stats().split_views, 1);
    let evidence: Vec<_> = std::fs::read_dir(a.dir.path())
        .unwrap()
        .map(|f| f.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("split-view-")
        })
        .collect();
    assert_eq!(evidence.len(), 1);
    let text = std::fs::read_to_string(&evidence[0]).unwrap();
    assert!(text.contains(&forged_note));

    // Status page, and errors the spec names.
    let (status, _, body) = http(a.server.local_addr(), "GET", "/", "").await;
    assert_eq!(status, 200);
    assert!(body.contains(&format!("log {origin} 20")), "{body}");
    assert!(body.contains("split-views 1"), "{body}");
    let (status, _, _) = http(
        a.server.local_addr(),
        "POST",
        "/add-checkpoint",
        "old x\n\n",
    )
    .await;
    assert_eq!(status, 400);
    let big = "x".repeat(tongban_witness::MAX_REQUEST_BYTES + 1);
    let (status, _, _) = http(a.server.local_addr(), "POST", "/add-checkpoint", &big).await;
    assert_eq!(status, 413);

    log.shutdown().await.unwrap();
    a.server.shutdown().await;
    b.server.shutdown().await;
}
