//! The benchmark's results: the figures of one run (serialized into `BENCHMARKS.json`, which
//! keeps every run ever made), the targets it is judged against, and the files. The Markdown
//! page (`BENCHMARKS.md`) is made from the whole file by `markdown.rs`.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// Nearest-rank percentiles of a set of durations or counts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Percentiles of `values` (any order); `None` when empty.
    pub fn of(mut values: Vec<f64>) -> Option<Percentiles> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let i = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            values[i - 1]
        };
        Some(Percentiles {
            count: values.len(),
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: values[values.len() - 1],
        })
    }
}

/// What one measured window cost: kube API requests by verb and resource (deltas of
/// kube-apiserver's `apiserver_request_total`, the benchmark's own requests subtracted),
/// provider calls as the operator counted them and as the servers saw them, and CPU.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct Window {
    /// Length of the window in seconds.
    pub secs: f64,
    /// Successful syncs (fetches) the operator counted in the window.
    pub syncs: f64,
    /// `"VERB resource[/subresource]"` → requests.
    pub kube_requests: BTreeMap<String, f64>,
    /// Kube requests answered with an error code: `"VERB resource code"` → requests.
    pub kube_errors: BTreeMap<String, f64>,
    /// The operator's `secret_relay_provider_calls_total`: `"provider operation"` → calls.
    pub provider_calls_operator: BTreeMap<String, f64>,
    /// The operator's `secret_relay_provider_reads_total` (remote values read by syncs, from
    /// a call or the cache): `"ssm"`, `"vault"` → reads.
    pub provider_reads: BTreeMap<String, f64>,
    /// Server-side counts: moto's recorder (`"ssm GetParameters"`, `"sts GetCallerIdentity"`)
    /// and OpenBao's route metrics (`"vault read secret/"`).
    pub provider_calls_server: BTreeMap<String, f64>,
    /// Operator CPU time (utime + stime) in the window, seconds; every instance's together.
    pub operator_cpu_secs: f64,
    /// Each instance's share of `operator_cpu_secs` when there are several (shards).
    pub operator_cpu_secs_by_instance: Vec<f64>,
    /// CPU seconds (utime + stime) of the test environment's servers in the window:
    /// `"kube-apiserver"`, `"etcd"`, `"bao"`, `"moto"`, and of the benchmark itself
    /// (`"benchmark (this test)"`). Empty when not measured (a shared environment).
    pub server_cpu_secs: BTreeMap<String, f64>,
}

/// One refresh cycle: a window in which every ExternalSecret refreshed at least once.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct Cycle {
    pub window: Window,
    /// Writes (POST, PUT, PATCH, APPLY, DELETE) to Secrets in the window, from the API
    /// server's metrics (None when the API server is shared and its counts would mix).
    pub secret_writes_apiserver: Option<f64>,
    /// Writes to any of the operator's resources (Secrets, ExternalSecrets and their status,
    /// SecretStores, Events) in the window, from the API server's metrics.
    pub operator_writes_apiserver: Option<f64>,
    /// Managed Secrets whose resourceVersion changed over the window.
    pub secret_resource_version_changes: usize,
    /// ExternalSecrets whose resourceVersion changed over the window (status writes).
    pub external_secret_resource_version_changes: usize,
    /// Provider calls scaled to one cycle (`calls × (N/2) / reads` per provider), server-side
    /// where counted:
    /// `"ssm"`, `"vault"`, and per operation.
    pub per_cycle: BTreeMap<String, f64>,
    /// Operator CPU seconds scaled to one cycle.
    pub operator_cpu_secs_per_cycle: f64,
    /// Average number of names in one `GetParameters` call (moto's recorder).
    pub ssm_names_per_get_parameters: Option<f64>,
    /// Distinct parameter names the `GetParameters` calls asked for.
    pub ssm_distinct_names: Option<usize>,
}

/// The cycle after 1 % of the remote values changed.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct ChangedCycle {
    pub cycle: Cycle,
    /// Remote keys whose value changed (half SSM, half Vault).
    pub changed_keys: usize,
    /// Secrets that read one of them.
    pub expected_updates: usize,
    /// Of those, updated with the new value.
    pub updated: usize,
    /// Secrets that changed although their remote value did not.
    pub unexpected_updates: usize,
    /// Seconds from the change until the last expected Secret carried the new value.
    pub secs_until_all_updated: Option<f64>,
}

/// ExternalSecrets created while the operator runs at steady state with N objects.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct LiveAdds {
    pub count: usize,
    pub all_ready: bool,
    /// Create request sent → Ready observed by a watch, milliseconds.
    pub latency_ms: Option<Percentiles>,
}

/// One operator process of the first generation.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct Instance {
    /// Its `--watch-label-selector` (`secret-relay.dev/shard=shard-0`); empty when unsharded.
    pub selector: String,
    /// VmRSS when every ExternalSecret was Ready, MiB.
    pub rss_at_ready_mib: Option<f64>,
    /// RssFile then (file-backed: the binary's code and read-only data mapped), MiB.
    pub rss_file_at_ready_mib: Option<f64>,
    /// VmHWM at the end of the run, MiB.
    pub peak_rss_mib: Option<f64>,
    /// CPU seconds during the initial sync, and over the whole run.
    pub initial_cpu_secs: f64,
    pub cpu_secs: f64,
    /// Successful syncs and provider calls over the whole run (its own metrics).
    pub syncs: f64,
    pub provider_calls: f64,
}

/// A restart at steady state (issue 14): every instance stopped with SIGTERM, a new
/// generation started; the window runs from its start until every ExternalSecret was
/// re-verified (the instances' reconcile counts add up to `expected`).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct Restart {
    /// Operator processes stopped and started (the shards).
    pub instances: usize,
    /// ExternalSecrets to re-verify: N plus the live adds.
    pub expected: usize,
    /// SIGTERM → every old instance exited (or was killed after the grace period: 30 s,
    /// 10 s in `bench_small`), seconds.
    pub stop_secs: f64,
    /// Old instances that had not exited within the grace period and were killed.
    pub killed_after_grace: usize,
    /// New start → reconciles ≥ `expected`, seconds; `None` when never reached.
    pub secs_to_reverified: Option<f64>,
    /// `secret_relay_reconcile_duration_seconds_count` of the new instances at the end.
    pub reconciles: f64,
    /// The window: new start → re-verified (kube requests, provider calls, CPU).
    pub window: Window,
    /// Writes to any of the operator's resources in the window (API server's counts; `None`
    /// when not counted).
    pub kube_writes_apiserver: Option<f64>,
    /// The same between SIGTERM and the last old instance's exit.
    pub kube_writes_during_stop: Option<f64>,
    /// Managed Secrets and ExternalSecrets whose resourceVersion changed from before the
    /// stop to the end of the window.
    pub secret_resource_version_changes: usize,
    pub external_secret_resource_version_changes: usize,
    /// Provider calls in the window, server side (moto's SSM/STS calls of any kind, and the
    /// operator's OpenBao requests); `None` when not counted.
    pub provider_calls_server: Option<f64>,
    /// Provider calls in the window as the new instances counted them.
    pub provider_calls_operator: f64,
    /// ExternalSecrets whose refresh was due by the end of the window
    /// (status.refreshTime + refreshInterval), of them overdue at the start, and the distinct
    /// remote keys they read: the bound on provider calls.
    pub external_secrets_due: usize,
    pub overdue_at_start: usize,
    pub distinct_keys_due: usize,
    /// VmHWM of each new instance at the end of the window, MiB.
    pub peak_rss_mib: Vec<f64>,
}

/// A target and whether this run met it (`None`: not applicable or not measured).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct Target {
    pub name: String,
    pub bound: String,
    pub value: String,
    pub met: Option<bool>,
}

/// Every figure of one benchmark run.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct Results {
    pub n: usize,
    /// M: distinct remote keys (N/10), half SSM parameters, half Vault KV v2 secrets.
    pub distinct_keys: usize,
    pub namespaces: usize,
    /// `SecretStore` (one per namespace per provider) or `ClusterSecretStore` (one per provider).
    pub store_kind: String,
    /// Operator instances, each watching one shard's label (1: unsharded; runs made before
    /// shards existed have none and count as 1).
    #[serde(default = "one")]
    pub shards: usize,
    /// The AWS half's service, `ParameterStore` or `SecretsManager` (runs made before
    /// Secrets Manager existed have none: Parameter Store).
    #[serde(default = "parameter_store")]
    pub aws_service: String,
    /// The operators' `--events` (`changes` or `failures`; runs made before the flag
    /// existed have none: they published an Event per change, as `changes` does).
    #[serde(default = "changes")]
    pub events: String,
    pub stores: usize,
    pub refresh_interval: String,
    pub create_concurrency: usize,
    pub operator_concurrency: u16,
    pub started_at: String,
    pub machine: BTreeMap<String, String>,
    pub versions: BTreeMap<String, String>,
    /// `/proc/loadavg` at the start of each phase: how busy the (shared) machine was.
    pub load_average: BTreeMap<String, String>,
    /// Creating the N ExternalSecrets (operator not running), seconds.
    pub es_create_secs: f64,
    /// The reference: a plain client creating N Secrets of the same shape, seconds.
    pub raw_create_secs: Option<f64>,
    pub raw_create_per_sec: Option<f64>,
    /// The floor (issue 28, tests/scale/floor.rs): a plain client's N Secret POSTs with the
    /// operator's metadata, each followed by its ExternalSecret's status merge PATCH, at the
    /// same concurrency, seconds (runs made before it have none).
    pub floor_secs: Option<f64>,
    /// CPU seconds of each server and of the benchmark's process (the floor's client) while
    /// the floor ran.
    pub floor_cpu_secs: BTreeMap<String, f64>,
    /// Create requests retried (429, 5xx, time-outs) while setting up.
    pub create_retries: u64,
    /// Operator start → every ExternalSecret Ready.
    pub initial: Window,
    pub all_ready: bool,
    pub ready_count: usize,
    pub secs_to_all_ready: Option<f64>,
    /// N / secs_to_all_ready.
    pub syncs_per_sec: Option<f64>,
    /// Operator sync throughput / raw create throughput.
    pub headline_ratio: Option<f64>,
    /// Kube API requests to the operator's resources during the initial sync, divided by N.
    pub kube_requests_per_external_secret: Option<f64>,
    /// Per object: operator start → Ready observed by a watch (every object existed before the
    /// operator started), milliseconds.
    pub ready_after_start_ms: Option<Percentiles>,
    /// Per object: the Ready condition's lastTransitionTime − operator start (1 s resolution).
    pub ready_ltt_after_start_s: Option<Percentiles>,
    /// Ready reasons of the objects that were not Ready at the end of the wait.
    pub not_ready_reasons: BTreeMap<String, usize>,
    pub unchanged: Option<Cycle>,
    pub changed: Option<ChangedCycle>,
    pub live_adds: Option<LiveAdds>,
    /// VmRSS when all were Ready (the largest instance's when sharded), MiB.
    pub rss_at_ready_mib: Option<f64>,
    /// RssFile of the same instance then: the part of it that is the binary's code and
    /// read-only data mapped from its file, not the heap, MiB.
    pub rss_file_at_ready_mib: Option<f64>,
    /// VmHWM at the end of the run (the largest instance's when sharded), MiB.
    pub peak_rss_mib: Option<f64>,
    /// Each operator instance of the first generation.
    pub instances: Vec<Instance>,
    pub restart: Option<Restart>,
    /// Operator start → the end of the first generation (before the restart).
    pub whole_run: Window,
    /// `secret_relay_syncs_total{result="error"}` by reason over the whole run.
    pub sync_errors: BTreeMap<String, f64>,
    /// WARN/ERROR lines in the operators' logs (both generations), and a few of them.
    pub operator_log_warnings: usize,
    pub operator_log_samples: Vec<String>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

fn one() -> usize {
    1
}

fn parameter_store() -> String {
    "ParameterStore".into()
}

fn changes() -> String {
    "changes".into()
}

impl Results {
    /// Operator instances (1 for runs made before shards existed).
    pub fn shard_count(&self) -> usize {
        self.shards.max(1)
    }

    /// The configuration a run is compared within: (N, store kind, shards, AWS service,
    /// `--events`).
    pub fn configuration(&self) -> (usize, &str, usize, &str, &str) {
        (
            self.n,
            self.store_kind.as_str(),
            self.shard_count(),
            self.aws_service.as_str(),
            self.events.as_str(),
        )
    }

    /// [`Results::configuration`] with N replaced by `n`: the run of the same configuration
    /// at another size.
    pub fn configuration_at(&self, n: usize) -> (usize, &str, usize, &str, &str) {
        let (_, store_kind, shards, aws_service, events) = self.configuration();
        (n, store_kind, shards, aws_service, events)
    }

    /// What sets the configuration apart from the default besides N, store kind and shards,
    /// as its name says it: `Secrets Manager` for the AWS half, `--events failures`.
    pub fn variant_labels(&self) -> Vec<String> {
        self.secrets_manager()
            .then(|| "Secrets Manager".to_string())
            .into_iter()
            .chain((self.events != "changes").then(|| format!("--events {}", self.events)))
            .collect()
    }

    /// Whether the AWS half read Secrets Manager (else Parameter Store).
    pub fn secrets_manager(&self) -> bool {
        self.aws_service == "SecretsManager"
    }
}

/// The file of every run, in the order they were made.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct ResultsFile {
    pub description: String,
    pub runs: Vec<Results>,
}

/// `dir/BENCHMARKS.json`, or an empty file when there is none.
pub fn load(dir: &Path) -> Result<ResultsFile> {
    let json_path = dir.join("BENCHMARKS.json");
    match std::fs::read_to_string(&json_path) {
        Ok(text) => {
            serde_json::from_str(&text).with_context(|| format!("parsing {}", json_path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ResultsFile::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", json_path.display())),
    }
}

/// Appends `run` to `dir/BENCHMARKS.json` (every earlier run stays) and rewrites
/// `dir/BENCHMARKS.md` from the whole file.
pub fn write_reports(dir: &Path, run: &Results) -> Result<()> {
    let mut file = load(dir)?;
    file.description = "secret-relay scale benchmark (hack/bench.sh): every run, in the order \
                        they were made; BENCHMARKS.md is made from this file"
        .into();
    file.runs.push(run.clone());
    let json_path = dir.join("BENCHMARKS.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&file)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md_path = dir.join("BENCHMARKS.md");
    std::fs::write(&md_path, super::markdown::markdown(&file.runs))
        .with_context(|| format!("writing {}", md_path.display()))?;
    Ok(())
}

/// Rewrites `dir/BENCHMARKS.md` from `dir/BENCHMARKS.json` as it is (no run added): the page
/// after a change of its layout.
pub fn rewrite_page(dir: &Path) -> Result<()> {
    let md_path = dir.join("BENCHMARKS.md");
    std::fs::write(&md_path, page(dir)?).with_context(|| format!("writing {}", md_path.display()))
}

/// The BENCHMARKS.md that `dir/BENCHMARKS.json` makes.
pub fn page(dir: &Path) -> Result<String> {
    Ok(super::markdown::markdown(&load(dir)?.runs))
}

/// Whether a `"VERB resource..."` key of a window's kube requests is about a resource the
/// operator reads or writes (Secrets, ExternalSecrets and their status, stores, Events,
/// Namespaces).
pub fn is_operator_resource(key: &str) -> bool {
    let resource = key.split_whitespace().nth(1).unwrap_or("");
    [
        "secrets",
        "externalsecrets",
        "secretstores",
        "clustersecretstores",
        "events",
        "namespaces",
    ]
    .iter()
    .any(|r| {
        resource == *r
            || resource.starts_with(&format!("{r}."))
            || resource.starts_with(&format!("{r}/"))
    })
}
