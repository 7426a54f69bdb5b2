//! `SecretStore`: where and how a namespace's ExternalSecrets fetch their values.
//!
//! The provider types are shared with [`super::ClusterSecretStore`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{SecretKeySelector, ServiceAccountSelector};

/// Spec of a namespaced `SecretStore`. Every reference in it (credential Secret,
/// ServiceAccount) resolves in the store's own namespace; a `namespace` field there is refused
/// with reason `InvalidProviderConfig`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "secret-relay.dev",
    version = "v1alpha1",
    kind = "SecretStore",
    namespaced,
    status = "SecretStoreStatus",
    shortname = "ss",
    category = "secret-relay",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreSpec {
    /// The backend; exactly one of its fields is set.
    pub provider: SecretStoreProvider,
    /// How often the store is re-validated, in seconds (ESO: `refreshInterval: int`).
    /// Default 300; `0` validates on changes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<i64>,
}

/// Status of a `SecretStore` or `ClusterSecretStore`: `conditions[type=Ready]` with reason
/// `Valid`, `InvalidProviderConfig` or `ValidationFailed`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreStatus {
    /// Kubernetes conditions; only `Ready` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The backend of a store. Exactly one field is set (enforced by a CEL rule).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.aws) ? 1 : 0) + (has(self.vault) ? 1 : 0) + (has(self.kms) ? 1 : 0) == 1").message("exactly one provider must be set: aws, vault or kms"))]
pub struct SecretStoreProvider {
    /// AWS Systems Manager Parameter Store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsProvider>,
    /// HashiCorp Vault or OpenBao, KV secrets engine v1 or v2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultProvider>,
    /// KMS-encrypted blobs: raw ciphertext in `remoteRef.key`, or an encrypted file (a SOPS
    /// document, or ciphertext) in a ConfigMap (`remoteRef.configMapRef.name` + `key`, or
    /// `remoteRef.key: configmap:<name>/<data key>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms: Option<KmsProvider>,
}

/// The key service that decrypts blobs and SOPS data keys. Exactly one field is set (CEL rule);
/// a SOPS document is decrypted with whichever of its key entries is of this kind.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.aws) ? 1 : 0) + (has(self.gcp) ? 1 : 0) + (has(self.vaultTransit) ? 1 : 0) + (has(self.age) ? 1 : 0) == 1").message("exactly one key service must be set: aws, gcp, vaultTransit or age"))]
pub struct KmsProvider {
    /// AWS KMS (`Decrypt`); SOPS `kms` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<KmsAws>,
    /// Google Cloud KMS (`cryptoKeys.decrypt` over REST); SOPS `gcp_kms` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp: Option<KmsGcp>,
    /// Vault / OpenBao Transit (`POST /v1/<path>/decrypt/<key>`); SOPS `hc_vault` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_transit: Option<KmsVaultTransit>,
    /// age identities, for SOPS `age` entries only (age has no raw-ciphertext form here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age: Option<KmsAge>,
}

/// AWS KMS: the same [`AwsConnection`] (`region`, `role`, `endpoint`, `auth`) as the Parameter
/// Store provider, at the same level of the YAML, plus the encryption context of raw
/// ciphertext.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KmsAws {
    /// Region, role, endpoint and credentials (flattened: `kms.aws.region`, not
    /// `kms.aws.connection.region`).
    #[serde(flatten)]
    pub connection: AwsConnection,
    /// Encryption context sent with `Decrypt` for raw ciphertext (it must equal the one given
    /// to `Encrypt`). SOPS entries carry their own `context`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub encryption_context: std::collections::BTreeMap<String, String>,
}

/// Google Cloud KMS.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KmsGcp {
    /// Key resource name for raw ciphertext:
    /// `projects/P/locations/L/keyRings/R/cryptoKeys/K`. SOPS entries carry their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// Base URL of the KMS REST API; default `https://cloudkms.googleapis.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Credentials; absent = Workload Identity (the metadata server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<GcpAuth>,
}

/// Google credentials: exactly one of `secretRef` and `workloadIdentity`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.secretRef) ? 1 : 0) + (has(self.workloadIdentity) ? 1 : 0) == 1").message("exactly one of secretRef and workloadIdentity must be set"))]
pub struct GcpAuth {
    /// A Secret key holding a service-account key JSON (`gcloud iam service-accounts keys
    /// create`); its `token_uri` is where the OAuth token is requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeySelector>,
    /// Tokens from the GKE metadata server (Workload Identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<GcpWorkloadIdentity>,
}

/// Workload Identity: no fields; the pod's Kubernetes ServiceAccount must be bound to a
/// Google service account.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct GcpWorkloadIdentity {}

/// Vault / OpenBao Transit: the same [`VaultConnection`] (`server`, `namespace`, `caBundle`,
/// `caProvider`, `auth`) as the KV provider, at the same level of the YAML, plus the Transit
/// mount and key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KmsVaultTransit {
    /// Server, namespace, CA certificates and login (flattened: `kms.vaultTransit.server`,
    /// not `kms.vaultTransit.connection.server`).
    #[serde(flatten)]
    pub connection: VaultConnection,
    /// Mount path of the Transit engine; default `transit`. SOPS entries carry their own
    /// `engine_path`.
    #[serde(default = "default_transit_path")]
    pub path: String,
    /// Transit key for raw ciphertext (`vault:v1:...`). SOPS entries carry their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
}

fn default_transit_path() -> String {
    "transit".into()
}

/// age identities (`AGE-SECRET-KEY-1...` lines, as `age-keygen` writes them) in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KmsAge {
    /// The Secret key holding the identities.
    pub secret_ref: SecretKeySelector,
}

/// The AWS service a store reads (ESO's `spec.provider.aws.service`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AwsService {
    /// Systems Manager Parameter Store (`GetParameters`, `GetParametersByPath`).
    #[default]
    ParameterStore,
    /// Secrets Manager (`BatchGetSecretValue`, `GetSecretValue`, `ListSecrets`,
    /// `DescribeSecret`).
    SecretsManager,
}

/// AWS provider: `service`, the [`AwsConnection`] (`region`, optional `role`, `endpoint`
/// and `auth`), and ESO's `prefix` and `secretsManager` fields.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsProvider {
    /// `ParameterStore` (the default) or `SecretsManager`.
    #[serde(default)]
    pub service: AwsService,
    /// Prepended to every `remoteRef.key` read through this store (ESO's `prefix`), e.g.
    /// `prod/` makes key `db` read `prod/db`. Not applied to `dataFrom.find`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// ESO's Secrets Manager settings. Both fields shape ESO's PushSecret deletions, which
    /// this operator does not make: accepted so that ESO's stores apply unchanged, and unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_manager: Option<AwsSecretsManagerConfig>,
    /// Region, role, endpoint and credentials (flattened: `aws.region`, not
    /// `aws.connection.region`).
    #[serde(flatten)]
    pub connection: AwsConnection,
}

/// ESO's `spec.provider.aws.secretsManager`: how PushSecret deletes secrets (unused here).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSecretsManagerConfig {
    /// ESO: delete without a recovery window (`DeleteSecret` `ForceDeleteWithoutRecovery`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_delete_without_recovery: Option<bool>,
    /// ESO: the recovery window of a deletion, in days (7-30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_window_in_days: Option<i64>,
}

impl AwsProvider {
    /// `key` with the store's [`AwsProvider::prefix`] in front.
    pub fn prefixed(&self, key: &str) -> String {
        format!("{}{key}", self.prefix.as_deref().unwrap_or_default())
    }
}

/// Where and as whom the AWS clients of a store connect: the fields `aws` (Parameter Store)
/// and `kms.aws` (KMS) share, flattened into both, so both are written the same way.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsConnection {
    /// AWS region, e.g. `eu-west-1`.
    pub region: String,
    /// ARN of a role assumed (STS `AssumeRole`) on top of the credentials from `auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Endpoint URL of the service (SSM, Secrets Manager or KMS) and STS (VPC endpoints, local test servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Credentials; absent = the SDK's default chain (env, web identity, Pod Identity, IMDS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AwsAuth>,
}

/// AWS credentials: exactly one of `secretRef` and `jwt`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.secretRef) ? 1 : 0) + (has(self.jwt) ? 1 : 0) == 1").message("exactly one of secretRef and jwt must be set"))]
pub struct AwsAuth {
    /// Static access keys kept in Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<AwsSecretRef>,
    /// A ServiceAccount token exchanged by STS `AssumeRoleWithWebIdentity` for `role`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<AwsJwtAuth>,
}

/// Static AWS access keys.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSecretRef {
    /// The access key ID.
    #[serde(rename = "accessKeyIDSecretRef")]
    pub access_key_id_secret_ref: SecretKeySelector,
    /// The secret access key.
    pub secret_access_key_secret_ref: SecretKeySelector,
    /// An optional session token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token_secret_ref: Option<SecretKeySelector>,
}

/// Web identity: a TokenRequest token of `serviceAccountRef` (audience `sts.amazonaws.com`
/// unless given) exchanged for credentials of the store's `role`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsJwtAuth {
    /// The ServiceAccount whose token is exchanged.
    pub service_account_ref: ServiceAccountSelector,
}

/// Version of the Vault KV secrets engine.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VaultKvVersion {
    /// KV v1: `GET /v1/<path>/<key>`.
    #[serde(rename = "v1")]
    V1,
    /// KV v2: `GET /v1/<path>/data/<key>?version=N`.
    #[default]
    #[serde(rename = "v2")]
    V2,
}

/// Vault / OpenBao provider: the [`VaultConnection`] (`server`, `namespace`, `caBundle`,
/// `caProvider`, `auth`) and the KV mount and version.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultProvider {
    /// Server, namespace, CA certificates and login (flattened: `vault.server`, not
    /// `vault.connection.server`).
    #[serde(flatten)]
    pub connection: VaultConnection,
    /// Mount path of the KV engine; default `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// KV engine version; default `v2`.
    #[serde(default)]
    pub version: VaultKvVersion,
}

/// Where and as whom a store's Vault client connects: the fields `vault` (KV) and
/// `kms.vaultTransit` (Transit) share, flattened into both, so both are written the same way.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultConnection {
    /// Server URL, e.g. `https://vault.example:8200`.
    pub server: String,
    /// Vault Enterprise / OpenBao namespace (`X-Vault-Namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Base64 of PEM CA certificates that sign the server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// A Secret or ConfigMap key holding PEM CA certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_provider: Option<CaProvider>,
    /// How to log in; exactly one method.
    pub auth: VaultAuth,
}

/// Where PEM CA certificates are kept.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaProvider {
    /// `Secret` or `ConfigMap`.
    #[serde(rename = "type")]
    pub type_: CaProviderType,
    /// Object name.
    pub name: String,
    /// Data key.
    pub key: String,
    /// Namespace (ClusterSecretStore only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Kind of object a [`CaProvider`] names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CaProviderType {
    /// A Secret.
    #[default]
    Secret,
    /// A ConfigMap.
    ConfigMap,
}

/// Vault login: exactly one method (CEL rule).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.tokenSecretRef) ? 1 : 0) + (has(self.appRole) ? 1 : 0) + (has(self.kubernetes) ? 1 : 0) + (has(self.jwt) ? 1 : 0) + (has(self.userPass) ? 1 : 0) == 1").message("exactly one auth method must be set: tokenSecretRef, appRole, kubernetes, jwt or userPass"))]
pub struct VaultAuth {
    /// A static token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeySelector>,
    /// AppRole: `POST /v1/auth/<path>/login {role_id, secret_id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_role: Option<VaultAppRole>,
    /// Kubernetes: a ServiceAccount token checked by Vault through TokenReview.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<VaultKubernetesAuth>,
    /// JWT/OIDC: `POST /v1/auth/<path>/login {role, jwt}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<VaultJwtAuth>,
    /// Userpass: `POST /v1/auth/<path>/login/<username> {password}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_pass: Option<VaultUserPass>,
}

/// AppRole login. Exactly one of `roleId` and `roleRef`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultAppRole {
    /// Mount path of the method; default `approle`.
    #[serde(default = "default_approle_path")]
    pub path: String,
    /// The role ID, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_id: Option<String>,
    /// The role ID, from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_ref: Option<SecretKeySelector>,
    /// The secret ID.
    pub secret_ref: SecretKeySelector,
}

/// Kubernetes login.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultKubernetesAuth {
    /// Mount path of the method; default `kubernetes`.
    #[serde(default = "default_kubernetes_path")]
    pub mount_path: String,
    /// The Vault role.
    pub role: String,
    /// The ServiceAccount whose TokenRequest token logs in; default `default` in the
    /// ExternalSecret's namespace (SecretStore: the store's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_ref: Option<ServiceAccountSelector>,
    /// A Secret key holding a ServiceAccount token, instead of TokenRequest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeySelector>,
}

/// JWT login: the JWT is read from `secretRef` or requested for a ServiceAccount.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultJwtAuth {
    /// Mount path of the method; default `jwt`.
    #[serde(default = "default_jwt_path")]
    pub path: String,
    /// The Vault role; the method's default role when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A Secret key holding the JWT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeySelector>,
    /// A TokenRequest token of a ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_service_account_token: Option<VaultKubernetesServiceAccountToken>,
}

/// A ServiceAccount token requested for Vault JWT login.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultKubernetesServiceAccountToken {
    /// The ServiceAccount.
    pub service_account_ref: ServiceAccountSelector,
    /// Audiences of the token; default `vault`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Lifetime of the token in seconds; default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_seconds: Option<i64>,
}

/// Userpass login.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultUserPass {
    /// Mount path of the method; default `userpass`.
    #[serde(default = "default_userpass_path")]
    pub path: String,
    /// The user name.
    pub username: String,
    /// The password.
    pub secret_ref: SecretKeySelector,
}

fn default_approle_path() -> String {
    "approle".into()
}
fn default_kubernetes_path() -> String {
    "kubernetes".into()
}
fn default_jwt_path() -> String {
    "jwt".into()
}
fn default_userpass_path() -> String {
    "userpass".into()
}

/// Which namespaces may use a `ClusterSecretStore`. Within one condition all given fields must
/// match; the conditions of a store are ORed (as in ESO).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretStoreCondition {
    /// Namespaces whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    /// Namespaces by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces whose name matches one of these regular expressions (Rust `regex` syntax).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_regexes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared connections are flattened: their fields stand beside the provider's own, in
    /// YAML and in what is serialized back, never under a `connection` key.
    #[test]
    fn connections_are_written_flat() {
        let yaml = r#"
aws: {region: eu-west-1, role: arn:aws:iam::1:role/r, endpoint: http://aws.local}
vault: {server: https://vault.local, path: kv, version: v1, namespace: team, auth: {tokenSecretRef: {name: t, key: token}}}
kms:
  aws: {region: us-east-1, auth: {jwt: {serviceAccountRef: {name: app}}}, encryptionContext: {app: x}}
  vaultTransit: {server: https://vault.local, caBundle: Zm9v, keyName: k, auth: {tokenSecretRef: {name: t, key: token}}}
"#;
        let provider: SecretStoreProvider = serde_yaml::from_str(yaml).unwrap();
        let aws = provider.aws.as_ref().unwrap();
        assert_eq!(aws.service, AwsService::ParameterStore);
        assert_eq!(aws.connection.region, "eu-west-1");
        assert_eq!(
            aws.connection.role.as_deref(),
            Some("arn:aws:iam::1:role/r")
        );
        assert_eq!(aws.connection.endpoint.as_deref(), Some("http://aws.local"));
        let vault = provider.vault.as_ref().unwrap();
        assert_eq!(vault.connection.server, "https://vault.local");
        assert_eq!(vault.connection.namespace.as_deref(), Some("team"));
        assert_eq!(
            (vault.path.as_deref(), vault.version),
            (Some("kv"), VaultKvVersion::V1)
        );
        let kms = provider.kms.as_ref().unwrap();
        let kms_aws = kms.aws.as_ref().unwrap();
        assert_eq!(kms_aws.connection.region, "us-east-1");
        assert!(kms_aws.connection.auth.as_ref().unwrap().jwt.is_some());
        assert_eq!(kms_aws.encryption_context["app"], "x");
        let transit = kms.vault_transit.as_ref().unwrap();
        assert_eq!(transit.connection.ca_bundle.as_deref(), Some("Zm9v"));
        assert_eq!(
            (transit.path.as_str(), transit.key_name.as_deref()),
            ("transit", Some("k"))
        );

        let json = serde_json::to_value(&provider).unwrap();
        assert_eq!(json["aws"]["region"], "eu-west-1");
        assert_eq!(json["vault"]["server"], "https://vault.local");
        assert_eq!(json["kms"]["aws"]["encryptionContext"]["app"], "x");
        assert_eq!(json["kms"]["vaultTransit"]["keyName"], "k");
        assert!(!json.to_string().contains("connection"), "{json}");
        let again: SecretStoreProvider = serde_json::from_value(json).unwrap();
        assert_eq!(again, provider);
    }
}
