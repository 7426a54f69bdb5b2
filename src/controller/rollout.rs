//! Rollout restarts: workloads that read a Secret through env vars or `subPath` mounts see a
//! new value only in new Pods, so when a sync changes a Secret's data, the ExternalSecret's
//! `rolloutRestartTargets` get a new pod template annotation, [`ANNOTATION_RESTARTED_AT`]
//! (what `kubectl rollout restart` does with `kubectl.kubernetes.io/restartedAt`, but with
//! nanoseconds: Vault Secrets Operator's users lost a second change made within one second).
//!
//! Requests are debounced per workload: the first starts a [`DEBOUNCE`] window, and every
//! request in it (other ExternalSecrets feeding the same workload, changed on the same refresh
//! tick) joins the one restart made when it closes.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::{
    api::apps::v1::{DaemonSet, Deployment, StatefulSet},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch},
    runtime::events::{Event, EventType, Recorder},
};
use serde_json::json;

use super::Context;
use crate::api::{ExternalSecret, external_secret::RolloutRestartKind};

/// The pod template annotation a restart sets: RFC 3339 with nanoseconds, unique per restart.
pub const ANNOTATION_RESTARTED_AT: &str = "secret-relay.dev/restartedAt";

/// How long requests for one workload are gathered before it is restarted once: 2 s, longer
/// than the spread of the ExternalSecrets refreshed on one provider tick.
pub const DEBOUNCE: Duration = Duration::from_secs(2);

/// A workload to restart.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    /// Its namespace (the ExternalSecret's).
    pub namespace: String,
    /// Its kind.
    pub kind: RolloutRestartKind,
    /// Its name.
    pub name: String,
}

/// Pending restarts: per workload, when the first request came and which ExternalSecrets
/// asked (and why, for their events).
#[derive(Default)]
pub struct Restarts(Mutex<BTreeMap<Workload, (Instant, Vec<Asked>)>>);

/// An ExternalSecret that asked for a restart (its reference, for the event) and the Secret
/// whose change it was.
pub type Asked = (ObjectReference, String);

impl Restarts {
    /// Asks for a restart of `workload` on behalf of `es`, whose Secret `secret` changed.
    pub fn request(&self, workload: Workload, es: &ExternalSecret, secret: &str) {
        let reference = es.object_ref(&());
        let mut pending = self.0.lock().expect("restarts lock");
        let entry = pending
            .entry(workload)
            .or_insert_with(|| (Instant::now(), Vec::new()));
        if !entry.1.iter().any(|(e, _)| e.name == reference.name) {
            entry.1.push((reference, secret.to_string()));
        }
    }

    /// Takes the requests whose window has closed at `now`.
    pub fn due(&self, now: Instant) -> Vec<(Workload, Vec<Asked>)> {
        let mut pending = self.0.lock().expect("restarts lock");
        let ready: Vec<Workload> = pending
            .iter()
            .filter(|(_, (first, _))| now.duration_since(*first) >= DEBOUNCE)
            .map(|(w, _)| w.clone())
            .collect();
        ready
            .into_iter()
            .filter_map(|w| pending.remove(&w).map(|(_, asked)| (w, asked)))
            .collect()
    }
}

/// Restarts the due workloads every 250 ms until `shutdown`, publishing `RolloutRestarted`
/// (Normal) or `RolloutRestartFailed` (Warning: the workload is missing or the patch was
/// refused) on each ExternalSecret that asked; a failure never fails a sync.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()>) {
    let work = async {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            for (workload, asked) in ctx.restarts.due(Instant::now()) {
                let result = restart(&ctx.client, &workload).await;
                let what = format!("{} {}", workload.kind.as_str(), workload.name);
                let (type_, reason, note) = match &result {
                    Ok(()) => {
                        crate::metrics::rollout_restart(workload.kind.as_str());
                        (
                            EventType::Normal,
                            "RolloutRestarted",
                            format!("{what} restarted"),
                        )
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => (
                        EventType::Warning,
                        "RolloutRestartFailed",
                        format!(
                            "{what} not found in namespace {}: not restarted",
                            workload.namespace
                        ),
                    ),
                    Err(e) => (
                        EventType::Warning,
                        "RolloutRestartFailed",
                        format!("{what} not restarted: {e}"),
                    ),
                };
                super::observe::publish(|| super::observe::Observed::Restarted {
                    namespace: workload.namespace.clone(),
                    workload: format!("{}/{}", workload.kind.as_str(), workload.name),
                    asked_by: asked.iter().filter_map(|(r, _)| r.name.clone()).collect(),
                    ok: result.is_ok(),
                });
                let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
                for (reference, secret) in asked {
                    let ev = Event {
                        type_,
                        reason: reason.into(),
                        note: Some(format!("{note}: Secret {secret} changed")),
                        action: "RolloutRestart".into(),
                        secondary: None,
                    };
                    if let Err(e) = recorder.publish(&ev, &reference).await {
                        tracing::warn!(error = %e, "publishing event");
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = work => {}
        _ = shutdown => {}
    }
}

/// The pod template annotation patch of one restart, now.
fn patch_now() -> serde_json::Value {
    let at = Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.9fZ")
        .to_string();
    json!({"spec": {"template": {"metadata": {"annotations": {ANNOTATION_RESTARTED_AT: at}}}}})
}

/// Patches `workload`'s pod template (a merge patch of one annotation, field manager
/// `secret-relay`).
async fn restart(client: &Client, w: &Workload) -> Result<(), kube::Error> {
    let patch = Patch::Merge(patch_now());
    let params = super::merge_params();
    match w.kind {
        RolloutRestartKind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), &w.namespace)
                .patch(&w.name, &params, &patch)
                .await
                .map(|_| ())
        }
        RolloutRestartKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), &w.namespace)
                .patch(&w.name, &params, &patch)
                .await
                .map(|_| ())
        }
        RolloutRestartKind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), &w.namespace)
            .patch(&w.name, &params, &patch)
            .await
            .map(|_| ()),
        RolloutRestartKind::ArgoRollout => {
            let ar = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"),
                "rollouts",
            );
            Api::<DynamicObject>::namespaced_with(client.clone(), &w.namespace, &ar)
                .patch(&w.name, &params, &patch)
                .await
                .map(|_| ())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(name: &str) -> Workload {
        Workload {
            namespace: "team-a".into(),
            kind: RolloutRestartKind::Deployment,
            name: name.into(),
        }
    }

    #[test]
    fn requests_within_the_window_restart_once() {
        let es = |name: &str| -> ExternalSecret {
            serde_yaml::from_str(&format!(
                "apiVersion: secret-relay.dev/v1alpha1\nkind: ExternalSecret\nmetadata: {{name: {name}, namespace: team-a}}\nspec: {{secretStoreRef: {{name: s}}}}"
            ))
            .unwrap()
        };
        let r = Restarts::default();
        let start = Instant::now();
        r.request(w("app"), &es("db"), "db");
        r.request(w("app"), &es("api"), "api");
        r.request(w("app"), &es("db"), "db");
        r.request(w("other"), &es("db"), "db");
        assert!(r.due(start).is_empty(), "the window is open");
        let closed = Instant::now() + DEBOUNCE;
        let due = r.due(closed);
        assert_eq!(due.len(), 2, "one restart per workload");
        let app = due.iter().find(|(w, _)| w.name == "app").unwrap();
        assert_eq!(app.1.len(), 2, "both ExternalSecrets asked, once each");
        assert!(r.due(closed + DEBOUNCE).is_empty(), "taken");
    }

    #[test]
    fn restarts_within_one_second_differ() {
        let a = patch_now();
        let b = patch_now();
        let at = |p: &serde_json::Value| {
            p["spec"]["template"]["metadata"]["annotations"][ANNOTATION_RESTARTED_AT]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_ne!(at(&a), at(&b));
        assert!(at(&a).ends_with('Z') && at(&a).len() == "2026-01-01T00:00:00.000000000Z".len());
    }
}
