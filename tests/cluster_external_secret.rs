//! ClusterExternalSecrets against the real API server: the cases of ESO's own controller tests
//! (pkg/controllers/clusterexternalsecret, their names below), run in order by one operator
//! whose ClusterExternalSecret controller is on, plus the ExternalSecret it makes synced into a
//! Secret from SSM.
//!
//! One test function: the ClusterExternalSecret controller is cluster-wide, so two in the same
//! binary would both reconcile every case.

mod common;
mod operator;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Client, ResourceExt,
    api::{Api, DeleteParams, Patch, PatchParams, PostParams},
};
use secret_relay::{
    api::{ClusterExternalSecret, ExternalSecret},
    controller,
};
use serde_json::json;

use common::{TestEnv, random_suffix};
use operator::{apply_yaml, secret_data, wait_for};

struct Cases {
    client: Client,
    ces: Api<ClusterExternalSecret>,
    /// A label every namespace of this run carries, so that selectors see no other test's.
    run: String,
}

impl Cases {
    /// A new namespace with `labels` (plus this run's label); its name.
    async fn namespace(&self, labels: &[(&str, &str)]) -> String {
        let name = format!("ces-{}", random_suffix());
        let mut l: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.insert("ces-run".into(), self.run.clone());
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": l}
        }))
        .unwrap();
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        name
    }

    async fn label_namespace(&self, ns: &str, key: &str, value: Option<&str>) {
        Api::<Namespace>::all(self.client.clone())
            .patch(
                ns,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {key: value}}})),
            )
            .await
            .unwrap();
    }

    /// Applies a ClusterExternalSecret `name` whose spec is `spec` (YAML, indented two
    /// spaces) and an SSM ExternalSecret spec.
    async fn apply(&self, name: &str, extra_meta: &str, spec: &str) {
        apply_yaml(
            &self.ces,
            &format!(
                "apiVersion: secret-relay.dev/v1alpha1\nkind: ClusterExternalSecret\nmetadata:\n  name: {name}\n{extra_meta}spec:\n  externalSecretSpec:\n    refreshInterval: 1h\n    secretStoreRef: {{name: ssm}}\n    data:\n    - secretKey: v\n      remoteRef: {{key: /ces/{run}/v}}\n{spec}",
                run = self.run
            ),
        )
        .await;
    }

    fn es(&self, ns: &str) -> Api<ExternalSecret> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Waits until `check` holds on the ClusterExternalSecret's status (its generation
    /// observed); returns it.
    async fn wait(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&ClusterExternalSecret) -> bool,
    ) -> ClusterExternalSecret {
        wait_for(what, Duration::from_secs(30), || async {
            let c = self.ces.get(name).await.ok()?;
            let st = c.status.as_ref()?;
            (st.observed_generation == c.metadata.generation && check(&c)).then_some(c)
        })
        .await
    }

    async fn es_exists(&self, ns: &str, name: &str) -> Option<ExternalSecret> {
        self.es(ns).get_opt(name).await.unwrap()
    }
}

fn ready(c: &ClusterExternalSecret) -> Option<bool> {
    c.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status == "True")
}

fn provisioned(c: &ClusterExternalSecret) -> Vec<String> {
    c.status
        .as_ref()
        .map(|s| s.provisioned_namespaces.clone())
        .unwrap_or_default()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn cluster_external_secret_cases_from_eso() {
    let Some(env) = TestEnv::get("cluster_external_secret_cases_from_eso").await else {
        return;
    };
    let run = random_suffix();
    let t = Cases {
        client: env.kube.clone(),
        ces: Api::all(env.kube.clone()),
        run: run.clone(),
    };
    // The operator's own namespace: its ExternalSecrets are synced into Secrets too.
    let home = t.namespace(&[("sync", "yes")]).await;
    let _op = operator::start_with(
        &env.kube,
        controller::Config {
            namespace: Some(home.clone()),
            cluster_stores: false,
            cluster_external_secrets: true,
            rollout_restart: true,
            concurrency: 4,
            allow_secret_store_ambient_identity: false,
            allow_api_server_audience: false,
            watch_label_selector: None,
            events: Default::default(),
        },
    )
    .await;
    operator::ssm_store(&env, &home).await;
    let ssm = env.ssm().await;
    operator::put_parameter(&ssm, &format!("/ces/{run}/v"), "registry-token").await;

    // "Should use cluster external secret name if external secret name isn't defined",
    // "Should be ready if namespace is selected via namespaces"; and the ExternalSecret made
    // in the operator's namespace is synced.
    let a = t.namespace(&[]).await;
    let name = format!("registry-{run}");
    t.apply(&name, "", &format!("  namespaces: [{home}, {a}]\n"))
        .await;
    let c = t
        .wait(&name, "provisioned by name", |c| provisioned(c).len() == 2)
        .await;
    assert_eq!(provisioned(&c), sorted(vec![home.clone(), a.clone()]));
    assert_eq!(ready(&c), Some(true));
    let es = t.es_exists(&a, &name).await.expect("ExternalSecret made");
    let owner = &es.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller, Some(&owner.uid)),
        ("ClusterExternalSecret", Some(true), c.metadata.uid.as_ref())
    );
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &home);
    wait_for(
        "the Secret synced in the operator's namespace",
        Duration::from_secs(30),
        || async {
            let s = secrets.get_opt(&name).await.ok()??;
            (secret_data(&s).get("v").map(String::as_str) == Some("registry-token")).then_some(())
        },
    )
    .await;

    // "Should set external secret name and metadata if the fields are set"
    let b = t.namespace(&[("team", &format!("t-{run}"))]).await;
    let named = format!("named-{run}");
    t.apply(
        &named,
        "",
        &format!(
            "  externalSecretName: app-creds\n  externalSecretMetadata:\n    labels: {{tier: web}}\n    annotations: {{note: hello}}\n  namespaceSelectors:\n  - matchLabels: {{team: t-{run}}}\n"
        ),
    )
    .await;
    t.wait(&named, "named provisioned", |c| {
        provisioned(c) == vec![b.clone()]
    })
    .await;
    let es = t
        .es_exists(&b, "app-creds")
        .await
        .expect("named ExternalSecret");
    assert_eq!(es.labels().get("tier").map(String::as_str), Some("web"));
    assert_eq!(
        es.annotations().get("note").map(String::as_str),
        Some("hello")
    );

    // "Should delete old external secrets if name has changed"
    t.apply(
        &named,
        "",
        &format!("  externalSecretName: app-creds-2\n  namespaceSelectors:\n  - matchLabels: {{team: t-{run}}}\n"),
    )
    .await;
    t.wait(&named, "renamed", |c| {
        c.status
            .as_ref()
            .and_then(|s| s.external_secret_name.as_deref())
            == Some("app-creds-2")
    })
    .await;
    assert!(t.es_exists(&b, "app-creds-2").await.is_some());
    assert!(
        t.es_exists(&b, "app-creds").await.is_none(),
        "old name removed"
    );

    // "Should update external secret if the fields change"
    t.apply(
        &named,
        "",
        &format!("  externalSecretName: app-creds-2\n  externalSecretMetadata:\n    labels: {{tier: api}}\n  namespaceSelectors:\n  - matchLabels: {{team: t-{run}}}\n"),
    )
    .await;
    wait_for(
        "the ExternalSecret's labels updated",
        Duration::from_secs(30),
        || async {
            let es = t.es_exists(&b, "app-creds-2").await?;
            (es.labels().get("tier").map(String::as_str) == Some("api")).then_some(())
        },
    )
    .await;

    // "Should not overwrite existing external secrets and error out if one is present"
    let c_ns = t.namespace(&[]).await;
    apply_yaml(
        &t.es(&c_ns),
        &format!("apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata: {{name: {name}}}\nspec:\n  secretStoreRef: {{name: mine}}\n  data:\n  - secretKey: k\n    remoteRef: {{key: mine}}\n"),
    )
    .await;
    t.apply(&name, "", &format!("  namespaces: [{home}, {a}, {c_ns}]\n"))
        .await;
    let c = t
        .wait(&name, "a conflicting namespace reported", |c| {
            ready(c) == Some(false)
        })
        .await;
    let failed = &c.status.as_ref().unwrap().failed_namespaces;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].namespace, c_ns);
    assert!(
        failed[0].reason.contains("already exists"),
        "{}",
        failed[0].reason
    );
    assert_eq!(provisioned(&c), sorted(vec![home.clone(), a.clone()]));
    let theirs = t.es_exists(&c_ns, &name).await.unwrap();
    assert_eq!(theirs.spec.secret_store_ref.name, "mine", "left untouched");
    assert!(theirs.owner_references().is_empty());

    // "Should crate an external secret if one with the same name has been deleted"
    t.es(&a)
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the deleted ExternalSecret made again",
        Duration::from_secs(30),
        || async { t.es_exists(&a, &name).await.map(|_| ()) },
    )
    .await;

    // "Should delete external secrets when namespaces no longer match"
    t.label_namespace(&b, "team", None).await;
    t.wait(&named, "the unlabelled namespace dropped", |c| {
        provisioned(c).is_empty()
    })
    .await;
    assert!(t.es_exists(&b, "app-creds-2").await.is_none());

    // "Should sync with match expression"
    let d = t.namespace(&[("env", &format!("e-{run}"))]).await;
    let expr = format!("expr-{run}");
    t.apply(
        &expr,
        "",
        &format!("  namespaceSelectors:\n  - matchExpressions:\n    - {{key: env, operator: In, values: [e-{run}, other]}}\n"),
    )
    .await;
    t.wait(&expr, "selected by matchExpressions", |c| {
        provisioned(c) == vec![d.clone()]
    })
    .await;

    // "Should be ready if no namespace matches"
    let none = format!("none-{run}");
    t.apply(
        &none,
        "",
        &format!("  namespaceSelectors:\n  - matchLabels: {{nothing: n-{run}}}\n"),
    )
    .await;
    let c = t
        .wait(&none, "ready with nothing selected", |c| ready(c).is_some())
        .await;
    assert_eq!(ready(&c), Some(true));
    assert!(provisioned(&c).is_empty());

    // "Should be ready if namespace is selected via the namespace selectors" (a namespace
    // labelled later is picked up at once, not at the next refreshTime)
    let e = t.namespace(&[]).await;
    t.label_namespace(&e, "nothing", Some(&format!("n-{run}")))
        .await;
    let c = t
        .wait(&none, "a newly labelled namespace", |c| {
            provisioned(c) == vec![e.clone()]
        })
        .await;
    assert_eq!(ready(&c), Some(true));

    // "Should propagate the force-sync annotation", then "Should prune the force-sync
    // annotation"
    t.apply(
        &expr,
        "  annotations: {secret-relay.dev/force-sync: \"1\"}\n",
        &format!("  namespaceSelectors:\n  - matchExpressions:\n    - {{key: env, operator: In, values: [e-{run}, other]}}\n"),
    )
    .await;
    wait_for("force-sync propagated", Duration::from_secs(30), || async {
        let es = t.es_exists(&d, &expr).await?;
        (es.annotations()
            .get("secret-relay.dev/force-sync")
            .map(String::as_str)
            == Some("1"))
        .then_some(())
    })
    .await;
    t.apply(
        &expr,
        "",
        &format!("  namespaceSelectors:\n  - matchExpressions:\n    - {{key: env, operator: In, values: [e-{run}, other]}}\n"),
    )
    .await;
    t.ces
        .patch(
            &expr,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"secret-relay.dev/force-sync": null}}}),
            ),
        )
        .await
        .unwrap();
    wait_for("force-sync pruned", Duration::from_secs(30), || async {
        let es = t.es_exists(&d, &expr).await?;
        (!es.annotations().contains_key("secret-relay.dev/force-sync")).then_some(())
    })
    .await;

    for c in [&name, &named, &expr, &none] {
        let _ = t.ces.delete(c, &DeleteParams::default()).await;
    }
}
