//! Vault / OpenBao: the KV secrets engine, v1 and v2, behind [`Provider`](super::Provider).
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

mod bounded;
mod client;
mod connection;
mod dynamic;
mod errors;
mod kv;
mod login;
pub(crate) mod transit;

pub use client::PreparedVault;
pub use dynamic::{Issued, LeaseInfo, VaultDynamicClient};
pub use kv::VaultKvProvider;
