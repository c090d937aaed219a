//! A person's history across every node of a deployment (two nodes' logs in
//! one store), on SQLite and PostgreSQL: it verifies with both nodes' keys;
//! an answer that leaves a node out, names an unpinned node, is about
//! someone else, or misses an entry on one node fails, naming the node.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use tongban_audit::transparency::{
    Access, CheckOptions, History, HistoryError, ListedAccess, NodeHistory, TrustAnchors,
    first_page, verify_history,
};
use tongban_audit::{AuditConfig, AuditLog, AuditStore, EntryKind};

use crate::common::*;

const NODES: [&str; 2] = ["n1", "n2"];

fn transparent_config(node: &str) -> AuditConfig {
    let mut c = config(node);
    c.transparency = Some(pseudonymizer().vrf_public_key());
    c
}

/// What a portal receives for `id`, as `Transparency.ListAccesses` builds
/// it (one page of up to 100 entries per node).
async fn history(store: &dyn AuditStore, id: &str) -> History {
    history_of(store, id, &NODES).await
}

async fn history_of(store: &dyn AuditStore, id: &str, of: &[&str]) -> History {
    let proof = pseudonymizer().prove(id);
    let mut nodes = Vec::new();
    for &node in of {
        let page = first_page(store, node, &proof.key, 100).await.unwrap();
        let checkpoint = page.checkpoint.unwrap();
        let removed_before = checkpoint_cutoff(&checkpoint.note);
        let indexes: Vec<u64> = page.entries.iter().map(|e| e.index).collect();
        let mut proofs = tongban_audit::transparency::inclusion_proofs(
            store,
            node,
            &indexes,
            checkpoint.tree_size,
        )
        .await
        .unwrap()
        .into_iter();
        nodes.push(NodeHistory {
            node: node.to_owned(),
            checkpoint: checkpoint.note,
            map_proof: page.map_proof.to_bytes(),
            count: page.count,
            pruned: page
                .pruned
                .map(|chain| tongban_audit::transparency::PrunedPrefix {
                    chain,
                    removed_before,
                }),
            entries: page
                .entries
                .iter()
                .map(|e| ListedAccess {
                    index: e.index,
                    access: Access::Disclosed(Box::new(e.entry.public())),
                    inclusion: proofs.next().unwrap(),
                })
                .collect(),
        });
    }
    History {
        subject_key: proof.key,
        vrf_proof: proof.proof,
        nodes,
    }
}

fn anchors(nodes: &[&str]) -> TrustAnchors {
    TrustAnchors {
        logs: nodes.iter().map(|n| signer(n).verifier()).collect(),
        ..Default::default()
    }
}

async fn across_nodes(backend: Backend) {
    let db = TestDb::new(backend).await;
    let her = id_number("510403", "19850722", 46);
    let him = id_number("510402", "19580509", 35);
    let mut logs = Vec::new();
    for node in NODES {
        let log = AuditLog::open(db.store.clone(), signer(node), transparent_config(node))
            .await
            .unwrap();
        // Hers: 3 on each node; his: 2; and some entries about nobody.
        for i in 0..12u64 {
            let mut e = entry(i, chrono::Utc::now());
            e.subject = match i % 4 {
                0 | 1 if i < 6 => pseudonymizer().pseudonym(&her),
                2 if i < 8 => pseudonymizer().pseudonym(&him),
                3 if i == 11 => pseudonymizer().pseudonym(&her),
                _ => String::new(),
            };
            log.append(e).await.unwrap();
        }
        log.flush().await.unwrap();
        logs.push(log);
    }
    let store = db.store.as_ref();
    let ok = verify_history(
        &history(store, &her).await,
        &her,
        &anchors(&NODES),
        &CheckOptions::default(),
    )
    .unwrap();
    assert_eq!(ok.nodes.len(), 2);
    for n in &ok.nodes {
        assert_eq!(n.count, 5, "{n:?}");
        for e in &n.entries {
            let Access::Disclosed(p) = &e.access else {
                panic!("sealed")
            };
            assert_eq!(p.kind, EntryKind::Lookup);
            assert_eq!(p.subject, pseudonymizer().pseudonym(&her));
        }
    }
    // Someone nobody looked at: an empty history, proven on both nodes.
    let nobody = id_number("510411", "20010101", 1);
    let empty = verify_history(
        &history(store, &nobody).await,
        &nobody,
        &anchors(&NODES),
        &CheckOptions::default(),
    )
    .unwrap();
    assert!(
        empty
            .nodes
            .iter()
            .all(|n| n.count == 0 && n.entries.is_empty())
    );

    // Each way the answer can be wrong.
    let fail = |h: &History, id: &str, nodes: &[&str]| {
        verify_history(h, id, &anchors(nodes), &CheckOptions::default()).unwrap_err()
    };
    let good = history(store, &her).await;
    let mut one_node = good.clone();
    one_node.nodes.remove(1);
    assert!(matches!(fail(&one_node, &her, &NODES), HistoryError::NodeMissing(n) if n == "n2"));
    assert!(matches!(fail(&good, &her, &["n1"]), HistoryError::UnknownNode(n) if n == "n2"));
    // His history passed off as hers: the VRF proof is his.
    let his = history(store, &him).await;
    assert!(matches!(
        fail(&his, &her, &NODES),
        HistoryError::NotThisPerson(_)
    ));
    // One of her entries on n2 left out.
    let mut short = good.clone();
    short.nodes[1].entries.remove(1);
    let e = fail(&short, &her, &NODES);
    assert!(
        e.to_string().contains("node n2") && e.to_string().contains("1 missing"),
        "{e}"
    );
    // Reordered.
    let mut swapped = good.clone();
    swapped.nodes[0].entries.swap(0, 1);
    assert!(matches!(
        fail(&swapped, &her, &NODES),
        HistoryError::BadEntry { .. }
    ));
    // A field altered (the outcome shown as refused when it was answered,
    // say): the entry is no longer the one in the log.
    let mut altered = good.clone();
    if let Access::Disclosed(p) = &mut altered.nodes[0].entries[0].access {
        p.outcome_code = 7;
    }
    let e = fail(&altered, &her, &NODES);
    assert!(e.to_string().contains("not in the node's log"), "{e}");
    // An inclusion proof cut short.
    let mut dropped_proof = good.clone();
    dropped_proof.nodes[0].entries[0].inclusion.pop();
    assert!(matches!(
        fail(&dropped_proof, &her, &NODES),
        HistoryError::BadEntry { .. }
    ));
    for log in logs {
        log.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_covers_every_node_of_the_deployment_on_both_backends() {
    for b in BACKENDS {
        across_nodes(b).await;
    }
}

fn checkpoint_cutoff(note: &str) -> chrono::DateTime<chrono::Utc> {
    let body = &note[..note.find("\n\n").unwrap() + 1];
    tongban_audit::Checkpoint::parse_body(body)
        .unwrap()
        .pruned
        .map_or(chrono::DateTime::<chrono::Utc>::MIN_UTC, |b| b.cutoff)
}

/// Entries pruned under the retention rule stay accounted for: the history
/// verifies with the pruned prefix (count and date), and a prefix that
/// claims a retained entry as pruned is refused.
async fn pruned_history(backend: Backend) {
    let db = TestDb::new(backend).await;
    let her = id_number("510403", "19850722", 46);
    let log = AuditLog::open(db.store.clone(), signer("n1"), transparent_config("n1"))
        .await
        .unwrap();
    for (i, days) in [400i64, 300, 250, 10, 1].into_iter().enumerate() {
        let mut e = entry(i as u64, now_minus_days(days));
        e.subject = pseudonymizer().pseudonym(&her);
        log.append(e).await.unwrap();
        log.append(entry(10 + i as u64, now_minus_days(days)))
            .await
            .unwrap();
    }
    log.flush().await.unwrap();
    let report = log
        .prune(tongban_audit::PruneRequest::retention(
            183,
            chrono::Utc::now(),
        ))
        .await
        .unwrap();
    assert!(report.deleted >= 6, "{report:?}");
    log.flush().await.unwrap();
    let h = history_of(db.store.as_ref(), &her, &["n1"]).await;
    let part = &h.nodes[0];
    assert_eq!(part.entries.len(), 2);
    assert_eq!(part.count, 5);
    let ok = verify_history(&h, &her, &anchors(&["n1"]), &CheckOptions::default()).unwrap();
    let (pruned, before) = ok.nodes[0].pruned.unwrap();
    assert_eq!(pruned, 3);
    assert!(
        before > now_minus_days(184) && before < now_minus_days(182),
        "{before}"
    );
    // A retained entry passed off as pruned: its index is not below the
    // signed boundary.
    let mut forged = h.clone();
    let first = forged.nodes[0].entries.remove(0);
    let chain = &mut forged.nodes[0].pruned.as_mut().unwrap().chain;
    chain.count += 1;
    chain.last_index = first.index;
    let e = verify_history(&forged, &her, &anchors(&["n1"]), &CheckOptions::default()).unwrap_err();
    assert!(matches!(e, HistoryError::BadPruned { .. }), "{e}");
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_accesses_stay_accounted_for_on_both_backends() {
    for b in BACKENDS {
        pruned_history(b).await;
    }
}
