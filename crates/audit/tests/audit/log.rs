//! Writer, read side, proofs and prune against real SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::sync::Arc;

use crate::common::*;
use chrono::{TimeDelta, Utc};
use tongban_audit::{
    AuditError, Checkpoint, PageRequest, PruneRequest, SearchFilter, VerifyOptions,
    consistency_proof, export_jsonl, inclusion_proof, origin_for_node, root_at, search,
    subject_report, verify,
};

async fn verify_ok(db: &TestDb, nodes: &[&str]) -> tongban_audit::VerifyReport {
    let mut calls = 0u64;
    let report = verify(
        db.store.as_ref(),
        &keyring(nodes),
        &VerifyOptions::default(),
        &mut |_p| calls += 1,
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "{:?}: {:#?}", db.backend, report.findings);
    report
}

async fn concurrent_appenders_group_commit(b: Backend) {
    let db = TestDb::new(b).await;
    let log = open_log(db.store.clone(), "n1").await;
    let t0 = std::time::Instant::now();
    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut receipts = Vec::new();
            for k in 0..8u64 {
                let e = entry(t * 8 + k, Utc::now());
                receipts.push((log.append(e).await.unwrap(), t * 8 + k));
            }
            receipts
        }));
    }
    let mut receipts = Vec::new();
    for t in tasks {
        receipts.extend(t.await.unwrap());
    }
    assert_eq!(receipts.len(), 512);
    eprintln!("{b:?} appends {:?} {:?}", t0.elapsed(), log.stats());
    let mut indices: Vec<u64> = receipts.iter().map(|(r, _)| r.index).collect();
    indices.sort();
    assert_eq!(
        indices,
        (0..512).collect::<Vec<_>>(),
        "dense, unique indices"
    );
    let stats = log.stats();
    assert_eq!(stats.entries_committed, 512);
    assert!(
        stats.batches < 512,
        "group commit must batch concurrent appends: {stats:?}"
    );
    let t0 = std::time::Instant::now();
    let note = log.flush().await.unwrap().unwrap();
    let ring = keyring(&["n1"]);
    let cp = Checkpoint::open(&note, &ring, &origin_for_node("n1")).unwrap();
    assert_eq!(cp.size, 512);
    for (k, (r, i)) in receipts.iter().enumerate() {
        assert_eq!(r.node, "n1");
        let p = inclusion_proof(db.store.as_ref(), "n1", r.index)
            .await
            .unwrap();
        assert_eq!(p.leaf_hash, r.leaf_hash);
        assert_eq!(p.checkpoint, note);
        tongban_audit::merkle::verify_inclusion(&r.leaf_hash, r.index, cp.size, &p.proof, &cp.root)
            .unwrap();
        // The stored entry is the one appended.
        let stored = db.store.entry("n1", r.index).await.unwrap().unwrap();
        assert_eq!(stored.entry.case_number, format!("PZH-2026-{i:06}"));
        if k % 128 == 0 {
            // Full offline check (signature included) after a JSON round trip.
            let json = serde_json::to_string(&p).unwrap();
            let back: tongban_audit::InclusionProof = serde_json::from_str(&json).unwrap();
            assert_eq!(back.verify(&ring).unwrap(), cp);
        }
    }
    eprintln!("{b:?} proofs {:?}", t0.elapsed());
    log.shutdown().await.unwrap();
    let t0 = std::time::Instant::now();
    verify_ok(&db, &["n1"]).await;
    eprintln!("{b:?} verify {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_are_group_committed_and_provable() {
    for b in BACKENDS {
        concurrent_appenders_group_commit(b).await;
    }
}

/// One call's entries share one commit, whatever else is queued.
async fn append_all_commits_together(b: Backend) {
    let db = TestDb::new(b).await;
    let log = open_log(db.store.clone(), "n1").await;
    log.append(entry(0, Utc::now())).await.unwrap();
    for round in 0..20u64 {
        let before = log.stats().batches;
        let entries = (0..3)
            .map(|k| entry(1 + round * 3 + k, Utc::now()))
            .collect();
        let receipts: Vec<_> = log
            .append_all(entries)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(log.stats().batches, before + 1, "one commit for the call");
        let indices: Vec<u64> = receipts.iter().map(|r| r.index).collect();
        let first = 1 + round * 3;
        assert_eq!(
            indices,
            vec![first, first + 1, first + 2],
            "in order, adjacent"
        );
        for r in &receipts {
            let stored = db.store.entry("n1", r.index).await.unwrap().unwrap();
            assert_eq!(stored.leaf_hash, r.leaf_hash);
        }
    }
    assert!(log.append_all(Vec::new()).await.is_empty());
    log.shutdown().await.unwrap();
    let after: Vec<_> = log.append_all(vec![entry(99, Utc::now())]).await;
    assert!(matches!(after[..], [Err(AuditError::Closed)]), "{after:?}");
    verify_ok(&db, &["n1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_all_is_one_commit() {
    for b in BACKENDS {
        append_all_commits_together(b).await;
    }
}

/// A batch larger than one INSERT's chunk (1000 rows) is still one atomic
/// write: on SQLite several INSERTs inside one multi-statement query.
async fn large_batch_in_one_write(b: Backend) {
    use tongban_audit::merkle::NodeId;
    let db = TestDb::new(b).await;
    db.store.ensure_log("n1").await.unwrap();
    let rows: Vec<tongban_audit::LoggedEntry> = (0..2100u64)
        .map(|i| {
            let mut e = entry(i, Utc::now());
            e.node = "n1".into();
            let leaf_hash = e.leaf_hash(i);
            tongban_audit::LoggedEntry {
                index: i,
                leaf_hash,
                entry: e,
            }
        })
        .collect();
    let nodes: Vec<(NodeId, [u8; 32])> = (0..4100u64)
        .map(|i| (NodeId::new(1 + (i % 3) as u32, i), [7u8; 32]))
        .collect();
    db.store.append_batch("n1", &rows, &nodes).await.unwrap();
    let stored = db.store.scan("n1", 0, 3000).await.unwrap();
    assert_eq!(stored.len(), 2100, "{b:?}");
    assert_eq!(stored[2099].leaf_hash, rows[2099].leaf_hash);
    let found = db
        .store
        .get_nodes("n1", &[nodes[0].0, nodes[4099].0])
        .await
        .unwrap();
    assert_eq!(found.len(), 2, "{b:?}");
    // The same rows again collide on the primary key: nothing of the batch lands.
    let extra = vec![(NodeId::new(9, 0), [1u8; 32])];
    assert!(db.store.append_batch("n1", &rows, &extra).await.is_err());
    let found = db.store.get_nodes("n1", &[extra[0].0]).await.unwrap();
    assert!(
        found.is_empty(),
        "a failed batch leaves nothing behind ({b:?})"
    );
    // ...and the store still takes the next good batch.
    db.store.append_batch("n1", &[], &extra).await.unwrap();
    assert_eq!(
        db.store.get_nodes("n1", &[extra[0].0]).await.unwrap().len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_are_chunked_and_atomic() {
    for b in BACKENDS {
        large_batch_in_one_write(b).await;
    }
}

async fn store_failure_fails_closed(b: Backend) {
    let db = TestDb::new(b).await;
    let log = open_log(db.store.clone(), "n1").await;
    let mut acked = Vec::new();
    for i in 0..10 {
        acked.push(log.append(entry(i, Utc::now())).await.unwrap());
    }
    // The table disappears behind the writer's back: appends must fail.
    db.exec(
        "ALTER TABLE audit_entries RENAME TO audit_entries_gone",
        vec![],
    )
    .await;
    for i in 10..13 {
        let err = log.append(entry(i, Utc::now())).await.unwrap_err();
        assert!(matches!(err, AuditError::Unavailable(_)), "{err:?}");
    }
    assert!(log.stats().failed_batches >= 3, "{:?}", log.stats());
    // Back again: the writer recovers its state from the store and continues.
    db.exec(
        "ALTER TABLE audit_entries_gone RENAME TO audit_entries",
        vec![],
    )
    .await;
    let r = log.append(entry(13, Utc::now())).await.unwrap();
    assert_eq!(r.index, 10, "failed entries must not consume indices");
    acked.push(r);
    log.shutdown().await.unwrap();
    for r in &acked {
        let stored = db.store.entry("n1", r.index).await.unwrap().unwrap();
        assert_eq!(stored.leaf_hash, r.leaf_hash);
    }
    verify_ok(&db, &["n1"]).await;
    // A closed pool (database gone) also fails closed.
    let log = open_log(db.store.clone(), "n1").await;
    db.close_pool().await;
    assert!(log.append(entry(99, Utc::now())).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failure_makes_append_fail_and_writer_recovers() {
    for b in BACKENDS {
        store_failure_fails_closed(b).await;
    }
}

async fn restart_recovery(b: Backend) {
    let db = TestDb::new(b).await;
    let log = open_log(db.store.clone(), "n1").await;
    for i in 0..37 {
        log.append(entry(i, Utc::now())).await.unwrap();
    }
    let first_cp = log.shutdown().await.unwrap().unwrap();
    assert!(
        log.append(entry(0, Utc::now())).await.is_err(),
        "closed after shutdown"
    );

    // A fresh process: new store handle, new writer.
    let store2 = db.reopen().await;
    let log2 = open_log(store2.clone(), "n1").await;
    let r = log2.append(entry(37, Utc::now())).await.unwrap();
    assert_eq!(r.index, 37);
    for i in 38..50 {
        log2.append(entry(i, Utc::now())).await.unwrap();
    }
    let second_cp = log2.flush().await.unwrap().unwrap();
    let ring = keyring(&["n1"]);
    let origin = origin_for_node("n1");
    let c1 = Checkpoint::open(&first_cp, &ring, &origin).unwrap();
    let c2 = Checkpoint::open(&second_cp, &ring, &origin).unwrap();
    assert_eq!((c1.size, c2.size), (37, 50));
    let proof = consistency_proof(store2.as_ref(), "n1", 37, 50)
        .await
        .unwrap();
    proof.verify(&c1.root, &c2.root).unwrap();
    assert!(proof.verify(&c2.root, &c1.root).is_err());
    assert_eq!(root_at(store2.as_ref(), "n1", 37).await.unwrap(), c1.root);
    log2.shutdown().await.unwrap();
    verify_ok(&db, &["n1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_recovers_size_and_frontier() {
    for b in BACKENDS {
        restart_recovery(b).await;
    }
}

async fn second_writer_refused(b: Backend) {
    let db = TestDb::new(b).await;
    let log = open_log(db.store.clone(), "n1").await;
    let other = db.reopen().await;
    let err = tongban_audit::AuditLog::open(other.clone(), signer("n1"), config("n1"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("another writer holds the audit log of node \"n1\""),
        "{err}"
    );
    // Another node on the same database is fine.
    let n2 = open_log(other.clone(), "n2").await;
    n2.append(entry(1, Utc::now())).await.unwrap();
    log.shutdown().await.unwrap();
    let again = open_log(other.clone(), "n1").await;
    again.append(entry(2, Utc::now())).await.unwrap();
    again.shutdown().await.unwrap();
    n2.shutdown().await.unwrap();
    // Signer must match the origin.
    assert!(
        tongban_audit::AuditLog::open(other, signer("n2"), config("n3"))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_live_writer_for_a_node_is_refused() {
    for b in BACKENDS {
        second_writer_refused(b).await;
    }
}

async fn two_nodes_search_report_export(b: Backend) {
    let db = TestDb::new(b).await;
    let n1 = open_log(db.store.clone(), "n1").await;
    let n2 = open_log(db.store.clone(), "n2").await;
    let base = Utc::now() - TimeDelta::hours(1);
    let mut joins = Vec::new();
    for i in 0..60u64 {
        let log = if i % 2 == 0 { n1.clone() } else { n2.clone() };
        joins.push(tokio::spawn(async move {
            log.append(entry(i, base + TimeDelta::seconds(i as i64)))
                .await
                .unwrap()
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
    n1.shutdown().await.unwrap();
    n2.shutdown().await.unwrap();
    let report = verify_ok(&db, &["n1", "n2"]).await;
    assert_eq!(report.nodes.len(), 2);
    assert!(
        report
            .nodes
            .iter()
            .all(|n| n.tree_size == 30 && n.entries_checked == 30)
    );

    // Newest first, paginated without duplicates or gaps.
    let mut seen = Vec::new();
    let mut page = PageRequest {
        limit: 7,
        after: None,
    };
    loop {
        let p = search(db.store.as_ref(), &SearchFilter::default(), &page)
            .await
            .unwrap();
        seen.extend(p.entries.iter().map(|e| e.entry.time));
        match p.next {
            Some(c) => page.after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 60);
    assert!(seen.windows(2).all(|w| w[0] >= w[1]), "newest first");

    // Filters.
    let failed = search(
        db.store.as_ref(),
        &SearchFilter {
            outcome_code: Some(5),
            ..Default::default()
        },
        &PageRequest::default(),
    )
    .await
    .unwrap();
    assert_eq!(failed.entries.len(), 6);
    assert!(
        failed
            .entries
            .iter()
            .all(|e| e.entry.outcome_reason == "SUBJECT_NOT_FOUND")
    );
    let f = SearchFilter {
        node: Some("n1".into()),
        department: Some("hrss".into()),
        matter: Some("unemployment-benefit".into()),
        from: Some(base + TimeDelta::seconds(10)),
        to: Some(base + TimeDelta::seconds(40)),
        ..Default::default()
    };
    let got = search(db.store.as_ref(), &f, &PageRequest::default())
        .await
        .unwrap();
    // i even, i % 3 == 0, 10 <= i < 40: 12, 18, 24, 30, 36.
    let cases: Vec<String> = got
        .entries
        .iter()
        .map(|e| e.entry.case_number.clone())
        .collect();
    assert_eq!(
        cases,
        [
            "PZH-2026-000036",
            "PZH-2026-000030",
            "PZH-2026-000024",
            "PZH-2026-000018",
            "PZH-2026-000012"
        ]
    );
    let by_case = search(
        db.store.as_ref(),
        &SearchFilter {
            case_number: Some("PZH-2026-000007".into()),
            caller_org: Some(uscc("11510421MB0000002")),
            ..Default::default()
        },
        &PageRequest::default(),
    )
    .await
    .unwrap();
    assert_eq!(by_case.entries.len(), 1);
    assert_eq!(by_case.entries[0].entry.node, "n2");

    // Data-Tracker-style report for one resident (i % 50 == 3 -> i = 3, 53).
    let who = pseudonymizer().pseudonym(&id_number("510403", "19800101", 7));
    let rep = subject_report(db.store.as_ref(), &who, 100).await.unwrap();
    let cases: Vec<&str> = rep
        .accesses
        .iter()
        .map(|a| a.case_number.as_str())
        .collect();
    assert_eq!(cases, ["PZH-2026-000053", "PZH-2026-000003"]);
    assert!(!rep.truncated);
    let rep1 = subject_report(db.store.as_ref(), &who, 1).await.unwrap();
    assert!(rep1.truncated && rep1.accesses.len() == 1);

    // JSON Lines export.
    let mut buf = Vec::new();
    let n = export_jsonl(db.store.as_ref(), None, &mut buf)
        .await
        .unwrap();
    assert_eq!(n, 60);
    let text = String::from_utf8(buf).unwrap();
    let first: tongban_audit::LoggedEntry =
        serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!((first.entry.node.as_str(), first.index), ("n1", 0));
    assert_eq!(first.leaf_hash, first.entry.leaf_hash(0));
    assert!(
        !text.contains("51040319800101"),
        "no identity numbers in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_a_store_search_report_and_export() {
    for b in BACKENDS {
        two_nodes_search_report_export(b).await;
    }
}

async fn prune_keeps_later_entries_verifiable(b: Backend) {
    let db = TestDb::new(b).await;
    let log = open_log(db.store.clone(), "n1").await;
    // 45 entries 200 days old, then 20 recent ones. 45 is odd: the kept
    // boundary leaf matters.
    for i in 0..45 {
        log.append(entry(i, now_minus_days(200))).await.unwrap();
    }
    log.flush().await.unwrap();
    let mut recent = Vec::new();
    for i in 45..65 {
        recent.push(log.append(entry(i, now_minus_days(1))).await.unwrap());
    }
    log.flush().await.unwrap();

    let err = log
        .prune(PruneRequest::retention(30, Utc::now()))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("below the legal minimum of 183 days"),
        "{err}"
    );
    let report = log
        .prune(PruneRequest::retention(183, Utc::now()))
        .await
        .unwrap();
    assert_eq!(
        (report.pruned_before, report.deleted, report.record_index),
        (45, 45, Some(65))
    );
    assert!(db.store.entry("n1", 44).await.unwrap().is_none());
    assert!(db.store.entry("n1", 45).await.unwrap().is_some());

    let rep = verify_ok(&db, &["n1"]).await;
    assert_eq!(rep.nodes[0].first_index, 45);
    // The 20 recent entries and the prune record.
    assert_eq!(rep.nodes[0].entries_checked, 21);
    let ring = keyring(&["n1"]);
    for r in &recent {
        inclusion_proof(db.store.as_ref(), "n1", r.index)
            .await
            .unwrap()
            .verify(&ring)
            .unwrap();
    }
    // The writer continues after pruning, also after a restart.
    log.append(entry(66, Utc::now())).await.unwrap();
    log.shutdown().await.unwrap();
    let log = open_log(db.reopen().await, "n1").await;
    let r = log.append(entry(67, Utc::now())).await.unwrap();
    assert_eq!(r.index, 67);
    verify_ok(&db, &["n1"]).await;
    inclusion_proof(db.store.as_ref(), "n1", 66)
        .await
        .unwrap()
        .verify(&ring)
        .unwrap();
    // Pruning again with nothing old is a no-op; forced short retention
    // prunes everything signed, under a new record.
    let again = log
        .prune(PruneRequest::retention(183, Utc::now()))
        .await
        .unwrap();
    assert_eq!((again.record_index, again.deleted), (None, 0));
    log.flush().await.unwrap();
    let forced = log
        .prune(PruneRequest {
            force: true,
            ..PruneRequest::retention(0, Utc::now() + TimeDelta::seconds(1))
        })
        .await
        .unwrap();
    assert_eq!((forced.pruned_before, forced.record_index), (68, Some(68)));
    log.shutdown().await.unwrap();
    verify_ok(&db, &["n1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_then_verify_still_passes() {
    for b in BACKENDS {
        prune_keeps_later_entries_verifiable(b).await;
    }
}

async fn proofs_need_a_covering_checkpoint(b: Backend) {
    let db = TestDb::new(b).await;
    let mut cfg = config("n1");
    cfg.checkpoint_every = 1_000_000;
    cfg.checkpoint_interval = std::time::Duration::from_secs(3600);
    let log = tongban_audit::AuditLog::open(db.store.clone(), signer("n1"), cfg)
        .await
        .unwrap();
    let r = log.append(entry(0, Utc::now())).await.unwrap();
    let err = inclusion_proof(db.store.as_ref(), "n1", r.index)
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::NotFound(_)), "{err:?}");
    log.flush().await.unwrap();
    let p = inclusion_proof(db.store.as_ref(), "n1", r.index)
        .await
        .unwrap();
    p.verify(&keyring(&["n1"])).unwrap();
    assert!(
        p.verify(&keyring(&["n2"])).is_err(),
        "unpinned key must not verify"
    );
    // Appending with another node's name is refused.
    let mut e = entry(1, Utc::now());
    e.node = "n2".into();
    assert!(matches!(
        log.append(e).await,
        Err(AuditError::WrongNode { .. })
    ));
    log.shutdown().await.unwrap();
    let stats = log.stats();
    assert_eq!(stats.entries_committed, 1);
    assert!(stats.checkpoints_signed >= 1);
    let _ = Arc::clone(&db.store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inclusion_proofs_need_a_covering_checkpoint() {
    for b in BACKENDS {
        proofs_need_a_covering_checkpoint(b).await;
    }
}

async fn store_proofs_random_sizes(b: Backend) {
    let db = TestDb::new(b).await;
    let log = open_log(db.store.clone(), "n1").await;
    let joins: Vec<_> = (0..150)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(entry(i, Utc::now())).await.unwrap() })
        })
        .collect();
    let mut receipts = Vec::new();
    for j in joins {
        receipts.push(j.await.unwrap());
    }
    receipts.sort_by_key(|r| r.index);
    let mut reference = tongban_audit::merkle::MemoryTree::new();
    for r in &receipts {
        reference.push_leaf_hash(r.leaf_hash);
    }
    log.shutdown().await.unwrap();
    let mut seed = 0x2545f4914f6cdd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..40 {
        let new = next() % 150 + 1;
        let old = next() % new + 1;
        let root_new = root_at(db.store.as_ref(), "n1", new).await.unwrap();
        assert_eq!(root_new, reference.root(new), "root at {new}");
        let p = consistency_proof(db.store.as_ref(), "n1", old, new)
            .await
            .unwrap();
        assert_eq!(p.proof, reference.consistency_proof(old, new).unwrap());
        p.verify(&reference.root(old), &root_new).unwrap();
    }
    let ring = keyring(&["n1"]);
    for _ in 0..20 {
        let index = next() % 150;
        let p = inclusion_proof(db.store.as_ref(), "n1", index)
            .await
            .unwrap();
        assert_eq!(p.proof, reference.inclusion_proof(index, 150).unwrap());
        if index % 5 == 0 {
            p.verify(&ring).unwrap();
        }
    }
    assert!(
        consistency_proof(db.store.as_ref(), "n1", 10, 151)
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_served_proofs_round_trip_at_random_sizes() {
    for b in BACKENDS {
        store_proofs_random_sizes(b).await;
    }
}

#[tokio::test]
async fn store_debug_output_hides_connection_secrets() {
    let db = TestDb::new(Backend::Postgres).await;
    // Trust auth accepts any password; the point is that Debug never shows it.
    let base = pg_url();
    let host = base
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or("127.0.0.1:5432/test");
    let url = format!("postgres://postgres:n0t-a-real-s3cret@{host}");
    let store = tongban_audit::PostgresStore::connect(&url, db.schema.as_deref())
        .await
        .unwrap();
    let dbg = format!("{store:?}");
    assert!(dbg.contains("PostgresStore"), "{dbg}");
    assert!(!dbg.contains("n0t-a-real-s3cret"), "{dbg}");
}

/// Delegates to a real store, except that while `hang` is set a batch
/// append never completes (a hung disk or database) until it is cleared.
#[derive(Debug)]
struct HangingStore {
    inner: Arc<dyn tongban_audit::AuditStore>,
    hang: tokio::sync::watch::Sender<bool>,
}

mod hanging {
    use super::HangingStore;
    use std::collections::HashMap;
    use tongban_audit::merkle::NodeId;
    use tongban_audit::store::{LogState, StoreFuture, StoredCheckpoint, WriterLease};
    use tongban_audit::{AuditStore, Cursor, Hash, LoggedEntry, SearchFilter};

    impl AuditStore for HangingStore {
        fn backend(&self) -> &'static str {
            self.inner.backend()
        }
        fn lock_writer<'a>(&'a self, node: &'a str) -> StoreFuture<'a, WriterLease> {
            self.inner.lock_writer(node)
        }
        fn ensure_log<'a>(&'a self, node: &'a str) -> StoreFuture<'a, ()> {
            self.inner.ensure_log(node)
        }
        fn log_state<'a>(&'a self, node: &'a str) -> StoreFuture<'a, LogState> {
            self.inner.log_state(node)
        }
        fn list_nodes(&self) -> StoreFuture<'_, Vec<String>> {
            self.inner.list_nodes()
        }
        fn append_batch<'a>(
            &'a self,
            node: &'a str,
            entries: &'a [LoggedEntry],
            tree_nodes: &'a [(NodeId, Hash)],
        ) -> StoreFuture<'a, ()> {
            let mut hang = self.hang.subscribe();
            Box::pin(async move {
                // Err only if the sender is gone, which outlives every batch.
                let _ = hang.wait_for(|h| !*h).await;
                self.inner.append_batch(node, entries, tree_nodes).await
            })
        }
        fn get_nodes<'a>(
            &'a self,
            node: &'a str,
            ids: &'a [NodeId],
        ) -> StoreFuture<'a, HashMap<NodeId, Hash>> {
            self.inner.get_nodes(node, ids)
        }
        fn tree_nodes_range<'a>(
            &'a self,
            node: &'a str,
            level: u32,
            from: u64,
            to: u64,
        ) -> StoreFuture<'a, Vec<(u64, Hash)>> {
            self.inner.tree_nodes_range(node, level, from, to)
        }
        fn put_checkpoint<'a>(
            &'a self,
            node: &'a str,
            cp: &'a StoredCheckpoint,
        ) -> StoreFuture<'a, ()> {
            self.inner.put_checkpoint(node, cp)
        }
        fn checkpoints<'a>(&'a self, node: &'a str) -> StoreFuture<'a, Vec<StoredCheckpoint>> {
            self.inner.checkpoints(node)
        }
        fn latest_checkpoint<'a>(
            &'a self,
            node: &'a str,
        ) -> StoreFuture<'a, Option<StoredCheckpoint>> {
            self.inner.latest_checkpoint(node)
        }
        fn add_cosignature<'a>(
            &'a self,
            node: &'a str,
            tree_size: u64,
            line: &'a str,
        ) -> StoreFuture<'a, bool> {
            self.inner.add_cosignature(node, tree_size, line)
        }
        fn scan<'a>(
            &'a self,
            node: &'a str,
            from: u64,
            limit: u32,
        ) -> StoreFuture<'a, Vec<LoggedEntry>> {
            self.inner.scan(node, from, limit)
        }
        fn entry<'a>(&'a self, node: &'a str, index: u64) -> StoreFuture<'a, Option<LoggedEntry>> {
            self.inner.entry(node, index)
        }
        fn search<'a>(
            &'a self,
            filter: &'a SearchFilter,
            after: Option<&'a Cursor>,
            limit: u32,
        ) -> StoreFuture<'a, Vec<LoggedEntry>> {
            self.inner.search(filter, after, limit)
        }
        fn prune_cut<'a>(&'a self, node: &'a str, cutoff_us: i64) -> StoreFuture<'a, u64> {
            self.inner.prune_cut(node, cutoff_us)
        }
        fn prune_below<'a>(
            &'a self,
            node: &'a str,
            cut: u64,
            keep: &'a [(NodeId, Hash)],
            pruned: &'a [([u8; 32], tongban_audit::store::PrunedChain)],
        ) -> StoreFuture<'a, u64> {
            self.inner.prune_below(node, cut, keep, pruned)
        }
        fn put_checkpoint_with_map<'a>(
            &'a self,
            node: &'a str,
            cp: &'a StoredCheckpoint,
            map: &'a tongban_audit::store::MapWrite,
        ) -> StoreFuture<'a, ()> {
            self.inner.put_checkpoint_with_map(node, cp, map)
        }
        fn map_leaves<'a>(
            &'a self,
            node: &'a str,
            subjects: &'a [[u8; 32]],
        ) -> StoreFuture<'a, HashMap<[u8; 32], tongban_audit::map::MapValue>> {
            self.inner.map_leaves(node, subjects)
        }
        fn map_nodes<'a>(
            &'a self,
            node: &'a str,
            paths: &'a [tongban_audit::map::MapPath],
        ) -> StoreFuture<'a, Vec<tongban_audit::map::MapNode>> {
            self.inner.map_nodes(node, paths)
        }
        fn map_single_leaf<'a>(
            &'a self,
            node: &'a str,
        ) -> StoreFuture<'a, Option<([u8; 32], tongban_audit::map::MapValue)>> {
            self.inner.map_single_leaf(node)
        }
        fn pruned_chains<'a>(
            &'a self,
            node: &'a str,
            subjects: &'a [[u8; 32]],
        ) -> StoreFuture<'a, HashMap<[u8; 32], tongban_audit::store::PrunedChain>> {
            self.inner.pruned_chains(node, subjects)
        }
        fn subject_snapshot<'a>(
            &'a self,
            node: &'a str,
            subject: &'a [u8; 32],
            paths: &'a [tongban_audit::map::MapPath],
            entries_limit: u32,
        ) -> StoreFuture<'a, tongban_audit::store::SubjectSnapshot> {
            self.inner
                .subject_snapshot(node, subject, paths, entries_limit)
        }
        fn map_reset<'a>(&'a self, node: &'a str) -> StoreFuture<'a, ()> {
            self.inner.map_reset(node)
        }
        fn subject_entries<'a>(
            &'a self,
            node: &'a str,
            subject: &'a str,
            from: u64,
            below: u64,
            limit: u32,
        ) -> StoreFuture<'a, Vec<LoggedEntry>> {
            self.inner
                .subject_entries(node, subject, from, below, limit)
        }
        fn put_unsealed<'a>(
            &'a self,
            node: &'a str,
            index: u64,
            time: chrono::DateTime<chrono::Utc>,
        ) -> StoreFuture<'a, ()> {
            self.inner.put_unsealed(node, index, time)
        }
        fn unsealed<'a>(
            &'a self,
            node: &'a str,
            indexes: &'a [u64],
        ) -> StoreFuture<'a, std::collections::HashSet<u64>> {
            self.inner.unsealed(node, indexes)
        }
    }
}

/// A store that stops answering makes appends fail within the append
/// timeout, calls beyond the queue fail at once, and the log carries on
/// once the store answers again (the late commits land; nobody released).
#[tokio::test]
async fn a_hung_store_fails_appends_within_the_timeout_and_floods_at_once() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (hang, _) = tokio::sync::watch::channel(false);
    let store: Arc<dyn tongban_audit::AuditStore> = Arc::new(HangingStore {
        inner: db.store.clone(),
        hang: hang.clone(),
    });
    let mut cfg = config("n1");
    cfg.queue_capacity = 8;
    cfg.append_timeout = std::time::Duration::from_secs(2);
    // No timed checkpoint while the clock is paused: only the store's I/O
    // would then run, and the paused clock would race it.
    cfg.checkpoint_interval = std::time::Duration::from_secs(3600);
    let log = tongban_audit::AuditLog::open(store, signer("n1"), cfg)
        .await
        .unwrap();
    for i in 0..3 {
        log.append(entry(i, Utc::now())).await.unwrap();
    }
    log.flush().await.unwrap();

    hang.send_replace(true);
    // From here on nothing does I/O: the clock only moves when every task waits.
    tokio::time::pause();
    let t0 = tokio::time::Instant::now();
    let err = log.append(entry(3, Utc::now())).await.unwrap_err();
    let waited = t0.elapsed();
    match &err {
        AuditError::Unavailable(m) => {
            assert_eq!(m, "the audit store did not commit within 2 s");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        waited >= std::time::Duration::from_secs(2)
            && waited < std::time::Duration::from_millis(2100),
        "{waited:?}"
    );

    // The writer is stuck in that commit; fill its queue with waiting calls.
    let mut waiting = Vec::new();
    for i in 0..8 {
        let log = log.clone();
        waiting.push(tokio::spawn(async move {
            log.append_all(vec![entry(10 + i, Utc::now())]).await
        }));
    }
    // On this current-thread runtime one yield lets each spawned call enqueue.
    tokio::task::yield_now().await;
    let t1 = tokio::time::Instant::now();
    for i in 0..20 {
        let err = log.append(entry(100 + i, Utc::now())).await.unwrap_err();
        assert!(
            matches!(&err, AuditError::Unavailable(m) if m.contains("queue is full")),
            "{err:?}"
        );
    }
    assert_eq!(
        t1.elapsed(),
        std::time::Duration::ZERO,
        "refused without waiting"
    );
    for call in waiting {
        let results = call.await.unwrap();
        assert!(
            matches!(&results[..], [Err(AuditError::Unavailable(m))] if m.contains("within 2 s")),
            "{results:?}"
        );
    }
    let stats = log.stats();
    assert_eq!(stats.appends_refused, 20, "{stats:?}");
    assert_eq!(stats.appends_timed_out, 9, "{stats:?}");

    // The store answers again: the abandoned entries commit late, the log goes on.
    tokio::time::resume();
    hang.send_replace(false);
    // Waits its turn behind the backlog (unlike appends, flush may wait).
    log.flush().await.unwrap();
    let r = log.append(entry(200, Utc::now())).await.unwrap();
    assert_eq!(r.index, 3 + 1 + 8, "late commits landed before it");
    log.shutdown().await.unwrap();
    verify_ok(&db, &["n1"]).await;
}

async fn entries_are_bounded_and_clean(b: Backend) {
    let db = TestDb::new(b).await;
    let log = open_log(db.store.clone(), "n1").await;
    let huge = "X".repeat(4 << 20);
    let mut e = entry(0, Utc::now());
    e.case_number = huge.clone();
    e.detail = huge.clone();
    e.evidence_type = format!(
        "{}\n  Result · 结果    released\x1b[31m\u{202e}",
        "e".repeat(16 << 10)
    );
    let mut f = entry(1, Utc::now());
    f.operator = "clerk\r\nforged".into();
    f.caller_unit = huge.clone();
    let r = log.append(e).await.unwrap();
    let rs = log.append_all(vec![f]).await;
    let r2 = rs[0].as_ref().unwrap();
    log.shutdown().await.unwrap();
    let stored = db.store.entry("n1", r.index).await.unwrap().unwrap();
    let x = &stored.entry;
    assert!(x.case_number.chars().count() <= 128);
    assert!(x.case_number.ends_with(" bytes]"), "{}", x.case_number);
    assert!(x.detail.chars().count() <= 1024);
    assert!(x.evidence_type.chars().count() <= 64, "{}", x.evidence_type);
    assert!(x.evidence_type.ends_with(" bytes]"), "{}", x.evidence_type);
    assert!(stored.entry.canonical_bytes(stored.index).len() <= tongban_audit::MAX_ENTRY_BYTES);
    let y = db.store.entry("n1", r2.index).await.unwrap().unwrap().entry;
    assert_eq!(y.operator, "clerk\\u{d}\\u{a}forged");
    assert!(y.caller_unit.chars().count() <= 64);
    for s in [&x.evidence_type, &x.case_number, &y.operator] {
        assert!(!s.chars().any(|c| c.is_control()), "{s:?}");
    }
    verify_ok(&db, &["n1"]).await;
}

/// Whoever builds the entry, the log stores it bounded and without control
/// characters, and it still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_is_stored_bounded_and_clean() {
    for b in BACKENDS {
        entries_are_bounded_and_clean(b).await;
    }
}

async fn v1_then_v2_entries(b: Backend) {
    let db = TestDb::new(b).await;
    let log = open_log(db.store.clone(), "n1").await;
    // Entries as written before policy versions: canonical encoding v1.
    for i in 0..20 {
        let mut e = entry(i, Utc::now());
        e.encoding = tongban_audit::entry::ENTRY_ENCODING_BY_CONTENT;
        log.append(e).await.unwrap();
    }
    let version = "3f".repeat(32);
    for i in 20..40 {
        let mut e = entry(i, Utc::now());
        e.encoding = tongban_audit::entry::ENTRY_ENCODING_BY_CONTENT;
        e.policy_version = version.clone();
        if i == 39 {
            e.kind = tongban_audit::EntryKind::PolicyChange;
        }
        log.append(e).await.unwrap();
    }
    log.shutdown().await.unwrap();
    let old = db.store.entry("n1", 5).await.unwrap().unwrap();
    assert_eq!(old.entry.policy_version, "");
    assert_eq!(old.entry.canonical_bytes(5)[0], 1);
    let new = db.store.entry("n1", 39).await.unwrap().unwrap();
    assert_eq!(new.entry.policy_version, version);
    assert_eq!(new.entry.kind, tongban_audit::EntryKind::PolicyChange);
    assert_eq!(new.entry.canonical_bytes(39)[0], 2);
    let page = search(
        db.store.as_ref(),
        &SearchFilter::default(),
        &PageRequest::default(),
    )
    .await
    .unwrap();
    assert_eq!(page.entries[0].entry.policy_version, version);
    let mut out = Vec::new();
    export_jsonl(db.store.as_ref(), None, &mut out)
        .await
        .unwrap();
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains(&format!("\"policy_version\":\"{version}\""))
    );
    verify_ok(&db, &["n1"]).await;
}

/// A log whose older entries predate policy versions (encoding v1) and
/// whose newer ones carry them (v2) verifies as one tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_of_v1_then_v2_entries_verifies() {
    for b in BACKENDS {
        v1_then_v2_entries(b).await;
    }
}

async fn checkpoint_pages(b: Backend) {
    let db = TestDb::new(b).await;
    let log = open_log(db.store.clone(), "n1").await;
    for i in 0..12 {
        log.append(entry(i, Utc::now())).await.unwrap();
        log.flush().await.unwrap();
    }
    log.shutdown().await.unwrap();
    let store = db.store.as_ref();
    let all = store.checkpoints("n1").await.unwrap();
    assert!(all.len() >= 12, "{}", all.len());
    assert_eq!(
        store.checkpoint_count("n1").await.unwrap(),
        all.len() as u64
    );
    let sizes = |cps: Vec<tongban_audit::store::StoredCheckpoint>| -> Vec<u64> {
        cps.iter().map(|c| c.tree_size).collect()
    };
    let newest_first = |from: usize, to: usize| -> Vec<u64> {
        all[from..to].iter().rev().map(|c| c.tree_size).collect()
    };
    let n = all.len();
    assert_eq!(
        sizes(store.checkpoints_page("n1", None, 5).await.unwrap()),
        newest_first(n - 5, n)
    );
    assert_eq!(
        sizes(
            store
                .checkpoints_page("n1", Some(all[7].tree_size), 3)
                .await
                .unwrap()
        ),
        newest_first(4, 7)
    );
    assert_eq!(
        sizes(
            store
                .checkpoints_page("n1", Some(u64::MAX), 1000)
                .await
                .unwrap()
        ),
        newest_first(0, n)
    );
    assert!(
        store
            .checkpoints_page("n1", Some(all[0].tree_size), 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .checkpoints_page("n2", None, 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.checkpoint_count("n2").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_read_a_page_at_a_time_newest_first() {
    for b in BACKENDS {
        checkpoint_pages(b).await;
    }
}
