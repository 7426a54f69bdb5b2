//! Set-up: CRDs, namespaces, credentials and stores, remote values, the N ExternalSecrets,
//! the raw reference; and the description of the machine and versions.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::atomic::{AtomicU64, Ordering},
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
    Api, Client,
    api::{DeleteParams, GetParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use secret_relay::api::{ClusterSecretStore, ExternalSecret, SecretStore};
use serde_json::json;

use super::{Backend, Item, LABEL_RAW, LABEL_RUN, LABEL_SHARD, Names, PAGE, Params, shard_name};
use crate::common::{TestEnv, random_suffix};

/// Runs `f` over `items`, at most `limit` at a time; the first error stops it.
pub async fn bounded<T, F, Fut>(items: Vec<T>, limit: usize, f: F) -> Result<()>
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
pub async fn create<K>(api: &Api<K>, obj: &K, retries: &AtomicU64) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let mut delay = Duration::from_millis(200);
    let mut last = String::new();
    for attempt in 0..6 {
        if attempt > 0 {
            retries.fetch_add(1, Ordering::Relaxed);
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

pub async fn install_crds(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in secret_relay::crds() {
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

/// The run's id and namespaces: one namespace of the shared environment when scoped, else
/// `p.namespaces` new ones labelled with the run id.
pub async fn namespaces(env: &TestEnv, p: &Params, retries: &AtomicU64) -> Result<Names> {
    let run = random_suffix()[..6].to_string();
    let namespaces = if p.scoped {
        vec![env.namespace("bench").await]
    } else {
        let api: Api<Namespace> = Api::all(env.kube.clone());
        let list: Vec<String> = (0..p.namespaces)
            .map(|i| format!("srb-{run}-{i:03}"))
            .collect();
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
    Ok(Names { run, namespaces })
}

fn secret(ns: &str, name: &str, data: serde_json::Value) -> Result<Secret> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "stringData": data,
    }))?)
}

/// Credential Secrets and stores; returns how many stores.
pub async fn create_stores(
    env: &TestEnv,
    p: &Params,
    names: &Names,
    retries: &AtomicU64,
) -> Result<usize> {
    let aws = |auth: serde_json::Value| {
        json!({"aws": {
            "service": p.aws_service, "region": env.aws_region, "endpoint": env.aws_endpoint,
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
pub async fn put_values(
    env: &TestEnv,
    p: &Params,
    names: &Names,
    keys: Vec<(Backend, usize)>,
    version: u32,
) -> Result<()> {
    let ssm = env.ssm().await;
    let sm = aws_sdk_secretsmanager::Client::new(&env.aws_sdk_config().await);
    let vault = env.vault();
    let (ssm, sm, vault) = (&ssm, &sm, &vault);
    let secrets_manager = p.aws_service == "SecretsManager";
    bounded(keys, p.create_concurrency, |(backend, key)| async move {
        let value = names.value(version, backend, key);
        match backend {
            Backend::Ssm if secrets_manager => {
                // Secrets of the parameters' names: version 1 created, later ones put.
                let name = names.ssm_param(key);
                if version == 1 {
                    sm.create_secret()
                        .name(&name)
                        .secret_string(value)
                        .send()
                        .await
                        .with_context(|| format!("CreateSecret {name}"))?;
                } else {
                    sm.put_secret_value()
                        .secret_id(&name)
                        .secret_string(value)
                        .send()
                        .await
                        .with_context(|| format!("PutSecretValue {name}"))?;
                }
            }
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

/// ExternalSecret `it`, with the shard key label when the run is sharded.
pub fn external_secret(p: &Params, names: &Names, it: &Item) -> Result<ExternalSecret> {
    let remote = match it.backend {
        Backend::Ssm => json!({"key": names.ssm_param(it.key)}),
        Backend::Vault => json!({"key": names.vault_path(it.key), "property": "value"}),
    };
    let mut labels = json!({LABEL_RUN: names.run});
    if let Some(j) = it.shard {
        labels[LABEL_SHARD] = json!(shard_name(j));
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "secret-relay.dev/v1alpha1", "kind": "ExternalSecret",
        "metadata": {
            "name": it.name, "namespace": names.namespaces[it.ns],
            "labels": labels,
        },
        "spec": {
            "refreshInterval": format!("{}s", p.refresh_secs),
            "secretStoreRef": names.store_ref(p, it.backend),
            "data": [{"secretKey": "value", "remoteRef": remote}],
        },
    }))?)
}

/// Creates the ExternalSecrets of `items`; returns the seconds it took.
pub async fn create_external_secrets(
    env: &TestEnv,
    p: &Params,
    names: &Names,
    items: &[Item],
    retries: &AtomicU64,
) -> Result<f64> {
    let started = Instant::now();
    bounded(items.to_vec(), p.create_concurrency, |it| async move {
        let api: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &names.namespaces[it.ns]);
        create(&api, &external_secret(p, names, &it)?, retries).await
    })
    .await?;
    Ok(started.elapsed().as_secs_f64())
}

/// The reference object: a Secret shaped like the operator's (labels, annotations, one value).
pub fn raw_secret(names: &Names, it: &Item) -> Result<Secret> {
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

/// The reference: a plain client creates N Secrets shaped like the operator's, at the same
/// concurrency, into the same namespaces; they are deleted again (per namespace, by label).
/// Returns the seconds the creation took.
pub async fn raw_reference(
    env: &TestEnv,
    p: &Params,
    names: &Names,
    items: &[Item],
    retries: &AtomicU64,
) -> Result<f64> {
    let started = Instant::now();
    bounded(items.to_vec(), p.create_concurrency, |it| async move {
        let api: Api<Secret> = Api::namespaced(env.kube.clone(), &names.namespaces[it.ns]);
        create(&api, &raw_secret(names, &it)?, retries).await
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    delete_labelled(env, p, names, &format!("{LABEL_RAW}={}", names.run)).await?;
    Ok(secs)
}

/// Deletes the Secrets matching `selector` in the run's namespaces (DELETECOLLECTION per
/// namespace, in pages: the answer lists the deleted objects) until none is left.
pub async fn delete_labelled(
    env: &TestEnv,
    p: &Params,
    names: &Names,
    selector: &str,
) -> Result<()> {
    let all: Api<Secret> = Api::all(env.kube.clone());
    for pass in 0.. {
        bounded(
            names.namespaces.clone(),
            p.create_concurrency,
            |ns| async move {
                Api::<Secret>::namespaced(env.kube.clone(), &ns)
                    .delete_collection(
                        &DeleteParams::default(),
                        &ListParams::default().labels(selector).limit(PAGE),
                    )
                    .await
                    .with_context(|| format!("deleting the Secrets {selector} of {ns}"))?;
                Ok(())
            },
        )
        .await?;
        let left = all
            .list_metadata(&ListParams::default().labels(selector).limit(1))
            .await
            .context("listing the Secrets left")?;
        if left.items.is_empty() {
            return Ok(());
        }
        if pass == 100 {
            bail!("Secrets {selector} are left after 100 DELETECOLLECTION passes");
        }
    }
    Ok(())
}

pub fn machine() -> BTreeMap<String, String> {
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

/// The commit the benchmark was built from, `+ uncommitted work tree` when tracked files
/// other than the reports differ from it (a run rewrites BENCHMARKS.*, and `hack/bench.sh`
/// runs several N in a row).
fn commit(root: &str) -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(["-C", root])
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":!BENCHMARKS.json",
        ":!BENCHMARKS.md",
    ])
    .is_none_or(|s| !s.is_empty());
    Some(if dirty {
        format!("{head} + uncommitted work tree")
    } else {
        head
    })
}

pub async fn versions(env: &TestEnv, http: &reqwest::Client) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert(
        "secret-relay".into(),
        format!("{} (release build)", env!("CARGO_PKG_VERSION")),
    );
    let root = env!("CARGO_MANIFEST_DIR");
    if let Some(c) = commit(root) {
        v.insert("commit".into(), c);
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
