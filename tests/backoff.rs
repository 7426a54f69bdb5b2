//! Transient failures back off: an ExternalSecret whose Vault server refuses connections is
//! retried after ~5 s, then ~10 s (5 s × 2^(n-1), ±20 % jitter), never in a tight loop, and
//! its Secret is never touched. Alone in its test binary, so the process-wide sync counter it
//! reads counts only its own attempts.

mod common;
mod operator;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use secret_relay::{
    api::{ExternalSecret, SecretStore},
    metrics::{SYNCS, SyncLabels},
};
use serde_json::json;

use common::TestEnv;
use operator::{apply_yaml, ready_message, wait_reason};

fn transient_failures() -> u64 {
    SYNCS
        .get_or_create(&SyncLabels {
            result: "error",
            reason: "Transient",
        })
        .get()
}

#[tokio::test]
async fn transient_errors_back_off_exponentially() {
    let Some(env) = TestEnv::get("transient_errors_back_off_exponentially").await else {
        return;
    };
    let ns = env.namespace("backoff").await;
    let _op = operator::start(&env.kube, &ns, false).await;
    let secrets: Api<Secret> = Api::namespaced(env.kube.clone(), &ns);
    let token: Secret = serde_json::from_value(json!({
        "metadata": {"name": "token"}, "stringData": {"token": "t"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &token)
        .await
        .unwrap();
    // Nothing listens on port 1: every read fails with "connection refused".
    let stores: Api<SecretStore> = Api::namespaced(env.kube.clone(), &ns);
    apply_yaml(
        &stores,
        r#"
apiVersion: secret-relay.dev/v1alpha1
kind: SecretStore
metadata: {name: down}
spec:
  provider:
    vault:
      server: http://127.0.0.1:1
      auth:
        tokenSecretRef: {name: token, key: token}
"#,
    )
    .await;
    let es: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), &ns);
    apply_yaml(
        &es,
        r#"
apiVersion: secret-relay.dev/v1alpha1
kind: ExternalSecret
metadata: {name: app}
spec:
  secretStoreRef: {name: down}
  data:
  - secretKey: password
    remoteRef: {key: app/db, property: password}
"#,
    )
    .await;
    let failed = wait_reason(&es, "app", "SecretSyncedError").await;
    assert!(
        ready_message(&failed).starts_with("vault: read secret/data/app/db: request failed"),
        "{}",
        ready_message(&failed)
    );

    // Record when each attempt fails, for 20 s after the first.
    let mut seen = transient_failures();
    assert!(seen >= 1);
    let start = Instant::now();
    let mut at = vec![Duration::ZERO];
    while start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = transient_failures();
        if now > seen {
            at.push(start.elapsed());
            seen = now;
        }
    }
    eprintln!("failed attempts at {at:?}");
    // 0, ~5 s, ~15 s (the next one is due at ~35 s): three attempts, growing gaps.
    assert!(
        (2..=3).contains(&at.len()),
        "attempts in the first 20 s: {at:?}"
    );
    let first_gap = at[1] - at[0];
    assert!(
        first_gap >= Duration::from_millis(3500),
        "first retry after {first_gap:?}"
    );
    if let Some(third) = at.get(2) {
        let second_gap = *third - at[1];
        assert!(
            second_gap.as_secs_f64() > first_gap.as_secs_f64() * 1.25,
            "the delay grows: {at:?}"
        );
    }
    assert!(
        secrets.get_opt("app").await.unwrap().is_none(),
        "no Secret was written"
    );
}
