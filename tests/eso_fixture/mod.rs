//! Harness of `tests/eso_e2e.rs`: ESO's e2e framework (`e2e/framework/testcase.go`) rebuilt on
//! this project's test environment. A case, as in ESO, is remote values to create, an
//! ExternalSecret and the Secret expected from it; the store it uses is set up as ESO's
//! provider set-ups make theirs (same store and credential names), with our store spec.
//!
//! Each case runs in a namespace of its own (`eso-<random>`, as ESO's framework makes one per
//! case) with an operator of its own, so cases run in parallel with each other and the rest of
//! the suite; the remote names embed the namespace's name, as ESO's do.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ssm::types::{ParameterType, Tag};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use secret_relay::api::{ClusterSecretStore, ExternalSecret, SecretStore};

use crate::common::{TestEnv, random_suffix, vault::bao};
use crate::operator::{self, apply_yaml, create_secret};

/// ESO's `framework.TargetSecretName`.
pub const TARGET_SECRET_NAME: &str = "target-secret";
/// The name ESO's framework gives every ExternalSecret.
pub const ES_NAME: &str = "e2e-es";
/// `spec.target` as ESO's default test case sets it (`Name: TargetSecretName`).
pub const TARGET: &str = "  target:\n    name: target-secret\n";

/// One remote value (ESO's `framework.SecretEntry` under its key).
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub tags: BTreeMap<String, String>,
}

/// `Entry` without tags.
pub fn entry(key: impl Into<String>, value: impl Into<String>) -> Entry {
    Entry {
        key: key.into(),
        value: value.into(),
        tags: BTreeMap::new(),
    }
}

/// `Entry` with tag `test` = `tag` (ESO's find-by-tag cases).
pub fn tagged(key: impl Into<String>, value: impl Into<String>, tag: &str) -> Entry {
    Entry {
        tags: [("test".to_string(), tag.to_string())].into(),
        ..entry(key, value)
    }
}

/// What a case does after the expected Secret is there (ESO's `tc.AfterSync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterSync {
    Nothing,
    /// Delete every remote value, then wait until the Secret is gone (DeletionPolicyDelete).
    DeleteRemoteThenSecretGone,
}

/// An ESO test case (`framework.TestCase`).
pub struct Case {
    /// Remote values, created in this order (`tc.Secrets`; a key may repeat: a new version).
    pub secrets: Vec<Entry>,
    /// The ExternalSecret's `spec` below `secretStoreRef` (indented two spaces), `target`
    /// included: see [`TARGET`].
    pub spec: String,
    /// The expected Secret's name (`target-secret`, or `e2e-es` without a target name).
    pub secret_name: &'static str,
    /// `tc.ExpectedSecret.Type`.
    pub secret_type: &'static str,
    /// `tc.ExpectedSecret.Data`.
    pub data: BTreeMap<String, String>,
    /// `tc.ExpectedSecret.Labels` and `.Annotations` (besides the operator's own).
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub after_sync: AfterSync,
    /// ConfigMaps created in the case's namespace before the ExternalSecret
    /// (`tc.AdditionalObjects`): name → data.
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

impl Case {
    /// A case expecting an Opaque Secret `target-secret` with `data`.
    pub fn new<K: AsRef<str>, V: AsRef<str>>(
        secrets: Vec<Entry>,
        spec: String,
        data: &[(K, V)],
    ) -> Case {
        Case {
            secrets,
            spec,
            secret_name: TARGET_SECRET_NAME,
            secret_type: "Opaque",
            data: data
                .iter()
                .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
                .collect(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            after_sync: AfterSync::Nothing,
            config_maps: BTreeMap::new(),
        }
    }
}

/// The store a case uses: ESO's auth tweaks (`useStaticAuth`, `useTokenAuth`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// parameterstore.go `useStaticAuth`: SecretStore `aws-static-creds`, keys in Secret
    /// `provider-secret` (kid, sak, st).
    SsmStatic,
    /// parameterstore.go `useReferentStaticAuth`: ClusterSecretStore `referent-auth<ns>`
    /// whose key references have no namespace: Secret `referent-provider-secret` of the
    /// ExternalSecret's namespace.
    SsmReferent,
    /// secretsmanager.go `useStaticAuth`: SecretStore `aws-static-creds` with `service:
    /// SecretsManager`, keys in Secret `provider-secret` (kid, sak, st).
    SmStatic,
    /// secretsmanager.go `useReferentStaticAuth`: as [`Store::SsmReferent`], `service:
    /// SecretsManager`.
    SmReferent,
    /// vault.go `useTokenAuth`: SecretStore `<ns>` (KV v2 at `secret`), root token in Secret
    /// `token-provider`.
    VaultToken,
    /// `useApproleAuth`: SecretStore `app-role-provider`, secret ID in Secret
    /// `app-role-provider` key `approle_secret`.
    VaultAppRole,
    /// `useV1Provider`: SecretStore `kv-v1-provider` (KV v1 at `secret_v1`), root token in
    /// Secret `v1-provider`.
    VaultV1,
    /// `useKubernetesProvider`: SecretStore `kubernetes-provider`, Kubernetes login as
    /// ServiceAccount `default`.
    VaultKubernetes,
    /// `useJWTProvider`: SecretStore `jwt-provider`, JWT login with the JWT in Secret
    /// `jwt-provider-credentials` key `jwt` (ESO signs one with a key of its own; here it is a
    /// TokenRequest token of ServiceAccount `default`, audience `vault.client`).
    VaultJwt,
    /// `useJWTK8sProvider`: SecretStore `jwt-k8s-provider`, JWT login with a TokenRequest token
    /// of ServiceAccount `default` for audience `vault.client`.
    VaultJwtK8s,
    /// `useReferentAuth`: ClusterSecretStore `referent-provider-<ns>`, root token in Secret
    /// `referent-secret` key `referent-secret-key` of the ExternalSecret's namespace.
    VaultReferent,
}

impl Store {
    fn is_vault(self) -> bool {
        !matches!(
            self,
            Store::SsmStatic | Store::SsmReferent | Store::SmStatic | Store::SmReferent
        )
    }
    fn is_secrets_manager(self) -> bool {
        matches!(self, Store::SmStatic | Store::SmReferent)
    }
    fn is_cluster(self) -> bool {
        matches!(
            self,
            Store::SsmReferent | Store::VaultReferent | Store::SmReferent
        )
    }
}

/// The provider side of a case (ESO's `framework.SecretStoreProvider`).
pub struct Provider {
    vault_addr: String,
    vault_token: String,
    ssm: Option<aws_sdk_ssm::Client>,
    sm: Option<aws_sdk_secretsmanager::Client>,
    http: reqwest::Client,
}

impl Provider {
    /// ESO's `CreateSecret`: SSM `PutParameter` (type String, data type text, overwrite unless
    /// tagged); Vault: the JSON object at `secret/data/<key>` (KV v2) and `secret_v1/<key>`
    /// (KV v1).
    pub async fn create(&self, e: &Entry) {
        if let Some(sm) = &self.sm {
            // secretsmanager's provider.go: CreateSecret with the value as SecretString and
            // the tags; a key created again gets a new version (PutSecretValue).
            let mut create = sm.create_secret().name(&e.key).secret_string(&e.value);
            for (k, v) in &e.tags {
                create = create.tags(
                    aws_sdk_secretsmanager::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build(),
                );
            }
            if let Err(err) = create.send().await {
                let exists = err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_exists_exception());
                assert!(exists, "CreateSecret {}: {err:?}", e.key);
                sm.put_secret_value()
                    .secret_id(&e.key)
                    .secret_string(&e.value)
                    .send()
                    .await
                    .unwrap_or_else(|err| panic!("PutSecretValue {}: {err:?}", e.key));
            }
        } else if let Some(ssm) = &self.ssm {
            let mut put = ssm
                .put_parameter()
                .name(&e.key)
                .value(&e.value)
                .data_type("text")
                .r#type(ParameterType::String)
                .overwrite(e.tags.is_empty());
            for (k, v) in &e.tags {
                put = put.tags(Tag::builder().key(k).value(v).build().expect("tag"));
            }
            put.send()
                .await
                .unwrap_or_else(|err| panic!("PutParameter {}: {err:?}", e.key));
        } else {
            self.vault_request(
                reqwest::Method::POST,
                &format!("secret/data/{}", e.key),
                Some(format!(r#"{{"data": {}}}"#, e.value)),
            )
            .await;
            self.vault_request(
                reqwest::Method::POST,
                &format!("secret_v1/{}", e.key),
                Some(e.value.clone()),
            )
            .await;
        }
    }

    /// ESO's `DeleteSecret`.
    pub async fn delete(&self, key: &str) {
        if let Some(sm) = &self.sm {
            let _ = sm
                .delete_secret()
                .secret_id(key)
                .force_delete_without_recovery(true)
                .send()
                .await;
        } else if let Some(ssm) = &self.ssm {
            let _ = ssm.delete_parameter().name(key).send().await;
        } else {
            self.vault_request(reqwest::Method::DELETE, &format!("secret/data/{key}"), None)
                .await;
            self.vault_request(reqwest::Method::DELETE, &format!("secret_v1/{key}"), None)
                .await;
        }
    }

    /// A root-token request to OpenBao; returns (status, body).
    async fn vault_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> (u16, String) {
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.vault_addr))
            .header("X-Vault-Token", &self.vault_token);
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("vault {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    async fn vault_request(&self, method: reqwest::Method, path: &str, body: Option<String>) {
        let m = method.clone();
        let (status, text) = self.vault_raw(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "vault {m} {path}: {status} {text}"
        );
    }

    /// The KV v1 engine at `secret_v1` that ESO's Vault set-up has (shared by the cases; a
    /// concurrent enable by another case is fine).
    async fn ensure_kv_v1(&self) {
        let (status, text) = self
            .vault_raw(
                reqwest::Method::POST,
                "sys/mounts/secret_v1",
                Some(r#"{"type":"kv","options":{"version":"1"}}"#.into()),
            )
            .await;
        assert!(
            (200..300).contains(&status) || text.contains("already in use"),
            "enabling secret_v1: {status} {text}"
        );
    }
}

/// A Vault policy reading everything ESO's cases write (`secret` KV v2, `secret_v1` KV v1).
async fn read_policy(env: &TestEnv) -> String {
    let name = format!("eso-e2e-{}", random_suffix());
    crate::common::vault::policy(
        env,
        &name,
        "path \"secret/*\" { capabilities = [\"read\", \"list\"] }\n\
         path \"secret_v1/*\" { capabilities = [\"read\", \"list\"] }\n",
    )
    .await;
    name
}

/// Kubernetes auth at `k8s-<random>` (ESO: `mykubernetes`) reviewing tokens against this API
/// server, role `external-secrets-operator` bound to ServiceAccount `default` of `ns`.
async fn kubernetes_auth(env: &TestEnv, ns: &str, policy: &str) -> String {
    // The mount and its reviewer as tests/common/vault.rs makes them, then ESO's role.
    let mount = crate::common::vault::kubernetes_auth_mount(env, ns, policy).await;
    bao(
        env,
        &[
            "write",
            &format!("auth/{mount}/role/external-secrets-operator"),
            "bound_service_account_names=default",
            &format!("bound_service_account_namespaces={ns}"),
            &format!("token_policies={policy}"),
        ],
    )
    .await;
    // No controller-manager here to make `default`: make it, as a cluster would have it.
    env.service_account_token(ns, "default", &[]).await;
    mount
}

/// JWT auth at `jwt-<random>` (ESO: `myjwt`, `myjwtk8s`) trusting this API server's
/// service-account signing keys, role `external-secrets-operator` for audience `vault.client`
/// and ServiceAccount `default` of `ns` (as ESO's `myjwtk8s`, bound to the namespace so that
/// cases stay apart).
async fn jwt_auth(env: &TestEnv, ns: &str, policy: &str) -> String {
    crate::common::vault::jwt_auth_mount(
        env,
        ns,
        policy,
        "external-secrets-operator",
        "vault.client",
        "default",
    )
    .await
}

/// Sets up `store` in `ns` as ESO's tweak does; returns the ExternalSecret's
/// `secretStoreRef` (a YAML flow mapping).
async fn setup_store(env: &TestEnv, ns: &str, store: Store) -> String {
    let ss: Api<SecretStore> = Api::namespaced(env.kube.clone(), ns);
    let css: Api<ClusterSecretStore> = Api::all(env.kube.clone());
    let vault = |name: &str, kind: &str, extra: &str, auth: &str| {
        format!(
            "apiVersion: secret-relay.dev/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n  provider:\n    vault:\n      server: {server}\n{extra}      auth:\n{auth}",
            server = env.vault_addr
        )
    };
    const KV2: &str = "      path: secret\n      version: v2\n";
    match store {
        Store::SsmStatic | Store::SsmReferent | Store::SmStatic | Store::SmReferent => {
            let service = if store.is_secrets_manager() {
                "SecretsManager"
            } else {
                "ParameterStore"
            };
            let static_auth = matches!(store, Store::SsmStatic | Store::SmStatic);
            let (secret, kind, name) = if static_auth {
                (
                    "provider-secret",
                    "SecretStore",
                    "aws-static-creds".to_string(),
                )
            } else {
                (
                    "referent-provider-secret",
                    "ClusterSecretStore",
                    format!("referent-auth{ns}"),
                )
            };
            create_secret(
                env,
                ns,
                secret,
                serde_json::json!({"kid": "testing", "sak": "testing", "st": "testing"}),
            )
            .await;
            let yaml = format!(
                r#"
apiVersion: secret-relay.dev/v1alpha1
kind: {kind}
metadata:
  name: {name}
spec:
  provider:
    aws:
      service: {service}
      region: {region}
      endpoint: {endpoint}
      auth:
        secretRef:
          accessKeyIDSecretRef:
            name: {secret}
            key: kid
          secretAccessKeySecretRef:
            name: {secret}
            key: sak
          sessionTokenSecretRef:
            name: {secret}
            key: st
"#,
                region = env.aws_region,
                endpoint = env.aws_endpoint
            );
            if static_auth {
                apply_yaml(&ss, &yaml).await;
                format!("{{name: {name}}}")
            } else {
                apply_yaml(&css, &yaml).await;
                format!("{{name: {name}, kind: ClusterSecretStore}}")
            }
        }
        Store::VaultToken => {
            create_secret(
                env,
                ns,
                "token-provider",
                serde_json::json!({"token": env.vault_token}),
            )
            .await;
            apply_yaml(
                &ss,
                &vault(
                    ns,
                    "SecretStore",
                    KV2,
                    "        tokenSecretRef:\n          name: token-provider\n          key: token\n",
                ),
            )
            .await;
            format!("{{name: {ns}}}")
        }
        Store::VaultV1 => {
            create_secret(
                env,
                ns,
                "v1-provider",
                serde_json::json!({"token": env.vault_token}),
            )
            .await;
            apply_yaml(
                &ss,
                &vault(
                    "kv-v1-provider",
                    "SecretStore",
                    "      path: secret_v1\n      version: v1\n",
                    "        tokenSecretRef:\n          name: v1-provider\n          key: token\n",
                ),
            )
            .await;
            "{name: kv-v1-provider}".into()
        }
        Store::VaultAppRole => {
            let policy = read_policy(env).await;
            let (path, role_id, secret_id) = crate::common::vault::approle(env, &policy, &[]).await;
            create_secret(
                env,
                ns,
                "app-role-provider",
                serde_json::json!({"approle_secret": secret_id}),
            )
            .await;
            apply_yaml(
                &ss,
                &vault(
                    "app-role-provider",
                    "SecretStore",
                    KV2,
                    &format!(
                        "        appRole:\n          path: {path}\n          roleId: {role_id}\n          secretRef:\n            name: app-role-provider\n            key: approle_secret\n"
                    ),
                ),
            )
            .await;
            "{name: app-role-provider}".into()
        }
        Store::VaultKubernetes => {
            let policy = read_policy(env).await;
            let mount = kubernetes_auth(env, ns, &policy).await;
            apply_yaml(
                &ss,
                &vault(
                    "kubernetes-provider",
                    "SecretStore",
                    KV2,
                    &format!(
                        "        kubernetes:\n          mountPath: {mount}\n          role: external-secrets-operator\n          serviceAccountRef:\n            name: default\n"
                    ),
                ),
            )
            .await;
            "{name: kubernetes-provider}".into()
        }
        Store::VaultJwt | Store::VaultJwtK8s => {
            let policy = read_policy(env).await;
            let mount = jwt_auth(env, ns, &policy).await;
            let token = env
                .service_account_token(ns, "default", &["vault.client"])
                .await;
            let (name, login) = if store == Store::VaultJwt {
                create_secret(
                    env,
                    ns,
                    "jwt-provider-credentials",
                    serde_json::json!({"jwt": token}),
                )
                .await;
                (
                    "jwt-provider",
                    "          secretRef:\n            name: jwt-provider-credentials\n            key: jwt\n",
                )
            } else {
                (
                    "jwt-k8s-provider",
                    "          kubernetesServiceAccountToken:\n            serviceAccountRef:\n              name: default\n            audiences:\n            - vault.client\n",
                )
            };
            apply_yaml(
                &ss,
                &vault(
                    name,
                    "SecretStore",
                    KV2,
                    &format!(
                        "        jwt:\n          path: {mount}\n          role: external-secrets-operator\n{login}"
                    ),
                ),
            )
            .await;
            format!("{{name: {name}}}")
        }
        Store::VaultReferent => {
            create_secret(
                env,
                ns,
                "referent-secret",
                serde_json::json!({"referent-secret-key": env.vault_token}),
            )
            .await;
            let name = format!("referent-provider-{ns}");
            apply_yaml(
                &css,
                &vault(
                    &name,
                    "ClusterSecretStore",
                    KV2,
                    "        tokenSecretRef:\n          name: referent-secret\n          key: referent-secret-key\n",
                ),
            )
            .await;
            format!("{{name: {name}, kind: ClusterSecretStore}}")
        }
    }
}

/// The Secret as ESO's `equalSecrets` sees it: type, data, and the labels and annotations
/// left once the operator's own bookkeeping is removed (ESO removes its managed/owner labels
/// and data-hash annotation; ours are `app.kubernetes.io/managed-by: secret-relay` and
/// `secret-relay.dev/*`).
#[derive(Debug, PartialEq)]
struct Observed {
    type_: String,
    data: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn observe(s: &Secret) -> Observed {
    let ours = |k: &String| k.starts_with("secret-relay.dev/");
    Observed {
        type_: s.type_.clone().unwrap_or_default(),
        data: s
            .data
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect(),
        labels: s
            .metadata
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, v)| {
                let managed_by = k == "app.kubernetes.io/managed-by" && v == "secret-relay";
                !(ours(k) || managed_by)
            })
            .collect(),
        annotations: s
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| !ours(k))
            .collect(),
    }
}

/// Runs one ESO case against `store`: ESO's `TableFuncWithExternalSecret`. `case` builds the
/// case from the namespace's name.
pub async fn run(test: &str, store: Store, case: fn(&str) -> Case) {
    let Some(env) = TestEnv::get(test).await else {
        return;
    };
    let ns = env.namespace("eso").await;
    let _op = operator::start(&env.kube, &ns, store.is_cluster()).await;
    let prov = Provider {
        vault_addr: env.vault_addr.clone(),
        vault_token: env.vault_token.clone(),
        ssm: if store.is_vault() || store.is_secrets_manager() {
            None
        } else {
            Some(aws_sdk_ssm::Client::new(&env.aws_sdk_config().await))
        },
        sm: if store.is_secrets_manager() {
            Some(aws_sdk_secretsmanager::Client::new(
                &env.aws_sdk_config().await,
            ))
        } else {
            None
        },
        http: reqwest::Client::new(),
    };
    if store.is_vault() {
        // ESO's Vault provider writes every value to both engines.
        prov.ensure_kv_v1().await;
    }
    let store_ref = setup_store(&env, &ns, store).await;
    let case = case(&ns);
    for e in &case.secrets {
        prov.create(e).await;
    }
    let cm_api: Api<ConfigMap> = Api::namespaced(env.kube.clone(), &ns);
    for (name, data) in &case.config_maps {
        let cm = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            data: Some(data.clone()),
            ..Default::default()
        };
        cm_api
            .create(&Default::default(), &cm)
            .await
            .expect("create ConfigMap");
    }
    let es_api: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &ns);
    let yaml = format!(
        "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata:\n  name: {ES_NAME}\nspec:\n  refreshInterval: 5s\n  secretStoreRef: {store_ref}\n{}",
        case.spec
    );
    apply_yaml(&es_api, &yaml).await;

    // ESO's WaitForSecretValue: poll every second for a minute until the Secret is as
    // expected.
    let expected = Observed {
        type_: case.secret_type.to_string(),
        data: case.data.clone(),
        labels: case.labels.clone(),
        annotations: case.annotations.clone(),
    };
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = secrets
            .get_opt(case.secret_name)
            .await
            .expect("get Secret")
            .map(|s| observe(&s));
        if got.as_ref() == Some(&expected) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let es = es_api.get(ES_NAME).await.ok();
            let ready = es
                .as_ref()
                .and_then(|e| e.status.as_ref())
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                .map(|c| format!("{}: {}", c.reason, c.message));
            panic!(
                "{test}: Secret {ns}/{} did not match.\nexpected: {expected:#?}\nobserved: {got:#?}\nExternalSecret Ready: {ready:?}\nExternalSecret:\n{yaml}",
                case.secret_name
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    match case.after_sync {
        AfterSync::Nothing => {}
        AfterSync::DeleteRemoteThenSecretGone => {
            for e in &case.secrets {
                prov.delete(&e.key).await;
            }
            operator::wait_for(
                &format!("{test}: Secret {ns}/{} deleted", case.secret_name),
                Duration::from_secs(90),
                || async {
                    secrets
                        .get_opt(case.secret_name)
                        .await
                        .expect("get Secret")
                        .is_none()
                        .then_some(())
                },
            )
            .await;
        }
    }
    // ESO's deferred DeleteSecret of every remote value.
    let keys: std::collections::BTreeSet<&str> =
        case.secrets.iter().map(|e| e.key.as_str()).collect();
    for k in keys {
        prov.delete(k).await;
    }
    if store.is_cluster() {
        let css: Api<ClusterSecretStore> = Api::all(env.kube.clone());
        let name = store_ref
            .trim_start_matches("{name: ")
            .split(',')
            .next()
            .unwrap()
            .to_string();
        let _ = css.delete(&name, &Default::default()).await;
    }
}
