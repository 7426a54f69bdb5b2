//! Runs the operator in-process against the test environment, scoped to one namespace so
//! test binaries running in parallel never reconcile each other's objects.

#![allow(dead_code)]

pub mod process;

use std::{future::Future, time::Duration};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Client,
    api::{Api, Patch, PatchParams},
};
use secret_relay::{
    api::{ExternalSecret, SecretStore},
    controller::{
        self,
        observe::{self, Observed, Outcome},
    },
};

/// Applies the CRDs (server-side apply, idempotent) and waits until they are Established.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in secret_relay::crds() {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply("secret-relay-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
        wait_for(
            &format!("CRD {name} established"),
            Duration::from_secs(30),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let crd = api.get(&name).await.ok()?;
                    let established = crd
                        .status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    established.then_some(())
                }
            },
        )
        .await;
    }
}

/// The operator running in a background task; stopped when dropped.
pub struct Operator(tokio::task::JoinHandle<()>);

impl Drop for Operator {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the operator watching `namespace` (and ClusterSecretStores when `cluster_stores`).
pub async fn start(client: &Client, namespace: &str, cluster_stores: bool) -> Operator {
    start_with(
        client,
        controller::Config {
            namespace: Some(namespace.to_string()),
            cluster_stores,
            cluster_external_secrets: false,
            rollout_restart: true,
            concurrency: 8,
            allow_secret_store_ambient_identity: false,
            allow_api_server_audience: false,
            watch_label_selector: None,
            events: Default::default(),
        },
    )
    .await
}

/// Starts the operator with `config`.
pub async fn start_with(client: &Client, config: controller::Config) -> Operator {
    install_crds(client).await;
    let client = client.clone();
    Operator(tokio::spawn(async move {
        if let Err(e) = controller::run(client, config, || {}, futures::future::pending()).await {
            panic!("operator failed: {e}");
        }
    }))
}

/// What the in-process operators did from the moment of [`observe`] on
/// (`secret_relay::controller::observe`): the positive sign that an event was processed, for
/// checks that something did *not* happen.
pub struct Observer(tokio::sync::broadcast::Receiver<Observed>);

/// Starts observing the operators of this test binary (each test filters by its namespace).
pub fn observe() -> Observer {
    Observer(observe::subscribe())
}

impl Observer {
    /// The next observation that `pick` accepts, or a panic naming `what` after `timeout`.
    pub async fn next<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&Observed) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.0.recv()).await {
                Ok(Ok(seen)) => {
                    if let Some(v) = pick(&seen) {
                        return v;
                    }
                }
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                    eprintln!("observer: {n} observations dropped (lagging)");
                }
                Ok(Err(e)) => panic!("observing {what}: {e}"),
                Err(_) => panic!("timed out after {timeout:?} observing {what}"),
            }
        }
    }

    /// Everything observed and not yet taken, without waiting.
    pub fn so_far(&mut self) -> Vec<Observed> {
        let mut seen = Vec::new();
        loop {
            match self.0.try_recv() {
                Ok(o) => seen.push(o),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => return seen,
            }
        }
    }

    /// The outcome of the next reconcile of ExternalSecret `ns/name` that `accept` takes.
    pub async fn reconciled(
        &mut self,
        ns: &str,
        name: &str,
        what: &str,
        accept: impl Fn(&Outcome) -> bool,
    ) -> Outcome {
        self.next(
            &format!("ExternalSecret {ns}/{name}: {what}"),
            Duration::from_secs(60),
            |seen| match seen {
                Observed::Reconciled {
                    namespace,
                    name: n,
                    outcome,
                } if namespace == ns && n == name && accept(outcome) => Some(outcome.clone()),
                _ => None,
            },
        )
        .await
    }

    /// The ExternalSecrets that asked for the next restart of `workload` (`Kind/name`) in `ns`.
    pub async fn restarted(&mut self, ns: &str, workload: &str) -> Vec<String> {
        self.next(
            &format!("the restart of {workload} in {ns}"),
            Duration::from_secs(60),
            |seen| match seen {
                Observed::Restarted {
                    namespace,
                    workload: w,
                    asked_by,
                    ok: true,
                } if namespace == ns && w == workload => Some(asked_by.clone()),
                _ => None,
            },
        )
        .await
    }
}

/// The ExternalSecrets of `es` whose Ready condition is True (0 when the list fails).
pub async fn ready_count(es: &Api<ExternalSecret>) -> usize {
    es.list(&Default::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|e| {
                    e.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                })
                .count()
        })
        .unwrap_or(0)
}

/// Polls `check` every 200 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the ExternalSecret's Ready condition has `reason` (and the status describes the
/// current generation), returning the object.
pub async fn wait_reason(api: &Api<ExternalSecret>, name: &str, reason: &str) -> ExternalSecret {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let es = api.get(name).await.ok();
        if let Some(es) = &es
            && let Some(status) = &es.status
            && status.observed_generation == es.metadata.generation
            && status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.reason == reason)
        {
            return es.clone();
        }
        if tokio::time::Instant::now() > deadline {
            let last = es
                .as_ref()
                .and_then(|e| e.status.as_ref())
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                .map(|c| format!("{}: {}", c.reason, c.message));
            panic!(
                "timed out waiting for ExternalSecret {name} reason {reason}; last Ready: {last:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the ExternalSecret reports `SecretStoreNotReady` for a reason other than its
/// store missing from the operator's cache: an ExternalSecret applied right after its store
/// can be seen first (the two watches are not ordered), and then says "not found" until the
/// store arrives.
pub async fn wait_store_refusal(api: &Api<ExternalSecret>, name: &str) -> ExternalSecret {
    wait_for(
        &format!("ExternalSecret {name}: the store's own refusal"),
        Duration::from_secs(60),
        || async {
            let es = api.get(name).await.ok()?;
            let ready = es
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")?
                .clone();
            let missing = ready.message.ends_with(" not found")
                && (ready.message.starts_with("SecretStore ")
                    || ready.message.starts_with("ClusterSecretStore "));
            (ready.reason == "SecretStoreNotReady" && !missing).then_some(es)
        },
    )
    .await
}

/// Waits until the store's Ready condition is False (its verdict), returning the condition.
pub async fn wait_store_refused(
    api: &Api<SecretStore>,
    name: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    wait_for(
        &format!("SecretStore {name}: Ready False"),
        Duration::from_secs(30),
        || async {
            let c = api
                .get(name)
                .await
                .ok()?
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (c.status == "False").then_some(c)
        },
    )
    .await
}

/// Creates or overwrites SSM parameter `name` = `value` (SecureString).
pub async fn put_parameter(ssm: &aws_sdk_ssm::Client, name: &str, value: &str) {
    ssm.put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("put_parameter {name}: {e}"));
}

/// The Ready condition's message.
pub fn ready_message(es: &ExternalSecret) -> String {
    es.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Applies an object from YAML (server-side apply as a user would with kubectl).
pub async fn apply_yaml<K>(api: &Api<K>, yaml: &str) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    // Sent as written (not through `K`, whose serde defaults would add fields), so that the
    // object read back can be held against it.
    let written: serde_json::Value = serde_yaml::from_str(yaml).expect("fixture parses");
    let obj: K = serde_json::from_value(written.clone()).expect("fixture is a valid object");
    let name = obj.meta().name.clone().expect("fixture has a name");
    let applied = api
        .patch(
            &name,
            &PatchParams::apply("test-user").force(),
            &Patch::Apply(&written),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"));
    assert_reads_back(api, &name, &written).await;
    applied
}

/// Panics when the `spec` stored for `name` differs from the `spec` of `written` at any depth
/// (issue 26: a schema default written into a list item keeps Argo CD OutOfSync for ever).
pub async fn assert_reads_back<K: kube::Resource + Clone>(
    api: &Api<K>,
    name: &str,
    written: &serde_json::Value,
) {
    let url = format!("{}/{name}", api.resource_url());
    let request = http::Request::get(url)
        .body(Vec::new())
        .expect("GET request");
    let stored: serde_json::Value = api
        .clone()
        .into_client()
        .request(request)
        .await
        .unwrap_or_else(|e| panic!("reading {name} back: {e}"));
    if let Some(diff) = first_difference(&written["spec"], &stored["spec"], "spec") {
        panic!("{name} does not read back as written: {diff}");
    }
}

/// The first place where `stored` differs from `written`, as `path: written … stored …`.
pub fn first_difference(
    written: &serde_json::Value,
    stored: &serde_json::Value,
    path: &str,
) -> Option<String> {
    use serde_json::Value;
    match (written, stored) {
        (Value::Object(w), Value::Object(s)) => {
            for key in w.keys().chain(s.keys()) {
                let (a, b) = (w.get(key), s.get(key));
                let here = format!("{path}.{key}");
                match (a, b) {
                    (Some(a), Some(b)) => {
                        if let Some(d) = first_difference(a, b, &here) {
                            return Some(d);
                        }
                    }
                    (a, b) => return Some(format!("{here}: written {a:?}, stored {b:?}")),
                }
            }
            None
        }
        (Value::Array(w), Value::Array(s)) if w.len() == s.len() => w
            .iter()
            .zip(s)
            .enumerate()
            .find_map(|(i, (a, b))| first_difference(a, b, &format!("{path}[{i}]"))),
        (a, b) if a == b => None,
        (a, b) => Some(format!("{path}: written {a}, stored {b}")),
    }
}

/// Decoded data of a Secret as UTF-8 strings.
pub fn secret_data(
    s: &k8s_openapi::api::core::v1::Secret,
) -> std::collections::BTreeMap<String, String> {
    s.data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).expect("utf-8 value")))
        .collect()
}

/// A namespace of its own for a test reading SSM through SecretStore `ssm`: see
/// [`ssm_namespace`].
pub struct SsmNamespace {
    /// The namespace, `<prefix>-<8 hex digits>`.
    pub ns: String,
    /// A client of moto's SSM, for writing the parameters.
    pub ssm: aws_sdk_ssm::Client,
    /// A parameter path of the test's own, `/<8 hex digits>` (no trailing `/`).
    pub prefix: String,
}

/// The CRDs installed ([`install_crds`]), a fresh namespace `<ns_prefix>-<random>` with Secret
/// `aws-creds` and SecretStore `ssm` for the environment's moto ([`ssm_store`]), a client of
/// moto's SSM and a fresh parameter path.
pub async fn ssm_namespace(env: &crate::common::TestEnv, ns_prefix: &str) -> SsmNamespace {
    install_crds(&env.kube).await;
    let ns = env.namespace(ns_prefix).await;
    ssm_store(env, &ns).await;
    SsmNamespace {
        ns,
        ssm: env.ssm().await,
        prefix: format!("/{}", crate::common::random_suffix()),
    }
}

/// In `ns`: Secret `aws-creds` (moto's `testing`/`testing` keys) and SecretStore `ssm` for
/// the environment's moto, with those keys.
pub async fn ssm_store(env: &crate::common::TestEnv, ns: &str) {
    create_secret(
        env,
        ns,
        "aws-creds",
        serde_json::json!({"id": "testing", "secret": "testing"}),
    )
    .await;
    ssm_store_named(env, ns, "ssm").await;
}

/// Creates Secret `ns/name` with `string_data` (a JSON object of strings).
pub async fn create_secret(
    env: &crate::common::TestEnv,
    ns: &str,
    name: &str,
    string_data: serde_json::Value,
) {
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(
        serde_json::json!({"metadata": {"name": name}, "stringData": string_data}),
    )
    .expect("Secret fixture");
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(env.kube.clone(), ns)
        .create(&Default::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("create Secret {ns}/{name}: {e}"));
}

/// In `ns`: SecretStore `name` for the environment's moto, with the keys of Secret
/// `aws-creds` (see [`ssm_store`]).
pub async fn ssm_store_named(env: &crate::common::TestEnv, ns: &str, name: &str) {
    apply_yaml(
        &Api::<SecretStore>::namespaced(env.kube.clone(), ns),
        &format!(
            r#"
apiVersion: secret-relay.dev/v1alpha1
kind: SecretStore
metadata: {{name: {name}}}
spec:
  provider:
    aws:
      service: ParameterStore
      region: {region}
      endpoint: {endpoint}
      auth:
        secretRef:
          accessKeyIDSecretRef: {{name: aws-creds, key: id}}
          secretAccessKeySecretRef: {{name: aws-creds, key: secret}}
"#,
            region = env.aws_region,
            endpoint = env.aws_endpoint
        ),
    )
    .await;
}

/// In `ns`: Secret `<name>-token` holding `token`, and SecretStore `name` for the
/// environment's OpenBao logging in with it; `extra` adds lines under `vault:` (indented six
/// spaces), e.g. `      version: v1`.
pub async fn vault_store(
    env: &crate::common::TestEnv,
    ns: &str,
    name: &str,
    extra: &str,
    token: &str,
) {
    let token_secret = format!("{name}-token");
    create_secret(
        env,
        ns,
        &token_secret,
        serde_json::json!({ "token": token }),
    )
    .await;
    vault_store_with(env, ns, name, extra, &token_secret).await;
}

/// In `ns`: SecretStore `name` for the environment's OpenBao, logging in with the token in
/// key `token` of Secret `token_secret`; `extra` as for [`vault_store`].
pub async fn vault_store_with(
    env: &crate::common::TestEnv,
    ns: &str,
    name: &str,
    extra: &str,
    token_secret: &str,
) {
    apply_yaml(
        &Api::<SecretStore>::namespaced(env.kube.clone(), ns),
        &format!(
            r#"
apiVersion: secret-relay.dev/v1alpha1
kind: SecretStore
metadata: {{name: {name}}}
spec:
  provider:
    vault:
      server: {server}
{extra}
      auth:
        tokenSecretRef: {{name: {token_secret}, key: token}}
"#,
            server = env.vault_addr
        ),
    )
    .await;
}
