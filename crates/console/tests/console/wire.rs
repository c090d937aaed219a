//! The real listener against clients that do not play by the rules: a
//! huge declared body, a request that is not HTTP, a wrong method, and one
//! that opens a connection and never finishes its request (slowloris).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tongban_audit::{
    AuditConfig, AuditLog, AuditStore, EntryKind, Keyring, LogSigner, SearchFilter, SqliteStore,
    SubjectPseudonymizer, origin_for_node,
};
use tongban_console::{Console, ConsoleBackend, ConsoleServer, ConsoleSettings, hash_password};

const TIMEOUT: Duration = Duration::from_secs(30);

struct Running {
    server: ConsoleServer,
    store: Arc<dyn AuditStore>,
    log: AuditLog,
    _dir: tempfile::TempDir,
}

async fn start() -> anyhow::Result<Running> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn AuditStore> =
        Arc::new(SqliteStore::open(&dir.path().join("audit.db")).await?);
    let signer = LogSigner::generate(&origin_for_node("node-a"))?;
    let keyring = Keyring::new().with(signer.verifier());
    let log = AuditLog::open(store.clone(), signer, AuditConfig::new("node-a")).await?;
    let backend = ConsoleBackend {
        store: store.clone(),
        pseudonymizer: SubjectPseudonymizer::from_bytes(&[9u8; 32])?,
        log: log.clone(),
        keyring,
    };
    let mut settings = ConsoleSettings::default();
    settings
        .users
        .insert("admin".into(), hash_password("s3cret-pw")?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let server = ConsoleServer::serve(listener, Console::new(settings, backend)?)?;
    Ok(Running {
        server,
        store,
        log,
        _dir: dir,
    })
}

/// Writes `raw` on a fresh connection and reads until the server closes it.
async fn exchange(server: &ConsoleServer, raw: &[u8]) -> anyhow::Result<String> {
    let talk = async {
        let mut stream = TcpStream::connect(server.local_addr()).await?;
        stream.write_all(raw).await?;
        let mut out = Vec::new();
        // A reset after the answer (the server stops reading a body it
        // refused) still leaves the answer read.
        let _ = stream.read_to_end(&mut out).await;
        anyhow::Ok(String::from_utf8_lossy(&out).into_owned())
    };
    tokio::time::timeout(TIMEOUT, talk)
        .await
        .context("the console neither answered nor closed")?
}

fn status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn admin_actions(store: &dyn AuditStore) -> anyhow::Result<usize> {
    let filter = SearchFilter {
        kind: Some(EntryKind::AdminAction),
        ..Default::default()
    };
    Ok(store.search(&filter, None, 1000).await?.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_are_refused_at_the_door() -> anyhow::Result<()> {
    let running = start().await?;
    let addr = running.server.local_addr();

    // A sign-in declaring 100 MB: 413 at once, the body never read.
    let r = exchange(
        &running.server,
        format!(
            "POST /login HTTP/1.1\r\nHost: {addr}\r\nCookie: tb_login=aa\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000000\r\n\r\ncsrf=aa&user=admin&password=s3cret-pw"
        )
        .as_bytes(),
    )
    .await?;
    assert_eq!(status(&r), 413, "{r}");
    let lower = r.to_ascii_lowercase();
    assert!(lower.contains("content-security-policy:"), "{r}");
    assert!(!lower.contains("set-cookie"), "{r}");

    // ... but for another host, 421 comes first.
    let r = exchange(
        &running.server,
        b"POST /login HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 100000000\r\n\r\n",
    )
    .await?;
    assert_eq!(status(&r), 421, "{r}");

    // Not HTTP at all.
    let r = exchange(&running.server, b"\x16\x03\x01\x02\x00 hello?\r\n\r\n").await?;
    assert_eq!(status(&r), 400, "{r}");

    // A method no route has.
    let r = exchange(
        &running.server,
        format!("DELETE /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    assert_eq!(status(&r), 405, "{r}");
    assert!(r.to_ascii_lowercase().contains("allow: "), "{r}");

    // A chunked body past the limit, with no length declared up front.
    let chunk = "x".repeat(32 * 1024);
    let mut raw = format!(
        "POST /login HTTP/1.1\r\nHost: {addr}\r\nCookie: tb_login=aa\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for _ in 0..3 {
        raw.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    raw.push_str("0\r\n\r\n");
    let r = exchange(&running.server, raw.as_bytes()).await?;
    assert_eq!(status(&r), 413, "{r}");

    running.log.flush().await?;
    assert_eq!(admin_actions(running.store.as_ref()).await?, 0);
    running.server.shutdown().await;
    running.log.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_finishes_its_request_head_is_cut_off() -> anyhow::Result<()> {
    let running = start().await?;
    let addr = running.server.local_addr();
    let started = Instant::now();
    let r = exchange(
        &running.server,
        format!("GET /login HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes(),
    )
    .await?;
    let waited = started.elapsed();
    assert!(!r.contains("tb_login"), "{r}");
    // The head must be in within 10 s (HEADER_READ_TIMEOUT).
    assert!(waited >= Duration::from_secs(9), "{waited:?}");
    assert!(waited < Duration::from_secs(20), "{waited:?}");

    // Meanwhile and after, the console answers others.
    let r = exchange(
        &running.server,
        format!("GET /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    assert_eq!(status(&r), 200, "{r}");
    running.server.shutdown().await;
    running.log.shutdown().await?;
    Ok(())
}
