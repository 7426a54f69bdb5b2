//! The scale benchmark (issue 6): N ExternalSecrets over SSM (moto) and Vault KV v2 (OpenBao),
//! synced by the operator binary run as a child process, measured from the outside.
//!
//! Shared by `tests/bench_scale.rs` (the full benchmark at N = 1,000 / 10,000, an ignored test
//! run by `hack/bench.sh` in the release profile) and `tests/bench_small.rs` (N = 100 on every
//! `cargo test`, asserting the invariants only). `report.rs` holds the results and the
//! Markdown page; the method is written there too (`report::METHOD`).
//!
//! Every wait has a deadline; every server is on loopback; creations run at most
//! `create_concurrency` at a time.
#![allow(dead_code)]

pub mod report;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    future::Future,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::{
    api::core::v1::{Namespace, Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    jiff::Timestamp,
};
use kube::{
    Api, Client, CustomResourceExt, ResourceExt,
    api::{DeleteParams, GetParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use secret_relay::api::{ClusterSecretStore, ExternalSecret, SecretStore};
use serde_json::json;

use crate::common::{TestEnv, random_suffix};
use report::{ChangedCycle, Cycle, LiveAdds, Percentiles, Results, Target, Window};

/// Every remote key is read by this many ExternalSecrets (M = N / READERS_PER_KEY) ...
pub const READERS_PER_KEY: usize = 10;
/// ... spread over this many namespaces (2 readers in each).
const NAMESPACES_PER_KEY: usize = 5;
/// Label on every object the benchmark creates: the run id.
const LABEL_RUN: &str = "secret-relay.dev/bench";
/// Label on the reference's plain Secrets.
const LABEL_RAW: &str = "secret-relay.dev/bench-raw";
const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=secret-relay";

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
    /// The operator's `--concurrency`.
    pub operator_concurrency: u16,
    /// The operator binary.
    pub operator_bin: PathBuf,
    /// Shared test environment: one namespace, the operator scoped to it (`--namespace`), no
    /// raw reference, no server-side counting (other tests' traffic would mix in), no live adds.
    pub scoped: bool,
    /// Deadline for every ExternalSecret to be Ready after the operator starts.
    pub ready_timeout: Duration,
    /// Where the operator's log goes.
    pub log_dir: PathBuf,
    /// Stop after the initial sync (no refresh cycles, no live adds): for quick experiments,
    /// never for the published figures.
    pub initial_only: bool,
}

impl Params {
    /// M: distinct remote keys.
    pub fn distinct_keys(&self) -> usize {
        self.n / READERS_PER_KEY
    }
    fn keys_per_provider(&self) -> usize {
        self.distinct_keys() / 2
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
// Layout: which namespace, provider and key each ExternalSecret uses.

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
    }
}

/// Names of one run.
struct Names {
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
        match (p.cluster_stores, backend) {
            (true, b) => json!({"name": self.cluster_store(b), "kind": "ClusterSecretStore"}),
            (false, Backend::Ssm) => json!({"name": "ssm", "kind": "SecretStore"}),
            (false, Backend::Vault) => json!({"name": "vault", "kind": "SecretStore"}),
        }
    }
    fn is_ours(&self, ns: &str) -> bool {
        self.namespaces.iter().any(|n| n == ns)
    }
}

// ------------------------------------------------------------------------------------------
// Small helpers: bounded concurrency, retried creates, /proc, HTTP.

/// Runs `f` over `items`, at most `limit` at a time; the first error stops it.
async fn bounded<T, F, Fut>(items: Vec<T>, limit: usize, f: F) -> Result<()>
where
    F: FnMut(T) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    stream::iter(items)
        .map(f)
        .buffer_unordered(limit.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Creates `obj`; retries 429, 5xx and time-outs (up to 6 attempts, 60 s each), counts the
/// retries in `retries`; an AlreadyExists after a retry is success.
async fn create<K>(api: &Api<K>, obj: &K, retries: &std::sync::atomic::AtomicU64) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let mut delay = Duration::from_millis(200);
    let mut last = String::new();
    for attempt in 0..6 {
        if attempt > 0 {
            retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        match tokio::time::timeout(
            Duration::from_secs(60),
            api.create(&PostParams::default(), obj),
        )
        .await
        {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(kube::Error::Api(e))) if e.code == 409 && attempt > 0 => return Ok(()),
            Ok(Err(kube::Error::Api(e))) if e.code != 429 && e.code < 500 => {
                bail!("creating {name}: {e}")
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "no answer within 60 s".into(),
        }
    }
    bail!("creating {name}: {last} (6 attempts)")
}

fn proc_status_mib(pid: u32, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of `pid` in seconds.
fn proc_cpu_secs(pid: u32, ticks: f64) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

// ------------------------------------------------------------------------------------------
// Counters: kube-apiserver, the operator, moto, OpenBao.

type Counts = BTreeMap<String, f64>;

fn delta(after: &Counts, before: &Counts) -> Counts {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

/// `apiserver_request_total` by `"VERB resource[.group][/subresource]"`, and the non-2xx
/// answers by `"VERB resource code"`.
async fn apiserver_counts(client: &Client) -> Result<(Counts, Counts)> {
    let req = kube::core::Request::new("")
        .get("metrics", &GetParams::default())
        .context("building GET /metrics")?;
    let text = client
        .request_text(req)
        .await
        .context("GET /metrics of kube-apiserver")?;
    let lines: Vec<String> = text
        .lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total")
                || l.starts_with("# TYPE apiserver_request_total")
        })
        .map(str::to_string)
        .collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter().map(Ok))
        .context("parsing apiserver_request_total")?;
    let mut by_resource = Counts::new();
    let mut errors = Counts::new();
    for s in &scrape.samples {
        let value = match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        let get = |k: &str| s.labels.get(k).unwrap_or("").to_string();
        let resource = get("resource");
        if resource.is_empty() {
            continue; // non-resource URLs (/metrics, /version, /healthz)
        }
        let group = get("group");
        let mut what = resource.clone();
        if !group.is_empty() {
            what = format!("{what}.{group}");
        }
        let sub = get("subresource");
        if !sub.is_empty() {
            what = format!("{what}/{sub}");
        }
        let key = format!("{} {what}", get("verb"));
        *by_resource.entry(key.clone()).or_default() += value;
        let code = get("code");
        if !code.starts_with('2') {
            *errors.entry(format!("{key} {code}")).or_default() += value;
        }
    }
    Ok((by_resource, errors))
}

fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION"
    )
}

fn writes_to(counts: &Counts, resources: &[&str]) -> f64 {
    counts
        .iter()
        .filter(|(k, _)| {
            let mut it = k.split_whitespace();
            let verb = it.next().unwrap_or("");
            let what = it.next().unwrap_or("");
            let resource = what.split(['.', '/']).next().unwrap_or("");
            is_write(verb) && resources.contains(&resource)
        })
        .map(|(_, v)| *v)
        .sum::<f64>()
        + 0.0 // an empty float sum is -0.0
}

/// The operator's admin server.
struct Operator {
    child: tokio::process::Child,
    pid: u32,
    admin: std::net::SocketAddr,
    log: PathBuf,
}

impl Operator {
    fn start(p: &Params, env: &TestEnv, scope: Option<&str>) -> Result<Operator> {
        let admin = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        std::fs::create_dir_all(&p.log_dir)?;
        let log = p.log_dir.join(format!("scale-{}-operator.log", p.n));
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = tokio::process::Command::new(&p.operator_bin);
        cmd.arg("run")
            .args(["--admin-addr", &admin.to_string()])
            .args(["--concurrency", &p.operator_concurrency.to_string()]);
        if let Some(ns) = scope {
            cmd.args(["--namespace", ns, "--no-cluster-stores"]);
        }
        let child = cmd
            .env("KUBECONFIG", &env.kubeconfig)
            .env_remove("RUST_LOG")
            .env_remove("SECRET_RELAY_NAMESPACE")
            .env_remove("SECRET_RELAY_CONCURRENCY")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", p.operator_bin.display()))?;
        let pid = child.id().context("operator pid")?;
        Ok(Operator {
            child,
            pid,
            admin,
            log,
        })
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `secret_relay_*` samples: `"provider operation"` → calls; `"result reason"` → syncs
    /// and `"reads provider"` → remote values read by syncs.
    async fn metrics(&self, http: &reqwest::Client) -> Result<(Counts, Counts)> {
        let text = http
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))?;
        let mut calls = Counts::new();
        let mut syncs = Counts::new();
        for s in &scrape.samples {
            let v = match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => continue,
            };
            let get = |k: &str| s.labels.get(k).unwrap_or("").to_string();
            match s.metric.as_str() {
                "secret_relay_provider_calls_total" => {
                    let provider = match get("provider").as_str() {
                        "aws_ssm" => "ssm".to_string(),
                        other => other.to_string(),
                    };
                    *calls
                        .entry(format!("{provider} {}", get("operation")))
                        .or_default() += v;
                }
                "secret_relay_syncs_total" => {
                    *syncs
                        .entry(format!("{} {}", get("result"), get("reason")))
                        .or_default() += v;
                }
                "secret_relay_provider_reads_total" => {
                    let provider = match get("provider").as_str() {
                        "aws_ssm" => "ssm".to_string(),
                        other => other.to_string(),
                    };
                    *syncs.entry(format!("reads {provider}")).or_default() += v;
                }
                _ => {}
            }
        }
        Ok((calls, syncs))
    }

    async fn syncs_ok(&self, http: &reqwest::Client) -> f64 {
        match self.metrics(http).await {
            Ok((_, syncs)) => syncs
                .iter()
                .filter(|(k, _)| k.starts_with("success "))
                .map(|(_, v)| v)
                .sum(),
            Err(_) => 0.0,
        }
    }

    /// SIGTERM, then SIGKILL after 20 s.
    async fn stop(mut self) {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            log("the operator did not exit within 20 s of SIGTERM; killing it");
            let _ = self.child.kill().await;
        }
    }
}

/// moto's request recorder (moto 5.2.5: `/moto-api/recorder/{start,stop,reset,download}-recording`).
struct Moto {
    base: String,
    http: reqwest::Client,
}

/// Counts from one recording.
#[derive(Default)]
struct MotoCounts {
    calls: Counts,
    get_parameters_names: Vec<usize>,
    distinct_names: BTreeSet<String>,
}

impl Moto {
    async fn post(&self, action: &str) -> Result<()> {
        self.http
            .post(format!("{}/moto-api/recorder/{action}", self.base))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Downloads the recording, resets it and counts calls by `"service Action"` (the
    /// benchmark's own PutParameter calls are left out).
    async fn take(&self) -> Result<MotoCounts> {
        let text = self
            .http
            .get(format!(
                "{}/moto-api/recorder/download-recording",
                self.base
            ))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        self.post("reset-recording").await?;
        let mut out = MotoCounts::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let entry: serde_json::Value = serde_json::from_str(line)?;
            let header = |name: &str| -> Option<String> {
                entry["headers"].as_object()?.iter().find_map(|(k, v)| {
                    k.eq_ignore_ascii_case(name)
                        .then(|| v.as_str().unwrap_or("").to_string())
                })
            };
            let mut body = entry["body"].as_str().unwrap_or("").to_string();
            if entry["body_encoded"].as_bool() == Some(true) {
                use base64::Engine as _;
                body = base64::engine::general_purpose::STANDARD
                    .decode(&body)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default();
            }
            let service = header("authorization")
                .and_then(|a| {
                    let cred = a.split("Credential=").nth(1)?;
                    cred.split('/').nth(3).map(str::to_string)
                })
                .unwrap_or_else(|| "unknown".into());
            let action = match header("x-amz-target") {
                Some(t) => t.rsplit('.').next().unwrap_or("").to_string(),
                None => body
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("Action="))
                    .unwrap_or("unknown")
                    .to_string(),
            };
            if action == "PutParameter" {
                continue;
            }
            if action == "GetParameters"
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
            {
                let names: Vec<String> = v["Names"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|n| n.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                out.get_parameters_names.push(names.len());
                out.distinct_names.extend(names);
            }
            *out.calls.entry(format!("{service} {action}")).or_default() += 1.0;
        }
        Ok(out)
    }
}

/// OpenBao's request counters by route: `"vault read secret/"`, plus `"vault all requests"`.
async fn bao_counts(http: &reqwest::Client, env: &TestEnv) -> Result<Counts> {
    let text = http
        .get(format!(
            "{}/v1/sys/metrics?format=prometheus",
            env.vault_addr
        ))
        .header("X-Vault-Token", &env.vault_token)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut out = Counts::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let name = name.split('{').next().unwrap_or(name);
        if let Some(route) = name
            .strip_prefix("vault_route_")
            .and_then(|r| r.strip_suffix("_count"))
        {
            // `read_secret_` → operation `read`, mount `secret/`; `read_auth_token_` → `auth/token/`.
            let (op, mount) = route.split_once('_').unwrap_or((route, ""));
            *out.entry(format!("vault {op} {}", mount.replace('_', "/")))
                .or_default() += value;
        }
    }
    Ok(out)
}

/// Vault requests that are the operator's: everything but `sys/` (the benchmark's metrics
/// reads) and writes to the KV mount (the benchmark's own value changes).
fn vault_operator_calls(server: &Counts) -> f64 {
    server
        .iter()
        .filter(|(k, _)| k.starts_with("vault "))
        .filter(|(k, _)| {
            let mut it = k.split_whitespace().skip(1);
            let op = it.next().unwrap_or("");
            let mount = it.next().unwrap_or("");
            // Requests of the benchmark's own set-up (sys/, KV writes) are not the operator's,
            // nor `rollback`, OpenBao's own periodic work on every mount.
            let setup = mount.starts_with("sys/")
                || (mount == "secret/" && matches!(op, "create" | "update" | "delete" | "patch"));
            !setup && op != "rollback"
        })
        .map(|(_, v)| *v)
        .sum()
}

/// All counters at one moment.
struct Snapshot {
    at: Instant,
    kube: Option<(Counts, Counts)>,
    operator_calls: Counts,
    operator_syncs: Counts,
    bao: Option<Counts>,
    cpu: f64,
}

struct Probe<'a> {
    env: &'a TestEnv,
    p: &'a Params,
    http: reqwest::Client,
    moto: Option<Moto>,
    ticks: f64,
    /// The benchmark's own kube requests, by the same keys as `apiserver_counts`, with when
    /// they were made (subtracted from the deltas of the windows they fall in).
    own: Mutex<Vec<(Instant, String)>>,
}

impl Probe<'_> {
    fn own(&self, key: &str) {
        self.own.lock().unwrap().push((Instant::now(), key.into()));
    }

    async fn snapshot(&self, op: &Operator) -> Result<Snapshot> {
        let kube = if self.p.scoped {
            None
        } else {
            Some(apiserver_counts(&self.env.kube).await?)
        };
        let (operator_calls, operator_syncs) = op.metrics(&self.http).await?;
        let bao = if self.p.scoped {
            None
        } else {
            Some(bao_counts(&self.http, self.env).await?)
        };
        Ok(Snapshot {
            at: Instant::now(),
            kube,
            operator_calls,
            operator_syncs,
            bao,
            cpu: proc_cpu_secs(op.pid, self.ticks).unwrap_or(0.0),
        })
    }

    /// The window between two snapshots; moto's recording (started at `a`) is taken here.
    async fn window(&self, a: &Snapshot, b: &Snapshot) -> Result<(Window, Option<MotoCounts>)> {
        let mut w = Window {
            secs: (b.at - a.at).as_secs_f64(),
            syncs: delta(&b.operator_syncs, &a.operator_syncs)
                .iter()
                .filter(|(k, _)| k.starts_with("success "))
                .map(|(_, v)| v)
                .sum(),
            provider_calls_operator: delta(&b.operator_calls, &a.operator_calls),
            provider_reads: delta(&b.operator_syncs, &a.operator_syncs)
                .into_iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("reads ")?.to_string(), v)))
                .collect(),
            operator_cpu_secs: b.cpu - a.cpu,
            ..Default::default()
        };
        if let (Some((ka, ea)), Some((kb, eb))) = (&a.kube, &b.kube) {
            let mut d = delta(kb, ka);
            for (at, k) in self.own.lock().unwrap().iter() {
                if *at >= a.at
                    && *at <= b.at
                    && let Some(x) = d.get_mut(k)
                {
                    *x -= 1.0;
                }
            }
            d.retain(|_, v| *v != 0.0);
            w.kube_requests = d;
            w.kube_errors = delta(eb, ea);
        }
        if let (Some(ba), Some(bb)) = (&a.bao, &b.bao) {
            w.provider_calls_server.extend(delta(bb, ba));
        }
        let moto = match &self.moto {
            Some(m) => {
                let counts = m.take().await?;
                w.provider_calls_server
                    .extend(counts.calls.iter().map(|(k, v)| (k.clone(), *v)));
                Some(counts)
            }
            None => None,
        };
        Ok((w, moto))
    }
}

// ------------------------------------------------------------------------------------------
// Readiness, observed by a watch.

#[derive(Default)]
struct Tracker {
    listed: bool,
    /// First time each ExternalSecret was seen Ready, and its lastTransitionTime (ms).
    ready: HashMap<String, (Instant, Option<i64>)>,
    /// Current Ready reason of each ExternalSecret.
    reason: HashMap<String, String>,
}

struct Watch {
    tracker: Arc<Mutex<Tracker>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watch {
    fn start(client: &Client, run: &str) -> Watch {
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let api: Api<ExternalSecret> = Api::all(client.clone());
        let stream = watcher(
            api,
            watcher::Config::default().labels(&format!("{LABEL_RUN}={run}")),
        )
        .default_backoff();
        let t = tracker.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(es) | watcher::Event::InitApply(es)) => {
                        observe(&t, &es)
                    }
                    Ok(watcher::Event::InitDone) => t.lock().unwrap().listed = true,
                    _ => {}
                }
            }
        });
        Watch { tracker, task }
    }

    async fn wait_listed(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.tracker.lock().unwrap().listed {
            if Instant::now() > deadline {
                bail!("the ExternalSecret watch did not list within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    fn ready_count(&self, keys: &[String]) -> usize {
        let t = self.tracker.lock().unwrap();
        keys.iter().filter(|k| t.ready.contains_key(*k)).count()
    }
}

fn observe(t: &Mutex<Tracker>, es: &ExternalSecret) {
    let key = format!("{}/{}", es.namespace().unwrap_or_default(), es.name_any());
    let status = es.status.as_ref();
    let cond = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let current = status.is_some_and(|s| s.observed_generation == es.metadata.generation);
    let mut t = t.lock().unwrap();
    match cond {
        Some(c) if c.status == "True" && c.reason == "SecretSynced" && current => {
            let ltt = c.last_transition_time.0.as_millisecond();
            t.ready
                .entry(key.clone())
                .or_insert_with(|| (Instant::now(), Some(ltt)));
            t.reason.insert(key, c.reason.clone());
        }
        Some(c) => {
            let first = c.message.split(':').next().unwrap_or("").to_string();
            t.reason.insert(key, format!("{} ({first})", c.reason));
        }
        None => {
            t.reason.insert(key, "no Ready condition yet".into());
        }
    }
}

// ------------------------------------------------------------------------------------------
// Set-up.

async fn install_crds(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [
        ExternalSecret::crd(),
        SecretStore::crd(),
        ClusterSecretStore::crd(),
    ] {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("secret-relay-bench").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying CRD {name}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let crd = api.get(&name).await?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if Instant::now() > deadline {
                bail!("CRD {name} not Established within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

fn secret(ns: &str, name: &str, data: serde_json::Value) -> Result<Secret> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "stringData": data,
    }))?)
}

/// Namespaces, credential Secrets and stores.
async fn create_stores(
    env: &TestEnv,
    p: &Params,
    names: &Names,
    retries: &std::sync::atomic::AtomicU64,
) -> Result<usize> {
    let aws = |auth: serde_json::Value| {
        json!({"aws": {
            "service": "ParameterStore", "region": env.aws_region, "endpoint": env.aws_endpoint,
            "auth": {"secretRef": auth}}})
    };
    let vault = |token_ref: serde_json::Value| {
        json!({"vault": {
            "server": env.vault_addr, "path": "secret", "version": "v2",
            "auth": {"tokenSecretRef": token_ref}}})
    };
    let creds = |ns: &str| -> Result<Vec<Secret>> {
        Ok(vec![
            secret(
                ns,
                "aws-creds",
                json!({"id": "testing", "secret": "testing"}),
            )?,
            secret(ns, "vault-token", json!({"token": env.vault_token}))?,
        ])
    };
    if p.cluster_stores {
        // Credentials in the first namespace, named explicitly: no referent auth.
        let home = names.namespaces[0].clone();
        for s in creds(&home)? {
            create(&Api::namespaced(env.kube.clone(), &home), &s, retries).await?;
        }
        let api: Api<ClusterSecretStore> = Api::all(env.kube.clone());
        for (backend, provider) in [
            (
                Backend::Ssm,
                aws(json!({
                    "accessKeyIDSecretRef": {"name": "aws-creds", "key": "id", "namespace": home},
                    "secretAccessKeySecretRef": {"name": "aws-creds", "key": "secret", "namespace": home}})),
            ),
            (
                Backend::Vault,
                vault(json!({"name": "vault-token", "key": "token", "namespace": home})),
            ),
        ] {
            let store: ClusterSecretStore = serde_json::from_value(json!({
                "apiVersion": "secret-relay.dev/v1alpha1", "kind": "ClusterSecretStore",
                "metadata": {"name": names.cluster_store(backend), "labels": {LABEL_RUN: names.run}},
                "spec": {"provider": provider},
            }))?;
            create(&api, &store, retries).await?;
        }
        return Ok(2);
    }
    bounded(
        names.namespaces.clone(),
        p.create_concurrency,
        |ns| async move {
            let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &ns);
            for s in creds(&ns)? {
                create(&secrets, &s, retries).await?;
            }
            let stores: Api<SecretStore> = Api::namespaced(env.kube.clone(), &ns);
            for (name, provider) in [
                (
                    "ssm",
                    aws(json!({
                    "accessKeyIDSecretRef": {"name": "aws-creds", "key": "id"},
                    "secretAccessKeySecretRef": {"name": "aws-creds", "key": "secret"}})),
                ),
                (
                    "vault",
                    vault(json!({"name": "vault-token", "key": "token"})),
                ),
            ] {
                let store: SecretStore = serde_json::from_value(json!({
                    "apiVersion": "secret-relay.dev/v1alpha1", "kind": "SecretStore",
                    "metadata": {"name": name, "namespace": ns, "labels": {LABEL_RUN: names.run}},
                    "spec": {"provider": provider},
                }))?;
                create(&stores, &store, retries).await?;
            }
            Ok(())
        },
    )
    .await?;
    Ok(names.namespaces.len() * 2)
}

/// Writes version `version` of the given keys (SSM parameters and Vault secrets).
async fn put_values(
    env: &TestEnv,
    p: &Params,
    names: &Names,
    keys: Vec<(Backend, usize)>,
    version: u32,
) -> Result<()> {
    let ssm = env.ssm().await;
    let vault = env.vault();
    let (ssm, vault) = (&ssm, &vault);
    bounded(keys, p.create_concurrency, |(backend, key)| async move {
        let value = names.value(version, backend, key);
        match backend {
            Backend::Ssm => {
                ssm.put_parameter()
                    .name(names.ssm_param(key))
                    .value(value)
                    .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                    .overwrite(true)
                    .send()
                    .await
                    .with_context(|| format!("PutParameter {}", names.ssm_param(key)))?;
            }
            Backend::Vault => {
                vaultrs::kv2::set(
                    vault,
                    "secret",
                    &names.vault_path(key),
                    &json!({"value": value}),
                )
                .await
                .with_context(|| format!("kv2 put {}", names.vault_path(key)))?;
            }
        }
        Ok(())
    })
    .await
}

fn external_secret(p: &Params, names: &Names, it: &Item) -> Result<ExternalSecret> {
    let remote = match it.backend {
        Backend::Ssm => json!({"key": names.ssm_param(it.key)}),
        Backend::Vault => json!({"key": names.vault_path(it.key), "property": "value"}),
    };
    Ok(serde_json::from_value(json!({
        "apiVersion": "secret-relay.dev/v1alpha1", "kind": "ExternalSecret",
        "metadata": {
            "name": it.name, "namespace": names.namespaces[it.ns],
            "labels": {LABEL_RUN: names.run},
        },
        "spec": {
            "refreshInterval": format!("{}s", p.refresh_secs),
            "secretStoreRef": names.store_ref(p, it.backend),
            "data": [{"secretKey": "value", "remoteRef": remote}],
        },
    }))?)
}

/// The reference object: a Secret shaped like the operator's (labels, annotations, one value).
fn raw_secret(names: &Names, it: &Item) -> Result<Secret> {
    let value = names.value(1, it.backend, it.key);
    Ok(serde_json::from_value(json!({
        "metadata": {
            "name": it.name, "namespace": names.namespaces[it.ns],
            "labels": {
                "app.kubernetes.io/managed-by": "secret-relay-bench",
                "secret-relay.dev/external-secret": it.name,
                LABEL_RAW: names.run,
            },
            "annotations": {
                "secret-relay.dev/refresh-interval": "60s",
                "secret-relay.dev/last-refresh": Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "secret-relay.dev/data-hash": format!("{:064x}", it.key),
                "secret-relay.dev/store": "SecretStore/ssm",
            },
        },
        "type": "Opaque",
        "stringData": {"value": value},
    }))?)
}

/// Managed Secrets of the run: `"ns/name"` → (resourceVersion, value), listed in pages.
async fn managed_secrets(
    env: &TestEnv,
    names: &Names,
    probe: &Probe<'_>,
) -> Result<HashMap<String, (String, String)>> {
    let api: Api<Secret> = if names.namespaces.len() == 1 {
        Api::namespaced(env.kube.clone(), &names.namespaces[0])
    } else {
        Api::all(env.kube.clone())
    };
    let mut lp = ListParams::default().labels(MANAGED_SELECTOR).limit(1000);
    let mut out = HashMap::new();
    loop {
        let list = api.list(&lp).await.context("listing managed Secrets")?;
        probe.own("LIST secrets");
        for s in list.items {
            let ns = s.namespace().unwrap_or_default();
            if !names.is_ours(&ns) {
                continue;
            }
            let value = s
                .data
                .as_ref()
                .and_then(|d| d.get("value"))
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                .unwrap_or_default();
            out.insert(
                format!("{ns}/{}", s.name_any()),
                (s.resource_version().unwrap_or_default(), value),
            );
        }
        match list.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    Ok(out)
}

/// resourceVersions of the run's ExternalSecrets: `"ns/name"` → resourceVersion.
async fn external_secret_versions(
    env: &TestEnv,
    names: &Names,
    probe: &Probe<'_>,
) -> Result<HashMap<String, String>> {
    let api: Api<ExternalSecret> = Api::all(env.kube.clone());
    let mut lp = ListParams::default()
        .labels(&format!("{LABEL_RUN}={}", names.run))
        .limit(1000);
    let mut out = HashMap::new();
    loop {
        let list = api.list(&lp).await.context("listing ExternalSecrets")?;
        probe.own("LIST externalsecrets.secret-relay.dev");
        for es in list.items {
            out.insert(
                format!("{}/{}", es.namespace().unwrap_or_default(), es.name_any()),
                es.resource_version().unwrap_or_default(),
            );
        }
        match list.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// The run.

/// Keys whose value the changed cycle rewrites: max(2, M/100), half per provider, spread out.
fn changed_keys(p: &Params) -> Vec<(Backend, usize)> {
    let total = (p.distinct_keys() / 100).max(2);
    let per = p.keys_per_provider();
    let mut out = Vec::new();
    for (b, count) in [
        (Backend::Ssm, total / 2),
        (Backend::Vault, total - total / 2),
    ] {
        let step = (per / count.max(1)).max(1);
        out.extend((0..count).map(|i| (b, (i * step) % per)));
    }
    out
}

fn machine() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(
        "cores".into(),
        std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_default(),
    );
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    m.insert("cpu".into(), cpu);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map(|kib| format!("{:.0} GiB RAM", kib / 1024.0 / 1024.0))
        .unwrap_or_default();
    m.insert("memory".into(), mem);
    m.insert(
        "kernel".into(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
    );
    m
}

async fn versions(env: &TestEnv, http: &reqwest::Client) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert(
        "secret-relay".into(),
        format!("{} (release build)", env!("CARGO_PKG_VERSION")),
    );
    let root = env!("CARGO_MANIFEST_DIR");
    if let Ok(out) = std::process::Command::new("git")
        .args(["-C", root, "rev-parse", "--short", "HEAD"])
        .output()
        && out.status.success()
    {
        v.insert(
            "commit".into(),
            format!(
                "{} + uncommitted work tree",
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        );
    }
    if let Ok(out) = std::process::Command::new("rustc")
        .arg("--version")
        .output()
    {
        v.insert(
            "rustc".into(),
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .trim_start_matches("rustc ")
                .to_string(),
        );
    }
    if let Ok(req) = kube::core::Request::new("").get("version", &GetParams::default())
        && let Ok(text) = env.kube.request_text(req).await
        && let Ok(j) = serde_json::from_str::<serde_json::Value>(&text)
    {
        v.insert(
            "kube-apiserver".into(),
            j["gitVersion"].as_str().unwrap_or("").to_string(),
        );
    }
    if let Ok(r) = http
        .get(format!("{}/v1/sys/health", env.vault_addr))
        .send()
        .await
        && let Ok(text) = r.text().await
        && let Ok(j) = serde_json::from_str::<serde_json::Value>(&text)
    {
        v.insert(
            "OpenBao".into(),
            j["version"].as_str().unwrap_or("").to_string(),
        );
    }
    if let Ok(text) = std::fs::read_to_string(format!("{root}/hack/testenv/versions.env")) {
        for line in text.lines() {
            if let Some(e) = line.strip_prefix("ETCD_VERSION=") {
                v.insert("etcd".into(), e.to_string());
            }
            if let Some(m) = line.strip_prefix("MOTO_VERSION=") {
                v.insert("moto".into(), m.to_string());
            }
        }
    }
    v
}

/// Waits until `keys` are all Ready (watch) or the deadline; logs progress every 10 s.
/// Returns whether all were Ready, and an error text if the operator died.
async fn wait_all_ready(
    watch: &Watch,
    keys: &[String],
    op: &mut Operator,
    timeout: Duration,
    what: &str,
) -> (bool, Option<String>) {
    let start = Instant::now();
    let mut last_log = Instant::now();
    loop {
        let ready = watch.ready_count(keys);
        if ready == keys.len() {
            return (true, None);
        }
        if !op.alive() {
            return (
                false,
                Some(format!(
                    "the operator exited during {what} ({ready} of {} Ready)",
                    keys.len()
                )),
            );
        }
        if start.elapsed() > timeout {
            return (false, None);
        }
        if last_log.elapsed() > Duration::from_secs(10) {
            last_log = Instant::now();
            log(format!(
                "{what}: {ready} / {} Ready after {:.0} s; operator RSS {:.1} MiB, load {}",
                keys.len(),
                start.elapsed().as_secs_f64(),
                proc_status_mib(op.pid, "VmRSS:").unwrap_or(0.0),
                loadavg()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits out one refresh cycle: at least 1.1 × interval + slack, and at least N successful
/// syncs since `base_syncs` (bounded by 3 × interval + 60 s).
async fn wait_cycle(
    p: &Params,
    op: &mut Operator,
    http: &reqwest::Client,
    base_syncs: f64,
) -> bool {
    let start = Instant::now();
    let slack = if p.scoped { 2 } else { 5 };
    let min = Duration::from_secs(p.refresh_secs).mul_f64(1.1) + Duration::from_secs(slack);
    let max = Duration::from_secs(p.refresh_secs * 3 + 60);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !op.alive() {
            return false;
        }
        if start.elapsed() < min {
            continue;
        }
        let syncs = op.syncs_ok(http).await - base_syncs;
        if syncs >= p.n as f64 {
            return true;
        }
        if start.elapsed() > max {
            log(format!(
                "refresh cycle: only {syncs} of {} syncs after {:.0} s",
                p.n,
                start.elapsed().as_secs_f64()
            ));
            return false;
        }
    }
}

/// Scales a window's calls to one refresh cycle. Every ExternalSecret reads one remote key per
/// sync, half of them from each provider, so a provider's cycles in the window are its reads
/// divided by N/2, counted per provider: the ExternalSecrets of one provider refresh on its
/// ticks, and a window may hold a different number of ticks of each provider. Without read
/// counts, all syncs over N.
fn cycle_scale(p: &Params, window: &Window, provider: &str) -> f64 {
    match window.provider_reads.get(provider) {
        Some(reads) if *reads > 0.0 => (p.n / 2) as f64 / reads,
        _ if window.syncs > 0.0 => p.n as f64 / window.syncs,
        _ => 0.0,
    }
}

fn cycle_from(p: &Params, window: Window, moto: Option<MotoCounts>) -> Cycle {
    let scale = if window.syncs > 0.0 {
        p.n as f64 / window.syncs
    } else {
        0.0
    };
    let (ssm_scale, vault_scale) = (
        cycle_scale(p, &window, "ssm"),
        cycle_scale(p, &window, "vault"),
    );
    let mut per_cycle = Counts::new();
    if !p.scoped {
        let server = &window.provider_calls_server;
        let ssm: f64 = server
            .iter()
            .filter(|(k, _)| k.starts_with("ssm ") || k.starts_with("sts "))
            .map(|(_, v)| v)
            .sum();
        per_cycle.insert("ssm+sts, all calls (server)".into(), ssm * ssm_scale);
        per_cycle.insert(
            "ssm GetParameters (server)".into(),
            server.get("ssm GetParameters").copied().unwrap_or(0.0) * ssm_scale,
        );
        per_cycle.insert(
            "vault, all calls (server)".into(),
            vault_operator_calls(server) * vault_scale,
        );
    }
    for (k, v) in &window.provider_calls_operator {
        let provider_scale = if k.starts_with("ssm ") {
            ssm_scale
        } else if k.starts_with("vault ") {
            vault_scale
        } else {
            scale
        };
        per_cycle.insert(format!("{k} (operator)"), v * provider_scale);
    }
    let secret_writes = (!p.scoped).then(|| writes_to(&window.kube_requests, &["secrets"]));
    let operator_writes = (!p.scoped).then(|| {
        writes_to(
            &window.kube_requests,
            &[
                "secrets",
                "externalsecrets",
                "secretstores",
                "clustersecretstores",
                "events",
            ],
        )
    });
    let (names_avg, distinct) = match &moto {
        Some(m) if !m.get_parameters_names.is_empty() => (
            Some(
                m.get_parameters_names.iter().sum::<usize>() as f64
                    / m.get_parameters_names.len() as f64,
            ),
            Some(m.distinct_names.len()),
        ),
        _ => (None, None),
    };
    Cycle {
        operator_cpu_secs_per_cycle: window.operator_cpu_secs * scale,
        secret_writes_apiserver: secret_writes,
        operator_writes_apiserver: operator_writes,
        window,
        secret_resource_version_changes: 0,
        external_secret_resource_version_changes: 0,
        per_cycle,
        ssm_names_per_get_parameters: names_avg,
        ssm_distinct_names: distinct,
    }
}

/// Runs the benchmark. Fails only on set-up errors; what the operator does (or fails to do)
/// is a result.
pub async fn run(env: &TestEnv, p: &Params) -> Result<Results> {
    assert!(
        p.n.is_multiple_of(20) && p.n > 0,
        "N must be a positive multiple of 20"
    );
    assert!(p.namespaces > 0);
    let http = http();
    let retries = std::sync::atomic::AtomicU64::new(0);
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
        refresh_interval: format!("{}s", p.refresh_secs),
        create_concurrency: p.create_concurrency,
        operator_concurrency: p.operator_concurrency,
        started_at: Timestamp::now().strftime("%Y-%m-%d %H:%M UTC").to_string(),
        machine: machine(),
        versions: versions(env, &http).await,
        ..Default::default()
    };
    r.load_average.insert("1 set-up".into(), loadavg());

    // --- Set-up: CRDs, namespaces, stores, remote values.
    install_crds(&env.kube).await?;
    let run = random_suffix()[..6].to_string();
    let namespaces = if p.scoped {
        vec![env.namespace("bench").await]
    } else {
        let api: Api<Namespace> = Api::all(env.kube.clone());
        let list: Vec<String> = (0..p.namespaces)
            .map(|i| format!("srb-{run}-{i:03}"))
            .collect();
        let retries = &retries;
        bounded(list.clone(), p.create_concurrency, |name| {
            let api = api.clone();
            let run = run.clone();
            async move {
                let ns = Namespace {
                    metadata: ObjectMeta {
                        name: Some(name),
                        labels: Some([(LABEL_RUN.to_string(), run)].into()),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                create(&api, &ns, retries).await
            }
        })
        .await?;
        list
    };
    assert_eq!(
        namespaces.len(),
        p.namespaces,
        "scoped runs use one namespace"
    );
    let names = Names { run, namespaces };
    log(format!(
        "run {}: N={} M={} in {} namespaces",
        names.run,
        p.n,
        p.distinct_keys(),
        p.namespaces
    ));
    r.stores = create_stores(env, p, &names, &retries).await?;
    let all_keys: Vec<(Backend, usize)> = [Backend::Ssm, Backend::Vault]
        .into_iter()
        .flat_map(|b| (0..p.keys_per_provider()).map(move |k| (b, k)))
        .collect();
    put_values(env, p, &names, all_keys, 1).await?;
    let items: Vec<Item> = (0..p.n).map(|i| item(p, i, "es")).collect();
    let keys: Vec<String> = items
        .iter()
        .map(|it| format!("{}/{}", names.namespaces[it.ns], it.name))
        .collect();

    // --- The N ExternalSecrets (operator not running).
    r.load_average
        .insert("2 create ExternalSecrets".into(), loadavg());
    let started = Instant::now();
    {
        let (names, retries) = (&names, &retries);
        bounded(items.clone(), p.create_concurrency, |it| async move {
            let api: Api<ExternalSecret> =
                Api::namespaced(env.kube.clone(), &names.namespaces[it.ns]);
            create(&api, &external_secret(p, names, &it)?, retries).await
        })
        .await?;
    }
    r.es_create_secs = started.elapsed().as_secs_f64();
    log(format!(
        "created {} ExternalSecrets in {:.1} s",
        p.n, r.es_create_secs
    ));

    // --- The reference: a plain client creates N Secrets (then they are deleted again).
    if !p.scoped {
        r.load_average.insert("3 raw reference".into(), loadavg());
        let started = Instant::now();
        {
            let (names, retries) = (&names, &retries);
            bounded(items.clone(), p.create_concurrency, |it| async move {
                let api: Api<Secret> = Api::namespaced(env.kube.clone(), &names.namespaces[it.ns]);
                create(&api, &raw_secret(names, &it)?, retries).await
            })
            .await?;
        }
        let secs = started.elapsed().as_secs_f64();
        r.raw_create_secs = Some(secs);
        r.raw_create_per_sec = Some(p.n as f64 / secs);
        log(format!("raw: created {} Secrets in {secs:.1} s", p.n));
        let selector = format!("{LABEL_RAW}={}", names.run);
        let selector = &selector;
        bounded(
            names.namespaces.clone(),
            p.create_concurrency,
            |ns| async move {
                let api: Api<Secret> = Api::namespaced(env.kube.clone(), &ns);
                api.delete_collection(
                    &DeleteParams::default(),
                    &ListParams::default().labels(selector),
                )
                .await
                .with_context(|| format!("deleting the raw Secrets of {ns}"))?;
                Ok(())
            },
        )
        .await?;
    }
    r.create_retries = retries.load(std::sync::atomic::Ordering::Relaxed);

    // --- Initial sync: start the operator with the backlog.
    let watch = Watch::start(&env.kube, &names.run);
    watch.wait_listed().await?;
    let moto = if p.scoped {
        None
    } else {
        let m = Moto {
            base: env.aws_endpoint.clone(),
            http: http.clone(),
        };
        m.post("start-recording").await?;
        m.post("reset-recording").await?;
        Some(m)
    };
    let probe = Probe {
        env,
        p,
        http: http.clone(),
        moto,
        ticks: clock_ticks(),
        own: Mutex::new(Vec::new()),
    };
    r.load_average.insert("4 initial sync".into(), loadavg());
    let pre = if p.scoped {
        None
    } else {
        Some(apiserver_counts(&env.kube).await?)
    };
    let pre_bao = if p.scoped {
        None
    } else {
        Some(bao_counts(&http, env).await?)
    };
    let wall_start = Timestamp::now().as_millisecond();
    let t0 = Instant::now();
    let mut op = Operator::start(p, env, p.scoped.then(|| names.namespaces[0].as_str()))?;
    log(format!(
        "operator started (pid {}, admin {}, log {})",
        op.pid,
        op.admin,
        op.log.display()
    ));
    // The snapshot at start: the operator's counters are all zero then.
    let start_snap = Snapshot {
        at: t0,
        kube: pre,
        operator_calls: Counts::new(),
        operator_syncs: Counts::new(),
        bao: pre_bao,
        cpu: 0.0,
    };
    let (all_ready, died) =
        wait_all_ready(&watch, &keys, &mut op, p.ready_timeout, "initial sync").await;
    let t1 = Instant::now();
    r.all_ready = all_ready;
    r.ready_count = watch.ready_count(&keys);
    if let Some(d) = died {
        r.notes.push(d);
    }
    {
        let t = watch.tracker.lock().unwrap();
        let mut after_start = Vec::new();
        let mut ltt = Vec::new();
        for k in &keys {
            if let Some((at, l)) = t.ready.get(k) {
                after_start.push(at.saturating_duration_since(t0).as_secs_f64() * 1000.0);
                if let Some(l) = l {
                    ltt.push((*l - wall_start) as f64 / 1000.0);
                }
            } else {
                let reason = t
                    .reason
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| "not seen".into());
                *r.not_ready_reasons.entry(reason).or_default() += 1;
            }
        }
        r.ready_after_start_ms = Percentiles::of(after_start);
        r.ready_ltt_after_start_s = Percentiles::of(ltt);
    }
    if all_ready {
        let secs = (t1 - t0).as_secs_f64();
        r.secs_to_all_ready = Some(secs);
        r.syncs_per_sec = Some(p.n as f64 / secs);
        r.headline_ratio = r.raw_create_secs.map(|raw| raw / secs);
        log(format!(
            "all {} Ready {secs:.1} s after the operator started",
            p.n
        ));
    } else {
        log(format!(
            "NOT all Ready: {} of {} after {:.0} s: {:?}",
            r.ready_count,
            p.n,
            (t1 - t0).as_secs_f64(),
            r.not_ready_reasons
        ));
    }
    r.rss_at_ready_mib = proc_status_mib(op.pid, "VmRSS:");
    if op.alive() {
        let snap = probe.snapshot(&op).await?;
        let (w, _) = probe.window(&start_snap, &snap).await?;
        r.initial = w;
    }

    // --- Steady state: an unchanged refresh cycle, then a cycle after 1 % changed.
    if all_ready && op.alive() && !p.initial_only {
        tokio::time::sleep(Duration::from_secs(if p.scoped { 2 } else { 5 })).await;
        r.load_average.insert("5 unchanged cycle".into(), loadavg());
        let before = managed_secrets(env, &names, &probe).await?;
        let es_before = external_secret_versions(env, &names, &probe).await?;
        let a = probe.snapshot(&op).await?;
        if let Some(m) = &probe.moto {
            m.take().await?; // the recording restarts at the snapshot
        }
        let base = op.syncs_ok(&http).await;
        log("refresh cycle with unchanged values ...");
        let complete = wait_cycle(p, &mut op, &http, base).await;
        let b = probe.snapshot(&op).await?;
        let (w, moto) = probe.window(&a, &b).await?;
        let after = managed_secrets(env, &names, &probe).await?;
        let es_after = external_secret_versions(env, &names, &probe).await?;
        let mut c = cycle_from(p, w, moto);
        c.secret_resource_version_changes = keys
            .iter()
            .filter(|k| before.get(*k).map(|x| &x.0) != after.get(*k).map(|x| &x.0))
            .count();
        c.external_secret_resource_version_changes = keys
            .iter()
            .filter(|k| es_before.get(*k) != es_after.get(*k))
            .count();
        if !complete {
            r.notes.push(format!(
                "the unchanged refresh window ended before N syncs were counted ({} syncs in {:.0} s)",
                c.window.syncs, c.window.secs
            ));
        }
        log(format!(
            "unchanged cycle: {} syncs in {:.0} s, Secret resourceVersion changes {}, provider calls per cycle {:?}",
            c.window.syncs, c.window.secs, c.secret_resource_version_changes, c.per_cycle
        ));
        r.unchanged = Some(c);

        // 1 % of the remote values change.
        r.load_average.insert("6 changed cycle".into(), loadavg());
        let changed = changed_keys(p);
        let expected: BTreeSet<String> = items
            .iter()
            .filter(|it| changed.contains(&(it.backend, it.key)))
            .map(|it| format!("{}/{}", names.namespaces[it.ns], it.name))
            .collect();
        let before = after;
        let es_before = es_after;
        let a = probe.snapshot(&op).await?;
        if let Some(m) = &probe.moto {
            m.take().await?;
        }
        let base = op.syncs_ok(&http).await;
        let changed_at = Instant::now();
        put_values(env, p, &names, changed.clone(), 2).await?;
        log(format!(
            "changed {} remote keys ({} Secrets read them); refresh cycle ...",
            changed.len(),
            expected.len()
        ));
        let complete = wait_cycle(p, &mut op, &http, base).await;
        // Every expected Secret should carry the new value now; a late one gets one more
        // refresh interval (the benchmark's LISTs are subtracted from the counts).
        let deadline = Instant::now() + Duration::from_secs(p.refresh_secs + 30);
        let mut after = managed_secrets(env, &names, &probe).await?;
        let by_key: HashMap<&String, &Item> = keys.iter().zip(&items).collect();
        let is_new = |after: &HashMap<String, (String, String)>, k: &String| match (
            by_key.get(k),
            after.get(k),
        ) {
            (Some(it), Some((_, v))) => *v == names.value(2, it.backend, it.key),
            _ => false,
        };
        while expected.iter().any(|k| !is_new(&after, k)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(2)).await;
            after = managed_secrets(env, &names, &probe).await?;
        }
        let b = probe.snapshot(&op).await?;
        let (w, moto) = probe.window(&a, &b).await?;
        let es_after = external_secret_versions(env, &names, &probe).await?;
        let mut c = cycle_from(p, w, moto);
        c.external_secret_resource_version_changes = keys
            .iter()
            .filter(|k| es_before.get(*k) != es_after.get(*k))
            .count();
        let moved: BTreeSet<String> = keys
            .iter()
            .filter(|k| before.get(*k).map(|x| &x.0) != after.get(*k).map(|x| &x.0))
            .cloned()
            .collect();
        c.secret_resource_version_changes = moved.len();
        let updated = expected.iter().filter(|k| is_new(&after, k)).count();
        let unexpected = moved.difference(&expected).count();
        if !complete {
            r.notes.push(format!(
                "the changed refresh window ended before N syncs were counted ({} syncs in {:.0} s)",
                c.window.syncs, c.window.secs
            ));
        }
        // When did the last expected Secret change? Its last-refresh annotation has 1 s
        // resolution; the poll above bounds it from above.
        let secs_until_all = if updated == expected.len() {
            last_refresh_after(env, &probe, &expected, changed_at)
                .await
                .ok()
                .flatten()
        } else {
            None
        };
        log(format!(
            "changed cycle: {updated} of {} expected Secrets updated, {unexpected} unexpected; {} syncs in {:.0} s",
            expected.len(),
            c.window.syncs,
            c.window.secs
        ));
        r.changed = Some(ChangedCycle {
            cycle: c,
            changed_keys: changed.len(),
            expected_updates: expected.len(),
            updated,
            unexpected_updates: unexpected,
            secs_until_all_updated: secs_until_all,
        });

        // ExternalSecrets added while the operator runs with N: create → Ready latency.
        if !p.scoped {
            r.load_average.insert("7 live adds".into(), loadavg());
            let count = (p.n / 100).max(10);
            let adds: Vec<Item> = (0..count).map(|i| item(p, i, "live")).collect();
            let add_keys: Vec<String> = adds
                .iter()
                .map(|it| format!("{}/{}", names.namespaces[it.ns], it.name))
                .collect();
            let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
            {
                let (names, retries, sent) = (&names, &retries, &sent);
                bounded(adds.clone(), p.create_concurrency, |it| async move {
                    let api: Api<ExternalSecret> =
                        Api::namespaced(env.kube.clone(), &names.namespaces[it.ns]);
                    let obj = external_secret(p, names, &it)?;
                    sent.lock().unwrap().insert(
                        format!("{}/{}", names.namespaces[it.ns], it.name),
                        Instant::now(),
                    );
                    create(&api, &obj, retries).await
                })
                .await?;
            }
            let (ok, died) = wait_all_ready(
                &watch,
                &add_keys,
                &mut op,
                Duration::from_secs(p.refresh_secs * 3 + 120),
                "live adds",
            )
            .await;
            if let Some(d) = died {
                r.notes.push(d);
            }
            let t = watch.tracker.lock().unwrap();
            let sent = sent.lock().unwrap();
            let lat: Vec<f64> = add_keys
                .iter()
                .filter_map(|k| {
                    let (at, _) = t.ready.get(k)?;
                    Some(at.saturating_duration_since(*sent.get(k)?).as_secs_f64() * 1000.0)
                })
                .collect();
            r.live_adds = Some(LiveAdds {
                count,
                all_ready: ok,
                latency_ms: Percentiles::of(lat),
            });
        }
    }

    // --- The end: peak memory, whole-run counters, log.
    r.peak_rss_mib = proc_status_mib(op.pid, "VmHWM:");
    if op.alive() {
        let end = probe.snapshot(&op).await?;
        let (mut w, _) = probe.window(&start_snap, &end).await?;
        // Whole-run server counts would double the per-window moto recordings: keep the
        // API server's and the operator's own.
        w.provider_calls_server
            .retain(|k, _| k.starts_with("vault "));
        r.whole_run = w;
        r.sync_errors = end
            .operator_syncs
            .iter()
            .filter(|(k, _)| k.starts_with("error "))
            .map(|(k, v)| (k.trim_start_matches("error ").to_string(), *v))
            .collect();
    } else {
        r.notes
            .push("the operator was not running at the end of the run".into());
    }
    if let Some(m) = &probe.moto {
        let _ = m.post("stop-recording").await;
    }
    let log_path = op.log.clone();
    op.stop().await;
    drop(watch);
    if let Ok(text) = std::fs::read_to_string(&log_path) {
        let warnings: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        r.operator_log_warnings = warnings.len();
        let mut seen = BTreeSet::new();
        for w in warnings {
            // One sample per distinct message (timestamps and object names differ).
            let msg: String = w
                .split_once(" WARN ")
                .or_else(|| w.split_once(" ERROR "))
                .map(|(_, m)| m)
                .unwrap_or(w)
                .chars()
                .take(240)
                .collect();
            let shape: String = msg
                .chars()
                .filter(|c| !c.is_ascii_digit())
                .take(80)
                .collect();
            if seen.insert(shape) && seen.len() <= 5 {
                r.operator_log_samples.push(msg);
            }
        }
    }
    r.targets = targets(p, &r);
    Ok(r)
}

/// The latest `secret-relay.dev/last-refresh` of the `expected` Secrets, in seconds after
/// `since` (1 s resolution).
async fn last_refresh_after(
    env: &TestEnv,
    probe: &Probe<'_>,
    expected: &BTreeSet<String>,
    since: Instant,
) -> Result<Option<f64>> {
    let now_wall = Timestamp::now().as_second();
    let since_wall = now_wall - since.elapsed().as_secs() as i64;
    let mut latest: Option<i64> = None;
    for k in expected {
        let (ns, name) = k.split_once('/').unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(env.kube.clone(), ns);
        let s = api.get(name).await?;
        probe.own("GET secrets");
        let t = s
            .annotations()
            .get("secret-relay.dev/last-refresh")
            .and_then(|v| v.parse::<Timestamp>().ok())
            .map(|t| t.as_second());
        latest = latest.max(t);
    }
    Ok(latest.map(|l| (l - since_wall) as f64))
}

fn targets(p: &Params, r: &Results) -> Vec<Target> {
    let mut t = Vec::new();
    t.push(Target {
        name: "all Ready within 2 × raw create time".into(),
        bound: r
            .raw_create_secs
            .map(|s| format!("{:.1} s", 2.0 * s))
            .unwrap_or_else(|| "—".into()),
        value: match (r.all_ready, r.secs_to_all_ready) {
            (true, Some(s)) => format!("{s:.1} s"),
            _ => format!(
                "not all Ready ({} of {} after {:.0} s)",
                r.ready_count, r.n, r.initial.secs
            ),
        },
        met: match (r.raw_create_secs, r.all_ready, r.secs_to_all_ready) {
            (Some(raw), true, Some(s)) => Some(s <= 2.0 * raw),
            (Some(_), false, _) => Some(false),
            _ => None,
        },
    });
    let per = p.keys_per_provider() as f64;
    let cycle = r.unchanged.as_ref();
    let pc = |k: &str| cycle.and_then(|c| c.per_cycle.get(k).copied());
    let vault = pc("vault, all calls (server)");
    t.push(Target {
        name: "Vault calls per refresh cycle ≤ distinct Vault keys".into(),
        bound: format!("{per:.0}"),
        value: vault
            .map(|v| format!("{v:.0}"))
            .unwrap_or_else(|| "not measured".into()),
        met: vault.map(|v| v <= per),
    });
    let ssm = pc("ssm GetParameters (server)");
    let ssm_all = pc("ssm+sts, all calls (server)");
    let ssm_bound = (per / 10.0).ceil();
    t.push(Target {
        name: "SSM GetParameters calls per refresh cycle ≤ ceil(distinct SSM keys / 10)".into(),
        bound: format!("{ssm_bound:.0}"),
        value: match (ssm, ssm_all) {
            (Some(g), Some(a)) => format!("{g:.0} ({a:.0} SSM/STS calls of any kind)"),
            _ => "not measured".into(),
        },
        met: ssm.map(|g| g <= ssm_bound),
    });
    let writes = cycle.and_then(|c| {
        Some((
            c.secret_writes_apiserver?,
            c.operator_writes_apiserver?,
            c.secret_resource_version_changes,
            c.external_secret_resource_version_changes,
        ))
    });
    t.push(Target {
        name: "zero writes on an unchanged refresh".into(),
        bound: "0".into(),
        value: match writes {
            Some((s, o, rv, es)) => format!(
                "{s:.0} Secret writes, {o:.0} writes to any operator resource; resourceVersion changes: {rv} Secrets, {es} ExternalSecrets"
            ),
            None => "not measured".into(),
        },
        met: writes.map(|(s, o, rv, es)| s == 0.0 && o == 0.0 && rv == 0 && es == 0),
    });
    t.push(Target {
        name: "exactly the changed Secrets updated".into(),
        bound: r
            .changed
            .as_ref()
            .map(|c| format!("{} updated, 0 others", c.expected_updates))
            .unwrap_or_else(|| "—".into()),
        value: r
            .changed
            .as_ref()
            .map(|c| format!("{} updated, {} others", c.updated, c.unexpected_updates))
            .unwrap_or_else(|| "not measured".into()),
        met: r
            .changed
            .as_ref()
            .map(|c| c.updated == c.expected_updates && c.unexpected_updates == 0),
    });
    t.push(Target {
        name: "peak RSS ≤ 64 MiB at N = 10,000".into(),
        bound: "64 MiB".into(),
        value: r
            .peak_rss_mib
            .map(|m| format!("{m:.1} MiB"))
            .unwrap_or_else(|| "not measured".into()),
        met: if p.n >= 10_000 {
            r.peak_rss_mib.map(|m| m <= 64.0)
        } else {
            None
        },
    });
    t
}
