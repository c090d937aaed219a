//! Citizens can check: `tongban transparency history`, as a portal runs it
//! (mutual TLS as the Tianfu Tongban portal, the node's and the witness's
//! keys pinned), exits 0 on an honest deployment and 1 after each attack on
//! the audit store — on SQLite and on PostgreSQL. Every attack is made
//! behind the exchange's back, directly in the store, as an operator with
//! write access to the database would; the split view also uses the node's
//! signing key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection;
use tongban_audit::{AuditStore, Checkpoint, LogSigner, PostgresStore, SqliteStore};
use tongban_devkit::local::{CALL_TIMEOUT, LocalDeployment, LocalOptions, NODE, WITNESS_NAME};
use tongban_devkit::reference::stories::{CERTIFIED_RETIREE, LAID_OFF_WORKER, Story};
use tongban_proto::v1::{CaseContext, GatherRequest, LookupRequest, Subject};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

fn pg_url() -> String {
    std::env::var("TONGBAN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

static SCHEMAS: AtomicU32 = AtomicU32::new(0);

/// A local deployment (exchange, three departments, a witness) whose audit
/// log is on `backend`.
struct Fixture {
    dir: tempfile::TempDir,
    local: LocalDeployment,
    backend: Backend,
    schema: String,
}

impl Fixture {
    async fn start(backend: Backend) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tongban-transparency-")
            .tempdir()
            .unwrap();
        let schema = format!(
            "transparency_{}_{}",
            std::process::id(),
            SCHEMAS.fetch_add(1, Ordering::Relaxed)
        );
        let options = match backend {
            Backend::Sqlite => LocalOptions::default(),
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .execute(&mut conn)
                .await
                .unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                LocalOptions::default().audit_store(&pg_url(), Some(&schema))
            }
        };
        let local = LocalDeployment::start_with(dir.path(), options)
            .await
            .unwrap();
        Self {
            dir,
            local,
            backend,
            schema,
        }
    }

    async fn store(&self) -> Arc<dyn AuditStore> {
        match self.backend {
            Backend::Sqlite => Arc::new(
                SqliteStore::open(&self.dir.path().join("audit.db"))
                    .await
                    .unwrap(),
            ),
            Backend::Postgres => Arc::new(
                PostgresStore::connect(&pg_url(), Some(&self.schema))
                    .await
                    .unwrap(),
            ),
        }
    }

    /// Runs SQL against the audit store, behind the exchange's back;
    /// returns the rows changed.
    async fn tamper(&self, sql: &str) -> u64 {
        match self.backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", self.dir.path().join("audit.db").display());
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(&mut conn)
                    .await
                    .unwrap()
                    .rows_affected()
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "SET search_path TO {}",
                    self.schema
                )))
                .execute(&mut conn)
                .await
                .unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(&mut conn)
                    .await
                    .unwrap()
                    .rows_affected()
            }
        }
    }

    /// Waits until the whole log is under a checkpoint the witness cosigned.
    async fn witnessed(&self) {
        let store = self.store().await;
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let size = store.log_state(NODE).await.unwrap().size;
            if let Some(cp) = store.latest_checkpoint(NODE).await.unwrap()
                && cp.tree_size == size
                && cp.note.contains(WITNESS_NAME)
            {
                return;
            }
            assert!(
                Instant::now() < until,
                "no witnessed checkpoint of the whole log"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Lookups and a Gather about the story's person, one sealed (a police
    /// investigation), and one about somebody else.
    async fn accesses(&self) {
        let mut community = self.local.client("dongli-community").await.unwrap();
        let mut request = tonic::Request::new(GatherRequest {
            case: case("unemployment-benefit", "XB-2026-0001", "clerk-017"),
            subject: subject(&LAID_OFF_WORKER),
            evidence_types: Vec::new(),
            ..Default::default()
        });
        request.set_timeout(CALL_TIMEOUT);
        community.gather(request).await.unwrap();
        let mut station = self.local.client("salian-police-station").await.unwrap();
        let mut request = tonic::Request::new(LookupRequest {
            case: case(
                "criminal-investigation-assist",
                "MY-XZ-2026-77",
                "officer-3",
            ),
            subject: subject(&LAID_OFF_WORKER),
            evidence_type: "police.identity".into(),
            fields: None,
        });
        request.set_timeout(CALL_TIMEOUT);
        station.lookup(request).await.unwrap();
        let mut request = tonic::Request::new(GatherRequest {
            case: case("pension-qualification", "XB-2026-0002", "clerk-017"),
            subject: subject(&CERTIFIED_RETIREE),
            evidence_types: Vec::new(),
            ..Default::default()
        });
        request.set_timeout(CALL_TIMEOUT);
        community.gather(request).await.unwrap();
        self.witnessed().await;
    }

    /// `tongban transparency history` for `story`, as the portal.
    async fn history(&self, story: &Story, extra: &[&str]) -> std::process::Output {
        self.history_at(&self.local.exchange_url(), story, extra)
            .await
    }

    /// The same, against the node at `url`.
    async fn history_at(&self, url: &str, story: &Story, extra: &[&str]) -> std::process::Output {
        let pki = self.dir.path().join("pki");
        let log_key = self.local.log_key().unwrap();
        let witness_key = self.local.witness_key().unwrap();
        tokio::process::Command::new(env!("CARGO_BIN_EXE_tongban"))
            .args(["transparency", "history", "--exchange"])
            .arg(url)
            .arg("--cert")
            .arg(pki.join("tianfu-tongban.pem"))
            .arg("--key")
            .arg(pki.join("tianfu-tongban.key"))
            .arg("--ca")
            .arg(pki.join("ca.pem"))
            .args(["--log-key", &log_key, "--witness-key", &witness_key])
            .args(["--id", story.id_number])
            .args(extra)
            .env("RUST_LOG", "warn")
            .output()
            .await
            .unwrap()
    }

    /// What the portal pins: the node's log key and the witness's key.
    fn anchors(&self) -> tongban_audit::transparency::TrustAnchors {
        tongban_audit::transparency::TrustAnchors {
            logs: vec![tongban_audit::VerifierKey::parse(&self.local.log_key().unwrap()).unwrap()],
            witnesses: vec![
                tongban_audit::WitnessKey::parse(&self.local.witness_key().unwrap()).unwrap(),
            ],
            quorum: 1,
            vrf_key: None,
        }
    }

    async fn subject_key(&self, story: &Story) -> String {
        let key = std::fs::read_to_string(self.dir.path().join("subject-pseudonym.key")).unwrap();
        tongban_audit::SubjectPseudonymizer::from_hex(key.trim())
            .unwrap()
            .pseudonym(story.id_number)
    }

    /// The index of an entry about `story` of `matter`.
    async fn entry_of(&self, story: &Story, matter: &str) -> u64 {
        let subject = self.subject_key(story).await;
        let store = self.store().await;
        let size = store.log_state(NODE).await.unwrap().size;
        store
            .subject_entries(NODE, &subject, 0, size, 1000)
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.entry.matter == matter)
            .unwrap_or_else(|| panic!("no entry of {matter}"))
            .index
    }

    async fn stop(self) {
        self.local.shutdown().await.unwrap();
        if self.backend == Backend::Postgres {
            let mut conn = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                self.schema
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

fn case(matter: &str, number: &str, operator: &str) -> Option<CaseContext> {
    Some(CaseContext {
        matter: matter.into(),
        case_number: number.into(),
        operator_id: operator.into(),
    })
}

fn subject(story: &Story) -> Option<Subject> {
    Some(Subject {
        id_number: story.id_number.into(),
        name: story.name.into(),
        ..Default::default()
    })
}

fn text(output: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_verified(output: &std::process::Output) {
    assert_eq!(output.status.code(), Some(0), "{}", text(output));
}

fn assert_refused(output: &std::process::Output, because: &str) {
    assert_eq!(output.status.code(), Some(1), "{}", text(output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("verification FAILED") && stderr.contains(because),
        "expected a failure naming {because:?}\n{}",
        text(output)
    );
}

/// The honest case: the history verifies, names the organisations and the
/// matters in both languages, shows the sealed access as sealed, never
/// shows a clerk or a case number; the portal's own reads are listed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_history_verifies_on_both_backends() {
    for backend in BACKENDS {
        let f = Fixture::start(backend).await;
        f.accesses().await;
        let state = f.dir.path().join("portal-state.json");
        let output = f
            .history(&LAID_OFF_WORKER, &["--state", state.to_str().unwrap()])
            .await;
        assert_verified(&output);
        let shown = String::from_utf8_lossy(&output.stdout);
        for expected in [
            "Verified complete",
            "失业保险金申领",
            "Unemployment benefit claim",
            "西区动力站社区服务中心",
            "1 sealed access, disclosed after",
            WITNESS_NAME,
        ] {
            assert!(shown.contains(expected), "{expected:?} in\n{shown}");
        }
        for secret in [
            "clerk-017",
            "XB-2026-0001",
            "MY-XZ-2026-77",
            "officer-3",
            "陈晓燕",
        ] {
            assert!(!shown.contains(secret), "{secret:?} shown in\n{shown}");
        }
        // The retiree's accesses are not hers, and hers are not the retiree's.
        assert!(!shown.contains("养老金领取资格认证"), "{shown}");
        // Again, later: her history now lists the portal's first read too.
        f.witnessed().await;
        let output = f
            .history(
                &LAID_OFF_WORKER,
                &["--state", state.to_str().unwrap(), "--json"],
            )
            .await;
        assert_verified(&output);
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let entries = json["nodes"][0]["entries"].as_array().unwrap();
        assert!(
            entries
                .iter()
                .any(|e| e["access"]["Disclosed"]["kind"] == "PortalView"),
            "{json}"
        );
        // A person nobody looked at has an empty, still verified, history.
        let nobody = Story {
            id_number: tongban_devkit::reference::stories::UNKNOWN_PERSON_ID,
            name: "",
            about: "",
        };
        let output = f.history(&nobody, &[]).await;
        assert_verified(&output);
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("No one has accessed"),
            "{}",
            text(&output)
        );
        // An administrator discloses the sealed access early, with a
        // reason: from then on she sees it in full, still verified.
        let index = f
            .entry_of(&LAID_OFF_WORKER, "criminal-investigation-assist")
            .await;
        let mut admin = tongban_proto::v1::audit_client::AuditClient::new(
            f.local.channel("admin").await.unwrap(),
        );
        let answer = admin
            .unseal(tongban_proto::v1::UnsealRequest {
                admin: Some(tongban_proto::v1::AdminContext {
                    operator_id: "ops-li".into(),
                    reason: "investigation closed, case MY-2026-77".into(),
                }),
                node: NODE.into(),
                index,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(answer.was_sealed);
        f.witnessed().await;
        let output = f.history(&LAID_OFF_WORKER, &[]).await;
        assert_verified(&output);
        let shown = String::from_utf8_lossy(&output.stdout);
        assert!(shown.contains("刑事案件侦查协查"), "{shown}");
        assert!(!shown.contains("sealed access"), "{shown}");
        f.stop().await;
    }
}

/// A service point is not a portal: refused, and the refusal is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_portals_may_read_histories() {
    let f = Fixture::start(Backend::Sqlite).await;
    let channel = f.local.channel("dongli-community").await.unwrap();
    let mut client = tongban_proto::v1::transparency_client::TransparencyClient::new(channel);
    let status = client
        .list_accesses(tongban_proto::v1::ListAccessesRequest {
            id_number: LAID_OFF_WORKER.id_number.into(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    // Malformed requests from the portal: clear errors.
    let mut portal = tongban_proto::v1::transparency_client::TransparencyClient::new(
        f.local.channel("tianfu-tongban").await.unwrap(),
    );
    for (id, size, token) in [
        ("510403198507220466", 0, ""),
        (LAID_OFF_WORKER.id_number, 501, ""),
        (LAID_OFF_WORKER.id_number, 0, "exchange-1/5"),
        (LAID_OFF_WORKER.id_number, 0, "../x/1/2"),
        // Well formed, but beyond anything the node has signed.
        (LAID_OFF_WORKER.id_number, 0, "exchange-1/0/999999"),
    ] {
        let status = portal
            .list_accesses(tongban_proto::v1::ListAccessesRequest {
                id_number: id.into(),
                page_size: size,
                page_token: token.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }
    f.witnessed().await;
    let store = f.store().await;
    let size = store.log_state(NODE).await.unwrap().size;
    let views = store
        .scan(NODE, 0, u32::try_from(size).unwrap())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.entry.kind == tongban_audit::EntryKind::PortalView)
        .collect::<Vec<_>>();
    assert_eq!(views.len(), 6, "{views:#?}");
    assert!(views.iter().all(|v| v.entry.outcome_code != 0));
    f.stop().await;
}

/// One attack on the store, and what the portal's check must say.
struct Attack {
    name: &'static str,
    because: &'static str,
}

async fn attack(f: &Fixture, name: &str, state: &Path) {
    let her = f.subject_key(&LAID_OFF_WORKER).await;
    let other = f.subject_key(&CERTIFIED_RETIREE).await;
    match name {
        "deleted" => {
            let index = f.entry_of(&LAID_OFF_WORKER, "unemployment-benefit").await;
            let n = f
                .tamper(&format!(
                    "DELETE FROM audit_entries WHERE node = '{NODE}' AND idx = {index}"
                ))
                .await;
            assert_eq!(n, 1);
        }
        "added" => {
            // Someone else's access relabelled as hers.
            let index = f
                .entry_of(&CERTIFIED_RETIREE, "pension-qualification")
                .await;
            f.tamper(&format!(
                "UPDATE audit_entries SET subject = '{her}' WHERE node = '{NODE}' AND idx = {index}"
            ))
            .await;
        }
        "moved" => {
            let index = f.entry_of(&LAID_OFF_WORKER, "unemployment-benefit").await;
            f.tamper(&format!(
                "UPDATE audit_entries SET subject = '{other}' WHERE node = '{NODE}' AND idx = {index}"
            ))
            .await;
        }
        "count rolled back" => {
            let n = f
                .tamper(&format!(
                    "UPDATE audit_map_leaves SET count = count - 1 WHERE node = '{NODE}' AND subject = {}",
                    blob(f.backend, &her)
                ))
                .await;
            assert_eq!(n, 1);
        }
        "sealed content changed" => {
            let index = f
                .entry_of(&LAID_OFF_WORKER, "criminal-investigation-assist")
                .await;
            f.tamper(&format!(
                "UPDATE audit_entries SET caller_unit = 'somebody-else' WHERE node = '{NODE}' AND idx = {index}"
            ))
            .await;
        }
        "stale checkpoint" => {
            // Serve a checkpoint older than the one the portal last
            // verified: delete that one and every later one.
            let seen: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
            let size = seen["nodes"][NODE]["size"].as_u64().unwrap();
            let n = f
                .tamper(&format!(
                    "DELETE FROM audit_checkpoints WHERE node = '{NODE}' AND tree_size >= {size}"
                ))
                .await;
            assert!(n >= 1);
        }
        "split view" => {
            let forged = split_view(f).await;
            let refused = portal_check_of(f, &forged).await.unwrap_err();
            assert!(refused.contains("witnesses"), "{refused}");
            // And the portal's own command, pointed at a node that shows it
            // the forged view: exit 1, for want of the witness.
            let mut answer = tongban_proto::v1::transparency_client::TransparencyClient::new(
                f.local.channel("tianfu-tongban").await.unwrap(),
            )
            .list_accesses(tongban_proto::v1::ListAccessesRequest {
                id_number: LAID_OFF_WORKER.id_number.into(),
                page_size: 0,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
            answer.nodes[0].checkpoint = forged;
            let (url, stop) = serve_dishonest(f, answer).await;
            let output = f.history_at(&url, &LAID_OFF_WORKER, &[]).await;
            assert_refused(&output, "witnesses");
            let _ = stop.send(());
        }
        other => panic!("unknown attack {other}"),
    }
}

/// A blob literal of a hex key, as each backend writes one.
fn blob(backend: Backend, hex: &str) -> String {
    match backend {
        Backend::Sqlite => format!("X'{hex}'"),
        Backend::Postgres => format!("'\\x{hex}'::bytea"),
    }
}

/// The operator holds the node's signing key and shows the portal another
/// checkpoint of the latest size, one whose map omits her sealed access:
/// the witness, offered it, reports the split view, and the portal's check
/// finds no cosignature on it.
async fn split_view(f: &Fixture) -> String {
    let store = f.store().await;
    let latest = store.latest_checkpoint(NODE).await.unwrap().unwrap();
    let signer = LogSigner::load(
        &f.dir.path().join("audit-signing.key"),
        &tongban_audit::origin_for_node(NODE),
    )
    .unwrap();
    let body_end = latest.note.find("\n\n").unwrap() + 1;
    let mut cp = Checkpoint::parse_body(&latest.note[..body_end]).unwrap();
    let mut map = cp.map.unwrap();
    map.root[0] ^= 1;
    cp.map = Some(map);
    let forged = cp.sign(&signer).unwrap();
    f.tamper(&format!(
        "UPDATE audit_checkpoints SET note = '{forged}' WHERE node = '{NODE}' AND tree_size = {}",
        latest.tree_size
    ))
    .await;
    // The exchange offers the forged checkpoint (it lacks the witness's
    // cosignature) to the witness, which has cosigned another of that size.
    let witness = f.local.witness().unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while witness.stats().split_views == 0 {
        assert!(
            Instant::now() < until,
            "the witness never saw the split view"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let evidence: Vec<PathBuf> = std::fs::read_dir(f.local.witness_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| file_name(p).starts_with("split-view-"))
        .collect();
    assert_eq!(evidence.len(), 1, "{evidence:?}");
    forged
}

/// A dishonest node: it answers `ListAccesses` with `answer`, whatever is
/// asked, over mutual TLS with the exchange's own certificate.
#[derive(Clone)]
struct Dishonest {
    answer: tongban_proto::v1::ListAccessesResponse,
}

#[tonic::async_trait]
impl tongban_proto::v1::transparency_server::Transparency for Dishonest {
    async fn list_accesses(
        &self,
        _request: tonic::Request<tongban_proto::v1::ListAccessesRequest>,
    ) -> Result<tonic::Response<tongban_proto::v1::ListAccessesResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.answer.clone()))
    }
}

/// Serves `answer` as the dishonest node would, on 127.0.0.1; its URL.
async fn serve_dishonest(
    f: &Fixture,
    answer: tongban_proto::v1::ListAccessesResponse,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let tls = f.local.pki().server_config("exchange").unwrap();
    let listener = tongban_trust::bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tongban_trust::TlsIncoming::new(
        listener,
        tls.load_reloadable().unwrap(),
        tongban_trust::IncomingOptions::default(),
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                tongban_proto::v1::transparency_server::TransparencyServer::new(Dishonest {
                    answer,
                }),
            )
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    (format!("https://{addr}"), stop)
}

/// What the portal concludes when shown `forged` instead of the checkpoint
/// the witness cosigned (a node with the signing key shows the portal its
/// own view): the history is fetched as the portal would, with the forged
/// checkpoint put in its place, and checked with the portal's anchors.
async fn portal_check_of(f: &Fixture, forged: &str) -> Result<(), String> {
    use tongban_audit::transparency::{CheckOptions, verify_history};
    let mut client = tongban_proto::v1::transparency_client::TransparencyClient::new(
        f.local.channel("tianfu-tongban").await.unwrap(),
    );
    let page = client
        .list_accesses(tongban_proto::v1::ListAccessesRequest {
            id_number: LAID_OFF_WORKER.id_number.into(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut pages = tongban_exchange::wire::HistoryPages::new();
    pages.add(page).unwrap();
    let (mut history, _) = pages.finish();
    history.nodes[0].checkpoint = forged.to_owned();
    let anchors = f.anchors();
    verify_history(
        &history,
        LAID_OFF_WORKER.id_number,
        &anchors,
        &CheckOptions::default(),
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

const ATTACKS: [Attack; 6] = [
    Attack {
        name: "deleted",
        because: "1 missing",
    },
    // Relabelled, the entry's leaf hash is no longer the one in the log.
    Attack {
        name: "added",
        because: "not in the node's log",
    },
    Attack {
        name: "moved",
        because: "1 missing",
    },
    // The exchange's own proof builder notices first: its map no longer
    // holds the value the leaf claims (a forged proof would fail the
    // portal's check against the signed root instead).
    Attack {
        name: "count rolled back",
        because: "inconsistent",
    },
    Attack {
        name: "sealed content changed",
        because: "not in the node's log",
    },
    Attack {
        name: "stale checkpoint",
        because: "stale checkpoint",
    },
];

/// A split view: the operator, holding the node's signing key, signs a
/// second checkpoint of a size the witness cosigned, with a map that hides
/// an access. The witness, offered it by the exchange's collector, refuses
/// it and keeps the evidence; a portal shown it refuses it for want of the
/// witness's cosignature — checked directly, and with `tongban transparency
/// history` against a dishonest node serving it (the exchange itself soon
/// serves a newer, honest checkpoint again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_view_is_reported_by_the_witness_and_refused_by_the_portal() {
    for backend in BACKENDS {
        let f = Fixture::start(backend).await;
        f.accesses().await;
        let state = f.dir.path().join("portal-state.json");
        attack(&f, "split view", &state).await;
        f.stop().await;
    }
}

/// Each attack, on each backend, on a deployment of its own: the history
/// verified before it, and the same command exits 1 after it, naming what
/// failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_on_the_store_is_detected_on_both_backends() {
    for backend in BACKENDS {
        for a in &ATTACKS {
            let f = Fixture::start(backend).await;
            f.accesses().await;
            let state = f.dir.path().join("portal-state.json");
            let state_arg = ["--state", state.to_str().unwrap()];
            assert_verified(&f.history(&LAID_OFF_WORKER, &state_arg).await);
            // The portal's read is itself an access: let it be checkpointed
            // and witnessed, and seen once more, so the attack is on a
            // settled log.
            f.witnessed().await;
            assert_verified(&f.history(&LAID_OFF_WORKER, &state_arg).await);
            f.witnessed().await;
            attack(&f, a.name, &state).await;
            let output = f.history(&LAID_OFF_WORKER, &state_arg).await;
            eprintln!("{backend:?} {}: {}", a.name, text(&output));
            assert_refused(&output, a.because);
            f.stop().await;
        }
    }
}

/// A history read one entry per page, following the page tokens, is the
/// same history and verifies; each page is itself a logged read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_read_in_pages_of_one_verifies() {
    use tongban_audit::transparency::{CheckOptions, verify_history};
    let f = Fixture::start(Backend::Sqlite).await;
    f.accesses().await;
    let mut client = tongban_proto::v1::transparency_client::TransparencyClient::new(
        f.local.channel("tianfu-tongban").await.unwrap(),
    );
    let mut pages = tongban_exchange::wire::HistoryPages::new();
    let mut token = String::new();
    let mut count = 0;
    loop {
        let mut page = client
            .list_accesses(tongban_proto::v1::ListAccessesRequest {
                id_number: LAID_OFF_WORKER.id_number.into(),
                page_size: 1,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        count += 1;
        assert!(count < 20, "pages do not end");
        token = std::mem::take(&mut page.next_page_token);
        pages.add(page).unwrap();
        if token.is_empty() {
            break;
        }
    }
    let (history, _) = pages.finish();
    assert_eq!(history.nodes[0].entries.len(), 3, "{history:?}");
    // One page per entry, and perhaps an empty last one.
    assert!((3..=4).contains(&count), "{count} pages");
    let anchors = f.anchors();
    verify_history(
        &history,
        LAID_OFF_WORKER.id_number,
        &anchors,
        &CheckOptions::default(),
    )
    .unwrap();
    f.stop().await;
}
