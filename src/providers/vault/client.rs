//! The Vault client of a store: building it (server URL, namespace, CA certificates, one
//! shared HTTP client per TLS setting), the session with its login token (renewed, replaced,
//! revoked when dropped) and the calls made with it.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine as _;
use tokio::sync::Mutex;

use tracing::{debug, warn};
use vaultrs::{
    client::{VaultClient, VaultClientSettingsBuilder},
    error::ClientError,
};

use super::bounded;
use super::{
    VaultKvProvider,
    connection::{Lease, client_with_token, header_safe},
    errors::{counted, error_text, invalid, status},
    login::{Connector, Credentials, Login, Method, describe_ref},
};
use crate::{
    api::{
        SecretKeySelector,
        secret_store::{CaProviderType, VaultConnection, VaultKvVersion, VaultProvider},
    },
    providers::{AuthContext, ErrorKind, ProviderError},
};

/// Timeout of one HTTP request to Vault.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default mount path of the KV engine.
const DEFAULT_MOUNT: &str = "secret";
/// Pause between attempts to refresh a token that is due but still valid, when Vault fails.
const REFRESH_RETRY: Duration = Duration::from_secs(5);

/// A provider that logged in revokes its token when it is dropped (its store changed or was
/// deleted, its credentials were rotated, or it duplicated another store's provider), as ESO
/// does, so that tokens do not pile up in Vault until their TTL. A static token
/// (`tokenSecretRef`) belongs to its owner and is left alone.
impl Drop for VaultKvProvider {
    fn drop(&mut self) {
        if self.login.is_some()
            && let Ok(session) = self.session.get_mut()
        {
            revoke_later(session.client.clone(), Duration::ZERO);
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
        if let Err(e) = counted("revoke", bounded::token_revoke_self(client.as_ref())).await {
            debug!(error = %error_text(&e), "vault: revoking a dropped token failed");
        }
    });
}

/// The current token, inside a client that sends it.
#[derive(Clone)]
pub(super) struct Session {
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

/// What a refresh of the session did.
enum Refreshed {
    /// The token was renewed: its new lease.
    Renewed(Lease),
    /// A new login: its client and lease.
    LoggedIn(Box<VaultClient>, Lease),
}

/// A Vault provider whose spec is checked and whose first credentials are resolved, not yet
/// logged in ([`VaultKvProvider::prepare`]).
pub struct PreparedVault {
    conn: Connector,
    mount: String,
    kv: VaultKvVersion,
    first: FirstSession,
}

/// What the first session starts from.
enum FirstSession {
    /// `tokenSecretRef`: the token, used as it is.
    Token(zeroize::Zeroizing<String>),
    /// A login method and its resolved credentials.
    Login(Login, Credentials),
}

impl PreparedVault {
    /// Logs in (one `login` call; none for `tokenSecretRef`) and returns the provider.
    /// Errors: `Authentication` when Vault refuses the login (4xx); `Transient` on network or
    /// server (5xx) failures.
    pub async fn connect(self) -> Result<VaultKvProvider, ProviderError> {
        let PreparedVault {
            conn,
            mount,
            kv,
            first,
        } = self;
        let (login, session) = match first {
            FirstSession::Token(token) => {
                let client =
                    client_with_token(&conn.settings, conn.ca_pem.as_deref(), token.trim())?;
                let session = Session {
                    client: Arc::new(client),
                    generation: 0,
                    lease: None,
                    retry_at: None,
                };
                (None, session)
            }
            FirstSession::Login(login, credentials) => {
                let (client, lease) = conn.login_with(&login, credentials).await?;
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
            kv,
            login,
            session: std::sync::Mutex::new(session),
            refreshing: Mutex::new(()),
        })
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
        Self::prepare(spec, auth).await?.connect().await
    }

    /// The first half of [`VaultKvProvider::new`]: checks the spec, reads the CA
    /// certificates and resolves the credentials of the first login (Secret reads, a
    /// TokenRequest) through `auth`, without calling Vault. [`PreparedVault::connect`] logs
    /// in; a provider cache compares the credentials read in between and may share an
    /// existing provider instead (one login per distinct credential). Errors: as `new`'s,
    /// but never a refused login.
    pub async fn prepare(
        spec: &VaultProvider,
        auth: &AuthContext,
    ) -> Result<PreparedVault, ProviderError> {
        let mount = spec.path.as_deref().unwrap_or(DEFAULT_MOUNT);
        Self::prepare_connection(&spec.connection, mount, spec.version, auth).await
    }

    /// Builds the client of `spec` (a store's `vault` or `kms.vaultTransit` connection) and
    /// logs in, as [`VaultKvProvider::new`] describes; `mount` is the engine's mount path
    /// (KV, or Transit) and `kv` the KV version its reads use.
    ///
    /// Errors: as [`VaultKvProvider::new`]; a `mount` that is empty once its slashes are
    /// trimmed is `InvalidConfig`.
    pub(crate) async fn connect(
        spec: &VaultConnection,
        mount: &str,
        kv: VaultKvVersion,
        auth: &AuthContext,
    ) -> Result<Self, ProviderError> {
        Self::prepare_connection(spec, mount, kv, auth)
            .await?
            .connect()
            .await
    }

    /// [`VaultKvProvider::connect`] up to the login: see [`VaultKvProvider::prepare`].
    async fn prepare_connection(
        spec: &VaultConnection,
        mount: &str,
        kv: VaultKvVersion,
        auth: &AuthContext,
    ) -> Result<PreparedVault, ProviderError> {
        let method = Method::from_spec(&spec.auth)?;
        let mount = normalize_mount(mount)?;
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
        // Held in memory: the operator's image has a read-only root filesystem and no /tmp.
        let ca_pem: Option<Arc<[u8]>> = ca_pem(spec, auth).await?.map(Arc::from);
        // Every field is set explicitly: the builder's defaults read VAULT_* variables of
        // the operator's own environment, which must not leak into a store's client.
        let settings = VaultClientSettingsBuilder::default()
            .address(address.as_str())
            .token("")
            .ca_certs(Vec::new())
            .identity(None)
            .verify(true)
            .timeout(Some(HTTP_TIMEOUT))
            .namespace(namespace)
            .build()
            .map_err(|e| invalid(format!("vault: client settings: {e}")))?;
        let conn = Connector {
            anonymous: client_with_token(&settings, ca_pem.as_deref(), "")?,
            settings,
            ca_pem,
            auth: auth.clone(),
        };
        let first = match method {
            Method::Token(sel) => {
                let token = conn.secret_string(&sel, "tokenSecretRef").await?;
                if token.trim().is_empty() || !header_safe(token.trim()) {
                    return Err(ProviderError::new(
                        ErrorKind::Authentication,
                        format!(
                            "vault: tokenSecretRef {}: the token is empty or not a valid header value",
                            describe_ref(&sel)
                        ),
                    ));
                }
                FirstSession::Token(token)
            }
            Method::Login(login) => {
                let credentials = conn.credentials(&login).await?;
                FirstSession::Login(login, credentials)
            }
        };
        Ok(PreparedVault {
            conn,
            mount,
            kv,
            first,
        })
    }

    /// The current session (a copy: the lock is held for the copy only).
    fn current(&self) -> Session {
        self.session.lock().expect("vault session lock").clone()
    }

    /// The client with a usable token, renewing or replacing a login token that is due, and
    /// the session generation it belongs to. When Vault fails to renew or replace a token that
    /// has not expired yet, the token is used as it is and the refresh is tried again
    /// [`REFRESH_RETRY`] later; an expired one makes the error the caller's.
    ///
    /// One renewal or login runs at a time and no lock on the session is held across it:
    /// callers arriving meanwhile use the current token while it has not expired, and wait for
    /// the refresh only when it has.
    pub(super) async fn session(&self) -> Result<(Arc<VaultClient>, u64), ProviderError> {
        let due = |s: &Session, now: Instant| match (&self.login, s.lease) {
            (Some(_), Some(lease)) => lease.due(now) && s.retry_at.is_none_or(|at| now >= at),
            _ => false,
        };
        let seen = self.current();
        let (Some(login), Some(lease)) = (&self.login, seen.lease) else {
            return Ok((seen.client, seen.generation));
        };
        if !due(&seen, Instant::now()) {
            return Ok((seen.client, seen.generation));
        }
        let _refresh = match self.refreshing.try_lock() {
            Ok(gate) => gate,
            Err(_) if Instant::now() < lease.expiry() => {
                return Ok((seen.client, seen.generation));
            }
            Err(_) => self.refreshing.lock().await,
        };
        // A refresh that ended while this caller waited serves it.
        let current = self.current();
        if current.generation != seen.generation || !due(&current, Instant::now()) {
            return Ok((current.client, current.generation));
        }
        match self.refresh(login, &current, lease).await {
            Ok(update) => Ok(self.apply(update)),
            Err(e) => {
                let now = Instant::now();
                if now >= lease.expiry() {
                    return Err(e);
                }
                warn!(error = %e, "vault: could not refresh the token, using it until it expires");
                self.session.lock().expect("vault session lock").retry_at =
                    Some(now + REFRESH_RETRY);
                Ok((current.client, current.generation))
            }
        }
    }

    /// Renews the session's token (`POST /v1/auth/token/renew-self`, one `renew` call) when
    /// it is renewable, not yet expired (the store may have been idle) and the renewal pushes
    /// its expiry out; logs in again otherwise. Returns what changed, for [`Self::apply`].
    async fn refresh(
        &self,
        login: &Login,
        session: &Session,
        lease: Lease,
    ) -> Result<Refreshed, ProviderError> {
        if lease.renewable && Instant::now() < lease.expiry() {
            let result = counted("renew", bounded::token_renew_self(session.client.as_ref())).await;
            match result {
                Ok(info) => {
                    let renewed = Lease::from_auth(&info, Instant::now());
                    // At its max TTL a token renews to the same expiry: only a new login helps.
                    if renewed.expiry() > lease.expiry() + Duration::from_secs(1) {
                        debug!(ttl_seconds = info.lease_duration, "vault: token renewed");
                        return Ok(Refreshed::Renewed(renewed));
                    }
                    debug!("vault: token at its max TTL, logging in again");
                }
                Err(e) => {
                    warn!(error = %error_text(&e), "vault: token renewal failed, logging in again")
                }
            }
        }
        let (client, lease) = self.conn.login(login).await?;
        Ok(Refreshed::LoggedIn(Box::new(client), lease))
    }

    /// Records a renewal or a new login in the session; returns its client and generation.
    /// A replaced token is revoked once the calls that still hold it are done.
    fn apply(&self, update: Refreshed) -> (Arc<VaultClient>, u64) {
        let mut session = self.session.lock().expect("vault session lock");
        session.retry_at = None;
        match update {
            Refreshed::Renewed(lease) => session.lease = Some(lease),
            Refreshed::LoggedIn(client, lease) => {
                revoke_later(session.client.clone(), HTTP_TIMEOUT);
                session.client = Arc::new(*client);
                session.lease = Some(lease);
                session.generation += 1;
            }
        }
        (session.client.clone(), session.generation)
    }

    /// Logs in again unless the session moved past `generation` already (another caller did
    /// it while this one waited).
    pub(super) async fn relogin(&self, generation: u64) -> Result<Arc<VaultClient>, ProviderError> {
        let _refresh = self.refreshing.lock().await;
        let current = self.current();
        let Some(login) = &self.login else {
            return Ok(current.client);
        };
        if current.generation != generation {
            return Ok(current.client);
        }
        let (client, lease) = self.conn.login(login).await?;
        Ok(self.apply(Refreshed::LoggedIn(Box::new(client), lease)).0)
    }

    /// Runs one Vault request `f` with the session's client and counts it as `operation`.
    ///
    /// A 403 with a login token is either a policy denial or a token that Vault no longer
    /// honours (revoked, expired early). `lookup-self` tells them apart for one light call;
    /// for a dead token the provider logs in again (once, shared with concurrent callers) and
    /// retries `f` once. The outer error is a failed login; the inner one is `f`'s.
    pub(super) async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        f: F,
    ) -> Result<Result<T, ClientError>, ProviderError>
    where
        F: Fn(Arc<VaultClient>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let (client, generation) = self.session().await?;
        let first = counted(operation, f(client.clone())).await;
        let denied = matches!(&first, Err(e) if status(e) == Some(403));
        if !denied || self.login.is_none() {
            return Ok(first);
        }
        let lookup = counted("lookup_self", bounded::token_lookup_self(client.as_ref())).await;
        if !matches!(&lookup, Err(e) if matches!(status(e), Some(401 | 403))) {
            return Ok(first);
        }
        debug!("vault: token no longer accepted, logging in again");
        let client = self.relogin(generation).await?;
        Ok(counted(operation, f(client)).await)
    }
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
pub(super) fn normalize_mount(path: &str) -> Result<String, ProviderError> {
    let mount = path.trim().trim_matches('/');
    if mount.is_empty() {
        return Err(invalid(format!("vault: KV mount path {path:?} is empty")));
    }
    Ok(mount.to_string())
}

/// The PEM CA certificates of `caBundle` and `caProvider`, if any.
async fn ca_pem(
    spec: &VaultConnection,
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

#[cfg(test)]
mod tests {
    use super::super::connection::{auth_mount, shared_http_client};
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

    #[tokio::test]
    async fn a_ca_bundle_that_does_not_parse_is_invalid_config() {
        let settings = VaultClientSettingsBuilder::default()
            .address("https://vault.example:8200")
            .build()
            .unwrap();
        let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let err = shared_http_client(&settings, Some(pem)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidConfig);
    }

    #[test]
    fn header_values_are_checked() {
        assert!(header_safe("hvs.CAESIabc-_.="));
        assert!(!header_safe("token\n"));
        assert!(!header_safe("tök"));
    }
}
