//! The Vault provider against the test environment's OpenBao (and its kube-apiserver for
//! credential Secrets, TokenRequest, Kubernetes and JWT login). Run with
//! `hack/test.sh --test provider_vault`.
//!
//! Every test makes its own KV paths, mounts, policies and namespaces, so they run in
//! parallel. Login counts come from the process-wide metrics: tests that log in hold
//! [`LOGINS`] so that deltas measured by one test are its own.

mod common;

use std::{collections::HashMap, path::Path, process::Stdio, time::Duration};

use base64::Engine as _;
use common::{
    TestEnv, random_suffix,
    vault::{approle, bao, jwt_auth_mount, kubernetes_auth_mount, policy, put_v2},
};
use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Secret},
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use secret_relay::{
    api::{
        SecretKeySelector, ServiceAccountSelector,
        external_secret::StoreKind,
        external_secret::{ExternalSecretFind, FindName},
        secret_store::{
            CaProvider, CaProviderType, SecretStoreProvider, VaultAppRole, VaultAuth,
            VaultConnection, VaultJwtAuth, VaultKubernetesAuth, VaultKubernetesServiceAccountToken,
            VaultKvVersion, VaultProvider, VaultUserPass,
        },
    },
    controller::{ProviderCache, secret_store::ResolvedStore},
    metrics::provider_calls_total,
    providers::{AuthContext, ErrorKind, Provider, vault::VaultKvProvider},
};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// Held by every test that logs in, so that login/renew counts measured by one test are not
/// disturbed by another.
static LOGINS: Mutex<()> = Mutex::const_new(());

fn logins() -> u64 {
    provider_calls_total("vault", "login")
}

fn renewals() -> u64 {
    provider_calls_total("vault", "renew")
}

/// A policy allowing reads (and lists) of everything below `secret/<prefix>/`.
async fn read_policy(env: &TestEnv, prefix: &str) -> String {
    let name = format!("read-{}", prefix.replace('/', "-"));
    policy(
        env,
        &name,
        &format!(
            "path \"secret/data/{prefix}/*\" {{ capabilities = [\"read\"] }}\n\
             path \"secret/metadata/{prefix}/*\" {{ capabilities = [\"list\"] }}\n"
        ),
    )
    .await;
    name
}

/// A Secret `name` in `ns` holding `key: value`; returns its selector.
async fn kube_secret(
    env: &TestEnv,
    ns: &str,
    name: &str,
    key: &str,
    value: &str,
) -> SecretKeySelector {
    let api: Api<Secret> = Api::namespaced(env.kube.clone(), ns);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some([(key.to_string(), ByteString(value.as_bytes().to_vec()))].into()),
        ..Default::default()
    };
    api.create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("creating Secret {ns}/{name}: {e}"));
    SecretKeySelector {
        name: name.into(),
        key: key.into(),
        namespace: None,
    }
}

/// Credentials resolve in `ns`, as for a SecretStore there.
fn auth_context(env: &TestEnv, ns: &str) -> AuthContext {
    AuthContext::new(env.kube.clone(), ns, false)
}

fn spec(env: &TestEnv, auth: VaultAuth) -> VaultProvider {
    VaultProvider {
        connection: VaultConnection {
            server: env.vault_addr.clone(),
            auth,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A provider with a static token of `policies` (made by root), kept in a Secret of `ns`.
async fn token_provider(env: &TestEnv, ns: &str, policies: &[&str]) -> VaultKvProvider {
    token_provider_with(env, ns, policies, |s| s).await
}

async fn token_provider_with(
    env: &TestEnv,
    ns: &str,
    policies: &[&str],
    adjust: impl FnOnce(VaultProvider) -> VaultProvider,
) -> VaultKvProvider {
    let mut args = vec!["token", "create", "-field=token", "-ttl=1h"];
    let flags: Vec<String> = policies.iter().map(|p| format!("-policy={p}")).collect();
    args.extend(flags.iter().map(String::as_str));
    let token = bao(env, &args).await;
    let sel = kube_secret(env, ns, "vault-token", "token", token.trim()).await;
    let spec = adjust(spec(
        env,
        VaultAuth {
            token_secret_ref: Some(sel),
            ..Default::default()
        },
    ));
    VaultKvProvider::new(&spec, &auth_context(env, ns))
        .await
        .expect("token provider")
}

async fn get_json(provider: &VaultKvProvider, key: &str, version: Option<&str>) -> Option<Value> {
    provider
        .get(key, version)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
        .map(|v| serde_json::from_slice(v.as_bytes()).expect("value is JSON"))
}

/// An AppRole provider: role ID inline, secret ID in a Secret of `ns`.
async fn approle_provider(
    env: &TestEnv,
    ns: &str,
    mount: &str,
    role_id: &str,
    secret_id: &str,
) -> VaultKvProvider {
    let secret_ref = kube_secret(
        env,
        ns,
        &format!("approle-{}", random_suffix()),
        "secret-id",
        secret_id,
    )
    .await;
    let spec = spec(
        env,
        VaultAuth {
            app_role: Some(VaultAppRole {
                path: mount.into(),
                role_id: Some(role_id.into()),
                role_ref: None,
                secret_ref,
            }),
            ..Default::default()
        },
    );
    VaultKvProvider::new(&spec, &auth_context(env, ns))
        .await
        .expect("approle provider")
}

#[tokio::test]
async fn token_auth_reads_the_whole_kv_v2_data_map() {
    let Some(env) = TestEnv::get("token_auth_reads_the_whole_kv_v2_data_map").await else {
        return;
    };
    let ns = env.namespace("vault-token").await;
    let prefix = format!("t-{}", random_suffix());
    let data = json!({"user": "app", "port": 5432, "ratio": 0.5, "tls": {"enabled": true, "ciphers": ["a", "b"]}});
    put_v2(&env, &format!("{prefix}/db"), data.clone()).await;
    let pol = read_policy(&env, &prefix).await;
    let provider = token_provider(&env, &ns, &[&pol]).await;

    provider.validate().await.expect("validate");
    assert_eq!(
        get_json(&provider, &format!("{prefix}/db"), None).await,
        Some(data.clone())
    );
    // As ESO, the key may name the mount (and `data/`) in front.
    assert_eq!(
        get_json(&provider, &format!("secret/{prefix}/db"), None).await,
        Some(data.clone())
    );
    assert_eq!(
        get_json(&provider, &format!("secret/data/{prefix}/db"), None).await,
        Some(data)
    );
}

#[tokio::test]
async fn kv_v2_get_of_a_specific_version() {
    let Some(env) = TestEnv::get("kv_v2_get_of_a_specific_version").await else {
        return;
    };
    let ns = env.namespace("vault-version").await;
    let prefix = format!("v-{}", random_suffix());
    let key = format!("{prefix}/api");
    put_v2(&env, &key, json!({"key": "one"})).await;
    put_v2(&env, &key, json!({"key": "two"})).await;
    put_v2(&env, &key, json!({"key": "three"})).await;
    vaultrs::kv2::delete_versions(&env.vault(), "secret", &key, vec![2])
        .await
        .unwrap();
    let pol = read_policy(&env, &prefix).await;
    let provider = token_provider(&env, &ns, &[&pol]).await;

    assert_eq!(
        get_json(&provider, &key, Some("1")).await,
        Some(json!({"key": "one"}))
    );
    assert_eq!(
        get_json(&provider, &key, Some("3")).await,
        Some(json!({"key": "three"}))
    );
    assert_eq!(
        get_json(&provider, &key, None).await,
        Some(json!({"key": "three"}))
    );
    // A deleted version and one never written do not exist.
    assert_eq!(get_json(&provider, &key, Some("2")).await, None);
    assert_eq!(get_json(&provider, &key, Some("9")).await, None);
    let err = provider.get(&key, Some("latest")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidConfig);
    assert!(err.message.contains("\"latest\""), "{}", err.message);
}

#[tokio::test]
async fn kv_v1_get_and_find() {
    let Some(env) = TestEnv::get("kv_v1_get_and_find").await else {
        return;
    };
    let ns = env.namespace("vault-kv1").await;
    let mount = format!("kv1-{}", random_suffix());
    bao(
        &env,
        &[
            "secrets",
            "enable",
            &format!("-path={mount}"),
            "-version=1",
            "kv",
        ],
    )
    .await;
    let root = env.vault();
    let db: HashMap<&str, Value> = [("user", json!("app")), ("port", json!(5432))].into();
    vaultrs::kv1::set(&root, &mount, "app/db", &db)
        .await
        .unwrap();
    let cache: HashMap<&str, Value> = [("url", json!("redis://cache"))].into();
    vaultrs::kv1::set(&root, &mount, "app/cache", &cache)
        .await
        .unwrap();
    vaultrs::kv1::set(&root, &mount, "other/db", &cache)
        .await
        .unwrap();
    policy(
        &env,
        &format!("{mount}-read"),
        &format!("path \"{mount}/*\" {{ capabilities = [\"read\", \"list\"] }}\n"),
    )
    .await;
    let provider = token_provider_with(&env, &ns, &[&format!("{mount}-read")], |mut s| {
        s.path = Some(mount.clone());
        s.version = VaultKvVersion::V1;
        s
    })
    .await;

    assert_eq!(
        get_json(&provider, "app/db", None).await,
        Some(json!({"user": "app", "port": 5432}))
    );
    assert_eq!(get_json(&provider, "app/missing", None).await, None);
    assert_eq!(
        provider.get("app/db", Some("1")).await.unwrap_err().kind,
        ErrorKind::InvalidConfig
    );

    let found = provider
        .find(&ExternalSecretFind {
            path: Some("app".into()),
            ..Default::default()
        })
        .await
        .expect("find");
    let found: Vec<(String, Value)> = found
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_slice(v.as_bytes()).unwrap()))
        .collect();
    assert_eq!(
        found,
        vec![
            ("app/cache".to_string(), json!({"url": "redis://cache"})),
            ("app/db".to_string(), json!({"user": "app", "port": 5432})),
        ]
    );
    let tags = ExternalSecretFind {
        tags: [("team".to_string(), "a".to_string())].into(),
        ..Default::default()
    };
    assert_eq!(
        provider.find(&tags).await.unwrap_err().kind,
        ErrorKind::InvalidConfig
    );
}

#[tokio::test]
async fn missing_key_is_none() {
    let Some(env) = TestEnv::get("missing_key_is_none").await else {
        return;
    };
    let ns = env.namespace("vault-missing").await;
    let prefix = format!("m-{}", random_suffix());
    let pol = read_policy(&env, &prefix).await;
    let provider = token_provider(&env, &ns, &[&pol]).await;
    assert_eq!(
        get_json(&provider, &format!("{prefix}/nothing/here"), None).await,
        None
    );
}

#[tokio::test]
async fn permission_denied_names_the_path() {
    let Some(env) = TestEnv::get("permission_denied_names_the_path").await else {
        return;
    };
    let ns = env.namespace("vault-denied").await;
    let prefix = format!("d-{}", random_suffix());
    put_v2(&env, &format!("{prefix}/allowed"), json!({"a": "1"})).await;
    put_v2(
        &env,
        &format!("{prefix}/denied"),
        json!({"d": "secret-value"}),
    )
    .await;
    let pol = format!("only-{prefix}");
    policy(
        &env,
        &pol,
        &format!("path \"secret/data/{prefix}/allowed\" {{ capabilities = [\"read\"] }}\n"),
    )
    .await;
    let provider = token_provider(&env, &ns, &[&pol]).await;

    assert_eq!(
        get_json(&provider, &format!("{prefix}/allowed"), None).await,
        Some(json!({"a": "1"}))
    );
    let err = provider
        .get(&format!("{prefix}/denied"), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::AccessDenied);
    assert_eq!(
        err.message,
        format!("vault: permission denied on secret/data/{prefix}/denied")
    );
    let err = provider
        .find(&ExternalSecretFind {
            path: Some(prefix.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::AccessDenied);
    assert_eq!(
        err.message,
        format!("vault: permission denied on secret/metadata/{prefix}/")
    );
}

#[tokio::test]
async fn find_by_name_regexp_and_tags() {
    let Some(env) = TestEnv::get("find_by_name_regexp_and_tags").await else {
        return;
    };
    let ns = env.namespace("vault-find").await;
    let prefix = format!("f-{}", random_suffix());
    put_v2(&env, &format!("{prefix}/a/db"), json!({"user": "a"})).await;
    put_v2(&env, &format!("{prefix}/a/cache"), json!({"url": "redis"})).await;
    put_v2(
        &env,
        &format!("{prefix}/b/deep/db"),
        json!({"user": "b", "port": 1}),
    )
    .await;
    put_v2(&env, &format!("{prefix}/db-old"), json!({"user": "old"})).await;
    // Outside the searched path: never listed.
    put_v2(&env, &format!("{prefix}-other/db"), json!({"user": "x"})).await;
    for (path, team) in [("a/db", "a"), ("a/cache", "a"), ("b/deep/db", "b")] {
        bao(
            &env,
            &[
                "kv",
                "metadata",
                "put",
                "-mount=secret",
                &format!("-custom-metadata=team={team}"),
                &format!("{prefix}/{path}"),
            ],
        )
        .await;
    }
    let pol = read_policy(&env, &prefix).await;
    let provider = token_provider(&env, &ns, &[&pol]).await;

    let by_name = provider
        .find(&ExternalSecretFind {
            path: Some(prefix.clone()),
            name: Some(FindName {
                regexp: "/db$".into(),
            }),
            ..Default::default()
        })
        .await
        .expect("find by name");
    let by_name: Vec<(String, Value)> = by_name
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_slice(v.as_bytes()).unwrap()))
        .collect();
    assert_eq!(
        by_name,
        vec![
            (format!("{prefix}/a/db"), json!({"user": "a"})),
            (
                format!("{prefix}/b/deep/db"),
                json!({"user": "b", "port": 1})
            ),
        ]
    );

    let by_tags = provider
        .find(&ExternalSecretFind {
            path: Some(format!("{prefix}/")),
            tags: [("team".to_string(), "a".to_string())].into(),
            ..Default::default()
        })
        .await
        .expect("find by tags");
    assert_eq!(
        by_tags.keys().cloned().collect::<Vec<_>>(),
        vec![format!("{prefix}/a/cache"), format!("{prefix}/a/db")]
    );

    let bad = ExternalSecretFind {
        name: Some(FindName { regexp: "(".into() }),
        ..Default::default()
    };
    assert_eq!(
        provider.find(&bad).await.unwrap_err().kind,
        ErrorKind::InvalidConfig
    );
}

#[tokio::test]
async fn revoked_static_token_fails_validation() {
    let Some(env) = TestEnv::get("revoked_static_token_fails_validation").await else {
        return;
    };
    let ns = env.namespace("vault-revoked").await;
    let token = bao(
        &env,
        &["token", "create", "-field=token", "-policy=default"],
    )
    .await;
    let sel = kube_secret(
        &env,
        &ns,
        "vault-token",
        "token",
        &format!("{}\n", token.trim()),
    )
    .await;
    let spec = spec(
        &env,
        VaultAuth {
            token_secret_ref: Some(sel),
            ..Default::default()
        },
    );
    let provider = VaultKvProvider::new(&spec, &auth_context(&env, &ns))
        .await
        .expect("provider (a trailing newline in the Secret is ignored)");
    provider.validate().await.expect("valid token");
    bao(&env, &["token", "revoke", token.trim()]).await;
    let err = provider.validate().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Authentication);
    assert!(
        err.message.starts_with("vault: token check"),
        "{}",
        err.message
    );
    assert!(!err.message.contains(token.trim()));

    // A missing credentials Secret is an authentication failure naming it.
    let mut missing = spec;
    missing.connection.auth = VaultAuth {
        token_secret_ref: Some(SecretKeySelector {
            name: "nope".into(),
            key: "token".into(),
            namespace: None,
        }),
        ..Default::default()
    };
    let err = VaultKvProvider::new(&missing, &auth_context(&env, &ns))
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::Authentication);
    assert!(
        err.message.contains(&format!("{ns}/nope")),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn approle_auth() {
    let Some(env) = TestEnv::get("approle_auth").await else {
        return;
    };
    let _logins = LOGINS.lock().await;
    let ns = env.namespace("vault-approle").await;
    let prefix = format!("ar-{}", random_suffix());
    put_v2(&env, &format!("{prefix}/db"), json!({"password": "pw"})).await;
    let pol = read_policy(&env, &prefix).await;
    let (mount, role_id, secret_id) = approle(&env, &pol, &[]).await;

    // Role ID from a Secret this time.
    let role_ref = kube_secret(&env, &ns, "role-id", "role-id", &role_id).await;
    let secret_ref = kube_secret(&env, &ns, "secret-id", "secret-id", &secret_id).await;
    let auth = |role_ref: SecretKeySelector, secret_ref: SecretKeySelector| VaultAuth {
        app_role: Some(VaultAppRole {
            path: mount.clone(),
            role_id: None,
            role_ref: Some(role_ref),
            secret_ref,
        }),
        ..Default::default()
    };
    let before = logins();
    let provider = VaultKvProvider::new(
        &spec(&env, auth(role_ref.clone(), secret_ref)),
        &auth_context(&env, &ns),
    )
    .await
    .expect("approle login");
    assert_eq!(logins() - before, 1);
    provider.validate().await.expect("validate");
    assert_eq!(
        get_json(&provider, &format!("{prefix}/db"), None).await,
        Some(json!({"password": "pw"}))
    );

    let wrong = kube_secret(
        &env,
        &ns,
        "wrong",
        "secret-id",
        "00000000-0000-0000-0000-000000000000",
    )
    .await;
    let err = VaultKvProvider::new(&spec(&env, auth(role_ref, wrong)), &auth_context(&env, &ns))
        .await
        .err()
        .expect("wrong secret ID");
    assert_eq!(err.kind, ErrorKind::Authentication);
    assert!(
        err.message.starts_with(&format!(
            "vault: login with approle at auth/{mount} failed: status 400"
        )),
        "{}",
        err.message
    );
    assert!(!err.message.contains(&role_id));

    // issue 10: logins were never revoked. A dropped provider revokes its token.
    assert_eq!(live_tokens(&env, &mount).await, 1, "the provider's login");
    drop(provider);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while live_tokens(&env, &mount).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dropped provider's token is still alive"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// issue 10: a ClusterSecretStore whose credential Secret is referent (no `namespace`: read in
/// each ExternalSecret's namespace) logs in once per distinct credential, not once per
/// namespace. The AppRole's secret IDs are single-use, so a second login with one fails.
#[tokio::test]
async fn referent_cluster_store_logs_in_once_per_distinct_credential() {
    let Some(env) =
        TestEnv::get("referent_cluster_store_logs_in_once_per_distinct_credential").await
    else {
        return;
    };
    let _logins = LOGINS.lock().await;
    let prefix = format!("css-{}", random_suffix());
    put_v2(&env, &format!("{prefix}/db"), json!({"password": "pw"})).await;
    let pol = read_policy(&env, &prefix).await;
    let (mount, role_id, secret_id) = approle(&env, &pol, &["secret_id_num_uses=1"]).await;
    let mut namespaces = Vec::new();
    for i in 0..3 {
        let ns = env.namespace(&format!("css-same-{i}")).await;
        kube_secret(&env, &ns, "approle", "secret-id", &secret_id).await;
        namespaces.push(ns);
    }
    let provider = SecretStoreProvider {
        vault: Some(spec(
            &env,
            VaultAuth {
                app_role: Some(VaultAppRole {
                    path: mount.clone(),
                    role_id: Some(role_id.clone()),
                    role_ref: None,
                    secret_ref: SecretKeySelector {
                        name: "approle".into(),
                        key: "secret-id".into(),
                        namespace: None,
                    },
                }),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let meta = ObjectMeta {
        name: Some("shared".into()),
        uid: Some(format!("uid-{prefix}")),
        generation: Some(1),
        ..Default::default()
    };
    let store = |ns: &str| {
        ResolvedStore::new(
            &env.kube,
            StoreKind::ClusterSecretStore,
            "shared",
            &provider,
            &meta,
            ns.to_string(),
        )
    };
    let cache = ProviderCache::default();
    let before = logins();
    // At once, as when ExternalSecrets of three namespaces sync together.
    let stores: Vec<_> = namespaces.iter().map(|ns| store(ns)).collect();
    let built = futures::future::join_all(stores.iter().map(|s| cache.get(s))).await;
    let built: Vec<_> = built
        .into_iter()
        .map(|p| p.expect("one login serves all three namespaces"))
        .collect();
    assert!(built.iter().all(|p| std::sync::Arc::ptr_eq(p, &built[0])));
    assert_eq!(logins() - before, 1, "one login for one credential");
    assert_eq!(cache.distinct(), 1);
    let got = built[0]
        .get(&format!("{prefix}/db"), None, i64::MAX, None)
        .await;
    assert!(got.is_ok(), "read with the shared login");

    // A fourth namespace holding another secret ID is another credential: its own login.
    let other_secret_id = bao(
        &env,
        &[
            "write",
            "-f",
            "-field=secret_id",
            &format!("auth/{mount}/role/app/secret-id"),
        ],
    )
    .await;
    let other = env.namespace("css-other").await;
    kube_secret(&env, &other, "approle", "secret-id", other_secret_id.trim()).await;
    let own = cache.get(&store(&other)).await.expect("own login");
    assert!(!std::sync::Arc::ptr_eq(&own, &built[0]));
    assert_eq!(logins() - before, 2);
    assert_eq!(cache.distinct(), 2);
    assert_eq!(live_tokens(&env, &mount).await, 2);
}

/// Tokens alive that were issued by a login at auth mount `mount`.
async fn live_tokens(env: &TestEnv, mount: &str) -> usize {
    let listed = bao(env, &["list", "-format=json", "auth/token/accessors"]).await;
    let accessors: Vec<String> = serde_json::from_str(&listed).expect("accessor list");
    let root = env.vault();
    let mut n = 0;
    for accessor in accessors {
        if let Ok(token) = vaultrs::token::lookup_accessor(&root, &accessor).await
            && token.path.starts_with(&format!("auth/{mount}/"))
        {
            n += 1;
        }
    }
    n
}

#[tokio::test]
async fn userpass_auth() {
    let Some(env) = TestEnv::get("userpass_auth").await else {
        return;
    };
    let _logins = LOGINS.lock().await;
    let ns = env.namespace("vault-userpass").await;
    let prefix = format!("up-{}", random_suffix());
    put_v2(&env, &format!("{prefix}/db"), json!({"password": "pw"})).await;
    let pol = read_policy(&env, &prefix).await;
    let mount = format!("userpass-{}", random_suffix());
    bao(
        &env,
        &["auth", "enable", &format!("-path={mount}"), "userpass"],
    )
    .await;
    bao(
        &env,
        &[
            "write",
            &format!("auth/{mount}/users/alice"),
            "password=correct horse",
            &format!("token_policies={pol}"),
        ],
    )
    .await;
    let password = kube_secret(&env, &ns, "alice", "password", "correct horse").await;
    let spec = spec(
        &env,
        VaultAuth {
            user_pass: Some(VaultUserPass {
                path: mount.clone(),
                username: "alice".into(),
                secret_ref: password,
            }),
            ..Default::default()
        },
    );
    let provider = VaultKvProvider::new(&spec, &auth_context(&env, &ns))
        .await
        .expect("userpass login");
    provider.validate().await.expect("validate");
    assert_eq!(
        get_json(&provider, &format!("{prefix}/db"), None).await,
        Some(json!({"password": "pw"}))
    );
}

#[tokio::test]
async fn kubernetes_auth_with_a_token_request_token() {
    let Some(env) = TestEnv::get("kubernetes_auth_with_a_token_request_token").await else {
        return;
    };
    let _logins = LOGINS.lock().await;
    let ns = env.namespace("vault-k8s").await;
    let prefix = format!("k8s-{}", random_suffix());
    put_v2(&env, &format!("{prefix}/db"), json!({"password": "pw"})).await;
    let pol = read_policy(&env, &prefix).await;
    let mount = kubernetes_auth_mount(&env, &ns, &pol).await;
    // Creates ServiceAccounts `app` and `default` (no controller-manager makes `default` here).
    env.service_account_token(&ns, "app", &[]).await;
    env.service_account_token(&ns, "default", &[]).await;

    let auth = |account: Option<&str>| VaultAuth {
        kubernetes: Some(VaultKubernetesAuth {
            mount_path: mount.clone(),
            role: "app".into(),
            service_account_ref: account.map(|name| ServiceAccountSelector {
                name: name.into(),
                ..Default::default()
            }),
            secret_ref: None,
        }),
        ..Default::default()
    };
    let provider = VaultKvProvider::new(&spec(&env, auth(Some("app"))), &auth_context(&env, &ns))
        .await
        .expect("kubernetes login as app");
    provider.validate().await.expect("validate");
    assert_eq!(
        get_json(&provider, &format!("{prefix}/db"), None).await,
        Some(json!({"password": "pw"}))
    );

    // Without serviceAccountRef the provider logs in as `default`, which the role refuses.
    let err = VaultKvProvider::new(&spec(&env, auth(None)), &auth_context(&env, &ns))
        .await
        .err()
        .expect("default is not bound to the role");
    assert_eq!(err.kind, ErrorKind::Authentication);
    assert!(
        err.message.starts_with(&format!(
            "vault: login with kubernetes at auth/{mount} (role \"app\") failed: status 403"
        )),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn jwt_auth_with_a_service_account_token() {
    let Some(env) = TestEnv::get("jwt_auth_with_a_service_account_token").await else {
        return;
    };
    let _logins = LOGINS.lock().await;
    let ns = env.namespace("vault-jwt").await;
    let prefix = format!("jwt-{}", random_suffix());
    put_v2(&env, &format!("{prefix}/db"), json!({"password": "pw"})).await;
    let pol = read_policy(&env, &prefix).await;
    let mount = jwt_auth_mount(&env, &ns, &pol, "app", "vault", "app").await;
    let app_token = env.service_account_token(&ns, "app", &["vault"]).await;

    let token_request = spec(
        &env,
        VaultAuth {
            jwt: Some(VaultJwtAuth {
                path: mount.clone(),
                role: Some("app".into()),
                secret_ref: None,
                kubernetes_service_account_token: Some(VaultKubernetesServiceAccountToken {
                    service_account_ref: ServiceAccountSelector {
                        name: "app".into(),
                        ..Default::default()
                    },
                    audiences: vec![],
                    expiration_seconds: Some(600),
                }),
            }),
            ..Default::default()
        },
    );
    let provider = VaultKvProvider::new(&token_request, &auth_context(&env, &ns))
        .await
        .expect("jwt login with a TokenRequest token (audience vault)");
    assert_eq!(
        get_json(&provider, &format!("{prefix}/db"), None).await,
        Some(json!({"password": "pw"}))
    );

    // The same role with a JWT kept in a Secret.
    let jwt_ref = kube_secret(&env, &ns, "app-jwt", "jwt", &app_token).await;
    let from_secret = spec(
        &env,
        VaultAuth {
            jwt: Some(VaultJwtAuth {
                path: mount.clone(),
                role: Some("app".into()),
                secret_ref: Some(jwt_ref),
                kubernetes_service_account_token: None,
            }),
            ..Default::default()
        },
    );
    let provider = VaultKvProvider::new(&from_secret, &auth_context(&env, &ns))
        .await
        .expect("jwt login with a JWT from a Secret");
    provider.validate().await.expect("validate");

    // A token for another audience is refused.
    let mut wrong_audience = token_request.clone();
    if let Some(jwt) = wrong_audience.connection.auth.jwt.as_mut() {
        jwt.kubernetes_service_account_token
            .as_mut()
            .unwrap()
            .audiences = vec!["not-vault".into()];
    }
    let err = VaultKvProvider::new(&wrong_audience, &auth_context(&env, &ns))
        .await
        .err()
        .expect("audience not-vault is refused");
    assert_eq!(err.kind, ErrorKind::Authentication);
    assert!(!err.message.contains(&app_token));
}

#[tokio::test]
async fn login_is_reused_across_calls() {
    let Some(env) = TestEnv::get("login_is_reused_across_calls").await else {
        return;
    };
    let _logins = LOGINS.lock().await;
    let ns = env.namespace("vault-reuse").await;
    let prefix = format!("reuse-{}", random_suffix());
    put_v2(&env, &format!("{prefix}/db"), json!({"n": 1})).await;
    let pol = read_policy(&env, &prefix).await;
    let (mount, role_id, secret_id) = approle(&env, &pol, &[]).await;

    let (logins_before, renewals_before) = (logins(), renewals());
    let provider = approle_provider(&env, &ns, &mount, &role_id, &secret_id).await;
    let key = format!("{prefix}/db");
    for _ in 0..10 {
        assert_eq!(get_json(&provider, &key, None).await, Some(json!({"n": 1})));
    }
    let concurrent =
        futures::future::join_all((0..10).map(|_| get_json(&provider, &key, None))).await;
    assert_eq!(concurrent, vec![Some(json!({"n": 1})); 10]);
    assert_eq!(
        logins() - logins_before,
        1,
        "one login for construction and 20 gets"
    );
    assert_eq!(renewals() - renewals_before, 0);
}

#[tokio::test]
async fn token_is_renewed_at_two_thirds_of_its_ttl() {
    let Some(env) = TestEnv::get("token_is_renewed_at_two_thirds_of_its_ttl").await else {
        return;
    };
    let _logins = LOGINS.lock().await;
    let ns = env.namespace("vault-renew").await;
    let prefix = format!("renew-{}", random_suffix());
    let key = format!("{prefix}/db");
    put_v2(&env, &key, json!({"n": 1})).await;
    let pol = read_policy(&env, &prefix).await;

    // TTLs of 9 s: a read 6.2 s after the login is past two thirds of it (6 s: renewal due)
    // and, with 2.8 s to spare on a loaded machine, before its expiry.
    // Renewable up to an hour: renewed, not replaced.
    let (mount, role_id, secret_id) =
        approle(&env, &pol, &["token_ttl=9s", "token_max_ttl=1h"]).await;
    let (logins_before, renewals_before) = (logins(), renewals());
    let provider = approle_provider(&env, &ns, &mount, &role_id, &secret_id).await;
    assert_eq!(get_json(&provider, &key, None).await, Some(json!({"n": 1})));
    assert_eq!(renewals() - renewals_before, 0);
    tokio::time::sleep(Duration::from_millis(6200)).await;
    assert_eq!(get_json(&provider, &key, None).await, Some(json!({"n": 1})));
    assert_eq!(renewals() - renewals_before, 1);
    assert_eq!(logins() - logins_before, 1);

    // At its max TTL the token cannot be pushed out: the provider logs in again.
    let (mount, role_id, secret_id) =
        approle(&env, &pol, &["token_ttl=9s", "token_max_ttl=9s"]).await;
    let (logins_before, renewals_before) = (logins(), renewals());
    let provider = approle_provider(&env, &ns, &mount, &role_id, &secret_id).await;
    tokio::time::sleep(Duration::from_millis(6200)).await;
    assert_eq!(get_json(&provider, &key, None).await, Some(json!({"n": 1})));
    assert_eq!(renewals() - renewals_before, 1);
    assert_eq!(logins() - logins_before, 2);

    // Not renewable: logged in again without trying to renew.
    let (mount, role_id, secret_id) =
        approle(&env, &pol, &["token_ttl=9s", "token_type=batch"]).await;
    let (logins_before, renewals_before) = (logins(), renewals());
    let provider = approle_provider(&env, &ns, &mount, &role_id, &secret_id).await;
    tokio::time::sleep(Duration::from_millis(6200)).await;
    assert_eq!(get_json(&provider, &key, None).await, Some(json!({"n": 1})));
    assert_eq!(renewals() - renewals_before, 0);
    assert_eq!(logins() - logins_before, 2);
}

#[tokio::test]
async fn revoked_login_token_is_replaced_once_for_concurrent_callers() {
    let Some(env) =
        TestEnv::get("revoked_login_token_is_replaced_once_for_concurrent_callers").await
    else {
        return;
    };
    let _logins = LOGINS.lock().await;
    let ns = env.namespace("vault-relogin").await;
    let prefix = format!("relogin-{}", random_suffix());
    let key = format!("{prefix}/db");
    put_v2(&env, &key, json!({"n": 1})).await;
    let pol = read_policy(&env, &prefix).await;
    let (mount, role_id, secret_id) = approle(&env, &pol, &["secret_id_num_uses=0"]).await;
    let provider = approle_provider(&env, &ns, &mount, &role_id, &secret_id).await;
    assert_eq!(get_json(&provider, &key, None).await, Some(json!({"n": 1})));

    bao(
        &env,
        &["token", "revoke", "-mode=path", &format!("auth/{mount}/")],
    )
    .await;
    let before = logins();
    let concurrent =
        futures::future::join_all((0..10).map(|_| get_json(&provider, &key, None))).await;
    assert_eq!(concurrent, vec![Some(json!({"n": 1})); 10]);
    assert_eq!(logins() - before, 1);

    // A real denial with a live login token does not trigger a login.
    let before = logins();
    let err = provider
        .get(&format!("{prefix}-elsewhere/db"), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::AccessDenied);
    assert_eq!(logins() - before, 0);
}

/// A `bao server -dev -dev-tls` of this test and its CA file; dropping it kills the server
/// and removes its directory.
struct TlsBao {
    child: tokio::process::Child,
    addr: String,
    ca_file: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Drop for TlsBao {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn tls_bao(env: &TestEnv) -> TlsBao {
    let dir = std::env::temp_dir().join(format!("secret-relay-bao-tls-{}", random_suffix()));
    std::fs::create_dir_all(dir.join("home")).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = tokio::process::Command::new(env.tool("BAO"))
        .args([
            "server",
            "-dev",
            "-dev-tls",
            "-dev-root-token-id=root",
            &format!("-dev-listen-address=127.0.0.1:{port}"),
            &format!("-dev-tls-cert-dir={}", dir.display()),
        ])
        .env("HOME", dir.join("home"))
        .env_remove("VAULT_ADDR")
        .env_remove("BAO_ADDR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting bao -dev-tls");
    let ca_file = dir.join("vault-ca.pem");
    let addr = format!("https://127.0.0.1:{port}");
    for _ in 0..100 {
        if ca_file.exists()
            && tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        Path::new(&ca_file).exists(),
        "bao -dev-tls wrote no CA to {}",
        dir.display()
    );
    TlsBao {
        child,
        addr,
        ca_file,
        dir,
    }
}

#[tokio::test]
async fn tls_server_with_ca_bundle_and_ca_provider() {
    let Some(env) = TestEnv::get("tls_server_with_ca_bundle_and_ca_provider").await else {
        return;
    };
    let ns = env.namespace("vault-tls").await;
    let bao_tls = tls_bao(&env).await;
    let ca_pem = std::fs::read_to_string(&bao_tls.ca_file).unwrap();
    let root = kube_secret(&env, &ns, "tls-root", "token", "root").await;
    let mut base = spec(
        &env,
        VaultAuth {
            token_secret_ref: Some(root),
            ..Default::default()
        },
    );
    base.connection.server = bao_tls.addr.clone();

    // Without the CA the server's certificate is not trusted.
    let untrusted = VaultKvProvider::new(&base, &auth_context(&env, &ns))
        .await
        .expect("provider");
    assert_eq!(
        untrusted.validate().await.unwrap_err().kind,
        ErrorKind::Transient
    );

    let mut bundle = base.clone();
    bundle.connection.ca_bundle = Some(base64::engine::general_purpose::STANDARD.encode(&ca_pem));
    let provider = VaultKvProvider::new(&bundle, &auth_context(&env, &ns))
        .await
        .expect("provider");
    provider
        .validate()
        .await
        .expect("validate over TLS with caBundle");
    assert_eq!(get_json(&provider, "nothing/here", None).await, None);

    let cms: Api<ConfigMap> = Api::namespaced(env.kube.clone(), &ns);
    cms.create(
        &PostParams::default(),
        &ConfigMap {
            metadata: ObjectMeta {
                name: Some("vault-ca".into()),
                ..Default::default()
            },
            data: Some([("ca.crt".to_string(), ca_pem.clone())].into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut provider_cm = base.clone();
    provider_cm.connection.ca_provider = Some(CaProvider {
        type_: CaProviderType::ConfigMap,
        name: "vault-ca".into(),
        key: "ca.crt".into(),
        namespace: None,
    });
    let provider = VaultKvProvider::new(&provider_cm, &auth_context(&env, &ns))
        .await
        .expect("provider");
    provider
        .validate()
        .await
        .expect("validate over TLS with caProvider");

    let mut not_pem = base;
    not_pem.connection.ca_bundle = Some(base64::engine::general_purpose::STANDARD.encode("hello"));
    let err = VaultKvProvider::new(&not_pem, &auth_context(&env, &ns))
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::InvalidConfig);
}

#[tokio::test]
async fn namespace_is_sent_as_x_vault_namespace() {
    let Some(env) = TestEnv::get("namespace_is_sent_as_x_vault_namespace").await else {
        return;
    };
    let ns = env.namespace("vault-ns").await;
    let vault_ns = format!("team-{}", random_suffix());
    bao(&env, &["namespace", "create", &vault_ns]).await;
    bao(
        &env,
        &[
            "secrets",
            "enable",
            &format!("-namespace={vault_ns}"),
            "-path=secret",
            "kv-v2",
        ],
    )
    .await;
    bao(
        &env,
        &[
            "kv",
            "put",
            &format!("-namespace={vault_ns}"),
            "-mount=secret",
            "app/db",
            "user=in-namespace",
        ],
    )
    .await;
    let root = kube_secret(&env, &ns, "root", "token", &env.vault_token).await;
    let mut in_namespace = spec(
        &env,
        VaultAuth {
            token_secret_ref: Some(root),
            ..Default::default()
        },
    );
    in_namespace.connection.namespace = Some(vault_ns.clone());
    let provider = VaultKvProvider::new(&in_namespace, &auth_context(&env, &ns))
        .await
        .expect("provider");
    assert_eq!(
        get_json(&provider, "app/db", None).await,
        Some(json!({"user": "in-namespace"}))
    );
    let mut outside = in_namespace;
    outside.connection.namespace = None;
    let outside = VaultKvProvider::new(&outside, &auth_context(&env, &ns))
        .await
        .expect("provider");
    assert_eq!(get_json(&outside, "app/db", None).await, None);
}

/// issue 27: a `dataFrom.find` path is a tenant's to choose; the listing below it is bounded in
/// depth (and in entries), with a clear error instead of a walk of the whole tree.
#[tokio::test]
async fn find_listing_is_bounded_in_depth() {
    let Some(env) = TestEnv::get("find_listing_is_bounded_in_depth").await else {
        return;
    };
    let ns = env.namespace("vault-find-deep").await;
    let prefix = format!("deep-{}", random_suffix());
    let deep: Vec<String> = (0..40).map(|i| format!("l{i}")).collect();
    put_v2(
        &env,
        &format!("{prefix}/{}/db", deep.join("/")),
        json!({"user": "x"}),
    )
    .await;
    put_v2(&env, &format!("{prefix}/shallow/db"), json!({"user": "y"})).await;
    let pol = read_policy(&env, &prefix).await;
    let provider = token_provider(&env, &ns, &[&pol]).await;
    let err = provider
        .find(&ExternalSecretFind {
            path: Some(prefix.clone()),
            ..Default::default()
        })
        .await
        .expect_err("a listing 40 folders deep is refused");
    assert_eq!(err.kind, ErrorKind::InvalidData);
    assert!(
        err.message
            .contains("goes deeper than 32 folders; narrow find.path"),
        "{}",
        err.message
    );
    // Below the bound, the same tree is found.
    let found = provider
        .find(&ExternalSecretFind {
            path: Some(format!("{prefix}/shallow")),
            ..Default::default()
        })
        .await
        .expect("a shallow find");
    assert_eq!(found.len(), 1);
}

/// A hostile "Vault server" on a loopback port: `lookup-self` answers as Vault does; every
/// other request gets a 200 whose body never ends (chunked, 64 KiB chunks, up to 64 MiB) or,
/// with `declared`, a `Content-Length` of 100 MiB before any byte of it. Returns the address and
/// the count of body bytes written so far.
async fn endless_vault(declared: bool) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let sent = counter.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if request.starts_with(b"GET /v1/auth/token/lookup-self") {
                    let body = r#"{"data":{"ttl":0,"renewable":false,"policies":["default"]}}"#;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(format!("{head}{body}").as_bytes()).await;
                    return;
                }
                if declared {
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 104857600\r\n\r\n{\"data\":{\"data\":{\"k\":\"";
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.shutdown().await;
                    return;
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if conn.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'a'; 64 << 10];
                let framed = [
                    format!("{:x}\r\n", chunk.len()).into_bytes(),
                    chunk,
                    b"\r\n".to_vec(),
                ]
                .concat();
                // Bounded: 1,024 chunks (64 MiB) at most, or until the client hangs up.
                for _ in 0..1024 {
                    if conn.write_all(&framed).await.is_err() {
                        return;
                    }
                    sent.fetch_add(64 << 10, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, sent)
}

/// issue 27: the server of a SecretStore is a tenant's to name; its answers are read up to
/// 4 MiB (src/providers/vault/bounded.rs), so an endless or huge response fails that store's
/// read with a clear error instead of filling the operator's memory.
#[tokio::test]
async fn a_vault_response_is_read_up_to_4_mib() {
    let Some(env) = TestEnv::get("a_vault_response_is_read_up_to_4_mib").await else {
        return;
    };
    for declared in [false, true] {
        let ns = env
            .namespace(if declared {
                "vault-huge"
            } else {
                "vault-endless"
            })
            .await;
        let (addr, sent) = endless_vault(declared).await;
        let provider = token_provider_with(&env, &ns, &["default"], |mut s| {
            s.connection.server = addr.clone();
            s
        })
        .await;
        let err = provider
            .get("app/db", None)
            .await
            .expect_err("an endless response is refused");
        assert_eq!(err.kind, ErrorKind::InvalidData, "{err}");
        assert!(
            err.message.contains(
                "the response is larger than 4 MiB, the most secret-relay reads from a Vault server"
            ),
            "{}",
            err.message
        );
        // The reader stopped near the bound: what the server managed to write is the 4 MiB
        // read plus what the sockets' buffers took, far from the 64 MiB it would have sent.
        let written = sent.load(std::sync::atomic::Ordering::Relaxed);
        assert!(written < 24 << 20, "the server wrote {written} bytes");
    }
    // A normal answer of the real server is read as ever.
    let ns = env.namespace("vault-small").await;
    let prefix = format!("small-{}", random_suffix());
    put_v2(&env, &format!("{prefix}/db"), json!({"user": "x"})).await;
    let pol = read_policy(&env, &prefix).await;
    let provider = token_provider(&env, &ns, &[&pol]).await;
    assert_eq!(
        get_json(&provider, &format!("{prefix}/db"), None).await,
        Some(json!({"user": "x"}))
    );
}

/// issue 27: a SecretStore's ServiceAccount token carries `vault` by default, and one for an
/// audience the API server itself accepts is never minted for it (sent to the server the
/// store names, it would be valid against the cluster), unless the operator opts in.
#[tokio::test]
async fn a_secret_store_never_mints_a_token_the_api_server_accepts() {
    let Some(env) = TestEnv::get("a_secret_store_never_mints_a_token_the_api_server_accepts").await
    else {
        return;
    };
    let _logins = LOGINS.lock().await;
    let ns = env.namespace("vault-aud").await;
    let prefix = format!("aud-{}", random_suffix());
    put_v2(&env, &format!("{prefix}/db"), json!({"password": "pw"})).await;
    let pol = read_policy(&env, &prefix).await;
    let mount = kubernetes_auth_mount(&env, &ns, &pol).await;
    env.service_account_token(&ns, "app", &[]).await; // creates the ServiceAccount
    // The API server's own audiences: what a TokenRequest naming none gets.
    let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
        kube::Api::namespaced(env.kube.clone(), &ns);
    let learnt = accounts
        .create_token_request(
            "app",
            &Default::default(),
            &k8s_openapi::api::authentication::v1::TokenRequest {
                spec: Some(k8s_openapi::api::authentication::v1::TokenRequestSpec {
                    audiences: Some(vec![]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .expect("TokenRequest")
        .spec
        .and_then(|s| s.audiences)
        .unwrap_or_default();
    let api_audience = learnt
        .first()
        .expect("the API server has an audience")
        .clone();
    let auth = |audiences: Vec<String>| VaultAuth {
        kubernetes: Some(VaultKubernetesAuth {
            mount_path: mount.clone(),
            role: "app".into(),
            service_account_ref: Some(ServiceAccountSelector {
                name: "app".into(),
                audiences,
                ..Default::default()
            }),
            secret_ref: None,
        }),
        ..Default::default()
    };
    // Default: audience `vault`, which the role names; login works.
    VaultKvProvider::new(&spec(&env, auth(vec![])), &auth_context(&env, &ns))
        .await
        .expect("kubernetes login with an audience-vault token");
    // The API server's audience: refused before any token is sent.
    let err = VaultKvProvider::new(
        &spec(&env, auth(vec![api_audience.clone()])),
        &auth_context(&env, &ns),
    )
    .await
    .err()
    .expect("a token the API server accepts is refused");
    assert_eq!(err.kind, ErrorKind::InvalidConfig);
    assert!(
        err.message.contains(&format!(
            "audience {api_audience:?} is one the Kubernetes API server accepts"
        )),
        "{}",
        err.message
    );
    // An admin's opt-in lets it through to the login (which the role, bound to `vault`,
    // then refuses: the point is that the operator no longer stops it).
    let err = VaultKvProvider::new(
        &spec(&env, auth(vec![api_audience])),
        &auth_context(&env, &ns).allowing_api_server_audience(true),
    )
    .await
    .err()
    .expect("the role wants audience vault");
    assert_eq!(err.kind, ErrorKind::Authentication, "{}", err.message);
}
