//! `dataFrom[].sourceRef.generatorRef` with the Password generator, on the real API server:
//! the value is generated once and kept by refreshes and force-syncs; a spec change makes a
//! new one; a missing generator is named in the condition; and ESO's own e2e case for it.

mod common;
mod operator;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use secret_relay::api::{ExternalSecret, Password};
use serde_json::json;

use common::TestEnv;
use operator::{apply_yaml, ready_message, secret_data, vault_store, wait_for, wait_reason};

/// Waits until the ExternalSecret's status says it synced a version other than `before`
/// (the positive sign that a forced sync was processed).
async fn synced_after(es: &Api<ExternalSecret>, name: &str, before: &str) {
    wait_for(
        &format!("ExternalSecret {name} synced again"),
        Duration::from_secs(60),
        || async {
            let e = es.get(name).await.ok()?;
            let s = e.status?;
            (s.synced_resource_version.as_deref() != Some(before)
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.reason == "SecretSynced"))
            .then_some(())
        },
    )
    .await
}

fn synced_version(es: &ExternalSecret) -> String {
    es.status
        .as_ref()
        .and_then(|s| s.synced_resource_version.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn password_is_generated_once_and_kept_by_refreshes() {
    let Some(env) = TestEnv::get("password_is_generated_once_and_kept_by_refreshes").await else {
        return;
    };
    let ns = env.namespace("gen-pw").await;
    let _op = operator::start(&env.kube, &ns, false).await;
    vault_store(&env, &ns, "vault", "      path: secret", &env.vault_token).await;
    apply_yaml(
        &Api::<Password>::namespaced(env.kube.clone(), &ns),
        r#"
apiVersion: generators.secret-relay.dev/v1alpha1
kind: Password
metadata: {name: pw}
spec: {length: 32, digits: 5, symbols: 0}
"#,
    )
    .await;
    let es: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &ns);
    apply_yaml(
        &es,
        r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: app}
spec:
  refreshInterval: 1h
  secretStoreRef: {name: vault}
  dataFrom:
  - sourceRef:
      generatorRef: {apiVersion: generators.secret-relay.dev/v1alpha1, kind: Password, name: pw}
    rewrite:
    - regexp: {source: "^password$", target: db-password}
"#,
    )
    .await;
    let synced = wait_reason(&es, "app", "SecretSynced").await;
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &ns);
    let s = secrets.get("app").await.unwrap();
    let first = secret_data(&s)["db-password"].clone();
    assert_eq!(secret_data(&s).len(), 1);
    assert_eq!(first.chars().count(), 32);
    assert_eq!(first.chars().filter(char::is_ascii_digit).count(), 5);
    assert!(
        first.chars().all(|c| c.is_ascii_alphanumeric()),
        "no symbols asked for"
    );
    // The state annotation names the key, never the value.
    let state = &s.metadata.annotations.as_ref().unwrap()["secret-relay.dev/generator.0"];
    assert!(state.contains(r#""keys":["db-password"]"#), "{state}");
    assert!(!state.contains(&first));

    // A forced refresh keeps the password.
    es.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"secret-relay.dev/force-sync": "1"}}})),
    )
    .await
    .unwrap();
    synced_after(&es, "app", &synced_version(&synced)).await;
    let kept = secret_data(&secrets.get("app").await.unwrap())["db-password"].clone();
    assert_eq!(
        kept, first,
        "a refresh must not change a generated password"
    );

    // A spec change makes a new one (documented: the values follow the spec's generation).
    let before = synced_version(&es.get("app").await.unwrap());
    es.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"refreshInterval": "2h"}})),
    )
    .await
    .unwrap();
    synced_after(&es, "app", &before).await;
    let renewed = secret_data(&secrets.get("app").await.unwrap())["db-password"].clone();
    assert_ne!(renewed, first);
    assert_eq!(renewed.chars().count(), 32);

    // A generator that does not exist is named in the condition.
    apply_yaml(
        &es,
        r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: missing}
spec:
  secretStoreRef: {name: vault}
  dataFrom:
  - sourceRef:
      generatorRef: {apiVersion: generators.secret-relay.dev/v1alpha1, kind: Password, name: nope}
"#,
    )
    .await;
    let failed = wait_reason(&es, "missing", "SecretSyncedError").await;
    assert_eq!(
        ready_message(&failed),
        format!("generator Password {ns}/nope not found")
    );

    // A template that rewrites a generated key would make the kept value drift: refused.
    apply_yaml(
        &es,
        r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: templated}
spec:
  secretStoreRef: {name: vault}
  target:
    template:
      mergePolicy: Merge
      data: {password: "x{{ .password }}", url: "db://{{ .password }}@db"}
  dataFrom:
  - sourceRef:
      generatorRef: {apiVersion: generators.secret-relay.dev/v1alpha1, kind: Password, name: pw}
"#,
    )
    .await;
    let failed = wait_reason(&es, "templated", "SecretSyncedError").await;
    assert!(
        ready_message(&failed).contains(
            r#"the Secret key "password" of a generator entry must be written as generated"#
        ),
        "{}",
        ready_message(&failed)
    );
    // Adding keys is fine.
    apply_yaml(
        &es,
        r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: templated}
spec:
  secretStoreRef: {name: vault}
  target:
    template:
      mergePolicy: Merge
      data: {url: "db://{{ .password }}@db"}
  dataFrom:
  - sourceRef:
      generatorRef: {apiVersion: generators.secret-relay.dev/v1alpha1, kind: Password, name: pw}
"#,
    )
    .await;
    wait_reason(&es, "templated", "SecretSynced").await;
    let d = secret_data(&secrets.get("templated").await.unwrap());
    assert_eq!(d["url"], format!("db://{}@db", d["password"]));
}

/// ESO's `e2e/suites/generator/password.go`, "generate secrets with password generator" /
/// "using custom resource generator" (with `testcase.go`'s ExternalSecret: `e2e-es`,
/// `refreshInterval: 5s`, target `generated-secret`): a `generatorRef` without `apiVersion`
/// (inferred, as ESO does) to Password `my-generator` of length 24 gives a Secret whose
/// `password` has 24 characters. One difference: our ExternalSecret names a store
/// (`secretStoreRef` is required here; ESO's generator-only ExternalSecret has none).
#[tokio::test]
async fn eso_password_generator_using_custom_resource_generator() {
    let Some(env) = TestEnv::get("eso_password_generator_using_custom_resource_generator").await
    else {
        return;
    };
    let ns = env.namespace("eso-gen-pw").await;
    let _op = operator::start(&env.kube, &ns, false).await;
    vault_store(&env, &ns, "vault", "      path: secret", &env.vault_token).await;
    apply_yaml(
        &Api::<Password>::namespaced(env.kube.clone(), &ns),
        r#"
apiVersion: generators.secret-relay.dev/v1alpha1
kind: Password
metadata: {name: my-generator}
spec: {length: 24}
"#,
    )
    .await;
    let es: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &ns);
    apply_yaml(
        &es,
        r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: e2e-es}
spec:
  refreshInterval: 5s
  secretStoreRef: {name: vault}
  target: {name: generated-secret}
  dataFrom:
  - sourceRef:
      generatorRef: {kind: Password, name: my-generator}
"#,
    )
    .await;
    wait_reason(&es, "e2e-es", "SecretSynced").await;
    let s = Api::<Secret>::namespaced(env.kube.clone(), &ns)
        .get("generated-secret")
        .await
        .unwrap();
    assert_eq!(secret_data(&s)["password"].len(), 24);
}
