//! Dynamic secrets: one Vault request that issues values with a lease (a VaultDynamicSecret
//! generator: `aws/creds/<role>`, `database/creds/<role>`, `pki/issue/<role>` ...), and the
//! lease calls that follow it (`sys/leases/renew`, `sys/leases/revoke`).
//!
//! Counted in `secret_relay_provider_calls` with provider `vault` and operation
//! `dynamic_issue`, `lease_renew` or `lease_revoke`. Errors name the path and Vault's error
//! text (`vault: permission denied on aws/creds/app`), never a response body.

use std::sync::Arc;

use rustify::{
    endpoint::Endpoint,
    enums::{RequestMethod, RequestType, ResponseType},
    errors::ClientError as RestError,
};
use serde::Deserialize;
use vaultrs::{client::VaultClient, error::ClientError};

use super::bounded;
use super::{
    VaultKvProvider,
    errors::{error_text, invalid, kind_of, kv_error},
};
use crate::{
    api::{
        generators::VaultDynamicResultType,
        secret_store::{VaultKvVersion, VaultProvider},
    },
    providers::{AuthContext, ErrorKind, ProviderError, SecretMap, SecretValue},
};

/// A lease as Vault reports it with a response or a renewal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// `lease_id`; empty when the response has no lease (a KV read, a PKI certificate without
    /// `generate_lease`).
    pub id: String,
    /// `lease_duration`, seconds from the response.
    pub duration_secs: u64,
    /// `renewable`.
    pub renewable: bool,
}

/// What a dynamic request issued: one value per top-level field of the response's `data` (or
/// `auth`): strings as they are, other JSON values as JSON text; and its lease.
pub struct Issued {
    /// The values.
    pub values: SecretMap,
    /// The lease.
    pub lease: LeaseInfo,
}

/// A logged-in Vault client for a VaultDynamicSecret's `provider`. Unlike a store's, its login
/// token is *not* revoked when it is dropped: Vault revokes every lease a token created with
/// it, which would take the issued credentials down with the client. The token lives until its
/// TTL; its max TTL therefore bounds the leases it issued (`docs/vault-dynamic-secrets.md`).
pub struct VaultDynamicClient {
    inner: VaultKvProvider,
}

impl Drop for VaultDynamicClient {
    fn drop(&mut self) {
        // `VaultKvProvider`'s own drop revokes a login token; see the type's documentation.
        self.inner.login = None;
    }
}

/// The raw response: the lease fields and the two value sections, as JSON (so that parsing
/// never fails on a value, and no serde error can quote one).
#[derive(Deserialize)]
struct RawResponse {
    #[serde(default)]
    lease_id: String,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    auth: Option<serde_json::Value>,
}

/// One request to any Vault path, through vaultrs' middleware (token, namespace headers).
struct AnyRequest {
    path: String,
    method: RequestMethod,
    body: Option<Vec<u8>>,
}

impl Endpoint for AnyRequest {
    type Response = RawResponse;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        self.path.clone()
    }

    fn method(&self) -> RequestMethod {
        self.method.clone()
    }

    fn body(&self) -> Result<Option<Vec<u8>>, RestError> {
        Ok(self.body.clone())
    }
}

/// The rustify method of a VaultDynamicSecret `method` (case-insensitive; default `GET`).
/// Errors: `InvalidConfig` for any other.
pub fn parse_method(method: Option<&str>) -> Result<RequestMethod, ProviderError> {
    Ok(
        match method.unwrap_or("GET").to_ascii_uppercase().as_str() {
            "GET" => RequestMethod::GET,
            "POST" => RequestMethod::POST,
            "PUT" => RequestMethod::PUT,
            "LIST" => RequestMethod::LIST,
            "DELETE" => RequestMethod::DELETE,
            other => {
                return Err(invalid(format!(
                    "vault: method {other:?} is not one of GET, POST, PUT, LIST, DELETE"
                )));
            }
        },
    )
}

async fn send(client: Arc<VaultClient>, request: AnyRequest) -> Result<RawResponse, ClientError> {
    bounded::exec_with_no_result(client.as_ref(), request).await
}

impl VaultDynamicClient {
    /// Builds the client of `spec` and logs in, as a store's (`VaultKvProvider::new`; the KV
    /// `path` and `version` are unused). Errors: as `VaultKvProvider::new`'s.
    pub async fn connect(spec: &VaultProvider, auth: &AuthContext) -> Result<Self, ProviderError> {
        let inner =
            VaultKvProvider::connect(&spec.connection, "secret", VaultKvVersion::V2, auth).await?;
        Ok(VaultDynamicClient { inner })
    }

    /// Sends `method` to `/v1/<path>` with `parameters` as the JSON body and returns the
    /// values of the response's `data` (or `auth`) with its lease (one `dynamic_issue` call).
    /// Errors: `AccessDenied` (`vault: permission denied on <path>`), `NotFound`, `Transient`
    /// as for KV reads; `InvalidData` when the response has no such section or it is not an
    /// object.
    pub async fn issue(
        &self,
        method: Option<&str>,
        path: &str,
        parameters: Option<&serde_json::Value>,
        result_type: VaultDynamicResultType,
    ) -> Result<Issued, ProviderError> {
        let method = parse_method(method)?;
        let path = path.trim_matches('/').to_string();
        if path.is_empty() {
            return Err(invalid("vault: the generator's path is empty"));
        }
        let body = parameters
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| invalid(format!("vault: parameters: {e}")))?;
        let response = self
            .inner
            .call("dynamic_issue", |client| {
                let request = AnyRequest {
                    path: path.clone(),
                    method: method.clone(),
                    body: body.clone(),
                };
                send(client, request)
            })
            .await?
            .map_err(|e| kv_error("dynamic_issue", &e, &path, "request"))?;
        let section = match result_type {
            VaultDynamicResultType::Data => response.data,
            VaultDynamicResultType::Auth => response.auth,
        };
        let Some(serde_json::Value::Object(fields)) = section else {
            return Err(ProviderError::new(
                ErrorKind::InvalidData,
                format!("vault: the response of {path} has no {result_type:?} object"),
            ));
        };
        let values = fields
            .into_iter()
            .map(|(k, v)| {
                let bytes = match v {
                    serde_json::Value::String(s) => s.into_bytes(),
                    other => other.to_string().into_bytes(),
                };
                (k, SecretValue::new(bytes))
            })
            .collect();
        Ok(Issued {
            values,
            lease: LeaseInfo {
                id: response.lease_id,
                duration_secs: response.lease_duration,
                renewable: response.renewable,
            },
        })
    }

    /// Renews lease `id` for `increment_secs` (`PUT /v1/sys/leases/renew`, one `lease_renew`
    /// call); returns the lease as renewed: its duration may be shorter than asked (the max
    /// TTL is near). Errors: `AccessDenied`, or Vault's refusal (`InvalidData` for a 400: the
    /// lease is gone or not renewable) with its text.
    pub async fn renew(&self, id: &str, increment_secs: u64) -> Result<LeaseInfo, ProviderError> {
        let body = serde_json::json!({"lease_id": id, "increment": increment_secs});
        let body = serde_json::to_vec(&body).expect("a JSON value serializes");
        let response = self
            .inner
            .call("lease_renew", |client| {
                let request = AnyRequest {
                    path: "sys/leases/renew".into(),
                    method: RequestMethod::PUT,
                    body: Some(body.clone()),
                };
                send(client, request)
            })
            .await?
            .map_err(|e| lease_error("lease_renew", &e, "renew"))?;
        Ok(LeaseInfo {
            id: if response.lease_id.is_empty() {
                id.to_string()
            } else {
                response.lease_id
            },
            duration_secs: response.lease_duration,
            renewable: response.renewable,
        })
    }

    /// Revokes lease `id` (`PUT /v1/sys/leases/revoke`, one `lease_revoke` call). Errors: as
    /// [`Self::renew`]'s.
    pub async fn revoke(&self, id: &str) -> Result<(), ProviderError> {
        let body = serde_json::to_vec(&serde_json::json!({"lease_id": id}))
            .expect("a JSON value serializes");
        self.inner
            .call("lease_revoke", |client| {
                let request = AnyRequest {
                    path: "sys/leases/revoke".into(),
                    method: RequestMethod::PUT,
                    body: Some(body.clone()),
                };
                async move { bounded::exec_with_empty(client.as_ref(), request).await }
            })
            .await?
            .map_err(|e| lease_error("lease_revoke", &e, "revoke"))
    }
}

/// The error of a lease call: `vault: permission denied on sys/leases/<verb>`, or Vault's
/// text (`vault: renew lease: status 400: lease not found`); a 400 is `InvalidData`: the lease
/// is gone or cannot be renewed, which only new values cure.
fn lease_error(operation: &str, e: &ClientError, verb: &str) -> ProviderError {
    match kind_of(operation, e) {
        ErrorKind::AccessDenied => ProviderError::new(
            ErrorKind::AccessDenied,
            format!("vault: permission denied on sys/leases/{verb}"),
        ),
        _ if super::errors::status(e) == Some(400) => ProviderError::new(
            ErrorKind::InvalidData,
            format!("vault: {verb} lease: {}", error_text(e)),
        ),
        kind => ProviderError::new(kind, format!("vault: {verb} lease: {}", error_text(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_parsed_case_insensitively_and_get_is_the_default() {
        assert!(matches!(parse_method(None), Ok(RequestMethod::GET)));
        assert!(matches!(
            parse_method(Some("post")),
            Ok(RequestMethod::POST)
        ));
        assert!(matches!(
            parse_method(Some("LIST")),
            Ok(RequestMethod::LIST)
        ));
        assert_eq!(
            parse_method(Some("PATCHY")).err().unwrap().to_string(),
            "vault: method \"PATCHY\" is not one of GET, POST, PUT, LIST, DELETE"
        );
    }
}
