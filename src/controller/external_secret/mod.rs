//! The ExternalSecret pipeline, one step per module:
//!
//! 1. [`plan`] (pure, after the drift check of the managed Secret): is anything due, and how
//!    fresh must the values be?
//! 2. resolve the store (`secret_store::resolve`, from the cache) and its shared provider;
//! 3. `generate`: the values of `dataFrom[].sourceRef.generatorRef` entries, kept in the managed
//!    Secret or made anew (a VaultDynamicSecret's lease renewed, replaced, revoked); then
//!    `fetch`: the remote values, with property, decoding, conversion and rewrites;
//! 4. `template_sources`: the other objects the build reads (`templateFrom`), gathered before
//!    it;
//! 5. `apply`: build the desired Secret (`build`, pure) and write it per `creationPolicy`;
//! 6. `status`: the `Ready` condition, events and metrics.
//!
//! Only `fetch` talks to a backend, only steps 1 and 4 read from the API server (besides the
//! caches), and only `apply` and `status` write to it. A
//! reconcile that finds nothing due (refresh not due, spec and annotations unchanged, Secret
//! intact) makes no call at all.

mod apply;
mod fetch;
mod finalizer;
pub mod generate;
mod kept;
pub mod plan;
mod status;
mod template_sources;

use std::{num::NonZeroI64, sync::Arc, time::Duration};

use kube::{ResourceExt, api::Api, runtime::reflector::ObjectRef};
use rand::RngExt;

use super::{
    CachedExternalSecret, Context, Error,
    observe::{self, Observed, Outcome},
    runner::Requeue,
    secret_store,
};
use crate::{
    api::{
        ExternalSecret,
        external_secret::{CreationPolicy, RefreshPolicy},
    },
    metrics,
    providers::ErrorKind,
};
pub use plan::{Plan, parse_refresh_interval, synced_resource_version};

/// Longest a reconcile may run: each provider read waits at most 5 s (`providers::health`),
/// kube API calls and templates have bounds of their own; this bounds them together.
pub const RECONCILE_DEADLINE: Duration = Duration::from_secs(120);

/// When a read deferred by a slow backend is tried again.
const BUSY_RETRY: Duration = Duration::from_secs(2);

/// Reconciles one ExternalSecret; failures are written to its status and events before they
/// are returned for backoff. Runs in a `reconcile` span naming the object (`kind`,
/// `namespace`, `object`: its name; not `name`, which JSON logs give the span itself) and its
/// `store` (`SecretStore/name`), so every line logged under it, provider calls included, says
/// which ExternalSecret it concerns.
#[tracing::instrument(name = "reconcile", skip_all, fields(
    kind = "ExternalSecret",
    namespace = %cached.namespace(),
    object = %cached.name(),
    store = %format_args!("{}/{}", cached.store_kind.as_str(), cached.store_name),
))]
pub async fn reconcile(
    cached: Arc<CachedExternalSecret>,
    ctx: Arc<Context>,
) -> Result<Requeue, Error> {
    let es = cached.expand();
    let (result, outcome) = reconcile_once(&es, &ctx).await;
    observe::publish(|| Observed::Reconciled {
        namespace: es.namespace().unwrap_or_default(),
        name: es.name_any(),
        outcome,
    });
    result
}

/// [`reconcile`], with what it did for [`observe`].
async fn reconcile_once(es: &ExternalSecret, ctx: &Context) -> (Result<Requeue, Error>, Outcome) {
    let key = ObjectRef::from_obj(es);
    // The runner starts none before every cache has its first list (a store or Secret
    // missing from a cache may only be late then: "SecretStore ... not found" would be wrong).
    if let Some(wait) = pending_retry(es, ctx) {
        return (Ok(Some(wait)), Outcome::Deferred);
    }
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(RECONCILE_DEADLINE, sync(es, ctx))
        .await
        .unwrap_or(Err(Error::Deadline(RECONCILE_DEADLINE)));
    metrics::RECONCILE_DURATION.observe(started.elapsed().as_secs_f64());
    match result {
        Ok((action, outcome)) => {
            ctx.with_state(&key, |o| {
                o.failures = 0;
                o.retry_at = None;
            });
            (Ok(action), outcome)
        }
        // A read deferred by a slow backend (providers::health): not a failure, try again
        // soon without a word.
        Err(Error::Provider(e)) if e.kind == ErrorKind::Busy => {
            (Ok(Some(jitter(BUSY_RETRY))), Outcome::Deferred)
        }
        // Its namespace has its share of template renders going (template_pool): the same.
        Err(Error::TemplatesBusy { .. }) => (Ok(Some(jitter(BUSY_RETRY))), Outcome::Deferred),
        Err(e) => {
            ctx.with_state(&key, |o| o.synced = None);
            metrics::sync("error", e.category());
            if let Err(report) = status::report_failure(es, ctx, &e).await {
                tracing::warn!(error = %report, "writing failure status");
            }
            tracing::info!(category = e.category(), error = %e, "sync failed");
            let outcome = Outcome::Failed {
                category: e.category(),
            };
            (Err(e), outcome)
        }
    }
}

/// The ConfigMaps and Secrets `es`'s `templateFrom` names, read from its namespace through
/// `client` as a sync reads them (for the plugin's `render --from-cluster`). Errors: a missing
/// object or key (`TemplateFrom`), a failed read (`Kube`).
pub async fn read_template_sources(
    es: &ExternalSecret,
    client: &kube::Client,
) -> Result<super::build::TemplateSources, Error> {
    template_sources::read(es, client).await
}

/// The Secret `es` would produce (`None`: every remote value is gone under
/// `deletionPolicy: Delete`), built by the reconcile's own fetch and build steps from `store`'s
/// `provider` (every `data[].sourceRef.storeRef` read from it too) and the `templateFrom`
/// objects in `template_sources`, stamped with `now` (RFC 3339). Nothing is read from or
/// written to the cluster: the plugin's `render`. Errors: as a sync's ([`Error`]).
pub async fn preview(
    es: &ExternalSecret,
    store: &secret_store::ResolvedStore,
    provider: Arc<crate::providers::SharedProvider>,
    template_sources: super::build::TemplateSources,
    now: &str,
) -> Result<Option<k8s_openapi::api::core::v1::Secret>, Error> {
    let sources = fetch::Sources::new(store, provider);
    let templates = super::template_pool::TemplatePool::new(1);
    let mut generated = generate::Generated::default();
    let values = match fetch::fetch(es, &sources, &mut generated, &templates, 0, None).await? {
        fetch::Outcome::Write(values) => values,
        fetch::Outcome::Delete => return Ok(None),
    };
    let input = super::build::BuildInput {
        values,
        store: &store.label,
        now,
    };
    super::build::desired_secret_with(es, input, &template_sources)
        .map(Some)
        .map_err(Error::InvalidSpec)
}

/// Backoff after a failure: permanent errors wait for a change; others retry after
/// 5 s × 2^(n-1), capped at 10 min, with ±20 % jitter.
pub fn error_policy(cached: Arc<CachedExternalSecret>, err: &Error, ctx: Arc<Context>) -> Requeue {
    if err.permanent() {
        return None;
    }
    let es = cached.expand();
    let version = synced_resource_version(&es);
    let delay = ctx.with_state(&ObjectRef::from_obj(&es), |o| {
        o.failures = o.failures.saturating_add(1);
        let delay = jitter(backoff(o.failures));
        o.retry_at = Some(Box::new((version, std::time::Instant::now() + delay)));
        delay
    });
    Some(delay)
}

/// After a failure, the time left until its retry is due, unless the spec or annotations
/// changed since (a force-sync retries at once). Events in between, such as the status write
/// that reported the failure, do not call the provider again.
fn pending_retry(es: &ExternalSecret, ctx: &Context) -> Option<Duration> {
    let key = ObjectRef::from_obj(es);
    let state = ctx.state.lock().expect("state lock");
    let (version, at) = &**state.get(&key)?.retry_at.as_ref()?;
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

/// The pipeline of one reconcile; see the module documentation.
async fn sync(es: &ExternalSecret, ctx: &Context) -> Result<(Requeue, Outcome), Error> {
    let key = ObjectRef::from_obj(es);
    let policy = es.spec.refresh_policy.unwrap_or_default();
    // Only `Periodic` refreshes on a timer; the others sync as `refreshInterval: 0` does.
    let interval = match (parse_refresh_interval(&es.spec.refresh_interval)?, policy) {
        (secs, RefreshPolicy::Periodic) => secs,
        (_, RefreshPolicy::OnChange | RefreshPolicy::CreatedOnce) => 0,
    };
    let status = es.status.clone().unwrap_or_default();
    let version = synced_resource_version(es);
    let (now, now_ms) = plan::now();
    let target = es.target_name();
    let secrets = Api::namespaced(ctx.client.clone(), &es.namespace().unwrap_or_default());

    // 0. Deleted: revoke the Vault leases its Secret records, then let it go.
    if es.metadata.deletion_timestamp.is_some() {
        finalizer::finalize(es, ctx, &secrets, &target).await?;
        return Ok((
            None,
            Outcome::UpToDate {
                next_refresh_ms: None,
            },
        ));
    }

    // 1. Plan. A generator's lease that is due (renewal, re-issue, revocation) counts as
    // drift: the Secret is rewritten whatever the refresh interval says.
    let lease_due = generate::due_ms(&status.generators);
    let drift = (es.spec.target.creation_policy != CreationPolicy::None
        && apply::secret_drifted(es, ctx, &secrets, &target).await?)
        || lease_due.is_some_and(|due| due <= now_ms);
    let decided = {
        let state = ctx.state.lock().expect("state lock");
        plan::plan(plan::PlanInput {
            interval,
            created_once: policy == RefreshPolicy::CreatedOnce,
            status: &status,
            version: &version,
            memory: state.get(&key),
            created_ms: es
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond()),
            now_ms,
            drift,
        })
    };
    let (fresh_since, spec_changed) = match decided {
        Plan::UpToDate { due_ms } => {
            let (action, next_refresh_ms) =
                refresh_at(ctx, &key, interval, due_ms, lease_due, now_ms);
            return Ok((action, Outcome::UpToDate { next_refresh_ms }));
        }
        Plan::Sync {
            fresh_since,
            spec_changed,
        } => (fresh_since, spec_changed),
    };

    // 2. Store and provider. The next refresh is due at the provider's next tick; the reads
    // say so, so that the provider can read ahead at that tick.
    let store = secret_store::resolve(es, ctx)?;
    let provider = ctx
        .providers
        .get(&store)
        .await
        .map_err(|source| Error::Store {
            store: store.label.clone(),
            source,
        })?;
    let next_due = (interval > 0).then(|| provider.next_tick(now_ms, interval as i64 * 1000));
    // The other stores `data[].sourceRef.storeRef` names, and their providers.
    let mut sources = fetch::Sources::new(&store, provider);
    for r in es.spec.data.iter().filter_map(|d| d.source_ref.as_ref()) {
        if sources.get(&r.store_ref).is_none() {
            let other = secret_store::resolve_ref(es, &r.store_ref, ctx)?;
            let provider = ctx
                .providers
                .get(&other)
                .await
                .map_err(|source| Error::Store {
                    store: other.label.clone(),
                    source,
                })?;
            sources.add(&r.store_ref, other, provider);
        }
    }

    // 3. Generate, then fetch.
    let mut generated = generate::generate(es, ctx, &secrets, &target, now).await?;
    let fetched = fetch::fetch(
        es,
        &sources,
        &mut generated,
        &ctx.templates,
        fresh_since,
        next_due,
    )
    .await;
    let outcome = match fetched {
        Err(Error::Provider(e)) if e.kind == ErrorKind::Authentication => {
            // The store whose login failed is not known here: rebuild every one used.
            for store in sources.stores() {
                ctx.providers.invalidate(store);
            }
            return Err(Error::Provider(e));
        }
        other => other?,
    };

    // 4. The other objects the build reads: the `templateFrom` ConfigMaps and Secrets (read
    // at every sync, so an edit reaches the Secret at the next refresh at the latest).
    let sources = match &outcome {
        fetch::Outcome::Write(_) => template_sources::read(es, &ctx.client).await?,
        fetch::Outcome::Delete => Default::default(),
    };

    // 5. Build and apply.
    let synced = apply::write(
        es,
        ctx,
        &secrets,
        outcome,
        sources,
        &generated,
        &store.label,
        now,
        spec_changed,
    )
    .await?;

    // Leases now recorded in the Secret: revoked when the ExternalSecret is deleted.
    if generated.has_leases() {
        finalizer::ensure_finalizer(es, ctx).await?;
    }

    // 6. Status.
    ctx.with_state(&key, |o| {
        o.last_fetch = NonZeroI64::new(now.as_second());
        o.synced = Some(version.as_str().into());
        o.next_due = next_due.and_then(NonZeroI64::new);
    });
    let (written, restarts) = (synced.event.is_some(), synced.restarts);
    let generators = generated.status();
    let lease_due = generate::due_ms(&generators);
    status::report_success(es, ctx, &status, synced, generators, version, now).await?;
    let (action, next_refresh_ms) = refresh_at(ctx, &key, interval, next_due, lease_due, now_ms);
    Ok((
        action,
        Outcome::Synced {
            written,
            restarts,
            next_refresh_ms,
        },
    ))
}

/// Sets the refresh timer of `key` for the refresh due at `due_ms` (Unix ms; the provider's
/// next tick), or for `lease_due` (Unix ms: a generator's lease renewal, re-issue or
/// revocation) when that comes first, or cancels it when `interval` is 0 and no lease is due;
/// the controller then only waits for a change.
/// A timer that fires a little early finds the refresh not yet due and is set for the rest: a
/// refresh that ran before its tick would fetch values the ExternalSecrets due at the tick could
/// not use. Refreshes need no jitter of their own: the tick's phase is per provider, and the
/// ExternalSecrets that share a tick share its calls. Returns the action and the due time
/// (Unix ms) of the timer set, if any.
fn refresh_at(
    ctx: &Context,
    key: &ObjectRef<ExternalSecret>,
    interval: u64,
    due_ms: Option<i64>,
    lease_due: Option<i64>,
    now_ms: i64,
) -> (Requeue, Option<i64>) {
    let refresh = (interval > 0).then(|| due_ms.unwrap_or(now_ms + interval as i64 * 1000));
    let due = match (refresh, lease_due) {
        (Some(r), Some(l)) => Some(r.min(l)),
        (r, l) => r.or(l),
    }
    .map(|due| {
        let at = tokio::time::Instant::now() + Duration::from_millis((due - now_ms).max(10) as u64);
        (due, at)
    });
    ctx.set_refresh_timer(key, due);
    (None, due.map(|(due, _)| due))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_seconds_up_to_ten_minutes() {
        let secs: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 320, 600, 600]);
    }
}
