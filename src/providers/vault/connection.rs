//! The connection to a Vault server that a login and a KV client share: the token's
//! [`Lease`], clients that send a token ([`client_with_token`]) over HTTP clients shared per
//! TLS settings, and the checks of what goes into a request (header values, auth mounts).

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use vaultrs::{
    api::AuthInfo,
    client::{VaultClient, VaultClientSettings},
};

use super::errors::{error_text, invalid};
use crate::providers::{ProviderError, http::PerRuntime};

/// Lifetime of a login token as Vault announced it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Lease {
    pub(super) obtained: Instant,
    /// Zero: the token does not expire.
    pub(super) ttl: Duration,
    pub(super) renewable: bool,
}

impl Lease {
    pub(super) fn from_auth(info: &AuthInfo, obtained: Instant) -> Lease {
        Lease {
            obtained,
            ttl: Duration::from_secs(info.lease_duration),
            renewable: info.renewable,
        }
    }

    /// Whether two thirds of the TTL have passed at `now`.
    pub(super) fn due(&self, now: Instant) -> bool {
        !self.ttl.is_zero() && now.saturating_duration_since(self.obtained) >= self.ttl * 2 / 3
    }

    pub(super) fn expiry(&self) -> Instant {
        self.obtained + self.ttl
    }
}

/// A client of `settings` that sends `token`, trusting the PEM certificates `ca_pem` besides
/// the default roots.
pub(super) fn client_with_token(
    settings: &VaultClientSettings,
    ca_pem: Option<&[u8]>,
    token: &str,
) -> Result<VaultClient, ProviderError> {
    let mut settings = settings.clone();
    settings.token = token.to_string();
    if ca_pem.is_none()
        && (settings.proxy.is_some() || settings.identity.is_some() || !settings.verify)
    {
        return VaultClient::new(settings).map_err(|e| {
            invalid(format!(
                "vault: building the HTTP client: {}",
                error_text(&e)
            ))
        });
    }
    let http = shared_http_client(&settings, ca_pem)?;
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

/// Key of [`HTTP_CLIENTS`]: plain HTTP or not, the SHA-256 of the CA certificates trusted, the
/// request timeout.
type HttpClientKey = (bool, Option<[u8; 32]>, Option<Duration>);

/// HTTP clients shared by every Vault client with the same TLS settings (vaultrs would build
/// a new one for each `VaultClient`, i.e. for every store and every login).
static HTTP_CLIENTS: PerRuntime<HttpClientKey, reqwest::Client> = PerRuntime::new();

/// The shared client for `settings`, built as vaultrs builds its own (rustls, the timeout,
/// the certificates of `ca_pem` added to the default roots; no roots at all for `http://`).
pub(super) fn shared_http_client(
    settings: &VaultClientSettings,
    ca_pem: Option<&[u8]>,
) -> Result<reqwest::Client, ProviderError> {
    let plain = settings.address.as_str().starts_with("http://");
    let ca_hash = ca_pem.map(|pem| <[u8; 32]>::from(Sha256::digest(pem)));
    let key = (plain, ca_hash, settings.timeout);
    HTTP_CLIENTS.get_or_try_make(key, || {
        let mut builder = reqwest::ClientBuilder::new().tls_backend_rustls();
        if let Some(timeout) = settings.timeout {
            builder = builder.timeout(timeout);
        }
        if plain {
            builder = builder.tls_certs_only(Vec::new());
        } else if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| invalid(format!("vault: caBundle/caProvider: {e}")))?;
            builder = builder.tls_certs_merge(certs);
        }
        builder
            .build()
            .map_err(|e| invalid(format!("vault: building the HTTP client: {e}")))
    })
}

/// Whether `s` can be sent as an HTTP header value (vaultrs panics on one that cannot).
pub(super) fn header_safe(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// An auth method's mount path without slashes and without a leading `auth/`.
pub(super) fn auth_mount(path: &str) -> Result<String, ProviderError> {
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
