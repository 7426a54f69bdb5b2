//! The checked-in CRDs are what the binary generates, and carry the printer columns, CEL rules
//! and list semantics the API promises.

use kube::CustomResourceExt;
use secret_relay::api::{ExternalSecret, SecretStore};

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
