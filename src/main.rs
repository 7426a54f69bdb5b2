//! `secret-relay`: `run` the operator, or print the `crd`s.
#![forbid(unsafe_code)]

use std::net::SocketAddr;

use clap::{Parser, Subcommand, ValueEnum};
use secret_relay::{admin, controller};

#[derive(Parser)]
#[command(
    version,
    about = "Turns ExternalSecrets into Secrets from SSM Parameter Store and Vault"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (kubeconfig from KUBECONFIG, ~/.kube/config or the in-cluster account).
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (ExternalSecrets, SecretStores, Secrets).
    #[arg(long, env = "SECRET_RELAY_NAMESPACE")]
    namespace: Option<String>,
    /// Do not watch ClusterSecretStores (for namespace-scoped RBAC).
    #[arg(long)]
    no_cluster_stores: bool,
    /// ExternalSecrets reconciled at once.
    #[arg(long, default_value_t = 16, env = "SECRET_RELAY_CONCURRENCY")]
    concurrency: u16,
    /// Address of the admin server (/livez, /readyz, /metrics).
    #[arg(long, default_value = "0.0.0.0:8080", env = "SECRET_RELAY_ADMIN_ADDR")]
    admin_addr: SocketAddr,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "SECRET_RELAY_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // kube, the AWS SDK and vaultrs pull in both rustls crypto providers; pick one explicitly.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", secret_relay::crds_yaml()?);
            Ok(())
        }
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn,vaultrs=off".into());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Json => fmt.json().init(),
        LogFormat::Text => fmt.init(),
    }
    let client = kube::Client::try_default().await?;
    let ready = admin::Readiness::default();
    let admin = tokio::spawn(admin::serve(args.admin_addr, ready.clone()));
    let config = controller::Config {
        namespace: args.namespace,
        cluster_stores: !args.no_cluster_stores,
        concurrency: args.concurrency,
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting secret-relay");
    tokio::select! {
        res = controller::run(client, config, move || ready.set(true)) => res,
        res = admin => res?,
    }
}
