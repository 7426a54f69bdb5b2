//! `kubectl secret-relay sync NAME… | -l SELECTOR | --all` (`-n NS`, `-A`): forces a refresh
//! of ExternalSecrets by setting the `secret-relay.dev/force-sync` annotation to the current
//! time (as ESO's `force-sync`), then waits for each one's outcome:
//!
//! - **synced**: its `status.syncedResourceVersion` equals the one the operator computes for
//!   the annotated object (`<generation>-<hash of labels and annotations>`), i.e. the
//!   operator fetched and wrote (or confirmed) the Secret after the annotation;
//! - **failed**: a `SyncFailed` Event on it after the annotation (or its `Ready` turned
//!   `False` after it), reported with the `Ready` message: the cause, as the operator wrote it;
//! - **timed out**: neither within `--timeout`.
//!
//! A progress bar (on a terminal) counts the outcomes when there are several objects.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::{
    api::core::v1::Event,
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;

use super::{Error, Outcome};
use crate::{
    api::{ANNOTATION_FORCE_SYNC, ExternalSecret},
    controller::external_secret::synced_resource_version,
};

/// `sync`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// ExternalSecrets by name (in `-n`'s namespace).
    pub names: Vec<String>,
    /// ExternalSecrets whose labels match this selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Every ExternalSecret of the namespace (of every namespace with `-A`).
    #[arg(long)]
    pub all: bool,
    /// Every namespace (with `-l` or `--all`).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// The namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// How long to wait for each outcome, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

/// The outcome of one forced sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncResult {
    /// The Secret was fetched and written (or confirmed) after the annotation.
    Synced,
    /// The sync failed; the `Ready` message.
    Failed(String),
    /// No outcome within the timeout; the `Ready` message at that time.
    TimedOut(String),
}

/// Annotates `es` with the force-sync time and waits (at most `timeout`) for its outcome.
pub async fn sync_one(
    client: &kube::Client,
    es: &ExternalSecret,
    timeout: Duration,
) -> std::result::Result<SyncResult, Error> {
    let ns = es.namespace().unwrap_or_default();
    let name = es.name_any();
    let api: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns);
    let started = Timestamp::now();
    let patch = json!({"metadata": {"annotations": {ANNOTATION_FORCE_SYNC: started.to_string()}}});
    let patched = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let expected = synced_resource_version(&patched);
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let events_lp = ListParams::default().fields(&format!(
        "involvedObject.kind=ExternalSecret,involvedObject.name={name}"
    ));
    // An event stamped by the API server's clock may be a little behind ours.
    let since = started - SignedDuration::from_secs(1);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let now = api.get(&name).await?;
        let status = now.status.clone().unwrap_or_default();
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        let message = ready.map(|c| c.message.clone()).unwrap_or_default();
        if status.synced_resource_version.as_deref() == Some(expected.as_str())
            && ready.is_some_and(|c| c.status == "True")
        {
            return Ok(SyncResult::Synced);
        }
        let turned_false =
            ready.is_some_and(|c| c.status == "False" && c.last_transition_time.0 >= since);
        let failed_event = events
            .list(&events_lp)
            .await?
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("SyncFailed"))
            .any(|e| last_seen(e).is_some_and(|t| t >= since));
        if turned_false || failed_event {
            return Ok(SyncResult::Failed(message));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(SyncResult::TimedOut(message));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// When an Event was last seen: its series' last observation, its event time, or its last
/// timestamp.
fn last_seen(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0)
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.last_timestamp.as_ref().map(|t: &Time| t.0))
}

/// The ExternalSecrets `args` select.
async fn selected(
    client: &kube::Client,
    args: &Args,
    default_ns: &str,
) -> std::result::Result<Vec<ExternalSecret>, Error> {
    let ns = args.namespace.clone().unwrap_or_else(|| default_ns.into());
    let choices = [!args.names.is_empty(), args.selector.is_some(), args.all];
    if choices.iter().filter(|c| **c).count() != 1 {
        return Err(Error::Input(
            "sync: give ExternalSecret names, -l SELECTOR or --all".into(),
        ));
    }
    if !args.names.is_empty() {
        let api: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns);
        let mut out = Vec::new();
        for name in &args.names {
            out.push(api.get(name).await?);
        }
        return Ok(out);
    }
    let api: Api<ExternalSecret> = if args.all_namespaces {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), &ns)
    };
    let lp = match &args.selector {
        Some(s) => ListParams::default().labels(s),
        None => ListParams::default(),
    };
    Ok(api.list(&lp).await?.items)
}

/// Runs `sync`: annotates every selected ExternalSecret, 8 at a time, and prints each outcome
/// and a summary; all well when every one synced.
pub async fn run(args: Args) -> Outcome {
    let (client, default_ns) = super::client().await?;
    let targets = selected(&client, &args, &default_ns).await?;
    if targets.is_empty() {
        println!("no ExternalSecret selected");
        return Ok(true);
    }
    let bar = indicatif::ProgressBar::new(targets.len() as u64);
    if targets.len() == 1 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let timeout = Duration::from_secs(args.timeout);
    let client = &client;
    let bar_ref = &bar;
    let mut outcomes: Vec<(String, SyncResult)> = futures::stream::iter(targets)
        .map(|es| async move {
            let id = format!("{}/{}", es.namespace().unwrap_or_default(), es.name_any());
            let r = sync_one(client, &es, timeout).await;
            bar_ref.inc(1);
            (id, r)
        })
        .buffer_unordered(8)
        .map(|(id, r)| r.map(|r| (id, r)))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<std::result::Result<_, _>>()?;
    bar.finish_and_clear();
    outcomes.sort_by(|a, b| a.0.cmp(&b.0));
    let (mut synced, mut failed, mut timed_out) = (0, 0, 0);
    for (id, r) in &outcomes {
        match r {
            SyncResult::Synced => {
                synced += 1;
                println!("ExternalSecret {id}: synced");
            }
            SyncResult::Failed(m) => {
                failed += 1;
                println!("ExternalSecret {id}: failed: {m}");
            }
            SyncResult::TimedOut(m) => {
                timed_out += 1;
                println!(
                    "ExternalSecret {id}: no outcome within {}s (Ready: {m})",
                    args.timeout
                );
            }
        }
    }
    println!("{synced} synced, {failed} failed, {timed_out} timed out");
    Ok(failed == 0 && timed_out == 0)
}
