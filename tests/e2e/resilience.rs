//! Fault tests: a department killed mid-load, brought back, made slow, made
//! full; an ejected endpoint left alone; failover between two endpoints of
//! one department; and a bounded load with no errors and one audit entry per
//! answer. Everything on 127.0.0.1, every loop bounded in count.
//!
//! Nothing here compares wall-clock times, so a loaded machine cannot fail
//! these tests. A slow or full department is a stand-in adapter that holds
//! every answer until the test opens its gate; the assertions are on events
//! and counters: which calls succeeded or were shed while others were held,
//! how many queries reached an endpoint, `Department::ejections()`, audit
//! entries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tongban_devkit::local::LocalOptions;
use tongban_devkit::reference::{self, Dept, stories};
use tongban_proto::v1::adapter_server::{Adapter, AdapterServer};
use tongban_proto::v1::exchange_client::ExchangeClient;
use tongban_proto::v1::{DescribeRequest, DescribeResponse, Evidence, QueryRequest, QueryResponse};
use tongban_tests::{eventually, lookup_request, own_deployment};
use tonic::Code;
use tonic::transport::Channel;

const COMMUNITY: &str = "dongli-community";
/// The community centre's identity, for the plaintext exchanges below.
const COMMUNITY_CALLER: &str = "org/12510403TB0000060J/unit/dongli-community";
/// Bounds a wait for something the test caused; never a measurement.
const WITHIN: Duration = Duration::from_secs(30);

fn police_lookup() -> tongban_proto::v1::LookupRequest {
    lookup_request(
        "unemployment-benefit",
        &stories::LAID_OFF_WORKER,
        "police.identity",
    )
}

fn hrss_lookup() -> tongban_proto::v1::LookupRequest {
    lookup_request(
        "unemployment-benefit",
        &stories::LAID_OFF_WORKER,
        "hrss.unemployment",
    )
}

fn with_deadline<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}

fn assert_unavailable_names_hrss(status: &tonic::Status) {
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("hrss"), "{}", status.message());
}

// ---------- a stand-in department the test controls

/// What the stand-in answers once its gate lets a query through.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// Evidence without fields.
    Evidence,
    /// UNAVAILABLE, as an adapter whose database is down: a failure of the
    /// endpoint, so it counts towards ejecting it.
    Unavailable,
}

/// An hrss adapter that counts the queries reaching it and holds each at a
/// gate until [`StandIn::open`].
#[derive(Debug, Clone)]
struct StandIn {
    asked: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
    answer: Answer,
}

impl StandIn {
    /// Closed: every query waits until [`open`](Self::open).
    fn gated(answer: Answer) -> Self {
        Self {
            asked: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
            answer,
        }
    }

    /// Answers at once.
    fn open_now(answer: Answer) -> Self {
        let stand_in = Self::gated(answer);
        stand_in.open();
        stand_in
    }

    /// Lets every held and later query through: waiting on a closed
    /// semaphore returns at once.
    fn open(&self) {
        self.gate.close();
    }

    fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until `n` queries have reached the stand-in.
    async fn wait_asked(&self, n: usize) {
        eventually(WITHIN, &format!("{n} queries reach the stand-in"), || {
            let asked = self.asked();
            async move { (asked >= n).then_some(()) }
        })
        .await
        .unwrap();
        assert_eq!(self.asked(), n, "more queries than sent reached it");
    }

    /// Serves the stand-in on `127.0.0.1`, plaintext.
    async fn serve(self) -> (SocketAddr, JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AdapterServer::new(self))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        (addr, task)
    }
}

#[tonic::async_trait]
impl Adapter for StandIn {
    async fn query(
        &self,
        request: tonic::Request<QueryRequest>,
    ) -> Result<tonic::Response<QueryResponse>, tonic::Status> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        // Never acquires a permit: it returns once the gate is closed (open).
        let _ = self.gate.acquire().await;
        match self.answer {
            Answer::Unavailable => Err(tonic::Status::unavailable("database down")),
            Answer::Evidence => Ok(tonic::Response::new(QueryResponse {
                evidence: Some(Evidence {
                    evidence_type: request.into_inner().evidence_type,
                    department: "hrss".into(),
                    ..Evidence::default()
                }),
            })),
        }
    }

    async fn describe(
        &self,
        _: tonic::Request<DescribeRequest>,
    ) -> Result<tonic::Response<DescribeResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this stand-in"))
    }
}

/// A plaintext exchange (node `plain-1`) in front of the reference police
/// adapter and an hrss endpoint at `hrss_url`, whose `[departments.hrss]`
/// table gets `hrss_settings` too.
struct Plain {
    _dir: tempfile::TempDir,
    police: tongban_adapter::RunningAdapter,
    exchange: tongban_exchange::ExchangeHandle,
}

impl Plain {
    async fn start(hrss_url: &str, hrss_settings: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tongban-resilience-")
            .tempdir()
            .unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("police.db").display()
        );
        let service = reference::service(Dept::Police, &url).await.unwrap();
        let police =
            tongban_adapter::RunningAdapter::spawn(service, "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
        std::fs::write(
            dir.path().join("policy.toml"),
            format!(
                "[[grant]]\ncallers = [\"{COMMUNITY_CALLER}\"]\nmatters = [\"unemployment-benefit\"]\n"
            ),
        )
        .unwrap();
        let config = format!(
            "node = \"plain-1\"\nlisten = \"127.0.0.1:0\"\npolicy = \"policy.toml\"\n\
             plaintext_caller = \"{COMMUNITY_CALLER}\"\n\n[admin]\nenabled = false\n\n\
             [departments.police]\nendpoints = [\"{}\"]\n\n\
             [departments.hrss]\nendpoints = [\"{hrss_url}\"]\n{hrss_settings}",
            police.url(),
        );
        let path = dir.path().join("exchange.toml");
        std::fs::write(&path, config).unwrap();
        let exchange = tongban_exchange::start(
            tongban_exchange::ExchangeConfig::load(&path).unwrap(),
            tongban_exchange::StartOptions::default(),
        )
        .await
        .unwrap();
        Self {
            _dir: dir,
            police,
            exchange,
        }
    }

    async fn client(&self) -> ExchangeClient<Channel> {
        ExchangeClient::connect(format!("http://{}", self.exchange.local_addr()))
            .await
            .unwrap()
    }

    fn department(&self, id: &str) -> tongban_exchange::Department {
        self.exchange
            .exchange()
            .departments()
            .get(id)
            .unwrap()
            .clone()
    }

    async fn shutdown(self) {
        self.exchange.shutdown().await.unwrap();
        self.police.shutdown().await.unwrap();
    }
}

/// `n` hrss lookups sent at once; each task ends with the call's outcome.
fn spawn_hrss_lookups(
    client: &ExchangeClient<Channel>,
    n: usize,
) -> Vec<JoinHandle<Result<tonic::Response<tongban_proto::v1::LookupResponse>, tonic::Status>>> {
    (0..n)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .lookup(with_deadline(hrss_lookup(), Duration::from_secs(60)))
                    .await
            })
        })
        .collect()
}

// ---------- scenarios

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_department_is_ejected_spares_the_others_and_comes_back() {
    let (_dir, mut local) = own_deployment(LocalOptions::default()).await.unwrap();
    let departments = local.exchange().exchange().departments().clone();
    let police = departments.get("police").unwrap().clone();
    let hrss = departments.get("hrss").unwrap().clone();
    let mut client = local.client(COMMUNITY).await.unwrap();
    // Warm up connections to every department.
    for request in [police_lookup(), hrss_lookup()] {
        client
            .lookup(with_deadline(request, Duration::from_secs(5)))
            .await
            .unwrap();
    }

    local.stop_department(Dept::Hrss).await.unwrap();

    // Hammer the dead department from the side while police is asked.
    let stop = Arc::new(AtomicBool::new(false));
    let hammer = {
        let mut client = client.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut sent = 0u32;
            while !stop.load(Ordering::Relaxed) && sent < 2000 {
                let status = client
                    .lookup(with_deadline(hrss_lookup(), Duration::from_secs(5)))
                    .await
                    .unwrap_err();
                assert_unavailable_names_hrss(&status);
                sent += 1;
            }
            sent
        })
    };
    for i in 0..40 {
        let answer = client
            .lookup(with_deadline(police_lookup(), Duration::from_secs(5)))
            .await;
        assert!(
            answer.is_ok(),
            "police lookup {i} beside a dead hrss: {answer:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let hammered = hammer.await.unwrap();
    assert!(hammered > 0);

    // More calls to the dead department: each fails, naming it; together
    // with the hammer, far more consecutive failures than ejection needs.
    for _ in 0..21 {
        let status = client
            .lookup(with_deadline(hrss_lookup(), Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert_unavailable_names_hrss(&status);
    }
    assert!(
        hrss.ejections() >= 1,
        "the dead endpoint was never taken out of rotation ({hammered} calls beside)"
    );
    // Its failures are its own: police was never ejected, nor slowed into
    // failing a 5 s deadline above.
    assert_eq!(police.ejections(), 0);

    // Back again: traffic recovers without restarting the exchange (the
    // endpoint is probed once its cooldown ends; the cooldown doubles with
    // each failed probe, up to 30 s).
    local.restart_department(Dept::Hrss).await.unwrap();
    eventually(Duration::from_secs(60), "hrss answers again", || {
        let mut client = client.clone();
        async move {
            client
                .lookup(with_deadline(hrss_lookup(), Duration::from_secs(2)))
                .await
                .ok()
        }
    })
    .await
    .unwrap();
    local.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_endpoint_is_not_asked_until_its_cooldown_ends() {
    // Every query fails; after three it is out of rotation for ten minutes,
    // far longer than this test, so no probe reaches it either.
    let hrss = StandIn::open_now(Answer::Unavailable);
    let (hrss_addr, _served) = hrss.clone().serve().await;
    let plain = Plain::start(
        &format!("http://{hrss_addr}"),
        "eject_after_failures = 3\neject_for_ms = 600000\n",
    )
    .await;
    let mut client = plain.client().await;
    for i in 0..50 {
        let status = client
            .lookup(with_deadline(hrss_lookup(), Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert_unavailable_names_hrss(&status);
        assert_eq!(hrss.asked(), (i + 1).min(3), "after call {i}");
    }
    // The other 47 failed at the exchange, without a query: failing fast.
    assert_eq!(hrss.asked(), 3);
    assert_eq!(plain.department("hrss").ejections(), 1);
    // The others are not affected.
    client
        .lookup(with_deadline(police_lookup(), Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(plain.department("police").ejections(), 0);
    plain.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_department_does_not_hold_up_the_others() {
    let hrss = StandIn::gated(Answer::Evidence);
    let (hrss_addr, _served) = hrss.clone().serve().await;
    let plain = Plain::start(&format!("http://{hrss_addr}"), "timeout_ms = 60000\n").await;
    let mut client = plain.client().await;

    // Twenty hrss requests in flight, held at the department...
    let slow = spawn_hrss_lookups(&client, 20);
    hrss.wait_asked(20).await;
    // ...while police answers, on the same client connection, every time.
    for i in 0..40 {
        let answer = client
            .lookup(with_deadline(police_lookup(), Duration::from_secs(5)))
            .await;
        assert!(
            answer.is_ok(),
            "police lookup {i} beside 20 held: {answer:?}"
        );
    }
    assert!(
        slow.iter().all(|call| !call.is_finished()),
        "the slow requests were still held"
    );
    // Slow, but within their limit: all answered once the department is.
    hrss.open();
    for call in slow {
        let answer = call.await.unwrap();
        assert!(answer.is_ok(), "slow but within its limit: {answer:?}");
    }
    assert_eq!(hrss.asked(), 20);
    plain.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_department_sheds_load_instead_of_queueing() {
    let hrss = StandIn::gated(Answer::Evidence);
    let (hrss_addr, _served) = hrss.clone().serve().await;
    // One caller here stands for many: the department's limit, not the
    // caller's share, is what this test is about.
    let plain = Plain::start(
        &format!("http://{hrss_addr}"),
        "timeout_ms = 60000\nmax_in_flight = 4\nmax_in_flight_per_caller = 4\n",
    )
    .await;
    let client = plain.client().await;

    // The department's four slots, taken and held.
    let held = spawn_hrss_lookups(&client, 4);
    hrss.wait_asked(4).await;
    // Eight more are shed at once, never queued and never asked.
    for call in spawn_hrss_lookups(&client, 8) {
        let status = call.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        let (reason, _, meta) = tongban_tests::error_info(&status);
        assert_eq!(reason, "DEPARTMENT_OVERLOADED");
        assert_eq!(meta["department"], "hrss");
        use tonic_types::StatusExt;
        assert!(status.get_details_retry_info().is_some());
    }
    assert_eq!(hrss.asked(), 4, "shed requests never reach the department");
    // The other departments are not held up by the full one.
    client
        .clone()
        .lookup(with_deadline(police_lookup(), Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(held.iter().all(|call| !call.is_finished()));
    hrss.open();
    for call in held {
        call.await.unwrap().unwrap();
    }
    // Its slots are back: the next request is answered.
    client
        .clone()
        .lookup(with_deadline(hrss_lookup(), Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(hrss.asked(), 5);
    plain.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_load_has_no_errors_and_one_audit_entry_per_answer() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 50;
    let (_dir, local) = own_deployment(LocalOptions::default()).await.unwrap();
    let log = local.exchange().audit_log().unwrap().clone();
    log.flush().await.unwrap();
    let before = log.stats().entries_committed;

    let answers = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let answers = answers.clone();
            let local_client = local.client(COMMUNITY);
            async move {
                let mut client = local_client.await.unwrap();
                let mut errors = Vec::new();
                for n in 0..PER_CLIENT {
                    let request = if (i + n) % 2 == 0 {
                        police_lookup()
                    } else {
                        hrss_lookup()
                    };
                    match client
                        .lookup(with_deadline(request, Duration::from_secs(10)))
                        .await
                    {
                        Ok(_) => {
                            answers.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(status) => errors.push(status),
                    }
                }
                errors
            }
        })
        .collect();
    let errors: Vec<_> = futures::future::join_all(clients)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(errors.is_empty(), "errors under load: {errors:?}");
    log.flush().await.unwrap();
    let answered = answers.load(Ordering::Relaxed);
    assert_eq!(answered, CLIENTS * PER_CLIENT);
    assert_eq!(log.stats().entries_committed - before, answered as u64);
    local.shutdown().await.unwrap();
}

/// A plaintext exchange whose police department has two adapter endpoints.
async fn two_police_endpoints() -> (
    tempfile::TempDir,
    [tongban_adapter::RunningAdapter; 2],
    tongban_exchange::ExchangeHandle,
) {
    let dir = tempfile::Builder::new()
        .prefix("tongban-failover-")
        .tempdir()
        .unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("police.db").display()
    );
    let mut adapters = Vec::new();
    for _ in 0..2 {
        let service = reference::service(Dept::Police, &url).await.unwrap();
        adapters.push(
            tongban_adapter::RunningAdapter::spawn(service, "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
        );
    }
    std::fs::write(
        dir.path().join("policy.toml"),
        format!(
            "[[grant]]\ncallers = [\"{COMMUNITY_CALLER}\"]\nmatters = [\"temporary-id-card\"]\n"
        ),
    )
    .unwrap();
    let config = format!(
        "node = \"failover-1\"\nlisten = \"127.0.0.1:0\"\npolicy = \"policy.toml\"\n\
         plaintext_caller = \"{COMMUNITY_CALLER}\"\n\n[admin]\nenabled = false\n\n\
         [departments.police]\nendpoints = [\"{}\", \"{}\"]\neject_after_failures = 3\n",
        adapters[0].url(),
        adapters[1].url()
    );
    let path = dir.path().join("exchange.toml");
    std::fs::write(&path, config).unwrap();
    let exchange = tongban_exchange::start(
        tongban_exchange::ExchangeConfig::load(&path).unwrap(),
        tongban_exchange::StartOptions::default(),
    )
    .await
    .unwrap();
    let adapters: [tongban_adapter::RunningAdapter; 2] = adapters.try_into().unwrap();
    (dir, adapters, exchange)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_endpoint_down_fails_over_to_the_other_without_errors() {
    let (_dir, [first, second], exchange) = two_police_endpoints().await;
    let police = exchange
        .exchange()
        .departments()
        .get("police")
        .unwrap()
        .clone();
    let mut client = ExchangeClient::connect(format!("http://{}", exchange.local_addr()))
        .await
        .unwrap();
    let request = || {
        with_deadline(
            lookup_request(
                "temporary-id-card",
                &stories::MOSUO_VILLAGER,
                "police.identity",
            ),
            Duration::from_secs(5),
        )
    };
    for _ in 0..20 {
        client.lookup(request()).await.unwrap();
    }
    first.shutdown().await.unwrap();
    // Every lookup still succeeds: an unreachable endpoint is retried on the
    // other one, then taken out of rotation.
    for i in 0..200 {
        let answer = client.lookup(request()).await;
        assert!(
            answer.is_ok(),
            "lookup {i} after one endpoint died: {answer:?}"
        );
    }
    // Either endpoint is picked at random (two choices, equal load): the
    // dead one was tried far more than three times in 200, and ejected.
    assert!(police.ejections() >= 1);
    second.shutdown().await.unwrap();
    let status = client.lookup(request()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    exchange.shutdown().await.unwrap();
}
