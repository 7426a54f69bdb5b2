//! KMS-encrypted blobs: raw ciphertext kept in the ExternalSecret itself, or files (SOPS
//! documents or ciphertext) kept in a ConfigMap of the ExternalSecret's namespace, decrypted by
//! AWS KMS, Google Cloud KMS, Vault Transit or age identities.
//!
//! `remoteRef.key` is one of:
//! - `configmap:<name>/<data key>` (or `configMapRef.name` beside `key: <data key>`, see
//!   [`RemoteRef::provider_key`]): a file in ConfigMap `<name>`, under `data` or `binaryData`.
//!   Its format is sops' rule on the data key's name ([`Format::for_file_name`]: `.yaml`/`.yml`,
//!   `.json`, `.env`, `.ini`, else binary) unless `inputType` names one.
//!   - A YAML, JSON or dotenv SOPS document: `get` returns it decrypted, as JSON (so `property`
//!     selects a leaf: `db.password`, `hosts.0`); `extract` yields every leaf, its path joined
//!     with `.` (see [`crate::sops`]).
//!   - A binary file: a SOPS binary document (a JSON object; `sops -e` of any other file name)
//!     gives its plaintext; anything else is ciphertext of the store's key service: the bytes
//!     of `aws kms encrypt` / `gcloud kms encrypt --ciphertext-file` (`binaryData`), their
//!     base64 text, or a Transit `vault:v<N>:...` string.
//! - otherwise raw ciphertext: the base64 that `aws kms encrypt --query CiphertextBlob` or
//!   `gcloud kms encrypt ... | base64` print, or for Transit the `vault:v1:...` string. `get`
//!   returns the plaintext bytes.
//!
//! Economy: a decrypted SOPS data key or blob is cached by the SHA-256 of its ciphertext
//! (bounded: [`DECRYPT_CACHE_CAPACITY`] entries, each dropped and zeroized after
//! [`DECRYPT_CACHE_IDLE`] unused, and with the provider, rebuilt every
//! [`crate::controller::secret_store::PROVIDER_TTL`]), so a refresh of an unchanged document
//! makes no KMS call; concurrent decrypts of the same ciphertext share one call.
//!
//! [`RemoteRef::provider_key`]: crate::api::external_secret::RemoteRef::provider_key

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
pub use crate::api::external_secret::CONFIGMAP_PREFIX;
use crate::{
    api::{
        external_secret::{ExternalSecretFind, INPUT_TYPE_QUERY, SopsInputType},
        secret_store::KmsProvider as KmsSpec,
    },
    sops::{self, AgeKeyService, Document, Format, KeyService, MasterKey},
};

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

    /// Decrypts raw ciphertext with the store's key service.
    async fn decrypt_ciphertext(
        &self,
        ciphertext: Ciphertext,
    ) -> Result<SecretValue, ProviderError> {
        let wrong = |what: &str| ProviderError::new(ErrorKind::InvalidData, format!("kms: {what}"));
        match (self.backend.as_ref(), ciphertext) {
            (Backend::Age(_), _) => Err(ProviderError::new(
                ErrorKind::InvalidConfig,
                "kms: an age store decrypts SOPS documents only, not raw ciphertext",
            )),
            (Backend::Transit(Transit { path, key_name, .. }), Ciphertext::Transit(ciphertext)) => {
                let key_name = key_name.clone().ok_or_else(|| {
                    ProviderError::new(
                        ErrorKind::InvalidConfig,
                        "kms: vaultTransit.keyName is required to decrypt raw ciphertext",
                    )
                })?;
                let path = path.clone();
                self.cached_decrypt(ciphertext.clone().as_bytes(), move |b| async move {
                    let Backend::Transit(Transit { vault, .. }) = b.as_ref() else {
                        unreachable!("backend is Transit")
                    };
                    vault.transit_decrypt(&path, &key_name, &ciphertext).await
                })
                .await
            }
            (Backend::Transit(_), Ciphertext::Blob(_)) => Err(wrong(
                "the ciphertext is not a Transit ciphertext (vault:v<N>:...)",
            )),
            (Backend::Aws(_) | Backend::Gcp(_), Ciphertext::Transit(_)) => Err(wrong(
                "the ciphertext is a Vault Transit ciphertext (vault:v<N>:...), but the store's key service is not vaultTransit",
            )),
            (Backend::Aws(AwsKms { context, .. }), Ciphertext::Blob(blob)) => {
                let context = context.clone();
                self.cached_decrypt(&blob.clone(), move |b| async move {
                    let Backend::Aws(aws) = b.as_ref() else {
                        unreachable!("backend is AWS")
                    };
                    aws_decrypt(aws, blob, context, None, None).await
                })
                .await
            }
            (Backend::Gcp(GcpKms { key_name, .. }), Ciphertext::Blob(blob)) => {
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

    /// The file `reference` names in a ConfigMap of the references' namespace, decrypted;
    /// `None` when the ConfigMap or its data key does not exist.
    async fn file(&self, reference: &str) -> Result<Option<SecretValue>, ProviderError> {
        let FileRef {
            name,
            data_key,
            format,
        } = FileRef::parse(reference)?;
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
        let in_file = |e: ProviderError| {
            ProviderError::new(
                e.kind,
                format!("ConfigMap {ns}/{name} key {data_key:?}: {}", e.message),
            )
        };
        if format == Format::Binary && !is_json_object(&bytes) {
            let ciphertext = Ciphertext::from_file(&bytes).map_err(in_file)?;
            return self
                .decrypt_ciphertext(ciphertext)
                .await
                .map(Some)
                .map_err(in_file);
        }
        let sops_err = |e: sops::SopsError| in_file(ProviderError::from(e));
        let doc = Document::parse(&bytes, format).map_err(sops_err)?;
        let data_key_bytes = sops::decrypt_data_key(&doc, &Keys(self))
            .await
            .map_err(sops_err)?;
        let decrypted = doc.decrypt(&data_key_bytes).map_err(sops_err)?;
        if format == Format::Binary {
            let (_, plaintext) = decrypted
                .leaf(&["data"])
                .expect("a parsed binary document has `data`");
            return Ok(Some(SecretValue::new(plaintext.to_vec())));
        }
        Ok(Some(decrypted.to_json()))
    }
}

/// A file in a ConfigMap: `<name>/<data key>[?inputType=<type>]` (after `configmap:`).
struct FileRef<'a> {
    name: &'a str,
    data_key: &'a str,
    format: Format,
}

impl<'a> FileRef<'a> {
    fn parse(reference: &'a str) -> Result<FileRef<'a>, ProviderError> {
        let invalid = |why: String| ProviderError::new(ErrorKind::InvalidConfig, why);
        let (path, input_type) = match reference.split_once(INPUT_TYPE_QUERY) {
            Some((path, t)) => {
                let t: SopsInputType =
                    serde_json::from_value(serde_json::Value::from(t)).map_err(|_| {
                        invalid(format!(
                            "kms: inputType {t:?} is none of yaml, json, dotenv, ini, binary"
                        ))
                    })?;
                (path, Some(t))
            }
            None => (reference, None),
        };
        let (name, data_key) = path
            .split_once('/')
            .filter(|(n, k)| !n.is_empty() && !k.is_empty())
            .ok_or_else(|| {
                invalid(format!(
                    "kms: remoteRef.key {:?} must be {CONFIGMAP_PREFIX}<name>/<data key>",
                    format!("{CONFIGMAP_PREFIX}{reference}")
                ))
            })?;
        let format =
            input_type.map_or_else(|| Format::for_file_name(data_key), Format::from_input_type);
        Ok(FileRef {
            name,
            data_key,
            format,
        })
    }
}

/// Whether a file's first non-blank byte opens a JSON object: a SOPS binary document, as
/// opposed to ciphertext (a KMS blob starts with a binary header, base64 text with a letter,
/// digit, `+` or `/`, a Transit ciphertext with `vault:`).
fn is_json_object(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Raw ciphertext, as the key service takes it.
enum Ciphertext {
    /// AWS KMS `CiphertextBlob` or Cloud KMS ciphertext bytes.
    Blob(Vec<u8>),
    /// A Vault Transit `vault:v<N>:<base64>` string.
    Transit(String),
}

impl Ciphertext {
    /// `remoteRef.key` as ciphertext: a Transit string, else base64 (whitespace ignored).
    fn from_key(key: &str) -> Result<Ciphertext, ProviderError> {
        let trimmed = key.trim();
        if trimmed.starts_with("vault:v") {
            return Ok(Ciphertext::Transit(trimmed.to_string()));
        }
        decode_base64(key).map(Ciphertext::Blob).ok_or_else(|| {
            ProviderError::new(
                ErrorKind::InvalidData,
                format!(
                    "kms: remoteRef.key is neither ciphertext (base64, or vault:v<N>:... for Transit) nor {CONFIGMAP_PREFIX}<name>/<data key>"
                ),
            )
        })
    }

    /// A ciphertext file's bytes: a Transit string, base64 text (as `aws kms encrypt --output
    /// text` writes it), or else the ciphertext bytes themselves.
    fn from_file(bytes: &[u8]) -> Result<Ciphertext, ProviderError> {
        if bytes.is_empty() {
            return Err(ProviderError::new(
                ErrorKind::InvalidData,
                "the file is empty: neither a SOPS document nor ciphertext",
            ));
        }
        // Text is read as `remoteRef.key` is; anything else is the ciphertext itself.
        if let Some(c) = std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| Self::from_key(text).ok())
        {
            return Ok(c);
        }
        Ok(Ciphertext::Blob(bytes.to_vec()))
    }
}

/// Standard base64 (whitespace ignored) of at least one byte.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .ok()
        .filter(|b| !b.is_empty())
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
                    arn,
                    enc,
                    context,
                    role,
                },
            ) => {
                let blob = decode_base64(enc).ok_or_else(|| {
                    ProviderError::new(
                        ErrorKind::InvalidData,
                        "sops: a kms entry's enc is not base64",
                    )
                })?;
                let (arn, context, role) = (arn.clone(), context.clone(), role.clone());
                p.cached_decrypt(&blob.clone(), move |b| async move {
                    let Backend::Aws(aws) = b.as_ref() else {
                        unreachable!("backend is AWS")
                    };
                    aws_decrypt(aws, blob, context, Some(arn), role).await
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
            Some(reference) => self.file(reference).await,
            None => self
                .decrypt_ciphertext(Ciphertext::from_key(key)?)
                .await
                .map(Some),
        }
    }

    async fn find(&self, _find: &ExternalSecretFind) -> Result<SecretMap, ProviderError> {
        Err(ProviderError::new(
            ErrorKind::InvalidConfig,
            "kms: dataFrom.find is not supported by a kms store (use dataFrom.extract of a SOPS document)",
        ))
    }

    /// SOPS YAML, JSON and dotenv documents are extracted leaf by leaf; a binary file's
    /// plaintext is extracted as any JSON value is.
    fn extract_leaves(&self, key: &str) -> bool {
        key.strip_prefix(CONFIGMAP_PREFIX)
            .and_then(|r| FileRef::parse(r).ok())
            .is_some_and(|r| r.format != Format::Binary)
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
