//! DNS rebinding: the real console listener on 127.0.0.1 answers only
//! requests whose `Host` is one it was configured for, and refuses the rest
//! before any cookie, session or audit entry.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tongban_audit::{
    AuditConfig, AuditEntry, AuditLog, AuditStore, EntryKind, Keyring, LogSigner, SearchFilter,
    SqliteStore, SubjectPseudonymizer, origin_for_node,
};
use tongban_console::{Console, ConsoleBackend, ConsoleServer, ConsoleSettings, hash_password};

const TIMEOUT: Duration = Duration::from_secs(10);

struct Running {
    server: ConsoleServer,
    store: Arc<dyn AuditStore>,
    log: AuditLog,
    _dir: tempfile::TempDir,
}

async fn start(settings: ConsoleSettings, listener: TcpListener) -> anyhow::Result<Running> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn AuditStore> =
        Arc::new(SqliteStore::open(&dir.path().join("audit.db")).await?);
    let signer = LogSigner::generate(&origin_for_node("node-a"))?;
    let keyring = Keyring::new().with(signer.verifier());
    let log = AuditLog::open(store.clone(), signer, AuditConfig::new("node-a")).await?;
    log.append(AuditEntry::new(EntryKind::Lookup, Utc::now()))
        .await?;
    let backend = ConsoleBackend {
        store: store.clone(),
        pseudonymizer: SubjectPseudonymizer::from_bytes(&[9u8; 32])?,
        log: log.clone(),
        keyring,
    };
    let server = ConsoleServer::serve(listener, Console::new(settings, backend)?)?;
    Ok(Running {
        server,
        store,
        log,
        _dir: dir,
    })
}

fn settings() -> anyhow::Result<ConsoleSettings> {
    let mut settings = ConsoleSettings::default();
    settings
        .users
        .insert("admin".into(), hash_password("s3cret-pw")?);
    Ok(settings)
}

/// Sends `head` (request line and headers, without the blank line) and a
/// body on a fresh connection; returns the status and the whole response.
async fn send(server: &ConsoleServer, head: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(server.local_addr()).await?;
        let request = format!(
            "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(String::from_utf8_lossy(&raw).into_owned())
    };
    let response = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .context("the console did not answer within 10 s")??;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP response: {response:?}"))?;
    Ok((status, response))
}

async fn admin_actions(store: &dyn AuditStore) -> anyhow::Result<usize> {
    let filter = SearchFilter {
        kind: Some(EntryKind::AdminAction),
        ..Default::default()
    };
    Ok(store.search(&filter, None, 1000).await?.len())
}

fn assert_refused(status: u16, response: &str, what: &str) {
    assert_eq!(status, 421, "{what}: {response}");
    assert!(
        response.contains("misdirected request"),
        "{what}: {response}"
    );
    assert!(
        !response.to_ascii_lowercase().contains("set-cookie"),
        "{what}: {response}"
    );
    assert!(!response.contains("evil.example"), "the host is not echoed");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_configured_host_is_answered() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let running = start(settings()?, listener).await?;
    let addr = running.server.local_addr();
    let port = addr.port();

    // A rebinding page's requests: its own name, whatever port.
    for head in [
        format!("GET /login HTTP/1.1\r\nHost: evil.example:{port}"),
        "GET /overview HTTP/1.1\r\nHost: evil.example".to_owned(),
        // The right name twice, or on another port, is no better.
        format!("GET /login HTTP/1.1\r\nHost: {addr}\r\nHost: evil.example:{port}"),
        format!(
            "GET /login HTTP/1.1\r\nHost: 127.0.0.1:{}",
            port.wrapping_add(1)
        ),
        // An absolute-form target names the host; the Host header does not count.
        format!("GET http://evil.example:{port}/login HTTP/1.1\r\nHost: {addr}"),
        // No Host at all.
        "GET /login HTTP/1.1".to_owned(),
        "GET /login HTTP/1.0".to_owned(),
    ] {
        let (status, response) = send(&running.server, &head, "").await?;
        assert_refused(status, &response, &head);
    }
    // A sign-in posted through the rebound name is refused before the
    // password, the throttle or the audit log are touched.
    let (status, response) = send(
        &running.server,
        &format!(
            "POST /login HTTP/1.1\r\nHost: evil.example:{port}\r\nCookie: tb_login=aa\r\nContent-Type: application/x-www-form-urlencoded"
        ),
        "csrf=aa&user=admin&password=s3cret-pw",
    )
    .await?;
    assert_refused(status, &response, "POST /login");
    running.log.flush().await?;
    assert_eq!(admin_actions(running.store.as_ref()).await?, 0);

    // The addresses the console is bound to work, in any case.
    for host in [
        addr.to_string(),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
    ] {
        let (status, response) = send(
            &running.server,
            &format!("GET /login HTTP/1.1\r\nHost: {host}"),
            "",
        )
        .await?;
        assert_eq!(status, 200, "{host}: {response}");
        assert!(response.contains("tb_login="), "{host}: {response}");
    }
    let (status, _) = send(
        &running.server,
        &format!("GET http://{addr}/login HTTP/1.1\r\nHost: {addr}"),
        "",
    )
    .await?;
    assert_eq!(status, 200);
    running.server.shutdown().await;
    running.log.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn configured_allowed_hosts_replace_the_defaults() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let mut settings = settings()?;
    settings.allowed_hosts = vec![format!("Console.Tongban.Test:{port}")];
    let running = start(settings, listener).await?;

    let (status, response) = send(
        &running.server,
        &format!("GET /login HTTP/1.1\r\nHost: console.tongban.test:{port}"),
        "",
    )
    .await?;
    assert_eq!(status, 200, "{response}");
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let head = format!("GET /login HTTP/1.1\r\nHost: {host}");
        let (status, response) = send(&running.server, &head, "").await?;
        assert_refused(status, &response, &head);
    }
    running.server.shutdown().await;
    running.log.shutdown().await?;
    Ok(())
}
