//! Vault / OpenBao: the KV secrets engine, v1 and v2, behind [`Provider`].
//!
//! One [`VaultKvProvider`] serves one store. It logs in once, when built, and keeps the token:
//! the token is renewed (`auth/token/renew-self`) once two thirds of its TTL have passed, or
//! replaced by a new login when it is not renewable or has reached its max TTL. Concurrent
//! callers wait for the one login or renewal in flight instead of starting their own. A static
//! token (`tokenSecretRef`) is used as is.
//!
//! Every HTTP request is counted in `secret_relay_provider_calls` with provider `vault` and
//! operation `login`, `renew`, `kv_read`, `kv_list` or `lookup_self`.
//!
//! Errors name the operation, the Vault path and Vault's own error text
//! (`vault: permission denied on secret/data/app/db`); tokens, credentials and secret values
//! never appear in errors or logs.

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use base64::Engine as _;
use futures::{StreamExt, stream};
use rustify::errors::ClientError as RestError;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tracing::{debug, warn};
use vaultrs::{
    api::{
        AuthInfo,
        kv2::{requests::ReadSecretRequest, responses::ReadSecretResponse},
    },
    client::{VaultClient, VaultClientSettings, VaultClientSettingsBuilder},
    error::ClientError,
};
use zeroize::Zeroizing;

use super::{AuthContext, ErrorKind, Provider, ProviderError, SecretMap, SecretValue};
use crate::api::{
    SecretKeySelector, ServiceAccountSelector,
    external_secret::ExternalSecretFind,
    secret_store::{CaProviderType, VaultAuth, VaultKvVersion, VaultProvider},
};

/// Provider label of the metrics.
const PROVIDER: &str = "vault";
/// Timeout of one HTTP request to Vault.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Reads in flight at once during `find`.
const FIND_CONCURRENCY: usize = 8;
/// Default mount path of the KV engine.
const DEFAULT_MOUNT: &str = "secret";
/// Default audience of a TokenRequest token for JWT login (as ESO).
const DEFAULT_JWT_AUDIENCE: &str = "vault";
/// Pause between attempts to refresh a token that is due but still valid, when Vault fails.
const REFRESH_RETRY: Duration = Duration::from_secs(5);

/// A store's Vault / OpenBao KV engine: a logged-in client, its mount and KV version.
///
/// Build it with [`VaultKvProvider::new`]; share it (it is `Send + Sync`) between every
/// ExternalSecret of the store so that the login is reused.
pub struct VaultKvProvider {
    conn: Connector,
    /// KV mount path, without slashes at either end (`secret`, `team/kv`).
    mount: String,
    kv: VaultKvVersion,
    /// How to log in again; `None` for a static token.
    login: Option<Login>,
    /// The current token and what is known of its lease. The lock is held across a login or
    /// renewal, so that there is one in flight at a time.
    session: Mutex<Session>,
}

/// A provider that logged in revokes its token when it is dropped (its store changed or was
/// deleted, its credentials were rotated, or it duplicated another store's provider), as ESO
/// does, so that tokens do not pile up in Vault until their TTL. A static token
/// (`tokenSecretRef`) belongs to its owner and is left alone.
impl Drop for VaultKvProvider {
    fn drop(&mut self) {
        if self.login.is_some() {
            revoke_later(self.session.get_mut().client.clone(), Duration::ZERO);
        }
    }
}

/// Revokes the token `client` sends (`POST /v1/auth/token/revoke-self`, one `revoke` call)
/// after `delay`, in a task of the current Tokio runtime (none: nothing is done). A failure
/// is logged: the token then lives until its TTL.
fn revoke_later(client: Arc<VaultClient>, delay: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        tokio::time::sleep(delay).await;
        if let Err(e) = counted("revoke", vaultrs::token::revoke_self(client.as_ref()).await) {
            debug!(error = %error_text(&e), "vault: revoking a dropped token failed");
        }
    });
}

/// What is needed to make clients and log in: the client settings (without a token), a
/// token-less client for the login calls and the credentials resolver.
struct Connector {
    settings: VaultClientSettings,
    anonymous: VaultClient,
    auth: AuthContext,
}

/// The current token, inside a client that sends it.
struct Session {
    client: Arc<VaultClient>,
    /// Incremented at every login, so that callers that saw a rejected token know whether
    /// someone else has replaced it already.
    generation: u64,
    /// `None` for a static token.
    lease: Option<Lease>,
    /// After a failed renewal and login while the token still had time left: no new attempt
    /// before this instant (the token is used meanwhile).
    retry_at: Option<Instant>,
}

/// Lifetime of a login token as Vault announced it.
#[derive(Clone, Copy, Debug)]
struct Lease {
    obtained: Instant,
    /// Zero: the token does not expire.
    ttl: Duration,
    renewable: bool,
}

impl Lease {
    fn from_auth(info: &AuthInfo, obtained: Instant) -> Lease {
        Lease {
            obtained,
            ttl: Duration::from_secs(info.lease_duration),
            renewable: info.renewable,
        }
    }

    /// Whether two thirds of the TTL have passed at `now`.
    fn due(&self, now: Instant) -> bool {
        !self.ttl.is_zero() && now.saturating_duration_since(self.obtained) >= self.ttl * 2 / 3
    }

    fn expiry(&self) -> Instant {
        self.obtained + self.ttl
    }
}

/// A login method with its references, resolved again at every login so that rotated
/// credentials are picked up.
enum Login {
    AppRole {
        mount: String,
        role_id: RoleId,
        secret_id: SecretKeySelector,
    },
    Kubernetes {
        mount: String,
        role: String,
        jwt: JwtSource,
    },
    Jwt {
        mount: String,
        role: Option<String>,
        jwt: JwtSource,
    },
    UserPass {
        mount: String,
        username: String,
        password: SecretKeySelector,
    },
}

enum RoleId {
    Inline(String),
    Secret(SecretKeySelector),
}

enum JwtSource {
    /// A Secret key holding the JWT.
    Secret(SecretKeySelector),
    /// A TokenRequest token of the ServiceAccount; `audiences` empty = the API server's
    /// default audience.
    ServiceAccount {
        account: ServiceAccountSelector,
        expiration_seconds: Option<i64>,
    },
}

/// The auth method chosen by a store.
enum Method {
    Token(SecretKeySelector),
    Login(Login),
}

impl Login {
    /// `approle at auth/approle`, for messages.
    fn describe(&self) -> String {
        match self {
            Login::AppRole { mount, .. } => format!("approle at auth/{mount}"),
            Login::Kubernetes { mount, role, .. } => {
                format!("kubernetes at auth/{mount} (role {role:?})")
            }
            Login::Jwt { mount, role, .. } => match role {
                Some(role) => format!("jwt at auth/{mount} (role {role:?})"),
                None => format!("jwt at auth/{mount} (default role)"),
            },
            Login::UserPass {
                mount, username, ..
            } => format!("userpass at auth/{mount} (user {username:?})"),
        }
    }
}

impl Method {
    /// Picks the one method of `auth`. Errors: `InvalidConfig` unless exactly one is set, or
    /// when AppRole has both or neither of `roleId` and `roleRef`, or Kubernetes has both
    /// `serviceAccountRef` and `secretRef`, or JWT has both or neither of its token sources.
    fn from_spec(auth: &VaultAuth) -> Result<Method, ProviderError> {
        let set = [
            auth.token_secret_ref.is_some(),
            auth.app_role.is_some(),
            auth.kubernetes.is_some(),
            auth.jwt.is_some(),
            auth.user_pass.is_some(),
        ]
        .into_iter()
        .filter(|s| *s)
        .count();
        if set != 1 {
            return Err(invalid(
                "vault: exactly one auth method must be set: tokenSecretRef, appRole, kubernetes, jwt or userPass",
            ));
        }
        if let Some(sel) = &auth.token_secret_ref {
            return Ok(Method::Token(sel.clone()));
        }
        if let Some(a) = &auth.app_role {
            let role_id = match (&a.role_id, &a.role_ref) {
                (Some(id), None) => RoleId::Inline(id.clone()),
                (None, Some(sel)) => RoleId::Secret(sel.clone()),
                _ => {
                    return Err(invalid(
                        "vault: appRole needs exactly one of roleId and roleRef",
                    ));
                }
            };
            return Ok(Method::Login(Login::AppRole {
                mount: auth_mount(&a.path)?,
                role_id,
                secret_id: a.secret_ref.clone(),
            }));
        }
        if let Some(k) = &auth.kubernetes {
            let jwt = match (&k.secret_ref, &k.service_account_ref) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "vault: kubernetes auth takes serviceAccountRef or secretRef, not both",
                    ));
                }
                (Some(sel), None) => JwtSource::Secret(sel.clone()),
                (None, account) => JwtSource::ServiceAccount {
                    account: account.clone().unwrap_or_else(|| ServiceAccountSelector {
                        name: "default".into(),
                        ..Default::default()
                    }),
                    expiration_seconds: None,
                },
            };
            return Ok(Method::Login(Login::Kubernetes {
                mount: auth_mount(&k.mount_path)?,
                role: k.role.clone(),
                jwt,
            }));
        }
        if let Some(j) = &auth.jwt {
            let jwt = match (&j.secret_ref, &j.kubernetes_service_account_token) {
                (Some(sel), None) => JwtSource::Secret(sel.clone()),
                (None, Some(t)) => {
                    // As ESO: the token's audiences (default `vault`) plus any the
                    // ServiceAccount reference adds.
                    let mut account = t.service_account_ref.clone();
                    let mut audiences = if t.audiences.is_empty() {
                        vec![DEFAULT_JWT_AUDIENCE.to_string()]
                    } else {
                        t.audiences.clone()
                    };
                    for a in &account.audiences {
                        if !audiences.contains(a) {
                            audiences.push(a.clone());
                        }
                    }
                    account.audiences = audiences;
                    JwtSource::ServiceAccount {
                        account,
                        expiration_seconds: t.expiration_seconds,
                    }
                }
                _ => {
                    return Err(invalid(
                        "vault: jwt auth needs exactly one of secretRef and kubernetesServiceAccountToken",
                    ));
                }
            };
            return Ok(Method::Login(Login::Jwt {
                mount: auth_mount(&j.path)?,
                role: j.role.clone().filter(|r| !r.is_empty()),
                jwt,
            }));
        }
        let u = auth.user_pass.as_ref().expect("one method is set");
        Ok(Method::Login(Login::UserPass {
            mount: auth_mount(&u.path)?,
            username: u.username.clone(),
            password: u.secret_ref.clone(),
        }))
    }
}

impl VaultKvProvider {
    /// Builds the client for `spec` and logs in, resolving credential Secrets, CA Secrets or
    /// ConfigMaps and ServiceAccount tokens through `auth`.
    ///
    /// - `server` must be an `http` or `https` URL; `namespace` is sent as `X-Vault-Namespace`
    ///   on every request; the certificates of `caBundle` (base64 of PEM, or PEM) and
    ///   `caProvider` are trusted besides the default roots (the PEM is written once to
    ///   `$TMPDIR/secret-relay-vault-ca/<sha256>.pem`, as vaultrs reads CAs from files).
    /// - Login (one `login` call): AppRole `POST /v1/auth/<path>/login {role_id, secret_id}`;
    ///   Kubernetes `POST /v1/auth/<mountPath>/login {role, jwt}` with a TokenRequest token
    ///   of `serviceAccountRef` (default: ServiceAccount `default`, audiences: the API
    ///   server's default) or the token kept in `secretRef`; JWT `POST /v1/auth/<path>/login
    ///   {role, jwt}` with the JWT of `secretRef` or a TokenRequest token (audiences default
    ///   `["vault"]`); userpass `POST /v1/auth/<path>/login/<username> {password}`.
    ///   `tokenSecretRef`: no call; the token is used as is.
    ///
    /// Errors: `InvalidConfig` for an unusable spec (no or several auth methods, bad URL or
    /// namespace, bad CA bundle, a refused `namespace` in a reference); `Authentication` when
    /// a credential Secret is missing or Vault refuses the login (4xx); `Transient` on network
    /// or server (5xx) failures.
    pub async fn new(spec: &VaultProvider, auth: &AuthContext) -> Result<Self, ProviderError> {
        let method = Method::from_spec(&spec.auth)?;
        let mount = normalize_mount(spec.path.as_deref().unwrap_or(DEFAULT_MOUNT))?;
        let address = check_server(&spec.server)?;
        let namespace = match spec.namespace.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(ns) if header_safe(ns) => Some(ns.trim_matches('/').to_string()),
            Some(ns) => {
                return Err(invalid(format!(
                    "vault: namespace {ns:?} is not a valid header value"
                )));
            }
        };
        let ca_certs = match ca_pem(spec, auth).await? {
            Some(pem) => vec![write_ca_file(
                &std::env::temp_dir().join("secret-relay-vault-ca"),
                &pem,
            )?],
            None => Vec::new(),
        };
        // Every field is set explicitly: the builder's defaults read VAULT_* variables of
        // the operator's own environment, which must not leak into a store's client.
        let settings = VaultClientSettingsBuilder::default()
            .address(address.as_str())
            .token("")
            .ca_certs(ca_certs)
            .identity(None)
            .verify(true)
            .timeout(Some(HTTP_TIMEOUT))
            .namespace(namespace)
            .build()
            .map_err(|e| invalid(format!("vault: client settings: {e}")))?;
        let conn = Connector {
            anonymous: client_with_token(&settings, "")?,
            settings,
            auth: auth.clone(),
        };
        let (login, session) = match method {
            Method::Token(sel) => {
                let token = conn.secret_string(&sel, "tokenSecretRef").await?;
                let token = token.trim();
                if token.is_empty() || !header_safe(token) {
                    return Err(ProviderError::new(
                        ErrorKind::Authentication,
                        format!(
                            "vault: tokenSecretRef {}: the token is empty or not a valid header value",
                            describe_ref(&sel)
                        ),
                    ));
                }
                let session = Session {
                    client: Arc::new(client_with_token(&conn.settings, token)?),
                    generation: 0,
                    lease: None,
                    retry_at: None,
                };
                (None, session)
            }
            Method::Login(login) => {
                let (client, lease) = conn.login(&login).await?;
                let session = Session {
                    client: Arc::new(client),
                    generation: 1,
                    lease: Some(lease),
                    retry_at: None,
                };
                (Some(login), session)
            }
        };
        Ok(VaultKvProvider {
            conn,
            mount,
            kv: spec.version,
            login,
            session: Mutex::new(session),
        })
    }

    /// The client with a usable token, renewing or replacing a login token that is due, and
    /// the session generation it belongs to. When Vault fails to renew or replace a token that
    /// has not expired yet, the token is used as it is and the refresh is tried again
    /// [`REFRESH_RETRY`] later; an expired one makes the error the caller's.
    async fn session(&self) -> Result<(Arc<VaultClient>, u64), ProviderError> {
        let mut session = self.session.lock().await;
        let now = Instant::now();
        if let (Some(login), Some(lease)) = (&self.login, session.lease)
            && lease.due(now)
            && session.retry_at.is_none_or(|at| now >= at)
            && let Err(e) = self.refresh(login, &mut session, lease).await
        {
            let now = Instant::now();
            if now >= lease.expiry() {
                return Err(e);
            }
            warn!(error = %e, "vault: could not refresh the token, using it until it expires");
            session.retry_at = Some(now + REFRESH_RETRY);
        }
        Ok((session.client.clone(), session.generation))
    }

    /// Renews the session's token (`POST /v1/auth/token/renew-self`, one `renew` call) when
    /// it is renewable, not yet expired (the store may have been idle) and the renewal pushes
    /// its expiry out; logs in again otherwise.
    async fn refresh(
        &self,
        login: &Login,
        session: &mut Session,
        lease: Lease,
    ) -> Result<(), ProviderError> {
        if lease.renewable && Instant::now() < lease.expiry() {
            let result = counted(
                "renew",
                vaultrs::token::renew_self(session.client.as_ref(), None).await,
            );
            match result {
                Ok(info) => {
                    let renewed = Lease::from_auth(&info, Instant::now());
                    // At its max TTL a token renews to the same expiry: only a new login helps.
                    if renewed.expiry() > lease.expiry() + Duration::from_secs(1) {
                        debug!(ttl_seconds = info.lease_duration, "vault: token renewed");
                        session.lease = Some(renewed);
                        session.retry_at = None;
                        return Ok(());
                    }
                    debug!("vault: token at its max TTL, logging in again");
                }
                Err(e) => {
                    warn!(error = %error_text(&e), "vault: token renewal failed, logging in again")
                }
            }
        }
        self.replace_session(login, session).await
    }

    async fn replace_session(
        &self,
        login: &Login,
        session: &mut Session,
    ) -> Result<(), ProviderError> {
        let (client, lease) = self.conn.login(login).await?;
        // The replaced token is revoked once the calls that still hold it are done.
        revoke_later(session.client.clone(), HTTP_TIMEOUT);
        session.client = Arc::new(client);
        session.lease = Some(lease);
        session.retry_at = None;
        session.generation += 1;
        Ok(())
    }

    /// Logs in again unless the session moved past `generation` already (another caller did
    /// it while this one waited for the lock).
    async fn relogin(&self, generation: u64) -> Result<Arc<VaultClient>, ProviderError> {
        let mut session = self.session.lock().await;
        if let Some(login) = &self.login
            && session.generation == generation
        {
            self.replace_session(login, &mut session).await?;
        }
        Ok(session.client.clone())
    }

    /// Runs one Vault request `f` with the session's client and counts it as `operation`.
    ///
    /// A 403 with a login token is either a policy denial or a token that Vault no longer
    /// honours (revoked, expired early). `lookup-self` tells them apart for one light call;
    /// for a dead token the provider logs in again (once, shared with concurrent callers) and
    /// retries `f` once. The outer error is a failed login; the inner one is `f`'s.
    async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        f: F,
    ) -> Result<Result<T, ClientError>, ProviderError>
    where
        F: Fn(Arc<VaultClient>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let (client, generation) = self.session().await?;
        let first = counted(operation, f(client.clone()).await);
        let denied = matches!(&first, Err(e) if status(e) == Some(403));
        if !denied || self.login.is_none() {
            return Ok(first);
        }
        let lookup = counted(
            "lookup_self",
            vaultrs::token::lookup_self(client.as_ref()).await,
        );
        if !matches!(&lookup, Err(e) if matches!(status(e), Some(401 | 403))) {
            return Ok(first);
        }
        debug!("vault: token no longer accepted, logging in again");
        let client = self.relogin(generation).await?;
        Ok(counted(operation, f(client).await))
    }

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
                            vaultrs::api::exec_with_result(client.as_ref(), endpoint).await?;
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
                        let read = vaultrs::kv1::get_raw(client.as_ref(), &mount, &key).await?;
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

    /// Decrypts a Transit ciphertext (`vault:v1:...`): `POST /v1/<mount>/decrypt/<key>`, one
    /// `transit_decrypt` call. Returns the plaintext bytes (Vault's base64 decoded).
    ///
    /// Errors: `InvalidData` when Vault refuses the ciphertext (400: wrong key, tampered or
    /// malformed ciphertext), `AccessDenied` (403), `NotFound` (404: no such mount),
    /// `Transient` otherwise. Messages carry Vault's error text, never the plaintext.
    pub async fn transit_decrypt(
        &self,
        mount: &str,
        key_name: &str,
        ciphertext: &str,
    ) -> Result<SecretValue, ProviderError> {
        let mount: Arc<str> = normalize_mount(mount)?.into();
        let key: Arc<str> = key_name.into();
        let ciphertext: Arc<str> = ciphertext.trim().into();
        let result = self
            .call("transit_decrypt", |client| {
                let (mount, key, ciphertext) = (mount.clone(), key.clone(), ciphertext.clone());
                async move {
                    vaultrs::transit::data::decrypt(
                        client.as_ref(),
                        &mount,
                        &key,
                        &ciphertext,
                        None,
                    )
                    .await
                }
            })
            .await?;
        let shown = format!("{mount}/decrypt/{key}");
        let response = result.map_err(|e| kv_error("transit_decrypt", &e, &shown, "decrypt"))?;
        let encoded = Zeroizing::new(response.plaintext);
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map(SecretValue::new)
            .map_err(|_| {
                ProviderError::new(
                    ErrorKind::InvalidData,
                    format!("vault: decrypt {shown}: the plaintext is not base64"),
                )
            })
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
                    async move { vaultrs::kv2::list(client.as_ref(), &mount, &key).await }
                })
                .await?
            }
            VaultKvVersion::V1 => {
                self.call("kv_list", |client| {
                    let (mount, key) = (mount.clone(), key.clone());
                    async move {
                        Ok(vaultrs::kv1::list(client.as_ref(), &mount, &key)
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
        let mut folders = vec![root];
        while let Some(prefix) = folders.pop() {
            for key in self.list(&prefix).await? {
                let full = format!("{prefix}{key}");
                if key.ends_with('/') {
                    folders.push(full);
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
        let mut result = counted("lookup_self", lookup_self(&client).await);
        if self.login.is_some() && matches!(&result, Err(e) if matches!(status(e), Some(401 | 403)))
        {
            let client = self.relogin(generation).await?;
            result = counted("lookup_self", lookup_self(&client).await);
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
    match vaultrs::token::lookup_self(client).await {
        Ok(_)
        | Err(ClientError::RestClientError {
            source: RestError::ResponseParseError { .. },
        }) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Connector {
    /// Resolves the method's credentials and logs in (one `login` call). Returns a client
    /// that sends the new token and the token's lease.
    async fn login(&self, login: &Login) -> Result<(VaultClient, Lease), ProviderError> {
        let client = &self.anonymous;
        let result = match login {
            Login::AppRole {
                mount,
                role_id,
                secret_id,
            } => {
                let role_id = match role_id {
                    RoleId::Inline(id) => Zeroizing::new(id.clone()),
                    RoleId::Secret(sel) => self.secret_string(sel, "appRole.roleRef").await?,
                };
                let secret_id = self.secret_string(secret_id, "appRole.secretRef").await?;
                vaultrs::auth::approle::login(client, mount, role_id.trim(), secret_id.trim()).await
            }
            Login::Kubernetes { mount, role, jwt } => {
                let jwt = self.jwt(jwt, "kubernetes").await?;
                vaultrs::auth::kubernetes::login(client, mount, role, &jwt).await
            }
            Login::Jwt { mount, role, jwt } => {
                let jwt = self.jwt(jwt, "jwt").await?;
                vaultrs::auth::oidc::login(client, mount, &jwt, role.clone()).await
            }
            Login::UserPass {
                mount,
                username,
                password,
            } => {
                let password = self.secret_string(password, "userPass.secretRef").await?;
                vaultrs::auth::userpass::login(client, mount, username, &password).await
            }
        };
        let info = counted("login", result).map_err(|e| {
            ProviderError::new(
                kind_of("login", &e),
                format!(
                    "vault: login with {} failed: {}",
                    login.describe(),
                    error_text(&e)
                ),
            )
        })?;
        let lease = Lease::from_auth(&info, Instant::now());
        let token = Zeroizing::new(info.client_token);
        if token.is_empty() || !header_safe(&token) {
            return Err(ProviderError::new(
                ErrorKind::Authentication,
                format!(
                    "vault: login with {} returned no usable token",
                    login.describe()
                ),
            ));
        }
        debug!(
            method = %login.describe(),
            ttl_seconds = info.lease_duration,
            renewable = info.renewable,
            "vault: logged in"
        );
        Ok((client_with_token(&self.settings, &token)?, lease))
    }

    /// The JWT of a login: read from a Secret or requested for a ServiceAccount.
    async fn jwt(
        &self,
        source: &JwtSource,
        method: &str,
    ) -> Result<Zeroizing<String>, ProviderError> {
        let jwt = match source {
            JwtSource::Secret(sel) => {
                self.secret_string(sel, &format!("{method}.secretRef"))
                    .await?
            }
            JwtSource::ServiceAccount {
                account,
                expiration_seconds,
            } => {
                let token = self
                    .auth
                    .service_account_token(account, &[], *expiration_seconds)
                    .await?;
                utf8(
                    token,
                    &format!("{method}: ServiceAccount {:?} token", account.name),
                )?
            }
        };
        Ok(Zeroizing::new(jwt.trim().to_string()))
    }

    /// A Secret key as UTF-8 text; `what` names the field for messages.
    async fn secret_string(
        &self,
        sel: &SecretKeySelector,
        what: &str,
    ) -> Result<Zeroizing<String>, ProviderError> {
        let value = self.auth.secret_value(sel).await?;
        utf8(value, &format!("{what} {}", describe_ref(sel)))
    }
}

fn utf8(value: SecretValue, what: &str) -> Result<Zeroizing<String>, ProviderError> {
    match value.as_str() {
        Some(s) => Ok(Zeroizing::new(s.to_string())),
        None => Err(ProviderError::new(
            ErrorKind::Authentication,
            format!("vault: {what} is not UTF-8 text"),
        )),
    }
}

/// `Secret name, key "k"` (with the namespace when the reference names one), for messages.
fn describe_ref(sel: &SecretKeySelector) -> String {
    match &sel.namespace {
        Some(ns) => format!("(Secret {ns}/{}, key {:?})", sel.name, sel.key),
        None => format!("(Secret {}, key {:?})", sel.name, sel.key),
    }
}

/// A client of `settings` that sends `token`.
fn client_with_token(
    settings: &VaultClientSettings,
    token: &str,
) -> Result<VaultClient, ProviderError> {
    let mut settings = settings.clone();
    settings.token = token.to_string();
    if settings.proxy.is_some() || settings.identity.is_some() || !settings.verify {
        return VaultClient::new(settings).map_err(|e| {
            invalid(format!(
                "vault: building the HTTP client: {}",
                error_text(&e)
            ))
        });
    }
    let http = shared_http_client(&settings)?;
    Ok(VaultClient {
        http: rustify::clients::reqwest::Client::new(settings.address.as_str(), http),
        middle: vaultrs::api::EndpointMiddleware {
            token: settings.token.clone(),
            version: format!("v{}", settings.version),
            wrap: None,
            namespace: settings.namespace.clone(),
        },
        settings,
    })
}

/// Key of [`HTTP_CLIENTS`]: plain HTTP or not, the CA files trusted, the request timeout, and
/// the Tokio runtime (the operator has one): a pooled connection is served by a task of the
/// runtime that opened it, and dies with that runtime.
type HttpClientKey = (
    bool,
    Vec<String>,
    Option<Duration>,
    Option<tokio::runtime::Id>,
);

/// HTTP clients shared by every Vault client with the same TLS settings. A reqwest client
/// holds its TLS configuration (the trusted roots) and a connection pool; vaultrs builds a new
/// one for each `VaultClient`, i.e. for every store and every login.
static HTTP_CLIENTS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<HttpClientKey, reqwest::Client>>,
> = std::sync::LazyLock::new(Default::default);

/// The shared client for `settings`, built as vaultrs builds its own (rustls, the timeout,
/// the CA files added to the default roots; no roots at all for `http://`).
fn shared_http_client(settings: &VaultClientSettings) -> Result<reqwest::Client, ProviderError> {
    let plain = settings.address.as_str().starts_with("http://");
    let runtime = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
    let key = (plain, settings.ca_certs.clone(), settings.timeout, runtime);
    let mut clients = HTTP_CLIENTS.lock().expect("vault http clients lock");
    if let Some(c) = clients.get(&key) {
        return Ok(c.clone());
    }
    let mut builder = reqwest::ClientBuilder::new().tls_backend_rustls();
    if let Some(timeout) = settings.timeout {
        builder = builder.timeout(timeout);
    }
    if plain {
        builder = builder.tls_certs_only(Vec::new());
    } else {
        for path in &settings.ca_certs {
            let pem = std::fs::read(path)
                .map_err(|e| invalid(format!("vault: reading CA file {path}: {e}")))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| invalid(format!("vault: CA file {path}: {e}")))?;
            builder = builder.tls_certs_merge(certs);
        }
    }
    let client = builder
        .build()
        .map_err(|e| invalid(format!("vault: building the HTTP client: {e}")))?;
    clients.insert(key, client.clone());
    Ok(client)
}

/// Counts one Vault HTTP call of `operation` with its outcome, and passes the result on.
fn counted<T>(operation: &'static str, result: Result<T, ClientError>) -> Result<T, ClientError> {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => kind_of(operation, e).into(),
    };
    crate::metrics::provider_call(PROVIDER, operation, outcome);
    result
}

/// HTTP status of a Vault error response, if the server answered.
fn status(e: &ClientError) -> Option<u16> {
    match e {
        ClientError::APIError { code, .. }
        | ClientError::RestClientError {
            source: RestError::ServerResponseError { code, .. },
        } => Some(*code),
        _ => None,
    }
}

/// The category of a failed call of `operation`.
fn kind_of(operation: &str, e: &ClientError) -> ErrorKind {
    let auth_call = matches!(operation, "login" | "renew" | "lookup_self");
    match status(e) {
        Some(400) if operation == "transit_decrypt" => ErrorKind::InvalidData,
        Some(404) if !auth_call => ErrorKind::NotFound,
        Some(429) => ErrorKind::Throttled,
        Some(403) if !auth_call => ErrorKind::AccessDenied,
        Some(400..=499) if auth_call => ErrorKind::Authentication,
        Some(_) => ErrorKind::Transient,
        None => match e {
            ClientError::ResponseEmptyError if operation == "login" => ErrorKind::Authentication,
            _ => ErrorKind::Transient,
        },
    }
}

/// The error of a KV call on `shown` (a Vault API path): `AccessDenied` with `vault: permission
/// denied on <path>` for 403, else the category of [`kind_of`] with the status and Vault's
/// error text.
fn kv_error(operation: &str, e: &ClientError, shown: &str, verb: &str) -> ProviderError {
    match kind_of(operation, e) {
        ErrorKind::AccessDenied => ProviderError::new(
            ErrorKind::AccessDenied,
            format!("vault: permission denied on {shown}"),
        ),
        kind => ProviderError::new(kind, format!("vault: {verb} {shown}: {}", error_text(e))),
    }
}

/// A description of a vaultrs error that is safe to show: the status and Vault's error texts,
/// or the transport failure. Response bodies are never included (they may hold secret data).
fn error_text(e: &ClientError) -> String {
    match e {
        ClientError::APIError { code, errors } => {
            let errors: Vec<&str> = errors
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .collect();
            if errors.is_empty() {
                format!("status {code}")
            } else {
                format!("status {code}: {}", errors.join("; "))
            }
        }
        ClientError::RestClientError { source } => match source {
            RestError::ServerResponseError { code, .. } => format!("status {code}"),
            RestError::RequestError { source, .. } => format!("request failed: {source:#}"),
            RestError::ResponseError { source } => {
                format!("reading the response failed: {source:#}")
            }
            _ => "unexpected response".to_string(),
        },
        ClientError::JsonParseError { .. } => "unexpected response".to_string(),
        ClientError::RestClientBuildError { source } => format!("{e}: {source}"),
        other => other.to_string(),
    }
}

fn invalid(message: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorKind::InvalidConfig, message)
}

/// Whether `s` can be sent as an HTTP header value (vaultrs panics on one that cannot).
fn header_safe(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// Checks the server URL (vaultrs panics on an invalid one).
fn check_server(server: &str) -> Result<url::Url, ProviderError> {
    let url = url::Url::parse(server.trim())
        .map_err(|e| invalid(format!("vault: server {server:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!(
            "vault: server {server:?} is not an http(s) URL"
        )));
    }
    Ok(url)
}

/// `spec.path` without slashes at either end.
fn normalize_mount(path: &str) -> Result<String, ProviderError> {
    let mount = path.trim().trim_matches('/');
    if mount.is_empty() {
        return Err(invalid(format!("vault: KV mount path {path:?} is empty")));
    }
    Ok(mount.to_string())
}

/// An auth method's mount path without slashes and without a leading `auth/`.
fn auth_mount(path: &str) -> Result<String, ProviderError> {
    let trimmed = path.trim().trim_matches('/');
    let mount = trimmed
        .strip_prefix("auth/")
        .unwrap_or(trimmed)
        .trim_matches('/');
    if mount.is_empty() {
        return Err(invalid(format!("vault: auth mount path {path:?} is empty")));
    }
    Ok(mount.to_string())
}

/// The PEM CA certificates of `caBundle` and `caProvider`, if any.
async fn ca_pem(
    spec: &VaultProvider,
    auth: &AuthContext,
) -> Result<Option<Vec<u8>>, ProviderError> {
    let mut pem = Vec::new();
    if let Some(bundle) = spec
        .ca_bundle
        .as_deref()
        .map(str::trim)
        .filter(|b| !b.is_empty())
    {
        let decoded = if bundle.starts_with("-----BEGIN") {
            bundle.as_bytes().to_vec()
        } else {
            let compact: String = bundle.split_whitespace().collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .map_err(|e| invalid(format!("vault: caBundle is not base64: {e}")))?
        };
        pem.extend_from_slice(&decoded);
        pem.push(b'\n');
    }
    if let Some(p) = &spec.ca_provider {
        let bytes = match p.type_ {
            CaProviderType::Secret => {
                let sel = SecretKeySelector {
                    name: p.name.clone(),
                    key: p.key.clone(),
                    namespace: p.namespace.clone(),
                };
                auth.secret_value(&sel).await?.as_bytes().to_vec()
            }
            CaProviderType::ConfigMap => {
                auth.config_map_value(&p.name, &p.key, p.namespace.as_deref())
                    .await?
            }
        };
        pem.extend_from_slice(&bytes);
        pem.push(b'\n');
    }
    if pem.is_empty() {
        return Ok(None);
    }
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(invalid(
            "vault: caBundle/caProvider holds no PEM certificate",
        ));
    }
    Ok(Some(pem))
}

/// Writes `pem` to `<dir>/<sha256 of pem>.pem` (once; atomically, so concurrent writers and
/// readers never see a partial file) and returns the path.
fn write_ca_file(dir: &Path, pem: &[u8]) -> Result<String, ProviderError> {
    let path: PathBuf = dir.join(format!("{}.pem", hex::encode(Sha256::digest(pem))));
    let failed = |e: std::io::Error| {
        ProviderError::new(
            ErrorKind::Transient,
            format!("vault: writing the CA bundle to {}: {e}", path.display()),
        )
    };
    if !path.exists() {
        std::fs::create_dir_all(dir).map_err(failed)?;
        let tmp = dir.join(format!(
            ".{}.{}.{}.tmp",
            std::process::id(),
            rand::random::<u64>(),
            path.file_name().and_then(|n| n.to_str()).unwrap_or("ca")
        ));
        std::fs::write(&tmp, pem).map_err(failed)?;
        std::fs::rename(&tmp, &path).map_err(failed)?;
    }
    path.to_str().map(str::to_string).ok_or_else(|| {
        invalid(format!(
            "vault: CA file path {} is not UTF-8",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_is_due_after_two_thirds_of_its_ttl() {
        let t0 = Instant::now();
        let lease = Lease {
            obtained: t0,
            ttl: Duration::from_secs(30),
            renewable: true,
        };
        assert!(!lease.due(t0 + Duration::from_secs(19)));
        assert!(lease.due(t0 + Duration::from_secs(20)));
        let forever = Lease {
            ttl: Duration::ZERO,
            ..lease
        };
        assert!(!forever.due(t0 + Duration::from_secs(1_000_000)));
    }

    #[test]
    fn errors_are_classified_by_status_and_operation() {
        let api = |code| ClientError::APIError {
            code,
            errors: vec!["permission denied".into()],
        };
        assert_eq!(kind_of("kv_read", &api(403)), ErrorKind::AccessDenied);
        assert_eq!(kind_of("kv_read", &api(404)), ErrorKind::NotFound);
        assert_eq!(kind_of("kv_read", &api(429)), ErrorKind::Throttled);
        assert_eq!(kind_of("kv_read", &api(500)), ErrorKind::Transient);
        assert_eq!(kind_of("kv_read", &api(400)), ErrorKind::Transient);
        assert_eq!(kind_of("login", &api(400)), ErrorKind::Authentication);
        assert_eq!(kind_of("login", &api(403)), ErrorKind::Authentication);
        assert_eq!(kind_of("login", &api(503)), ErrorKind::Transient);
        assert_eq!(
            kind_of("login", &ClientError::ResponseEmptyError),
            ErrorKind::Authentication
        );
        assert_eq!(
            kv_error("kv_read", &api(403), "secret/data/app/db", "read").to_string(),
            "vault: permission denied on secret/data/app/db"
        );
        assert_eq!(
            kv_error("kv_read", &api(500), "secret/data/app/db", "read").to_string(),
            "vault: read secret/data/app/db: status 500: permission denied"
        );
        let no_text = ClientError::APIError {
            code: 502,
            errors: vec![],
        };
        assert_eq!(error_text(&no_text), "status 502");
    }

    #[test]
    fn mount_and_auth_paths_are_normalized() {
        assert_eq!(normalize_mount("/secret/").unwrap(), "secret");
        assert_eq!(normalize_mount("team/kv").unwrap(), "team/kv");
        assert_eq!(
            normalize_mount("/").unwrap_err().kind,
            ErrorKind::InvalidConfig
        );
        assert_eq!(auth_mount("auth/approle/").unwrap(), "approle");
        assert_eq!(auth_mount("k8s-prod").unwrap(), "k8s-prod");
        assert!(auth_mount("/").is_err());
    }

    #[test]
    fn server_must_be_an_http_url() {
        assert!(check_server("https://vault.example:8200").is_ok());
        assert!(check_server("http://127.0.0.1:8200").is_ok());
        for bad in [
            "vault.example:8200",
            "ftp://vault.example",
            "https://",
            "not a url",
            "",
        ] {
            assert_eq!(
                check_server(bad).unwrap_err().kind,
                ErrorKind::InvalidConfig,
                "{bad}"
            );
        }
    }

    #[test]
    fn header_values_are_checked() {
        assert!(header_safe("hvs.CAESIabc-_.="));
        assert!(!header_safe("token\n"));
        assert!(!header_safe("tök"));
    }

    #[test]
    fn auth_method_must_be_exactly_one() {
        let none = VaultAuth::default();
        assert_eq!(
            Method::from_spec(&none).err().unwrap().kind,
            ErrorKind::InvalidConfig
        );
        let sel = SecretKeySelector {
            name: "vault".into(),
            key: "token".into(),
            namespace: None,
        };
        let two = VaultAuth {
            token_secret_ref: Some(sel.clone()),
            user_pass: Some(crate::api::secret_store::VaultUserPass {
                path: "userpass".into(),
                username: "u".into(),
                secret_ref: sel.clone(),
            }),
            ..Default::default()
        };
        assert_eq!(
            Method::from_spec(&two).err().unwrap().kind,
            ErrorKind::InvalidConfig
        );
        let approle_both = VaultAuth {
            app_role: Some(crate::api::secret_store::VaultAppRole {
                path: "approle".into(),
                role_id: Some("id".into()),
                role_ref: Some(sel.clone()),
                secret_ref: sel.clone(),
            }),
            ..Default::default()
        };
        assert_eq!(
            Method::from_spec(&approle_both).err().unwrap().kind,
            ErrorKind::InvalidConfig
        );
    }

    #[test]
    fn kubernetes_auth_defaults_to_the_default_service_account() {
        let auth = VaultAuth {
            kubernetes: Some(crate::api::secret_store::VaultKubernetesAuth {
                mount_path: "kubernetes".into(),
                role: "app".into(),
                service_account_ref: None,
                secret_ref: None,
            }),
            ..Default::default()
        };
        let Ok(Method::Login(Login::Kubernetes { mount, role, jwt })) = Method::from_spec(&auth)
        else {
            panic!("kubernetes login expected");
        };
        assert_eq!((mount.as_str(), role.as_str()), ("kubernetes", "app"));
        let JwtSource::ServiceAccount { account, .. } = jwt else {
            panic!("TokenRequest expected");
        };
        assert_eq!(account.name, "default");
        assert!(account.audiences.is_empty());
    }

    #[test]
    fn jwt_token_audiences_default_to_vault_plus_the_references() {
        let token = |audiences: Vec<&str>, sa_audiences: Vec<&str>| VaultAuth {
            jwt: Some(crate::api::secret_store::VaultJwtAuth {
                path: "jwt".into(),
                role: Some("r".into()),
                secret_ref: None,
                kubernetes_service_account_token: Some(
                    crate::api::secret_store::VaultKubernetesServiceAccountToken {
                        service_account_ref: ServiceAccountSelector {
                            name: "app".into(),
                            namespace: None,
                            audiences: sa_audiences.into_iter().map(String::from).collect(),
                        },
                        audiences: audiences.into_iter().map(String::from).collect(),
                        expiration_seconds: Some(900),
                    },
                ),
            }),
            ..Default::default()
        };
        let audiences = |auth: VaultAuth| match Method::from_spec(&auth) {
            Ok(Method::Login(Login::Jwt {
                jwt: JwtSource::ServiceAccount { account, .. },
                ..
            })) => account.audiences,
            _ => panic!("jwt login with TokenRequest expected"),
        };
        assert_eq!(audiences(token(vec![], vec![])), vec!["vault"]);
        assert_eq!(audiences(token(vec!["a"], vec!["b", "a"])), vec!["a", "b"]);
    }

    #[test]
    fn ca_file_is_named_by_its_hash_and_written_once() {
        let dir =
            std::env::temp_dir().join(format!("secret-relay-vault-ca-test-{}", std::process::id()));
        let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let a = write_ca_file(&dir, pem).unwrap();
        let b = write_ca_file(&dir, pem).unwrap();
        assert_eq!(a, b);
        assert!(a.ends_with(&format!("{}.pem", hex::encode(Sha256::digest(pem)))));
        assert_eq!(std::fs::read(&a).unwrap(), pem);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
