//! A complete deployment on this machine: a development PKI, the four
//! reference departments (seeded SQLite), the access policy and one exchange
//! node with its audit log — every hop mutual TLS, every port an ephemeral
//! one on 127.0.0.1. Used by `tongban demo`, the end-to-end tests and the
//! benchmark.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::pki::{DevPki, DevPkiOptions, Role};
use crate::reference::{self, Dept};
use anyhow::{Context, bail};
use sqlx::Connection;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tongban_adapter::AdapterService;
use tongban_exchange::{ExchangeConfig, ExchangeHandle, StartOptions};
use tongban_proto::v1::adapter_server::{Adapter, AdapterServer};
use tongban_proto::v1::exchange_client::ExchangeClient;
use tongban_proto::v1::{DescribeRequest, DescribeResponse, QueryRequest, QueryResponse};
use tongban_trust::{IncomingOptions, PeerIdentity, TlsIncoming, TlsServerConfig};
use tonic::transport::Channel;

/// The departments of the reference deployment.
pub const DEPARTMENTS: [Dept; 5] = [
    Dept::Police,
    Dept::Civil,
    Dept::Hrss,
    Dept::Market,
    Dept::Medins,
];

/// One running reference adapter.
#[derive(Debug)]
struct LocalAdapter {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// Writes the access policy from the deployment's PKI.
type PolicyWriter = Box<dyn Fn(&DevPki) -> anyhow::Result<String> + Send + Sync>;

/// Variations on the reference deployment, for tests and benchmarks;
/// [`LocalDeployment::start`] uses the defaults.
#[derive(Default)]
pub struct LocalOptions {
    policy: Option<PolicyWriter>,
    slow: BTreeMap<&'static str, Duration>,
    department_timeout: Option<Duration>,
    reload_poll: Option<Duration>,
    max_in_flight: Option<usize>,
    max_in_flight_per_caller: Option<usize>,
    audit_store: Option<(String, Option<String>)>,
    no_witness: bool,
    databases: BTreeMap<&'static str, String>,
}

impl std::fmt::Debug for LocalOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalOptions")
            .field("custom_policy", &self.policy.is_some())
            .field("slow", &self.slow)
            .field("department_timeout", &self.department_timeout)
            .field("reload_poll", &self.reload_poll)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_in_flight_per_caller", &self.max_in_flight_per_caller)
            .field(
                "audit_store",
                &self.audit_store.as_ref().map(|(_, schema)| schema),
            )
            .field("no_witness", &self.no_witness)
            .field("databases", &self.databases.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl LocalOptions {
    /// The policy file's text, instead of [`policy_toml`].
    pub fn policy(
        mut self,
        write: impl Fn(&DevPki) -> anyhow::Result<String> + Send + Sync + 'static,
    ) -> Self {
        self.policy = Some(Box::new(write));
        self
    }

    /// The department answers every query only after `delay`.
    pub fn slow_department(mut self, dept: Dept, delay: Duration) -> Self {
        self.slow.insert(dept.id(), delay);
        self
    }

    /// Requests in flight per department before the exchange sheds
    /// (default: the exchange's default).
    pub fn max_in_flight(mut self, limit: usize) -> Self {
        self.max_in_flight = Some(limit);
        self
    }

    /// Requests one caller may have in flight per department (default: the
    /// exchange's default, a quarter of `max_in_flight`).
    pub fn max_in_flight_per_caller(mut self, limit: usize) -> Self {
        self.max_in_flight_per_caller = Some(limit);
        self
    }

    /// The longest the exchange waits for any department (default 3 s).
    pub fn department_timeout(mut self, timeout: Duration) -> Self {
        self.department_timeout = Some(timeout);
        self
    }

    /// How often the exchange checks the policy file (default 1 s).
    pub fn reload_poll(mut self, every: Duration) -> Self {
        self.reload_poll = Some(every);
        self
    }

    /// The audit log in this store (a `postgres://` URL, with a schema of
    /// its own) instead of `audit.db` in the state directory.
    pub fn audit_store(mut self, url: &str, schema: Option<&str>) -> Self {
        self.audit_store = Some((url.to_owned(), schema.map(str::to_owned)));
        self
    }

    /// No witness beside the exchange (by default one cosigns its checkpoints).
    pub fn without_witness(mut self) -> Self {
        self.no_witness = true;
        self
    }

    /// The department's reference adapter runs on this database (e.g. a
    /// PostgreSQL URL with `?options[search_path]=<schema>`), migrated and
    /// seeded at start, instead of a SQLite file in the state directory.
    pub fn department_database(mut self, dept: Dept, url: &str) -> Self {
        self.databases.insert(dept.id(), url.to_owned());
        self
    }
}

/// The node name of the local deployment's exchange.
pub const NODE: &str = "exchange-1";
/// The name of the local deployment's witness (the city's supervision
/// commission, say).
pub const WITNESS_NAME: &str = "witness.panzhihua-supervision.example";
/// How often the local exchange offers checkpoints to its witness.
const WITNESS_INTERVAL_MS: u64 = 200;

/// The witness running beside the local exchange.
#[derive(Debug)]
struct LocalWitness {
    witness: std::sync::Arc<tongban_witness::Witness>,
    server: tongban_witness::WitnessServer,
}

/// Everything running; dropped or [`shutdown`](Self::shutdown) stops it.
#[derive(Debug)]
pub struct LocalDeployment {
    state_dir: PathBuf,
    pki: DevPki,
    options: LocalOptions,
    exchange: Option<ExchangeHandle>,
    adapters: BTreeMap<&'static str, LocalAdapter>,
    witness: Option<LocalWitness>,
}

impl LocalDeployment {
    /// Starts everything under `state_dir`, reusing a PKI, databases and
    /// audit log already there.
    pub async fn start(state_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(state_dir, LocalOptions::default()).await
    }

    /// Like [`start`](Self::start), with variations.
    pub async fn start_with(state_dir: &Path, options: LocalOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let pki_dir = state_dir.join("pki");
        let pki = if pki_dir.join(crate::pki::MANIFEST_FILE).exists() {
            DevPki::load(&pki_dir)?
        } else {
            crate::pki::init_dev_pki(&pki_dir, &DevPkiOptions::default())?
        };
        let mut deployment = Self {
            state_dir: state_dir.to_owned(),
            pki,
            options,
            exchange: None,
            adapters: BTreeMap::new(),
            witness: None,
        };
        if !deployment.options.no_witness {
            deployment.start_witness().await?;
        }
        for dept in DEPARTMENTS {
            deployment
                .start_adapter(dept, "127.0.0.1:0".parse()?)
                .await?;
        }
        let policy = match &deployment.options.policy {
            Some(write) => write(&deployment.pki)?,
            None => policy_toml(&deployment.pki)?,
        };
        std::fs::write(deployment.policy_path(), policy)?;
        let exchange_toml = state_dir.join("exchange.toml");
        std::fs::write(&exchange_toml, deployment.exchange_toml())?;
        let config = ExchangeConfig::load(&exchange_toml)?;
        deployment.exchange = Some(tongban_exchange::start(config, StartOptions::default()).await?);
        Ok(deployment)
    }

    /// The node's checkpoint signing key (made now if absent, as the
    /// exchange would on first start), so the witness can pin it first.
    fn log_signer(&self) -> anyhow::Result<tongban_audit::LogSigner> {
        Ok(tongban_audit::LogSigner::load_or_generate(
            &self.state_dir.join("audit-signing.key"),
            &tongban_audit::origin_for_node(NODE),
        )?)
    }

    /// Starts the witness on 127.0.0.1:0, following the exchange's log.
    async fn start_witness(&mut self) -> anyhow::Result<()> {
        let dir = self.state_dir.join("witness");
        std::fs::create_dir_all(&dir)?;
        let key_path = dir.join("witness.key");
        let signer = if key_path.exists() {
            tongban_audit::WitnessSigner::load(&key_path, WITNESS_NAME)?
        } else {
            let signer = tongban_audit::WitnessSigner::generate(WITNESS_NAME)?;
            std::fs::write(&key_path, signer.to_note_private_key() + "\n")?;
            signer
        };
        std::fs::write(dir.join("witness.pub"), format!("{}\n", signer.verifier()))?;
        let log_key = self.log_signer()?.verifier();
        let state = tongban_witness::WitnessState::open(&dir.join("state"))?;
        let witness =
            std::sync::Arc::new(tongban_witness::Witness::open(signer, &[log_key], state)?);
        let server =
            tongban_witness::WitnessServer::bind("127.0.0.1:0".parse()?, witness.clone()).await?;
        self.witness = Some(LocalWitness { witness, server });
        Ok(())
    }

    /// The exchange's checkpoint verifier key (`<name>+<id>+<key>`), as a
    /// portal pins it.
    pub fn log_key(&self) -> anyhow::Result<String> {
        Ok(self.log_signer()?.verifier().to_string())
    }

    /// The witness's cosignature verifier key, when one runs.
    pub fn witness_key(&self) -> Option<String> {
        self.witness.as_ref().map(|w| w.witness.key().to_string())
    }

    /// Deletes one audit entry directly in the SQLite audit database, behind
    /// the exchange's back (the demo's attack); undo puts it back.
    pub async fn delete_entry_behind_the_exchange(
        &self,
        node: &str,
        index: u64,
    ) -> anyhow::Result<EntryDeletion> {
        if self.options.audit_store.is_some() {
            bail!("the audit log is not in the state directory's audit.db");
        }
        EntryDeletion::delete(&self.state_dir.join("audit.db"), node, index).await
    }

    /// The running witness (its counters: cosigned, split views...).
    pub fn witness(&self) -> Option<&tongban_witness::Witness> {
        self.witness.as_ref().map(|w| w.witness.as_ref())
    }

    /// Where the witness keeps its state and evidence of split views.
    pub fn witness_dir(&self) -> PathBuf {
        self.state_dir.join("witness").join("state")
    }

    /// Starts (or restarts, on the same port) one department's adapter. It
    /// admits only the exchange's certificate.
    async fn start_adapter(&mut self, dept: Dept, addr: SocketAddr) -> anyhow::Result<()> {
        let url = match self.options.databases.get(dept.id()) {
            Some(url) => url.clone(),
            None => {
                let db = self.state_dir.join(format!("{}.db", dept.id()));
                format!("sqlite://{}?mode=rwc", db.display())
            }
        };
        // Migrates and seeds (idempotently) before preparing the queries.
        let service = reference::service(dept, &url).await?;
        let exchange_identity = self.pki.get("exchange")?.identity.clone();
        let tls = self
            .pki
            .server_config(dept.id())?
            .allow_only([exchange_identity]);
        let listener = tongban_trust::bind_listener(addr)
            .with_context(|| format!("binding the {} adapter", dept.id()))?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let name = dept.id();
        let delay = self.options.slow.get(name).copied();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            let served = match delay {
                None => tongban_adapter::serve_tls(service, listener, tls, shutdown)
                    .await
                    .map_err(anyhow::Error::from),
                Some(delay) => {
                    serve_delayed(Delayed { service, delay }, listener, tls, shutdown).await
                }
            };
            if let Err(e) = served {
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
        // Already stopped: its task has ended and was awaited.
        let Some(stop) = adapter.stop.take() else {
            return Ok(());
        };
        let _ = stop.send(());
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
        let reload_poll_ms = self
            .options
            .reload_poll
            .map_or(1000, |d| d.as_millis().max(1));
        let timeout_ms = self
            .options
            .department_timeout
            .map_or(3000, |d| d.as_millis().max(1));
        let mut text = format!(
            "# Written by tongban's local deployment.\n\
             node = \"{NODE}\"\n\
             listen = \"127.0.0.1:0\"\n\
             policy = \"policy.toml\"\n\
             reload_poll_ms = {reload_poll_ms}\n\n\
             [tls]\n\
             cert = \"{pki}/exchange.pem\"\n\
             key = \"{pki}/exchange.key\"\n\
             ca = \"{pki}/ca.pem\"\n\n\
             [audit]\n\
             signing_key = \"audit-signing.key\"\n\
             subject_key = \"subject-pseudonym.key\"\n"
        );
        match &self.options.audit_store {
            None => text.push_str("store = \"audit.db\"\n"),
            Some((url, schema)) => {
                let _ = writeln!(text, "store = {url:?}");
                if let Some(schema) = schema {
                    let _ = writeln!(text, "postgres_schema = {schema:?}");
                }
            }
        }
        if let Some(w) = &self.witness {
            let _ = write!(
                text,
                "witness_interval_ms = {WITNESS_INTERVAL_MS}\n\n[[audit.witnesses]]\nurl = \"http://{}\"\nkey = \"{}\"\n",
                w.server.local_addr(),
                w.witness.key()
            );
        }
        for (dept, adapter) in &self.adapters {
            let identity = self
                .pki
                .get(dept)
                .map(|i| i.identity.to_string())
                .unwrap_or_default();
            let _ = write!(
                text,
                "\n[departments.{dept}]\nendpoints = [\"https://127.0.0.1:{}\"]\ntimeout_ms = {timeout_ms}\nidentity = \"{identity}\"\n",
                adapter.addr.port()
            );
            if let Some(limit) = self.options.max_in_flight {
                let _ = writeln!(text, "max_in_flight = {limit}");
            }
            if let Some(limit) = self.options.max_in_flight_per_caller {
                let _ = writeln!(text, "max_in_flight_per_caller = {limit}");
            }
        }
        text
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The access policy file the exchange watches.
    pub fn policy_path(&self) -> PathBuf {
        self.state_dir.join("policy.toml")
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
        Ok(ExchangeClient::new(self.channel(party).await?))
    }

    /// A channel to the exchange as PKI party `party`, for any of its
    /// services (e.g. `Audit` as `admin`).
    pub async fn channel(&self, party: &str) -> anyhow::Result<Channel> {
        let tls = self.pki.client_config(party)?;
        let expected = self.pki.get("exchange")?.identity.clone();
        tongban_trust::connect_channel(&self.exchange_url(), &tls, Some(&expected))
            .await
            .with_context(|| format!("{party} connecting to the exchange"))
    }

    /// Stops the exchange (committing its audit tail) and the adapters.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(exchange) = self.exchange.take() {
            exchange.shutdown().await?;
        }
        for dept in DEPARTMENTS {
            self.stop_department(dept).await?;
        }
        if let Some(w) = self.witness.take() {
            w.server.shutdown().await;
        }
        Ok(())
    }
}

/// The demo's attack: one audit entry deleted with SQL, straight in the
/// local deployment's SQLite audit database, as an operator would — the
/// very thing no store API offers. The row is
/// kept in a temporary table of this connection (never in audit.db), so the
/// demo can put it back and leave its state directory able to run again.
pub struct EntryDeletion {
    conn: sqlx::SqliteConnection,
    node: String,
    index: u64,
}

impl EntryDeletion {
    async fn delete(path: &Path, node: &str, index: u64) -> anyhow::Result<Self> {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let idx = i64::try_from(index)?;
        sqlx::query("CREATE TEMP TABLE deleted_entry AS SELECT * FROM audit_entries WHERE 0")
            .execute(&mut conn)
            .await?;
        sqlx::query(
            "INSERT INTO temp.deleted_entry SELECT * FROM audit_entries WHERE node = $1 AND idx = $2",
        )
        .bind(node)
        .bind(idx)
        .execute(&mut conn)
        .await?;
        let deleted = sqlx::query("DELETE FROM audit_entries WHERE node = $1 AND idx = $2")
            .bind(node)
            .bind(idx)
            .execute(&mut conn)
            .await?
            .rows_affected();
        if deleted != 1 {
            bail!("deleting entry {node}#{index} changed {deleted} rows");
        }
        Ok(Self {
            conn,
            node: node.to_owned(),
            index,
        })
    }

    /// Puts the row back as it was.
    pub async fn undo(mut self) -> anyhow::Result<()> {
        let restored = sqlx::query("INSERT INTO audit_entries SELECT * FROM temp.deleted_entry")
            .execute(&mut self.conn)
            .await?
            .rows_affected();
        if restored != 1 {
            bail!(
                "restoring entry {}#{} changed {restored} rows",
                self.node,
                self.index
            );
        }
        self.conn.close().await?;
        Ok(())
    }
}

impl std::fmt::Debug for EntryDeletion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryDeletion")
            .field("node", &self.node)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// A department whose every query takes `delay` longer (a slow back end).
#[derive(Debug, Clone)]
struct Delayed {
    service: AdapterService,
    delay: Duration,
}

#[tonic::async_trait]
impl Adapter for Delayed {
    async fn query(
        &self,
        request: tonic::Request<QueryRequest>,
    ) -> Result<tonic::Response<QueryResponse>, tonic::Status> {
        tokio::time::sleep(self.delay).await;
        self.service.query(request).await
    }

    async fn describe(
        &self,
        request: tonic::Request<DescribeRequest>,
    ) -> Result<tonic::Response<DescribeResponse>, tonic::Status> {
        self.service.describe(request).await
    }
}

async fn serve_delayed(
    adapter: Delayed,
    listener: tokio::net::TcpListener,
    tls: TlsServerConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let incoming = TlsIncoming::new(listener, tls.load_reloadable()?, IncomingOptions::default())?;
    tonic::transport::Server::builder()
        .add_service(AdapterServer::new(adapter))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// The deployment's policy: who may handle which matters, from the PKI's
/// service points.
pub fn policy_toml(pki: &DevPki) -> anyhow::Result<String> {
    let path = |name: &str| -> anyhow::Result<String> {
        let id: &PeerIdentity = &pki.get(name)?.identity;
        Ok(format!("org/{}/unit/{}", id.org(), id.unit()))
    };
    let holding = |role: Role| -> String {
        let callers: Vec<String> = pki
            .identities
            .iter()
            .filter(|i| i.role == role)
            .map(|i| format!("\"org/{}/unit/{}\"", i.identity.org(), i.identity.unit()))
            .collect();
        callers.join(", ")
    };
    Ok(format!(
        r#"# Access policy of the local deployment. Everything not granted is denied.
trust_domain = "{domain}"

[groups]
police-stations = ["{police_station}"]
community-centres = ["{community}"]
township-halls = ["{township}"]

# Police stations: identity and household registration matters, and
# assistance to criminal investigations — a sealed matter, whose accesses the
# person learns of only after its disclosure delay.
[[grant]]
callers = ["group:police-stations"]
matters = ["temporary-id-card", "household-registration-certificate"]

[[grant]]
callers = ["group:police-stations"]
matters = ["criminal-investigation-assist"]

# Community centres: every matter pushed down to village/community level,
# and unemployment benefit (a township matter the city lets communities take).
[[grant]]
callers = ["group:community-centres"]
up_to_level = "community"
matters = ["unemployment-benefit"]

# Township halls: every matter up to township/street level.
[[grant]]
callers = ["group:township-halls"]
up_to_level = "township"

# The 96196 hotline tells callers where each matter is handled (discovery
# only: no evidence)...
[[grant]]
callers = ["{hotline}"]
access = "discover"
up_to_level = "city"

# ...and where they stand on their social insurance, and no more.
[[grant]]
callers = ["{hotline}"]
matters = ["social-insurance-record"]
fields = {{ "police.identity" = ["name_matches", "alive"], "hrss.contributions" = ["total_months", "contributing"] }}

# Where matters are handled: FindServicePoints answers from these and the
# grants above.
[service_points."{police_station}"]
name = "米易县公安局撒莲派出所"
level = "township"
region = "510421"

[service_points."{community}"]
name = "西区动力站社区党群服务中心"
level = "community"
region = "510403"

[service_points."{township}"]
name = "米易县撒莲镇便民服务中心"
level = "township"
region = "510421"

[admin]
callers = [{admins}]

# Citizen portals: may ask for every audit entry about a person.
[portal]
callers = [{portals}]

# Names citizens read beside the accesses in their history.
[organisations]
{organisations}

[limits]
requests_per_second = 2000.0
burst = 4000
max_gather_evidence = 64
max_request_bytes = 16384
"#,
        domain = pki.trust_domain,
        police_station = path("salian-police-station")?,
        community = path("dongli-community")?,
        township = path("salian-township")?,
        hotline = path("hotline-96196")?,
        admins = holding(Role::Administrator),
        portals = holding(Role::Portal),
        organisations = organisations(),
    ))
}

/// `"<credit code>" = "<name_zh> <name>"` for every organisation of the dev PKI.
fn organisations() -> String {
    let mut seen = BTreeMap::new();
    for party in crate::pki::DEV_PARTIES {
        let org = party.organisation;
        seen.entry(org.credit_code)
            .or_insert_with(|| format!("{} {}", org.name_zh, org.name));
    }
    seen.iter()
        .map(|(code, name)| format!("{code:?} = {name:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// How long a demo or test waits for one call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{PORTAL_PARTY, init_dev_pki};
    use tongban_core::{Caller, Catalogue, Policy};

    #[test]
    fn the_local_policy_names_the_portal_and_lets_police_stations_make_sealed_accesses() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = init_dev_pki(&tmp.path().join("pki"), &DevPkiOptions::default()).unwrap();
        let catalogue = Catalogue::embedded();
        let policy =
            Policy::from_toml(&policy_toml(&pki).unwrap(), "policy.toml", &catalogue).unwrap();
        let caller = |name: &str| {
            let id = &pki.get(name).unwrap().identity;
            Caller::new(id.org().clone(), id.unit()).unwrap()
        };
        let portal = caller(PORTAL_PARTY);
        assert!(policy.is_portal(&portal));
        assert!(policy.require_admin(&portal).is_err());
        assert!(policy.granted_matters(&portal, &catalogue).is_empty());
        assert!(!policy.is_portal(&caller("admin")));
        assert!(!policy.is_portal(&caller("dongli-community")));

        let station = caller("salian-police-station");
        let sealed = catalogue.matter("criminal-investigation-assist").unwrap();
        assert!(sealed.disclosure_delay().is_some());
        assert!(
            policy
                .authorize(&station, sealed, "police.household")
                .is_ok()
        );
        // Nobody else may.
        for other in ["dongli-community", "salian-township", "hotline-96196"] {
            assert!(!policy.may_handle(&caller(other), &sealed.code), "{other}");
        }

        // Township halls handle every matter up to township level, community
        // centres community ones (and unemployment benefit); the hotline
        // discovers every matter and handles only its one inquiry.
        let township = caller("salian-township");
        let community = caller("dongli-community");
        let hotline = caller("hotline-96196");
        for m in catalogue.matters() {
            assert_eq!(
                policy.may_handle(&township, &m.code),
                m.level <= tongban_core::Level::Township,
                "{}",
                m.code
            );
            assert_eq!(
                policy.may_handle(&community, &m.code),
                m.level == tongban_core::Level::Community || m.code == "unemployment-benefit",
                "{}",
                m.code
            );
            assert!(policy.may_discover(&hotline, &m.code), "{}", m.code);
            assert_eq!(
                policy.may_handle(&hotline, &m.code),
                m.code == "social-insurance-record",
                "{}",
                m.code
            );
        }
        // Every service point of the dev PKI is named, none other.
        let points: Vec<_> = policy
            .service_points()
            .map(|p| p.unit.unit.clone())
            .collect();
        assert_eq!(
            points.len(),
            pki.identities
                .iter()
                .filter(|i| i.role == Role::ServicePoint && i.name != "hotline-96196")
                .count()
        );
        for point in policy.service_points() {
            assert!(
                !policy.granted_matters(&point.unit, &catalogue).is_empty(),
                "{}",
                point.unit
            );
        }
    }
}
