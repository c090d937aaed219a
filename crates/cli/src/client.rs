//! `tongban lookup` and `tongban gather`: a service point's calls, by hand.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tongban_core::Catalogue;
use tongban_proto::v1::exchange_client::ExchangeClient;
use tongban_proto::v1::{CaseContext, GatherRequest, LookupRequest, Subject};
use tonic::transport::{Channel, Endpoint};

use crate::render;

/// How to reach the exchange.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Exchange address: https://host:port (mutual TLS) or http://host:port
    /// (plaintext, development only).
    #[arg(
        long,
        env = "TONGBAN_EXCHANGE",
        default_value = "https://127.0.0.1:7443"
    )]
    pub exchange: String,
    /// This service point's certificate (PEM).
    #[arg(long, env = "TONGBAN_CERT")]
    pub cert: Option<PathBuf>,
    /// This service point's private key (PEM).
    #[arg(long, env = "TONGBAN_KEY")]
    pub key: Option<PathBuf>,
    /// The CA the exchange's certificate must chain to (PEM).
    #[arg(long, env = "TONGBAN_CA")]
    pub ca: Option<PathBuf>,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

impl ConnectArgs {
    pub async fn connect(&self) -> anyhow::Result<ExchangeClient<Channel>> {
        Ok(ExchangeClient::new(self.channel().await?))
    }

    /// A connected channel, for any of the exchange's services.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let channel = if self.exchange.starts_with("https://") {
            let (Some(cert), Some(key), Some(ca)) = (&self.cert, &self.key, &self.ca) else {
                bail!(
                    "an https:// exchange needs --cert, --key and --ca (this service point's certificate, key and the CA)"
                );
            };
            let tls = tongban_trust::TlsClientConfig::new(cert, key, ca);
            tongban_trust::connect_channel(&self.exchange, &tls, None)
                .await
                .with_context(|| format!("connecting to {}", self.exchange))?
        } else if self.exchange.starts_with("http://") {
            Endpoint::from_shared(self.exchange.clone())?
                .connect()
                .await
                .with_context(|| format!("connecting to {}", self.exchange))?
        } else {
            bail!(
                "--exchange must start with https:// or http://, got {:?}",
                self.exchange
            );
        };
        Ok(channel)
    }
}

/// The case a call belongs to.
#[derive(Debug, Clone, Args)]
pub struct CaseArgs {
    /// Matter code (the purpose), e.g. unemployment-benefit.
    #[arg(long)]
    pub matter: String,
    /// Your case (acceptance) number.
    #[arg(long = "case")]
    pub case_number: String,
    /// The clerk handling the case.
    #[arg(long)]
    pub operator: String,
    /// The applicant's resident identity number.
    #[arg(long = "id")]
    pub id_number: String,
    /// The applicant's name as presented (for identity checks).
    #[arg(long, default_value = "")]
    pub name: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl CaseArgs {
    fn case(&self) -> Option<CaseContext> {
        Some(CaseContext {
            matter: self.matter.clone(),
            case_number: self.case_number.clone(),
            operator_id: self.operator.clone(),
        })
    }

    fn subject(&self) -> Option<Subject> {
        Some(Subject {
            id_number: self.id_number.clone(),
            name: self.name.clone(),
            ..Default::default()
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct LookupArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub case: CaseArgs,
    /// Evidence type, e.g. hrss.unemployment.
    #[arg(long)]
    pub evidence: String,
    /// Only these fields (comma-separated); default all you may receive.
    #[arg(long, value_delimiter = ',')]
    pub fields: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct GatherArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub case: CaseArgs,
    /// Only these evidence types (comma-separated); default all the matter needs.
    #[arg(long, value_delimiter = ',')]
    pub evidence: Vec<String>,
}

/// Prints the answer; a refused call prints the status and its details and
/// fails.
pub async fn lookup(args: LookupArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let mut request = tonic::Request::new(LookupRequest {
        case: args.case.case(),
        subject: args.case.subject(),
        evidence_type: args.evidence.clone(),
        fields: (!args.fields.is_empty()).then(|| prost_types::FieldMask {
            paths: args.fields.clone(),
        }),
    });
    request.set_timeout(Duration::from_millis(args.connect.timeout_ms));
    match client.lookup(request).await {
        Ok(resp) => {
            let resp = resp.into_inner();
            if args.case.json {
                println!("{}", render::lookup_json(&resp));
            } else {
                println!("{}", args.evidence);
                print!("{}", render::lookup_text(&resp, &Catalogue::embedded()));
            }
            Ok(())
        }
        Err(status) => {
            if args.case.json {
                println!("{}", render::status_json(&status));
            }
            bail!("{}", render::status_text(&status))
        }
    }
}

pub async fn gather(args: GatherArgs) -> anyhow::Result<()> {
    let mut client = args.connect.connect().await?;
    let mut request = tonic::Request::new(GatherRequest {
        case: args.case.case(),
        subject: args.case.subject(),
        evidence_types: args.evidence.clone(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(args.connect.timeout_ms));
    match client.gather(request).await {
        Ok(resp) => {
            let resp = resp.into_inner();
            if args.case.json {
                println!("{}", render::gather_json(&resp));
            } else {
                println!("{}", resp.matter);
                print!("{}", render::gather_text(&resp, &Catalogue::embedded()));
            }
            Ok(())
        }
        Err(status) => {
            if args.case.json {
                println!("{}", render::status_json(&status));
            }
            bail!("{}", render::status_text(&status))
        }
    }
}
