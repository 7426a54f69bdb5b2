//! Encrypted files from git, as GitOps teams keep them (issue 13), each flow typed the way its
//! users type it and applied with `kubectl apply -k` (Kustomize's `configMapGenerator` with
//! hashed names, and the examples' own `kustomizeconfig.yaml` teaching Kustomize that
//! `remoteRef.configMapRef.name` names a ConfigMap):
//! - Flux + sops, one file per variable: `echo -n "$URL" > .sops/DATABASE_URL.enc;
//!   sops -e -i .sops/DATABASE_URL.enc` (AWS KMS, moto), the files merged into one Secret with
//!   env-var keys; an edited file re-synced at once through the new ConfigMap name;
//! - files encrypted by the KMS CLIs (`aws kms encrypt` raw bytes and base64 text, a Vault
//!   Transit `vault:v1:` string), carried by a generator (`binaryData` for the raw bytes);
//! - a sops-encrypted Secret manifest (`--encrypted-regex '^(data|stringData)$'`) turned back
//!   into that Secret by `extract` with `property`;
//! - a tampered file of each kind: the error names the file, the Secret keeps its value.

mod common;
mod kms_fixture;
mod operator;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use secret_relay::api::ExternalSecret;

use kms_fixture::{Fixture, moto_kms_key, setup};
use operator::{ready_message, secret_data, wait_for};

/// The examples' Kustomize configuration (dev overlay): the test uses the shipped file.
fn examples_kustomizeconfig() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/overlays/dev/kustomizeconfig.yaml"),
    )
    .expect("examples/overlays/dev/kustomizeconfig.yaml")
}

/// A Kustomize directory of the test: files written relative to it, `sops` and `kubectl`
/// run in it as a user would.
struct Repo<'a> {
    f: &'a Fixture,
    dir: PathBuf,
    aws_env: Vec<(String, String)>,
}

impl<'a> Repo<'a> {
    fn new(f: &'a Fixture, name: &str) -> Repo<'a> {
        let dir = f.dir.0.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("kustomizeconfig.yaml"), examples_kustomizeconfig()).unwrap();
        let aws_env = [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", f.env.aws_region.as_str()),
            ("AWS_ENDPOINT_URL", f.env.aws_endpoint.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Repo { f, dir, aws_env }
    }

    fn write(&self, path: &str, bytes: impl AsRef<[u8]>) {
        let p = self.dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    fn read(&self, path: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(path)).unwrap()
    }

    /// Runs `sops ARGS` in the directory (its `.sops.yaml` applies), AWS pointed at moto.
    fn sops(&self, args: &[&str]) {
        let out = std::process::Command::new(self.f.env.tool("SOPS"))
            .args(args)
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.dir)
            .envs(self.aws_env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run sops");
        assert!(
            out.status.success(),
            "sops {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `kubectl apply -k .` into the fixture's namespace.
    fn apply(&self) {
        let out = std::process::Command::new(self.f.env.tool("KUBECTL"))
            .args(["apply", "-n", &self.f.ns, "-k", "."])
            .current_dir(&self.dir)
            .env("KUBECONFIG", &self.f.env.kubeconfig)
            .output()
            .expect("run kubectl apply -k");
        assert!(
            out.status.success(),
            "kubectl apply -k: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The ConfigMap name every `configMapRef` of ExternalSecret `name` carries (one).
async fn referenced_config_map(es: &Api<ExternalSecret>, name: &str) -> String {
    let es = es.get(name).await.unwrap();
    let mut names: Vec<String> = es
        .spec
        .data
        .iter()
        .map(|d| &d.remote_ref)
        .chain(es.spec.data_from.iter().filter_map(|d| d.extract.as_ref()))
        .filter_map(|r| r.config_map_ref.as_ref().map(|c| c.name.clone()))
        .collect();
    names.dedup();
    assert_eq!(names.len(), 1, "{names:?}");
    names.remove(0)
}

/// Waits until Secret `name` holds `key: value`.
async fn wait_value(secrets: &Api<Secret>, name: &str, key: &str, value: &str) {
    wait_for(
        &format!("Secret {name} with the expected {key}"),
        Duration::from_secs(30),
        || async {
            let s = secrets.get_opt(name).await.ok()??;
            (secret_data(&s).get(key).map(String::as_str) == Some(value)).then_some(())
        },
    )
    .await;
}

/// Waits until ExternalSecret `name`'s Ready message contains every one of `parts`.
async fn wait_failure(es: &Api<ExternalSecret>, name: &str, parts: &[&str]) -> String {
    wait_for(
        &format!("{name} failing with {parts:?}"),
        Duration::from_secs(30),
        || async {
            let e = es.get(name).await.ok()?;
            let msg = ready_message(&e);
            parts.iter().all(|p| msg.contains(p)).then_some(msg)
        },
    )
    .await
}

/// Flips one base64 character inside the `ENC[...data:...]` ciphertext of a sops file.
fn tamper_ciphertext(doc: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(doc.to_vec()).unwrap();
    let at = text
        .find("ENC[AES256_GCM,data:")
        .expect("an encrypted value")
        + 22;
    let mut bytes = text.into_bytes();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    bytes
}

#[tokio::test]
async fn sops_files_one_per_variable_merged_into_one_secret() {
    let Some(f) = setup("sops_files_one_per_variable_merged_into_one_secret").await else {
        return;
    };
    let (_, arn) = moto_kms_key(&f.env).await;
    f.aws_store("kms-aws", "").await;
    let repo = Repo::new(&f, "flux-app");
    repo.write(
        ".sops.yaml",
        format!("creation_rules:\n- path_regex: \\.sops/.*\\.enc$\n  kms: {arn}\n"),
    );
    let url = "postgres://app:p4ss@db.internal:5432/app?sslmode=require";
    let token = "tok-\u{00e9}-42";
    // As the Flux guide has it: one file per variable, encrypted in place (sops: binary).
    repo.write(".sops/DATABASE_URL.enc", url);
    repo.sops(&["-e", "-i", ".sops/DATABASE_URL.enc"]);
    repo.write(".sops/API_TOKEN.enc", token);
    repo.sops(&["-e", "-i", ".sops/API_TOKEN.enc"]);
    assert!(
        String::from_utf8(repo.read(".sops/DATABASE_URL.enc"))
            .unwrap()
            .contains("\"sops\""),
        "sops wrote its binary envelope"
    );
    repo.write(
        "kustomization.yaml",
        "configurations:\n- kustomizeconfig.yaml\nresources:\n- app-env.yaml\nconfigMapGenerator:\n- name: app-sops\n  files:\n  - .sops/DATABASE_URL.enc\n  - .sops/API_TOKEN.enc\n",
    );
    repo.write(
        "app-env.yaml",
        r#"apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: app-env}
spec:
  refreshInterval: 1h
  secretStoreRef: {name: kms-aws}
  data:
  - secretKey: DATABASE_URL
    remoteRef: {configMapRef: {name: app-sops}, key: DATABASE_URL.enc}
  - secretKey: API_TOKEN
    remoteRef: {configMapRef: {name: app-sops}, key: API_TOKEN.enc}
"#,
    );
    repo.apply();
    wait_value(&f.secrets, "app-env", "DATABASE_URL", url).await;
    assert_eq!(
        f.data("app-env").await,
        [("API_TOKEN", token), ("DATABASE_URL", url)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        "each file's plaintext under its variable, nothing else"
    );
    let first = referenced_config_map(&f.es, "app-env").await;
    assert!(
        first.starts_with("app-sops-") && first.len() > "app-sops-".len(),
        "Kustomize rewrote configMapRef.name to the hashed name: {first}"
    );

    // An edited file: a new hashed ConfigMap, a changed ExternalSecret, a sync at once (the
    // refresh interval is an hour).
    let url2 = "postgres://app:n3w@db.internal:5432/app?sslmode=require";
    repo.write(".sops/DATABASE_URL.enc", url2);
    repo.sops(&["-e", "-i", ".sops/DATABASE_URL.enc"]);
    let edited = Instant::now();
    repo.apply();
    wait_value(&f.secrets, "app-env", "DATABASE_URL", url2).await;
    let resynced = edited.elapsed();
    assert_ne!(referenced_config_map(&f.es, "app-env").await, first);
    println!(
        "edited sops file synced {} ms after kubectl apply -k",
        resynced.as_millis()
    );

    // A tampered file: refused with the file named; the Secret keeps its value.
    let enc = repo.read(".sops/API_TOKEN.enc");
    repo.write(".sops/API_TOKEN.enc", tamper_ciphertext(&enc));
    repo.apply();
    let msg = wait_failure(&f.es, "app-env", &["key \"API_TOKEN.enc\"", "sops"]).await;
    assert!(!msg.contains(token) && !msg.contains(url2), "{msg}");
    assert_eq!(f.data("app-env").await["API_TOKEN"], token);
    assert_eq!(f.data("app-env").await["DATABASE_URL"], url2);
}

#[tokio::test]
async fn kms_ciphertext_files_from_a_generator() {
    let Some(f) = setup("kms_ciphertext_files_from_a_generator").await else {
        return;
    };
    let (kms, arn) = moto_kms_key(&f.env).await;
    f.aws_store("kms-aws", "").await;
    let encrypt = |plaintext: &'static str| {
        let (kms, arn) = (kms.clone(), arn.clone());
        async move {
            kms.encrypt()
                .key_id(arn)
                .plaintext(aws_sdk_kms::primitives::Blob::new(plaintext))
                .send()
                .await
                .expect("KMS Encrypt")
                .ciphertext_blob
                .unwrap()
                .into_inner()
        }
    };
    let repo = Repo::new(&f, "kms-files");
    // `aws kms encrypt ... --query CiphertextBlob --output text | base64 -d > db-password.bin`:
    // raw bytes (binaryData in the generated ConfigMap); `--output text` alone: base64 text.
    let blob = encrypt("db-p4ss-\u{00e9}").await;
    repo.write("db-password.bin", &blob);
    repo.write(
        "api-key.b64",
        base64::engine::general_purpose::STANDARD.encode(encrypt("api-key-1").await) + "\n",
    );
    // `bao write -field=ciphertext transit/encrypt/app plaintext=$(base64 <<< ...) > smtp.enc`
    let vault = f.env.vault();
    let mount = format!("transit-{}", common::random_suffix());
    vaultrs::sys::mount::enable(&vault, &mount, "transit", None)
        .await
        .expect("enable transit");
    vaultrs::transit::key::create(&vault, &mount, "app", None)
        .await
        .expect("create transit key");
    let transit = vaultrs::transit::data::encrypt(
        &vault,
        &mount,
        "app",
        &base64::engine::general_purpose::STANDARD.encode("smtp-s3cr3t"),
        None,
    )
    .await
    .expect("transit encrypt")
    .ciphertext;
    repo.write("smtp-password.enc", transit + "\n");
    f.transit_store("transit", &mount, "app").await;
    repo.write(
        "kustomization.yaml",
        "configurations:\n- kustomizeconfig.yaml\nresources:\n- es.yaml\nconfigMapGenerator:\n- name: ciphertexts\n  files:\n  - db-password.bin\n  - api-key.b64\n  - smtp-password.enc\n",
    );
    repo.write(
        "es.yaml",
        r#"apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: app-kms}
spec:
  refreshInterval: 1h
  secretStoreRef: {name: kms-aws}
  data:
  - secretKey: DB_PASSWORD
    remoteRef: {configMapRef: {name: ciphertexts}, key: db-password.bin}
  - secretKey: API_KEY
    remoteRef: {configMapRef: {name: ciphertexts}, key: api-key.b64}
---
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: app-transit}
spec:
  refreshInterval: 1h
  secretStoreRef: {name: transit}
  data:
  - secretKey: SMTP_PASSWORD
    remoteRef: {configMapRef: {name: ciphertexts}, key: smtp-password.enc}
"#,
    );
    repo.apply();
    wait_value(&f.secrets, "app-kms", "DB_PASSWORD", "db-p4ss-\u{00e9}").await;
    assert_eq!(f.data("app-kms").await["API_KEY"], "api-key-1");
    wait_value(&f.secrets, "app-transit", "SMTP_PASSWORD", "smtp-s3cr3t").await;
    let cm_name = referenced_config_map(&f.es, "app-kms").await;
    let cm = f.config_maps.get(&cm_name).await.unwrap();
    assert!(
        cm.binary_data
            .as_ref()
            .is_some_and(|b| b.contains_key("db-password.bin")),
        "the generator carried the raw ciphertext as binaryData"
    );

    // A ciphertext file with one byte changed: KMS refuses it; the Secret keeps its value.
    let mut tampered = blob.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    repo.write("db-password.bin", &tampered);
    repo.apply();
    wait_failure(
        &f.es,
        "app-kms",
        &["key \"db-password.bin\"", "InvalidCiphertext"],
    )
    .await;
    assert_eq!(f.data("app-kms").await["DB_PASSWORD"], "db-p4ss-\u{00e9}");
}

#[tokio::test]
async fn encrypted_secret_manifest_becomes_that_secret() {
    let Some(f) = setup("encrypted_secret_manifest_becomes_that_secret").await else {
        return;
    };
    let (_, arn) = moto_kms_key(&f.env).await;
    f.aws_store("kms-aws", "").await;
    let repo = Repo::new(&f, "registry");
    let dockerconfig = r#"{"auths":{"registry.example.com":{"auth":"cm9ib3Q6czNjcjN0"}}}"#;
    repo.write(
        "registry-credentials.enc.yaml",
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: registry-credentials\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {}\nstringData:\n  username: robot\n",
            base64::engine::general_purpose::STANDARD.encode(dockerconfig)
        ),
    );
    repo.sops(&[
        "-e",
        "-i",
        "--kms",
        &arn,
        "--encrypted-regex",
        "^(data|stringData)$",
        "registry-credentials.enc.yaml",
    ]);
    repo.write(
        "kustomization.yaml",
        "configurations:\n- kustomizeconfig.yaml\nresources:\n- es.yaml\nconfigMapGenerator:\n- name: registry\n  files:\n  - registry-credentials.enc.yaml\n",
    );
    // The recipe of docs/encrypted-files.md.
    repo.write(
        "es.yaml",
        r#"apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: registry-credentials}
spec:
  refreshInterval: 1h
  secretStoreRef: {name: kms-aws}
  target:
    template:
      type: kubernetes.io/dockerconfigjson
  dataFrom:
  - extract:
      configMapRef: {name: registry}
      key: registry-credentials.enc.yaml
      property: data
      decodingStrategy: Base64
  - extract:
      configMapRef: {name: registry}
      key: registry-credentials.enc.yaml
      property: stringData
"#,
    );
    repo.apply();
    wait_value(&f.secrets, "registry-credentials", "username", "robot").await;
    let secret = f.secrets.get("registry-credentials").await.unwrap();
    assert_eq!(
        secret.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    assert_eq!(
        secret_data(&secret),
        [(".dockerconfigjson", dockerconfig), ("username", "robot")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    );

    // An unencrypted field changed by hand: sops' MAC covers it, so the document is refused.
    let doc = String::from_utf8(repo.read("registry-credentials.enc.yaml")).unwrap();
    repo.write(
        "registry-credentials.enc.yaml",
        doc.replace("type: kubernetes.io/dockerconfigjson", "type: Opaque"),
    );
    repo.apply();
    wait_failure(
        &f.es,
        "registry-credentials",
        &["key \"registry-credentials.enc.yaml\"", "MAC mismatch"],
    )
    .await;
    assert_eq!(
        f.data("registry-credentials").await["username"],
        "robot",
        "the Secret keeps its values"
    );
}
