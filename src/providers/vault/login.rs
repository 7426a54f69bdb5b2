//! Login to Vault: the auth method a store chooses ([`Method`], [`Login`]) and the
//! [`Connector`] that resolves its credentials (Secrets, ServiceAccount tokens) and logs in.

use std::time::Instant;

use tracing::debug;
use vaultrs::client::{VaultClient, VaultClientSettings};
use zeroize::Zeroizing;

use super::bounded;
use super::{
    connection::{Lease, auth_mount, client_with_token, header_safe},
    errors::{counted_since, error_text, invalid, kind_of},
};
use crate::{
    api::{SecretKeySelector, ServiceAccountSelector, secret_store::VaultAuth},
    providers::{AuthContext, ErrorKind, ProviderError, SecretValue},
};

/// Default audience of a TokenRequest token for JWT login (as ESO) and Kubernetes login (the
/// Vault role's `audience` must name it).
const DEFAULT_JWT_AUDIENCE: &str = "vault";

/// What is needed to make clients and log in: the client settings (without a token), the
/// store's CA certificates (PEM, in memory), a token-less client for the login calls and the
/// credentials resolver.
pub(super) struct Connector {
    pub(super) settings: VaultClientSettings,
    pub(super) ca_pem: Option<std::sync::Arc<[u8]>>,
    pub(super) anonymous: VaultClient,
    pub(super) auth: AuthContext,
}

/// A login method with its references, resolved again at every login so that rotated
/// credentials are picked up.
pub(super) enum Login {
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

pub(super) enum RoleId {
    Inline(String),
    Secret(SecretKeySelector),
}

pub(super) enum JwtSource {
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
pub(super) enum Method {
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
    pub(super) fn from_spec(auth: &VaultAuth) -> Result<Method, ProviderError> {
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

/// The credentials of one login, resolved (Secret values, a JWT) and held zeroized until the
/// login call.
pub(super) enum Credentials {
    AppRole {
        role_id: Zeroizing<String>,
        secret_id: Zeroizing<String>,
    },
    /// The JWT of a Kubernetes or JWT login.
    Jwt(Zeroizing<String>),
    /// The password of a userpass login.
    Password(Zeroizing<String>),
}

impl Connector {
    /// Resolves the method's credentials and logs in (one `login` call). Returns a client
    /// that sends the new token and the token's lease.
    pub(super) async fn login(&self, login: &Login) -> Result<(VaultClient, Lease), ProviderError> {
        let credentials = self.credentials(login).await?;
        self.login_with(login, credentials).await
    }

    /// Resolves the credentials of `login` through the store's [`AuthContext`] (Secret reads,
    /// a TokenRequest), without calling Vault. Errors: `Authentication` for a missing Secret,
    /// key or ServiceAccount, or text that is not UTF-8; `Transient` on API failures.
    pub(super) async fn credentials(&self, login: &Login) -> Result<Credentials, ProviderError> {
        Ok(match login {
            Login::AppRole {
                role_id, secret_id, ..
            } => Credentials::AppRole {
                role_id: match role_id {
                    RoleId::Inline(id) => Zeroizing::new(id.clone()),
                    RoleId::Secret(sel) => self.secret_string(sel, "appRole.roleRef").await?,
                },
                secret_id: self.secret_string(secret_id, "appRole.secretRef").await?,
            },
            Login::Kubernetes { jwt, .. } => Credentials::Jwt(self.jwt(jwt, "kubernetes").await?),
            Login::Jwt { jwt, .. } => Credentials::Jwt(self.jwt(jwt, "jwt").await?),
            Login::UserPass { password, .. } => {
                Credentials::Password(self.secret_string(password, "userPass.secretRef").await?)
            }
        })
    }

    /// Logs in with credentials resolved by [`Connector::credentials`] for the same `login`
    /// (one `login` call). Errors: `Authentication` when Vault refuses (4xx) or returns no
    /// usable token; `Transient` on network or server (5xx) failures.
    pub(super) async fn login_with(
        &self,
        login: &Login,
        credentials: Credentials,
    ) -> Result<(VaultClient, Lease), ProviderError> {
        let client = &self.anonymous;
        let started = Instant::now();
        let result = match (login, &credentials) {
            (
                Login::AppRole { mount, .. },
                Credentials::AppRole {
                    role_id, secret_id, ..
                },
            ) => bounded::login_approle(client, mount, role_id.trim(), secret_id.trim()).await,
            (Login::Kubernetes { mount, role, .. }, Credentials::Jwt(jwt)) => {
                bounded::login_kubernetes(client, mount, role, jwt).await
            }
            (Login::Jwt { mount, role, .. }, Credentials::Jwt(jwt)) => {
                bounded::login_jwt(client, mount, jwt, role.clone()).await
            }
            (
                Login::UserPass {
                    mount, username, ..
                },
                Credentials::Password(password),
            ) => bounded::login_userpass(client, mount, username, password).await,
            _ => {
                return Err(invalid(format!(
                    "vault: credentials resolved for another method than {}",
                    login.describe()
                )));
            }
        };
        let info = counted_since("login", started, result).map_err(|e| {
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
        Ok((
            client_with_token(&self.settings, self.ca_pem.as_deref(), &token)?,
            lease,
        ))
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
                // Audience `vault` unless the selector names its own, for kubernetes and JWT
                // login alike: never the API server's own (its token would be valid against
                // the cluster wherever the store's server sends it).
                let token = self
                    .auth
                    .service_account_token(account, &[DEFAULT_JWT_AUDIENCE], *expiration_seconds)
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
    pub(super) async fn secret_string(
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
pub(super) fn describe_ref(sel: &SecretKeySelector) -> String {
    match &sel.namespace {
        Some(ns) => format!("(Secret {ns}/{}, key {:?})", sel.name, sel.key),
        None => format!("(Secret {}, key {:?})", sel.name, sel.key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
