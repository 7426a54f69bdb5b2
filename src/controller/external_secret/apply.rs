//! Step 4: the desired Secret built from the fetched values (`build`, pure; templates off the
//! async workers) and written per `creationPolicy`, or deleted per `deletionPolicy`; and the
//! drift check that step 1 needs.

use k8s_openapi::{
    api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry, jiff::Timestamp,
};
use kube::{
    ResourceExt,
    api::{Api, DeleteParams, Patch, PatchParams, PostParams},
    runtime::reflector::ObjectRef,
};

use super::{
    super::{
        Context, Error,
        build::{self, BuildInput},
        rollout::Workload,
    },
    fetch::Outcome,
    status::Synced,
};
use crate::{
    api::{
        ANNOTATION_DATA_HASH, ExternalSecret, FIELD_MANAGER, LABEL_EXTERNAL_SECRET,
        LABEL_MANAGED_BY, MANAGED_BY, external_secret::CreationPolicy,
    },
    providers::SecretMap,
};

/// Writes the outcome of a fetch: the Secret built from the values and the `templateFrom`
/// `sources` (store `store_label`, refreshed `now`) with the state of the `generated` values
/// in its annotations, or its deletion. A template that changes or drops a generated key is an
/// invalid spec: kept values are read back from the Secret under their keys. `spec_changed`: read
/// the Secret rather than trust the cache.
#[allow(clippy::too_many_arguments)]
pub(super) async fn write(
    es: &ExternalSecret,
    ctx: &Context,
    secrets: &Api<Secret>,
    outcome: Outcome,
    sources: build::TemplateSources,
    generated: &super::generate::Generated,
    store_label: &str,
    now: Timestamp,
    spec_changed: bool,
) -> Result<Synced, Error> {
    let target = es.target_name();
    match outcome {
        Outcome::Delete => {
            let deleted = delete_owned(es, secrets, &target).await?;
            ctx.with_state(&ObjectRef::from_obj(es), |o| o.secret_version = None);
            Ok(Synced {
                reason: "SecretDeleted",
                message: format!(
                    "every remote value is gone; Secret {target} deleted (deletionPolicy Delete)"
                ),
                event: deleted.then(|| {
                    (
                        "Deleted",
                        format!("Secret {target} deleted: remote values are gone"),
                    )
                }),
                restarts: 0,
            })
        }
        Outcome::Write(values) => {
            let now = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
            let expected = generated.written(&values);
            let mut desired = build_secret(es, ctx, values, sources, store_label, &now).await?;
            if !generated.is_empty() {
                let data = desired.data.as_ref();
                if let Some((key, _)) = expected.iter().find(|(k, v)| {
                    data.and_then(|d| d.get(*k)).map(|b| &b.0[..]) != Some(v.as_bytes())
                }) {
                    return Err(Error::InvalidSpec(build::BuildError(format!(
                        "the Secret key {key:?} of a generator entry must be written as generated (generated values are kept in the Secret and read back from it): a template may add keys but not change or drop it"
                    ))));
                }
                desired
                    .metadata
                    .annotations
                    .get_or_insert_default()
                    .extend(generated.annotations());
            }
            let written = apply(es, ctx, secrets, &target, desired, spec_changed).await?;
            let restarts = if written.is_some_and(|w| w.data_changed) {
                request_restarts(es, ctx, &target).await
            } else {
                0
            };
            let written = written.map(|w| w.created);
            let message = match es.spec.target.creation_policy {
                CreationPolicy::None => {
                    "values fetched (creationPolicy None: no Secret written)".to_string()
                }
                _ => format!("Secret {target} synced from {store_label}"),
            };
            let event = match written {
                Some(true) => Some(("Created", format!("Secret {target} created"))),
                Some(false) => Some(("Updated", format!("Secret {target} updated"))),
                None if created_unreported(es, ctx, &target) => {
                    Some(("Created", format!("Secret {target} created")))
                }
                None => None,
            };
            Ok(Synced {
                reason: "SecretSynced",
                message,
                event,
                restarts,
            })
        }
    }
}

/// Asks for a rollout restart of `es`'s `rolloutRestartTargets` (its Secret `target`'s data
/// changed), or, with restarts disabled (`--no-rollout-restart`), says so in a Warning event.
/// Returns the restarts requested.
async fn request_restarts(es: &ExternalSecret, ctx: &Context, target: &str) -> usize {
    let targets = &es.spec.target.rollout_restart_targets;
    if targets.is_empty() {
        return 0;
    }
    if !ctx.rollout_restart {
        super::status::warn(
            ctx,
            es,
            "RolloutRestartDisabled",
            format!(
                "Secret {target} changed, but rollout restarts are disabled in this operator (--no-rollout-restart): its rolloutRestartTargets were not restarted"
            ),
        )
        .await;
        return 0;
    }
    let namespace = es.namespace().unwrap_or_default();
    for t in targets {
        ctx.restarts.request(
            Workload {
                namespace: namespace.clone(),
                kind: t.kind,
                name: t.name.clone(),
            },
            es,
            target,
        );
    }
    targets.len()
}

/// Whether the target Secret was created for `es` by a sync that never reported (the
/// operator was killed between the write and the status): `es` has no condition yet, and the
/// Secret, ours and up to date, is younger than `es`. Its `Created` event is then due.
fn created_unreported(es: &ExternalSecret, ctx: &Context, target: &str) -> bool {
    let never_reported = es.status.as_ref().is_none_or(|s| s.conditions.is_empty());
    let ns = es.namespace().unwrap_or_default();
    never_reported
        && ctx
            .secrets
            .read(&ns, target, |m| {
                m.created >= es.metadata.creation_timestamp.as_ref().map(|t| t.0)
            })
            .unwrap_or(false)
}

/// [`build::desired_secret`]; with any template (data, `templateFrom`, labels, annotations),
/// in the namespace's share of the render pool ([`super::super::template_pool`]), off the
/// async workers. Errors: `InvalidSpec`; `TemplatesBusy` when the namespace has its share of
/// renders going.
async fn build_secret(
    es: &ExternalSecret,
    ctx: &Context,
    values: SecretMap,
    sources: build::TemplateSources,
    store: &str,
    now: &str,
) -> Result<Secret, Error> {
    if es.spec.target.template.is_none() {
        let input = BuildInput { values, store, now };
        return build::desired_secret_with(es, input, &sources).map_err(Error::InvalidSpec);
    }
    let (es, store, now) = (es.clone(), store.to_string(), now.to_string());
    let namespace = es.metadata.namespace.clone().unwrap_or_default();
    let built = ctx
        .templates
        .render(&namespace, move || {
            let input = BuildInput {
                values,
                store: &store,
                now: &now,
            };
            build::desired_secret_with(&es, input, &sources)
        })
        .await?;
    built.map_err(Error::InvalidSpec)
}

/// Whether the metadata cache shows the target Secret at the resourceVersion we last wrote or
/// verified (so its data is the data we hashed) with every label, annotation (the data hash
/// among them) and owner of `desired`.
fn unchanged_in_cache(es: &ExternalSecret, ctx: &Context, target: &str, desired: &Secret) -> bool {
    let ns = es.namespace().unwrap_or_default();
    let known = ctx.with_state(&ObjectRef::from_obj(es), |o| o.secret_version.clone());
    ctx.secrets
        .read(&ns, target, |cached| {
            known.as_deref() == Some(&*cached.resource_version) && cached.carries(&desired.metadata)
        })
        .unwrap_or(false)
}

/// Whether the target Secret was deleted or edited since we wrote it. A resourceVersion we
/// wrote or verified needs no API call; an unknown one (after a restart) is trusted when it
/// carries our hash; a changed one is read and its data checked against our hash.
pub(super) async fn secret_drifted(
    es: &ExternalSecret,
    ctx: &Context,
    secrets: &Api<Secret>,
    target: &str,
) -> Result<bool, Error> {
    let key = ObjectRef::from_obj(es);
    let ns = es.namespace().unwrap_or_default();
    let Some((rv, ours)) = ctx.secrets.read(&ns, target, |cached| {
        (cached.resource_version.to_string(), cached.has_data_hash)
    }) else {
        return Ok(true);
    };
    let known = ctx.with_state(&key, |o| o.secret_version.clone());
    let Some(known) = known else {
        if ours {
            ctx.with_state(&key, |o| o.secret_version = Some(rv.into()));
        }
        return Ok(!ours);
    };
    if *known == *rv {
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
            o.secret_version = Some(secret.resource_version().unwrap_or_default().into())
        });
    }
    Ok(!intact)
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

/// What [`apply`] wrote.
#[derive(Clone, Copy)]
struct Written {
    /// The Secret did not exist.
    created: bool,
    /// It existed, and its data changed (not only its metadata): a rollout restart is due.
    data_changed: bool,
}

/// Writes `desired` per `creationPolicy` with server-side apply (field manager
/// `secret-relay`), or, for a Secret our cache does not hold under Owner/Orphan, with a plain
/// create ([`create`]). Returns what it wrote, `None` when the Secret was already up to date
/// (no write). Never overwrites a Secret that is not ours under Owner/Orphan;
/// merges into anyone's under Merge/CreateOrMerge (creating it under CreateOrMerge).
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
) -> Result<Option<Written>, Error> {
    let policy = es.spec.target.creation_policy;
    if policy == CreationPolicy::None {
        return Ok(None);
    }
    let key = ObjectRef::from_obj(es);
    if !spec_changed && !policy.merges() && unchanged_in_cache(es, ctx, target, &desired) {
        return Ok(None);
    }
    // Not in the cache of our Secrets: most likely new, so create it without a read first.
    if !policy.merges()
        && !cached(es, ctx, target)
        && let Some(created) = create(secrets, &desired).await?
    {
        ctx.with_state(&key, |o| {
            o.secret_version = created.resource_version().map(Into::into)
        });
        return Ok(Some(Written {
            created: true,
            data_changed: false,
        }));
    }
    let existing = secrets.get_opt(target).await.map_err(Error::Kube)?;
    let ns = es.namespace().unwrap_or_default();
    match (&existing, policy) {
        (None, CreationPolicy::Merge) => {
            return Err(Error::MergeTargetMissing {
                secret: format!("{ns}/{target}"),
            });
        }
        (Some(s), CreationPolicy::Owner | CreationPolicy::Orphan) if !owned_by(s, es) => {
            return Err(Error::NotOurs {
                secret: format!("{ns}/{target}"),
            });
        }
        _ => {}
    }
    if let Some(s) = &existing {
        if build::is_up_to_date(s, &desired, !policy.merges()) {
            ctx.with_state(&key, |o| {
                o.secret_version = Some(s.resource_version().unwrap_or_default().into())
            });
            return Ok(None);
        }
        if s.immutable == Some(true) {
            return Err(Error::Immutable {
                secret: format!("{ns}/{target}"),
            });
        }
    }
    if let Some(upgrade) = existing.as_ref().and_then(ownership_upgrade) {
        secrets
            .patch(
                target,
                &super::super::merge_params(),
                &Patch::Merge(upgrade),
            )
            .await
            .map_err(Error::Kube)?;
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
        o.secret_version = Some(written.resource_version().unwrap_or_default().into())
    });
    let hash = |s: &Secret| s.annotations().get(ANNOTATION_DATA_HASH).cloned();
    Ok(Some(Written {
        created: existing.is_none(),
        data_changed: existing.is_some_and(|e| hash(&e) != hash(&desired)),
    }))
}

/// Whether the managed-Secret metadata cache holds the target Secret of `es`.
fn cached(es: &ExternalSecret, ctx: &Context, target: &str) -> bool {
    let ns = es.namespace().unwrap_or_default();
    ctx.secrets.contains(&ns, target)
}

/// Creates `desired` with a plain create (POST, field manager `secret-relay`): one request
/// where a read that finds nothing and a server-side apply are two, and cheaper for the API
/// server than the apply (BENCHMARKS-floor.md). Used when the cache of our Secrets does not
/// hold the target; that cache only sees Secrets carrying our label, so the create is also the
/// check: an existing Secret of anyone's (409 AlreadyExists) returns `None`, and the caller
/// reads it and goes the usual way, never overwriting it.
///
/// A plain create records our fields under an `Update` entry of `managedFields`, which a
/// later server-side apply does not release: [`ownership_upgrade`] turns it into our `Apply`
/// entry before the first apply, so that apply can still remove keys.
async fn create(secrets: &Api<Secret>, desired: &Secret) -> Result<Option<Secret>, Error> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match secrets.create(&params, desired).await {
        Ok(created) => Ok(Some(created)),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// The merge patch that makes the `managedFields` entry of our plain create ([`create`]:
/// manager `secret-relay`, operation `Update`) an `Apply` entry, as client-go's `csaupgrade`
/// hands fields from a client-side manager to a server-side one; the Secret's
/// `resourceVersion` in the patch makes it conditional. `None` when there is no such entry, or
/// when we already have an `Apply` entry (our writes never make both).
fn ownership_upgrade(secret: &Secret) -> Option<serde_json::Value> {
    let mut fields = secret.metadata.managed_fields.clone()?;
    let ours = |fields: &[ManagedFieldsEntry], op: &str| {
        fields.iter().position(|f| {
            f.manager.as_deref() == Some(FIELD_MANAGER)
                && f.operation.as_deref() == Some(op)
                && f.subresource.as_deref().unwrap_or_default().is_empty()
        })
    };
    let update = ours(&fields, "Update")?;
    if ours(&fields, "Apply").is_some() {
        return None;
    }
    fields[update].operation = Some("Apply".into());
    Some(serde_json::json!({
        "metadata": {"resourceVersion": secret.resource_version()?, "managedFields": fields}
    }))
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
