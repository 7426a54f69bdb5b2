//! Step 5: the `Ready` (and `Stalled`) condition, events and metrics of a sync.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Resource, ResourceExt,
    api::{Api, Patch},
    runtime::events::{Event, EventType, Recorder},
};
use serde_json::json;

use super::super::{Context, Error, condition};
use crate::{
    api::{
        ExternalSecret,
        external_secret::{ExternalSecretStatus, GeneratorStatus, SecretBinding},
    },
    metrics,
};

/// What a successful write did, for the status and events.
pub(super) struct Synced {
    /// The `Ready` reason: `SecretSynced` or `SecretDeleted`.
    pub reason: &'static str,
    /// The `Ready` message.
    pub message: String,
    /// A Normal event to publish (`Created`, `Updated`, `Deleted`) when the Secret changed.
    pub event: Option<(&'static str, String)>,
    /// Rollout restarts requested because the Secret's data changed.
    pub restarts: usize,
}

/// Reports a successful sync: its event, and the status (Ready=True with `synced`'s reason,
/// `syncedResourceVersion`, binding, the leases of `generators`, refresh time), written only when something changed: the
/// refresh time alone changing is not worth a write, so an unchanged refresh writes nothing.
pub(super) async fn report_success(
    es: &ExternalSecret,
    ctx: &Context,
    status: &ExternalSecretStatus,
    synced: Synced,
    generators: Vec<GeneratorStatus>,
    version: String,
    now: Timestamp,
) -> Result<(), Error> {
    metrics::sync("success", synced.reason);
    let wrote = synced.event.is_some();
    if let Some((reason, note)) = synced.event
        && ctx.events == super::super::EventPolicy::Changes
    {
        publish(ctx, es, EventType::Normal, reason, note).await;
    }
    let cond = condition::ready(
        Some(&status.conditions),
        true,
        synced.reason,
        &synced.message,
        es.meta().generation,
    );
    let new_status = ExternalSecretStatus {
        conditions: vec![cond],
        observed_generation: es.meta().generation,
        refresh_time: status.refresh_time.clone(),
        synced_resource_version: Some(version),
        binding: Some(SecretBinding {
            name: es.target_name(),
        }),
        generators,
    };
    if &new_status != status || wrote {
        let new_status = ExternalSecretStatus {
            refresh_time: Some(Time(now)),
            ..new_status
        };
        write_status(es, ctx, &new_status).await?;
    }
    Ok(())
}

async fn write_status(
    es: &ExternalSecret,
    ctx: &Context,
    status: &ExternalSecretStatus,
) -> Result<(), Error> {
    let api: Api<ExternalSecret> =
        Api::namespaced(ctx.client.clone(), &es.namespace().unwrap_or_default());
    let mut status = serde_json::to_value(status).expect("a status serializes");
    // A merge patch keeps what it does not name: an empty list must be cleared explicitly,
    // or the leases of a generator entry that is gone would stay due for ever.
    if let Some(s) = status.as_object_mut() {
        s.entry("generators").or_insert(serde_json::Value::Null);
    }
    api.patch_status(
        &es.name_any(),
        &super::super::merge_params(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(Error::Kube)?;
    Ok(())
}

/// Writes Ready=False with the error's reason and message, and a Warning `SyncFailed` event.
/// The Secret is not touched.
pub(super) async fn report_failure(
    es: &ExternalSecret,
    ctx: &Context,
    err: &Error,
) -> Result<(), Error> {
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

/// Publishes a Warning event on `es` (through the shared recorder: repeats fold into one series).
pub(super) async fn warn(ctx: &Context, es: &ExternalSecret, reason: &str, note: String) {
    publish(ctx, es, EventType::Warning, reason, note).await
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
