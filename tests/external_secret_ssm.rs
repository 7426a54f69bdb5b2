//! ExternalSecrets synced from SSM Parameter Store (moto) into Secrets on the real API server.

mod common;
mod operator;

use std::time::Duration;

use aws_sdk_ssm::types::ParameterType;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use secret_relay::api::{ClusterSecretStore, ExternalSecret, SecretStore};
use serde_json::json;

use common::{TestEnv, random_suffix};
use operator::{apply_yaml, ready_message, secret_data, wait_for, wait_reason, wait_store_refusal};
use secret_relay::{controller::observe::Outcome, providers::shared::now_ms};

struct Fixture {
    env: TestEnv,
    ns: String,
    prefix: String,
    ssm: aws_sdk_ssm::Client,
    es: Api<ExternalSecret>,
    secrets: Api<Secret>,
    _operator: operator::Operator,
}

async fn setup(test: &str) -> Option<Fixture> {
    let env = TestEnv::get(test).await?;
    let operator::SsmNamespace { ns, ssm, prefix } = operator::ssm_namespace(&env, "ssm").await;
    let operator = operator::start(&env.kube, &ns, false).await;
    Some(Fixture {
        es: Api::namespaced(env.kube.clone(), &ns),
        secrets: Api::namespaced(env.kube.clone(), &ns),
        prefix,
        ssm,
        ns,
        env,
        _operator: operator,
    })
}

impl Fixture {
    async fn put(&self, name: &str, value: &str, secure: bool) {
        self.ssm
            .put_parameter()
            .name(format!("{}{name}", self.prefix))
            .value(value)
            .r#type(if secure {
                ParameterType::SecureString
            } else {
                ParameterType::String
            })
            .overwrite(true)
            .send()
            .await
            .expect("put_parameter");
    }

    async fn es(&self, yaml: &str) -> ExternalSecret {
        apply_yaml(&self.es, &yaml.replace("PREFIX", &self.prefix)).await
    }

    async fn secret(&self, name: &str) -> Secret {
        self.secrets.get(name).await.expect("secret exists")
    }
}

#[tokio::test]
async fn data_property_and_metadata() {
    let Some(f) = setup("data_property_and_metadata").await else {
        return;
    };
    f.put("/db/password", "pw-1", true).await;
    f.put(
        "/db/config",
        r#"{"user":"app","port":5432,"tls":{"mode":"verify-full"}}"#,
        false,
    )
    .await;
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: db}
spec:
  refreshInterval: 15m
  secretStoreRef: {name: ssm, kind: SecretStore}
  data:
  - secretKey: password
    remoteRef: {key: PREFIX/db/password}
  - secretKey: user
    remoteRef: {key: PREFIX/db/config, property: user}
  - secretKey: tls-mode
    remoteRef: {key: PREFIX/db/config, property: tls.mode}
"#)
        .await;
    let es = wait_reason(&f.es, "db", "SecretSynced").await;
    let s = f.secret("db").await;
    assert_eq!(
        secret_data(&s),
        [
            ("password", "pw-1"),
            ("tls-mode", "verify-full"),
            ("user", "app")
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    );
    assert_eq!(s.type_.as_deref(), Some("Opaque"));
    let labels = s.metadata.labels.clone().unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "secret-relay");
    assert_eq!(labels["secret-relay.dev/external-secret"], "db");
    let ann = s.metadata.annotations.clone().unwrap();
    assert_eq!(ann["secret-relay.dev/refresh-interval"], "15m");
    assert_eq!(ann["secret-relay.dev/store"], "SecretStore/ssm");
    assert_eq!(
        ann["secret-relay.dev/data-hash"],
        secret_relay::controller::build::data_hash(s.data.as_ref().unwrap())
    );
    assert!(ann["secret-relay.dev/last-refresh"].ends_with('Z'));
    let owner = &s.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ExternalSecret", "db")
    );
    assert_eq!(owner.uid, es.metadata.uid.clone().unwrap());
    let status = es.status.clone().unwrap();
    assert_eq!(status.binding.unwrap().name, "db");
    assert_eq!(status.observed_generation, es.metadata.generation);
    assert!(status.refresh_time.is_some());
    assert!(
        status
            .synced_resource_version
            .unwrap()
            .starts_with(&format!("{}-", es.metadata.generation.unwrap()))
    );
    assert_eq!(ready_message(&es), "Secret db synced from SecretStore/ssm");
    let _ = f.ns;
}

#[tokio::test]
async fn refresh_writes_only_changes_and_force_sync_is_immediate() {
    let Some(f) = setup("refresh_writes_only_changes").await else {
        return;
    };
    f.put("/token", "v1", true).await;
    let yaml = r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: tok}
spec:
  refreshInterval: 1s
  secretStoreRef: {name: ssm}
  data:
  - secretKey: token
    remoteRef: {key: PREFIX/token}
"#;
    f.es(yaml).await;
    wait_reason(&f.es, "tok", "SecretSynced").await;
    let before = f.secret("tok").await;
    // Several refresh cycles with unchanged values: each fetches, none writes.
    let mut seen = operator::observe();
    for i in 0..3 {
        let outcome = seen
            .reconciled(&f.ns, "tok", "a refresh", |o| {
                matches!(o, Outcome::Synced { .. })
            })
            .await;
        assert!(
            matches!(outcome, Outcome::Synced { written: false, .. }),
            "refresh {i} of unchanged values wrote: {outcome:?}"
        );
    }
    let after = f.secret("tok").await;
    assert_eq!(
        before.metadata.resource_version,
        after.metadata.resource_version
    );
    // A changed value reaches the Secret on the next refresh.
    f.put("/token", "v2", true).await;
    wait_for("token v2", Duration::from_secs(30), || async {
        (secret_data(&f.secret("tok").await)["token"] == "v2").then_some(())
    })
    .await;
    // With a long interval, a change waits for force-sync, which applies it at once: the
    // sync of the edit sets the next refresh at the provider's next hourly tick.
    let mut seen = operator::observe();
    f.es(&yaml.replace("refreshInterval: 1s", "refreshInterval: 1h"))
        .await;
    let edited = now_ms();
    let next = seen
        .reconciled(&f.ns, "tok", "the sync of the 1h edit", |o| {
            matches!(o, Outcome::Synced { .. })
        })
        .await;
    let Outcome::Synced {
        next_refresh_ms: Some(next),
        ..
    } = next
    else {
        panic!("the 1h edit set no refresh: {next:?}");
    };
    // The next tick of a 1h interval is within the hour, at the provider's phase.
    assert!(
        next > edited && next <= edited + 3_600_000 + 1_000,
        "next refresh {} ms after the edit",
        next - edited
    );
    wait_reason(&f.es, "tok", "SecretSynced").await;
    f.put("/token", "v3", true).await;
    if next > now_ms() + 30_000 {
        assert_eq!(secret_data(&f.secret("tok").await)["token"], "v2");
    } else {
        eprintln!("the provider's tick falls within 30 s: not checking that v3 waits for it");
    }
    f.es.patch(
        "tok",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"secret-relay.dev/force-sync": "1"}}})),
    )
    .await
    .unwrap();
    wait_for(
        "token v3 after force-sync",
        Duration::from_secs(20),
        || async { (secret_data(&f.secret("tok").await)["token"] == "v3").then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn deleted_or_edited_secret_is_restored() {
    let Some(f) = setup("deleted_or_edited_secret_is_restored").await else {
        return;
    };
    f.put("/k", "value", true).await;
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: drift}
spec:
  secretStoreRef: {name: ssm}
  data:
  - secretKey: k
    remoteRef: {key: PREFIX/k}
"#)
        .await;
    wait_reason(&f.es, "drift", "SecretSynced").await;
    f.secrets
        .delete("drift", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("recreated", Duration::from_secs(20), || async {
        let s = f.secrets.get_opt("drift").await.ok()??;
        (secret_data(&s)["k"] == "value").then_some(())
    })
    .await;
    f.secrets
        .patch(
            "drift",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"k": "tampered"}})),
        )
        .await
        .unwrap();
    wait_for("restored", Duration::from_secs(20), || async {
        (secret_data(&f.secret("drift").await)["k"] == "value").then_some(())
    })
    .await;
}

#[tokio::test]
async fn unowned_secret_is_not_clobbered() {
    let Some(f) = setup("unowned_secret_is_not_clobbered").await else {
        return;
    };
    f.put("/k", "from-ssm", true).await;
    let theirs: Secret = serde_json::from_value(json!({
        "metadata": {"name": "taken"}, "stringData": {"k": "theirs"}
    }))
    .unwrap();
    f.secrets
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: taken}
spec:
  secretStoreRef: {name: ssm}
  data:
  - secretKey: k
    remoteRef: {key: PREFIX/k}
"#)
        .await;
    let es = wait_reason(&f.es, "taken", "SecretSyncedError").await;
    assert_eq!(
        ready_message(&es),
        format!(
            "Secret {}/taken already exists and is not managed by this ExternalSecret; it was left unchanged (delete it, or use creationPolicy Merge)",
            f.ns
        )
    );
    assert_eq!(secret_data(&f.secret("taken").await)["k"], "theirs");
    // No retry can fix it: Stalled too, so kstatus (Flux) reports Failed at once.
    let stalled = condition(&es, "Stalled").expect("Stalled condition");
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "SecretSyncedError")
    );
    assert_eq!(stalled.message, ready_message(&es));
}

/// The `operation` of each `managedFields` entry of `manager` (no subresource).
fn operations(s: &Secret, manager: &str) -> Vec<String> {
    s.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| f.manager.as_deref() == Some(manager) && f.subresource.is_none())
        .filter_map(|f| f.operation.clone())
        .collect()
}

/// A new Secret is made with a plain create (no read first); its `Update` entry in
/// `managedFields` becomes our `Apply` entry at the first change, so that server-side apply
/// still removes a key the ExternalSecret no longer has, and leaves others' fields alone.
#[tokio::test]
async fn created_secret_stays_ours_to_apply() {
    let Some(f) = setup("created_secret_stays_ours_to_apply").await else {
        return;
    };
    f.put("/a", "va", true).await;
    f.put("/b", "vb", true).await;
    let yaml = r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: two}
spec:
  secretStoreRef: {name: ssm}
  data:
  - secretKey: a
    remoteRef: {key: PREFIX/a}
  - secretKey: b
    remoteRef: {key: PREFIX/b}
"#;
    f.es(yaml).await;
    wait_reason(&f.es, "two", "SecretSynced").await;
    let created = f.secret("two").await;
    assert_eq!(secret_data(&created).len(), 2);
    assert_eq!(operations(&created, "secret-relay"), ["Update"]);
    // Someone else labels the Secret with a field manager of their own.
    f.secrets
        .patch(
            "two",
            &PatchParams {
                field_manager: Some("team-tooling".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"metadata": {"labels": {"team": "payments"}}})),
        )
        .await
        .unwrap();
    // The ExternalSecret drops key b: the next write removes it.
    let one = yaml.replace("  - secretKey: b\n    remoteRef: {key: PREFIX/b}\n", "");
    assert_ne!(one, yaml);
    f.es(&one).await;
    let updated = wait_for("key b removed", Duration::from_secs(30), || async {
        let s = f.secret("two").await;
        (!secret_data(&s).contains_key("b")).then_some(s)
    })
    .await;
    assert_eq!(secret_data(&updated)["a"], "va");
    assert_eq!(operations(&updated, "secret-relay"), ["Apply"]);
    assert_eq!(updated.metadata.labels.unwrap()["team"], "payments");
    // Later applies keep removing keys: a renamed key replaces the old one.
    f.es(&one.replace("secretKey: a", "secretKey: renamed"))
        .await;
    let renamed = wait_for("key a renamed", Duration::from_secs(30), || async {
        let s = f.secret("two").await;
        secret_data(&s).contains_key("renamed").then_some(s)
    })
    .await;
    assert_eq!(
        secret_data(&renamed).keys().collect::<Vec<_>>(),
        ["renamed"]
    );
    assert_eq!(operations(&renamed, "secret-relay"), ["Apply"]);
}

/// The condition of `type_` in the ExternalSecret's status.
fn condition(
    es: &ExternalSecret,
    type_: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    es.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

#[tokio::test]
async fn missing_key_reports_cause_and_keeps_secret() {
    let Some(f) = setup("missing_key_reports_cause").await else {
        return;
    };
    f.put("/a", "A", true).await;
    let yaml = r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: keep}
spec:
  secretStoreRef: {name: ssm}
  data:
  - secretKey: a
    remoteRef: {key: PREFIX/a}
"#;
    f.es(yaml).await;
    wait_reason(&f.es, "keep", "SecretSynced").await;
    let before = f.secret("keep").await;
    f.es(&yaml.replace("PREFIX/a}", "PREFIX/missing}")).await;
    let es = wait_reason(&f.es, "keep", "SecretSyncedError").await;
    assert_eq!(
        ready_message(&es),
        format!(
            "ssm GetParameters \"{}/missing\": ParameterNotFound",
            f.prefix
        )
    );
    assert!(
        condition(&es, "Stalled").is_none(),
        "a missing parameter may appear: retried, not stalled"
    );
    let after = f.secret("keep").await;
    assert_eq!(secret_data(&after)["a"], "A");
    assert_eq!(
        before.metadata.resource_version,
        after.metadata.resource_version
    );
    // A bad property path is reported as such, naming the key.
    f.es(&yaml.replace("PREFIX/a}", "PREFIX/a, property: x.y}"))
        .await;
    let es = wait_reason(&f.es, "keep", "SecretSyncedError").await;
    assert_eq!(
        ready_message(&es),
        format!(
            "\"{}/a\": value is not JSON, cannot select property \"x.y\"",
            f.prefix
        )
    );
    let stalled = condition(&es, "Stalled").expect("an invalid spec stalls");
    assert_eq!(stalled.status, "True");
    assert_eq!(stalled.message, ready_message(&es));
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(f.env.kube.clone(), &f.ns);
    let list = events.list(&Default::default()).await.unwrap();
    assert!(
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("SyncFailed")
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("ParameterNotFound"))),
        "a Warning SyncFailed event names the cause"
    );
    // Fixed: Ready again, and no longer Stalled.
    f.es(yaml).await;
    let es = wait_reason(&f.es, "keep", "SecretSynced").await;
    assert!(condition(&es, "Stalled").is_none(), "{:?}", es.status);
}

#[tokio::test]
async fn data_from_find_extract_rewrite_and_template() {
    let Some(f) = setup("data_from_find_extract_rewrite").await else {
        return;
    };
    f.put("/svc/a", "1", false).await;
    f.put("/svc/nested/b", "2", true).await;
    f.put("/json", r#"{"user":"u","pass":"p"}"#, true).await;
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: many}
spec:
  secretStoreRef: {name: ssm}
  target:
    template:
      type: kubernetes.io/basic-auth
      mergePolicy: Merge
      data:
        username: "{{ .user }}"
        dsn: "{{ .user }}:{{ .pass }}@{{ .svc_a }}"
  dataFrom:
  - find: {path: PREFIX/svc}
    rewrite:
    - regexp: {source: "^.*/svc/", target: "svc_"}
    - regexp: {source: "/", target: "_"}
  - find: {path: PREFIX/svc, name: {regexp: "/a$"}}
  - extract: {key: PREFIX/json}
"#)
        .await;
    wait_reason(&f.es, "many", "SecretSynced").await;
    let s = f.secret("many").await;
    let d = secret_data(&s);
    assert_eq!(d["svc_a"], "1");
    assert_eq!(d["svc_nested_b"], "2");
    // Without rewrite, ESO's key for `/<prefix>/svc/a`: every `/` becomes `_`, the first too.
    assert_eq!(
        d[&format!("_{}_svc_a", f.prefix.trim_start_matches('/'))],
        "1"
    );
    assert_eq!(d["user"], "u");
    assert_eq!(d["pass"], "p");
    assert_eq!(d["username"], "u");
    assert_eq!(d["dsn"], "u:p@1");
    assert_eq!(d.len(), 7);
    assert_eq!(s.type_.as_deref(), Some("kubernetes.io/basic-auth"));
}

#[tokio::test]
async fn store_faults_are_reported() {
    let Some(f) = setup("store_faults_are_reported").await else {
        return;
    };
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: nostore}
spec:
  secretStoreRef: {name: absent}
  data:
  - secretKey: k
    remoteRef: {key: /x}
"#)
        .await;
    let es = wait_reason(&f.es, "nostore", "SecretStoreNotReady").await;
    assert_eq!(
        ready_message(&es),
        format!("SecretStore {}/absent not found", f.ns)
    );
    let stores: Api<SecretStore> = Api::namespaced(f.env.kube.clone(), &f.ns);
    apply_yaml(
        &stores,
        &format!(
            r#"
apiVersion: secret-relay.dev/v1alpha1
kind: SecretStore
metadata: {{name: nocreds}}
spec:
  provider:
    aws:
      region: us-east-1
      endpoint: {}
      auth:
        secretRef:
          accessKeyIDSecretRef: {{name: gone, key: id}}
          secretAccessKeySecretRef: {{name: gone, key: secret}}
"#,
            f.env.aws_endpoint
        ),
    )
    .await;
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: nocreds}
spec:
  secretStoreRef: {name: nocreds}
  data:
  - secretKey: k
    remoteRef: {key: /x}
"#)
        .await;
    let es = wait_store_refusal(&f.es, "nocreds").await;
    assert!(
        ready_message(&es).contains(&format!("credentials Secret {}/gone not found", f.ns)),
        "{}",
        ready_message(&es)
    );
    let store = operator::wait_store_refused(&stores, "nocreds").await;
    assert_eq!(store.reason, "InvalidProviderConfig");
}

#[tokio::test]
async fn creation_and_deletion_policies() {
    let Some(f) = setup("creation_and_deletion_policies").await else {
        return;
    };
    f.put("/m", "merged", true).await;
    f.put("/gone", "soon", true).await;
    let theirs: Secret = serde_json::from_value(json!({
        "metadata": {"name": "shared"}, "type": "Opaque", "stringData": {"keep": "mine"}
    }))
    .unwrap();
    f.secrets
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: merge}
spec:
  secretStoreRef: {name: ssm}
  target: {name: shared, creationPolicy: Merge}
  data:
  - secretKey: added
    remoteRef: {key: PREFIX/m}
"#)
        .await;
    wait_reason(&f.es, "merge", "SecretSynced").await;
    let d = secret_data(&f.secret("shared").await);
    assert_eq!(
        (d["keep"].as_str(), d["added"].as_str()),
        ("mine", "merged")
    );

    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: merge-missing}
spec:
  secretStoreRef: {name: ssm}
  target: {name: nowhere, creationPolicy: Merge}
  data:
  - secretKey: added
    remoteRef: {key: PREFIX/m}
"#)
        .await;
    wait_reason(&f.es, "merge-missing", "SecretMissing").await;
    assert!(f.secrets.get_opt("nowhere").await.unwrap().is_none());

    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: none}
spec:
  secretStoreRef: {name: ssm}
  target: {creationPolicy: None}
  data:
  - secretKey: k
    remoteRef: {key: PREFIX/m}
"#)
        .await;
    wait_reason(&f.es, "none", "SecretSynced").await;
    assert!(f.secrets.get_opt("none").await.unwrap().is_none());

    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: orphan}
spec:
  secretStoreRef: {name: ssm}
  target: {creationPolicy: Orphan}
  data:
  - secretKey: k
    remoteRef: {key: PREFIX/m}
"#)
        .await;
    wait_reason(&f.es, "orphan", "SecretSynced").await;
    assert!(f.secret("orphan").await.metadata.owner_references.is_none());

    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: del}
spec:
  refreshInterval: 1s
  secretStoreRef: {name: ssm}
  target: {deletionPolicy: Delete}
  data:
  - secretKey: k
    remoteRef: {key: PREFIX/gone}
"#)
        .await;
    wait_reason(&f.es, "del", "SecretSynced").await;
    f.ssm
        .delete_parameter()
        .name(format!("{}/gone", f.prefix))
        .send()
        .await
        .unwrap();
    wait_reason(&f.es, "del", "SecretDeleted").await;
    assert!(f.secrets.get_opt("del").await.unwrap().is_none());
}

#[tokio::test]
async fn invalid_combinations_are_refused_by_the_api_server() {
    let Some(f) = setup("invalid_combinations_are_refused").await else {
        return;
    };
    let bad = r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: bad}
spec:
  secretStoreRef: {name: ssm}
  target: {creationPolicy: Merge, deletionPolicy: Delete}
  data:
  - secretKey: k
    remoteRef: {key: /x}
"#;
    let obj: ExternalSecret = serde_yaml::from_str(bad).unwrap();
    let err = f.es.create(&PostParams::default(), &obj).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("deletionPolicy Delete requires creationPolicy Owner"),
        "{err}"
    );
    let two = r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: bad2}
spec:
  secretStoreRef: {name: ssm}
  dataFrom:
  - extract: {key: /x}
    find: {path: /y}
"#;
    let obj: ExternalSecret = serde_yaml::from_str(two).unwrap();
    let err = f.es.create(&PostParams::default(), &obj).await.unwrap_err();
    assert!(
        err.to_string().contains("exactly one of extract and find"),
        "{err}"
    );
    let dup: serde_json::Value = json!({
        "apiVersion": "secret-relay.dev/v1alpha1", "kind": "ExternalSecret",
        "metadata": {"name": "bad3"},
        "spec": {"secretStoreRef": {"name": "ssm"}, "data": [
            {"secretKey": "k", "remoteRef": {"key": "/a"}},
            {"secretKey": "k", "remoteRef": {"key": "/b"}}]}
    });
    let obj: ExternalSecret = serde_json::from_value(dup).unwrap();
    let err = f.es.create(&PostParams::default(), &obj).await.unwrap_err();
    assert!(err.to_string().contains("Duplicate value"), "{err}");
}

#[tokio::test]
async fn cluster_store_conditions_limit_namespaces() {
    let Some(env) = TestEnv::get("cluster_store_conditions").await else {
        return;
    };
    let ns = env.namespace("css").await;
    let _op = operator::start(&env.kube, &ns, true).await;
    let ssm = env.ssm().await;
    let key = format!("/{}/css", random_suffix());
    operator::put_parameter(&ssm, &key, "cluster").await;
    let creds_ns = env.namespace("css-creds").await;
    let creds: Secret = serde_json::from_value(json!({
        "metadata": {"name": "aws-creds"}, "stringData": {"id": "testing", "secret": "testing"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(env.kube.clone(), &creds_ns)
        .create(&PostParams::default(), &creds)
        .await
        .unwrap();
    let css: Api<ClusterSecretStore> = Api::all(env.kube.clone());
    let store = |name: &str, condition: &str| {
        format!(
            r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ClusterSecretStore
metadata: {{name: {name}}}
spec:
  conditions:
  - {condition}
  provider:
    aws:
      region: {region}
      endpoint: {endpoint}
      auth:
        secretRef:
          accessKeyIDSecretRef: {{name: aws-creds, key: id, namespace: {creds_ns}}}
          secretAccessKeySecretRef: {{name: aws-creds, key: secret, namespace: {creds_ns}}}
"#,
            region = env.aws_region,
            endpoint = env.aws_endpoint
        )
    };
    // Each condition kind, once matching this namespace and once not. Test namespaces carry
    // the label secret-relay.dev/test=true and are named css-<random>.
    let cases = [
        ("names-in", format!("namespaces: [{ns}]"), true),
        (
            "names-out",
            "namespaces: [somewhere-else]".to_string(),
            false,
        ),
        (
            "selector-in",
            "namespaceSelector: {matchLabels: {secret-relay.dev/test: \"true\"}}".to_string(),
            true,
        ),
        (
            "selector-out",
            "namespaceSelector: {matchExpressions: [{key: team, operator: Exists}]}".to_string(),
            false,
        ),
        (
            "regex-in",
            "namespaceRegexes: [\"^css-[0-9a-f]+$\"]".to_string(),
            true,
        ),
        (
            "regex-out",
            "namespaceRegexes: [\"^prod-\"]".to_string(),
            false,
        ),
        // ESO's rule (issue 26): any field of a condition admits (they were ANDed here)...
        (
            "any-field",
            "{namespaces: [somewhere-else], namespaceRegexes: [\"^css-[0-9a-f]+$\"]}".to_string(),
            true,
        ),
        // ...a condition that names nothing admits nobody (it admitted everyone here)...
        ("empty", "{}".to_string(), false),
        // ...and an invalid selector closes the store, whatever else matches.
        (
            "invalid",
            format!(
                "{{namespaces: [{ns}], namespaceSelector: {{matchExpressions: [{{key: team, operator: Sometimes}}]}}}}"
            ),
            false,
        ),
    ];
    let suffix = random_suffix();
    let es: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &ns);
    for (case, condition, _) in &cases {
        let name = format!("{case}-{suffix}");
        apply_yaml(&css, &store(&name, condition)).await;
        apply_yaml(
            &es,
            &format!(
                r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {{name: {name}}}
spec:
  secretStoreRef: {{name: {name}, kind: ClusterSecretStore}}
  data:
  - secretKey: v
    remoteRef: {{key: {key}}}
"#
            ),
        )
        .await;
    }
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &ns);
    for (case, _, allowed) in &cases {
        let name = format!("{case}-{suffix}");
        if *allowed {
            wait_reason(&es, &name, "SecretSynced").await;
            assert_eq!(
                secret_data(&secrets.get(&name).await.unwrap())["v"],
                "cluster",
                "{case}"
            );
        } else {
            // The ExternalSecret may first see the store missing from the cache; wait for the
            // verdict on the store itself.
            let expected = format!(
                "ClusterSecretStore {name} does not allow namespace {ns} (spec.conditions)"
            );
            wait_for(
                &format!("{case}: {expected}"),
                Duration::from_secs(30),
                || async {
                    let e = es.get(&name).await.ok()?;
                    (ready_message(&e) == expected).then_some(())
                },
            )
            .await;
            let refused = wait_reason(&es, &name, "SecretStoreNotReady").await;
            assert_eq!(ready_message(&refused), expected, "{case}");
            assert!(
                secrets.get_opt(&name).await.unwrap().is_none(),
                "{case}: no Secret"
            );
        }
    }
    for (case, _, _) in &cases {
        css.delete(&format!("{case}-{suffix}"), &DeleteParams::default())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn decoding_conversion_tags_and_immutable() {
    let Some(f) = setup("decoding_conversion_tags_and_immutable").await else {
        return;
    };
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode("binary\u{0}ok");
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xfb, 0xff, 0x01]);
    f.put("/enc/std", &b64, true).await;
    f.put("/enc/url", &b64url, true).await;
    f.put("/enc/plain", "not base64!", true).await;
    f.put("/enc/unicode", r"caf\u00e9 \u2713", false).await;
    // Tagged parameters: only those with team=payments (and below the path) are found.
    for (name, team) in [
        ("/tagged/a", "payments"),
        ("/tagged/b", "payments"),
        ("/tagged/c", "search"),
    ] {
        f.ssm
            .put_parameter()
            .name(format!("{}{name}", f.prefix))
            .value(format!("v{name}"))
            .r#type(ParameterType::String)
            .tags(
                aws_sdk_ssm::types::Tag::builder()
                    .key("team")
                    .value(team)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("put tagged parameter");
    }
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: enc}
spec:
  target:
    immutable: true
  dataFrom:
  - find:
      path: PREFIX/tagged
      tags: {team: payments}
    rewrite:
    - regexp: {source: ".*/tagged/", target: "tag-"}
  - find: {path: PREFIX/enc, name: {regexp: "unicode$"}, conversionStrategy: Unicode}
  data:
  - secretKey: std
    remoteRef: {key: PREFIX/enc/std, decodingStrategy: Base64}
  - secretKey: url
    remoteRef: {key: PREFIX/enc/url, decodingStrategy: Base64URL}
  - secretKey: auto-b64
    remoteRef: {key: PREFIX/enc/std, decodingStrategy: Auto}
  - secretKey: auto-plain
    remoteRef: {key: PREFIX/enc/plain, decodingStrategy: Auto}
  - secretKey: unicode
    remoteRef: {key: PREFIX/enc/unicode, conversionStrategy: Unicode}
  - secretKey: raw-unicode
    remoteRef: {key: PREFIX/enc/unicode}
  refreshInterval: 1h
  secretStoreRef: {name: ssm}
"#)
        .await;
    wait_reason(&f.es, "enc", "SecretSynced").await;
    // ESO's Unicode conversion of the found name `/<prefix>/enc/unicode`.
    let unicode_key = format!(
        "_U002f_{}_U002f_enc_U002f_unicode",
        f.prefix.trim_start_matches('/')
    );
    let s = f.secret("enc").await;
    let raw: std::collections::BTreeMap<String, Vec<u8>> = s
        .data
        .clone()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    let expected: std::collections::BTreeMap<String, Vec<u8>> = [
        ("std", b"binary\0ok".to_vec()),
        ("url", vec![0xfb, 0xff, 0x01]),
        ("auto-b64", b"binary\0ok".to_vec()),
        ("auto-plain", b"not base64!".to_vec()),
        // As in ESO, conversionStrategy converts dataFrom keys, never values.
        ("unicode", br"caf\u00e9 \u2713".to_vec()),
        ("raw-unicode", br"caf\u00e9 \u2713".to_vec()),
        (unicode_key.as_str(), br"caf\u00e9 \u2713".to_vec()),
        ("tag-a", b"v/tagged/a".to_vec()),
        ("tag-b", b"v/tagged/b".to_vec()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(raw, expected);
    assert_eq!(s.immutable, Some(true));

    // An immutable Secret whose remote values changed is reported, not replaced.
    f.put("/enc/plain", "changed", true).await;
    f.es.patch(
        "enc",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"annotations": {"secret-relay.dev/force-sync": "1"}}})),
    )
    .await
    .unwrap();
    let es = wait_reason(&f.es, "enc", "SecretSyncedError").await;
    assert_eq!(
        ready_message(&es),
        format!(
            "Secret {}/enc is immutable and its data differs from the remote values; delete it to let secret-relay recreate it",
            f.ns
        )
    );
    assert_eq!(
        f.secret("enc").await.data,
        s.data,
        "the immutable Secret is left as it was"
    );

    // Base64 decoding of a value that is not base64 names the key.
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: bad-b64}
spec:
  secretStoreRef: {name: ssm}
  data:
  - secretKey: plain
    remoteRef: {key: PREFIX/enc/unicode, decodingStrategy: Base64}
"#)
        .await;
    let es = wait_reason(&f.es, "bad-b64", "SecretSyncedError").await;
    assert!(
        ready_message(&es).starts_with("\"plain\": "),
        "{}",
        ready_message(&es)
    );
    assert!(
        !ready_message(&es).contains("caf"),
        "no value in the message"
    );
}

#[tokio::test]
async fn secret_store_refuses_other_namespaces() {
    let Some(f) = setup("secret_store_refuses_other_namespaces").await else {
        return;
    };
    let stores: Api<SecretStore> = Api::namespaced(f.env.kube.clone(), &f.ns);
    apply_yaml(
        &stores,
        &format!(
            r#"
apiVersion: secret-relay.dev/v1alpha1
kind: SecretStore
metadata: {{name: borrow}}
spec:
  provider:
    aws:
      region: {region}
      endpoint: {endpoint}
      auth:
        secretRef:
          accessKeyIDSecretRef: {{name: aws-creds, key: id, namespace: kube-system}}
          secretAccessKeySecretRef: {{name: aws-creds, key: secret, namespace: kube-system}}
"#,
            region = f.env.aws_region,
            endpoint = f.env.aws_endpoint
        ),
    )
    .await;
    f.put("/x", "x", false).await;
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: borrow}
spec:
  secretStoreRef: {name: borrow}
  data:
  - secretKey: x
    remoteRef: {key: PREFIX/x}
"#)
        .await;
    let es = wait_store_refusal(&f.es, "borrow").await;
    assert_eq!(
        ready_message(&es),
        "SecretStore/borrow: secret reference: namespace \"kube-system\" is not allowed in a SecretStore (references resolve in the store's namespace)"
    );
    let store = operator::wait_store_refused(&stores, "borrow").await;
    assert_eq!(store.reason, "InvalidProviderConfig");
    assert!(
        store
            .message
            .contains("namespace \"kube-system\" is not allowed"),
        "{}",
        store.message
    );
}

/// issue 10: a SecretStore without `auth` used the operator's own identity, so any tenant who
/// may create a SecretStore read everything the operator's role can, and with a custom
/// endpoint the operator's credentials went to a server the tenant chose. A SecretStore must
/// name its credentials; a ClusterSecretStore (made by an admin) may use the operator's own.
#[tokio::test]
async fn secret_stores_cannot_borrow_the_operators_identity() {
    let Some(env) = TestEnv::get("secret_stores_cannot_borrow_the_operators_identity").await else {
        return;
    };
    let ns = env.namespace("ambient").await;
    let _op = operator::start(&env.kube, &ns, true).await;
    let ssm = env.ssm().await;
    let key = format!("/{}/ambient", random_suffix());
    operator::put_parameter(&ssm, &key, "admin-only").await;
    let stores: Api<SecretStore> = Api::namespaced(env.kube.clone(), &ns);
    let es: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &ns);
    let tenant_stores = [
        (
            "ambient",
            format!("aws: {{region: {}}}", env.aws_region),
            "SecretStore/ambient: aws has no auth, so it would use the AWS SDK's default chain (the operator's own identity), which a SecretStore may not use; name credentials in auth, use a ClusterSecretStore, or run the operator with --allow-secret-store-ambient-identity".to_string(),
        ),
        (
            "ambient-endpoint",
            format!(
                "aws: {{region: {}, endpoint: '{}'}}",
                env.aws_region, env.aws_endpoint
            ),
            format!(
                "SecretStore/ambient-endpoint: aws has no auth, so it would use the AWS SDK's default chain (the operator's own identity), and the operator's identity is never sent to an endpoint a SecretStore names ({}); name credentials in auth",
                env.aws_endpoint
            ),
        ),
        (
            "gcp-workload-identity",
            "kms: {gcp: {endpoint: 'http://127.0.0.1:9', auth: {workloadIdentity: {}}}}".into(),
            "SecretStore/gcp-workload-identity: kms.gcp has no auth.secretRef, so it would use Workload Identity (the operator's own identity), and the operator's identity is never sent to an endpoint a SecretStore names (http://127.0.0.1:9); name credentials in auth".into(),
        ),
    ];
    for (name, provider, message) in &tenant_stores {
        apply_yaml(
            &stores,
            &format!(
                "apiVersion: secret-relay.dev/v1alpha1\nkind: SecretStore\nmetadata: {{name: {name}}}\nspec:\n  provider: {{{provider}}}\n"
            ),
        )
        .await;
        apply_yaml(
            &es,
            &format!(
                "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata: {{name: {name}}}\nspec:\n  secretStoreRef: {{name: {name}}}\n  data:\n  - secretKey: v\n    remoteRef: {{key: '{key}'}}\n"
            ),
        )
        .await;
        let synced = wait_store_refusal(&es, name).await;
        assert_eq!(&ready_message(&synced), message);
        let store = operator::wait_store_refused(&stores, name).await;
        assert_eq!(store.reason, "InvalidProviderConfig");
        let unprefixed = message.split_once(": ").unwrap().1;
        assert_eq!(store.message, unprefixed);
    }
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &ns);
    assert!(secrets.get_opt("ambient").await.unwrap().is_none());

    // The same provider in a ClusterSecretStore: the admin's choice, allowed (the test
    // process's AWS environment points the default chain at moto).
    let cluster = format!("ambient-{}", random_suffix());
    apply_yaml(
        &Api::<ClusterSecretStore>::all(env.kube.clone()),
        &format!(
            "apiVersion: secret-relay.dev/v1alpha1\nkind: ClusterSecretStore\nmetadata: {{name: {cluster}}}\nspec:\n  conditions: [{{namespaces: [{ns}]}}]\n  provider: {{aws: {{region: {}}}}}\n",
            env.aws_region
        ),
    )
    .await;
    apply_yaml(
        &es,
        &format!(
            "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata: {{name: from-cluster}}\nspec:\n  secretStoreRef: {{name: {cluster}, kind: ClusterSecretStore}}\n  data:\n  - secretKey: v\n    remoteRef: {{key: '{key}'}}\n"
        ),
    )
    .await;
    wait_reason(&es, "from-cluster", "SecretSynced").await;
    let data = secret_data(&secrets.get("from-cluster").await.unwrap());
    assert_eq!(data["v"], "admin-only");
    Api::<ClusterSecretStore>::all(env.kube.clone())
        .delete(&cluster, &DeleteParams::default())
        .await
        .unwrap();
}

/// issue 10: after a restart, ExternalSecrets briefly reported "SecretStore ... not found",
/// with a Warning event, because they were reconciled before the store cache had its first
/// list. A new operator now waits for its caches: no failure, no event, no rewrite.
#[tokio::test]
async fn restart_reports_nothing_before_the_caches_sync() {
    let Some(f) = setup("restart_reports_nothing_before_the_caches_sync").await else {
        return;
    };
    let Fixture {
        env,
        ns,
        prefix,
        ssm: _,
        es,
        secrets,
        _operator: first,
    } = f;
    let put = env.ssm().await;
    put.put_parameter()
        .name(format!("{prefix}/v"))
        .value("v1")
        .r#type(ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    const N: usize = 30;
    for i in 0..N {
        apply_yaml(
            &es,
            &format!(
                "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata: {{name: es-{i}}}\nspec:\n  refreshInterval: 1h\n  secretStoreRef: {{name: ssm}}\n  data:\n  - secretKey: v\n    remoteRef: {{key: '{prefix}/v'}}\n"
            ),
        )
        .await;
    }
    for i in 0..N {
        wait_reason(&es, &format!("es-{i}"), "SecretSynced").await;
    }
    let versions = |list: Vec<Secret>| {
        list.into_iter()
            .map(|s| {
                (
                    s.metadata.name.unwrap(),
                    s.metadata.resource_version.unwrap(),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let before = versions(secrets.list(&Default::default()).await.unwrap().items);
    drop(first);
    let _second = operator::start(&env.kube, &ns, false).await;
    // The new operator is at work once it restores a deleted Secret.
    secrets
        .delete("es-0", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("es-0 restored", Duration::from_secs(60), || async {
        secrets.get_opt("es-0").await.unwrap()
    })
    .await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.kube.clone(), &ns);
    let warnings: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.note)
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
    for i in 0..N {
        let got = es.get(&format!("es-{i}")).await.unwrap();
        assert_eq!(
            condition(&got, "Ready").map(|c| c.reason),
            Some("SecretSynced".to_string())
        );
    }
    let after = versions(secrets.list(&Default::default()).await.unwrap().items);
    let rewritten: Vec<_> = before
        .iter()
        .filter(|(name, rv)| *name != "es-0" && after.get(*name) != Some(rv))
        .collect();
    assert!(rewritten.is_empty(), "{rewritten:?}");
}

/// ESO's `refreshPolicy` (CreatedOnce, OnChange) and `creationPolicy: CreateOrMerge`.
#[tokio::test]
async fn refresh_policies_and_create_or_merge() {
    let Some(f) = setup("refresh_policies_and_create_or_merge").await else {
        return;
    };
    f.put("/p", "v1", true).await;
    let mut seen = operator::observe();
    for (name, policy) in [("once", "CreatedOnce"), ("on-change", "OnChange")] {
        f.es(&format!(
            r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {{name: {name}}}
spec:
  refreshInterval: 1s
  refreshPolicy: {policy}
  secretStoreRef: {{name: ssm}}
  data:
  - secretKey: v
    remoteRef: {{key: PREFIX/p}}
"#
        ))
        .await;
        wait_reason(&f.es, name, "SecretSynced").await;
        assert_eq!(secret_data(&f.secret(name).await)["v"], "v1");
        // Neither refreshes on the 1 s interval: its first sync sets no refresh timer.
        let first = seen
            .reconciled(&f.ns, name, "its first sync", |o| {
                matches!(o, Outcome::Synced { .. })
            })
            .await;
        assert!(
            matches!(
                first,
                Outcome::Synced {
                    next_refresh_ms: None,
                    ..
                }
            ),
            "{name}: {first:?}"
        );
    }
    f.put("/p", "v2", true).await;
    for name in ["once", "on-change"] {
        assert_eq!(secret_data(&f.secret(name).await)["v"], "v1", "{name}");
    }
    // A change of the ExternalSecret (the force-sync annotation) syncs OnChange, not
    // CreatedOnce.
    let mut seen = operator::observe();
    for name in ["once", "on-change"] {
        f.es.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"secret-relay.dev/force-sync": "1"}}}),
            ),
        )
        .await
        .unwrap();
    }
    wait_for(
        "on-change synced after its change",
        Duration::from_secs(30),
        || async { (secret_data(&f.secret("on-change").await)["v"] == "v2").then_some(()) },
    )
    .await;
    let once = seen
        .reconciled(&f.ns, "once", "the reconcile of its change", |o| {
            *o != Outcome::Deferred
        })
        .await;
    assert!(
        matches!(once, Outcome::UpToDate { .. }),
        "CreatedOnce synced on a change: {once:?}"
    );
    assert_eq!(secret_data(&f.secret("once").await)["v"], "v1");
    // A deleted Secret is restored under CreatedOnce too.
    f.secrets.delete("once", &Default::default()).await.unwrap();
    wait_for(
        "the CreatedOnce Secret restored",
        Duration::from_secs(30),
        || async { f.secrets.get_opt("once").await.ok()?.map(|_| ()) },
    )
    .await;

    // CreateOrMerge: merged into someone's Secret, their keys kept; created when missing
    // (again after a deletion), never owned.
    let theirs: Secret = serde_json::from_value(json!({
        "metadata": {"name": "theirs"}, "type": "Opaque", "stringData": {"keep": "mine"}
    }))
    .unwrap();
    f.secrets
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    for (name, target) in [("com-existing", "theirs"), ("com-missing", "made")] {
        f.es(&format!(
            r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {{name: {name}}}
spec:
  secretStoreRef: {{name: ssm}}
  target: {{name: {target}, creationPolicy: CreateOrMerge}}
  data:
  - secretKey: added
    remoteRef: {{key: PREFIX/p}}
"#
        ))
        .await;
        wait_reason(&f.es, name, "SecretSynced").await;
    }
    let merged = f.secret("theirs").await;
    let d = secret_data(&merged);
    assert_eq!((d["keep"].as_str(), d["added"].as_str()), ("mine", "v2"));
    assert!(merged.metadata.owner_references.is_none());
    let made = f.secret("made").await;
    assert_eq!(secret_data(&made)["added"], "v2");
    assert!(
        made.metadata.owner_references.is_none(),
        "CreateOrMerge never owns"
    );
    f.secrets.delete("made", &Default::default()).await.unwrap();
    wait_for(
        "the CreateOrMerge Secret created again",
        Duration::from_secs(30),
        || async { f.secrets.get_opt("made").await.ok()?.map(|_| ()) },
    )
    .await;
    f.es.delete("com-missing", &Default::default())
        .await
        .unwrap();
    wait_for(
        "the ExternalSecret gone",
        Duration::from_secs(30),
        || async {
            f.es.get_opt("com-missing")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert!(
        f.secrets.get_opt("made").await.unwrap().is_some(),
        "the Secret outlives its ExternalSecret"
    );
}

/// ESO's `metadataPolicy: Fetch` on SSM: the parameter's tags (`ListTagsForResource`).
#[tokio::test]
async fn metadata_policy_fetch_reads_tags() {
    let Some(f) = setup("metadata_policy_fetch_reads_tags").await else {
        return;
    };
    f.put("/tagged", "value", true).await;
    for (k, v) in [("team", "payments"), ("cost-center", "42")] {
        f.ssm
            .add_tags_to_resource()
            .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::Parameter)
            .resource_id(format!("{}/tagged", f.prefix))
            .tags(
                aws_sdk_ssm::types::Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("AddTagsToResource");
    }
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: tags}
spec:
  secretStoreRef: {name: ssm}
  dataFrom:
  - extract: {key: PREFIX/tagged, metadataPolicy: Fetch}
  data:
  - secretKey: the-team
    remoteRef: {key: PREFIX/tagged, metadataPolicy: Fetch, property: team}
  - secretKey: value
    remoteRef: {key: PREFIX/tagged}
"#)
        .await;
    wait_reason(&f.es, "tags", "SecretSynced").await;
    assert_eq!(
        secret_data(&f.secret("tags").await),
        [
            ("cost-center", "42"),
            ("team", "payments"),
            ("the-team", "payments"),
            ("value", "value")
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    );
    // A parameter that does not exist is reported as missing, as for its value.
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: no-tags}
spec:
  secretStoreRef: {name: ssm}
  data:
  - secretKey: t
    remoteRef: {key: PREFIX/nothing, metadataPolicy: Fetch, property: team}
"#)
        .await;
    let es = wait_reason(&f.es, "no-tags", "SecretSyncedError").await;
    assert!(
        ready_message(&es).contains("nothing"),
        "{}",
        ready_message(&es)
    );
}

/// `templateFrom` reads a ConfigMap of the ExternalSecret's namespace at every sync: missing,
/// it is a clear error (no value quoted) and nothing is written; created, the Secret follows;
/// changed, the change lands at the next refresh; deleted, the Secret stays as it was.
#[tokio::test]
async fn template_from_config_map_follows_its_changes() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let Some(f) = setup("template_from_config_map_follows_its_changes").await else {
        return;
    };
    f.put("/tf/password", "tf-s3cret-value", true).await;
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: tf}
spec:
  refreshInterval: 3s
  secretStoreRef: {name: ssm, kind: SecretStore}
  target:
    template:
      templateFrom:
      - configMap:
          name: tpl
          items: [{key: url}, {key: env, templateAs: KeysAndValues}]
  data:
  - secretKey: pw
    remoteRef: {key: PREFIX/tf/password}
"#)
        .await;
    let es = wait_reason(&f.es, "tf", "SecretSyncedError").await;
    let msg = ready_message(&es);
    assert_eq!(
        msg,
        format!("templateFrom: ConfigMap {}/tpl not found", f.ns)
    );
    assert!(f.secrets.get_opt("tf").await.unwrap().is_none());

    let cms: Api<ConfigMap> = Api::namespaced(f.env.kube.clone(), &f.ns);
    let cm = |url: &str| -> ConfigMap {
        serde_json::from_value(json!({
            "metadata": {"name": "tpl"},
            "data": {"url": url, "env": "DB_PASSWORD: '{{ .pw }}'"}
        }))
        .unwrap()
    };
    cms.create(&PostParams::default(), &cm("db://app:{{ .pw }}@db"))
        .await
        .unwrap();
    let want = |url: &str| -> std::collections::BTreeMap<String, String> {
        [("url", url), ("DB_PASSWORD", "tf-s3cret-value")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let first = want("db://app:tf-s3cret-value@db");
    wait_for(
        "Secret tf from the ConfigMap",
        Duration::from_secs(60),
        || async {
            let s = f.secrets.get_opt("tf").await.unwrap()?;
            (secret_data(&s) == first).then_some(())
        },
    )
    .await;

    cms.replace("tpl", &PostParams::default(), &cm("db2://{{ .pw }}"))
        .await
        .unwrap();
    let second = want("db2://tf-s3cret-value");
    wait_for(
        "the changed ConfigMap at the next refresh",
        Duration::from_secs(30),
        || async {
            let s = f.secrets.get_opt("tf").await.unwrap()?;
            (secret_data(&s) == second).then_some(())
        },
    )
    .await;

    cms.delete("tpl", &DeleteParams::default()).await.unwrap();
    wait_for(
        "the missing ConfigMap reported",
        Duration::from_secs(30),
        || async {
            let es = f.es.get("tf").await.ok()?;
            ready_message(&es).contains("ConfigMap").then_some(())
        },
    )
    .await;
    let es = f.es.get("tf").await.unwrap();
    assert!(!ready_message(&es).contains("tf-s3cret-value"));
    assert_eq!(secret_data(&f.secret("tf").await), second);
}

/// ESO's `nullBytePolicy` (ESO 2.9), spelled out as GitOps repositories do: `Ignore` keeps a
/// value with a NUL byte; `Fail` fails the sync with ESO's message, on `data[]`,
/// `dataFrom.extract` and `dataFrom.find` alike, and the Secret stays as it was.
#[tokio::test]
async fn null_byte_policy_ignore_keeps_and_fail_refuses() {
    let Some(f) = setup("null_byte_policy").await else {
        return;
    };
    // "QQBC" is base64 of "A\0B".
    f.put("/nul/plain", "QQBC", true).await;
    f.put("/nul/json", r#"{"k":"QQBC"}"#, true).await;
    let es = |name: &str, policy: &str| {
        format!(
            r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {{name: {name}}}
spec:
  refreshInterval: 1h
  secretStoreRef: {{name: ssm, kind: SecretStore}}
  data:
  - secretKey: payload
    remoteRef:
      key: PREFIX/nul/plain
      conversionStrategy: Default
      decodingStrategy: Base64
      metadataPolicy: None
      nullBytePolicy: {policy}
"#
        )
    };
    f.es(&es("kept", "Ignore")).await;
    wait_reason(&f.es, "kept", "SecretSynced").await;
    let kept = f.secret("kept").await;
    assert_eq!(kept.data.unwrap()["payload"].0, b"A\0B");

    f.es(&es("refused", "Fail")).await;
    let refused = wait_reason(&f.es, "refused", "SecretSyncedError").await;
    assert_eq!(
        ready_message(&refused),
        "fetched secret value for key \"payload\" contains null bytes (nullBytePolicy Fail)"
    );
    assert!(f.secrets.get_opt("refused").await.unwrap().is_none());

    // dataFrom: extract and find, each with its own policy.
    let from = |name: &str, source: &str| {
        format!(
            "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata: {{name: {name}}}\nspec:\n  refreshInterval: 1h\n  secretStoreRef: {{name: ssm}}\n  dataFrom:\n  - {source}\n"
        )
    };
    f.es(&from(
        "extract-fail",
        "extract: {key: PREFIX/nul/json, decodingStrategy: Base64, nullBytePolicy: Fail}",
    ))
    .await;
    let refused = wait_reason(&f.es, "extract-fail", "SecretSyncedError").await;
    assert_eq!(
        ready_message(&refused),
        "fetched secret value for key \"k\" contains null bytes (nullBytePolicy Fail)"
    );
    f.es(&from(
        "find-fail",
        "find: {path: PREFIX/nul, name: {regexp: plain}, decodingStrategy: Base64, nullBytePolicy: Fail}",
    ))
    .await;
    let refused = wait_reason(&f.es, "find-fail", "SecretSyncedError").await;
    assert!(
        ready_message(&refused).ends_with("contains null bytes (nullBytePolicy Fail)"),
        "{}",
        ready_message(&refused)
    );
    f.es(&from(
        "find-ignore",
        "find: {path: PREFIX/nul, name: {regexp: plain}, decodingStrategy: Base64, nullBytePolicy: Ignore}",
    ))
    .await;
    wait_reason(&f.es, "find-ignore", "SecretSynced").await;
    // A value that changes to contain a NUL byte leaves the Secret as it was.
    f.put("/nul/ok", "b2s=", true).await; // "ok"
    f.es(&es("later", "Fail").replace("nul/plain", "nul/ok"))
        .await;
    wait_reason(&f.es, "later", "SecretSynced").await;
    f.put("/nul/ok", "QQBC", true).await;
    f.es.patch(
        "later",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"secret-relay.dev/force-sync": "1"}}})),
    )
    .await
    .unwrap();
    wait_reason(&f.es, "later", "SecretSyncedError").await;
    assert_eq!(f.secret("later").await.data.unwrap()["payload"].0, b"ok");
}

/// ESO's `data[].sourceRef.storeRef`: one Secret combining an SSM parameter (the
/// ExternalSecret's `secretStoreRef`) with a Vault secret (another SecretStore of the
/// namespace); a store the namespace may not use is refused as `secretStoreRef` would be.
#[tokio::test]
async fn data_source_ref_reads_one_item_from_another_store() {
    let Some(f) = setup("data_source_ref").await else {
        return;
    };
    f.put("/db/password", "from-ssm", true).await;
    let vault_path = format!("{}/api", &f.prefix[1..]);
    vaultrs::kv2::set(
        &f.env.vault(),
        "secret",
        &vault_path,
        &json!({"token": "from-vault"}),
    )
    .await
    .expect("kv2 put");
    operator::vault_store(&f.env, &f.ns, "vault", "", &f.env.vault_token).await;
    f.es(&format!(
        r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {{name: combined}}
spec:
  refreshInterval: 1h
  secretStoreRef: {{name: ssm, kind: SecretStore}}
  data:
  - secretKey: password
    remoteRef: {{key: PREFIX/db/password}}
  - secretKey: api-token
    remoteRef: {{key: {vault_path}, property: token}}
    sourceRef:
      storeRef: {{name: vault, kind: SecretStore}}
"#
    ))
    .await;
    wait_reason(&f.es, "combined", "SecretSynced").await;
    let data = secret_data(&f.secret("combined").await);
    assert_eq!(
        (data["password"].as_str(), data["api-token"].as_str()),
        ("from-ssm", "from-vault")
    );
    // A store that does not exist: SecretStoreNotReady, naming it.
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: elsewhere}
spec:
  refreshInterval: 1h
  secretStoreRef: {name: ssm}
  data:
  - secretKey: password
    remoteRef: {key: PREFIX/db/password}
  - secretKey: other
    remoteRef: {key: x}
    sourceRef: {storeRef: {name: nowhere}}
"#)
        .await;
    let es = wait_reason(&f.es, "elsewhere", "SecretStoreNotReady").await;
    assert_eq!(
        ready_message(&es),
        format!("SecretStore {}/nowhere not found", f.ns)
    );
}

/// issue 28: `--events failures` publishes no Event for a sync that worked (at N = 10,000 the
/// initial sync's `Created` Events took all Ready from 1.22× to 1.50× the floor), still the
/// `SyncFailed` warning of a failure; the `Ready` condition tells the outcome either way.
#[tokio::test]
async fn events_failures_publishes_only_warnings() {
    let Some(env) = TestEnv::get("events_failures_publishes_only_warnings").await else {
        return;
    };
    let s = operator::ssm_namespace(&env, "events").await;
    let ns = s.ns.as_str();
    operator::put_parameter(&s.ssm, &format!("{}/ok", s.prefix), "v1").await;
    let _op = operator::start_with(
        &env.kube,
        secret_relay::controller::Config {
            namespace: Some(ns.to_string()),
            cluster_stores: false,
            cluster_external_secrets: false,
            rollout_restart: false,
            concurrency: 4,
            allow_secret_store_ambient_identity: false,
            allow_api_server_audience: false,
            watch_label_selector: None,
            events: secret_relay::controller::EventPolicy::Failures,
        },
    )
    .await;
    let es_api: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), ns);
    for (name, key) in [("app", "ok"), ("broken", "missing")] {
        apply_yaml(
            &es_api,
            &format!(
                "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata: {{name: {name}}}\nspec:\n  refreshInterval: 1h\n  secretStoreRef: {{name: ssm}}\n  data:\n  - secretKey: v\n    remoteRef: {{key: {}/{key}}}\n",
                s.prefix
            ),
        )
        .await;
    }
    let app = wait_reason(&es_api, "app", "SecretSynced").await;
    assert_eq!(
        ready_message(&app),
        "Secret app synced from SecretStore/ssm"
    );
    wait_reason(&es_api, "broken", "SecretSyncedError").await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.kube.clone(), ns);
    let by = |e: &k8s_openapi::api::events::v1::Event| {
        (
            e.regarding
                .as_ref()
                .and_then(|r| r.name.clone())
                .unwrap_or_default(),
            e.reason.clone().unwrap_or_default(),
        )
    };
    let failed = wait_for(
        "the SyncFailed warning",
        Duration::from_secs(30),
        || async {
            let list = events.list(&Default::default()).await.ok()?.items;
            list.iter()
                .any(|e| by(e) == ("broken".into(), "SyncFailed".into()))
                .then_some(list)
        },
    )
    .await;
    // The warning was published after the successful sync's write: a Created event, had
    // there been one, would be in the list by now.
    let normal: Vec<_> = failed
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Normal"))
        .map(by)
        .collect();
    assert!(
        normal.is_empty(),
        "no Event for a sync that worked: {normal:?}"
    );
}
