//! The subject map kept by the writer: every signed checkpoint's map root
//! proves each subject's entries (present or absent) through the store's
//! snapshot, across recovery, a log that starts keeping a map late, and
//! pruning; `verify` recomputes the map and catches a key holder signing a
//! wrong one.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tongban_audit::map::{self, Key, MapValue};
use tongban_audit::{
    AuditConfig, AuditLog, AuditStore, Checkpoint, Hash, Location, PruneRequest, Severity,
    VerifyOptions, VerifyReport, origin_for_node, verify,
};

use crate::common::*;

const VRF: [u8; 32] = [7u8; 32];

/// Every entry the test appended about each subject: (index, leaf hash).
type Expected = BTreeMap<Key, Vec<(u64, Hash)>>;

fn map_config(transparency: Option<[u8; 32]>) -> AuditConfig {
    let mut cfg = config("n1");
    // Checkpoints only when the test flushes.
    cfg.checkpoint_every = 1_000_000;
    cfg.checkpoint_interval = std::time::Duration::from_secs(3600);
    cfg.transparency = transparency;
    cfg
}

async fn open(store: Arc<dyn AuditStore>, transparency: Option<[u8; 32]>) -> AuditLog {
    AuditLog::open(store, signer("n1"), map_config(transparency))
        .await
        .unwrap()
}

fn subjects(rng: &mut StdRng, n: usize) -> Vec<Key> {
    (0..n)
        .map(|_| {
            let mut k = [0u8; 32];
            rng.fill_bytes(&mut k);
            k
        })
        .collect()
}

/// Appends `n` entries at `time`: most about one of `subjects` (chosen by
/// the seeded `rng`), every fourth about nobody.
async fn append(
    log: &AuditLog,
    rng: &mut StdRng,
    subjects: &[Key],
    n: u64,
    time: chrono::DateTime<Utc>,
    expected: &mut Expected,
) {
    for i in 0..n {
        let mut e = entry(i, time);
        let subject = (!rng.next_u32().is_multiple_of(4))
            .then(|| subjects[rng.next_u32() as usize % subjects.len()]);
        e.subject = subject.map(hex::encode).unwrap_or_default();
        let receipt = log.append(e).await.unwrap();
        if let Some(k) = subject {
            expected
                .entry(k)
                .or_default()
                .push((receipt.index, receipt.leaf_hash));
        }
    }
}

/// A portal's check of every subject (and of one nobody has) against the
/// latest checkpoint, through the store's one-snapshot read. Returns the
/// opened checkpoint.
async fn check_subjects(db: &TestDb, expected: &Expected, absent: &Key) -> Checkpoint {
    check_subjects_under(db, expected, absent, VRF).await
}

async fn check_subjects_under(
    db: &TestDb,
    expected: &Expected,
    absent: &Key,
    vrf: [u8; 32],
) -> Checkpoint {
    let keys = keyring(&["n1"]);
    let mut latest = None;
    for key in expected.keys().chain([absent]) {
        let snap = db
            .store
            .subject_snapshot("n1", key, &map::prove_paths(key), 10_000)
            .await
            .unwrap();
        let cp = Checkpoint::open(
            &snap.checkpoint.as_ref().unwrap().note,
            &keys,
            &origin_for_node("n1"),
        )
        .unwrap();
        let commitment = cp.map.expect("the checkpoint commits to a map");
        assert_eq!(commitment.vrf_key, vrf);
        let value_of = |k: &Key| {
            if k == key {
                snap.value.map(|v| v.hash())
            } else {
                snap.terminal_leaf
                    .filter(|(t, _)| t == k)
                    .map(|(_, v)| v.hash())
            }
        };
        let proof = map::prove(
            key,
            snap.path_nodes.clone(),
            snap.single_leaf.map(|(k, v)| (k, v.hash())),
            value_of,
        )
        .unwrap();
        // What the portal is shown: the retained entries below the
        // checkpoint, chained on from the subject's pruned chain.
        let shown: Vec<(u64, Hash)> = snap
            .entries
            .iter()
            .map(|e| (e.index, e.entry.leaf_hash(e.index)))
            .collect();
        let all: Vec<(u64, Hash)> = expected
            .get(key)
            .map(|v| v.iter().copied().filter(|(i, _)| *i < cp.size).collect())
            .unwrap_or_default();
        let retained: Vec<(u64, Hash)> = all
            .iter()
            .copied()
            .filter(|(i, _)| *i >= snap.pruned_before)
            .collect();
        assert_eq!(shown, retained, "the snapshot shows the retained entries");
        let start = snap.pruned.map(|p| p.value()).unwrap_or_default();
        let value = map::chain(shown.iter().copied(), start).unwrap();
        // The pruned chain stands exactly for the pruned entries.
        assert_eq!(
            value,
            map::chain(all.iter().copied(), MapValue::default()).unwrap()
        );
        let claimed = (value.count > 0).then(|| value.hash());
        map::verify(&commitment.root, key, claimed, &proof).unwrap();
        if snap.pruned.is_none() {
            map::verify_subject(&commitment.root, key, shown.iter().copied(), &proof).unwrap();
        }
        if key == absent {
            assert_eq!(value.count, 0);
            assert!(snap.value.is_none());
            // Claiming an entry for it fails.
            let forged = MapValue::default();
            let mut forged = forged;
            forged.extend(0, &[1u8; 32]);
            assert!(map::verify(&commitment.root, key, Some(forged.hash()), &proof).is_err());
        } else {
            assert_eq!(snap.value, Some(value));
            // Leaving out the last entry fails.
            if let Some((_, rest)) = shown.split_last() {
                let short = map::chain(rest.iter().copied(), start).unwrap();
                let claimed = (short.count > 0).then(|| short.hash());
                assert!(map::verify(&commitment.root, key, claimed, &proof).is_err());
            }
        }
        latest = Some(cp);
    }
    latest.unwrap()
}

async fn run_verify(db: &TestDb) -> VerifyReport {
    verify(
        db.store.as_ref(),
        &keyring(&["n1"]),
        &VerifyOptions::default(),
        &mut |_| {},
    )
    .await
    .unwrap()
}

fn show(report: &VerifyReport) -> String {
    report
        .findings
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn absent_key(rng: &mut StdRng) -> Key {
    subjects(rng, 1)[0]
}

async fn writer_keeps_the_map(b: Backend) {
    let db = TestDb::new(b).await;
    let mut rng = StdRng::seed_from_u64(13);
    let people = subjects(&mut rng, 6);
    let absent = absent_key(&mut rng);
    let mut expected = Expected::new();
    let log = open(db.store.clone(), Some(VRF)).await;
    // One subject first: the map is a single leaf, no internal node.
    append(&log, &mut rng, &people[..1], 3, Utc::now(), &mut expected).await;
    log.flush().await.unwrap();
    check_subjects(&db, &expected, &absent).await;
    for round in 0..3 {
        append(&log, &mut rng, &people, 40, Utc::now(), &mut expected).await;
        let note = log.flush().await.unwrap().unwrap();
        let cp = check_subjects(&db, &expected, &absent).await;
        assert!(note.contains("\nmap "), "round {round}: {note}");
        assert_eq!(cp.size, 3 + 40 * (round + 1));
    }
    log.shutdown().await.unwrap();
    // Recovery: the map continues from the latest checkpoint.
    let log = open(db.reopen().await, Some(VRF)).await;
    append(&log, &mut rng, &people, 40, Utc::now(), &mut expected).await;
    log.shutdown().await.unwrap();
    let cp = check_subjects(&db, &expected, &absent).await;
    assert_eq!(cp.size, 163);
    let r = run_verify(&db).await;
    assert!(r.is_ok() && r.findings.is_empty(), "{b:?}\n{}", show(&r));
    assert_eq!(r.nodes[0].maps_checked, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_keeps_a_map_that_proves_every_subject() {
    for b in BACKENDS {
        writer_keeps_the_map(b).await;
    }
}

async fn map_built_late(b: Backend) {
    let db = TestDb::new(b).await;
    let mut rng = StdRng::seed_from_u64(14);
    let people = subjects(&mut rng, 5);
    let absent = absent_key(&mut rng);
    let mut expected = Expected::new();
    let log = open(db.store.clone(), None).await;
    append(&log, &mut rng, &people, 30, Utc::now(), &mut expected).await;
    log.flush().await.unwrap();
    append(&log, &mut rng, &people, 30, Utc::now(), &mut expected).await;
    let note = log.shutdown().await.unwrap().unwrap();
    assert!(!note.contains("\nmap "));
    let log = open(db.reopen().await, Some(VRF)).await;
    // Reopening signs nothing new (no unsigned tail): the first map comes
    // with the next checkpoint, over every entry.
    append(&log, &mut rng, &people, 10, Utc::now(), &mut expected).await;
    log.shutdown().await.unwrap();
    let cp = check_subjects(&db, &expected, &absent).await;
    assert_eq!(cp.size, 70);
    let r = run_verify(&db).await;
    assert!(r.is_ok() && r.findings.is_empty(), "{b:?}\n{}", show(&r));
    assert_eq!(r.nodes[0].maps_checked, 1);
    assert_eq!(r.nodes[0].checkpoints_checked, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_kept_without_a_map_gets_one_over_all_its_entries() {
    for b in BACKENDS {
        map_built_late(b).await;
    }
}

/// A log with a map whose first 60 entries are 200 days old, pruned at
/// 183 days; checkpoints at 30, 60, 90 and after the prune record. Returns
/// the database, what was appended, and one subject's key besides.
async fn setup_pruned(b: Backend) -> (TestDb, Expected, Key) {
    let db = TestDb::new(b).await;
    let mut rng = StdRng::seed_from_u64(15);
    let people = subjects(&mut rng, 6);
    let absent = absent_key(&mut rng);
    let mut expected = Expected::new();
    let log = open(db.store.clone(), Some(VRF)).await;
    let old = now_minus_days(200);
    append(&log, &mut rng, &people, 30, old, &mut expected).await;
    log.flush().await.unwrap();
    append(&log, &mut rng, &people, 30, old, &mut expected).await;
    // Someone whose every entry will be pruned: still in the map after.
    let gone = absent_key(&mut rng);
    append(&log, &mut rng, &[gone], 2, old, &mut expected).await;
    log.flush().await.unwrap();
    append(&log, &mut rng, &people, 30, Utc::now(), &mut expected).await;
    log.flush().await.unwrap();
    let report = log
        .prune(PruneRequest::retention(183, Utc::now()))
        .await
        .unwrap();
    assert_eq!((report.pruned_before, report.deleted), (62, 62));
    append(&log, &mut rng, &people, 10, Utc::now(), &mut expected).await;
    log.shutdown().await.unwrap();
    assert!(expected.contains_key(&gone));
    (db, expected, absent)
}

async fn pruned_chains_carry_the_map(b: Backend) {
    let (db, expected, absent) = setup_pruned(b).await;
    let cp = check_subjects(&db, &expected, &absent).await;
    let boundary = cp.pruned.expect("the checkpoint names the prune boundary");
    assert_eq!(boundary.before, 62);
    assert!(boundary.cutoff < Utc::now() - chrono::TimeDelta::days(182));
    // Some subject had entries on both sides of the boundary.
    let keys: Vec<Key> = expected.keys().copied().collect();
    let chains = db.store.pruned_chains("n1", &keys).await.unwrap();
    assert_eq!(chains.len(), keys.len());
    assert!(
        expected
            .values()
            .any(|v| v.first().unwrap().0 < 62 && v.last().unwrap().0 >= 62)
    );
    let r = run_verify(&db).await;
    assert!(r.is_ok() && r.findings.is_empty(), "{b:?}\n{}", show(&r));
    // The checkpoint at 30 is under the boundary; the one on it is
    // recomputed from the pruned chains alone; 92, the one over the prune
    // record, and the last from them and the retained entries.
    assert_eq!(r.nodes[0].maps_checked, 4);
    // Reopening, even under a new VRF key, continues the pruned log's map.
    let log = open(db.reopen().await, Some([9u8; 32])).await;
    let mut expected = expected;
    let mut rng = StdRng::seed_from_u64(16);
    let people: Vec<Key> = expected.keys().copied().collect();
    append(&log, &mut rng, &people, 10, Utc::now(), &mut expected).await;
    log.shutdown().await.unwrap();
    check_subjects_under(&db, &expected, &absent, [9u8; 32]).await;
    let r = run_verify(&db).await;
    assert!(r.is_ok(), "{b:?}\n{}", show(&r));
    assert_eq!(r.findings.len(), 1, "{b:?}\n{}", show(&r));
    assert!(r.findings[0].message.contains("VRF key"));
    assert_eq!(r.nodes[0].maps_checked, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_chains_and_retained_entries_reproduce_the_map() {
    for b in BACKENDS {
        pruned_chains_carry_the_map(b).await;
    }
}

fn map_mismatch_at(report: &VerifyReport, size: u64) -> bool {
    report.errors().any(|f| {
        f.location == Location::Checkpoint(size)
            && f.message
                .contains("commits to a subject map that does not follow from the log's entries")
    })
}

async fn forged_map(b: Backend) {
    let db = TestDb::new(b).await;
    let mut rng = StdRng::seed_from_u64(17);
    let people = subjects(&mut rng, 5);
    let mut expected = Expected::new();
    let log = open(db.store.clone(), Some(VRF)).await;
    for _ in 0..3 {
        append(&log, &mut rng, &people, 30, Utc::now(), &mut expected).await;
        log.flush().await.unwrap();
    }
    log.shutdown().await.unwrap();
    assert!(run_verify(&db).await.is_ok());

    // A key holder leaves a subject's last entry out of the map: the leaf
    // row is rolled back one entry, and the latest checkpoint re-signed
    // over the root of the altered leaves.
    let keys: Vec<Key> = expected.keys().copied().collect();
    let mut leaves = db.store.map_leaves("n1", &keys).await.unwrap();
    let victim = keys[0];
    let entries = &expected[&victim];
    let rolled_back = map::chain(
        entries[..entries.len() - 1].iter().copied(),
        MapValue::default(),
    )
    .unwrap();
    leaves.insert(victim, rolled_back);
    db.exec(
        "UPDATE audit_map_leaves SET count = $1, head = $2 WHERE node = 'n1' AND subject = $3",
        vec![
            Arg::Int(rolled_back.count as i64),
            Arg::Blob(rolled_back.head.to_vec()),
            Arg::Blob(victim.to_vec()),
        ],
    )
    .await;
    let root = map::root_from_leaves(leaves.iter().map(|(k, v)| (*k, v.hash())).collect()).unwrap();
    let latest = db.store.latest_checkpoint("n1").await.unwrap().unwrap();
    let mut cp = Checkpoint::open(&latest.note, &keyring(&["n1"]), &origin_for_node("n1")).unwrap();
    let mut commitment = cp.map.unwrap();
    assert_ne!(commitment.root, root);
    commitment.root = root;
    cp.map = Some(commitment);
    let note = cp.sign(&signer("n1")).unwrap();
    let rows = db
        .exec(
            "UPDATE audit_checkpoints SET note = $1 WHERE node = 'n1' AND tree_size = $2",
            vec![Arg::Text(note), Arg::Int(cp.size as i64)],
        )
        .await;
    assert_eq!(rows, 1);
    // The forged map is self-consistent: the victim's proof verifies
    // against it with one entry fewer than the log holds.
    let snap = db
        .store
        .subject_snapshot("n1", &victim, &map::prove_paths(&victim), 10_000)
        .await
        .unwrap();
    assert_eq!(snap.value, Some(rolled_back));

    let r = run_verify(&db).await;
    assert!(!r.is_ok());
    assert!(map_mismatch_at(&r, 90), "{b:?}\n{}", show(&r));
    // Only the forged checkpoint: the earlier ones and the tree are fine.
    assert_eq!(r.errors().count(), 1, "{b:?}\n{}", show(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_catches_a_signed_map_that_leaves_an_entry_out() {
    for b in BACKENDS {
        forged_map(b).await;
    }
}

async fn forged_pruned_chain(b: Backend) {
    let (db, expected, _) = setup_pruned(b).await;
    // Someone with pruned entries: their pruned chain says one fewer.
    let (victim, entries) = expected
        .iter()
        .find(|(_, v)| v.iter().filter(|(i, _)| *i < 62).count() >= 2)
        .unwrap();
    db.exec(
        "UPDATE audit_map_pruned SET count = count - 1 WHERE node = 'n1' AND subject = $1",
        vec![Arg::Blob(victim.to_vec())],
    )
    .await;
    assert!(entries.len() >= 2);
    let r = run_verify(&db).await;
    // The pruned chain itself cannot be checked (its entries are gone), but
    // every map signed over it stops following from it.
    let sizes: Vec<u64> = r
        .errors()
        .filter_map(|f| match f.location {
            Location::Checkpoint(s) if f.message.contains("subject map") => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [62, 92, 93, 103], "{b:?}\n{}", show(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_catches_an_altered_pruned_chain() {
    for b in BACKENDS {
        forged_pruned_chain(b).await;
    }
}

async fn vrf_key_change(b: Backend) {
    let db = TestDb::new(b).await;
    let mut rng = StdRng::seed_from_u64(18);
    let people = subjects(&mut rng, 4);
    let mut expected = Expected::new();
    let log = open(db.store.clone(), Some(VRF)).await;
    append(&log, &mut rng, &people, 20, Utc::now(), &mut expected).await;
    log.shutdown().await.unwrap();
    let log = open(db.reopen().await, Some([8u8; 32])).await;
    append(&log, &mut rng, &people, 20, Utc::now(), &mut expected).await;
    log.shutdown().await.unwrap();
    let r = run_verify(&db).await;
    assert!(r.is_ok(), "{b:?}\n{}", show(&r));
    let warnings: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .collect();
    assert_eq!(warnings.len(), 1, "{b:?}\n{}", show(&r));
    assert_eq!(warnings[0].location, Location::Checkpoint(40));
    assert!(warnings[0].message.contains("VRF key"));
    assert_eq!(r.nodes[0].maps_checked, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_warns_when_the_vrf_key_changes() {
    for b in BACKENDS {
        vrf_key_change(b).await;
    }
}

async fn map_switched_off_and_on(b: Backend) {
    let db = TestDb::new(b).await;
    let mut rng = StdRng::seed_from_u64(19);
    let people = subjects(&mut rng, 5);
    let absent = absent_key(&mut rng);
    let mut expected = Expected::new();
    let log = open(db.store.clone(), Some(VRF)).await;
    append(
        &log,
        &mut rng,
        &people,
        30,
        now_minus_days(200),
        &mut expected,
    )
    .await;
    log.flush().await.unwrap();
    let pruned = log
        .prune(PruneRequest::retention(183, Utc::now()))
        .await
        .unwrap();
    assert_eq!(pruned.pruned_before, 30);
    append(&log, &mut rng, &people, 20, Utc::now(), &mut expected).await;
    log.shutdown().await.unwrap();
    // A while without the map, then with it again: it is rebuilt from the
    // pruned chains and the retained entries, so the maps signed before
    // (at 30, 31 and 51) still follow from what the store holds.
    let log = open(db.reopen().await, None).await;
    append(&log, &mut rng, &people, 10, Utc::now(), &mut expected).await;
    log.shutdown().await.unwrap();
    let log = open(db.reopen().await, Some(VRF)).await;
    append(&log, &mut rng, &people, 10, Utc::now(), &mut expected).await;
    log.shutdown().await.unwrap();
    let cp = check_subjects(&db, &expected, &absent).await;
    assert_eq!(cp.size, 71);
    let r = run_verify(&db).await;
    assert!(r.is_ok() && r.findings.is_empty(), "{b:?}\n{}", show(&r));
    assert_eq!(r.nodes[0].maps_checked, 4);

    // A prune without the map still records the pruned chains: the map
    // begun after it counts every entry.
    let log = open(db.reopen().await, None).await;
    append(&log, &mut rng, &people, 10, Utc::now(), &mut expected).await;
    log.flush().await.unwrap();
    let later = Utc::now() + chrono::TimeDelta::days(400);
    let pruned = log
        .prune(PruneRequest::retention(183, later))
        .await
        .unwrap();
    assert_eq!(pruned.pruned_before, 81);
    log.shutdown().await.unwrap();
    let log = open(db.reopen().await, Some(VRF)).await;
    append(&log, &mut rng, &people, 10, Utc::now(), &mut expected).await;
    log.shutdown().await.unwrap();
    let cp = check_subjects(&db, &expected, &absent).await;
    assert_eq!(cp.size, 92);
    let r = run_verify(&db).await;
    assert!(r.is_ok() && r.findings.is_empty(), "{b:?}\n{}", show(&r));
    assert_eq!(r.nodes[0].maps_checked, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_switched_off_and_on_again_keeps_counting_pruned_entries() {
    for b in BACKENDS {
        map_switched_off_and_on(b).await;
    }
}
