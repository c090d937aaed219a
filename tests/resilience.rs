//! Fault tests: a department killed mid-load, brought back, made slow;
//! failover between two endpoints of one department; and a bounded load test
//! with no errors and one audit entry per answer. Everything on 127.0.0.1,
//! every loop bounded in count and time.
//!
//! Latency comparisons use medians of many calls and allow 2x the normal
//! latency plus 2 ms, because these machines are shared and noisy; the
//! scenarios run one at a time so they do not disturb each other.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tongban_devkit::local::LocalOptions;
use tongban_devkit::reference::{self, Dept, stories};
use tongban_proto::v1::exchange_client::ExchangeClient;
use tongban_tests::{eventually, lookup_request, own_deployment};
use tonic::Code;
use tonic::transport::Channel;

/// One scenario at a time: latency measurements must not share the CPU.
static SERIAL: Mutex<()> = Mutex::const_new(());

const COMMUNITY: &str = "dongli-community";

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

/// Median latency of `n` sequential police lookups (all must succeed).
async fn police_median(client: &mut ExchangeClient<Channel>, n: usize) -> Duration {
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        client
            .lookup(with_deadline(police_lookup(), Duration::from_secs(5)))
            .await
            .expect("police answers");
        took.push(started.elapsed());
    }
    took.sort();
    took[n / 2]
}

fn within_twice(normal: Duration, observed: Duration) -> bool {
    observed <= normal * 2 + Duration::from_millis(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_department_fails_fast_spares_the_others_and_comes_back() {
    let _serial = SERIAL.lock().await;
    let (_dir, mut local) = own_deployment(LocalOptions::default()).await.unwrap();
    let mut client = local.client(COMMUNITY).await.unwrap();
    // Warm up connections to every department, then take the normal latency.
    for request in [police_lookup(), hrss_lookup()] {
        client
            .lookup(with_deadline(request, Duration::from_secs(5)))
            .await
            .unwrap();
    }
    let normal = police_median(&mut client, 40).await;

    local.stop_department(Dept::Hrss).await.unwrap();

    // Hammer the dead department from the side while measuring police.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
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
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                sent += 1;
            }
            sent
        })
    };
    let during = police_median(&mut client, 40).await;
    stop.store(true, Ordering::Relaxed);
    let hammered = hammer.await.unwrap();
    assert!(hammered > 0);
    eprintln!(
        "police median: {normal:?} normally, {during:?} with hrss dead ({hammered} hrss calls beside)"
    );
    assert!(
        within_twice(normal, during),
        "police median {during:?} with hrss dead, {normal:?} normally"
    );

    // The endpoint is out of rotation now: the dead department fails fast.
    let mut took = Vec::new();
    for _ in 0..21 {
        let started = Instant::now();
        let status = client
            .lookup(with_deadline(hrss_lookup(), Duration::from_secs(5)))
            .await
            .unwrap_err();
        took.push(started.elapsed());
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("hrss"), "{}", status.message());
    }
    took.sort();
    eprintln!("dead hrss fails in {:?} (median)", took[10]);
    assert!(
        took[10] < Duration::from_millis(10),
        "a dead department should fail in under 10 ms, median {:?}",
        took[10]
    );

    // Back again: traffic recovers without restarting the exchange.
    local.restart_department(Dept::Hrss).await.unwrap();
    eventually(Duration::from_secs(10), "hrss answers again", || {
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
async fn a_slow_department_does_not_slow_the_others() {
    let _serial = SERIAL.lock().await;
    let options = LocalOptions::default()
        .slow_department(Dept::Hrss, Duration::from_secs(2))
        .department_timeout(Duration::from_secs(3));
    let (_dir, local) = own_deployment(options).await.unwrap();
    let mut client = local.client(COMMUNITY).await.unwrap();
    client
        .lookup(with_deadline(police_lookup(), Duration::from_secs(5)))
        .await
        .unwrap();
    let normal = police_median(&mut client, 40).await;

    // Twenty slow requests in flight for two seconds...
    let slow: Vec<_> = (0..20)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .lookup(with_deadline(hrss_lookup(), Duration::from_secs(5)))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...while police keeps its pace.
    let during = police_median(&mut client, 40).await;
    eprintln!("police median: {normal:?} normally, {during:?} beside 20 slow hrss calls");
    assert!(
        within_twice(normal, during),
        "police median {during:?} beside a slow hrss, {normal:?} normally"
    );
    for request in slow {
        let answer = request.await.unwrap();
        assert!(answer.is_ok(), "slow but within its limit: {answer:?}");
    }
    local.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_load_has_no_errors_and_one_audit_entry_per_answer() {
    let _serial = SERIAL.lock().await;
    let (_dir, local) = own_deployment(LocalOptions::default()).await.unwrap();
    let log = local.exchange().audit_log().unwrap().clone();
    log.flush().await.unwrap();
    let before = log.stats().entries_committed;

    let answers = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(3);
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let answers = answers.clone();
            let local_client = local.client(COMMUNITY);
            async move {
                let mut client = local_client.await.unwrap();
                let mut errors = Vec::new();
                for n in 0..400 {
                    if Instant::now() > until {
                        break;
                    }
                    let request = if (i + n) % 2 == 0 {
                        police_lookup()
                    } else {
                        hrss_lookup()
                    };
                    match client
                        .lookup(with_deadline(request, Duration::from_secs(5)))
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
    let answered = answers.load(Ordering::Relaxed) as u64;
    assert!(answered > 100, "only {answered} answers");
    eprintln!("{answered} answers in 3 s from 8 clients, no errors");
    assert_eq!(log.stats().entries_committed - before, answered);
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
    let caller = "org/12510403TB0000060J/unit/dongli-community";
    std::fs::write(
        dir.path().join("policy.toml"),
        format!("[[grant]]\ncallers = [\"{caller}\"]\nmatters = [\"temporary-id-card\"]\n"),
    )
    .unwrap();
    let config = format!(
        "node = \"failover-1\"\nlisten = \"127.0.0.1:0\"\npolicy = \"policy.toml\"\n\
         plaintext_caller = \"{caller}\"\n\n[admin]\nenabled = false\n\n\
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
    let _serial = SERIAL.lock().await;
    let (_dir, [first, second], exchange) = two_police_endpoints().await;
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
    second.shutdown().await.unwrap();
    let status = client.lookup(request()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    exchange.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_department_sheds_load_instead_of_queueing() {
    let _serial = SERIAL.lock().await;
    let options = LocalOptions::default()
        .slow_department(Dept::Hrss, Duration::from_millis(600))
        .max_in_flight(4)
        // One caller here stands for many: the department's limit, not the
        // caller's share, is what this test is about.
        .max_in_flight_per_caller(4);
    let (_dir, local) = own_deployment(options).await.unwrap();
    let client = local.client(COMMUNITY).await.unwrap();
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .lookup(with_deadline(hrss_lookup(), Duration::from_secs(5)))
                    .await
            })
        })
        .collect();
    // The other departments are not held up by the full one.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    client
        .clone()
        .lookup(with_deadline(police_lookup(), Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
    let (mut answered, mut shed) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => answered += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                let (reason, _, meta) = tongban_tests::error_info(&status);
                assert_eq!(reason, "DEPARTMENT_OVERLOADED");
                assert_eq!(meta["department"], "hrss");
                use tonic_types::StatusExt;
                assert!(status.get_details_retry_info().is_some());
                shed += 1;
            }
        }
    }
    assert!(
        answered >= 4 && shed >= 1,
        "answered {answered}, shed {shed}"
    );
    local.shutdown().await.unwrap();
}
