//! ClusterExternalSecrets: one ExternalSecret per selected namespace (ESO's
//! `clusterexternalsecret` controller).
//!
//! Pipeline: select namespaces (pure, [`selected_namespaces`]) → remove the ExternalSecrets of
//! namespaces no longer selected (and of a previous `externalSecretName`) → apply one per
//! selected namespace → status. Namespaces come from the operator's namespace cache; a
//! namespace change reconciles every ClusterExternalSecret at once, and each one also runs
//! every `refreshTime`.
//!
//! Unlike ESO, no finalizer is put on namespaces (ESO's keeps a namespace from being deleted
//! while it holds a ClusterExternalSecret's ExternalSecret, and leaves namespaces stuck in
//! `Terminating` when the operator is gone): the ExternalSecret simply goes with its namespace.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Resource, ResourceExt,
    api::{Api, DeleteParams, Patch, PatchParams},
    core::PartialObjectMeta,
    runtime::controller::Action,
};
use serde_json::json;

use super::{Context, Error, condition, external_secret::parse_refresh_interval, selector_matches};
use crate::api::{
    ANNOTATION_FORCE_SYNC, ClusterExternalSecret, ExternalSecret, FIELD_MANAGER,
    cluster_external_secret::{
        ClusterExternalSecretSpec, ClusterExternalSecretStatus, LABEL_CLUSTER_EXTERNAL_SECRET,
        NamespaceFailure,
    },
};

/// Default `refreshTime`, as ESO's controller default.
const DEFAULT_REFRESH: Duration = Duration::from_secs(60);

/// Names of the namespaces `spec` selects among `namespaces` (name → labels), sorted: those
/// named in `namespaces`, and those whose labels match `namespaceSelector` or any of
/// `namespaceSelectors` (ORed, as in ESO). A terminating namespace is not selected.
pub fn selected_namespaces(
    spec: &ClusterExternalSecretSpec,
    namespaces: &BTreeMap<String, (BTreeMap<String, String>, bool)>,
) -> BTreeSet<String> {
    namespaces
        .iter()
        .filter(|(_, (_, terminating))| !terminating)
        .filter(|(name, (labels, _))| {
            spec.namespaces.iter().any(|n| n == *name)
                || spec
                    .namespace_selector
                    .iter()
                    .chain(&spec.namespace_selectors)
                    .any(|sel| selector_matches(sel, labels))
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Whether `es` is controlled by `ces` (its controller ownerReference).
fn controlled_by(es: &ExternalSecret, ces: &ClusterExternalSecret) -> bool {
    es.owner_references().iter().any(|o| {
        o.controller == Some(true)
            && o.kind == "ClusterExternalSecret"
            && Some(&o.uid) == ces.metadata.uid.as_ref()
    })
}

/// Reconciles one ClusterExternalSecret; requeued every `refreshTime`. Runs in a `reconcile`
/// span naming it.
#[tracing::instrument(name = "reconcile", skip_all, fields(
    kind = "ClusterExternalSecret",
    object = %ces.name_any(),
))]
pub async fn reconcile(
    ces: Arc<ClusterExternalSecret>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    // Before the namespace cache's first list, every namespace would look unselected and lose
    // its ExternalSecret.
    if !ctx.caches_are_synced() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let refresh = refresh_time(&ces)?;
    let name = external_secret_name(&ces);
    let selected = selected_namespaces(&ces.spec, &namespace_labels(&ctx));
    let status = ces.status.clone().unwrap_or_default();
    let mut failed = remove_unselected(&ctx, &ces, &status, &selected, &name).await;
    let provisioned = provision_selected(&ctx, &ces, &selected, &name, &mut failed).await;
    report(&ctx, &ces, &status, &name, provisioned, failed).await?;
    Ok(Action::requeue(refresh))
}

/// `refreshTime`, [`DEFAULT_REFRESH`] when unset or zero. Errors: not a duration.
fn refresh_time(ces: &ClusterExternalSecret) -> Result<Duration, Error> {
    Ok(match &ces.spec.refresh_time {
        Some(t) => match parse_refresh_interval(t)? {
            0 => DEFAULT_REFRESH,
            secs => Duration::from_secs(secs),
        },
        None => DEFAULT_REFRESH,
    })
}

/// The name of the ExternalSecrets it makes: `externalSecretName`, else its own name.
fn external_secret_name(ces: &ClusterExternalSecret) -> String {
    ces.spec
        .external_secret_name
        .clone()
        .unwrap_or_else(|| ces.name_any())
}

/// Every cached namespace: name → (labels, terminating).
fn namespace_labels(ctx: &Context) -> BTreeMap<String, (BTreeMap<String, String>, bool)> {
    ctx.namespaces
        .state()
        .iter()
        .map(|ns: &Arc<PartialObjectMeta<Namespace>>| {
            (
                ns.name_any(),
                (
                    ns.labels().clone(),
                    ns.metadata.deletion_timestamp.is_some(),
                ),
            )
        })
        .collect()
}

/// Removes its ExternalSecrets from the namespaces no longer `selected`, and from every
/// namespace when `externalSecretName` changed; returns the namespaces where that failed,
/// with why.
async fn remove_unselected(
    ctx: &Context,
    ces: &ClusterExternalSecret,
    status: &ClusterExternalSecretStatus,
    selected: &BTreeSet<String>,
    name: &str,
) -> BTreeMap<String, String> {
    let mut failed = BTreeMap::new();
    let previous_name = status.external_secret_name.as_deref().unwrap_or(name);
    for ns in &status.provisioned_namespaces {
        if (previous_name != name || !selected.contains(ns))
            && let Err(e) = remove(ctx, ces, ns, previous_name).await
        {
            failed.insert(ns.clone(), e.to_string());
        }
    }
    failed
}

/// Writes the ExternalSecret `name` in every `selected` namespace ([`provision`]); returns
/// the namespaces where it is, and adds the others to `failed` with why.
async fn provision_selected(
    ctx: &Context,
    ces: &ClusterExternalSecret,
    selected: &BTreeSet<String>,
    name: &str,
    failed: &mut BTreeMap<String, String>,
) -> Vec<String> {
    let mut provisioned = Vec::new();
    for ns in selected {
        match provision(ctx, ces, ns, name).await {
            Ok(()) => provisioned.push(ns.clone()),
            Err(reason) => {
                failed.insert(ns.clone(), reason);
            }
        }
    }
    provisioned
}

/// Writes the status: the ExternalSecrets' name, the namespaces provisioned and failed, and
/// `Ready` (`Provisioned`, or `NamespacesFailed` naming each failed namespace and why).
async fn report(
    ctx: &Context,
    ces: &ClusterExternalSecret,
    status: &ClusterExternalSecretStatus,
    name: &str,
    provisioned: Vec<String>,
    failed: BTreeMap<String, String>,
) -> Result<(), Error> {
    let ok = failed.is_empty();
    let message = if ok {
        format!(
            "ExternalSecret {name} in {} namespace(s)",
            provisioned.len()
        )
    } else {
        format!(
            "ExternalSecret {name} could not be written in {} namespace(s): {}",
            failed.len(),
            failed
                .iter()
                .map(|(ns, why)| format!("{ns}: {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        )
    };
    let ready = condition::ready(
        Some(&status.conditions),
        ok,
        if ok {
            "Provisioned"
        } else {
            "NamespacesFailed"
        },
        &message,
        ces.metadata.generation,
    );
    let failures: Vec<NamespaceFailure> = failed
        .into_iter()
        .map(|(namespace, reason)| NamespaceFailure { namespace, reason })
        .collect();
    let patch = json!({"status": {
        "externalSecretName": name,
        "provisionedNamespaces": provisioned,
        "failedNamespaces": failures,
        "conditions": [ready],
        "observedGeneration": ces.metadata.generation,
    }});
    Api::<ClusterExternalSecret>::all(ctx.client.clone())
        .patch_status(
            &ces.name_any(),
            &super::merge_params(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Error::Kube)?;
    Ok(())
}

/// Writes the ExternalSecret `name` in `ns` (server-side apply, controlled by `ces`); the
/// reason when it cannot: an ExternalSecret of that name that `ces` does not control, or the
/// API server's refusal.
async fn provision(
    ctx: &Context,
    ces: &ClusterExternalSecret,
    ns: &str,
    name: &str,
) -> Result<(), String> {
    let api: Api<ExternalSecret> = Api::namespaced(ctx.client.clone(), ns);
    let existing = match api.get_opt(name).await {
        Ok(Some(existing)) if !controlled_by(&existing, ces) => {
            return Err(format!(
                "ExternalSecret {name} already exists in the namespace and is not managed by this ClusterExternalSecret"
            ));
        }
        Ok(existing) => existing,
        Err(e) => return Err(format!("reading ExternalSecret {name}: {e}")),
    };
    let meta = ces
        .spec
        .external_secret_metadata
        .clone()
        .unwrap_or_default();
    let mut labels = meta.labels;
    labels.insert(LABEL_CLUSTER_EXTERNAL_SECRET.into(), ces.name_any());
    let mut annotations = meta.annotations;
    // A force-sync of the ClusterExternalSecret reaches every ExternalSecret, as in ESO.
    if let Some(v) = ces.annotations().get(ANNOTATION_FORCE_SYNC) {
        annotations.insert(ANNOTATION_FORCE_SYNC.into(), v.clone());
    }
    // Already as desired: no write (every refreshTime re-checks every namespace).
    if let Some(e) = &existing
        && e.spec == ces.spec.external_secret_spec
        && *e.labels() == labels
        && *e.annotations() == annotations
    {
        return Ok(());
    }
    let owner = ces
        .controller_owner_ref(&())
        .ok_or_else(|| "the ClusterExternalSecret has no uid yet".to_string())?;
    let es = json!({
        "apiVersion": "secret-relay.dev/v1alpha1",
        "kind": "ExternalSecret",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner],
        },
        "spec": ces.spec.external_secret_spec,
    });
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&es),
    )
    .await
    .map(|_| ())
    .map_err(|e| match e {
        kube::Error::Api(s) => format!("writing ExternalSecret {name}: {}", s.message),
        e => format!("writing ExternalSecret {name}: {e}"),
    })
}

/// Deletes the ExternalSecret `name` in `ns` if `ces` controls it.
async fn remove(
    ctx: &Context,
    ces: &ClusterExternalSecret,
    ns: &str,
    name: &str,
) -> Result<(), kube::Error> {
    let api: Api<ExternalSecret> = Api::namespaced(ctx.client.clone(), ns);
    match api.get_opt(name).await? {
        Some(es) if controlled_by(&es, ces) => {
            api.delete(name, &DeleteParams::default()).await?;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Retries a failed ClusterExternalSecret reconcile (a bad `refreshTime`, an API outage).
pub fn error_policy(_: Arc<ClusterExternalSecret>, err: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(error = %err, category = err.category(), "ClusterExternalSecret reconcile failed");
    Action::requeue(Duration::from_secs(if err.permanent() { 300 } else { 10 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ClusterExternalSecretSpec {
        let base = "externalSecretSpec: {secretStoreRef: {name: s}, data: [{secretKey: k, remoteRef: {key: r}}]}\n";
        serde_yaml::from_str(&format!("{base}{yaml}")).unwrap()
    }

    fn namespaces() -> BTreeMap<String, (BTreeMap<String, String>, bool)> {
        let l = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        [
            ("default", (l(&[]), false)),
            ("monitoring", (l(&[("team", "obs")]), false)),
            ("logging", (l(&[("team", "obs"), ("tier", "infra")]), false)),
            ("flux-system", (l(&[("tier", "infra")]), false)),
            ("leaving", (l(&[("team", "obs")]), true)),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect()
    }

    fn names(s: BTreeSet<String>) -> Vec<String> {
        s.into_iter().collect()
    }

    #[test]
    fn namespaces_by_name_and_selectors_are_ored() {
        let ns = namespaces();
        assert_eq!(
            names(selected_namespaces(&spec("namespaces: [default]\n"), &ns)),
            ["default"]
        );
        assert_eq!(
            names(selected_namespaces(
                &spec(
                    "namespaceSelectors: [{matchLabels: {team: obs}}, {matchLabels: {tier: infra}}]\nnamespaces: [default]\n"
                ),
                &ns
            )),
            ["default", "flux-system", "logging", "monitoring"]
        );
        // The deprecated single selector still counts; a terminating namespace never does.
        assert_eq!(
            names(selected_namespaces(
                &spec("namespaceSelector: {matchExpressions: [{key: team, operator: Exists}]}\n"),
                &ns
            )),
            ["logging", "monitoring"]
        );
        // No selector and no names: nothing (not everything).
        assert!(selected_namespaces(&spec(""), &ns).is_empty());
    }
}
