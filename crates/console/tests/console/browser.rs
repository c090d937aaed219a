//! The console in a real browser: Debian's headless Chromium driven over
//! WebDriver (chromedriver as a child process) against a local deployment
//! (exchange, three department adapters, mutual TLS, audit log) that has
//! served some traffic. Screenshots of every page are written to
//! `target/console-screenshots/`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tongban_audit::{AuditStore, EntryKind, Keyring, SearchFilter, SqliteStore};
use tongban_console::{Console, ConsoleBackend, ConsoleServer, ConsoleSettings, hash_password};
use tongban_devkit::local::{CALL_TIMEOUT, LocalDeployment};
use tongban_devkit::reference::stories::{self, Story};
use tongban_proto::v1::{CaseContext, GatherRequest, LookupRequest, Subject};

const PASSWORD: &str = "攀枝花 correct horse 96196";
const INSTALL: &str = "apt-get install -y chromium chromium-driver (tests/setup.sh does it)";

/// A minimal W3C WebDriver client: JSON over HTTP/1.1, one connection per command.
mod webdriver {
    use super::*;

    const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

    pub async fn call(
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut stream = TcpStream::connect(addr)
            .await
            .context("connecting to chromedriver")?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        // chromedriver keeps connections open whatever we ask, so read by length.
        let payload = tokio::time::timeout(Duration::from_secs(60), read_response(&mut stream))
            .await
            .context("chromedriver did not answer within 60 s")??;
        let value: Value = serde_json::from_slice(&payload).with_context(|| {
            format!(
                "{method} {path}: not JSON: {}",
                String::from_utf8_lossy(&payload)
            )
        })?;
        let value = value.get("value").cloned().unwrap_or(Value::Null);
        if let Some(error) = value.get("error").and_then(Value::as_str) {
            bail!(
                "{method} {path}: {error}: {}",
                value
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            );
        }
        Ok(value)
    }

    async fn read_response(stream: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
        let mut raw = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
                let body = &raw[split + 4..];
                if head.contains("transfer-encoding: chunked") {
                    if body.windows(5).any(|w| w == b"0\r\n\r\n") {
                        return dechunk(body);
                    }
                } else {
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .context("no content-length")?;
                    if body.len() >= length {
                        return Ok(body[..length].to_vec());
                    }
                }
            }
            let n = stream.read(&mut buf).await?;
            ensure!(n > 0, "chromedriver closed the connection mid-response");
            raw.extend_from_slice(&buf[..n]);
        }
    }

    fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let line_end = data
                .windows(2)
                .position(|w| w == b"\r\n")
                .context("bad chunk")?;
            let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end])?.trim(), 16)?;
            data = &data[line_end + 2..];
            if size == 0 {
                return Ok(out);
            }
            out.extend_from_slice(data.get(..size).context("short chunk")?);
            data = data.get(size + 2..).context("short chunk")?;
        }
    }

    #[derive(Debug)]
    pub struct Browser {
        addr: SocketAddr,
        session: String,
    }

    impl Browser {
        pub async fn start(addr: SocketAddr, chromium: &Path) -> anyhow::Result<Self> {
            let caps = json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": ["--headless", "--no-sandbox", "--disable-gpu",
                             "--window-size=1440,1600", "--lang=zh-CN"]
                }
            }}});
            let v = call(addr, "POST", "/session", Some(&caps)).await?;
            let session = v["sessionId"].as_str().context("no session id")?.to_owned();
            Ok(Self { addr, session })
        }

        async fn cmd(
            &self,
            method: &str,
            path: &str,
            body: Option<Value>,
        ) -> anyhow::Result<Value> {
            call(
                self.addr,
                method,
                &format!("/session/{}{path}", self.session),
                body.as_ref(),
            )
            .await
        }

        pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
            self.cmd("POST", "/url", Some(json!({ "url": url })))
                .await
                .map(|_| ())
        }

        pub async fn url(&self) -> anyhow::Result<String> {
            Ok(self
                .cmd("GET", "/url", None)
                .await?
                .as_str()
                .unwrap_or_default()
                .to_owned())
        }

        pub async fn find_all(&self, css: &str) -> anyhow::Result<Vec<String>> {
            let v = self
                .cmd(
                    "POST",
                    "/elements",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await?;
            Ok(v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e[ELEMENT].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default())
        }

        pub async fn find(&self, css: &str) -> anyhow::Result<String> {
            match self.find_all(css).await?.into_iter().next() {
                Some(el) => Ok(el),
                None => {
                    let source = self.cmd("GET", "/source", None).await.unwrap_or_default();
                    bail!(
                        "no element matches {css:?} on {}:\n{}",
                        self.url().await.unwrap_or_default(),
                        source.as_str().unwrap_or_default()
                    )
                }
            }
        }

        pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
            let el = self.find(css).await?;
            self.cmd(
                "POST",
                &format!("/element/{el}/value"),
                Some(json!({ "text": text })),
            )
            .await
            .map(|_| ())
        }

        pub async fn click(&self, css: &str) -> anyhow::Result<()> {
            let el = self.find(css).await?;
            self.cmd("POST", &format!("/element/{el}/click"), Some(json!({})))
                .await
                .map(|_| ())
        }

        pub async fn text(&self, css: &str) -> anyhow::Result<String> {
            let el = self.find(css).await?;
            Ok(self
                .cmd("GET", &format!("/element/{el}/text"), None)
                .await?
                .as_str()
                .unwrap_or_default()
                .to_owned())
        }

        pub async fn attr(&self, css: &str, name: &str) -> anyhow::Result<String> {
            let el = self.find(css).await?;
            Ok(self
                .cmd("GET", &format!("/element/{el}/attribute/{name}"), None)
                .await?
                .as_str()
                .unwrap_or_default()
                .to_owned())
        }

        pub async fn script(&self, script: &str) -> anyhow::Result<Value> {
            self.cmd(
                "POST",
                "/execute/sync",
                Some(json!({"script": script, "args": []})),
            )
            .await
        }

        pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
            use base64::Engine;
            let v = self.cmd("GET", "/screenshot", None).await?;
            let png = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().context("no image")?)?;
            std::fs::write(path, png)?;
            println!("screenshot: {}", path.display());
            Ok(())
        }

        pub async fn quit(self) {
            let _ = call(
                self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            )
            .await;
        }
    }
}

use webdriver::Browser;

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// chromedriver running as our child on a free loopback port.
struct Driver {
    child: tokio::process::Child,
    addr: SocketAddr,
}

impl Driver {
    async fn start() -> anyhow::Result<(Self, PathBuf)> {
        let driver = find_in_path("chromedriver");
        let chromium = find_in_path("chromium").or_else(|| find_in_path("chromium-browser"));
        let (Some(driver), Some(chromium)) = (driver, chromium) else {
            panic!(
                "the browser tests need Chromium and chromedriver on PATH, found neither or only one; install them: {INSTALL}"
            );
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = tokio::process::Command::new(&driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", driver.display()))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(v) = webdriver::call(addr, "GET", "/status", None).await
                && v["ready"].as_bool() == Some(true)
            {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "chromedriver not ready within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok((Self { child, addr }, chromium))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("console-screenshots");
    let _ = std::fs::create_dir_all(&dir);
    dir.canonicalize().unwrap_or(dir)
}

fn subject(story: &Story) -> Option<Subject> {
    Some(Subject {
        id_number: story.id_number.into(),
        name: story.name.into(),
        ..Default::default()
    })
}

fn case(matter: &str, case_number: &str, operator: &str) -> Option<CaseContext> {
    Some(CaseContext {
        matter: matter.into(),
        case_number: case_number.into(),
        operator_id: operator.into(),
    })
}

/// Lookups from three service points, a refused one from the hotline.
async fn traffic(local: &LocalDeployment) -> anyhow::Result<()> {
    let plan: [(&str, &str, Story); 5] = [
        (
            "salian-police-station",
            "temporary-id-card",
            stories::MOSUO_VILLAGER,
        ),
        (
            "dongli-community",
            "unemployment-benefit",
            stories::LAID_OFF_WORKER,
        ),
        (
            "dongli-community",
            "pension-qualification",
            stories::CERTIFIED_RETIREE,
        ),
        (
            "dongli-community",
            "subsistence-allowance",
            stories::SUBSISTENCE_RECIPIENT,
        ),
        (
            "salian-township",
            "unemployment-benefit",
            stories::SHORT_INSURED_WORKER,
        ),
    ];
    let mut answered = 0;
    for round in 0..2 {
        for (i, (party, matter, story)) in plan.iter().enumerate() {
            let mut client = local.client(party).await?;
            let mut request = tonic::Request::new(GatherRequest {
                case: case(matter, &format!("PZH-2026-{round}{i:03}"), "clerk-01"),
                subject: subject(story),
                evidence_types: Vec::new(),
                ..Default::default()
            });
            request.set_timeout(CALL_TIMEOUT);
            if client.gather(request).await.is_ok() {
                answered += 1;
            }
        }
    }
    ensure!(answered > 0, "no Gather was answered");
    let mut hotline = local.client("hotline-96196").await?;
    let mut request = tonic::Request::new(LookupRequest {
        case: case("temporary-id-card", "96196-20261126-89", "agent-07"),
        subject: subject(&stories::MOSUO_VILLAGER),
        evidence_type: "police.household".into(),
        fields: None,
    });
    request.set_timeout(CALL_TIMEOUT);
    let refused = hotline.lookup(request).await;
    ensure!(
        refused.as_ref().err().map(tonic::Status::code) == Some(tonic::Code::PermissionDenied),
        "the hotline was not refused: {refused:?}"
    );
    Ok(())
}

/// A local deployment, its console on a loopback port, and a browser.
struct Harness {
    local: LocalDeployment,
    server: ConsoleServer,
    store: Arc<dyn AuditStore>,
    browser: Browser,
    _driver: Driver,
    base: String,
    shots: PathBuf,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(with_traffic: bool) -> anyhow::Result<Self> {
        // The browser first: without it nothing else is worth starting.
        let (driver, chromium) = Driver::start().await?;
        let dir = tempfile::Builder::new()
            .prefix("tongban-console-")
            .tempdir()?;
        let local = LocalDeployment::start(dir.path()).await?;
        if with_traffic {
            traffic(&local).await?;
        }
        let log = local
            .exchange()
            .audit_log()
            .context("the local exchange writes an audit log")?
            .clone();
        // Sign a checkpoint over the traffic so its proofs verify.
        log.flush().await?;
        let store: Arc<dyn AuditStore> =
            Arc::new(SqliteStore::open(&dir.path().join("audit.db")).await?);
        let pseudonymizer = tongban_exchange::audit::load_or_create_subject_key(
            &dir.path().join("subject-pseudonym.key"),
        )
        .map_err(anyhow::Error::msg)?;
        let keyring = Keyring::parse(&std::fs::read_to_string(
            dir.path().join("audit-signing.pub"),
        )?)?;
        let mut settings = ConsoleSettings::default();
        settings.users.insert(
            "admin".into(),
            hash_password(PASSWORD).map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        let console = Console::new(
            settings,
            ConsoleBackend {
                store: store.clone(),
                pseudonymizer,
                log,
                keyring,
            },
        )?;
        let server = ConsoleServer::bind("127.0.0.1:0".parse()?, console).await?;
        ensure!(server.local_addr().ip().is_loopback());
        let base = format!("http://{}", server.local_addr());
        let browser = Browser::start(driver.addr, &chromium).await?;
        let shots = screenshot_dir();
        println!("console at {base}; screenshots in {}", shots.display());
        Ok(Self {
            local,
            server,
            store,
            browser,
            _driver: driver,
            base,
            shots,
            _dir: dir,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn shot(&self, name: &str) -> anyhow::Result<()> {
        self.browser
            .screenshot(&self.shots.join(format!("{name}.png")))
            .await
    }

    async fn sign_in(&self, password: &str) -> anyhow::Result<()> {
        self.browser.goto(&self.url("/login")).await?;
        self.browser.fill("#user", "admin").await?;
        self.browser.fill("#password", password).await?;
        self.browser.click("#sign-in").await
    }

    /// Waits (bounded) until `check` holds.
    async fn wait_for<F, Fut>(&self, what: &str, mut check: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<bool>>,
    {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if check().await.unwrap_or(false) {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn admin_actions(&self) -> anyhow::Result<Vec<String>> {
        let filter = SearchFilter {
            kind: Some(EntryKind::AdminAction),
            operator: Some("admin".into()),
            ..Default::default()
        };
        Ok(self
            .store
            .search(&filter, None, 1000)
            .await?
            .into_iter()
            .map(|e| e.entry.detail)
            .collect())
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.browser.quit().await;
        self.server.shutdown().await;
        self.local.shutdown().await
    }
}

fn count(text: &str) -> u64 {
    text.trim().parse().unwrap_or(0)
}

/// Runs a test body on a runtime with roomy stacks: a whole deployment's
/// futures overflow the default 2 MiB in debug builds.
fn run<F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static>(
    body: F,
) -> anyhow::Result<()> {
    const STACK: usize = 32 << 20;
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .thread_stack_size(STACK)
                .enable_all()
                .build()?
                .block_on(body)
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("test thread panicked"))?
}

#[test]
fn administrator_walks_through_every_page_in_chromium() -> anyhow::Result<()> {
    run(walk_through_every_page())
}

async fn walk_through_every_page() -> anyhow::Result<()> {
    let h = Harness::start(true).await?;
    let b = &h.browser;

    // Sign in.
    h.sign_in(PASSWORD).await?;
    h.wait_for("the overview after sign-in", || async {
        Ok(b.url().await?.ends_with("/overview"))
    })
    .await?;
    assert_eq!(b.text("#signed-in-user").await?, "admin");

    // Overview: three SVG charts, drawn with real size.
    ensure!(b.find_all("svg.chart").await?.len() == 3, "three charts");
    ensure!(
        !b.find_all("#chart-lookups polyline").await?.is_empty(),
        "a line per department"
    );
    ensure!(
        b.find_all("#chart-rates polyline").await?.len() == 2,
        "error and denial lines"
    );
    ensure!(
        !b.find_all("#chart-latency rect.bar").await?.is_empty(),
        "latency bars"
    );
    let width = b
        .script("return document.getElementById('chart-lookups').getBoundingClientRect().width")
        .await?;
    ensure!(
        width.as_f64().unwrap_or(0.0) > 300.0,
        "the chart is laid out: {width}"
    );
    ensure!(
        count(&b.text("#total-requests").await?) > 0,
        "traffic is counted"
    );
    h.shot("01-overview").await?;

    // Search by subject: the identity number never reaches the URL.
    let worker = stories::LAID_OFF_WORKER.id_number;
    b.goto(&h.url("/search")).await?;
    b.fill("#subject-id", worker).await?;
    b.click("#search-button").await?;
    h.wait_for("search results", || async {
        Ok(b.url().await?.contains("subject="))
    })
    .await?;
    let url = b.url().await?;
    ensure!(!url.contains(worker), "identity number in the URL: {url}");
    let found = count(&b.text("#result-count").await?);
    ensure!(found > 0, "the worker's accesses are found");
    h.shot("02-search-by-subject").await?;

    // Open an entry: its inclusion proof verifies against the pinned key.
    b.click("a.entry-link").await?;
    h.wait_for("the entry page", || async {
        Ok(b.url().await?.contains("/entry?"))
    })
    .await?;
    assert_eq!(b.attr("#proof-status", "data-status").await?, "verified");
    ensure!(b.text("#proof-status").await?.contains("Verified"));
    ensure!(
        b.text("#checkpoint")
            .await?
            .contains("tongban/audit/exchange-1")
    );
    h.shot("03-entry-proof").await?;

    // Subject report, printable.
    b.goto(&h.url("/subject")).await?;
    b.fill("#id-number", worker).await?;
    b.click("#report-button").await?;
    h.wait_for("the report", || async {
        Ok(!b.find_all("#report").await?.is_empty())
    })
    .await?;
    ensure!(count(&b.text("#access-count").await?) > 0);
    assert_eq!(
        b.text("#masked-id").await?,
        format!("{}********{}", &worker[..6], &worker[14..])
    );
    ensure!(
        !b.find_all("link[rel=stylesheet][media=print]")
            .await?
            .is_empty(),
        "print stylesheet"
    );
    h.shot("04-subject-report").await?;

    // Integrity: verify now, progress polled by console.js, a clear verdict.
    b.goto(&h.url("/integrity")).await?;
    ensure!(
        !b.find_all(".node table.checkpoints tbody tr")
            .await?
            .is_empty(),
        "checkpoint history"
    );
    b.click("#verify-button").await?;
    h.wait_for("the verdict", || async {
        Ok(matches!(
            b.attr("#verify-box", "data-state").await?.as_str(),
            "passed" | "failed" | "error"
        ))
    })
    .await?;
    assert_eq!(b.attr("#verify-box", "data-state").await?, "passed");
    ensure!(b.text("#verify-state").await?.contains("PASSED"));
    // console.js (a static file under the CSP) polled the JSON status.
    h.wait_for("console.js to render the status", || async {
        Ok(b.text("#verify-count").await?.contains(" s"))
    })
    .await?;
    h.shot("05-integrity-verified").await?;

    // Every act above is in the audit log.
    let actions = h.admin_actions().await?;
    for act in [
        "console.sign-in",
        "console.overview",
        "console.search",
        "console.entry",
        "console.subject-report",
        "console.integrity",
        "console.verify-started",
        "console.verify-finished",
    ] {
        ensure!(
            actions.iter().any(|d| d.starts_with(act)),
            "{act} not logged: {actions:?}"
        );
    }
    ensure!(
        actions.iter().all(|d| !d.contains(worker)),
        "identity number in the log"
    );
    h.stop().await
}

#[test]
fn signed_out_browser_is_sent_to_sign_in_and_a_wrong_password_is_refused() -> anyhow::Result<()> {
    run(signed_out_and_wrong_password())
}

async fn signed_out_and_wrong_password() -> anyhow::Result<()> {
    let h = Harness::start(false).await?;
    let b = &h.browser;

    // No session: every page leads to the sign-in form.
    for path in ["/overview", "/search", "/integrity", "/subject"] {
        b.goto(&h.url(path)).await?;
        let url = b.url().await?;
        ensure!(url.ends_with("/login"), "{path} went to {url}");
    }
    ensure!(!b.find_all("#sign-in").await?.is_empty());
    h.shot("06-signed-out-redirect").await?;

    // Wrong password: refused, no session.
    h.sign_in("wrong password").await?;
    h.wait_for("the refusal", || async {
        Ok(!b.find_all("#login-error").await?.is_empty())
    })
    .await?;
    ensure!(
        b.text("#login-error")
            .await?
            .contains("Wrong name or password")
    );
    h.shot("07-wrong-password").await?;
    b.goto(&h.url("/search")).await?;
    ensure!(
        b.url().await?.ends_with("/login"),
        "no session after a refused sign-in"
    );

    let actions = h.admin_actions().await?;
    ensure!(
        actions.iter().any(|d| d == "console.sign-in-refused"),
        "{actions:?}"
    );
    ensure!(
        !actions.iter().any(|d| d == "console.sign-in"),
        "{actions:?}"
    );
    h.stop().await
}
