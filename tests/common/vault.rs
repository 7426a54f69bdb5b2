//! OpenBao set-up shared by the Vault tests: the `bao` CLI as root, policies, and the
//! Kubernetes auth method configured against this kube-apiserver.

use std::process::Stdio;

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};

use super::{TestEnv, random_suffix};

/// Runs the `bao` CLI as root against the environment's OpenBao; returns stdout, panics with
/// stderr on failure.
pub async fn bao(env: &TestEnv, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env.tool("BAO"))
        .args(args)
        .env("BAO_ADDR", &env.vault_addr)
        .env("VAULT_ADDR", &env.vault_addr)
        .env("BAO_TOKEN", &env.vault_token)
        .env("VAULT_TOKEN", &env.vault_token)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running bao");
    assert!(
        out.status.success(),
        "bao {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("bao output is UTF-8")
}

/// Writes policy `name` from HCL.
pub async fn policy(env: &TestEnv, name: &str, hcl: &str) {
    let file = std::env::temp_dir().join(format!("secret-relay-policy-{name}.hcl"));
    std::fs::write(&file, hcl).unwrap();
    bao(env, &["policy", "write", name, file.to_str().unwrap()]).await;
    std::fs::remove_file(&file).unwrap();
}

/// Kubernetes auth at `k8s-<random>`, reviewing tokens with a ServiceAccount bound to
/// `system:auth-delegator`; role `app` bound to ServiceAccount `app` of `ns`.
pub async fn kubernetes_auth_mount(env: &TestEnv, ns: &str, policy: &str) -> String {
    let reviewer = env.service_account_token(ns, "vault-reviewer", &[]).await;
    let crb: Api<ClusterRoleBinding> = Api::all(env.kube.clone());
    crb.create(
        &PostParams::default(),
        &ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some(format!("{ns}-vault-reviewer")),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: "system:auth-delegator".into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: "vault-reviewer".into(),
                namespace: Some(ns.into()),
                ..Default::default()
            }]),
        },
    )
    .await
    .expect("ClusterRoleBinding for the token reviewer");
    let mount = format!("k8s-{}", random_suffix());
    bao(
        env,
        &["auth", "enable", &format!("-path={mount}"), "kubernetes"],
    )
    .await;
    let mut config = vec![
        "write".to_string(),
        format!("auth/{mount}/config"),
        format!("kubernetes_host={}", env.kube_url),
        format!("token_reviewer_jwt={reviewer}"),
        "disable_local_ca_jwt=true".to_string(),
    ];
    if let Some(ca) = &env.kube_ca_file {
        config.push(format!("kubernetes_ca_cert=@{}", ca.display()));
    }
    bao(env, &config.iter().map(String::as_str).collect::<Vec<_>>()).await;
    bao(
        env,
        &[
            "write",
            &format!("auth/{mount}/role/app"),
            "bound_service_account_names=app",
            &format!("bound_service_account_namespaces={ns}"),
            &format!("token_policies={policy}"),
        ],
    )
    .await;
    mount
}

/// An AppRole mount `approle-<random>` with role `app` of `policy` and extra role settings;
/// returns (mount, role_id, secret_id).
pub async fn approle(env: &TestEnv, policy: &str, settings: &[&str]) -> (String, String, String) {
    let mount = format!("approle-{}", random_suffix());
    bao(
        env,
        &["auth", "enable", &format!("-path={mount}"), "approle"],
    )
    .await;
    let mut args = vec![
        "write".to_string(),
        format!("auth/{mount}/role/app"),
        format!("token_policies={policy}"),
    ];
    args.extend(settings.iter().map(|s| s.to_string()));
    bao(env, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let role_id = bao(
        env,
        &[
            "read",
            "-field=role_id",
            &format!("auth/{mount}/role/app/role-id"),
        ],
    )
    .await;
    let secret_id = bao(
        env,
        &[
            "write",
            "-f",
            "-field=secret_id",
            &format!("auth/{mount}/role/app/secret-id"),
        ],
    )
    .await;
    (mount, role_id.trim().into(), secret_id.trim().into())
}
