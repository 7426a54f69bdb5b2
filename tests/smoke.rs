//! Smoke tests of the test environment itself: each server answers the way the operator will
//! talk to it. Run with `hack/test.sh --test smoke`.

mod common;

use common::{TestEnv, random_suffix};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use serde_json::json;

#[tokio::test]
async fn kube_secret_roundtrip() {
    let Some(env) = TestEnv::get("kube_secret_roundtrip").await else {
        return;
    };
    let ns = env.namespace("smoke-secret").await;
    let api: Api<Secret> = Api::namespaced(env.kube.clone(), &ns);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("db".into()),
            ..Default::default()
        },
        data: Some([("password".to_string(), ByteString(b"hunter2".to_vec()))].into()),
        ..Default::default()
    };
    api.create(&PostParams::default(), &secret)
        .await
        .expect("create Secret");
    let got = api.get("db").await.expect("get Secret");
    assert_eq!(
        got.data.unwrap().get("password").map(|b| b.0.as_slice()),
        Some(&b"hunter2"[..])
    );
}

#[tokio::test]
async fn ssm_secure_string_roundtrip() {
    let Some(env) = TestEnv::get("ssm_secure_string_roundtrip").await else {
        return;
    };
    let ssm = env.ssm().await;
    let name = format!("/smoke/{}/db-password", random_suffix());
    ssm.put_parameter()
        .name(&name)
        .value("s3cr3t")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .expect("ssm PutParameter");
    let out = ssm
        .get_parameter()
        .name(&name)
        .with_decryption(true)
        .send()
        .await
        .expect("ssm GetParameter");
    let param = out.parameter.expect("parameter in GetParameter response");
    assert_eq!(param.value.as_deref(), Some("s3cr3t"));
    assert_eq!(
        param.r#type,
        Some(aws_sdk_ssm::types::ParameterType::SecureString)
    );
}

#[tokio::test]
async fn vault_kv2_roundtrip() {
    let Some(env) = TestEnv::get("vault_kv2_roundtrip").await else {
        return;
    };
    let vault = env.vault();
    let path = format!("smoke/{}/db", random_suffix());
    vaultrs::kv2::set(
        &vault,
        "secret",
        &path,
        &json!({"user": "app", "password": "s3cr3t"}),
    )
    .await
    .expect("kv2 write");
    let got: serde_json::Value = vaultrs::kv2::read(&vault, "secret", &path)
        .await
        .expect("kv2 read");
    assert_eq!(got, json!({"user": "app", "password": "s3cr3t"}));
}

/// OpenBao's kubernetes auth method against this API server: TokenReview with a reviewer
/// ServiceAccount bound to system:auth-delegator, then a login as ServiceAccount `app`.
#[tokio::test]
async fn vault_kubernetes_auth_login() {
    let Some(env) = TestEnv::get("vault_kubernetes_auth_login").await else {
        return;
    };
    let id = random_suffix();
    let vault = env.vault();
    let ns = env.namespace("smoke-vault-auth").await;

    // The reviewer: a ServiceAccount that may call the TokenReview API.
    let crb_name = format!("smoke-token-reviewer-{id}");
    let crbs: Api<ClusterRoleBinding> = Api::all(env.kube.clone());
    let crb = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(crb_name.clone()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "system:auth-delegator".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "token-reviewer".into(),
            namespace: Some(ns.clone()),
            ..Default::default()
        }]),
    };
    crbs.create(&PostParams::default(), &crb)
        .await
        .expect("create ClusterRoleBinding");
    let reviewer_jwt = env.service_account_token(&ns, "token-reviewer", &[]).await;

    // The auth method, at a mount of its own so that runs and tests do not collide.
    let mount = format!("kubernetes-{id}");
    vaultrs::sys::auth::enable(&vault, &mount, "kubernetes", None)
        .await
        .expect("enable kubernetes auth");
    let ca = match &env.kube_ca_file {
        Some(p) => std::fs::read_to_string(p).expect("read KUBE_CA_FILE"),
        None => String::new(),
    };
    // vaultrs' configure() has no token_reviewer_jwt: write the config with a raw request.
    let resp = vault
        .http
        .http
        .post(format!("{}/v1/auth/{mount}/config", env.vault_addr))
        .header("X-Vault-Token", &env.vault_token)
        .body(
            serde_json::to_vec(&json!({
                "kubernetes_host": env.kube_url,
                "kubernetes_ca_cert": ca,
                "token_reviewer_jwt": reviewer_jwt,
                "disable_local_ca_jwt": true,
            }))
            .unwrap(),
        )
        .send()
        .await
        .expect("POST auth config");
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert!(
        status.is_success(),
        "configuring auth/{mount}: HTTP {status}: {body}"
    );

    // A secret, a policy that may read it, and a role binding `app` in `ns` to the policy.
    let base = format!("smoke/{id}");
    vaultrs::kv2::set(
        &vault,
        "secret",
        &format!("{base}/db"),
        &json!({"password": "s3cr3t"}),
    )
    .await
    .expect("kv2 write");
    vaultrs::kv2::set(
        &vault,
        "secret",
        &format!("smoke/{id}-other/db"),
        &json!({"password": "x"}),
    )
    .await
    .expect("kv2 write");
    let policy = format!("smoke-{id}");
    vaultrs::sys::policy::set(
        &vault,
        &policy,
        &format!(r#"path "secret/data/{base}/*" {{ capabilities = ["read"] }}"#),
    )
    .await
    .expect("write policy");
    vaultrs::auth::kubernetes::role::create(
        &vault,
        &mount,
        "app",
        Some(
            &mut vaultrs::api::auth::kubernetes::requests::CreateKubernetesRoleRequest::builder()
                .bound_service_account_names(vec!["app".to_string()])
                .bound_service_account_namespaces(vec![ns.clone()])
                .audience("vault")
                .token_policies(vec![policy.clone()])
                .token_ttl("10m"),
        ),
    )
    .await
    .expect("create role");

    // Login as `app` with a token for audience "vault".
    let jwt = env.service_account_token(&ns, "app", &["vault"]).await;
    let auth = vaultrs::auth::kubernetes::login(&env.vault_with_token(""), &mount, "app", &jwt)
        .await
        .expect("kubernetes login as app");
    assert!(!auth.client_token.is_empty());
    assert!(
        auth.policies.contains(&policy),
        "policies: {:?}",
        auth.policies
    );

    let app = env.vault_with_token(&auth.client_token);
    let got: serde_json::Value = vaultrs::kv2::read(&app, "secret", &format!("{base}/db"))
        .await
        .expect("kv2 read with the login token");
    assert_eq!(got, json!({"password": "s3cr3t"}));
    let denied =
        vaultrs::kv2::read::<serde_json::Value>(&app, "secret", &format!("smoke/{id}-other/db"))
            .await;
    assert!(
        denied.is_err(),
        "the policy must not allow smoke/{id}-other"
    );

    // A token of another ServiceAccount must not log in as `app`.
    let other = env.service_account_token(&ns, "other", &["vault"]).await;
    assert!(
        vaultrs::auth::kubernetes::login(&env.vault_with_token(""), &mount, "app", &other)
            .await
            .is_err(),
        "ServiceAccount `other` logged in with role `app`"
    );

    // Clean up what outlives the namespace (best effort).
    let _ = vaultrs::sys::auth::disable(&vault, &mount).await;
    let _ = vaultrs::sys::policy::delete(&vault, &policy).await;
    let _ = crbs.delete(&crb_name, &DeleteParams::default()).await;
}
