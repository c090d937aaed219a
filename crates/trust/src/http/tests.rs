//! The scaffold against clients that do not play by the rules (idle,
//! trickling, garbage, oversized, too many) and through its lifecycle
//! (connection age, shutdown with idle, busy and hung connections). What a
//! caller's router does (routes, body limits, deadlines) is tested with the
//! caller.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// Limits short enough for a test to wait them out.
const QUICK: HttpLimits = HttpLimits {
    max_connections: 2,
    header_read_timeout: Duration::from_millis(300),
    max_header_size: 8 * 1024,
    max_connection_age: Duration::from_secs(60),
    drain_timeout: Duration::from_secs(5),
};

/// Long enough that a test finishing well within it did not wait for it.
const LONG: Duration = Duration::from_secs(30);

const GET: &str = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

/// `/` answers at once; `/slow/N` after N ms; `/stream/N` at once with a
/// body whose second half follows N ms later.
fn router() -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/slow/{ms}",
            get(|Path(ms): Path<u64>| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                "slow"
            }),
        )
        .route(
            "/stream/{ms}",
            get(|Path(ms): Path<u64>| async move {
                let parts = futures::stream::unfold(0, move |n| async move {
                    match n {
                        0 => Some((Ok::<_, io::Error>("first "), 1)),
                        1 => {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            Some((Ok("second"), 2))
                        }
                        _ => None,
                    }
                });
                Body::from_stream(parts)
            }),
        )
}

async fn server(limits: HttpLimits) -> HttpServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    HttpServer::serve("test", listener, router(), limits).expect("serve")
}

/// Writes `request` on a fresh connection and reads until the server
/// closes it.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may close before reading it all.
    let _ = stream.write_all(request).await;
    closed_within(&mut stream, Duration::from_secs(5)).await
}

fn status(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Reads until the server closes the connection; fails if it is still
/// open after `within`. Returns what was read.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> String {
    let mut raw = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut raw)).await {
        // A reset after an answer still leaves the answer read.
        Ok(_) => String::from_utf8_lossy(&raw).into_owned(),
        Err(_) => panic!("connection still open after {within:?}"),
    }
}

/// Sends a keep-alive request and reads its whole response (`ok`, two
/// bytes), leaving the connection open.
async fn keep_alive_request(stream: &mut TcpStream) {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut raw = Vec::new();
    let mut buf = [0u8; 512];
    while !raw.ends_with(b"\r\n\r\nok") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("answer within 5 s")
            .expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
    assert!(raw.starts_with(b"HTTP/1.1 200"));
}

async fn connect_refused(addr: SocketAddr) -> bool {
    match TcpStream::connect(addr).await {
        Err(_) => true,
        // Accepted by the kernel but never served: closed unread.
        Ok(mut stream) => {
            let mut buf = [0u8; 1];
            matches!(
                tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await,
                Ok(Ok(0) | Err(_))
            )
        }
    }
}

#[tokio::test]
async fn serves_the_router_and_closes_its_port_on_shutdown() {
    let server = server(HttpLimits::DEFAULT).await;
    let addr = server.local_addr();
    let r = exchange(addr, GET.as_bytes()).await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(r.ends_with("\r\n\r\nok"), "{r}");
    let r = exchange(
        addr,
        b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 404, "{r}");
    server.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn garbage_is_refused_and_the_server_keeps_serving() {
    let server = server(QUICK).await;
    let addr = server.local_addr();
    // A TLS ClientHello's first bytes, then noise.
    let r = exchange(addr, b"\x16\x03\x01\x02\x00 hello?\r\n\r\n").await;
    assert!(r.is_empty() || status(&r) == 400, "{r}");
    let r = exchange(addr, GET.as_bytes()).await;
    assert_eq!(status(&r), 200, "{r}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_head_past_max_header_size_is_refused() {
    let server = server(QUICK).await;
    let addr = server.local_addr();
    // Within the limit: served.
    let fits = "a".repeat(QUICK.max_header_size / 2);
    let r = exchange(
        addr,
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {fits}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(status(&r), 200, "{r}");
    // Past it: 431, or the connection closed.
    let big = "a".repeat(8 * QUICK.max_header_size);
    let r = exchange(
        addr,
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(r.is_empty() || status(&r) == 431, "{r}");
    // Still serving.
    let r = exchange(addr, GET.as_bytes()).await;
    assert_eq!(status(&r), 200, "{r}");
    server.shutdown().await;
}

#[tokio::test]
async fn idle_and_trickling_connections_are_dropped_after_the_head_timeout() {
    let server = server(QUICK).await;
    let addr = server.local_addr();
    // Connects and says nothing.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    // Starts a request and never finishes its head.
    let mut trickle = TcpStream::connect(addr).await.expect("connect");
    trickle
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let (idle_text, trickle_text) =
        tokio::join!(closed_within(&mut idle, Duration::from_secs(3)), async {
            // One header byte at a time: each arrives in time, the head does not.
            for byte in b"X-Slow: aaaaaaaaaa" {
                if trickle.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            closed_within(&mut trickle, Duration::from_secs(3)).await
        });
    let waited = started.elapsed();
    assert!(waited >= QUICK.header_read_timeout, "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    for text in [idle_text, trickle_text] {
        assert!(text.is_empty() || status(&text) == 408, "{text}");
    }
    // Their slots are free again: the whole cap serves.
    for _ in 0..QUICK.max_connections {
        let r = exchange(addr, GET.as_bytes()).await;
        assert_eq!(status(&r), 200, "{r}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_head_timeout() {
    let server = server(QUICK).await;
    let mut stream = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    keep_alive_request(&mut stream).await;
    let answered = Instant::now();
    let rest = closed_within(&mut stream, Duration::from_secs(3)).await;
    assert!(rest.is_empty(), "{rest}");
    let waited = answered.elapsed();
    assert!(waited >= QUICK.header_read_timeout / 2, "{waited:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_at_accept() {
    // Idle keep-alive connections are held long enough to fill the cap.
    let server = server(HttpLimits {
        header_read_timeout: LONG,
        ..QUICK
    })
    .await;
    let addr = server.local_addr();
    let mut held = Vec::new();
    for _ in 0..QUICK.max_connections {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        keep_alive_request(&mut stream).await;
        held.push(stream);
    }
    let r = exchange(addr, GET.as_bytes()).await;
    assert!(r.is_empty(), "{r}");
    // One leaves, one more is served.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = exchange(addr, GET.as_bytes()).await;
        if status(&r) == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "slot not freed: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn an_old_connection_finishes_its_request_and_is_closed() {
    let age = Duration::from_millis(300);
    let server = server(HttpLimits {
        header_read_timeout: LONG,
        max_connection_age: age,
        ..QUICK
    })
    .await;
    let addr = server.local_addr();

    // Busy when it comes of age: the response still arrives, whole, and
    // then the connection closes.
    let mut busy = TcpStream::connect(addr).await.expect("connect");
    busy.write_all(b"GET /slow/800 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let r = closed_within(&mut busy, Duration::from_secs(5)).await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(r.ends_with("\r\n\r\nslow"), "{r}");

    // Idle when it comes of age: closed then, not at the head timeout.
    let started = Instant::now();
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    keep_alive_request(&mut idle).await;
    let rest = closed_within(&mut idle, Duration::from_secs(5)).await;
    assert!(rest.is_empty(), "{rest}");
    assert!(started.elapsed() >= age, "{:?}", started.elapsed());
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_connections() {
    let server = server(HttpLimits {
        header_read_timeout: LONG,
        drain_timeout: LONG,
        ..HttpLimits::DEFAULT
    })
    .await;
    let addr = server.local_addr();
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let mut kept = TcpStream::connect(addr).await.expect("connect");
    keep_alive_request(&mut kept).await;
    let mut partial = TcpStream::connect(addr).await.expect("connect");
    partial
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        .await
        .expect("write");
    // Let the server read what was sent.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    server.shutdown().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    for stream in [&mut silent, &mut kept, &mut partial] {
        let rest = closed_within(stream, Duration::from_secs(2)).await;
        assert!(rest.is_empty(), "{rest}");
    }
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() {
    let server = server(HttpLimits {
        drain_timeout: LONG,
        ..HttpLimits::DEFAULT
    })
    .await;
    let addr = server.local_addr();
    // One waits for its handler, one for the rest of its body.
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /slow/600 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut streaming = TcpStream::connect(addr).await.expect("connect");
    streaming
        .write_all(b"GET /stream/600 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut first = [0u8; 12];
    streaming.read_exact(&mut first).await.expect("head");
    assert_eq!(&first, b"HTTP/1.1 200");
    // Let the server read the slow request's head.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    let (_, slow_text, streaming_text) = tokio::join!(
        server.shutdown(),
        closed_within(&mut slow, Duration::from_secs(5)),
        closed_within(&mut streaming, Duration::from_secs(5)),
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(status(&slow_text), 200, "{slow_text}");
    assert!(slow_text.ends_with("\r\n\r\nslow"), "{slow_text}");
    assert!(streaming_text.contains("first "), "{streaming_text}");
    assert!(streaming_text.contains("second"), "{streaming_text}");
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_cuts_off_a_request_that_outlasts_the_drain() {
    let drain = Duration::from_millis(300);
    let server = server(HttpLimits {
        drain_timeout: drain,
        ..HttpLimits::DEFAULT
    })
    .await;
    let mut hung = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    hung.write_all(b"GET /slow/60000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.shutdown().await;
    let took = started.elapsed();
    assert!(took >= drain, "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let rest = closed_within(&mut hung, Duration::from_secs(2)).await;
    assert!(rest.is_empty(), "{rest}");
}

#[tokio::test]
async fn dropping_the_server_stops_it() {
    let server = server(HttpLimits::DEFAULT).await;
    let addr = server.local_addr();
    drop(server);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !connect_refused(addr).await {
        assert!(Instant::now() < deadline, "still serving after drop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
