//! secret-relay: a Kubernetes operator that turns `ExternalSecret` declarations into live
//! Secrets, with values from AWS SSM Parameter Store and HashiCorp Vault / OpenBao.
//!
//! Layout: [`api`] the CRD types, [`controller`] the reconcile pipelines, [`providers`] one
//! module per backend behind one trait, [`admin`] and [`metrics`] the admin server.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod controller;
pub mod leader;
pub mod metrics;
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
pub fn crds()
-> [k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition; 4]
{
    [
        api::ClusterExternalSecret::crd(),
        api::ClusterSecretStore::crd(),
        api::ExternalSecret::crd(),
        api::SecretStore::crd(),
    ]
}
