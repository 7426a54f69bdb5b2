//! Vault calls whose responses are read up to a bound: the servers are named by tenants (a
//! SecretStore's or a generator's `server`), and vaultrs reads a whole response body into
//! memory however large it is. Every call of this provider goes through [`exec_with_result`],
//! [`exec_with_no_result`], [`exec_with_empty`] or [`auth`], which behave as vaultrs'
//! functions of the same names (`vaultrs::api`), except that the body is read chunk by chunk
//! and the call fails with [`ResponseTooLarge`] past [`MAX_RESPONSE_BYTES`].

use async_trait::async_trait;
use http::{Request, Response};
use rustify::{Endpoint, errors::ClientError as RestError};
use vaultrs::{
    api::{
        AuthInfo, EndpointError, EndpointResult,
        auth::{
            approle::requests::LoginWithApproleRequest,
            kubernetes::requests::LoginWithKubernetesRequest, oidc::requests::JWTLoginRequest,
            userpass::requests::LoginRequest,
        },
        kv1::{
            requests::{GetSecretRequest, ListSecretRequest},
            responses::{GetSecretResponse, ListSecretResponse},
        },
        kv2::requests::ListSecretsRequest,
        token::{
            requests::{LookupTokenSelfRequest, RenewTokenSelfRequest, RevokeTokenSelfRequest},
            responses::LookupTokenResponse,
        },
        transit::{requests::DecryptDataRequest, responses::DecryptDataResponse},
    },
    client::{Client as _, VaultClient},
    error::ClientError,
};

/// Largest Vault response body read: 4 MiB. What a Vault server legitimately answers us is far
/// smaller: a KV secret is one storage entry (1 MiB at most in integrated storage, 512 KiB in
/// Consul) and lands in a Kubernetes Secret (1 MiB at most); a LIST of 10,000 keys (the most a
/// `find` walks) is about 1 MiB; a login, a lease or a PKI certificate with its chain a few KiB.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// The error of a response whose body exceeds [`MAX_RESPONSE_BYTES`] (the call's error source
/// is `rustify`'s `ResponseError` holding this).
#[derive(Debug, thiserror::Error)]
#[error("the response is larger than {} MiB, the most secret-relay reads from a Vault server", MAX_RESPONSE_BYTES >> 20)]
pub struct ResponseTooLarge;

/// Whether `e` is a response cut at [`MAX_RESPONSE_BYTES`].
pub(super) fn too_large(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::RestClientError {
            source: RestError::ResponseError { source }
        } if source.downcast_ref::<ResponseTooLarge>().is_some()
    )
}

/// vaultrs' HTTP client (`VaultClient::http`), reading bodies up to a bound.
struct Bounded<'a> {
    inner: &'a rustify::clients::reqwest::Client,
    limit: usize,
}

#[async_trait]
impl rustify::client::Client for Bounded<'_> {
    fn base(&self) -> &str {
        self.inner.base.as_str()
    }

    async fn send(&self, req: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, RestError> {
        let request = reqwest::Request::try_from(req)
            .map_err(|e| RestError::ReqwestBuildError { source: e })?;
        let (url, method) = (request.url().to_string(), request.method().to_string());
        let mut response =
            self.inner
                .http
                .execute(request)
                .await
                .map_err(|e| RestError::RequestError {
                    source: e.into(),
                    url,
                    method,
                })?;
        let too_large = || RestError::ResponseError {
            source: ResponseTooLarge.into(),
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.limit as u64)
        {
            return Err(too_large());
        }
        let mut built = Response::builder().status(response.status().as_u16());
        for (name, value) in response.headers() {
            built = built.header(name, value);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| RestError::ResponseError { source: e.into() })?
        {
            if body.len() + chunk.len() > self.limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        built
            .body(body)
            .map_err(|e| RestError::ResponseError { source: e.into() })
    }
}

/// Sends `endpoint` with the client's token and namespace (vaultrs' middleware), the body read
/// up to `limit` bytes; a non-2xx status is an error as in vaultrs (`APIError` with Vault's
/// error texts when the body has them).
async fn exec<E: Endpoint>(
    client: &VaultClient,
    endpoint: E,
    limit: usize,
) -> Result<rustify::endpoint::EndpointResult<E::Response>, ClientError> {
    let http = Bounded {
        inner: client.http(),
        limit,
    };
    endpoint
        .with_middleware(client.middle())
        .exec(&http)
        .await
        .map_err(api_error)
}

/// As vaultrs' `api::exec_with_result`: the response's `data`, unwrapped.
pub(super) async fn exec_with_result<E: Endpoint>(
    client: &VaultClient,
    endpoint: E,
) -> Result<E::Response, ClientError> {
    let result: EndpointResult<E::Response> = exec(client, endpoint, MAX_RESPONSE_BYTES)
        .await?
        .wrap::<EndpointResult<_>>()
        .map_err(ClientError::from)?;
    result.data.ok_or(ClientError::ResponseDataEmptyError)
}

/// As vaultrs' `api::exec_with_no_result`: the whole response body parsed as `E::Response`.
pub(super) async fn exec_with_no_result<E: Endpoint>(
    client: &VaultClient,
    endpoint: E,
) -> Result<E::Response, ClientError> {
    exec(client, endpoint, MAX_RESPONSE_BYTES)
        .await?
        .parse()
        .map_err(ClientError::from)
}

/// As vaultrs' `api::exec_with_empty`: the call's success only.
pub(super) async fn exec_with_empty<E: Endpoint>(
    client: &VaultClient,
    endpoint: E,
) -> Result<(), ClientError> {
    exec(client, endpoint, MAX_RESPONSE_BYTES).await.map(|_| ())
}

/// As vaultrs' `api::auth`: the response's `auth` (a login, a token renewal).
pub(super) async fn auth<E: Endpoint<Response = ()>>(
    client: &VaultClient,
    endpoint: E,
) -> Result<AuthInfo, ClientError> {
    let result: EndpointResult<()> = exec(client, endpoint, MAX_RESPONSE_BYTES)
        .await?
        .wrap::<EndpointResult<_>>()
        .map_err(ClientError::from)?;
    result.auth.ok_or(ClientError::ResponseEmptyError)
}

/// `GET <mount>/<path>` of a KV v1 mount, as vaultrs' `kv1::get_raw`.
pub(super) async fn kv1_get_raw(
    client: &VaultClient,
    mount: &str,
    path: &str,
) -> Result<GetSecretResponse, ClientError> {
    let endpoint = GetSecretRequest::builder()
        .mount(mount)
        .path(path)
        .build()
        .expect("every field of GetSecretRequest is set");
    exec_with_no_result(client, endpoint).await
}

/// `LIST <mount>/<path>` of a KV v1 mount, as vaultrs' `kv1::list`.
pub(super) async fn kv1_list(
    client: &VaultClient,
    mount: &str,
    path: &str,
) -> Result<ListSecretResponse, ClientError> {
    let endpoint = ListSecretRequest::builder()
        .mount(mount)
        .path(path)
        .build()
        .expect("every field of ListSecretRequest is set");
    exec_with_no_result(client, endpoint).await
}

/// `LIST <mount>/metadata/<path>` of a KV v2 mount: the keys, as vaultrs' `kv2::list`.
pub(super) async fn kv2_list(
    client: &VaultClient,
    mount: &str,
    path: &str,
) -> Result<Vec<String>, ClientError> {
    let endpoint = ListSecretsRequest::builder()
        .mount(mount)
        .path(path)
        .build()
        .expect("every field of ListSecretsRequest is set");
    Ok(exec_with_result(client, endpoint).await?.keys)
}

/// `GET auth/token/lookup-self`, as vaultrs' `token::lookup_self`.
pub(super) async fn token_lookup_self(
    client: &VaultClient,
) -> Result<LookupTokenResponse, ClientError> {
    let endpoint = LookupTokenSelfRequest::builder()
        .build()
        .expect("LookupTokenSelfRequest has no field");
    exec_with_result(client, endpoint).await
}

/// `POST auth/token/renew-self` (no increment), as vaultrs' `token::renew_self`.
pub(super) async fn token_renew_self(client: &VaultClient) -> Result<AuthInfo, ClientError> {
    let endpoint = RenewTokenSelfRequest::builder()
        .build()
        .expect("RenewTokenSelfRequest's fields are optional");
    auth(client, endpoint).await
}

/// `POST auth/token/revoke-self`, as vaultrs' `token::revoke_self`.
pub(super) async fn token_revoke_self(client: &VaultClient) -> Result<(), ClientError> {
    let endpoint = RevokeTokenSelfRequest::builder()
        .build()
        .expect("RevokeTokenSelfRequest has no field");
    exec_with_empty(client, endpoint).await
}

/// `POST <mount>/decrypt/<name>`, as vaultrs' `transit::data::decrypt`.
pub(super) async fn transit_decrypt(
    client: &VaultClient,
    mount: &str,
    name: &str,
    ciphertext: &str,
) -> Result<DecryptDataResponse, ClientError> {
    let endpoint = DecryptDataRequest::builder()
        .mount(mount)
        .name(name)
        .ciphertext(ciphertext)
        .build()
        .expect("every field of DecryptDataRequest is set");
    exec_with_result(client, endpoint).await
}

/// `POST auth/<mount>/login` of AppRole, as vaultrs' `auth::approle::login`.
pub(super) async fn login_approle(
    client: &VaultClient,
    mount: &str,
    role_id: &str,
    secret_id: &str,
) -> Result<AuthInfo, ClientError> {
    let endpoint = LoginWithApproleRequest::builder()
        .mount(mount)
        .role_id(role_id)
        .secret_id(secret_id)
        .build()
        .expect("every field of LoginWithApproleRequest is set");
    auth(client, endpoint).await
}

/// `POST auth/<mount>/login` of Kubernetes auth, as vaultrs' `auth::kubernetes::login`.
pub(super) async fn login_kubernetes(
    client: &VaultClient,
    mount: &str,
    role: &str,
    jwt: &str,
) -> Result<AuthInfo, ClientError> {
    let endpoint = LoginWithKubernetesRequest::builder()
        .mount(mount)
        .role(role)
        .jwt(jwt)
        .build()
        .expect("every field of LoginWithKubernetesRequest is set");
    auth(client, endpoint).await
}

/// `POST auth/<mount>/login` of JWT/OIDC auth, as vaultrs' `auth::oidc::login`.
pub(super) async fn login_jwt(
    client: &VaultClient,
    mount: &str,
    jwt: &str,
    role: Option<String>,
) -> Result<AuthInfo, ClientError> {
    let mut endpoint = JWTLoginRequest::builder();
    if let Some(role) = role {
        endpoint.role(role);
    }
    let endpoint = endpoint
        .mount(mount)
        .jwt(jwt)
        .build()
        .expect("every field of JWTLoginRequest is set");
    auth(client, endpoint).await
}

/// `POST auth/<mount>/login/<username>` of userpass, as vaultrs' `auth::userpass::login`.
pub(super) async fn login_userpass(
    client: &VaultClient,
    mount: &str,
    username: &str,
    password: &str,
) -> Result<AuthInfo, ClientError> {
    let endpoint = LoginRequest::builder()
        .mount(mount)
        .username(username)
        .password(password)
        .build()
        .expect("every field of LoginRequest is set");
    auth(client, endpoint).await
}

/// vaultrs' reading of an error response: Vault's `errors` list when the body holds one.
fn api_error(e: RestError) -> ClientError {
    if let RestError::ServerResponseError {
        code,
        content: Some(content),
    } = &e
        && let Ok(body) = serde_json::from_str::<EndpointError>(content)
    {
        return ClientError::APIError {
            code: *code,
            errors: body.errors,
        };
    }
    ClientError::RestClientError { source: e }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_response_is_told_apart() {
        let cut = ClientError::RestClientError {
            source: RestError::ResponseError {
                source: ResponseTooLarge.into(),
            },
        };
        assert!(too_large(&cut));
        let other = ClientError::RestClientError {
            source: RestError::ResponseError {
                source: anyhow::anyhow!("connection reset"),
            },
        };
        assert!(!too_large(&other));
        assert_eq!(
            ResponseTooLarge.to_string(),
            "the response is larger than 4 MiB, the most secret-relay reads from a Vault server"
        );
    }
}
