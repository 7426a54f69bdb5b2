//! The KV secrets engine, v1 and v2: [`VaultKvProvider`]'s reads, lists and `find`, and its
//! [`Provider`] implementation.

use std::sync::Arc;

/// Entries (secrets and folders) a `dataFrom.find` may list below its path, in all: a tenant
/// names the path, and a tree of a million keys would be listed and held whole.
pub(super) const MAX_LIST_ENTRIES: usize = 10_000;

/// Folder levels a `dataFrom.find` may descend below its path.
pub(super) const MAX_LIST_DEPTH: usize = 32;

use async_trait::async_trait;
use futures::{StreamExt, stream};
use rustify::errors::ClientError as RestError;
use tokio::sync::Mutex;
use vaultrs::{
    api::kv2::{requests::ReadSecretRequest, responses::ReadSecretResponse},
    client::VaultClient,
    error::ClientError,
};

use super::bounded;
use super::{
    client::Session,
    errors::{counted, error_text, invalid, kind_of, kv_error, status},
    login::{Connector, Login},
};
use crate::{
    api::{external_secret::ExternalSecretFind, secret_store::VaultKvVersion},
    providers::{ErrorKind, Provider, ProviderError, SecretMap, SecretValue},
};

/// Reads in flight at once during `find`.
const FIND_CONCURRENCY: usize = 8;

/// A store's Vault / OpenBao KV engine: a logged-in client, its mount and KV version.
///
/// Build it with [`VaultKvProvider::new`]; share it (it is `Send + Sync`) between every
/// ExternalSecret of the store so that the login is reused.
pub struct VaultKvProvider {
    pub(super) conn: Connector,
    /// KV mount path, without slashes at either end (`secret`, `team/kv`).
    pub(super) mount: String,
    pub(super) kv: VaultKvVersion,
    /// How to log in again; `None` for a static token.
    pub(super) login: Option<Login>,
    /// The current token and what is known of its lease; never locked across a call.
    pub(super) session: std::sync::Mutex<Session>,
    /// Held by the one renewal or login in flight.
    pub(super) refreshing: Mutex<()>,
}

impl VaultKvProvider {
    /// Normalizes a remote key to a path below the mount. As ESO, a key may repeat the mount
    /// (`secret/app/db`) and, for KV v2, `data/` after it (`secret/data/app/db`).
    fn secret_path(&self, key: &str) -> Result<String, ProviderError> {
        let mut path = key.trim_matches('/');
        if let Some(rest) = path
            .strip_prefix(self.mount.as_str())
            .and_then(|r| r.strip_prefix('/'))
        {
            path = rest;
            if self.kv == VaultKvVersion::V2 {
                path = path.strip_prefix("data/").unwrap_or(path);
            }
        }
        if path.is_empty() {
            return Err(invalid(format!("vault: empty secret key {key:?}")));
        }
        Ok(path.to_string())
    }

    /// The Vault API path of a secret, for messages: `secret/data/app/db` (v2), `kv/app/db` (v1).
    fn read_path(&self, path: &str) -> String {
        match self.kv {
            VaultKvVersion::V2 => format!("{}/data/{path}", self.mount),
            VaultKvVersion::V1 => format!("{}/{path}", self.mount),
        }
    }

    /// Reads one secret: `GET /v1/<mount>/data/<path>[?version=N]` (v2) or
    /// `GET /v1/<mount>/<path>` (v1); one `kv_read` call. Returns the secret's data and, for
    /// v2, its custom metadata; `None` on 404 (also a deleted or destroyed v2 version).
    async fn read(
        &self,
        path: &str,
        version: Option<u64>,
    ) -> Result<Option<KvSecret>, ProviderError> {
        let mount: Arc<str> = self.mount.as_str().into();
        let key: Arc<str> = path.into();
        let result = match self.kv {
            VaultKvVersion::V2 => {
                self.call("kv_read", |client| {
                    let (mount, key) = (mount.clone(), key.clone());
                    async move {
                        let endpoint = ReadSecretRequest::builder()
                            .mount(&*mount)
                            .path(&*key)
                            .version(version)
                            .build()
                            .expect("every field of ReadSecretRequest is set");
                        let read: ReadSecretResponse =
                            bounded::exec_with_result(client.as_ref(), endpoint).await?;
                        Ok(KvSecret {
                            data: read.data,
                            custom_metadata: read.metadata.custom_metadata.unwrap_or_default(),
                        })
                    }
                })
                .await?
            }
            VaultKvVersion::V1 => {
                self.call("kv_read", |client| {
                    let (mount, key) = (mount.clone(), key.clone());
                    async move {
                        let read = bounded::kv1_get_raw(client.as_ref(), &mount, &key).await?;
                        Ok(KvSecret {
                            data: read.data,
                            custom_metadata: Default::default(),
                        })
                    }
                })
                .await?
            }
        };
        match result {
            Ok(secret) => Ok(Some(secret)),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(kv_error("kv_read", &e, &self.read_path(path), "read")),
        }
    }

    /// Lists the keys directly below `prefix` (`""` or ending in `/`): `LIST
    /// /v1/<mount>/metadata/<prefix>` (v2) or `LIST /v1/<mount>/<prefix>` (v1); one `kv_list`
    /// call. Folders end in `/`. A 404 (nothing there) is an empty list.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, ProviderError> {
        let mount: Arc<str> = self.mount.as_str().into();
        let key: Arc<str> = prefix.into();
        let result = match self.kv {
            VaultKvVersion::V2 => {
                self.call("kv_list", |client| {
                    let (mount, key) = (mount.clone(), key.clone());
                    async move { bounded::kv2_list(client.as_ref(), &mount, &key).await }
                })
                .await?
            }
            VaultKvVersion::V1 => {
                self.call("kv_list", |client| {
                    let (mount, key) = (mount.clone(), key.clone());
                    async move {
                        Ok(bounded::kv1_list(client.as_ref(), &mount, &key)
                            .await?
                            .data
                            .keys)
                    }
                })
                .await?
            }
        };
        match result {
            Ok(keys) => Ok(keys),
            Err(e) if status(&e) == Some(404) => Ok(Vec::new()),
            Err(e) => {
                let shown = match self.kv {
                    VaultKvVersion::V2 => format!("{}/metadata/{prefix}", self.mount),
                    VaultKvVersion::V1 => format!("{}/{prefix}", self.mount),
                };
                Err(kv_error("kv_list", &e, &shown, "list"))
            }
        }
    }

    /// Every secret path below `root` (`""` or ending in `/`), in no particular order.
    async fn list_recursive(&self, root: String) -> Result<Vec<String>, ProviderError> {
        let mut found = Vec::new();
        let mut folders = vec![(root.clone(), 0usize)];
        let mut entries = 0usize;
        while let Some((prefix, depth)) = folders.pop() {
            for key in self.list(&prefix).await? {
                entries += 1;
                if entries > MAX_LIST_ENTRIES {
                    return Err(ProviderError::new(
                        ErrorKind::InvalidData,
                        format!(
                            "vault: listing {root:?} for dataFrom.find found more than {MAX_LIST_ENTRIES} entries; narrow find.path"
                        ),
                    ));
                }
                let full = format!("{prefix}{key}");
                if key.ends_with('/') {
                    if depth + 1 > MAX_LIST_DEPTH {
                        return Err(ProviderError::new(
                            ErrorKind::InvalidData,
                            format!(
                                "vault: listing {root:?} for dataFrom.find goes deeper than {MAX_LIST_DEPTH} folders; narrow find.path"
                            ),
                        ));
                    }
                    folders.push((full, depth + 1));
                } else {
                    found.push(full);
                }
            }
        }
        Ok(found)
    }
}

/// A secret as read: its data map and, for KV v2, its `custom_metadata`.
struct KvSecret {
    data: serde_json::Value,
    custom_metadata: std::collections::HashMap<String, String>,
}

impl KvSecret {
    /// The data map as JSON bytes.
    fn value(&self) -> Result<SecretValue, ProviderError> {
        serde_json::to_vec(&self.data)
            .map(SecretValue::new)
            .map_err(|_| {
                ProviderError::new(
                    ErrorKind::Transient,
                    "vault: cannot serialize a secret's data",
                )
            })
    }
}

#[async_trait]
impl Provider for VaultKvProvider {
    /// Reads secret `key` (a path below the mount) and returns its data map as a JSON object,
    /// values as Vault returned them (strings, numbers, nested objects). As with ESO, the key
    /// may also start with the mount (`secret/app/db`, and for KV v2 `secret/data/app/db`).
    ///
    /// KV v2: `GET /v1/<mount>/data/<key>`, `version` (a decimal number) as `?version=N`;
    /// KV v1: `GET /v1/<mount>/<key>` (no versions). One `kv_read` call, plus a `lookup_self`
    /// and a `login` if a login token turned out to be dead.
    ///
    /// `Ok(None)` on 404 (missing key, deleted or destroyed version). Errors: `AccessDenied`
    /// on 403 (`vault: permission denied on secret/data/app/db`); `InvalidConfig` for an
    /// empty key, a non-numeric version, or a version with KV v1; `Throttled` on 429;
    /// `Transient` otherwise, with the status and Vault's error text.
    async fn get(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<SecretValue>, ProviderError> {
        let path = self.secret_path(key)?;
        let version = match (version.map(str::trim).filter(|v| !v.is_empty()), self.kv) {
            (None, _) => None,
            (Some(v), VaultKvVersion::V2) => Some(v.parse::<u64>().map_err(|_| {
                invalid(format!(
                    "vault: version {v:?} of {} is not a number (KV v2 versions are 1, 2, ...)",
                    self.read_path(&path)
                ))
            })?),
            (Some(v), VaultKvVersion::V1) => {
                return Err(invalid(format!(
                    "vault: version {v:?} requested for {}, but KV v1 keeps no versions",
                    self.read_path(&path)
                )));
            }
        };
        match self.read(&path, version).await? {
            Some(secret) => secret.value().map(Some),
            None => Ok(None),
        }
    }

    /// KV v2: the secret's `custom_metadata` as a JSON object (`GET /v1/<mount>/data/<key>`,
    /// one `kv_read` call; ESO's `metadataPolicy: Fetch`). `Ok(None)` on 404. KV v1 keeps no
    /// metadata: `InvalidConfig`.
    async fn get_metadata(&self, key: &str) -> Result<Option<SecretValue>, ProviderError> {
        let path = self.secret_path(key)?;
        if matches!(self.kv, VaultKvVersion::V1) {
            return Err(invalid(format!(
                "vault: metadataPolicy Fetch reads KV v2 custom_metadata, but {} is KV v1",
                self.read_path(&path)
            )));
        }
        Ok(match self.read(&path, None).await? {
            Some(secret) => Some(SecretValue::new(
                serde_json::to_vec(&secret.custom_metadata).expect("a map of strings serializes"),
            )),
            None => None,
        })
    }

    /// Lists every secret below `find.path` (default: the whole mount) recursively — `LIST
    /// /v1/<mount>/metadata/<prefix>` (v2) or `LIST /v1/<mount>/<prefix>` (v1), one `kv_list`
    /// call per folder — and reads those whose path below the mount matches `find.name.regexp`
    /// (unanchored) and, for KV v2, whose `custom_metadata` holds every `find.tags` entry
    /// (one `kv_read` each, a few at a time). Returns path → data map as JSON, as [`get`].
    ///
    /// Errors: `InvalidConfig` for a bad regular expression or tags with KV v1; otherwise as
    /// [`get`] (`AccessDenied` names the listed or read path).
    ///
    /// [`get`]: Provider::get
    async fn find(&self, find: &ExternalSecretFind) -> Result<SecretMap, ProviderError> {
        let name = match &find.name {
            Some(n) => Some(
                crate::regexes::compile(&n.regexp)
                    .map_err(|e| invalid(format!("vault: find.name.regexp {:?}: {e}", n.regexp)))?,
            ),
            None => None,
        };
        if !find.tags.is_empty() && self.kv == VaultKvVersion::V1 {
            return Err(invalid(
                "vault: find.tags match KV v2 custom_metadata; tags are not supported by the vault provider with KV v1",
            ));
        }
        let root = match find.path.as_deref().map(|p| p.trim_matches('/')) {
            None | Some("") => String::new(),
            Some(p) => {
                let p = p
                    .strip_prefix(self.mount.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                    .unwrap_or(p);
                format!("{p}/")
            }
        };
        let candidates: Vec<String> = self
            .list_recursive(root)
            .await?
            .into_iter()
            .filter(|path| name.as_ref().is_none_or(|re| re.is_match(path)))
            .collect();
        let reads: Vec<(String, Result<Option<KvSecret>, ProviderError>)> =
            stream::iter(candidates)
                .map(|path| async move {
                    let secret = self.read(&path, None).await;
                    (path, secret)
                })
                .buffer_unordered(FIND_CONCURRENCY)
                .collect()
                .await;
        let mut found = SecretMap::new();
        for (path, secret) in reads {
            // A secret deleted between the list and the read is simply gone.
            let Some(secret) = secret? else { continue };
            let tagged = find
                .tags
                .iter()
                .all(|(k, v)| secret.custom_metadata.get(k) == Some(v));
            if tagged {
                found.insert(path, secret.value()?);
            }
        }
        Ok(found)
    }

    /// Proves the credentials: `GET /v1/auth/token/lookup-self` (one `lookup_self` call); a
    /// login token that Vault refuses is replaced by a new login and checked again.
    ///
    /// Errors: `Authentication` when Vault refuses the token (or the new login);
    /// `Transient` on network or server failures.
    async fn validate(&self) -> Result<(), ProviderError> {
        let (client, generation) = self.session().await?;
        let mut result = counted("lookup_self", lookup_self(&client)).await;
        if self.login.is_some() && matches!(&result, Err(e) if matches!(status(e), Some(401 | 403)))
        {
            let client = self.relogin(generation).await?;
            result = counted("lookup_self", lookup_self(&client)).await;
        }
        result.map_err(|e| {
            ProviderError::new(
                kind_of("lookup_self", &e),
                format!(
                    "vault: token check (auth/token/lookup-self): {}",
                    error_text(&e)
                ),
            )
        })
    }
}

/// `GET /v1/auth/token/lookup-self`. A 2xx whose body vaultrs cannot parse still proves the
/// token.
async fn lookup_self(client: &VaultClient) -> Result<(), ClientError> {
    match bounded::token_lookup_self(client).await {
        Ok(_)
        | Err(ClientError::RestClientError {
            source: RestError::ResponseParseError { .. },
        }) => Ok(()),
        Err(e) => Err(e),
    }
}
