//! The Argo CD health check of docs/argocd.md, executed (issue 26): the Lua script of the
//! `argocd-cm` block, read from the doc as a user copies it, run as Argo CD runs a health
//! customization (Lua 5.1, the live object in the global `obj`, the returned table's `status`
//! and `message`) against live objects of each kind in each state, written by the operator
//! on the real API server: Healthy, Degraded or Progressing as the doc says.

mod common;
mod operator;

use std::collections::BTreeMap;

use kube::api::Api;
use mlua::{Lua, LuaSerdeExt, serde::SerializeOptions};
use secret_relay::{
    api::{ClusterExternalSecret, ClusterSecretStore, ExternalSecret, SecretStore},
    controller,
};
use serde_json::Value;

use common::{TestEnv, random_suffix};
use operator::{apply_yaml, put_parameter, wait_for, wait_reason};

const KINDS: [&str; 4] = [
    "ExternalSecret",
    "SecretStore",
    "ClusterSecretStore",
    "ClusterExternalSecret",
];

/// The health scripts of docs/argocd.md's `argocd-cm`, by kind (YAML aliases resolved, as
/// Argo CD's own YAML parser resolves them).
fn scripts() -> BTreeMap<&'static str, String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/argocd.md"))
        .expect("docs/argocd.md");
    let block = doc
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("name: argocd-cm"))
        .expect("the argocd-cm block");
    let cm: serde_yaml::Value = serde_yaml::from_str(block).expect("argocd-cm parses");
    KINDS
        .iter()
        .map(|kind| {
            let key = format!("resource.customizations.health.secret-relay.dev_{kind}");
            let script = cm["data"][key.as_str()]
                .as_str()
                .unwrap_or_else(|| panic!("no {key} in argocd-cm"))
                .to_string();
            (*kind, script)
        })
        .collect()
}

/// Runs `script` with `obj` as Argo CD does; returns (status, message).
fn health(script: &str, obj: &Value) -> (String, String) {
    let lua = Lua::new();
    // JSON null is nil to the script (Argo CD decodes the object's JSON into plain tables).
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let value = lua.to_value_with(obj, options).expect("object to Lua");
    lua.globals().set("obj", value).expect("set obj");
    let hs: mlua::Table = lua.load(script).eval().expect("the script runs");
    (
        hs.get::<String>("status").expect("hs.status"),
        hs.get::<Option<String>>("message")
            .expect("hs.message")
            .unwrap_or_default(),
    )
}

async fn live<K>(api: &Api<K>, name: &str) -> Value
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    serde_json::to_value(api.get(name).await.expect("object")).unwrap()
}

fn assert_health(script: &str, obj: &Value, status: &str, message_starts: &str) {
    let (got, message) = health(script, obj);
    assert_eq!(
        (got.as_str(), message.starts_with(message_starts)),
        (status, true),
        "{} {}: {message}",
        obj["kind"],
        obj["metadata"]["name"]
    );
}

#[tokio::test]
async fn the_documented_health_check_reads_every_kind_in_every_state() {
    let Some(env) = TestEnv::get("argocd_health").await else {
        return;
    };
    let scripts = scripts();
    let operator::SsmNamespace { ns, ssm, prefix } = operator::ssm_namespace(&env, "argocd").await;
    put_parameter(&ssm, &format!("{prefix}/ok"), "v").await;
    let es: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &ns);
    let es_yaml = |name: &str, key: &str| {
        format!(
            "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata: {{name: {name}}}\nspec:\n  refreshInterval: 1h\n  secretStoreRef: {{name: ssm}}\n  data:\n  - secretKey: v\n    remoteRef: {{key: '{prefix}/{key}'}}\n"
        )
    };
    // Before the operator: no status yet.
    operator::install_crds(&env.kube).await;
    apply_yaml(&es, &es_yaml("synced", "ok")).await;
    let script = &scripts["ExternalSecret"];
    assert_health(
        script,
        &live(&es, "synced").await,
        "Progressing",
        "Waiting for secret-relay to report status",
    );

    let _operator = operator::start_with(
        &env.kube,
        controller::Config {
            namespace: Some(ns.clone()),
            cluster_stores: true,
            cluster_external_secrets: true,
            rollout_restart: false,
            concurrency: 4,
            allow_secret_store_ambient_identity: false,
            allow_api_server_audience: false,
            watch_label_selector: None,
            events: Default::default(),
        },
    )
    .await;
    apply_yaml(&es, &es_yaml("missing", "missing")).await;
    wait_reason(&es, "synced", "SecretSynced").await;
    wait_reason(&es, "missing", "SecretSyncedError").await;
    assert_health(
        script,
        &live(&es, "synced").await,
        "Healthy",
        "SecretSynced: ",
    );
    assert_health(
        script,
        &live(&es, "missing").await,
        "Degraded",
        "SecretSyncedError: ssm GetParameters",
    );
    // A spec edit the operator has not processed yet: the generation is ahead.
    let mut ahead = live(&es, "synced").await;
    ahead["metadata"]["generation"] =
        Value::from(ahead["metadata"]["generation"].as_i64().unwrap() + 1);
    assert_health(
        script,
        &ahead,
        "Progressing",
        "Waiting for secret-relay to observe the latest spec",
    );

    // Stores: valid and refused.
    let stores: Api<SecretStore> = Api::namespaced(env.kube.clone(), &ns);
    wait_for(
        "SecretStore ssm Valid",
        std::time::Duration::from_secs(30),
        || async {
            let s = live(&stores, "ssm").await;
            (s["status"]["conditions"][0]["reason"] == "Valid").then_some(())
        },
    )
    .await;
    assert_health(
        &scripts["SecretStore"],
        &live(&stores, "ssm").await,
        "Healthy",
        "Valid: ",
    );
    apply_yaml(
        &stores,
        "apiVersion: secret-relay.dev/v1alpha1\nkind: SecretStore\nmetadata: {name: ambient}\nspec:\n  provider: {aws: {service: ParameterStore, region: eu-west-1}}\n",
    )
    .await;
    operator::wait_store_refused(&stores, "ambient").await;
    assert_health(
        &scripts["SecretStore"],
        &live(&stores, "ambient").await,
        "Degraded",
        "InvalidProviderConfig: ",
    );
    let cluster_stores: Api<ClusterSecretStore> = Api::all(env.kube.clone());
    let css = format!("argocd-{}", random_suffix());
    apply_yaml(
        &cluster_stores,
        &format!(
            "apiVersion: secret-relay.dev/v1alpha1\nkind: ClusterSecretStore\nmetadata: {{name: {css}}}\nspec:\n  conditions: [{{namespaceRegexes: ['(']}}]\n  provider: {{aws: {{service: ParameterStore, region: eu-west-1}}}}\n"
        ),
    )
    .await;
    let refused = wait_for(
        "the ClusterSecretStore refused",
        std::time::Duration::from_secs(30),
        || async {
            let s = live(&cluster_stores, &css).await;
            (s["status"]["conditions"][0]["status"] == "False").then_some(s)
        },
    )
    .await;
    assert_health(
        &scripts["ClusterSecretStore"],
        &refused,
        "Degraded",
        "InvalidProviderConfig: spec.conditions[0].namespaceRegexes[0]",
    );
    cluster_stores
        .delete(&css, &Default::default())
        .await
        .unwrap();

    // ClusterExternalSecrets: provisioned, and one whose ExternalSecret name is taken.
    let ces: Api<ClusterExternalSecret> = Api::all(env.kube.clone());
    let ces_yaml = |name: &str, es_name: &str| {
        format!(
            "apiVersion: secret-relay.dev/v1alpha1\nkind: ClusterExternalSecret\nmetadata: {{name: {name}}}\nspec:\n  externalSecretName: {es_name}\n  namespaces: [{ns}]\n  externalSecretSpec:\n    refreshInterval: 1h\n    secretStoreRef: {{name: ssm}}\n    data:\n    - secretKey: v\n      remoteRef: {{key: '{prefix}/ok'}}\n"
        )
    };
    let (good, taken) = (
        format!("argocd-good-{}", random_suffix()),
        format!("argocd-taken-{}", random_suffix()),
    );
    apply_yaml(&ces, &ces_yaml(&good, "from-ces")).await;
    apply_yaml(&ces, &ces_yaml(&taken, "synced")).await;
    for (name, status, message) in [
        (&good, "Healthy", "Provisioned: "),
        (&taken, "Degraded", "NamespacesFailed: "),
    ] {
        let obj = wait_for(
            &format!("ClusterExternalSecret {name}"),
            std::time::Duration::from_secs(30),
            || async {
                let c = live(&ces, name).await;
                (c["status"]["observedGeneration"] == c["metadata"]["generation"]).then_some(c)
            },
        )
        .await;
        assert_health(&scripts["ClusterExternalSecret"], &obj, status, message);
        ces.delete(name, &Default::default()).await.unwrap();
    }
}
