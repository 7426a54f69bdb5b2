//! The Helm chart (`charts/secret-relay`): lint, render, install into the test control plane,
//! and the operator binary running with nothing but the chart's RBAC: a TokenRequest token of
//! the chart's ServiceAccount in its kubeconfig, the chart's Deployment args on its command
//! line. Run with `hack/test.sh --test helm`.
//!
//! The control plane has no nodes and no controller-manager, so the chart's pods never start:
//! the operator runs out of cluster as a child process instead, as the pod would run it.

mod common;
mod operator;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{ConfigMap, Secret, Service, ServiceAccount},
        events::v1::Event,
        policy::v1::PodDisruptionBudget,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Client, Config,
    api::{Api, ListParams, PostParams, WatchParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use secret_relay::api::{ClusterSecretStore, ExternalSecret, SecretStore};
use serde_json::{Value, json};

use common::{TestEnv, random_suffix};
use operator::{apply_yaml, process::Process, secret_data, wait_for, wait_reason};

const CRDS: [&str; 3] = [
    "externalsecrets.secret-relay.dev",
    "secretstores.secret-relay.dev",
    "clustersecretstores.secret-relay.dev",
];

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/secret-relay")
}

/// Runs the environment's helm with the admin kubeconfig and its own cache/config/data
/// directories (nothing written to $HOME); panics with helm's output when it fails.
async fn helm(env: &TestEnv, args: &[&str]) -> String {
    let home = env
        .vars
        .get("TESTENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("helm-home");
    let out = tokio::process::Command::new(env.tool("HELM"))
        .args(args)
        .env("KUBECONFIG", &env.kubeconfig)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .await
        .expect("run helm");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "helm {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `helm template` of the chart with `sets`: the rendered objects.
async fn render(env: &TestEnv, sets: &[&str]) -> Vec<Value> {
    let chart = chart_dir();
    let mut args = vec!["template", "rel", chart.to_str().unwrap(), "-n", "ops"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let yaml = helm(env, &args).await;
    serde_yaml::Deserializer::from_str(&yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn of_kind<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

/// The chart installed as `release` in `ns` with `sets`; its full name (object names).
async fn install(env: &TestEnv, ns: &str, release: &str, sets: &[&str]) -> String {
    let chart = chart_dir();
    let mut args = vec![
        "install",
        release,
        chart.to_str().unwrap(),
        "-n",
        ns,
        "--set",
        "image.repository=secret-relay-test",
        "--set",
        "image.tag=test",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    helm(env, &args).await;
    wait_crds_established(&env.kube).await;
    format!("{release}-secret-relay")
}

/// Helm creates the CRDs from crds/ and waits for them; a parallel install that found them
/// already created (not yet Established) does not wait, so wait here.
async fn wait_crds_established(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in CRDS {
        wait_for(
            &format!("CRD {name} established"),
            Duration::from_secs(30),
            || async {
                let crd = api.get(name).await.ok()?;
                crd.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
    }
}

/// A kubeconfig holding a TokenRequest token of ServiceAccount `ns/sa`, the API server URL and
/// CA of the environment: written next to the environment (mode 0600) and loaded as a client.
async fn service_account_kubeconfig(env: &TestEnv, ns: &str, sa: &str) -> (PathBuf, Client) {
    let token = env.service_account_token(ns, sa, &[]).await;
    let mut cluster = json!({"server": env.kube_url});
    if let Some(ca) = &env.kube_ca_file {
        cluster["certificate-authority"] = json!(ca);
    }
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "testenv", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "testenv", "user": sa, "namespace": ns}}],
        "current-context": "sa",
    });
    let path = log_dir(env).join(format!("{ns}-{sa}.kubeconfig"));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .expect("create kubeconfig");
        f.write_all(config.to_string().as_bytes())
            .expect("write kubeconfig");
    }
    let kc = Kubeconfig::read_from(&path).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("load kubeconfig");
    (path, Client::try_from(config).expect("client"))
}

fn log_dir(env: &TestEnv) -> PathBuf {
    env.vars
        .get("TESTENV_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// The container args of the installed Deployment, without `run` (Process adds it) and
/// without `--admin-addr` (Process gives a free loopback port).
async fn deployment_args(env: &TestEnv, ns: &str, name: &str) -> Vec<String> {
    let d = Api::<Deployment>::namespaced(env.kube.clone(), ns)
        .get(name)
        .await
        .expect("get Deployment");
    // Through JSON: the Option-ness of k8s-openapi's fields differs between API versions.
    let d = serde_json::to_value(&d).unwrap();
    let args: Vec<String> =
        serde_json::from_value(d["spec"]["template"]["spec"]["containers"][0]["args"].clone())
            .unwrap_or_default();
    assert_eq!(
        args.first().map(String::as_str),
        Some("run"),
        "args {args:?}"
    );
    args.into_iter()
        .skip(1)
        .filter(|a| !a.starts_with("--admin-addr"))
        .collect()
}

/// The HTTP status of a failed API call (None when it succeeded).
fn status_of<T>(res: Result<T, kube::Error>) -> Option<u16> {
    match res {
        Ok(_) => None,
        Err(kube::Error::Api(e)) => Some(e.code),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// Waits for graceful exit after SIGTERM, so that no child outlives the test.
async fn stop(mut p: Process) {
    p.signal("TERM").await;
    let status = tokio::time::timeout(Duration::from_secs(20), p.child.wait())
        .await
        .expect("operator exits within 20 s of SIGTERM")
        .expect("wait for the operator");
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

/// No API call of the operator was refused: every Forbidden shows in its log (an event that
/// could not be published only warns, so the syncs alone would not reveal it).
fn assert_no_forbidden(log: &Path) {
    let text = std::fs::read_to_string(log).expect("read operator log");
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.to_lowercase().contains("forbidden"))
        .collect();
    assert!(
        refused.is_empty(),
        "the chart's RBAC refused some calls:\n{}",
        refused.join("\n")
    );
}

async fn create_secret(client: &Client, ns: &str, name: &str, data: Value) {
    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data})).unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &s)
        .await
        .unwrap_or_else(|e| panic!("create Secret {ns}/{name}: {e}"));
}

/// The Secret `ns/name` has exactly `want` as data, and our labels.
async fn assert_secret(client: &Client, ns: &str, name: &str, want: &[(&str, &str)]) {
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get Secret {ns}/{name}: {e}"));
    let want: BTreeMap<String, String> = want
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(secret_data(&s), want, "data of Secret {ns}/{name}");
    let labels = s.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("secret-relay")
    );
    assert_eq!(
        labels
            .get("secret-relay.dev/external-secret")
            .map(String::as_str),
        Some(name)
    );
}

#[tokio::test]
async fn chart_lints() {
    let Some(env) = TestEnv::get("chart_lints").await else {
        return;
    };
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    for sets in [
        &[][..],
        &[
            "namespaceScope.enabled=true",
            "replicaCount=3",
            "serviceMonitor.enabled=true",
            "logLevel=debug",
        ][..],
        &[
            "clusterSecretStores.enabled=false",
            "leaderElection.enabled=false",
            "podDisruptionBudget.enabled=true",
            "podDisruptionBudget.maxUnavailable=1",
            "hostNetwork=true",
        ][..],
    ] {
        let mut args = vec!["lint", "--strict", chart];
        for s in sets {
            args.extend(["--set", s]);
        }
        let out = helm(&env, &args).await;
        assert!(out.contains("0 chart(s) failed"), "{out}");
        assert!(!out.contains("[WARNING]"), "{out}");
    }
}

#[tokio::test]
async fn chart_renders() {
    let Some(env) = TestEnv::get("chart_renders").await else {
        return;
    };
    // Defaults: cluster-wide, leader election, hardened pod, no ServiceMonitor, no PDB.
    let objs = render(&env, &[]).await;
    assert!(of_kind(&objs, "ServiceMonitor").is_empty());
    assert!(of_kind(&objs, "PodDisruptionBudget").is_empty());
    assert_eq!(of_kind(&objs, "ClusterRole").len(), 1);
    let deploy = of_kind(&objs, "Deployment")[0];
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        c["image"],
        format!("secret-relay:{}", env!("CARGO_PKG_VERSION")),
        "the tag defaults to appVersion, which follows Cargo.toml's version"
    );
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for want in [
        "run",
        "--admin-addr=0.0.0.0:8080",
        "--concurrency=16",
        "--log-format=json",
        "--leader-elect",
        "--lease-name=rel-secret-relay",
    ] {
        assert!(args.contains(&want), "{want} in {args:?}");
    }
    assert!(!args.iter().any(|a| a.starts_with("--namespace")));
    assert!(!args.contains(&"--no-cluster-stores"));
    assert!(!args.contains(&"--no-cluster-external-secrets"));
    let creates_external_secrets = |objs: &[Value]| {
        of_kind(objs, "ClusterRole").iter().any(|r| {
            r["rules"].as_array().unwrap().iter().any(|rule| {
                rule["resources"] == json!(["externalsecrets"])
                    && rule["verbs"].as_array().unwrap().contains(&json!("create"))
            })
        })
    };
    assert!(
        creates_external_secrets(&objs),
        "for ClusterExternalSecrets"
    );
    // ClusterExternalSecrets off: no flag-less write to ExternalSecrets.
    let off = render(&env, &["clusterExternalSecrets.enabled=false"]).await;
    assert!(!creates_external_secrets(&off));
    let off_args =
        &of_kind(&off, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        off_args
            .as_array()
            .unwrap()
            .contains(&json!("--no-cluster-external-secrets"))
    );
    assert!(
        !args.contains(&"--allow-secret-store-ambient-identity"),
        "SecretStores may not borrow the operator's identity by default"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert!(pod.get("hostNetwork").is_none() && pod.get("dnsPolicy").is_none());

    // hostNetwork (a node where the servers are only reachable from the node itself).
    let objs = render(&env, &["hostNetwork=true"]).await;
    let pod = &of_kind(&objs, "Deployment")[0]["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");

    // ServiceMonitor on: one, scraping the metrics Service's port.
    let objs = render(
        &env,
        &[
            "serviceMonitor.enabled=true",
            "serviceMonitor.labels.release=prom",
        ],
    )
    .await;
    let monitors = of_kind(&objs, "ServiceMonitor");
    assert_eq!(monitors.len(), 1, "one ServiceMonitor");
    let sm = monitors[0];
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["labels"]["release"], "prom");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    let svc = of_kind(&objs, "Service")[0];
    assert_eq!(svc["spec"]["ports"][0]["name"], "metrics");
    let sel = sm["spec"]["selector"]["matchLabels"].as_object().unwrap();
    for (k, v) in sel {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "ServiceMonitor selects the Service"
        );
    }

    // Namespace scope: a Role in the watched namespace, no cluster-wide grant.
    let objs = render(
        &env,
        &[
            "namespaceScope.enabled=true",
            "namespaceScope.namespace=team-a",
            "logLevel=debug",
            "allowSecretStoreAmbientIdentity=true",
        ],
    )
    .await;
    assert!(of_kind(&objs, "ClusterRole").is_empty());
    assert!(of_kind(&objs, "ClusterRoleBinding").is_empty());
    let roles = of_kind(&objs, "Role");
    assert!(
        roles.iter().any(|r| r["metadata"]["namespace"] == "team-a"),
        "a Role in team-a"
    );
    let args =
        &of_kind(&objs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"];
    for want in [
        "--namespace=team-a",
        "--no-cluster-stores",
        "--no-cluster-external-secrets",
        "--log-level=debug",
        "--allow-secret-store-ambient-identity",
    ] {
        assert!(
            args.as_array().unwrap().contains(&json!(want)),
            "{want} in {args}"
        );
    }
}

#[tokio::test]
async fn cluster_install_syncs_ssm_and_vault_with_chart_rbac() {
    let Some(env) = TestEnv::get("cluster_install_syncs_ssm_and_vault_with_chart_rbac").await
    else {
        return;
    };
    let ns = env.namespace("helm").await;
    let release = format!("sr{}", random_suffix());
    let name = install(&env, &ns, &release, &["replicaCount=2"]).await;

    // Every object of the chart, and the CRDs.
    let k = &env.kube;
    Api::<Deployment>::namespaced(k.clone(), &ns)
        .get(&name)
        .await
        .expect("Deployment");
    Api::<ServiceAccount>::namespaced(k.clone(), &ns)
        .get(&name)
        .await
        .expect("ServiceAccount");
    let role = Api::<ClusterRole>::all(k.clone())
        .get(&name)
        .await
        .expect("ClusterRole");
    assert!(
        serde_json::to_value(&role).unwrap()["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["resources"][0] == "clustersecretstores"),
        "the ClusterRole covers ClusterSecretStores"
    );
    let binding = Api::<ClusterRoleBinding>::all(k.clone())
        .get(&name)
        .await
        .expect("ClusterRoleBinding");
    assert_eq!(
        serde_json::to_value(&binding).unwrap()["roleRef"]["name"],
        name
    );
    Api::<Role>::namespaced(k.clone(), &ns)
        .get(&format!("{name}-leader-election"))
        .await
        .expect("leader election Role");
    Api::<RoleBinding>::namespaced(k.clone(), &ns)
        .get(&format!("{name}-leader-election"))
        .await
        .expect("leader election RoleBinding");
    let svc = Api::<Service>::namespaced(k.clone(), &ns)
        .get(&format!("{name}-metrics"))
        .await
        .expect("metrics Service");
    assert_eq!(
        serde_json::to_value(&svc).unwrap()["spec"]["ports"][0]["port"],
        8080
    );
    let pdb = Api::<PodDisruptionBudget>::namespaced(k.clone(), &ns)
        .get(&name)
        .await
        .expect("PodDisruptionBudget (replicaCount 2)");
    assert_eq!(
        serde_json::to_value(&pdb).unwrap()["spec"]["minAvailable"],
        1
    );
    let crds: Api<CustomResourceDefinition> = Api::all(k.clone());
    for crd in CRDS {
        crds.get(crd).await.expect("CRD installed");
    }

    // The ServiceAccount's token: what the chart grants, and not more.
    let (kubeconfig, sa) = service_account_kubeconfig(&env, &ns, &name).await;
    assert_eq!(
        status_of(
            Api::<Secret>::all(sa.clone())
                .list_metadata(&ListParams::default().limit(1))
                .await
        ),
        None,
        "list Secrets (metadata) in every namespace"
    );
    assert_eq!(
        status_of(
            Api::<ClusterSecretStore>::all(sa.clone())
                .list(&ListParams::default().limit(1))
                .await
        ),
        None,
        "list ClusterSecretStores"
    );
    assert_eq!(
        status_of(
            Api::<ConfigMap>::namespaced(sa.clone(), &ns)
                .list(&ListParams::default())
                .await
        ),
        Some(403),
        "ConfigMaps: get only, no list"
    );
    // Leader election: a standby lists and watches its Lease by name, and no other Lease.
    let leases = Api::<Lease>::namespaced(sa.clone(), &ns);
    let by_name = ListParams::default().fields(&format!("metadata.name={name}"));
    assert_eq!(
        status_of(leases.list(&by_name).await),
        None,
        "list the Lease by name"
    );
    assert_eq!(
        status_of(
            leases
                .watch(
                    &WatchParams::default().fields(&format!("metadata.name={name}")),
                    "0"
                )
                .await
        ),
        None,
        "watch the Lease by name"
    );
    assert_eq!(
        status_of(leases.list(&ListParams::default()).await),
        Some(403),
        "Leases: only the chart's, by name"
    );
    let es_yaml: ExternalSecret = serde_yaml::from_str(
        "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata: {name: x}\nspec: {secretStoreRef: {name: x}}",
    )
    .unwrap();
    assert_eq!(
        status_of(
            Api::<ExternalSecret>::namespaced(sa.clone(), &ns)
                .create(&PostParams::default(), &es_yaml)
                .await
        ),
        Some(422),
        "ClusterExternalSecrets make ExternalSecrets, so RBAC lets the operator create one \
         (this one is then refused by the CRD's rules: no data)"
    );

    // Remote values: SSM through a ClusterSecretStore (cluster stores and namespaces watched),
    // Vault through a SecretStore.
    let p = random_suffix();
    operator::put_parameter(
        &env.ssm().await,
        &format!("/{p}/db/password"),
        "pw-from-ssm",
    )
    .await;
    operator::put_parameter(&env.ssm().await, &format!("/{p}/db/user"), "app").await;
    common::vault::put_v2(
        &env,
        &format!("{p}/app/api"),
        json!({"api-key": "k-123", "region": "eu-west-1"}),
    )
    .await;
    create_secret(
        k,
        &ns,
        "aws-creds",
        json!({"id": "testing", "secret": "testing"}),
    )
    .await;
    create_secret(k, &ns, "vault-token", json!({"token": env.vault_token})).await;
    let css_name = format!("helm-ssm-{p}");
    apply_yaml(
        &Api::<ClusterSecretStore>::all(k.clone()),
        &format!(
            r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ClusterSecretStore
metadata: {{name: {css_name}}}
spec:
  conditions:
  - namespaces: [{ns}]
  provider:
    aws:
      service: ParameterStore
      region: {region}
      endpoint: {endpoint}
      auth:
        secretRef:
          accessKeyIDSecretRef: {{name: aws-creds, key: id, namespace: {ns}}}
          secretAccessKeySecretRef: {{name: aws-creds, key: secret, namespace: {ns}}}
"#,
            region = env.aws_region,
            endpoint = env.aws_endpoint
        ),
    )
    .await;
    apply_yaml(
        &Api::<SecretStore>::namespaced(k.clone(), &ns),
        &format!(
            r#"
apiVersion: secret-relay.dev/v1alpha1
kind: SecretStore
metadata: {{name: vault}}
spec:
  provider:
    vault:
      server: {server}
      path: secret
      version: v2
      auth:
        tokenSecretRef: {{name: vault-token, key: token}}
"#,
            server = env.vault_addr
        ),
    )
    .await;
    let es: Api<ExternalSecret> = Api::namespaced(k.clone(), &ns);
    apply_yaml(
        &es,
        &format!(
            r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {{name: db}}
spec:
  secretStoreRef: {{name: {css_name}, kind: ClusterSecretStore}}
  data:
  - secretKey: password
    remoteRef: {{key: /{p}/db/password}}
  - secretKey: username
    remoteRef: {{key: /{p}/db/user}}
"#
        ),
    )
    .await;
    apply_yaml(
        &es,
        &format!(
            r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {{name: api}}
spec:
  secretStoreRef: {{name: vault}}
  dataFrom:
  - extract: {{key: {p}/app/api}}
"#
        ),
    )
    .await;

    // The operator as the pod runs it: the Deployment's args and the ServiceAccount's token.
    // `--namespace` is added only to keep this operator off the objects that the other test
    // binaries left in their namespaces; the grants checked above are cluster-wide.
    let mut args = deployment_args(&env, &ns, &name).await;
    assert!(args.contains(&"--leader-elect".to_string()), "{args:?}");
    assert!(
        !args.contains(&"--no-cluster-stores".to_string()),
        "{args:?}"
    );
    args.push(format!("--namespace={ns}"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = log_dir(&env).join(format!("{ns}-operator.log"));
    let op = Process::start(
        &kubeconfig,
        &args,
        &[("POD_NAMESPACE", &ns), ("POD_NAME", "helm-test")],
        &log,
    );

    wait_reason(&es, "db", "SecretSynced").await;
    wait_reason(&es, "api", "SecretSynced").await;
    assert_secret(
        k,
        &ns,
        "db",
        &[("password", "pw-from-ssm"), ("username", "app")],
    )
    .await;
    assert_secret(
        k,
        &ns,
        "api",
        &[("api-key", "k-123"), ("region", "eu-west-1")],
    )
    .await;

    // The rest of what the operator writes: store status, events, the Lease.
    let css: Api<ClusterSecretStore> = Api::all(k.clone());
    wait_for(
        "ClusterSecretStore Ready",
        Duration::from_secs(30),
        || async {
            let s = css.get(&css_name).await.ok()?;
            let ready = serde_json::to_value(s.status?).ok()?["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(())
        },
    )
    .await;
    let events: Api<Event> = Api::namespaced(k.clone(), &ns);
    wait_for(
        "a Created event for db",
        Duration::from_secs(30),
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .map(|e| serde_json::to_value(e).unwrap())
                .any(|e| e["reason"] == "Created" && e["regarding"]["name"] == "db")
                .then_some(())
        },
    )
    .await;
    let lease = Api::<Lease>::namespaced(k.clone(), &ns)
        .get(&name)
        .await
        .expect("the Lease named by the chart");
    let holder = serde_json::to_value(&lease).unwrap()["spec"]["holderIdentity"].clone();
    assert!(
        holder.as_str().is_some_and(|h| h.starts_with("helm-test-")),
        "lease holder {holder}"
    );

    stop(op).await;
    assert_no_forbidden(&log);

    // Uninstall removes the chart's objects and keeps the CRDs (Helm never deletes crds/).
    helm(&env, &["uninstall", &release, "-n", &ns]).await;
    assert_eq!(
        status_of(Api::<ClusterRole>::all(k.clone()).get(&name).await),
        Some(404)
    );
    for crd in CRDS {
        crds.get(crd).await.expect("CRD kept after uninstall");
    }
    css.delete(&css_name, &Default::default())
        .await
        .expect("delete ClusterSecretStore");
}

#[tokio::test]
async fn namespace_scoped_install_cannot_read_other_namespaces() {
    let Some(env) = TestEnv::get("namespace_scoped_install_cannot_read_other_namespaces").await
    else {
        return;
    };
    let ns = env.namespace("helm-ns").await;
    let other = env.namespace("helm-other").await;
    let release = format!("sr{}", random_suffix());
    let name = install(&env, &ns, &release, &["namespaceScope.enabled=true"]).await;
    let k = &env.kube;

    // A Role and RoleBinding in the namespace, nothing cluster-wide.
    Api::<Role>::namespaced(k.clone(), &ns)
        .get(&name)
        .await
        .expect("Role");
    let binding = Api::<RoleBinding>::namespaced(k.clone(), &ns)
        .get(&name)
        .await
        .expect("RoleBinding");
    assert_eq!(
        serde_json::to_value(&binding).unwrap()["roleRef"]["kind"],
        "Role"
    );
    assert_eq!(
        status_of(Api::<ClusterRole>::all(k.clone()).get(&name).await),
        Some(404)
    );
    assert_eq!(
        status_of(Api::<ClusterRoleBinding>::all(k.clone()).get(&name).await),
        Some(404)
    );
    Api::<Deployment>::namespaced(k.clone(), &ns)
        .get(&name)
        .await
        .expect("Deployment");
    Api::<Service>::namespaced(k.clone(), &ns)
        .get(&format!("{name}-metrics"))
        .await
        .expect("metrics Service");

    // The API server refuses the token everything outside the namespace.
    create_secret(k, &other, "elsewhere", json!({"password": "not-yours"})).await;
    let (kubeconfig, sa) = service_account_kubeconfig(&env, &ns, &name).await;
    let theirs: Api<Secret> = Api::namespaced(sa.clone(), &other);
    assert_eq!(status_of(theirs.get("elsewhere").await), Some(403), "get");
    assert_eq!(
        status_of(theirs.list(&ListParams::default()).await),
        Some(403),
        "list in another namespace"
    );
    assert_eq!(
        status_of(
            Api::<Secret>::all(sa.clone())
                .list(&ListParams::default())
                .await
        ),
        Some(403),
        "list in every namespace"
    );
    assert_eq!(
        status_of(
            Api::<ClusterSecretStore>::all(sa.clone())
                .list(&ListParams::default())
                .await
        ),
        Some(403),
        "ClusterSecretStores"
    );
    assert_eq!(
        status_of(
            Api::<Secret>::namespaced(sa.clone(), &ns)
                .list(&ListParams::default())
                .await
        ),
        None,
        "list in its own namespace"
    );

    // And the operator, with the Deployment's args (--namespace, --no-cluster-stores), syncs
    // in its own namespace.
    let args = deployment_args(&env, &ns, &name).await;
    assert!(args.contains(&format!("--namespace={ns}")), "{args:?}");
    assert!(
        args.contains(&"--no-cluster-stores".to_string()),
        "{args:?}"
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    operator::ssm_store(&env, &ns).await;
    let p = random_suffix();
    operator::put_parameter(&env.ssm().await, &format!("/{p}/token"), "t-1").await;
    let es: Api<ExternalSecret> = Api::namespaced(k.clone(), &ns);
    let es_yaml = format!(
        r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {{name: app}}
spec:
  secretStoreRef: {{name: ssm}}
  data:
  - secretKey: token
    remoteRef: {{key: /{p}/token}}
"#
    );
    apply_yaml(&es, &es_yaml).await;
    // The same ExternalSecret in the other namespace: never seen by this operator.
    let es_other: Api<ExternalSecret> = Api::namespaced(k.clone(), &other);
    apply_yaml(&es_other, &es_yaml).await;
    let log = log_dir(&env).join(format!("{ns}-operator.log"));
    let op = Process::start(
        &kubeconfig,
        &args,
        &[("POD_NAMESPACE", &ns), ("POD_NAME", "helm-test")],
        &log,
    );
    wait_reason(&es, "app", "SecretSynced").await;
    assert_secret(k, &ns, "app", &[("token", "t-1")]).await;
    stop(op).await;
    assert_no_forbidden(&log);
    let untouched = es_other
        .get("app")
        .await
        .expect("get the other ExternalSecret");
    assert!(
        untouched.status.is_none(),
        "the other namespace's ExternalSecret was not reconciled: {:?}",
        untouched.status
    );
    assert!(
        Api::<Secret>::namespaced(k.clone(), &other)
            .get_opt("app")
            .await
            .unwrap()
            .is_none()
    );
    helm(&env, &["uninstall", &release, "-n", &ns]).await;
}

/// `kubectl kustomize examples/<dir>`: the rendered objects.
async fn kustomize(env: &TestEnv, dir: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(dir);
    let out = tokio::process::Command::new(env.tool("KUBECTL"))
        .arg("kustomize")
        .arg(&path)
        .output()
        .await
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize examples/{dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml::Deserializer::from_str(&String::from_utf8(out.stdout).unwrap())
        .map(|doc| serde::Deserialize::deserialize(doc).expect("kustomize output parses"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// Server-side dry-run apply of `objs` moved into namespace `ns`: the API server checks them
/// against the CRDs' schemas and CEL rules.
async fn dry_run_apply(env: &TestEnv, ns: &str, mut objs: Vec<Value>) {
    let mut yaml = String::new();
    for o in &mut objs {
        o["metadata"]["namespace"] = json!(ns);
        yaml.push_str("---\n");
        yaml.push_str(&serde_yaml::to_string(o).unwrap());
    }
    let file = log_dir(env).join(format!("{ns}-examples.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let out = tokio::process::Command::new(env.tool("KUBECTL"))
        .args(["apply", "--server-side", "--dry-run=server", "-f"])
        .arg(&file)
        .env("KUBECONFIG", &env.kubeconfig)
        .output()
        .await
        .expect("run kubectl apply");
    assert!(
        out.status.success(),
        "dry-run apply of {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn examples_render_and_validate() {
    let Some(env) = TestEnv::get("examples_render_and_validate").await else {
        return;
    };
    operator::install_crds(&env.kube).await;
    for dir in ["base", "stores", "stores/kms"] {
        assert!(!kustomize(&env, dir).await.is_empty(), "examples/{dir}");
    }

    // dev: namePrefix renames the stores together with the references to them.
    let dev = kustomize(&env, "overlays/dev").await;
    for es in of_kind(&dev, "ExternalSecret") {
        let store = es["spec"]["secretStoreRef"]["name"].as_str().unwrap();
        assert!(store.starts_with("dev-"), "store {store}");
        assert!(
            dev.iter()
                .any(|o| o["kind"] == "SecretStore" && o["metadata"]["name"] == store),
            "store {store} is in the overlay"
        );
    }

    // prod: every ConfigMap reference (`configMapRef.name` + key, or `configmap:NAME/KEY`)
    // names a generated ConfigMap key, under the generator's hashed name, and the document in
    // it decrypts with the demo key (kustomize carried it byte for byte, sops' MAC included).
    let prod = kustomize(&env, "overlays/prod").await;
    let mut sops_refs = 0;
    for es in of_kind(&prod, "ExternalSecret") {
        let refs = es["spec"]["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| &d["remoteRef"])
            .chain(
                es["spec"]["dataFrom"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| &d["extract"]),
            );
        for r in refs {
            let key = r["key"].as_str().unwrap_or_default();
            let (name, data_key) = match (
                r["configMapRef"]["name"].as_str(),
                key.strip_prefix("configmap:"),
            ) {
                (Some(name), _) => {
                    assert!(
                        name.starts_with("app-secrets-"),
                        "Kustomize rewrote configMapRef.name to the hashed name: {name}"
                    );
                    (name, key)
                }
                (None, Some(reference)) => reference.split_once('/').expect("configmap:NAME/KEY"),
                (None, None) => continue,
            };
            sops_refs += 1;
            let cm = of_kind(&prod, "ConfigMap")
                .into_iter()
                .find(|c| c["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("no ConfigMap {name} for {data_key}"));
            assert_eq!(cm["metadata"]["namespace"], es["metadata"]["namespace"]);
            let doc = cm["data"][data_key]
                .as_str()
                .unwrap_or_else(|| panic!("ConfigMap {name} has no key {data_key}"));
            let file = log_dir(&env).join(format!("sops-{}.enc.yaml", random_suffix()));
            std::fs::write(&file, doc).unwrap();
            let out = tokio::process::Command::new(env.tool("SOPS"))
                .args(["decrypt", "--output-type", "json"])
                .arg(&file)
                .env(
                    "SOPS_AGE_KEY_FILE",
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-keys/age.txt"),
                )
                .output()
                .await
                .expect("run sops");
            assert!(
                out.status.success(),
                "sops decrypt: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let plain: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(plain["database"]["password"], "prod-db-password-DEMO");
        }
    }
    assert!(sops_refs >= 1, "the prod overlay reads a SOPS document");

    // Both overlays are valid objects for the API server (CRD schemas and CEL rules).
    let ns = env.namespace("examples").await;
    dry_run_apply(&env, &ns, dev).await;
    dry_run_apply(&env, &ns, prod).await;
}
