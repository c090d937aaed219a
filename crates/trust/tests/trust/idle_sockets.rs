//! Sockets that connect and never say hello must not keep honest clients
//! out: real sockets on 127.0.0.0/8, a real mTLS server (tonic health).

// Helpers outside #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tongban_devkit::pki::{DevPki, DevPkiOptions, init_dev_pki};
use tongban_trust::{HandshakeCounts, IncomingOptions, IncomingStats, TlsIncoming};
use tonic::transport::{Endpoint, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Far below the 10 s handshake timeout an idle socket could hold a slot for.
const HONEST_CALL_BOUND: Duration = Duration::from_secs(2);

struct Fixture {
    _tmp: tempfile::TempDir,
    pki: DevPki,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let pki = init_dev_pki(&tmp.path().join("pki"), &DevPkiOptions::default()).unwrap();
    Fixture { _tmp: tmp, pki }
}

async fn serve(f: &Fixture, options: IncomingOptions) -> (SocketAddr, IncomingStats) {
    let config = f.pki.server_config("exchange").unwrap().build().unwrap();
    let incoming = TlsIncoming::bind("127.0.0.1:0".parse().unwrap(), config, options)
        .await
        .unwrap();
    let addr = incoming.local_addr();
    let stats = incoming.stats();
    let (reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        let _reporter = reporter;
        Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    (addr, stats)
}

/// One health call on a fresh connection (so a fresh handshake) from
/// `from`; returns how long it took.
async fn honest_call(f: &Fixture, addr: SocketAddr, from: IpAddr) -> Duration {
    let started = Instant::now();
    let tls = f
        .pki
        .client_config("hotline-96196")
        .unwrap()
        .build(None)
        .unwrap();
    // Our own connector dials from `from` (tonic's `local_address` applies
    // only to its built-in connector).
    let connector = tower::service_fn(move |_| {
        let tls = tls.clone();
        async move {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(from, 0))?;
            let tcp = socket.connect(addr).await?;
            let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await?;
            Ok::<_, io::Error>(TokioIo::new(stream))
        }
    });
    let call = async {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_with_connector(connector)
            .await
            .unwrap();
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .unwrap();
    };
    tokio::time::timeout(Duration::from_secs(15), call)
        .await
        .expect("the honest call finished within 15 s");
    started.elapsed()
}

async fn idle_connection(addr: SocketAddr, from: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    tokio::time::timeout(Duration::from_secs(5), socket.connect(addr))
        .await
        .expect("connected within 5 s")
        .unwrap()
}

/// Waits (bounded) until the server has accepted `n` connections.
async fn accepted(stats: &IncomingStats, n: u64) -> bool {
    for _ in 0..300 {
        if stats.snapshot().accepted >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// The counts once `settled` holds of them (bookkeeping may trail the
/// socket's close by a moment), or the last seen after a bounded wait.
async fn counts_when(
    stats: &IncomingStats,
    settled: impl Fn(&HandshakeCounts) -> bool,
) -> HandshakeCounts {
    for _ in 0..300 {
        let counts = stats.snapshot();
        if settled(&counts) {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stats.snapshot()
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(within, stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => panic!("the server sent bytes before any ClientHello"),
        Err(_) => false,
    }
}

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const OTHER_LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

#[tokio::test]
async fn eleven_hundred_idle_sockets_do_not_delay_an_honest_client() {
    let f = fixture();
    let (addr, stats) = serve(&f, IncomingOptions::default()).await;
    let mut idle = Vec::with_capacity(1100);
    for _ in 0..1100 {
        idle.push(idle_connection(addr, LOCAL).await);
    }
    // Not asserted: the accept loop this test guards against never gets here.
    accepted(&stats, 1100).await;

    for round in 0..5 {
        let took = honest_call(&f, addr, LOCAL).await;
        assert!(
            took < HONEST_CALL_BOUND,
            "honest call {round} from the attackers' own address took {took:?}"
        );
    }
    let took = honest_call(&f, addr, OTHER_LOCAL).await;
    assert!(took < HONEST_CALL_BOUND, "from 127.0.0.2: {took:?}");

    let counts = counts_when(&stats, |c| c.established == 6).await;
    assert_eq!(counts.established, 6, "{counts:?}");
    assert!(
        counts.pending <= IncomingOptions::default().max_pending_handshakes_per_ip,
        "one address holds no more than its share: {counts:?}"
    );
    assert!(counts.shed_per_ip >= 1100 - 128, "{counts:?}");
    drop(idle);
}

#[tokio::test]
async fn a_full_table_sheds_the_oldest_pending_handshake_and_admits_the_newest() {
    let f = fixture();
    let options = IncomingOptions {
        max_pending_handshakes: 4,
        max_pending_handshakes_per_ip: 100,
        ..IncomingOptions::default()
    };
    let (addr, stats) = serve(&f, options).await;
    let mut idle = Vec::new();
    for n in 1..=4 {
        idle.push(idle_connection(addr, LOCAL).await);
        assert!(accepted(&stats, n).await);
    }
    assert_eq!(stats.snapshot().pending, 4);

    // A fifth: the oldest goes, the others stay.
    idle.push(idle_connection(addr, LOCAL).await);
    assert!(accepted(&stats, 5).await);
    assert!(closed_by_server(&mut idle[0], Duration::from_secs(2)).await);
    assert!(!closed_by_server(&mut idle[1], Duration::from_millis(100)).await);
    let counts = counts_when(&stats, |c| c.shed == 1).await;
    assert_eq!((counts.shed, counts.shed_per_ip, counts.pending), (1, 0, 4));

    // An honest client still gets in, at the cost of the next-oldest.
    let took = honest_call(&f, addr, LOCAL).await;
    assert!(took < HONEST_CALL_BOUND, "{took:?}");
    assert!(closed_by_server(&mut idle[1], Duration::from_secs(2)).await);
    let counts = counts_when(&stats, |c| c.shed == 2 && c.established == 1).await;
    assert_eq!((counts.shed, counts.established), (2, 1), "{counts:?}");
    for stream in &mut idle[2..] {
        assert!(!closed_by_server(stream, Duration::from_millis(50)).await);
    }
}

#[tokio::test]
async fn one_address_cannot_take_the_slots_of_another() {
    let f = fixture();
    let options = IncomingOptions {
        max_pending_handshakes: 100,
        max_pending_handshakes_per_ip: 2,
        ..IncomingOptions::default()
    };
    let (addr, stats) = serve(&f, options).await;
    let mut idle = Vec::new();
    for n in 1..=3 {
        idle.push(idle_connection(addr, LOCAL).await);
        assert!(accepted(&stats, n).await);
    }
    assert!(closed_by_server(&mut idle[0], Duration::from_secs(2)).await);
    let counts = counts_when(&stats, |c| c.shed == 1).await;
    assert_eq!((counts.shed, counts.shed_per_ip, counts.pending), (1, 1, 2));

    // Another address is not charged for the first one's sockets.
    let took = honest_call(&f, addr, OTHER_LOCAL).await;
    assert!(took < HONEST_CALL_BOUND, "{took:?}");
    let counts = counts_when(&stats, |c| c.established == 1).await;
    assert_eq!((counts.shed, counts.established), (1, 1), "{counts:?}");
    for stream in &mut idle[1..] {
        assert!(!closed_by_server(stream, Duration::from_millis(50)).await);
    }
}

#[tokio::test]
async fn a_socket_that_never_says_hello_is_closed_after_the_hello_timeout() {
    let f = fixture();
    let hello_timeout = Duration::from_millis(300);
    let options = IncomingOptions {
        client_hello_timeout: hello_timeout,
        handshake_timeout: Duration::from_secs(10),
        ..IncomingOptions::default()
    };
    let (addr, stats) = serve(&f, options).await;
    let started = Instant::now();
    let mut idle = idle_connection(addr, LOCAL).await;
    assert!(closed_by_server(&mut idle, Duration::from_secs(5)).await);
    // Timers never fire early: a lower bound is not a race.
    assert!(
        started.elapsed() >= hello_timeout,
        "{:?}",
        started.elapsed()
    );
    let counts = counts_when(&stats, |c| c.pending == 0).await;
    assert_eq!(
        (
            counts.client_hello_timeouts,
            counts.handshake_timeouts,
            counts.pending
        ),
        (1, 0, 0),
        "{counts:?}"
    );
}
