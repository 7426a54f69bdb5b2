//! ExternalSecrets synced from OpenBao (Vault KV v1 and v2) into Secrets on the real API server.

mod common;
mod operator;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use secret_relay::api::{ExternalSecret, SecretStore};
use serde_json::json;

use common::{TestEnv, random_suffix};
use operator::{apply_yaml, ready_message, secret_data, vault_store, wait_reason};

#[tokio::test]
async fn kv2_extract_property_version_and_find() {
    let Some(env) = TestEnv::get("kv2_extract_property_version_and_find").await else {
        return;
    };
    let ns = env.namespace("vault").await;
    let _op = operator::start(&env.kube, &ns, false).await;
    let p = random_suffix();
    common::vault::put_v2(
        &env,
        &format!("{p}/app/db"),
        json!({"user": "app", "password": "v1-pw", "port": 5432}),
    )
    .await;
    common::vault::put_v2(
        &env,
        &format!("{p}/app/db"),
        json!({"user": "app", "password": "v2-pw", "port": 5432}),
    )
    .await;
    common::vault::put_v2(
        &env,
        &format!("{p}/app/cfg"),
        json!({"tls": {"mode": "verify-full"}}),
    )
    .await;
    vault_store(
        &env,
        &ns,
        "vault",
        "      path: secret\n      version: v2",
        &env.vault_token,
    )
    .await;
    let es: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &ns);
    apply_yaml(
        &es,
        &r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: app}
spec:
  secretStoreRef: {name: vault}
  dataFrom:
  - extract: {key: P/app/db}
  data:
  - secretKey: old-password
    remoteRef: {key: P/app/db, property: password, version: "1"}
  - secretKey: tls-mode
    remoteRef: {key: P/app/cfg, property: tls.mode}
  - secretKey: whole
    remoteRef: {key: P/app/cfg}
"#
        .replace("P/", &format!("{p}/")),
    )
    .await;
    wait_reason(&es, "app", "SecretSynced").await;
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &ns);
    let s = secrets.get("app").await.unwrap();
    let d = secret_data(&s);
    assert_eq!(d["user"], "app");
    assert_eq!(d["password"], "v2-pw");
    assert_eq!(d["port"], "5432");
    assert_eq!(d["old-password"], "v1-pw");
    assert_eq!(d["tls-mode"], "verify-full");
    assert_eq!(d["whole"], r#"{"tls":{"mode":"verify-full"}}"#);
    assert_eq!(d.len(), 6);
    assert_eq!(
        s.metadata.annotations.unwrap()["secret-relay.dev/store"],
        "SecretStore/vault"
    );

    apply_yaml(
        &es,
        &format!(
            r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {{name: found}}
spec:
  secretStoreRef: {{name: vault}}
  dataFrom:
  - find:
      path: {p}/app
      name: {{regexp: "cfg$"}}
"#
        ),
    )
    .await;
    wait_reason(&es, "found", "SecretSynced").await;
    let d = secret_data(&secrets.get("found").await.unwrap());
    assert_eq!(d.len(), 1, "{:?}", d.keys());
    assert_eq!(
        d[&format!("{p}_app_cfg")],
        r#"{"tls":{"mode":"verify-full"}}"#
    );
}

#[tokio::test]
async fn kv1_and_permission_denied() {
    let Some(env) = TestEnv::get("kv1_and_permission_denied").await else {
        return;
    };
    let ns = env.namespace("vault1").await;
    let _op = operator::start(&env.kube, &ns, false).await;
    let root = env.vault();
    let mount = format!("kv1-{}", random_suffix());
    vaultrs::sys::mount::enable(
        &root,
        &mount,
        "kv",
        Some(
            vaultrs::api::sys::requests::EnableEngineRequest::builder().options(
                std::collections::HashMap::from([("version".to_string(), "1".to_string())]),
            ),
        ),
    )
    .await
    .unwrap();
    vaultrs::kv1::set(
        &root,
        &mount,
        "app",
        &std::collections::HashMap::from([("k", "kv1-value")]),
    )
    .await
    .unwrap();
    vault_store(
        &env,
        &ns,
        "v1",
        &format!("      path: {mount}\n      version: v1"),
        &env.vault_token,
    )
    .await;
    // A token whose policy cannot read secret/data/*.
    let policy = format!("none-{}", random_suffix());
    vaultrs::sys::policy::set(
        &root,
        &policy,
        r#"path "sys/*" { capabilities = ["deny"] }"#,
    )
    .await
    .unwrap();
    let token = vaultrs::token::new(
        &root,
        Some(vaultrs::api::token::requests::CreateTokenRequest::builder().policies(vec![policy])),
    )
    .await
    .unwrap()
    .client_token;
    vault_store(&env, &ns, "weak", "", &token).await;
    let es: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &ns);
    apply_yaml(
        &es,
        r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: one}
spec:
  secretStoreRef: {name: v1}
  data:
  - secretKey: k
    remoteRef: {key: app, property: k}
"#,
    )
    .await;
    apply_yaml(
        &es,
        r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: denied}
spec:
  secretStoreRef: {name: weak}
  data:
  - secretKey: k
    remoteRef: {key: team/db}
"#,
    )
    .await;
    wait_reason(&es, "one", "SecretSynced").await;
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &ns);
    assert_eq!(
        secret_data(&secrets.get("one").await.unwrap())["k"],
        "kv1-value"
    );
    let denied = wait_reason(&es, "denied", "SecretSyncedError").await;
    assert_eq!(
        ready_message(&denied),
        "vault: permission denied on secret/data/team/db"
    );
    assert!(secrets.get_opt("denied").await.unwrap().is_none());
}

/// Logins other than a static token, end to end: Kubernetes auth (a TokenRequest token of
/// ServiceAccount `app` in the ExternalSecret's namespace, reviewed by OpenBao against this
/// API server) and AppRole (role ID inline, secret ID from a Secret).
#[tokio::test]
async fn kubernetes_and_approle_logins() {
    let Some(env) = TestEnv::get("kubernetes_and_approle_logins").await else {
        return;
    };
    let ns = env.namespace("vault-auth").await;
    let _op = operator::start(&env.kube, &ns, false).await;
    let p = random_suffix();
    common::vault::put_v2(
        &env,
        &format!("{p}/db"),
        json!({"password": "k8s-pw", "user": "app"}),
    )
    .await;
    let pol = format!("read-{p}");
    common::vault::policy(
        &env,
        &pol,
        &format!("path \"secret/data/{p}/*\" {{ capabilities = [\"read\"] }}\n"),
    )
    .await;
    let k8s_mount = common::vault::kubernetes_auth_mount(&env, &ns, &pol).await;
    env.service_account_token(&ns, "app", &[]).await; // creates ServiceAccount app
    let (approle_mount, role_id, secret_id) = common::vault::approle(&env, &pol, &[]).await;
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &ns);
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": "approle"}, "stringData": {"secret-id": secret_id}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    let stores: Api<SecretStore> = Api::namespaced(env.kube.clone(), &ns);
    for (name, auth) in [
        (
            "k8s",
            format!(
                "kubernetes: {{mountPath: {k8s_mount}, role: app, serviceAccountRef: {{name: app}}}}"
            ),
        ),
        (
            "approle",
            format!(
                "appRole: {{path: {approle_mount}, roleId: {role_id}, secretRef: {{name: approle, key: secret-id}}}}"
            ),
        ),
    ] {
        apply_yaml(
            &stores,
            &format!(
                r#"
apiVersion: secret-relay.dev/v1alpha1
kind: SecretStore
metadata: {{name: {name}}}
spec:
  provider:
    vault:
      server: {server}
      auth:
        {auth}
"#,
                server = env.vault_addr
            ),
        )
        .await;
    }
    let es: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &ns);
    for store in ["k8s", "approle"] {
        apply_yaml(
            &es,
            &format!(
                r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {{name: via-{store}}}
spec:
  secretStoreRef: {{name: {store}}}
  dataFrom:
  - extract: {{key: {p}/db}}
"#
            ),
        )
        .await;
    }
    for store in ["k8s", "approle"] {
        let name = format!("via-{store}");
        let synced = wait_reason(&es, &name, "SecretSynced").await;
        assert_eq!(
            ready_message(&synced),
            format!("Secret {name} synced from SecretStore/{store}")
        );
        let s = secrets.get(&name).await.unwrap();
        assert_eq!(
            secret_data(&s),
            [("password", "k8s-pw"), ("user", "app")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        );
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
    }
    // A ServiceAccount the role is not bound to is refused at login, and says so.
    env.service_account_token(&ns, "intruder", &[]).await;
    apply_yaml(
        &stores,
        &format!(
            r#"
apiVersion: secret-relay.dev/v1alpha1
kind: SecretStore
metadata: {{name: k8s-intruder}}
spec:
  provider:
    vault:
      server: {server}
      auth:
        kubernetes: {{mountPath: {k8s_mount}, role: app, serviceAccountRef: {{name: intruder}}}}
"#,
            server = env.vault_addr
        ),
    )
    .await;
    apply_yaml(
        &es,
        &format!(
            r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {{name: intruder}}
spec:
  secretStoreRef: {{name: k8s-intruder}}
  dataFrom:
  - extract: {{key: {p}/db}}
"#
        ),
    )
    .await;
    let refused = operator::wait_store_refusal(&es, "intruder").await;
    assert!(
        ready_message(&refused).contains(&format!(
            "vault: login with kubernetes at auth/{k8s_mount} (role \"app\") failed: status 403"
        )),
        "{}",
        ready_message(&refused)
    );
}

/// ESO's `metadataPolicy: Fetch` on KV v2: the secret's `custom_metadata` (set with
/// `bao kv metadata put -custom-metadata=...`), one entry by `property` or all by `extract`.
#[tokio::test]
async fn metadata_policy_fetch_reads_custom_metadata() {
    let Some(env) = TestEnv::get("metadata_policy_fetch_reads_custom_metadata").await else {
        return;
    };
    let ns = env.namespace("vault").await;
    let _op = operator::start(&env.kube, &ns, false).await;
    let p = random_suffix();
    common::vault::put_v2(&env, &format!("{p}/app"), json!({"password": "pw"})).await;
    common::vault::bao(
        &env,
        &[
            "kv",
            "metadata",
            "put",
            "-mount=secret",
            "-custom-metadata=team=payments",
            "-custom-metadata=owner=alice",
            &format!("{p}/app"),
        ],
    )
    .await;
    vault_store(
        &env,
        &ns,
        "vault",
        "      path: secret\n      version: v2",
        &env.vault_token,
    )
    .await;
    let es: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &ns);
    apply_yaml(
        &es,
        &format!(
            r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {{name: meta}}
spec:
  secretStoreRef: {{name: vault}}
  dataFrom:
  - extract: {{key: {p}/app, metadataPolicy: Fetch}}
  data:
  - secretKey: the-team
    remoteRef: {{key: {p}/app, metadataPolicy: Fetch, property: team}}
  - secretKey: password
    remoteRef: {{key: {p}/app, property: password}}
"#
        ),
    )
    .await;
    wait_reason(&es, "meta", "SecretSynced").await;
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &ns);
    assert_eq!(
        secret_data(&secrets.get("meta").await.unwrap()),
        [
            ("owner", "alice"),
            ("password", "pw"),
            ("team", "payments"),
            ("the-team", "payments")
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    );
}

/// ESO v1 additions end to end: `dataFrom.find` keys rewritten by a `transform` template then
/// `merge`d into one JSON value, and a keystore made by `openssl pkcs12 -export` (stored
/// base64 in Vault) opened by ESO's `pkcs12keyPass`/`pkcs12certPass` template functions.
#[tokio::test]
async fn rewrite_transform_merge_and_pkcs12_templates() {
    use base64::Engine as _;
    let Some(env) = TestEnv::get("rewrite_transform_merge_and_pkcs12_templates").await else {
        return;
    };
    let ns = env.namespace("vault").await;
    let _op = operator::start(&env.kube, &ns, false).await;
    let p = random_suffix();

    let dir = std::env::temp_dir().join(format!("secret-relay-p12-{p}"));
    std::fs::create_dir_all(&dir).unwrap();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("the openssl CLI is installed");
        assert!(out.status.success(), "openssl {args:?}");
        out.stdout
    };
    openssl(&[
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem", "-out", "c.pem",
        "-subj", "/CN=tls", "-days", "1",
    ]);
    openssl(&[
        "pkcs12",
        "-export",
        "-in",
        "c.pem",
        "-inkey",
        "k.pem",
        "-passout",
        "pass:1234",
        "-out",
        "t.p12",
    ]);
    let want_key =
        String::from_utf8(openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", "k.pem"])).unwrap();
    let want_crt = std::fs::read_to_string(dir.join("c.pem")).unwrap();
    let keystore =
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(dir.join("t.p12")).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();

    common::vault::put_v2(
        &env,
        &format!("{p}/db/a"),
        json!({"host": "db.internal", "port": "5432"}),
    )
    .await;
    common::vault::put_v2(&env, &format!("{p}/db/b"), json!({"user": "app"})).await;
    common::vault::put_v2(
        &env,
        &format!("{p}/certs/tls"),
        json!({"keystore": keystore, "password": "1234"}),
    )
    .await;
    vault_store(
        &env,
        &ns,
        "vault",
        "      path: secret\n      version: v2",
        &env.vault_token,
    )
    .await;
    let es: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &ns);
    apply_yaml(
        &es,
        &r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: app}
spec:
  secretStoreRef: {name: vault}
  target:
    template:
      mergePolicy: Merge
      data:
        tls.key: '{{ .keystore | b64dec | pkcs12keyPass .pass }}'
        tls.crt: '{{ .keystore | b64dec | pkcs12certPass .pass }}'
  dataFrom:
  - find: {path: P/db}
    rewrite:
    - transform: {template: '{{ .value | base | upper }}'}
    - merge: {strategy: JSON, into: merged}
  data:
  - secretKey: keystore
    remoteRef: {key: P/certs/tls, property: keystore}
  - secretKey: pass
    remoteRef: {key: P/certs/tls, property: password}
"#
        .replace("P/", &format!("{p}/")),
    )
    .await;
    let synced = wait_reason(&es, "app", "SecretSynced").await;
    assert_eq!(
        ready_message(&synced),
        "Secret app synced from SecretStore/vault"
    );
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &ns);
    let d = secret_data(&secrets.get("app").await.unwrap());
    let a: serde_json::Value = serde_json::from_str(&d["A"]).unwrap();
    assert_eq!(a, json!({"host": "db.internal", "port": "5432"}));
    assert_eq!(
        d["merged"],
        r#"{"host":"db.internal","port":"5432","user":"app"}"#
    );
    assert_eq!(d["tls.key"], want_key);
    assert_eq!(d["tls.crt"], want_crt);
}
