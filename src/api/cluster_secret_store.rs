//! `ClusterSecretStore`: a store made by cluster admins, usable from the namespaces its
//! `conditions` allow. References without a namespace resolve in the ExternalSecret's
//! namespace (referent auth).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::secret_store::{ClusterSecretStoreCondition, SecretStoreProvider, SecretStoreStatus};

/// Spec of a cluster-scoped store: the provider of a [`super::SecretStore`] plus `conditions`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "secret-relay.dev",
    version = "v1alpha1",
    kind = "ClusterSecretStore",
    status = "SecretStoreStatus",
    shortname = "css",
    category = "secret-relay",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretStoreSpec {
    /// The backend; exactly one of its fields is set.
    pub provider: SecretStoreProvider,
    /// Re-validation interval in seconds; default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<i64>,
    /// Namespaces allowed to use the store (ORed); empty = every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ClusterSecretStoreCondition>,
}
