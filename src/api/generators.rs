//! Generators (group `generators.secret-relay.dev`, version `v1alpha1`, namespaced): values
//! made for an ExternalSecret rather than read from a store, named by
//! `dataFrom[].sourceRef.generatorRef`. Field names follow ESO's
//! `generators.external-secrets.io/v1alpha1` (`apis/generators/v1alpha1`), so a manifest
//! migrates by changing `apiVersion` only.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::secret_store::VaultProvider;

/// The API group of the generator kinds.
pub const GENERATORS_GROUP: &str = "generators.secret-relay.dev";

/// `apiVersion` of the generator kinds.
pub const GENERATORS_API_VERSION: &str = "generators.secret-relay.dev/v1alpha1";

/// ESO's generators' `apiVersion`, accepted in a `generatorRef` as an alias of ours.
pub const ESO_GENERATORS_API_VERSION: &str = "generators.external-secrets.io/v1alpha1";

/// ESO's Password generator: a random password under the output key `password`.
///
/// Rules (ESO's, from `github.com/sethvargo/go-password`): `digits` + `symbols` ≤ `length`;
/// the rest are letters (lower case, and upper case unless `noUpper`); without `allowRepeat`
/// no character occurs twice, so each class cannot ask for more characters than it has.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "generators.secret-relay.dev",
    version = "v1alpha1",
    kind = "Password",
    namespaced,
    category = "secret-relay"
)]
#[serde(rename_all = "camelCase")]
pub struct PasswordSpec {
    /// Length in characters; default 24.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u32>,
    /// Number of digits; default a quarter of `length` (rounded down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digits: Option<u32>,
    /// Number of symbols; default a quarter of `length` (rounded down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbols: Option<u32>,
    /// The symbols to choose from; default ``~!@#$%^&*()_+`-={}|[]\:"<>?,./``.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol_characters: Option<String>,
    /// No upper-case letters; default false.
    #[serde(default)]
    pub no_upper: bool,
    /// A character may occur more than once; default false.
    #[serde(default)]
    pub allow_repeat: bool,
}

/// ESO's VaultDynamicSecret generator: one Vault request (`method` on `path` with
/// `parameters`) whose response's `data` (or `auth`, with `resultType: Auth`) becomes the
/// values, one key per top-level field (strings as they are, other values as JSON).
///
/// secret-relay follows the response's lease: the managed Secret keeps the lease id, expiry and
/// renewable flag in its annotations (never the values); a refresh or a restart issues nothing
/// new while the lease is good; the lease is renewed (`sys/leases/renew`) once two thirds of
/// its TTL have passed (`renewBeforePercentage`), and new values are issued when renewal is refused or the max TTL is
/// near, the old lease being revoked (`sys/leases/revoke`) `revokeGracePeriod` later. See
/// `docs/vault-dynamic-secrets.md`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "generators.secret-relay.dev",
    version = "v1alpha1",
    kind = "VaultDynamicSecret",
    namespaced,
    category = "secret-relay"
)]
#[serde(rename_all = "camelCase")]
pub struct VaultDynamicSecretSpec {
    /// The Vault server and login, as a SecretStore's `spec.provider.vault` (its `path` and
    /// `version`, the KV mount, are unused). References resolve in the generator's namespace.
    pub provider: VaultProvider,
    /// Vault path of the request, without `/v1/` (`aws/creds/app`, `pki/issue/web`).
    pub path: String,
    /// HTTP method: `GET` (default), `POST`, `PUT`, `LIST`, `DELETE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// JSON body of the request (`{"common_name": "web.example"}`); none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub parameters: Option<serde_json::Value>,
    /// Which part of the response holds the values: `Data` (default) or `Auth`.
    #[serde(default)]
    pub result_type: VaultDynamicResultType,
    /// How long a replaced lease lives on before it is revoked, so that workloads restarted
    /// with the new values have time to switch (a duration: `30s`, `5m`); default `1m`. Our
    /// own field: ESO does not follow leases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_grace_period: Option<String>,
    /// When to renew the lease (or, when it cannot be renewed, issue new values): once this
    /// percentage of its duration (of a PKI certificate's validity) is left, 1 to 99, as
    /// cert-manager's `renewBeforePercentage`. Default: two thirds elapsed (33 % left, as Vault
    /// Agent). Our own field: ESO does not follow leases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 99))]
    pub renew_before_percentage: Option<u8>,
}

/// `resultType` of a VaultDynamicSecret.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VaultDynamicResultType {
    /// The response's `data`.
    #[default]
    Data,
    /// The response's `auth` (a token issued by an auth method).
    Auth,
}

fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// The generator kinds `generatorRef.kind` may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeneratorKind {
    /// [`Password`].
    Password,
    /// [`VaultDynamicSecret`].
    VaultDynamicSecret,
}

impl GeneratorKind {
    /// The kind named by `apiVersion` (default ours; ESO's
    /// `generators.external-secrets.io/v1alpha1` is read as ours) and `kind`; `None` for any
    /// other group or a kind we do not implement.
    pub fn of(api_version: Option<&str>, kind: &str) -> Option<Self> {
        if !matches!(
            api_version,
            None | Some(GENERATORS_API_VERSION) | Some(ESO_GENERATORS_API_VERSION)
        ) {
            return None;
        }
        match kind {
            "Password" => Some(GeneratorKind::Password),
            "VaultDynamicSecret" => Some(GeneratorKind::VaultDynamicSecret),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_refs_default_to_our_group_and_read_esos_as_ours() {
        assert_eq!(
            GeneratorKind::of(None, "Password"),
            Some(GeneratorKind::Password)
        );
        assert_eq!(
            GeneratorKind::of(Some(GENERATORS_API_VERSION), "VaultDynamicSecret"),
            Some(GeneratorKind::VaultDynamicSecret)
        );
        assert_eq!(
            GeneratorKind::of(Some(ESO_GENERATORS_API_VERSION), "Password"),
            Some(GeneratorKind::Password)
        );
        assert_eq!(GeneratorKind::of(None, "ECRAuthorizationToken"), None);
        assert_eq!(GeneratorKind::of(Some("example.com/v1"), "Password"), None);
    }
}
