//! The checked-in CRDs are what the binary generates, and carry the printer columns, CEL rules
//! and list semantics the API promises; the API server of the test environment enforces them.

mod common;
mod operator;

use kube::{
    Api, CustomResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
};
use secret_relay::api::{ClusterExternalSecret, ClusterSecretStore, ExternalSecret, SecretStore};
use serde_json::{Value, json};

use common::TestEnv;

#[test]
fn checked_in_crds_are_fresh() {
    let generated = secret_relay::crds_yaml().unwrap();
    for path in [
        "crds/secret-relay.yaml",
        "charts/secret-relay/crds/secret-relay.yaml",
    ] {
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "{path} is stale: run `cargo run -q -- crd > crds/secret-relay.yaml && cp crds/secret-relay.yaml charts/secret-relay/crds/`"
        );
    }
}

#[test]
fn external_secret_schema_details() {
    let crd = serde_json::to_value(ExternalSecret::crd()).unwrap();
    let version = &crd["spec"]["versions"][0];
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Store",
            "Refresh Interval",
            "Status",
            "Ready",
            "Last Sync",
            "Age"
        ]
    );
    assert!(version["subresources"]["status"].is_object());
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let rules: Vec<&str> = spec["x-kubernetes-validations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert!(
        rules
            .iter()
            .any(|r| r.contains("deletionPolicy != 'Delete'")),
        "{rules:?}"
    );
    let data = &spec["properties"]["data"];
    assert_eq!(data["x-kubernetes-list-type"], "map");
    assert_eq!(data["x-kubernetes-list-map-keys"][0], "secretKey");
    let data_from_rules = &spec["properties"]["dataFrom"]["items"]["x-kubernetes-validations"];
    assert!(
        data_from_rules[0]["rule"]
            .as_str()
            .unwrap()
            .contains("has(self.extract)")
    );
}

#[test]
fn store_provider_requires_exactly_one_backend() {
    let crd = serde_json::to_value(SecretStore::crd()).unwrap();
    let provider = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["provider"];
    assert!(
        provider["x-kubernetes-validations"][0]["rule"]
            .as_str()
            .unwrap()
            .contains("has(self.aws)")
    );
}

/// `aws` and `kms.aws` share `AwsConnection`, `vault` and `kms.vaultTransit` share
/// `VaultConnection`, flattened: each pair has one schema for the shared fields, at the same
/// level as before, and every CRD stays structural (no `allOf`, `anyOf`, `oneOf` or `$ref`,
/// which the API server refuses in a CRD or cannot prune by).
#[test]
fn shared_connections_have_one_schema_and_stay_structural() {
    let crd = serde_json::to_value(SecretStore::crd()).unwrap();
    let provider = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["provider"]["properties"];
    let kms = &provider["kms"]["properties"];
    let pairs = [
        (
            &provider["aws"],
            &kms["aws"],
            &["region", "role", "endpoint", "auth"][..],
            &["region"][..],
        ),
        (
            &provider["vault"],
            &kms["vaultTransit"],
            &["server", "namespace", "caBundle", "caProvider", "auth"][..],
            &["auth", "server"][..],
        ),
    ];
    for (own, kms, fields, required) in pairs {
        for field in fields {
            assert!(own["properties"][field].is_object(), "{field}");
            assert_eq!(
                own["properties"][field], kms["properties"][field],
                "{field}"
            );
        }
        for field in required {
            for schema in [own, kms] {
                assert!(
                    schema["required"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|f| f == field)),
                    "{field} required in {schema}"
                );
            }
        }
        assert!(own["properties"].get("connection").is_none());
    }
    for crd in [
        SecretStore::crd(),
        ClusterSecretStore::crd(),
        ExternalSecret::crd(),
        ClusterExternalSecret::crd(),
    ] {
        let text = serde_json::to_string(&crd).unwrap();
        for keyword in ["allOf", "anyOf", "oneOf", "$ref"] {
            assert!(
                !text.contains(&format!("\"{keyword}\"")),
                "{keyword} in {:?}",
                crd.metadata.name
            );
        }
    }
}

/// The API server of the test environment accepts the CRDs and enforces the stores' schema:
/// required fields, types and the CEL rules of the shared connections, in both places each
/// connection is used; the connections have no `connection` key of their own.
#[tokio::test]
async fn the_api_server_enforces_the_store_schema() {
    let Some(env) = TestEnv::get("the_api_server_enforces_the_store_schema").await else {
        return;
    };
    operator::install_crds(&env.kube).await;
    let ns = env.namespace("crds").await;
    let api: Api<DynamicObject> = Api::namespaced_with(
        env.kube.clone(),
        &ns,
        &ApiResource::erase::<SecretStore>(&()),
    );
    let token = json!({"tokenSecretRef": {"name": "t", "key": "token"}});
    let two_methods = json!({
        "tokenSecretRef": {"name": "t", "key": "token"},
        "userPass": {"username": "u", "secretRef": {"name": "p", "key": "password"}}
    });
    let keys = json!({"secretRef": {
        "accessKeyIDSecretRef": {"name": "c", "key": "id"},
        "secretAccessKeySecretRef": {"name": "c", "key": "secret"}
    }});
    let both_aws = json!({
        "secretRef": keys["secretRef"],
        "jwt": {"serviceAccountRef": {"name": "app"}}
    });
    let apply = |name: &str, provider: Value| {
        let api = api.clone();
        let body = json!({
            "apiVersion": "secret-relay.dev/v1alpha1",
            "kind": "SecretStore",
            "metadata": {"name": name},
            "spec": {"provider": provider}
        });
        let name = name.to_string();
        async move {
            api.patch(
                &name,
                &PatchParams::apply("secret-relay-crds-test").dry_run(),
                &Patch::Apply(&body),
            )
            .await
        }
    };

    let accepted = apply(
        "transit",
        json!({"kms": {"vaultTransit": {
            "server": "https://vault.example:8200", "path": "transit", "keyName": "app",
            "namespace": "team", "caBundle": "Zm9v",
            "caProvider": {"type": "ConfigMap", "name": "ca", "key": "ca.crt"},
            "auth": token
        }}}),
    )
    .await
    .expect("a full vaultTransit store is accepted");
    let transit = &accepted.data["spec"]["provider"]["kms"]["vaultTransit"];
    assert_eq!(transit["server"], "https://vault.example:8200");
    assert_eq!(transit["caProvider"]["type"], "ConfigMap");

    let refused = [
        (
            json!({"vault": {"connection": {"server": "https://v"}, "server": "https://v", "auth": token}}),
            ".spec.provider.vault.connection: field not declared in schema",
        ),
        (
            json!({"aws": {"service": "ParameterStore", "auth": keys}}),
            "spec.provider.aws.region: Required value",
        ),
        (
            json!({"kms": {"aws": {"endpoint": "http://kms.local"}}}),
            "spec.provider.kms.aws.region: Required value",
        ),
        (
            json!({"aws": {"region": 5}}),
            ".spec.provider.aws.region: expected string",
        ),
        (
            json!({"kms": {"aws": {"region": "eu-west-1", "auth": both_aws}}}),
            "exactly one of secretRef and jwt must be set",
        ),
        (
            json!({"vault": {"server": "https://v", "auth": two_methods}}),
            "exactly one auth method must be set",
        ),
        (
            json!({"kms": {"vaultTransit": {"server": "https://v", "auth": two_methods}}}),
            "exactly one auth method must be set",
        ),
        (
            json!({"kms": {"vaultTransit": {"auth": token}}}),
            "spec.provider.kms.vaultTransit.server: Required value",
        ),
        (
            json!({"vault": {"server": "https://v"}}),
            "spec.provider.vault.auth: Required value",
        ),
    ];
    for (i, (provider, expected)) in refused.into_iter().enumerate() {
        let err = apply(&format!("bad-{i}"), provider.clone())
            .await
            .expect_err(&format!("refused: {provider}"));
        assert!(err.to_string().contains(expected), "{provider}: {err}");
    }
}
