//! The benchmark's results: the figures of one run (serialized into `BENCHMARKS.json`), the
//! targets it is judged against, and the Markdown table (`BENCHMARKS.md`) made from every run.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

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
    /// Operator CPU time (utime + stime) in the window, seconds.
    pub operator_cpu_secs: f64,
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
    pub rss_at_ready_mib: Option<f64>,
    /// VmHWM at the end of the run.
    pub peak_rss_mib: Option<f64>,
    /// Operator start → stop.
    pub whole_run: Window,
    /// `secret_relay_syncs_total{result="error"}` by reason over the whole run.
    pub sync_errors: BTreeMap<String, f64>,
    /// WARN/ERROR lines in the operator's log, and a few of them.
    pub operator_log_warnings: usize,
    pub operator_log_samples: Vec<String>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

/// The file of every run, one per (N, store kind).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(default)]
pub struct ResultsFile {
    pub description: String,
    pub runs: Vec<Results>,
}

/// Adds `run` to `dir/BENCHMARKS.json` (replacing a run of the same N and store kind) and
/// rewrites `dir/BENCHMARKS.md` from every run in it.
pub fn write_reports(dir: &Path, run: &Results) -> Result<()> {
    let json_path = dir.join("BENCHMARKS.json");
    let mut file: ResultsFile = match std::fs::read_to_string(&json_path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", json_path.display()))?,
        Err(_) => ResultsFile::default(),
    };
    file.description = "secret-relay scale benchmark (hack/bench.sh); BENCHMARKS.md is made \
                        from this file"
        .into();
    file.runs
        .retain(|r| !(r.n == run.n && r.store_kind == run.store_kind));
    file.runs.push(run.clone());
    file.runs
        .sort_by(|a, b| (a.store_kind.as_str(), a.n).cmp(&(b.store_kind.as_str(), b.n)));
    std::fs::write(&json_path, serde_json::to_string_pretty(&file)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md_path = dir.join("BENCHMARKS.md");
    std::fs::write(&md_path, markdown(&file.runs))
        .with_context(|| format!("writing {}", md_path.display()))?;
    Ok(())
}

fn thousands(n: f64) -> String {
    let neg = n < 0.0;
    let s = format!("{:.0}", n.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if neg { format!("-{out}") } else { out }
}

fn num(v: f64) -> String {
    let v = v + 0.0; // no "-0"
    if v.abs() >= 1000.0 {
        thousands(v)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| "—".into())
}

fn pct(p: &Option<Percentiles>, scale: f64, unit: &str) -> String {
    match p {
        Some(p) => format!(
            "{} / {} / {} {unit}",
            num(p.p50 * scale),
            num(p.p99 * scale),
            num(p.max * scale)
        ),
        None => "—".into(),
    }
}

fn map_cell(m: &BTreeMap<String, f64>, filter: impl Fn(&str) -> bool) -> String {
    let parts: Vec<String> = m
        .iter()
        .filter(|(k, v)| **v != 0.0 && filter(k))
        .map(|(k, v)| format!("{k}: {}", num(*v)))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join("<br>")
    }
}

fn is_operator_resource(key: &str) -> bool {
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

fn row(md: &mut String, runs: &[Results], name: &str, f: &dyn Fn(&Results) -> String) {
    let cells: Vec<String> = runs.iter().map(f).collect();
    let _ = writeln!(md, "| {name} | {} |", cells.join(" | "));
}

fn cycle_row(
    md: &mut String,
    runs: &[Results],
    pick: &dyn Fn(&Results) -> Option<Cycle>,
    name: &str,
    f: &dyn Fn(&Cycle) -> String,
) {
    let cells: Vec<String> = runs
        .iter()
        .map(|r| {
            pick(r)
                .map(|c| f(&c))
                .unwrap_or_else(|| "not measured".into())
        })
        .collect();
    let _ = writeln!(md, "| {name} | {} |", cells.join(" | "));
}

fn cycle_rows(md: &mut String, runs: &[Results], pick: &dyn Fn(&Results) -> Option<Cycle>) {
    cycle_row(md, runs, pick, "window, s (successful syncs in it)", &|c| {
        format!("{} ({})", num(c.window.secs), num(c.window.syncs))
    });
    cycle_row(
        md,
        runs,
        pick,
        "Secret writes (API server) / Secret resourceVersion changes",
        &|c| {
            format!(
                "{} / {}",
                opt(c.secret_writes_apiserver),
                thousands(c.secret_resource_version_changes as f64)
            )
        },
    );
    cycle_row(
        md,
        runs,
        pick,
        "writes to any operator resource (API server)",
        &|c| opt(c.operator_writes_apiserver),
    );
    cycle_row(
        md,
        runs,
        pick,
        "ExternalSecret resourceVersion changes (status writes)",
        &|c| thousands(c.external_secret_resource_version_changes as f64),
    );
    cycle_row(md, runs, pick, "kube API requests in the window", &|c| {
        map_cell(&c.window.kube_requests, is_operator_resource)
    });
    cycle_row(
        md,
        runs,
        pick,
        "provider calls per cycle (calls × (N/2) / the provider's reads)",
        &|c| map_cell(&c.per_cycle, |_| true),
    );
    cycle_row(
        md,
        runs,
        pick,
        "provider calls in the window (server side)",
        &|c| map_cell(&c.window.provider_calls_server, |_| true),
    );
    cycle_row(
        md,
        runs,
        pick,
        "provider calls in the window (operator metrics)",
        &|c| map_cell(&c.window.provider_calls_operator, |_| true),
    );
    cycle_row(
        md,
        runs,
        pick,
        "names per GetParameters call (distinct names asked)",
        &|c| {
            format!(
                "{} ({})",
                opt(c.ssm_names_per_get_parameters),
                c.ssm_distinct_names
                    .map(|d| thousands(d as f64))
                    .unwrap_or_else(|| "—".into())
            )
        },
    );
    cycle_row(
        md,
        runs,
        pick,
        "operator CPU in the window, s (per cycle)",
        &|c| {
            format!(
                "{} ({})",
                num(c.window.operator_cpu_secs),
                num(c.operator_cpu_secs_per_cycle)
            )
        },
    );
}

/// The Markdown page of every run.
pub fn markdown(runs: &[Results]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# secret-relay at scale\n");
    let _ = writeln!(
        md,
        "Made by `hack/bench.sh` (the figures are also in `BENCHMARKS.json`). Method, and what \
         each figure means, below the tables. One run per column; each ran in a fresh test \
         environment (etcd, kube-apiserver, OpenBao, moto on loopback) on the machine described \
         in the first rows, which other jobs may have shared: see the load averages.\n"
    );
    let head: Vec<String> = runs
        .iter()
        .map(|r| format!("N = {} ({})", thousands(r.n as f64), r.store_kind))
        .collect();
    let _ = writeln!(md, "| | {} |", head.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(runs.len()));
    row(&mut md, runs, "date", &|r| r.started_at.clone());
    row(&mut md, runs, "machine", &|r| {
        format!(
            "{} cores, {}, {}",
            r.machine.get("cores").cloned().unwrap_or_default(),
            r.machine.get("memory").cloned().unwrap_or_default(),
            r.machine.get("cpu").cloned().unwrap_or_default()
        )
    });
    row(&mut md, runs, "versions", &|r| {
        r.versions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join("<br>")
    });
    row(
        &mut md,
        runs,
        "load average at start of each phase (1/5/15 min)",
        &|r| {
            r.load_average
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("<br>")
        },
    );
    row(
        &mut md,
        runs,
        "ExternalSecrets N / distinct remote keys M",
        &|r| {
            format!(
                "{} / {}",
                thousands(r.n as f64),
                thousands(r.distinct_keys as f64)
            )
        },
    );
    row(&mut md, runs, "namespaces / stores", &|r| {
        format!("{} / {} {}s", r.namespaces, r.stores, r.store_kind)
    });
    row(&mut md, runs, "refreshInterval", &|r| {
        r.refresh_interval.clone()
    });
    row(
        &mut md,
        runs,
        "concurrency: object creation / operator `--concurrency`",
        &|r| format!("{} / {}", r.create_concurrency, r.operator_concurrency),
    );
    row(&mut md, runs, "**initial sync**", &|_| String::new());
    row(
        &mut md,
        runs,
        "create N ExternalSecrets (operator stopped), s",
        &|r| num(r.es_create_secs),
    );
    row(
        &mut md,
        runs,
        "raw: create N plain Secrets, s (per s)",
        &|r| format!("{} ({})", opt(r.raw_create_secs), opt(r.raw_create_per_sec)),
    );
    row(&mut md, runs, "operator start → all Ready, s", &|r| {
        if r.all_ready {
            opt(r.secs_to_all_ready)
        } else {
            format!(
                "not all Ready: {} of {} after {} s",
                thousands(r.ready_count as f64),
                thousands(r.n as f64),
                num(r.initial.secs)
            )
        }
    });
    row(&mut md, runs, "sync throughput, ExternalSecrets/s", &|r| {
        opt(r.syncs_per_sec)
    });
    row(
        &mut md,
        runs,
        "**headline: sync throughput / raw create throughput**",
        &|r| opt(r.headline_ratio),
    );
    row(
        &mut md,
        runs,
        "per object, operator start → Ready (watch), p50 / p99 / max",
        &|r| pct(&r.ready_after_start_ms, 0.001, "s"),
    );
    row(
        &mut md,
        runs,
        "per object, Ready lastTransitionTime − operator start, p50 / p99 / max",
        &|r| pct(&r.ready_ltt_after_start_s, 1.0, "s"),
    );
    row(
        &mut md,
        runs,
        "kube API requests during the initial sync",
        &|r| map_cell(&r.initial.kube_requests, is_operator_resource),
    );
    row(
        &mut md,
        runs,
        "kube API error answers during the initial sync",
        &|r| map_cell(&r.initial.kube_errors, |_| true),
    );
    row(
        &mut md,
        runs,
        "provider calls during the initial sync (server side)",
        &|r| map_cell(&r.initial.provider_calls_server, |_| true),
    );
    row(
        &mut md,
        runs,
        "provider calls during the initial sync (operator metrics)",
        &|r| map_cell(&r.initial.provider_calls_operator, |_| true),
    );
    row(
        &mut md,
        runs,
        "operator CPU during the initial sync, s",
        &|r| num(r.initial.operator_cpu_secs),
    );
    row(&mut md, runs, "operator RSS when all Ready, MiB", &|r| {
        opt(r.rss_at_ready_mib)
    });
    row(&mut md, runs, "**refresh cycle, nothing changed**", &|_| {
        String::new()
    });
    cycle_rows(&mut md, runs, &|r: &Results| r.unchanged.clone());
    row(
        &mut md,
        runs,
        "**refresh cycle after 1 % of the remote values changed**",
        &|_| String::new(),
    );
    row(
        &mut md,
        runs,
        "changed remote keys → Secrets expected to change",
        &|r| {
            r.changed
                .as_ref()
                .map(|c| format!("{} → {}", c.changed_keys, c.expected_updates))
                .unwrap_or_else(|| "not measured".into())
        },
    );
    row(
        &mut md,
        runs,
        "updated with the new value / unexpected updates",
        &|r| {
            r.changed
                .as_ref()
                .map(|c| format!("{} / {}", c.updated, c.unexpected_updates))
                .unwrap_or_else(|| "not measured".into())
        },
    );
    row(
        &mut md,
        runs,
        "change → last expected Secret updated, s",
        &|r| {
            r.changed
                .as_ref()
                .map(|c| opt(c.secs_until_all_updated))
                .unwrap_or_else(|| "not measured".into())
        },
    );
    cycle_rows(&mut md, runs, &|r: &Results| {
        r.changed.as_ref().map(|c| c.cycle.clone())
    });
    row(
        &mut md,
        runs,
        "**ExternalSecrets added at steady state**",
        &|_| String::new(),
    );
    row(
        &mut md,
        runs,
        "count; create → Ready (watch), p50 / p99 / max",
        &|r| {
            r.live_adds
                .as_ref()
                .map(|l| {
                    format!(
                        "{}{}; {}",
                        l.count,
                        if l.all_ready { "" } else { " (not all Ready)" },
                        pct(&l.latency_ms, 0.001, "s")
                    )
                })
                .unwrap_or_else(|| "not measured".into())
        },
    );
    row(&mut md, runs, "**operator, whole run**", &|_| String::new());
    row(&mut md, runs, "peak RSS (VmHWM), MiB", &|r| {
        opt(r.peak_rss_mib)
    });
    row(&mut md, runs, "CPU, s (run length, s)", &|r| {
        format!(
            "{} ({})",
            num(r.whole_run.operator_cpu_secs),
            num(r.whole_run.secs)
        )
    });
    row(&mut md, runs, "sync errors by reason", &|r| {
        map_cell(&r.sync_errors, |_| true)
    });
    row(&mut md, runs, "WARN/ERROR log lines", &|r| {
        r.operator_log_warnings.to_string()
    });
    row(&mut md, runs, "kube API requests, whole run", &|r| {
        map_cell(&r.whole_run.kube_requests, is_operator_resource)
    });

    let _ = writeln!(md, "\n## Targets\n");
    let names: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for r in runs {
            for t in &r.targets {
                if !v.contains(&t.name) {
                    v.push(t.name.clone());
                }
            }
        }
        v
    };
    let _ = writeln!(md, "| target | {} |", head.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(runs.len()));
    for name in names {
        let cells: Vec<String> = runs
            .iter()
            .map(|r| match r.targets.iter().find(|t| t.name == name) {
                Some(t) => {
                    let verdict = match t.met {
                        Some(true) => "**met**",
                        Some(false) => "**not met**",
                        None => "n/a",
                    };
                    format!("{verdict}: {} (bound {})", t.value, t.bound)
                }
                None => "—".into(),
            })
            .collect();
        let _ = writeln!(md, "| {name} | {} |", cells.join(" | "));
    }
    let notes: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for r in runs {
            for n in &r.notes {
                let line = format!("N = {}: {n}", thousands(r.n as f64));
                if !v.contains(&line) {
                    v.push(line);
                }
            }
            for s in &r.operator_log_samples {
                v.push(format!(
                    "N = {}: operator log: `{s}`",
                    thousands(r.n as f64)
                ));
            }
        }
        v
    };
    if !notes.is_empty() {
        let _ = writeln!(md, "\n## Observations recorded by the runs\n");
        for n in notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    md.push_str(METHOD);
    md
}

const METHOD: &str = r#"
## Method

`hack/bench.sh [N...]` (default N = 1,000 and 10,000) builds the release binary
(`cargo build --release`), then for each N starts a fresh test environment
(`hack/testenv/testenv.py run`) and runs the ignored test `tests/bench_scale.rs`
(`cargo test --release --test bench_scale -- --ignored`), whose logic is in
`tests/scale/mod.rs`. The same code runs at N = 100 in `tests/bench_small.rs` on every
`cargo test`, asserting only what must hold at any N (all Ready, no write on an unchanged
refresh, exactly the changed Secrets updated).

**Objects.** N ExternalSecrets in 100 namespaces, half reading an SSM parameter (moto,
`SecureString`), half a Vault KV v2 secret (OpenBao, `property: value`), one `data` entry each.
They reference M = N/10 distinct remote keys (M/2 per provider): every key is read by 10
ExternalSecrets, 2 in each of 5 namespaces, so keys are shared both inside a namespace and
across namespaces. Stores: one `SecretStore` per namespace per provider (the tenant pattern;
credentials in a Secret of the namespace: static AWS keys for moto, OpenBao's root token);
`SECRET_RELAY_BENCH_STORES=cluster` uses two `ClusterSecretStore`s instead. `refreshInterval:
60s`.

**Initial sync.** The stores, the remote values and the N ExternalSecrets are created first
(bounded concurrency, 16 requests in flight; 429/5xx/time-outs retried), then the reference
(a plain client creates N Secrets of the same shape as the operator's, same concurrency,
into the same namespaces; deleted again before the operator starts), then the release binary
starts as a child process (`secret-relay run --admin-addr 127.0.0.1:PORT --concurrency 16`,
admin kubeconfig, cluster-wide). A watch on the ExternalSecrets records when each one is
first Ready (`Ready=True`, reason `SecretSynced`, observedGeneration current). "Operator start
→ all Ready" is from spawning the process to the last of the N; every object existed before
the start, so the per-object figure is operator start → Ready. The headline divides the
operator's throughput (N / that time) by the plain client's (N / raw create time); the target
is that the operator needs at most twice the raw time.

**Refresh cycles.** After all are Ready and 5 s of settling, a window runs until at least
1.1 × refreshInterval + 5 s have passed *and* the operator counted at least N successful syncs
(`secret_relay_syncs_total`), so every ExternalSecret refreshed at least once. The
ExternalSecrets of one provider refresh together on that provider's ticks, so a window holds
one or two ticks of each provider. Provider calls per cycle are therefore scaled per provider:
its calls in the window × (N/2) / the remote values its syncs read in the window
(`secret_relay_provider_reads_total`; every ExternalSecret reads one key per sync). Then
max(2, M/100) remote keys (half SSM, half Vault) get new values and a second window runs the
same way; afterwards every managed Secret is listed: exactly the readers of the changed keys
must have a new resourceVersion and the new value.

**Counting.** Kube API requests: deltas of kube-apiserver's own `apiserver_request_total`
(by verb and resource; the benchmark's own LISTs subtracted; a WATCH is counted by the API
server when it ends). Provider calls, server side: moto's recorder (`/moto-api/recorder/*`,
every request with its `X-Amz-Target`, so actions and the names in each `GetParameters`) and
OpenBao's `/v1/sys/metrics` route counters (`vault_route_<operation>_<mount>_count`; an audit
device cannot be enabled over the API in OpenBao 2.x: "cannot enable audit device via API; use
declarative, config-based audit device management instead", and the test environment starts
`bao server -dev` without a config file); the operator's side: its
`secret_relay_provider_calls_total`. Memory: VmHWM of `/proc/PID/status`; CPU: utime + stime
of `/proc/PID/stat`.

**Targets.** All Ready within 2 × raw create time; provider calls per refresh cycle ≤ distinct
remote keys (Vault: every request the operator makes; SSM: `GetParameters` calls ≤
ceil(distinct SSM keys / 10)); zero writes on an unchanged refresh (no Secret write, and no
write to any other resource of the operator); peak RSS ≤ 64 MiB at N = 10,000.
"#;
