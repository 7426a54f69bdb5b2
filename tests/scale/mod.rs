//! The scale benchmark (issues 6 and 14): N ExternalSecrets over SSM (moto) and Vault KV v2
//! (OpenBao), synced by the operator binary run as child processes (one, or one per shard),
//! measured from the outside.
//!
//! Shared by `tests/bench_scale.rs` (the full benchmark at N = 1,000 / 10,000 / 100,000, an
//! ignored test run by `hack/bench.sh` in the release profile) and `tests/bench_small.rs`
//! (N = 100 on every `cargo test`, asserting the invariants only).
//!
//! [`run`] reads top to bottom: set-up (`setup.rs`), the initial sync, the refresh cycles and
//! live adds (`phases.rs`), the restart at steady state (`restart.rs`), the targets
//! (`targets.rs`). The operator processes are in `operator.rs`, the readiness watch in
//! `watch.rs`, the counters in `probe.rs`. `report.rs` holds the results and the files,
//! `markdown.rs` the page and its method section.
//!
//! Every wait has a deadline; every server is on loopback; creations run at most
//! `create_concurrency` at a time; every LIST is paginated.
#![allow(dead_code)]

mod floor;
mod markdown;
mod operator;
mod phases;
mod pprof;
mod probe;
mod procs;
mod provider_counts;
pub mod report;
mod restart;
mod setup;
pub mod targets;
mod watch;

use std::{path::PathBuf, sync::atomic::AtomicU64, time::Duration};

use anyhow::Result;
use k8s_openapi::jiff::Timestamp;

use crate::common::TestEnv;
use probe::Probe;
use report::Results;
use watch::Watch;

/// Every remote key is read by this many ExternalSecrets (M = N / READERS_PER_KEY) ...
pub const READERS_PER_KEY: usize = 10;
/// ... spread over this many namespaces (2 readers in each).
const NAMESPACES_PER_KEY: usize = 5;
/// Label on every object the benchmark creates: the run id.
const LABEL_RUN: &str = "secret-relay.dev/bench";
/// Label on the reference's plain Secrets.
const LABEL_RAW: &str = "secret-relay.dev/bench-raw";
/// The shard key label on ExternalSecrets when the run is sharded (docs/sharding.md).
pub const LABEL_SHARD: &str = "secret-relay.dev/shard";
const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=secret-relay";
/// Page size of every LIST the benchmark makes.
const PAGE: u32 = 500;

/// How the benchmark runs.
#[derive(Clone, Debug)]
pub struct Params {
    /// N: ExternalSecrets (a multiple of 20: N/10 keys, split evenly between the providers).
    pub n: usize,
    /// Namespaces the ExternalSecrets are spread over.
    pub namespaces: usize,
    /// Two ClusterSecretStores instead of a SecretStore per namespace per provider.
    pub cluster_stores: bool,
    /// refreshInterval of every ExternalSecret, seconds.
    pub refresh_secs: u64,
    /// Requests in flight while creating objects (and for the raw reference).
    pub create_concurrency: usize,
    /// The operator's `--concurrency` (of each instance).
    pub operator_concurrency: u16,
    /// K: operator instances, each watching the ExternalSecrets labelled
    /// `secret-relay.dev/shard=shard-<j>` (ExternalSecret i is in shard i mod K). 1: one
    /// instance without a selector, as before shards existed.
    pub shards: usize,
    /// The operator binary.
    pub operator_bin: PathBuf,
    /// Shared test environment: one namespace, the operator scoped to it (`--namespace`), no
    /// raw reference, no server-side counting (other tests' traffic would mix in), no live adds.
    pub scoped: bool,
    /// Deadline for every ExternalSecret to be Ready after the operator starts (and for the
    /// restarted operator to re-verify them all).
    pub ready_timeout: Duration,
    /// Where the operators' logs go.
    pub log_dir: PathBuf,
    /// Stop after the initial sync (no refresh cycles, no live adds, no restart): for quick
    /// experiments, never for the published figures.
    pub initial_only: bool,
    /// The AWS half's service: `ParameterStore` (SSM parameters) or `SecretsManager` (secrets
    /// of the same names).
    pub aws_service: String,
    /// The operators' `--events`: `changes` (their default: an Event per Secret change) or
    /// `failures` (warnings only), to see what the Events cost the whole run.
    pub events: String,
    /// Seconds of kube-apiserver's CPU profile to take in the floor and in the initial sync
    /// (`pprof`); 0: none.
    pub pprof_secs: u64,
    /// Profiles of the whole phases (its start-up LISTs and its tail included), back to back
    /// in chunks of `pprof_secs`, instead of one window of its middle (`pprof`).
    pub pprof_whole: bool,
}

impl Params {
    /// M: distinct remote keys.
    pub fn distinct_keys(&self) -> usize {
        self.n / READERS_PER_KEY
    }
    fn keys_per_provider(&self) -> usize {
        self.distinct_keys() / 2
    }
    fn shard_count(&self) -> usize {
        self.shards.max(1)
    }
}

fn log(msg: impl AsRef<str>) {
    eprintln!(
        "[bench {}] {}",
        Timestamp::now().strftime("%H:%M:%S"),
        msg.as_ref()
    );
}

// ------------------------------------------------------------------------------------------
// Layout: which namespace, provider, key and shard each ExternalSecret uses.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    Ssm,
    Vault,
}

/// One ExternalSecret of the benchmark.
#[derive(Clone, Debug)]
pub struct Item {
    pub name: String,
    pub ns: usize,
    pub backend: Backend,
    pub key: usize,
    /// Its shard (i mod K); `None` when the run is not sharded.
    pub shard: Option<usize>,
}

/// ExternalSecret `i`: even indexes read SSM, odd ones Vault; within a provider, readers
/// `10k .. 10k+9` read key `k`, two of them in each of 5 namespaces (`NS/5` apart).
pub fn item(p: &Params, i: usize, prefix: &str) -> Item {
    let backend = if i.is_multiple_of(2) {
        Backend::Ssm
    } else {
        Backend::Vault
    };
    let j = i / 2;
    let key = (j / READERS_PER_KEY) % p.keys_per_provider().max(1);
    let r = j % READERS_PER_KEY;
    let per_ns = READERS_PER_KEY / NAMESPACES_PER_KEY;
    let stride = (p.namespaces / NAMESPACES_PER_KEY).max(1);
    let ns = (key + (r / per_ns) * stride) % p.namespaces;
    Item {
        name: format!("{prefix}-{i:05}"),
        ns,
        backend,
        key,
        shard: (p.shard_count() > 1).then(|| i % p.shard_count()),
    }
}

/// The value of the shard key label of shard `j`.
pub fn shard_name(j: usize) -> String {
    format!("shard-{j}")
}

/// Names of one run.
pub struct Names {
    run: String,
    namespaces: Vec<String>,
}

impl Names {
    fn ssm_param(&self, key: usize) -> String {
        format!("/srb-{}/k{key:05}", self.run)
    }
    fn vault_path(&self, key: usize) -> String {
        format!("srb-{}/k{key:05}", self.run)
    }
    fn value(&self, version: u32, backend: Backend, key: usize) -> String {
        format!("v{version}:{backend:?}:{key:05}:{}", self.run)
    }
    fn cluster_store(&self, backend: Backend) -> String {
        match backend {
            Backend::Ssm => format!("srb-{}-ssm", self.run),
            Backend::Vault => format!("srb-{}-vault", self.run),
        }
    }
    fn store_ref(&self, p: &Params, backend: Backend) -> serde_json::Value {
        use serde_json::json;
        match (p.cluster_stores, backend) {
            (true, b) => json!({"name": self.cluster_store(b), "kind": "ClusterSecretStore"}),
            (false, Backend::Ssm) => json!({"name": "ssm", "kind": "SecretStore"}),
            (false, Backend::Vault) => json!({"name": "vault", "kind": "SecretStore"}),
        }
    }
    fn is_ours(&self, ns: &str) -> bool {
        self.namespaces.iter().any(|n| n == ns)
    }
    /// `"namespace/name"` of an item: the key of every per-object map.
    fn key(&self, it: &Item) -> String {
        format!("{}/{}", self.namespaces[it.ns], it.name)
    }
}

// ------------------------------------------------------------------------------------------
// The run.

/// What every phase reads.
struct Ctx<'a> {
    env: &'a TestEnv,
    p: &'a Params,
    names: &'a Names,
    probe: &'a Probe<'a>,
    watch: &'a Watch,
    retries: &'a AtomicU64,
}

/// Runs the benchmark. Fails only on set-up errors; what the operator does (or fails to do)
/// is a result.
pub async fn run(env: &TestEnv, p: &Params) -> Result<Results> {
    assert!(
        p.n.is_multiple_of(20) && p.n > 0,
        "N must be a positive multiple of 20"
    );
    assert!(p.namespaces > 0);
    let http = probe::http();
    let retries = AtomicU64::new(0);
    let mut r = Results {
        n: p.n,
        distinct_keys: p.distinct_keys(),
        namespaces: p.namespaces,
        store_kind: if p.cluster_stores {
            "ClusterSecretStore"
        } else {
            "SecretStore"
        }
        .into(),
        shards: p.shard_count(),
        aws_service: p.aws_service.clone(),
        events: p.events.clone(),
        refresh_interval: format!("{}s", p.refresh_secs),
        create_concurrency: p.create_concurrency,
        operator_concurrency: p.operator_concurrency,
        started_at: Timestamp::now().strftime("%Y-%m-%d %H:%M UTC").to_string(),
        machine: setup::machine(),
        versions: setup::versions(env, &http).await,
        ..Default::default()
    };
    r.load_average.insert("1 set-up".into(), procs::loadavg());

    // --- Set-up: CRDs, namespaces, stores, remote values, the N ExternalSecrets, the
    // reference (operator not running).
    setup::install_crds(&env.kube).await?;
    let names = setup::namespaces(env, p, &retries).await?;
    log(format!(
        "run {}: N={} M={} in {} namespaces, {} operator instance(s)",
        names.run,
        p.n,
        p.distinct_keys(),
        p.namespaces,
        p.shard_count()
    ));
    r.stores = setup::create_stores(env, p, &names, &retries).await?;
    let all_keys: Vec<(Backend, usize)> = [Backend::Ssm, Backend::Vault]
        .into_iter()
        .flat_map(|b| (0..p.keys_per_provider()).map(move |k| (b, k)))
        .collect();
    setup::put_values(env, p, &names, all_keys, 1).await?;
    let mut items: Vec<Item> = (0..p.n).map(|i| item(p, i, "es")).collect();
    let mut keys: Vec<String> = items.iter().map(|it| names.key(it)).collect();
    r.load_average
        .insert("2 create ExternalSecrets".into(), procs::loadavg());
    r.es_create_secs = setup::create_external_secrets(env, p, &names, &items, &retries).await?;
    log(format!(
        "created {} ExternalSecrets in {:.1} s",
        p.n, r.es_create_secs
    ));
    if !p.scoped {
        r.load_average
            .insert("3 raw reference".into(), procs::loadavg());
        let secs = setup::raw_reference(env, p, &names, &items, &retries).await?;
        r.raw_create_secs = Some(secs);
        r.raw_create_per_sec = Some(p.n as f64 / secs);
        log(format!("raw: created {} Secrets in {secs:.1} s", p.n));
        r.load_average.insert("3b floor".into(), procs::loadavg());
        let profile = pprof::start(env, p, "floor");
        let floor = floor::floor_reference(env, p, &names, &items, &retries).await?;
        r.notes.extend(profile.finish().await);
        floor::clean_up(env, p, &names, &items, &retries).await?;
        r.floor_secs = Some(floor.secs);
        r.floor_cpu_secs = floor.cpu_secs;
        log(format!(
            "floor: {} Secret POSTs and status PATCHes in {:.1} s",
            p.n, floor.secs
        ));
    }
    r.create_retries = retries.load(std::sync::atomic::Ordering::Relaxed);

    // --- Initial sync: start the operator(s) with the backlog.
    let watch = Watch::start(&env.kube, &names.run);
    watch.wait_listed(p.n).await?;
    let probe = Probe::new(env, p, &http).await?;
    if !p.scoped && probe.servers.is_empty() {
        r.notes.push(
            "the test environment's servers were not found under /proc: no server CPU".into(),
        );
    }
    let cx = Ctx {
        env,
        p,
        names: &names,
        probe: &probe,
        watch: &watch,
        retries: &retries,
    };
    r.load_average
        .insert("4 initial sync".into(), procs::loadavg());
    let mut start = probe.base_snapshot(p.shard_count()).await?;
    let mut fleet = phases::initial_sync(&cx, &mut r, &keys, &mut start).await?;

    // --- Steady state: an unchanged refresh cycle, a cycle after 1 % changed, live adds.
    if r.all_ready && fleet.alive() && !p.initial_only {
        tokio::time::sleep(Duration::from_secs(if p.scoped { 2 } else { 5 })).await;
        r.load_average
            .insert("5 unchanged cycle".into(), procs::loadavg());
        let after = phases::unchanged_cycle(&cx, &mut r, &keys, &mut fleet).await?;
        r.load_average
            .insert("6 changed cycle".into(), procs::loadavg());
        phases::changed_cycle(&cx, &mut r, &items, after, &mut fleet).await?;
        if !p.scoped {
            r.load_average
                .insert("7 live adds".into(), procs::loadavg());
            let adds = phases::live_adds(&cx, &mut r, &mut fleet).await?;
            keys.extend(adds.iter().map(|it| names.key(it)));
            items.extend(adds);
        }
    }

    // --- The end of the first operator(s): peak memory, whole-run counters.
    phases::end_of_run(&cx, &mut r, &mut fleet, &start).await?;
    let mut logs = fleet.logs();

    // --- A restart at steady state, as in an upgrade.
    if r.all_ready && fleet.alive() && !p.initial_only {
        r.load_average.insert("8 restart".into(), procs::loadavg());
        let (restart, restart_logs) = restart::run(&cx, &mut r, fleet, &items, &keys).await?;
        r.restart = Some(restart);
        logs.extend(restart_logs);
    } else {
        fleet.stop(operator::SHORT_GRACE).await;
    }
    probe.finish().await;
    drop(watch);
    phases::log_warnings(&mut r, &logs);
    r.targets = targets::targets(p, &r);
    Ok(r)
}
