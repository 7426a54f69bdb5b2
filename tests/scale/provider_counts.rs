//! Provider calls as the servers saw them: moto's request recorder and OpenBao's route
//! metrics.

use std::collections::BTreeSet;

use anyhow::Result;

use super::probe::Counts;
use crate::common::TestEnv;

/// moto's request recorder (moto 5.2.5: `/moto-api/recorder/{start,stop,reset,download}-recording`).
pub struct Moto {
    base: String,
    http: reqwest::Client,
}

/// Counts from one recording.
#[derive(Default)]
pub struct MotoCounts {
    pub calls: Counts,
    pub get_parameters_names: Vec<usize>,
    pub distinct_names: BTreeSet<String>,
}

impl Moto {
    pub fn new(base: &str, http: &reqwest::Client) -> Moto {
        Moto {
            base: base.to_string(),
            http: http.clone(),
        }
    }

    pub async fn post(&self, action: &str) -> Result<()> {
        self.http
            .post(format!("{}/moto-api/recorder/{action}", self.base))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Downloads the recording, resets it and counts calls by `"service Action"` (the
    /// benchmark's own PutParameter calls are left out).
    pub async fn take(&self) -> Result<MotoCounts> {
        let text = self
            .http
            .get(format!(
                "{}/moto-api/recorder/download-recording",
                self.base
            ))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        self.post("reset-recording").await?;
        let mut out = MotoCounts::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let entry: serde_json::Value = serde_json::from_str(line)?;
            let header = |name: &str| -> Option<String> {
                entry["headers"].as_object()?.iter().find_map(|(k, v)| {
                    k.eq_ignore_ascii_case(name)
                        .then(|| v.as_str().unwrap_or("").to_string())
                })
            };
            let mut body = entry["body"].as_str().unwrap_or("").to_string();
            if entry["body_encoded"].as_bool() == Some(true) {
                use base64::Engine as _;
                body = base64::engine::general_purpose::STANDARD
                    .decode(&body)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default();
            }
            let service = header("authorization")
                .and_then(|a| {
                    let cred = a.split("Credential=").nth(1)?;
                    cred.split('/').nth(3).map(str::to_string)
                })
                .unwrap_or_else(|| "unknown".into());
            let action = match header("x-amz-target") {
                Some(t) => t.rsplit('.').next().unwrap_or("").to_string(),
                None => body
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("Action="))
                    .unwrap_or("unknown")
                    .to_string(),
            };
            if matches!(
                action.as_str(),
                "PutParameter" | "CreateSecret" | "PutSecretValue"
            ) {
                continue;
            }
            if action == "GetParameters"
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
            {
                let names: Vec<String> = v["Names"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|n| n.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                out.get_parameters_names.push(names.len());
                out.distinct_names.extend(names);
            }
            *out.calls.entry(format!("{service} {action}")).or_default() += 1.0;
        }
        Ok(out)
    }
}

/// OpenBao's request counters by route: `"vault read secret/"`, plus `"vault all requests"`.
pub async fn bao_counts(http: &reqwest::Client, env: &TestEnv) -> Result<Counts> {
    let text = http
        .get(format!(
            "{}/v1/sys/metrics?format=prometheus",
            env.vault_addr
        ))
        .header("X-Vault-Token", &env.vault_token)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut out = Counts::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let name = name.split('{').next().unwrap_or(name);
        if let Some(route) = name
            .strip_prefix("vault_route_")
            .and_then(|r| r.strip_suffix("_count"))
        {
            // `read_secret_` → operation `read`, mount `secret/`; `read_auth_token_` → `auth/token/`.
            let (op, mount) = route.split_once('_').unwrap_or((route, ""));
            *out.entry(format!("vault {op} {}", mount.replace('_', "/")))
                .or_default() += value;
        }
    }
    Ok(out)
}

/// Vault requests that are the operator's: everything but `sys/` (the benchmark's metrics
/// reads) and writes to the KV mount (the benchmark's own value changes).
pub fn vault_operator_calls(server: &Counts) -> f64 {
    server
        .iter()
        .filter(|(k, _)| k.starts_with("vault "))
        .filter(|(k, _)| {
            let mut it = k.split_whitespace().skip(1);
            let op = it.next().unwrap_or("");
            let mount = it.next().unwrap_or("");
            // Requests of the benchmark's own set-up (sys/, KV writes) are not the operator's,
            // nor `rollback`, OpenBao's own periodic work on every mount.
            let setup = mount.starts_with("sys/")
                || (mount == "secret/" && matches!(op, "create" | "update" | "delete" | "patch"));
            !setup && op != "rollback"
        })
        .map(|(_, v)| *v)
        .sum()
}

/// The AWS half's calls of any kind: SSM or Secrets Manager, and STS (moto's recorder; the
/// benchmark's own writes left out).
pub fn ssm_calls(server: &Counts) -> f64 {
    server
        .iter()
        .filter(|(k, _)| {
            k.starts_with("ssm ") || k.starts_with("secretsmanager ") || k.starts_with("sts ")
        })
        .map(|(_, v)| v)
        .sum()
}
