//! `kubectl secret-relay` (issue 31) as its users run it: the binary linked as
//! `kubectl-secret_relay` on `PATH`, run through the environment's real `kubectl`, against the
//! real API server with an operator syncing from moto's SSM.

mod common;
mod operator;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use secret_relay::api::{ExternalSecret, SecretStore};

use common::{TestEnv, random_suffix};
use operator::{apply_yaml, put_parameter, secret_data, ssm_namespace, wait_for, wait_reason};

/// A directory holding `kubectl-secret_relay` (a link to this build's binary), for `PATH`.
fn plugin_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("secret-relay-plugin-{}", random_suffix()));
    std::fs::create_dir_all(&dir).expect("plugin dir");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_secret-relay"),
        dir.join("kubectl-secret_relay"),
    )
    .expect("link kubectl-secret_relay");
    dir
}

/// `kubectl secret-relay ARGS`: (exit code, stdout, stderr). Run as a child process awaited
/// on the runtime, so that the operator running in this test's runtime keeps working meanwhile
/// (`sync` waits for it).
async fn kubectl_plugin(env: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let dir = plugin_dir();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = tokio::process::Command::new(env.tool("KUBECTL"))
        .arg("secret-relay")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", &env.kubeconfig)
        .output()
        .await
        .expect("kubectl secret-relay");
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kubectl ARGS` (stdin from `input`): stdout, or a panic with stderr.
fn kubectl(env: &TestEnv, args: &[&str], input: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new(env.tool("KUBECTL"))
        .args(args)
        .env("KUBECONFIG", &env.kubeconfig)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    if let Some(input) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write fixture");
    path
}

fn es_yaml(name: &str, key: &str) -> String {
    format!(
        "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata:\n  name: {name}\n  labels: {{team: a}}\nspec:\n  refreshInterval: 1h\n  secretStoreRef: {{name: ssm}}\n  data:\n  - secretKey: value\n    remoteRef: {{key: {key}}}\n"
    )
}

/// `status` lists exactly what is not Ready, with the operator's causes; `sync` waits for the
/// fetch it forces (a changed value is in the Secret when it returns) and reports a failure's
/// cause.
#[tokio::test]
async fn status_and_sync_report_what_failed_and_why() {
    let Some(env) = TestEnv::get("status_and_sync_report_what_failed_and_why").await else {
        return;
    };
    let s = ssm_namespace(&env, "plugin").await;
    let ns = s.ns.as_str();
    put_parameter(&s.ssm, &format!("{}/ok", s.prefix), "v1").await;
    let _op = operator::start(&env.kube, ns, false).await;
    let es_api: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), ns);
    apply_yaml(&es_api, &es_yaml("app", &format!("{}/ok", s.prefix))).await;
    apply_yaml(
        &es_api,
        &es_yaml("broken", &format!("{}/missing", s.prefix)),
    )
    .await;
    let stores: Api<SecretStore> = Api::namespaced(env.kube.clone(), ns);
    apply_yaml(
        &stores,
        &format!(
            "apiVersion: secret-relay.dev/v1alpha1\nkind: SecretStore\nmetadata: {{name: nocreds}}\nspec:\n  provider:\n    aws:\n      region: {}\n      endpoint: {}\n      auth:\n        secretRef:\n          accessKeyIDSecretRef: {{name: missing-creds, key: id}}\n          secretAccessKeySecretRef: {{name: missing-creds, key: secret}}\n",
            env.aws_region, env.aws_endpoint
        ),
    )
    .await;
    wait_reason(&es_api, "app", "SecretSynced").await;
    wait_reason(&es_api, "broken", "SecretSyncedError").await;
    wait_for("store nocreds refused", Duration::from_secs(60), || async {
        let st = stores.get("nocreds").await.ok()?;
        st.status?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready" && c.status == "False")
            .map(|c| c.message.clone())
    })
    .await;

    let (code, out, err) = kubectl_plugin(&env, &["status", "-n", ns]).await;
    assert_eq!(code, 1, "status exits 1 when something is not Ready: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], ns);
    assert_eq!(
        lines[1],
        "  ExternalSecret/broken  SecretSyncedError  store SecretStore/ssm  last sync never"
    );
    assert_eq!(
        lines[2],
        format!(
            "    ssm GetParameters \"{}/missing\": ParameterNotFound",
            s.prefix
        )
    );
    assert!(lines[3].starts_with("  SecretStore/nocreds  "), "{out}");
    assert!(lines[4].contains("missing-creds"), "{out}");
    assert_eq!(
        lines.last().copied(),
        Some("1 of 2 ExternalSecrets, 1 of 2 SecretStores not Ready")
    );
    assert!(!out.contains("ExternalSecret/app"), "{out}");

    // sync: the changed value is in the Secret when `sync` says it synced.
    put_parameter(&s.ssm, &format!("{}/ok", s.prefix), "v2").await;
    let (code, out, err) = kubectl_plugin(&env, &["sync", "app", "-n", ns]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        format!("ExternalSecret {ns}/app: synced\n1 synced, 0 failed, 0 timed out\n")
    );
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), ns);
    let secret = secrets.get("app").await.expect("Secret app");
    assert_eq!(secret_data(&secret)["value"], "v2");

    let (code, out, _) = kubectl_plugin(&env, &["sync", "-l", "team=a", "-n", ns]).await;
    assert_eq!(code, 1, "a failed sync exits 1: {out}");
    assert_eq!(
        out,
        format!(
            "ExternalSecret {ns}/app: synced\nExternalSecret {ns}/broken: failed: ssm GetParameters \"{}/missing\": ParameterNotFound\n1 synced, 1 failed, 0 timed out\n",
            s.prefix
        )
    );
}

/// `render` builds the Secret the operator writes for the same ExternalSecret and values:
/// data, type, labels and annotations (but the refresh time), templates included, from a
/// values file and `--from-cluster` alike.
#[tokio::test]
async fn render_equals_the_secret_the_operator_writes() {
    let Some(env) = TestEnv::get("render_equals_the_secret_the_operator_writes").await else {
        return;
    };
    let s = ssm_namespace(&env, "plugin-render").await;
    let ns = s.ns.as_str();
    let db = r#"{"user":"app","password":"s3cret","port":5432}"#;
    put_parameter(&s.ssm, &format!("{}/db", s.prefix), db).await;
    put_parameter(&s.ssm, &format!("{}/host", s.prefix), "db.internal").await;
    let es = format!(
        r#"apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata:
  name: db
  namespace: {ns}
spec:
  refreshInterval: 1h
  secretStoreRef: {{name: ssm}}
  target:
    template:
      type: kubernetes.io/basic-auth
      metadata:
        labels: {{app: db}}
        annotations: {{owner: team-a}}
      data:
        username: "{{{{ .user }}}}"
        password: "{{{{ .password }}}}"
        url: "postgres://{{{{ .user }}}}@{{{{ .host }}}}:{{{{ .port }}}}/app"
  data:
  - secretKey: host
    remoteRef: {{key: {p}/host}}
  dataFrom:
  - extract: {{key: {p}/db}}
"#,
        p = s.prefix
    );
    let _op = operator::start(&env.kube, ns, false).await;
    let es_api: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), ns);
    apply_yaml(&es_api, &es).await;
    wait_reason(&es_api, "db", "SecretSynced").await;
    let written = Api::<Secret>::namespaced(env.kube.clone(), ns)
        .get("db")
        .await
        .expect("Secret db");

    let dir = std::env::temp_dir().join(format!("render-{}", random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let es_file = write(&dir, "es.yaml", &es);
    let values = write(
        &dir,
        "values.yaml",
        &format!("{p}/db: '{db}'\n{p}/host: db.internal\n", p = s.prefix),
    );
    let (code, out, err) = kubectl_plugin(
        &env,
        &[
            "render",
            "-f",
            es_file.to_str().unwrap(),
            "--values",
            values.to_str().unwrap(),
            "--show-values",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let rendered: Secret = serde_yaml::from_str(out.trim_start_matches("---\n")).expect(&out);
    assert_eq!(rendered.data, written.data, "data");
    assert_eq!(rendered.type_, written.type_, "type");
    assert_eq!(rendered.metadata.labels, written.metadata.labels, "labels");
    let without_time = |s: &Secret| {
        let mut a = s.metadata.annotations.clone().unwrap_or_default();
        a.remove("secret-relay.dev/last-refresh");
        a
    };
    assert_eq!(
        without_time(&rendered),
        without_time(&written),
        "annotations"
    );

    // --from-cluster: the real store (its credentials read with the kubeconfig's rights),
    // the backend called from here: the same Secret.
    let (code, out, err) = kubectl_plugin(
        &env,
        &[
            "render",
            "-f",
            es_file.to_str().unwrap(),
            "--from-cluster",
            "--show-values",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let live: Secret = serde_yaml::from_str(out.trim_start_matches("---\n")).expect(&out);
    assert_eq!(live.data, written.data, "data, --from-cluster");
    assert_eq!(
        without_time(&live),
        without_time(&written),
        "annotations, --from-cluster"
    );

    // Masked by default: sizes, never values.
    let (code, masked, _) = kubectl_plugin(
        &env,
        &[
            "render",
            "-f",
            es_file.to_str().unwrap(),
            "--values",
            values.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0);
    assert!(masked.contains("password: <6 bytes>"), "{masked}");
    assert!(!masked.contains("czNjcmV0") && !masked.contains("s3cret"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `check` flags a CEL violation and an ESO field secret-relay has not, with file and line;
/// `migrate` rewrites ESO manifests, and its output applies with kubectl and syncs.
#[tokio::test]
async fn check_finds_problems_and_migrated_eso_manifests_sync() {
    let Some(env) = TestEnv::get("check_finds_problems_and_migrated_eso_manifests_sync").await
    else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("check-{}", random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = write(
        &dir,
        "bad.yaml",
        "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata: {name: x}\nspec:\n  secretStoreRef: {name: s}\n  target:\n    creationPolicy: None\n    deletionPolicy: Merge\n  data:\n  - secretKey: a\n    remoteRef:\n      key: /a\n      unknownEsoField: true\n",
    );
    let (code, out, _) = kubectl_plugin(&env, &["check", bad.to_str().unwrap()]).await;
    assert_eq!(code, 1, "{out}");
    let file = bad.display().to_string();
    assert!(
        out.contains(&format!(
            "{file}:13: ExternalSecret/x: spec.data[0].remoteRef.unknownEsoField: unknown field"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("{file}:4: ExternalSecret/x: spec: ")),
        "the CEL rule on spec: {out}"
    );
    let (code, out, _) = kubectl_plugin(
        &env,
        &["check", concat!(env!("CARGO_MANIFEST_DIR"), "/examples")],
    )
    .await;
    assert_eq!(code, 0, "the examples are valid: {out}");

    // migrate: an ESO store and ExternalSecret, as ESO users write them (our store has an
    // `endpoint` for moto).
    let s = ssm_namespace(&env, "plugin-migrate").await;
    let ns = s.ns.as_str();
    put_parameter(&s.ssm, &format!("{}/token", s.prefix), "migrated").await;
    let eso = format!(
        r#"# from the app's overlay
apiVersion: external-secrets.io/v1
kind: SecretStore
metadata:
  name: aws
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
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: token
spec:
  refreshInterval: 1h
  secretStoreRef:
    name: aws
    kind: SecretStore
  target:
    name: token
  data:
  - secretKey: token
    remoteRef:
      key: {p}/token
"#,
        region = env.aws_region,
        endpoint = env.aws_endpoint,
        p = s.prefix
    );
    let file = write(&dir, "eso.yaml", &eso);
    let (code, migrated, err) = kubectl_plugin(&env, &["migrate", file.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("2 object(s) migrated, 0 thing(s) left"),
        "{err}"
    );
    assert_eq!(
        migrated,
        eso.replace(
            "apiVersion: external-secrets.io/v1\n",
            "apiVersion: secret-relay.dev/v1alpha1\n"
        )
    );
    let _op = operator::start(&env.kube, ns, false).await;
    kubectl(&env, &["apply", "-n", ns, "-f", "-"], Some(&migrated));
    let es_api: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), ns);
    wait_reason(&es_api, "token", "SecretSynced").await;
    let secret = Api::<Secret>::namespaced(env.kube.clone(), ns)
        .get("token")
        .await
        .expect("Secret token");
    assert_eq!(secret_data(&secret)["token"], "migrated");
    let _ = std::fs::remove_dir_all(&dir);
}
