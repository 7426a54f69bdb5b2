//! KMS-encrypted blobs: raw ciphertext kept in the ExternalSecret itself, or SOPS documents
//! kept in a ConfigMap of the ExternalSecret's namespace, decrypted by AWS KMS, Google Cloud
//! KMS, Vault Transit or age identities.
//!
//! `remoteRef.key` is one of:
//! - `configmap:<name>/<data key>`: a SOPS document (YAML, JSON or dotenv, told by the data
//!   key's extension, else by its content) in ConfigMap `<name>`. `get` returns the decrypted
//!   document as JSON (so `property` selects a leaf: `db.password`, `hosts.0`); `extract`
//!   yields every leaf, its path joined with `.` (see [`crate::sops`]).
//! - otherwise raw ciphertext: the base64 that `aws kms encrypt --query CiphertextBlob` or
//!   `gcloud kms encrypt ... | base64` print, or for Transit the `vault:v1:...` string. `get`
//!   returns the plaintext bytes.
//!
//! Economy: a decrypted SOPS data key or blob is cached by the SHA-256 of its ciphertext
//! (bounded: [`DECRYPT_CACHE_CAPACITY`] entries, each dropped and zeroized after
//! [`DECRYPT_CACHE_IDLE`] unused, and with the provider, rebuilt every
//! [`crate::controller::secret_store::PROVIDER_TTL`]), so a refresh of an unchanged document
//! makes no KMS call; concurrent decrypts of the same ciphertext share one call.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{
    AuthContext, ErrorKind, Provider, ProviderError, SecretMap, SecretValue,
    aws::kms::{AwsKms, aws_backend, aws_decrypt, aws_validate},
    coalesce::Coalescer,
    gcp::{GcpKms, gcp_backend, gcp_decrypt, gcp_validate},
    vault::transit::{Transit, transit_backend},
};
use crate::{
    api::{external_secret::ExternalSecretFind, secret_store::KmsProvider as KmsSpec},
    sops::{self, AgeKeyService, Document, Format, KeyService, MasterKey},
};

/// Prefix of a `remoteRef.key` that names a SOPS document in a ConfigMap.
pub const CONFIGMAP_PREFIX: &str = "configmap:";

/// Plaintexts kept at most per provider.
pub const DECRYPT_CACHE_CAPACITY: u64 = 10_000;

/// How long an unused plaintext stays cached: 10 minutes, longer than a refresh tick's reads.
pub const DECRYPT_CACHE_IDLE: std::time::Duration = std::time::Duration::from_secs(600);

/// A store's key service, with its decrypt cache. Build with [`KmsProvider::new`].
pub struct KmsProvider {
    backend: Arc<Backend>,
    auth: AuthContext,
    /// Plaintext (data key or blob) by SHA-256 of `<backend>\0<ciphertext>`.
    cache: moka::sync::Cache<[u8; 32], SecretValue>,
    decrypts: Coalescer<[u8; 32], Result<SecretValue, ProviderError>>,
}

enum Backend {
    Aws(AwsKms),
    Gcp(GcpKms),
    Transit(Transit),
    Age(AgeKeyService),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Aws(_) => "aws",
            Backend::Gcp(_) => "gcp",
            Backend::Transit(_) => "vaultTransit",
            Backend::Age(_) => "age",
        }
    }
}

impl KmsProvider {
    /// Builds the key service of `spec`, resolving credentials through `auth` (which also
    /// gives the namespace SOPS ConfigMaps are read in):
    /// - `aws`: as the Parameter Store provider (static keys, web identity, default chain,
    ///   `role`); the client talks to `endpoint` when set.
    /// - `gcp`: a service-account key JSON from `auth.secretRef` (tokens from its
    ///   `token_uri`), or the metadata server (Workload Identity) when `auth` is absent.
    /// - `vaultTransit`: a Vault login as the KV provider does (reused and renewed).
    /// - `age`: the identities in `secretRef`.
    ///
    /// Errors: `InvalidConfig` (not exactly one backend, bad key JSON or identities),
    /// `Authentication` (missing Secret, refused login), `Transient`.
    pub async fn new(spec: &KmsSpec, auth: &AuthContext) -> Result<Self, ProviderError> {
        let backend = match (&spec.aws, &spec.gcp, &spec.vault_transit, &spec.age) {
            (Some(aws), None, None, None) => Backend::Aws(aws_backend(aws, auth).await?),
            (None, Some(gcp), None, None) => Backend::Gcp(gcp_backend(gcp, auth).await?),
            (None, None, Some(transit), None) => {
                Backend::Transit(transit_backend(transit, auth).await?)
            }
            (None, None, None, Some(age)) => {
                let identities = auth.secret_value(&age.secret_ref).await?;
                let text = identities.as_str().ok_or_else(|| {
                    ProviderError::new(
                        ErrorKind::InvalidConfig,
                        "kms: age identities are not UTF-8 text",
                    )
                })?;
                Backend::Age(AgeKeyService::new(text).map_err(ProviderError::from)?)
            }
            _ => {
                return Err(ProviderError::new(
                    ErrorKind::InvalidConfig,
                    "kms: exactly one key service must be set: aws, gcp, vaultTransit or age",
                ));
            }
        };
        Ok(KmsProvider {
            backend: Arc::new(backend),
            auth: auth.clone(),
            cache: moka::sync::Cache::builder()
                .max_capacity(DECRYPT_CACHE_CAPACITY)
                .time_to_idle(DECRYPT_CACHE_IDLE)
                .build(),
            decrypts: Coalescer::default(),
        })
    }

    /// Number of plaintexts (data keys, blobs) held in the decrypt cache.
    pub fn cached(&self) -> usize {
        self.cache.run_pending_tasks();
        self.cache.entry_count() as usize
    }

    /// Decrypts `ciphertext` with `call` unless its plaintext is cached; concurrent callers
    /// of the same ciphertext share one call. Only successes are cached.
    async fn cached_decrypt<F, Fut>(
        &self,
        ciphertext: &[u8],
        call: F,
    ) -> Result<SecretValue, ProviderError>
    where
        F: FnOnce(Arc<Backend>) -> Fut,
        Fut: Future<Output = Result<SecretValue, ProviderError>> + Send + 'static,
    {
        let mut h = Sha256::new();
        h.update(self.backend.name().as_bytes());
        h.update([0]);
        h.update(ciphertext);
        let hash: [u8; 32] = h.finalize().into();
        if let Some(hit) = self.cache.get(&hash) {
            return Ok(hit);
        }
        let backend = self.backend.clone();
        let result = self.decrypts.run(hash, move || call(backend)).await;
        if let Ok(plaintext) = &result {
            self.cache.insert(hash, plaintext.clone());
        }
        result
    }

    /// Raw ciphertext in `key`.
    async fn raw(&self, key: &str) -> Result<SecretValue, ProviderError> {
        match self.backend.as_ref() {
            Backend::Age(_) => Err(ProviderError::new(
                ErrorKind::InvalidConfig,
                format!(
                    "kms: an age store decrypts SOPS documents only; remoteRef.key must be {CONFIGMAP_PREFIX}<name>/<data key>"
                ),
            )),
            Backend::Transit(Transit { path, key_name, .. }) => {
                let ciphertext = key.trim();
                if !ciphertext.starts_with("vault:v") {
                    return Err(ProviderError::new(
                        ErrorKind::InvalidData,
                        format!(
                            "kms: remoteRef.key is neither a Transit ciphertext (vault:v<N>:...) nor {CONFIGMAP_PREFIX}<name>/<data key>"
                        ),
                    ));
                }
                let key_name = key_name.clone().ok_or_else(|| {
                    ProviderError::new(
                        ErrorKind::InvalidConfig,
                        "kms: vaultTransit.keyName is required to decrypt raw ciphertext",
                    )
                })?;
                let (path, ciphertext) = (path.clone(), ciphertext.to_string());
                self.cached_decrypt(ciphertext.clone().as_bytes(), move |b| async move {
                    let Backend::Transit(Transit { vault, .. }) = b.as_ref() else {
                        unreachable!("backend is Transit")
                    };
                    vault.transit_decrypt(&path, &key_name, &ciphertext).await
                })
                .await
            }
            Backend::Aws(AwsKms { context, .. }) => {
                let blob = decode_base64(key)?;
                let context = context.clone();
                self.cached_decrypt(&blob.clone(), move |b| async move {
                    let Backend::Aws(aws) = b.as_ref() else {
                        unreachable!("backend is AWS")
                    };
                    aws_decrypt(aws, blob, context, None).await
                })
                .await
            }
            Backend::Gcp(GcpKms { key_name, .. }) => {
                let blob = decode_base64(key)?;
                let name = key_name.clone().ok_or_else(|| {
                    ProviderError::new(
                        ErrorKind::InvalidConfig,
                        "kms: gcp.keyName is required to decrypt raw ciphertext",
                    )
                })?;
                let encoded = base64::engine::general_purpose::STANDARD.encode(&blob);
                self.cached_decrypt(&blob, move |b| async move {
                    let Backend::Gcp(gcp) = b.as_ref() else {
                        unreachable!("backend is GCP")
                    };
                    gcp_decrypt(gcp, &name, &encoded).await
                })
                .await
            }
        }
    }

    /// The SOPS document `<name>/<data key>` of a ConfigMap in the references' namespace,
    /// decrypted to JSON; `None` when the ConfigMap or the key does not exist.
    async fn document(&self, reference: &str) -> Result<Option<SecretValue>, ProviderError> {
        let (name, data_key) = reference
            .split_once('/')
            .filter(|(n, k)| !n.is_empty() && !k.is_empty())
            .ok_or_else(|| {
                ProviderError::new(
                    ErrorKind::InvalidConfig,
                    format!(
                        "kms: remoteRef.key {:?} must be {CONFIGMAP_PREFIX}<name>/<data key>",
                        format!("{CONFIGMAP_PREFIX}{reference}")
                    ),
                )
            })?;
        let ns = &self.auth.namespace;
        let api: Api<ConfigMap> = Api::namespaced(self.auth.client.clone(), ns);
        let cm = api.get_opt(name).await.map_err(|e| {
            ProviderError::new(
                ErrorKind::Transient,
                format!("reading ConfigMap {ns}/{name}: {e}"),
            )
        })?;
        let Some(cm) = cm else { return Ok(None) };
        let bytes = match (
            cm.data.as_ref().and_then(|d| d.get(data_key)),
            cm.binary_data.as_ref().and_then(|d| d.get(data_key)),
        ) {
            (Some(text), _) => text.as_bytes().to_vec(),
            (None, Some(binary)) => binary.0.clone(),
            (None, None) => return Ok(None),
        };
        let format = Format::from_file_name(data_key).unwrap_or_else(|| Format::detect(&bytes));
        let doc =
            Document::parse(&bytes, format).map_err(|e| in_document(ns, name, data_key, e))?;
        let data_key_bytes = sops::decrypt_data_key(&doc, &Keys(self))
            .await
            .map_err(|e| in_document(ns, name, data_key, e))?;
        let decrypted = doc
            .decrypt(&data_key_bytes)
            .map_err(|e| in_document(ns, name, data_key, e))?;
        Ok(Some(decrypted.to_json()))
    }
}

/// A SOPS error as a provider error naming the document: `ConfigMap ns/name key "k": <cause>`.
fn in_document(ns: &str, name: &str, key: &str, e: sops::SopsError) -> ProviderError {
    let e = ProviderError::from(e);
    ProviderError::new(
        e.kind,
        format!("ConfigMap {ns}/{name} key {key:?}: {}", e.message),
    )
}

fn decode_base64(key: &str) -> Result<Vec<u8>, ProviderError> {
    let compact: String = key.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .ok()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| {
            ProviderError::new(
                ErrorKind::InvalidData,
                format!(
                    "kms: remoteRef.key is neither base64 ciphertext nor {CONFIGMAP_PREFIX}<name>/<data key>"
                ),
            )
        })
}

/// The SOPS key service of a store: decrypts the entries of its own kind, through the cache.
struct Keys<'a>(&'a KmsProvider);

#[async_trait]
impl KeyService for Keys<'_> {
    async fn decrypt(&self, key: &MasterKey) -> Result<Option<Zeroizing<Vec<u8>>>, ProviderError> {
        let p = self.0;
        let plaintext = match (p.backend.as_ref(), key) {
            (
                Backend::Aws(_),
                MasterKey::AwsKms {
                    arn, enc, context, ..
                },
            ) => {
                let blob = decode_base64(enc)?;
                let (arn, context) = (arn.clone(), context.clone());
                p.cached_decrypt(&blob.clone(), move |b| async move {
                    let Backend::Aws(aws) = b.as_ref() else {
                        unreachable!("backend is AWS")
                    };
                    aws_decrypt(aws, blob, context, Some(arn)).await
                })
                .await?
            }
            (Backend::Gcp(_), MasterKey::GcpKms { resource_id, enc }) => {
                let (name, enc) = (resource_id.clone(), enc.clone());
                p.cached_decrypt(enc.clone().as_bytes(), move |b| async move {
                    let Backend::Gcp(gcp) = b.as_ref() else {
                        unreachable!("backend is GCP")
                    };
                    gcp_decrypt(gcp, &name, &enc).await
                })
                .await?
            }
            (
                Backend::Transit(_),
                MasterKey::HcVault {
                    engine_path,
                    key_name,
                    enc,
                    ..
                },
            ) => {
                let (path, name, enc) = (engine_path.clone(), key_name.clone(), enc.clone());
                // sops sent the data key base64-encoded, as Transit requires; Vault's answer,
                // decoded once by `transit_decrypt`, is the data key itself.
                p.cached_decrypt(enc.clone().as_bytes(), move |b| async move {
                    let Backend::Transit(Transit { vault, .. }) = b.as_ref() else {
                        unreachable!("backend is Transit")
                    };
                    vault.transit_decrypt(&path, &name, &enc).await
                })
                .await?
            }
            (Backend::Age(identities), MasterKey::Age { .. }) => {
                return identities.decrypt(key).await;
            }
            _ => return Ok(None),
        };
        Ok(Some(Zeroizing::new(plaintext.as_bytes().to_vec())))
    }
}

#[async_trait]
impl Provider for KmsProvider {
    async fn get(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<SecretValue>, ProviderError> {
        if version.is_some_and(|v| !v.is_empty()) {
            return Err(ProviderError::new(
                ErrorKind::InvalidConfig,
                "kms: remoteRef.version is not supported by a kms store",
            ));
        }
        match key.strip_prefix(CONFIGMAP_PREFIX) {
            Some(reference) => self.document(reference).await,
            None => self.raw(key).await.map(Some),
        }
    }

    async fn find(&self, _find: &ExternalSecretFind) -> Result<SecretMap, ProviderError> {
        Err(ProviderError::new(
            ErrorKind::InvalidConfig,
            "kms: dataFrom.find is not supported by a kms store (use dataFrom.extract of a SOPS document)",
        ))
    }

    fn extract_leaves(&self, key: &str) -> bool {
        key.starts_with(CONFIGMAP_PREFIX)
    }

    async fn validate(&self) -> Result<(), ProviderError> {
        match self.backend.as_ref() {
            Backend::Aws(aws) => aws_validate(aws).await,
            Backend::Gcp(gcp) => gcp_validate(gcp).await,
            Backend::Transit(Transit { vault, .. }) => vault.validate().await,
            Backend::Age(_) => Ok(()),
        }
    }
}
