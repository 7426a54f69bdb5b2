//! Shared harness of the integration tests: the servers started by `hack/testenv/testenv.py`.
//!
//! `hack/test.sh` runs `cargo test` inside the test environment; the environment's variables
//! are in the file named by `SECRET_RELAY_TESTENV` (KEY=VALUE lines). Without it a test gets
//! `None` from [`TestEnv::get`] and returns early (it is skipped), except in CI (`CI=true`),
//! where a missing environment is an error.
//!
//! Every test makes its own names (namespaces, Vault mounts, SSM paths) with
//! [`TestEnv::namespace`] / [`random_suffix`], so tests can run in parallel against the same
//! servers.
#![allow(dead_code)]

pub mod vault;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// The test environment: clients and addresses of the servers.
pub struct TestEnv {
    /// Admin client of the Kubernetes API server.
    pub kube: kube::Client,
    /// OpenBao / Vault address, e.g. `http://127.0.0.1:PORT`.
    pub vault_addr: String,
    /// OpenBao's root token.
    pub vault_token: String,
    /// moto's endpoint (AWS SSM, KMS, STS, ...).
    pub aws_endpoint: String,
    pub aws_region: String,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// CA of the API server's serving certificate (None if the kubeconfig has none).
    pub kube_ca_file: Option<PathBuf>,
    /// The API server's URL as processes on this host reach it.
    pub kube_url: String,
    /// Every KEY=VALUE of the environment file (KUBECTL, HELM, SOPS, PROMTOOL, BAO, TESTENV_LOG_DIR, ...).
    pub vars: HashMap<String, String>,
}

/// Environment variable naming the environment file written by testenv.py.
pub const ENV_FILE_VAR: &str = "SECRET_RELAY_TESTENV";

impl TestEnv {
    /// The test environment, or None (after printing
    /// "SKIP: <test>: no test environment (run under hack/test.sh)") when
    /// SECRET_RELAY_TESTENV is unset; panics when CI=true and it is unset.
    pub async fn get(test: &str) -> Option<TestEnv> {
        let path = match std::env::var_os(ENV_FILE_VAR) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!(
                        "{test}: no test environment: {ENV_FILE_VAR} is unset (run under hack/test.sh)"
                    );
                }
                eprintln!("SKIP: {test}: no test environment (run under hack/test.sh)");
                return None;
            }
        };
        match Self::load(&path).await {
            Ok(env) => Some(env),
            Err(e) => panic!(
                "{test}: loading the test environment from {}: {e:#}",
                path.display()
            ),
        }
    }

    async fn load(path: &Path) -> Result<TestEnv> {
        install_crypto_provider();
        let vars = read_env_file(path)?;
        let var = |k: &str| -> Result<String> {
            vars.get(k)
                .cloned()
                .with_context(|| format!("{k} missing from {}", path.display()))
        };
        let kubeconfig = PathBuf::from(var("KUBECONFIG")?);
        let kc = Kubeconfig::read_from(&kubeconfig)
            .with_context(|| format!("reading kubeconfig {}", kubeconfig.display()))?;
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .with_context(|| format!("loading kubeconfig {}", kubeconfig.display()))?;
        let kube = Client::try_from(config).context("building the kube client")?;
        Ok(TestEnv {
            kube,
            vault_addr: var("VAULT_ADDR")?,
            vault_token: var("VAULT_TOKEN")?,
            aws_endpoint: var("AWS_ENDPOINT_URL")?,
            aws_region: var("AWS_REGION")?,
            kube_ca_file: vars
                .get("KUBE_CA_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            kube_url: var("KUBE_APISERVER_URL")?,
            kubeconfig,
            vars,
        })
    }

    /// SDK config for moto: static credentials testing/testing, the endpoint override and region.
    pub async fn aws_sdk_config(&self) -> aws_config::SdkConfig {
        let creds = aws_credential_types::Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "secret-relay-testenv",
        );
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(self.aws_region.clone()))
            .endpoint_url(&self.aws_endpoint)
            .credentials_provider(creds)
            .load()
            .await
    }

    /// A client of moto's SSM with the static test keys ([`TestEnv::aws_sdk_config`]).
    pub async fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.aws_sdk_config().await)
    }

    /// A vaultrs client of OpenBao with the root token.
    pub fn vault(&self) -> vaultrs::client::VaultClient {
        self.vault_with_token(&self.vault_token)
    }

    /// A vaultrs client of OpenBao with the given token ("" for an unauthenticated one).
    pub fn vault_with_token(&self, token: &str) -> vaultrs::client::VaultClient {
        let settings = vaultrs::client::VaultClientSettingsBuilder::default()
            .address(&self.vault_addr)
            .token(token)
            .build()
            .expect("vault client settings");
        vaultrs::client::VaultClient::new(settings).expect("vault client")
    }

    /// Creates a fresh namespace named `prefix-<random>` and returns its name.
    pub async fn namespace(&self, prefix: &str) -> String {
        let api: Api<Namespace> = Api::all(self.kube.clone());
        let name = format!("{prefix}-{}", random_suffix());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("secret-relay.dev/test".to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        name
    }

    /// A token of ServiceAccount `ns/sa` (created if missing) from the TokenRequest API, valid
    /// for an hour, for `audiences` (empty: the API server's own audience).
    pub async fn service_account_token(&self, ns: &str, sa: &str, audiences: &[&str]) -> String {
        let api: Api<ServiceAccount> = Api::namespaced(self.kube.clone(), ns);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(sa.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("creating ServiceAccount {ns}/{sa}: {e}"),
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: (!audiences.is_empty())
                    .then(|| audiences.iter().map(|a| a.to_string()).collect()),
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let response: TokenRequest = api
            .create_subresource("token", sa, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("TokenRequest for ServiceAccount {ns}/{sa}: {e}"));
        response
            .status
            .and_then(|s| s.token)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| {
                panic!("TokenRequest for ServiceAccount {ns}/{sa}: no token in the response")
            })
    }

    /// Absolute path of a tool of the environment: "KUBECTL", "HELM", "SOPS", "PROMTOOL" or
    /// "BAO".
    pub fn tool(&self, key: &str) -> PathBuf {
        PathBuf::from(
            self.vars
                .get(key)
                .unwrap_or_else(|| panic!("{key} missing from the test environment")),
        )
    }
}

/// 8 random lowercase hex digits, for names that must not collide between tests and runs.
pub fn random_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Reads KEY=VALUE lines (no quoting; blank lines and `#` comments skipped).
pub fn read_env_file(path: &Path) -> Result<HashMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut vars = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            bail!("{}:{}: not KEY=VALUE: {line:?}", path.display(), i + 1);
        };
        vars.insert(k.trim().to_string(), v.to_string());
    }
    Ok(vars)
}

/// rustls is built with both the ring and the aws-lc-rs providers in this dependency graph,
/// so it cannot pick a process default by itself: install one (once per test binary).
fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
