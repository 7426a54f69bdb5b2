//! A hostile tenant against the operator binary (issue 10's chaos tier, bad input): values,
//! templates and documents built to crash it, eat its CPU and memory, or make it print a
//! secret. Each must fail only its own ExternalSecret, with a clear message that quotes no
//! value, while another ExternalSecret in the same operator keeps syncing, and the process
//! stays up and small.
//!
//! Figures (RSS before and after, the bystander's sync time under load) are printed as
//! `RELIABILITY {json}` lines for `hack/chaos.sh`, which writes RELIABILITY.md; the test itself
//! asserts bounds only.

mod common;
mod operator;

use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ParameterType;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use secret_relay::api::{ExternalSecret, SecretStore};
use serde_json::json;

use common::TestEnv;
use operator::{apply_yaml, process::Process, ready_message, secret_data, wait_for, wait_reason};

/// A value that must never appear in a message, a log line or an event.
const PIN: &str = "918273645";

/// Resident set size of process `pid`, in KiB (Linux `/proc/PID/status`, `VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn hostile_values_templates_and_documents_fail_alone() {
    let Some(env) = TestEnv::get("hostile_values_templates_and_documents_fail_alone").await else {
        return;
    };
    let operator::SsmNamespace { ns, ssm, prefix } = operator::ssm_namespace(&env, "hostile").await;
    let put = |name: &'static str, value: String| {
        let ssm = ssm.clone();
        let name = format!("{prefix}/{name}");
        async move {
            ssm.put_parameter()
                .name(name)
                .value(value)
                .r#type(ParameterType::String)
                .overwrite(true)
                .send()
                .await
                .expect("put_parameter")
        }
    };
    put("pin", PIN.to_string()).await;
    put("bystander", "v1".to_string()).await;
    // 10,000 levels of JSON: aborted the whole operator through a stack overflow.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    put("deep", deep).await;

    // A KMS store (age) for a SOPS document of YAML aliases (a "billion laughs").
    let identity = age::x25519::Identity::generate();
    let secret_key = {
        use age::secrecy::ExposeSecret;
        identity.to_string().expose_secret().to_string()
    };
    operator::create_secret(&env, &ns, "age-keys", json!({"keys.txt": secret_key})).await;
    apply_yaml(
        &Api::<SecretStore>::namespaced(env.kube.clone(), &ns),
        "apiVersion: secret-relay.dev/v1alpha1\nkind: SecretStore\nmetadata: {name: age}\nspec:\n  provider:\n    kms:\n      age:\n        secretRef: {name: age-keys, key: keys.txt}\n",
    )
    .await;
    let items = vec!["x"; 100_000].join(", ");
    let aliases = vec!["*a"; 100_000].join(", ");
    let laughs = format!("a: &a [{items}]\nb: [{aliases}]\nsops: {{version: 3.9.0}}\n");
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "bombs"}, "data": {"laughs.yaml": laughs}
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(env.kube.clone(), &ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();

    let log = std::env::temp_dir().join(format!("{ns}-hostile.log"));
    let operator = Process::start(
        &env.kubeconfig,
        &["--namespace", &ns, "--no-cluster-stores"],
        &[],
        &log,
    );
    let pid = operator.child.id().expect("operator running");
    let es: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &ns);
    let object = |name: &str, store: &str, data: &str, template: &str| {
        format!(
            "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata: {{name: {name}}}\nspec:\n  refreshInterval: 1h\n  secretStoreRef: {{name: {store}}}\n  data:\n{data}{template}"
        )
    };
    let ssm_data = |secret_key: &str, key: &str, property: &str| {
        format!("  - secretKey: {secret_key}\n    remoteRef: {{key: '{prefix}/{key}'{property}}}\n")
    };
    apply_yaml(
        &es,
        &object("bystander", "ssm", &ssm_data("v", "bystander", ""), ""),
    )
    .await;
    wait_reason(&es, "bystander", "SecretSynced").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = rss_kib(pid);

    // The hostile ones, all at once.
    let template =
        |body: &str| format!("  target:\n    template:\n      data:\n        out: '{body}'\n");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "deep-json",
            object(
                "deep-json",
                "ssm",
                &ssm_data("v", "deep", ", property: '0'"),
                "",
            ),
            "JSON value nested deeper than 64 levels",
        ),
        (
            "runaway-loops",
            object(
                "runaway-loops",
                "ssm",
                &ssm_data("pin", "pin", ""),
                &template(
                    "{{ range $a := until 10000 }}{{ range $b := until 10000 }}{{ end }}{{ end }}",
                ),
            ),
            "exceeds 50000 steps",
        ),
        (
            "output-bomb",
            object(
                "output-bomb",
                "ssm",
                &ssm_data("pin", "pin", ""),
                &template("{{ range until 10000 }}{{ repeat 1000 $.pin }}{{ end }}"),
            ),
            "output exceeds 1048576 bytes",
        ),
        (
            "echo",
            object(
                "echo",
                "ssm",
                &ssm_data("pin", "pin", ""),
                // gotmpl's own message would print the operand: it is withheld.
                &template("{{ len (.pin | int) }}"),
            ),
            "template of key \"out\": execution error",
        ),
        (
            "recursion",
            object(
                "recursion",
                "ssm",
                &ssm_data("pin", "pin", ""),
                &template(
                    "{{ define \"r\" }}{{ template \"r\" . }}{{ end }}{{ template \"r\" . }}",
                ),
            ),
            "template calls nest deeper than 32",
        ),
        (
            "laughs",
            "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata: {name: laughs}\nspec:\n  refreshInterval: 1h\n  secretStoreRef: {name: age}\n  dataFrom:\n  - extract: {key: 'configmap:bombs/laughs.yaml'}\n"
                .to_string(),
            "expands to more than twice its size (YAML aliases)",
        ),
    ];
    let started = Instant::now();
    for (_, yaml, _) in &cases {
        apply_yaml(&es, yaml).await;
    }
    // Meanwhile the bystander's change is synced as usual.
    put("bystander", "v2".to_string()).await;
    es.patch(
        "bystander",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"secret-relay.dev/force-sync": "1"}}})),
    )
    .await
    .unwrap();
    wait_for(
        "the bystander syncs under load",
        Duration::from_secs(30),
        || async {
            let s = secrets.get_opt("bystander").await.ok()??;
            (secret_data(&s).get("v").map(String::as_str) == Some("v2")).then_some(())
        },
    )
    .await;
    let bystander_ms = started.elapsed().as_millis();
    let mut reported_ms = 0;
    for (name, _, expected) in &cases {
        let got = wait_reason(&es, name, "SecretSyncedError").await;
        reported_ms = reported_ms.max(started.elapsed().as_millis());
        let message = ready_message(&got);
        assert!(message.contains(expected), "{name}: {message}");
        assert!(
            !message.contains(PIN),
            "{name}: the value leaked: {message}"
        );
        assert!(
            secrets.get_opt(name).await.unwrap().is_none(),
            "{name}: no Secret"
        );
    }
    let (status, _) = operator
        .admin_get("/readyz")
        .await
        .expect("/readyz answers");
    assert_eq!(status, 200, "the operator is up and ready");
    let rss_after = rss_kib(pid);
    assert!(
        rss_after < rss_before + 200 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );

    // The value never reached a log line, an event or a status.
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(!logs.contains(PIN), "the value is in the operator's log");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.kube.clone(), &ns);
    for e in events.list(&Default::default()).await.unwrap().items {
        let note = e.note.unwrap_or_default();
        assert!(!note.contains(PIN), "the value is in an event: {note}");
    }
    for e in es.list(&Default::default()).await.unwrap().items {
        let status = serde_json::to_string(&e.status).unwrap();
        assert!(!status.contains(PIN), "the value is in a status: {status}");
    }
    println!(
        "RELIABILITY {}",
        json!({
            "test": "hostile_input",
            "cases": cases.iter().map(|c| c.0).collect::<Vec<_>>(),
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
            "bystander_sync_ms": bystander_ms,
            "all_reported_ms": reported_ms,
            "secrets_lost": 0,
            "values_leaked": 0,
        })
    );
}
