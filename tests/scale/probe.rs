//! Counting from the outside: snapshots of every counter (kube-apiserver's requests, the
//! operators' metrics and CPU, the servers' CPU, OpenBao's routes; moto's recorder runs
//! between two snapshots), the window between two of them, and the paged LISTs compared
//! before and after a phase.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    api::{GetParams, ListParams},
};
use secret_relay::api::ExternalSecret;

use super::{
    LABEL_RUN, MANAGED_SELECTOR, Names, PAGE, Params,
    operator::Fleet,
    procs::{Servers, clock_ticks},
    provider_counts::{Moto, MotoCounts, bao_counts},
    report::Window,
};
use crate::common::TestEnv;

pub type Counts = BTreeMap<String, f64>;

pub fn delta(after: &Counts, before: &Counts) -> Counts {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

// ------------------------------------------------------------------------------------------
// kube-apiserver

/// `apiserver_request_total` by `"VERB resource[.group][/subresource]"`, and the non-2xx
/// answers by `"VERB resource code"`.
pub async fn apiserver_counts(client: &Client) -> Result<(Counts, Counts)> {
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

/// The resources the operator writes: a write to any of them is the operator's.
pub const OPERATOR_RESOURCES: [&str; 5] = [
    "secrets",
    "externalsecrets",
    "secretstores",
    "clustersecretstores",
    "events",
];

fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION"
    )
}

pub fn writes_to(counts: &Counts, resources: &[&str]) -> f64 {
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

// ------------------------------------------------------------------------------------------
// Snapshots and windows

/// All counters at one moment.
pub struct Snapshot {
    pub at: Instant,
    kube: Option<(Counts, Counts)>,
    pub operator_calls: Counts,
    pub operator_syncs: Counts,
    bao: Option<Counts>,
    /// CPU seconds of each operator instance.
    cpu: Vec<f64>,
    /// CPU seconds of each server (and of this test).
    servers: Counts,
}

impl Snapshot {
    /// kube-apiserver's request counts (`None` when not counted).
    pub fn kube_requests(&self) -> Option<&Counts> {
        self.kube.as_ref().map(|(c, _)| c)
    }

    /// Successful syncs counted so far.
    pub fn syncs_ok(&self) -> f64 {
        self.operator_syncs
            .iter()
            .filter(|(k, _)| k.starts_with("success "))
            .map(|(_, v)| v)
            .sum()
    }
}

pub struct Probe<'a> {
    pub env: &'a TestEnv,
    p: &'a Params,
    pub http: reqwest::Client,
    pub moto: Option<Moto>,
    pub servers: Servers,
    pub ticks: f64,
    /// The benchmark's own kube requests, by the same keys as `apiserver_counts`, with when
    /// they were made (subtracted from the deltas of the windows they fall in).
    own: Mutex<Vec<(Instant, String)>>,
}

impl<'a> Probe<'a> {
    /// Starts moto's recording (not when scoped: the servers are shared then) and finds the
    /// servers' processes.
    pub async fn new(env: &'a TestEnv, p: &'a Params, http: &reqwest::Client) -> Result<Self> {
        let moto = if p.scoped {
            None
        } else {
            let m = Moto::new(&env.aws_endpoint, http);
            m.post("start-recording").await?;
            m.post("reset-recording").await?;
            Some(m)
        };
        let servers = if p.scoped {
            Servers::default()
        } else {
            Servers::find(env)
        };
        Ok(Probe {
            env,
            p,
            http: http.clone(),
            moto,
            servers,
            ticks: clock_ticks(),
            own: Mutex::new(Vec::new()),
        })
    }

    pub async fn finish(&self) {
        if let Some(m) = &self.moto {
            let _ = m.post("stop-recording").await;
        }
    }

    pub fn own(&self, key: &str) {
        self.own.lock().unwrap().push((Instant::now(), key.into()));
    }

    /// The counters just before operator processes start: theirs are all zero then. Resets
    /// moto's recording, so that the next window's recording starts here.
    pub async fn base_snapshot(&self, instances: usize) -> Result<Snapshot> {
        let kube = if self.p.scoped {
            None
        } else {
            Some(apiserver_counts(&self.env.kube).await?)
        };
        let bao = if self.p.scoped {
            None
        } else {
            Some(bao_counts(&self.http, self.env).await?)
        };
        if let Some(m) = &self.moto {
            m.take().await?;
        }
        Ok(Snapshot {
            at: Instant::now(),
            kube,
            operator_calls: Counts::new(),
            operator_syncs: Counts::new(),
            bao,
            cpu: vec![0.0; instances],
            servers: self.servers.cpu(self.ticks),
        })
    }

    pub async fn snapshot(&self, fleet: &Fleet) -> Result<Snapshot> {
        let kube = if self.p.scoped {
            None
        } else {
            Some(apiserver_counts(&self.env.kube).await?)
        };
        let scrape = fleet.scrape(&self.http).await?;
        let bao = if self.p.scoped {
            None
        } else {
            Some(bao_counts(&self.http, self.env).await?)
        };
        Ok(Snapshot {
            at: Instant::now(),
            kube,
            operator_calls: scrape.calls,
            operator_syncs: scrape.syncs,
            bao,
            cpu: fleet.cpu(self.ticks),
            servers: self.servers.cpu(self.ticks),
        })
    }

    /// The window between two snapshots; moto's recording (started at `a`) is taken here.
    pub async fn window(&self, a: &Snapshot, b: &Snapshot) -> Result<(Window, Option<MotoCounts>)> {
        let by_instance: Vec<f64> = b
            .cpu
            .iter()
            .enumerate()
            .map(|(i, c)| c - a.cpu.get(i).copied().unwrap_or(0.0))
            .collect();
        let mut w = Window {
            secs: (b.at - a.at).as_secs_f64(),
            syncs: b.syncs_ok() - a.syncs_ok(),
            provider_calls_operator: delta(&b.operator_calls, &a.operator_calls),
            provider_reads: delta(&b.operator_syncs, &a.operator_syncs)
                .into_iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("reads ")?.to_string(), v)))
                .collect(),
            operator_cpu_secs: by_instance.iter().sum(),
            operator_cpu_secs_by_instance: if by_instance.len() > 1 {
                by_instance
            } else {
                Vec::new()
            },
            server_cpu_secs: delta(&b.servers, &a.servers),
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

    /// kube-apiserver's request counters now; `None` when it is not counted (scoped).
    pub async fn kube_counts(&self) -> Result<Option<Counts>> {
        if self.p.scoped {
            return Ok(None);
        }
        Ok(Some(apiserver_counts(&self.env.kube).await?.0))
    }
}

// ------------------------------------------------------------------------------------------
// Listings, paged.

/// A managed Secret as the benchmark compares it.
pub struct Managed {
    pub resource_version: String,
    pub value: String,
    /// Its `secret-relay.dev/last-refresh` annotation, Unix seconds.
    pub last_refresh: Option<i64>,
}

/// Managed Secrets of the run: `"ns/name"` → what is compared.
pub async fn managed_secrets(
    env: &TestEnv,
    names: &Names,
    probe: &Probe<'_>,
) -> Result<HashMap<String, Managed>> {
    let api: Api<Secret> = if names.namespaces.len() == 1 {
        Api::namespaced(env.kube.clone(), &names.namespaces[0])
    } else {
        Api::all(env.kube.clone())
    };
    let mut lp = ListParams::default().labels(MANAGED_SELECTOR).limit(PAGE);
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
            let last_refresh = s
                .annotations()
                .get("secret-relay.dev/last-refresh")
                .and_then(|v| v.parse::<Timestamp>().ok())
                .map(|t| t.as_second());
            out.insert(
                format!("{ns}/{}", s.name_any()),
                Managed {
                    resource_version: s.resource_version().unwrap_or_default(),
                    value,
                    last_refresh,
                },
            );
        }
        match list.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    Ok(out)
}

/// An ExternalSecret as the benchmark compares it.
pub struct Listed {
    pub resource_version: String,
    /// `status.refreshTime`, Unix seconds.
    pub refresh_time: Option<i64>,
}

/// The run's ExternalSecrets: `"ns/name"` → resourceVersion and refreshTime.
pub async fn external_secrets(
    env: &TestEnv,
    names: &Names,
    probe: &Probe<'_>,
) -> Result<HashMap<String, Listed>> {
    let api: Api<ExternalSecret> = Api::all(env.kube.clone());
    let mut lp = ListParams::default()
        .labels(&format!("{LABEL_RUN}={}", names.run))
        .limit(PAGE);
    let mut out = HashMap::new();
    loop {
        let list = api.list(&lp).await.context("listing ExternalSecrets")?;
        probe.own("LIST externalsecrets.secret-relay.dev");
        for es in list.items {
            let refresh_time = es
                .status
                .as_ref()
                .and_then(|s| s.refresh_time.as_ref())
                .map(|t| t.0.as_second());
            out.insert(
                format!("{}/{}", es.namespace().unwrap_or_default(), es.name_any()),
                Listed {
                    resource_version: es.resource_version().unwrap_or_default(),
                    refresh_time,
                },
            );
        }
        match list.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    Ok(out)
}

/// How many of `keys` have a different resourceVersion in `after` than in `before`.
pub fn moved<'k, T>(
    keys: impl IntoIterator<Item = &'k String>,
    before: &HashMap<String, T>,
    after: &HashMap<String, T>,
    rv: impl Fn(&T) -> &str,
) -> Vec<String> {
    keys.into_iter()
        .filter(|k| before.get(*k).map(&rv) != after.get(*k).map(&rv))
        .cloned()
        .collect()
}
