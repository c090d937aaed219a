//! `tongban serve` serves the administrators' console next to the exchange
//! when `[console]` asks: on its own loopback port, signing in with an
//! Argon2 hash from the configuration, every act recorded in the node's own
//! audit log.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tongban_audit::{AuditStore, EntryKind, SearchFilter, SqliteStore};
use tongban_cli::node::NodeConfig;
use tongban_exchange::StartOptions;

const CALLER: &str = "org/91350100M000100Y43/unit/bench";

fn write_config(dir: &std::path::Path, console: &str) -> NodeConfig {
    std::fs::write(
        dir.join("policy.toml"),
        format!("[[grant]]\ncallers = [\"{CALLER}\"]\nmatters = [\"temporary-id-card\"]\n"),
    )
    .unwrap();
    let path = dir.join("exchange.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\npolicy = \"policy.toml\"\nplaintext_caller = \"{CALLER}\"\n\
             [admin]\nenabled = false\n{console}"
        ),
    )
    .unwrap();
    NodeConfig::load(&path).unwrap()
}

/// One HTTP/1.1 request; returns status, headers (lower-cased names), body.
async fn http(addr: SocketAddr, request: &str) -> (u16, Vec<(String, String)>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("answer within 10 s")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let code = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (code, headers, body.to_owned())
}

fn cookie(headers: &[(String, String)], name: &str) -> String {
    headers
        .iter()
        .filter(|(k, _)| k == "set-cookie")
        .find_map(|(_, v)| v.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_owned()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

#[tokio::test]
async fn the_console_is_off_unless_configured() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    assert!(!config.console.is_active());
    let handle = tongban_cli::node::start(config, StartOptions::default())
        .await
        .unwrap();
    assert!(handle.console_addr().is_none());
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_exchange_serves_the_console_and_audits_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let hash = tongban_console::hash_password("pw-for-the-test").unwrap();
    let config = write_config(
        dir.path(),
        &format!("[console]\nlisten = \"127.0.0.1:0\"\n[console.users]\nadmin = \"{hash}\"\n"),
    );
    assert!(config.console.is_active());
    let shown = config.to_redacted_toml();
    assert!(
        !shown.contains(&hash),
        "password hashes are redacted: {shown}"
    );
    let handle = tongban_cli::node::start(config, StartOptions::default())
        .await
        .unwrap();
    let addr = handle.console_addr().expect("console serving");
    assert!(addr.ip().is_loopback());

    // Only the console's own address is answered (DNS rebinding).
    let (code, _, _) = http(
        addr,
        "GET /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 421);
    let (code, headers, _) = http(
        addr,
        &format!("GET /overview HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(code, 303);
    assert_eq!(header(&headers, "location"), "/login");
    assert_eq!(header(&headers, "x-frame-options"), "DENY");

    let (code, headers, _) = http(
        addr,
        &format!("GET /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(code, 200);
    let token = cookie(&headers, "tb_login");
    let form = format!("csrf={token}&user=admin&password=pw-for-the-test");
    let (code, headers, _) = http(
        addr,
        &format!(
            "POST /login HTTP/1.1\r\nHost: {addr}\r\nCookie: tb_login={token}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{form}",
            form.len()
        ),
    )
    .await;
    assert_eq!(code, 303, "{headers:?}");
    let session = cookie(&headers, "tb_session");
    let (code, _, body) = http(
        addr,
        &format!(
            "GET /overview HTTP/1.1\r\nHost: {addr}\r\nCookie: tb_session={session}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(code, 200);
    assert!(body.contains("id=\"chart-lookups\""));

    // The acts are in this node's own log.
    handle
        .exchange()
        .audit_log()
        .unwrap()
        .flush()
        .await
        .unwrap();
    let store = SqliteStore::open(&dir.path().join("audit.db"))
        .await
        .unwrap();
    let filter = SearchFilter {
        kind: Some(EntryKind::AdminAction),
        ..Default::default()
    };
    let acts: Vec<(String, String, String)> = store
        .search(&filter, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.entry.node, e.entry.operator, e.entry.detail))
        .collect();
    assert!(
        acts.contains(&(
            "exchange-1".into(),
            "admin".into(),
            "console.sign-in".into()
        )),
        "{acts:?}"
    );
    assert!(
        acts.iter().any(|(_, _, d)| d == "console.overview"),
        "{acts:?}"
    );
    handle.shutdown().await.unwrap();
}
