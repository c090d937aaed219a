//! A complete deployment on this machine: a development PKI, the three
//! reference departments (seeded SQLite), the access policy and one exchange
//! node with its audit log — every hop mutual TLS, every port an ephemeral
//! one on 127.0.0.1. Used by `tongban demo`, the end-to-end tests and the
//! benchmark.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tongban_adapter::reference::{self, Dept};
use tongban_exchange::{ExchangeConfig, ExchangeHandle};
use tongban_proto::v1::exchange_client::ExchangeClient;
use tongban_trust::PeerIdentity;
use tongban_trust::pki::{DevPki, DevPkiOptions, Role};
use tonic::transport::Channel;

/// The departments of the reference deployment.
pub const DEPARTMENTS: [Dept; 3] = [Dept::Police, Dept::Civil, Dept::Hrss];

/// One running reference adapter.
#[derive(Debug)]
struct LocalAdapter {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// Everything running; dropped or [`shutdown`](Self::shutdown) stops it.
#[derive(Debug)]
pub struct LocalDeployment {
    state_dir: PathBuf,
    pki: DevPki,
    exchange: Option<ExchangeHandle>,
    adapters: BTreeMap<&'static str, LocalAdapter>,
}

impl LocalDeployment {
    /// Starts everything under `state_dir`, reusing a PKI, databases and
    /// audit log already there.
    pub async fn start(state_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let pki_dir = state_dir.join("pki");
        let pki = if pki_dir.join(tongban_trust::pki::MANIFEST_FILE).exists() {
            DevPki::load(&pki_dir)?
        } else {
            tongban_trust::pki::init_dev_pki(&pki_dir, &DevPkiOptions::default())?
        };
        let mut deployment = Self {
            state_dir: state_dir.to_owned(),
            pki,
            exchange: None,
            adapters: BTreeMap::new(),
        };
        for dept in DEPARTMENTS {
            deployment
                .start_adapter(dept, "127.0.0.1:0".parse()?)
                .await?;
        }
        std::fs::write(state_dir.join("policy.toml"), policy_toml(&deployment.pki)?)?;
        let exchange_toml = state_dir.join("exchange.toml");
        std::fs::write(&exchange_toml, deployment.exchange_toml())?;
        let config = ExchangeConfig::load(&exchange_toml)?;
        deployment.exchange = Some(tongban_exchange::start(config).await?);
        Ok(deployment)
    }

    /// Starts (or restarts, on the same port) one department's adapter. It
    /// admits only the exchange's certificate.
    async fn start_adapter(&mut self, dept: Dept, addr: SocketAddr) -> anyhow::Result<()> {
        let db = self.state_dir.join(format!("{}.db", dept.id()));
        // Migrates and seeds (idempotently) before preparing the queries.
        let service =
            reference::service(dept, &format!("sqlite://{}?mode=rwc", db.display())).await?;
        let exchange_identity = self.pki.get("exchange")?.identity.clone();
        let tls = self
            .pki
            .server_config(dept.id())?
            .allow_only([exchange_identity]);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the {} adapter", dept.id()))?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let name = dept.id();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = tongban_adapter::serve_tls(service, listener, tls, shutdown).await {
                tracing::error!(department = name, error = %e, "adapter stopped with an error");
            }
        });
        self.adapters.insert(
            dept.id(),
            LocalAdapter {
                addr,
                stop: Some(stop),
                task,
            },
        );
        Ok(())
    }

    /// Takes a department offline (an outage).
    pub async fn stop_department(&mut self, dept: Dept) -> anyhow::Result<()> {
        let Some(adapter) = self.adapters.get_mut(dept.id()) else {
            bail!("no adapter for {}", dept.id());
        };
        if let Some(stop) = adapter.stop.take() {
            let _ = stop.send(());
        }
        (&mut adapter.task).await?;
        Ok(())
    }

    /// Brings a stopped department back on its old address.
    pub async fn restart_department(&mut self, dept: Dept) -> anyhow::Result<()> {
        let addr = self
            .adapters
            .get(dept.id())
            .map(|a| a.addr)
            .context("unknown department")?;
        self.start_adapter(dept, addr).await
    }

    fn exchange_toml(&self) -> String {
        let pki = "pki";
        let mut text = format!(
            "# Written by tongban's local deployment.\n\
             node = \"exchange-1\"\n\
             listen = \"127.0.0.1:0\"\n\
             policy = \"policy.toml\"\n\n\
             [tls]\n\
             cert = \"{pki}/exchange.pem\"\n\
             key = \"{pki}/exchange.key\"\n\
             ca = \"{pki}/ca.pem\"\n\n\
             [audit]\n\
             store = \"audit.db\"\n\
             signing_key = \"audit-signing.key\"\n\
             subject_key = \"subject-pseudonym.key\"\n"
        );
        for (dept, adapter) in &self.adapters {
            let identity = self
                .pki
                .get(dept)
                .map(|i| i.identity.to_string())
                .unwrap_or_default();
            let _ = write!(
                text,
                "\n[departments.{dept}]\nendpoints = [\"https://127.0.0.1:{}\"]\ntimeout_ms = 3000\nidentity = \"{identity}\"\n",
                adapter.addr.port()
            );
        }
        text
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub fn pki(&self) -> &DevPki {
        &self.pki
    }

    pub fn exchange(&self) -> &ExchangeHandle {
        // Set in `start`, cleared only by `shutdown`, which consumes self.
        self.exchange
            .as_ref()
            .unwrap_or_else(|| unreachable!("exchange runs until shutdown"))
    }

    /// `https://127.0.0.1:<port>` of the exchange.
    pub fn exchange_url(&self) -> String {
        format!("https://{}", self.exchange().local_addr())
    }

    /// `https://127.0.0.1:<port>` of a department's adapter.
    pub fn adapter_url(&self, dept: Dept) -> Option<String> {
        self.adapters
            .get(dept.id())
            .map(|a| format!("https://{}", a.addr))
    }

    /// A connected client presenting the certificate of PKI party `party`
    /// (e.g. `dongli-community`); the exchange must prove its identity.
    pub async fn client(&self, party: &str) -> anyhow::Result<ExchangeClient<Channel>> {
        let tls = self.pki.client_config(party)?;
        let expected = self.pki.get("exchange")?.identity.clone();
        let channel = tongban_trust::connect_channel(&self.exchange_url(), &tls, Some(&expected))
            .await
            .with_context(|| format!("{party} connecting to the exchange"))?;
        Ok(ExchangeClient::new(channel))
    }

    /// Stops the exchange (committing its audit tail) and the adapters.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(exchange) = self.exchange.take() {
            exchange.shutdown().await?;
        }
        for dept in DEPARTMENTS {
            self.stop_department(dept).await?;
        }
        Ok(())
    }
}

/// The deployment's policy: who may handle which matters, from the PKI's
/// service points.
pub fn policy_toml(pki: &DevPki) -> anyhow::Result<String> {
    let path = |name: &str| -> anyhow::Result<String> {
        let id: &PeerIdentity = &pki.get(name)?.identity;
        Ok(format!("org/{}/unit/{}", id.org(), id.unit()))
    };
    let admins: Vec<String> = pki
        .identities
        .iter()
        .filter(|i| i.role == Role::Administrator)
        .map(|i| format!("\"org/{}/unit/{}\"", i.identity.org(), i.identity.unit()))
        .collect();
    Ok(format!(
        r#"# Access policy of the local deployment. Everything not granted is denied.
trust_domain = "{domain}"

[groups]
police-stations = ["{police_station}"]
community-centres = ["{community}"]
township-halls = ["{township}"]

# Police stations issue temporary identity cards.
[[grant]]
callers = ["group:police-stations"]
matters = ["temporary-id-card"]

# Community centres and township halls handle social matters.
[[grant]]
callers = ["group:community-centres", "group:township-halls"]
matters = ["unemployment-benefit", "pension-qualification", "social-insurance-record", "subsistence-allowance"]

# The 96196 hotline tells callers where they stand, and no more.
[[grant]]
callers = ["{hotline}"]
matters = ["social-insurance-record"]
fields = {{ "police.identity" = ["name_matches", "alive"], "hrss.contributions" = ["total_months", "contributing"] }}

[admin]
callers = [{admins}]

[limits]
requests_per_second = 2000.0
burst = 4000
max_gather_evidence = 16
max_request_bytes = 16384
"#,
        domain = pki.trust_domain,
        police_station = path("salian-police-station")?,
        community = path("dongli-community")?,
        township = path("salian-township")?,
        hotline = path("hotline-96196")?,
        admins = admins.join(", "),
    ))
}

/// How long a demo or test waits for one call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
