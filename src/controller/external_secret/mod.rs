//! The ExternalSecret pipeline: resolve store → fetch → build Secret → apply → status.
//!
//! Each step is a function; only `fetch` talks to a backend and only `apply`/`write_status`
//! write to the API server. A reconcile that finds nothing due (refresh not due, spec and
//! annotations unchanged, Secret intact) makes no call at all.

use std::{sync::Arc, time::Duration};

use futures::future::join_all;
use k8s_openapi::{
    api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{
    Resource, ResourceExt,
    api::{Api, DeleteParams, Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder},
        reflector::ObjectRef,
    },
};
use rand::RngExt;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    Context, Error,
    build::{self, BuildInput},
    condition, secret_store,
};
use crate::{
    api::{
        ANNOTATION_DATA_HASH, ExternalSecret, FIELD_MANAGER, LABEL_EXTERNAL_SECRET,
        LABEL_MANAGED_BY, MANAGED_BY,
        external_secret::{CreationPolicy, DeletionPolicy, ExternalSecretStatus, SecretBinding},
        secret_store::SecretStoreProvider,
    },
    metrics,
    providers::{ErrorKind, SecretMap, SharedProvider, shared},
};

/// Parses `refreshInterval`: Go-style durations (`1h`, `30m`, `1h30m`, `90s`, `0`), also
/// humantime's (`1h 30m`). Returns seconds; `0` = never refresh.
pub fn parse_refresh_interval(s: &str) -> Result<u64, Error> {
    let s = s.trim();
    if s == "0" || s.is_empty() {
        return Ok(0);
    }
    let d = humantime::parse_duration(s)
        .map_err(|e| Error::InvalidSpec(format!("refreshInterval {s:?}: {e}")))?;
    match d.as_secs() {
        // `0` means "sync once"; a sub-second interval must not silently become that.
        0 if !d.is_zero() => Err(Error::InvalidSpec(format!(
            "refreshInterval {s:?}: must be 0 (sync once) or at least 1s"
        ))),
        secs => Ok(secs),
    }
}

/// ESO's `syncedResourceVersion`: `<generation>-<sha256 of labels and annotations>`; a change
/// (spec edit, force-sync annotation) means the values must be fetched again.
pub fn synced_resource_version(es: &ExternalSecret) -> String {
    let mut h = Sha256::new();
    for (k, v) in es.labels().iter().chain(es.annotations().iter()) {
        if k == super::LAST_APPLIED {
            continue;
        }
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    format!(
        "{}-{}",
        es.meta().generation.unwrap_or_default(),
        &hex::encode(h.finalize())[..16]
    )
}

/// What the Secret should become after a fetch.
enum Outcome {
    /// Write (or confirm) this Secret.
    Write(SecretMap),
    /// Every remote value is gone and `deletionPolicy: Delete`: delete the Secret.
    Delete,
}

/// When a read deferred by a slow backend is tried again.
const BUSY_RETRY: Duration = Duration::from_secs(2);

/// How often a reconcile that came before the caches' first lists looks again.
const CACHE_SYNC_POLL: Duration = Duration::from_millis(250);

/// Reconciles one ExternalSecret; failures are written to its status and events before they
/// are returned for backoff.
pub async fn reconcile(es: Arc<ExternalSecret>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(&*es);
    // Until every cache has its first list, a store or Secret missing from it may only be
    // late: reporting "SecretStore ... not found" (or restoring a "deleted" Secret) would be
    // wrong, so wait without a word.
    if !ctx.caches_synced.load(std::sync::atomic::Ordering::Acquire) {
        return Ok(Action::requeue(CACHE_SYNC_POLL));
    }
    if let Some(wait) = pending_retry(&es, &ctx) {
        return Ok(Action::requeue(wait));
    }
    let started = std::time::Instant::now();
    let result = sync(&es, &ctx).await;
    metrics::RECONCILE_DURATION.observe(started.elapsed().as_secs_f64());
    match result {
        Ok(action) => {
            ctx.with_state(&key, |o| {
                o.failures = 0;
                o.retry_at = None;
            });
            Ok(action)
        }
        // A read deferred by a slow backend (providers::health): not a failure, try again
        // soon without a word.
        Err(Error::Provider(e)) if e.kind == ErrorKind::Busy => {
            Ok(Action::requeue(jitter(BUSY_RETRY)))
        }
        Err(e) => {
            ctx.with_state(&key, |o| o.synced = None);
            metrics::sync("error", e.category());
            if let Err(report) = report_failure(&es, &ctx, &e).await {
                tracing::warn!(error = %report, "writing failure status");
            }
            tracing::info!(externalsecret = %key, category = e.category(), error = %e, "sync failed");
            Err(e)
        }
    }
}

/// Backoff after a failure: permanent errors wait for a change; others retry after
/// 5 s × 2^(n-1), capped at 10 min, with ±20 % jitter.
pub fn error_policy(es: Arc<ExternalSecret>, err: &Error, ctx: Arc<Context>) -> Action {
    if err.permanent() {
        return Action::await_change();
    }
    let version = synced_resource_version(&es);
    let delay = ctx.with_state(&ObjectRef::from_obj(&*es), |o| {
        o.failures = o.failures.saturating_add(1);
        let delay = jitter(backoff(o.failures));
        o.retry_at = Some((version, std::time::Instant::now() + delay));
        delay
    });
    Action::requeue(delay)
}

/// After a failure, the time left until its retry is due, unless the spec or annotations
/// changed since (a force-sync retries at once). Events in between, such as the status write
/// that reported the failure, do not call the provider again.
fn pending_retry(es: &ExternalSecret, ctx: &Context) -> Option<Duration> {
    let key = ObjectRef::from_obj(es);
    let state = ctx.state.lock().expect("state lock");
    let (version, at) = state.get(&key)?.retry_at.as_ref()?;
    if *version != synced_resource_version(es) {
        return None;
    }
    let wait = at.saturating_duration_since(std::time::Instant::now());
    (!wait.is_zero()).then_some(wait)
}

/// The retry delay after `n` consecutive failures (before jitter).
pub fn backoff(n: u32) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << n.saturating_sub(1).min(10));
    Duration::from_secs(secs.min(600))
}

fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.8..1.2))
}

async fn sync(es: &ExternalSecret, ctx: &Context) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(es);
    let ns = es.namespace().unwrap_or_default();
    let interval = parse_refresh_interval(&es.spec.refresh_interval)?;
    let status = es.status.clone().unwrap_or_default();
    let version = synced_resource_version(es);
    let now = Timestamp::now();
    let policy = es.spec.target.creation_policy;
    let target = es.target_name();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);

    // 1. Is anything due? Our own memory of the last sync counts as much as the status: the
    // cached ExternalSecret may not show our status write yet.
    let now_ms = shared::now_ms();
    let (last_fetch, next_due, synced_here, failed_before) = ctx.with_state(&key, |o| {
        (
            o.last_fetch,
            o.next_due,
            o.synced.as_ref() == Some(&version),
            o.failures > 0,
        )
    });
    let last_fetch = last_fetch.or_else(|| status.refresh_time.as_ref().map(|t| t.0.as_second()));
    let spec_changed =
        status.synced_resource_version.as_deref() != Some(version.as_str()) && !synced_here;
    let ready = synced_here
        || status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
    let due_at = next_due.or_else(|| last_fetch.map(|t| (t + interval as i64) * 1000));
    let refresh_due = match (last_fetch, due_at) {
        (Some(_), Some(due)) => interval > 0 && now_ms >= due,
        _ => true,
    };
    let drift =
        policy != CreationPolicy::None && secret_drifted(es, ctx, &secrets, &target).await?;
    if !spec_changed && ready && !refresh_due && !drift {
        return Ok(requeue_until(interval, due_at, now_ms));
    }
    // How fresh the values must be: a new ExternalSecret's first attempt takes any value
    // fetched since it was created; a spec change, force-sync or retry needs a new one (a
    // retry must not be answered by the "not found" that failed it); a due refresh, one
    // fetched since it became due (the same instant for every ExternalSecret on this
    // provider's ticks); restoring a drifted Secret, the values it had.
    let first_attempt = last_fetch.is_none() && !failed_before && status.conditions.is_empty();
    let fresh_since = if first_attempt {
        es.meta()
            .creation_timestamp
            .as_ref()
            .map_or(now_ms, |t| t.0.as_millisecond())
            .min(now_ms)
    } else if spec_changed || !ready {
        now_ms
    } else if refresh_due {
        due_at.unwrap_or(now_ms).min(now_ms)
    } else {
        last_fetch.map_or(now_ms, |t| t * 1000)
    };

    // 2. Resolve the store and fetch.
    let store = secret_store::resolve(es, ctx)?;
    let provider = ctx
        .providers
        .get(&store)
        .await
        .map_err(|e| Error::StoreNotReady(format!("{}: {}", store.label, e.message)))?;
    // The next refresh is due at this provider's next tick; the reads say so, so that the
    // provider can read ahead at that tick.
    let next_due = (interval > 0).then(|| provider.next_tick(now_ms, interval as i64 * 1000));
    let outcome = match fetch(es, &provider, &store.provider, fresh_since, next_due).await {
        Ok(o) => o,
        Err(Error::Provider(e)) if e.kind == ErrorKind::Authentication => {
            ctx.providers.invalidate(&store);
            return Err(Error::Provider(e));
        }
        Err(e) => return Err(e),
    };
    let now_str = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();

    // 3–4. Build and apply.
    let (reason, message, event) = match outcome {
        Outcome::Delete => {
            let deleted = delete_owned(es, &secrets, &target).await?;
            ctx.with_state(&key, |o| o.secret_version = None);
            (
                "SecretDeleted",
                format!(
                    "every remote value is gone; Secret {target} deleted (deletionPolicy Delete)"
                ),
                deleted.then_some((
                    "Deleted",
                    format!("Secret {target} deleted: remote values are gone"),
                )),
            )
        }
        Outcome::Write(values) => {
            let desired = build_secret(es, values, &store.label, &now_str).await?;
            let written = apply(es, ctx, &secrets, &target, desired, spec_changed).await?;
            let event = written.map(|created| {
                if created {
                    ("Created", format!("Secret {target} created"))
                } else {
                    ("Updated", format!("Secret {target} updated"))
                }
            });
            let message = match policy {
                CreationPolicy::None => {
                    "values fetched (creationPolicy None: no Secret written)".to_string()
                }
                _ => format!("Secret {target} synced from {}", store.label),
            };
            ("SecretSynced", message, event)
        }
    };

    // 5. Status and events.
    metrics::sync("success", reason);
    ctx.with_state(&key, |o| {
        o.last_fetch = Some(now.as_second());
        o.synced = Some(version.clone());
        o.next_due = next_due;
    });
    let wrote = event.is_some();
    if let Some((reason, note)) = event {
        publish(ctx, es, EventType::Normal, reason, note).await;
    }
    let cond = condition::ready(
        Some(&status.conditions),
        true,
        reason,
        &message,
        es.meta().generation,
    );
    let new_status = ExternalSecretStatus {
        conditions: vec![cond],
        observed_generation: es.meta().generation,
        refresh_time: status.refresh_time.clone(),
        synced_resource_version: Some(version),
        binding: Some(SecretBinding { name: target }),
    };
    // The refresh time alone changing is not worth a write: an unchanged refresh writes nothing.
    if new_status != status || wrote {
        let new_status = ExternalSecretStatus {
            refresh_time: Some(Time(now)),
            ..new_status
        };
        write_status(es, ctx, &new_status).await?;
    }
    Ok(requeue_until(interval, next_due, now_ms))
}

/// Requeue for the refresh due at `due_ms` (Unix ms; the provider's next tick), or wait for a
/// change when `interval` is 0. A timer that fires a little early finds the refresh not yet
/// due and requeues for the rest: a refresh that ran before its tick would fetch values the
/// ExternalSecrets due at the tick could not use. Refreshes need no jitter of their own: the
/// tick's phase is per provider, and the ExternalSecrets that share a tick share its calls.
fn requeue_until(interval: u64, due_ms: Option<i64>, now_ms: i64) -> Action {
    if interval == 0 {
        return Action::await_change();
    }
    let due = due_ms.unwrap_or(now_ms + interval as i64 * 1000);
    Action::requeue(Duration::from_millis((due - now_ms).max(10) as u64))
}

/// Whether the metadata cache shows the target Secret at the resourceVersion we last wrote or
/// verified (so its data is the data we hashed) with every label, annotation (the data hash
/// among them) and owner of `desired`.
fn unchanged_in_cache(es: &ExternalSecret, ctx: &Context, target: &str, desired: &Secret) -> bool {
    let ns = es.namespace().unwrap_or_default();
    let Some(meta) = ctx.secrets.get(&ObjectRef::new(target).within(&ns)) else {
        return false;
    };
    let known = ctx.with_state(&ObjectRef::from_obj(es), |o| o.secret_version.clone());
    if known.is_none() || known != meta.resource_version() {
        return false;
    }
    let cached = Secret {
        metadata: meta.metadata.clone(),
        ..Default::default()
    };
    let wanted = Secret {
        metadata: desired.metadata.clone(),
        ..Default::default()
    };
    build::is_up_to_date(&cached, &wanted, true)
}

/// Whether the target Secret was deleted or edited since we wrote it. A resourceVersion we
/// wrote or verified needs no API call; an unknown one (after a restart) is trusted when it
/// carries our hash; a changed one is read and its data checked against our hash.
async fn secret_drifted(
    es: &ExternalSecret,
    ctx: &Context,
    secrets: &Api<Secret>,
    target: &str,
) -> Result<bool, Error> {
    let key = ObjectRef::from_obj(es);
    let ns = es.namespace().unwrap_or_default();
    let Some(meta) = ctx.secrets.get(&ObjectRef::new(target).within(&ns)) else {
        return Ok(true);
    };
    let rv = meta.resource_version().unwrap_or_default();
    let known = ctx.with_state(&key, |o| o.secret_version.clone());
    let Some(known) = known else {
        let ours = meta.annotations().contains_key(ANNOTATION_DATA_HASH);
        if ours {
            ctx.with_state(&key, |o| o.secret_version = Some(rv));
        }
        return Ok(!ours);
    };
    if known == rv {
        return Ok(false);
    }
    let Some(secret) = secrets.get_opt(target).await.map_err(Error::Kube)? else {
        return Ok(true);
    };
    let hash = secret
        .data
        .as_ref()
        .map(build::data_hash)
        .unwrap_or_default();
    let intact = secret.annotations().get(ANNOTATION_DATA_HASH) == Some(&hash)
        && secret.labels().get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY)
        && secret.labels().get(LABEL_EXTERNAL_SECRET) == es.metadata.name.as_ref();
    if intact {
        ctx.with_state(&key, |o| {
            o.secret_version = Some(secret.resource_version().unwrap_or_default())
        });
    }
    Ok(!intact)
}

/// The message of a remote key that does not exist, in the backend's own terms.
fn not_found_message(provider: &SecretStoreProvider, key: &str, version: Option<&str>) -> String {
    let selector = match version {
        Some(v) => format!("{key}:{v}"),
        None => key.to_string(),
    };
    if provider.aws.is_some() {
        format!("ssm GetParameters {selector:?}: ParameterNotFound")
    } else if provider.kms.is_some() {
        format!(
            "kms: SOPS document {key:?} not found (no such ConfigMap in this namespace, or no such data key in it)"
        )
    } else {
        let mount = provider
            .vault
            .as_ref()
            .and_then(|v| v.path.clone())
            .unwrap_or_else(|| "secret".into());
        format!(
            "vault: secret {:?} not found",
            format!("{mount}/{selector}")
        )
    }
}

/// Fetches every remote value of `es`: `dataFrom` in order, then `data[]` (whose gets run
/// concurrently, so a provider can batch them), applying property, decoding, conversion and
/// rewrites. Values fetched at or after `fresh_since` (Unix ms) may come from the provider's
/// cache; `next_due` is when `es` refreshes next. Missing values follow `deletionPolicy`.
/// Templates rendered at once, process-wide: one, so that tenants' templates (bounded by
/// [`build::TEMPLATE_FUEL`] and [`build::TEMPLATE_MAX_OUTPUT`]) never take more than one core.
static TEMPLATE_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// [`build::desired_secret`]; with a template, on Tokio's blocking pool after taking one of
/// [`TEMPLATE_SLOTS`], so that a slow template never holds an async worker (the watches, the
/// admin server and every other reconcile run there). Errors: `InvalidSpec`.
async fn build_secret(
    es: &ExternalSecret,
    values: crate::providers::SecretMap,
    store: &str,
    now: &str,
) -> Result<Secret, Error> {
    let templated = es
        .spec
        .target
        .template
        .as_ref()
        .is_some_and(|t| !t.data.is_empty());
    if !templated {
        let input = BuildInput { values, store, now };
        return build::desired_secret(es, input).map_err(|e| Error::InvalidSpec(e.0));
    }
    let permit = TEMPLATE_SLOTS.acquire().await.expect("never closed");
    let (es, store, now) = (es.clone(), store.to_string(), now.to_string());
    let built = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let input = BuildInput {
            values,
            store: &store,
            now: &now,
        };
        build::desired_secret(&es, input)
    })
    .await
    .map_err(|e| Error::InvalidSpec(format!("rendering the template failed: {e}")))?;
    built.map_err(|e| Error::InvalidSpec(e.0))
}

async fn fetch(
    es: &ExternalSecret,
    provider: &Arc<SharedProvider>,
    store: &SecretStoreProvider,
    fresh_since: i64,
    next_due: Option<i64>,
) -> Result<Outcome, Error> {
    let mut values = SecretMap::new();
    let mut missing = Vec::new();
    let invalid = |e: build::BuildError| Error::InvalidSpec(e.0);
    for entry in &es.spec.data_from {
        let mut found = SecretMap::new();
        if let Some(r) = &entry.extract {
            match provider
                .get(&r.key, r.version.as_deref(), fresh_since, next_due)
                .await
                .map_err(Error::Provider)?
            {
                None => missing.push(not_found_message(store, &r.key, r.version.as_deref())),
                Some(value) => {
                    let value = match &r.property {
                        Some(p) => build::select_property(&r.key, &value, p).map_err(invalid)?,
                        None => value,
                    };
                    let extracted = if provider.extract_leaves(&r.key) {
                        build::extract_leaves(&r.key, &value)
                    } else {
                        build::extract_object(&r.key, &value)
                    };
                    for (k, v) in extracted.map_err(invalid)? {
                        let v = build::decode(&k, v, r.decoding_strategy).map_err(invalid)?;
                        found.insert(k, build::convert(v, r.conversion_strategy));
                    }
                }
            }
        }
        if let Some(f) = &entry.find {
            for (name, v) in provider.find(f).await.map_err(Error::Provider)? {
                let k = build::find_key(&name);
                let v = build::decode(&k, v, f.decoding_strategy).map_err(invalid)?;
                found.insert(k, build::convert(v, f.conversion_strategy));
            }
        }
        values.extend(build::rewrite_keys(found, &entry.rewrite).map_err(invalid)?);
    }
    let gets = es.spec.data.iter().map(|d| {
        provider.get(
            &d.remote_ref.key,
            d.remote_ref.version.as_deref(),
            fresh_since,
            next_due,
        )
    });
    let results = join_all(gets).await;
    for (d, res) in es.spec.data.iter().zip(results) {
        let r = &d.remote_ref;
        match res.map_err(Error::Provider)? {
            None => missing.push(not_found_message(store, &r.key, r.version.as_deref())),
            Some(value) => {
                let value = match &r.property {
                    Some(p) => build::select_property(&r.key, &value, p).map_err(invalid)?,
                    None => value,
                };
                let value =
                    build::decode(&d.secret_key, value, r.decoding_strategy).map_err(invalid)?;
                values.insert(
                    d.secret_key.clone(),
                    build::convert(value, r.conversion_strategy),
                );
            }
        }
    }
    if missing.is_empty() {
        return Ok(Outcome::Write(values));
    }
    match es.spec.target.deletion_policy {
        DeletionPolicy::Retain => Err(Error::Provider(crate::providers::ProviderError::new(
            ErrorKind::NotFound,
            missing.join("; "),
        ))),
        DeletionPolicy::Delete if values.is_empty() => Ok(Outcome::Delete),
        DeletionPolicy::Delete | DeletionPolicy::Merge => Ok(Outcome::Write(values)),
    }
}

/// Whether `secret` is managed by `es`: our labels name it, or it has `es` as controller.
fn owned_by(secret: &Secret, es: &ExternalSecret) -> bool {
    let labelled = secret.labels().get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY)
        && secret.labels().get(LABEL_EXTERNAL_SECRET) == es.metadata.name.as_ref();
    let controlled = secret
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == es.metadata.uid.as_ref());
    labelled || controlled
}

/// Writes `desired` per `creationPolicy` with server-side apply (field manager
/// `secret-relay`). Returns `Some(created)` when it wrote, `None` when the Secret was already
/// up to date (no write). Never overwrites a Secret that is not ours under Owner/Orphan.
///
/// When the spec did not change and the cached metadata shows the Secret exactly as we last
/// wrote or verified it, with the desired data hash, labels, annotations and owner, nothing is
/// read either: an unchanged refresh costs no kube API call at all.
async fn apply(
    es: &ExternalSecret,
    ctx: &Context,
    secrets: &Api<Secret>,
    target: &str,
    desired: Secret,
    spec_changed: bool,
) -> Result<Option<bool>, Error> {
    let policy = es.spec.target.creation_policy;
    if policy == CreationPolicy::None {
        return Ok(None);
    }
    let key = ObjectRef::from_obj(es);
    if !spec_changed
        && policy != CreationPolicy::Merge
        && unchanged_in_cache(es, ctx, target, &desired)
    {
        return Ok(None);
    }
    let existing = secrets.get_opt(target).await.map_err(Error::Kube)?;
    let ns = es.namespace().unwrap_or_default();
    match (&existing, policy) {
        (None, CreationPolicy::Merge) => {
            return Err(Error::SecretMissing(format!(
                "Secret {ns}/{target} does not exist; creationPolicy Merge only adds keys to an existing Secret"
            )));
        }
        (Some(s), CreationPolicy::Owner | CreationPolicy::Orphan) if !owned_by(s, es) => {
            return Err(Error::SecretConflict(format!(
                "Secret {ns}/{target} already exists and is not managed by this ExternalSecret; it was left unchanged (delete it, or use creationPolicy Merge)"
            )));
        }
        _ => {}
    }
    if let Some(s) = &existing {
        if build::is_up_to_date(s, &desired, policy != CreationPolicy::Merge) {
            ctx.with_state(&key, |o| {
                o.secret_version = Some(s.resource_version().unwrap_or_default())
            });
            return Ok(None);
        }
        if s.immutable == Some(true) {
            return Err(Error::SecretConflict(format!(
                "Secret {ns}/{target} is immutable and its data differs from the remote values; delete it to let secret-relay recreate it"
            )));
        }
    }
    let written = secrets
        .patch(
            target,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map_err(Error::Kube)?;
    ctx.with_state(&key, |o| {
        o.secret_version = Some(written.resource_version().unwrap_or_default())
    });
    Ok(Some(existing.is_none()))
}

/// Deletes the target Secret if it is ours. Returns whether it deleted.
async fn delete_owned(
    es: &ExternalSecret,
    secrets: &Api<Secret>,
    target: &str,
) -> Result<bool, Error> {
    match secrets.get_opt(target).await.map_err(Error::Kube)? {
        Some(s) if owned_by(&s, es) => {
            secrets
                .delete(target, &DeleteParams::default())
                .await
                .map_err(Error::Kube)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

async fn write_status(
    es: &ExternalSecret,
    ctx: &Context,
    status: &ExternalSecretStatus,
) -> Result<(), Error> {
    let api: Api<ExternalSecret> =
        Api::namespaced(ctx.client.clone(), &es.namespace().unwrap_or_default());
    api.patch_status(
        &es.name_any(),
        &super::merge_params(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(Error::Kube)?;
    Ok(())
}

/// Writes Ready=False with the error's reason and message, and a Warning `SyncFailed` event.
/// The Secret is not touched.
async fn report_failure(es: &ExternalSecret, ctx: &Context, err: &Error) -> Result<(), Error> {
    let status = es.status.clone().unwrap_or_default();
    let message = err.to_string();
    let cond = condition::ready(
        Some(&status.conditions),
        false,
        err.reason(),
        &message,
        es.meta().generation,
    );
    let mut conditions = vec![cond];
    if err.stalled() {
        conditions.push(condition::stalled(
            Some(&status.conditions),
            err.reason(),
            &message,
            es.meta().generation,
        ));
    }
    let unchanged =
        status.conditions == conditions && status.observed_generation == es.meta().generation;
    publish(ctx, es, EventType::Warning, "SyncFailed", message).await;
    if unchanged {
        return Ok(());
    }
    let new_status = ExternalSecretStatus {
        conditions,
        observed_generation: es.meta().generation,
        ..status
    };
    write_status(es, ctx, &new_status).await
}

async fn publish(ctx: &Context, es: &ExternalSecret, type_: EventType, reason: &str, note: String) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(condition::truncate(&note, 1000)),
        action: "Sync".into(),
        secondary: None,
    };
    // Warnings go through the shared recorder, which folds a repeated failure into one Event
    // series ("x5 over 3m"). Normal events (a Secret created, updated or deleted) rarely
    // repeat: a recorder of their own keeps them out of the shared one's cache, which holds
    // every event for 6 minutes, 10,000 of them after the initial sync of 10,000 objects.
    let result = match type_ {
        EventType::Warning => ctx.recorder.publish(&ev, &es.object_ref(&())).await,
        EventType::Normal => {
            Recorder::new(ctx.client.clone(), ctx.reporter.clone())
                .publish(&ev, &es.object_ref(&()))
                .await
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "publishing event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_intervals_parse_as_go_durations_and_refuse_sub_second_values() {
        assert_eq!(parse_refresh_interval("0").unwrap(), 0);
        assert_eq!(parse_refresh_interval("").unwrap(), 0);
        assert_eq!(parse_refresh_interval("1h").unwrap(), 3600);
        assert_eq!(parse_refresh_interval("1h30m").unwrap(), 5400);
        assert_eq!(parse_refresh_interval("90s").unwrap(), 90);
        for bad in ["500ms", "ten minutes", "-1h"] {
            let e = parse_refresh_interval(bad).unwrap_err();
            assert!(e.permanent(), "{bad}: {e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("refreshInterval {bad:?}: ")),
                "{e}"
            );
        }
    }

    #[test]
    fn backoff_doubles_from_five_seconds_up_to_ten_minutes() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 320, 600, 600]);
    }
}
