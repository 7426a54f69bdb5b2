//! Backends behind one trait, [`Provider`], and what they share: the error type with its
//! fixed categories, secret values that zeroize themselves, credentials resolution
//! ([`AuthContext`]), call coalescing ([`Coalescer`]) and the economy of a provider shared by
//! every store with the same configuration and credentials ([`SharedProvider`]).
//!
//! A provider returns raw remote values; `property`, decoding and conversion are applied by the
//! controller, the same way for every backend.

pub mod aws;
pub mod coalesce;
pub mod gcp;
pub mod health;
pub(crate) mod http;
pub mod kms;
pub mod password;
pub mod shared;
pub mod vault;

use std::{collections::BTreeMap, fmt, sync::Arc};

use async_trait::async_trait;
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{ConfigMap, Secret, ServiceAccount},
};
use kube::{Api, Client};
use zeroize::Zeroizing;

pub use coalesce::Coalescer;
pub use shared::SharedProvider;

use crate::api::{SecretKeySelector, ServiceAccountSelector, external_secret::ExternalSecretFind};

/// A secret value: bytes that are wiped from memory when dropped and never printed
/// (`Debug` shows only the length).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Wraps bytes; the caller's copy should be a moved `Vec` so no copy stays behind.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretValue(Zeroizing::new(bytes))
    }
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// The bytes as UTF-8, if they are.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl From<String> for SecretValue {
    fn from(s: String) -> Self {
        SecretValue::new(s.into_bytes())
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<{} bytes redacted>)", self.0.len())
    }
}

/// Remote values by name.
pub type SecretMap = BTreeMap<String, SecretValue>;

/// Fixed category of a provider failure: decides the condition reason, the Event reason, the
/// metrics label and whether the controller backs off or waits for a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::Display)]
pub enum ErrorKind {
    /// The remote key (or version) does not exist.
    NotFound,
    /// The backend refused the credentials' access to the key.
    AccessDenied,
    /// Login or credential exchange failed, or a credential Secret is missing.
    Authentication,
    /// The store's configuration cannot work (bad URL, refused `namespace` field, ...).
    InvalidConfig,
    /// The remote value exists but cannot be used: a malformed or tampered document (SOPS MAC
    /// mismatch), a ciphertext for another key. Retried with backoff, since the source (a
    /// ConfigMap, a parameter) may be fixed without any change to the ExternalSecret.
    InvalidData,
    /// The backend asked us to slow down.
    Throttled,
    /// Network or server failure; retried with backoff.
    Transient,
    /// Not a failure: a call to the backend has been waiting too long for another to start
    /// (see [`health`]); the read is retried shortly, without a status change.
    Busy,
}

/// A provider failure. The message names the operation and the remote key, and the backend's
/// own error code (`ssm GetParameters "/app/db": ParameterNotFound`), never a secret value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    /// The category.
    pub kind: ErrorKind,
    /// Human-readable cause, free of secret material.
    pub message: String,
}

impl ProviderError {
    /// A new error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            message: message.into(),
        }
    }
}

/// One backend, as seen by the controller. Implementations are cached per store and shared by
/// every ExternalSecret that uses the store, so they keep their sessions (Vault token, AWS
/// credentials) and batch concurrent calls.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Fetches one remote value as stored (SSM: the parameter's value; Vault: the secret's data
    /// map as a JSON object). `version`: SSM version number or label, Vault KV v2 version.
    /// `Ok(None)` when the key (or version) does not exist.
    async fn get(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<SecretValue>, ProviderError>;

    /// The values of `keys` (`(key, version)`, as [`Provider::get`]), one result per key in
    /// order. A backend with batched reads takes them as one group (SSM: `ceil(n / 10)`
    /// `GetParameters` calls); the default reads them concurrently, one `get` each.
    async fn get_many(
        &self,
        keys: &[(String, Option<String>)],
    ) -> Vec<Result<Option<SecretValue>, ProviderError>> {
        futures::future::join_all(
            keys.iter()
                .map(|(key, version)| self.get(key, version.as_deref())),
        )
        .await
    }

    /// Every remote value that `find` selects, keyed by remote name (SSM: the parameter name;
    /// Vault: the path below the mount). Vault values are JSON objects as in [`Provider::get`].
    async fn find(&self, find: &ExternalSecretFind) -> Result<SecretMap, ProviderError>;

    /// The remote value's metadata as a JSON object of strings, for ESO's
    /// `remoteRef.metadataPolicy: Fetch` (SSM: the parameter's tags; Vault KV v2: the secret's
    /// `custom_metadata`). `Ok(None)` when the key does not exist. Default: `InvalidConfig`
    /// (the store keeps no metadata).
    async fn get_metadata(&self, key: &str) -> Result<Option<SecretValue>, ProviderError> {
        let _ = key;
        Err(ProviderError::new(
            ErrorKind::InvalidConfig,
            "remoteRef.metadataPolicy Fetch is not supported by this kind of store",
        ))
    }

    /// Checks that the store can authenticate, for the store's `Ready` condition.
    async fn validate(&self) -> Result<(), ProviderError>;

    /// Whether concurrent `get`s are merged into batched calls (SSM `GetParameters`, 10 names
    /// a call). The shared provider then reads every key due at a refresh tick at once, so a
    /// tick costs ceil(keys / batch size) calls however few ExternalSecrets run at a time.
    fn batched_reads(&self) -> bool {
        false
    }

    /// Whether `dataFrom.extract` of `key` yields every leaf of the value (nested objects and
    /// lists flattened, path segments joined with `.`) rather than its top-level keys, as for
    /// a SOPS document. Default: top-level keys, nested values as JSON text (ESO's rule).
    fn extract_leaves(&self, key: &str) -> bool {
        let _ = key;
        false
    }
}

/// `find.name.regexp` compiled (bounded, [`crate::regexes`]), or `None` without one.
/// Errors: `InvalidConfig` naming `service` (`ssm`, `secretsmanager`) and the cause.
pub fn find_name_regex(
    find: &ExternalSecretFind,
    service: &str,
) -> Result<Option<Arc<regex::Regex>>, ProviderError> {
    find.name
        .as_ref()
        .map(|n| {
            crate::regexes::compile(&n.regexp).map_err(|e| {
                ProviderError::new(
                    ErrorKind::InvalidConfig,
                    format!("{service} find: invalid name.regexp: {e}"),
                )
            })
        })
        .transpose()
}

/// The audiences the API server gives a TokenRequest that names none: those it accepts itself
/// (its `--api-audiences`). The token minted to learn them (for ServiceAccount `ns/name`, which
/// is about to get one anyway) is dropped at once, sent nowhere.
async fn api_server_audiences(
    api: &Api<ServiceAccount>,
    ns: &str,
    name: &str,
) -> Result<Vec<String>, ProviderError> {
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(Vec::new()),
            expiration_seconds: Some(600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let resp = api
        .create_token_request(name, &Default::default(), &req)
        .await
        .map_err(|e| {
            ProviderError::new(
                ErrorKind::Transient,
                format!(
                    "TokenRequest for ServiceAccount {ns}/{name} (the API server's audiences): {e}"
                ),
            )
        })?;
    Ok(resp.spec.and_then(|s| s.audiences).unwrap_or_default())
}

/// A built backend, shared.
pub type DynProvider = Arc<dyn Provider>;

/// SHA-256 of the credential material read through an [`AuthContext`] while recording
/// (Secret values, CA bundles, and for a TokenRequest the ServiceAccount, audiences and
/// lifetime, in the order read). Two stores whose
/// providers read the same material with the same configuration get the same backend: what
/// one of them may fetch, the other may too.
#[derive(Clone, Default)]
struct CredentialDigest(Arc<std::sync::Mutex<Option<sha2::Sha256>>>);

impl CredentialDigest {
    fn record(&self, what: &str, bytes: &[u8]) {
        use sha2::Digest;
        if let Some(h) = self.0.lock().expect("credential digest lock").as_mut() {
            for part in [what.as_bytes(), bytes] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part);
            }
        }
    }
}

/// Where a store's references resolve and who may be named there: a `SecretStore` resolves
/// every reference in its own namespace and refuses `namespace` fields; a `ClusterSecretStore`
/// accepts them and defaults to the ExternalSecret's namespace.
#[derive(Clone)]
pub struct AuthContext {
    /// Client used for credential Secrets, CA ConfigMaps and TokenRequests.
    pub client: Client,
    /// Namespace references without a `namespace` resolve in.
    pub namespace: String,
    /// Whether a reference may name a namespace (ClusterSecretStore).
    pub allow_namespace: bool,
    /// Whether a SecretStore may mint a ServiceAccount token for an audience the API server
    /// itself accepts (`--allow-api-server-audience`); ClusterSecretStores always may.
    allow_api_server_audience: bool,
    credentials: CredentialDigest,
}

/// The audiences the API server accepts (those a TokenRequest without audiences gets), learnt
/// once per process.
static API_SERVER_AUDIENCES: tokio::sync::OnceCell<Vec<String>> =
    tokio::sync::OnceCell::const_new();

impl AuthContext {
    /// References resolve in `namespace`; `allow_namespace` for a ClusterSecretStore.
    pub fn new(client: Client, namespace: impl Into<String>, allow_namespace: bool) -> Self {
        AuthContext {
            client,
            namespace: namespace.into(),
            allow_namespace,
            allow_api_server_audience: false,
            credentials: CredentialDigest::default(),
        }
    }

    /// This context, letting a SecretStore mint tokens for an audience the API server accepts
    /// when `allow` (the operator's `--allow-api-server-audience`).
    pub fn allowing_api_server_audience(mut self, allow: bool) -> Self {
        self.allow_api_server_audience = allow;
        self
    }

    /// Starts digesting the credential material read from now on (by this context and its
    /// clones), for [`AuthContext::finish_recording`].
    pub fn start_recording(&self) {
        use sha2::Digest;
        *self.credentials.0.lock().expect("credential digest lock") = Some(sha2::Sha256::new());
    }

    /// Stops recording and returns the SHA-256 of what was read since
    /// [`AuthContext::start_recording`] (of nothing, if it was not called).
    pub fn finish_recording(&self) -> [u8; 32] {
        use sha2::Digest;
        let h = self
            .credentials
            .0
            .lock()
            .expect("credential digest lock")
            .take()
            .unwrap_or_default();
        h.finalize().into()
    }

    fn namespace_of(&self, explicit: Option<&str>, what: &str) -> Result<String, ProviderError> {
        match explicit {
            Some(ns) if !self.allow_namespace && ns != self.namespace => Err(ProviderError::new(
                ErrorKind::InvalidConfig,
                format!(
                    "{what}: namespace {ns:?} is not allowed in a SecretStore (references resolve in the store's namespace)"
                ),
            )),
            Some(ns) => Ok(ns.to_string()),
            None => Ok(self.namespace.clone()),
        }
    }

    /// Reads one key of a Secret. Errors: `Authentication` when the Secret or key is missing
    /// (the message names them), `InvalidConfig` for a refused namespace, `Transient` on API
    /// failures.
    pub async fn secret_value(
        &self,
        sel: &SecretKeySelector,
    ) -> Result<SecretValue, ProviderError> {
        let ns = self.namespace_of(sel.namespace.as_deref(), "secret reference")?;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let secret = api.get_opt(&sel.name).await.map_err(|e| {
            ProviderError::new(
                ErrorKind::Transient,
                format!("reading Secret {ns}/{}: {e}", sel.name),
            )
        })?;
        let Some(mut secret) = secret else {
            return Err(ProviderError::new(
                ErrorKind::Authentication,
                format!("credentials Secret {ns}/{} not found", sel.name),
            ));
        };
        let value = secret.data.as_mut().and_then(|d| d.remove(&sel.key));
        match value {
            Some(v) => {
                self.credentials.record("secret", &v.0);
                Ok(SecretValue::new(v.0))
            }
            None => Err(ProviderError::new(
                ErrorKind::Authentication,
                format!(
                    "credentials Secret {ns}/{} has no key {:?}",
                    sel.name, sel.key
                ),
            )),
        }
    }

    /// Reads a key of a ConfigMap (`data`, else `binaryData`), e.g. a CA bundle.
    pub async fn config_map_value(
        &self,
        name: &str,
        key: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<u8>, ProviderError> {
        let ns = self.namespace_of(namespace, "configmap reference")?;
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
        let cm = api
            .get_opt(name)
            .await
            .map_err(|e| {
                ProviderError::new(
                    ErrorKind::Transient,
                    format!("reading ConfigMap {ns}/{name}: {e}"),
                )
            })?
            .ok_or_else(|| {
                ProviderError::new(
                    ErrorKind::InvalidConfig,
                    format!("ConfigMap {ns}/{name} not found"),
                )
            })?;
        if let Some(v) = cm.data.as_ref().and_then(|d| d.get(key)) {
            self.credentials.record("configmap", v.as_bytes());
            return Ok(v.clone().into_bytes());
        }
        if let Some(v) = cm.binary_data.as_ref().and_then(|d| d.get(key)) {
            self.credentials.record("configmap", &v.0);
            return Ok(v.0.clone());
        }
        Err(ProviderError::new(
            ErrorKind::InvalidConfig,
            format!("ConfigMap {ns}/{name} has no key {key:?}"),
        ))
    }

    /// Requests a token for a ServiceAccount (TokenRequest API, `serviceaccounts/token`
    /// create). `audiences` empty = `default_audiences`; lifetime `expiration_seconds`
    /// (the API server's minimum is 600).
    /// The annotations of the ServiceAccount `sa` names (resolved as a TokenRequest's), e.g.
    /// EKS's `eks.amazonaws.com/role-arn` (IRSA). Recorded in the credential digest: a changed
    /// annotation is another identity. Errors: `Authentication` when the ServiceAccount does
    /// not exist or may not be read, `Transient` for other API failures.
    pub async fn service_account_annotations(
        &self,
        sa: &ServiceAccountSelector,
    ) -> Result<std::collections::BTreeMap<String, String>, ProviderError> {
        let ns = self.namespace_of(sa.namespace.as_deref(), "serviceAccountRef")?;
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &ns);
        let account = api.get_opt(&sa.name).await.map_err(|e| match &e {
            kube::Error::Api(s) if s.code == 403 => ProviderError::new(
                ErrorKind::Authentication,
                format!(
                    "reading ServiceAccount {ns}/{} forbidden: {}",
                    sa.name, s.message
                ),
            ),
            _ => ProviderError::new(
                ErrorKind::Transient,
                format!("reading ServiceAccount {ns}/{}: {e}", sa.name),
            ),
        })?;
        let Some(account) = account else {
            return Err(ProviderError::new(
                ErrorKind::Authentication,
                format!("ServiceAccount {ns}/{} not found", sa.name),
            ));
        };
        let annotations = account.metadata.annotations.unwrap_or_default();
        self.credentials.record(
            "serviceaccount-annotations",
            serde_json::to_string(&annotations)
                .unwrap_or_default()
                .as_bytes(),
        );
        Ok(annotations)
    }

    pub async fn service_account_token(
        &self,
        sa: &ServiceAccountSelector,
        default_audiences: &[&str],
        expiration_seconds: Option<i64>,
    ) -> Result<SecretValue, ProviderError> {
        let ns = self.namespace_of(sa.namespace.as_deref(), "serviceAccountRef")?;
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &ns);
        let audiences: Vec<String> = if sa.audiences.is_empty() {
            default_audiences.iter().map(|s| s.to_string()).collect()
        } else {
            sa.audiences.clone()
        };
        if !self.allow_namespace && !self.allow_api_server_audience {
            let accepted = API_SERVER_AUDIENCES
                .get_or_try_init(|| api_server_audiences(&api, &ns, &sa.name))
                .await?;
            let refused = if audiences.is_empty() {
                Some("(none: the API server's own)".to_string())
            } else {
                audiences
                    .iter()
                    .find(|a| accepted.contains(a))
                    .map(|a| format!("{a:?}"))
            };
            if let Some(audience) = refused {
                return Err(ProviderError::new(
                    ErrorKind::InvalidConfig,
                    format!(
                        "serviceAccountRef {ns}/{}: audience {audience} is one the Kubernetes API server accepts, so the token would be valid against the cluster itself; a SecretStore may not send it to a server it names: use the provider's own audience (Vault: the role's `audience`, e.g. vault), or run the operator with --allow-api-server-audience",
                        sa.name
                    ),
                ));
            }
        }
        let req = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(audiences.clone()),
                expiration_seconds: Some(expiration_seconds.unwrap_or(600)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let resp = api
            .create_token_request(&sa.name, &Default::default(), &req)
            .await
            .map_err(|e| match &e {
                kube::Error::Api(s) if s.code == 404 => ProviderError::new(
                    ErrorKind::Authentication,
                    format!("ServiceAccount {ns}/{} not found", sa.name),
                ),
                kube::Error::Api(s) if s.code == 403 => ProviderError::new(
                    ErrorKind::Authentication,
                    format!(
                        "TokenRequest for ServiceAccount {ns}/{} forbidden: {}",
                        sa.name, s.message
                    ),
                ),
                _ => ProviderError::new(
                    ErrorKind::Transient,
                    format!("TokenRequest for ServiceAccount {ns}/{}: {e}", sa.name),
                ),
            })?;
        let token = resp.status.and_then(|s| s.token).unwrap_or_default();
        // The identity, not the token: every TokenRequest returns a new token for the same
        // ServiceAccount, and stores logging in as the same account may share one login.
        let identity = format!(
            "{ns}/{}\n{}\n{}",
            sa.name,
            audiences.join(","),
            expiration_seconds.unwrap_or(600)
        );
        self.credentials
            .record("serviceaccount", identity.as_bytes());
        Ok(SecretValue::new(token.into_bytes()))
    }
}
