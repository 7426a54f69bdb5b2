//! The custom resources of `secret-relay.dev/v1alpha1`, one module per kind.
//!
//! Field names and semantics follow External Secrets Operator's `external-secrets.io/v1` so
//! that a user migrates by changing `apiVersion` only (see `docs/migrating-from-eso.md`).

pub mod cluster_external_secret;
pub mod cluster_secret_store;
pub mod decoding;
pub mod external_secret;
pub mod generators;
pub mod secret_store;
pub mod template;

pub use cluster_external_secret::{ClusterExternalSecret, ClusterExternalSecretSpec};
pub use cluster_secret_store::{ClusterSecretStore, ClusterSecretStoreSpec};
pub use external_secret::{ExternalSecret, ExternalSecretSpec, ExternalSecretStatus};
pub use generators::{Password, VaultDynamicSecret};
pub use secret_store::{SecretStore, SecretStoreSpec, SecretStoreStatus};

/// The API group of every kind here.
pub const GROUP: &str = "secret-relay.dev";
/// Label on every managed Secret: `app.kubernetes.io/managed-by: secret-relay`.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "secret-relay";
/// Label on every managed Secret naming its ExternalSecret (same namespace).
pub const LABEL_EXTERNAL_SECRET: &str = "secret-relay.dev/external-secret";
/// Annotation: the ExternalSecret's refresh interval, as written in its spec (e.g. `1h`).
pub const ANNOTATION_REFRESH_INTERVAL: &str = "secret-relay.dev/refresh-interval";
/// Annotation: RFC 3339 time of the last refresh that wrote or confirmed the Secret.
pub const ANNOTATION_LAST_REFRESH: &str = "secret-relay.dev/last-refresh";
/// Annotation: lowercase hex SHA-256 of the Secret's data (see `controller::build::data_hash`).
pub const ANNOTATION_DATA_HASH: &str = "secret-relay.dev/data-hash";
/// Annotation: `<Kind>/<name>` of the store the values came from.
pub const ANNOTATION_STORE: &str = "secret-relay.dev/store";
/// Annotation on a managed Secret, one per `dataFrom` entry with a `generatorRef`
/// (`secret-relay.dev/generator.<index>`): JSON of what the entry produced (the Secret keys, a
/// fingerprint of the specs they came from, the Vault lease: id, expiry, renewable), never the
/// values. See `controller::external_secret::generate`.
pub const ANNOTATION_GENERATOR_PREFIX: &str = "secret-relay.dev/generator.";
/// Annotation on an ExternalSecret: any new value forces a refresh.
pub const ANNOTATION_FORCE_SYNC: &str = "secret-relay.dev/force-sync";
/// Field manager of every write the operator makes (server-side apply).
pub const FIELD_MANAGER: &str = "secret-relay";

/// A key of a Secret: `{name, key, namespace?}`, as ESO's `SecretKeySelector`.
///
/// `namespace` is refused in a namespaced `SecretStore` (the tenant's own namespace is used);
/// in a `ClusterSecretStore` it defaults to the ExternalSecret's namespace.
#[derive(
    serde::Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret.
    pub name: String,
    /// Data key inside the Secret.
    pub key: String,
    /// Namespace of the Secret (ClusterSecretStore only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A ServiceAccount whose token is requested through the TokenRequest API.
#[derive(
    serde::Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountSelector {
    /// Name of the ServiceAccount.
    pub name: String,
    /// Namespace (ClusterSecretStore only; defaults to the ExternalSecret's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Audiences of the requested token; the provider's default when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
}
