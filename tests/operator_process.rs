//! The operator binary as it runs in a pod: metrics scraped from its admin server, graceful
//! shutdown on SIGTERM, and leader election between two replicas with failover.

mod common;
mod operator;

use std::time::{Duration, Instant};

use aws_sdk_ssm::types::ParameterType;
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Secret};
use kube::api::{Api, Patch, PatchParams};
use secret_relay::api::ExternalSecret;
use serde_json::json;

use common::TestEnv;
use operator::{
    apply_yaml,
    process::{Process, sample},
    secret_data, wait_for, wait_reason,
};

/// A namespace with an SSM store (moto) and a parameter `<prefix>/token` = `v1`.
struct Setup {
    env: TestEnv,
    ns: String,
    prefix: String,
    ssm: aws_sdk_ssm::Client,
    es: Api<ExternalSecret>,
    secrets: Api<Secret>,
}

async fn setup(test: &str) -> Option<Setup> {
    let env = TestEnv::get(test).await?;
    let operator::SsmNamespace { ns, ssm, prefix } = operator::ssm_namespace(&env, "proc").await;
    let s = Setup {
        es: Api::namespaced(env.kube.clone(), &ns),
        secrets: Api::namespaced(env.kube.clone(), &ns),
        prefix,
        ssm,
        ns,
        env,
    };
    s.put("v1").await;
    Some(s)
}

impl Setup {
    async fn put(&self, value: &str) {
        self.ssm
            .put_parameter()
            .name(format!("{}/token", self.prefix))
            .value(value)
            .r#type(ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .expect("put_parameter");
    }

    async fn external_secret(&self, name: &str, key: &str) {
        apply_yaml(
            &self.es,
            &format!(
                r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {{name: {name}}}
spec:
  refreshInterval: 1h
  secretStoreRef: {{name: ssm, kind: SecretStore}}
  data:
  - secretKey: token
    remoteRef: {{key: "{prefix}{key}"}}
"#,
                prefix = self.prefix
            ),
        )
        .await;
    }

    async fn force_sync(&self, name: &str) {
        let patch = json!({"metadata": {"annotations": {
            "secret-relay.dev/force-sync": format!("{:?}", Instant::now())
        }}});
        self.es
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotate force-sync");
    }

    async fn token(&self, name: &str) -> Option<String> {
        let s = self.secrets.get_opt(name).await.ok()??;
        secret_data(&s).get("token").cloned()
    }

    fn log(&self, name: &str) -> std::path::PathBuf {
        let dir = self
            .env
            .vars
            .get("TESTENV_LOG_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        dir.join(format!("{}-{name}.log", self.ns))
    }

    fn start(&self, name: &str, extra: &[&str], envs: &[(&str, &str)]) -> Process {
        let mut args = vec!["--namespace", &self.ns, "--no-cluster-stores"];
        args.extend_from_slice(extra);
        Process::start(&self.env.kubeconfig, &args, envs, &self.log(name))
    }
}

async fn wait_ready(p: &Process) {
    wait_for("/readyz 200", Duration::from_secs(30), || async {
        p.admin_get("/readyz")
            .await
            .filter(|(status, _)| *status == 200)
    })
    .await;
}

async fn wait_exit(p: &mut Process, within: Duration) -> std::process::ExitStatus {
    tokio::time::timeout(within, p.child.wait())
        .await
        .unwrap_or_else(|_| panic!("operator did not exit within {within:?}"))
        .expect("wait for the operator")
}

#[tokio::test]
async fn metrics_move_and_sigterm_drains() {
    let Some(s) = setup("metrics_move_and_sigterm_drains").await else {
        return;
    };
    let mut p = s.start("metrics", &[], &[]);
    wait_ready(&p).await;
    s.external_secret("app", "/token").await;
    wait_reason(&s.es, "app", "SecretSynced").await;

    let m = p.metrics().await;
    let synced = |m: &prometheus_parse::Scrape| {
        sample(
            m,
            "secret_relay_syncs_total",
            &[("result", "success"), ("reason", "SecretSynced")],
        )
    };
    let calls = |m: &prometheus_parse::Scrape| {
        sample(
            m,
            "secret_relay_provider_calls_total",
            &[
                ("provider", "aws_ssm"),
                ("operation", "GetParameters"),
                ("outcome", "ok"),
            ],
        )
    };
    assert!(
        synced(&m) >= 1.0,
        "a success sync is counted: {:?}",
        m.samples
    );
    assert!(calls(&m) >= 1.0, "the GetParameters call is counted");
    assert_eq!(
        sample(&m, "secret_relay_externalsecrets", &[("ready", "True")]),
        1.0
    );
    assert_eq!(
        sample(&m, "secret_relay_externalsecrets", &[("ready", "False")]),
        0.0
    );
    assert_eq!(
        sample(
            &m,
            "secret_relay_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(sample(&m, "secret_relay_reconcile_duration_seconds_count", &[]) >= 1.0);

    // A force-sync and a failing ExternalSecret move the counters.
    s.put("v2").await;
    s.force_sync("app").await;
    wait_for("v2 synced", Duration::from_secs(30), || async {
        (s.token("app").await.as_deref() == Some("v2")).then_some(())
    })
    .await;
    s.external_secret("broken", "/missing").await;
    wait_reason(&s.es, "broken", "SecretSyncedError").await;
    let after = wait_for("metrics to move", Duration::from_secs(10), || async {
        let m = p.metrics().await;
        (sample(&m, "secret_relay_externalsecrets", &[("ready", "False")]) == 1.0).then_some(m)
    })
    .await;
    assert!(synced(&after) > synced(&m), "syncs_total grew");
    assert!(calls(&after) > calls(&m), "provider calls grew");
    assert!(
        sample(
            &after,
            "secret_relay_syncs_total",
            &[("result", "error"), ("reason", "NotFound")]
        ) >= 1.0,
        "the NotFound failure is counted by reason"
    );
    assert_eq!(
        sample(&after, "secret_relay_externalsecrets", &[("ready", "True")]),
        1.0
    );
    assert!(
        !after
            .samples
            .iter()
            .any(|x| x.labels.values().any(|v| v == "app" || v == "broken")),
        "no per-object label"
    );

    // SIGTERM: not ready, drains and exits 0.
    p.signal("TERM").await;
    let status = wait_exit(&mut p, Duration::from_secs(20)).await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[tokio::test]
async fn leader_election_failover() {
    let Some(s) = setup("leader_election_failover").await else {
        return;
    };
    let lease_args = [
        "--leader-elect",
        "--lease-namespace",
        &s.ns,
        "--lease-duration",
        "6",
    ];
    let leases: Api<Lease> = Api::namespaced(s.env.kube.clone(), &s.ns);
    let holder = || async {
        leases
            .get_opt("secret-relay")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
            .filter(|h| !h.is_empty())
    };
    let a = s.start("replica-a", &lease_args, &[("POD_NAME", "replica-a")]);
    wait_for("replica-a leads", Duration::from_secs(30), || async {
        holder().await.filter(|h| h.starts_with("replica-a-"))
    })
    .await;
    let mut b = s.start("replica-b", &lease_args, &[("POD_NAME", "replica-b")]);
    wait_ready(&b).await; // a standby is ready: it only waits

    s.external_secret("app", "/token").await;
    wait_reason(&s.es, "app", "SecretSynced").await;
    assert_eq!(s.token("app").await.as_deref(), Some("v1"));
    // Only the leader runs the controllers: the standby made no sync and no provider call.
    let standby = b.metrics().await;
    assert_eq!(sample(&standby, "secret_relay_syncs_total", &[]), 0.0);
    assert_eq!(
        sample(&standby, "secret_relay_provider_calls_total", &[]),
        0.0
    );
    assert!(sample(&a.metrics().await, "secret_relay_syncs_total", &[]) >= 1.0);
    // secret_relay_leader names the Lease holder (the dashboard's panel, the NoLeader alert).
    assert_eq!(sample(&standby, "secret_relay_leader", &[]), 0.0);
    assert_eq!(sample(&a.metrics().await, "secret_relay_leader", &[]), 1.0);
    assert!(holder().await.unwrap().starts_with("replica-a-"));

    // Kill the leader without a chance to release the lease; change the value meanwhile.
    a.signal("KILL").await;
    let killed = Instant::now();
    drop(a);
    s.put("v2").await;
    s.force_sync("app").await;
    wait_for(
        "replica-b to take over and sync v2",
        Duration::from_secs(60),
        || async { (s.token("app").await.as_deref() == Some("v2")).then_some(()) },
    )
    .await;
    let gap = killed.elapsed();
    let took_over = holder().await.expect("a holder");
    assert!(took_over.starts_with("replica-b-"), "holder {took_over}");
    eprintln!(
        "FAILOVER: leader killed → new value synced by the standby in {gap:.1?} (lease duration 6 s)"
    );
    assert!(gap < Duration::from_secs(6 + 15), "failover took {gap:?}");

    // A graceful shutdown releases the lease at once.
    b.signal("TERM").await;
    let status = wait_exit(&mut b, Duration::from_secs(20)).await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert_eq!(holder().await, None, "the lease is released on shutdown");
}

/// issue 25: every line logged while reconciling names its object: a provider error's line in
/// the operator's JSON log carries the reconcile span's kind, namespace, name and store.
#[tokio::test]
async fn a_provider_errors_log_line_names_its_external_secret() {
    let Some(s) = setup("a_provider_errors_log_line_names_its_external_secret").await else {
        return;
    };
    let p = s.start("json-log", &["--log-format", "json"], &[]);
    wait_ready(&p).await;
    s.external_secret("missing", "/does-not-exist").await;
    wait_reason(&s.es, "missing", "SecretSyncedError").await;
    let line = wait_for("the failure logged", Duration::from_secs(30), || async {
        let text = std::fs::read_to_string(s.log("json-log")).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["fields"]["message"] == "sync failed")
    })
    .await;
    let span = &line["span"];
    assert_eq!(
        (
            span["name"].as_str(),
            span["kind"].as_str(),
            span["namespace"].as_str(),
            span["object"].as_str(),
            span["store"].as_str(),
        ),
        (
            Some("reconcile"),
            Some("ExternalSecret"),
            Some(s.ns.as_str()),
            Some("missing"),
            Some("SecretStore/ssm"),
        ),
        "{line}"
    );
    assert!(
        line["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("ParameterNotFound")),
        "{line}"
    );
    drop(p);
}
