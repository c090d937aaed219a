//! HTTP/2 abuse against real servers over mutual TLS on 127.0.0.1: the
//! limits of `tongban_trust::ServerLimits` are advertised and enforced.
//! The attacking client speaks raw HTTP/2 frames (or the `h2` crate), since
//! a well-behaved client library never exceeds what the server advertises.

// Test code: a panic here is a test failure, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tongban_devkit::pki::{DevPki, DevPkiOptions, init_dev_pki};
use tongban_devkit::reference::{self, Dept};
use tongban_trust::ServerLimits;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const CANCEL: u32 = 0x8;
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

struct Adapter {
    _tmp: tempfile::TempDir,
    pki: DevPki,
    addr: SocketAddr,
}

/// A police adapter over mutual TLS (admitting only the exchange's
/// certificate) with `limits`.
async fn adapter(limits: ServerLimits) -> Adapter {
    let tmp = tempfile::tempdir().unwrap();
    let pki = init_dev_pki(&tmp.path().join("pki"), &DevPkiOptions::default()).unwrap();
    let db = tmp.path().join("police.db");
    let service = reference::service(Dept::Police, &format!("sqlite://{}?mode=rwc", db.display()))
        .await
        .unwrap();
    let tls = pki.server_config("police").unwrap().allow_only([pki
        .get("exchange")
        .unwrap()
        .identity
        .clone()]);
    let listener = tongban_trust::bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tongban_adapter::serve_tls_limited(
            service,
            listener,
            tls,
            &limits,
            std::future::pending::<()>(),
        )
        .await
        .unwrap();
    });
    Adapter {
        _tmp: tmp,
        pki,
        addr,
    }
}

fn client_tls(pki: &DevPki, party: &str) -> Arc<ClientConfig> {
    pki.client_config(party).unwrap().build(None).unwrap()
}

async fn tls_connect(addr: SocketAddr, tls: Arc<ClientConfig>) -> TlsStream<TcpStream> {
    let connect = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tokio_rustls::TlsConnector::from(tls)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    };
    tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .expect("TLS connection within 5 s")
}

/// A well-behaved caller's health check on its own connection.
async fn honest_check(addr: SocketAddr, pki: &DevPki) {
    let tls = pki.client_config("exchange").unwrap();
    let call = async {
        let channel = tongban_trust::connect_channel(
            &format!("https://localhost:{}", addr.port()),
            &tls,
            None,
        )
        .await
        .unwrap();
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .unwrap();
    };
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("honest call within 5 s");
}

// ---------- raw HTTP/2 frames

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A gRPC request's HEADERS (no END_STREAM: the request body never comes,
/// so the server holds the stream open). HPACK literals without indexing.
fn request_headers(stream: u32) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "https"),
        (":path", "/grpc.health.v1.Health/Check"),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        block.push(0x00);
        block.push(u8::try_from(name.len()).unwrap());
        block.extend_from_slice(name.as_bytes());
        block.push(u8::try_from(value.len()).unwrap());
        block.extend_from_slice(value.as_bytes());
    }
    frame(HEADERS, END_HEADERS, stream, &block)
}

fn reset(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    fn code(&self) -> u32 {
        // RST_STREAM: the code; GOAWAY: last stream id, then the code.
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

/// The next frame, or `None` when the server closed the connection.
async fn read_frame(io: &mut (impl AsyncReadExt + Unpin)) -> Option<Frame> {
    let mut head = [0u8; 9];
    io.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff,
        payload,
    })
}

/// Preface and an empty SETTINGS, then the server's SETTINGS (acknowledged).
/// Returns the server's settings as (id, value) pairs.
async fn open_h2(io: &mut TlsStream<TcpStream>) -> Vec<(u16, u32)> {
    io.write_all(PREFACE).await.unwrap();
    io.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    let settings = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let f = read_frame(io).await.expect("server SETTINGS");
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                return f;
            }
        }
    })
    .await
    .expect("server SETTINGS within 5 s");
    io.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
    settings
        .payload
        .chunks_exact(6)
        .map(|p| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
            )
        })
        .collect()
}

// ---------- tests

#[tokio::test]
async fn the_adapter_advertises_its_stream_limit_and_refuses_streams_beyond_it() {
    let limits = ServerLimits {
        max_concurrent_streams: 8,
        ..ServerLimits::default()
    };
    let a = adapter(limits).await;
    let mut io = tls_connect(a.addr, client_tls(&a.pki, "exchange")).await;
    let settings = open_h2(&mut io).await;
    assert!(
        settings.contains(&(SETTINGS_MAX_CONCURRENT_STREAMS, 8)),
        "{settings:?}"
    );

    // Twelve streams that never send their body: the server may hold eight.
    let mut burst = Vec::new();
    let streams: Vec<u32> = (0..12).map(|n| 1 + 2 * n).collect();
    for &id in &streams {
        burst.extend(request_headers(id));
    }
    io.write_all(&burst).await.unwrap();
    let mut refused = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while refused.len() < 4 {
        let f = tokio::time::timeout_at(deadline.into(), read_frame(&mut io))
            .await
            .unwrap_or_else(|_| panic!("only {refused:?} refused within 5 s"))
            .expect("connection stays open");
        if f.kind == RST_STREAM {
            assert_eq!(f.code(), REFUSED_STREAM, "{f:?}");
            refused.push(f.stream);
        }
    }
    assert_eq!(refused, streams[8..], "the streams past the limit");
    // A new caller is not affected.
    honest_check(a.addr, &a.pki).await;
}

#[tokio::test]
async fn a_rapid_reset_flood_gets_goaway_while_other_callers_are_served() {
    let a = adapter(ServerLimits::default()).await;
    let mut io = tls_connect(a.addr, client_tls(&a.pki, "exchange")).await;
    open_h2(&mut io).await;
    let (mut reader, mut writer) = tokio::io::split(io);
    let flood = tokio::spawn(async move {
        // Open and cancel in batches, at most 5,000 streams.
        let mut sent = 0u32;
        for batch in 0..50u32 {
            let mut bytes = Vec::new();
            for n in 0..100 {
                let id = 1 + 2 * (batch * 100 + n);
                bytes.extend(request_headers(id));
                bytes.extend(reset(id, CANCEL));
            }
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
            sent += 100;
        }
        sent
    });
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        let mut goaway = None;
        while let Some(f) = read_frame(&mut reader).await {
            if f.kind == GOAWAY {
                goaway = Some(f.code());
            }
        }
        goaway
    });
    // Other callers keep being served during the flood.
    for _ in 0..5 {
        honest_check(a.addr, &a.pki).await;
    }
    let goaway = outcome
        .await
        .expect("the server closed the connection within 10 s");
    assert_eq!(goaway, Some(ENHANCE_YOUR_CALM));
    let sent = flood.await.unwrap();
    assert!(sent <= 5000);
    honest_check(a.addr, &a.pki).await;
}

#[tokio::test]
async fn a_silent_connection_is_dropped_after_the_keepalive_timeout() {
    let limits = ServerLimits {
        http2_keepalive_interval_ms: 300,
        http2_keepalive_timeout_ms: 300,
        ..ServerLimits::default()
    };
    let a = adapter(limits).await;
    let mut io = tls_connect(a.addr, client_tls(&a.pki, "exchange")).await;
    open_h2(&mut io).await;
    let started = Instant::now();
    // Read what the server sends but never answer its PINGs.
    let pings = tokio::time::timeout(Duration::from_secs(4), async {
        let mut pings = 0;
        while let Some(f) = read_frame(&mut io).await {
            if f.kind == PING && f.flags & ACK == 0 {
                pings += 1;
            }
        }
        pings
    })
    .await
    .expect("the server dropped the silent connection within 4 s");
    assert!(pings >= 1, "the server checked with a PING first");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn the_exchange_advertises_its_default_stream_limit() {
    let deployment = tongban_tests::shared_deployment(env!("CARGO_TARGET_TMPDIR"));
    let addr: SocketAddr = deployment
        .exchange_url()
        .strip_prefix("https://")
        .unwrap()
        .parse()
        .unwrap();
    let mut io = tls_connect(addr, client_tls(deployment.pki(), "dongli-community")).await;
    let settings = open_h2(&mut io).await;
    let expected = ServerLimits::default().max_concurrent_streams;
    assert!(
        settings.contains(&(SETTINGS_MAX_CONCURRENT_STREAMS, expected)),
        "{settings:?}"
    );
}
