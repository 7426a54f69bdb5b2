//! Shards (issue 14): instances that each reconcile the ExternalSecrets matching their
//! `--watch-label-selector`, as Flux shards its controllers, against the real API server and
//! moto. Run with `hack/test.sh --test sharding`.

mod common;
mod operator;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use secret_relay::{
    api::ExternalSecret,
    controller::{
        self, LABEL_SHARD,
        observe::{Observed, Outcome},
    },
    metrics,
};
use serde_json::json;

use common::{TestEnv, random_suffix};
use operator::{apply_yaml, put_parameter, secret_data, wait_for, wait_reason};

/// An operator for `ns` reconciling the ExternalSecrets that match `selector`.
async fn shard(env: &TestEnv, ns: &str, selector: &str) -> operator::Operator {
    operator::start_with(
        &env.kube,
        controller::Config {
            namespace: Some(ns.to_string()),
            cluster_stores: false,
            cluster_external_secrets: false,
            rollout_restart: false,
            concurrency: 4,
            allow_secret_store_ambient_identity: false,
            allow_api_server_audience: false,
            watch_label_selector: Some(selector.to_string()),
            events: Default::default(),
        },
    )
    .await
}

fn value_of(secret: &Secret) -> String {
    secret_data(secret)["value"].clone()
}

#[tokio::test]
async fn each_shard_reconciles_its_own_and_an_external_secret_moves_without_a_write() {
    let Some(env) = TestEnv::get("sharding").await else {
        return;
    };
    let operator::SsmNamespace { ns, ssm, prefix: p } =
        operator::ssm_namespace(&env, "shards").await;
    put_parameter(&ssm, &format!("{p}/main"), "main-1").await;
    put_parameter(&ssm, &format!("{p}/moved"), "moved-1").await;
    let es: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &ns);
    for (name, labels) in [
        ("main", String::new()),
        ("moved", format!("labels: {{{LABEL_SHARD}: shard-1}}, ")),
    ] {
        apply_yaml(
            &es,
            &format!(
                "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\n\
                 metadata: {{{labels}name: {name}}}\n\
                 spec:\n  refreshInterval: 1h\n  secretStoreRef: {{name: ssm}}\n  data:\n  \
                 - secretKey: value\n    remoteRef: {{key: {p}/{name}}}\n"
            ),
        )
        .await;
    }

    // Shard 1 alone: it syncs its ExternalSecret and leaves the other untouched. Its watch
    // lists only its own: once its queue is empty after the sync, `main` was never in it.
    let mut seen = operator::observe();
    let shard_1 = shard(&env, &ns, &format!("{LABEL_SHARD}=shard-1")).await;
    wait_reason(&es, "moved", "SecretSynced").await;
    wait_for(
        "shard-1's reconcile queue empty",
        Duration::from_secs(30),
        || async { (metrics::reconcile_requests() == (0, 0)).then_some(()) },
    )
    .await;
    let reconciled_main = seen.so_far().into_iter().any(|o| {
        matches!(o, Observed::Reconciled { namespace, name, .. } if namespace == ns && name == "main")
    });
    assert!(!reconciled_main, "shard-1 reconciled main");
    assert!(
        es.get("main").await.unwrap().status.is_none(),
        "shard-1 reconciled an ExternalSecret of another shard"
    );
    assert!(secrets.get_opt("main").await.unwrap().is_none());

    // The main instance (no shard label) syncs the rest.
    let _main = shard(&env, &ns, &format!("!{LABEL_SHARD}")).await;
    wait_reason(&es, "main", "SecretSynced").await;
    assert_eq!(value_of(&secrets.get("main").await.unwrap()), "main-1");

    // Moving `moved` to the main instance: drop its label, then stop shard-1. The main
    // instance takes it over without rewriting its Secret...
    let before = secrets.get("moved").await.unwrap();
    let mut seen = operator::observe();
    es.patch(
        "moved",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {LABEL_SHARD: null}}})),
    )
    .await
    .unwrap();
    drop(shard_1);
    let taken_over = seen
        .reconciled(&ns, "moved", "the main instance's reconcile of it", |o| {
            *o != Outcome::Deferred
        })
        .await;
    assert!(
        !matches!(
            taken_over,
            Outcome::Synced { written: true, .. } | Outcome::Failed { .. }
        ),
        "{taken_over:?}"
    );
    let after = secrets.get("moved").await.unwrap();
    assert_eq!(
        before.metadata.resource_version, after.metadata.resource_version,
        "the move rewrote the Secret"
    );
    // ...and syncs its next change.
    put_parameter(&ssm, &format!("{p}/moved"), "moved-2").await;
    es.patch(
        "moved",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {
            "secret-relay.dev/force-sync": random_suffix()
        }}})),
    )
    .await
    .unwrap();
    wait_for(
        "the main instance syncs the moved ExternalSecret",
        Duration::from_secs(30),
        || async {
            let s = secrets.get("moved").await.ok()?;
            (value_of(&s) == "moved-2").then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_invalid_watch_label_selector_is_refused_at_start() {
    let Some(env) = TestEnv::get("sharding_invalid_selector").await else {
        return;
    };
    let ns = env.namespace("shards-bad").await;
    operator::install_crds(&env.kube).await;
    let config = controller::Config {
        namespace: Some(ns),
        cluster_stores: false,
        cluster_external_secrets: false,
        rollout_restart: false,
        concurrency: 1,
        allow_secret_store_ambient_identity: false,
        allow_api_server_audience: false,
        watch_label_selector: Some("shard in (".into()),
        events: Default::default(),
    };
    let run = controller::run(env.kube.clone(), config, || {}, futures::future::pending());
    let err = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("refused at once")
        .expect_err("an invalid selector is an error");
    let message = err.to_string();
    assert!(
        message.starts_with("invalid --watch-label-selector \"shard in (\": "),
        "{message}"
    );
}
