//! Each test alters the stored log behind the writer's back with raw SQL and
//! expects `verify` to fail with a finding that names the place.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use crate::common::*;
use chrono::Utc;
use tongban_audit::merkle::CompactRange;
use tongban_audit::{
    AuditLog, Checkpoint, EntryKind, Finding, Location, LogSigner, PruneRecord, PruneRequest,
    VerifyOptions, VerifyReport, origin_for_node, verify,
};

const N: u64 = 40;

/// A log of 40 entries with checkpoints at 8, 16, 24, 32 and 40; returns the
/// database and the last checkpoint, as an auditor would have saved it.
async fn setup(b: Backend) -> (TestDb, String) {
    let db = TestDb::new(b).await;
    let mut cfg = config("n1");
    cfg.checkpoint_every = 8;
    cfg.checkpoint_interval = std::time::Duration::from_secs(3600);
    let log = AuditLog::open(db.store.clone(), signer("n1"), cfg)
        .await
        .unwrap();
    for i in 0..N {
        log.append(entry(i, Utc::now())).await.unwrap();
    }
    let saved = log.shutdown().await.unwrap().unwrap();
    let sizes: Vec<u64> = db
        .store
        .checkpoints("n1")
        .await
        .unwrap()
        .iter()
        .map(|c| c.tree_size)
        .collect();
    assert_eq!(sizes, [8, 16, 24, 32, 40]);
    let clean = run_verify(&db, &[]).await;
    assert!(
        clean.is_ok() && clean.findings.is_empty(),
        "{:#?}",
        clean.findings
    );
    (db, saved)
}

async fn run_verify(db: &TestDb, external: &[String]) -> VerifyReport {
    let mut last = None;
    let r = verify(
        db.store.as_ref(),
        &keyring(&["n1"]),
        &VerifyOptions {
            external_checkpoints: external.to_vec(),
            ..Default::default()
        },
        &mut |p| last = Some((p.checked, p.total)),
    )
    .await
    .unwrap();
    let (checked, total) = last.unwrap_or((0, 0));
    assert!(checked <= total.max(checked));
    r
}

fn has(report: &VerifyReport, loc: Location, words: &str) -> bool {
    report
        .errors()
        .any(|f: &Finding| f.node == "n1" && f.location == loc && f.message.contains(words))
}

fn show(report: &VerifyReport) -> String {
    report
        .findings
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Recomputes every stored subtree hash from the stored leaf hashes, as a
/// careful attacker would after editing entries.
async fn rebuild_tree_nodes(db: &TestDb) {
    let rows = db.store.scan("n1", 0, 10_000).await.unwrap();
    let mut cr = CompactRange::new();
    for r in &rows {
        for (id, h) in cr.append(r.leaf_hash) {
            db.exec(
                "UPDATE audit_tree_nodes SET hash = $1 WHERE node = 'n1' AND level = $2 AND idx = $3",
                vec![Arg::Blob(h.to_vec()), Arg::Int(id.level as i64), Arg::Int(id.index as i64)],
            )
            .await;
        }
    }
}

async fn rewrite_entry(db: &TestDb, index: u64, edit: impl Fn(&mut tongban_audit::AuditEntry)) {
    let mut e = db.store.entry("n1", index).await.unwrap().unwrap().entry;
    edit(&mut e);
    let leaf = e.leaf_hash(index);
    db.exec(
        "UPDATE audit_entries SET operator = $1, matter = $2, leaf_hash = $3 WHERE node = 'n1' AND idx = $4",
        vec![
            Arg::Text(e.operator.clone()),
            Arg::Text(e.matter.clone()),
            Arg::Blob(leaf.to_vec()),
            Arg::Int(index as i64),
        ],
    )
    .await;
}

async fn modified_field(b: Backend) {
    let (db, _) = setup(b).await;
    db.exec(
        "UPDATE audit_entries SET matter = 'pension-qualification-x' WHERE node = 'n1' AND idx = 13",
        vec![],
    )
    .await;
    let r = run_verify(&db, &[]).await;
    assert!(!r.is_ok());
    assert!(
        has(
            &r,
            Location::Entry(13),
            "stored fields do not match the stored leaf hash"
        ),
        "{b:?}\n{}",
        show(&r)
    );
}

async fn modified_field_hashes_recomputed(b: Backend) {
    let (db, _) = setup(b).await;
    rewrite_entry(&db, 13, |e| e.matter = "subsistence-allowance".into()).await;
    rebuild_tree_nodes(&db).await;
    let r = run_verify(&db, &[]).await;
    assert!(!r.is_ok());
    // Leaf and nodes agree with the fields, so only the signature catches it.
    assert!(
        !r.errors()
            .any(|f| matches!(f.location, Location::Entry(_) | Location::TreeNode { .. })),
        "{}",
        show(&r)
    );
    assert!(
        has(
            &r,
            Location::Checkpoint(16),
            "entries in 8..15 were altered"
        ),
        "{b:?}\n{}",
        show(&r)
    );
}

async fn modified_tree_node(b: Backend) {
    let (db, _) = setup(b).await;
    db.exec(
        "UPDATE audit_tree_nodes SET hash = $1 WHERE node = 'n1' AND level = 2 AND idx = 3",
        vec![Arg::Blob(vec![0u8; 32])],
    )
    .await;
    let r = run_verify(&db, &[]).await;
    assert!(
        has(
            &r,
            Location::TreeNode { level: 2, index: 3 },
            "entries 12..15 differs"
        ),
        "{b:?}\n{}",
        show(&r)
    );
}

async fn deleted_entry(b: Backend) {
    let (db, _) = setup(b).await;
    db.exec(
        "DELETE FROM audit_entries WHERE node = 'n1' AND idx = 20",
        vec![],
    )
    .await;
    let r = run_verify(&db, &[]).await;
    assert!(
        has(
            &r,
            Location::Entry(20),
            "entries 20..20 are missing (deleted)"
        ),
        "{b:?}\n{}",
        show(&r)
    );
}

async fn swap_rows(db: &TestDb, a: u64, b: u64) {
    for (from, to) in [(a, 1_000_000), (b, a as i64 as u64), (1_000_000, b)] {
        db.exec(
            "UPDATE audit_entries SET idx = $1 WHERE node = 'n1' AND idx = $2",
            vec![Arg::Int(to as i64), Arg::Int(from as i64)],
        )
        .await;
    }
}

async fn reordered_entries(b: Backend) {
    let (db, _) = setup(b).await;
    swap_rows(&db, 5, 6).await;
    let r = run_verify(&db, &[]).await;
    assert!(
        has(&r, Location::Entry(5), "modified, moved or inserted"),
        "{b:?}\n{}",
        show(&r)
    );
    assert!(
        has(&r, Location::Entry(6), "modified, moved or inserted"),
        "{b:?}\n{}",
        show(&r)
    );
    assert!(
        has(&r, Location::Checkpoint(8), "entries in 0..7"),
        "{b:?}\n{}",
        show(&r)
    );
}

async fn inserted_entry(b: Backend) {
    let (db, _) = setup(b).await;
    // Make room at 10 and insert a forged entry with a well-formed leaf hash.
    db.exec(
        "UPDATE audit_entries SET idx = idx + 1000000 WHERE node = 'n1' AND idx >= 10",
        vec![],
    )
    .await;
    db.exec(
        "UPDATE audit_entries SET idx = idx - 999999 WHERE node = 'n1' AND idx >= 1000000",
        vec![],
    )
    .await;
    let mut forged = entry(10, Utc::now());
    forged.node = "n1".into();
    forged.case_number = "PZH-2026-FORGED".into();
    let leaf = forged.leaf_hash(10);
    let cols = "node, idx, time_us, kind, caller_org, caller_unit, operator, matter, case_number, evidence_type, department, subject, outcome_code, outcome_reason, latency_us, trace_id, released_fields_hash, detail, encoding, leaf_hash";
    db.exec(
        &format!("INSERT INTO audit_entries ({cols}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"),
        vec![
            Arg::Text("n1".into()),
            Arg::Int(10),
            Arg::Int(forged.time.timestamp_micros()),
            Arg::Text("Lookup".into()),
            Arg::Text(forged.caller_org.clone()),
            Arg::Text(forged.caller_unit.clone()),
            Arg::Text(forged.operator.clone()),
            Arg::Text(forged.matter.clone()),
            Arg::Text(forged.case_number.clone()),
            Arg::Text(forged.evidence_type.clone()),
            Arg::Text(forged.department.clone()),
            Arg::Text(forged.subject.clone()),
            Arg::Int32(0),
            Arg::Text(String::new()),
            Arg::Int(forged.latency_us as i64),
            Arg::Text(forged.trace_id.clone()),
            Arg::Text(forged.released_fields_hash.clone()),
            Arg::Text(String::new()),
            Arg::Int32(i32::from(forged.encoding)),
            Arg::Blob(leaf.to_vec()),
        ],
    )
    .await;
    let r = run_verify(&db, &[]).await;
    // The forged row itself hashes fine; the shifted ones and the signed root do not.
    assert!(
        !r.errors().any(|f| f.location == Location::Entry(10)),
        "{}",
        show(&r)
    );
    assert!(
        has(&r, Location::Entry(11), "modified, moved or inserted"),
        "{b:?}\n{}",
        show(&r)
    );
    assert!(
        has(&r, Location::Checkpoint(16), "entries in 8..15"),
        "{b:?}\n{}",
        show(&r)
    );
}

async fn truncated_tail(b: Backend) {
    let (db, saved) = setup(b).await;
    // Remove entries 30.. and the checkpoints that would betray it.
    db.exec(
        "DELETE FROM audit_entries WHERE node = 'n1' AND idx >= 30",
        vec![],
    )
    .await;
    db.exec(
        "DELETE FROM audit_checkpoints WHERE node = 'n1' AND tree_size > 30",
        vec![],
    )
    .await;
    let r = run_verify(&db, std::slice::from_ref(&saved)).await;
    assert!(
        has(
            &r,
            Location::ExternalCheckpoint(40),
            "the log holds only 30: entries 30..39 were removed (truncated tail)"
        ),
        "{b:?}\n{}",
        show(&r)
    );
    assert!(
        has(
            &r,
            Location::ExternalCheckpoint(40),
            "latest valid checkpoint (size 24) is older than a checkpoint saved externally at size 40"
        ),
        "{b:?}\n{}",
        show(&r)
    );
    // Deleting entries but not checkpoints is caught without outside help.
    let (db, _) = setup(b).await;
    db.exec(
        "DELETE FROM audit_entries WHERE node = 'n1' AND idx >= 35",
        vec![],
    )
    .await;
    let r = run_verify(&db, &[]).await;
    assert!(
        has(&r, Location::Checkpoint(40), "entries 35..39 were removed"),
        "{b:?}\n{}",
        show(&r)
    );
}

async fn forked_history(b: Backend) {
    let (db, saved) = setup(b).await;
    // Rebuild history from index 20 with other content, recompute every hash,
    // and re-sign the later checkpoints with the attacker's own key.
    for i in 20..N {
        rewrite_entry(&db, i, |e| e.operator = "nobody".into()).await;
    }
    rebuild_tree_nodes(&db).await;
    db.exec(
        "DELETE FROM audit_checkpoints WHERE node = 'n1' AND tree_size > 16",
        vec![],
    )
    .await;
    let attacker = LogSigner::generate(&origin_for_node("n1")).unwrap();
    let rows = db.store.scan("n1", 0, 100).await.unwrap();
    let mut cr = CompactRange::new();
    for r in &rows {
        cr.append(r.leaf_hash);
        if [24, 32, 40].contains(&cr.size()) {
            let cp = Checkpoint {
                origin: origin_for_node("n1"),
                size: cr.size(),
                root: cr.root(),
                time: Utc::now(),
                map: None,
                pruned: None,
            };
            db.store
                .put_checkpoint(
                    "n1",
                    &tongban_audit::store::StoredCheckpoint {
                        tree_size: cp.size,
                        root: cp.root,
                        time: cp.time,
                        note: cp.sign(&attacker).unwrap(),
                    },
                )
                .await
                .unwrap();
        }
    }
    let r = run_verify(&db, &[saved]).await;
    for s in [24, 32, 40] {
        assert!(
            has(&r, Location::Checkpoint(s), "not signed by any pinned key"),
            "{b:?}\n{}",
            show(&r)
        );
    }
    assert!(
        has(
            &r,
            Location::ExternalCheckpoint(40),
            "signed root differs from the root recomputed"
        ),
        "{b:?}\n{}",
        show(&r)
    );
}

async fn wrong_key_checkpoint(b: Backend) {
    let (db, _) = setup(b).await;
    let row = db
        .store
        .checkpoints("n1")
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.tree_size == 16)
        .unwrap();
    let cp = Checkpoint::open(&row.note, &keyring(&["n1"]), &origin_for_node("n1")).unwrap();
    let other = LogSigner::from_seed(&origin_for_node("n1"), &[42u8; 32]).unwrap();
    db.exec(
        "UPDATE audit_checkpoints SET note = $1 WHERE node = 'n1' AND tree_size = 16",
        vec![Arg::Text(cp.sign(&other).unwrap())],
    )
    .await;
    let r = run_verify(&db, &[]).await;
    assert!(
        has(&r, Location::Checkpoint(16), "not signed by any pinned key"),
        "{b:?}\n{}",
        show(&r)
    );
    // A tampered signature by the pinned key is reported as invalid.
    let forged = row.note.replacen("\n16\n", "\n17\n", 1);
    db.exec(
        "UPDATE audit_checkpoints SET note = $1 WHERE node = 'n1' AND tree_size = 16",
        vec![Arg::Text(forged)],
    )
    .await;
    let r = run_verify(&db, &[]).await;
    assert!(
        has(&r, Location::Checkpoint(16), "is invalid"),
        "{b:?}\n{}",
        show(&r)
    );
}

async fn replayed_checkpoint(b: Backend) {
    let (db, saved) = setup(b).await;
    // (a) An older signed note stored as if it were a newer checkpoint.
    let old = db.store.checkpoints("n1").await.unwrap()[0].note.clone();
    db.exec(
        "UPDATE audit_checkpoints SET note = $1 WHERE node = 'n1' AND tree_size = 40",
        vec![Arg::Text(old)],
    )
    .await;
    let r = run_verify(&db, &[]).await;
    assert!(
        has(
            &r,
            Location::Checkpoint(40),
            "row says size 40 but its signed note is for size 8"
        ),
        "{b:?}\n{}",
        show(&r)
    );
    // (b) Rolled back to an older, genuinely signed state: consistent on its
    // own, caught only against the checkpoint an auditor saved earlier.
    let (db, _) = setup(b).await;
    db.exec(
        "DELETE FROM audit_entries WHERE node = 'n1' AND idx >= 16",
        vec![],
    )
    .await;
    db.exec(
        "DELETE FROM audit_checkpoints WHERE node = 'n1' AND tree_size > 16",
        vec![],
    )
    .await;
    assert!(run_verify(&db, &[]).await.is_ok());
    let r = run_verify(&db, &[saved]).await;
    assert!(
        has(
            &r,
            Location::ExternalCheckpoint(40),
            "latest valid checkpoint (size 16) is older"
        ),
        "{b:?}\n{}",
        show(&r)
    );
}

/// 20 entries 200 days old and 20 fresh ones, checkpoints every 8, then a
/// legitimate 183-day prune: its record is entry 40 (before_index=20), the
/// checkpoint at 41 covers it, entries 0..19 are gone. Returns the database
/// and the last checkpoint, as an auditor would have saved it.
async fn setup_pruned(b: Backend) -> (TestDb, String) {
    let db = TestDb::new(b).await;
    let mut cfg = config("n1");
    cfg.checkpoint_every = 8;
    cfg.checkpoint_interval = std::time::Duration::from_secs(3600);
    let log = AuditLog::open(db.store.clone(), signer("n1"), cfg)
        .await
        .unwrap();
    for i in 0..N {
        let time = if i < 20 {
            now_minus_days(200)
        } else {
            Utc::now()
        };
        log.append(entry(i, time)).await.unwrap();
    }
    let report = log
        .prune(PruneRequest {
            operator: "auditor-zhao".into(),
            reason: "ticket OPS-17".into(),
            ..PruneRequest::retention(183, Utc::now())
        })
        .await
        .unwrap();
    assert_eq!(
        (report.pruned_before, report.deleted, report.record_index),
        (20, 20, Some(40))
    );
    let saved = log.shutdown().await.unwrap().unwrap();
    assert_eq!(
        db.store
            .latest_checkpoint("n1")
            .await
            .unwrap()
            .unwrap()
            .tree_size,
        41
    );
    (db, saved)
}

async fn set_boundary(db: &TestDb, boundary: u64) {
    db.exec(
        "DELETE FROM audit_entries WHERE node = 'n1' AND idx < $1",
        vec![Arg::Int(boundary as i64)],
    )
    .await;
    db.exec(
        "UPDATE audit_logs SET pruned_before = $1 WHERE node = 'n1'",
        vec![Arg::Int(boundary as i64)],
    )
    .await;
}

async fn legitimate_prune(b: Backend) {
    let (db, saved) = setup_pruned(b).await;
    let r = run_verify(&db, &[saved]).await;
    assert!(r.is_ok() && r.findings.is_empty(), "{b:?}\n{}", show(&r));
    assert_eq!(r.nodes[0].first_index, 20);
    assert_eq!(r.nodes[0].entries_checked, 21);
    let record = db.store.entry("n1", 40).await.unwrap().unwrap().entry;
    assert_eq!(record.kind, EntryKind::Prune);
    assert_eq!(record.operator, "auditor-zhao");
    let parsed = PruneRecord::parse(&record.detail).unwrap();
    assert_eq!((parsed.before_index, parsed.older_than_days), (20, 183));
    assert_eq!(parsed.reason, "ticket OPS-17");
}

async fn forged_boundary(b: Backend) {
    // The reported attack: minutes-old entries deleted, the boundary moved.
    let (db, _) = setup(b).await;
    set_boundary(&db, 16).await;
    let r = run_verify(&db, &[]).await;
    assert!(
        has(
            &r,
            Location::Log,
            "entries below 16 were removed but no prune record in the retained log authorises it"
        ),
        "{b:?}\n{}",
        show(&r)
    );
    assert!(show(&r).contains("ERROR node n1, log:"), "{}", show(&r));
}

async fn boundary_beyond_the_record(b: Backend) {
    let (db, _) = setup_pruned(b).await;
    set_boundary(&db, 24).await;
    let r = run_verify(&db, &[]).await;
    assert!(
        has(
            &r,
            Location::Log,
            "(the record at entry 40) allows pruning only below 20: entries 20..23 were deleted without a prune record"
        ),
        "{b:?}\n{}",
        show(&r)
    );
}

async fn front_deleted_boundary_kept(b: Backend) {
    let (db, _) = setup_pruned(b).await;
    db.exec(
        "DELETE FROM audit_entries WHERE node = 'n1' AND idx < 24",
        vec![],
    )
    .await;
    let r = run_verify(&db, &[]).await;
    assert!(
        has(
            &r,
            Location::Entry(20),
            "entries 20..23 are missing (deleted)"
        ),
        "{b:?}\n{}",
        show(&r)
    );
}

async fn record_not_under_a_signed_checkpoint(b: Backend) {
    // The checkpoints that cover the record are gone: the record could be
    // anyone's, so it authorises nothing.
    let (db, _) = setup_pruned(b).await;
    db.exec(
        "DELETE FROM audit_checkpoints WHERE node = 'n1' AND tree_size > 32",
        vec![],
    )
    .await;
    let r = run_verify(&db, &[]).await;
    assert!(
        has(
            &r,
            Location::Entry(40),
            "only authority for the prune boundary 20, and no checkpoint signed by a pinned key covers it"
        ),
        "{b:?}\n{}",
        show(&r)
    );
    // Below the boundary itself, too: only signed entries are ever pruned.
    db.exec(
        "DELETE FROM audit_checkpoints WHERE node = 'n1' AND tree_size > 16",
        vec![],
    )
    .await;
    let r = run_verify(&db, &[]).await;
    assert!(
        has(
            &r,
            Location::Log,
            "entries below 20 were pruned but the latest signed checkpoint covers only 16"
        ),
        "{b:?}\n{}",
        show(&r)
    );
}

async fn pruned_log_tail_deleted(b: Backend) {
    // (a) Tail entries gone, checkpoints kept.
    let (db, _) = setup_pruned(b).await;
    db.exec(
        "DELETE FROM audit_entries WHERE node = 'n1' AND idx >= 36",
        vec![],
    )
    .await;
    let r = run_verify(&db, &[]).await;
    assert!(
        has(&r, Location::Checkpoint(41), "entries 36..40 were removed"),
        "{b:?}\n{}",
        show(&r)
    );
    // (b) Tail and the checkpoints covering it gone: the saved checkpoint
    // catches the truncation, and the boundary has lost its authority even
    // without it.
    let (db, saved) = setup_pruned(b).await;
    db.exec(
        "DELETE FROM audit_entries WHERE node = 'n1' AND idx >= 32",
        vec![],
    )
    .await;
    db.exec(
        "DELETE FROM audit_checkpoints WHERE node = 'n1' AND tree_size > 32",
        vec![],
    )
    .await;
    let r = run_verify(&db, std::slice::from_ref(&saved)).await;
    assert!(
        has(
            &r,
            Location::ExternalCheckpoint(41),
            "the log holds only 32: entries 32..40 were removed (truncated tail)"
        ),
        "{b:?}\n{}",
        show(&r)
    );
    let r = run_verify(&db, &[]).await;
    assert!(
        has(
            &r,
            Location::Log,
            "entries below 20 were removed but no prune record in the retained log authorises it"
        ),
        "{b:?}\n{}",
        show(&r)
    );
}

macro_rules! on_both_backends {
    ($($name:ident => $case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            for b in BACKENDS {
                $case(b).await;
            }
        }
    )*};
}

on_both_backends! {
    tamper_modified_field => modified_field,
    tamper_modified_field_with_hashes_recomputed => modified_field_hashes_recomputed,
    tamper_modified_tree_node => modified_tree_node,
    tamper_deleted_entry => deleted_entry,
    tamper_reordered_entries => reordered_entries,
    tamper_inserted_entry => inserted_entry,
    tamper_truncated_tail => truncated_tail,
    tamper_forked_history => forked_history,
    tamper_checkpoint_signed_with_wrong_key => wrong_key_checkpoint,
    tamper_replayed_older_checkpoint => replayed_checkpoint,
    prune_recorded_and_signed_verifies => legitimate_prune,
    tamper_forged_prune_boundary => forged_boundary,
    tamper_prune_boundary_beyond_its_record => boundary_beyond_the_record,
    tamper_pruned_log_front_deleted_without_moving_the_boundary => front_deleted_boundary_kept,
    tamper_prune_record_not_under_a_signed_checkpoint => record_not_under_a_signed_checkpoint,
    tamper_pruned_log_tail_deleted => pruned_log_tail_deleted,
}
