//! secret-relay: a Kubernetes operator that turns `ExternalSecret` declarations into live
//! Secrets, with values from AWS SSM Parameter Store and HashiCorp Vault / OpenBao.
//!
//! Layout: [`api`] the CRD types, [`controller`] the reconcile pipelines, [`providers`] one
//! module per backend behind one trait, [`admin`] and [`metrics`] the admin server, [`plugin`]
//! the `kubectl secret-relay` commands.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod bounds;
pub mod controller;
pub mod leader;
pub mod metrics;
pub mod plugin;
pub mod providers;
pub mod regexes;
pub mod sops;
pub mod template;

use kube::CustomResourceExt;

/// The CRDs of every kind, as a multi-document YAML stream (what `secret-relay crd` prints and
/// `crds/secret-relay.yaml` holds).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

/// Every CustomResourceDefinition of the operator, as the chart installs them: one list, so
/// that no installer (the chart's `crds/`, the tests, the benchmark) can miss one.
///
/// Their schemas carry no `default:` (see [`without_defaults`]): an object reads back exactly
/// as it was applied, and the operator applies each documented default when it reads a spec
/// (serde's `#[serde(default)]` on the types in [`api`]).
pub fn crds() -> [CustomResourceDefinition; 6] {
    [
        api::ClusterExternalSecret::crd(),
        api::ClusterSecretStore::crd(),
        api::ExternalSecret::crd(),
        api::SecretStore::crd(),
        api::Password::crd(),
        api::VaultDynamicSecret::crd(),
    ]
    .map(without_defaults)
}

type CustomResourceDefinition =
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// `crd` with every `default` removed from its schemas. A schema default makes the API server
/// write the field into the stored object, inside list items too (`data[].remoteRef`
/// `conversionStrategy: Default`): git does not have it, and Argo CD, comparing list items
/// whole, shows the object OutOfSync for ever (ESO #6398, #6797, fixed in ESO 2.9 the same
/// way).
pub fn without_defaults(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        let mut json = serde_json::to_value(&*schema).expect("a schema serializes");
        strip_defaults(&mut json);
        *schema = serde_json::from_value(json).expect("a schema without defaults");
    }
    crd
}

/// Removes `default` from a JSON schema and every schema inside it (the values of
/// `properties`, `patternProperties` and `definitions`; `items`, `additionalProperties`,
/// `not`; the members of `allOf`, `anyOf`, `oneOf`), never from a property *named* `default`.
fn strip_defaults(schema: &mut serde_json::Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    obj.remove("default");
    for (keyword, value) in obj.iter_mut() {
        match keyword.as_str() {
            "properties" | "patternProperties" | "definitions" => {
                if let Some(children) = value.as_object_mut() {
                    children.values_mut().for_each(strip_defaults);
                }
            }
            "items" | "additionalProperties" | "not" | "allOf" | "anyOf" | "oneOf" => match value {
                serde_json::Value::Array(schemas) => schemas.iter_mut().for_each(strip_defaults),
                other => strip_defaults(other),
            },
            _ => {}
        }
    }
}
