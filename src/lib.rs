//! secret-relay: a Kubernetes operator that turns `ExternalSecret` declarations into live
//! Secrets, with values from AWS SSM Parameter Store and HashiCorp Vault / OpenBao.
#![forbid(unsafe_code)]

pub mod api;
pub mod metrics;
pub mod providers;
