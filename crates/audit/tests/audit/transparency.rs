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
    let proof = pseudonymizer().prove(id);
    let mut nodes = Vec::new();
    for node in NODES {
        let page = first_page(store, node, &proof.key, 100).await.unwrap();
        let checkpoint = page.checkpoint.unwrap();
        nodes.push(NodeHistory {
            node: node.to_owned(),
            checkpoint: checkpoint.note,
            map_proof: page.map_proof.to_bytes(),
            count: page.count,
            pruned: None,
            entries: page
                .entries
                .iter()
                .map(|e| ListedAccess {
                    index: e.index,
                    access: Access::Disclosed(Box::new(e.entry.public())),
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
    assert!(empty.nodes.iter().all(|n| n.count == 0 && n.entries.is_empty()));

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
    assert!(e.to_string().contains("node n2") && e.to_string().contains("1 missing"), "{e}");
    // Reordered.
    let mut swapped = good.clone();
    swapped.nodes[0].entries.swap(0, 1);
    assert!(matches!(
        fail(&swapped, &her, &NODES),
        HistoryError::BadEntry { .. }
    ));
    // A field altered (the outcome shown as answered when it was refused, say).
    let mut altered = good.clone();
    if let Access::Disclosed(p) = &mut altered.nodes[0].entries[0].access {
        p.outcome_code = 7;
    }
    assert!(matches!(
        fail(&altered, &her, &NODES),
        HistoryError::ChainMismatch { .. }
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
