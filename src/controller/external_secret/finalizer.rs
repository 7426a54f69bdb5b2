//! Revoking an ExternalSecret's Vault leases when it is deleted: the finalizer
//! [`FINALIZER`], put on once its Secret records a lease ([`ensure_finalizer`]) and taken off
//! by [`finalize`] after the revocations.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use super::{
    super::{Context, Error},
    generate::EntryState,
};
use crate::{
    api::{ANNOTATION_GENERATOR_PREFIX, ExternalSecret, generators::VaultDynamicSecret},
    providers::{AuthContext, vault::VaultDynamicClient},
};

/// Finalizer of an ExternalSecret whose Secret records Vault leases: when the ExternalSecret is
/// deleted, its leases (current and pending revocation) are revoked before it goes.
pub const FINALIZER: &str = "secret-relay.dev/revoke-leases";

/// Puts [`FINALIZER`] on `es` unless it is there. Errors: `Kube`.
pub(super) async fn ensure_finalizer(es: &ExternalSecret, ctx: &Context) -> Result<(), Error> {
    if es.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    edit_finalizers(es, ctx, |f| {
        if !f.iter().any(|x| x == FINALIZER) {
            f.push(FINALIZER.into());
        }
    })
    .await
}

/// Edits `es`'s finalizers with `edit` on the object as stored: read, then a merge patch made
/// conditional by the resourceVersion read (so another's finalizer added meanwhile is never
/// lost), tried again on a conflict. A deleted object is fine. Errors: `Kube`.
async fn edit_finalizers(
    es: &ExternalSecret,
    ctx: &Context,
    edit: impl Fn(&mut Vec<String>),
) -> Result<(), Error> {
    let api =
        Api::<ExternalSecret>::namespaced(ctx.client.clone(), &es.namespace().unwrap_or_default());
    let mut attempts = 0;
    loop {
        let Some(current) = api.get_opt(&es.name_any()).await.map_err(Error::Kube)? else {
            return Ok(());
        };
        let mut finalizers = current.finalizers().to_vec();
        edit(&mut finalizers);
        if finalizers == current.finalizers() {
            return Ok(());
        }
        let patch = serde_json::json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": current.resource_version(),
        }});
        let result = api
            .patch(
                &es.name_any(),
                &super::super::merge_params(),
                &kube::api::Patch::Merge(patch),
            )
            .await;
        attempts += 1;
        match result {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 && attempts < 3 => continue,
            Err(e) => return Err(Error::Kube(e)),
        }
    }
}

/// The deletion of `es` carrying [`FINALIZER`]: revokes every lease its Secret `target` records
/// (the current ones and those waiting for revocation), each through its generator's Vault
/// connection, then removes the finalizer. Best effort: a lease that cannot be revoked (the
/// generator or the Secret is gone already, Vault refuses) is logged and left to its TTL, so a
/// deletion never hangs on Vault. Returns the leases revoked. Errors: `Kube`.
pub(super) async fn finalize(
    es: &ExternalSecret,
    ctx: &Context,
    secrets: &Api<Secret>,
    target: &str,
) -> Result<usize, Error> {
    if !es.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(0);
    }
    let ns = es.namespace().unwrap_or_default();
    let mut revoked = 0;
    let states: Vec<EntryState> = secrets
        .get_opt(target)
        .await
        .map_err(Error::Kube)?
        .map(|s| {
            s.annotations()
                .iter()
                .filter(|(k, _)| k.starts_with(ANNOTATION_GENERATOR_PREFIX))
                .filter_map(|(_, v)| serde_json::from_str(v).ok())
                .collect()
        })
        .unwrap_or_default();
    for state in states.iter().filter(|s| s.kind == "VaultDynamicSecret") {
        let ids: Vec<&str> = state
            .lease
            .iter()
            .map(|l| l.id.as_str())
            .chain(state.revoke.iter().map(|r| r.id.as_str()))
            .filter(|id| !id.is_empty())
            .collect();
        if ids.is_empty() {
            continue;
        }
        let api: Api<VaultDynamicSecret> = Api::namespaced(ctx.client.clone(), &ns);
        let generator = match api.get_opt(&state.name).await {
            Ok(Some(g)) => g,
            other => {
                tracing::warn!(generator = state.name, error = ?other.err().map(|e| e.to_string()), "ExternalSecret deleted: its generator is gone, its leases end with their TTL");
                continue;
            }
        };
        let auth = AuthContext::new(ctx.client.clone(), &ns, false);
        let client = match VaultDynamicClient::connect(&generator.spec.provider, &auth).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(generator = state.name, error = %e, "ExternalSecret deleted: cannot log in to revoke its leases");
                continue;
            }
        };
        for id in ids {
            match client.revoke(id).await {
                Ok(()) => revoked += 1,
                Err(e) => {
                    tracing::warn!(generator = state.name, error = %e, "ExternalSecret deleted: revoking a lease failed")
                }
            }
        }
    }
    edit_finalizers(es, ctx, |f| f.retain(|x| x != FINALIZER)).await?;
    tracing::info!(revoked, "ExternalSecret deleted: leases revoked");
    Ok(revoked)
}
