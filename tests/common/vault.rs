//! OpenBao set-up shared by the Vault tests: the `bao` CLI as root, policies, and the
//! Kubernetes, JWT and AppRole auth methods configured against this kube-apiserver.

use std::process::Stdio;

use base64::Engine as _;

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

/// Writes a KV v2 secret at `path` below the `secret/` mount, as root.
pub async fn put_v2(env: &TestEnv, path: &str, data: serde_json::Value) {
    vaultrs::kv2::set(&env.vault(), "secret", path, &data)
        .await
        .unwrap_or_else(|e| panic!("writing secret/{path}: {e}"));
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
            // The operator's tokens carry audience `vault`, never the API server's own.
            "audience=vault",
            &format!("bound_service_account_namespaces={ns}"),
            &format!("token_policies={policy}"),
        ],
    )
    .await;
    mount
}

/// JWT auth at `jwt-<random>` trusting this API server's service-account signing keys (from
/// its JWKS document), with role `role` of `policy` for tokens of audience `audience` whose
/// subject is ServiceAccount `service_account` of `ns`; returns the mount.
pub async fn jwt_auth_mount(
    env: &TestEnv,
    ns: &str,
    policy: &str,
    role: &str,
    audience: &str,
    service_account: &str,
) -> String {
    let mount = format!("jwt-{}", random_suffix());
    bao(env, &["auth", "enable", &format!("-path={mount}"), "jwt"]).await;
    let keys = service_account_public_keys(env).await;
    let key_file = std::env::temp_dir().join(format!("secret-relay-{mount}.json"));
    std::fs::write(
        &key_file,
        serde_json::json!({"jwt_validation_pubkeys": keys}).to_string(),
    )
    .unwrap();
    bao(
        env,
        &[
            "write",
            &format!("auth/{mount}/config"),
            &format!("@{}", key_file.display()),
        ],
    )
    .await;
    std::fs::remove_file(&key_file).unwrap();
    bao(
        env,
        &[
            "write",
            &format!("auth/{mount}/role/{role}"),
            "role_type=jwt",
            &format!("bound_audiences={audience}"),
            "user_claim=sub",
            &format!("bound_subject=system:serviceaccount:{ns}:{service_account}"),
            &format!("token_policies={policy}"),
        ],
    )
    .await;
    mount
}

/// The API server's service-account signing keys as PEM public keys, from its JWKS document.
async fn service_account_public_keys(env: &TestEnv) -> Vec<String> {
    let out = tokio::process::Command::new(env.tool("KUBECTL"))
        .args(["get", "--raw", "/openid/v1/jwks"])
        .env("KUBECONFIG", &env.kubeconfig)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl get --raw /openid/v1/jwks: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwks: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JWKS is JSON");
    jwks["keys"]
        .as_array()
        .expect("JWKS keys")
        .iter()
        .map(|k| {
            assert_eq!(
                k["kty"], "RSA",
                "only RSA service-account keys are handled here"
            );
            let b64 = |field: &str| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(k[field].as_str().expect("JWK field"))
                    .expect("base64url")
            };
            rsa_public_key_pem(&b64("n"), &b64("e"))
        })
        .collect()
}

/// PEM `PUBLIC KEY` (SubjectPublicKeyInfo, DER) of the RSA key (modulus, exponent).
fn rsa_public_key_pem(n: &[u8], e: &[u8]) -> String {
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
        let mut content = Vec::new();
        if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
            content.push(0);
        }
        content.extend(trimmed);
        der(0x02, &content)
    }
    let rsa_key = der(0x30, &[integer(n), integer(e)].concat());
    let algorithm = der(
        0x30,
        &[
            der(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            ),
            der(0x05, &[]),
        ]
        .concat(),
    );
    let spki = der(
        0x30,
        &[algorithm, der(0x03, &[&[0u8][..], &rsa_key].concat())].concat(),
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(spki);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
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
