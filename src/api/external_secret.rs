//! `ExternalSecret`: which remote values go into which Secret, and how often.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::decoding::DecodingStrategy;

/// Spec of an ExternalSecret (ESO `external-secrets.io/v1` field for field).
///
/// `dataFrom` is applied first, then `data[]` overrides. Invalid combinations are refused by
/// the API server through CEL rules.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "secret-relay.dev",
    version = "v1alpha1",
    kind = "ExternalSecret",
    namespaced,
    status = "ExternalSecretStatus",
    category = "secret-relay",
    printcolumn = r#"{"name":"Store","type":"string","jsonPath":".spec.secretStoreRef.name"}"#,
    printcolumn = r#"{"name":"Refresh Interval","type":"string","jsonPath":".spec.refreshInterval"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Last Sync","type":"date","jsonPath":".status.refreshTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
// The schema has no defaults (`crate::without_defaults`): a field left out is absent here, and
// each rule reads it with its documented default.
#[x_kube(validation = Rule::new("(has(self.data) ? size(self.data) : 0) + (has(self.dataFrom) ? size(self.dataFrom) : 0) > 0").message("at least one of data and dataFrom must be set"))]
#[x_kube(validation = Rule::new("!has(self.target) || !has(self.target.deletionPolicy) || self.target.deletionPolicy != 'Delete' || !has(self.target.creationPolicy) || self.target.creationPolicy == 'Owner'").message("deletionPolicy Delete requires creationPolicy Owner"))]
#[x_kube(validation = Rule::new("!has(self.target) || !has(self.target.deletionPolicy) || self.target.deletionPolicy != 'Merge' || !has(self.target.creationPolicy) || self.target.creationPolicy != 'None'").message("deletionPolicy Merge cannot be used with creationPolicy None"))]
pub struct ExternalSecretSpec {
    /// How often values are fetched again, as a duration (`1h`, `30m`, `1h30m`, `90s`);
    /// default `1h`; `0` = sync once (spec edits and force-sync still re-sync).
    #[serde(default = "default_refresh_interval")]
    pub refresh_interval: String,
    /// When values are fetched again (ESO's `refreshPolicy`); default `Periodic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_policy: Option<RefreshPolicy>,
    /// The store to fetch from.
    pub secret_store_ref: SecretStoreRef,
    /// The Secret to write and how.
    #[serde(default)]
    pub target: ExternalSecretTarget,
    /// One Secret data key per remote value. Keys are unique (the list is a map keyed by
    /// `secretKey`).
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["secretKey".into()]))]
    pub data: Vec<ExternalSecretData>,
    /// Many keys at once: `extract` one remote value's keys, or `find` remote values by name.
    #[serde(default)]
    pub data_from: Vec<ExternalSecretDataFrom>,
}

fn default_refresh_interval() -> String {
    "1h".into()
}

/// ESO's `refreshPolicy` (`shouldRefresh` in its controller). Under every policy a Secret that
/// was deleted or edited is restored, and a failed sync is retried.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RefreshPolicy {
    /// Fetch once, when the Secret is first written; never again, not even after a spec
    /// change.
    CreatedOnce,
    /// Fetch every `refreshInterval`, and whenever the spec, labels or annotations change.
    #[default]
    Periodic,
    /// Fetch only when the spec, labels or annotations change (a force-sync annotation, say).
    OnChange,
}

/// Reference to a `SecretStore` (same namespace) or `ClusterSecretStore`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreRef {
    /// Store name.
    pub name: String,
    /// `SecretStore` (default) or `ClusterSecretStore`.
    #[serde(default)]
    pub kind: StoreKind,
}

/// Kind of store an ExternalSecret refers to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum StoreKind {
    /// A namespaced `SecretStore` in the ExternalSecret's namespace.
    #[default]
    SecretStore,
    /// A cluster-scoped `ClusterSecretStore`.
    ClusterSecretStore,
}

impl StoreKind {
    /// The kind's name, as in `apiVersion`/`kind` and the `secret-relay.dev/store` annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::SecretStore => "SecretStore",
            StoreKind::ClusterSecretStore => "ClusterSecretStore",
        }
    }
}

/// The Secret written by an ExternalSecret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretTarget {
    /// Secret name; default the ExternalSecret's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Who owns the Secret; default `Owner`.
    #[serde(default)]
    pub creation_policy: CreationPolicy,
    /// What happens when the remote values are gone; default `Retain`.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Write the Secret with `immutable: true`; once written it is never updated.
    #[serde(default)]
    pub immutable: bool,
    /// Shape of the Secret: type, metadata and templated data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<ExternalSecretTemplate>,
    /// Workloads of the ExternalSecret's namespace restarted when a sync changes the Secret's
    /// data (not when it is first created, not on a metadata-only change): their pod template
    /// gets the annotation `secret-relay.dev/restartedAt` (RFC 3339, nanoseconds, so two
    /// changes in one second both roll). Changes of several ExternalSecrets feeding one
    /// workload within a short window restart it once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollout_restart_targets: Vec<RolloutRestartTarget>,
}

/// A workload restarted when the Secret's data changes (as Vault Secrets Operator's
/// `rolloutRestartTargets`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRestartTarget {
    /// The workload's kind.
    pub kind: RolloutRestartKind,
    /// Its name, in the ExternalSecret's namespace.
    pub name: String,
}

/// Kinds of workload a rollout restart patches.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum RolloutRestartKind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
    /// `apps/v1` DaemonSet.
    DaemonSet,
    /// Argo Rollouts' `argoproj.io/v1alpha1` Rollout.
    #[serde(rename = "argoproj.io/Rollout")]
    ArgoRollout,
}

impl RolloutRestartKind {
    /// The kind as written in the spec (and the metric's label).
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutRestartKind::Deployment => "Deployment",
            RolloutRestartKind::StatefulSet => "StatefulSet",
            RolloutRestartKind::DaemonSet => "DaemonSet",
            RolloutRestartKind::ArgoRollout => "argoproj.io/Rollout",
        }
    }
}

/// ESO's `creationPolicy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CreationPolicy {
    /// Create and own the Secret (controller ownerReference; deleted with the ExternalSecret).
    /// A Secret of the same name that is not ours is never overwritten.
    #[default]
    Owner,
    /// Create and update the Secret without an ownerReference; it outlives the ExternalSecret.
    Orphan,
    /// Merge the keys into an existing Secret (made by someone else); never create it.
    Merge,
    /// Fetch and report only; write no Secret.
    None,
    /// Create the Secret without an ownerReference when it is missing (again after a
    /// deletion), merge the keys into it when it exists (whoever made it); it outlives the
    /// ExternalSecret.
    CreateOrMerge,
}

impl CreationPolicy {
    /// Whether the Secret may hold keys of others that must stay (`Merge`, `CreateOrMerge`):
    /// only our keys are compared and written, and its type stays as it is unless a template
    /// sets one.
    pub fn merges(self) -> bool {
        matches!(self, CreationPolicy::Merge | CreationPolicy::CreateOrMerge)
    }
}

/// ESO's `deletionPolicy`: what happens when every remote value is gone.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the Secret as it is and report the error.
    #[default]
    Retain,
    /// Delete the Secret (requires `creationPolicy: Owner`).
    Delete,
    /// Remove the vanished keys from the Secret, keeping the others.
    Merge,
}

/// `target.template`: the Secret's type, metadata and templated data.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretTemplate {
    /// Secret type, e.g. `kubernetes.io/dockerconfigjson`; default `Opaque`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Labels and annotations added to the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// Data key → template in ESO's engine v2 syntax (Go `text/template` with Sprig's and ESO's
    /// functions: `{{ .password | b64enc }}`), rendered over the fetched values; see
    /// `docs/migrating-from-eso.md`, "Templates".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Templates kept in ConfigMaps or Secrets of the ExternalSecret's namespace, or inline:
    /// applied in order before `data` (which wins on a conflict), as ESO's `templateFrom`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub template_from: Vec<super::template::TemplateFrom>,
    /// `Replace` (default): with `data` or `templateFrom`, only the templated keys are
    /// written; `Merge`: the fetched keys are written too, templates override.
    #[serde(default)]
    pub merge_policy: TemplateMergePolicy,
    /// ESO's template engine version; `v2` (the default) is the only engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
}

/// Labels and annotations of the target Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels added to the Secret (ours win on conflict); each value is a template, as data.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the Secret (ours win on conflict); each value is a template.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `target.template.mergePolicy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TemplateMergePolicy {
    /// Only templated keys (when `template.data` or `templateFrom` is set).
    #[default]
    Replace,
    /// Fetched keys plus templated keys.
    Merge,
}

/// One `data[]` entry: a remote value stored under `secretKey`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretData {
    /// Key in the Secret's data.
    pub secret_key: String,
    /// The remote value.
    pub remote_ref: RemoteRef,
    /// Where to read it when not from `secretStoreRef` (ESO's `data[].sourceRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<DataSourceRef>,
}

/// `data[].sourceRef`: another store of the namespace, or a ClusterSecretStore the namespace
/// may use, to read one item from, so that one Secret combines values of several backends
/// (SSM, Vault, KMS). ESO's `StoreSourceRef`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataSourceRef {
    /// The store, as `secretStoreRef`.
    pub store_ref: SecretStoreRef,
}

/// A remote value: `key`, optional `property` (JSON path), `version`, decoding and conversion.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteRef {
    /// SSM parameter name (`/app/db`) or Vault secret path under the store's mount (`app/db`);
    /// for a kms store, raw ciphertext, `configmap:<name>/<data key>`, or with `configMapRef`
    /// the data key of that ConfigMap (`DATABASE_URL.enc`, `secrets.enc.yaml`).
    pub key: String,
    /// kms stores only: the ConfigMap of the ExternalSecret's namespace whose data key `key`
    /// holds a SOPS document or a ciphertext file. A structured name, so that Kustomize's
    /// `nameReference` rewrites it to a `configMapGenerator`'s hashed name (the examples'
    /// `kustomizeconfig.yaml`); the same as `key: configmap:<name>/<key>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapRef>,
    /// JSON path into a JSON value, gjson syntax as ESO: `name.first`, `friends.1.first`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// SSM parameter version or label; Vault KV v2 version number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `Fetch`: read the remote value's metadata instead of its value, as a JSON object
    /// (SSM: the parameter's tags; Vault KV v2: `custom_metadata`), so `property` selects one
    /// entry and `extract` yields them all; default `None` (ESO's `metadataPolicy`).
    #[serde(default, skip_serializing_if = "MetadataPolicy::is_none")]
    pub metadata_policy: MetadataPolicy,
    /// How the fetched value is decoded before it is stored; default `None`.
    #[serde(default)]
    pub decoding_strategy: DecodingStrategy,
    /// With `dataFrom.extract` and no `rewrite`: how keys with characters a Secret key cannot
    /// hold are converted (see [`ConversionStrategy`]); unused by `data[]`, as in ESO.
    #[serde(default)]
    pub conversion_strategy: ConversionStrategy,
    /// What a fetched value containing a NUL byte does: `Ignore` (default) keeps it, `Fail`
    /// fails the sync naming the key (ESO's `nullBytePolicy`).
    #[serde(default, skip_serializing_if = "NullBytePolicy::is_ignore")]
    pub null_byte_policy: NullBytePolicy,
}

/// `remoteRef.configMapRef`: a ConfigMap holding encrypted files (kms stores).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapRef {
    /// The ConfigMap's name, in the ExternalSecret's namespace.
    pub name: String,
    /// The document's format, as sops' `--input-type`: by default sops' rule on the data key's
    /// name (`.yaml`/`.yml` YAML, `.json` JSON, `.env` dotenv, `.ini` INI, anything else
    /// binary). A binary file is a sops binary document (a JSON object) or, without sops
    /// metadata, ciphertext of the store's key service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_type: Option<SopsInputType>,
}

/// A sops document format, named as sops' `--input-type` names it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SopsInputType {
    /// YAML (`stores/yaml`).
    Yaml,
    /// JSON (`stores/json`).
    Json,
    /// dotenv (`stores/dotenv`).
    Dotenv,
    /// INI (`stores/ini`).
    Ini,
    /// Binary (`stores/json`'s BinaryStore): the whole plaintext under `data`.
    Binary,
}

impl SopsInputType {
    /// The name sops gives it (`yaml`, `json`, `dotenv`, `ini`, `binary`).
    pub fn as_str(self) -> &'static str {
        match self {
            SopsInputType::Yaml => "yaml",
            SopsInputType::Json => "json",
            SopsInputType::Dotenv => "dotenv",
            SopsInputType::Ini => "ini",
            SopsInputType::Binary => "binary",
        }
    }
}

/// Prefix of a `remoteRef.key` that names a data key of a ConfigMap (kms stores):
/// `configmap:<name>/<data key>`.
pub const CONFIGMAP_PREFIX: &str = "configmap:";

/// Separator of the input type in a ConfigMap reference's provider key
/// (`configmap:<name>/<data key>?inputType=<type>`); `?` cannot occur in a ConfigMap name or key.
pub const INPUT_TYPE_QUERY: &str = "?inputType=";

impl RemoteRef {
    /// The key the store's provider reads: `key` as written, or with `configMapRef`
    /// `configmap:<name>/<key>`, followed by `?inputType=<type>` when an input type is set.
    /// Cache and coalescing keys are this string, so a renamed ConfigMap (a new
    /// `configMapGenerator` hash) is read afresh.
    pub fn provider_key(&self) -> std::borrow::Cow<'_, str> {
        match &self.config_map_ref {
            None => std::borrow::Cow::Borrowed(&self.key),
            Some(cm) => {
                let mut k = format!("{CONFIGMAP_PREFIX}{}/{}", cm.name, self.key);
                if let Some(t) = cm.input_type {
                    k.push_str(INPUT_TYPE_QUERY);
                    k.push_str(t.as_str());
                }
                std::borrow::Cow::Owned(k)
            }
        }
    }
}

/// ESO's `nullBytePolicy` (ESO 2.9): what a fetched value containing a NUL byte does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum NullBytePolicy {
    /// Keep it (the default, as ESO).
    #[default]
    Ignore,
    /// Fail the sync: `fetched secret value for key "K" contains null bytes`; the Secret is
    /// left as it was.
    Fail,
}

impl NullBytePolicy {
    /// Whether it is the default, `Ignore`.
    pub fn is_ignore(&self) -> bool {
        *self == NullBytePolicy::Ignore
    }
}

/// ESO's `metadataPolicy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum MetadataPolicy {
    /// Read the value.
    #[default]
    None,
    /// Read the metadata (tags, custom metadata) instead.
    Fetch,
}

impl MetadataPolicy {
    /// Whether it is the default, `None`.
    pub fn is_none(&self) -> bool {
        *self == MetadataPolicy::None
    }
}

/// ESO's `conversionStrategy` (`esutils.ConvertKeys`): applied to the keys a `dataFrom`
/// entry yields when it has no `rewrite`. Characters other than Unicode letters and numbers,
/// `-`, `.` and `_` are replaced.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ConversionStrategy {
    /// Each by `_`: SSM's `/app/db/user` → `_app_db_user`.
    #[default]
    Default,
    /// Each by `_U<hex code point, 4 digits at least>_`: `/app/db` → `_U002f_app_U002f_db`.
    Unicode,
}

/// One `dataFrom[]` entry: exactly one of `extract` and `find`, then optional `rewrite`s.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.extract) ? 1 : 0) + (has(self.find) ? 1 : 0) + (has(self.sourceRef) ? 1 : 0) == 1").message("exactly one of extract and find must be set in a dataFrom entry (or sourceRef.generatorRef alone)"))]
pub struct ExternalSecretDataFrom {
    /// Every top-level key of one remote JSON value (or of `property` inside it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<RemoteRef>,
    /// Every remote value under `path` / matching `name` / carrying `tags`; the Secret key is
    /// the remote name (SSM: the full parameter name; Vault: the path under the mount),
    /// converted by `conversionStrategy` unless `rewrite` is set (then the rewrites see the
    /// remote names as they are), as in ESO: `/app/db/user` → `_app_db_user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub find: Option<ExternalSecretFind>,
    /// Values made by a generator instead of read from the store (ESO's
    /// `dataFrom[].sourceRef`, `StoreGeneratorSourceRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<DataFromSourceRef>,
    /// Key rewrites applied in order to the keys this entry yields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rewrite: Vec<ExternalSecretRewrite>,
}

/// `dataFrom[].sourceRef`: where the entry's values come from when not from the store.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.generatorRef)").message("sourceRef in a dataFrom entry needs generatorRef"))]
pub struct DataFromSourceRef {
    /// A generator of the ExternalSecret's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_ref: Option<GeneratorRef>,
}

/// ESO's `GeneratorRef`: a generator object of the ExternalSecret's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeneratorRef {
    /// `generators.secret-relay.dev/v1alpha1` (the default, as ESO infers its own group), or
    /// ESO's `generators.external-secrets.io/v1alpha1`, read as ours so that a migrated
    /// ExternalSecret works once its generators are migrated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `Password` or `VaultDynamicSecret`.
    pub kind: String,
    /// The generator's name.
    pub name: String,
}

/// `dataFrom[].find`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretFind {
    /// Path prefix: SSM `GetParametersByPath` (recursive); Vault: list below this path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Remote names matching a regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<FindName>,
    /// Remote values carrying all these tags (SSM: parameter tags; Vault KV v2: custom metadata).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Decoding applied to every value found.
    #[serde(default)]
    pub decoding_strategy: DecodingStrategy,
    /// Conversion of the keys found (the remote names), when the entry has no `rewrite`.
    #[serde(default)]
    pub conversion_strategy: ConversionStrategy,
    /// As `remoteRef.nullBytePolicy`, for every value found.
    #[serde(default, skip_serializing_if = "NullBytePolicy::is_ignore")]
    pub null_byte_policy: NullBytePolicy,
}

/// `find.name`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FindName {
    /// Regular expression (Rust `regex` syntax, unanchored like Go's `regexp.MatchString`).
    pub regexp: String,
}

/// `dataFrom[].rewrite[]`: exactly one of `regexp`, `transform` and `merge`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.regexp) ? 1 : 0) + (has(self.transform) ? 1 : 0) + (has(self.merge) ? 1 : 0) == 1").message("exactly one of regexp, transform and merge must be set in a rewrite"))]
pub struct ExternalSecretRewrite {
    /// Merge the JSON objects of the values into one (ESO's `ExternalSecretRewriteMerge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<RewriteMerge>,
    /// Replace every match of `source` in a key by `target` (`$1`, `${name}` expand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regexp: Option<RewriteRegexp>,
    /// Replace each key by the output of a template (ESO's engine v2) in which `.value` is
    /// the key: `{{ .value | upper }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<RewriteTransform>,
}

/// A merge rewrite: ESO's `ExternalSecretRewriteMerge`. Each value is a JSON object; their
/// top-level keys are merged, values in key order with the `priority` keys last (so they win).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RewriteMerge {
    /// With `strategy: JSON`, the key that receives the merged object (required then).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub into: String,
    /// Keys merged last, in this order: they win conflicts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub priority: Vec<String>,
    /// A `priority` key missing from the values: `Strict` (default, an error) or
    /// `IgnoreNotFound`.
    #[serde(default)]
    pub priority_policy: MergePriorityPolicy,
    /// A key found in two values: `Error` (default) or `Ignore` (the later one wins).
    #[serde(default)]
    pub conflict_policy: MergeConflictPolicy,
    /// `Extract` (default): the merged object's keys become the keys (strings as they are,
    /// numbers and booleans as text, objects and lists as JSON); `JSON`: the values stay and
    /// `into` gets the merged object as JSON.
    #[serde(default)]
    pub strategy: MergeStrategy,
}

/// `rewrite[].merge.priorityPolicy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MergePriorityPolicy {
    /// A missing priority key is an error.
    #[default]
    Strict,
    /// A missing priority key is skipped.
    IgnoreNotFound,
}

/// `rewrite[].merge.conflictPolicy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MergeConflictPolicy {
    /// A key in two values is an error naming the keys.
    #[default]
    Error,
    /// The later value wins.
    Ignore,
}

/// `rewrite[].merge.strategy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MergeStrategy {
    /// The merged object's keys become the keys.
    #[default]
    Extract,
    /// The merged object, as JSON, goes under `into`.
    #[serde(rename = "JSON")]
    Json,
}

/// A template key rewrite: ESO's `ExternalSecretRewriteTransform`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RewriteTransform {
    /// The template; `.value` is the key being rewritten.
    pub template: String,
}

/// A regular-expression key rewrite.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RewriteRegexp {
    /// The pattern.
    pub source: String,
    /// The replacement.
    pub target: String,
}

/// Status of an ExternalSecret, kstatus-compatible (`Ready` + `observedGeneration`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretStatus {
    /// `Ready` with reason `SecretSynced`, `SecretSyncedError`, `SecretStoreNotReady`,
    /// `SecretDeleted` or `SecretMissing`; the message carries the real cause.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Time of the last successful fetch (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// `<generation>-<hash of labels and annotations>` of the ExternalSecret at its last sync:
    /// a change (spec edit, force-sync annotation) triggers a refresh, as in ESO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_resource_version: Option<String>,
    /// The Secret this ExternalSecret writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<SecretBinding>,
    /// The `dataFrom` entries whose values follow a Vault lease or a validity
    /// (`VaultDynamicSecret`): when it ends and when secret-relay acts on it next.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generators: Vec<GeneratorStatus>,
}

/// `status.generators[]`: one `dataFrom` entry whose values have a lifetime.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeneratorStatus {
    /// The `dataFrom` index of the entry.
    pub index: u32,
    /// The generator's kind (`VaultDynamicSecret`).
    pub kind: String,
    /// The generator's name.
    pub name: String,
    /// When the current lease (or certificate) ends unless renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expiry: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When secret-relay renews the lease, or issues new values, next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_renewal: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When a replaced lease is revoked next (after `revokeGracePeriod`), if one waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_revocation: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// The `notAfter` of the X.509 certificate among the values (the `certificate` of a PKI
    /// `issue`/`sign` response), if any; also the
    /// `secret_relay_certificate_expiration_timestamp_seconds` metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// `status.binding`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretBinding {
    /// Name of the Secret.
    pub name: String,
}

impl ExternalSecret {
    /// The target Secret's name: `spec.target.name`, else the ExternalSecret's own name.
    pub fn target_name(&self) -> String {
        self.spec
            .target
            .name
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}
