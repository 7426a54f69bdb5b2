//! Step 3: the remote values of an ExternalSecret, through its store's shared provider.

use std::sync::Arc;

use futures::future::join_all;

use super::{
    super::{Error, build, secret_store::ResolvedStore, template_pool::TemplatePool},
    generate::Generated,
};
use crate::{
    api::{
        ExternalSecret,
        external_secret::{
            DeletionPolicy, ExternalSecretData, MetadataPolicy, NullBytePolicy, RemoteRef,
            SecretStoreRef,
        },
        secret_store::{AwsService, SecretStoreProvider},
    },
    providers::{ErrorKind, ProviderError, SecretMap, SecretValue, SharedProvider},
};

/// What the Secret should become after a fetch.
pub(super) enum Outcome {
    /// Write (or confirm) this Secret.
    Write(SecretMap),
    /// Every remote value is gone and `deletionPolicy: Delete`: delete the Secret.
    Delete,
}

/// The message of a remote key that does not exist, in the backend's own terms.
fn not_found_message(provider: &SecretStoreProvider, key: &str, version: Option<&str>) -> String {
    let selector = match version {
        Some(v) => format!("{key}:{v}"),
        None => key.to_string(),
    };
    if let Some(aws) = &provider.aws {
        let key = aws.prefixed(key);
        match (aws.service, version) {
            (AwsService::ParameterStore, Some(v)) => {
                format!(
                    "ssm GetParameters {:?}: ParameterNotFound",
                    format!("{key}:{v}")
                )
            }
            (AwsService::ParameterStore, None) => {
                format!("ssm GetParameters {key:?}: ParameterNotFound")
            }
            (AwsService::SecretsManager, Some(v)) => format!(
                "secretsmanager GetSecretValue {:?}: ResourceNotFoundException (no such secret or version {v:?}, or the secret is scheduled for deletion)",
                key
            ),
            (AwsService::SecretsManager, None) => format!(
                "secretsmanager BatchGetSecretValue {key:?}: ResourceNotFoundException (no such secret, or it is scheduled for deletion)"
            ),
        }
    } else if provider.kms.is_some() {
        format!(
            "kms: {key:?} not found (no such ConfigMap in this namespace, or no such data key in it)"
        )
    } else {
        let mount = provider
            .vault
            .as_ref()
            .and_then(|v| v.path.clone())
            .unwrap_or_else(|| "secret".into());
        format!(
            "vault: secret {:?} not found",
            format!("{mount}/{selector}")
        )
    }
}
/// ESO's `nullBytePolicy: Fail`: a value (as decoded, as it would be stored) that contains a
/// NUL byte fails the sync with ESO's message, naming the Secret key, never the value.
fn check_null_bytes(key: &str, value: &SecretValue, policy: NullBytePolicy) -> Result<(), Error> {
    if policy == NullBytePolicy::Fail && value.as_bytes().contains(&0) {
        return Err(Error::Provider(ProviderError::new(
            ErrorKind::InvalidData,
            format!(
                "fetched secret value for key {key:?} contains null bytes (nullBytePolicy Fail)"
            ),
        )));
    }
    Ok(())
}

/// Reads one remote reference: its value, or with `metadataPolicy: Fetch` its metadata.
async fn read(
    provider: &Arc<SharedProvider>,
    r: &RemoteRef,
    key: &str,
    fresh_since: i64,
    next_due: Option<i64>,
) -> Result<Option<SecretValue>, ProviderError> {
    match r.metadata_policy {
        MetadataPolicy::None => {
            provider
                .get(key, r.version.as_deref(), fresh_since, next_due)
                .await
        }
        MetadataPolicy::Fetch => provider.get_metadata(key).await,
    }
}

/// `remoteRef.configMapRef` names a ConfigMap only a kms store reads: refused for others, where
/// it would silently become part of a parameter name or Vault path.
fn check_config_map_refs(es: &ExternalSecret, sources: &Sources) -> Result<(), Error> {
    let main_kms = sources.main().0.provider.kms.is_some();
    let refs = es
        .spec
        .data
        .iter()
        .map(|d| (&d.remote_ref, sources.of(d).0.provider.kms.is_some()))
        .chain(
            es.spec
                .data_from
                .iter()
                .filter_map(|d| d.extract.as_ref())
                .map(|r| (r, main_kms)),
        );
    for (r, kms) in refs {
        if r.config_map_ref.is_some() && !kms {
            return Err(Error::InvalidSpec(build::BuildError(format!(
                "{:?}: remoteRef.configMapRef is read by kms stores only",
                r.key
            ))));
        }
    }
    Ok(())
}

/// The stores an ExternalSecret reads: its `secretStoreRef` first, then each other store a
/// `data[].sourceRef.storeRef` names, each with its shared provider.
pub(super) struct Sources {
    stores: Vec<(SecretStoreRef, ResolvedStore, Arc<SharedProvider>)>,
}

impl Sources {
    /// The `secretStoreRef`'s store and provider.
    pub(super) fn new(store: &ResolvedStore, provider: Arc<SharedProvider>) -> Self {
        Sources {
            stores: vec![(SecretStoreRef::default(), store.clone(), provider)],
        }
    }

    /// Adds the store `r` names.
    pub(super) fn add(
        &mut self,
        r: &SecretStoreRef,
        store: ResolvedStore,
        provider: Arc<SharedProvider>,
    ) {
        self.stores.push((r.clone(), store, provider));
    }

    /// The store and provider of `r`, if added.
    pub(super) fn get(&self, r: &SecretStoreRef) -> Option<(&ResolvedStore, &Arc<SharedProvider>)> {
        self.stores[1..]
            .iter()
            .find(|(named, ..)| named == r)
            .map(|(_, s, p)| (s, p))
    }

    /// Every store, `secretStoreRef`'s first.
    pub(super) fn stores(&self) -> impl Iterator<Item = &ResolvedStore> {
        self.stores.iter().map(|(_, s, _)| s)
    }

    fn main(&self) -> (&ResolvedStore, &Arc<SharedProvider>) {
        let (_, s, p) = &self.stores[0];
        (s, p)
    }

    /// Where `d` is read: its `sourceRef.storeRef`, else `secretStoreRef`.
    fn of(&self, d: &ExternalSecretData) -> (&ResolvedStore, &Arc<SharedProvider>) {
        d.source_ref
            .as_ref()
            .and_then(|r| self.get(&r.store_ref))
            .unwrap_or_else(|| self.main())
    }
}

/// Fetches every remote value of `es`: `dataFrom` in order, then `data[]` (whose gets run
/// concurrently, so a provider can batch them), applying property, decoding, conversion and
/// rewrites. Values fetched at or after `fresh_since` (Unix ms) may come from the provider's
/// cache; `next_due` is when `es` refreshes next (on the `secretStoreRef` provider's ticks:
/// reads from another store do not take part in its read-ahead). Missing values follow
/// `deletionPolicy`.
pub(super) async fn fetch(
    es: &ExternalSecret,
    sources: &Sources,
    generated: &mut Generated,
    templates: &TemplatePool,
    fresh_since: i64,
    next_due: Option<i64>,
) -> Result<Outcome, Error> {
    let (main, provider) = sources.main();
    let store = &main.provider;
    let mut values = SecretMap::new();
    let mut missing = Vec::new();
    let invalid = Error::InvalidSpec;
    check_config_map_refs(es, sources)?;
    for (index, entry) in es.spec.data_from.iter().enumerate() {
        // As ESO: the entry's keys as the backend names them, then either converted or
        // rewritten, then checked; values decoded last.
        let mut raw = SecretMap::new();
        if entry.source_ref.is_some() {
            let (made, kept) = generated.take(index)?;
            if kept {
                // Read back from the Secret under the keys they were written to.
                generated.set_keys(index, made.keys().cloned().collect());
                values.extend(made);
                continue;
            }
            raw = made;
        }
        let (mut decoding, mut conversion, mut null_bytes) = Default::default();
        if let Some(r) = &entry.extract {
            (decoding, conversion, null_bytes) = (
                r.decoding_strategy,
                r.conversion_strategy,
                r.null_byte_policy,
            );
            let key = r.provider_key();
            match read(provider, r, &key, fresh_since, next_due)
                .await
                .map_err(Error::Provider)?
            {
                None => missing.push(not_found_message(store, &key, r.version.as_deref())),
                Some(value) => {
                    let value = match &r.property {
                        Some(p) => build::select_property(&key, &value, p).map_err(invalid)?,
                        None => value,
                    };
                    raw.extend(
                        if provider.extract_leaves(&key) {
                            build::extract_leaves(&key, &value)
                        } else {
                            build::extract_object(&key, &value)
                        }
                        .map_err(invalid)?,
                    );
                }
            }
        }
        if let Some(f) = &entry.find {
            (decoding, conversion, null_bytes) = (
                f.decoding_strategy,
                f.conversion_strategy,
                f.null_byte_policy,
            );
            raw.extend(provider.find(f).await.map_err(Error::Provider)?);
        }
        let keyed = if entry.rewrite.is_empty() {
            raw.into_iter()
                .map(|(k, v)| (build::convert_key(&k, conversion), v))
                .collect()
        } else if build::rewrites_render(&entry.rewrite) {
            // Templates: in the render pool, as `apply` renders them.
            let rewrites = entry.rewrite.clone();
            let namespace = es.metadata.namespace.as_deref().unwrap_or_default();
            templates
                .render(namespace, move || build::rewrite_keys(raw, &rewrites))
                .await?
                .map_err(invalid)?
        } else {
            build::rewrite_keys(raw, &entry.rewrite).map_err(invalid)?
        };
        let keyed = build::validate_keys(keyed).map_err(invalid)?;
        if entry.source_ref.is_some() {
            generated.set_keys(index, keyed.keys().cloned().collect());
        }
        for (k, v) in keyed {
            let v = build::decode(&k, v, decoding).map_err(invalid)?;
            check_null_bytes(&k, &v, null_bytes)?;
            values.insert(k, v);
        }
    }
    let keys: Vec<_> = es
        .spec
        .data
        .iter()
        .map(|d| d.remote_ref.provider_key())
        .collect();
    let gets = es.spec.data.iter().zip(&keys).map(|(d, key)| {
        let (from, provider) = sources.of(d);
        let due = if std::ptr::eq(from, main) {
            next_due
        } else {
            None
        };
        read(provider, &d.remote_ref, key, fresh_since, due)
    });
    let results = join_all(gets).await;
    for ((d, key), res) in es.spec.data.iter().zip(&keys).zip(results) {
        let r = &d.remote_ref;
        let store = &sources.of(d).0.provider;
        match res.map_err(Error::Provider)? {
            None => missing.push(not_found_message(store, key, r.version.as_deref())),
            Some(value) => {
                let value = match &r.property {
                    Some(p) => build::select_property(key, &value, p).map_err(invalid)?,
                    None => value,
                };
                let value =
                    build::decode(&d.secret_key, value, r.decoding_strategy).map_err(invalid)?;
                check_null_bytes(&d.secret_key, &value, r.null_byte_policy)?;
                values.insert(d.secret_key.clone(), value);
            }
        }
    }
    if missing.is_empty() {
        return Ok(Outcome::Write(values));
    }
    match es.spec.target.deletion_policy {
        DeletionPolicy::Retain => Err(Error::Provider(ProviderError::new(
            ErrorKind::NotFound,
            missing.join("; "),
        ))),
        DeletionPolicy::Delete if values.is_empty() => Ok(Outcome::Delete),
        DeletionPolicy::Delete | DeletionPolicy::Merge => Ok(Outcome::Write(values)),
    }
}
