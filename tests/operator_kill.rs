//! The operator binary killed (SIGKILL) in the middle of an initial sync of 300
//! ExternalSecrets, then started again, as a crashed or OOM-killed pod is (issue 10's chaos
//! tier). No Secret may be lost or hold a wrong value, every ExternalSecret ends Ready, and
//! every Secret has its `Created` event, also those whose event the kill cut off.
//!
//! Figures are printed as a `RELIABILITY {json}` line for `hack/chaos.sh`.

mod common;
mod operator;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use secret_relay::api::ExternalSecret;
use serde_json::json;

use common::TestEnv;
use operator::{apply_yaml, process::Process, ready_count, secret_data, wait_for};

const OBJECTS: usize = 300;
const KEYS: usize = 30;

#[tokio::test]
async fn a_kill_during_the_initial_sync_loses_nothing() {
    let Some(env) = TestEnv::get("a_kill_during_the_initial_sync_loses_nothing").await else {
        return;
    };
    let operator::SsmNamespace { ns, ssm, prefix } = operator::ssm_namespace(&env, "kill").await;
    for k in 0..KEYS {
        operator::put_parameter(&ssm, &format!("{prefix}/k{k}"), &format!("value-{k}")).await;
    }
    let es: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &ns);
    for i in 0..OBJECTS {
        apply_yaml(
            &es,
            &format!(
                "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata: {{name: es-{i}}}\nspec:\n  refreshInterval: 1h\n  secretStoreRef: {{name: ssm}}\n  data:\n  - secretKey: v\n    remoteRef: {{key: '{prefix}/k{}'}}\n",
                i % KEYS
            ),
        )
        .await;
    }
    let log = |n: &str| std::env::temp_dir().join(format!("{ns}-{n}.log"));
    let args = ["--namespace", ns.as_str(), "--no-cluster-stores"];
    let first = Process::start(&env.kubeconfig, &args, &[], &log("first"));
    // Kill it once a third is synced.
    wait_for("a third synced", Duration::from_secs(120), || async {
        (ready_count(&es).await >= OBJECTS / 3).then_some(())
    })
    .await;
    first.signal("KILL").await;
    let at_kill = ready_count(&es).await;
    drop(first);

    let restarted = Instant::now();
    let second = Process::start(&env.kubeconfig, &args, &[], &log("second"));
    wait_for(
        "all Ready after the restart",
        Duration::from_secs(180),
        || async { (ready_count(&es).await == OBJECTS).then_some(()) },
    )
    .await;
    let recovered_ms = restarted.elapsed().as_millis();

    // Every Secret, with its value.
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &ns);
    let mut wrong = Vec::new();
    for i in 0..OBJECTS {
        let name = format!("es-{i}");
        let value = secrets
            .get_opt(&name)
            .await
            .unwrap()
            .and_then(|s| secret_data(&s).get("v").cloned());
        if value.as_deref() != Some(format!("value-{}", i % KEYS).as_str()) {
            wrong.push((name, value));
        }
    }
    assert!(wrong.is_empty(), "lost or wrong: {wrong:?}");

    // One Created event per Secret, also where the kill fell between the write and the event.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.kube.clone(), &ns);
    let created = wait_for(
        "a Created event for every Secret",
        Duration::from_secs(30),
        || async {
            let mut by_object: BTreeMap<String, usize> = BTreeMap::new();
            for e in events.list(&Default::default()).await.ok()?.items {
                if e.reason.as_deref() == Some("Created") {
                    let name = e.regarding.and_then(|r| r.name).unwrap_or_default();
                    *by_object.entry(name).or_default() += 1;
                }
            }
            (by_object.len() == OBJECTS).then_some(by_object)
        },
    )
    .await;
    assert!(created.values().all(|n| *n >= 1));
    let (status, _) = second.admin_get("/readyz").await.expect("/readyz answers");
    assert_eq!(status, 200);
    println!(
        "RELIABILITY {}",
        json!({
            "test": "operator_kill",
            "objects": OBJECTS,
            "ready_at_kill": at_kill,
            "all_ready_after_restart_ms": recovered_ms,
            "secrets_lost": 0,
            "secrets_clobbered": 0,
            "created_events": created.len(),
        })
    );
}
