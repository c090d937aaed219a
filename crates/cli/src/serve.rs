//! `tongban serve` (an exchange node) and `tongban adapter` (a department).

use std::path::PathBuf;

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
    #[arg(long, short)]
    pub config: PathBuf,
    /// Fill the database with the reference department's synthetic data
    /// first (idempotent). Only for the reference departments.
    #[arg(long)]
    pub seed_reference: bool,
}

/// Runs until Ctrl-C or SIGTERM, then drains and commits the audit tail.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = tongban_exchange::ExchangeConfig::load(&args.config)?;
    let exchange = tongban_exchange::start(config).await?;
    println!("exchange listening on {}", exchange.local_addr());
    wait_for_stop().await?;
    exchange.shutdown().await?;
    Ok(())
}

pub async fn adapter(args: AdapterArgs) -> anyhow::Result<()> {
    let config = tongban_adapter::AdapterConfig::from_file(&args.config)?;
    if args.seed_reference {
        let dept: tongban_adapter::reference::Dept = config
            .department
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?;
        let pool = tongban_adapter::DepartmentPool::from_config(&config)?;
        tongban_adapter::reference::seed(dept, &pool).await?;
        pool.close().await;
    }
    let service = tongban_adapter::service_from_config(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    println!(
        "{} adapter listening on {}",
        config.department,
        listener.local_addr()?
    );
    tongban_adapter::serve_configured(&config, service, listener, async {
        let _ = wait_for_stop().await;
    })
    .await?;
    Ok(())
}

async fn wait_for_stop() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    tracing::info!("stopping: draining in-flight requests");
    Ok(())
}
