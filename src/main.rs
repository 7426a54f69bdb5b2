//! `secret-relay`: `run` the operator, print the `crd`s, or the `kubectl secret-relay`
//! commands (`status`, `sync`, `render`, `check`, `migrate`: [`secret_relay::plugin`]), also
//! when the binary is installed as `kubectl-secret_relay`.
#![deny(unsafe_code)]

use std::net::SocketAddr;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use secret_relay::{admin, controller, leader, plugin};

/// jemalloc instead of the C library's allocator (musl's in the image): far less CPU per
/// allocation for a process that parses and drops many small objects, and less memory held
/// after peaks (BENCHMARKS.md). The `system-allocator` feature leaves the C library's in place,
/// for heap profilers that interpose on `malloc` (heaptrack: `hack/heap-profile.sh`).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once when it starts (its `malloc_conf` string; the environment
/// variable `_RJEM_MALLOC_CONF` adds to and overrides them):
/// - `narenas:2`: two arenas instead of 4 per core, so that memory one thread frees is reused
///   by the others rather than held in an arena of its own;
/// - `dirty_decay_ms:1000`: pages freed are returned to the system after about 1 s instead of
///   10 s, so a burst (a restart re-verifying every ExternalSecret at once) leaves no peak.
///
/// At N = 10,000 (hack/bench.sh, BENCHMARKS.md) the restarted instance peaked at 54.8 MiB
/// with these options (at 86a62c9) and 64.7 MiB without (at bbdf11c).
// SAFETY: a NUL-terminated constant that jemalloc reads (as `const char *`) and never writes;
// the `_rjem_` prefix is tikv-jemalloc-sys's for all of jemalloc's symbols.
#[cfg(not(feature = "system-allocator"))]
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 30] = b"narenas:2,dirty_decay_ms:1000\0";

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
    #[command(flatten)]
    Plugin(plugin::Command),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (ExternalSecrets, SecretStores, Secrets).
    #[arg(long, env = "SECRET_RELAY_NAMESPACE")]
    namespace: Option<String>,
    /// Do not watch ClusterSecretStores (for namespace-scoped RBAC).
    #[arg(long)]
    no_cluster_stores: bool,
    /// Do not run ClusterExternalSecrets (they write ExternalSecrets in any namespace they
    /// select: for namespace-scoped RBAC).
    #[arg(long)]
    no_cluster_external_secrets: bool,
    /// Do not restart ExternalSecrets' `rolloutRestartTargets` when their Secret changes (for
    /// RBAC without `patch` on Deployments, StatefulSets, DaemonSets and Rollouts).
    #[arg(long)]
    no_rollout_restart: bool,
    /// ExternalSecrets reconciled at once (also the bound of stores and ClusterExternalSecrets
    /// reconciled at once).
    #[arg(long, default_value_t = 16, env = "SECRET_RELAY_CONCURRENCY")]
    concurrency: u16,
    /// Let a SecretStore without `auth` (AWS default chain, GCP Workload Identity) use the
    /// operator's own identity, so that every tenant who may create a SecretStore reads what
    /// the operator's role can. Never sent to a custom endpoint a SecretStore names.
    /// ClusterSecretStores (made by admins) always may.
    #[arg(long, env = "SECRET_RELAY_ALLOW_SECRET_STORE_AMBIENT_IDENTITY")]
    allow_secret_store_ambient_identity: bool,
    /// Let a SecretStore mint ServiceAccount tokens (Vault kubernetes/JWT login, AWS web
    /// identity) for an audience the Kubernetes API server itself accepts: sent to the server
    /// the store names, such a token is valid against the cluster. Off: the store is refused
    /// with a message naming the audience. ClusterSecretStores always may.
    #[arg(long, env = "SECRET_RELAY_ALLOW_API_SERVER_AUDIENCE")]
    allow_api_server_audience: bool,
    /// Reconcile only the ExternalSecrets and ClusterExternalSecrets whose labels match this
    /// label selector, e.g. `secret-relay.dev/shard=shard-1` for a shard and
    /// `!secret-relay.dev/shard` for the main instance (docs/sharding.md). Give each
    /// instance its own `--lease-name`.
    #[arg(long, env = "SECRET_RELAY_WATCH_LABEL_SELECTOR")]
    watch_label_selector: Option<String>,
    /// Which Events ExternalSecrets get: `changes` (Created/Updated/Deleted when the Secret
    /// changed, and SyncFailed warnings) or `failures` (the warnings only).
    #[arg(long, value_enum, default_value_t = controller::EventPolicy::Changes, env = "SECRET_RELAY_EVENTS")]
    events: controller::EventPolicy,
    /// Address of the admin server (/livez, /readyz, /metrics).
    #[arg(long, default_value = "0.0.0.0:8080", env = "SECRET_RELAY_ADMIN_ADDR")]
    admin_addr: SocketAddr,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "SECRET_RELAY_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter (tracing's EnvFilter syntax: `info`, `debug,kube=info`); RUST_LOG wins if set.
    #[arg(
        long,
        default_value = "info,kube=warn,vaultrs=off",
        env = "SECRET_RELAY_LOG_LEVEL"
    )]
    log_level: String,
    /// Run the controllers only while holding the Lease (for several replicas).
    #[arg(long, env = "SECRET_RELAY_LEADER_ELECT")]
    leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "secret-relay", env = "SECRET_RELAY_LEASE_NAME")]
    lease_name: String,
    /// Namespace of the Lease: the operator's own (from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Lease duration in seconds: how long a leader that stopped without releasing the Lease
    /// (killed, its node lost) keeps it after its last renewal; a standby takes over then. A
    /// leader that shuts down (SIGTERM) releases the Lease, and a standby takes it at once.
    #[arg(long, default_value_t = 15, env = "SECRET_RELAY_LEASE_DURATION")]
    lease_duration: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One rustls crypto provider for every client (kube, the AWS SDK, vaultrs, gcp_auth).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match cli().command {
        Command::Crd => {
            print!("{}", secret_relay::crds_yaml()?);
            Ok(())
        }
        Command::Run(args) => run(args).await,
        Command::Plugin(command) => match plugin::run(command).await {
            Ok(true) => Ok(()),
            Ok(false) => std::process::exit(1),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        },
    }
}

/// The command line; named `kubectl secret-relay` in help and errors when the binary runs as
/// kubectl's plugin (`kubectl-secret_relay`).
fn cli() -> Cli {
    let argv0 = std::env::args().next().unwrap_or_default();
    let plugin = std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("kubectl-secret_relay"));
    if !plugin {
        return Cli::parse();
    }
    let matches = Cli::command()
        .bin_name("kubectl secret-relay")
        .get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| args.log_level.as_str().into());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Json => fmt.json().init(),
        LogFormat::Text => fmt.init(),
    }
    let client = kube::Client::try_default().await?;
    let ready = admin::Readiness::default();
    let listener = tokio::net::TcpListener::bind(args.admin_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "admin server listening");
    let admin = tokio::spawn(admin::serve(listener, ready.clone()));
    let shutdown = shutdown_signal(ready.clone());
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting secret-relay");

    let mut leadership = None;
    // secret_relay_leader: 0 while a standby waits, 1 once the controllers run.
    secret_relay::metrics::set_leader(false);
    if args.leader_elect {
        // A standby is healthy and ready: it only waits.
        ready.set(true);
        let config = leader::LeaseConfig {
            name: args.lease_name,
            namespace: args.lease_namespace,
            identity: identity(),
            duration_secs: args.lease_duration,
        };
        match leader::acquire(client.clone(), &config, shutdown.clone()).await? {
            Some(l) => leadership = Some(l),
            None => return Ok(()),
        }
        ready.set(false);
    }
    let lost = async {
        match leadership.as_mut() {
            Some(l) => l.lost().await,
            None => std::future::pending().await,
        }
    };
    let config = controller::Config {
        namespace: args.namespace,
        cluster_stores: !args.no_cluster_stores,
        cluster_external_secrets: !args.no_cluster_external_secrets,
        rollout_restart: !args.no_rollout_restart,
        concurrency: args.concurrency,
        allow_secret_store_ambient_identity: args.allow_secret_store_ambient_identity,
        allow_api_server_audience: args.allow_api_server_audience,
        watch_label_selector: args.watch_label_selector.filter(|s| !s.trim().is_empty()),
        events: args.events,
    };
    secret_relay::metrics::set_leader(true);
    let controllers = controller::run(client, config, move || ready.set(true), shutdown);
    let result = tokio::select! {
        res = controllers => res,
        res = admin => res?,
        _ = lost => Err(anyhow::anyhow!(
            "lost the lease to another replica; exiting so that a restart rejoins the election"
        )),
    };
    if let Some(l) = leadership
        && result.is_ok()
    {
        l.release().await;
    }
    result
}

/// Resolves on the first SIGTERM or SIGINT (after marking the process not ready); a second
/// signal exits at once.
fn shutdown_signal(ready: admin::Readiness) -> Shared<BoxFuture<'static, ()>> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        signal().await;
        tracing::info!("shutting down: finishing running reconciles (signal again to abort)");
        ready.set(false);
        let _ = tx.send(());
        signal().await;
        tracing::warn!("second signal: aborting");
        std::process::exit(130);
    });
    async move {
        let _ = rx.await;
    }
    .boxed()
    .shared()
}

async fn signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The lease holder identity: the pod name (or host name) and a random suffix, so that a
/// restarted pod is a new holder.
fn identity() -> String {
    use rand::RngExt;
    let base = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "secret-relay".into());
    let suffix: u32 = rand::rng().random();
    format!("{base}-{suffix:08x}")
}
