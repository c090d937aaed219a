//! `AuditStore::add_cosignature` on both backends: appended once, atomic
//! under concurrent adders, and the note still opens and verifies.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use crate::common::*;
use chrono::Utc;
use tongban_audit::{
    Checkpoint, StoreError, VerifyOptions, WitnessSigner, origin_for_node, verify,
    verify_cosignatures,
};

async fn cosignatures_are_added_once(b: Backend) {
    let db = TestDb::new(b).await;
    let log = open_log(db.store.clone(), "n1").await;
    for i in 0..3 {
        log.append(entry(i, Utc::now())).await.unwrap();
    }
    let note = log.flush().await.unwrap().unwrap();
    let cp = Checkpoint::open(&note, &keyring(&["n1"]), &origin_for_node("n1")).unwrap();
    let body = note.split_once("\n\n").unwrap().0.to_string() + "\n";
    let witnesses: Vec<WitnessSigner> = (0..4)
        .map(|i| WitnessSigner::from_seed(&format!("witness.{i}"), &[i + 1; 32]).unwrap())
        .collect();
    let lines: Vec<String> = witnesses
        .iter()
        .map(|w| w.cosign(&body, 1_700_000_000).unwrap())
        .collect();

    assert!(
        db.store
            .add_cosignature("n1", cp.size, &lines[0])
            .await
            .unwrap()
    );
    assert!(
        !db.store
            .add_cosignature("n1", cp.size, &lines[0])
            .await
            .unwrap()
    );
    // Concurrent adders: none is lost.
    let mut tasks = Vec::new();
    for line in &lines[1..] {
        let store = db.store.clone();
        let line = line.clone();
        let size = cp.size;
        tasks.push(tokio::spawn(async move {
            store.add_cosignature("n1", size, &line).await.unwrap()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    let stored = db.store.latest_checkpoint("n1").await.unwrap().unwrap();
    let keys: Vec<_> = witnesses.iter().map(WitnessSigner::verifier).collect();
    assert_eq!(
        verify_cosignatures(&stored.note, &keys, 4).unwrap().len(),
        4
    );
    assert!(stored.note.starts_with(&note));
    // The log's signature still opens it, and the log verifies.
    Checkpoint::open(&stored.note, &keyring(&["n1"]), &origin_for_node("n1")).unwrap();
    log.shutdown().await.unwrap();
    let report = verify(
        db.store.as_ref(),
        &keyring(&["n1"]),
        &VerifyOptions::default(),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "{b:?}: {:#?}", report.findings);
    // Reopening the log (which checks the latest note) still works.
    let log = open_log(db.store.clone(), "n1").await;
    log.shutdown().await.unwrap();

    // No such checkpoint; not a signature line.
    assert!(matches!(
        db.store.add_cosignature("n1", 99, &lines[0]).await,
        Err(StoreError::Cosignature { .. })
    ));
    for bad in ["x", "\u{2014} w", "\u{2014} w sig\n\u{2014} x y"] {
        assert!(matches!(
            db.store.add_cosignature("n1", cp.size, bad).await,
            Err(StoreError::Cosignature { .. })
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_cosignature_is_idempotent_and_atomic() {
    for b in BACKENDS {
        cosignatures_are_added_once(b).await;
    }
}
