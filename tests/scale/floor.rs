//! The floor (issue 28): the requests the operator cannot avoid for N ExternalSecrets, made by
//! a plain client in the same environment, at the same concurrency, before the operator
//! starts. For each ExternalSecret, one after the other as a reconcile makes them:
//!
//! 1. `POST` of its Secret, shaped as the operator writes it (labels, annotations, the
//!    ownerReference to the ExternalSecret, one value);
//! 2. a JSON merge `PATCH` of its status subresource with the status the operator writes
//!    (`Ready=True`, `observedGeneration`, `refreshTime`, `syncedResourceVersion`, `binding`),
//!    under the operator's field manager.
//!
//! The seconds from the first request to the last answer are `floor_secs`. Then, untimed
//! ([`clean_up`], after a profile of the floor has ended), the statuses are cleared again
//! (`{"status": null}`) and the Secrets deleted, so that the operator starts from the same
//! backlog as without the floor.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};
use secret_relay::api::ExternalSecret;
use serde_json::json;

use super::{
    Item, LABEL_RAW, LABEL_RUN, Names, PAGE, Params,
    probe::{Counts, delta},
    procs::{Servers, clock_ticks},
    setup::{bounded, create, delete_labelled, raw_secret},
};
use crate::common::TestEnv;

/// The operator's field manager (src/controller/mod.rs `FIELD_MANAGER`).
const FIELD_MANAGER: &str = "secret-relay";

/// What the floor took: seconds, and the CPU seconds of each test-environment server and of
/// the benchmark's own process (the floor's client) meanwhile.
pub struct Floor {
    pub secs: f64,
    pub cpu_secs: Counts,
}

/// Makes the floor's requests for `items` (whose ExternalSecrets exist, status empty), leaving
/// the Secrets and statuses it made for [`clean_up`].
pub async fn floor_reference(
    env: &TestEnv,
    p: &Params,
    names: &Names,
    items: &[Item],
    retries: &AtomicU64,
) -> Result<Floor> {
    let uids = external_secret_uids(env, names).await?;
    let uids = &uids;
    let servers = Servers::find(env);
    let ticks = clock_ticks();
    let cpu_before = servers.cpu(ticks);
    let started = Instant::now();
    let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let now = &now;
    bounded(items.to_vec(), p.create_concurrency, |it| async move {
        let ns = &names.namespaces[it.ns];
        let uid = uids
            .get(&(ns.clone(), it.name.clone()))
            .with_context(|| format!("no uid listed for ExternalSecret {ns}/{}", it.name))?;
        let mut secret = raw_secret(names, &it)?;
        secret.metadata.owner_references = Some(vec![serde_json::from_value(json!({
            "apiVersion": "secret-relay.dev/v1alpha1", "kind": "ExternalSecret",
            "name": it.name, "uid": uid, "controller": true, "blockOwnerDeletion": true,
        }))?]);
        create(
            &Api::<Secret>::namespaced(env.kube.clone(), ns),
            &secret,
            retries,
        )
        .await?;
        let status = json!({"status": {
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "SecretSynced",
                "message": format!("Secret {} synced from {}", it.name, store_label(p, names, &it)),
                "lastTransitionTime": now, "observedGeneration": 1,
            }],
            "observedGeneration": 1,
            "refreshTime": now,
            "syncedResourceVersion": format!("1-{:016x}", it.key),
            "binding": {"name": it.name},
            "generators": null,
        }});
        patch_status(env, ns, &it.name, &status, retries).await
    })
    .await?;
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = delta(&servers.cpu(ticks), &cpu_before);
    Ok(Floor { secs, cpu_secs })
}

/// Undoes [`floor_reference`]: the ExternalSecrets are left with an empty status and no Secret
/// of the floor is left.
pub async fn clean_up(
    env: &TestEnv,
    p: &Params,
    names: &Names,
    items: &[Item],
    retries: &AtomicU64,
) -> Result<()> {
    bounded(items.to_vec(), p.create_concurrency, |it| async move {
        let ns = &names.namespaces[it.ns];
        patch_status(env, ns, &it.name, &json!({"status": null}), retries).await
    })
    .await?;
    delete_labelled(env, p, names, &format!("{LABEL_RAW}={}", names.run)).await
}

/// `SecretStore/ssm`, as the operator names a store in its Ready message.
fn store_label(p: &Params, names: &Names, it: &Item) -> String {
    let r = names.store_ref(p, it.backend);
    format!(
        "{}/{}",
        r["kind"].as_str().unwrap_or_default(),
        r["name"].as_str().unwrap_or_default()
    )
}

/// `(namespace, name)` → uid of the run's ExternalSecrets, listed in pages of metadata.
async fn external_secret_uids(
    env: &TestEnv,
    names: &Names,
) -> Result<HashMap<(String, String), String>> {
    let api: Api<ExternalSecret> = Api::all(env.kube.clone());
    let mut uids = HashMap::new();
    let mut lp = ListParams::default()
        .labels(&format!("{LABEL_RUN}={}", names.run))
        .limit(PAGE);
    loop {
        let page = api
            .list_metadata(&lp)
            .await
            .context("listing ExternalSecrets")?;
        for o in page.items {
            let m = o.metadata;
            if let (Some(ns), Some(name), Some(uid)) = (m.namespace, m.name, m.uid) {
                uids.insert((ns, name), uid);
            }
        }
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    Ok(uids)
}

/// A merge patch of `name`'s status under the operator's field manager; retries 429, 5xx and
/// time-outs as [`create`] does.
async fn patch_status(
    env: &TestEnv,
    ns: &str,
    name: &str,
    body: &serde_json::Value,
    retries: &AtomicU64,
) -> Result<()> {
    let api: Api<ExternalSecret> = Api::namespaced(env.kube.clone(), ns);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let mut delay = Duration::from_millis(200);
    let mut last = String::new();
    for attempt in 0..6 {
        if attempt > 0 {
            retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        match tokio::time::timeout(
            Duration::from_secs(60),
            api.patch_status(name, &params, &Patch::Merge(body)),
        )
        .await
        {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(kube::Error::Api(e))) if e.code != 429 && e.code < 500 => {
                bail!("patching the status of {ns}/{name}: {e}")
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "no answer within 60 s".into(),
        }
    }
    bail!("patching the status of {ns}/{name}: {last} (6 attempts)")
}
