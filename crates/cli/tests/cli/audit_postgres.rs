//! Two exchange nodes share one PostgreSQL schema: each keeps its own log,
//! sequence and signing key; both serve; an administrator's search on one
//! node sees both; verification (library and `tongban audit verify`) covers
//! both chains, and a keyring missing one node's key fails on that node.
//! The database comes from `TONGBAN_TEST_POSTGRES_URL` (default: the local
//! test server); each run uses its own schema, dropped afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sqlx::Connection;
use tongban_audit::{Keyring, PostgresStore, VerifyOptions};
use tongban_exchange::{ExchangeConfig, StartOptions};
use tongban_proto::v1::audit_client::AuditClient;
use tongban_proto::v1::exchange_client::ExchangeClient;
use tongban_proto::v1::{
    AdminContext, AuditFilter, AuditSearchRequest, CaseContext, LookupRequest, Subject,
};

use crate::common::spawn_adapter;

const CALLER: &str = "org/91350100M000100Y43/unit/two-nodes";
const SUBJECT: &str = "510403198507220465";

fn pg_url() -> String {
    std::env::var("TONGBAN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn node_config(dir: &Path, node: &str, schema: &str, adapter: SocketAddr) -> ExchangeConfig {
    std::fs::write(
        dir.join("policy.toml"),
        format!(
            "[[grant]]\ncallers = [\"{CALLER}\"]\nmatters = [\"unemployment-benefit\"]\n\n\
             [admin]\ncallers = [\"{CALLER}\"]\n"
        ),
    )
    .unwrap();
    let path = dir.join(format!("{node}.toml"));
    std::fs::write(
        &path,
        format!(
            "node = \"{node}\"\nlisten = \"127.0.0.1:0\"\npolicy = \"policy.toml\"\n\
             plaintext_caller = \"{CALLER}\"\n\n[admin]\nenabled = false\n\n\
             [audit]\nstore = \"{url}\"\npostgres_schema = \"{schema}\"\n\
             signing_key = \"{node}-signing.key\"\nsubject_key = \"subject.key\"\n\n\
             [departments.hrss]\nendpoints = [\"http://{adapter}\"]\ntimeout_ms = 10000\n",
            url = pg_url()
        ),
    )
    .unwrap();
    ExchangeConfig::load(&path).unwrap()
}

fn lookup(n: usize) -> tonic::Request<LookupRequest> {
    let mut request = tonic::Request::new(LookupRequest {
        case: Some(CaseContext {
            matter: "unemployment-benefit".into(),
            case_number: format!("TWO-{n}"),
            operator_id: "clerk-two".into(),
        }),
        subject: Some(Subject {
            id_number: SUBJECT.into(),
            name: String::new(),
            ..Default::default()
        }),
        evidence_type: "hrss.unemployment".into(),
        fields: None,
    });
    request.set_timeout(Duration::from_secs(10));
    request
}

async fn run(dir: &Path, schema: &str) {
    let adapter = spawn_adapter(Duration::ZERO).await;
    let start = |node| {
        tongban_exchange::start(
            node_config(dir, node, schema, adapter),
            StartOptions::default(),
        )
    };
    let a = start("exchange-a").await.unwrap();
    let b = start("exchange-b").await.unwrap();
    let url_a = format!("http://{}", a.local_addr());
    let url_b = format!("http://{}", b.local_addr());
    let mut client_a = ExchangeClient::connect(url_a.clone()).await.unwrap();
    let mut client_b = ExchangeClient::connect(url_b).await.unwrap();
    // Both nodes write at once, each its own sequence.
    let mut tasks = Vec::new();
    for n in 0..30 {
        let (mut ca, mut cb) = (client_a.clone(), client_b.clone());
        tasks.push(tokio::spawn(async move {
            let ra = ca.lookup(lookup(n)).await.unwrap().into_inner();
            let rb = cb.lookup(lookup(n)).await.unwrap().into_inner();
            (ra.receipt.unwrap(), rb.receipt.unwrap())
        }));
    }
    let mut indexes_a = Vec::new();
    let mut indexes_b = Vec::new();
    for t in tasks {
        let (ra, rb) = t.await.unwrap();
        assert_eq!(ra.node, "exchange-a");
        assert_eq!(rb.node, "exchange-b");
        indexes_a.push(ra.index);
        indexes_b.push(rb.index);
    }
    indexes_a.sort_unstable();
    indexes_b.sort_unstable();
    // Each log begins with the policy in force at start-up (entry 0).
    assert_eq!(indexes_a, (1..31).collect::<Vec<u64>>());
    assert_eq!(indexes_b, (1..31).collect::<Vec<u64>>());
    client_a.lookup(lookup(99)).await.unwrap();
    client_b.lookup(lookup(99)).await.unwrap();

    // An administrator's search on node a sees node b's entries too.
    let mut audit = AuditClient::connect(url_a).await.unwrap();
    let mut nodes_seen = std::collections::BTreeSet::new();
    let mut token = String::new();
    let mut lookups = 0;
    loop {
        let page = audit
            .search(AuditSearchRequest {
                admin: Some(AdminContext {
                    operator_id: "auditor-two".into(),
                    reason: "two-node check".into(),
                }),
                filter: Some(AuditFilter {
                    kind: "Lookup".into(),
                    subject_id_number: SUBJECT.into(),
                    ..Default::default()
                }),
                page_size: 25,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        for r in &page.records {
            nodes_seen.insert(r.node.clone());
            lookups += 1;
        }
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(lookups, 62);
    assert_eq!(
        nodes_seen.into_iter().collect::<Vec<_>>(),
        ["exchange-a", "exchange-b"]
    );

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();

    // Verification covers both chains, with both pinned keys.
    let key_a = dir.join("exchange-a-signing.pub");
    let key_b = dir.join("exchange-b-signing.pub");
    let read = |p: &Path| Keyring::parse(&std::fs::read_to_string(p).unwrap()).unwrap();
    let mut both = read(&key_a);
    both.add(read(&key_b).keys()[0].clone());
    let store = PostgresStore::connect(&pg_url(), Some(schema))
        .await
        .unwrap();
    let report = tongban_audit::verify(&store, &both, &VerifyOptions::default(), &mut |_| {})
        .await
        .unwrap();
    assert!(report.is_ok(), "{:#?}", report.findings);
    let nodes: Vec<_> = report.nodes.iter().map(|n| n.node.as_str()).collect();
    assert_eq!(nodes, ["exchange-a", "exchange-b"]);
    // The policy in force and 31 lookups each, plus the search's admin
    // entries on a.
    assert_eq!(report.nodes[1].entries_checked, 32);
    assert!(report.nodes[0].entries_checked > 32);

    // Without b's key, b's checkpoints do not verify.
    let only_a = read(&key_a);
    let report = tongban_audit::verify(&store, &only_a, &VerifyOptions::default(), &mut |_| {})
        .await
        .unwrap();
    assert!(!report.is_ok());
    assert!(
        report.errors().all(|f| f.node == "exchange-b"),
        "{report:#?}"
    );

    // The command line, reading PostgreSQL directly.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tongban"))
        .args(["audit", "verify", "--store", &pg_url(), "--schema", schema])
        .arg("--key")
        .arg(&key_a)
        .arg("--key")
        .arg(&key_b)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("node exchange-a"), "{stdout}");
    assert!(stdout.contains("node exchange-b"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_postgres_schema_and_both_chains_verify() {
    let dir = tempfile::tempdir().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!("audit_two_nodes_{}_{nanos}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&mut admin)
        .await
        .unwrap();
    // Run in a task so the schema is dropped even when the test fails.
    let outcome = tokio::spawn({
        let dir = dir.path().to_owned();
        let schema = schema.clone();
        async move { run(&dir, &schema).await }
    })
    .await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
