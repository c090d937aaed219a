//! `tongban serve` (an exchange node) and `tongban adapter` (a department).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The exchange's configuration file.
    #[arg(long, short, env = "TONGBAN_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct AdapterArgs {
    /// The adapter's configuration file.
    #[arg(long, short, env = "TONGBAN_CONFIG")]
    pub config: PathBuf,
    /// Fill the database with the reference department's synthetic data
    /// first (idempotent). Only for the reference departments.
    #[arg(long)]
    pub seed_reference: bool,
}

/// Runs until Ctrl-C or SIGTERM, then drains in-flight requests (at most
/// `drain_timeout_ms`) and commits the audit tail; the caller flushes
/// telemetry.
pub async fn serve(args: ServeArgs, telemetry: crate::ProcessTelemetry) -> anyhow::Result<()> {
    let config = crate::node::NodeConfig::load(&args.config)?;
    let options = tongban_exchange::StartOptions {
        metrics: telemetry.metrics,
        prometheus: telemetry.prometheus,
        ..Default::default()
    };
    let node = crate::node::start(config, options).await?;
    // Before saying where it listens: a SIGTERM sent the moment after must
    // drain, not kill.
    let stop = StopSignals::install()?;
    println!("exchange listening on {}", node.exchange().local_addr());
    stop.wait().await?;
    node.shutdown().await?;
    tracing::info!("exchange stopped");
    Ok(())
}

/// Runs until Ctrl-C or SIGTERM, then drains in-flight calls (at most
/// `drain_timeout_ms`).
pub async fn adapter(args: AdapterArgs, telemetry: crate::ProcessTelemetry) -> anyhow::Result<()> {
    let config = tongban_adapter::AdapterConfig::from_file(&args.config)?;
    if args.seed_reference {
        let dept: tongban_devkit::reference::Dept = config
            .department
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?;
        let pool = tongban_adapter::DepartmentPool::from_config(&config)?;
        tongban_devkit::reference::seed(dept, &pool).await?;
        pool.close().await;
    }
    let mut service = tongban_adapter::service_from_config(&config).await?;
    if let Some(metrics) = telemetry.metrics {
        service = service.with_metrics(metrics);
    }
    if let Some(addr) = config.health_listen {
        service = service.with_health_listen(addr);
    }
    let admin = match (config.admin_listen, telemetry.prometheus) {
        (Some(addr), Some(prometheus)) => {
            Some(tongban_telemetry::AdminServer::bind(addr, prometheus).await?)
        }
        _ => None,
    };
    let listener = tongban_trust::bind_listener(config.listen)
        .with_context(|| format!("binding {}", config.listen))?;
    let stop_signals = StopSignals::install()?;
    println!(
        "{} adapter listening on {}",
        config.department,
        listener.local_addr()?
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tongban_adapter::serve_configured(&config, service, listener, async {
        let _ = stopped.await;
    });
    tokio::pin!(served);
    tokio::select! {
        result = &mut served => result?,
        stop_requested = stop_signals.wait() => {
            stop_requested?;
            let _ = stop.send(());
            let drain = Duration::from_millis(config.drain_timeout_ms);
            match tokio::time::timeout(drain, &mut served).await {
                Ok(result) => result?,
                Err(_) => tracing::warn!(
                    drain_timeout_ms = config.drain_timeout_ms,
                    "calls still in flight after the drain timeout; cutting them off"
                ),
            }
        }
    }
    if let Some(admin) = admin {
        admin.shutdown().await;
    }
    tracing::info!(department = %config.department, "adapter stopped");
    Ok(())
}

/// SIGTERM and Ctrl-C, handled from the moment they are installed (until
/// then SIGTERM would kill the process outright).
struct StopSignals {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) -> anyhow::Result<()> {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        tracing::info!("stopping: draining in-flight requests");
        Ok(())
    }
}
