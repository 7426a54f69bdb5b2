//! ExternalSecrets from KMS-encrypted blobs: raw ciphertext from moto's KMS and OpenBao's
//! Transit engine, and SOPS documents encrypted by the real `sops` binary with AWS KMS (moto),
//! `hc_vault_transit` (OpenBao) and age, kept in ConfigMaps. Google Cloud KMS is tested in
//! tests/kms_gcp.rs against a stand-in.

mod common;
mod kms_fixture;
mod operator;

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use secret_relay::metrics::provider_calls_total;
use serde_json::json;

use common::random_suffix;
use kms_fixture::{moto_kms_key, setup, wait_resynced};
use operator::{ready_message, wait_reason};

/// A plaintext document with every leaf type.
const DOC_YAML: &str = r#"db:
  user: app
  password: s3cr3t
  port: 5432
  ratio: 0.75
  tls: true
hosts:
  - a.example
  - b.example
note: "multi
  word"
"#;

/// The leaves of [`DOC_YAML`] as the operator flattens them.
fn doc_leaves() -> BTreeMap<String, String> {
    [
        ("db.user", "app"),
        ("db.password", "s3cr3t"),
        ("db.port", "5432"),
        ("db.ratio", "0.75"),
        ("db.tls", "true"),
        ("hosts.0", "a.example"),
        ("hosts.1", "b.example"),
        ("note", "multi word"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[tokio::test]
async fn aws_kms_raw_ciphertext_and_sops_document_without_repeated_decrypts() {
    let Some(f) = setup("aws_kms_raw_ciphertext_and_sops_document").await else {
        return;
    };
    let (kms, arn) = moto_kms_key(&f.env).await;
    let blob = |plaintext: &str, context: Option<(&str, &str)>| {
        let kms = kms.clone();
        let arn = arn.clone();
        let plaintext = plaintext.to_string();
        let context = context.map(|(k, v)| (k.to_string(), v.to_string()));
        async move {
            let out = kms
                .encrypt()
                .key_id(arn)
                .plaintext(aws_sdk_kms::primitives::Blob::new(plaintext))
                .set_encryption_context(context.map(|c| [c].into_iter().collect()))
                .send()
                .await
                .expect("Encrypt");
            base64::engine::general_purpose::STANDARD
                .encode(out.ciphertext_blob.unwrap().into_inner())
        }
    };
    let plain = blob("raw-s3cr3t", None).await;
    let json_blob = blob(r#"{"user":"app","password":"pw-json"}"#, None).await;
    let with_context = blob("ctx-s3cr3t", Some(("app", "billing"))).await;

    f.aws_store("aws", "").await;
    f.aws_store("aws-ctx", "        encryptionContext: {app: billing}\n")
        .await;
    f.es(&format!(
        r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {{name: raw}}
spec:
  secretStoreRef: {{name: aws}}
  data:
  - secretKey: token
    remoteRef: {{key: "{plain}"}}
  - secretKey: user
    remoteRef: {{key: "{json_blob}", property: user}}
"#
    ))
    .await;
    f.es(&format!(
        r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {{name: raw-ctx}}
spec:
  secretStoreRef: {{name: aws-ctx}}
  data:
  - secretKey: token
    remoteRef: {{key: "{with_context}"}}
"#
    ))
    .await;
    wait_reason(&f.es, "raw", "SecretSynced").await;
    assert_eq!(
        f.data("raw").await,
        [("token", "raw-s3cr3t"), ("user", "app")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    );
    wait_reason(&f.es, "raw-ctx", "SecretSynced").await;
    assert_eq!(f.data("raw-ctx").await["token"], "ctx-s3cr3t");

    // The same ciphertext without its encryption context is refused by KMS.
    f.es(&format!(
        r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {{name: raw-no-ctx}}
spec:
  secretStoreRef: {{name: aws}}
  data:
  - secretKey: token
    remoteRef: {{key: "{with_context}"}}
"#
    ))
    .await;
    let es = wait_reason(&f.es, "raw-no-ctx", "SecretSyncedError").await;
    let msg = ready_message(&es);
    assert!(
        msg.starts_with("kms Decrypt: InvalidCiphertextException"),
        "{msg}"
    );

    // A SOPS document encrypted by the real sops with the moto KMS key.
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", f.env.aws_region.as_str()),
        ("AWS_ENDPOINT_URL", f.env.aws_endpoint.as_str()),
    ];
    let doc = f.sops_encrypt("app.yaml", DOC_YAML, &["--kms", &arn], &env);
    assert!(
        doc.contains("ENC[AES256_GCM,") && doc.contains(&arn),
        "{doc}"
    );
    f.config_map("docs", "app.enc.yaml", &doc).await;
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: doc}
spec:
  secretStoreRef: {name: aws}
  dataFrom:
  - extract: {key: "configmap:docs/app.enc.yaml"}
  data:
  - secretKey: password
    remoteRef: {key: "configmap:docs/app.enc.yaml", property: db.password}
"#)
        .await;
    wait_reason(&f.es, "doc", "SecretSynced").await;
    let mut expected = doc_leaves();
    expected.insert("password".into(), "s3cr3t".into());
    assert_eq!(f.data("doc").await, expected);

    // A refresh of the unchanged document (and of the raw blobs) makes no KMS call.
    let before_calls = provider_calls_total("aws_kms", "Decrypt");
    for name in ["doc", "raw"] {
        let before =
            f.es.get(name)
                .await
                .unwrap()
                .status
                .unwrap()
                .synced_resource_version;
        f.force_sync(name).await;
        wait_resynced(&f.es, name, before).await;
    }
    wait_reason(&f.es, "doc", "SecretSynced").await;
    assert_eq!(
        provider_calls_total("aws_kms", "Decrypt"),
        before_calls,
        "a refresh of unchanged ciphertexts decrypts from the cache"
    );

    // A missing document is reported as such, and the Secret stays.
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: doc}
spec:
  secretStoreRef: {name: aws}
  dataFrom:
  - extract: {key: "configmap:docs/missing.yaml"}
"#)
        .await;
    let es = wait_reason(&f.es, "doc", "SecretSyncedError").await;
    assert!(
        ready_message(&es).contains("configmap:docs/missing.yaml"),
        "{}",
        ready_message(&es)
    );
    assert_eq!(f.data("doc").await, expected, "the previous Secret stays");
}

#[tokio::test]
async fn vault_transit_raw_ciphertext_and_sops_json_document() {
    let Some(f) = setup("vault_transit_raw_ciphertext_and_sops_json_document").await else {
        return;
    };
    let vault = f.env.vault();
    let mount = format!("transit-{}", random_suffix());
    vaultrs::sys::mount::enable(&vault, &mount, "transit", None)
        .await
        .expect("enable transit");
    vaultrs::transit::key::create(&vault, &mount, "app", None)
        .await
        .expect("create transit key");
    let plaintext = base64::engine::general_purpose::STANDARD.encode("transit-s3cr3t");
    let ciphertext = vaultrs::transit::data::encrypt(&vault, &mount, "app", &plaintext, None)
        .await
        .expect("transit encrypt")
        .ciphertext;
    f.transit_store("transit", &mount, "app").await;
    f.es(&format!(
        r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {{name: raw}}
spec:
  secretStoreRef: {{name: transit}}
  data:
  - secretKey: token
    remoteRef: {{key: "{ciphertext}"}}
"#
    ))
    .await;
    wait_reason(&f.es, "raw", "SecretSynced").await;
    assert_eq!(f.data("raw").await["token"], "transit-s3cr3t");

    // A SOPS JSON document encrypted by the real sops with hc_vault_transit.
    let doc_json =
        serde_json::to_string_pretty(&serde_yaml::from_str::<serde_json::Value>(DOC_YAML).unwrap())
            .unwrap();
    let uri = format!("{}/v1/{mount}/keys/sops", f.env.vault_addr);
    vaultrs::transit::key::create(&vault, &mount, "sops", None)
        .await
        .expect("create transit key");
    let doc = f.sops_encrypt(
        "app.json",
        &doc_json,
        &["--hc-vault-transit", &uri],
        &[("VAULT_TOKEN", f.env.vault_token.as_str())],
    );
    assert!(doc.contains("\"hc_vault\""), "{doc}");
    f.config_map("docs", "app.json", &doc).await;
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: doc}
spec:
  secretStoreRef: {name: transit}
  dataFrom:
  - extract: {key: "configmap:docs/app.json"}
"#)
        .await;
    wait_reason(&f.es, "doc", "SecretSynced").await;
    assert_eq!(f.data("doc").await, doc_leaves());

    // Ciphertext of another key is refused by Vault, with its reason.
    f.transit_store("wrong-key", &mount, "sops").await;
    f.es(&format!(
        r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {{name: wrong}}
spec:
  secretStoreRef: {{name: wrong-key}}
  data:
  - secretKey: token
    remoteRef: {{key: "{ciphertext}"}}
"#
    ))
    .await;
    let es = wait_reason(&f.es, "wrong", "SecretSyncedError").await;
    let msg = ready_message(&es);
    assert!(
        msg.starts_with(&format!("vault: decrypt {mount}/decrypt/sops: status 400")),
        "{msg}"
    );
}

#[tokio::test]
async fn age_sops_dotenv_and_tampered_documents() {
    let Some(f) = setup("age_sops_dotenv_and_tampered_documents").await else {
        return;
    };
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let secret_key = {
        use age::secrecy::ExposeSecret;
        identity.to_string().expose_secret().to_string()
    };
    let ids: Secret = serde_json::from_value(json!({
        "metadata": {"name": "age-keys"},
        "stringData": {"keys.txt": format!("# test identity\n{secret_key}\n")}
    }))
    .unwrap();
    f.secrets
        .create(&PostParams::default(), &ids)
        .await
        .unwrap();
    f.store(
        "age",
        "      age:\n        secretRef: {name: age-keys, key: keys.txt}\n",
    )
    .await;

    let yaml = f.sops_encrypt("app.yaml", DOC_YAML, &["--age", &recipient], &[]);
    let dotenv = f.sops_encrypt(
        "app.env",
        "DB_USER=app\nDB_PASSWORD=s3cr3t\nEMPTY=\n",
        &["--age", &recipient],
        &[],
    );
    f.config_map("docs", "app.yaml", &yaml).await;
    f.config_map("env", "app.env", &dotenv).await;
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: doc}
spec:
  secretStoreRef: {name: age}
  dataFrom:
  - extract: {key: "configmap:docs/app.yaml"}
"#)
        .await;
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: dotenv}
spec:
  secretStoreRef: {name: age}
  dataFrom:
  - extract: {key: "configmap:env/app.env"}
"#)
        .await;
    wait_reason(&f.es, "doc", "SecretSynced").await;
    assert_eq!(f.data("doc").await, doc_leaves());
    wait_reason(&f.es, "dotenv", "SecretSynced").await;
    assert_eq!(
        f.data("dotenv").await,
        [("DB_PASSWORD", "s3cr3t"), ("DB_USER", "app"), ("EMPTY", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    );

    // Tampered documents: each is refused, the message says why, the Secret stays.
    let line_with = |needle: &str| {
        yaml.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle}"))
            .to_string()
    };
    let password_line = line_with("password: ENC[");
    let user_line = line_with("user: ENC[");
    let removed = yaml.replace(&format!("{user_line}\n"), "");
    let renamed = yaml.replace(
        &password_line,
        &password_line.replace("password:", "passwd:"),
    );
    let swapped = yaml.replace(&password_line, &user_line.replace("user:", "password:"));
    for (what, text, expect) in [
        ("removed entry", removed, "mac"),
        ("renamed key", renamed, "db:passwd"),
        ("swapped value", swapped, "db:password"),
    ] {
        f.config_map("docs", "app.yaml", &text).await;
        f.force_sync("doc").await;
        let es = wait_reason(&f.es, "doc", "SecretSyncedError").await;
        let msg = ready_message(&es);
        assert!(
            msg.to_lowercase().contains(expect),
            "{what}: message {msg:?} should mention {expect:?}"
        );
        assert!(
            !msg.contains("s3cr3t") && !msg.contains("app\""),
            "{what}: {msg}"
        );
        assert_eq!(
            f.data("doc").await,
            doc_leaves(),
            "{what}: the Secret stays"
        );
        // Restore the good document before the next case.
        f.config_map("docs", "app.yaml", &yaml).await;
        f.force_sync("doc").await;
        wait_reason(&f.es, "doc", "SecretSynced").await;
    }

    // A document for another identity.
    let other = age::x25519::Identity::generate().to_public().to_string();
    let foreign = f.sops_encrypt("other.yaml", DOC_YAML, &["--age", &other], &[]);
    f.config_map("docs", "other.yaml", &foreign).await;
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: foreign}
spec:
  secretStoreRef: {name: age}
  dataFrom:
  - extract: {key: "configmap:docs/other.yaml"}
"#)
        .await;
    let es = wait_reason(&f.es, "foreign", "SecretSyncedError").await;
    assert!(
        ready_message(&es).contains("ConfigMap"),
        "{}",
        ready_message(&es)
    );
}

#[tokio::test]
async fn sops_kms_entry_role_is_assumed_before_decrypt() {
    let Some(f) = setup("sops_kms_entry_role_is_assumed_before_decrypt").await else {
        return;
    };
    let (_, arn) = moto_kms_key(&f.env).await;
    f.aws_store("aws", "").await;
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", f.env.aws_region.as_str()),
        ("AWS_ENDPOINT_URL", f.env.aws_endpoint.as_str()),
    ];
    // sops' `--kms ARN+ROLE`: the entry carries the role, and sops assumes it to decrypt.
    let role = "arn:aws:iam::123456789012:role/sops-decrypt";
    let doc = f.sops_encrypt(
        "app.yaml",
        DOC_YAML,
        &["--kms", &format!("{arn}+{role}")],
        &env,
    );
    assert!(doc.contains(&format!("role: {role}")), "{doc}");
    f.config_map("docs", "app.enc.yaml", &doc).await;
    let assumed = provider_calls_total("aws_kms", "AssumeRole");
    f.es(r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: doc}
spec:
  secretStoreRef: {name: aws}
  dataFrom:
  - extract: {configMapRef: {name: docs}, key: app.enc.yaml}
"#)
        .await;
    wait_reason(&f.es, "doc", "SecretSynced").await;
    assert_eq!(f.data("doc").await, doc_leaves());
    assert!(
        provider_calls_total("aws_kms", "AssumeRole") > assumed,
        "the entry's role was assumed (STS AssumeRole) before Decrypt"
    );
}
