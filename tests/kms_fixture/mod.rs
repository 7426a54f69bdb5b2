//! The fixture of the KMS and SOPS tests (tests/external_secret_kms.rs,
//! tests/encrypted_files.rs): a namespace with AWS and Vault credentials, the operator
//! watching it, stores of each key service, ConfigMaps and the real `sops` binary.

#![allow(dead_code)]

use std::{collections::BTreeMap, path::Path, time::Duration};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use secret_relay::api::{ExternalSecret, SecretStore};
use serde_json::json;

use crate::common::{TestEnv, random_suffix};
use crate::operator::{self, apply_yaml, secret_data, wait_for};

pub struct Fixture {
    pub env: TestEnv,
    pub ns: String,
    pub es: Api<ExternalSecret>,
    pub secrets: Api<Secret>,
    pub config_maps: Api<ConfigMap>,
    pub dir: tempdir::Dir,
    _operator: operator::Operator,
}

mod tempdir {
    /// A temporary directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let p = std::env::temp_dir().join(format!("sr-kms-{}", crate::common::random_suffix()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub async fn setup(test: &str) -> Option<Fixture> {
    let env = TestEnv::get(test).await?;
    let ns = env.namespace("kms").await;
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &ns);
    let creds: Secret = serde_json::from_value(json!({
        "metadata": {"name": "creds"},
        "stringData": {"id": "testing", "secret": "testing", "token": env.vault_token}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &creds)
        .await
        .unwrap();
    let operator = operator::start(&env.kube, &ns, false).await;
    Some(Fixture {
        es: Api::namespaced(env.kube.clone(), &ns),
        config_maps: Api::namespaced(env.kube.clone(), &ns),
        secrets,
        dir: tempdir::Dir::new(),
        ns,
        env,
        _operator: operator,
    })
}

impl Fixture {
    pub async fn store(&self, name: &str, kms: &str) {
        let stores: Api<SecretStore> = Api::namespaced(self.env.kube.clone(), &self.ns);
        apply_yaml(
            &stores,
            &format!(
                "apiVersion: secret-relay.dev/v1alpha1\nkind: SecretStore\nmetadata: {{name: {name}}}\nspec:\n  provider:\n    kms:\n{kms}"
            ),
        )
        .await;
    }

    pub async fn aws_store(&self, name: &str, extra: &str) {
        self.store(
            name,
            &format!(
                r#"      aws:
        region: {region}
        endpoint: {endpoint}
        auth:
          secretRef:
            accessKeyIDSecretRef: {{name: creds, key: id}}
            secretAccessKeySecretRef: {{name: creds, key: secret}}
{extra}"#,
                region = self.env.aws_region,
                endpoint = self.env.aws_endpoint
            ),
        )
        .await;
    }

    pub async fn transit_store(&self, name: &str, mount: &str, key: &str) {
        self.store(
            name,
            &format!(
                r#"      vaultTransit:
        server: {server}
        path: {mount}
        keyName: {key}
        auth:
          tokenSecretRef: {{name: creds, key: token}}
"#,
                server = self.env.vault_addr
            ),
        )
        .await;
    }

    pub async fn es(&self, yaml: &str) -> ExternalSecret {
        apply_yaml(&self.es, yaml).await
    }

    pub async fn data(&self, name: &str) -> BTreeMap<String, String> {
        secret_data(&self.secrets.get(name).await.expect("secret exists"))
    }

    /// Puts `text` under `key` of ConfigMap `name` (created or replaced).
    pub async fn config_map(&self, name: &str, key: &str, text: &str) {
        let cm: ConfigMap = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name}, "data": {key: text}
        }))
        .unwrap();
        self.config_maps
            .patch(
                name,
                &PatchParams::apply("test-user").force(),
                &Patch::Apply(&cm),
            )
            .await
            .expect("apply ConfigMap");
    }

    /// Runs the real `sops encrypt ARGS <file>` on `plaintext` written as `file_name`.
    pub fn sops_encrypt(
        &self,
        file_name: &str,
        plaintext: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> String {
        let path = self.dir.0.join(file_name);
        std::fs::write(&path, plaintext).unwrap();
        sops(&self.env.tool("SOPS"), &path, args, env)
    }

    pub async fn force_sync(&self, name: &str) {
        let patch = json!({"metadata": {"annotations": {
            "secret-relay.dev/force-sync": random_suffix()
        }}});
        self.es
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
}

pub fn sops(bin: &Path, file: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(bin)
        .arg("encrypt")
        .args(args)
        .arg(file)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .envs(env.iter().copied())
        .output()
        .expect("run sops");
    assert!(
        out.status.success(),
        "sops encrypt failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub async fn moto_kms_key(env: &TestEnv) -> (aws_sdk_kms::Client, String) {
    let kms = aws_sdk_kms::Client::new(&env.aws_sdk_config().await);
    let key = kms.create_key().send().await.expect("CreateKey");
    let arn = key.key_metadata.unwrap().arn.unwrap();
    (kms, arn)
}

/// Waits until the ExternalSecret has been reconciled for its current annotations (its
/// `syncedResourceVersion` changed from `before`).
pub async fn wait_resynced(api: &Api<ExternalSecret>, name: &str, before: Option<String>) {
    wait_for("a new sync", Duration::from_secs(30), || async {
        let es = api.get(name).await.ok()?;
        let now = es.status.as_ref()?.synced_resource_version.clone();
        (now != before).then_some(())
    })
    .await;
}
