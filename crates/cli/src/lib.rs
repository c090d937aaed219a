//! The `tongban` command line: one binary, many subcommands. `main.rs` only
//! parses arguments and calls [`run`].

pub mod audit;
pub mod client;
pub mod config;
pub mod console;
pub mod demo;
pub mod matters;
pub mod node;
pub mod policy;
pub mod render;
pub mod serve;
pub mod shell;
pub mod transparency;
pub mod witness;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// tongban (通办): a data-sharing exchange between government departments.
#[derive(Debug, Parser)]
#[command(name = "tongban", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an exchange node.
    Serve(serve::ServeArgs),
    /// Run a department adapter.
    Adapter(serve::AdapterArgs),
    /// Ask the exchange for one evidence type about one person.
    Lookup(client::LookupArgs),
    /// Ask the exchange for everything a matter needs about one person.
    Gather(client::GatherArgs),
    /// The matter catalogue: what can be done, at which level, whether
    /// anywhere in the city (同城通办), and the evidence it needs.
    Matters(matters::MattersArgs),
    /// Start an exchange and the reference departments locally and play the stories.
    Demo(demo::DemoArgs),
    /// Certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Measure throughput and latency side by side: a department directly,
    /// nginx grpc_pass, the exchange plaintext and with mTLS (see BENCHMARKS.md).
    Bench(tongban_bench::BenchArgs),
    /// Configuration files.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// The audit log: search, subject reports, export, proofs, verification.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// The administrators' web console: password hashes for `[console.users]`.
    #[command(subcommand)]
    Console(console::ConsoleCommand),
    /// Citizens' access histories, verified complete (for portals and
    /// citizens' advocates).
    #[command(subcommand)]
    Transparency(transparency::TransparencyCommand),
    /// A witness that cosigns audit-log checkpoints (C2SP tlog-witness).
    #[command(subcommand)]
    Witness(witness::WitnessCommand),
    /// The access policy: explain a decision.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(shell::CompletionsArgs),
    /// Print the manual page (roff), or write one per subcommand with --dir.
    Man(shell::ManArgs),
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Make a development PKI: a CA and certificates for the exchange, the
    /// departments, an administrator and sample service points.
    Init {
        /// Directory to write into.
        #[arg(long)]
        dir: PathBuf,
        /// Trust domain of every identity.
        #[arg(long, default_value = tongban_devkit::pki::DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
        /// Replace an existing PKI in the directory.
        #[arg(long)]
        force: bool,
        /// Extra host name the servers' certificates are valid for (e.g. a
        /// container or Kubernetes service name); repeatable.
        #[arg(long = "server-host")]
        server_hosts: Vec<String>,
    },
}

/// What the process's telemetry hands to the servers it runs.
#[derive(Debug, Clone, Default)]
pub struct ProcessTelemetry {
    pub metrics: Option<tongban_telemetry::Metrics>,
    /// For the admin endpoint (`GET /metrics`).
    pub prometheus: Option<tongban_telemetry::PrometheusMetrics>,
}

impl ProcessTelemetry {
    pub fn from_guard(guard: &tongban_telemetry::TelemetryGuard) -> Self {
        Self {
            metrics: Some(guard.metrics().clone()),
            prometheus: Some(guard.prometheus().clone()),
        }
    }
}

/// `service.name` of the process: `tongban-exchange`,
/// `tongban-adapter-<department>` (read from its config) or `tongban-cli`.
pub fn service_name(cli: &Cli) -> String {
    match &cli.command {
        Command::Serve(_) => "tongban-exchange".into(),
        Command::Adapter(args) => tongban_adapter::AdapterConfig::from_file(&args.config)
            .map_or_else(
                |_| "tongban-adapter".into(),
                |c| format!("tongban-adapter-{}", c.department),
            ),
        _ => "tongban-cli".into(),
    }
}

/// The telemetry options for a command: logs on stderr in the chosen
/// format, `RUST_LOG` filtering (default info for servers, warn for client
/// commands and the demo, whose output is the transcript), OTLP export when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (or a signal-specific variant) is set.
pub fn telemetry_options(cli: &Cli) -> tongban_telemetry::TelemetryOptions {
    let mut options = tongban_telemetry::TelemetryOptions::new(service_name(cli));
    options.default_log_filter = match cli.command {
        Command::Serve(_) | Command::Adapter(_) | Command::Witness(_) => "info",
        // The demo narrates what its servers do, deliberate outages
        // included; their warnings would only repeat the story.
        Command::Demo(_) => "error",
        _ => "warn",
    }
    .into();
    options.log_format = match cli.log_format {
        LogFormat::Text => tongban_telemetry::LogFormat::Text,
        LogFormat::Json => tongban_telemetry::LogFormat::Json,
    };
    options
}

/// Runs one command without telemetry handed to servers.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    run_with(cli, ProcessTelemetry::default()).await
}

/// Runs one command; servers record into `telemetry`.
pub async fn run_with(cli: Cli, telemetry: ProcessTelemetry) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::serve(args, telemetry).await?,
        Command::Adapter(args) => serve::adapter(args, telemetry).await?,
        Command::Config(command) => config::run(command)?,
        Command::Console(command) => console::run(command)?,
        Command::Lookup(args) => client::lookup(args).await?,
        Command::Gather(args) => client::gather(args).await?,
        Command::Audit(command) => return audit::run(command).await,
        Command::Transparency(command) => return transparency::run(command).await,
        Command::Witness(command) => witness::run(command).await?,
        Command::Policy(command) => return Ok(policy::run(command)),
        Command::Completions(args) => shell::run_completions(&args)?,
        Command::Man(args) => shell::run_man(&args)?,
        Command::Demo(args) => demo::run(args).await?,
        Command::Matters(args) => matters::run(args)?,
        Command::Bench(args) => {
            let report = tongban_bench::bench(args).await?;
            if report.total_errors() > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Certs(CertsCommand::Init {
            dir,
            trust_domain,
            force,
            server_hosts,
        }) => {
            let mut options = tongban_devkit::pki::DevPkiOptions {
                trust_domain,
                force,
                ..Default::default()
            };
            options.server_hosts.extend(server_hosts);
            let pki = tongban_devkit::pki::init_dev_pki(&dir, &options)?;
            println!("development PKI written to {}", pki.dir.display());
            println!("  CA: {}", pki.ca_cert.display());
            for id in &pki.identities {
                println!("  {:<24} {}", id.name, id.identity);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
