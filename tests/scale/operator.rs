//! The operator under test: one child process, or K (one per shard) started at once, each
//! with its own admin port and log file, scraped through `/metrics`.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context as _, Result};

use super::{
    LABEL_SHARD, Names, Params, log,
    probe::Counts,
    procs::{proc_cpu_secs, proc_status_mib},
    shard_name,
};
use crate::common::TestEnv;

/// A Pod's default termination grace period: how long the restart's stop waits after
/// SIGTERM.
pub const GRACE: Duration = Duration::from_secs(30);
/// The same in the shared test environment (`bench_small`), where the stop is not measured
/// and every `cargo test` would wait for it.
pub const SCOPED_GRACE: Duration = Duration::from_secs(10);
/// The wait after SIGTERM when nothing is measured any more (the end of a run).
pub const SHORT_GRACE: Duration = Duration::from_secs(5);

/// What one scrape of `/metrics` says.
#[derive(Default)]
pub struct Scrape {
    /// `secret_relay_provider_calls_total`: `"provider operation"` → calls.
    pub calls: Counts,
    /// `secret_relay_syncs_total`: `"result reason"` → syncs; and
    /// `secret_relay_provider_reads_total`: `"reads provider"` → remote values read by syncs.
    pub syncs: Counts,
    /// `secret_relay_reconcile_duration_seconds_count`: reconciles that passed the
    /// cache-sync gate.
    pub reconciles: f64,
}

impl Scrape {
    fn add(&mut self, other: Scrape) {
        for (k, v) in other.calls {
            *self.calls.entry(k).or_default() += v;
        }
        for (k, v) in other.syncs {
            *self.syncs.entry(k).or_default() += v;
        }
        self.reconciles += other.reconciles;
    }

    pub fn syncs_ok(&self) -> f64 {
        self.syncs
            .iter()
            .filter(|(k, _)| k.starts_with("success "))
            .map(|(_, v)| v)
            .sum()
    }

    pub fn calls_total(&self) -> f64 {
        self.calls.values().sum()
    }
}

/// One operator process.
pub struct Operator {
    child: tokio::process::Child,
    pub pid: u32,
    pub admin: std::net::SocketAddr,
    pub log: PathBuf,
    /// `--watch-label-selector`, empty when unsharded.
    pub selector: String,
}

impl Operator {
    /// Starts instance `shard` (`None`: the only one, no selector). `tag` names the log file
    /// of a second generation (`"restart"`).
    fn start(
        p: &Params,
        env: &TestEnv,
        scope: Option<&str>,
        shard: Option<usize>,
        tag: &str,
    ) -> Result<Operator> {
        let admin = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        std::fs::create_dir_all(&p.log_dir)?;
        let mut file = format!("scale-{}", p.n);
        if let Some(j) = shard {
            file.push_str(&format!("-shard-{j}"));
        }
        file.push_str("-operator");
        if !tag.is_empty() {
            file.push_str(&format!("-{tag}"));
        }
        let log = p.log_dir.join(format!("{file}.log"));
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = tokio::process::Command::new(&p.operator_bin);
        cmd.arg("run")
            .args(["--admin-addr", &admin.to_string()])
            .args(["--concurrency", &p.operator_concurrency.to_string()])
            .args(["--events", &p.events]);
        if let Some(ns) = scope {
            cmd.args(["--namespace", ns, "--no-cluster-stores"]);
        }
        let mut selector = String::new();
        if let Some(j) = shard {
            // Leader election stays off (one process per shard), as for the single instance;
            // the Lease name is what the shard would use with --leader-elect.
            selector = format!("{LABEL_SHARD}={}", shard_name(j));
            cmd.args(["--watch-label-selector", &selector])
                .args(["--lease-name", &format!("secret-relay-{}", shard_name(j))]);
        }
        let child = cmd
            .env("KUBECONFIG", &env.kubeconfig)
            .env_remove("RUST_LOG")
            .env_remove("SECRET_RELAY_NAMESPACE")
            .env_remove("SECRET_RELAY_CONCURRENCY")
            .env_remove("SECRET_RELAY_WATCH_LABEL_SELECTOR")
            .env_remove("SECRET_RELAY_LEASE_NAME")
            .env_remove("SECRET_RELAY_LEADER_ELECT")
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
            selector,
        })
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub async fn scrape(&self, http: &reqwest::Client) -> Result<Scrape> {
        let text = http
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let mut out = Scrape::default();
        // A histogram's `_count` sample, read from the text (labels, if any, skipped).
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("secret_relay_reconcile_duration_seconds_count") {
                let rest = match rest.strip_prefix('{') {
                    Some(r) => r.split_once('}').map(|(_, v)| v).unwrap_or(""),
                    None => rest,
                };
                if let Some(v) = rest
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                {
                    out.reconciles += v;
                }
            }
        }
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))?;
        let provider = |s: &str| match s {
            // The AWS half of the benchmark, whichever service it reads.
            "aws_ssm" | "aws_secretsmanager" => "ssm".to_string(),
            other => other.to_string(),
        };
        for s in &scrape.samples {
            let v = match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => continue,
            };
            let get = |k: &str| s.labels.get(k).unwrap_or("").to_string();
            match s.metric.as_str() {
                "secret_relay_provider_calls_total" => {
                    *out.calls
                        .entry(format!(
                            "{} {}",
                            provider(&get("provider")),
                            get("operation")
                        ))
                        .or_default() += v;
                }
                "secret_relay_syncs_total" => {
                    *out.syncs
                        .entry(format!("{} {}", get("result"), get("reason")))
                        .or_default() += v;
                }
                "secret_relay_provider_reads_total" => {
                    *out.syncs
                        .entry(format!("reads {}", provider(&get("provider"))))
                        .or_default() += v;
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// SIGTERM (a drain), then SIGKILL after `grace`; returns whether it had to be killed.
    async fn stop(mut self, grace: Duration) -> bool {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
            return false;
        }
        log(format!(
            "operator pid {} did not exit within {} s of SIGTERM; killing it",
            self.pid,
            grace.as_secs()
        ));
        let _ = self.child.kill().await;
        true
    }
}

/// The operator instances of one generation: one, or one per shard.
pub struct Fleet {
    pub ops: Vec<Operator>,
}

impl Fleet {
    /// Starts every instance at once: K = `p.shards` (one without a selector when K = 1),
    /// scoped to the run's only namespace when `p.scoped`.
    pub fn start(p: &Params, env: &TestEnv, names: &Names, tag: &str) -> Result<Fleet> {
        let scope = p.scoped.then(|| names.namespaces[0].as_str());
        let k = p.shard_count();
        let ops = (0..k)
            .map(|j| Operator::start(p, env, scope, (k > 1).then_some(j), tag))
            .collect::<Result<Vec<_>>>()?;
        for op in &ops {
            log(format!(
                "operator started (pid {}, admin {}, log {}{})",
                op.pid,
                op.admin,
                op.log.display(),
                if op.selector.is_empty() {
                    String::new()
                } else {
                    format!(", {}", op.selector)
                }
            ));
        }
        Ok(Fleet { ops })
    }

    /// Whether every instance still runs.
    pub fn alive(&mut self) -> bool {
        self.ops.iter_mut().all(Operator::alive)
    }

    /// Every instance's metrics, summed.
    pub async fn scrape(&self, http: &reqwest::Client) -> Result<Scrape> {
        let mut sum = Scrape::default();
        for s in self.scrape_each(http).await? {
            sum.add(s);
        }
        Ok(sum)
    }

    pub async fn scrape_each(&self, http: &reqwest::Client) -> Result<Vec<Scrape>> {
        futures::future::try_join_all(self.ops.iter().map(|op| op.scrape(http))).await
    }

    /// Successful syncs of every instance (0 while one does not answer).
    pub async fn syncs_ok(&self, http: &reqwest::Client) -> f64 {
        self.scrape(http).await.map(|s| s.syncs_ok()).unwrap_or(0.0)
    }

    /// Reconciles of every instance that answers (one not answering yet counts 0).
    pub async fn reconciles(&self, http: &reqwest::Client) -> f64 {
        let each = futures::future::join_all(self.ops.iter().map(|op| op.scrape(http))).await;
        each.into_iter()
            .filter_map(|s| s.ok().map(|s| s.reconciles))
            .sum()
    }

    /// CPU seconds of each instance so far.
    pub fn cpu(&self, ticks: f64) -> Vec<f64> {
        self.ops
            .iter()
            .map(|op| proc_cpu_secs(&op.pid.to_string(), ticks).unwrap_or(0.0))
            .collect()
    }

    /// VmRSS (`"VmRSS:"`) or VmHWM (`"VmHWM:"`) of each instance, MiB.
    pub fn memory(&self, field: &str) -> Vec<Option<f64>> {
        self.ops
            .iter()
            .map(|op| proc_status_mib(op.pid, field))
            .collect()
    }

    /// VmRSS of each instance, for progress lines.
    pub fn rss_text(&self) -> String {
        self.memory("VmRSS:")
            .iter()
            .map(|m| format!("{:.1}", m.unwrap_or(0.0)))
            .collect::<Vec<_>>()
            .join(" / ")
    }

    pub fn logs(&self) -> Vec<PathBuf> {
        self.ops.iter().map(|op| op.log.clone()).collect()
    }

    pub fn selectors(&self) -> Vec<String> {
        self.ops.iter().map(|op| op.selector.clone()).collect()
    }

    /// Stops every instance at once as an upgrade would: SIGTERM, wait for the exit, SIGKILL
    /// after `grace` (Kubernetes' default terminationGracePeriodSeconds is [`GRACE`]).
    /// Returns how many had to be killed.
    pub async fn stop(self, grace: Duration) -> usize {
        futures::future::join_all(self.ops.into_iter().map(|op| op.stop(grace)))
            .await
            .into_iter()
            .filter(|killed| *killed)
            .count()
    }
}
