//! `rolloutRestartTargets` against the real API server (issue 15): the pod template
//! annotation a restart sets is what `kubectl rollout restart` relies on, and every change of
//! the template bumps the Deployment's `metadata.generation`, so the number of restarts is
//! read off the generation. (That new Pods then read the new value is the node tier's part:
//! tests/node.rs.)

mod common;
mod operator;

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Event};
use kube::api::{Api, ListParams, Patch, PatchParams};
use secret_relay::{
    api::ExternalSecret,
    controller::{observe::Outcome, rollout::ANNOTATION_RESTARTED_AT},
    metrics,
};
use serde_json::json;

use common::{TestEnv, random_suffix};
use operator::{apply_yaml, secret_data, wait_for, wait_reason};

fn restarted_at(d: &Deployment) -> Option<String> {
    d.spec
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(ANNOTATION_RESTARTED_AT)
        .cloned()
}

async fn generation(deployments: &Api<Deployment>, name: &str) -> i64 {
    deployments
        .get(name)
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap()
}

#[tokio::test]
async fn workloads_restart_once_per_change_of_their_secrets() {
    let Some(env) = TestEnv::get("workloads_restart_once_per_change_of_their_secrets").await else {
        return;
    };
    let operator::SsmNamespace { ns, ssm, prefix } = operator::ssm_namespace(&env, "rollout").await;
    let _op = operator::start(&env.kube, &ns, false).await;
    operator::put_parameter(&ssm, &format!("{prefix}/db"), "db-1").await;
    operator::put_parameter(&ssm, &format!("{prefix}/api"), "api-1").await;

    // A Deployment reading both Secrets as env vars.
    let deployments: Api<Deployment> = Api::namespaced(env.kube.clone(), &ns);
    let app: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "app"}},
            "template": {
                "metadata": {"labels": {"app": "app"}},
                "spec": {"containers": [{
                    "name": "app", "image": "app:1",
                    "envFrom": [{"secretRef": {"name": "db"}}, {"secretRef": {"name": "api"}}]
                }]}
            }
        }
    }))
    .unwrap();
    deployments.create(&Default::default(), &app).await.unwrap();
    let es: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &ns);
    let mut seen = operator::observe();
    for (name, extra) in [
        ("db", "\n    - {kind: Deployment, name: gone}"),
        ("api", ""),
    ] {
        apply_yaml(
            &es,
            &format!(
                "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata: {{name: {name}}}\nspec:\n  refreshInterval: 1h\n  secretStoreRef: {{name: ssm}}\n  target:\n    rolloutRestartTargets:\n    - {{kind: Deployment, name: app}}{extra}\n  data:\n  - secretKey: {name}\n    remoteRef: {{key: {prefix}/{name}}}\n"
            ),
        )
        .await;
        wait_reason(&es, name, "SecretSynced").await;
    }
    let force_sync = |name: &'static str| {
        let es = es.clone();
        async move {
            es.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {"secret-relay.dev/force-sync": random_suffix()}}}),
                ),
            )
            .await
            .unwrap();
        }
    };
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(env.kube.clone(), &ns);
    let wait_value = |name: &'static str, value: String| {
        let secrets = secrets.clone();
        async move {
            wait_for(
                &format!("Secret {name} = {value}"),
                Duration::from_secs(30),
                || async {
                    let s = secrets.get_opt(name).await.ok()??;
                    (secret_data(&s).get(name) == Some(&value)).then_some(())
                },
            )
            .await
        }
    };

    // Creating the Secrets restarts nothing: the syncs that created them asked for no restart
    // (only a sync asks for one).
    for name in ["db", "api"] {
        let created = seen
            .reconciled(&ns, name, "the sync that created its Secret", |o| {
                matches!(o, Outcome::Synced { written: true, .. })
            })
            .await;
        assert!(
            matches!(created, Outcome::Synced { restarts: 0, .. }),
            "{name}: {created:?}"
        );
    }
    assert_eq!(generation(&deployments, "app").await, 1);
    assert!(restarted_at(&deployments.get("app").await.unwrap()).is_none());

    // Both Secrets change on the same refresh: one restart.
    let before = metrics::rollout_restarts_total("Deployment");
    let mut seen = operator::observe();
    operator::put_parameter(&ssm, &format!("{prefix}/db"), "db-2").await;
    operator::put_parameter(&ssm, &format!("{prefix}/api"), "api-2").await;
    force_sync("db").await;
    force_sync("api").await;
    wait_value("db", "db-2".into()).await;
    wait_value("api", "api-2".into()).await;
    let first = wait_for("the restart", Duration::from_secs(30), || async {
        restarted_at(&deployments.get("app").await.ok()?)
    })
    .await;
    // The one restart was made for both: nothing is left pending.
    let mut asked_by = seen.restarted(&ns, "Deployment/app").await;
    asked_by.sort();
    assert_eq!(
        asked_by,
        ["api", "db"],
        "two ExternalSecrets changed together restart it once"
    );
    assert_eq!(generation(&deployments, "app").await, 2);
    assert_eq!(
        metrics::rollout_restarts_total("Deployment") - before,
        1,
        "counted once; the missing Deployment is not a restart"
    );

    // A second change right after: it rolls again, with another annotation value.
    operator::put_parameter(&ssm, &format!("{prefix}/db"), "db-3").await;
    force_sync("db").await;
    let second = wait_for("the second restart", Duration::from_secs(30), || async {
        let at = restarted_at(&deployments.get("app").await.ok()?)?;
        (at != first).then_some(at)
    })
    .await;
    assert!(second > first);
    assert_eq!(generation(&deployments, "app").await, 3);

    // A metadata-only change of the Secret restarts nothing.
    let mut seen = operator::observe();
    es.patch(
        "api",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"target": {"template": {"metadata": {"annotations": {"team": "x"}}}}}}),
        ),
    )
    .await
    .unwrap();
    wait_for(
        "the Secret's new annotation",
        Duration::from_secs(30),
        || async {
            let s = secrets.get_opt("api").await.ok()??;
            s.metadata.annotations?.get("team").map(|_| ())
        },
    )
    .await;
    let updated = seen
        .reconciled(&ns, "api", "the sync of the new annotation", |o| {
            matches!(o, Outcome::Synced { written: true, .. })
        })
        .await;
    assert!(
        matches!(updated, Outcome::Synced { restarts: 0, .. }),
        "a metadata-only change asked for a restart: {updated:?}"
    );
    assert_eq!(generation(&deployments, "app").await, 3);

    // Events: RolloutRestarted on each ExternalSecret, and a Warning for the missing workload
    // (the sync itself stays Ready).
    let events: Api<Event> = Api::namespaced(env.kube.clone(), &ns);
    wait_for("the events", Duration::from_secs(30), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let has = |obj: &str, reason: &str| {
            list.items.iter().any(|e| {
                e.involved_object.name.as_deref() == Some(obj)
                    && e.reason.as_deref() == Some(reason)
            })
        };
        (has("db", "RolloutRestarted")
            && has("api", "RolloutRestarted")
            && has("db", "RolloutRestartFailed"))
        .then_some(())
    })
    .await;
    wait_reason(&es, "db", "SecretSynced").await;
}
